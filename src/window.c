/*-------------------------------------------------------------------------
 *
 * window.c
 *		Window definitions, window assignment, and the in-memory
 *		aggregation of one batch.
 *
 * A window is compiled once per worker: its group_by items, aggregate
 * arguments and filter become executor expressions over the stream's
 * columns (see expr.c).  For every message the worker evaluates them once,
 * works out which windows the event time falls in (tumbling: one; hopping:
 * size/slide of them, or the one slice of a sliced hopping window - see
 * slices.c; no-window: one running row) and folds the row into a hash
 * table keyed by (window_start, group values).  At the end of the
 * batch sink.c upserts one row per entry, combining it with what the table
 * already holds, so the table always equals the GROUP BY over every
 * message committed so far.
 *
 * Running values:  count -> bigint;  sum -> the type sum() returns;
 * min/max -> the argument type, compared with the aggregate's own sort
 * operator;  avg -> exact sum and count (kept in a companion state table
 * between batches, so avg is never an average of averages).
 *
 *-------------------------------------------------------------------------
 */
#include "window.h"

#include "compat.h"

#include "miscadmin.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_oper.h"
#include "parser/parse_target.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

char *
sa_agg_kind_name(SaAggKind kind)
{
	switch (kind)
	{
		case SA_AGG_COUNT_STAR:
		case SA_AGG_COUNT:
			return "count";
		case SA_AGG_SUM:
			return "sum";
		case SA_AGG_MIN:
			return "min";
		case SA_AGG_MAX:
			return "max";
		case SA_AGG_AVG:
			return "avg";
	}
	return "?";
}

static void
check_column_name(SaWindow *w, const char *name, int upto_groups, int upto_aggs)
{
	bool		dup = (strcmp(name, "window_start") == 0 || strcmp(name, "window_end") == 0);

	for (int i = 0; i < upto_groups; i++)
		dup |= strcmp(w->groups[i].name, name) == 0;
	for (int i = 0; i < upto_aggs; i++)
		dup |= strcmp(w->aggs[i].name, name) == 0;
	if (dup)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_COLUMN),
				 errmsg("column \"%s\" appears twice in window \"%s\"", name, w->name),
				 errhint("Name group_by items and aggregates with AS, for example 'sum(bytes) AS bytes'.")));
}

static char *
target_name(ResTarget *rt, const char *what)
{
	char	   *name = rt->name ? rt->name : FigureColname(rt->val);

	if (name == NULL || strcmp(name, "?column?") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("%s item needs a name", what),
				 errhint("Add AS name after the expression.")));
	return name;
}

static void
compile_groups(SaWindow *w, SaStream *st, const char *group_by)
{
	List	   *targets = group_by ? sa_parse_target_list(group_by, "group_by") : NIL;
	ListCell   *lc;
	int			i = 0;

	w->ngroups = list_length(targets);
	w->groups = palloc0(sizeof(SaGroupCol) * Max(w->ngroups, 1));
	foreach(lc, targets)
	{
		ResTarget  *rt = lfirst_node(ResTarget, lc);
		SaGroupCol *g = &w->groups[i];
		TypeCacheEntry *tce;
		Node	   *expr = sa_transform_expr(st, rt->val, "group_by");

		if (contain_agg_clause(expr))
			ereport(ERROR,
					(errcode(ERRCODE_GROUPING_ERROR),
					 errmsg("aggregate functions are not allowed in group_by")));
		g->name = target_name(rt, "group_by");
		check_column_name(w, g->name, i, 0);
		g->expr = (Expr *) expr;
		g->typid = exprType(expr);
		g->typmod = exprTypmod(expr);
		g->collation = exprCollation(expr);
		get_typlenbyval(g->typid, &g->typlen, &g->typbyval);
		tce = lookup_type_cache(g->typid, TYPECACHE_HASH_PROC_FINFO | TYPECACHE_EQ_OPR_FINFO);
		if (!OidIsValid(tce->hash_proc) || !OidIsValid(tce->eq_opr))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("cannot group by \"%s\": type %s has no hash and equality functions",
							g->name, format_type_be(g->typid))));
		fmgr_info(tce->hash_proc, &g->hashfn);
		fmgr_info(get_opcode(tce->eq_opr), &g->eqfn);
		g->bytewise = (g->typid == TEXTOID || g->typid == VARCHAROID) &&
			OidIsValid(g->collation) && get_collation_isdeterministic(g->collation);
		i++;
	}
}

static Oid
agg_sort_operator(Oid aggfnoid)
{
	HeapTuple	tup = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggfnoid));
	Oid			sortop;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for aggregate %u", aggfnoid);
	sortop = ((Form_pg_aggregate) GETSTRUCT(tup))->aggsortop;
	ReleaseSysCache(tup);
	return sortop;
}

static Expr *
coerce_arg(Expr *arg, Oid target, const char *aggname)
{
	Node	   *c = coerce_to_target_type(NULL, (Node *) arg, exprType((Node *) arg),
										  target, -1, COERCION_IMPLICIT,
										  COERCE_IMPLICIT_CAST, -1);

	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("cannot compute %s over type %s", aggname,
						format_type_be(exprType((Node *) arg)))));
	return (Expr *) c;
}

