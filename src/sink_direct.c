/*-------------------------------------------------------------------------
 *
 * sink_direct.c
 *		Writes a window's batch straight into its result table, below SQL,
 *		when that changes nothing but the cost.
 *
 * The SQL path (sink.c) upserts every row with INSERT ... ON CONFLICT:
 * each row pays a speculative insertion (a unique-index probe, the heap
 * insert, the index insert, the speculative-token dance).  Most rows of a
 * realistic stream are new ones (many keys, few events per key per
 * window), and the rest were written by this very worker a batch or two
 * ago.  A worker that is the only writer of its windows (parallelism 1)
 * keeps, for every window start it writes, the rows that exist and their
 * TIDs (a row map, rebuilt from the table the first time a window start
 * is met after a (re)start):
 *
 *	 new rows	  heap multi-insert plus index inserts, as COPY does;
 *	 known rows	  fetched by TID, checked to still be the row of that
 *				  window and group, combined, updated in place (HOT when
 *				  the page has room: no index work at all).
 *
 * Whatever the map gets wrong falls back to SQL, never to a wrong row: a
 * TID that no longer holds the row (deleted, updated by someone else,
 * table rewritten) sends that group through the upsert; a row inserted by
 * someone else makes the unique index refuse ours, and the whole direct
 * write (run in a subtransaction) is rolled back and the batch upserted.
 * After an abort, or when the table's storage changed, the map is
 * dropped and rebuilt.
 *
 * The direct path is only taken when the result table is exactly what
 * create_window made of it: same columns and types, our unique key as its
 * only index, no triggers, rules, row level security, CHECK or extra NOT
 * NULL constraints, and the current user (the stream's owner) holds
 * SELECT, INSERT and UPDATE on it.  Otherwise the SQL path runs, with all
 * its checks.  Windows with avg (a companion state table), and hopping
 * windows of more than SA_DIRECT_MAX_HOPS hops kept per instance (their
 * map would hold a row per hop and group), always take the SQL path; a
 * sliced hopping window (slices.c) writes its slices like a tumbling
 * window, avg included (kept there as sum and count).  A map that outgrows
 * SA_DIRECT_MAX_ROWS is dropped and rebuilt window by window, which bounds
 * the worker's memory.
 *
 *-------------------------------------------------------------------------
 */
#include "window.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define SA_DIRECT_CHUNK 1000	/* rows per multi-insert */
#define SA_DIRECT_MAX_HOPS 64	/* hopping windows with more go through SQL */
#define SA_DIRECT_MAX_ROWS 500000	/* a map past this is dropped (memory bound) */

/* One row of the result table this worker knows of. */
typedef struct SaKnownRow
{
	uint32		hash;			/* sa_group_hash */
	int64		wstart;
	ItemPointerData tid;		/* its current version */
	Datum	   *keys;
	bool	   *keynulls;
} SaKnownRow;

/* The rows of a window's open window starts. */
typedef struct SaRowMap
{
	MemoryContext cxt;
	Oid			relid;
	RelFileNode node;			/* storage the TIDs point into */
	uint64		abort_gen;		/* aborts seen when last written */
	SaKnownRow **slots;			/* open addressing */
	uint32		nslots;
	uint32		nused;
	int64	   *loaded;			/* window starts read from the table */
	int			nloaded;
	int			maxloaded;
} SaRowMap;

static uint64 abort_gen = 0;
static bool callback_registered = false;

/* Any abort may have rolled back rows a map points to. */
static void
direct_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		abort_gen++;
}

/* ---------- the row map ---------- */

