/*-------------------------------------------------------------------------
 *
 * api.c
 *		The SQL API: create_stream, create_window, drop_window,
 *		drop_stream, pause, resume, reset_offsets, stream_options.
 *
 * Everything is checked before anything is stored, so a call either
 * fails with an error that says what to fix or leaves a definition the
 * workers can run.
 *
 * Privileges (README, "Security and privileges"): a role may call these
 * once a superuser granted it USAGE on schema streamagg; a stream belongs
 * to the role that created it, and only that role (or a member, or a
 * superuser) may change it.  Everything derived from the definition -
 * column types, expressions, result tables - is checked and created as
 * the stream's owner in the owner context of usercontext.c, exactly as a
 * worker will later run it; the extension's own tables are written by
 * catalog.c after the ownership check.
 *
 * Every change to a stream's windows resets the epoch of its offsets
 * rows, which makes running workers throw their batch away and reload the
 * definitions (see worker.c): a new window starts at the stream's
 * committed offsets.
 *
 *-------------------------------------------------------------------------
 */
#include "window.h"

#include <ctype.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "compat.h"
#include "lib/stringinfo.h"

PG_FUNCTION_INFO_V1(sa_create_stream);
PG_FUNCTION_INFO_V1(sa_create_window);
PG_FUNCTION_INFO_V1(sa_drop_window);
PG_FUNCTION_INFO_V1(sa_drop_stream);
PG_FUNCTION_INFO_V1(sa_pause);
PG_FUNCTION_INFO_V1(sa_resume);
PG_FUNCTION_INFO_V1(sa_reset_offsets);
PG_FUNCTION_INFO_V1(sa_stream_options);
PG_FUNCTION_INFO_V1(sa_stream_name);

bool
sa_is_owner(Oid owner)
{
	return has_privs_of_role(GetUserId(), owner);
}

static char *
arg_text(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
	{
		if (what == NULL)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	}
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * A stream's name as stored: read like a window's name, by the rules of
 * SQL identifiers (unquoted: folded to lower case; in double quotes: as
 * written), and kept in the form that reads back to itself - quoted only
 * where needed.  A stream is in no schema: a qualified name is refused.
 * So 'Clicks', 'clicks' and '"clicks"' name one stream, '"Clicks"'
 * another, and every function accepts any spelling that create_stream
 * accepted.
 */
/*
 * Split a stream or window name into its identifiers, by the rules of SQL
 * identifiers, with an error that says what is wrong.
 */
static List *
split_name(const char *name, const char *what)
{
	char	   *raw = pstrdup(name);
	List	   *parts;
	List	   *result = NIL;
	ListCell   *lc;

	if (!SplitIdentifierString(raw, '.', &parts) || parts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid %s name \"%s\"", what, name),
				 errdetail("A %s name is read as an SQL identifier: letters, digits, _ and $, folded to lower case, or any characters in double quotes.", what),
				 strchr(name, '"') ? 0 :
				 errhint("Double-quote the name to keep spaces, capitals or other characters, for example '\"%s\"'.", name)));
	foreach(lc, parts)
	{
		if (((char *) lfirst(lc))[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name \"%s\"", what, name),
					 errdetail("A name in double quotes must not be empty.")));
		result = lappend(result, makeString(lfirst(lc)));
	}
	return result;
}

char *
sa_normalize_stream_name(const char *name)
{
	List	   *names;
	char	   *key;

	if (name[0] == '\0' || strlen(name) >= SA_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("stream name must have 1 to %d characters", SA_NAME_LEN - 1)));
	names = split_name(name, "stream");
	if (list_length(names) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("stream name \"%s\" is qualified", name),
				 errdetail("A stream is in no schema; only its windows are tables."),
				 errhint("Put a dot in double quotes to keep it in the name: '\"%s\"'.", name)));
	key = (char *) quote_identifier(strVal(linitial(names)));
	if (strlen(key) >= SA_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("stream name must have 1 to %d characters", SA_NAME_LEN - 1),
				 errdetail("As stored, quoted, it is %s.", key)));
	return key;
}

/* The name argument n of a function taking a stream, as stored. */
static char *
stream_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	return sa_normalize_stream_name(arg_text(fcinfo, n, what));
}