/* Turn one analyzed aggregate call into an SaAgg. */
static void
compile_agg(SaAgg *a, Aggref *ag, const char *text)
{
	char	   *fname = get_func_name(ag->aggfnoid);

	if (ag->aggdistinct != NIL || ag->aggorder != NIL || ag->aggfilter != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s is not supported in aggregates",
						ag->aggdistinct ? "DISTINCT" : ag->aggorder ? "ORDER BY" : "FILTER"),
				 errhint("Use the window's filter to leave rows out.")));
	if (get_func_namespace(ag->aggfnoid) != PG_CATALOG_NAMESPACE ||
		list_length(ag->args) > 1)
		goto unsupported;

	a->arg = ag->args ? ((TargetEntry *) linitial(ag->args))->expr : NULL;
	a->argtype = a->arg ? exprType((Node *) a->arg) : InvalidOid;
	a->collation = ag->inputcollid;
	a->restype = ag->aggtype;
	a->statetype = ag->aggtype;

	if (strcmp(fname, "count") == 0)
		a->kind = ag->aggstar ? SA_AGG_COUNT_STAR : SA_AGG_COUNT;
	else if (strcmp(fname, "sum") == 0)
		a->kind = SA_AGG_SUM;
	else if (strcmp(fname, "min") == 0)
		a->kind = SA_AGG_MIN;
	else if (strcmp(fname, "max") == 0)
		a->kind = SA_AGG_MAX;
	else if (strcmp(fname, "avg") == 0)
		a->kind = SA_AGG_AVG;
	else
		goto unsupported;

	if (a->kind == SA_AGG_SUM || a->kind == SA_AGG_AVG)
	{
		Oid			plus = OpernameGetOprid(list_make1(makeString("+")),
											a->statetype, a->statetype);

		if (!OidIsValid(plus))
			goto unsupported;
		fmgr_info(get_opcode(plus), &a->addfn);
		a->arg = coerce_arg(a->arg, a->statetype, fname);
	}
	else if (a->kind == SA_AGG_MIN || a->kind == SA_AGG_MAX)
	{
		Oid			sortop = agg_sort_operator(ag->aggfnoid);

		if (!OidIsValid(sortop))
			goto unsupported;
		fmgr_info(get_opcode(sortop), &a->cmpfn);
		a->arg = coerce_arg(a->arg, a->statetype, fname);
	}
	get_typlenbyval(a->statetype, &a->statelen, &a->statebyval);
	return;

unsupported:
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("unsupported aggregate \"%s\"", text),
			 errhint("Use count(*), count(x), sum(x), min(x), max(x) or avg(x).")));
}

static void
compile_aggs(SaWindow *w, SaStream *st, const char *aggregates)
{
	List	   *targets = sa_parse_target_list(aggregates, "aggregates");
	ListCell   *lc;
	int			i = 0;

	w->naggs = list_length(targets);
	w->aggs = palloc0(sizeof(SaAgg) * w->naggs);
	foreach(lc, targets)
	{
		ResTarget  *rt = lfirst_node(ResTarget, lc);
		SaAgg	   *a = &w->aggs[i];
		Node	   *expr = sa_transform_expr(st, rt->val, "aggregates");

		if (!IsA(expr, Aggref))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("aggregates item %d is not a single aggregate call", i + 1),
					 errhint("Each item must be count(*), count(x), sum(x), min(x), max(x) or avg(x) over stream columns; compute further in a query or view on the result table.")));
		compile_agg(a, (Aggref *) expr, get_func_name(((Aggref *) expr)->aggfnoid));
		a->name = target_name(rt, "aggregates");
		check_column_name(w, a->name, w->ngroups, i);
		if (a->kind == SA_AGG_AVG)
			w->navg++;
		i++;
	}
}

/*
 * Compile a window's expressions against its stream.  Kind, size and the
 * rest of the timing are filled in by the caller.
 */
SaWindow *
sa_compile_window(SaStream *st, const char *name, const char *group_by,
				  const char *aggregates, const char *filter)
{
	SaWindow   *w = palloc0(sizeof(SaWindow));

	w->name = pstrdup(name);
	w->retention_us = -1;
	compile_groups(w, st, group_by);
	compile_aggs(w, st, aggregates);
	if (filter)
	{
		Node	   *f = sa_transform_expr(st, sa_parse_filter(filter), "filter");

		if (contain_agg_clause(f))
			ereport(ERROR,
					(errcode(ERRCODE_GROUPING_ERROR),
					 errmsg("aggregate functions are not allowed in filter")));
		w->filter = (Expr *) coerce_to_boolean(NULL, f, "filter");
	}
	return w;
}

/*
 * May a hopping window be kept as slices (slices.c)?  Only with one worker
 * (the moment a window is materialized must come before every row read
 * after its close, which one worker orders by itself), and only when
 * combining slices cannot fail where folding rows did not: counts, min,
 * max, and sums and averages kept in numeric or bigint (sum over int2,
 * int4, int8 or numeric; avg over those).  A float or interval sum could
 * overflow when slices are added up even though no single row did; such
 * windows keep one row per window instance, written row by row.
 */
