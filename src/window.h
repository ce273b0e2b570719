/*-------------------------------------------------------------------------
 *
 * window.h
 *		Window definitions and the in-memory aggregation of a batch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SA_WINDOW_H
#define SA_WINDOW_H

#include "pg_streamagg.h"

#include "executor/executor.h"
#include "executor/spi.h"

/* usecs between 1970-01-01 and 2000-01-01: window starts align to Unix time */
#define SA_UNIX_OFFSET_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/* a / b rounded towards minus infinity */
static inline int64
sa_floor_div(int64 a, int64 b)
{
	int64		q = a / b;

	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

typedef enum SaWindowKind
{
	SA_WIN_TUMBLING,
	SA_WIN_HOPPING,
	SA_WIN_SESSION,
	SA_WIN_GLOBAL				/* no time window: one running row per group */
} SaWindowKind;

typedef enum SaAggKind
{
	SA_AGG_COUNT_STAR,
	SA_AGG_COUNT,
	SA_AGG_SUM,
	SA_AGG_MIN,
	SA_AGG_MAX,
	SA_AGG_AVG
} SaAggKind;

/* One aggregate column of a window. */
typedef struct SaAgg
{
	char	   *name;
	SaAggKind	kind;
	Oid			restype;		/* column type in the result table */
	Oid			statetype;		/* type of the running value (sum for avg) */
	Oid			argtype;		/* type of the argument as written */
	int16		statelen;
	bool		statebyval;
	Expr	   *arg;			/* NULL for count(*) */
	ExprState  *argstate;
	Oid			collation;
	FmgrInfo	addfn;			/* sum, avg: statetype + statetype */
	FmgrInfo	cmpfn;			/* min: "<", max: ">" */
} SaAgg;

/* One group_by column. */
typedef struct SaGroupCol
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	Oid			collation;
	int16		typlen;
	bool		typbyval;
	Expr	   *expr;
	ExprState  *state;
	FmgrInfo	hashfn;
	FmgrInfo	eqfn;
	bool		bytewise;		/* text/varchar, deterministic collation:
								 * equal iff the bytes are, hashed as hashtext */
} SaGroupCol;

/* Running value of one aggregate in one group of a batch. */
typedef struct SaAggValue
{
	Datum		value;
	bool		isnull;
	int64		count;
} SaAggValue;

/* One session of a group in a batch (session windows). */
typedef struct SaSession
{
	int64		start;			/* first event time */
	int64		last;			/* last event time; window_end = last + gap */
	struct SaSession *next;		/* the group's sessions, by start */
	SaAggValue	vals[FLEXIBLE_ARRAY_MEMBER];
} SaSession;

/* One (window, group) of a batch. */
typedef struct SaGroup
{
	uint32		hash;
	int64		wstart;			/* PostgreSQL timestamp (usecs since 2000) */
	int64		wend;
	Datum	   *keys;
	bool	   *keynulls;
	SaSession  *sessions;		/* session windows only */
	SaAggValue	vals[FLEXIBLE_ARRAY_MEMBER];
} SaGroup;

typedef struct SaWindow
{
	char	   *name;
	char	   *stream_name;	/* create_window only */
	Datum		lateness_datum; /* create_window only */
	SaWindowKind kind;
	Oid			result_rel;
	Oid			state_rel;		/* avg state, InvalidOid when no avg */
	char	   *result_name;	/* quoted, schema-qualified */
	char	   *state_name;
	int64		size_us;
	int64		slide_us;
	int64		gap_us;
	int64		lateness_us;
	int64		retention_us;	/* -1: keep everything */
	int			ngroups;
	SaGroupCol *groups;
	int			naggs;
	SaAgg	   *aggs;
	int			navg;
	Expr	   *filter;
	ExprState  *filterstate;
	bool		user_code;		/* calls functions that are not built in:
								 * evaluate in a subtransaction */
	List	   *functions;		/* Oids of the functions the expressions call */
	int			eval_item;		/* what sa_window_eval evaluates now, for
								 * errors: -1 filter, then groups, then
								 * aggregate arguments */

	/* the batch: groups in arrival order plus an open-addressing index */
	SaGroup   **list;
	int			nlist;
	int			maxlist;
	SaGroup   **slots;
	uint32		nslots;

	/* closing: rows with window_end <= final_until are final */
	TimestampTz final_until;	/* as last notified (committed) */
	TimestampTz pending_until;	/* as notified by the open transaction */
	TimestampTz retention_done; /* last retention pass */

	/* prepared statements, kept across batches */
	SPIPlanPtr	upsert_plan;
	SPIPlanPtr	state_plan;
	SPIPlanPtr	session_insert_plan;
	SPIPlanPtr	session_state_insert_plan;
	List	   *session_take_plans;	/* kept plans by NULL pattern of the group key */

	/*
	 * Sliced hopping windows (slices.c): the batch is written like a
	 * tumbling window of size = slide into slice_rel (result_rel and
	 * result_name then name it too); each window is materialized into
	 * closed_rel once, when it closes.  aggs are the slice columns: an
	 * avg becomes its sum, and its count(x) is appended (avg_count[i] is
	 * that column, -1 for others; nuser_aggs counts the window's own).
	 */
	bool		sliced;
	Oid			closed_rel;
	char	   *closed_name;
	int			nuser_aggs;
	int		   *avg_count;

	/*
	 * Chained (slices.c): counts, sums and averages over integers are
	 * exact to subtract, so a window can be its predecessor minus the slice
	 * that left plus the slice that came in.  The slices keep count(*)
	 * (rows_col) and count(x) of each sum (sum_count[i]); <name>_closed
	 * keeps them too, and each avg's sum (avg_sum_name[i]).
	 */
	bool		chain;
	int			rows_col;
	int		   *sum_count;
	char	  **avg_sum_name;
	bool		chain_ok;		/* the last window closed is in closed_rel, exact */
	bool		dirty;			/* a row late for some windows went into a slice */
	bool		batch_dirty;	/* ... in the open batch */
	bool		pending_chain_ok;
	bool		pending_dirty;
	TimestampTz closed_until;	/* windows ending at or before are in closed_rel */
	TimestampTz pending_closed; /* as the open transaction leaves it */
	SPIPlanPtr	close_plan;
	SPIPlanPtr	prune_plan;
	SPIPlanPtr	horizon_plan;
	SPIPlanPtr	chain_plan;

	/* direct writes (sink_direct.c) */
	bool		sole_writer;	/* parallelism 1: nobody else writes the table */
	struct SaRowMap *rows;		/* rows of open windows and where they are */
	SPIPlanPtr	load_plan;		/* the rows of one window start, with ctid */
} SaWindow;

