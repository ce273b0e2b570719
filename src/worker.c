/*-------------------------------------------------------------------------
 *
 * worker.c
 *		A stream worker: consume a share of a topic's partitions, aggregate
 *		batches in memory, commit each batch in one transaction.
 *
 * Life of a worker (index i of a stream with parallelism N):
 *
 *	 setup	  read the stream; ask Kafka for the topic's partitions; keep
 *			  those with partition % N == i; claim them in streamagg.offsets
 *			  with a fresh epoch (creating rows for new partitions at the
 *			  stream's start_from); load and compile the windows; assign the
 *			  partitions at the committed offsets.
 *	 run	  poll messages; decode each, evaluate each window's expressions
 *			  and fold it into the batch's hash tables; when the batch is
 *			  full (streamagg.batch_size) or old (streamagg.batch_time),
 *			  write window rows, dead letters and offsets and commit - one
 *			  transaction.
 *	 reload	  when a commit finds its epoch gone (windows changed, another
 *			  worker took over) or a write failed: throw the batch away and
 *			  go back to setup, which resumes from the committed offsets.
 *
 * Nothing is ever committed to Kafka, and nothing in memory matters after
 * a crash: the database holds exactly the messages up to the committed
 * offsets, so a restart re-reads the rest.
 *
 * A write error caused by data (a value too large for an index, a
 * constraint) must neither loop forever nor drop the batch's other
 * messages.  The failed batch is replayed one message per transaction;
 * the message that fails alone is stored as a dead letter with reason
 * 'write' and the replay goes on.  Any other error ends the worker with
 * the error recorded in streamagg.streams.last_error; the manager restarts
 * it with back-off.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define SA_POLL_MAX 1000
#define SA_BACKLOG_MESSAGES 5000	/* fetched and waiting: we are behind */
#define SA_BATCH_DEAD_BYTES (16 * 1024 * 1024)	/* dead letters a batch may hold */
#define SA_METADATA_INTERVAL_MS 10000

/* Why a batch or a run ended. */
typedef enum SaRunEnd
{
	SA_RUN_RELOAD,
	SA_RUN_STOP
} SaRunEnd;

/* Messages to isolate after a failed write: commit them one at a time. */
typedef struct SaCareful
{
	int32		partition;
	int64		until;
} SaCareful;

static List *careful_list = NIL;	/* SaCareful, TopMemoryContext */
static Oid	system_user_id;
static int	system_sec_context;

/* ---------- helpers ---------- */

static void
handle_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

static char *
ts_text(TimestampTz t)
{
	return pstrdup(timestamptz_to_str(t));
}

static void
as_owner(SaWorker *w)
{
	SetUserIdAndSecContext(w->st->owner, system_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

static void
as_system(void)
{
	SetUserIdAndSecContext(system_user_id, system_sec_context);
}

static SaPartition *
find_partition(SaWorker *w, int32 partition)
{
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].partition == partition)
			return &w->parts[i];
	return NULL;
}

static int
batch_size(SaWorker *w)
{
	return w->st->batch_size > 0 ? w->st->batch_size : sa_batch_size;
}

static int
batch_time_ms(SaWorker *w)
{
	return w->st->batch_time_ms > 0 ? w->st->batch_time_ms : sa_batch_time_ms;
}

static void
begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	as_system();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
commit_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* ---------- setup ---------- */

