/*-------------------------------------------------------------------------
 *
 * partitions.c
 *		Which partitions a worker owns, claiming them, and fencing.
 *
 * Worker i of a stream with parallelism N owns the topic's partitions p
 * with p % N == i.  At setup it claims them in streamagg.offsets with a
 * fresh epoch (creating rows at the stream's start for partitions never
 * seen); every commit updates only rows that still carry that epoch
 * (sink.c), so a worker whose partitions were claimed again, or whose
 * stream's windows changed (the API resets the epoch), fails its commit
 * and reloads.  Quiet workers look at their epoch once a second.
 *
 * The other workers' partitions matter for the watermark: their committed
 * event times are read at setup, their live ones from shared memory.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#define SA_METADATA_INTERVAL_MS 10000

SaPartition *
sa_find_partition(SaWorker *w, int32 partition)
{
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].partition == partition)
			return &w->parts[i];
	return NULL;
}

/* The partitions of `all` that belong to this worker. */
List *
sa_my_partitions(SaWorker *w, List *all)
{
	List	   *mine = NIL;
	ListCell   *lc;

	foreach(lc, all)
		if (lfirst_int(lc) % w->st->parallelism == w->args.index)
			mine = lappend_int(mine, lfirst_int(lc));
	return mine;
}

/*
 * Where the partitions that have no offsets row yet are to start, asked
 * of Kafka before the setup transaction locks anything: such a question
 * can take seconds (a slow or unreachable broker), and pause, DROP
 * DATABASE or the API must not wait behind it.
 *
 * Where a partition starts is decided once per partition and per start
 * of the stream (its creation, or a reset_offsets): the first worker to
 * find no offsets rows at all places every partition of the topic at
 * start_from, so a worker that starts later - a worker slot freed late -
 * finds its partitions already placed.  A partition without a row after
 * that appeared later in Kafka, and is read from offset 0: its messages
 * all came after the stream started, and if retention deleted some before
 * we got there, the fetch finds the offset out of range and records the
 * gap (gaps.c).
 *
 * Which rows exist is read in a transaction of its own;
 * sa_claim_partitions finds out if that changed since.
 */
SaStarts *
sa_resolve_starts(SaWorker *w, List *all, List *mine)
{
	SaStarts   *starts = palloc0(sizeof(SaStarts));
	List	   *have = NIL;
	List	   *ask;
	ListCell   *lc;
	uint64		n;
	MemoryContext cxt = CurrentMemoryContext;

	sa_begin_xact();
	n = sa_catalog_partition_rows(w->st->name);
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContext old = MemoryContextSwitchTo(cxt);

		have = lappend_int(have, p);
		MemoryContextSwitchTo(old);
	}
	sa_commit_xact();
	MemoryContextSwitchTo(cxt);

	starts->fresh = (n == 0);
	starts->start_from = pstrdup(w->st->start_from);
	ask = starts->fresh ? all : list_difference_int(mine, have);
	starts->n = list_length(ask);
	starts->partition = palloc(sizeof(int32) * Max(starts->n, 1));
	starts->offset = palloc(sizeof(int64) * Max(starts->n, 1));
	n = 0;
	foreach(lc, ask)
	{
		starts->partition[n] = lfirst_int(lc);
		starts->offset[n++] = 0;
	}
	if (starts->fresh)
		sa_kafka_resolve_starts(w, starts->n, starts->partition, w->st->start_from,
								starts->offset);
	list_free(have);
	if (!starts->fresh)
		list_free(ask);
	return starts;
}

/* The start resolved for a partition; false if none was. */
static bool
start_of(SaStarts *starts, int32 partition, int64 *offset)
{
	for (int i = 0; i < starts->n; i++)
		if (starts->partition[i] == partition)
		{
			*offset = starts->offset[i];
			return true;
		}
	return false;
}

/*
 * Claim our partitions with a fresh epoch, placing partitions where
 * sa_resolve_starts found them to start.  Runs in the caller's
 * transaction, which holds the stream's row, after the definitions were
 * loaded again under it.  Returns false, with rows possibly changed, when
 * the offsets rows or the start position are no longer what
 * sa_resolve_starts saw (a reset, or another worker's first placement, in
 * between): the caller rolls back and asks again.
 */