static void
map_reset(SaWindow *w, Relation rel)
{
	SaRowMap   *m = w->rows;

	if (m == NULL)
	{
		m = MemoryContextAllocZero(GetMemoryChunkContext(w), sizeof(SaRowMap));
		w->rows = m;
	}
	if (m->cxt)
		MemoryContextDelete(m->cxt);
	m->cxt = AllocSetContextCreate(GetMemoryChunkContext(w), "streamagg row map",
								   ALLOCSET_DEFAULT_SIZES);
	m->relid = RelationGetRelid(rel);
	m->node = rel->rd_node;
	m->abort_gen = abort_gen;
	m->nslots = 1024;
	m->nused = 0;
	m->slots = MemoryContextAllocZero(m->cxt, sizeof(SaKnownRow *) * m->nslots);
	m->maxloaded = 16;
	m->nloaded = 0;
	m->loaded = MemoryContextAlloc(m->cxt, sizeof(int64) * m->maxloaded);
}

/* The slot of (wstart, keys): the entry, or the empty slot it would take. */
static SaKnownRow **
map_slot(SaWindow *w, uint32 hash, int64 wstart, Datum *keys, bool *nulls)
{
	SaRowMap   *m = w->rows;
	uint32		pos = hash & (m->nslots - 1);
	SaKnownRow *e;

	while ((e = m->slots[pos]) != NULL)
	{
		if (e->hash == hash && e->wstart == wstart &&
			sa_keys_equal(w, e->keys, e->keynulls, keys, nulls))
			break;
		pos = (pos + 1) & (m->nslots - 1);
	}
	return &m->slots[pos];
}

static void
map_place(SaRowMap *m, SaKnownRow *e)
{
	uint32		pos = e->hash & (m->nslots - 1);

	while (m->slots[pos])
		pos = (pos + 1) & (m->nslots - 1);
	m->slots[pos] = e;
}

/* Remember a row (slot: from map_slot, still empty; the map may move after). */
static void
map_add(SaWindow *w, SaKnownRow **slot, uint32 hash, int64 wstart, Datum *keys, bool *nulls,
		ItemPointer tid)
{
	SaRowMap   *m = w->rows;
	MemoryContext old = MemoryContextSwitchTo(m->cxt);
	SaKnownRow *e = palloc(sizeof(SaKnownRow));

	e->hash = hash;
	e->wstart = wstart;
	e->tid = *tid;
	e->keys = palloc(sizeof(Datum) * Max(w->ngroups, 1));
	e->keynulls = palloc(sizeof(bool) * Max(w->ngroups, 1));
	for (int i = 0; i < w->ngroups; i++)
	{
		e->keynulls[i] = nulls[i];
		e->keys[i] = nulls[i] ? (Datum) 0 :
			datumCopy(keys[i], w->groups[i].typbyval, w->groups[i].typlen);
	}
	*slot = e;
	m->nused++;
	if (m->nused * 4 >= m->nslots * 3)
	{
		SaKnownRow **oldslots = m->slots;
		uint32		oldn = m->nslots;

		m->nslots *= 2;
		m->slots = palloc0(sizeof(SaKnownRow *) * m->nslots);
		for (uint32 i = 0; i < oldn; i++)
			if (oldslots[i])
				map_place(m, oldslots[i]);
		pfree(oldslots);
	}
	MemoryContextSwitchTo(old);
}

static bool
map_loaded(SaRowMap *m, int64 wstart)
{
	for (int i = m->nloaded - 1; i >= 0; i--)
		if (m->loaded[i] == wstart)
			return true;
	return false;
}

/*
 * Forget the rows of final windows (window_end <= final_until): nothing
 * writes them again.  Survivors move to a fresh context - once a quarter
 * of the window starts the map holds are final: a hopping window's map
 * (its slices: most of its window starts are open, and one closes with
 * every slide) is not copied over at every slide.
 */