/* Load the stream, its windows and the per-message evaluation state. */
static void
load_definitions(SaWorker *w)
{
	MemoryContext old;
	int			ncols;

	MemoryContextReset(w->config_cxt);
	old = MemoryContextSwitchTo(w->config_cxt);
	w->st = sa_load_stream(w->args.stream);
	ncols = w->st->ncols + SA_NUM_META;

	w->params = makeParamList(ncols);
	w->params->numParams = ncols;
	for (int i = 0; i < ncols; i++)
	{
		w->params->params[i].ptype = w->st->cols[i].typid;
		w->params->params[i].pflags = PARAM_FLAG_CONST;
		w->params->params[i].isnull = true;
	}
	w->econtext = CreateStandaloneExprContext();
	w->econtext->ecxt_param_list_info = w->params;

	w->max_span = 0;
	w->all_builtin_types = true;
	for (int i = 0; i < w->st->ncols; i++)
		if (w->st->cols[i].typid >= FirstGenbkiObjectId ||
			getBaseType(w->st->cols[i].typid) != w->st->cols[i].typid)
			w->all_builtin_types = false;

	{
		List	   *wins = sa_load_windows(w->st);
		ListCell   *lc;
		int			i = 0;

		w->nwindows = list_length(wins);
		w->windows = palloc(sizeof(SaWindow *) * Max(w->nwindows, 1));
		w->inputs = palloc0(sizeof(SaRowInput) * Max(w->nwindows, 1));
		foreach(lc, wins)
		{
			SaWindow   *win = lfirst(lc);
			SaRowInput *in = &w->inputs[i];

			w->windows[i++] = win;
			w->max_span = Max(w->max_span, Max(win->size_us, win->gap_us));
			in->keys = palloc(sizeof(Datum) * Max(win->ngroups, 1));
			in->keynulls = palloc(sizeof(bool) * Max(win->ngroups, 1));
			in->args = palloc(sizeof(Datum) * Max(win->naggs, 1));
			in->argnulls = palloc(sizeof(bool) * Max(win->naggs, 1));
		}
	}
	MemoryContextSwitchTo(old);
}

/*
 * Claim our partitions: create offsets rows for partitions never seen
 * (at start_from), then stamp all of ours with a fresh epoch.  Runs in
 * the caller's transaction.
 */
static void
claim_partitions(SaWorker *w, List *mine)
{
	Oid			types[4] = {TEXTOID, INT4OID, INT8OID, INT8OID};
	Oid			claim_types[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[4];
	ListCell   *lc;
	ListCell   *cl;
	int			i = 0;
	bool		consumed_before;

	w->watermark = DT_NOBEGIN;
	SPI_execute_with_args("SELECT 1 FROM streamagg.offsets WHERE stream = $1 LIMIT 1",
						  1, types, (Datum[]) {CStringGetTextDatum(w->st->name)}, NULL, false, 1);
	consumed_before = SPI_processed > 0;
	SPI_execute("SELECT nextval('streamagg.epoch_seq')", false, 1);
	w->epoch = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										   &(bool){false}));
	values[0] = CStringGetTextDatum(w->st->name);
	w->nparts = list_length(mine);
	w->parts = MemoryContextAllocZero(w->config_cxt, sizeof(SaPartition) * Max(w->nparts, 1));
	foreach(lc, mine)
	{
		SaPartition *part = &w->parts[i++];
		bool		isnull;

		part->partition = lfirst_int(lc);
		values[1] = Int32GetDatum(part->partition);
		values[2] = Int64GetDatum(w->epoch);
		SPI_execute_with_args("UPDATE streamagg.offsets SET epoch = $3 "
							  "WHERE stream = $1 AND partition = $2 "
							  "RETURNING next_offset, max_event_time, watermark",
							  3, claim_types, values, NULL, false, 1);
		if (SPI_processed == 0)
		{
			/*
			 * A partition that appears after the stream has been consumed
			 * is read from its beginning, whatever start_from says: its
			 * messages came after the stream started.
			 */
			values[3] = Int64GetDatum(sa_kafka_resolve_start(w, part->partition,
															 consumed_before ? "earliest" : w->st->start_from));
			SPI_execute_with_args("INSERT INTO streamagg.offsets (stream, partition, epoch, next_offset) "
								  "VALUES ($1, $2, $3, $4) RETURNING next_offset, max_event_time, watermark",
								  4, types, values, NULL, false, 1);
		}
		{
			Datum		wm = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);

			if (!isnull && DatumGetTimestampTz(wm) > w->watermark)
				w->watermark = DatumGetTimestampTz(wm);
		}
		part->last_message = GetCurrentTimestamp();
		part->committed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		part->next_offset = part->committed;
		part->max_event_time = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																 SPI_tuptable->tupdesc, 2, &isnull));
		if (isnull)
			part->max_event_time = DT_NOBEGIN;
		part->careful_until = -1;
		foreach(cl, careful_list)
		{
			SaCareful  *c = lfirst(cl);

			if (c->partition == part->partition)
				part->careful_until = Max(part->careful_until, c->until);
		}
	}
}

/*
 * The stream's partitions that other workers hold: their committed
 * largest event time now, their live one (shared memory) later.
 */
