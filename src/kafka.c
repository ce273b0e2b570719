/*-------------------------------------------------------------------------
 *
 * kafka.c
 *		The librdkafka consumer of a stream worker.
 *
 * Offsets come from streamagg.offsets, never from Kafka's consumer-group
 * offsets: the worker assigns its partitions explicitly (no group
 * membership, no rebalances) at the offsets committed in the database.
 * Only with the stream option "streamagg.kafka_group" are the offsets
 * committed in the database also committed to that Kafka consumer group,
 * asynchronously and best-effort, for Kafka's lag tools to see; they are
 * never read back.
 *
 * librdkafka runs threads of its own.  None of them may touch PostgreSQL
 * (elog, palloc, SPI), so its logs and errors are routed to the main
 * queue (log.queue=true) and served by rd_kafka_poll() on the worker's own
 * thread, where the callbacks below run.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define SA_METADATA_TIMEOUT_MS 10000	/* at setup, and for log bounds */
#define SA_METADATA_CHECK_MS 5000	/* the running worker's look for new partitions */
#define SA_ASK_FIRST_MS 500		/* first try of a question to Kafka */
#define SA_ASK_MAX_MS 4000		/* longest try: how long an interrupt may wait */
#define SA_UNREACHABLE_PROBE_MS 5000

#define SA_SEEN_ERRORS 32
#define SA_SEEN_ERRORS_MS (10 * 60 * 1000)	/* logged again after this */
static char seen_errors[SA_SEEN_ERRORS][256];	/* logged lately, see error_seen */
static TimestampTz seen_at[SA_SEEN_ERRORS];
static int	nseen_errors = 0;
static char kafka_error_cause[512];	/* the last error that is not "all brokers down" */
static char fatal_kafka_error[512];	/* raised after rd_kafka_poll returns */
static TimestampTz brokers_down_since = 0;	/* all brokers down since; 0: up */
static TimestampTz last_probe = 0;
static char group_name[256];	/* streamagg.kafka_group, "" when unset */
static char last_group_error[512];	/* of the group commits; "" when fine */

/*
 * Result of an asynchronous group commit: runs on the worker's thread
 * (served by rd_kafka_poll).  A failure is only logged, once per distinct
 * error: PostgreSQL keeps the offsets that count.
 */
static void
sa_kafka_group_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err,
						 rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	char		msg[512] = "";

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		snprintf(msg, sizeof(msg), "%s", rd_kafka_err2str(err));
	for (int i = 0; offsets && msg[0] == '\0' && i < offsets->cnt; i++)
		if (offsets->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
			snprintf(msg, sizeof(msg), "partition %d: %s", offsets->elems[i].partition,
					 rd_kafka_err2str(offsets->elems[i].err));
	if (strcmp(msg, last_group_error) == 0)
		return;
	if (msg[0] != '\0')
		ereport(WARNING,
				(errmsg("pg_streamagg could not commit offsets to Kafka consumer group \"%s\": %s",
						group_name, msg),
				 errdetail("The offsets in streamagg.offsets are not affected; the next commit tries again.")));
	else
		ereport(LOG,
				(errmsg("pg_streamagg commits offsets to Kafka consumer group \"%s\" again",
						group_name)));
	strlcpy(last_group_error, msg, sizeof(last_group_error));
}

/* Log callback: runs on the worker's thread (served by rd_kafka_poll). */
static void
sa_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	/*
	 * Warning and worse.  FAIL lines (a broker connection failed) also
	 * reach sa_kafka_error as an error event with the same text: logged
	 * there, once per distinct error.
	 */
	if (level <= 4 && strcmp(fac, "FAIL") != 0)
		ereport(LOG, (errmsg("pg_streamagg kafka %s: %s", fac, buf)));
}

/*
 * Has this error been logged since the brokers were last all reachable
 * (and within the last ten minutes)?  Compared without librdkafka's
 * "(after N ms in state ..., N identical error(s) suppressed)" tail, so
 * that an outage logs each broker's error once, not once per reconnect
 * attempt.  Remembers it if not.
 */
