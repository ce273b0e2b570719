/*-------------------------------------------------------------------------
 *
 * bare_consumer.c
 *	  The fetch ceiling: a librdkafka consumer that reads a topic and only
 *	  counts the messages.
 *
 * It reads the way a pg_streamagg worker does (explicit assign() of every
 * partition, no group membership, rd_kafka_consume_batch_queue() on the
 * consumer queue, the worker's default fetch and prefetch settings), but
 * does nothing with a message except count it and add up its length.
 * Whatever rate it reaches is the most any consumer with these settings
 * can get out of the broker on this machine, so the benchmark reports
 * every other variant as a share of it.
 *
 * Drain mode (default): the high watermarks are read before consuming
 * starts; the program stops when every partition has been read up to them
 * and prints one line of JSON: messages, bytes, seconds (from start-up to
 * the last message, the span the other variants are timed over), seconds
 * to the first message, and its own CPU time.
 *
 * Follow mode (-F LOG -D SECONDS): start at the end of every partition,
 * read for SECONDS, then write one line per message to LOG:
 *
 *	  PARTITION OFFSET RECEIVE_TIME_US
 *
 * (microseconds since the Unix epoch).  Joined with paced_producer's log,
 * this is the latency of the transport alone: produce -> fetched.
 *
 *	  bare_consumer -b BROKERS -t TOPIC [-X PROP=VALUE]... [-T TIMEOUT_S] [-v]
 *	  bare_consumer -b BROKERS -t TOPIC -F LOG -D SECONDS [-X PROP=VALUE]...
 *
 * -v prints the elapsed time at every 100,000 messages to stderr.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define MAX_EXTRA_CONF	64
#define BATCH			1000	/* as SA_POLL_MAX in src/worker.c */
#define META_TIMEOUT_MS 10000

/* Where each message was, and when it arrived (follow mode). */
typedef struct Arrival
{
	int32_t		partition;
	int64_t		offset;
	int64_t		received_us;
} Arrival;