static void
load_other_partitions(SaWorker *w)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(w->st->name)};
	TimestampTz now = GetCurrentTimestamp();

	SPI_execute_with_args("SELECT partition, max_event_time FROM streamagg.offsets WHERE stream = $1",
						  1, types, values, NULL, true, 0);
	w->others = MemoryContextAllocZero(w->config_cxt, sizeof(SaPartLive) * Max(SPI_processed, 1));
	w->nothers = 0;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		Datum		met = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);
		SaPartLive *o;

		if (find_partition(w, p) != NULL)
			continue;
		o = &w->others[w->nothers++];
		o->partition = p;
		o->max_event_time = isnull ? DT_NOBEGIN : DatumGetTimestampTz(met);
		o->last_message = now;
		o->high_watermark = -1;
	}
}

/* Refresh the other workers' partitions from shared memory. */
static void
refresh_other_partitions(SaWorker *w)
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

/*
 * The watermark: the smallest, over the stream's partitions, of the
 * largest event time read in each.  A partition that has been silent for
 * idle_timeout and has nothing unread in Kafka does not hold it back (a
 * partition that is merely slow to be fetched, or whose worker is not
 * running, does); when all are idle it
 * is the largest event time read anywhere.  It never moves backwards.
 */
static void
update_watermark(SaWorker *w, TimestampTz now)
{
	TimestampTz low = DT_NOEND;
	TimestampTz high = DT_NOBEGIN;
	bool		active = false;

	for (int i = 0; i < w->nparts + w->nothers; i++)
	{
		bool		mine = i < w->nparts;
		SaPartition *part = mine ? &w->parts[i] : NULL;
		SaPartLive *other = mine ? NULL : &w->others[i - w->nparts];
		TimestampTz met = mine ? part->max_event_time : other->max_event_time;
		TimestampTz last = mine ? part->last_message : other->last_message;
		int64		hw = mine ? part->high_watermark : other->high_watermark;
		int64		position = mine ? part->next_offset : other->committed;

		if (met > high)
			high = met;
		if (w->idle_us > 0 && now - last > w->idle_us && hw >= 0 && position >= hw)
			continue;
		active = true;
		if (met < low)
			low = met;
	}
	if (!active)
		low = high;
	if (low > w->watermark && !TIMESTAMP_NOT_FINITE(low))
		w->watermark = low;
}

/* Give every partition its entry in our shared-memory slot. */
static void
publish_partitions(SaWorker *w)
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

static List *
my_partitions(SaWorker *w, List *all)
{
	List	   *mine = NIL;
	ListCell   *lc;

	foreach(lc, all)
		if (lfirst_int(lc) % w->st->parallelism == w->args.index)
			mine = lappend_int(mine, lfirst_int(lc));
	return mine;
}

/*
 * Hold the stream's row (FOR SHARE) for the rest of the setup transaction
 * and take a fresh snapshot: create_window and friends lock it FOR UPDATE,
 * so the windows we load next are exactly those in force, and any change
 * after our commit fences the epoch we are about to claim.
 */
static void
lock_stream(const char *stream)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(stream)};

	SPI_execute_with_args("SELECT 1 FROM streamagg.streams WHERE name = $1 FOR SHARE",
						  1, types, values, NULL, false, 0);
	PopActiveSnapshot();
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * Forget isolation entries that lie behind the committed offsets (replayed
 * and done, or skipped by reset_offsets), so the lists stay short.
 */
