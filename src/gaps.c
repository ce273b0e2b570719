/*-------------------------------------------------------------------------
 *
 * gaps.c
 *		What Kafka no longer has: offsets the stream could not read.
 *
 * The consumer never moves a position on its own (auto.offset.reset =
 * error): when the offset to fetch is out of range, librdkafka stops that
 * partition and tells us.  The offset we would commit is compared with
 * the partition's log start and end:
 *
 *  - before the start: retention (or DeleteRecords) removed messages the
 *    stream had not read.  A 'retention' gap is recorded in the
 *    transaction that moves the offset to the log start; the worker then
 *    reloads and fetches from there.
 *  - past the end: the log was cut (the topic deleted and re-created, an
 *    unclean leader election).  A 'truncated' gap is recorded with the
 *    stream's stop; it stays stopped until reset_offsets.
 *  - inside: the answer was stale (leadership moved meanwhile); reload
 *    and fetch again.
 *
 * Offsets Kafka leaves empty on purpose (transaction markers, compacted
 * records) are never out of range: they are not gaps.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"

/* Kafka's log start and end of a partition (kafka.c asks, interruptibly). */
static void
log_bounds(SaWorker *w, int32 partition, int64 *lo, int64 *hi)
{
	rd_kafka_resp_err_t err = sa_kafka_log_bounds(w, partition, lo, hi);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read the log bounds of partition %d of topic \"%s\" after an offset out of range: %s",
						partition, w->st->topic, rd_kafka_err2str(err))));
}

/*
 * A partition's log ends before its committed offset: stop the stream.
 * Every partition of this worker is looked at now, so that the stop
 * records all the truncated ones at once (a re-created topic cuts them
 * all).
 */
static void
truncated(SaWorker *w)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);	/* kept until the stop */
	StringInfoData what;

	initStringInfo(&what);
	for (int i = 0; i < w->nparts; i++)
	{
		SaPartition *part = &w->parts[i];
		int64		lo,
					hi;
		SaGap	   *gap;

		log_bounds(w, part->partition, &lo, &hi);
		if (part->next_offset <= hi)
			continue;
		gap = palloc(sizeof(SaGap));
		gap->partition = part->partition;
		gap->from_offset = hi;
		gap->to_offset = part->next_offset;
		gap->messages = -1;
		gap->reason = "truncated";
		w->stop_gaps = lappend(w->stop_gaps, gap);
		appendStringInfo(&what, "%spartition %d of topic \"%s\" now ends at offset %lld, before the committed offset %lld",
						 what.len ? "; " : "", part->partition, w->st->topic,
						 (long long) hi, (long long) part->next_offset);
	}
	w->stop_requested = true;
	w->stop_partition = -1;
	w->stop_offset = -1;
	w->stop_error = psprintf("%s: the topic was deleted and re-created, or its log was truncated; see streamagg.gaps, then reset_offsets('%s')",
							 what.data, w->st->name);
	pfree(what.data);
	MemoryContextSwitchTo(old);
}

/*
 * librdkafka found the fetch offset of msg's partition out of range.
 * Decide which gap it is: a retention gap joins the batch (w->gaps) and
 * asks for a reload once it is committed; a truncated log stops the
 * stream.
 */
void
sa_gap_found(SaWorker *w, const rd_kafka_message_t *msg)
{
	SaPartition *part = sa_find_partition(w, msg->partition);
	int64		lo,
				hi,
				at;

	if (part == NULL)
		return;
	at = part->next_offset;
	log_bounds(w, part->partition, &lo, &hi);

	if (at < lo)
	{
		SaGap	   *gap = MemoryContextAlloc(w->batch_cxt, sizeof(SaGap));

		gap->partition = part->partition;
		gap->from_offset = at;
		gap->to_offset = lo;
		gap->messages = lo - at;
		gap->reason = "retention";
		w->gaps = lappend(w->gaps, gap);
		part->next_offset = lo;
		part->touched = true;
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\": partition %d of topic \"%s\" lost %lld unread messages to retention (offsets %lld to %lld); going on at %lld",
						w->st->name, part->partition, w->st->topic,
						(long long) (lo - at), (long long) at, (long long) lo - 1,
						(long long) lo)));
	}
	else if (at > hi)
	{
		truncated(w);
		return;
	}
	else
	{
		/*
		 * The offset is inside the log after all: librdkafka's answer came
		 * from a broker that was behind (a leader change).  Fetch again,
		 * after a wait that grows while the answers stay stale (until a
		 * batch commits messages again).
		 */
		w->stale_answers = Min(w->stale_answers + 1, 6);
		ereport(w->stale_answers == 1 ? LOG : DEBUG1,
				(errmsg("pg_streamagg stream \"%s\": offset %lld of partition %d was reported out of range but lies in the log (%lld to %lld); fetching again",
						w->st->name, (long long) at, part->partition,
						(long long) lo, (long long) hi)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L << w->stale_answers, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (at < lo)
		w->stale_answers = 0;
	/* a retention gap, or a stale answer: fetch everything again */
	w->gap_reload = true;
}

/* Store gaps: with the offsets that move past them, or with the stop. */
void
sa_sink_gaps(SaWorker *w, List *gaps)
{
	ListCell   *lc;

	foreach(lc, gaps)
	{
		SaGap	   *gap = lfirst(lc);

		sa_catalog_insert_gap(w->st->name, gap->partition, gap->from_offset,
							  gap->to_offset, gap->messages, gap->reason);
	}
}
