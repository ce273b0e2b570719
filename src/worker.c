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
 * Who the worker acts as (usercontext.c): each batch runs as the stream's
 * owner - decoding (type input), expressions, result-table writes - with
 * search_path = pg_catalog, pg_temp and a GUC nest level that is rolled
 * back before the worker's own writes (offsets, dead letters), which run
 * with the session's fixed search_path.
 *
 * A write error caused by data is isolated (isolate.c).  Any other error
 * - a privilege the owner lost, a table gone, a lock timeout, a trigger's
 * exception - ends the worker with nothing committed and the error in
 * streamagg.streams.last_error; the manager restarts it with back-off and
 * the stream shows 'failing' until a batch commits again.
 *
 * Concerns of their own: partitions.c (claiming, fencing), eventtime.c
 * (watermark, final windows), isolate.c, retention.c, sink.c (the
 * batch's writes), kafka.c (the consumer).
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define SA_POLL_MAX 1000
#define SA_BACKLOG_MESSAGES 5000	/* fetched and waiting: we are behind */
#define SA_BACKLOG_BATCH_MS 1000	/* the least time a backlog batch may take */
#define SA_BATCH_DEAD_BYTES (16 * 1024 * 1024)	/* dead letters a batch may hold */
#define SA_WINDOW_FAILING 10		/* a window failing on this many messages in a row... */
#define SA_UNREACHABLE_MS 30000		/* brokers unreachable this long show in the status */

/* Why a batch or a run ended. */
typedef enum SaRunEnd
{
	SA_RUN_RELOAD,
	SA_RUN_STOP
} SaRunEnd;

/* ---------- helpers ---------- */

void
sa_handle_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	/* between transactions: a batch's GUC level would undo the reload */
	if (ConfigReloadPending && !IsTransactionState())
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
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

/* The memory budget of a batch, in bytes (streamagg.batch_memory). */
static Size
batch_memory(SaWorker *w)
{
	int			kb = w->st->batch_memory_kb > 0 ? w->st->batch_memory_kb : sa_batch_memory_kb;

	return (Size) kb * 1024;
}

/*
 * Has the batch's in-memory aggregation reached its budget?  Everything a
 * batch accumulates - groups, sessions, running values, dead letters -
 * lives in batch_cxt, whose size the allocator keeps: the check is cheap
 * enough for every message.  A message that spreads over many windows
 * (hopping windows, up to 1000 per message) can overshoot by what that
 * one message added.
 */
static bool
batch_memory_full(SaWorker *w)
{
	if (MemoryContextMemAllocated(w->batch_cxt, true) < batch_memory(w))
		return false;
	elog(DEBUG1, "pg_streamagg stream \"%s\": batch of %d messages reached streamagg.batch_memory (%zu kB); committing it",
		 w->st->name, w->batch_count, batch_memory(w) / 1024);
	return true;
}

/* A transaction of the worker's own (catalog work), connected to SPI. */
void
sa_begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
sa_commit_xact(void)
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

	/* what the old definitions kept outside config_cxt goes with them */
	for (int i = 0; i < w->nwindows; i++)
		sa_window_free_plans(w->windows[i]);
	w->nwindows = 0;
	MemoryContextReset(w->config_cxt);
	old = MemoryContextSwitchTo(w->config_cxt);
	w->st = sa_load_stream(w->args.stream);
	sa_check_option_rights(w->st);	/* the owner may have lost superuser */
	w->slot->owner = w->st->owner;	/* REASSIGN OWNED: who may see our figures */
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
		w->health = palloc0(sizeof(SaWindowHealth) * Max(w->nwindows, 1));
	}
	MemoryContextSwitchTo(old);
}

/*
 * Everything needed before the first batch.  The claim and the window
 * definitions are read in one transaction, after the claim has locked our
 * offsets rows: a concurrent create_window either committed before (we
 * see it) or resets our epoch after (our first commit fails and we
 * reload).  Kafka is asked everything it must answer (partitions, where
 * new ones start) before that transaction, so that nothing waits on the
 * stream's row behind a slow broker.
 */
