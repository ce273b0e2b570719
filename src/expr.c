/*-------------------------------------------------------------------------
 *
 * expr.c
 *		Expressions over stream columns: group_by items, aggregate
 *		arguments and filters.
 *
 * The user's text goes through PostgreSQL's own parser and analyzer, so
 * every operator, function and cast works as in a query.  There is no
 * table to refer to: a column reference is resolved by a parser hook into
 * a parameter ($1 .. $n, one per stream column, metadata last), and the
 * worker evaluates the compiled expression with the decoded message as
 * the parameter values.  No SQL runs per message.
 *
 * Callers parse, plan and evaluate in the owner context of usercontext.c
 * (search_path = pg_catalog, pg_temp): functions, operators and types
 * outside pg_catalog must be schema-qualified, and they always resolve
 * the same way, at create time and in every worker.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "utils/lsyscache.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "compat.h"

/*
 * The text the last parse_one_select parsed ("SELECT <user text>"): error
 * positions point into it, and errors show it as their internal query, so
 * that the caret falls inside what the user wrote rather than somewhere in
 * the create_window call.
 */
static char *parse_source = NULL;

/* Re-throw the current error with its position moved into parse_source. */
static void
rethrow_in_source(MemoryContext cxt, const char *detail, const char *hint)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	if (edata->cursorpos > 0 && parse_source)
	{
		edata->internalpos = edata->cursorpos;
		edata->internalquery = pstrdup(parse_source);
		edata->cursorpos = 0;
	}
	if (detail && edata->detail == NULL)
		edata->detail = pstrdup(detail);
	if (hint)
		edata->hint = pstrdup(hint);
	ReThrowError(edata);
}

static Node *
sa_columnref_hook(ParseState *pstate, ColumnRef *cref)
{
	SaStream   *st = (SaStream *) pstate->p_ref_hook_state;
	Node	   *field;
	int			idx;
	Param	   *param;

	if (list_length(cref->fields) != 1)
		return NULL;
	field = linitial(cref->fields);
	if (!IsA(field, String))
		return NULL;
	idx = sa_column_index(st, strVal(field));
	if (idx < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" does not exist in stream \"%s\"",
						strVal(field), st->name),
				 errhint("Stream columns are the declared ones plus kafka_key, kafka_partition, kafka_offset and kafka_timestamp."),
				 parser_errposition(pstate, cref->location)));

	param = makeNode(Param);
	param->paramkind = PARAM_EXTERN;
	param->paramid = idx + 1;
	param->paramtype = st->cols[idx].typid;
	param->paramtypmod = st->cols[idx].typmod;
	param->paramcollid = st->cols[idx].collation;
	param->location = cref->location;
	return (Node *) param;
}

static bool
has_sublink_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
		return true;
	return raw_expression_tree_walker(node, has_sublink_walker, context);
}

/*
 * Analyze one raw expression against the stream's columns.  Subqueries
 * and set-returning functions are refused; aggregates are left for the
 * caller to judge (allowed only at the top of an aggregate item).
 */
Node *
sa_transform_expr(SaStream *st, Node *raw, const char *what)
{
	ParseState *pstate = make_parsestate(NULL);
	MemoryContext cxt = CurrentMemoryContext;
	Node	   *volatile expr = NULL;

	/* before analysis, which would look up the subquery's tables */
	if (has_sublink_walker(raw, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subqueries are not allowed in %s", what)));
	pstate->p_pre_columnref_hook = sa_columnref_hook;
	pstate->p_ref_hook_state = st;
	pstate->p_expr_kind = EXPR_KIND_SELECT_TARGET;

	pstate->p_sourcetext = parse_source;
	PG_TRY();
	{
		expr = transformExpr(pstate, raw, EXPR_KIND_SELECT_TARGET);
		assign_expr_collations(pstate, expr);
	}
	PG_CATCH();
	{
		int			code = geterrcode();

		/* say why a function the caller sees in her search_path is not found */
		if (code == ERRCODE_UNDEFINED_FUNCTION || code == ERRCODE_UNDEFINED_OBJECT)
			rethrow_in_source(cxt,
							  "Stream expressions are resolved with search_path = pg_catalog, pg_temp, at create time and in the workers.",
							  "Qualify functions, types and operators of other schemas, for example myschema.f(x) or x OPERATOR(myschema.=) y.");
		rethrow_in_source(cxt, NULL, NULL);
	}
	PG_END_TRY();
	if (pstate->p_hasSubLinks)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subqueries are not allowed in %s", what)));
	if (pstate->p_hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-returning functions are not allowed in %s", what)));
	if (pstate->p_hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("window functions are not allowed in %s", what)));
	free_parsestate(pstate);
	return expr;
}

static SelectStmt *
parse_one_select(const char *sql, const char *what, const char *text)
{
	List	   *volatile stmts = NIL;
	RawStmt    *raw;
	SelectStmt *sel;
	MemoryContext cxt = CurrentMemoryContext;

	if (parse_source)
		pfree(parse_source);
	parse_source = MemoryContextStrdup(TopMemoryContext, sql);
	PG_TRY();
	{
		stmts = sa_raw_parser(sql);
	}
	PG_CATCH();
	{
		rethrow_in_source(cxt, NULL, NULL);
	}
	PG_END_TRY();
	if (list_length(stmts) != 1)
		goto bad;
	raw = linitial_node(RawStmt, stmts);
	if (!IsA(raw->stmt, SelectStmt))
		goto bad;
	sel = (SelectStmt *) raw->stmt;
	if (sel->fromClause || sel->groupClause || sel->havingClause ||
		sel->sortClause || sel->limitCount || sel->limitOffset ||
		sel->distinctClause || sel->windowClause || sel->op != SETOP_NONE ||
		sel->withClause || sel->lockingClause || sel->intoClause)
		goto bad;
	return sel;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("invalid %s: \"%s\"", what, text)));
	return NULL;				/* keep compiler quiet */
}