bool
sa_claim_partitions(SaWorker *w, SaStarts *starts, List *all, List *mine)
{
	ListCell   *lc;
	int			i = 0;

	w->watermark = DT_NOBEGIN;
	if (sa_catalog_has_offsets(w->st->name) == starts->fresh)
		return false;
	/* a reset to elsewhere since, even with no rows to show for it */
	if (starts->fresh && strcmp(starts->start_from, w->st->start_from) != 0)
		return false;
	if (starts->fresh)
		foreach(lc, all)
		{
			int64		offset;

			if (!start_of(starts, lfirst_int(lc), &offset))
				return false;
			sa_catalog_place_partition(w->st->name, lfirst_int(lc), offset);
		}
	w->epoch = sa_catalog_next_epoch();
	w->nparts = list_length(mine);
	if (w->nparts > SA_MAX_PARTS_PER_WORKER)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("stream \"%s\" would give worker %d %d partitions; a worker takes at most %d",
						w->st->name, w->args.index, w->nparts, SA_MAX_PARTS_PER_WORKER),
				 errhint("Give the stream more parallelism (as a superuser if needed).")));
	w->parts = MemoryContextAllocZero(w->config_cxt, sizeof(SaPartition) * Max(w->nparts, 1));
	foreach(lc, mine)
	{
		SaPartition *part = &w->parts[i++];
		SaClaim		claim;

		part->partition = lfirst_int(lc);
		if (!sa_catalog_claim_partition(w->st->name, part->partition, w->epoch, &claim))
		{
			int64		offset;

			if (!start_of(starts, part->partition, &offset))
				return false;
			sa_catalog_insert_partition(w->st->name, part->partition, w->epoch, offset, &claim);
		}
		if (claim.watermark > w->watermark)
			w->watermark = claim.watermark;
		part->last_message = GetCurrentTimestamp();
		part->committed = claim.next_offset;
		part->next_offset = part->committed;
		part->max_event_time = claim.max_event_time;
		part->careful_until = sa_careful_until(part->partition);
	}
	return true;
}

/*
 * The stream's partitions that other workers hold: their committed
 * largest event time now, their live one (shared memory) later.
 */
void
sa_load_other_partitions(SaWorker *w)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		n = sa_catalog_partition_rows(w->st->name);

	w->others = MemoryContextAllocZero(w->config_cxt, sizeof(SaPartLive) * Max(n, 1));
	w->nothers = 0;
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		Datum		met = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);
		SaPartLive *o;

		if (sa_find_partition(w, p) != NULL)
			continue;
		o = &w->others[w->nothers++];
		o->partition = p;
		o->max_event_time = isnull ? DT_NOBEGIN : DatumGetTimestampTz(met);
		o->last_message = now;
		o->high_watermark = -1;
	}
}

/* Refresh the other workers' partitions from shared memory. */
void
sa_refresh_other_partitions(SaWorker *w)
{
	if (w->nothers == 0)
		return;
	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < sa_max_workers; i++)
	{
		SaWorkerSlot *slot = &sa_shared->workers[i];

		if (slot->pid == 0 || slot->pid == MyProcPid || slot->dboid != MyDatabaseId ||
			strcmp(slot->stream, w->st->name) != 0)
			continue;
		for (int p = 0; p < slot->nparts; p++)
			for (int o = 0; o < w->nothers; o++)
				if (w->others[o].partition == slot->parts[p].partition)
				{
					if (slot->parts[p].max_event_time > w->others[o].max_event_time)
						w->others[o].max_event_time = slot->parts[p].max_event_time;
					if (slot->parts[p].last_message > w->others[o].last_message)
						w->others[o].last_message = slot->parts[p].last_message;
					w->others[o].committed = slot->parts[p].committed;
					w->others[o].high_watermark = slot->parts[p].high_watermark;
				}
	}
	LWLockRelease(sa_lock);
}

/* Give every partition its entry in our shared-memory slot. */
void
sa_publish_partitions(SaWorker *w)
{
	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	w->slot->nparts = Min(w->nparts, SA_MAX_PARTS_PER_WORKER);
	for (int i = 0; i < w->nparts; i++)
	{
		SaPartLive *live = &w->slot->parts[Min(i, SA_MAX_PARTS_PER_WORKER - 1)];

		live->partition = w->parts[i].partition;
		live->committed = w->parts[i].committed;
		live->high_watermark = -1;
		live->max_event_time = w->parts[i].max_event_time;
		live->last_message = 0;
		w->parts[i].live = live;
	}
	LWLockRelease(sa_lock);
}

/* Do all our offsets rows still carry our epoch? (own transaction) */
bool
sa_epoch_still_ours(SaWorker *w)
{
	bool		ours;

	sa_begin_xact();
	ours = sa_catalog_count_epoch(w->st->name, w->epoch) == w->nparts;
	sa_commit_xact();
	if (!ours)
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\" was changed or reset; reloading", w->st->name)));
	return ours;
}

/* New partitions of the topic that belong to us mean a reload. */
bool
sa_partitions_changed(SaWorker *w)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int nmine = -1;
	bool		changed;

	if (GetCurrentTimestamp() < w->next_metadata_check)
		return false;
	sa_schedule_metadata_check(w);
	PG_TRY();
	{
		List	   *all = sa_kafka_partitions(w, false);
		List	   *mine = sa_my_partitions(w, all);

		nmine = list_length(mine);
		list_free(mine);
		list_free(all);
	}
	PG_CATCH();
	{
		/* brokers unreachable: librdkafka keeps retrying; look again later */
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	changed = nmine > w->nparts;
	if (changed)
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\": topic \"%s\" has new partitions; reloading",
						w->st->name, w->st->topic)));
	return changed;
}

void
sa_schedule_metadata_check(SaWorker *w)
{
	w->next_metadata_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 SA_METADATA_INTERVAL_MS);
}
