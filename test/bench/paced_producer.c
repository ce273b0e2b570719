/*-------------------------------------------------------------------------
 *
 * paced_producer.c
 *	  Produce access-log messages at a steady rate and record, for every
 *	  message, when it was produced and where it landed.
 *
 * The latency test needs to know, for each message, the wall-clock time it
 * was handed to the producer and its (partition, offset), so that it can
 * later find the moment the message became visible in the database (the
 * first time the committed offset of its partition passed it).
 *
 * Warm-up (-w): a new producer's first messages wait for its connections
 * and metadata (about a second on the test broker), which is no part of
 * what is being measured; so the producer first runs at the same rate for
 * the warm-up time, and only messages produced after it are logged.
 *
 * Pacing: every millisecond the program produces the messages that are due
 * by then (rate x elapsed time), so the rate is steady at millisecond
 * scale instead of coming in bursts.  Payloads are the same JSON records as
 * gen_data.py's, with the produce time as event time ("ts").
 *
 * The log (-o) has one line per acknowledged message:
 *
 *	  PARTITION OFFSET PRODUCE_TIME_US ACK_TIME_US
 *
 * in microseconds since the Unix epoch (CLOCK_REALTIME, the clock the
 * poller in bench.py uses); ACK_TIME_US is when the delivery report was
 * served (delivery reports are served every millisecond).  A summary line
 * of JSON goes to stdout.
 *
 *	  paced_producer -b BROKERS -t TOPIC -r RATE -d SECONDS -o LOG
 *					 [-w WARMUP_SECONDS] [-z CODEC] [-X PROP=VALUE]...
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define MAX_EXTRA_CONF	64
#define IPS				10000

/* Where each message landed, indexed by its sequence number. */
typedef struct Record
{
	int64_t		produced_us;
	int64_t		acked_us;		/* when the delivery report was served */
	int64_t		offset;			/* -1 until acknowledged */
	int32_t		partition;
} Record;

static Record *records;
static int64_t delivered;
static int64_t failed;
static char first_error[256];

static int64_t
realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *fmt,...)
{
	va_list		ap;

	fputs("paced_producer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void
set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		die("%s=%s: %s", key, val, errstr);
}

/* Delivery report: remember the offset, or count the failure. */
static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	Record	   *r = &records[(intptr_t) m->_private];

	(void) rk;
	(void) opaque;
	if (m->err)
	{
		if (failed++ == 0)
			snprintf(first_error, sizeof(first_error), "%s", rd_kafka_err2str(m->err));
		return;
	}
	r->partition = m->partition;
	r->offset = m->offset;
	r->acked_us = realtime_us();
	delivered++;
}

