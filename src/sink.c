/*-------------------------------------------------------------------------
 *
 * sink.c
 *		Writes one batch: window rows, dead letters and offsets.
 *
 * The worker calls these inside one transaction and commits once, so the
 * window rows, the dead letters and the offsets that cover them become
 * visible together or not at all.  Each write is one prepared statement
 * fed with arrays (unnest), whatever the number of rows: one upsert per
 * window per batch, not one per message.
 *
 * Offsets are written first, and only where the row still carries this
 * worker's epoch: a worker that lost its partitions to another (or whose
 * stream's windows changed) finds fewer rows than it expected, and the
 * whole batch is rolled back (fencing).
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

void
sa_add_array(SaArrays *a, Oid elemtype, Datum *elems, bool *nulls, int count)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {count};
	int			lbs[1] = {1};

	if (a->n >= FUNC_MAX_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_TOO_MANY_COLUMNS),
				 errmsg("a window may have at most %d columns", FUNC_MAX_ARGS - 2)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	a->types[a->n] = get_array_type(elemtype);
	a->values[a->n] = PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype,
														 typlen, typbyval, typalign));
	a->n++;
}

static void
add_key_arrays(SaArrays *a, SaWindow *w, bool with_end)
{
	int			n = w->nlist;
	Datum	   *d = palloc(sizeof(Datum) * n);
	bool	   *nl = palloc0(sizeof(bool) * n);

	if (w->kind != SA_WIN_GLOBAL)
	{
		for (int r = 0; r < n; r++)
			d[r] = TimestampTzGetDatum(w->list[r]->wstart);
		sa_add_array(a, TIMESTAMPTZOID, d, nl, n);
		if (with_end)
		{
			for (int r = 0; r < n; r++)
				d[r] = TimestampTzGetDatum(w->list[r]->wend);
			sa_add_array(a, TIMESTAMPTZOID, d, nl, n);
		}
	}
	for (int i = 0; i < w->ngroups; i++)
	{
		for (int r = 0; r < n; r++)
		{
			d[r] = w->list[r]->keys[i];
			nl[r] = w->list[r]->keynulls[i];
		}
		sa_add_array(a, w->groups[i].typid, d, nl, n);
	}
}

static void
append_conflict_target(StringInfo sql, SaWindow *w)
{
	bool		first = true;

	appendStringInfoString(sql, " ON CONFLICT (");
	if (w->kind != SA_WIN_GLOBAL)
	{
		appendStringInfoString(sql, "window_start");
		first = false;
	}
	for (int i = 0; i < w->ngroups; i++)
	{
		appendStringInfo(sql, "%s%s", first ? "" : ", ", quote_identifier(w->groups[i].name));
		first = false;
	}
	if (first)
		appendStringInfoString(sql, "(true)");
	appendStringInfoString(sql, ") DO UPDATE SET ");
}

static void
append_unnest(StringInfo sql, SaArrays *a)
{
	appendStringInfoString(sql, " SELECT * FROM unnest(");
	for (int i = 0; i < a->n; i++)
		appendStringInfo(sql, "%s$%d", i > 0 ? ", " : "", i + 1);
	appendStringInfoChar(sql, ')');
}

/* A plan kept across batches (freed by sa_free_kept), or an error. */
SPIPlanPtr
sa_keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

SPIPlanPtr
sa_prepare_kept(const char *sql, SaArrays *a)
{
	return sa_keep_plan(sql, a->n, a->types);
}

void
sa_free_kept(SPIPlanPtr *plan)
{
	if (*plan)
		SPI_freeplan(*plan);
	*plan = NULL;
}

/*
 * Free the plans a window keeps across batches (SPI_keepplan puts them
 * under CacheMemoryContext, out of reach of the worker's contexts): the
 * worker calls this before it discards the window's definition on a
 * reload, or every reload would leave them behind.
 */
void
sa_window_free_plans(SaWindow *w)
{
	sa_free_kept(&w->upsert_plan);
	sa_free_kept(&w->state_plan);
	sa_free_kept(&w->session_insert_plan);
	sa_free_kept(&w->session_state_insert_plan);
	sa_free_kept(&w->load_plan);
	sa_slices_free_plans(w);
	sa_session_free_plans(w);
}