bool
sa_window_sliceable(SaWindow *w, int parallelism)
{
	if (w->kind != SA_WIN_HOPPING || parallelism != 1)
		return false;
	for (int i = 0; i < w->naggs; i++)
		if ((w->aggs[i].kind == SA_AGG_SUM || w->aggs[i].kind == SA_AGG_AVG) &&
			w->aggs[i].statetype != NUMERICOID && w->aggs[i].statetype != INT8OID)
			return false;
	return true;
}

/* A column name for a slice table that no group or aggregate uses. */
static char *
free_column_name(SaWindow *w, const char *base)
{
	char	   *name = pstrdup(base);

	for (;;)
	{
		bool		taken = strcmp(name, "window_start") == 0 || strcmp(name, "window_end") == 0;

		for (int i = 0; i < w->ngroups; i++)
			taken |= strcmp(w->groups[i].name, name) == 0;
		for (int i = 0; i < w->naggs; i++)
			taken |= strcmp(w->aggs[i].name, name) == 0;
		if (!taken)
			return name;
		name = psprintf("_%s", name);
	}
}

/*
 * Can the windows of a sliced window be chained: every aggregate exact to
 * subtract (counts; sums and averages of integers, whose numeric sums
 * carry no digits after the point that a subtracted row could leave)?
 */
static bool
chainable(SaWindow *w)
{
	for (int i = 0; i < w->naggs; i++)
	{
		SaAgg	   *a = &w->aggs[i];

		if (a->kind == SA_AGG_MIN || a->kind == SA_AGG_MAX)
			return false;
		if ((a->kind == SA_AGG_SUM || a->kind == SA_AGG_AVG) &&
			a->argtype != INT2OID && a->argtype != INT4OID && a->argtype != INT8OID)
			return false;
	}
	return true;
}

/* Append a count column for a sliced window (arg NULL: count(*)). */
static int
append_count(SaWindow *w, SaAgg *aggs, SaAgg *of, const char *name)
{
	int			n = w->naggs;

	if (of)
		aggs[n] = *of;
	else
		memset(&aggs[n], 0, sizeof(SaAgg));
	aggs[n].kind = of ? SA_AGG_COUNT : SA_AGG_COUNT_STAR;
	aggs[n].restype = INT8OID;
	aggs[n].statetype = INT8OID;
	aggs[n].statelen = 8;
	aggs[n].statebyval = FLOAT8PASSBYVAL;
	aggs[n].name = free_column_name(w, name);
	w->naggs = n + 1;
	return n;
}

/*
 * Turn the window's aggregates into the columns of its slice table: an
 * avg is kept as its exact sum (same column) plus count(x) (a column
 * appended at the end), so slices write like a tumbling window without
 * avg state and the window's avg is sum / count over its slices.  A
 * chained window also keeps count(*) and the count(x) of each sum.
 */
void
sa_window_slice_aggs(SaWindow *w)
{
	int			nuser = w->naggs;
	SaAgg	   *aggs = palloc0(sizeof(SaAgg) * (2 * nuser + 1));

	w->sliced = true;
	w->chain = chainable(w);
	w->nuser_aggs = nuser;
	w->avg_count = palloc(sizeof(int) * Max(nuser, 1));
	w->sum_count = palloc(sizeof(int) * Max(nuser, 1));
	w->avg_sum_name = palloc0(sizeof(char *) * Max(nuser, 1));
	memcpy(aggs, w->aggs, sizeof(SaAgg) * nuser);
	w->aggs = aggs;				/* free_column_name looks at the names so far */
	for (int i = 0; i < nuser; i++)
	{
		w->avg_count[i] = w->sum_count[i] = -1;
		if (aggs[i].kind == SA_AGG_AVG)
		{
			aggs[i].kind = SA_AGG_SUM;
			aggs[i].restype = aggs[i].statetype;
			w->avg_count[i] = append_count(w, aggs, &aggs[i], psprintf("%s_count", aggs[i].name));
		}
		else if (aggs[i].kind == SA_AGG_SUM && w->chain)
			w->sum_count[i] = append_count(w, aggs, &aggs[i], psprintf("%s_count", aggs[i].name));
	}
	if (w->chain)
	{
		w->rows_col = append_count(w, aggs, NULL, "_rows");
		/* the closed table's avg sums: names of neither table's columns */
		for (int i = 0; i < nuser; i++)
		{
			char	   *name;
			bool		taken;

			if (w->avg_count[i] < 0)
				continue;
			name = free_column_name(w, psprintf("%s_sum", aggs[i].name));
			do
			{
				taken = false;
				for (int j = 0; j < i; j++)
					taken |= w->avg_sum_name[j] && strcmp(w->avg_sum_name[j], name) == 0;
				if (taken)
					name = free_column_name(w, psprintf("_%s", name));
			} while (taken);
			w->avg_sum_name[i] = name;
		}
	}
	w->navg = 0;
}