static bool
error_seen(const char *reason)
{
	TimestampTz now = GetCurrentTimestamp();
	char		key[256];
	char	   *tail;
	int			slot;

	strlcpy(key, reason, sizeof(key));
	if ((tail = strstr(key, " (after ")) != NULL)
		*tail = '\0';
	for (int i = 0; i < Min(nseen_errors, SA_SEEN_ERRORS); i++)
		if (strcmp(seen_errors[i], key) == 0)
		{
			if (TimestampDifferenceExceeds(seen_at[i], now, SA_SEEN_ERRORS_MS))
			{
				seen_at[i] = now;
				return false;
			}
			return true;
		}
	slot = nseen_errors++ % SA_SEEN_ERRORS;
	strlcpy(seen_errors[slot], key, sizeof(seen_errors[0]));
	seen_at[slot] = now;
	return false;
}

/*
 * Error callback: runs on the worker's thread.  Transient errors (broker
 * down, timeouts) are retried by librdkafka; each distinct one is logged
 * once until the brokers are reachable again.  A fatal error ends the
 * worker (the manager restarts it).
 */
static void
sa_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	char		fatal[512];

	/* no ERROR from inside librdkafka: note it, sa_kafka_serve raises it */
	if (err == RD_KAFKA_RESP_ERR__FATAL &&
		rd_kafka_fatal_error(rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR)
		strlcpy(fatal_kafka_error, fatal, sizeof(fatal_kafka_error));
	if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		strlcpy(kafka_error_cause, reason, sizeof(kafka_error_cause));
	else if (brokers_down_since == 0)
		brokers_down_since = GetCurrentTimestamp();
	if (!error_seen(reason))
		ereport(LOG,
				(errmsg("pg_streamagg kafka: %s: %s", rd_kafka_err2name(err), reason)));
}

static bool
conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *errstr, size_t errlen)
{
	return rd_kafka_conf_set(conf, key, val, errstr, errlen) == RD_KAFKA_CONF_OK;
}

/*
 * The consumer configuration of a stream: our defaults, then the user's
 * options (which may override them).
 *
 * Prefetch is bounded by bytes only (streamagg.queue_kbytes), not by a
 * per-partition message count: librdkafka 2.0 pauses a partition whose
 * queue reaches either bound and resumes it late, and a worker drains its
 * queue in bursts between commits, so a tight bound starves it.  Returns NULL with errstr set when a
 * property is unknown or its value invalid.
 */
rd_kafka_conf_t *
sa_kafka_conf(SaStream *st, char *errstr, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		kbytes[32];
	const char *group = st->kafka_group;
	ListCell   *lc;

	snprintf(kbytes, sizeof(kbytes), "%d", sa_queue_kbytes);

	/*
	 * assign() wants a group id; nothing is committed under it unless it
	 * is the user's streamagg.kafka_group (never subscribed: we assign)
	 */
	if (group != NULL && group[0] == '\0')
	{
		snprintf(errstr, errlen, "streamagg.kafka_group must not be empty");
		goto fail;
	}
	if (!conf_set(conf, "group.id", group ? group : psprintf("pg_streamagg.%s", st->name),
				  errstr, errlen) ||
		!conf_set(conf, "bootstrap.servers", st->brokers, errstr, errlen) ||
		!conf_set(conf, "client.id", "pg_streamagg", errstr, errlen) ||
		!conf_set(conf, "enable.auto.commit", "false", errstr, errlen) ||
		!conf_set(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
		!conf_set(conf, "enable.partition.eof", "false", errstr, errlen) ||
		!conf_set(conf, "auto.offset.reset", "error", errstr, errlen) ||
		!conf_set(conf, "queued.max.messages.kbytes", kbytes, errstr, errlen) ||
		!conf_set(conf, "queued.min.messages", "1000000", errstr, errlen) ||
		!conf_set(conf, "fetch.wait.max.ms", "100", errstr, errlen) ||
		!conf_set(conf, "log.queue", "true", errstr, errlen))
		goto fail;

	foreach(lc, sa_option_list(st->options))
	{
		DefElem    *opt = lfirst(lc);

		if (strncmp(opt->defname, "streamagg.", 10) != 0 &&
			!conf_set(conf, opt->defname, strVal(opt->arg), errstr, errlen))
			goto fail;
	}
	/* whatever the options say, logs and errors reach the worker's thread */
	if (!conf_set(conf, "log.queue", "true", errstr, errlen))
		goto fail;
	rd_kafka_conf_set_log_cb(conf, sa_kafka_log);
	rd_kafka_conf_set_error_cb(conf, sa_kafka_error);
	if (group != NULL)
		rd_kafka_conf_set_offset_commit_cb(conf, sa_kafka_group_committed);
	return conf;

fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

void
sa_kafka_conf_destroy(rd_kafka_conf_t *conf)
{
	rd_kafka_conf_destroy(conf);
}

/* Create the consumer (not yet assigned). */
void
sa_kafka_start(SaWorker *w)
{
	char		errstr[512];
	rd_kafka_conf_t *conf = sa_kafka_conf(w->st, errstr, sizeof(errstr));

	if (conf == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kafka option of stream \"%s\": %s", w->st->name, errstr)));
	w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (w->rk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not create a Kafka consumer for stream \"%s\": %s",
						w->st->name, errstr)));
	rd_kafka_set_log_queue(w->rk, NULL);
	w->queue = rd_kafka_queue_get_consumer(w->rk);
	strlcpy(group_name, w->st->kafka_group ? w->st->kafka_group : "", sizeof(group_name));
}

