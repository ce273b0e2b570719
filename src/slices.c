/*-------------------------------------------------------------------------
 *
 * slices.c
 *		Hopping windows kept as slices: one row per slide and group,
 *		each window materialized once, when it closes.
 *
 * A hopping window of size S and slide D puts every row into S / D
 * window instances.  Writing each of them (window.c's general path) costs
 * S / D row updates per message: 60 for an hour every minute, 1000 at
 * most.  A sliced window instead keeps, per group, one partial row per
 * slide - a slice: exactly a tumbling window of size D - in the table
 * <name>_slices, so a message costs one update however many windows hold
 * it.  The window instances are put together from their S / D slices:
 *
 *	 closed	  when the watermark closes a window (window_end + allowed
 *			  lateness <= watermark), the batch that moved the watermark
 *			  there commits at once (sa_slices_due), and its transaction
 *			  inserts the window's rows - its slices combined - into
 *			  <name>_closed.  No row read after the close can be in it,
 *			  as it would be late; slices no open window reads are deleted;
 *	 open	  the view <name> shows <name>_closed and, for the windows that
 *			  are still open, their slices combined at read time.
 *			  <name>_final is <name>_closed.
 *
 * Which windows are closed the view reads from the slice table itself:
 * its row with window_start = -infinity (no slice has it) holds in
 * window_end the horizon of the last materialization (watermark minus
 * allowed lateness); windows ending at or before it are in <name>_closed.
 * It is written in the same transaction as the windows it covers, and
 * lies in a table of the view's owner: a role that may read the view
 * needs no access to the stream's catalog rows (streamagg.watermark).
 *
 * Combining: counts and sums add, min and max compare, and avg is the
 * exact sum over the exact count (the slice keeps both): every row equals
 * the GROUP BY over the rows counted, as the per-instance path gives.  A
 * row late for some of its windows and on time for others goes into its
 * slice (the closed ones were materialized without it) and is a 'late'
 * dead letter of the window, as in the per-instance path.
 *
 * Chaining: putting a window together reads all its slices, S / D times
 * a slice's groups.  When every aggregate is a count or a sum or avg of
 * integers (subtraction is exact), window w is window w - D, minus the
 * slice that left it, plus the slice that came in: the closed table keeps
 * count(*), each sum's count and each avg's sum for that, and the slice
 * of the last closed window stays until the next close.  This holds while
 * no row went into a slice shared by w - D and w after w - D was closed
 * (such a row was late for w - D: window.c marks the window dirty), and
 * w - D is in the closed table as this worker closed it (not after a
 * restart, nor once retention may have deleted it); otherwise w is put
 * together from its slices.
 *
 * The moment of materialization needs one writer that orders every row
 * against the window's close: only windows of streams with parallelism 1
 * are sliced (sa_window_sliceable), and only aggregates whose slices add
 * up without a new overflow.  Everything here runs in the batch's
 * transaction, as the stream's owner, like the other result writes.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

/*
 * An interval literal of exactly us microseconds, with no days in it:
 * adding it to a timestamptz never depends on the time zone.
 */
static char *
usecs_literal(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = us;
	return psprintf("%s::pg_catalog.interval",
					quote_literal_cstr(DatumGetCString(DirectFunctionCall1(interval_out,
																		   IntervalPGetDatum(iv)))));
}

/* The window's value of user aggregate i, combined over the slices "sl". */
static void
append_combined(StringInfo sql, SaWindow *w, int i)
{
	SaAgg	   *a = &w->aggs[i];
	const char *col = quote_identifier(a->name);

	if (w->avg_count[i] >= 0)
		appendStringInfo(sql, "(pg_catalog.sum(sl.%s) / "
						 "NULLIF(pg_catalog.sum(sl.%s), 0))",
						 col, quote_identifier(w->aggs[w->avg_count[i]].name));
	else if (a->kind == SA_AGG_MIN || a->kind == SA_AGG_MAX)
		appendStringInfo(sql, "pg_catalog.%s(sl.%s)", a->kind == SA_AGG_MIN ? "min" : "max", col);
	else if (a->restype == INT8OID)
		appendStringInfo(sql, "pg_catalog.sum(sl.%s)::pg_catalog.int8", col);
	else
		appendStringInfo(sql, "pg_catalog.sum(sl.%s)", col);
}

