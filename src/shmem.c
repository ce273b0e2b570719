/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared state: which databases run a manager, and one slot per live
 *		stream worker with the live figures of its partitions.
 *
 * Everything durable (offsets, counters, the committed watermark) lives in
 * the extension's tables; shared memory only holds what is live and cheap
 * to lose: process ids and what Kafka told a worker last (high watermarks).
 * The status views join the two.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include <signal.h>

#include "access/xact.h"
#include "compat.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

SaShared   *sa_shared = NULL;
LWLock	   *sa_lock = NULL;

static Size
sa_shmem_size(void)
{
	return add_size(offsetof(SaShared, workers),
					mul_size(sizeof(SaWorkerSlot), sa_max_workers));
}

void
sa_shmem_request(void)
{
	RequestAddinShmemSpace(sa_shmem_size());
	RequestNamedLWLockTranche("pg_streamagg", 1);
}

void
sa_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sa_shared = ShmemInitStruct("pg_streamagg", sa_shmem_size(), &found);
	if (!found)
		memset(sa_shared, 0, sa_shmem_size());
	sa_lock = &(GetNamedLWLockTranche("pg_streamagg"))->lock;
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Ask the launcher to (re)start the manager of a database.  Called by
 * CREATE EXTENSION and create_stream, so that a database is picked up at
 * once instead of at the next server start.
 */
void
sa_request_database(Oid dboid)
{
	int			free_slot = -1;
	Latch	   *latch;

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	for (int i = 0; i < SA_MAX_DATABASES; i++)
	{
		SaDbSlot   *db = &sa_shared->dbs[i];

		if (db->state != SA_DB_FREE && db->dboid == dboid)
		{
			free_slot = i;
			break;
		}
		if (db->state == SA_DB_FREE && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0)
	{
		SaDbSlot   *db = &sa_shared->dbs[free_slot];

		if (db->state != SA_DB_RUNNING)
			db->state = SA_DB_REQUESTED;
		else if (db->manager_latch)
			SetLatch(db->manager_latch);
		db->dboid = dboid;
		db->requested_at = GetCurrentTimestamp();
	}
	latch = sa_shared->launcher_latch;
	LWLockRelease(sa_lock);

	if (free_slot < 0)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("pg_streamagg cannot serve more than %d databases",
						SA_MAX_DATABASES)));
	if (latch)
		SetLatch(latch);
}

static bool wake_at_commit = false;

/*
 * Wake this database's manager when the current transaction commits (its
 * catalog changes are visible then), or ask the launcher for one.
 */
void
sa_wake_manager_at_commit(void)
{
	wake_at_commit = true;
}

static void
sa_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	bool		running = false;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT)
		return;
	if (event == XACT_EVENT_COMMIT && wake_at_commit && sa_shared != NULL)
	{
		LWLockAcquire(sa_lock, LW_SHARED);
		for (int i = 0; i < SA_MAX_DATABASES; i++)
			if (sa_shared->dbs[i].dboid == MyDatabaseId && sa_shared->dbs[i].state == SA_DB_RUNNING)
			{
				latch = sa_shared->dbs[i].manager_latch;
				running = true;
			}
		LWLockRelease(sa_lock);
		if (latch)
			SetLatch(latch);
		if (!running)
			sa_request_database(MyDatabaseId);
	}
	wake_at_commit = false;
}

void
sa_register_xact_callback(void)
{
	RegisterXactCallback(sa_xact_callback, NULL);
}

static void
sa_worker_slot_release(int code, Datum arg)
{
	SaWorkerSlot *slot = (SaWorkerSlot *) DatumGetPointer(arg);

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
		slot->pid = 0;
	LWLockRelease(sa_lock);
}

/*
 * Take the shared slot of a stream worker; it is given back when the
 * process exits.  Fails when another live process holds the same
 * (database, stream, index): two workers never run the same share.
 */
SaWorkerSlot *
sa_worker_slot_acquire(Oid dboid, const char *stream, int index, Oid owner)
{
	SaWorkerSlot *mine = NULL;

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	for (int i = 0; i < sa_max_workers; i++)
	{
		SaWorkerSlot *slot = &sa_shared->workers[i];

		if (slot->pid != 0 && slot->dboid == dboid && slot->index == index &&
			strcmp(slot->stream, stream) == 0 && kill(slot->pid, 0) == 0)
		{
			LWLockRelease(sa_lock);
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("stream \"%s\" worker %d is already running as pid %d",
							stream, index, (int) slot->pid)));
		}
		if (mine == NULL && (slot->pid == 0 || kill(slot->pid, 0) != 0))
			mine = slot;
	}
	if (mine == NULL)
	{
		LWLockRelease(sa_lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free pg_streamagg worker slot"),
				 errhint("Raise streamagg.max_workers (now %d) and restart the server.",
						 sa_max_workers)));
	}
	memset(mine, 0, sizeof(SaWorkerSlot));
	mine->pid = MyProcPid;
	mine->dboid = dboid;
	mine->index = index;
	mine->owner = owner;
	strlcpy(mine->stream, stream, SA_NAME_LEN);
	mine->started_at = GetCurrentTimestamp();
	mine->watermark = DT_NOBEGIN;
	LWLockRelease(sa_lock);

	on_shmem_exit(sa_worker_slot_release, PointerGetDatum(mine));
	return mine;
}