/* streamagg._stream_name(text): the stored form of a stream name. */
Datum
sa_stream_name(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(sa_normalize_stream_name(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/*
 * The caller may use the API: a superuser, or a role granted USAGE on
 * schema streamagg (PostgreSQL checks the schema when the function is
 * looked up; this holds even for a call that got here another way).
 */
static void
check_api_access(void)
{
	Oid			nsp = get_namespace_oid(SA_SCHEMA, false);

	if (!superuser() && object_aclcheck_compat(NamespaceRelationId, nsp, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema %s", SA_SCHEMA),
				 errhint("A superuser lets a role use pg_streamagg with GRANT USAGE ON SCHEMA streamagg TO role.")));
}

/*
 * Load a stream and check the caller owns it.  The stream's row is locked
 * FOR UPDATE until the end of the transaction: a worker setting itself up
 * holds it FOR SHARE, so changes to the stream and its windows never
 * interleave with a worker's setup.
 */
static SaStream *
owned_stream(const char *name)
{
	SaStream   *st;

	check_api_access();
	if (!sa_catalog_lock_stream(name, true))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream \"%s\" does not exist", name)));
	/* the owner first: nothing of another role's definition is read */
	if (!sa_is_owner(sa_catalog_stream_owner(name)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of stream \"%s\"", name)));
	st = sa_load_stream(name);
	return st;
}

/*
 * 'earliest', 'latest', or a point in time, stored as ISO 8601 in UTC so
 * that 'now' or '2024-05-01 12:00' mean what they meant when given,
 * whatever the TimeZone of the worker that reads it later.
 */
static char *
normalize_start(const char *start_from, const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum ts = (Datum) 0;
	int			utc = 0;
	char		buf[MAXDATELEN + 1];

	if (strcmp(start_from, "earliest") == 0 || strcmp(start_from, "latest") == 0)
		return pstrdup(start_from);
	PG_TRY();
	{
		ts = DirectFunctionCall3(timestamptz_in, CStringGetDatum(start_from),
								 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\"", what, start_from),
				 errhint("Use 'earliest', 'latest' or a timestamp such as '2024-05-01 12:00+00'.")));
	}
	PG_END_TRY();
	if (TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(ts)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\"", what, start_from),
				 errhint("Use 'earliest' or 'latest' instead of an infinite time.")));
	return pstrdup(JsonEncodeDateTime(buf, ts, TIMESTAMPTZOID, &utc));
}

/* A topic name Kafka can have: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
static void
check_topic(const char *topic)
{
	size_t		len = strlen(topic);

	for (const char *p = topic; *p; p++)
		if (!isalnum((unsigned char) *p) && *p != '.' && *p != '_' && *p != '-')
			len = 0;
	if (len == 0 || len > 249 || strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid topic name \"%s\"", topic),
				 errdetail("Kafka topic names have 1 to 249 characters among letters, digits, '.', '_' and '-', and are not \".\" or \"..\".")));
}

/* brokers: a comma list of host:port (IPv6 hosts in brackets). */
static void
check_brokers(const char *brokers)
{
	char	   *copy = pstrdup(brokers);
	char	   *save = NULL;
	bool		any = false;

	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
	{
		char	   *host = item;
		char	   *colon;
		char	   *end;
		long		port;

		while (isspace((unsigned char) *host))
			host++;
		if (strstr(host, "://"))
			host = strstr(host, "://") + 3;
		colon = strrchr(host, ':');
		port = colon ? strtol(colon + 1, &end, 10) : 0;
		if (colon == NULL || colon == host || port < 1 || port > 65535 ||
			(*end != '\0' && !isspace((unsigned char) *end)) ||
			(host[0] == '[' && colon[-1] != ']'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid broker \"%s\" in brokers", item),
					 errhint("brokers is a comma list of host:port, for example 'kafka1:9092,kafka2:9092'.")));
		any = true;
	}
	if (!any)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("brokers must not be empty")));
}

/*
 * Worker slots are shared by the cluster: a non-superuser's running
 * streams may ask for at most streamagg.max_workers_per_role of them (in
 * this database), `adding` more included.
 */