static void
worker_setup(SaWorker *w)
{
	List	   *all;
	List	   *mine;
	SaStarts   *starts = NULL;
	char	   *topic;
	char	   *brokers;
	int			parallelism;

	/* a stop or gap found before a reload is found again, or not */
	w->stop_requested = false;
	list_free_deep(w->stop_gaps);
	w->stop_gaps = NIL;

	sa_begin_xact();
	load_definitions(w);
	sa_commit_xact();

	sa_kafka_start(w);
	all = sa_kafka_partitions(w, true);
	mine = sa_my_partitions(w, all);
	topic = pstrdup(w->st->topic);
	brokers = pstrdup(w->st->brokers);
	parallelism = w->st->parallelism;

	for (int tries = 1;; tries++)
	{
		if (starts)
		{
			pfree(starts->start_from);
			pfree(starts->partition);
			pfree(starts->offset);
			pfree(starts);
		}
		starts = sa_resolve_starts(w, all, mine);

		/*
		 * Hold the stream's row (FOR SHARE) for the rest of the setup
		 * transaction and take a fresh snapshot: create_window and friends
		 * lock it FOR UPDATE, so the windows we load next are exactly those
		 * in force, and any change after our commit fences the epoch we
		 * claim.
		 */
		sa_begin_xact();
		if (!sa_catalog_lock_stream(w->args.stream, false))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("stream \"%s\" does not exist", w->args.stream)));
		PopActiveSnapshot();
		PushActiveSnapshot(GetTransactionSnapshot());
		load_definitions(w);
		if (strcmp(w->st->topic, topic) != 0 || strcmp(w->st->brokers, brokers) != 0 ||
			w->st->parallelism != parallelism)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("stream \"%s\" was re-created while worker %d was starting",
							w->st->name, w->args.index)));
		if (sa_claim_partitions(w, starts, all, mine))
			break;
		/* reset or placed by another worker since we asked: ask again */
		if (tries >= 5)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("stream \"%s\" kept being reset while worker %d was starting",
							w->st->name, w->args.index)));
		AbortCurrentTransaction();
	}
	pfree(starts->start_from);
	pfree(starts->partition);
	pfree(starts->offset);
	pfree(starts);
	pfree(topic);
	pfree(brokers);
	list_free(all);
	list_free(mine);
	sa_load_other_partitions(w);
	w->committed_watermark = w->watermark;
	w->min_event = DT_NOEND;
	w->idle_us = (int64) (w->st->idle_timeout_ms >= 0 ? w->st->idle_timeout_ms : sa_idle_timeout_ms) * 1000;
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];

		win->final_until = TIMESTAMP_NOT_FINITE(w->watermark) ? DT_NOBEGIN :
			w->watermark - sa_final_horizon(win);
		win->retention_done = 0;
	}
	sa_slices_setup(w);
	w->had_error_at_start = sa_catalog_has_last_error(w->st->name);
	sa_commit_xact();

	sa_prune_isolation_lists(w);
	sa_publish_partitions(w);
	sa_kafka_assign(w);
	sa_schedule_metadata_check(w);
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

void
sa_add_dead_letter(SaWorker *w, const rd_kafka_message_t *msg, const char *window,
				const char *reason, const char *error)
{
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);
	SaDeadLetter *dl = palloc(sizeof(SaDeadLetter));
	SaPartition *part = sa_find_partition(w, msg->partition);

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

/*
 * Evaluate and fold one decoded message into one window; errors are its
 * own.  A window whose expressions call functions that are not built in
 * evaluates them in a subtransaction, so that whatever such a function did
 * before failing (locks, snapshots, SPI) is rolled back.
 */
