/*-------------------------------------------------------------------------
 *
 * init.c
 *		Module load: settings, shared memory, the launcher, and the hooks
 *		on DROP DATABASE, DROP ROLE, REASSIGN OWNED and DROP OWNED.
 *
 * pg_streamagg only works when loaded through shared_preload_libraries:
 * its launcher is a static background worker and its state lives in
 * shared memory.  Loading it any other way (CREATE EXTENSION without the
 * preload) fails with a hint that names the line to add.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "miscadmin.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/acl.h"
#include "compat.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "tcop/utility.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static ProcessUtility_hook_type prev_process_utility = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request = NULL;
#endif

static void
sa_shmem_startup_hook(void)
{
	if (prev_shmem_startup)
		prev_shmem_startup();
	sa_shmem_startup();
}

#if PG_VERSION_NUM >= 150000
static void
sa_shmem_request_hook(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	sa_shmem_request();
}
#endif

static void sa_standard_utility(PlannedStmt *pstmt, const char *queryString,
#if PG_VERSION_NUM >= 140000
								bool readOnlyTree,
#endif
								ProcessUtilityContext context, ParamListInfo params,
								QueryEnvironment *queryEnv, DestReceiver *dest,
								QueryCompletion *qc);

/* Is the extension installed (and usable) in the current database? */
static bool
extension_here(void)
{
	return IsTransactionState() && !creating_extension &&
		OidIsValid(get_extension_oid(SA_EXTENSION_NAME, true));
}

/* The roles of a list of RoleSpec that exist. */
static List *
role_oids(List *specs)
{
	List	   *oids = NIL;
	ListCell   *lc;

	foreach(lc, specs)
	{
		Oid			role = get_rolespec_oid(lfirst(lc), true);

		if (OidIsValid(role))
			oids = lappend_oid(oids, role);
	}
	return oids;
}

/*
 * DROP ROLE of a role that owns streams fails, as for any owned object.
 * The streams of this database are read from its catalog, those of other
 * databases from what their managers published in shared memory.
 */
static void
check_drop_role(DropRoleStmt *stmt)
{
	ListCell   *lc;

	/* only for a caller PostgreSQL would let drop roles: no names to others */
	if (!superuser() && !has_createrole_privilege(GetUserId()))
		return;

	foreach(lc, role_oids(stmt->roles))
	{
		Oid			role = lfirst_oid(lc);
		List	   *streams = NIL;
		char	   *otherdb;

		if (extension_here())
		{
			SPI_connect();
			streams = sa_catalog_streams_owned_by(role);
			SPI_finish();
		}
		if (streams != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
							GetUserNameFromId(role, false)),
					 errdetail("owner of %d pg_streamagg stream(s), among them \"%s\"",
							   list_length(streams), (char *) linitial(streams)),
					 errhint("Drop the streams, or give them to another role with REASSIGN OWNED; DROP OWNED drops them.")));
		otherdb = sa_owner_elsewhere(role, MyDatabaseId);
		if (otherdb)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
							GetUserNameFromId(role, false)),
					 errdetail("owner of pg_streamagg streams in database \"%s\"", otherdb),
					 errhint("In that database, drop the streams or use REASSIGN OWNED or DROP OWNED.")));
	}
}

/* After REASSIGN OWNED: the streams of the old roles go to the new one. */
static void
reassign_streams(ReassignOwnedStmt *stmt)
{
	Oid			to = get_rolespec_oid(stmt->newrole, false);
	ListCell   *lc;

	SPI_connect();
	foreach(lc, role_oids(stmt->roles))
	{
		ListCell   *sc;

		/* their workers reload and act as the new owner */
		foreach(sc, sa_catalog_streams_owned_by(lfirst_oid(lc)))
			sa_catalog_reset_epoch(lfirst(sc));
		sa_catalog_reassign(lfirst_oid(lc), to);
	}
	SPI_finish();
	sa_wake_manager_at_commit();
}

/* After DROP OWNED: the streams of those roles are dropped with their windows. */
static void
drop_owned_streams(DropOwnedStmt *stmt)
{
	ListCell   *lc;
	ListCell   *sc;

	SPI_connect();
	foreach(lc, role_oids(stmt->roles))
		foreach(sc, sa_catalog_streams_owned_by(lfirst_oid(lc)))
			sa_drop_stream_internal(lfirst(sc), true);
	SPI_finish();
	sa_wake_manager_at_commit();
}

/*
 * Utility statements we act on.
 *
 * DROP DATABASE waits only a few seconds for other sessions to leave the
 * database.  Our manager and workers are such sessions, so they are
 * stopped first - but only once we know the caller may drop it, so a
 * statement PostgreSQL would refuse never disturbs them.  REASSIGN OWNED
 * and DROP OWNED are followed after PostgreSQL has done (and checked)
 * its part.
 */
static void
sa_process_utility(PlannedStmt *pstmt, const char *queryString,
#if PG_VERSION_NUM >= 140000
				   bool readOnlyTree,
#endif
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest,
				   QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			dropping = InvalidOid;

	if (IsA(parsetree, DropdbStmt))
	{
		DropdbStmt *stmt = (DropdbStmt *) parsetree;

		dropping = get_database_oid(stmt->dbname, true);
		if (OidIsValid(dropping) && sa_database_ownercheck(dropping, GetUserId()) &&
			dropping != MyDatabaseId && !IsTransactionBlock())
			sa_stop_database_workers(dropping);
		else
			dropping = InvalidOid;
	}
	else if (IsA(parsetree, DropRoleStmt))
		check_drop_role((DropRoleStmt *) parsetree);

	PG_TRY();
	{
		sa_standard_utility(pstmt, queryString,
#if PG_VERSION_NUM >= 140000
							readOnlyTree,
#endif
							context, params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* the drop failed (users still connected): serve the database again */
		if (OidIsValid(dropping))
			sa_request_database(dropping);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (IsA(parsetree, ReassignOwnedStmt) && extension_here())
		reassign_streams((ReassignOwnedStmt *) parsetree);
	else if (IsA(parsetree, DropOwnedStmt) && extension_here())
		drop_owned_streams((DropOwnedStmt *) parsetree);
}

static void
sa_standard_utility(PlannedStmt *pstmt, const char *queryString,
#if PG_VERSION_NUM >= 140000
					bool readOnlyTree,
#endif
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest,
					QueryCompletion *qc)
{
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString,
#if PG_VERSION_NUM >= 140000
							 readOnlyTree,
#endif
							 context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString,
#if PG_VERSION_NUM >= 140000
								readOnlyTree,
#endif
								context, params, queryEnv, dest, qc);
}

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_streamagg must be loaded via shared_preload_libraries"),
				 errhint("Add the line shared_preload_libraries = 'pg_streamagg' to postgresql.conf and restart the server.")));

	sa_define_gucs();

#if PG_VERSION_NUM >= 150000
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = sa_shmem_request_hook;
#else
	sa_shmem_request();
#endif
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = sa_shmem_startup_hook;

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = sa_process_utility;

	sa_register_launcher();
	sa_register_xact_callback();
}
