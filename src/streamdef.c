/*-------------------------------------------------------------------------
 *
 * streamdef.c
 *		Stream definitions: the column list, the format, on_error and the
 *		options (loading them from streamagg.streams is catalog.c's).
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
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "parser/parse_type.h"
#include "parser/scansup.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
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

/* Find a trailing <keyword> '...' clause (any case); cut it off the item. */
static char *
take_clause(char *item, const char *keyword)
{
	char	   *q = strrchr(item, '\'');
	char	   *open;
	char	   *kw;
	int			klen = strlen(keyword);

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
	if (kw - item >= klen - 1 && pg_strncasecmp(kw - (klen - 1), keyword, klen) == 0 &&
		(kw - (klen - 1) == item || isspace((unsigned char) kw[-klen])))
	{
		char	   *value = pstrdup(open + 1);

		kw[-(klen - 1)] = '\0';
		return value;
	}
	*q = '\'';
	return NULL;
}

/* UNIT 's' | 'ms' | 'us' of an epoch number: microseconds per unit. */
static int64
epoch_unit(const char *colname, const char *unit)
{
	if (unit == NULL || strcmp(unit, "ms") == 0)
		return 1000;
	if (strcmp(unit, "s") == 0)
		return USECS_PER_SEC;
	if (strcmp(unit, "us") == 0)
		return 1;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid UNIT '%s' for column \"%s\"", unit, colname),
			 errhint("Epoch numbers are in 's', 'ms' (the default) or 'us'.")));
	return 0;					/* keep compiler quiet */
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
	col->is_timestamp = (getBaseType(typid) == TIMESTAMPOID);
	col->epoch_unit_us = 1000;
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
		char	   *unit = take_clause(item, "unit");
		char	   *path = take_clause(item, "path");
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
		/* types outside pg_catalog must be schema-qualified (see usercontext.c) */
		{
			int			nest = NewGUCNestLevel();

			sa_pin_search_path();
			parseTypeString(p, &typid, &typmod, false);
			AtEOXact_GUC(true, nest);
		}
		init_column(&cols[n], name, typid, typmod);
		if (path)
		{
			cols[n].path = parse_json_path(name, path, &cols[n].pathlen);
			cols[n].has_path = true;
		}
		if (unit && !cols[n].is_timestamptz && !cols[n].is_timestamp)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("UNIT is for timestamptz and timestamp columns, not column \"%s\"", name)));
		cols[n].epoch_unit_us = epoch_unit(name, unit);
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

#define SA_MAX_INTERVAL_US ((int64) 100000 * USECS_PER_DAY)

/* A time length in microseconds; months are refused (they have no fixed length). */
int64
sa_interval_usecs(Interval *iv, const char *what)
{
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be given in months or years", what),
				 errhint("Use days, hours, minutes or seconds, for example '30 days'.")));
	{
		int64		days;
		int64		us;

		/* windows need room around them: keep well inside the timestamp range */
		if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days) ||
			pg_add_s64_overflow(days, iv->time, &us) ||
			us > SA_MAX_INTERVAL_US || us < -SA_MAX_INTERVAL_US)
			ereport(ERROR,
					(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
					 errmsg("%s is too long", what),
					 errdetail("Intervals of pg_streamagg are at most 100000 days.")));
		return us;
	}
}

/* Microseconds as an interval of days and time (for messages). */
Interval *
sa_usecs_interval(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->day = us / USECS_PER_DAY;
	iv->time = us % USECS_PER_DAY;
	return iv;
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

/*
 * A memory size option in kilobytes, written as for work_mem: a number of
 * kilobytes, or with a unit ('64MB', '512kB', '1GB').
 */
static int
option_memory_kb(const char *key, const char *val)
{
	int			kb;
	const char *hint = NULL;

	if (!parse_int(val, &kb, GUC_UNIT_KB, &hint) ||
		kb < SA_BATCH_MEMORY_MIN_KB || kb > MAX_KILOBYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", val, key),
				 errdetail("The value must be a memory size from %dkB to %dkB.",
						   SA_BATCH_MEMORY_MIN_KB, MAX_KILOBYTES),
				 errhint("Give a size such as '64MB' (a number alone is in kilobytes).")));
	return kb;
}

