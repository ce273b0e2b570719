/*-------------------------------------------------------------------------
 *
 * session.c
 *		Session windows: per group, a session holds rows whose event times
 *		lie closer than the gap to a neighbour.
 *
 * In a batch, each row starts a session of its own that at once merges
 * with every session of its group closer than the gap (a row between two
 * sessions bridges them).  At the end of the batch each merged session
 * takes, from the result table, the stored sessions of its group that are
 * closer than the gap to it (DELETE ... RETURNING, by group and
 * window_end through an index), merges them in (counts and sums add,
 * min/max compare, avg adds its exact sum and count from the state
 * table), absorbs any following session of the batch that it now reaches,
 * and is written back as one row:
 *
 *	 window_start = first event time, window_end = last event time + gap
 *
 * Because merging is associative and commutative, the table is the same
 * whatever the arrival order, as long as no row is late.  A session row
 * is final once window_end + gap + allowed_lateness <= watermark (see
 * sa_final_horizon).  A row is on time when its own session would still
 * be open (event_time + gap + allowed_lateness > watermark); such a row
 * cannot reach a final session.  Any other row is late unless it falls
 * into, extends or bridges sessions of its group that are all still open
 * (sa_session_late looks them up in the batch and the result table);
 * a row that would change a final session is late: final rows never
 * change.
 *
 * Sessions of one group must be written by one worker: with parallelism
 * above 1, keep a group's rows in one partition (key the topic by it).
 *
 *-------------------------------------------------------------------------
 */
#include "window.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

static SaSession *
new_session(SaWindow *w, int64 t, MemoryContext cxt)
{
	SaSession  *s = MemoryContextAllocZero(cxt, offsetof(SaSession, vals) +
										   sizeof(SaAggValue) * w->naggs);

	s->start = s->last = t;
	for (int i = 0; i < w->naggs; i++)
		s->vals[i].isnull = true;
	return s;
}

/* Do two sessions have events closer than the gap? */
static bool
sessions_touch(SaWindow *w, int64 start1, int64 last1, int64 start2, int64 last2)
{
	return start2 - last1 < w->gap_us && start1 - last2 < w->gap_us;
}

static void
absorb(SaWindow *w, SaSession *into, SaSession *from, MemoryContext cxt)
{
	into->start = Min(into->start, from->start);
	into->last = Max(into->last, from->last);
	sa_merge_values(w, into->vals, from->vals, cxt);
}

/*
 * Put a session into its group's list (sorted by start), merging it with
 * every session it touches.
 */
static void
insert_session(SaWindow *w, SaGroup *g, SaSession *s, MemoryContext cxt)
{
	SaSession **pp = &g->sessions;

	while (*pp)
	{
		SaSession  *o = *pp;

		if (sessions_touch(w, o->start, o->last, s->start, s->last))
		{
			absorb(w, s, o, cxt);
			*pp = o->next;
			continue;
		}
		pp = &o->next;
	}
	for (pp = &g->sessions; *pp && (*pp)->start < s->start; pp = &(*pp)->next)
		;
	s->next = *pp;
	*pp = s;
}

/* Fold one evaluated row into its group's sessions. */
void
sa_session_add(SaWindow *w, SaGroup *g, SaRowInput *in, MemoryContext cxt)
{
	SaSession  *s = new_session(w, in->event_time, cxt);

	for (int i = 0; i < w->naggs; i++)
		sa_fold_value(&w->aggs[i], &s->vals[i], in->args[i], in->argnulls[i], cxt);
	insert_session(w, g, s, cxt);
}

/* ---------- writing ---------- */

/* The prepared statements on stored sessions for one NULL pattern of the key. */
typedef struct TakePlan
{
	uint32		nullmask;
	SPIPlanPtr	plan;			/* DELETE of result rows, or NULL until used */
	SPIPlanPtr	state_plan;		/* ... of their avg state, or NULL */
	SPIPlanPtr	look_plan;		/* SELECT of their bounds (late checks), or NULL */
} TakePlan;