/*
 * CREATE VIEW <name>: the closed windows, then the open ones combined from
 * their slices at read time.  A window is open while its end is after the
 * horizon the worker last materialized up to (the committed watermark
 * minus allowed_lateness).  The series of window starts runs from the
 * first window holding the first slice an open window can read (its
 * start after horizon - size: the index scan for it starts past the
 * slices deleted lately) to the last slice; a condition on window_start
 * reaches the series, and each window reads its slices by index.  (Called
 * with w's aggregates already made slice columns.)
 */
char *
sa_slices_view_sql(SaWindow *w, const char *view, const char *slices,
				   const char *closed)
{
	StringInfoData sql;
	char	   *size = usecs_literal(w->size_us);
	char	   *slide = usecs_literal(w->slide_us);

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE VIEW %s AS SELECT window_start, window_end", view);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, ", %s", quote_identifier(w->groups[i].name));
	for (int i = 0; i < w->nuser_aggs; i++)
		appendStringInfo(&sql, ", %s", quote_identifier(w->aggs[i].name));
	appendStringInfo(&sql, " FROM %s UNION ALL SELECT s.ws, (s.ws + %s)", closed, size);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, ", sl.%s", quote_identifier(w->groups[i].name));
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		appendStringInfoString(&sql, ", ");
		append_combined(&sql, w, i);
	}
	appendStringInfo(&sql, " FROM (SELECT "
					 "(SELECT window_end FROM %s "
					 "WHERE window_start = '-infinity'::pg_catalog.timestamptz) AS horizon, "
					 "(SELECT pg_catalog.max(window_start) FROM %s) AS hi) b "
					 "CROSS JOIN LATERAL pg_catalog.generate_series("
					 "(SELECT pg_catalog.min(window_start) FROM %s WHERE window_start > "
					 "COALESCE(b.horizon - %s, '-infinity'::pg_catalog.timestamptz)) - %s + %s, "
					 "b.hi, %s) AS s(ws) "
					 "JOIN %s sl ON sl.window_start >= s.ws AND sl.window_start < (s.ws + %s) "
					 "WHERE (s.ws + %s) > COALESCE(b.horizon, '-infinity'::pg_catalog.timestamptz) "
					 "GROUP BY s.ws",
					 slices, slices,
					 slices, size, size, slide,
					 slide,
					 slices, size, size);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, ", sl.%s", quote_identifier(w->groups[i].name));
	return sql.data;
}

/* The columns of a result table: window_start, window_end, groups, aggregates. */
static void
append_user_columns(StringInfo sql, SaWindow *w, const char *prefix)
{
	appendStringInfo(sql, "%swindow_start, %swindow_end", prefix, prefix);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(sql, ", %s%s", prefix, quote_identifier(w->groups[i].name));
	for (int i = 0; i < w->nuser_aggs; i++)
		appendStringInfo(sql, ", %s%s", prefix, quote_identifier(w->aggs[i].name));
}

/* CREATE VIEW <name>_final: the materialized windows, all final. */
char *
sa_slices_closed_view_sql(SaWindow *w, const char *view, const char *closed)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE VIEW %s AS SELECT ", view);
	append_user_columns(&sql, w, "");
	appendStringInfo(&sql, " FROM %s", closed);
	return sql.data;
}

/*
 * The names of a chained window's closed table's hidden columns, with
 * prefix, comma first: count(*), then per sum its count, per avg its sum
 * and count.
 */
static void
append_hidden_columns(StringInfo sql, SaWindow *w, const char *prefix)
{
	appendStringInfo(sql, ", %s%s", prefix, quote_identifier(w->aggs[w->rows_col].name));
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		if (w->sum_count[i] >= 0)
			appendStringInfo(sql, ", %s%s", prefix, quote_identifier(w->aggs[w->sum_count[i]].name));
		if (w->avg_count[i] >= 0)
			appendStringInfo(sql, ", %s%s, %s%s", prefix, quote_identifier(w->avg_sum_name[i]),
							 prefix, quote_identifier(w->aggs[w->avg_count[i]].name));
	}
}