static void
check_role_quota(Oid role, int adding)
{
	int64		have;

	if (superuser_arg(role))
		return;
	have = sa_catalog_role_workers(role);
	if (have + adding > sa_max_workers_per_role)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" would run %lld stream workers, more than streamagg.max_workers_per_role (%d)",
						GetUserNameFromId(role, false), (long long) (have + adding), sa_max_workers_per_role),
				 errhint("Pause or drop another stream, or ask a superuser to raise streamagg.max_workers_per_role.")));
}

/* Check a stream definition as fully as can be done without Kafka. */
static void
check_stream(SaStream *st, const char *columns, const char *event_time)
{
	st->cols = sa_parse_columns(columns, &st->ncols);
	if (st->ncols == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" needs at least one column", st->name)));
	sa_add_meta_columns(st);
	if (st->format == SA_FORMAT_TEXT && st->ncols != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("format 'text' takes exactly one column, not %d", st->ncols),
				 errhint("The whole payload goes into that column.")));
	if (event_time)
	{
		int			col = sa_column_index(st, event_time);

		if (col < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("event_time column \"%s\" is not a column of stream \"%s\"",
							event_time, st->name)));
		if (!st->cols[col].is_timestamptz)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("event_time column \"%s\" must be of type timestamptz, not %s",
							event_time, format_type_be(st->cols[col].typid))));
	}
	if (st->parallelism < 1 || st->parallelism > 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parallelism must be between 1 and 256")));
	if (st->parallelism > sa_max_workers_per_stream && !superuser_arg(st->owner))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("parallelism %d is more than streamagg.max_workers_per_stream (%d)",
						st->parallelism, sa_max_workers_per_stream),
				 errhint("Ask a superuser to raise streamagg.max_workers_per_stream, or use fewer workers.")));
	st->start_from = normalize_start(st->start_from, "start_from");
	check_topic(st->topic);
	check_brokers(st->brokers);
	if (st->format == SA_FORMAT_JSON && st->ncols > SA_JSON_MAX_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a JSON stream may declare at most %d columns, not %d",
						SA_JSON_MAX_COLUMNS, st->ncols),
				 errhint("Declare only the keys the windows use.")));
	for (int i = 0; i < st->ncols; i++)
		if (st->cols[i].has_path && st->format != SA_FORMAT_JSON)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("PATH is for JSON streams, not format '%s'",
							st->format == SA_FORMAT_CSV ? "csv" : "text"),
					 errdetail("Column \"%s\" has a PATH.", st->cols[i].name)));
	/* who may set what, before librdkafka reads (or loads) anything */
	sa_check_option_rights(st);
	sa_apply_stream_options(st, true);
	sa_kafka_check_compat(st);
	if (st->csv_options && st->format != SA_FORMAT_CSV)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options streamagg.csv_delimiter and streamagg.csv_quote are for format 'csv'")));
}

