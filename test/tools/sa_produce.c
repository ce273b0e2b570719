/*-------------------------------------------------------------------------
 *
 * sa_produce.c
 *	  Test producer that writes exactly the Kafka messages a test asks for.
 *
 * Tests need control over every field of a message: partition, key (null,
 * empty or arbitrary bytes), timestamp, headers and payload (null, empty,
 * binary, large).  This program produces either one message described by
 * command-line options or many messages read as tab-separated lines from
 * stdin, waits for every delivery report and fails loudly if any message
 * was not acknowledged.
 *
 * The full interface is documented in test/README.md ("Producer").
 *
 * IDENTIFICATION
 *	  test/tools/sa_produce.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define EXIT_DELIVERY	1		/* some message failed, or runtime error */
#define EXIT_USAGE		2		/* bad options or bad input */
#define MAX_EXTRA_CONF	64
#define POLL_EVERY		1000	/* serve delivery reports every N messages */

/* Options from the command line. */
typedef struct ProduceOptions
{
	const char *brokers;
	const char *topic;
	const char *compression;
	bool		batch;			/* -l: read lines from stdin */
	int32_t		partition;		/* -p, RD_KAFKA_PARTITION_UA if unset */
	bool		partition_set;
	const char *key;			/* -k, NULL for a null key */
	bool		null_key;		/* -K */
	int64_t		timestamp;		/* -T, 0 = now */
	bool		timestamp_set;
	const char *file;			/* -f */
	const char *string;			/* -s */
	bool		null_payload;	/* -n */
	rd_kafka_headers_t *headers;	/* -H, NULL if none */
	const char *extra_conf[MAX_EXTRA_CONF]; /* -X name=value */
	int			n_extra_conf;
	const char *transactional_id;	/* -x: transactions (batch mode) */
	int			verbose;
} ProduceOptions;

/* Delivery bookkeeping, updated from the delivery report callback. */
typedef struct DeliveryStats
{
	int64_t		enqueued;
	int64_t		delivered;
	int64_t		failed;
	char		first_error[512];
	int64_t		committed;		/* -x: transactions committed / aborted */
	int64_t		aborted;
} DeliveryStats;

/* One message to produce; pointers refer to caller-owned memory. */
typedef struct OutMessage
{
	int32_t		partition;
	const char *key;			/* NULL = null key */
	size_t		key_len;
	const char *value;			/* NULL = null payload */
	size_t		value_len;
	int64_t		timestamp;		/* 0 = now */
	int64_t		lineno;			/* input line, 0 in single mode */
} OutMessage;

static int	verbosity = 0;

/*
 * Print an error message prefixed with the program name.
 */