static void
prune_isolation_lists(SaWorker *w)
{
	List	   *keep_careful = NIL;
	List	   *keep_poison = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	foreach(lc, careful_list)
	{
		SaCareful  *c = lfirst(lc);
		SaPartition *part = find_partition(w, c->partition);

		if (part && part->committed < c->until)
			keep_careful = lappend(keep_careful, c);
		else
			pfree(c);
	}
	foreach(lc, w->poison)
	{
		SaPoison   *p = lfirst(lc);
		SaPartition *part = find_partition(w, p->partition);

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

/*
 * Everything needed before the first batch.  The claim and the window
 * definitions are read in one transaction, after the claim has locked our
 * offsets rows: a concurrent create_window either committed before (we
 * see it) or resets our epoch after (our first commit fails and we
 * reload).
 */
static void
worker_setup(SaWorker *w)
{
	List	   *mine;

	begin_xact();
	load_definitions(w);
	commit_xact();

	sa_kafka_start(w);
	mine = my_partitions(w, sa_kafka_partitions(w));

	begin_xact();
	lock_stream(w->args.stream);
	load_definitions(w);
	claim_partitions(w, mine);
	load_other_partitions(w);
	w->committed_watermark = w->watermark;
	w->min_event = DT_NOEND;
	w->idle_us = (int64) (w->st->idle_timeout_ms >= 0 ? w->st->idle_timeout_ms : sa_idle_timeout_ms) * 1000;
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];

		win->final_until = TIMESTAMP_NOT_FINITE(w->watermark) ? DT_NOBEGIN :
			w->watermark - win->lateness_us;
		win->retention_done = 0;
	}
	w->had_error_at_start = false;
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(w->st->name)};

		SPI_execute_with_args("SELECT 1 FROM streamagg.streams WHERE name = $1 AND last_error IS NOT NULL",
							  1, types, values, NULL, true, 1);
		w->had_error_at_start = SPI_processed > 0;
	}
	commit_xact();

	prune_isolation_lists(w);
	publish_partitions(w);
	sa_kafka_assign(w);
	w->next_metadata_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 SA_METADATA_INTERVAL_MS);
	ereport(LOG,
			(errmsg("pg_streamagg worker %d of stream \"%s\" consuming %d partition(s) of topic \"%s\"",
					w->args.index, w->st->name, w->nparts, w->st->topic)));
}

static void
worker_teardown(SaWorker *w)
{
	sa_kafka_stop(w);
	if (w->econtext)
		FreeExprContext(w->econtext, true);
	w->econtext = NULL;
}

/* ---------- one message ---------- */

static bytea *
copy_bytes(const void *data, size_t len)
{
	bytea	   *b;

	if (data == NULL)
		return NULL;
	b = palloc(VARHDRSZ + len);
	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

static void
add_dead_letter(SaWorker *w, const rd_kafka_message_t *msg, const char *window,
				const char *reason, const char *error)
{
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);
	SaDeadLetter *dl = palloc(sizeof(SaDeadLetter));
	SaPartition *part = find_partition(w, msg->partition);

	if (part)
		part->batch_dead++;

	dl->window_name = window;
	dl->partition = msg->partition;
	dl->offset = msg->offset;
	dl->key = copy_bytes(msg->key, msg->key_len);
	dl->payload = copy_bytes(msg->payload, msg->len);
	w->dead_bytes += msg->key_len + msg->len;
	dl->reason = reason;
	dl->error = error ? pstrdup(error) : NULL;
	w->dead = lappend(w->dead, dl);
	MemoryContextSwitchTo(old);
}

/* The event time of the decoded message, or false with *error. */
static bool
event_time(SaWorker *w, int64 *t, char **error)
{
	int			col = w->st->event_col >= 0 ? w->st->event_col : w->st->ncols + SA_META_TIMESTAMP;
	ParamExternData *prm = &w->params->params[col];

	if (prm->isnull)
	{
		*error = w->st->event_col >= 0 ?
			psprintf("event time column \"%s\" is null", w->st->cols[col].name) :
			pstrdup("message has no Kafka timestamp");
		return false;
	}
	*t = DatumGetTimestampTz(prm->value);
	if (TIMESTAMP_NOT_FINITE(*t))
	{
		*error = w->st->event_col >= 0 ?
			psprintf("event time column \"%s\" is %s, not a point in time",
					 w->st->cols[col].name, ts_text(*t)) :
			psprintf("Kafka timestamp is %s, not a point in time", ts_text(*t));
		return false;
	}

	/*
	 * Window arithmetic needs room on both sides of the event time (and is
	 * done in Unix time, 30 years past PostgreSQL's epoch).  An event time
	 * at the very ends of the timestamp range is refused here, before it
	 * can drag the watermark to the year 294276.
	 */
	if (*t < MIN_TIMESTAMP + 2 * w->max_span ||
		*t > END_TIMESTAMP - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY) - 2 * w->max_span)
	{
		*error = psprintf("event time %s is out of the range windows can hold", ts_text(*t));
		return false;
	}
	return true;
}