/* Are any of our processes still connected to this database? */
static bool
sa_database_busy(Oid dboid)
{
	bool		busy = false;

	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < SA_MAX_DATABASES; i++)
		if (sa_shared->dbs[i].dboid == dboid && sa_shared->dbs[i].manager_pid != 0 &&
			kill(sa_shared->dbs[i].manager_pid, 0) == 0)
			busy = true;
	for (int i = 0; i < sa_max_workers; i++)
		if (sa_shared->workers[i].pid != 0 && sa_shared->workers[i].dboid == dboid &&
			kill(sa_shared->workers[i].pid, 0) == 0)
			busy = true;
	LWLockRelease(sa_lock);
	return busy;
}

/*
 * DROP DATABASE is coming: tell the launcher to leave this database alone,
 * stop its manager and workers, and wait (a few seconds at most) until they
 * are gone.
 */
void
sa_stop_database_workers(Oid dboid)
{
	if (sa_shared == NULL)
		return;

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	for (int i = 0; i < SA_MAX_DATABASES; i++)
	{
		SaDbSlot   *db = &sa_shared->dbs[i];

		if (db->state != SA_DB_FREE && db->dboid == dboid)
		{
			db->state = SA_DB_DROPPING;
			if (db->manager_pid != 0)
				kill(db->manager_pid, SIGTERM);
		}
	}
	for (int i = 0; i < sa_max_workers; i++)
		if (sa_shared->workers[i].pid != 0 && sa_shared->workers[i].dboid == dboid)
			kill(sa_shared->workers[i].pid, SIGTERM);
	LWLockRelease(sa_lock);

	for (int i = 0; i < 100 && sa_database_busy(dboid); i++)
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(50 * 1000L);
	}
}

/*
 * The roles that own streams in a database, published by its manager
 * each time it reads the catalog, so that DROP ROLE run in another
 * database can refuse to orphan them.
 */
void
sa_publish_owners(Oid dboid, List *roles)
{
	ListCell   *lc;

	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	for (int i = 0; i < SA_MAX_OWNERS; i++)
		if (sa_shared->owners[i].dboid == dboid)
			sa_shared->owners[i].dboid = InvalidOid;
	foreach(lc, roles)
	{
		for (int i = 0; i < SA_MAX_OWNERS; i++)
			if (sa_shared->owners[i].dboid == InvalidOid)
			{
				sa_shared->owners[i].dboid = dboid;
				sa_shared->owners[i].role = lfirst_oid(lc);
				break;
			}
	}
	LWLockRelease(sa_lock);
}

/*
 * A database other than except_db where the role owns streams, or NULL.
 * Entries of databases dropped since are ignored.
 */
char *
sa_owner_elsewhere(Oid role, Oid except_db)
{
	Oid			dbs[SA_MAX_OWNERS];
	int			n = 0;

	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < SA_MAX_OWNERS; i++)
		if (sa_shared->owners[i].dboid != InvalidOid &&
			sa_shared->owners[i].dboid != except_db &&
			sa_shared->owners[i].role == role)
			dbs[n++] = sa_shared->owners[i].dboid;
	LWLockRelease(sa_lock);
	for (int i = 0; i < n; i++)
	{
		char	   *name = get_database_name(dbs[i]);

		if (name)
			return name;
	}
	return NULL;
}

PG_FUNCTION_INFO_V1(sa_request_manager);

/* SQL: streamagg._request_manager() — start serving this database. */
Datum
sa_request_manager(PG_FUNCTION_ARGS)
{
	sa_request_database(MyDatabaseId);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(sa_live_partitions);

/*
 * SQL: streamagg._live_partitions() — one row per partition held by a live
 * worker of this database: stream, partition, worker pid, worker index,
 * high watermark, largest event time read, time of the last message.
 */
Datum
sa_live_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	sa_materialize_srf(fcinfo);

	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < sa_max_workers; i++)
	{
		SaWorkerSlot *slot = &sa_shared->workers[i];

		if (slot->pid == 0 || slot->dboid != MyDatabaseId ||
			!has_privs_of_role(GetUserId(), slot->owner))
			continue;
		for (int p = 0; p < slot->nparts; p++)
		{
			SaPartLive *part = &slot->parts[p];
			Datum		values[8];
			bool		nulls[8] = {0};

			values[0] = CStringGetTextDatum(slot->stream);
			values[1] = Int32GetDatum(part->partition);
			values[2] = Int32GetDatum(slot->pid);
			values[3] = Int32GetDatum(slot->index);
			values[4] = Int64GetDatum(part->high_watermark);
			nulls[4] = part->high_watermark < 0;
			values[5] = TimestampTzGetDatum(part->max_event_time);
			nulls[5] = TIMESTAMP_NOT_FINITE(part->max_event_time);
			values[6] = TimestampTzGetDatum(part->last_message);
			nulls[6] = part->last_message == 0;
			values[7] = BoolGetDatum(slot->unreachable);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	LWLockRelease(sa_lock);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(sa_live_workers);

/* SQL: streamagg._live_workers() — stream, index, pid, started_at, watermark. */
Datum
sa_live_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	sa_materialize_srf(fcinfo);

	LWLockAcquire(sa_lock, LW_SHARED);
	for (int i = 0; i < sa_max_workers; i++)
	{
		SaWorkerSlot *slot = &sa_shared->workers[i];
		Datum		values[5];
		bool		nulls[5] = {0};

		if (slot->pid == 0 || slot->dboid != MyDatabaseId ||
			!has_privs_of_role(GetUserId(), slot->owner))
			continue;
		values[0] = CStringGetTextDatum(slot->stream);
		values[1] = Int32GetDatum(slot->index);
		values[2] = Int32GetDatum(slot->pid);
		values[3] = TimestampTzGetDatum(slot->started_at);
		values[4] = TimestampTzGetDatum(slot->watermark);
		nulls[4] = TIMESTAMP_NOT_FINITE(slot->watermark);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(sa_lock);
	return (Datum) 0;
}