/* An interval option in microseconds; 'off' for none (-1). */
static int64
option_interval(const char *key, const char *val)
{
	MemoryContext cxt = CurrentMemoryContext;
	Interval   *volatile iv = NULL;

	if (pg_strcasecmp(val, "off") == 0)
		return -1;
	PG_TRY();
	{
		iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(val),
												   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		iv = NULL;
	}
	PG_END_TRY();
	if (iv == NULL || sa_interval_usecs(iv, key) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", val, key),
				 errhint("Give an interval such as '1 day', or 'off'.")));
	return sa_interval_usecs(iv, key);
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
 *	 streamagg.batch_size, streamagg.batch_time (ms), streamagg.batch_memory (kB
 *	 or with a unit), streamagg.idle_timeout (ms),
 *	 streamagg.kafka_group, streamagg.max_future (interval or 'off')
 */
void
sa_apply_stream_options(SaStream *st, bool validate_kafka)
{
	ListCell   *lc;

	st->csv_delimiter = ',';
	st->csv_quote = '"';
	st->batch_size = 0;
	st->batch_time_ms = 0;
	st->batch_memory_kb = 0;
	st->idle_timeout_ms = -1;
	st->kafka_group = NULL;
	st->csv_options = false;
	st->max_future_us = USECS_PER_DAY;

	foreach(lc, sa_option_list(st->options))
	{
		DefElem    *opt = lfirst(lc);
		char	   *key = opt->defname;
		char	   *val = strVal(opt->arg);

		if (strcmp(key, "streamagg.csv_delimiter") == 0)
			st->csv_delimiter = option_char(key, val), st->csv_options = true;
		else if (strcmp(key, "streamagg.csv_quote") == 0)
			st->csv_quote = option_char(key, val), st->csv_options = true;
		else if (strcmp(key, "streamagg.batch_size") == 0)
			st->batch_size = option_int(key, val, 1, 10000000);
		else if (strcmp(key, "streamagg.batch_time") == 0)
			st->batch_time_ms = option_int(key, val, 1, 600000);
		else if (strcmp(key, "streamagg.batch_memory") == 0)
			st->batch_memory_kb = option_memory_kb(key, val);
		else if (strcmp(key, "streamagg.idle_timeout") == 0)
			st->idle_timeout_ms = option_int(key, val, 0, INT_MAX);
		else if (strcmp(key, "streamagg.kafka_group") == 0)
			st->kafka_group = pstrdup(val);
		else if (strcmp(key, "streamagg.max_future") == 0)
			st->max_future_us = option_interval(key, val);
		else if (strncmp(key, "streamagg.", 10) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown stream option \"%s\"", key),
					 errhint("Stream options are streamagg.csv_delimiter, streamagg.csv_quote, streamagg.batch_size, streamagg.batch_time, streamagg.batch_memory, streamagg.idle_timeout, streamagg.kafka_group and streamagg.max_future; other keys go to librdkafka.")));
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

/*
 * librdkafka properties, by who may set them.
 *
 * Some properties fight the way the worker manages offsets and brokers
 * (nobody may set them).  Others touch the server's files or processes -
 * read a file (*.location), load code (plugin.library.paths, ssl.engine.*,
 * ssl.providers), run a command (sasl.kerberos.kinit.cmd, OAUTHBEARER
 * settings), or change how librdkafka's threads log (log.queue, debug,
 * log_level): like a connection string in dblink or postgres_fdw, they
 * are reserved to superusers.  Everything else an owner may set must be
 * on the list below (credentials, inline PEM, timeouts, sizes, ...).
 */
typedef struct SaForbiddenOption
{
	const char *name;
	const char *why;
} SaForbiddenOption;

