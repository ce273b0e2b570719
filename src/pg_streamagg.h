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
 *	 catalog.c	 every query on the extension's own tables (but the batch's)
 *	 streamdef.c column lists, formats and options of a stream
 *	 usercontext.c  acting as a stream's owner / as the catalog's owner
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
#define SA_JSON_MAX_COLUMNS 64	/* columns a JSON stream may declare */
#define SA_NAME_LEN NAMEDATALEN

/* ---- guc.c ---- */
extern int	sa_max_workers;
extern int	sa_batch_size;
extern int	sa_batch_time_ms;
extern int	sa_max_restart_delay_s;
extern int	sa_idle_timeout_ms;
extern int	sa_queue_kbytes;
extern int	sa_batch_memory_kb;

#define SA_BATCH_MEMORY_MIN_KB 1024	/* streamagg.batch_memory at least 1MB */
extern int	sa_max_workers_per_stream;
extern int	sa_max_workers_per_role;
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
	Oid			owner;			/* the stream's owner: who may see this slot */
	bool		unreachable;	/* no broker reachable for a while */
	char		stream[SA_NAME_LEN];
	TimestampTz started_at;
	TimestampTz watermark;		/* DT_NOBEGIN when unknown */
	int			nparts;
	SaPartLive	parts[SA_MAX_PARTS_PER_WORKER];
} SaWorkerSlot;

/* A role that owns streams in a database, as its manager last saw it. */
typedef struct SaOwnerEntry
{
	Oid			dboid;			/* InvalidOid: free */
	Oid			role;
} SaOwnerEntry;

#define SA_MAX_OWNERS 1024

typedef struct SaShared
{
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	SaDbSlot	dbs[SA_MAX_DATABASES];
	SaOwnerEntry owners[SA_MAX_OWNERS];
	SaWorkerSlot workers[FLEXIBLE_ARRAY_MEMBER];
} SaShared;

extern SaShared *sa_shared;
extern LWLock *sa_lock;

extern void sa_shmem_request(void);
extern void sa_shmem_startup(void);
extern void sa_request_database(Oid dboid);
extern void sa_wake_manager_at_commit(void);
extern void sa_register_xact_callback(void);
extern SaWorkerSlot *sa_worker_slot_acquire(Oid dboid, const char *stream, int index, Oid owner);
extern void sa_stop_database_workers(Oid dboid);
extern void sa_publish_owners(Oid dboid, List *roles);
extern char *sa_owner_elsewhere(Oid role, Oid except_db);

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
	bool		is_timestamp;	/* without time zone */
	int64		epoch_unit_us;	/* JSON numbers into either: UNIT, in us */
	bool		is_json;		/* json/jsonb: nested values go in as JSON */
	bool		has_path;		/* declared with PATH (JSON streams only) */
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
	int			batch_memory_kb;	/* streamagg.batch_memory; 0: the setting */
	int			idle_timeout_ms;
	char	   *kafka_group;	/* streamagg.kafka_group, or NULL */
	bool		csv_options;	/* streamagg.csv_* given */
	int64		max_future_us;	/* streamagg.max_future; -1: no limit */
	int32		skip_partition; /* resume(skip => true): this message is a */
	int64		skip_offset;	/* dead letter whatever on_error says; -1 none */
} SaStream;

/* ---- streamdef.c ---- */
extern SaColumn *sa_parse_columns(const char *spec, int *ncols);
extern void sa_add_meta_columns(SaStream *st);
extern SaFormat sa_parse_format(const char *fmt);
extern SaOnError sa_parse_on_error(const char *s);
extern int	sa_column_index(SaStream *st, const char *name);
extern void sa_apply_stream_options(SaStream *st, bool validate_kafka);
extern List *sa_option_list(Jsonb *options);
extern int64 sa_interval_usecs(Interval *iv, const char *what);
extern Interval *sa_usecs_interval(int64 us);
extern void sa_check_option_rights(SaStream *st);

/* ---- usercontext.c ---- */
typedef struct SaUserContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} SaUserContext;

extern void sa_pin_search_path(void);
extern void sa_enter_owner(Oid owner, SaUserContext *ctx);
extern void sa_enter_catalog(SaUserContext *ctx);
extern void sa_leave(SaUserContext *ctx);
extern Oid	sa_catalog_owner(void);

/* ---- catalog.c ---- */

/* A stream that should have workers (for the manager). */
typedef struct SaStreamRef
{
	char	   *name;
	int			parallelism;
	Oid			owner;
} SaStreamRef;

/* A partition's offsets row as claimed by a worker. */
typedef struct SaClaim
{
	int64		next_offset;
	TimestampTz max_event_time; /* DT_NOBEGIN when none */
	TimestampTz watermark;		/* DT_NOBEGIN when none */
} SaClaim;