/* The entry of one NULL pattern (created empty), in TopMemoryContext. */
static TakePlan *
mask_plans(SaWindow *w, uint32 mask)
{
	ListCell   *lc;
	TakePlan   *tp;
	MemoryContext old;

	foreach(lc, w->session_take_plans)
	{
		tp = lfirst(lc);
		if (tp->nullmask == mask)
			return tp;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	tp = palloc0(sizeof(TakePlan));
	tp->nullmask = mask;
	w->session_take_plans = lappend(w->session_take_plans, tp);
	MemoryContextSwitchTo(old);
	return tp;
}

static uint32
null_mask(SaWindow *w, SaGroup *g)
{
	uint32		mask = 0;

	for (int i = 0; i < w->ngroups; i++)
		if (g->keynulls[i])
			mask |= (1U << i);
	return mask;
}

/* " AND g1 = $3 AND g2 IS NULL ..." for a NULL pattern; params from $first */
static void
append_key_match(StringInfo sql, SaWindow *w, uint32 mask, const char *alias, int first,
				 Oid *types, int *ntypes)
{
	for (int i = 0; i < w->ngroups; i++)
	{
		const char *col = quote_identifier(w->groups[i].name);

		if (mask & (1U << i))
			appendStringInfo(sql, " AND %s%s IS NULL", alias, col);
		else
		{
			appendStringInfo(sql, " AND %s%s = $%d", alias, col, first + *ntypes - 2);
			types[(*ntypes)++] = w->groups[i].typid;
		}
	}
}

static TakePlan *
take_plan(SaWindow *w, uint32 mask)
{
	TakePlan   *tp = mask_plans(w, mask);
	StringInfoData sql;
	Oid			types[FUNC_MAX_ARGS];
	int			ntypes = 2;

	if (tp->plan != NULL)
		return tp;
	initStringInfo(&sql);
	types[0] = TIMESTAMPTZOID;
	types[1] = TIMESTAMPTZOID;
	appendStringInfo(&sql, "DELETE FROM %s WHERE window_end > $1 AND window_start < $2", w->result_name);
	append_key_match(&sql, w, mask, "", 3, types, &ntypes);
	appendStringInfoString(&sql, " RETURNING window_start, window_end");
	for (int i = 0; i < w->naggs; i++)
		appendStringInfo(&sql, ", %s", quote_identifier(w->aggs[i].name));
	tp->plan = SPI_prepare(sql.data, ntypes, types);
	if (tp->plan == NULL)
		elog(ERROR, "could not prepare \"%s\"", sql.data);
	SPI_keepplan(tp->plan);

	if (w->navg > 0)
	{
		types[1] = TIMESTAMPTZARRAYOID;
		ntypes = 2;
		resetStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM %s WHERE $1 IS NOT NULL AND window_start = ANY ($2)", w->state_name);
		append_key_match(&sql, w, mask, "", 3, types, &ntypes);
		appendStringInfoString(&sql, " RETURNING window_start");
		for (int i = 0; i < w->naggs; i++)
			if (w->aggs[i].kind == SA_AGG_AVG)
				appendStringInfo(&sql, ", s%d, c%d", i, i);
		tp->state_plan = SPI_prepare(sql.data, ntypes, types);
		if (tp->state_plan == NULL)
			elog(ERROR, "could not prepare \"%s\"", sql.data);
		SPI_keepplan(tp->state_plan);
	}
	pfree(sql.data);
	return tp;
}

/* A stored session row as running values, merged into s. */
static void
merge_stored(SaWindow *w, SaSession *s, HeapTuple tup, TupleDesc desc,
			 HeapTuple state, TupleDesc sdesc, MemoryContext cxt)
{
	SaSession  *stored;
	bool		isnull;
	int			scol = 2;

	stored = new_session(w, DatumGetTimestampTz(SPI_getbinval(tup, desc, 1, &isnull)), cxt);
	stored->last = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull)) - w->gap_us;
	for (int i = 0; i < w->naggs; i++)
	{
		SaAggValue *v = &stored->vals[i];
		Datum		d = SPI_getbinval(tup, desc, 3 + i, &isnull);

		switch (w->aggs[i].kind)
		{
			case SA_AGG_COUNT_STAR:
			case SA_AGG_COUNT:
				v->count = isnull ? 0 : DatumGetInt64(d);
				break;
			case SA_AGG_AVG:
				if (state == NULL)
					elog(ERROR, "avg state of a stored session of window \"%s\" is missing", w->name);
				v->value = SPI_getbinval(state, sdesc, scol++, &v->isnull);
				v->count = DatumGetInt64(SPI_getbinval(state, sdesc, scol++, &isnull));
				break;
			default:
				v->value = d;
				v->isnull = isnull;
				v->count = isnull ? 0 : 1;
		}
	}
	absorb(w, s, stored, cxt);
}