static void
report_error(const char *fmt,...)
{
	va_list		ap;

	fputs("sa_produce: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * Print the command-line synopsis.
 */
static void
usage(FILE *out)
{
	fprintf(out,
			"usage: sa_produce -b BROKERS -t TOPIC [-p PARTITION] [-k KEY | -K] [-T TIMESTAMP_MS]\n"
			"                  [-H NAME=VALUE]... [-z CODEC] [-X PROP=VALUE]... [-v]\n"
			"                  (-f FILE | -s STRING | -n)\n"
			"       sa_produce -b BROKERS -t TOPIC -l [-x TXN_ID] [-H NAME=VALUE]... [-z CODEC] [-X PROP=VALUE]... [-v]\n"
			"\n"
			"Single message mode (default):\n"
			"  -p PARTITION   target partition (default -1: librdkafka partitioner)\n"
			"  -k KEY         key bytes, taken literally (default: null key)\n"
			"  -K             null key\n"
			"  -T MS          message timestamp in ms since epoch (default 0 = now)\n"
			"  -f FILE        payload = raw bytes of FILE (\"-\" = stdin)\n"
			"  -s STRING      payload = STRING\n"
			"  -n             null payload\n"
			"Batch mode:\n"
			"  -l             read PARTITION<TAB>KEY<TAB>TIMESTAMP_MS<TAB>PAYLOAD lines\n"
			"                 from stdin; KEY/PAYLOAD escapes \\\\ \\t \\n \\r \\xNN, \\N = null\n"
			"  -x TXN_ID      transactional producer with this transactional.id: the\n"
			"                 lines COMMIT and ABORT end the current transaction (its\n"
			"                 messages are written to the log either way); messages\n"
			"                 after the last COMMIT/ABORT are committed\n"
			"Both modes:\n"
			"  -H NAME=VALUE  add a header (repeatable; NAME without '=' = null value)\n"
			"  -z CODEC       none|gzip|snappy|lz4|zstd (default none)\n"
			"  -X PROP=VALUE  extra librdkafka producer property (repeatable)\n"
			"  -v             librdkafka logs to stderr\n"
			"Prints \"produced N\" on stdout (with -x also \"transactions C committed A aborted\");\n"
			"exits 0 if every message was delivered (and every transaction ended as asked),\n"
			"1 if any failed, 2 on usage or input errors.\n");
}

/*
 * Parse a whole string as a signed 64-bit integer within [min, max].
 */
static bool
parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = (int64_t) v;
	return true;
}

/*
 * Librdkafka log callback: forward to stderr only in verbose mode.
 */
static void
rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void) rk;
	if (verbosity > 0)
		fprintf(stderr, "sa_produce: rdkafka %d %s: %s\n", level, fac, buf);
}

/*
 * Remember a failed message; only the first error is kept for printing.
 */
static void
note_failure(DeliveryStats *stats, int64_t lineno, int32_t partition,
			 const char *errstr)
{
	stats->failed++;
	if (stats->failed > 1)
		return;
	if (lineno > 0)
		snprintf(stats->first_error, sizeof(stats->first_error),
				 "line %" PRId64 ", partition %" PRId32 ": %s",
				 lineno, partition, errstr);
	else
		snprintf(stats->first_error, sizeof(stats->first_error),
				 "partition %" PRId32 ": %s", partition, errstr);
}

/*
 * Delivery report callback: count successes and failures.  The message's
 * opaque carries its input line number.
 */
static void
delivery_report(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	DeliveryStats *stats = opaque;

	(void) rk;
	if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		stats->delivered++;
	else
		note_failure(stats, (int64_t) (intptr_t) msg->_private,
					 msg->partition, rd_kafka_err2str(msg->err));
}

/*
 * Add one -H option to the header list.  "NAME=VALUE" gives a string value
 * (possibly empty), a bare "NAME" a null value.
 */
static bool
add_header(ProduceOptions *opts, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t		name_len = eq ? (size_t) (eq - arg) : strlen(arg);

	if (name_len == 0)
	{
		report_error("invalid header \"%s\": empty name", arg);
		return false;
	}
	if (opts->headers == NULL)
		opts->headers = rd_kafka_headers_new(8);
	return rd_kafka_header_add(opts->headers, arg, (ssize_t) name_len,
							   eq ? eq + 1 : NULL, eq ? -1 : 0) ==
		RD_KAFKA_RESP_ERR_NO_ERROR;
}

/*
 * Check that the options chosen fit together for the selected mode.
 */
static bool
check_option_combination(const ProduceOptions *opts)
{
	int			nsources = (opts->file != NULL) + (opts->string != NULL) +
		opts->null_payload;

	if (opts->brokers == NULL || opts->topic == NULL)
	{
		report_error("-b and -t are required");
		return false;
	}
	if (opts->key != NULL && opts->null_key)
	{
		report_error("-k and -K are mutually exclusive");
		return false;
	}
	if (opts->transactional_id != NULL && !opts->batch)
	{
		report_error("-x needs batch mode (-l)");
		return false;
	}
	if (opts->batch)
	{
		if (nsources > 0 || opts->partition_set || opts->key != NULL ||
			opts->null_key || opts->timestamp_set)
		{
			report_error("-l takes partition, key, timestamp and payload from stdin; -p -k -K -T -f -s -n are not allowed");
			return false;
		}
		return true;
	}
	if (nsources != 1)
	{
		report_error("exactly one of -f, -s or -n is required");
		return false;
	}
	return true;
}