/* Evaluate and fold one decoded message into one window; errors are its own. */
static void
aggregate_into(SaWorker *w, int wi, const rd_kafka_message_t *msg, int64 t)
{
	SaWindow   *win = w->windows[wi];
	SaRowInput *in = &w->inputs[wi];
	MemoryContext cxt = CurrentMemoryContext;

	in->event_time = t;
	PG_TRY();
	{
		if (sa_window_eval(win, w->econtext, in) &&
			sa_window_accumulate(win, in, w->batch_cxt, w->watermark) > 0)
			add_dead_letter(w, msg, win->name, "late",
							psprintf("event time %s is too late for window \"%s\": the watermark %s has passed the window's end plus its allowed lateness",
									 ts_text(t), win->name,
									 ts_text(w->watermark)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (!sa_is_data_error(edata->sqlerrcode))
			PG_RE_THROW();		/* a cancel or out of memory is not the message's fault */
		FlushErrorState();
		add_dead_letter(w, msg, win->name, "decode", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

static SaPoison *
find_poison(SaWorker *w, const rd_kafka_message_t *msg)
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

static void
start_batch_xact(SaWorker *w)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	as_owner(w);
	w->in_xact = true;
	w->batch_started = w->now;
	refresh_other_partitions(w);
}

/*
 * Decode one message and fold it into every window (or make it a dead
 * letter).  Returns false when on_error = 'stop' met a bad message: the
 * message is left unconsumed.
 */
static bool
process_message(SaWorker *w, const rd_kafka_message_t *msg)
{
	SaPartition *part = find_partition(w, msg->partition);
	SaPoison   *poison;
	char	   *error = NULL;
	int64		t = DT_NOBEGIN;		/* stays so unless the row decodes */
	MemoryContext old;

	if (part == NULL || msg->offset < part->next_offset)
		return true;			/* not ours, or already aggregated */
	if (!w->in_xact)
		start_batch_xact(w);

	MemoryContextReset(w->msg_cxt);
	ResetExprContext(w->econtext);
	old = MemoryContextSwitchTo(w->msg_cxt);

	if ((poison = find_poison(w, msg)) != NULL)
	{
		add_dead_letter(w, msg, NULL, "write", poison->error);
	}
	else if (!sa_decode_message(w, msg, &error) || !event_time(w, &t, &error))
	{
		t = DT_NOBEGIN;
		if (w->st->on_error == SA_ON_ERROR_STOP)
		{
			MemoryContextSwitchTo(old);
			w->stop_requested = true;
			w->stop_error = MemoryContextStrdup(TopMemoryContext,
												psprintf("partition %d offset %lld: %s", msg->partition,
														 (long long) msg->offset, error));
			return false;
		}
		if (w->st->on_error == SA_ON_ERROR_DEAD_LETTER)
			add_dead_letter(w, msg, NULL, "decode", error);
		else
			part->batch_dead++;	/* skip: counted, not stored */
	}
	else
	{
		for (int i = 0; i < w->nwindows; i++)
			aggregate_into(w, i, msg, t);
		if (t < w->min_event)
			w->min_event = t;
	}
	MemoryContextSwitchTo(old);

	part->next_offset = msg->offset + 1;
	part->batch_messages++;
	part->touched = true;
	part->last_message = w->now;
	if (t > part->max_event_time)
	{
		/* only a partition's new largest event time can move the watermark */
		part->max_event_time = t;
		update_watermark(w, w->now);
	}
	w->batch_count++;
	return true;
}

/* ---------- commit ---------- */

static void
reset_batch(SaWorker *w)
{
	for (int i = 0; i < w->nwindows; i++)
		sa_window_reset(w->windows[i]);
	for (int i = 0; i < w->nparts; i++)
	{
		w->parts[i].batch_messages = 0;
		w->parts[i].batch_dead = 0;
		w->parts[i].touched = false;
	}
	w->dead = NIL;
	w->dead_bytes = 0;
	w->batch_count = 0;
	w->in_xact = false;
	MemoryContextReset(w->batch_cxt);
}

/*
 * The stream's committed watermark as this transaction sees it (our own
 * offsets update included): the one the _final views use.
 */
static TimestampTz
stream_watermark(SaWorker *w)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(w->st->name)};
	bool		isnull;
	Datum		d;

	SPI_execute_with_args("SELECT streamagg.watermark($1)", 1, types, values, NULL, false, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
}

/*
 * Tell listeners (channel streamagg_closed) which windows became final in
 * this transaction: one notification per window whose final_until
 * (watermark - allowed_lateness) passed at least one window end.  Only
 * worker 0 of a stream notifies.
 */
static void
notify_closed_windows(SaWorker *w)
{
	TimestampTz wm = w->args.index == 0 ? stream_watermark(w) : DT_NOBEGIN;

	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		TimestampTz until;
		TimestampTz from = win->final_until;
		StringInfoData payload;

		win->pending_until = win->final_until;
		if (w->args.index != 0 || TIMESTAMP_NOT_FINITE(wm) ||
			TIMESTAMP_NOT_FINITE(w->min_event))
			continue;
		/* windows ending before the first event read never held anything */
		if (TIMESTAMP_NOT_FINITE(from) || from < w->min_event)
			from = w->min_event;
		until = wm - win->lateness_us;
		if (!sa_window_closing(win, from, until))
			continue;
		initStringInfo(&payload);
		appendStringInfoString(&payload, "{\"stream\": ");
		escape_json(&payload, w->st->name);
		appendStringInfoString(&payload, ", \"window\": ");
		escape_json(&payload, win->name);
		appendStringInfoString(&payload, ", \"watermark\": ");
		escape_json(&payload, ts_text(wm));
		appendStringInfoString(&payload, ", \"final_until\": ");
		escape_json(&payload, ts_text(until));
		appendStringInfoChar(&payload, '}');
		Async_Notify("streamagg_closed", payload.data);
		win->pending_until = until;
	}
}

/* Window rows as the owner, then our own tables as the system user. */
static void
write_batch(SaWorker *w)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* offsets first: a fenced worker stops before touching window tables */
	as_system();
	sa_sink_offsets(w);
	as_owner(w);
	for (int i = 0; i < w->nwindows; i++)
		sa_window_flush(w->windows[i]);
	as_system();
	sa_sink_dead_letters(w);
	notify_closed_windows(w);
	if (w->had_error_at_start)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(w->st->name)};

		SPI_execute_with_args("UPDATE streamagg.streams SET last_error = NULL WHERE name = $1",
							  1, types, values, NULL, false, 0);
	}
	SPI_finish();
}