static void
aggregate_into(SaWorker *w, int wi, const rd_kafka_message_t *msg, int64 t)
{
	SaWindow   *win = w->windows[wi];
	SaRowInput *in = &w->inputs[wi];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool in_subxact = false;
	Oid			userid;
	int			sec_context;

	GetUserIdAndSecContext(&userid, &sec_context);
	in->event_time = t;
	w->health[wi].evals++;
	if (win->user_code)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		in_subxact = true;
	}
	PG_TRY();
	{
		bool		keep = sa_window_eval(win, w->econtext, in);

		if (in_subxact)
		{
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			in_subxact = false;
		}
		if (keep && sa_window_accumulate(win, in, w->batch_cxt, w->watermark) > 0)
			sa_add_dead_letter(w, msg, win->name, "late",
							   win->kind == SA_WIN_SESSION ?
							   psprintf("event time %s is too late for window \"%s\": at watermark %s it falls into no open session of its group, or would change a final one",
										sa_ts_text(t), win->name,
										sa_ts_text(w->watermark)) :
							   psprintf("event time %s is too late for window \"%s\": the watermark %s has passed the window's end plus its allowed lateness",
										sa_ts_text(t), win->name,
										sa_ts_text(w->watermark)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (!sa_is_expression_error(edata->sqlerrcode))
			PG_RE_THROW();		/* not the message's fault: the batch fails */
		if (!in_subxact)
		{
			Oid			now_user;
			int			now_sec;

			/*
			 * Without a subtransaction only built-in code ran, and it
			 * leaves nothing behind.  Should anything else have run (a
			 * user-level exception, a changed user), only an abort cleans
			 * up: fail the batch.
			 */
			GetUserIdAndSecContext(&now_user, &now_sec);
			if (now_user != userid || now_sec != sec_context ||
				ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_PLPGSQL_ERROR)
				PG_RE_THROW();
		}
		FlushErrorState();
		if (in_subxact)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
		{
			char	   *error = psprintf("%s: %s", sa_window_eval_item(win), edata->message);

			sa_add_dead_letter(w, msg, win->name, "decode", error);
			sa_note_window_error(w, wi, error);
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* An expression of window wi failed on the current message. */
void
sa_note_window_error(SaWorker *w, int wi, const char *error)
{
	SaWindowHealth *h = &w->health[wi];

	if (h->errors++ == 0)
		h->first_error = MemoryContextStrdup(w->batch_cxt, error);
}

/*
 * A window whose expressions failed on every message of a batch (of at
 * least SA_WINDOW_FAILING messages) is broken, not fed bad input: say so
 * in last_error, which the status shows as 'failing'; clear it once the
 * window counts messages again.  Runs in the batch transaction.
 */
static void
report_window_health(SaWorker *w)
{
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindowHealth *h = &w->health[i];

		if (h->evals >= SA_WINDOW_FAILING && h->errors == h->evals)
		{
			sa_catalog_set_last_error(w->st->name,
									  psprintf("window \"%s\" fails on every message (%d in the last batch): %s",
											   w->windows[i]->name, h->evals, h->first_error));
			h->reported = true;
		}
		else if (h->reported && h->errors < h->evals)
		{
			sa_catalog_set_last_error(w->st->name, NULL);
			h->reported = false;
		}
	}
}

/* A batch transaction: it runs as the stream's owner until its writes. */
static void
start_batch_xact(SaWorker *w)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	sa_enter_owner(w->st->owner, &w->owner_ctx);
	for (int i = 0; i < w->nwindows; i++)
		sa_window_check_privileges(w->windows[i]);
	w->in_xact = true;
	w->batch_started = w->now;
	sa_refresh_other_partitions(w);
}

/*
 * Decode a message and read its event time.  Returns NULL when it is
 * good, else the dead-letter reason with *error: 'decode', or 'future'
 * for an event time further ahead of the server's clock than the stream's
 * max_future allows (it would drag the watermark past every real event).
 */
static const char *
bad_message(SaWorker *w, const rd_kafka_message_t *msg, int64 *t, char **error)
{
	if (!sa_decode_message(w, msg, error) || !sa_event_time(w, t, error))
		return "decode";
	if (w->st->max_future_us >= 0 && *t - w->now > w->st->max_future_us)
	{
		*error = psprintf("event time %s is more than %s ahead of the server's clock (%s)",
						  sa_ts_text(*t),
						  DatumGetCString(DirectFunctionCall1(interval_out,
															  PointerGetDatum(sa_usecs_interval(w->st->max_future_us)))),
						  sa_ts_text(w->now));
		return "future";
	}
	return NULL;
}

/*
 * Decode one message and fold it into every window (or make it a dead
 * letter).  Returns false when on_error = 'stop' met a bad message: the
 * message is left unconsumed.
 */
static bool
process_message(SaWorker *w, const rd_kafka_message_t *msg)
{
	SaPartition *part = sa_find_partition(w, msg->partition);
	SaPoison   *poison;
	char	   *error = NULL;
	const char *reason;
	int64		t = DT_NOBEGIN;		/* stays so unless the row decodes */
	MemoryContext old;

	if (part == NULL || msg->offset < part->next_offset)
		return true;			/* not ours, or already aggregated */
	if (!w->in_xact)
		start_batch_xact(w);

	MemoryContextReset(w->msg_cxt);
	ResetExprContext(w->econtext);
	old = MemoryContextSwitchTo(w->msg_cxt);

	if ((poison = sa_find_poison(w, msg)) != NULL)
	{
		sa_add_dead_letter(w, msg, NULL, "write", poison->error);
	}
	else if ((reason = bad_message(w, msg, &t, &error)) != NULL)
	{
		bool		skip_it = msg->partition == w->st->skip_partition &&
			msg->offset == w->st->skip_offset;

		t = DT_NOBEGIN;
		if (w->st->on_error == SA_ON_ERROR_STOP && !skip_it)
		{
			MemoryContextSwitchTo(old);
			w->stop_requested = true;
			w->stop_partition = msg->partition;
			w->stop_offset = msg->offset;
			w->stop_error = MemoryContextStrdup(TopMemoryContext,
												psprintf("partition %d offset %lld: %s", msg->partition,
														 (long long) msg->offset, error));
			return false;
		}
		if (w->st->on_error == SA_ON_ERROR_DEAD_LETTER || skip_it)
			sa_add_dead_letter(w, msg, NULL, reason, error);
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
		sa_update_watermark(w, w->now);
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
	for (int i = 0; i < w->nwindows; i++)
	{
		w->health[i].evals = w->health[i].errors = 0;
		w->health[i].first_error = NULL;
	}
	w->dead = NIL;
	w->dead_bytes = 0;
	w->gaps = NIL;
	w->gap_reload = false;
	w->batch_count = 0;
	w->in_xact = false;
	MemoryContextReset(w->batch_cxt);
}

/*
 * In a PG_CATCH block: raise the error again with what was being done in
 * front of its message, keeping its error code, or making it a
 * stream-level error (not the fault of any message) when stream_level.
 */
static void
rethrow_prefixed(MemoryContext cxt, const char *prefix, bool stream_level)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	if (stream_level && sa_is_data_error(edata->sqlerrcode))
		edata->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
	edata->message = psprintf("%s: %s", prefix, edata->message);
	ReThrowError(edata);
}

/*
 * Write one window's rows.  An error says which window and which table it
 * came from: the user may have dropped or altered the table, and the bare
 * message ("could not open relation with OID ...", "operator does not
 * exist: text + text") names neither.  The error code is kept, so data
 * errors are still isolated message by message.
 */
static void
flush_window(SaWindow *win)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		sa_window_flush(win);
	}
	PG_CATCH();
	{
		rethrow_prefixed(cxt, psprintf("window \"%s\" could not write to table %s",
									   win->name, win->result_name), false);
	}
	PG_END_TRY();
}