/*
 * Build executor state for the expressions (in the current context).  The
 * caller acts as the stream's owner: planning folds constants, which runs
 * functions, and EXECUTE privileges are checked here.
 */
void
sa_window_prepare_exec(SaWindow *w)
{
	w->user_code = false;
	w->functions = NIL;
	for (int i = 0; i < w->ngroups; i++)
		sa_expr_functions((Node *) w->groups[i].expr, &w->functions);
	for (int i = 0; i < w->naggs; i++)
		sa_expr_functions((Node *) w->aggs[i].arg, &w->functions);
	sa_expr_functions((Node *) w->filter, &w->functions);
	for (int i = 0; i < w->ngroups; i++)
	{
		Expr	   *e = expression_planner(w->groups[i].expr);

		w->user_code |= sa_expr_calls_user_code((Node *) e);
		w->groups[i].state = ExecInitExpr(e, NULL);
	}
	for (int i = 0; i < w->naggs; i++)
		if (w->aggs[i].arg)
		{
			Expr	   *e = expression_planner(w->aggs[i].arg);

			w->user_code |= sa_expr_calls_user_code((Node *) e);
			w->aggs[i].argstate = ExecInitExpr(e, NULL);
		}
	if (w->filter)
	{
		Expr	   *e = expression_planner(w->filter);

		w->user_code |= sa_expr_calls_user_code((Node *) e);
		w->filterstate = ExecInitExpr(e, NULL);
	}
}

/*
 * EXECUTE on every function the window calls, for the current user (the
 * stream's owner): checked when the expressions are compiled, and again
 * before every batch, so that a revoked privilege stops the stream
 * instead of going unnoticed by a running worker.
 */
void
sa_window_check_privileges(SaWindow *w)
{
	ListCell   *lc;

	foreach(lc, w->functions)
	{
		Oid			func = lfirst_oid(lc);

		if (sa_proc_aclcheck(func, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for function %s", get_func_name(func)),
					 errdetail("Window \"%s\" calls it, as its stream's owner.", w->name)));
	}
}

/* What the last sa_window_eval was evaluating, in words. */
char *
sa_window_eval_item(SaWindow *w)
{
	if (w->eval_item == -2)
		return pstrdup("aggregates");
	if (w->eval_item < 0)
		return pstrdup("filter");
	if (w->eval_item < w->ngroups)
		return psprintf("group_by item \"%s\"", w->groups[w->eval_item].name);
	return psprintf("aggregate \"%s\"", w->aggs[w->eval_item - w->ngroups].name);
}

/*
 * The hash of a group's values (NULL-aware), as the batch's index uses it.
 * Text under a deterministic collation is hashed here as hashtext does it,
 * without a function call and a collation lookup per value.
 */
uint32
sa_key_hash(SaWindow *w, Datum *keys, bool *nulls)
{
	uint32		h = 0;

	for (int i = 0; i < w->ngroups; i++)
	{
		SaGroupCol *g = &w->groups[i];
		uint32		k;

		if (nulls[i])
			k = 0x9e3779b9;
		else if (g->bytewise)
		{
			struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(keys[i]));

			k = DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
		}
		else
			k = DatumGetUInt32(FunctionCall1Coll(&g->hashfn, g->collation, keys[i]));
		h = hash_combine(h, k);
	}
	return h;
}

/* Are two group keys equal (NULLs equal to each other, as in GROUP BY)? */
bool
sa_keys_equal(SaWindow *w, Datum *k1, bool *n1, Datum *k2, bool *n2)
{
	for (int i = 0; i < w->ngroups; i++)
	{
		SaGroupCol *g = &w->groups[i];

		if (n1[i] != n2[i])
			return false;
		if (n1[i])
			continue;
		if (g->bytewise)
		{
			struct varlena *a = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(k1[i]));
			struct varlena *b = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(k2[i]));

			if (VARSIZE_ANY_EXHDR(a) != VARSIZE_ANY_EXHDR(b) ||
				memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) != 0)
				return false;
		}
		else if (!DatumGetBool(FunctionCall2Coll(&g->eqfn, g->collation, k1[i], k2[i])))
			return false;
	}
	return true;
}

/* The hash of (window start, group). */
uint32
sa_group_hash(uint32 keyhash, int64 wstart)
{
	return hash_combine(keyhash, murmurhash32((uint32) (wstart ^ (wstart >> 32))));
}

/*
 * Evaluate the window's expressions for the current message (its column
 * values are the econtext's parameters).  Returns false when the filter
 * drops the row.
 */
bool
sa_window_eval(SaWindow *w, ExprContext *econtext, SaRowInput *in)
{
	if (w->filterstate)
	{
		bool		isnull;
		Datum		d;

		w->eval_item = -1;
		d = ExecEvalExprSwitchContext(w->filterstate, econtext, &isnull);

		if (isnull || !DatumGetBool(d))
			return false;
	}
	for (int i = 0; i < w->ngroups; i++)
	{
		SaGroupCol *g = &w->groups[i];

		w->eval_item = i;
		in->keys[i] = ExecEvalExprSwitchContext(g->state, econtext, &in->keynulls[i]);
	}
	in->keyhash = sa_key_hash(w, in->keys, in->keynulls);
	for (int i = 0; i < w->naggs; i++)
	{
		w->eval_item = w->ngroups + i;
		if (w->aggs[i].argstate)
			in->args[i] = ExecEvalExprSwitchContext(w->aggs[i].argstate, econtext,
													&in->argnulls[i]);
		else
			in->argnulls[i] = false;
	}
	w->eval_item = -2;			/* what fails now is folding the values in */
	return true;
}

