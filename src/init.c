/*-------------------------------------------------------------------------
 *
 * init.c
 *		Module load: settings, shared memory, the launcher, and the
 *		DROP DATABASE hook.
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
#include "commands/dbcommands.h"
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

/*
 * DROP DATABASE waits only a few seconds for other sessions to leave the
 * database.  Our manager and workers are such sessions, so stop them
 * before the drop looks.
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
		if (OidIsValid(dropping))
			sa_stop_database_workers(dropping);
	}

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