/*
 * Materialize the windows of sliced hopping windows that the batch
 * closed.  A failure there is not the fault of any message of the batch
 * (a bigint sum overflowing over a whole window, a constraint the owner
 * added to the closed table): it fails the batch as a stream-level error
 * (back-off, nothing skipped), never a data error that would isolate the
 * message that moved the watermark into the dead letters.
 */
static void
close_slices(SaWorker *w)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		sa_slices_close(w);
	}
	PG_CATCH();
	{
		rethrow_prefixed(cxt, "could not materialize the closed windows of a hopping window", true);
	}
	PG_END_TRY();
}

/*
 * The batch's writes.  The owner context of the batch ends first, so that
 * nothing the owner's code did to settings reaches our own statements:
 * offsets (first: a fenced worker stops before touching window tables),
 * window rows as the owner, dead letters, notifications.
 */
static void
write_batch(SaWorker *w)
{
	SaUserContext uctx;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	sa_leave(&w->owner_ctx);
	sa_sink_offsets(w);
	sa_sink_gaps(w, w->gaps);
	sa_enter_owner(w->st->owner, &uctx);
	for (int i = 0; i < w->nwindows; i++)
		flush_window(w->windows[i]);
	close_slices(w);
	sa_leave(&uctx);
	sa_sink_dead_letters(w);
	sa_notify_closed_windows(w);
	/* the cause of the last failure is gone once messages are written again */
	if (w->had_error_at_start && w->batch_count > 0)
		sa_catalog_set_last_error(w->st->name, NULL);
	if (w->batch_count > 0)
		w->stale_answers = 0;
	report_window_health(w);
	SPI_finish();
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
			sa_isolate_batch(w, edata);
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
		sa_slices_committed(w);
		w->committed_watermark = w->watermark;
		w->last_commit = GetCurrentTimestamp();
		if (w->batch_count > 0)
			w->had_error_at_start = false;
		pgstat_report_stat(false);
		sa_kafka_update_watermarks(w);
		sa_kafka_group_commit(w);
	}
	reset_batch(w);
	return ok;
}