static void
map_evict(SaWindow *w)
{
	SaRowMap   *m = w->rows;
	MemoryContext oldcxt = m->cxt;
	SaKnownRow **oldslots = m->slots;
	uint32		oldn = m->nslots;
	int64	   *oldloaded = m->loaded;
	int			oldnloaded = m->nloaded;
	int			final = 0;

	if (TIMESTAMP_NOT_FINITE(w->final_until))
		return;
	for (int i = 0; i < m->nloaded; i++)
		final += m->loaded[i] + w->size_us <= w->final_until;
	if (final == 0 || final * 4 < m->nloaded)
		return;

	m->cxt = AllocSetContextCreate(GetMemoryChunkContext(w), "streamagg row map",
								   ALLOCSET_DEFAULT_SIZES);
	m->loaded = MemoryContextAlloc(m->cxt, sizeof(int64) * m->maxloaded);
	m->nloaded = 0;
	for (int i = 0; i < oldnloaded; i++)
		if (oldloaded[i] + w->size_us > w->final_until)
			m->loaded[m->nloaded++] = oldloaded[i];
	m->nslots = 1024;
	m->nused = 0;
	m->slots = MemoryContextAllocZero(m->cxt, sizeof(SaKnownRow *) * m->nslots);
	for (uint32 i = 0; i < oldn; i++)
	{
		SaKnownRow *e = oldslots[i];

		if (e != NULL && e->wstart + w->size_us > w->final_until)
			map_add(w, map_slot(w, e->hash, e->wstart, e->keys, e->keynulls),
					e->hash, e->wstart, e->keys, e->keynulls, &e->tid);
	}
	MemoryContextDelete(oldcxt);
}

/* Read the existing rows of a window start (first time it is met). */
static void
map_load(SaWindow *w, int64 wstart)
{
	SaRowMap   *m = w->rows;
	Datum		arg = TimestampTzGetDatum(wstart);

	if (w->load_plan == NULL)
	{
		StringInfoData sql;
		Oid			types[1] = {TIMESTAMPTZOID};

		initStringInfo(&sql);
		appendStringInfoString(&sql, "SELECT ctid");
		for (int i = 0; i < w->ngroups; i++)
			appendStringInfo(&sql, ", %s", quote_identifier(w->groups[i].name));
		appendStringInfo(&sql, " FROM %s WHERE window_start OPERATOR(pg_catalog.=) $1",
						 w->result_name);
		w->load_plan = SPI_prepare(sql.data, 1, types);
		if (w->load_plan == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql.data,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(w->load_plan);
	}
	if (SPI_execute_plan(w->load_plan, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the rows of window \"%s\"", w->name);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		keys[INDEX_MAX_KEYS];
		bool		nulls[INDEX_MAX_KEYS];
		bool		isnull;
		ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 1, &isnull));
		uint32		hash;
		SaKnownRow **slot;

		for (int i = 0; i < w->ngroups; i++)
			keys[i] = SPI_getbinval(tup, desc, i + 2, &nulls[i]);
		hash = sa_group_hash(sa_key_hash(w, keys, nulls), wstart);
		slot = map_slot(w, hash, wstart, keys, nulls);
		if (*slot == NULL)
			map_add(w, slot, hash, wstart, keys, nulls, tid);
	}
	SPI_freetuptable(SPI_tuptable);
	if (m->nloaded == m->maxloaded)
	{
		m->maxloaded *= 2;
		m->loaded = repalloc(m->loaded, sizeof(int64) * m->maxloaded);
	}
	m->loaded[m->nloaded++] = wstart;
}

/* ---------- may we write below SQL? ---------- */

static bool
table_is_ours(SaWindow *w, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = 2 + w->ngroups + w->naggs;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->trigdesc != NULL ||
		rel->rd_rules != NULL || rel->rd_rel->relrowsecurity ||
		desc->natts != natts ||
		(desc->constr && (desc->constr->num_check > 0 || desc->constr->has_generated_stored)))
		return false;
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			want = i < 2 ? TIMESTAMPTZOID :
			i < 2 + w->ngroups ? w->groups[i - 2].typid : w->aggs[i - 2 - w->ngroups].restype;

		if (att->attisdropped || att->attgenerated || att->atttypid != want ||
			(i >= 2 && att->attnotnull))
			return false;
	}
	return pg_class_aclmask(RelationGetRelid(rel), GetUserId(),
							ACL_SELECT | ACL_INSERT | ACL_UPDATE, ACLMASK_ALL) ==
		(ACL_SELECT | ACL_INSERT | ACL_UPDATE);
}