/*
 * The starts of the windows that hold event time t, oldest first.
 * Returns how many (at most max).
 */
int
sa_window_starts(SaWindow *w, int64 t, int64 *starts, int max)
{
	int64		u = t + SA_UNIX_OFFSET_US;
	int			n = 0;

	switch (w->kind)
	{
		case SA_WIN_TUMBLING:
			starts[n++] = sa_floor_div(u, w->size_us) * w->size_us - SA_UNIX_OFFSET_US;
			break;
		case SA_WIN_HOPPING:
			{
				int64		last = sa_floor_div(u, w->slide_us) * w->slide_us;
				int64		first = last;

				if (w->sliced)
				{
					/* the one slice that holds t */
					starts[n++] = last - SA_UNIX_OFFSET_US;
					break;
				}

				while (first - w->slide_us + w->size_us > u)
					first -= w->slide_us;
				for (int64 s = first; s <= last && n < max; s += w->slide_us)
					starts[n++] = s - SA_UNIX_OFFSET_US;
				break;
			}
		case SA_WIN_SESSION:
			starts[n++] = t;
			break;
		case SA_WIN_GLOBAL:
			starts[n++] = 0;
			break;
	}
	return n;
}

static bool
group_matches(SaWindow *w, SaGroup *g, uint32 hash, int64 wstart, SaRowInput *in)
{
	if (g->hash != hash || g->wstart != wstart)
		return false;
	return sa_keys_equal(w, g->keys, g->keynulls, in->keys, in->keynulls);
}

static void
grow_index(SaWindow *w, MemoryContext cxt)
{
	uint32		n = w->nslots ? w->nslots * 2 : 1024;
	SaGroup   **slots = MemoryContextAllocZero(cxt, sizeof(SaGroup *) * n);

	for (int i = 0; i < w->nlist; i++)
	{
		uint32		pos = w->list[i]->hash & (n - 1);

		while (slots[pos])
			pos = (pos + 1) & (n - 1);
		slots[pos] = w->list[i];
	}
	w->slots = slots;
	w->nslots = n;
}

static SaGroup *
new_group(SaWindow *w, uint32 hash, int64 wstart, SaRowInput *in, MemoryContext cxt)
{
	SaGroup    *g = MemoryContextAllocZero(cxt, offsetof(SaGroup, vals) +
										   sizeof(SaAggValue) * w->naggs);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	g->hash = hash;
	g->wstart = wstart;
	g->wend = wstart + (w->sliced ? w->slide_us : w->size_us);
	g->keys = palloc(sizeof(Datum) * Max(w->ngroups, 1));
	g->keynulls = palloc(sizeof(bool) * Max(w->ngroups, 1));
	for (int i = 0; i < w->ngroups; i++)
	{
		g->keynulls[i] = in->keynulls[i];
		g->keys[i] = in->keynulls[i] ? (Datum) 0 :
			datumCopy(in->keys[i], w->groups[i].typbyval, w->groups[i].typlen);
	}
	for (int i = 0; i < w->naggs; i++)
		g->vals[i].isnull = true;
	if (w->nlist == w->maxlist)
	{
		w->maxlist = w->maxlist ? w->maxlist * 2 : 1024;
		w->list = w->list ? repalloc(w->list, sizeof(SaGroup *) * w->maxlist) :
			palloc(sizeof(SaGroup *) * w->maxlist);
	}
	w->list[w->nlist++] = g;
	MemoryContextSwitchTo(old);
	return g;
}

/* Find (or, if create, add) the batch entry of a window start and the row's group. */
static SaGroup *
lookup_group(SaWindow *w, int64 wstart, SaRowInput *in, MemoryContext cxt, bool create)
{
	uint32		hash = sa_group_hash(in->keyhash, wstart);
	uint32		pos;
	SaGroup    *g;

	if ((w->nlist + 1) * 4 >= w->nslots * 3)
		grow_index(w, cxt);
	pos = hash & (w->nslots - 1);
	while ((g = w->slots[pos]) != NULL)
	{
		if (group_matches(w, g, hash, wstart, in))
			return g;
		pos = (pos + 1) & (w->nslots - 1);
	}
	if (!create)
		return NULL;
	g = new_group(w, hash, wstart, in, cxt);
	w->slots[pos] = g;
	return g;
}