static void
run_plan(SPIPlanPtr plan, SaArrays *a, int expect)
{
	int			rc = SPI_execute_plan(plan, a->values, NULL, false, 0);

	if (rc != expect)
		elog(ERROR, "batch write failed: %s", SPI_result_code_string(rc));
}

/* The exact average of a running sum and count, as avg() computes it. */
Datum
sa_avg_final(SaAgg *a, Datum sum, int64 count)
{
	switch (a->restype)
	{
		case NUMERICOID:
			return DirectFunctionCall2(numeric_div, sum,
									   DirectFunctionCall1(int8_numeric, Int64GetDatum(count)));
		case FLOAT8OID:
			return Float8GetDatum(DatumGetFloat8(sum) / (double) count);
		case INTERVALOID:
			return DirectFunctionCall2(interval_div, sum, Float8GetDatum((double) count));
		default:
			elog(ERROR, "unexpected avg type %u", a->restype);
	}
	return (Datum) 0;			/* keep compiler quiet */
}

/*
 * Upsert the avg sums and counts of this batch into the state table and
 * turn what it now holds into final averages (in the batch's SaAggValue:
 * value = final avg).
 */
static void
flush_avg_state(SaWindow *w)
{
	int			n = w->nlist;
	SaArrays	a = {0};
	Datum	   *d = palloc(sizeof(Datum) * n);
	bool	   *nl = palloc0(sizeof(bool) * n);

	add_key_arrays(&a, w, false);
	for (int r = 0; r < n; r++)
		d[r] = Int32GetDatum(r);
	sa_add_array(&a, INT4OID, d, nl, n);
	for (int i = 0; i < w->naggs; i++)
	{
		if (w->aggs[i].kind != SA_AGG_AVG)
			continue;
		for (int r = 0; r < n; r++)
		{
			d[r] = w->list[r]->vals[i].value;
			nl[r] = w->list[r]->vals[i].isnull;
		}
		sa_add_array(&a, w->aggs[i].statetype, d, nl, n);
		for (int r = 0; r < n; r++)
		{
			d[r] = Int64GetDatum(w->list[r]->vals[i].count);
			nl[r] = false;
		}
		sa_add_array(&a, INT8OID, d, nl, n);
	}

	if (w->state_plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s AS t", w->state_name);
		append_unnest(&sql, &a);
		append_conflict_target(&sql, w);
		appendStringInfoString(&sql, "ord = EXCLUDED.ord");
		for (int i = 0; i < w->naggs; i++)
			if (w->aggs[i].kind == SA_AGG_AVG)
				appendStringInfo(&sql, ", s%d = coalesce(t.s%d + EXCLUDED.s%d, t.s%d, EXCLUDED.s%d), "
								 "c%d = t.c%d + EXCLUDED.c%d", i, i, i, i, i, i, i, i);
		appendStringInfoString(&sql, " RETURNING ord");
		for (int i = 0; i < w->naggs; i++)
			if (w->aggs[i].kind == SA_AGG_AVG)
				appendStringInfo(&sql, ", s%d, c%d", i, i);
		w->state_plan = sa_prepare_kept(sql.data, &a);
	}
	run_plan(w->state_plan, &a, SPI_OK_INSERT_RETURNING);

	for (uint64 t = 0; t < SPI_processed; t++)
	{
		HeapTuple	tup = SPI_tuptable->vals[t];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			ord = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		SaGroup    *g = w->list[ord];
		int			col = 2;

		for (int i = 0; i < w->naggs; i++)
		{
			Datum		sum;
			bool		sumnull;
			int64		count;

			if (w->aggs[i].kind != SA_AGG_AVG)
				continue;
			sum = SPI_getbinval(tup, desc, col++, &sumnull);
			count = DatumGetInt64(SPI_getbinval(tup, desc, col++, &isnull));
			g->vals[i].isnull = sumnull || count == 0;
			if (!g->vals[i].isnull)
				g->vals[i].value = sa_avg_final(&w->aggs[i], sum, count);
		}
	}
}