/* The only index must be our unique key (window_start, group columns). */
static bool
index_is_ours(SaWindow *w, ResultRelInfo *rri)
{
	IndexInfo  *ii;
	Relation	ind;

	if (rri->ri_NumIndices != 1)
		return false;
	ii = rri->ri_IndexRelationInfo[0];
	ind = rri->ri_IndexRelationDescs[0];
	if (!ii->ii_Unique || ii->ii_Expressions != NIL || ii->ii_Predicate != NIL ||
		ii->ii_ExclusionOps != NULL || !ind->rd_index->indimmediate ||
		(w->ngroups > 0 && !ii->ii_NullsNotDistinct) ||
		ii->ii_NumIndexKeyAttrs != 1 + w->ngroups ||
		ii->ii_NumIndexAttrs != ii->ii_NumIndexKeyAttrs)
		return false;
	if (ii->ii_IndexAttrNumbers[0] != 1)
		return false;
	for (int i = 0; i < w->ngroups; i++)
		if (ii->ii_IndexAttrNumbers[i + 1] != i + 3)
			return false;
	return true;
}

/* ---------- rows ---------- */

static void
fill_row(SaWindow *w, TupleTableSlot *slot, SaGroup *g)
{
	int			c = 0;

	ExecClearTuple(slot);
	slot->tts_values[c] = TimestampTzGetDatum(g->wstart);
	slot->tts_isnull[c++] = false;
	slot->tts_values[c] = TimestampTzGetDatum(g->wend);
	slot->tts_isnull[c++] = false;
	for (int i = 0; i < w->ngroups; i++, c++)
	{
		slot->tts_values[c] = g->keys[i];
		slot->tts_isnull[c] = g->keynulls[i];
	}
	for (int i = 0; i < w->naggs; i++, c++)
	{
		SaAgg	   *a = &w->aggs[i];
		SaAggValue *v = &g->vals[i];

		if (a->kind == SA_AGG_COUNT_STAR || a->kind == SA_AGG_COUNT)
		{
			slot->tts_values[c] = Int64GetDatum(v->count);
			slot->tts_isnull[c] = false;
		}
		else
		{
			slot->tts_values[c] = v->value;
			slot->tts_isnull[c] = v->isnull;
		}
	}
	ExecStoreVirtualTuple(slot);
}

/*
 * The stored row combined with the batch's values, as the upsert's SET
 * list computes it (count: +, sum: + ignoring NULLs, min/max: LEAST/GREATEST).
 */
static void
combine_row(SaWindow *w, TupleTableSlot *slot, TupleTableSlot *stored)
{
	for (int i = 0; i < w->naggs; i++)
	{
		SaAgg	   *a = &w->aggs[i];
		int			c = 2 + w->ngroups + i;
		bool		onull = stored->tts_isnull[c];
		Datum		o = stored->tts_values[c];

		if (a->kind == SA_AGG_COUNT_STAR || a->kind == SA_AGG_COUNT)
		{
			int64		sum;

			if (onull)
				slot->tts_isnull[c] = true;		/* NULL + x is NULL, as in SQL */
			else if (pg_add_s64_overflow(DatumGetInt64(o), DatumGetInt64(slot->tts_values[c]), &sum))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("bigint out of range")));
			else
				slot->tts_values[c] = Int64GetDatum(sum);
			continue;
		}
		if (onull)
			continue;
		if (slot->tts_isnull[c])
		{
			slot->tts_values[c] = o;
			slot->tts_isnull[c] = false;
		}
		else if (a->kind == SA_AGG_SUM)
			slot->tts_values[c] = FunctionCall2Coll(&a->addfn, a->collation, o, slot->tts_values[c]);
		else if (DatumGetBool(FunctionCall2Coll(&a->cmpfn, a->collation, o, slot->tts_values[c])))
			slot->tts_values[c] = o;
	}
}