/* xorshift64*: cheap and deterministic */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static int
make_payload(char *buf, size_t size, uint64_t *seed, int64_t ts_ms)
{
	static const int statuses[] = {200, 200, 200, 200, 200, 200, 200, 200, 200, 200,
		200, 200, 200, 200, 200, 200, 304, 404, 301, 500};
	unsigned	ip = rnd(seed) % IPS;

	return snprintf(buf, size,
					"{\"ts\":%" PRId64 ",\"ip\":\"10.0.%u.%u\",\"path\":\"/items/%u\","
					"\"status\":%d,\"bytes\":%u}",
					ts_ms, ip >> 8, ip & 255, (unsigned) (rnd(seed) % 10000),
					statuses[rnd(seed) % 20], (unsigned) (200 + rnd(seed) % 49801));
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: paced_producer -b BROKERS -t TOPIC -r RATE -d SECONDS -o LOG\n"
			"                      [-w WARMUP_SECONDS] [-z CODEC] [-X PROP=VALUE]...\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *brokers = NULL;
	const char *topic = NULL;
	const char *logpath = NULL;
	const char *codec = "lz4";
	const char *extra[MAX_EXTRA_CONF];
	int			nextra = 0;
	double		rate = 0;
	double		duration = 0;
	double		warmup = 0;
	int64_t		total;
	int64_t		first_logged;
	int64_t		sent = 0;
	uint64_t	seed = 88172645463325252ULL;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char		errstr[512];
	double		t0,
				elapsed;
	FILE	   *log;
	int			opt;

	while ((opt = getopt(argc, argv, "b:t:r:d:o:w:z:X:h")) != -1)
	{
		switch (opt)
		{
			case 'b':
				brokers = optarg;
				break;
			case 't':
				topic = optarg;
				break;
			case 'r':
				rate = atof(optarg);
				break;
			case 'd':
				duration = atof(optarg);
				break;
			case 'o':
				logpath = optarg;
				break;
			case 'w':
				warmup = atof(optarg);
				break;
			case 'z':
				codec = optarg;
				break;
			case 'X':
				if (nextra >= MAX_EXTRA_CONF)
					die("too many -X options");
				extra[nextra++] = optarg;
				break;
			default:
				usage();
		}
	}
	if (!brokers || !topic || !logpath || rate <= 0 || duration <= 0 || warmup < 0 ||
		optind != argc)
		usage();
	first_logged = (int64_t) (rate * warmup);
	total = first_logged + (int64_t) (rate * duration);
	records = calloc(total, sizeof(Record));
	if (records == NULL)
		die("out of memory");

	conf = rd_kafka_conf_new();
	set(conf, "bootstrap.servers", brokers);
	set(conf, "client.id", "paced_producer");
	set(conf, "acks", "all");
	set(conf, "linger.ms", "5");	/* librdkafka's default, said explicitly */
	set(conf, "compression.codec", codec);
	set(conf, "queue.buffering.max.messages", "1000000");
	for (int i = 0; i < nextra; i++)
	{
		char	   *kv = strdup(extra[i]);
		char	   *eq = strchr(kv, '=');

		if (eq == NULL)
			die("-X %s: expected PROP=VALUE", extra[i]);
		*eq = '\0';
		set(conf, kv, eq + 1);
		free(kv);
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		die("rd_kafka_new: %s", errstr);

	t0 = mono_s();
	while (sent < total)
	{
		int64_t		due;
		struct timespec pause = {0, 1000000};	/* 1 ms */

		elapsed = mono_s() - t0;
		due = (int64_t) (rate * elapsed);
		if (due > total)
			due = total;
		while (sent < due)
		{
			char		payload[256];
			int64_t		now = realtime_us();
			int			len = make_payload(payload, sizeof(payload), &seed, now / 1000);

			records[sent].produced_us = now;
			records[sent].offset = -1;
			if (rd_kafka_producev(rk,
								  RD_KAFKA_V_TOPIC(topic),
								  RD_KAFKA_V_VALUE(payload, (size_t) len),
								  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								  RD_KAFKA_V_OPAQUE((void *) (intptr_t) sent),
								  RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
				die("produce failed: %s", rd_kafka_err2str(rd_kafka_last_error()));
			sent++;
		}
		rd_kafka_poll(rk, 0);
		nanosleep(&pause, NULL);
	}
	elapsed = mono_s() - t0;
	rd_kafka_flush(rk, 60000);

	log = fopen(logpath, "w");
	if (log == NULL)
		die("cannot write %s", logpath);
	for (int64_t i = first_logged; i < total; i++)
		if (records[i].offset >= 0)
			fprintf(log, "%d %" PRId64 " %" PRId64 " %" PRId64 "\n",
					records[i].partition, records[i].offset, records[i].produced_us,
					records[i].acked_us);
	if (fclose(log) != 0)
		die("cannot write %s", logpath);

	printf("{\"messages\": %" PRId64 ", \"logged\": %" PRId64 ", \"delivered\": %" PRId64
		   ", \"failed\": %" PRId64 ", \"seconds\": %.3f, \"rate\": %.1f"
		   ", \"first_error\": \"%s\"}\n",
		   sent, total - first_logged, delivered, failed, elapsed, sent / elapsed, first_error);
	rd_kafka_destroy(rk);
	free(records);
	return failed > 0 ? 1 : 0;
}
