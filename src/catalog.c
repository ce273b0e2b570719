/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		Stream definitions: the column list, the options, and loading a
 *		stream from streamagg.streams.
 *
 * A column list is a comma list of `name type [PATH '$.a.b']`.  The type
 * is any PostgreSQL type (values go through its input function); PATH is
 * for JSON streams and names a nested value.  After the declared columns
 * every stream has the Kafka metadata columns kafka_key, kafka_partition,
 * kafka_offset and kafka_timestamp.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "parser/parse_type.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"

static const char *const sa_meta_names[SA_NUM_META] = {
	"kafka_key", "kafka_partition", "kafka_offset", "kafka_timestamp"
};
static const Oid sa_meta_types[SA_NUM_META] = {
	TEXTOID, INT4OID, INT8OID, TIMESTAMPTZOID
};

/* Split at commas that are outside parentheses and quotes. */
static List *
split_top_level(const char *spec)
{
	List	   *items = NIL;
	StringInfoData cur;
	int			depth = 0;
	char		quote = 0;

	initStringInfo(&cur);
	for (const char *p = spec;; p++)
	{
		if (*p == '\0' || (*p == ',' && depth == 0 && quote == 0))
		{
			items = lappend(items, pstrdup(cur.data));
			resetStringInfo(&cur);
			if (*p == '\0')
				break;
			continue;
		}
		if (quote)
		{
			if (*p == quote)
				quote = 0;
		}
		else if (*p == '\'' || *p == '"')
			quote = *p;
		else if (*p == '(' || *p == '[')
			depth++;
		else if (*p == ')' || *p == ']')
			depth--;
		appendStringInfoChar(&cur, *p);
	}
	return items;
}

/* Read one identifier (bare or double-quoted) at *p; advance *p past it. */
static char *
read_identifier(const char **p)
{
	const char *s = *p;
	StringInfoData buf;

	initStringInfo(&buf);
	while (isspace((unsigned char) *s))
		s++;
	if (*s == '"')
	{
		for (s++; *s; s++)
		{
			if (*s == '"')
			{
				if (s[1] == '"')
				{
					appendStringInfoChar(&buf, '"');
					s++;
					continue;
				}
				s++;
				break;
			}
			appendStringInfoChar(&buf, *s);
		}
		*p = s;
		return buf.data;
	}
	while (*s && (isalnum((unsigned char) *s) || *s == '_' || IS_HIGHBIT_SET(*s)))
		appendStringInfoChar(&buf, *s++);
	*p = s;
	return downcase_identifier(buf.data, buf.len, false, false);
}

/* '$.a.b' or '$."odd key".c' -> list of keys. */
static char **
parse_json_path(const char *colname, const char *path, int *len)
{
	const char *p = path;
	List	   *keys = NIL;
	char	  **out;
	int			i = 0;
	ListCell   *lc;

	if (*p++ != '$')
		goto bad;
	while (*p)
	{
		StringInfoData key;

		if (*p++ != '.')
			goto bad;
		initStringInfo(&key);
		if (*p == '"')
		{
			for (p++; *p && *p != '"'; p++)
				appendStringInfoChar(&key, *p);
			if (*p++ != '"')
				goto bad;
		}
		else
			while (*p && *p != '.' && *p != '[')
				appendStringInfoChar(&key, *p++);
		if (key.len == 0)
			goto bad;
		keys = lappend(keys, key.data);
	}
	if (keys == NIL)
		goto bad;
	out = palloc(sizeof(char *) * list_length(keys));
	foreach(lc, keys)
		out[i++] = lfirst(lc);
	*len = i;
	return out;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid PATH '%s' for column \"%s\"", path, colname),
			 errhint("A path is $ followed by .key steps, for example '$.request.ip'; quote odd keys as $.\"a key\".")));
	return NULL;				/* keep compiler quiet */
}

/* Find a trailing PATH '...' clause (any case); cut it off the item. */
static char *
take_path_clause(char *item)
{
	char	   *q = strrchr(item, '\'');
	char	   *open;
	char	   *kw;

	if (q == NULL)
		return NULL;
	*q = '\0';
	open = strrchr(item, '\'');
	if (open == NULL)
	{
		*q = '\'';
		return NULL;
	}
	kw = open - 1;
	while (kw > item && isspace((unsigned char) *kw))
		kw--;
	if (kw - item >= 3 && pg_strncasecmp(kw - 3, "path", 4) == 0 &&
		(kw - 3 == item || isspace((unsigned char) kw[-4])))
	{
		char	   *path = pstrdup(open + 1);

		kw[-3] = '\0';
		return path;
	}
	*q = '\'';
	return NULL;
}