/*
 * Parse argv into opts.  Exits with EXIT_USAGE on errors.
 */
static void
parse_options(int argc, char **argv, ProduceOptions *opts)
{
	int64_t		v = 0;
	int			c;

	while ((c = getopt(argc, argv, "b:t:p:k:KT:H:z:f:s:nlX:x:vh")) != -1)
	{
		bool		ok = true;

		switch (c)
		{
			case 'b':
				opts->brokers = optarg;
				break;
			case 't':
				opts->topic = optarg;
				break;
			case 'p':
				ok = parse_int64(optarg, -1, INT32_MAX, &v);
				opts->partition = (int32_t) v;
				opts->partition_set = true;
				break;
			case 'k':
				opts->key = optarg;
				break;
			case 'K':
				opts->null_key = true;
				break;
			case 'T':
				ok = parse_int64(optarg, 0, INT64_MAX, &opts->timestamp);
				opts->timestamp_set = true;
				break;
			case 'H':
				ok = add_header(opts, optarg);
				break;
			case 'z':
				opts->compression = optarg;
				break;
			case 'f':
				opts->file = optarg;
				break;
			case 's':
				opts->string = optarg;
				break;
			case 'n':
				opts->null_payload = true;
				break;
			case 'l':
				opts->batch = true;
				break;
			case 'X':
				ok = opts->n_extra_conf < MAX_EXTRA_CONF &&
					strchr(optarg, '=') != NULL;
				if (ok)
					opts->extra_conf[opts->n_extra_conf++] = optarg;
				break;
			case 'x':
				opts->transactional_id = optarg;
				break;
			case 'v':
				verbosity++;
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(EXIT_USAGE);
		}
		if (!ok)
		{
			report_error("invalid argument for -%c: \"%s\"", c, optarg);
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
	{
		report_error("unexpected argument \"%s\"", argv[optind]);
		exit(EXIT_USAGE);
	}
	if (!check_option_combination(opts))
		exit(EXIT_USAGE);
}

/*
 * Set one configuration property, reporting failures.
 */
static bool
set_conf(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) ==
		RD_KAFKA_CONF_OK)
		return true;
	report_error("%s=%s: %s", name, value, errstr);
	return false;
}

/*
 * Build the producer configuration: test defaults first, then -z and -X
 * so the command line can override anything.
 */
static rd_kafka_conf_t *
build_conf(const ProduceOptions *opts, DeliveryStats *stats)
{
	static const char *const defaults[][2] = {
		{"acks", "all"},
		{"enable.idempotence", "false"},
		{"max.in.flight.requests.per.connection", "1"},
		{"message.max.bytes", "2000000"},
		{"queue.buffering.max.messages", "1000000"},
		{"linger.ms", "50"},
		{"batch.num.messages", "10000"},
		{"message.timeout.ms", "60000"},
		{NULL, NULL}
	};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	bool		ok = set_conf(conf, "bootstrap.servers", opts->brokers);
	int			i;

	for (i = 0; ok && defaults[i][0] != NULL; i++)
		ok = set_conf(conf, defaults[i][0], defaults[i][1]);
	if (ok && opts->compression != NULL)
		ok = set_conf(conf, "compression.codec", opts->compression);
	if (ok && opts->transactional_id != NULL)
		ok = set_conf(conf, "transactional.id", opts->transactional_id) &&
			set_conf(conf, "enable.idempotence", "true");
	for (i = 0; ok && i < opts->n_extra_conf; i++)
	{
		char	   *prop = strdup(opts->extra_conf[i]);
		char	   *eq = strchr(prop, '=');

		*eq = '\0';
		ok = set_conf(conf, prop, eq + 1);
		free(prop);
	}
	if (!ok)
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_log_cb(conf, rdkafka_log);
	rd_kafka_conf_set_dr_msg_cb(conf, delivery_report);
	rd_kafka_conf_set_opaque(conf, stats);
	return conf;
}