/* After a failed data write: replay the batch one message at a time. */
static void
isolate_batch(SaWorker *w, ErrorData *edata)
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

/*
 * Write and commit the current batch.  Returns false when the worker must
 * reload (epoch changed, or a failed write to replay).  Errors that are
 * not about the data are re-thrown: the worker ends and is restarted.
 */
static bool
commit_batch(SaWorker *w)
{
	bool		ok = true;

	if (!w->in_xact)
		return true;
	w->fenced = false;
	PG_TRY();
	{
		write_batch(w);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the copy must outlive the transaction (and its memory) we abort */
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		if (!w->fenced && !sa_is_data_error(edata->sqlerrcode) &&
			edata->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		if (w->fenced)
			ereport(LOG, (errmsg("pg_streamagg stream \"%s\": %s; reloading", w->st->name, edata->message)));
		else if (edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED)
			ereport(LOG, (errmsg("pg_streamagg stream \"%s\": %s; retrying", w->st->name, edata->message)));
		else
			isolate_batch(w, edata);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();

	if (ok)
	{
		for (int i = 0; i < w->nparts; i++)
			w->parts[i].committed = w->parts[i].next_offset;
		for (int i = 0; i < w->nwindows; i++)
			w->windows[i]->final_until = w->windows[i]->pending_until;
		w->committed_watermark = w->watermark;
		w->last_commit = GetCurrentTimestamp();
		w->had_error_at_start = false;
		pgstat_report_stat(false);
		sa_kafka_update_watermarks(w);
		sa_kafka_group_commit(w);
	}
	reset_batch(w);
	return ok;
}

/* on_error = 'stop': pause the stream with the error, then exit. */
static void
stop_stream(SaWorker *w)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(w->st->name), CStringGetTextDatum(w->stop_error)};

	begin_xact();
	SPI_execute_with_args("UPDATE streamagg.streams SET state = 'stopped', last_error = $2 WHERE name = $1",
						  2, types, values, NULL, false, 0);
	commit_xact();
	ereport(LOG,
			(errmsg("pg_streamagg stream \"%s\" stopped: %s", w->st->name, w->stop_error),
			 errhint("Fix or skip the message (streamagg.reset_offsets), then call streamagg.resume('%s').",
					 w->st->name)));
}