/* Evaluated inputs of one message for one window. */
typedef struct SaRowInput
{
	int64		event_time;
	Datum	   *keys;
	bool	   *keynulls;
	uint32		keyhash;
	Datum	   *args;
	bool	   *argnulls;
} SaRowInput;

/* Columns of a batch as arrays, one SPI parameter each (sink.c). */
typedef struct SaArrays
{
	int			n;
	Oid			types[FUNC_MAX_ARGS];
	Datum		values[FUNC_MAX_ARGS];
} SaArrays;

/* window.c */
extern SaWindow *sa_compile_window(SaStream *st, const char *name, const char *group_by,
								   const char *aggregates, const char *filter);
extern List *sa_load_windows(SaStream *st);
extern void sa_window_prepare_exec(SaWindow *w);
extern char *sa_window_eval_item(SaWindow *w);
extern void sa_window_check_privileges(SaWindow *w);
extern bool sa_window_eval(SaWindow *w, ExprContext *econtext, SaRowInput *in);
extern int	sa_window_accumulate(SaWindow *w, SaRowInput *in, MemoryContext batchcxt,
								 TimestampTz watermark);
extern bool sa_window_closed(SaWindow *w, int64 wstart, TimestampTz watermark);
extern int64 sa_final_horizon(SaWindow *win);	/* eventtime.c */
extern bool sa_window_closing(SaWindow *w, TimestampTz from, TimestampTz to);
extern void sa_window_reset(SaWindow *w);
extern int	sa_window_starts(SaWindow *w, int64 t, int64 *starts, int max);
extern char *sa_window_create_sql(SaWindow *w, const char *qualname, bool state);
extern char *sa_agg_kind_name(SaAggKind kind);
extern bool sa_window_sliceable(SaWindow *w, int parallelism);
extern void sa_window_slice_aggs(SaWindow *w);
extern void sa_merge_values(SaWindow *w, SaAggValue *into, SaAggValue *from, MemoryContext cxt);
extern void sa_fold_value(SaAgg *a, SaAggValue *v, Datum arg, bool argnull, MemoryContext cxt);

extern uint32 sa_key_hash(SaWindow *w, Datum *keys, bool *nulls);
extern bool sa_keys_equal(SaWindow *w, Datum *k1, bool *n1, Datum *k2, bool *n2);
extern uint32 sa_group_hash(uint32 keyhash, int64 wstart);

/* slices.c */
extern char *sa_slices_view_sql(SaWindow *w, const char *view, const char *slices,
								const char *closed);
extern char *sa_slices_closed_view_sql(SaWindow *w, const char *view, const char *closed);
extern char *sa_slices_chain_columns_sql(SaWindow *w, const char *closed);
extern void sa_slices_free_plans(SaWindow *w);

/* sink_direct.c */
extern bool sa_direct_flush(SaWindow *w);

/* session.c */
extern void sa_session_add(SaWindow *w, SaGroup *g, SaRowInput *in, MemoryContext cxt);
extern void sa_session_flush(SaWindow *w);
extern bool sa_session_late(SaWindow *w, SaGroup *g, SaRowInput *in, TimestampTz watermark);
extern void sa_session_free_plans(SaWindow *w);

/* sink.c */
extern void sa_window_flush(SaWindow *w);
extern void sa_add_array(SaArrays *a, Oid elemtype, Datum *elems, bool *nulls, int count);
extern SPIPlanPtr sa_prepare_kept(const char *sql, SaArrays *a);
extern SPIPlanPtr sa_keep_plan(const char *sql, int nargs, Oid *types);
extern void sa_free_kept(SPIPlanPtr *plan);
extern void sa_window_free_plans(SaWindow *w);
extern Datum sa_avg_final(SaAgg *a, Datum sum, int64 count);

#endif							/* SA_WINDOW_H */