/* ALTER TABLE <name>_closed: the hidden columns a chained window needs. */
char *
sa_slices_chain_columns_sql(SaWindow *w, const char *closed)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s ADD COLUMN %s bigint", closed,
					 quote_identifier(w->aggs[w->rows_col].name));
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		if (w->sum_count[i] >= 0)
			appendStringInfo(&sql, ", ADD COLUMN %s bigint",
							 quote_identifier(w->aggs[w->sum_count[i]].name));
		if (w->avg_count[i] >= 0)
			appendStringInfo(&sql, ", ADD COLUMN %s numeric, ADD COLUMN %s bigint",
							 quote_identifier(w->avg_sum_name[i]),
							 quote_identifier(w->aggs[w->avg_count[i]].name));
	}
	return sql.data;
}

void
sa_slices_free_plans(SaWindow *w)
{
	sa_free_kept(&w->close_plan);
	sa_free_kept(&w->prune_plan);
	sa_free_kept(&w->horizon_plan);
	sa_free_kept(&w->chain_plan);
}

/* Store the horizon the view reads: the marker row of the slice table. */
static void
set_horizon(SaWindow *w, TimestampTz horizon)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(horizon)};

	if (w->horizon_plan == NULL)
	{
		char	   *sql = psprintf("WITH u AS (UPDATE %s SET window_end = GREATEST(window_end, $1) "
								   "WHERE window_start = '-infinity'::pg_catalog.timestamptz RETURNING 1) "
								   "INSERT INTO %s (window_start, window_end) "
								   "SELECT '-infinity'::pg_catalog.timestamptz, $1 "
								   "WHERE NOT EXISTS (SELECT FROM u)",
								   w->result_name, w->result_name);

		w->horizon_plan = sa_keep_plan(sql, 1, types);
	}
	if (SPI_execute_plan(w->horizon_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store the closed horizon of \"%s\"", w->name);
}

/*
 * The horizon stored in the marker row, or DT_NOBEGIN.  Read as the owner
 * (the caller's transaction, connected to SPI).
 */
static TimestampTz
stored_horizon(SaWorker *w, SaWindow *win)
{
	SaUserContext uctx;
	TimestampTz horizon = DT_NOBEGIN;

	sa_enter_owner(w->st->owner, &uctx);
	if (SPI_execute(psprintf("SELECT window_end FROM %s "
							 "WHERE window_start = '-infinity'::pg_catalog.timestamptz",
							 win->result_name), true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			horizon = DatumGetTimestampTz(d);
	}
	sa_leave(&uctx);
	return horizon;
}

/*
 * After (re)loading: what is materialized.  That is what the committed
 * watermark closed, or more after reset_offsets(replay => true), which
 * forgets the watermark but keeps the closed windows: the stored horizon
 * never moves back, and replayed rows of closed windows are late for them.
 */
void
sa_slices_setup(SaWorker *w)
{
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		TimestampTz stored;

		win->closed_until = TIMESTAMP_NOT_FINITE(w->watermark) ? DT_NOBEGIN :
			w->watermark - win->lateness_us;
		if (win->sliced && (stored = stored_horizon(w, win)) > win->closed_until)
			win->closed_until = stored;
		win->pending_closed = win->closed_until;
		/* the first window closed after a (re)start is put together from its slices */
		win->chain_ok = win->pending_chain_ok = false;
		win->dirty = win->pending_dirty = false;
	}
}

/*
 * Has the watermark closed a window of a sliced window that is not
 * materialized yet?  Then the batch must commit before the next row.
 */
bool
sa_slices_due(SaWorker *w)
{
	if (TIMESTAMP_NOT_FINITE(w->watermark))
		return false;
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];

		if (win->sliced &&
			sa_window_closing(win, win->closed_until, w->watermark - win->lateness_us))
			return true;
	}
	return false;
}

/*
 * The statements of materializing: one window's rows from its slices
 * ($1: its start), and deleting the slices in ($1, $2].
 */