Datum
sa_create_stream(PG_FUNCTION_ARGS)
{
	SaStream   *st = palloc0(sizeof(SaStream));
	char	   *columns;
	char	   *event_time;
	char	   *format;
	char	   *on_error;

	st->name = arg_text(fcinfo, 0, "name");
	st->topic = arg_text(fcinfo, 1, "topic");
	st->brokers = arg_text(fcinfo, 2, "brokers");
	columns = arg_text(fcinfo, 3, "columns");
	format = arg_text(fcinfo, 4, "format");
	event_time = arg_text(fcinfo, 5, NULL);
	st->start_from = arg_text(fcinfo, 6, "start_from");
	st->parallelism = PG_ARGISNULL(7) ? 1 : PG_GETARG_INT32(7);
	on_error = arg_text(fcinfo, 8, "on_error");
	st->options = PG_ARGISNULL(9) ? DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")))
		: PG_GETARG_JSONB_P(9);
	st->owner = GetUserId();

	check_api_access();
	if (st->topic[0] == '\0' || st->brokers[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", st->topic[0] == '\0' ? "topic" : "brokers")));
	st->name = sa_normalize_stream_name(st->name);
	st->format = sa_parse_format(format);
	st->on_error = sa_parse_on_error(on_error);
	if (event_time && strcmp(event_time, "kafka_timestamp") == 0)
		event_time = NULL;

	SPI_connect();
	{
		SaUserContext uctx;

		sa_enter_owner(st->owner, &uctx);
		check_stream(st, columns, event_time);
		sa_leave(&uctx);
	}
	if (sa_catalog_stream_exists(st->name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("stream \"%s\" already exists", st->name)));
	check_role_quota(st->owner, st->parallelism);
	sa_catalog_insert_stream(st, columns, format, event_time, on_error);
	SPI_finish();
	sa_wake_manager_at_commit();
	/* the name, for chaining; it starts consuming when a window reads it */
	PG_RETURN_TEXT_P(cstring_to_text(st->name));
}

static int64
positive_interval(FunctionCallInfo fcinfo, int n, const char *what, bool zero_ok)
{
	int64		us;

	if (PG_ARGISNULL(n))
		return -1;
	us = sa_interval_usecs(PG_GETARG_INTERVAL_P(n), what);
	if (us < 0 || (us == 0 && !zero_ok))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s", what, zero_ok ? "zero or positive" : "positive")));
	return us;
}

/* Size, slide, gap and lateness of a new window, checked. */
static void
set_window_timing(SaWindow *w, FunctionCallInfo fcinfo)
{
	w->size_us = positive_interval(fcinfo, 2, "size", false);
	w->slide_us = positive_interval(fcinfo, 3, "slide", false);
	w->lateness_us = PG_ARGISNULL(7) ? 0 : positive_interval(fcinfo, 7, "allowed_lateness", true);
	w->gap_us = positive_interval(fcinfo, 8, "session_gap", false);
	w->retention_us = positive_interval(fcinfo, 9, "retention", false);

	if (w->size_us > 0 && w->gap_us > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a window has either a size or a session_gap, not both")));
	if (w->slide_us > 0 && w->size_us <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("slide needs a size")));
	if (w->slide_us > w->size_us)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("slide (%s) must not be larger than size",
						DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(3)))),
				 errhint("A slide larger than the size would leave gaps between windows.")));
	if (w->slide_us > 0 && (w->size_us % w->slide_us != 0 || w->size_us / w->slide_us > 1000))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("size (%s) must be a multiple of slide (%s), at most 1000 times it",
						DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(2))),
						DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(3)))),
				 errdetail("Each row of a hopping window belongs to size / slide windows%s.",
						   w->size_us % w->slide_us != 0 ? "; that number must be whole" : ", and 1000 is the most"),
				 errhint("For example size => '1 hour', slide => '1 minute' (60 windows per row).")));

	if (w->gap_us > 0)
		w->kind = SA_WIN_SESSION;
	else if (w->size_us <= 0)
		w->kind = SA_WIN_GLOBAL;
	else if (w->slide_us > 0 && w->slide_us < w->size_us)
		w->kind = SA_WIN_HOPPING;
	else
	{
		w->kind = SA_WIN_TUMBLING;
		w->slide_us = w->size_us;
	}
	if (w->retention_us > 0 && w->kind == SA_WIN_GLOBAL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention needs a time window"),
				 errhint("A window without size or session_gap has one running row per group and nothing to expire.")));
	if (w->retention_us > 0 && w->retention_us < w->lateness_us)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention must not be shorter than allowed_lateness"),
				 errhint("Rows of windows that can still receive late rows must be kept.")));

}

static const char *const kind_names[] = {"tumbling", "hopping", "session", "global"};

/* The name of a relation named after the window (suffix "_final", ...). */
static char *
companion_name(const char *relname, const char *suffix, const char *what)
{
	if (strlen(relname) + strlen(suffix) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("window name \"%s\" is too long", relname),
				 errdetail("Its %s, %s%s, must fit in %d characters.",
						   what, relname, suffix, NAMEDATALEN - 1)));
	return psprintf("%s%s", relname, suffix);
}

static char *
final_view_name(const char *relname)
{
	return companion_name(relname, "_final", "view of final windows");
}

/*
 * The view of final rows: those whose window_end plus allowed lateness
 * (plus the gap, for sessions: see sa_final_horizon) is at or behind the
 * stream's committed watermark.
 */
static void
create_final_view(SaWindow *w, RangeVar *rv, const char *qualname, const char *stream)
{
	char	   *view = final_view_name(rv->relname);
	char	   *qualview = rv->schemaname ? quote_qualified_identifier(rv->schemaname, view)
		: (char *) quote_identifier(view);
	int64		horizon = sa_final_horizon(w);

	SPI_execute(psprintf("CREATE VIEW %s AS SELECT * FROM %s "
						 "WHERE window_end + %s::interval <= streamagg.watermark(%s)",
						 qualview, qualname,
						 quote_literal_cstr(DatumGetCString(DirectFunctionCall1(interval_out,
																				PointerGetDatum(sa_usecs_interval(horizon))))),
						 quote_literal_cstr(stream)),
				false, 0);
}