/* Fold one evaluated argument into a running value. */
void
sa_fold_value(SaAgg *a, SaAggValue *v, Datum arg, bool argnull, MemoryContext cxt)
{
	MemoryContext old;

	if (a->kind == SA_AGG_COUNT_STAR)
	{
		v->count++;
		return;
	}
	if (argnull)
		return;
	v->count++;
	if (a->kind == SA_AGG_COUNT)
		return;

	old = MemoryContextSwitchTo(cxt);
	if (v->isnull)
	{
		v->value = datumCopy(arg, a->statebyval, a->statelen);
		v->isnull = false;
	}
	else if (a->kind == SA_AGG_SUM || a->kind == SA_AGG_AVG)
	{
		Datum		prev = v->value;

		v->value = FunctionCall2Coll(&a->addfn, a->collation, prev, arg);
		if (!a->statebyval)
			pfree(DatumGetPointer(prev));
	}
	else if (DatumGetBool(FunctionCall2Coll(&a->cmpfn, a->collation, arg, v->value)))
	{
		if (!a->statebyval)
			pfree(DatumGetPointer(v->value));
		v->value = datumCopy(arg, a->statebyval, a->statelen);
	}
	MemoryContextSwitchTo(old);
}

/*
 * Combine two running values of the same aggregate (sessions merging):
 * counts and sums add, min and max compare, avg adds sum and count.
 */
void
sa_merge_values(SaWindow *w, SaAggValue *into, SaAggValue *from, MemoryContext cxt)
{
	for (int i = 0; i < w->naggs; i++)
	{
		SaAgg	   *a = &w->aggs[i];
		SaAggValue *v = &into[i];
		SaAggValue *f = &from[i];
		int64		count = v->count + f->count;

		if (a->kind != SA_AGG_COUNT_STAR && a->kind != SA_AGG_COUNT && !f->isnull)
			sa_fold_value(a, v, f->value, false, cxt);
		v->count = count;
	}
}

/*
 * Is the window instance starting at wstart closed, i.e. is its end plus
 * the allowed lateness at or behind the watermark?  For sessions wstart is
 * the row's event time: any session holding it ends at least a gap later.
 */
bool
sa_window_closed(SaWindow *w, int64 wstart, TimestampTz watermark)
{
	int64		end;

	if (w->kind == SA_WIN_GLOBAL || TIMESTAMP_NOT_FINITE(watermark))
		return false;
	end = wstart + (w->kind == SA_WIN_SESSION ? w->gap_us : w->size_us);
	return end + w->lateness_us <= watermark;
}

/*
 * Does a window instance become final when final_until moves from 'from'
 * to 'to'?  For tumbling and hopping windows: is there a window end in
 * (from, to]; sessions end anywhere, so any advance counts.
 */
bool
sa_window_closing(SaWindow *w, TimestampTz from, TimestampTz to)
{
	if (w->kind == SA_WIN_GLOBAL || TIMESTAMP_NOT_FINITE(to) || to <= from)
		return false;
	if (w->kind == SA_WIN_SESSION || TIMESTAMP_NOT_FINITE(from))
		return true;
	/* window ends are k * slide + size (Unix time) */
	return sa_floor_div(to + SA_UNIX_OFFSET_US - w->size_us, w->slide_us) !=
		sa_floor_div(from + SA_UNIX_OFFSET_US - w->size_us, w->slide_us);
}

/*
 * How many of the windows that hold the slice starting at s0, other than
 * the newest (which starts at s0 and is open), are closed.
 */
static int
sliced_late(SaWindow *w, int64 s0, TimestampTz watermark)
{
	int64		oldest = s0 - w->size_us + w->slide_us;

	if (TIMESTAMP_NOT_FINITE(watermark) ||
		oldest + w->size_us + w->lateness_us > watermark)
		return 0;
	return (int) Min(sa_floor_div(watermark - w->lateness_us - w->size_us - oldest, w->slide_us) + 1,
					 w->size_us / w->slide_us - 1);
}

/*
 * Fold one evaluated row into every open window it falls in.  Returns how
 * many of its windows were already closed (the row is late for those).
 */