/*
 * on_error = 'stop', or a truncated log: stop the stream with the reason.
 * Only while our offsets rows still carry our epoch, checked under the
 * stream's row lock: a stream reset or changed since (our claim fenced)
 * must not be stopped for what the old claim saw.  Returns false then,
 * and the worker reloads.
 */
static bool
stop_stream(SaWorker *w)
{
	sa_begin_xact();
	/* FOR UPDATE: two workers stopping at once take turns */
	if (!sa_catalog_lock_stream(w->st->name, true))
	{
		sa_commit_xact();
		return false;
	}
	PopActiveSnapshot();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (sa_catalog_count_epoch(w->st->name, w->epoch) != w->nparts)
	{
		sa_commit_xact();
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\" was changed or reset; reloading instead of stopping",
						w->st->name)));
		return false;
	}
	sa_catalog_stop_stream(w->st->name, w->stop_error, w->stop_partition, w->stop_offset);
	sa_sink_gaps(w, w->stop_gaps);
	sa_commit_xact();
	if (w->stop_gaps)
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\" stopped: %s", w->st->name, w->stop_error)));
	else
		ereport(LOG,
				(errmsg("pg_streamagg stream \"%s\" stopped: %s", w->st->name, w->stop_error),
				 errhint("Fix what the message needs, or skip it into the dead letters with streamagg.resume('%s', skip => true).",
						 w->st->name)));
	return true;
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
	if (batch_memory_full(w))
		return true;
	if (sa_slices_due(w))		/* a window of a sliced window closed */
		return true;
	if (last && (part = sa_find_partition(w, last->partition)) != NULL &&
		last->offset < part->careful_until)
		return true;

	/*
	 * The time bound keeps results fresh when the stream is caught up.
	 * While a backlog drains (many messages already fetched), batches grow
	 * up to batch_size instead: fewer rows written per message.  They still
	 * close after five times batch_time, and not before a second.
	 */
	if (TimestampDifferenceExceeds(w->batch_started, w->now,
								   Max(5 * batch_time_ms(w), SA_BACKLOG_BATCH_MS)))
		return true;
	if (w->backlog)
		return false;
	return TimestampDifferenceExceeds(w->batch_started, w->now, batch_time_ms(w));
}