/* Sessions are looked up by group and end: index (group columns, window_end). */
static char *
session_index_sql(SaWindow *w, const char *qualname)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE INDEX ON %s (", qualname);
	for (int i = 0; i < w->ngroups; i++)
		appendStringInfo(&sql, "%s, ", quote_identifier(w->groups[i].name));
	appendStringInfoString(&sql, "window_end)");
	return sql.data;
}

/* A relation of the window's schema, created just now: its Oid. */
static Oid
companion_oid(RangeVar *rv, const char *relname)
{
	RangeVar   *other = copyObject(rv);

	other->relname = (char *) relname;
	return RangeVarGetRelid(other, NoLock, false);
}

/*
 * A sliced hopping window (slices.c): the tables <name>_closed (closed
 * windows, the layout of a result table) and <name>_slices (per slide;
 * avg kept as sum and count), the view <name> over both and the view
 * <name>_final of the closed windows.  Fills w->result_rel (the view) and
 * the Oids of the two tables.
 */
static void
create_sliced(SaWindow *w, RangeVar *rv, Oid *slice_rel, Oid *closed_rel)
{
	char	   *qualname = quote_qualified_identifier(rv->schemaname, rv->relname);
	char	   *closed = companion_name(rv->relname, "_closed", "table of closed windows");
	char	   *slices = companion_name(rv->relname, "_slices", "table of slices");
	char	   *qualclosed = quote_qualified_identifier(rv->schemaname, closed);
	char	   *qualslices = quote_qualified_identifier(rv->schemaname, slices);
	char	   *final = final_view_name(rv->relname);

	SPI_execute(sa_window_create_sql(w, qualclosed, false), false, 0);
	*closed_rel = companion_oid(rv, closed);
	sa_window_slice_aggs(w);
	if (w->chain)
		SPI_execute(sa_slices_chain_columns_sql(w, qualclosed), false, 0);
	SPI_execute(sa_window_create_sql(w, qualslices, false), false, 0);
	*slice_rel = companion_oid(rv, slices);
	SPI_execute(sa_slices_view_sql(w, qualname, qualslices, qualclosed), false, 0);
	w->result_rel = RangeVarGetRelid(rv, NoLock, false);
	SPI_execute(sa_slices_closed_view_sql(w, quote_qualified_identifier(rv->schemaname, final),
										  qualclosed), false, 0);
}

/*
 * Create the result table and, for avg, its state table, in the schema
 * rv names (always qualified here).  The caller acts as the stream's
 * owner: the tables are the owner's, and CREATE on the schema is checked
 * for the owner.
 */
static void
create_tables(SaWindow *w, RangeVar *rv)
{
	char	   *qualname = quote_qualified_identifier(rv->schemaname, rv->relname);

	if (SPI_execute(sa_window_create_sql(w, qualname, false), false, 0) < 0)
		elog(ERROR, "could not create table %s", qualname);
	w->result_rel = RangeVarGetRelid(rv, NoLock, false);
	if (w->kind == SA_WIN_SESSION)
		SPI_execute(session_index_sql(w, qualname), false, 0);
	if (w->kind != SA_WIN_GLOBAL)
		create_final_view(w, rv, qualname, w->stream_name);
	if (w->navg > 0)
	{
		RangeVar   *srv = copyObject(rv);

		srv->relname = psprintf("%s_state", rv->relname);
		SPI_execute(sa_window_create_sql(w, quote_qualified_identifier(rv->schemaname, srv->relname),
										 true), false, 0);
		w->state_rel = RangeVarGetRelid(srv, NoLock, false);
	}
}

/* A companion relation named after the window must not exist yet. */
static void
check_free_name(RangeVar *rv, const char *relname, const char *what)
{
	RangeVar   *other = copyObject(rv);

	other->relname = (char *) relname;
	if (OidIsValid(RangeVarGetRelid(other, NoLock, true)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s\" already exists", relname),
				 errhint("The window's %s is named after it; choose another window name.", what)));
}