/*
 * Take every stored session of g that touches s out of the table and
 * merge it into s.  Returns whether anything was taken.
 */
static bool
take_stored(SaWindow *w, SaGroup *g, SaSession *s, MemoryContext cxt)
{
	TakePlan   *tp = take_plan(w, null_mask(w, g));
	Datum		values[FUNC_MAX_ARGS];
	int			n = 2;
	SPITupleTable *rows;
	uint64		nrows;

	values[0] = TimestampTzGetDatum(s->start);
	values[1] = TimestampTzGetDatum(s->last + w->gap_us);
	for (int i = 0; i < w->ngroups; i++)
		if (!g->keynulls[i])
			values[n++] = g->keys[i];
	if (SPI_execute_plan(tp->plan, values, NULL, false, 0) != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not read the stored sessions of window \"%s\"", w->name);
	rows = SPI_tuptable;
	nrows = SPI_processed;
	if (nrows == 0)
		return false;

	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	state = NULL;
		TupleDesc	sdesc = NULL;

		if (tp->state_plan)
		{
			Datum		start = SPI_getbinval(rows->vals[r], rows->tupdesc, 1, &(bool){false});

			values[1] = PointerGetDatum(construct_array(&start, 1, TIMESTAMPTZOID, 8,
														FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			if (SPI_execute_plan(tp->state_plan, values, NULL, false, 0) != SPI_OK_DELETE_RETURNING)
				elog(ERROR, "could not read the avg state of window \"%s\"", w->name);
			if (SPI_processed > 0)
			{
				state = SPI_tuptable->vals[0];
				sdesc = SPI_tuptable->tupdesc;
			}
		}
		merge_stored(w, s, rows->vals[r], rows->tupdesc, state, sdesc, cxt);
	}
	return true;
}

/* Merge s with what it reaches, stored or in this batch, until nothing more. */
static void
settle_session(SaWindow *w, SaGroup *g, SaSession *s, MemoryContext cxt)
{
	bool		changed;

	do
	{
		changed = take_stored(w, g, s, cxt);
		while (s->next && sessions_touch(w, s->start, s->last, s->next->start, s->next->last))
		{
			absorb(w, s, s->next, cxt);
			s->next = s->next->next;
			changed = true;
		}
	} while (changed);
}

/* Write the settled sessions (and their avg state) with two inserts. */
static void
insert_sessions(SaWindow *w, List *groups, List *sessions)
{
	int			n = list_length(sessions);
	SaArrays	a = {0};
	SaArrays	st = {0};
	Datum	   *d = palloc(sizeof(Datum) * n);
	bool	   *nl = palloc0(sizeof(bool) * n);
	int			r;
	ListCell   *lg,
			   *ls;

	/* keys */
	r = 0;
	foreach(ls, sessions)
		d[r++] = TimestampTzGetDatum(((SaSession *) lfirst(ls))->start);
	sa_add_array(&a, TIMESTAMPTZOID, d, nl, n);
	sa_add_array(&st, TIMESTAMPTZOID, d, nl, n);
	r = 0;
	foreach(ls, sessions)
		d[r++] = TimestampTzGetDatum(((SaSession *) lfirst(ls))->last + w->gap_us);
	sa_add_array(&a, TIMESTAMPTZOID, d, nl, n);
	for (int i = 0; i < w->ngroups; i++)
	{
		r = 0;
		foreach(lg, groups)
		{
			SaGroup    *g = lfirst(lg);

			d[r] = g->keys[i];
			nl[r++] = g->keynulls[i];
		}
		sa_add_array(&a, w->groups[i].typid, d, nl, n);
		sa_add_array(&st, w->groups[i].typid, d, nl, n);
	}
	memset(nl, 0, sizeof(bool) * n);
	for (r = 0; r < n; r++)
		d[r] = Int32GetDatum(0);
	sa_add_array(&st, INT4OID, d, nl, n);

	/* aggregates: final values in the result, sum and count in the state */
	for (int i = 0; i < w->naggs; i++)
	{
		SaAgg	   *agg = &w->aggs[i];

		r = 0;
		foreach(ls, sessions)
		{
			SaAggValue *v = &((SaSession *) lfirst(ls))->vals[i];

			nl[r] = false;
			if (agg->kind == SA_AGG_COUNT_STAR || agg->kind == SA_AGG_COUNT)
				d[r] = Int64GetDatum(v->count);
			else if (agg->kind == SA_AGG_AVG)
			{
				nl[r] = v->isnull || v->count == 0;
				d[r] = nl[r] ? (Datum) 0 : sa_avg_final(agg, v->value, v->count);
			}
			else
			{
				d[r] = v->value;
				nl[r] = v->isnull;
			}
			r++;
		}
		sa_add_array(&a, agg->restype, d, nl, n);
		if (agg->kind != SA_AGG_AVG)
			continue;
		r = 0;
		foreach(ls, sessions)
		{
			SaAggValue *v = &((SaSession *) lfirst(ls))->vals[i];

			d[r] = v->value;
			nl[r++] = v->isnull;
		}
		sa_add_array(&st, agg->statetype, d, nl, n);
		r = 0;
		memset(nl, 0, sizeof(bool) * n);
		foreach(ls, sessions)
			d[r++] = Int64GetDatum(((SaSession *) lfirst(ls))->vals[i].count);
		sa_add_array(&st, INT8OID, d, nl, n);
	}

	if (w->session_insert_plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s SELECT * FROM unnest(", w->result_name);
		for (int i = 0; i < a.n; i++)
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
		appendStringInfoChar(&sql, ')');
		w->session_insert_plan = sa_prepare_kept(sql.data, &a);
		if (w->navg > 0)
		{
			resetStringInfo(&sql);
			appendStringInfo(&sql, "INSERT INTO %s SELECT * FROM unnest(", w->state_name);
			for (int i = 0; i < st.n; i++)
				appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
			appendStringInfoChar(&sql, ')');
			w->session_state_insert_plan = sa_prepare_kept(sql.data, &st);
		}
	}
	if (SPI_execute_plan(w->session_insert_plan, a.values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write the sessions of window \"%s\"", w->name);
	if (w->session_state_insert_plan &&
		SPI_execute_plan(w->session_state_insert_plan, st.values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write the avg state of window \"%s\"", w->name);
}

/* ---------- lateness ---------- */

/* The prepared read of stored sessions touching an interval, per NULL pattern. */
static SPIPlanPtr
look_plan(SaWindow *w, uint32 mask)
{
	TakePlan   *tp = mask_plans(w, mask);
	StringInfoData sql;
	Oid			types[FUNC_MAX_ARGS];
	int			ntypes = 2;

	if (tp->look_plan != NULL)
		return tp->look_plan;
	initStringInfo(&sql);
	types[0] = TIMESTAMPTZOID;
	types[1] = TIMESTAMPTZOID;
	appendStringInfo(&sql, "SELECT window_start, window_end FROM %s WHERE window_end > $1 AND window_start < $2",
					 w->result_name);
	append_key_match(&sql, w, mask, "", 3, types, &ntypes);
	tp->look_plan = SPI_prepare(sql.data, ntypes, types);
	if (tp->look_plan == NULL)
		elog(ERROR, "could not prepare \"%s\"", sql.data);
	SPI_keepplan(tp->look_plan);
	pfree(sql.data);
	return tp->look_plan;
}

/* One session (stored or of the batch) as an interval of event times. */
typedef struct Span
{
	int64		start;
	int64		last;
} Span;

/*
 * Append to *spans the stored sessions of the row's group that touch
 * [start, last]; returns the new count.  SPI is connected.
 */
static int
stored_touching(SaWindow *w, SaRowInput *in, SPIPlanPtr plan, int64 start, int64 last,
				Span **spans, int n, int *max)
{
	Datum		values[FUNC_MAX_ARGS];
	int			nv = 2;

	values[0] = TimestampTzGetDatum(start);
	values[1] = TimestampTzGetDatum(last + w->gap_us);
	for (int i = 0; i < w->ngroups; i++)
		if (!in->keynulls[i])
			values[nv++] = in->keys[i];
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the stored sessions of window \"%s\"", w->name);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		if (n == *max)
		{
			*max *= 2;
			*spans = repalloc(*spans, sizeof(Span) * *max);
		}
		(*spans)[n].start = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[r],
															  SPI_tuptable->tupdesc, 1, &isnull));
		(*spans)[n].last = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[r],
															 SPI_tuptable->tupdesc, 2, &isnull)) - w->gap_us;
		n++;
	}
	return n;
}