extern SaStream *sa_load_stream(const char *name);
extern bool sa_catalog_stream_exists(const char *name);
extern Oid	sa_catalog_stream_owner(const char *name);
extern int64 sa_catalog_role_workers(Oid role);
extern bool sa_catalog_stream_running(const char *name);
extern bool sa_catalog_lock_stream(const char *name, bool exclusive);
extern void sa_catalog_insert_stream(SaStream *st, const char *columns, const char *format,
									 const char *event_time, const char *on_error);
extern void sa_catalog_set_state(const char *name, const char *state);
extern void sa_catalog_set_last_error(const char *name, const char *message);
extern void sa_catalog_stop_stream(const char *name, const char *message,
								   int32 partition, int64 offset);
extern bool sa_catalog_skip_failed(const char *name);
extern void sa_catalog_insert_gap(const char *stream, int32 partition, int64 from_offset,
								  int64 to_offset, int64 messages, const char *reason);
extern void sa_catalog_delete_gaps(const char *stream);
extern bool sa_catalog_has_last_error(const char *name);
extern void sa_catalog_set_restart_from(const char *name, const char *restart_from);
extern void sa_catalog_delete_dead_letters(const char *stream);
extern void sa_catalog_place_partition(const char *stream, int32 partition, int64 next_offset);
extern void sa_catalog_delete_stream(const char *name);
extern List *sa_catalog_running_streams(void);
extern List *sa_catalog_streams_owned_by(Oid role);
extern List *sa_catalog_stream_owners(void);
extern void sa_catalog_reassign(Oid from, Oid to);
extern bool sa_catalog_window_exists(const char *name);
extern void sa_catalog_insert_window(Datum *values, const char *nulls);
extern bool sa_catalog_window_lookup(const char *name, char **stream, Oid *result, Oid *state);
extern bool sa_catalog_window_rels(const char *name, char **stream, Oid *result, Oid *rels);
extern void sa_catalog_delete_window(const char *name);
extern List *sa_catalog_window_names(const char *stream);
extern uint64 sa_catalog_window_rows(const char *stream);
extern void sa_catalog_reset_epoch(const char *stream);
extern void sa_catalog_delete_offsets(const char *stream);
extern bool sa_catalog_has_offsets(const char *stream);
extern int64 sa_catalog_next_epoch(void);
extern bool sa_catalog_claim_partition(const char *stream, int32 partition, int64 epoch,
									   SaClaim *claim);
extern void sa_catalog_insert_partition(const char *stream, int32 partition, int64 epoch,
										int64 next_offset, SaClaim *claim);
extern uint64 sa_catalog_partition_rows(const char *stream);
extern int64 sa_catalog_count_epoch(const char *stream, int64 epoch);
extern TimestampTz sa_catalog_watermark(const char *stream);

/* ---- expr.c ---- */
extern Node *sa_transform_expr(SaStream *st, Node *raw, const char *what);
extern List *sa_parse_target_list(const char *text, const char *what);
extern Node *sa_parse_filter(const char *text);
extern bool sa_expr_calls_user_code(Node *expr);
extern void sa_expr_functions(Node *expr, List **funcs);

/* ---- kafka.c ---- */
struct rd_kafka_conf_s;
extern struct rd_kafka_conf_s *sa_kafka_conf(SaStream *st, char *errstr, size_t errlen);
extern void sa_kafka_conf_destroy(struct rd_kafka_conf_s *conf);
extern void sa_kafka_check_compat(SaStream *st);

/*
 * Errors that one message's content can cause when it is written: a bad
 * value (class 22), a constraint it breaks (23), a value too large for an
 * index (54000).  Anything else - no privilege, an object gone, a lock
 * timeout, out of memory, a trigger's own error, a cancel - is not the
 * message's fault: the batch fails, nothing is committed and the stream
 * retries with back-off.
 */
static inline bool
sa_is_data_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_DATA_EXCEPTION ||
		category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
}

/*
 * Errors of a window's expressions on one message: data errors, and an
 * exception the owner's own function raised for these values (class P0;
 * such functions run in a subtransaction per message).
 */
static inline bool
sa_is_expression_error(int sqlerrcode)
{
	return sa_is_data_error(sqlerrcode) ||
		ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_PLPGSQL_ERROR;
}

/* ---- api.c ---- */
extern bool sa_is_owner(Oid owner);
extern void sa_drop_stream_internal(const char *name, bool cascade);
extern char *sa_normalize_stream_name(const char *name);

#endif							/* PG_STREAMAGG_H */