/*
 * After a database commit: commit the same offsets to the Kafka consumer
 * group of streamagg.kafka_group, asynchronously (the result is logged by
 * sa_kafka_group_committed when a failure starts or ends).
 */
void
sa_kafka_group_commit(SaWorker *w)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	if (group_name[0] == '\0' || w->rk == NULL || w->nparts == 0)
		return;
	list = rd_kafka_topic_partition_list_new(w->nparts);
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].committed >= 0)
			rd_kafka_topic_partition_list_add(list, w->st->topic,
											  w->parts[i].partition)->offset = w->parts[i].committed;
	err = list->cnt > 0 ? rd_kafka_commit(w->rk, list, 1) : RD_KAFKA_RESP_ERR_NO_ERROR;
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		sa_kafka_group_committed(w->rk, err, NULL, NULL);
}

/* Close and destroy the consumer; nothing is committed to Kafka. */
void
sa_kafka_stop(SaWorker *w)
{
	if (w->rk == NULL)
		return;
	if (w->queue)
		rd_kafka_queue_destroy(w->queue);
	w->queue = NULL;
	rd_kafka_assign(w->rk, NULL);
	rd_kafka_destroy_flags(w->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	w->rk = NULL;
}

/* Serve librdkafka's callbacks (logs, errors) on this thread. */
void
sa_kafka_serve(SaWorker *w)
{
	rd_kafka_poll(w->rk, 0);
	if (fatal_kafka_error[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("fatal Kafka error: %s", fatal_kafka_error)));
}

/*
 * Since when no broker can be reached (0: reachable).  librdkafka says
 * when all brokers are down but not when one is back: a message read
 * says so, and on a quiet topic a short metadata request every few
 * seconds.
 */
TimestampTz
sa_kafka_unreachable_since(SaWorker *w, bool got_messages)
{
	TimestampTz now;

	if (brokers_down_since == 0)
		return 0;
	if (got_messages)
	{
		brokers_down_since = 0;
		nseen_errors = 0;
		return 0;
	}
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(last_probe, now, SA_UNREACHABLE_PROBE_MS))
	{
		const struct rd_kafka_metadata *md;
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(w->rk, w->st->topic, NULL);

		last_probe = now;
		if (rd_kafka_metadata(w->rk, 0, rkt, &md, 500) == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			rd_kafka_metadata_destroy(md);
			brokers_down_since = 0;
			nseen_errors = 0;
		nseen_errors = 0;
		}
		rd_kafka_topic_destroy(rkt);
	}
	return brokers_down_since;
}

/*
 * Move partitions past what Kafka leaves unread by design: transaction
 * markers and aborted transactions after the last message delivered.  Only
 * with nothing fetched and waiting (the caller has no open batch), so the
 * consumer's position is exactly what the worker has seen.  Returns
 * whether any partition moved.
 */