typedef struct Options
{
	const char *brokers;
	const char *topic;
	const char *extra[MAX_EXTRA_CONF];
	int			nextra;
	double		timeout_s;
	int			verbose;
	const char *follow_log;		/* -F */
	double		follow_s;		/* -D */
} Options;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t
realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double
tv_s(struct timeval tv)
{
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static void
die(const char *fmt,...)
{
	va_list		ap;

	fputs("bare_consumer: ", stderr);
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

static void
usage(void)
{
	fprintf(stderr,
			"usage: bare_consumer -b BROKERS -t TOPIC [-X PROP=VALUE]... [-T TIMEOUT_S] [-v]\n"
			"       bare_consumer -b BROKERS -t TOPIC -F LOG -D SECONDS [-X PROP=VALUE]...\n");
	exit(2);
}

static void
parse_options(Options *o, int argc, char **argv)
{
	int			opt;

	memset(o, 0, sizeof(*o));
	o->timeout_s = 600;
	while ((opt = getopt(argc, argv, "b:t:X:T:F:D:vh")) != -1)
	{
		switch (opt)
		{
			case 'b':
				o->brokers = optarg;
				break;
			case 't':
				o->topic = optarg;
				break;
			case 'X':
				if (o->nextra >= MAX_EXTRA_CONF)
					die("too many -X options");
				o->extra[o->nextra++] = optarg;
				break;
			case 'T':
				o->timeout_s = atof(optarg);
				break;
			case 'F':
				o->follow_log = optarg;
				break;
			case 'D':
				o->follow_s = atof(optarg);
				break;
			case 'v':
				o->verbose = 1;
				break;
			default:
				usage();
		}
	}
	if (!o->brokers || !o->topic || optind != argc ||
		(o->follow_log != NULL) != (o->follow_s > 0))
		usage();
}

/*
 * The worker's consumer settings (sa_kafka_conf() in src/kafka.c; keep the
 * two in step), then the caller's -X.  bench.py passes the cluster's
 * streamagg.queue_kbytes as queued.max.messages.kbytes.
 */
static rd_kafka_t *
make_consumer(const Options *o)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	char		errstr[512];

	set(conf, "bootstrap.servers", o->brokers);
	set(conf, "group.id", "bench.bare_consumer");
	set(conf, "client.id", "bare_consumer");
	set(conf, "enable.auto.commit", "false");
	set(conf, "enable.auto.offset.store", "false");
	set(conf, "enable.partition.eof", "false");
	set(conf, "auto.offset.reset", "earliest");
	set(conf, "queued.max.messages.kbytes", "32768");
	set(conf, "queued.min.messages", "1000000");
	set(conf, "fetch.wait.max.ms", "100");
	for (int i = 0; i < o->nextra; i++)
	{
		char	   *kv = strdup(o->extra[i]);
		char	   *eq = strchr(kv, '=');

		if (eq == NULL)
			die("-X %s: expected PROP=VALUE", o->extra[i]);
		*eq = '\0';
		set(conf, kv, eq + 1);
		free(kv);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		die("rd_kafka_new: %s", errstr);
	return rk;
}

/*
 * Assign every partition of the topic at its low watermark (drain) or high
 * watermark (follow); fills start[] with the offsets assigned and end[]
 * with the high watermarks.  Returns the number of partitions.
 */
static int
assign_all(rd_kafka_t *rk, const char *topic, int follow, int64_t **start, int64_t **end)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_partition_list_t *list;
	int			nparts;

	if (rd_kafka_metadata(rk, 0, rkt, &md, META_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("cannot read the metadata of topic %s", topic);
	nparts = md->topics[0].partition_cnt;
	*start = calloc(nparts, sizeof(int64_t));
	*end = calloc(nparts, sizeof(int64_t));
	list = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts; i++)
	{
		int32_t		p = md->topics[0].partitions[i].id;
		int64_t		lo,
					hi;

		if (p < 0 || p >= nparts)
			die("unexpected partition id %d", p);
		if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, META_TIMEOUT_MS))
			die("cannot read the watermarks of partition %d", p);
		(*start)[p] = follow ? hi : lo;
		(*end)[p] = hi;
		rd_kafka_topic_partition_list_add(list, topic, p)->offset = (*start)[p];
	}
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	if (rd_kafka_assign(rk, list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("assign failed");
	rd_kafka_topic_partition_list_destroy(list);
	return nparts;
}

/* Drain mode: read up to the high watermarks, print the figures. */
static void
drain(rd_kafka_t *rk, const Options *o, double t0)
{
	rd_kafka_queue_t *queue;
	rd_kafka_message_t *msgs[BATCH];
	int64_t    *next;
	int64_t    *end;
	int			nparts = assign_all(rk, o->topic, 0, &next, &end);
	int			open_parts = 0;
	int64_t		messages = 0,
				bytes = 0,
				errors = 0,
				next_report = 100000;
	double		t_first = -1,
				t_last = 0;
	struct rusage ru;

	for (int p = 0; p < nparts; p++)
		if (end[p] > next[p])
			open_parts++;
	queue = rd_kafka_queue_get_consumer(rk);
	while (open_parts > 0)
	{
		ssize_t		n = rd_kafka_consume_batch_queue(queue, 100, msgs, BATCH);

		if (n < 0)
			die("consume failed: %s", rd_kafka_err2str(rd_kafka_last_error()));
		for (ssize_t i = 0; i < n; i++)
		{
			rd_kafka_message_t *m = msgs[i];
			int32_t		p = m->partition;

			if (m->err)
				errors++;
			else if (p >= 0 && p < nparts)
			{
				if (t_first < 0)
					t_first = now_s();
				messages++;
				bytes += m->len;
				if (next[p] < end[p] && m->offset + 1 >= end[p])
					open_parts--;
				next[p] = m->offset + 1;
			}
			rd_kafka_message_destroy(m);
		}
		if (n > 0)
			t_last = now_s();
		if (o->verbose && messages >= next_report)
		{
			fprintf(stderr, "%8.3f s  %" PRId64 " messages\n", t_last - t0, messages);
			next_report += 100000;
		}
		if (now_s() - t0 > o->timeout_s)
			die("timed out after %.0f s with %" PRId64 " messages", o->timeout_s, messages);
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"messages\": %" PRId64 ", \"bytes\": %" PRId64 ", \"errors\": %" PRId64
		   ", \"seconds\": %.4f, \"first_message_s\": %.4f"
		   ", \"cpu_user\": %.3f, \"cpu_sys\": %.3f}\n",
		   messages, bytes, errors, t_last - t0, t_first - t0,
		   tv_s(ru.ru_utime), tv_s(ru.ru_stime));
	fflush(stdout);
	rd_kafka_queue_destroy(queue);
	free(end);
	free(next);
}

/* Follow mode: record the arrival time of every message for a while. */
static void
follow(rd_kafka_t *rk, const Options *o)
{
	rd_kafka_queue_t *queue;
	rd_kafka_message_t *msgs[BATCH];
	int64_t    *start;
	int64_t    *end;
	size_t		cap = 1 << 20,
				count = 0;
	Arrival    *arr = malloc(cap * sizeof(Arrival));
	double		stop;
	FILE	   *log;

	assign_all(rk, o->topic, 1, &start, &end);
	queue = rd_kafka_queue_get_consumer(rk);
	stop = now_s() + o->follow_s;
	while (now_s() < stop)
	{
		ssize_t		n = rd_kafka_consume_batch_queue(queue, 10, msgs, BATCH);
		int64_t		now = realtime_us();

		for (ssize_t i = 0; i < n; i++)
		{
			rd_kafka_message_t *m = msgs[i];

			if (m->err == 0)
			{
				if (count == cap)
				{
					cap *= 2;
					arr = realloc(arr, cap * sizeof(Arrival));
					if (arr == NULL)
						die("out of memory");
				}
				arr[count].partition = m->partition;
				arr[count].offset = m->offset;
				arr[count].received_us = now;
				count++;
			}
			rd_kafka_message_destroy(m);
		}
	}
	log = fopen(o->follow_log, "w");
	if (log == NULL)
		die("cannot write %s", o->follow_log);
	for (size_t i = 0; i < count; i++)
		fprintf(log, "%d %" PRId64 " %" PRId64 "\n",
				arr[i].partition, arr[i].offset, arr[i].received_us);
	if (fclose(log) != 0)
		die("cannot write %s", o->follow_log);
	printf("{\"messages\": %zu}\n", count);
	rd_kafka_queue_destroy(queue);
	free(arr);
	free(start);
	free(end);
}

int
main(int argc, char **argv)
{
	double		t0 = now_s();
	Options		o;
	rd_kafka_t *rk;

	parse_options(&o, argc, argv);
	rk = make_consumer(&o);
	if (o.follow_log)
		follow(rk, &o);
	else
		drain(rk, &o, t0);
	rd_kafka_assign(rk, NULL);
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	return 0;
}
