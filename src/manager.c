/*-------------------------------------------------------------------------
 *
 * manager.c
 *		One manager per database: keeps the stream workers of that database
 *		running.
 *
 * Every second (or sooner when its latch is set) the manager reads
 * streamagg.streams and compares what should run — `parallelism` workers
 * for every running stream that has at least one window — with what does.
 * It starts what is missing, stops what is no longer wanted (paused,
 * dropped, parallelism lowered) and restarts workers that died after a
 * back-off that doubles with each failure in a row (1 s up to
 * streamagg.max_restart_delay).  Why a worker failed is written by the
 * worker itself into streams.last_error, which streamagg.status shows.
 *
 * When the extension disappears (DROP EXTENSION) the manager stops every
 * worker and exits, telling the launcher not to come back until asked.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "nodes/value.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

typedef struct ManagedWorker
{
	bool		used;
	bool		wanted;			/* set by the last look at the catalog */
	char		stream[SA_NAME_LEN];
	int			index;
	Oid			owner;
	BackgroundWorkerHandle *handle;
	int			failures;
	TimestampTz started_at;
	TimestampTz next_start;
	bool		start_failed;	/* said once, until a start succeeds */
} ManagedWorker;

static ManagedWorker *managed;
static int	sa_db_slot = -1;

static void
manager_set_state(SaDbState state)
{
	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	if (sa_db_slot >= 0 && sa_shared->dbs[sa_db_slot].dboid == MyDatabaseId &&
		sa_shared->dbs[sa_db_slot].state != SA_DB_DROPPING)
	{
		sa_shared->dbs[sa_db_slot].state = state;
		sa_shared->dbs[sa_db_slot].manager_pid = (state == SA_DB_RUNNING) ? MyProcPid : 0;
		sa_shared->dbs[sa_db_slot].manager_latch = (state == SA_DB_RUNNING) ? MyLatch : NULL;
	}
	LWLockRelease(sa_lock);
}

static TimestampTz
manager_requested_at(void)
{
	TimestampTz t = 0;

	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < SA_MAX_DATABASES; i++)
		if (sa_shared->dbs[i].dboid == MyDatabaseId && sa_shared->dbs[i].state != SA_DB_FREE)
		{
			sa_db_slot = i;
			t = sa_shared->dbs[i].requested_at;
		}
	LWLockRelease(sa_lock);
	return t;
}

static ManagedWorker *
manager_find(const char *stream, int index, bool create)
{
	ManagedWorker *free_entry = NULL;

	for (int i = 0; i < sa_max_workers; i++)
	{
		ManagedWorker *w = &managed[i];

		if (w->used && w->index == index && strcmp(w->stream, stream) == 0)
			return w;
		if (!w->used && free_entry == NULL)
			free_entry = w;
	}
	if (create && free_entry)
	{
		memset(free_entry, 0, sizeof(ManagedWorker));
		free_entry->used = true;
		strlcpy(free_entry->stream, stream, SA_NAME_LEN);
		free_entry->index = index;
	}
	return create ? free_entry : NULL;
}

/* Streams warned about for want of worker slots (warned once each). */
static List *short_of_slots = NIL;

/*
 * Read which workers should run.  Returns false when the extension is not
 * installed in this database.
 */
static bool
manager_read_catalog(void)
{
	bool		present;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	present = OidIsValid(get_extension_oid(SA_EXTENSION_NAME, true));
	if (present)
	{
		ListCell   *lc;

		SPI_connect();
		foreach(lc, sa_catalog_running_streams())
		{
			SaStreamRef *ref = lfirst(lc);

			for (int i = 0; i < ref->parallelism; i++)
			{
				ManagedWorker *w = manager_find(ref->name, i, true);

				if (w == NULL)
				{
					char	   *msg = psprintf("could not start worker %d: all %d pg_streamagg worker slots are in use (streamagg.max_workers)",
											   i, sa_max_workers);

					if (!list_member(short_of_slots, makeString(ref->name)))
					{
						MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

						ereport(WARNING,
								(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
								 errmsg("not enough pg_streamagg worker slots for stream \"%s\"", ref->name),
								 errhint("Raise streamagg.max_workers (now %d) and restart the server.",
										 sa_max_workers)));
						short_of_slots = lappend(short_of_slots, makeString(pstrdup(ref->name)));
						MemoryContextSwitchTo(old);
					}
					sa_catalog_set_last_error(ref->name, msg);
					break;
				}
				w->wanted = true;
				w->owner = ref->owner;
			}
		}
		sa_publish_owners(MyDatabaseId, sa_catalog_stream_owners());
		SPI_finish();
	}
	else
		sa_publish_owners(MyDatabaseId, NIL);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return present;
}