/* Must this batch be committed now? */
static bool
batch_due(SaWorker *w, const rd_kafka_message_t *last)
{
	SaPartition *part;

	if (!w->in_xact)
		return false;
	if (w->stop_requested)
		return true;
	if (w->batch_count >= batch_size(w) || w->dead_bytes >= SA_BATCH_DEAD_BYTES)
		return true;
	if (last && (part = find_partition(w, last->partition)) != NULL &&
		last->offset < part->careful_until)
		return true;

	/*
	 * The time bound keeps results fresh when the stream is caught up.
	 * While a backlog drains (many messages already fetched), batches grow
	 * up to batch_size instead: fewer rows written per message.  They still
	 * close after five times batch_time.
	 */
	if (TimestampDifferenceExceeds(w->batch_started, w->now, 5 * batch_time_ms(w)))
		return true;
	if (w->backlog)
		return false;
	return TimestampDifferenceExceeds(w->batch_started, w->now, batch_time_ms(w));
}

/* New partitions of the topic that belong to us mean a reload. */
static bool
partitions_changed(SaWorker *w)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int nmine = -1;
	bool		changed;

	if (GetCurrentTimestamp() < w->next_metadata_check)
		return false;
	w->next_metadata_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SA_METADATA_INTERVAL_MS);
	PG_TRY();
	{
		List	   *all = sa_kafka_partitions(w);
		List	   *mine = my_partitions(w, all);

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

/*
 * Delete window rows whose end is more than `retention` behind the
 * committed watermark: a few thousand rows per transaction, between
 * batches, at most once a second per window (worker 0 only).
 */
static void
run_retention(SaWorker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (w->args.index != 0 || TIMESTAMP_NOT_FINITE(w->committed_watermark))
		return;
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		Oid			types[1] = {TIMESTAMPTZOID};
		Datum		values[1];
		uint64		deleted;

		if (win->retention_us < 0 || now - win->retention_done < USECS_PER_SEC)
			continue;
		win->retention_done = now;
		do
		{
			TimestampTz wm;

			handle_interrupts();
			begin_xact();
			wm = stream_watermark(w);
			if (TIMESTAMP_NOT_FINITE(wm))
			{
				commit_xact();
				break;
			}
			values[0] = TimestampTzGetDatum(wm - win->retention_us);
			as_owner(w);		/* the tables are the owner's: so are their triggers */
			SPI_execute_with_args(psprintf("DELETE FROM %s WHERE ctid = ANY (ARRAY("
										   "SELECT ctid FROM %s WHERE window_end < $1 LIMIT 5000))",
										   win->result_name, win->result_name),
								  1, types, values, NULL, false, 0);
			deleted = SPI_processed;
			if (win->state_name)
			{
				StringInfoData sql;

				initStringInfo(&sql);
				appendStringInfo(&sql, "DELETE FROM %s s WHERE s.window_start < $1 AND NOT EXISTS "
								 "(SELECT 1 FROM %s r WHERE r.window_start = s.window_start",
								 win->state_name, win->result_name);
				for (int g = 0; g < win->ngroups; g++)
					appendStringInfo(&sql, " AND r.%s IS NOT DISTINCT FROM s.%s",
									 quote_identifier(win->groups[g].name),
									 quote_identifier(win->groups[g].name));
				appendStringInfoChar(&sql, ')');
				SPI_execute_with_args(sql.data, 1, types, values, NULL, false, 0);
			}
			commit_xact();
		} while (deleted == 5000);
	}
}

/* Do all our offsets rows still carry our epoch? */
static bool
epoch_still_ours(SaWorker *w)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(w->st->name), Int64GetDatum(w->epoch)};
	bool		ours;

	begin_xact();
	SPI_execute_with_args("SELECT count(*) FROM streamagg.offsets WHERE stream = $1 AND epoch = $2",
						  2, types, values, NULL, true, 1);
	ours = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &(bool){false})) == w->nparts;
	commit_xact();
	if (!ours)
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\" was changed or reset; reloading", w->st->name)));
	return ours;
}

/*
 * Between batches: let the watermark advance with time (idle partitions),
 * commit it when it moved so that closed windows become final and are
 * notified, and run retention.  Returns false when the worker must reload.
 */