/*
 * Grow *sp to the whole session it belongs to: everything, stored or in
 * the batch, that it reaches, and what that reaches in turn.
 */
static void
whole_session(SaWindow *w, SaGroup *g, SaRowInput *in, SPIPlanPtr plan, Span *sp,
			  Span **buf, int *max)
{
	bool		changed;

	do
	{
		int			n = stored_touching(w, in, plan, sp->start, sp->last, buf, 0, max);

		changed = false;
		for (SaSession *s = g ? g->sessions : NULL; s != NULL; s = s->next)
			if (sessions_touch(w, s->start, s->last, sp->start, sp->last) &&
				(s->start < sp->start || s->last > sp->last))
			{
				sp->start = Min(sp->start, s->start);
				sp->last = Max(sp->last, s->last);
				changed = true;
			}
		for (int i = 0; i < n; i++)
			if ((*buf)[i].start < sp->start || (*buf)[i].last > sp->last)
			{
				sp->start = Min(sp->start, (*buf)[i].start);
				sp->last = Max(sp->last, (*buf)[i].last);
				changed = true;
			}
	} while (changed);
}

/*
 * Is a row late for a session window?  Called only for a row whose own
 * session [t, t + gap) would already be closed (t + gap + lateness <=
 * watermark; any other row is on time, and cannot reach a final session).
 * Such a row is still counted when it falls into, extends or bridges
 * sessions of its group that are all still open; it is late when it
 * touches no session, or when any session it touches is final
 * (window_end + gap + lateness <= watermark, see sa_final_horizon):
 * final rows never change.  Sessions are looked for in the batch (g, NULL
 * when the group has none) and in the result table; runs as the stream's
 * owner, inside the batch's transaction.
 */
