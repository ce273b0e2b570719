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

/* Offsets the stream could not read (gaps.c); to_offset is exclusive. */
typedef struct SaGap
{
	int32		partition;
	int64		from_offset;
	int64		to_offset;
	int64		messages;		/* -1: unknown */
	const char *reason;			/* 'retention' or 'truncated' */
} SaGap;

/* A message whose write failed alone: it becomes a dead letter when met again. */
typedef struct SaPoison
{
	int32		partition;
	int64		offset;
	char	   *error;
} SaPoison;

/*
 * How a window's expressions fared in the current batch: a window that
 * fails on every message is not bad input but a broken definition, and
 * says so in last_error.
 */
typedef struct SaWindowHealth
{
	int			evals;
	int			errors;
	char	   *first_error;	/* in batch memory */
	bool		reported;		/* last_error names this window */
} SaWindowHealth;

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
	SaWindowHealth *health;		/* one per window */
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
	int32		stop_partition; /* -1: not at a message */
	int64		stop_offset;
	List	   *gaps;			/* SaGap moved past in this batch, in batch_cxt */
	bool		gap_reload;		/* commit the gaps, then fetch from scratch */
	int			stale_answers;	/* out-of-range reports in a row that were not */
	List	   *stop_gaps;		/* SaGap recorded with the stop, in TopMemoryContext */

	SaUserContext owner_ctx;	/* the batch acts as the stream's owner */
	List	   *poison;			/* SaPoison, in TopMemoryContext */
	bool		fenced;			/* the last commit found the epoch changed */
	bool		had_error_at_start; /* streams.last_error was set */
	bool		unreachable_reported;	/* last_error says the brokers are gone */
} SaWorker;

/* worker.c */
extern void sa_handle_interrupts(void);
extern void sa_begin_xact(void);
extern void sa_commit_xact(void);
extern void sa_note_window_error(SaWorker *w, int wi, const char *error);
extern void sa_add_dead_letter(SaWorker *w, const rd_kafka_message_t *msg, const char *window,
							   const char *reason, const char *error);

/* gaps.c */
extern void sa_gap_found(SaWorker *w, const rd_kafka_message_t *msg);
extern void sa_sink_gaps(SaWorker *w, List *gaps);

/* partitions.c */
extern SaPartition *sa_find_partition(SaWorker *w, int32 partition);
extern List *sa_my_partitions(SaWorker *w, List *all);
/* Where partitions without an offsets row start (sa_resolve_starts). */
typedef struct SaStarts
{
	bool		fresh;			/* the stream had no offsets rows at all */
	char	   *start_from;		/* where fresh partitions were resolved at */
	int			n;
	int32	   *partition;
	int64	   *offset;
} SaStarts;
extern SaStarts *sa_resolve_starts(SaWorker *w, List *all, List *mine);
extern bool sa_claim_partitions(SaWorker *w, SaStarts *starts, List *all, List *mine);
extern void sa_load_other_partitions(SaWorker *w);
extern void sa_refresh_other_partitions(SaWorker *w);
extern void sa_publish_partitions(SaWorker *w);
extern bool sa_epoch_still_ours(SaWorker *w);
extern bool sa_partitions_changed(SaWorker *w);
extern void sa_schedule_metadata_check(SaWorker *w);

/* eventtime.c */
extern char *sa_ts_text(TimestampTz t);
extern bool sa_event_time(SaWorker *w, int64 *t, char **error);
extern void sa_update_watermark(SaWorker *w, TimestampTz now);
extern void sa_notify_closed_windows(SaWorker *w);

/* slices.c */
extern void sa_slices_setup(SaWorker *w);
extern bool sa_slices_due(SaWorker *w);
extern void sa_slices_close(SaWorker *w);
extern void sa_slices_committed(SaWorker *w);

/* isolate.c */
extern int64 sa_careful_until(int32 partition);
extern void sa_prune_isolation_lists(SaWorker *w);
extern SaPoison *sa_find_poison(SaWorker *w, const rd_kafka_message_t *msg);
extern void sa_isolate_batch(SaWorker *w, ErrorData *edata);

/* retention.c */
extern void sa_run_retention(SaWorker *w);

/* decode.c */
extern bool sa_decode_message(SaWorker *w, const rd_kafka_message_t *msg, char **error);
extern bool sa_decode_json(SaWorker *w, const char *data, size_t len, char **error);
extern bool sa_decode_csv(SaWorker *w, const char *data, size_t len, char **error);
extern void sa_set_value(SaWorker *w, int col, const char *text, size_t len);
extern void sa_set_null(SaWorker *w, int col);

/* decode_time.c */
extern bool sa_parse_iso_timestamptz(const char *s, size_t len, TimestampTz *result);
extern bool sa_parse_epoch_millis(const char *s, size_t len, TimestampTz *result);

/* kafka.c */
extern void sa_kafka_start(SaWorker *w);
extern void sa_kafka_stop(SaWorker *w);
extern List *sa_kafka_partitions(SaWorker *w, bool setup);
extern rd_kafka_resp_err_t sa_kafka_log_bounds(SaWorker *w, int32 partition, int64 *lo, int64 *hi);
extern void sa_kafka_assign(SaWorker *w);
extern void sa_kafka_serve(SaWorker *w);
extern void sa_kafka_message_error(SaWorker *w, const rd_kafka_message_t *msg);
extern void sa_kafka_resolve_starts(SaWorker *w, int n, const int32 *partitions,
									const char *start_from, int64 *offsets);
extern void sa_kafka_update_watermarks(SaWorker *w);
extern TimestampTz sa_kafka_unreachable_since(SaWorker *w, bool got_messages);
extern const char *sa_kafka_error_cause(void);
extern bool sa_kafka_skip_markers(SaWorker *w);
extern void sa_kafka_group_commit(SaWorker *w);

/* sink.c */
extern void sa_sink_offsets(SaWorker *w);
extern void sa_sink_dead_letters(SaWorker *w);

#endif							/* SA_WORKER_H */