/* Has any partition moved past its committed offset without a batch? */
static bool
offsets_ahead(SaWorker *w)
{
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].next_offset > w->parts[i].committed)
			return true;
	return false;
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
		if (!sa_epoch_still_ours(w))
			return false;
	}
	sa_refresh_other_partitions(w);
	sa_update_watermark(w, now);
	(void) sa_kafka_skip_markers(w);
	if ((offsets_ahead(w) || w->watermark > w->committed_watermark) &&
		(TimestampDifferenceExceeds(w->last_commit, now, batch_time_ms(w)) || sa_slices_due(w)))
	{
		start_batch_xact(w);
		if (!commit_batch(w))
			return false;
	}
	sa_run_retention(w);
	return true;
}

/* ---------- the loop ---------- */

/*
 * Brokers unreachable for longer than SA_UNREACHABLE_MS: say so in
 * last_error (the stream shows 'failing') and in shared memory (its
 * partitions are not 'idle': they are cut off); undo both when they are
 * back.  Between batches only.
 */
static void
check_reachable(SaWorker *w, bool got_messages)
{
	TimestampTz since = sa_kafka_unreachable_since(w, got_messages);
	bool		gone = since != 0 &&
		TimestampDifferenceExceeds(since, GetCurrentTimestamp(), SA_UNREACHABLE_MS);

	if (gone == w->unreachable_reported || w->in_xact)
		return;
	w->slot->unreachable = gone;
	sa_begin_xact();
	sa_catalog_set_last_error(w->st->name, gone ?
							  psprintf("cannot reach the brokers %s since %s: %s",
									   w->st->brokers, sa_ts_text(since), sa_kafka_error_cause()) : NULL);
	sa_commit_xact();
	ereport(LOG,
			(errmsg("pg_streamagg stream \"%s\": %s", w->st->name,
					gone ? "brokers unreachable" : "brokers reachable again")));
	w->unreachable_reported = gone;
}

/* Consume and commit until a reload or a stop is needed. */
static SaRunEnd
worker_run(SaWorker *w)
{
	rd_kafka_message_t *msgs[SA_POLL_MAX];

	for (;;)
	{
		ssize_t		n;
		int			timeout = 100;

		sa_handle_interrupts();
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
			else if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
			{
				sa_gap_found(w, msg);

				/*
				 * librdkafka stopped fetching that partition: commit the gap
				 * with the offsets past it now, then fetch afresh (a later
				 * message must not commit the batch first and forget it).
				 */
				if (w->gap_reload && !w->stop_requested)
				{
					for (ssize_t j = i; j < n; j++)
						rd_kafka_message_destroy(msgs[j]);
					if (!w->in_xact)
						start_batch_xact(w);
					(void) commit_batch(w);
					return SA_RUN_RELOAD;
				}
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
		check_reachable(w, n > 0);
		if (w->batch_count == 0)
		{
			if (!idle_tick(w))
				return SA_RUN_RELOAD;
			sa_kafka_update_watermarks(w);
			if (sa_partitions_changed(w))
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
		sa_begin_xact();
		sa_catalog_set_last_error(stream, message);
		sa_commit_xact();
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
	/* our own statements never resolve names through a user's schema */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);

	w = MemoryContextAllocZero(TopMemoryContext, sizeof(SaWorker));
	memcpy(&w->args, MyBgworkerEntry->bgw_extra, sizeof(SaWorkerArgs));
	pgstat_report_appname(psprintf("pg_streamagg %s/%d", w->args.stream, w->args.index));
	w->slot = sa_worker_slot_acquire(MyDatabaseId, w->args.stream, w->args.index, w->args.owner);
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

		/*
		 * The consumer is not destroyed here: rd_kafka_destroy() after an
		 * error was seen to wait for good on a broker thread, which holds
		 * up the worker's exit and the server's stop.
		 */
		proc_exit(1);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		SaRunEnd	end;

		worker_setup(w);
		end = worker_run(w);
		worker_teardown(w);
		if (end == SA_RUN_STOP && stop_stream(w))
			proc_exit(0);
	}
}
