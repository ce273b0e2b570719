/*-------------------------------------------------------------------------
 *
 * pg_streamagg.h
 *		Declarations shared by the pieces of pg_streamagg.
 *
 * The flow, one file per step (see src/README.md for the whole picture):
 *
 *	 launcher.c  one per cluster; starts a manager in every database that
 *				 has the extension
 *	 manager.c	 one per database; keeps `parallelism` workers running for
 *				 every stream, restarting failed ones with back-off
 *	 worker.c	 one per (stream, index); the consume/aggregate/commit loop
 *	 kafka.c	 the librdkafka consumer of a worker
 *	 decode*.c	 payload -> typed column values (json, csv, text)
 *	 expr.c		 group_by / aggregate / filter expressions over stream columns
 *	 window.c	 window assignment and in-memory aggregation of a batch
 *	 sink.c		 writes a batch: window rows + dead letters + offsets, one
 *				 transaction
 *	 catalog.c	 reads stream and window definitions
 *	 api.c		 the SQL-callable functions (create_stream, ...)
 *	 shmem.c	 shared state: databases, worker slots, live partition figures
 *	 guc.c		 the streamagg.* settings
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_STREAMAGG_H
#define PG_STREAMAGG_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"

#define SA_EXTENSION_NAME "pg_streamagg"
#define SA_SCHEMA "streamagg"

/* Limits of the shared-memory tables. */
#define SA_MAX_DATABASES 64
#define SA_MAX_PARTS_PER_WORKER 256
#define SA_NAME_LEN NAMEDATALEN

/* ---- guc.c ---- */
extern int	sa_max_workers;
extern int	sa_batch_size;
extern int	sa_batch_time_ms;
extern int	sa_max_restart_delay_s;
extern int	sa_idle_timeout_ms;
extern int	sa_queue_kbytes;
extern void sa_define_gucs(void);

/* ---- shmem.c ---- */

/* What a per-database manager last said about itself. */
typedef enum SaDbState
{
	SA_DB_FREE = 0,
	SA_DB_REQUESTED,			/* start a manager here (CREATE EXTENSION) */
	SA_DB_RUNNING,				/* manager running */
	SA_DB_ABSENT,				/* no extension here: nothing to run */
	SA_DB_DROPPING				/* database is being dropped */
} SaDbState;

typedef struct SaDbSlot
{
	Oid			dboid;
	SaDbState	state;
	pid_t		manager_pid;
	Latch	   *manager_latch;	/* set it to make the manager look now */
	TimestampTz requested_at;
} SaDbSlot;

/* Live figures of one partition, published by the worker that owns it. */
typedef struct SaPartLive
{
	int32		partition;
	int64		committed;		/* next offset committed to the database */
	int64		high_watermark; /* Kafka's, last seen; -1 unknown */
	TimestampTz max_event_time; /* largest event time read (not committed) */
	TimestampTz last_message;	/* when a message was last read */
} SaPartLive;

typedef struct SaWorkerSlot
{
	pid_t		pid;			/* 0: free */
	Oid			dboid;
	int32		index;
	char		stream[SA_NAME_LEN];
	TimestampTz started_at;
	TimestampTz watermark;		/* DT_NOBEGIN when unknown */
	int			nparts;
	SaPartLive	parts[SA_MAX_PARTS_PER_WORKER];
} SaWorkerSlot;

typedef struct SaShared
{
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	SaDbSlot	dbs[SA_MAX_DATABASES];
	SaWorkerSlot workers[FLEXIBLE_ARRAY_MEMBER];
} SaShared;

extern SaShared *sa_shared;
extern LWLock *sa_lock;

extern void sa_shmem_request(void);
extern void sa_shmem_startup(void);
extern void sa_request_database(Oid dboid);
extern void sa_wake_manager_at_commit(void);
extern void sa_register_xact_callback(void);
extern SaWorkerSlot *sa_worker_slot_acquire(Oid dboid, const char *stream, int index);
extern void sa_stop_database_workers(Oid dboid);