static void
prepare_close(SaWindow *w)
{
	Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
	char	   *size = usecs_literal(w->size_us);
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s (", w->closed_name);
	append_user_columns(&sql, w, "");
	if (w->chain)
		append_hidden_columns(&sql, w, "");
	appendStringInfo(&sql, ") SELECT $1, ($1 + %s)", size);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, ", sl.%s", quote_identifier(w->groups[i].name));
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		appendStringInfoString(&sql, ", ");
		append_combined(&sql, w, i);
	}
	if (w->chain)
	{
		appendStringInfo(&sql, ", pg_catalog.sum(sl.%s)::pg_catalog.int8",
						 quote_identifier(w->aggs[w->rows_col].name));
		for (int i = 0; i < w->nuser_aggs; i++)
		{
			if (w->sum_count[i] >= 0)
				appendStringInfo(&sql, ", pg_catalog.sum(sl.%s)::pg_catalog.int8",
								 quote_identifier(w->aggs[w->sum_count[i]].name));
			if (w->avg_count[i] >= 0)
				appendStringInfo(&sql, ", pg_catalog.sum(sl.%s), pg_catalog.sum(sl.%s)::pg_catalog.int8",
								 quote_identifier(w->aggs[i].name),
								 quote_identifier(w->aggs[w->avg_count[i]].name));
		}
	}
	appendStringInfo(&sql, " FROM %s sl WHERE sl.window_start >= $1 AND sl.window_start < ($1 + %s)",
					 w->result_name, size);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%s sl.%s", i == 0 ? " GROUP BY" : ",",
						 quote_identifier(w->groups[i].name));

	/* without groups an aggregate over no rows is still a row: not ours */
	appendStringInfoString(&sql, " HAVING pg_catalog.count(*) > 0");
	w->close_plan = sa_keep_plan(sql.data, 1, types);

	resetStringInfo(&sql);
	appendStringInfo(&sql, "DELETE FROM %s WHERE window_start > $1 AND window_start <= $2",
					 w->result_name);
	w->prune_plan = sa_keep_plan(sql.data, 2, types);
}

/* A prefix for column aliases that starts no group column's name. */
static char *
alias_prefix(SaWindow *w)
{
	char	   *prefix = pstrdup("_sa_");

	for (int i = 0; i < w->ngroups; i++)
		if (strncmp(w->groups[i].name, prefix, strlen(prefix)) == 0)
		{
			prefix = psprintf("_%s", prefix);
			i = -1;
		}
	return prefix;
}

/*
 * The state of a chained window in relation t, comma first: count(*),
 * then per aggregate its value and, for sums and averages, its count(x)
 * (of the closed table when closed, else of the slice table); negated
 * with sign "-"; with aliases when p (the alias prefix) is given.
 */
static void
append_state(StringInfo sql, SaWindow *w, const char *t, bool closed, const char *sign,
			 const char *p)
{
	appendStringInfo(sql, ", %s%s.%s", sign, t, quote_identifier(w->aggs[w->rows_col].name));
	if (p)
		appendStringInfo(sql, " AS %srows", p);
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		const char *value = w->avg_count[i] >= 0 && closed ? w->avg_sum_name[i] : w->aggs[i].name;
		int			count = w->avg_count[i] >= 0 ? w->avg_count[i] : w->sum_count[i];

		appendStringInfo(sql, ", %s%s.%s", sign, t, quote_identifier(value));
		if (p)
			appendStringInfo(sql, " AS %sv%d", p, i);
		if (count >= 0)
		{
			appendStringInfo(sql, ", %s%s.%s", sign, t, quote_identifier(w->aggs[count].name));
			if (p)
				appendStringInfo(sql, " AS %sn%d", p, i);
		}
	}
}

/*
 * A chained window's rows ($1: its start): its predecessor's state, minus
 * the slice that left it, plus the slice that came in; groups whose rows
 * all left are gone.
 */