bool
sa_session_late(SaWindow *w, SaGroup *g, SaRowInput *in, TimestampTz watermark)
{
	int64		t = in->event_time;
	int			max = 8;
	Span	   *touched = palloc(sizeof(Span) * max);
	Span	   *buf = palloc(sizeof(Span) * max);
	int			ntouched = 0;
	bool		late = false;
	uint32		mask = 0;
	SPIPlanPtr	plan;

	for (int i = 0; i < w->ngroups; i++)
		if (in->keynulls[i])
			mask |= (1U << i);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = look_plan(w, mask);

	/* what the row itself touches */
	ntouched = stored_touching(w, in, plan, t, t, &touched, 0, &max);
	for (SaSession *s = g ? g->sessions : NULL; s != NULL; s = s->next)
		if (sessions_touch(w, s->start, s->last, t, t))
		{
			if (ntouched == max)
			{
				max *= 2;
				touched = repalloc(touched, sizeof(Span) * max);
			}
			touched[ntouched].start = s->start;
			touched[ntouched].last = s->last;
			ntouched++;
		}
	if (ntouched == 0)
		late = true;			/* it would only start a session, a closed one */

	/* each as the whole session it is part of: is any of them final? */
	max = 8;
	for (int i = 0; i < ntouched && !late; i++)
	{
		Span		sp = touched[i];

		whole_session(w, g, in, plan, &sp, &buf, &max);
		late = sp.last + w->gap_us + sa_final_horizon(w) <= watermark;
	}
	SPI_finish();
	pfree(touched);
	pfree(buf);
	return late;
}

/*
 * Write a batch of a session window: settle every batch session against
 * the stored ones, then insert the results.
 */
void
sa_session_flush(SaWindow *w)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *groups = NIL;
	List	   *sessions = NIL;

	for (int i = 0; i < w->nlist; i++)
	{
		SaGroup    *g = w->list[i];

		for (SaSession *s = g->sessions; s != NULL; s = s->next)
		{
			settle_session(w, g, s, cxt);
			groups = lappend(groups, g);
			sessions = lappend(sessions, s);
		}
	}
	if (sessions != NIL)
		insert_sessions(w, groups, sessions);
}

/*
 * Free the kept plans of a session window whose definition is discarded
 * (the worker reloads); the list and its entries live in TopMemoryContext.
 */
void
sa_session_free_plans(SaWindow *w)
{
	ListCell   *lc;

	foreach(lc, w->session_take_plans)
	{
		TakePlan   *tp = lfirst(lc);

		if (tp->plan)
			SPI_freeplan(tp->plan);
		if (tp->state_plan)
			SPI_freeplan(tp->state_plan);
		if (tp->look_plan)
			SPI_freeplan(tp->look_plan);
	}
	list_free_deep(w->session_take_plans);
	w->session_take_plans = NIL;
}