int
sa_window_accumulate(SaWindow *w, SaRowInput *in, MemoryContext batchcxt,
					 TimestampTz watermark)
{
	int64		starts[1024];
	int64		span = Max(w->size_us, w->gap_us);
	int			late = 0;
	int			n;

	/*
	 * A sliced window's rows are late for exactly the windows already
	 * materialized: the watermark may have moved past more (an idle
	 * partition, between commits), but those are put together from their
	 * slices at the next commit, this row included.
	 */
	if (w->sliced)
		watermark = TIMESTAMP_NOT_FINITE(w->closed_until) ? DT_NOBEGIN :
			Min(watermark, w->closed_until + w->lateness_us);

	/*
	 * Every window must fit in the timestamp range; checked on the event
	 * time first (window arithmetic is done in Unix time, 30 years ahead of
	 * PostgreSQL's epoch) and before anything is folded.
	 */
	if (w->kind != SA_WIN_GLOBAL &&
		(in->event_time < MIN_TIMESTAMP + 2 * span ||
		 in->event_time > END_TIMESTAMP - SA_UNIX_OFFSET_US - 2 * span))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event time %s is out of range for window \"%s\"",
						timestamptz_to_str(in->event_time), w->name)));
	n = sa_window_starts(w, in->event_time, starts, lengthof(starts));
	/*
	 * Two phases, so that a row is folded into all its windows or into
	 * none: first every addition that can fail (a sum overflowing) is
	 * computed, then everything is installed.
	 */
	{
		/* on the stack for the usual few windows and aggregates */
		SaGroup    *gs_buf[16];
		Datum		sums_buf[64];
		bool		has_buf[64];
		bool		open_buf[16];
		int			cells = n * Max(w->naggs, 1);
		SaGroup   **gs = n <= 16 ? gs_buf : palloc(sizeof(SaGroup *) * n);
		Datum	   *sums = cells <= 64 ? sums_buf : palloc(sizeof(Datum) * cells);
		bool	   *has = cells <= 64 ? has_buf : palloc(sizeof(bool) * cells);
		bool	   *open = n <= 16 ? open_buf : palloc(sizeof(bool) * n);

		memset(gs, 0, sizeof(SaGroup *) * n);
		memset(has, 0, sizeof(bool) * cells);
		memset(open, 0, sizeof(bool) * n);

		for (int s = 0; s < n; s++)
		{
			/*
			 * A session row whose own session would be closed may still
			 * fall into (or extend, or bridge) a session that is open:
			 * looked up only then, so on-time rows cost nothing.
			 */
			if (w->kind == SA_WIN_SESSION ?
				sa_window_closed(w, in->event_time, watermark) &&
				sa_session_late(w, lookup_group(w, 0, in, batchcxt, false), in, watermark) :
				sa_window_closed(w, starts[s], watermark))
			{
				late++;
				continue;
			}
			open[s] = true;
			if (w->kind == SA_WIN_SESSION)
				continue;
			gs[s] = lookup_group(w, starts[s], in, batchcxt, false);
			for (int i = 0; gs[s] && i < w->naggs; i++)
			{
				SaAgg	   *a = &w->aggs[i];

				if ((a->kind == SA_AGG_SUM || a->kind == SA_AGG_AVG) &&
					!in->argnulls[i] && !gs[s]->vals[i].isnull)
				{
					sums[s * w->naggs + i] = FunctionCall2Coll(&a->addfn, a->collation,
															   gs[s]->vals[i].value, in->args[i]);
					has[s * w->naggs + i] = true;
				}
			}
		}
		/*
		 * A slice is written while its newest window is open; the row is
		 * still late for its older windows that have closed (they were
		 * materialized without it, and the slice is read only by windows
		 * that are open).
		 */
		if (w->sliced && open[0])
		{
			int			older = sliced_late(w, starts[0], watermark);

			late += older;
			w->batch_dirty |= older > 0;	/* closed windows lack it: no chaining */
		}
		for (int s = 0; s < n; s++)
		{
			SaGroup    *g;

			if (!open[s])
				continue;
			if (w->kind == SA_WIN_SESSION)
			{
				/* sessions are kept per group: the hash key is the group alone */
				sa_session_add(w, lookup_group(w, 0, in, batchcxt, true), in, batchcxt);
				continue;
			}
			g = gs[s] ? gs[s] : lookup_group(w, starts[s], in, batchcxt, true);
			for (int i = 0; i < w->naggs; i++)
			{
				SaAggValue *v = &g->vals[i];

				if (has[s * w->naggs + i])
				{
					MemoryContext old = MemoryContextSwitchTo(batchcxt);

					v->value = datumCopy(sums[s * w->naggs + i], w->aggs[i].statebyval,
										 w->aggs[i].statelen);
					MemoryContextSwitchTo(old);
					v->count++;
				}
				else
					sa_fold_value(&w->aggs[i], v, in->args[i], in->argnulls[i], batchcxt);
			}
		}
	}
	return late;
}

/* Forget the batch (its memory goes with the batch context). */
void
sa_window_reset(SaWindow *w)
{
	w->list = NULL;
	w->nlist = 0;
	w->maxlist = 0;
	w->batch_dirty = false;
	w->slots = NULL;
	w->nslots = 0;
}

static void
append_key_columns(StringInfo sql, SaWindow *w, bool with_types)
{
	bool		first = true;

	if (w->kind != SA_WIN_GLOBAL)
	{
		appendStringInfo(sql, "window_start%s", with_types ? " timestamptz NOT NULL" : "");
		first = false;
	}
	for (int i = 0; i < w->ngroups; i++)
	{
		appendStringInfo(sql, "%s%s", first ? "" : ", ", quote_identifier(w->groups[i].name));
		if (with_types)
			appendStringInfo(sql, " %s",
							 format_type_with_typemod(w->groups[i].typid, w->groups[i].typmod));
		first = false;
	}
}

/*
 * DDL of the result table (state = false) or of the avg state table.
 * Key: (window_start, group columns), NULL group values equal to each
 * other as in GROUP BY.
 */