static void
prepare_chain(SaWindow *w)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	char	   *size = usecs_literal(w->size_us);
	char	   *slide = usecs_literal(w->slide_us);
	char	   *p = alias_prefix(w);
	StringInfoData sql;
	StringInfoData groups;

	initStringInfo(&groups);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&groups, "%s%s", i > 0 ? ", " : "", quote_identifier(w->groups[i].name));

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s (", w->closed_name);
	append_user_columns(&sql, w, "");
	append_hidden_columns(&sql, w, "");
	appendStringInfo(&sql, ") SELECT $1, ($1 + %s)", size);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, ", x.%s", quote_identifier(w->groups[i].name));
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		SaAgg	   *a = &w->aggs[i];

		if (w->avg_count[i] >= 0)
			appendStringInfo(&sql, ", (x.%sv%d / NULLIF(x.%sn%d, 0))", p, i, p, i);
		else if (w->sum_count[i] >= 0)
			appendStringInfo(&sql, ", (CASE WHEN x.%sn%d > 0 THEN x.%sv%d END)%s", p, i, p, i,
							 a->restype == INT8OID ? "::pg_catalog.int8" : "");
		else
			appendStringInfo(&sql, ", x.%sv%d::pg_catalog.int8", p, i);
	}
	appendStringInfo(&sql, ", x.%srows::pg_catalog.int8", p);
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		if (w->sum_count[i] >= 0)
			appendStringInfo(&sql, ", x.%sn%d::pg_catalog.int8", p, i);
		if (w->avg_count[i] >= 0)
			appendStringInfo(&sql, ", x.%sv%d, x.%sn%d::pg_catalog.int8", p, i, p, i);
	}
	appendStringInfoString(&sql, " FROM (SELECT ");
	appendStringInfoString(&sql, groups.len > 0 ? groups.data : "");
	appendStringInfo(&sql, "%spg_catalog.sum(%srows) AS %srows", groups.len > 0 ? ", " : "", p, p);
	for (int i = 0; i < w->nuser_aggs; i++)
	{
		appendStringInfo(&sql, ", pg_catalog.sum(%sv%d) AS %sv%d", p, i, p, i);
		if (w->avg_count[i] >= 0 || w->sum_count[i] >= 0)
			appendStringInfo(&sql, ", pg_catalog.sum(%sn%d) AS %sn%d", p, i, p, i);
	}
	/* the predecessor */
	appendStringInfoString(&sql, " FROM (SELECT ");
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%st.%s", i > 0 ? ", " : "", quote_identifier(w->groups[i].name));
	if (w->ngroups == 0)
		appendStringInfoString(&sql, "NULL::pg_catalog.int4 AS _sa_nothing");
	append_state(&sql, w, "t", true, "", p);
	appendStringInfo(&sql, " FROM %s t WHERE t.window_start = ($1 - %s)", w->closed_name, slide);
	/* minus the slice that left, plus the slice that came in */
	appendStringInfoString(&sql, " UNION ALL SELECT ");
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%st.%s", i > 0 ? ", " : "", quote_identifier(w->groups[i].name));
	if (w->ngroups == 0)
		appendStringInfoString(&sql, "NULL");
	append_state(&sql, w, "t", false, "-", NULL);
	appendStringInfo(&sql, " FROM %s t WHERE t.window_start = ($1 - %s)", w->result_name, slide);
	appendStringInfoString(&sql, " UNION ALL SELECT ");
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%st.%s", i > 0 ? ", " : "", quote_identifier(w->groups[i].name));
	if (w->ngroups == 0)
		appendStringInfoString(&sql, "NULL");
	append_state(&sql, w, "t", false, "", NULL);
	appendStringInfo(&sql, " FROM %s t WHERE t.window_start = ($1 + %s - %s)) u",
					 w->result_name, size, slide);
	if (w->ngroups > 0)
		appendStringInfo(&sql, " GROUP BY %s", groups.data);
	appendStringInfo(&sql, ") x WHERE x.%srows > 0", p);
	w->chain_plan = sa_keep_plan(sql.data, 1, types);
}

/*
 * The first slice start at or after 'from' and the last one (false: no
 * such slices).  The index scan for the first starts at 'from', past the
 * entries of slices deleted lately.  With from unknown (-infinity: the
 * first materialization since the worker started without a watermark),
 * windows already in the closed table are left out too: only
 * reset_offsets(replay => true), which keeps the closed windows and
 * forgets the watermark, would close them again.
 */
static bool
slice_range(SaWindow *w, TimestampTz from, TimestampTz *lo, TimestampTz *hi)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(from)};
	bool		lonull;
	bool		hinull;
	bool		cnull;
	TimestampTz closed;

	if (SPI_execute_with_args(psprintf("SELECT (SELECT pg_catalog.min(window_start) FROM %s "
									   "WHERE window_start >= $1 "
									   "AND window_start > '-infinity'::pg_catalog.timestamptz), "
									   "(SELECT pg_catalog.max(window_start) FROM %s), "
									   "(SELECT pg_catalog.max(window_start) FROM %s)",
									   w->result_name, w->result_name, w->closed_name),
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the slices of \"%s\"", w->name);
	*lo = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &lonull));
	*hi = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &hinull));
	closed = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &cnull));
	if (TIMESTAMP_NOT_FINITE(from) && !cnull && !lonull)
		*lo = Max(*lo, closed + w->size_us);	/* lo - size + slide > closed */
	return !lonull && !hinull;
}