/*
 * A window's name as stored: the result table's name as PostgreSQL reads
 * it (case folded), quoted where needed, schema-qualified only if it was
 * given so.  drop_window normalizes its argument the same way, so 'Hits',
 * 'hits' and '"hits"' name one window.
 */
static char *
normalize_window_name(const char *name, RangeVar **rvp)
{
	RangeVar   *rv;

	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("window name must not be empty")));
	rv = makeRangeVarFromNameList(split_name(name, "window"));
	if (rvp)
		*rvp = rv;
	return rv->schemaname ? quote_qualified_identifier(rv->schemaname, rv->relname) :
		(char *) quote_identifier(rv->relname);
}

static Datum
interval_arg(FunctionCallInfo fcinfo, int n, char *null)
{
	*null = PG_ARGISNULL(n) ? 'n' : ' ';
	return PG_ARGISNULL(n) ? (Datum) 0 : PG_GETARG_DATUM(n);
}

/*
 * Compile the window as its stream's owner - parse, analyze and plan its
 * expressions exactly as a worker will - and check its timing.
 */
static SaWindow *
compile_window(SaStream *st, const char *name, FunctionCallInfo fcinfo,
			   const char *group_by, const char *aggregates, const char *filter)
{
	SaUserContext uctx;
	SaWindow   *w;

	sa_enter_owner(st->owner, &uctx);
	w = sa_compile_window(st, name, group_by, aggregates, filter);
	set_window_timing(w, fcinfo);
	sa_window_prepare_exec(w);
	sa_leave(&uctx);
	w->stream_name = st->name;
	w->lateness_datum = PG_ARGISNULL(7) ? DirectFunctionCall3(interval_in, CStringGetDatum("0"),
															  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1))
		: PG_GETARG_DATUM(7);
	return w;
}

/*
 * Create the window's tables as the stream's owner: sliced (the Oids of
 * its slice and closed tables are set) or one row per window instance.
 */
static void
create_window_tables(SaStream *st, SaWindow *w, RangeVar *rv, bool sliced,
					 Oid *slice_rel, Oid *closed_rel)
{
	SaUserContext uctx;

	sa_enter_owner(st->owner, &uctx);
	if (w->kind != SA_WIN_GLOBAL)
		check_free_name(rv, final_view_name(rv->relname), "view of final rows");
	if (sliced)
	{
		check_free_name(rv, companion_name(rv->relname, "_closed", "table of closed windows"),
						"table of closed windows");
		check_free_name(rv, companion_name(rv->relname, "_slices", "table of slices"),
						"table of slices");
		create_sliced(w, rv, slice_rel, closed_rel);
	}
	else
	{
		if (w->navg > 0)
			check_free_name(rv, psprintf("%s_state", rv->relname), "avg state table");
		create_tables(w, rv);
	}
	sa_leave(&uctx);
}