static bool
stored_row_matches(SaWindow *w, TupleTableSlot *stored, SaGroup *g)
{
	slot_getallattrs(stored);
	if (stored->tts_isnull[0] || DatumGetTimestampTz(stored->tts_values[0]) != g->wstart)
		return false;
	return sa_keys_equal(w, stored->tts_values + 2, stored->tts_isnull + 2, g->keys, g->keynulls);
}

typedef struct SaDirect
{
	SaWindow   *w;
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	MemoryContext rowcxt;
	CommandId	cid;
} SaDirect;

static void
insert_rows(SaDirect *d, SaGroup **ins, int n)
{
	SaWindow   *w = d->w;
	TupleTableSlot *slots[SA_DIRECT_CHUNK];
	int			nslots = Min(n, SA_DIRECT_CHUNK);

	for (int i = 0; i < nslots; i++)
		slots[i] = MakeSingleTupleTableSlot(RelationGetDescr(d->rel), &TTSOpsVirtual);
	for (int from = 0; from < n; from += SA_DIRECT_CHUNK)
	{
		int			k = Min(SA_DIRECT_CHUNK, n - from);

		for (int i = 0; i < k; i++)
			fill_row(w, slots[i], ins[from + i]);
		table_multi_insert(d->rel, slots, k, d->cid, 0, NULL);
		for (int i = 0; i < k; i++)
		{
			SaGroup    *g = ins[from + i];

			ResetPerTupleExprContext(d->estate);
			ExecInsertIndexTuples(d->rri, slots[i], d->estate, false, false, NULL, NIL);
			map_add(w, map_slot(w, g->hash, g->wstart, g->keys, g->keynulls),
					g->hash, g->wstart, g->keys, g->keynulls, &slots[i]->tts_tid);
		}
	}
	for (int i = 0; i < nslots; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
}

/*
 * Update known rows by TID.  Groups whose row is not where the map says
 * (or was changed by someone else meanwhile) go back into *rest.
 */
static int
update_rows(SaDirect *d, SaGroup **upd, SaKnownRow **known, int n, SaGroup **rest)
{
	SaWindow   *w = d->w;
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	TupleTableSlot *stored = table_slot_create(d->rel, NULL);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(d->rel), &TTSOpsVirtual);
	BlockNumber nblocks = RelationGetNumberOfBlocks(d->rel);
	int			nrest = 0;

	for (int i = 0; i < n; i++)
	{
		SaGroup    *g = upd[i];
		ItemPointerData tid = known[i]->tid;
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		bool		update_indexes;
		TM_Result	res;
		MemoryContext old;

		MemoryContextReset(d->rowcxt);
		old = MemoryContextSwitchTo(d->rowcxt);
		if (ItemPointerGetBlockNumber(&tid) >= nblocks ||
			!table_tuple_fetch_row_version(d->rel, &tid, snap, stored) ||
			!stored_row_matches(w, stored, g))
		{
			MemoryContextSwitchTo(old);
			rest[nrest++] = g;
			continue;
		}
		fill_row(w, slot, g);
		combine_row(w, slot, stored);
		res = table_tuple_update(d->rel, &tid, slot, d->cid, snap, InvalidSnapshot,
								 true, &tmfd, &lockmode, &update_indexes);
		if (res != TM_Ok)
		{
			MemoryContextSwitchTo(old);
			rest[nrest++] = g;
			continue;
		}
		if (update_indexes)
		{
			ResetPerTupleExprContext(d->estate);
			ExecInsertIndexTuples(d->rri, slot, d->estate, true, false, NULL, NIL);
		}
		known[i]->tid = slot->tts_tid;
		MemoryContextSwitchTo(old);
	}
	ExecDropSingleTupleTableSlot(stored);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	return nrest;
}