static const char *
combine_sql(SaAgg *a, const char *col)
{
	switch (a->kind)
	{
		case SA_AGG_COUNT_STAR:
		case SA_AGG_COUNT:
			return psprintf("%s = t.%s + EXCLUDED.%s", col, col, col);
		case SA_AGG_SUM:
			return psprintf("%s = coalesce(t.%s + EXCLUDED.%s, t.%s, EXCLUDED.%s)",
							col, col, col, col, col);
		case SA_AGG_MIN:
			return psprintf("%s = LEAST(t.%s, EXCLUDED.%s)", col, col, col);
		case SA_AGG_MAX:
			return psprintf("%s = GREATEST(t.%s, EXCLUDED.%s)", col, col, col);
		case SA_AGG_AVG:
			return psprintf("%s = EXCLUDED.%s", col, col);
	}
	return NULL;
}

static int
compare_groups(const void *a, const void *b)
{
	const SaGroup *ga = *(SaGroup *const *) a;
	const SaGroup *gb = *(SaGroup *const *) b;

	if (ga->wstart != gb->wstart)
		return ga->wstart < gb->wstart ? -1 : 1;
	if (ga->hash != gb->hash)
		return ga->hash < gb->hash ? -1 : 1;
	return 0;
}

/*
 * Upsert a window's batch into its result table.  Rows go in a fixed
 * order (window start, group hash) so that two workers writing the same
 * rows lock them in the same order and cannot deadlock.
 */
void
sa_window_flush(SaWindow *w)
{
	int			n = w->nlist;
	SaArrays	a = {0};
	Datum	   *d;
	bool	   *nl;

	if (n == 0)
		return;
	if (w->kind == SA_WIN_SESSION)
	{
		sa_session_flush(w);
		return;
	}
	qsort(w->list, n, sizeof(SaGroup *), compare_groups);
	if (sa_direct_flush(w))
	{
		/* done below SQL; what is left (rarely anything) is upserted */
		n = w->nlist;
		if (n == 0)
			return;
	}
	if (w->navg > 0)
		flush_avg_state(w);

	d = palloc(sizeof(Datum) * n);
	nl = palloc0(sizeof(bool) * n);
	add_key_arrays(&a, w, true);
	for (int i = 0; i < w->naggs; i++)
	{
		SaAgg	   *agg = &w->aggs[i];

		for (int r = 0; r < n; r++)
		{
			SaAggValue *v = &w->list[r]->vals[i];

			if (agg->kind == SA_AGG_COUNT_STAR || agg->kind == SA_AGG_COUNT)
			{
				d[r] = Int64GetDatum(v->count);
				nl[r] = false;
			}
			else
			{
				d[r] = v->value;
				nl[r] = v->isnull;
			}
		}
		sa_add_array(&a, agg->restype, d, nl, n);
	}

	if (w->upsert_plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s AS t", w->result_name);
		append_unnest(&sql, &a);
		append_conflict_target(&sql, w);
		for (int i = 0; i < w->naggs; i++)
			appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
							 combine_sql(&w->aggs[i], quote_identifier(w->aggs[i].name)));
		w->upsert_plan = sa_prepare_kept(sql.data, &a);
	}
	run_plan(w->upsert_plan, &a, SPI_OK_INSERT);
}

/*
 * Advance the offsets of our partitions (and record our watermark on
 * each), checking the epoch.  Raises an error (and sets w->fenced) when a row was taken away.
 */