bool
sa_kafka_skip_markers(SaWorker *w)
{
	rd_kafka_topic_partition_list_t *list;
	bool		moved = false;

	if (w->nparts == 0 || rd_kafka_queue_length(w->queue) > 0)
		return false;
	list = rd_kafka_topic_partition_list_new(w->nparts);
	for (int i = 0; i < w->nparts; i++)
		rd_kafka_topic_partition_list_add(list, w->st->topic, w->parts[i].partition);
	if (rd_kafka_position(w->rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR)
		for (int i = 0; i < list->cnt; i++)
		{
			SaPartition *part = sa_find_partition(w, list->elems[i].partition);

			if (part && list->elems[i].offset >= 0 && list->elems[i].offset > part->next_offset)
			{
				part->next_offset = list->elems[i].offset;
				moved = true;
			}
		}
	rd_kafka_topic_partition_list_destroy(list);
	return moved;
}

/*
 * At create time: say so when the linked librdkafka is known not to work
 * with what the options ask.  SCRAM authentication fails against Kafka 4
 * brokers before librdkafka 2.6.1 (the client nonce is sent twice, which
 * Kafka 4 checks); older brokers accept it.
 */
void
sa_kafka_check_compat(SaStream *st)
{
	ListCell   *lc;

	foreach(lc, sa_option_list(st->options))
	{
		DefElem    *opt = lfirst(lc);

		if ((strcmp(opt->defname, "sasl.mechanisms") == 0 ||
			 strcmp(opt->defname, "sasl.mechanism") == 0) &&
			pg_strncasecmp(strVal(opt->arg), "SCRAM", 5) == 0 &&
			rd_kafka_version() < 0x020601ff)
			ereport(WARNING,
					(errmsg("librdkafka %s cannot authenticate with %s against Kafka 4.x brokers",
							rd_kafka_version_str(), strVal(opt->arg)),
					 errdetail("SCRAM works with Kafka 3.x brokers; against Kafka 4.x it needs librdkafka 2.6.1 or later."),
					 errhint("Use SASL PLAIN over TLS, or build pg_streamagg against a newer librdkafka.")));
	}
}

/* " (the last broker error)" for an error message, or "". */
static const char *
cause_suffix(void)
{
	return kafka_error_cause[0] ? psprintf(" (%s)", kafka_error_cause) : "";
}

/* The last broker error that said more than "all brokers are down". */
const char *
sa_kafka_error_cause(void)
{
	return kafka_error_cause[0] ? kafka_error_cause : "all brokers are down";
}

/* A consumer error delivered as a message: logged once per distinct error. */
void
sa_kafka_message_error(SaWorker *w, const rd_kafka_message_t *msg)
{
	sa_kafka_error(w->rk, msg->err, rd_kafka_message_errstr(msg), NULL);
}

/*
 * Questions to Kafka (metadata, log bounds, offsets by time) block in
 * librdkafka, which knows nothing of PostgreSQL's interrupts.  They are
 * asked in tries whose timeout doubles from SA_ASK_FIRST_MS up to
 * SA_ASK_MAX_MS - a slow broker or network (a round trip of seconds) is
 * answered by a longer try, the usual case by the first - until total_ms
 * have passed.  Between tries the worker serves librdkafka's callbacks and
 * answers interrupts (shutdown, DROP DATABASE), so none waits more than
 * SA_ASK_MAX_MS.  Errors that time can cure (a connection being set up, a
 * leader being elected, a topic just created) are asked again after a
 * short wait; others are returned at once.
 */
typedef rd_kafka_resp_err_t (*SaKafkaQuestion) (SaWorker *w, void *arg, int timeout_ms);

static bool
kafka_err_transient(rd_kafka_resp_err_t err)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR__TIMED_OUT:
		case RD_KAFKA_RESP_ERR__TRANSPORT:
		case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
		case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		case RD_KAFKA_RESP_ERR__STATE:
		case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
		case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
		case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
		case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
		case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
		case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
		case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
		case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
		case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
		case RD_KAFKA_RESP_ERR__NO_OFFSET:
			return true;
		default:
			return false;
	}
}

static rd_kafka_resp_err_t
kafka_ask(SaWorker *w, SaKafkaQuestion question, void *arg, int total_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), total_ms);
	int			try_ms = SA_ASK_FIRST_MS;

	for (;;)
	{
		TimestampTz start;
		rd_kafka_resp_err_t err;
		long		secs;
		int			usecs;

		CHECK_FOR_INTERRUPTS();
		start = GetCurrentTimestamp();
		err = question(w, arg, try_ms);

		if (err == RD_KAFKA_RESP_ERR_NO_ERROR || !kafka_err_transient(err) ||
			GetCurrentTimestamp() >= deadline)
			return err;
		sa_kafka_serve(w);
		/* an error that came back at once is not asked again at once */
		TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
		if (secs == 0 && usecs < 100000)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 200, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		try_ms = Min(try_ms * 2, SA_ASK_MAX_MS);
	}
}

