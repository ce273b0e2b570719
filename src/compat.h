/*-------------------------------------------------------------------------
 *
 * compat.h
 *		What differs between the PostgreSQL versions we build on (13-17).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SA_COMPAT_H
#define SA_COMPAT_H

#include "funcapi.h"
#include "parser/parser.h"

/* raw_parser() takes a parse mode since 14 */
#if PG_VERSION_NUM >= 140000
#define sa_raw_parser(str) raw_parser((str), RAW_PARSE_DEFAULT)
#else
#define sa_raw_parser(str) raw_parser(str)
#endif

/*
 * Set up a materialized set-returning function: InitMaterializedSRF from
 * 15.x on (SetSingleFuncCall in 15.0 and 15.1), by hand before.
 */
#if PG_VERSION_NUM >= 150002
#define sa_materialize_srf(fcinfo) InitMaterializedSRF((fcinfo), 0)
#elif PG_VERSION_NUM >= 150000
#define sa_materialize_srf(fcinfo) SetSingleFuncCall((fcinfo), 0)
#else
#include "miscadmin.h"
#include "utils/tuplestore.h"
static inline void
sa_materialize_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	MemoryContext old;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(old);
}
#endif

/*
 * NULL group values form a group of their own: a unique key with NULLS
 * NOT DISTINCT (15+).  Before 15 the key is a plain UNIQUE constraint and
 * rows of a NULL group are not merged: group by coalesce(x, ...) there.
 */
#if PG_VERSION_NUM >= 150000
#define SA_UNIQUE_NULLS_EQUAL "UNIQUE NULLS NOT DISTINCT"
#else
#define SA_UNIQUE_NULLS_EQUAL "UNIQUE"
#endif

/* ACL and ownership checks by object class since 16 */
#include "catalog/pg_database.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "utils/acl.h"
#if PG_VERSION_NUM >= 160000
#define object_aclcheck_compat(classid, objid, roleid, mode) \
	object_aclcheck((classid), (objid), (roleid), (mode))
#define sa_proc_aclcheck(funcid, roleid, mode) \
	object_aclcheck(ProcedureRelationId, (funcid), (roleid), (mode))
#define sa_database_ownercheck(dboid, roleid) \
	object_ownercheck(DatabaseRelationId, (dboid), (roleid))
#else
#define object_aclcheck_compat(classid, objid, roleid, mode) \
	pg_namespace_aclcheck((objid), (roleid), (mode))
#define sa_proc_aclcheck(funcid, roleid, mode) \
	pg_proc_aclcheck((funcid), (roleid), (mode))
#define sa_database_ownercheck(dboid, roleid) \
	pg_database_ownercheck((dboid), (roleid))
#endif

#endif							/* SA_COMPAT_H */