void
sa_sink_offsets(SaWorker *w)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[8] = {TEXTOID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID, INT8OID, TIMESTAMPTZOID};
	Datum		values[8];
	char		nulls[8] = "        ";
	int			n = 0;
	Datum	   *p = palloc(sizeof(Datum) * w->nparts);
	Datum	   *o = palloc(sizeof(Datum) * w->nparts);
	Datum	   *m = palloc(sizeof(Datum) * w->nparts);
	bool	   *mn = palloc0(sizeof(bool) * w->nparts);
	Datum	   *c = palloc(sizeof(Datum) * w->nparts);
	Datum	   *dl = palloc(sizeof(Datum) * w->nparts);
	int			dims[1];
	int			lbs[1] = {1};

	for (int i = 0; i < w->nparts; i++)
	{
		SaPartition *part = &w->parts[i];

		p[n] = Int32GetDatum(part->partition);
		o[n] = Int64GetDatum(part->next_offset);
		m[n] = TimestampTzGetDatum(part->max_event_time);
		mn[n] = TIMESTAMP_NOT_FINITE(part->max_event_time);
		c[n] = Int64GetDatum(part->batch_messages);
		dl[n] = Int64GetDatum(part->batch_dead);
		n++;
	}
	if (n == 0)
		return;
	dims[0] = n;
	values[0] = CStringGetTextDatum(w->st->name);
	values[1] = PointerGetDatum(construct_array(p, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(o, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = PointerGetDatum(construct_md_array(m, mn, 1, dims, lbs, TIMESTAMPTZOID, 8,
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(c, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[5] = PointerGetDatum(construct_array(dl, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[6] = Int64GetDatum(w->epoch);
	values[7] = TimestampTzGetDatum(w->watermark);
	if (TIMESTAMP_NOT_FINITE(w->watermark))
		nulls[7] = 'n';

	if (plan == NULL)
	{
		plan = SPI_prepare("UPDATE streamagg.offsets o SET next_offset = u.n, "
						   "max_event_time = greatest(o.max_event_time, u.m), "
						   "messages = o.messages + u.c, dead_letters = o.dead_letters + u.dl, "
						   "watermark = greatest(o.watermark, $8), last_commit = now() "
						   "FROM unnest($2, $3, $4, $5, $6) AS u(p, n, m, c, dl) "
						   "WHERE o.stream = $1 AND o.partition = u.p AND o.epoch = $7",
						   8, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the offsets update");
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "offsets update failed");
	if (SPI_processed != (uint64) n)
	{
		w->fenced = true;
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("stream \"%s\" was changed or its partitions were claimed by another worker",
						w->st->name),
				 errdetail("The batch is rolled back and the worker reloads.")));
	}
}

/* Store the batch's dead letters. */
void
sa_sink_dead_letters(SaWorker *w)
{
	static SPIPlanPtr plan = NULL;
	int			n = list_length(w->dead);
	Datum	   *cols[7];
	bool	   *nulls[7];
	Oid			elemtypes[7] = {TEXTOID, INT4OID, INT8OID, BYTEAOID, BYTEAOID, TEXTOID, TEXTOID};
	Oid			types[8];
	Datum		values[8];
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			r = 0;
	ListCell   *lc;

	if (n == 0)
		return;
	for (int i = 0; i < 7; i++)
	{
		cols[i] = palloc(sizeof(Datum) * n);
		nulls[i] = palloc0(sizeof(bool) * n);
	}
	foreach(lc, w->dead)
	{
		SaDeadLetter *dl = lfirst(lc);

		nulls[0][r] = dl->window_name == NULL;
		cols[0][r] = dl->window_name ? CStringGetTextDatum(dl->window_name) : (Datum) 0;
		cols[1][r] = Int32GetDatum(dl->partition);
		cols[2][r] = Int64GetDatum(dl->offset);
		nulls[3][r] = dl->key == NULL;
		cols[3][r] = PointerGetDatum(dl->key);
		nulls[4][r] = dl->payload == NULL;
		cols[4][r] = PointerGetDatum(dl->payload);
		cols[5][r] = CStringGetTextDatum(dl->reason);
		nulls[6][r] = dl->error == NULL;
		cols[6][r] = dl->error ? CStringGetTextDatum(dl->error) : (Datum) 0;
		r++;
	}
	types[0] = TEXTOID;
	values[0] = CStringGetTextDatum(w->st->name);
	for (int i = 0; i < 7; i++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(elemtypes[i], &typlen, &typbyval, &typalign);
		types[i + 1] = get_array_type(elemtypes[i]);
		values[i + 1] = PointerGetDatum(construct_md_array(cols[i], nulls[i], 1, dims, lbs,
														   elemtypes[i], typlen, typbyval, typalign));
	}
	if (plan == NULL)
	{
		plan = SPI_prepare("INSERT INTO streamagg.dead_letters "
						   "(stream, window_name, partition, \"offset\", key, payload, reason, error) "
						   "SELECT $1, * FROM unnest($2, $3, $4, $5, $6, $7, $8)",
						   8, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the dead letter insert");
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "dead letter insert failed");
}