/*
 * The direct write proper (in the caller's subtransaction).  Returns how
 * many groups are left for the SQL path; they are moved to the front of
 * w->list.
 */
static int
direct_write(SaWindow *w, Relation rel, ResultRelInfo *rri, EState *estate)
{
	int			n = w->nlist;
	SaGroup   **ins = palloc(sizeof(SaGroup *) * n);
	SaGroup   **upd = palloc(sizeof(SaGroup *) * n);
	SaKnownRow **known = palloc(sizeof(SaKnownRow *) * n);
	int			nins = 0;
	int			nupd = 0;
	SaDirect	d;

	d.w = w;
	d.rel = rel;
	d.estate = estate;
	d.rri = rri;
	d.cid = GetCurrentCommandId(true);
	d.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "streamagg row", ALLOCSET_SMALL_SIZES);

	for (int r = 0; r < n; r++)
	{
		SaGroup    *g = w->list[r];
		SaKnownRow **slot;

		if (!map_loaded(w->rows, g->wstart))
			map_load(w, g->wstart);
		slot = map_slot(w, g->hash, g->wstart, g->keys, g->keynulls);
		if (*slot)
		{
			upd[nupd] = g;
			known[nupd++] = *slot;
		}
		else
			ins[nins++] = g;
	}
	if (nins > 0)
		insert_rows(&d, ins, nins);
	return nupd > 0 ? update_rows(&d, upd, known, nupd, w->list) : 0;
}

/*
 * Write the window's batch directly where that is safe.  Returns true when
 * the batch is done (w->nlist then holds the groups the SQL path must still
 * upsert, usually none); false leaves the whole batch to the SQL path.
 */
bool
sa_direct_flush(SaWindow *w)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Relation	rel;
	volatile int left = -1;

	if (!w->sole_writer || w->navg > 0 ||
		(w->kind != SA_WIN_TUMBLING && w->kind != SA_WIN_HOPPING) ||
		(w->kind == SA_WIN_HOPPING && !w->sliced && w->size_us / w->slide_us > SA_DIRECT_MAX_HOPS) ||
		w->ngroups + 1 > INDEX_MAX_KEYS)
		return false;
	if (!callback_registered)
	{
		RegisterXactCallback(direct_xact_callback, NULL);
		callback_registered = true;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		rel = table_open(w->result_rel, RowExclusiveLock);
		if (table_is_ours(w, rel))
		{
			EState	   *estate = CreateExecutorState();
			ResultRelInfo *rri = makeNode(ResultRelInfo);
			RangeTblEntry *rte = makeNode(RangeTblEntry);

			/* index inserts of an update ask the range table which columns changed */
			rte->rtekind = RTE_RELATION;
			rte->relid = RelationGetRelid(rel);
			rte->relkind = rel->rd_rel->relkind;
			rte->rellockmode = RowExclusiveLock;
			ExecInitRangeTable(estate, list_make1(rte));
			InitResultRelInfo(rri, rel, 1, NULL, 0);
			ExecOpenIndices(rri, false);
			if (index_is_ours(w, rri))
			{
				CheckCmdReplicaIdentity(rel, CMD_UPDATE);
				if (w->rows == NULL || w->rows->relid != RelationGetRelid(rel) ||
					!RelFileNodeEquals(w->rows->node, rel->rd_node) ||
					w->rows->abort_gen != abort_gen ||
					w->rows->nused > SA_DIRECT_MAX_ROWS)
					map_reset(w, rel);
				else
					map_evict(w);
				left = direct_write(w, rel, rri, estate);
			}
			ExecCloseIndices(rri);
			FreeExecutorState(estate);
		}
		table_close(rel, NoLock);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (w->rows)
			w->rows->abort_gen = abort_gen - 1;		/* rebuild next time */
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		/* someone else wrote a row of ours: upsert the batch instead */
		left = -1;
	}
	PG_END_TRY();
	if (left < 0)
		return false;
	w->nlist = left;
	return true;
}
