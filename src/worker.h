/*-------------------------------------------------------------------------
 *
 * worker.h
 *		State of one stream worker, shared by worker.c, decode*.c, kafka.c
 *		and sink.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SA_WORKER_H
#define SA_WORKER_H

#include "window.h"

#include <librdkafka/rdkafka.h>

/* One partition this worker owns. */
typedef struct SaPartition
{
	int32		partition;
	int64		committed;		/* next offset, as committed in the table */
	int64		next_offset;	/* next offset to aggregate (committed + batch) */
	TimestampTz max_event_time; /* committed + batch */
	int64		batch_messages;
	int64		batch_dead;
	bool		touched;		/* has messages in this batch */
	int64		careful_until;	/* commit one message at a time below this */
	TimestampTz last_message;
	int64		high_watermark; /* Kafka's, as last seen; -1 unknown */
	SaPartLive *live;			/* our entry in shared memory */
} SaPartition;

typedef struct SaDeadLetter
{
	const char *window_name;	/* NULL for decode errors */
	int32		partition;
	int64		offset;
	bytea	   *key;
	bytea	   *payload;
	const char *reason;
	char	   *error;
} SaDeadLetter;

/* A message whose write failed alone: it becomes a dead letter when met again. */
typedef struct SaPoison
{
	int32		partition;
	int64		offset;
	char	   *error;
} SaPoison;

typedef struct SaWorker
{
	SaWorkerArgs args;
	SaWorkerSlot *slot;
	MemoryContext config_cxt;	/* definitions; reset on reload */
	MemoryContext batch_cxt;	/* one batch */
	MemoryContext msg_cxt;		/* one message */

	SaStream   *st;
	int			nwindows;
	SaWindow  **windows;
	SaRowInput *inputs;			/* one per window */
	int64		max_span;		/* longest window size or session gap */
	bool		all_builtin_types;	/* decode errors can be caught without a
									 * subtransaction */

	ExprContext *econtext;
	ParamListInfo params;		/* the decoded message, one per column */

	int			nparts;
	SaPartition *parts;
	int64		epoch;

	/* event time */
	TimestampTz watermark;		/* moves forward row by row */
	TimestampTz committed_watermark;
	TimestampTz min_event;		/* smallest event time read since start */
	int64		idle_us;		/* a partition silent this long is idle */
	int			nothers;		/* the stream's partitions held by other workers */
	SaPartLive *others;
	TimestampTz last_commit;
	TimestampTz epoch_checked;

	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	TimestampTz next_metadata_check;

	/* the current batch */
	int			batch_count;
	TimestampTz now;			/* time of the last poll */
	bool		backlog;		/* the last poll found many messages waiting */
	TimestampTz batch_started;
	bool		in_xact;
	List	   *dead;			/* SaDeadLetter, in batch_cxt */
	Size		dead_bytes;		/* their keys and payloads */
	bool		stop_requested; /* on_error = stop met a bad message */
	char	   *stop_error;

	List	   *poison;			/* SaPoison, in TopMemoryContext */
	bool		fenced;			/* the last commit found the epoch changed */
	bool		had_error_at_start; /* streams.last_error was set */
} SaWorker;

/* decode.c */
extern bool sa_decode_message(SaWorker *w, const rd_kafka_message_t *msg, char **error);
extern bool sa_decode_json(SaWorker *w, const char *data, size_t len, char **error);
extern bool sa_decode_csv(SaWorker *w, const char *data, size_t len, char **error);
extern void sa_set_value(SaWorker *w, int col, const char *text, size_t len);
extern void sa_set_null(SaWorker *w, int col);

/* kafka.c */
extern void sa_kafka_start(SaWorker *w);
extern void sa_kafka_stop(SaWorker *w);
extern List *sa_kafka_partitions(SaWorker *w);
extern void sa_kafka_assign(SaWorker *w);
extern void sa_kafka_serve(SaWorker *w);
extern void sa_kafka_message_error(SaWorker *w, const rd_kafka_message_t *msg);
extern int64 sa_kafka_resolve_start(SaWorker *w, int32 partition, const char *start_from);
extern void sa_kafka_update_watermarks(SaWorker *w);
extern void sa_kafka_group_commit(SaWorker *w);

/* sink.c */
extern void sa_sink_offsets(SaWorker *w);
extern void sa_sink_dead_letters(SaWorker *w);

#endif							/* SA_WORKER_H */