/* "a, b AS x" -> list of ResTarget (name may be NULL). */
List *
sa_parse_target_list(const char *text, const char *what)
{
	SelectStmt *sel;

	sel = parse_one_select(psprintf("SELECT %s", text), what, text);
	if (sel->whereClause || sel->targetList == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid %s: \"%s\"", what, text)));
	return sel->targetList;
}

/* A boolean condition -> raw expression. */
Node *
sa_parse_filter(const char *text)
{
	SelectStmt *sel;

	sel = parse_one_select(psprintf("SELECT WHERE %s", text), "filter", text);
	if (sel->targetList != NIL || sel->whereClause == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid filter: \"%s\"", text)));
	return sel->whereClause;
}

/*
 * Built-in functions that run SQL of their own (the XML exports of query
 * results, ts_stat and ts_rewrite with a query): an error after they ran
 * part of it must be rolled back like a user function's.
 */
static const char *const sql_running_builtins[] = {
	"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
	"cursor_to_xml", "cursor_to_xmlschema",
	"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
	"schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
	"database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
	"ts_stat", "ts_rewrite",
	NULL
};

static bool
not_built_in(Oid func, void *context)
{
	char	   *name;

	if (func >= FirstGenbkiObjectId)
		return true;
	name = get_func_name(func);
	for (int i = 0; name && sql_running_builtins[i]; i++)
		if (strcmp(name, sql_running_builtins[i]) == 0)
			return true;
	return false;
}

/* Types outside the built-in ones, and domains (their checks run code). */
static bool
not_built_in_type(Oid type)
{
	return OidIsValid(type) &&
		(type >= FirstGenbkiObjectId || getBaseType(type) != type);
}

static bool
calls_user_code_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, not_built_in, context))
		return true;
	if (IsA(node, CoerceToDomain))
		return true;
	/* values of such types come from, or go through, their own code */
	if ((IsA(node, Param) || IsA(node, Const) || IsA(node, FuncExpr) ||
		 IsA(node, OpExpr) || IsA(node, CoerceViaIO) || IsA(node, ArrayCoerceExpr) ||
		 IsA(node, RelabelType) || IsA(node, RowExpr) || IsA(node, CaseExpr) ||
		 IsA(node, CoalesceExpr) || IsA(node, MinMaxExpr) || IsA(node, FieldSelect) ||
		 IsA(node, SubscriptingRef) || IsA(node, ConvertRowtypeExpr)) &&
		not_built_in_type(exprType(node)))
		return true;
	return expression_tree_walker(node, calls_user_code_walker, context);
}

/*
 * Does evaluating the expression run code that is not built in - the
 * owner's functions, an extension's, a domain's checks, input and output
 * functions of types not built in - or built-in functions that run SQL?
 * Such code may take locks, open snapshots, run SQL or switch users
 * (SECURITY DEFINER) before it fails, so an error it raises can only be
 * caught safely by rolling back a subtransaction.
 */
bool
sa_expr_calls_user_code(Node *expr)
{
	return calls_user_code_walker(expr, NULL);
}

static bool
collect_functions(Oid func, void *context)
{
	List	  **funcs = (List **) context;

	*funcs = list_append_unique_oid(*funcs, func);
	return false;
}

static bool
collect_functions_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	(void) check_functions_in_node(node, collect_functions, context);
	return expression_tree_walker(node, collect_functions_walker, context);
}

/* Add the functions the expression calls to *funcs (a list of Oid). */
void
sa_expr_functions(Node *expr, List **funcs)
{
	(void) collect_functions_walker(expr, funcs);
}