/*
 * Materialize the windows starting in [first, last] (first_known false:
 * from the oldest slice on), then delete the slices of their starts.  One
 * statement per window: usually one window closes at a time, and a
 * statement over one window's range is planned with what it reads (a
 * range join over a series of windows was estimated at a thousand windows
 * and planned, and JIT-compiled, accordingly).
 */
static void
close_windows(SaWindow *w, TimestampTz first, bool first_known, TimestampTz last)
{
	Datum		values[2];
	TimestampTz from = first;
	TimestampTz to = last;
	int			save_nestlevel;

	bool		chained = w->chain && w->chain_ok && !w->dirty && !w->batch_dirty && first_known;

	if (w->close_plan == NULL)
		prepare_close(w);
	if (w->chain && w->chain_plan == NULL)
		prepare_chain(w);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (!first_known || last > first)
	{
		/* several windows: only those that hold a slice */
		TimestampTz lo;
		TimestampTz hi;

		if (!slice_range(w, first_known ? first : DT_NOBEGIN, &lo, &hi))
			to = DT_NOBEGIN;
		else
		{
			lo = lo - w->size_us + w->slide_us;
			from = first_known ? Max(first, lo) : lo;
			to = Min(last, hi);
		}
	}
	for (TimestampTz s = from; s <= to && !TIMESTAMP_NOT_FINITE(to); s += w->slide_us)
	{
		/*
		 * Chained from its predecessor, when that is exact: it is in the
		 * closed table (or empty: the windows skipped above hold no slice)
		 * and no row went into a slice it shares with this window since it
		 * was closed - such a row was late for it, and marked the window
		 * dirty (window.c).
		 */
		values[0] = TimestampTzGetDatum(s);
		if (SPI_execute_plan(chained ? w->chain_plan : w->close_plan, values, NULL, false, 0) !=
			SPI_OK_INSERT)
			elog(ERROR, "could not materialize a closed window of \"%s\"", w->name);
		chained = w->chain;
	}
	/*
	 * No open window reads the slices of these windows' starts; the last
	 * one's stays until the next window is closed, which is chained by
	 * subtracting it.
	 */
	values[0] = TimestampTzGetDatum(first_known ? first - 2 * w->slide_us : DT_NOBEGIN);
	values[1] = TimestampTzGetDatum(last - w->slide_us);
	if (SPI_execute_plan(w->prune_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete the slices of \"%s\"", w->name);
	AtEOXact_GUC(true, save_nestlevel);
	w->pending_chain_ok = w->chain;
	w->pending_dirty = false;
}

/*
 * In the batch's transaction, as the stream's owner, after the slices are
 * written: materialize every window that the watermark committed with
 * this batch closes and that is not materialized yet.
 */
void
sa_slices_close(SaWorker *w)
{
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		TimestampTz horizon;
		int64		last;

		win->pending_closed = win->closed_until;
		win->pending_chain_ok = win->chain_ok;
		win->pending_dirty = win->dirty || win->batch_dirty;
		if (!win->sliced || TIMESTAMP_NOT_FINITE(w->watermark))
			continue;
		horizon = w->watermark - win->lateness_us;
		if (!TIMESTAMP_NOT_FINITE(win->closed_until) &&
			!sa_window_closing(win, win->closed_until, horizon))
			continue;			/* no window end passed: nothing changes */
		/* the newest window ending at or before the horizon */
		last = sa_floor_div(horizon + SA_UNIX_OFFSET_US - win->size_us, win->slide_us) *
			win->slide_us - SA_UNIX_OFFSET_US;
		if (TIMESTAMP_NOT_FINITE(win->closed_until))
			close_windows(win, 0, false, last);
		else
		{
			int64		first = (sa_floor_div(win->closed_until + SA_UNIX_OFFSET_US - win->size_us,
										   win->slide_us) + 1) * win->slide_us - SA_UNIX_OFFSET_US;

			if (first <= last)
				close_windows(win, first, true, last);
		}
		set_horizon(win, horizon);
		win->pending_closed = horizon;
	}
}

/* The batch committed: what it materialized is there for good. */
void
sa_slices_committed(SaWorker *w)
{
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];

		win->closed_until = win->pending_closed;
		win->chain_ok = win->pending_chain_ok;
		win->dirty = win->pending_dirty;
	}
}
