/*-------------------------------------------------------------------------
 *
 * isolate.c
 *		Isolating a message that cannot be written.
 *
 * A write error caused by data (a value too large for an index, a
 * constraint the row breaks) must neither loop forever nor drop the
 * batch's other messages.  The failed batch is replayed one message per
 * transaction ("careful" ranges, below the offsets the batch had reached);
 * the message that fails alone is remembered as poison and stored as a
 * dead letter with reason 'write' when it is met again.  Errors that are
 * not the data's fault never come here: they fail the batch and the
 * stream retries with back-off (see sa_is_data_error).
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

/* Messages to isolate after a failed write: commit them one at a time. */
typedef struct SaCareful
{
	int32		partition;
	int64		until;
} SaCareful;

static List *careful_list = NIL;	/* SaCareful, TopMemoryContext */

/* Below which offset must a partition be committed one message at a time? */
int64
sa_careful_until(int32 partition)
{
	int64		until = -1;
	ListCell   *cl;

	foreach(cl, careful_list)
	{
		SaCareful  *c = lfirst(cl);

		if (c->partition == partition)
			until = Max(until, c->until);
	}
	return until;
}

/*
 * Forget isolation entries that lie behind the committed offsets (replayed
 * and done, or skipped by reset_offsets), so the lists stay short.
 */
void
sa_prune_isolation_lists(SaWorker *w)
{
	List	   *keep_careful = NIL;
	List	   *keep_poison = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	foreach(lc, careful_list)
	{
		SaCareful  *c = lfirst(lc);
		SaPartition *part = sa_find_partition(w, c->partition);

		if (part && part->committed < c->until)
			keep_careful = lappend(keep_careful, c);
		else
			pfree(c);
	}
	foreach(lc, w->poison)
	{
		SaPoison   *p = lfirst(lc);
		SaPartition *part = sa_find_partition(w, p->partition);

		if (part && part->committed <= p->offset)
			keep_poison = lappend(keep_poison, p);
		else
		{
			pfree(p->error);
			pfree(p);
		}
	}
	list_free(careful_list);
	list_free(w->poison);
	careful_list = keep_careful;
	w->poison = keep_poison;
	MemoryContextSwitchTo(old);
}

SaPoison *
sa_find_poison(SaWorker *w, const rd_kafka_message_t *msg)
{
	ListCell   *lc;

	foreach(lc, w->poison)
	{
		SaPoison   *p = lfirst(lc);

		if (p->partition == msg->partition && p->offset == msg->offset)
			return p;
	}
	return NULL;
}

/* After a failed data write: replay the batch one message at a time. */
void
sa_isolate_batch(SaWorker *w, ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (w->batch_count == 1)
	{
		for (int i = 0; i < w->nparts; i++)
			if (w->parts[i].touched)
			{
				SaPoison   *p = palloc(sizeof(SaPoison));

				p->partition = w->parts[i].partition;
				p->offset = w->parts[i].next_offset - 1;
				p->error = pstrdup(edata->message);
				w->poison = lappend(w->poison, p);
				ereport(LOG,
						(errmsg("pg_streamagg stream \"%s\": message at partition %d offset %lld cannot be written: %s",
								w->st->name, p->partition, (long long) p->offset, p->error)));
			}
	}
	else
	{
		for (int i = 0; i < w->nparts; i++)
			if (w->parts[i].touched)
			{
				SaCareful  *c = palloc(sizeof(SaCareful));

				c->partition = w->parts[i].partition;
				c->until = w->parts[i].next_offset;
				careful_list = lappend(careful_list, c);
			}
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\": a batch of %d messages could not be written (%s); replaying it one message at a time",
						w->st->name, w->batch_count, edata->message)));
	}
	MemoryContextSwitchTo(old);
}