/* The metadata of the stream's topic. */
static rd_kafka_resp_err_t
ask_metadata(SaWorker *w, void *arg, int timeout_ms)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(w->rk, w->st->topic, NULL);
	const struct rd_kafka_metadata **md = arg;
	rd_kafka_resp_err_t err = rd_kafka_metadata(w->rk, 0, rkt, md, timeout_ms);

	rd_kafka_topic_destroy(rkt);

	/* a topic just created may have no leader yet: ask again */
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && (*md)->topic_cnt == 1 &&
		(*md)->topics[0].err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
	{
		err = (*md)->topics[0].err;
		rd_kafka_metadata_destroy(*md);
		*md = NULL;
	}
	return err;
}

/*
 * Offsets by time for many partitions in one question: librdkafka sends
 * one request per leader, so a topic of hundreds of partitions is asked
 * in a round trip or two, not hundreds.
 */
typedef struct SaTimesQuestion
{
	int			n;
	int32	   *partition;
	int64	   *ms;				/* a time each (ms since the epoch), or -2/-1 */
	int64	   *offset;			/* the answers; -1: no message at or after */
} SaTimesQuestion;

typedef struct SaBoundsQuestion
{
	int32		partition;
	int64		lo;
	int64		hi;
} SaBoundsQuestion;

static rd_kafka_resp_err_t ask_times(SaWorker *w, void *arg, int timeout_ms);

/*
 * Log start and end, as offsets for the times -2 and -1:
 * rd_kafka_offsets_for_times keeps to its timeout even when the
 * partition's leader is down, which rd_kafka_query_watermark_offsets does
 * not (it waits for the request's socket timeout).
 */
static rd_kafka_resp_err_t
ask_bounds(SaWorker *w, void *arg, int timeout_ms)
{
	SaBoundsQuestion *q = arg;
	int64		ms = RD_KAFKA_OFFSET_BEGINNING;
	SaTimesQuestion one = {1, &q->partition, &ms, &q->lo};
	rd_kafka_resp_err_t err;

	err = ask_times(w, &one, timeout_ms);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		CHECK_FOR_INTERRUPTS();
		ms = RD_KAFKA_OFFSET_END;
		one.offset = &q->hi;
		err = ask_times(w, &one, timeout_ms);
	}
	return err;
}

/*
 * Kafka's log start (the first offset it still has) and log end (the
 * next offset it will write) of one partition.
 */
rd_kafka_resp_err_t
sa_kafka_log_bounds(SaWorker *w, int32 partition, int64 *lo, int64 *hi)
{
	SaBoundsQuestion q = {partition, -1, -1};
	rd_kafka_resp_err_t err = kafka_ask(w, ask_bounds, &q, SA_METADATA_TIMEOUT_MS);

	*lo = q.lo;
	*hi = q.hi;
	return err;
}

/*
 * The partition ids of the stream's topic, in order.  Raises an error
 * when the brokers cannot be reached or the topic does not exist.  At
 * setup the brokers get SA_METADATA_TIMEOUT_MS to answer; a running
 * worker looking for new partitions waits less, with a batch open.
 */
List *
sa_kafka_partitions(SaWorker *w, bool setup)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	List	   *parts = NIL;

	err = kafka_ask(w, ask_metadata, &md, setup ? SA_METADATA_TIMEOUT_MS : SA_METADATA_CHECK_MS);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		/*
		 * Why the brokers are out of reach (authentication, TLS, ...) is
		 * in an error event that may not have been served yet: serve it,
		 * and tell the last one along with the error.
		 */
		rd_kafka_poll(w->rk, 0);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read the metadata of topic \"%s\" from %s: %s%s",
						w->st->topic, w->st->brokers, rd_kafka_err2str(err), cause_suffix())));
	}
	if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err :
			RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;

		rd_kafka_metadata_destroy(md);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("topic \"%s\" is not available: %s", w->st->topic, rd_kafka_err2str(terr))));
	}
	for (int i = 0; i < md->topics[0].partition_cnt; i++)
		parts = lappend_int(parts, md->topics[0].partitions[i].id);
	rd_kafka_metadata_destroy(md);
	list_sort(parts, list_int_cmp);
	return parts;
}

