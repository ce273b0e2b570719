/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The cluster-wide launcher: one manager per database that has the
 *		extension.
 *
 * The launcher is the only static background worker.  It is not connected
 * to a database, so it cannot see where the extension is installed; it
 * starts a manager in every database once at start-up, and again in a
 * database when CREATE EXTENSION (or create_stream) asks for it through
 * shared memory.  A manager that finds no extension says so (SA_DB_ABSENT)
 * and exits; it is started again only on request.
 *
 * States of a database slot, as the launcher sees them:
 *
 *	 REQUESTED --start--> RUNNING --manager exits, no extension--> ABSENT
 *						  RUNNING --manager dies--> restarted with back-off
 *	 any --DROP DATABASE--> DROPPING (never restarted)
 *
 * A manager that keeps dying is restarted after 1 s, 2 s, 4 s, ... up to
 * streamagg.max_restart_delay, and the failure is logged once per back-off
 * step, not every second.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* What the launcher keeps about the manager it started in a database. */
typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	int			failures;
	TimestampTz next_start;
} LauncherDb;

static LauncherDb launcher_dbs[SA_MAX_DATABASES];

void
sa_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, SA_EXTENSION_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "sa_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_streamagg launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_streamagg launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Ask for a manager in every database that accepts connections. */
static void
launcher_request_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dbs = NIL;
	ListCell   *lc;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
			dbs = lappend_oid(dbs, db->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	foreach(lc, dbs)
		sa_request_database(lfirst_oid(lc));
}

static LauncherDb *
launcher_db_entry(Oid dboid)
{
	LauncherDb *free_entry = NULL;

	for (int i = 0; i < SA_MAX_DATABASES; i++)
	{
		if (launcher_dbs[i].dboid == dboid)
			return &launcher_dbs[i];
		if (free_entry == NULL && launcher_dbs[i].dboid == InvalidOid)
			free_entry = &launcher_dbs[i];
	}
	if (free_entry)
	{
		memset(free_entry, 0, sizeof(LauncherDb));
		free_entry->dboid = dboid;
	}
	return free_entry;
}

static bool
launcher_start_manager(LauncherDb *entry)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, SA_EXTENSION_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "sa_manager_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_streamagg manager for database %u", entry->dboid);
	strlcpy(bgw.bgw_type, "pg_streamagg manager", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(entry->dboid);
	bgw.bgw_notify_pid = MyProcPid;

	if (entry->handle)
		pfree(entry->handle);
	entry->handle = NULL;
	if (!RegisterDynamicBackgroundWorker(&bgw, &entry->handle))
	{
		ereport(LOG,
				(errmsg("pg_streamagg launcher could not start a manager for database %u",
						entry->dboid),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

/* Is the manager we started for this entry still alive (or starting)? */
static bool
launcher_manager_alive(LauncherDb *entry)
{
	pid_t		pid;

	if (entry->handle == NULL)
		return false;
	return GetBackgroundWorkerPid(entry->handle, &pid) != BGWH_STOPPED;
}

static void
forget_database(SaDbSlot *slot, Oid dboid)
{
	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	if (slot->state == SA_DB_ABSENT && slot->dboid == dboid)
	{
		slot->state = SA_DB_FREE;
		slot->dboid = InvalidOid;
	}
	LWLockRelease(sa_lock);
	for (int i = 0; i < SA_MAX_DATABASES; i++)
		if (launcher_dbs[i].dboid == dboid && !launcher_manager_alive(&launcher_dbs[i]))
		{
			if (launcher_dbs[i].handle)
				pfree(launcher_dbs[i].handle);
			memset(&launcher_dbs[i], 0, sizeof(LauncherDb));
		}
}

/*
 * One pass over the database slots: start requested managers, restart dead
 * ones after their back-off, forget the ones that found no extension.
 */
static void
launcher_reconcile(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < SA_MAX_DATABASES; i++)
	{
		SaDbSlot   *slot = &sa_shared->dbs[i];
		SaDbState	state;
		Oid			dboid;
		LauncherDb *entry;

		LWLockAcquire(sa_lock, LW_SHARED);
		state = slot->state;
		dboid = slot->dboid;
		LWLockRelease(sa_lock);

		if (state == SA_DB_FREE || state == SA_DB_DROPPING)
			continue;
		if (state == SA_DB_ABSENT)
		{
			/* no extension there: give the slot back; CREATE EXTENSION asks again */
			forget_database(slot, dboid);
			continue;
		}
		entry = launcher_db_entry(dboid);
		if (entry == NULL || launcher_manager_alive(entry))
			continue;

		if (state == SA_DB_RUNNING)
		{
			/* it was running and is gone without saying why: it failed */
			entry->failures++;
			entry->next_start = TimestampTzPlusMilliseconds(now,
															Min(1000L << Min(entry->failures - 1, 16),
																sa_max_restart_delay_s * 1000L));
			ereport(LOG,
					(errmsg("pg_streamagg manager for database %u exited unexpectedly; restart %d in %ld ms",
							dboid, entry->failures,
							(long) ((entry->next_start - now) / 1000))));
			LWLockAcquire(sa_lock, LW_EXCLUSIVE);
			if (slot->state == SA_DB_RUNNING && slot->dboid == dboid)
				slot->state = SA_DB_REQUESTED;
			LWLockRelease(sa_lock);
			continue;
		}

		/* REQUESTED */
		if (now < entry->next_start)
			continue;
		if (launcher_start_manager(entry))
		{
			LWLockAcquire(sa_lock, LW_EXCLUSIVE);
			if (slot->state == SA_DB_REQUESTED && slot->dboid == dboid)
				slot->state = SA_DB_RUNNING;
			LWLockRelease(sa_lock);
		}
	}
}

void
sa_launcher_main(Datum arg)
{
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	sa_shared->launcher_pid = MyProcPid;
	sa_shared->launcher_latch = MyLatch;
	for (int i = 0; i < SA_MAX_DATABASES; i++)
	{
		/* after a launcher restart, every manager is looked at again */
		if (sa_shared->dbs[i].state == SA_DB_RUNNING)
			sa_shared->dbs[i].state = SA_DB_REQUESTED;
	}
	LWLockRelease(sa_lock);

	/*
	 * Our workers come out of max_worker_processes, with PostgreSQL's own
	 * (parallel query, logical replication): say so once if it cannot hold
	 * streamagg.max_workers of them besides the launcher and a manager.
	 */
	if (max_worker_processes < sa_max_workers + 2)
		ereport(WARNING,
				(errmsg("max_worker_processes (%d) is too small for streamagg.max_workers (%d)",
						max_worker_processes, sa_max_workers),
				 errdetail("pg_streamagg needs one launcher, one manager per database with the extension, and one worker per stream and parallelism."),
				 errhint("Set max_worker_processes to at least %d plus what PostgreSQL's own background workers need, and restart the server.",
						 sa_max_workers + 2)));

	launcher_request_all_databases();

	while (!ShutdownRequestPending)
	{
		launcher_reconcile();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	sa_shared->launcher_latch = NULL;
	sa_shared->launcher_pid = 0;
	LWLockRelease(sa_lock);
	proc_exit(0);
}