/* Put why a stream's worker cannot run where streamagg.status shows it. */
static void
manager_record_error(const char *stream, const char *message)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		sa_catalog_set_last_error(stream, message);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		/* the catalog may be going away; the next look will tell */
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

static void
manager_start_worker(ManagedWorker *w)
{
	BackgroundWorker bgw;
	SaWorkerArgs args;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, SA_EXTENSION_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "sa_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_streamagg worker %s/%d", w->stream, w->index);
	strlcpy(bgw.bgw_type, "pg_streamagg worker", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	bgw.bgw_notify_pid = MyProcPid;
	memset(&args, 0, sizeof(args));
	args.index = w->index;
	args.owner = w->owner;
	strlcpy(args.stream, w->stream, SA_NAME_LEN);
	StaticAssertStmt(sizeof(SaWorkerArgs) <= BGW_EXTRALEN, "worker args too large");
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	if (w->handle)
		pfree(w->handle);
	w->handle = NULL;
	if (!RegisterDynamicBackgroundWorker(&bgw, &w->handle))
	{
		char	   *msg = psprintf("could not start worker %d: no free background worker slot "
								   "(max_worker_processes = %d)", w->index, max_worker_processes);

		if (!w->start_failed)
			ereport(LOG,
					(errmsg("pg_streamagg stream \"%s\": %s", w->stream, msg),
					 errhint("Raise max_worker_processes and restart the server.")));
		/* at every try: a running worker of the stream may have cleared it */
		manager_record_error(w->stream, msg);
		w->start_failed = true;
		w->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
		return;
	}
	w->start_failed = false;
	w->started_at = GetCurrentTimestamp();
}

static bool
manager_worker_alive(ManagedWorker *w)
{
	pid_t		pid;

	return w->handle != NULL &&
		GetBackgroundWorkerPid(w->handle, &pid) != BGWH_STOPPED;
}

/* Start, stop and restart workers so that what runs is what is wanted. */
static void
manager_reconcile(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < sa_max_workers; i++)
	{
		ManagedWorker *w = &managed[i];
		bool		alive;

		if (!w->used)
			continue;
		alive = manager_worker_alive(w);
		if (!w->wanted)
		{
			if (alive)
				TerminateBackgroundWorker(w->handle);
			else
				w->used = false;
			continue;
		}
		if (alive)
		{
			/* a worker that has been up for a minute is healthy again */
			if (w->failures > 0 && now - w->started_at > 60 * USECS_PER_SEC)
				w->failures = 0;
			continue;
		}
		if (w->handle != NULL && w->next_start <= w->started_at)
		{
			/* it stopped by itself: back off before the next try */
			long		delay = Min(1000L << Min(w->failures, 16),
									sa_max_restart_delay_s * 1000L);

			w->failures++;
			w->next_start = TimestampTzPlusMilliseconds(now, delay);
			ereport(LOG,
					(errmsg("pg_streamagg worker %d of stream \"%s\" stopped; restart %d in %ld ms",
							w->index, w->stream, w->failures, delay)));
			continue;
		}
		if (now >= w->next_start)
			manager_start_worker(w);
	}
}

static void
manager_stop_all(void)
{
	for (int i = 0; i < sa_max_workers; i++)
		if (managed[i].used && manager_worker_alive(&managed[i]))
			TerminateBackgroundWorker(managed[i].handle);
}

/*
 * One look at the catalog and one reconcile pass, with errors caught: a
 * catalog that vanishes under us (DROP EXTENSION) must not kill the
 * manager.  Returns false when the extension is gone.
 */
static bool
manager_tick(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool present = true;

	for (int i = 0; i < sa_max_workers; i++)
		managed[i].wanted = false;

	PG_TRY();
	{
		present = manager_read_catalog();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG, (errmsg("pg_streamagg manager: %s", edata->message)));
		FreeErrorData(edata);
		/* keep what runs as it is until the next look */
		for (int i = 0; i < sa_max_workers; i++)
			managed[i].wanted = managed[i].used;
	}
	PG_END_TRY();

	if (present)
		manager_reconcile();
	return present;
}

void
sa_manager_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	TimestampTz requested_at;

	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* catalog.c pins it for every statement too; this covers everything else */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);

	managed = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(ManagedWorker) * sa_max_workers);
	requested_at = manager_requested_at();

	while (!ShutdownRequestPending)
	{
		bool		present = manager_tick();

		if (!present)
		{
			/*
			 * Asked for by a CREATE EXTENSION that may not have committed
			 * yet: wait for it a little before giving up.
			 */
			if (GetCurrentTimestamp() - requested_at > 10 * USECS_PER_SEC)
				break;
		}
		else
			manager_set_state(SA_DB_RUNNING);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 present ? 1000L : 250L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}

	manager_stop_all();
	manager_set_state(SA_DB_ABSENT);
	proc_exit(0);
}