/*
 * Enqueue one message, waiting for room when the local queue is full.
 * Immediate failures are counted like failed deliveries.
 */
static void
produce_message(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const OutMessage *m,
				const rd_kafka_headers_t *headers, DeliveryStats *stats)
{
	for (;;)
	{
		rd_kafka_headers_t *hdrs = headers ? rd_kafka_headers_copy(headers)
			: NULL;
		rd_kafka_resp_err_t err;

		err = rd_kafka_producev(rk,
								RD_KAFKA_V_RKT(rkt),
								RD_KAFKA_V_PARTITION(m->partition),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_KEY(m->key, m->key_len),
								RD_KAFKA_V_VALUE((void *) m->value,
												 m->value_len),
								RD_KAFKA_V_TIMESTAMP(m->timestamp),
								RD_KAFKA_V_HEADERS(hdrs),
								RD_KAFKA_V_OPAQUE((void *) (intptr_t) m->lineno),
								RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			stats->enqueued++;
			return;
		}
		if (hdrs != NULL)
			rd_kafka_headers_destroy(hdrs);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		{
			note_failure(stats, m->lineno, m->partition, rd_kafka_err2str(err));
			return;
		}
		/* Local queue full: serve delivery reports to make room. */
		rd_kafka_poll(rk, 100);
	}
}

/*
 * Read a whole file (or stdin for "-") into a malloc'd buffer.  An empty
 * file gives a non-NULL buffer of length 0.
 */