char *
sa_window_create_sql(SaWindow *w, const char *qualname, bool state)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TABLE %s (", qualname);
	if (w->kind != SA_WIN_GLOBAL)
	{
		appendStringInfoString(&sql, "window_start timestamptz NOT NULL");
		if (!state)
			appendStringInfoString(&sql, ", window_end timestamptz NOT NULL");
		if (w->ngroups > 0)
			appendStringInfoString(&sql, ", ");
	}
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%s%s %s", i > 0 ? ", " : "",
						 quote_identifier(w->groups[i].name),
						 format_type_with_typemod(w->groups[i].typid, w->groups[i].typmod));
	if (w->kind != SA_WIN_GLOBAL || w->ngroups > 0)
		appendStringInfoString(&sql, ", ");
	if (state)
	{
		appendStringInfoString(&sql, "ord int");
		for (int i = 0; i < w->naggs; i++)
			if (w->aggs[i].kind == SA_AGG_AVG)
				appendStringInfo(&sql, ", s%d %s, c%d bigint", i,
								 format_type_be(w->aggs[i].statetype), i);
	}
	else
		for (int i = 0; i < w->naggs; i++)
			appendStringInfo(&sql, "%s%s %s", i > 0 ? ", " : "",
							 quote_identifier(w->aggs[i].name),
							 format_type_be(w->aggs[i].restype));
	if (w->kind != SA_WIN_GLOBAL && w->ngroups == 0)
		appendStringInfoString(&sql, ", PRIMARY KEY (window_start))");
	else if (w->ngroups > 0)
	{
		appendStringInfo(&sql, ", %s (", SA_UNIQUE_NULLS_EQUAL);
		append_key_columns(&sql, w, false);
		appendStringInfoString(&sql, "))");
	}
	else
		appendStringInfoChar(&sql, ')');

	/* rows are updated batch after batch: leave room for HOT updates */
	appendStringInfoString(&sql, " WITH (fillfactor = 70)");
	if (w->kind == SA_WIN_GLOBAL && w->ngroups == 0)
		appendStringInfo(&sql, "; CREATE UNIQUE INDEX ON %s ((true))", qualname);
	return sql.data;
}

static SaWindowKind
kind_from_text(const char *k)
{
	if (strcmp(k, "tumbling") == 0)
		return SA_WIN_TUMBLING;
	if (strcmp(k, "hopping") == 0)
		return SA_WIN_HOPPING;
	if (strcmp(k, "session") == 0)
		return SA_WIN_SESSION;
	return SA_WIN_GLOBAL;
}

static int64
interval_col(HeapTuple tup, TupleDesc desc, int col, int64 dflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? dflt : sa_interval_usecs(DatumGetIntervalP(d), "interval");
}

static char *
qualified_relname(Oid relid, const char *window)
{
	char	   *rel = get_rel_name(relid);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("a table of window \"%s\" no longer exists", window),
				 errhint("Drop the window with streamagg.drop_window('%s') and create it again.", window)));
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
}

/*
 * Load and compile every window of a stream (caller connected to SPI, in
 * a transaction).  The definitions are read from the catalog; compiling
 * and planning their expressions runs as the stream's owner.  Allocated
 * in the caller's memory context.
 */
List *
sa_load_windows(SaStream *st)
{
	MemoryContext cxt = CurrentMemoryContext;
	SPITupleTable *tab;
	uint64		nrows;
	List	   *windows = NIL;
	SaUserContext uctx;

	nrows = sa_catalog_window_rows(st->name);
	tab = SPI_tuptable;
	MemoryContextSwitchTo(cxt);
	sa_enter_owner(st->owner, &uctx);
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tab->vals[r];
		TupleDesc	desc = tab->tupdesc;
		SaWindow   *w;
		bool		isnull;
		Datum		state;

		w = sa_compile_window(st, SPI_getvalue(tup, desc, 1), SPI_getvalue(tup, desc, 8),
							  SPI_getvalue(tup, desc, 9), SPI_getvalue(tup, desc, 10));
		w->kind = kind_from_text(SPI_getvalue(tup, desc, 2));
		w->result_rel = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		w->result_name = qualified_relname(w->result_rel, w->name);
		state = SPI_getbinval(tup, desc, 4, &isnull);
		if (!isnull)
		{
			w->state_rel = DatumGetObjectId(state);
			w->state_name = qualified_relname(w->state_rel, w->name);
		}
		w->size_us = interval_col(tup, desc, 5, 0);
		w->slide_us = interval_col(tup, desc, 6, w->size_us);
		w->gap_us = interval_col(tup, desc, 7, 0);
		w->lateness_us = interval_col(tup, desc, 11, 0);
		w->retention_us = interval_col(tup, desc, 12, -1);
		w->sole_writer = st->parallelism == 1;
		state = SPI_getbinval(tup, desc, 13, &isnull);
		if (!isnull)
		{
			/* a sliced hopping window: the batch goes into the slices */
			qualified_relname(w->result_rel, w->name);	/* the view is there */
			w->result_rel = DatumGetObjectId(state);
			w->result_name = qualified_relname(w->result_rel, w->name);
			w->closed_rel = DatumGetObjectId(SPI_getbinval(tup, desc, 14, &isnull));
			w->closed_name = qualified_relname(w->closed_rel, w->name);
			sa_window_slice_aggs(w);
		}
		sa_window_prepare_exec(w);
		windows = lappend(windows, w);
	}
	sa_leave(&uctx);
	return windows;
}
