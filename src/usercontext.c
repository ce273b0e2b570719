/*-------------------------------------------------------------------------
 *
 * usercontext.c
 *		Who pg_streamagg acts as, and with which search_path.
 *
 * Two execution contexts, used everywhere (API functions, manager,
 * workers):
 *
 *	 owner	  Everything derived from a stream's definition - type input,
 *			  expressions (parse, plan, constant folding, evaluation),
 *			  result-table DDL and writes, retention - runs as the stream's
 *			  owner, with SECURITY_RESTRICTED_OPERATION (no SET ROLE, no
 *			  temporary objects), inside a GUC nest level that is rolled back
 *			  on the way out (whatever the owner's code did to settings is
 *			  undone) and with search_path = pg_catalog, pg_temp.  These are
 *			  the steps PostgreSQL itself takes for VACUUM, REFRESH
 *			  MATERIALIZED VIEW and index builds.
 *
 *	 catalog  Fixed SQL on the extension's own tables runs as the owner of
 *			  those tables (the role that created the extension), with the
 *			  same fixed search_path, so that no operator or function a user
 *			  put in front of pg_catalog can be picked up.  Only catalog.c
 *			  and sink.c run such SQL, and never user text in it.
 *
 * Both are brackets: enter, do the work, leave.  An error in between
 * aborts the transaction, which restores the user and the settings by
 * itself.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#define SA_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* search_path = pg_catalog, pg_temp in the current GUC nest level. */
void
sa_pin_search_path(void)
{
	(void) set_config_option("search_path", SA_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

static void
enter(Oid role, SaUserContext *ctx)
{
	GetUserIdAndSecContext(&ctx->save_userid, &ctx->save_sec_context);
	SetUserIdAndSecContext(role, ctx->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	ctx->save_nestlevel = NewGUCNestLevel();
	sa_pin_search_path();
}

/* Act as the stream's owner (see the file header). */
void
sa_enter_owner(Oid owner, SaUserContext *ctx)
{
	if (!OidIsValid(owner) || !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of this stream (role %u) no longer exists", owner),
				 errhint("A superuser can give the stream a new owner with REASSIGN OWNED or drop it.")));
	enter(owner, ctx);
}

/*
 * The owner of the extension's tables.  Looked up each time: the catalog
 * cache makes it cheap, and an ALTER EXTENSION ... OWNER is seen at once.
 */
Oid
sa_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid(SA_SCHEMA, false);
	Oid			rel = get_relname_relid("streams", nsp);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table streamagg.streams does not exist"),
				 errhint("Is the extension pg_streamagg installed in this database?")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Act as the owner of the extension's tables, for fixed catalog SQL. */
void
sa_enter_catalog(SaUserContext *ctx)
{
	enter(sa_catalog_owner(), ctx);
}

/* Leave either context: settings rolled back, user restored. */
void
sa_leave(SaUserContext *ctx)
{
	AtEOXact_GUC(false, ctx->save_nestlevel);
	SetUserIdAndSecContext(ctx->save_userid, ctx->save_sec_context);
}