static const SaForbiddenOption forbidden_options[] = {
	{"bootstrap.servers", "the stream's brokers argument names the brokers"},
	{"metadata.broker.list", "the stream's brokers argument names the brokers"},
	{"group.id", "offsets live in streamagg.offsets; use the option streamagg.kafka_group to show them to Kafka's tools"},
	{"group.instance.id", "the worker assigns its partitions itself and joins no group"},
	{"enable.auto.commit", "offsets are committed in the database, with the window rows"},
	{"enable.auto.offset.store", "offsets are committed in the database, with the window rows"},
	{"auto.commit.interval.ms", "offsets are committed in the database, with the window rows"},
	{"auto.offset.reset", "the stream starts at start_from and moves only by streamagg.reset_offsets"},
	{"enable.partition.eof", "the worker decides itself when a partition is caught up"},
	{"log.queue", "librdkafka's logs must reach the worker's own thread"},
	{NULL, NULL}
};

static const char *const owner_options[] = {
	"security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
	"ssl.key.pem", "ssl.key.password", "ssl.certificate.pem", "ssl.ca.pem",
	"ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list",
	"ssl.endpoint.identification.algorithm", "enable.ssl.certificate.verification",
	"client.id", "client.rack", "client.dns.lookup", "isolation.level", "check.crcs",
	"broker.address.family", "broker.address.ttl", "broker.version.fallback",
	"api.version.request", "api.version.request.timeout.ms", "api.version.fallback.ms",
	"allow.auto.create.topics", "metadata.max.age.ms",
	"topic.metadata.refresh.interval.ms", "topic.metadata.refresh.fast.interval.ms",
	"topic.metadata.refresh.sparse", "topic.metadata.propagation.max.ms",
	"socket.timeout.ms", "socket.connection.setup.timeout.ms", "socket.keepalive.enable",
	"socket.nagle.disable", "socket.max.fails", "socket.send.buffer.bytes",
	"socket.receive.buffer.bytes", "connections.max.idle.ms",
	"reconnect.backoff.ms", "reconnect.backoff.max.ms", "retry.backoff.ms", "retry.backoff.max.ms",
	"fetch.wait.max.ms", "fetch.min.bytes", "fetch.max.bytes", "fetch.message.max.bytes",
	"max.partition.fetch.bytes", "fetch.error.backoff.ms", "fetch.queue.backoff.ms",
	"queued.min.messages", "queued.max.messages.kbytes", "receive.message.max.bytes",
	"message.max.bytes", "max.in.flight.requests.per.connection", "max.in.flight",
	NULL
};

static bool
is_owner_option(const char *key)
{
	for (int i = 0; owner_options[i]; i++)
		if (strcmp(owner_options[i], key) == 0)
			return true;
	return false;
}

/*
 * Refuse the options the stream's owner may not set (see above).  Checked
 * at create time and again by every worker: an owner can stop being a
 * superuser, and streams can be reassigned.
 */
void
sa_check_option_rights(SaStream *st)
{
	bool		super = superuser_arg(st->owner);
	ListCell   *lc;

	foreach(lc, sa_option_list(st->options))
	{
		DefElem    *opt = lfirst(lc);
		const char *key = opt->defname;

		if (strncmp(key, "streamagg.", 10) == 0)
			continue;
		for (int i = 0; forbidden_options[i].name; i++)
			if (strcmp(forbidden_options[i].name, key) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("Kafka option \"%s\" cannot be set", key),
						 errdetail("pg_streamagg manages it: %s.", forbidden_options[i].why)));
		if (!super && !is_owner_option(key))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("Kafka option \"%s\" may be set only by a superuser", key),
					 errdetail("Options that read server files, load code, run commands or change how librdkafka logs are reserved to superusers, and so is any option not known to be safe."),
					 errhint("Stream owners may set credentials (sasl.*), inline PEM keys and certificates (ssl.*.pem), timeouts, fetch sizes, isolation.level and client.id.")));
	}
}