Datum
sa_create_window(PG_FUNCTION_ARGS)
{
	char	   *name = arg_text(fcinfo, 0, "name");
	char	   *stream = stream_arg(fcinfo, 1, "stream");
	char	   *group_by = arg_text(fcinfo, 4, NULL);
	char	   *aggregates = arg_text(fcinfo, 5, "aggregates");
	char	   *filter = arg_text(fcinfo, 6, NULL);
	RangeVar   *rv;
	SaStream   *st;
	SaWindow   *w;
	Oid			result;
	Oid			slice_rel = InvalidOid;
	Oid			closed_rel = InvalidOid;
	bool		sliced;
	Datum		values[15];
	char		nulls[15] = "              ";

	SPI_connect();
	st = owned_stream(stream);
	name = normalize_window_name(name, &rv);
	w = compile_window(st, name, fcinfo, group_by, aggregates, filter);

	/* the arguments are right; now, is the name free? */
	if (sa_catalog_window_exists(name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("window \"%s\" already exists", name)));
	/* an unqualified name goes where the caller's CREATE TABLE would put it */
	if (rv->schemaname == NULL)
		rv->schemaname = get_namespace_name(RangeVarGetCreationNamespace(rv));
	if (OidIsValid(RangeVarGetRelid(rv, NoLock, true)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s\" already exists", name),
				 errhint("The window's name is the name of its result table; choose another name.")));
	sliced = sa_window_sliceable(w, st->parallelism);
	create_window_tables(st, w, rv, sliced, &slice_rel, &closed_rel);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(stream);
	values[2] = ObjectIdGetDatum(w->result_rel);
	values[3] = ObjectIdGetDatum(w->state_rel);
	nulls[3] = OidIsValid(w->state_rel) ? ' ' : 'n';
	values[4] = CStringGetTextDatum(kind_names[w->kind]);
	values[5] = interval_arg(fcinfo, 2, &nulls[5]);
	values[6] = interval_arg(fcinfo, 3, &nulls[6]);
	values[7] = interval_arg(fcinfo, 8, &nulls[7]);
	values[8] = group_by ? CStringGetTextDatum(group_by) : (Datum) 0;
	nulls[8] = group_by ? ' ' : 'n';
	values[9] = CStringGetTextDatum(aggregates);
	values[10] = filter ? CStringGetTextDatum(filter) : (Datum) 0;
	nulls[10] = filter ? ' ' : 'n';
	values[11] = w->lateness_datum;
	values[12] = interval_arg(fcinfo, 9, &nulls[12]);
	values[13] = ObjectIdGetDatum(slice_rel);
	nulls[13] = sliced ? ' ' : 'n';
	values[14] = ObjectIdGetDatum(closed_rel);
	nulls[14] = sliced ? ' ' : 'n';
	sa_catalog_insert_window(values, nulls);
	sa_catalog_reset_epoch(stream);
	result = w->result_rel;		/* w lives in SPI memory */
	SPI_finish();
	sa_wake_manager_at_commit();
	PG_RETURN_OID(result);
}

/* Drop a relation of a window, as the stream's owner, if it still exists. */
static void
drop_relation(Oid relid, const char *kind)
{
	char	   *rel = get_rel_name(relid);

	if (rel == NULL)
		return;
	SPI_execute(psprintf("DROP %s %s", kind,
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel)),
				false, 0);
}

/*
 * Drop one window: its definition, result table (or view), final view,
 * and its state, slice and closed tables.
 */
static void
drop_window(const char *name)
{
	char	   *stream;
	Oid			result;
	Oid			rels[3];
	SaStream   *st;
	SaUserContext uctx;

	if (!sa_catalog_window_rels(name, &stream, &result, rels))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("window \"%s\" does not exist", name)));
	st = owned_stream(stream);
	sa_catalog_delete_window(name);

	sa_enter_owner(st->owner, &uctx);
	if (get_rel_name(result) != NULL)
	{
		Oid			view = get_relname_relid(psprintf("%s_final", get_rel_name(result)),
											 get_rel_namespace(result));

		if (OidIsValid(view))
			drop_relation(view, "VIEW");
		drop_relation(result, get_rel_relkind(result) == RELKIND_VIEW ? "VIEW" : "TABLE");
	}
	for (int i = 0; i < 3; i++)
		if (OidIsValid(rels[i]))
			drop_relation(rels[i], "TABLE");
	sa_leave(&uctx);
	sa_catalog_reset_epoch(stream);
}

Datum
sa_drop_window(PG_FUNCTION_ARGS)
{
	SPI_connect();
	check_api_access();
	drop_window(normalize_window_name(arg_text(fcinfo, 0, "name"), NULL));
	SPI_finish();
	sa_wake_manager_at_commit();
	PG_RETURN_VOID();
}

/* Drop a stream and, with cascade, its windows (the caller owns it). */
void
sa_drop_stream_internal(const char *name, bool cascade)
{
	List	   *windows;
	ListCell   *lc;

	(void) owned_stream(name);
	windows = sa_catalog_window_names(name);
	if (windows != NIL && !cascade)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop stream \"%s\" because %d window(s) read it", name, list_length(windows)),
				 errhint("Drop the windows first, or call streamagg.drop_stream('%s', cascade => true).", name)));
	foreach(lc, windows)
		drop_window(lfirst(lc));
	sa_catalog_delete_stream(name);
}

Datum
sa_drop_stream(PG_FUNCTION_ARGS)
{
	char	   *name = stream_arg(fcinfo, 0, "name");
	bool		cascade = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);

	SPI_connect();
	sa_drop_stream_internal(name, cascade);
	SPI_finish();
	sa_wake_manager_at_commit();
	PG_RETURN_VOID();
}