static char *
read_whole_file(const char *path, size_t *len)
{
	FILE	   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	size_t		cap = 65536;
	size_t		n = 0;
	char	   *buf;

	if (f == NULL)
	{
		report_error("could not open \"%s\": %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(cap);
	while (buf != NULL)
	{
		char	   *bigger;

		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		cap *= 2;
		bigger = realloc(buf, cap);
		if (bigger == NULL)
			free(buf);
		buf = bigger;
	}
	if (buf == NULL || ferror(f))
	{
		report_error("could not read \"%s\"", path);
		free(buf);
		buf = NULL;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return buf;
}

/*
 * Produce the single message described by the options.
 */
static int
run_single(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const ProduceOptions *opts,
		   DeliveryStats *stats)
{
	OutMessage	m;
	char	   *filebuf = NULL;

	memset(&m, 0, sizeof(m));
	m.partition = opts->partition_set ? opts->partition : RD_KAFKA_PARTITION_UA;
	m.timestamp = opts->timestamp;
	if (opts->key != NULL)
	{
		m.key = opts->key;
		m.key_len = strlen(opts->key);
	}
	if (opts->file != NULL)
	{
		if ((filebuf = read_whole_file(opts->file, &m.value_len)) == NULL)
			return EXIT_USAGE;
		m.value = filebuf;
	}
	else if (opts->string != NULL)
	{
		m.value = opts->string;
		m.value_len = strlen(opts->string);
	}
	produce_message(rk, rkt, &m, opts->headers, stats);
	free(filebuf);
	return 0;
}

/*
 * Value of one hex digit, or -1.
 */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode a KEY or PAYLOAD field in place.  "\N" alone means NULL (returned
 * as *out = NULL); otherwise \\ \t \n \r and \xNN are the only escapes.
 * Returns NULL on success or a static error message.
 */
static const char *
decode_field(char *s, size_t len, const char **out, size_t *out_len)
{
	char	   *dst = s;
	size_t		i;

	if (len == 2 && s[0] == '\\' && s[1] == 'N')
	{
		*out = NULL;
		*out_len = 0;
		return NULL;
	}
	*out = s;
	if (memchr(s, '\\', len) == NULL)
	{
		*out_len = len;
		return NULL;
	}
	for (i = 0; i < len; i++)
	{
		if (s[i] != '\\')
		{
			*dst++ = s[i];
			continue;
		}
		if (++i == len)
			return "trailing backslash";
		switch (s[i])
		{
			case '\\':
				*dst++ = '\\';
				break;
			case 't':
				*dst++ = '\t';
				break;
			case 'n':
				*dst++ = '\n';
				break;
			case 'r':
				*dst++ = '\r';
				break;
			case 'x':
				if (i + 2 >= len || hex_value(s[i + 1]) < 0 ||
					hex_value(s[i + 2]) < 0)
					return "\\x needs two hex digits";
				*dst++ = (char) (hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
				i += 2;
				break;
			default:
				return "unknown escape (use \\\\ \\t \\n \\r \\xNN or \\N)";
		}
	}
	*out_len = (size_t) (dst - s);
	return NULL;
}

/*
 * Parse one batch line (newline already removed) into m, decoding escapes
 * in place.  Returns NULL on success or an error message.
 */
static const char *
parse_batch_line(char *line, size_t len, OutMessage *m)
{
	char	   *fields[4];
	size_t		flen[4];
	char	   *p = line;
	char	   *end = line + len;
	int64_t		v;
	const char *err;
	int			i;

	/* The first three fields end at a TAB; the payload is the rest. */
	for (i = 0; i < 3; i++)
	{
		char	   *tab = memchr(p, '\t', (size_t) (end - p));

		if (tab == NULL)
			return "expected PARTITION<TAB>KEY<TAB>TIMESTAMP_MS<TAB>PAYLOAD";
		fields[i] = p;
		flen[i] = (size_t) (tab - p);
		*tab = '\0';
		p = tab + 1;
	}
	fields[3] = p;
	flen[3] = (size_t) (end - p);

	if (flen[0] == 0)
		m->partition = RD_KAFKA_PARTITION_UA;
	else if (parse_int64(fields[0], -1, INT32_MAX, &v))
		m->partition = (int32_t) v;
	else
		return "invalid PARTITION (integer >= -1)";

	if (flen[2] == 0)
		m->timestamp = 0;
	else if (!parse_int64(fields[2], 0, INT64_MAX, &m->timestamp))
		return "invalid TIMESTAMP_MS (integer >= 0, empty or 0 = now)";

	if ((err = decode_field(fields[1], flen[1], &m->key, &m->key_len)) != NULL)
		return err;
	return decode_field(fields[3], flen[3], &m->value, &m->value_len);
}

/*
 * Report a transaction API error; returns false.
 */
static bool
txn_failed(const char *what, rd_kafka_error_t *error)
{
	report_error("%s: %s", what, rd_kafka_error_string(error));
	rd_kafka_error_destroy(error);
	return false;
}

/*
 * End the open transaction: every message of it is delivered first (so
 * that an aborted transaction's messages really are in the log), then
 * committed or aborted.
 */
static bool
end_transaction(rd_kafka_t *rk, bool commit, DeliveryStats *stats)
{
	rd_kafka_error_t *error;

	while (rd_kafka_outq_len(rk) > 0)
		rd_kafka_flush(rk, 1000);
	rd_kafka_poll(rk, 0);
	if (commit)
	{
		if ((error = rd_kafka_commit_transaction(rk, 60000)) != NULL)
			return txn_failed("commit_transaction", error);
		stats->committed++;
	}
	else
	{
		if ((error = rd_kafka_abort_transaction(rk, 60000)) != NULL)
			return txn_failed("abort_transaction", error);
		stats->aborted++;
	}
	return true;
}

/*
 * Produce one message per stdin line.  Stops at the first malformed line
 * (after flushing what was already queued) and reports it.
 */
static int
run_batch(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const ProduceOptions *opts,
		  DeliveryStats *stats)
{
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		len;
	int64_t		lineno = 0;
	int			rc = 0;
	bool		txn = opts->transactional_id != NULL;
	bool		in_txn = false;
	rd_kafka_error_t *error;

	if (txn && (error = rd_kafka_init_transactions(rk, 60000)) != NULL)
	{
		txn_failed("init_transactions", error);
		return EXIT_DELIVERY;
	}
	setvbuf(stdin, NULL, _IOFBF, 1 << 20);
	while ((len = getline(&line, &cap, stdin)) >= 0)
	{
		OutMessage	m;
		const char *err;

		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (txn && (strcmp(line, "COMMIT") == 0 || strcmp(line, "ABORT") == 0))
		{
			if (in_txn && !end_transaction(rk, line[0] == 'C', stats))
			{
				rc = EXIT_DELIVERY;
				break;
			}
			in_txn = false;
			continue;
		}
		if (txn && !in_txn)
		{
			if ((error = rd_kafka_begin_transaction(rk)) != NULL)
			{
				txn_failed("begin_transaction", error);
				rc = EXIT_DELIVERY;
				break;
			}
			in_txn = true;
		}
		memset(&m, 0, sizeof(m));
		m.lineno = lineno;
		if ((err = parse_batch_line(line, (size_t) len, &m)) != NULL)
		{
			report_error("stdin line %" PRId64 ": %s", lineno, err);
			rc = EXIT_USAGE;
			break;
		}
		produce_message(rk, rkt, &m, opts->headers, stats);
		if (lineno % POLL_EVERY == 0)
			rd_kafka_poll(rk, 0);
	}
	if (rc == 0 && ferror(stdin))
	{
		report_error("error reading stdin");
		rc = EXIT_DELIVERY;
	}
	if (in_txn && !end_transaction(rk, rc == 0, stats) && rc == 0)
		rc = EXIT_DELIVERY;
	free(line);
	return rc;
}

/*
 * Wait until every queued message has a delivery report.  Termination is
 * guaranteed by message.timeout.ms.
 */
static void
wait_for_deliveries(rd_kafka_t *rk)
{
	while (rd_kafka_outq_len(rk) > 0)
		rd_kafka_flush(rk, 1000);
	rd_kafka_poll(rk, 0);
}

int
main(int argc, char **argv)
{
	ProduceOptions opts;
	DeliveryStats stats;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_topic_t *rkt;
	char		errstr[512];
	int			rc;

	memset(&opts, 0, sizeof(opts));
	memset(&stats, 0, sizeof(stats));
	parse_options(argc, argv, &opts);

	if ((conf = build_conf(&opts, &stats)) == NULL)
		return EXIT_USAGE;
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		report_error("could not create producer: %s", errstr);
		return EXIT_DELIVERY;
	}
	rkt = rd_kafka_topic_new(rk, opts.topic, NULL);
	if (rkt == NULL)
	{
		report_error("invalid topic \"%s\": %s", opts.topic,
					 rd_kafka_err2str(rd_kafka_last_error()));
		rd_kafka_destroy(rk);
		return EXIT_USAGE;
	}

	rc = opts.batch ? run_batch(rk, rkt, &opts, &stats)
		: run_single(rk, rkt, &opts, &stats);
	wait_for_deliveries(rk);

	printf("produced %" PRId64 "\n", stats.delivered);
	if (opts.transactional_id != NULL)
		printf("transactions %" PRId64 " committed %" PRId64 " aborted\n",
			   stats.committed, stats.aborted);
	fflush(stdout);
	if (stats.failed > 0)
	{
		report_error("%" PRId64 " message(s) failed; first error: %s",
					 stats.failed, stats.first_error);
		if (rc == 0)
			rc = EXIT_DELIVERY;
	}

	rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	if (opts.headers != NULL)
		rd_kafka_headers_destroy(opts.headers);
	return rc;
}