static void
init_column(SaColumn *col, char *name, Oid typid, int32 typmod)
{
	Oid			infunc;

	col->name = name;
	col->typid = typid;
	col->typmod = typmod;
	col->collation = get_typcollation(typid);
	getTypeInputInfo(typid, &infunc, &col->typioparam);
	fmgr_info(infunc, &col->input);
	col->is_timestamptz = (getBaseType(typid) == TIMESTAMPTZOID);
	col->is_json = (getBaseType(typid) == JSONOID || getBaseType(typid) == JSONBOID);
	col->pathlen = 1;
	col->path = palloc(sizeof(char *));
	col->path[0] = name;
}

/*
 * Parse a column list into columns (without the metadata ones).  Errors
 * name the offending item.
 */
SaColumn *
sa_parse_columns(const char *spec, int *ncols)
{
	List	   *items = split_top_level(spec ? spec : "");
	SaColumn   *cols = palloc0(sizeof(SaColumn) * (list_length(items) + SA_NUM_META));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, items)
	{
		char	   *item = lfirst(lc);
		char	   *path = take_path_clause(item);
		const char *p = item;
		char	   *name = read_identifier(&p);
		Oid			typid;
		int32		typmod;

		if (name[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("invalid column list: \"%s\"", spec),
					 errhint("Write columns as a comma list of name and type, for example 'ip text, status int, ts timestamptz'.")));
		while (isspace((unsigned char) *p))
			p++;
		if (*p == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("column \"%s\" has no type", name),
					 errhint("Write columns as a comma list of name and type, for example 'ip text, status int'.")));
		for (int i = 0; i < n; i++)
			if (strcmp(cols[i].name, name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("column \"%s\" is declared twice", name)));
		for (int i = 0; i < SA_NUM_META; i++)
			if (strcmp(sa_meta_names[i], name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("column name \"%s\" is reserved for Kafka metadata", name)));
		parseTypeString(p, &typid, &typmod, false);
		init_column(&cols[n], name, typid, typmod);
		if (path)
			cols[n].path = parse_json_path(name, path, &cols[n].pathlen);
		cols[n].pathkeylen = palloc(sizeof(int) * cols[n].pathlen);
		for (int k = 0; k < cols[n].pathlen; k++)
			cols[n].pathkeylen[k] = strlen(cols[n].path[k]);
		n++;
	}
	*ncols = n;
	return cols;
}

/* Append the Kafka metadata columns after the declared ones. */
void
sa_add_meta_columns(SaStream *st)
{
	for (int i = 0; i < SA_NUM_META; i++)
		init_column(&st->cols[st->ncols + i], pstrdup(sa_meta_names[i]),
					sa_meta_types[i], -1);
}

int
sa_column_index(SaStream *st, const char *name)
{
	for (int i = 0; i < st->ncols + SA_NUM_META; i++)
		if (strcmp(st->cols[i].name, name) == 0)
			return i;
	return -1;
}

SaFormat
sa_parse_format(const char *fmt)
{
	if (fmt && strcmp(fmt, "json") == 0)
		return SA_FORMAT_JSON;
	if (fmt && strcmp(fmt, "csv") == 0)
		return SA_FORMAT_CSV;
	if (fmt && strcmp(fmt, "text") == 0)
		return SA_FORMAT_TEXT;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown format \"%s\"", fmt ? fmt : "(null)"),
			 errhint("Use 'json', 'csv' or 'text'.")));
	return SA_FORMAT_JSON;		/* keep compiler quiet */
}

SaOnError
sa_parse_on_error(const char *s)
{
	if (s && strcmp(s, "dead_letter") == 0)
		return SA_ON_ERROR_DEAD_LETTER;
	if (s && strcmp(s, "skip") == 0)
		return SA_ON_ERROR_SKIP;
	if (s && strcmp(s, "stop") == 0)
		return SA_ON_ERROR_STOP;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown on_error policy \"%s\"", s ? s : "(null)"),
			 errhint("Use 'dead_letter', 'skip' or 'stop'.")));
	return SA_ON_ERROR_DEAD_LETTER; /* keep compiler quiet */
}

/* A time length in microseconds; months are refused (they have no fixed length). */
int64
sa_interval_usecs(Interval *iv, const char *what)
{
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be given in months or years", what),
				 errhint("Use days, hours, minutes or seconds, for example '30 days'.")));
	return iv->time + (int64) iv->day * USECS_PER_DAY;
}