static bool
idle_tick(SaWorker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	/* a quiet worker still notices reset_offsets and window changes */
	if (TimestampDifferenceExceeds(w->epoch_checked, now, 1000))
	{
		w->epoch_checked = now;
		if (!epoch_still_ours(w))
			return false;
	}
	refresh_other_partitions(w);
	update_watermark(w, now);
	if (w->watermark > w->committed_watermark &&
		TimestampDifferenceExceeds(w->last_commit, now, batch_time_ms(w)))
	{
		start_batch_xact(w);
		if (!commit_batch(w))
			return false;
	}
	run_retention(w);
	return true;
}

/* ---------- the loop ---------- */


/* Consume and commit until a reload or a stop is needed. */
static SaRunEnd
worker_run(SaWorker *w)
{
	rd_kafka_message_t *msgs[SA_POLL_MAX];

	for (;;)
	{
		ssize_t		n;
		int			timeout = 100;

		handle_interrupts();
		sa_kafka_serve(w);
		if (w->batch_count > 0)
		{
			/* do not wait past the moment the batch is due */
			long		left = batch_time_ms(w) -
				(long) ((GetCurrentTimestamp() - w->batch_started) / 1000);

			timeout = (int) Max(1, Min(timeout, left));
		}
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		n = rd_kafka_consume_batch_queue(w->queue, timeout, msgs, SA_POLL_MAX);
		pgstat_report_wait_end();
		w->now = GetCurrentTimestamp();
		w->backlog = n == SA_POLL_MAX && rd_kafka_queue_length(w->queue) >= SA_BACKLOG_MESSAGES;

		for (ssize_t i = 0; i < n; i++)
		{
			rd_kafka_message_t *msg = msgs[i];
			bool		reload = false;

			if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR && !w->stop_requested)
			{
				process_message(w, msg);
				if (batch_due(w, msg) && !commit_batch(w))
					reload = true;
			}
			else if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
				sa_kafka_message_error(w, msg);
			if (reload)
			{
				for (ssize_t j = i; j < n; j++)
					rd_kafka_message_destroy(msgs[j]);
				return SA_RUN_RELOAD;
			}
			rd_kafka_message_destroy(msg);
		}
		if (batch_due(w, NULL) && !commit_batch(w))
			return SA_RUN_RELOAD;
		if (w->stop_requested)
			return SA_RUN_STOP;
		if (w->batch_count == 0)
		{
			if (!idle_tick(w))
				return SA_RUN_RELOAD;
			sa_kafka_update_watermarks(w);
			if (partitions_changed(w))
				return SA_RUN_RELOAD;
		}
	}
}

/* Record why the worker failed where streamagg.status shows it. */
static void
record_failure(const char *stream, const char *message)
{
	PG_TRY();
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(stream), CStringGetTextDatum(message)};

		begin_xact();
		SPI_execute_with_args("UPDATE streamagg.streams SET last_error = $2 WHERE name = $1",
							  2, types, values, NULL, false, 0);
		commit_xact();
	}
	PG_CATCH();
	{
		/* the catalog may be gone (DROP EXTENSION): nothing to record */
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
}

void
sa_worker_main(Datum arg)
{
	SaWorker   *w;
	sigjmp_buf	local_sigjmp_buf;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	GetUserIdAndSecContext(&system_user_id, &system_sec_context);

	w = MemoryContextAllocZero(TopMemoryContext, sizeof(SaWorker));
	memcpy(&w->args, MyBgworkerEntry->bgw_extra, sizeof(SaWorkerArgs));
	pgstat_report_appname(psprintf("pg_streamagg %s/%d", w->args.stream, w->args.index));
	w->slot = sa_worker_slot_acquire(MyDatabaseId, w->args.stream, w->args.index);
	w->config_cxt = AllocSetContextCreate(TopMemoryContext, "streamagg config", ALLOCSET_DEFAULT_SIZES);
	w->batch_cxt = AllocSetContextCreate(TopMemoryContext, "streamagg batch", ALLOCSET_DEFAULT_SIZES);
	w->msg_cxt = AllocSetContextCreate(TopMemoryContext, "streamagg message", ALLOCSET_DEFAULT_SIZES);

	/*
	 * An error that reaches here ends the worker: say why in the catalog
	 * and in the log; the manager restarts us with back-off.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		record_failure(w->args.stream, edata->message);
		proc_exit(1);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		SaRunEnd	end;

		worker_setup(w);
		end = worker_run(w);
		worker_teardown(w);
		if (end == SA_RUN_STOP)
		{
			stop_stream(w);
			proc_exit(0);
		}
	}
}