/* ---- launcher.c / manager.c / worker.c (background worker entry points) ---- */
extern void sa_register_launcher(void);
extern PGDLLEXPORT void sa_launcher_main(Datum arg);
extern PGDLLEXPORT void sa_manager_main(Datum arg);
extern PGDLLEXPORT void sa_worker_main(Datum arg);

/* Passed to a stream worker in bgw_extra. */
typedef struct SaWorkerArgs
{
	int32		index;
	Oid			owner;
	char		stream[SA_NAME_LEN];
} SaWorkerArgs;

/* ---- catalog.c: stream and window definitions ---- */

typedef enum SaFormat
{
	SA_FORMAT_JSON,
	SA_FORMAT_CSV,
	SA_FORMAT_TEXT
} SaFormat;

typedef enum SaOnError
{
	SA_ON_ERROR_DEAD_LETTER,
	SA_ON_ERROR_SKIP,
	SA_ON_ERROR_STOP
} SaOnError;

/* The Kafka metadata columns follow the declared ones, in this order. */
#define SA_META_KEY 0
#define SA_META_PARTITION 1
#define SA_META_OFFSET 2
#define SA_META_TIMESTAMP 3
#define SA_NUM_META 4

typedef struct SaColumn
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	Oid			collation;
	Oid			typioparam;
	FmgrInfo	input;			/* the type's input function */
	bool		is_timestamptz;
	bool		is_json;		/* json/jsonb: nested values go in as JSON */
	int			pathlen;		/* JSON: keys from the top; 1 = top-level */
	char	  **path;
	int		   *pathkeylen;		/* strlen of each path key */
} SaColumn;

typedef struct SaStream
{
	char	   *name;
	char	   *topic;
	char	   *brokers;
	SaFormat	format;
	char		csv_delimiter;
	char		csv_quote;
	int			ncols;			/* declared columns */
	SaColumn   *cols;			/* ncols + SA_NUM_META entries */
	int			event_col;		/* -1: the Kafka record timestamp */
	char	   *start_from;
	int			parallelism;
	SaOnError	on_error;
	Oid			owner;
	Jsonb	   *options;
	int			batch_size;
	int			batch_time_ms;
	int			idle_timeout_ms;
} SaStream;

extern SaColumn *sa_parse_columns(const char *spec, int *ncols);
extern void sa_add_meta_columns(SaStream *st);
extern SaStream *sa_load_stream(const char *name);
extern SaFormat sa_parse_format(const char *fmt);
extern SaOnError sa_parse_on_error(const char *s);
extern int	sa_column_index(SaStream *st, const char *name);
extern void sa_apply_stream_options(SaStream *st, bool validate_kafka);
extern List *sa_option_list(Jsonb *options);
extern int64 sa_interval_usecs(Interval *iv, const char *what);

/* ---- expr.c ---- */
extern Node *sa_transform_expr(SaStream *st, Node *raw, const char *what);
extern List *sa_parse_target_list(const char *text, const char *what);
extern Node *sa_parse_filter(const char *text);

/* ---- kafka.c ---- */
struct rd_kafka_conf_s;
extern struct rd_kafka_conf_s *sa_kafka_conf(SaStream *st, char *errstr, size_t errlen);
extern void sa_kafka_conf_destroy(struct rd_kafka_conf_s *conf);

/*
 * Errors that a message's content can cause (bad values, overflows, a
 * function raising on them, a value too large to store); anything else
 * (cancel, out of memory, a broken server) is not the message's fault.
 */
static inline bool
sa_is_data_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_DATA_EXCEPTION ||
		category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		category == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
		category == ERRCODE_PLPGSQL_ERROR ||
		category == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION;
}

/* ---- api.c ---- */
extern bool sa_is_owner(Oid owner);

#endif							/* PG_STREAMAGG_H */