static int
option_int(const char *key, const char *val, int min, int max)
{
	char	   *end;
	long		v = strtol(val, &end, 10);

	if (*end != '\0' || v < min || v > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", val, key),
				 errdetail("The value must be a whole number from %d to %d.", min, max)));
	return (int) v;
}

static char
option_char(const char *key, const char *val)
{
	if (strlen(val) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be a single character", key)));
	return val[0];
}

/*
 * A stream's options as (key, text value) pairs (DefElem with a String):
 * strings as they are, numbers and booleans as their JSON text.
 */
List *
sa_option_list(Jsonb *options)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	List	   *result = NIL;

	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object")));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *val;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (v.type == jbvString)
			val = pnstrdup(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric)
			val = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		else if (v.type == jbvBool)
			val = pstrdup(v.val.boolean ? "true" : "false");
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" must be a string, number or boolean", key)));
		result = lappend(result, makeDefElem(key, (Node *) makeString(val), -1));
	}
	return result;
}

/*
 * Apply the stream's own options (keys "streamagg.*") and, when asked,
 * check every other key with librdkafka.  Stream option keys:
 *	 streamagg.csv_delimiter, streamagg.csv_quote,
 *	 streamagg.batch_size, streamagg.batch_time (ms), streamagg.idle_timeout (ms)
 */
void
sa_apply_stream_options(SaStream *st, bool validate_kafka)
{
	ListCell   *lc;

	st->csv_delimiter = ',';
	st->csv_quote = '"';
	st->batch_size = 0;
	st->batch_time_ms = 0;
	st->idle_timeout_ms = -1;

	foreach(lc, sa_option_list(st->options))
	{
		DefElem    *opt = lfirst(lc);
		char	   *key = opt->defname;
		char	   *val = strVal(opt->arg);

		if (strcmp(key, "streamagg.csv_delimiter") == 0)
			st->csv_delimiter = option_char(key, val);
		else if (strcmp(key, "streamagg.csv_quote") == 0)
			st->csv_quote = option_char(key, val);
		else if (strcmp(key, "streamagg.batch_size") == 0)
			st->batch_size = option_int(key, val, 1, 10000000);
		else if (strcmp(key, "streamagg.batch_time") == 0)
			st->batch_time_ms = option_int(key, val, 1, 600000);
		else if (strcmp(key, "streamagg.idle_timeout") == 0)
			st->idle_timeout_ms = option_int(key, val, 0, INT_MAX);
		else if (strcmp(key, "streamagg.kafka_group") == 0)
			;					/* used by kafka.c */
		else if (strncmp(key, "streamagg.", 10) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown stream option \"%s\"", key),
					 errhint("Stream options are streamagg.csv_delimiter, streamagg.csv_quote, streamagg.batch_size, streamagg.batch_time, streamagg.idle_timeout and streamagg.kafka_group; other keys go to librdkafka.")));
	}

	if (validate_kafka)
	{
		char		errstr[512];
		struct rd_kafka_conf_s *conf = sa_kafka_conf(st, errstr, sizeof(errstr));

		if (conf == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid Kafka option: %s", errstr),
					 errhint("options holds librdkafka properties; see librdkafka's CONFIGURATION.md.")));
		sa_kafka_conf_destroy(conf);
	}
}

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

/*
 * Load a stream definition (caller is connected to SPI and in a
 * transaction).  The result is allocated in the caller's memory context.
 */
SaStream *
sa_load_stream(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(name)};
	MemoryContext cxt = CurrentMemoryContext;	/* SPI calls leave us elsewhere */
	SaStream   *st;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *columns;
	char	   *event_time;

	if (SPI_execute_with_args("SELECT topic, brokers, columns, format, event_time, start_from, "
							  "parallelism, on_error, options, owner::oid "
							  "FROM streamagg.streams WHERE name = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream \"%s\"", name);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream \"%s\" does not exist", name)));

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(SaStream));
	st->name = pstrdup(name);
	st->topic = spi_text(tup, desc, 1);
	st->brokers = spi_text(tup, desc, 2);
	columns = spi_text(tup, desc, 3);
	st->format = sa_parse_format(spi_text(tup, desc, 4));
	event_time = spi_text(tup, desc, 5);
	st->start_from = spi_text(tup, desc, 6);
	st->parallelism = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	st->on_error = sa_parse_on_error(spi_text(tup, desc, 8));
	st->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	st->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 10, &isnull));
	st->cols = sa_parse_columns(columns, &st->ncols);
	sa_add_meta_columns(st);
	st->event_col = event_time ? sa_column_index(st, event_time) : -1;
	sa_apply_stream_options(st, false);
	return st;					/* in the caller's context, which is current */
}