static void
set_state(const char *name, const char *state)
{
	SaStream   *st;

	SPI_connect();
	st = owned_stream(name);
	if (strcmp(state, "running") == 0 && !sa_catalog_stream_running(name))
		check_role_quota(st->owner, st->parallelism);
	sa_catalog_set_state(name, state);
	SPI_finish();
	sa_wake_manager_at_commit();
}

Datum
sa_pause(PG_FUNCTION_ARGS)
{
	set_state(stream_arg(fcinfo, 0, "stream"), "paused");
	PG_RETURN_VOID();
}

/*
 * resume(stream, skip => false).  A stream that on_error = 'stop' stopped
 * stops again at the same message unless skip => true, which makes that
 * one message a dead letter.
 */
Datum
sa_resume(PG_FUNCTION_ARGS)
{
	char	   *name = stream_arg(fcinfo, 0, "stream");

	if (!PG_ARGISNULL(1) && PG_GETARG_BOOL(1))
	{
		SPI_connect();
		(void) owned_stream(name);
		if (!sa_catalog_skip_failed(name))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("stream \"%s\" did not stop at a message", name),
					 errhint("skip => true is for streams that on_error = 'stop' stopped.")));
		SPI_finish();
	}
	set_state(name, "running");
	PG_RETURN_VOID();
}

/* Delete every row of a window's table, if it still exists. */
static void
empty_table(Oid relid)
{
	if (!OidIsValid(relid) || get_rel_name(relid) == NULL ||
		get_rel_relkind(relid) == RELKIND_VIEW)
		return;
	SPI_execute(psprintf("DELETE FROM %s",
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													get_rel_name(relid))), false, 0);
}

/* Empty a window's tables (result, state, slices, closed), as the stream's owner. */
static void
empty_window_tables(SaStream *st, const char *window)
{
	char	   *stream;
	Oid			result;
	Oid			rels[3];
	SaUserContext uctx;

	if (!sa_catalog_window_rels(window, &stream, &result, rels))
		return;
	sa_enter_owner(st->owner, &uctx);
	empty_table(result);
	for (int i = 0; i < 3; i++)
		empty_table(rels[i]);
	sa_leave(&uctx);
}

/*
 * Start a stream again from 'earliest', 'latest' or a time: a rebuild.
 * In this one transaction the offsets rows go (with their counters and
 * the watermark), and so do the rows of the stream's windows and its dead
 * letters, so that afterwards every table again equals the GROUP BY over
 * the messages from the new position.  With replay => true the window
 * rows and dead letters stay and the messages are aggregated into them
 * once more (the caller asked for it).  start_from stays as given; the
 * new position is kept in restart_from.  Running workers find their
 * offsets rows gone at their next commit and reload.
 */
Datum
sa_reset_offsets(PG_FUNCTION_ARGS)
{
	char	   *name = stream_arg(fcinfo, 0, "stream");
	char	   *to = arg_text(fcinfo, 1, "\"to\"");
	bool		replay = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
	SaStream   *st;
	ListCell   *lc;

	to = normalize_start(to, "\"to\"");
	SPI_connect();
	st = owned_stream(name);
	/* offsets first: a worker committing now finishes before we go on */
	sa_catalog_delete_offsets(name);
	sa_catalog_set_restart_from(name, to);
	if (!replay)
	{
		foreach(lc, sa_catalog_window_names(name))
			empty_window_tables(st, lfirst(lc));
		sa_catalog_delete_dead_letters(name);
		sa_catalog_delete_gaps(name);
	}
	SPI_finish();
	sa_wake_manager_at_commit();
	PG_RETURN_VOID();
}

/* The stream's options (they may hold secrets): for its owner only. */
Datum
sa_stream_options(PG_FUNCTION_ARGS)
{
	SaStream   *st;
	Jsonb	   *copy;

	SPI_connect();
	st = owned_stream(sa_normalize_stream_name(text_to_cstring(PG_GETARG_TEXT_PP(0))));
	copy = (Jsonb *) SPI_palloc(VARSIZE(st->options));
	memcpy(copy, st->options, VARSIZE(st->options));
	SPI_finish();
	PG_RETURN_JSONB_P(copy);
}