static rd_kafka_resp_err_t
ask_times(SaWorker *w, void *arg, int timeout_ms)
{
	SaTimesQuestion *q = arg;
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(q->n, 1));
	rd_kafka_resp_err_t err;

	for (int i = 0; i < q->n; i++)
		rd_kafka_topic_partition_list_add(list, w->st->topic, q->partition[i])->offset = q->ms[i];
	err = rd_kafka_offsets_for_times(w->rk, list, timeout_ms);
	for (int i = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < list->cnt; i++)
	{
		rd_kafka_topic_partition_t *e = &list->elems[i];

		err = e->err;
		/* the log start and end always exist: -1/-2 left in place are no answer */
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR && q->ms[i] < 0 && e->offset < 0)
			err = RD_KAFKA_RESP_ERR__NO_OFFSET;
		q->offset[i] = e->offset;
	}
	rd_kafka_topic_partition_list_destroy(list);
	return err;
}

/*
 * The first offset to read in partitions that have none committed yet:
 * 'earliest', 'latest' or a timestamp (the first message at or after it;
 * the end of the log when there is none).  Fills offsets[i] for
 * partitions[i].
 */
void
sa_kafka_resolve_starts(SaWorker *w, int n, const int32 *partitions, const char *start_from,
						int64 *offsets)
{
	SaTimesQuestion q;
	int64		ms = RD_KAFKA_OFFSET_END;
	rd_kafka_resp_err_t err;

	if (n == 0)
		return;
	if (strcmp(start_from, "earliest") == 0)
		ms = RD_KAFKA_OFFSET_BEGINNING;
	else if (strcmp(start_from, "latest") != 0)
	{
		TimestampTz ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																 CStringGetDatum(start_from),
																 ObjectIdGetDatum(InvalidOid),
																 Int32GetDatum(-1)));

		/* before 1970 is the start of the log (-1 and -2 mean other things) */
		ms = Max(0, (ts / 1000) + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * 86400000);
	}
	q.n = n;
	q.partition = (int32 *) partitions;
	q.ms = palloc(sizeof(int64) * n);
	q.offset = offsets;
	for (int i = 0; i < n; i++)
		q.ms[i] = ms;
	err = kafka_ask(w, ask_times, &q, SA_METADATA_TIMEOUT_MS);

	/* no message at or after that time: the end of the log */
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && ms >= 0)
	{
		SaTimesQuestion ends = {0, palloc(sizeof(int32) * n), palloc(sizeof(int64) * n),
		palloc(sizeof(int64) * n)};

		for (int i = 0; i < n; i++)
			if (offsets[i] < 0)
			{
				ends.partition[ends.n] = partitions[i];
				ends.ms[ends.n++] = RD_KAFKA_OFFSET_END;
			}
		if (ends.n > 0)
			err = kafka_ask(w, ask_times, &ends, SA_METADATA_TIMEOUT_MS);
		for (int i = 0, e = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < n; i++)
			if (offsets[i] < 0)
				offsets[i] = ends.offset[e++];
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rd_kafka_poll(w->rk, 0);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read where the partitions of topic \"%s\" start (%s): %s%s",
						w->st->topic, start_from, rd_kafka_err2str(err), cause_suffix())));
	}
}

/* Start fetching every owned partition at its next offset. */
void
sa_kafka_assign(SaWorker *w)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(w->nparts, 1));
	rd_kafka_resp_err_t err;

	for (int i = 0; i < w->nparts; i++)
		rd_kafka_topic_partition_list_add(list, w->st->topic,
										  w->parts[i].partition)->offset = w->parts[i].next_offset;
	err = rd_kafka_assign(w->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not assign the partitions of topic \"%s\": %s",
						w->st->topic, rd_kafka_err2str(err))));
}

/* Publish committed offsets and Kafka's high watermarks for the status views. */
void
sa_kafka_update_watermarks(SaWorker *w)
{
	LWLockAcquire(sa_lock, LW_EXCLUSIVE);
	for (int i = 0; i < w->nparts; i++)
	{
		SaPartition *part = &w->parts[i];
		int64		lo,
					hi;

		if (rd_kafka_get_watermark_offsets(w->rk, w->st->topic, part->partition,
										   &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
			part->live->high_watermark = part->high_watermark = hi;
		part->live->committed = part->committed;
		part->live->max_event_time = part->max_event_time;
		part->live->last_message = part->last_message;
	}
	LWLockRelease(sa_lock);
}
