/*-------------------------------------------------------------------------
 *
 * mock_broker.c
 *	  Standalone Kafka test broker built on librdkafka's mock cluster.
 *
 * No real Kafka is available to the test suite, so this program starts a
 * librdkafka mock cluster whose brokers listen on 127.0.0.1, creates the
 * topics named on the command line and publishes the bootstrap list in a
 * state directory.  While it runs it reads fault injection commands from a
 * FIFO in that directory and appends one answer line per command to
 * DIR/control.log.  SIGTERM or SIGINT shut it down cleanly.
 *
 * The full interface is documented in test/README.md ("Test broker").
 *
 * IDENTIFICATION
 *	  test/broker/mock_broker.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define DEFAULT_BROKERS		3
#define MAX_BROKERS			32
#define MAX_PARTITIONS		10000
#define CONTROL_LINE_MAX	1024
#define CONTROL_MAX_TOKENS	8
#define REASON_MAX			256

/* Everything the running broker needs; one instance lives in main(). */
typedef struct BrokerState
{
	const char *dir;			/* state directory */
	int			nbrokers;		/* number of mock brokers */
	rd_kafka_t *rk;				/* handle that owns the mock cluster */
	rd_kafka_mock_cluster_t *mcluster;
	char	   *control_path;	/* DIR/control (FIFO) */
	char	   *ready_path;		/* DIR/ready */
	char	   *pid_path;		/* DIR/pid */
	bool		fifo_created;	/* we made the FIFO and must remove it */
	int			control_fd;		/* read end of the FIFO, or -1 */
	int			log_fd;			/* DIR/control.log, or -1 */
	char		line[CONTROL_LINE_MAX];	/* partial command line */
	size_t		line_len;
	bool		line_overflow;	/* current line exceeded the buffer */
} BrokerState;

/* A fault command: its name, argument count range and handler. */
typedef bool (*CommandHandler) (BrokerState *state, int argc, char **argv,
								char *reason);

typedef struct ControlCommand
{
	const char *name;
	int			min_args;
	int			max_args;
	CommandHandler handler;
	const char *synopsis;
} ControlCommand;

/* Names accepted for the APIKEY argument of "error" and "clear". */
typedef struct ApiKeyName
{
	const char *name;
	int16_t		key;
} ApiKeyName;

static const ApiKeyName api_key_names[] = {
	{"Produce", 0},
	{"Fetch", 1},
	{"ListOffsets", 2},
	{"Metadata", 3},
	{"OffsetCommit", 8},
	{"OffsetFetch", 9},
	{"FindCoordinator", 10},
	{"JoinGroup", 11},
	{"Heartbeat", 12},
	{"LeaveGroup", 13},
	{"SyncGroup", 14},
	{"ApiVersion", 18},
	{"ApiVersions", 18},
	{"InitProducerId", 22},
	{"OffsetForLeaderEpoch", 23},
	{NULL, 0}
};

static volatile sig_atomic_t shutdown_requested = 0;
static int	verbosity = 0;

/*
 * Print a diagnostic to stderr when -v was given.
 */
static void
vlog(const char *fmt,...)
{
	va_list		ap;

	if (verbosity == 0)
		return;
	fputs("mock_broker: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * Print an error to stderr unconditionally.
 */
static void
report_error(const char *fmt,...)
{
	va_list		ap;

	fputs("mock_broker: ", stderr);
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
			"usage: mock_broker --dir DIR [--brokers N] [-v] [TOPIC:PARTITIONS ...]\n"
			"\n"
			"Runs a librdkafka mock Kafka cluster on 127.0.0.1 until SIGTERM/SIGINT.\n"
			"Writes DIR/bootstrap, DIR/pid, then DIR/ready; reads commands from the\n"
			"FIFO DIR/control and answers each in DIR/control.log.\n"
			"\n"
			"  -d, --dir DIR      state directory (created if missing)\n"
			"  -b, --brokers N    number of brokers, ids 1..N (default %d)\n"
			"  -v, --verbose      log to stderr (twice: also librdkafka mock debug)\n"
			"  -h, --help         show this help\n",
			DEFAULT_BROKERS);
}

/*
 * Librdkafka log callback: forward to stderr only in verbose mode.
 */
static void
rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void) rk;
	if (verbosity > 0)
		fprintf(stderr, "mock_broker: rdkafka %d %s: %s\n", level, fac, buf);
}

/*
 * Async-signal-safe handler: only records that we should stop.
 */
static void
handle_shutdown_signal(int signo)
{
	(void) signo;
	shutdown_requested = 1;
}

/*
 * Parse a whole string as a decimal integer within [min, max].
 */
static bool
parse_long(const char *s, long min, long max, long *out)
{
	char	   *end;
	long		v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/*
 * Return a newly allocated "DIR/name" path.
 */
static char *
path_in_dir(const char *dir, const char *name)
{
	size_t		len = strlen(dir) + strlen(name) + 2;
	char	   *path = malloc(len);

	if (path == NULL)
	{
		report_error("out of memory");
		exit(1);
	}
	snprintf(path, len, "%s/%s", dir, name);
	return path;
}

/*
 * Write a small file in DIR atomically: write a temporary file, then rename
 * it over the final name so readers never see partial contents.
 */
static bool
write_file_atomic(const char *dir, const char *name, const char *content)
{
	char		tmpname[256];
	char	   *tmppath;
	char	   *path;
	size_t		len = strlen(content);
	bool		ok = false;
	int			fd;

	snprintf(tmpname, sizeof(tmpname), ".%s.tmp.%ld", name, (long) getpid());
	tmppath = path_in_dir(dir, tmpname);
	path = path_in_dir(dir, name);

	fd = open(tmppath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		report_error("could not create \"%s\": %s", tmppath, strerror(errno));
	else if (write(fd, content, len) != (ssize_t) len)
		report_error("could not write \"%s\": %s", tmppath, strerror(errno));
	else if (close(fd) != 0)
		report_error("could not close \"%s\": %s", tmppath, strerror(errno));
	else if (rename(tmppath, path) != 0)
		report_error("could not rename \"%s\": %s", tmppath, strerror(errno));
	else
		ok = true;

	if (!ok)
	{
		if (fd >= 0)
			close(fd);
		unlink(tmppath);
	}
	free(tmppath);
	free(path);
	return ok;
}

/*
 * Look up a Kafka API key by number or by (case-insensitive) name.
 */
static bool
lookup_api_key(const char *s, int16_t *out)
{
	long		v;
	int			i;

	if (parse_long(s, 0, INT16_MAX, &v))
	{
		*out = (int16_t) v;
		return true;
	}
	for (i = 0; api_key_names[i].name != NULL; i++)
	{
		if (strcasecmp(s, api_key_names[i].name) == 0)
		{
			*out = api_key_names[i].key;
			return true;
		}
	}
	return false;
}

/*
 * Look up an error code by number or by librdkafka name.  Names are matched
 * case-insensitively with or without the RD_KAFKA_RESP_ERR_ prefix, e.g.
 * NOT_LEADER_FOR_PARTITION or _TRANSPORT.
 */
static bool
lookup_error(const char *s, rd_kafka_resp_err_t *out)
{
	const struct rd_kafka_err_desc *descs;
	size_t		ndescs;
	size_t		i;
	long		v;

	if (parse_long(s, -1000, 1000, &v))
	{
		*out = (rd_kafka_resp_err_t) v;
		return true;
	}
	if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
		s += 18;
	rd_kafka_get_err_descs(&descs, &ndescs);
	for (i = 0; i < ndescs; i++)
	{
		if (descs[i].name != NULL && strcasecmp(s, descs[i].name) == 0)
		{
			*out = descs[i].code;
			return true;
		}
	}
	return false;
}

/*
 * Parse a broker id argument: 1..nbrokers, or -1 meaning all brokers.
 */
static bool
parse_broker_id(BrokerState *state, const char *s, int32_t *out,
				char *reason)
{
	long		v;

	if (!parse_long(s, -1, INT32_MAX, &v) || v == 0 || v > state->nbrokers)
	{
		snprintf(reason, REASON_MAX,
				 "invalid broker id \"%s\" (expected 1..%d or -1)",
				 s, state->nbrokers);
		return false;
	}
	*out = (int32_t) v;
	return true;
}

/*
 * Pause briefly after every mock cluster call.  In librdkafka 2.0.2 the
 * mock thread serves its op queue before draining its wake-up pipe, so a
 * call issued right after the previous one returned can lose its wake-up
 * and wait for the thread's 1 s poll timeout.  Measured: 300 back-to-back
 * calls stalled 15-49 times; with a 0.5 ms pause never, so 1 ms is used.
 */
static void
settle_mock_thread(void)
{
	struct timespec ts = {0, 1000 * 1000};

	nanosleep(&ts, NULL);
}

/*
 * Turn a mock API result into the command outcome.
 */
static bool
mock_result(rd_kafka_resp_err_t err, char *reason)
{
	settle_mock_thread();
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return true;
	snprintf(reason, REASON_MAX, "%s (%s)",
			 rd_kafka_err2name(err), rd_kafka_err2str(err));
	return false;
}

/*
 * Create a topic and give partition p the leader broker (p % N) + 1.  The
 * mock picks leaders at random, which would make "down BROKER_ID" tests
 * nondeterministic.  The replication factor is min(3, N); it has no other
 * effect in the mock (Metadata lists every broker as a replica).
 */
static bool
create_topic(BrokerState *state, const char *name, const char *parts_str,
			 char *reason)
{
	int			rf = state->nbrokers < 3 ? state->nbrokers : 3;
	long		parts;
	long		p;

	if (*name == '\0' || strlen(name) > 249)
	{
		snprintf(reason, REASON_MAX, "invalid topic name");
		return false;
	}
	if (!parse_long(parts_str, 1, MAX_PARTITIONS, &parts))
	{
		snprintf(reason, REASON_MAX, "invalid partition count \"%s\"",
				 parts_str);
		return false;
	}

	vlog("creating topic %s with %ld partition(s)", name, parts);
	if (!mock_result(rd_kafka_mock_topic_create(state->mcluster, name,
												(int) parts, rf),
					 reason))
		return false;
	for (p = 0; p < parts; p++)
	{
		int32_t		leader = (int32_t) (p % state->nbrokers) + 1;

		if (!mock_result(rd_kafka_mock_partition_set_leader(state->mcluster,
															name, (int32_t) p,
															leader),
						 reason))
			return false;
	}
	return true;
}

/* "ping": liveness check. */
static bool
cmd_ping(BrokerState *state, int argc, char **argv, char *reason)
{
	(void) state;
	(void) argc;
	(void) argv;
	(void) reason;
	return true;
}

/* "create TOPIC PARTITIONS": create a new topic. */
static bool
cmd_create(BrokerState *state, int argc, char **argv, char *reason)
{
	(void) argc;
	return create_topic(state, argv[1], argv[2], reason);
}

/* "down BROKER_ID": drop connections and refuse new ones. */
static bool
cmd_down(BrokerState *state, int argc, char **argv, char *reason)
{
	int32_t		id;

	(void) argc;
	if (!parse_broker_id(state, argv[1], &id, reason))
		return false;
	return mock_result(rd_kafka_mock_broker_set_down(state->mcluster, id),
					   reason);
}

/* "up BROKER_ID": accept connections again. */
static bool
cmd_up(BrokerState *state, int argc, char **argv, char *reason)
{
	int32_t		id;

	(void) argc;
	if (!parse_broker_id(state, argv[1], &id, reason))
		return false;
	return mock_result(rd_kafka_mock_broker_set_up(state->mcluster, id),
					   reason);
}

/* "rtt BROKER_ID MS": delay every response of a broker. */
static bool
cmd_rtt(BrokerState *state, int argc, char **argv, char *reason)
{
	int32_t		id;
	long		ms;

	(void) argc;
	if (!parse_broker_id(state, argv[1], &id, reason))
		return false;
	if (!parse_long(argv[2], 0, 3600000, &ms))
	{
		snprintf(reason, REASON_MAX, "invalid rtt \"%s\"", argv[2]);
		return false;
	}
	return mock_result(rd_kafka_mock_broker_set_rtt(state->mcluster, id,
													(int) ms),
					   reason);
}

/* "error APIKEY ERROR COUNT": fail the next COUNT requests of a type. */
static bool
cmd_error(BrokerState *state, int argc, char **argv, char *reason)
{
	rd_kafka_resp_err_t err;
	rd_kafka_resp_err_t *errs;
	int16_t		apikey;
	long		count;
	long		i;

	(void) argc;
	if (!lookup_api_key(argv[1], &apikey))
	{
		snprintf(reason, REASON_MAX, "unknown api key \"%s\"", argv[1]);
		return false;
	}
	if (!lookup_error(argv[2], &err))
	{
		snprintf(reason, REASON_MAX, "unknown error \"%s\"", argv[2]);
		return false;
	}
	if (!parse_long(argv[3], 1, 1000000, &count))
	{
		snprintf(reason, REASON_MAX, "invalid count \"%s\"", argv[3]);
		return false;
	}
	errs = malloc(sizeof(*errs) * (size_t) count);
	if (errs == NULL)
	{
		snprintf(reason, REASON_MAX, "out of memory");
		return false;
	}
	for (i = 0; i < count; i++)
		errs[i] = err;
	rd_kafka_mock_push_request_errors_array(state->mcluster, apikey,
											(size_t) count, errs);
	settle_mock_thread();
	free(errs);
	return true;
}

/* "clear APIKEY": drop the injected errors still pending for a type. */
static bool
cmd_clear(BrokerState *state, int argc, char **argv, char *reason)
{
	int16_t		apikey;

	(void) argc;
	if (!lookup_api_key(argv[1], &apikey))
	{
		snprintf(reason, REASON_MAX, "unknown api key \"%s\"", argv[1]);
		return false;
	}
	rd_kafka_mock_clear_request_errors(state->mcluster, apikey);
	settle_mock_thread();
	return true;
}

/* "leader TOPIC PARTITION BROKER_ID": move a partition's leadership. */
static bool
cmd_leader(BrokerState *state, int argc, char **argv, char *reason)
{
	int32_t		id;
	long		partition;

	(void) argc;
	if (!parse_long(argv[2], 0, MAX_PARTITIONS - 1, &partition))
	{
		snprintf(reason, REASON_MAX, "invalid partition \"%s\"", argv[2]);
		return false;
	}
	if (!parse_broker_id(state, argv[3], &id, reason))
		return false;
	return mock_result(rd_kafka_mock_partition_set_leader(state->mcluster,
														  argv[1],
														  (int32_t) partition,
														  id),
					   reason);
}

static const ControlCommand control_commands[] = {
	{"ping", 0, 0, cmd_ping, "ping"},
	{"create", 2, 2, cmd_create, "create TOPIC PARTITIONS"},
	{"down", 1, 1, cmd_down, "down BROKER_ID"},
	{"up", 1, 1, cmd_up, "up BROKER_ID"},
	{"rtt", 2, 2, cmd_rtt, "rtt BROKER_ID MS"},
	{"error", 3, 3, cmd_error, "error APIKEY ERROR COUNT"},
	{"clear", 1, 1, cmd_clear, "clear APIKEY"},
	{"leader", 3, 3, cmd_leader, "leader TOPIC PARTITION BROKER_ID"},
	{NULL, 0, 0, NULL, NULL}
};

/*
 * Append one answer line to DIR/control.log with a single write(), so a
 * reader never sees half a line.
 */
static void
write_answer(BrokerState *state, bool ok, const char *command,
			 const char *reason)
{
	char		buf[CONTROL_LINE_MAX + REASON_MAX + 32];
	int			len;

	if (ok)
		len = snprintf(buf, sizeof(buf), "ok %s\n", command);
	else
		len = snprintf(buf, sizeof(buf), "error %s: %s\n", command, reason);
	if (len < 0 || (size_t) len >= sizeof(buf))
		len = (int) strlen(buf);
	vlog("%.*s", len - 1, buf);
	if (state->log_fd >= 0 && write(state->log_fd, buf, (size_t) len) != len)
		report_error("could not write control.log: %s", strerror(errno));
}

/*
 * Split a command line into whitespace-separated tokens (in place).
 */
static int
tokenize(char *line, char **argv, int maxtok)
{
	int			argc = 0;
	char	   *save = NULL;
	char	   *tok;

	for (tok = strtok_r(line, " \t", &save); tok != NULL;
		 tok = strtok_r(NULL, " \t", &save))
	{
		if (argc == maxtok)
			return -1;
		argv[argc++] = tok;
	}
	return argc;
}

/*
 * Execute one command line and log its answer.  Blank lines and lines
 * starting with '#' are ignored without an answer.
 */
static void
run_command(BrokerState *state, char *line)
{
	char		command[CONTROL_LINE_MAX];
	char		reason[REASON_MAX] = "";
	char	   *argv[CONTROL_MAX_TOKENS];
	const ControlCommand *cmd;
	size_t		len = strlen(line);
	int			argc;

	/* Trim surrounding whitespace (also a CR from CRLF input). */
	while (len > 0 && strchr(" \t\r", line[len - 1]) != NULL)
		line[--len] = '\0';
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line == '\0' || *line == '#')
		return;

	snprintf(command, sizeof(command), "%s", line);
	argc = tokenize(line, argv, CONTROL_MAX_TOKENS);
	if (argc < 0)
	{
		write_answer(state, false, command, "too many arguments");
		return;
	}
	for (cmd = control_commands; cmd->name != NULL; cmd++)
	{
		if (strcmp(cmd->name, argv[0]) == 0)
			break;
	}
	if (cmd->name == NULL)
	{
		write_answer(state, false, command, "unknown command");
		return;
	}
	if (argc - 1 < cmd->min_args || argc - 1 > cmd->max_args)
	{
		snprintf(reason, sizeof(reason), "usage: %s", cmd->synopsis);
		write_answer(state, false, command, reason);
		return;
	}
	write_answer(state, cmd->handler(state, argc, argv, reason),
				 command, reason);
}

/*
 * Feed bytes read from the FIFO into the line buffer, running each
 * complete line.  Over-long lines are answered with an error.
 */
static void
consume_control_bytes(BrokerState *state, const char *data, size_t n)
{
	size_t		i;

	for (i = 0; i < n; i++)
	{
		char		c = data[i];

		if (c == '\n')
		{
			state->line[state->line_len] = '\0';
			if (state->line_overflow)
				write_answer(state, false, state->line, "line too long");
			else
				run_command(state, state->line);
			state->line_len = 0;
			state->line_overflow = false;
		}
		else if (state->line_len + 1 < sizeof(state->line))
			state->line[state->line_len++] = c;
		else
			state->line_overflow = true;
	}
}

/*
 * Open the FIFO's read end without blocking for a writer.
 */
static int
open_control_fifo(BrokerState *state)
{
	int			fd = open(state->control_path,
						  O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		report_error("could not open \"%s\": %s", state->control_path,
					 strerror(errno));
	return fd;
}

/*
 * Replace the FIFO read end after its writers have all gone.  The new
 * descriptor is opened before the old one is closed so that bytes a new
 * writer already put into the pipe are never discarded.
 */
static bool
reopen_control_fifo(BrokerState *state)
{
	int			fd = open_control_fifo(state);

	if (fd < 0)
		return false;
	close(state->control_fd);
	state->control_fd = fd;
	return true;
}

/*
 * Read everything available from the FIFO.  At end of file (every writer
 * closed) a final unterminated line is run and the FIFO is reopened, since
 * the old descriptor would otherwise report POLLHUP forever.
 */
static bool
drain_control_fifo(BrokerState *state)
{
	char		buf[4096];

	for (;;)
	{
		ssize_t		n = read(state->control_fd, buf, sizeof(buf));

		if (n > 0)
		{
			consume_control_bytes(state, buf, (size_t) n);
			continue;
		}
		if (n == 0)
		{
			if (state->line_len > 0 || state->line_overflow)
				consume_control_bytes(state, "\n", 1);
			return reopen_control_fifo(state);
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		report_error("could not read \"%s\": %s", state->control_path,
					 strerror(errno));
		return false;
	}
}

/*
 * Block SIGINT/SIGTERM everywhere (librdkafka threads inherit the mask) and
 * install the flag-setting handler.  The signals are only let through
 * inside ppoll(), which removes the classic check-then-sleep race.
 */
static void
setup_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t	block;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGTERM);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_shutdown_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/*
 * Parse the command line into state; returns the index of the first
 * topic argument.  Exits with status 2 on usage errors.
 */
static int
parse_options(int argc, char **argv, BrokerState *state)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"brokers", required_argument, NULL, 'b'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	long		v;
	int			c;

	while ((c = getopt_long(argc, argv, "d:b:vh", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				state->dir = optarg;
				break;
			case 'b':
				if (!parse_long(optarg, 1, MAX_BROKERS, &v))
				{
					report_error("invalid broker count \"%s\" (1..%d)",
								 optarg, MAX_BROKERS);
					exit(2);
				}
				state->nbrokers = (int) v;
				break;
			case 'v':
				verbosity++;
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (state->dir == NULL)
	{
		report_error("--dir is required");
		usage(stderr);
		exit(2);
	}
	return optind;
}

/*
 * Create the state directory if needed and clear leftovers of a previous
 * run, so that DIR/ready only ever refers to this process.
 */
static bool
prepare_dir(BrokerState *state)
{
	struct stat st;

	if (mkdir(state->dir, 0755) != 0 && errno != EEXIST)
	{
		report_error("could not create \"%s\": %s", state->dir,
					 strerror(errno));
		return false;
	}
	state->control_path = path_in_dir(state->dir, "control");
	state->ready_path = path_in_dir(state->dir, "ready");
	state->pid_path = path_in_dir(state->dir, "pid");

	unlink(state->ready_path);
	unlink(state->pid_path);
	if (lstat(state->control_path, &st) == 0)
	{
		if (!S_ISFIFO(st.st_mode))
		{
			report_error("\"%s\" exists and is not a FIFO",
						 state->control_path);
			return false;
		}
		unlink(state->control_path);
	}
	return true;
}

/*
 * Create the handle that owns the mock cluster and the cluster itself.
 */
static bool
start_cluster(BrokerState *state)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];

	rd_kafka_conf_set_log_cb(conf, rdkafka_log);
	if (verbosity > 1 &&
		rd_kafka_conf_set(conf, "debug", "mock", errstr,
						  sizeof(errstr)) != RD_KAFKA_CONF_OK)
		report_error("%s", errstr);

	state->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (state->rk == NULL)
	{
		report_error("could not create librdkafka handle: %s", errstr);
		return false;
	}
	state->mcluster = rd_kafka_mock_cluster_new(state->rk, state->nbrokers);
	if (state->mcluster == NULL)
	{
		report_error("could not create mock cluster");
		return false;
	}
	settle_mock_thread();
	vlog("mock cluster with %d broker(s) at %s", state->nbrokers,
		 rd_kafka_mock_cluster_bootstraps(state->mcluster));
	return true;
}

/*
 * Create the topics given on the command line as NAME:PARTITIONS.
 */
static bool
create_initial_topics(BrokerState *state, int argc, char **argv)
{
	char		reason[REASON_MAX];
	int			i;

	for (i = 0; i < argc; i++)
	{
		char	   *spec = strdup(argv[i]);
		char	   *parts = spec ? strchr(spec, ':') : NULL;
		bool		ok;

		if (parts == NULL)
		{
			report_error("invalid topic \"%s\" (expected NAME:PARTITIONS)",
						 argv[i]);
			free(spec);
			return false;
		}
		*parts++ = '\0';
		ok = create_topic(state, spec, parts, reason);
		if (!ok)
			report_error("could not create topic \"%s\": %s", argv[i],
						 reason);
		free(spec);
		if (!ok)
			return false;
	}
	return true;
}

/*
 * Create the FIFO and control.log, then publish bootstrap, pid and, last,
 * ready.
 */
static bool
publish_state(BrokerState *state)
{
	char		buf[4096];
	char	   *log_path;

	if (mkfifo(state->control_path, 0600) != 0)
	{
		report_error("could not create FIFO \"%s\": %s",
					 state->control_path, strerror(errno));
		return false;
	}
	state->fifo_created = true;
	if ((state->control_fd = open_control_fifo(state)) < 0)
		return false;

	log_path = path_in_dir(state->dir, "control.log");
	state->log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
						 O_CLOEXEC, 0644);
	if (state->log_fd < 0)
		report_error("could not open \"%s\": %s", log_path, strerror(errno));
	free(log_path);
	if (state->log_fd < 0)
		return false;

	snprintf(buf, sizeof(buf), "%s\n",
			 rd_kafka_mock_cluster_bootstraps(state->mcluster));
	if (!write_file_atomic(state->dir, "bootstrap", buf))
		return false;
	snprintf(buf, sizeof(buf), "%ld\n", (long) getpid());
	if (!write_file_atomic(state->dir, "pid", buf))
		return false;
	return write_file_atomic(state->dir, "ready", "");
}

/*
 * Serve FIFO commands until a shutdown signal arrives.
 */
static bool
serve(BrokerState *state, const sigset_t *waitmask)
{
	while (!shutdown_requested)
	{
		struct pollfd pfd;

		pfd.fd = state->control_fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (ppoll(&pfd, 1, NULL, waitmask) < 0)
		{
			if (errno == EINTR)
				continue;
			report_error("poll failed: %s", strerror(errno));
			return false;
		}
		if (pfd.revents != 0 && !drain_control_fifo(state))
			return false;
	}
	vlog("shutting down");
	return true;
}

/*
 * Remove ready, the FIFO and pid, and release librdkafka resources.
 * DIR/bootstrap and DIR/control.log are kept for post-mortem inspection.
 */
static void
shutdown_broker(BrokerState *state)
{
	if (state->ready_path != NULL)
		unlink(state->ready_path);
	if (state->fifo_created)
		unlink(state->control_path);
	if (state->pid_path != NULL)
		unlink(state->pid_path);
	if (state->control_fd >= 0)
		close(state->control_fd);
	if (state->log_fd >= 0)
		close(state->log_fd);
	if (state->mcluster != NULL)
		rd_kafka_mock_cluster_destroy(state->mcluster);
	if (state->rk != NULL)
		rd_kafka_destroy(state->rk);
	free(state->control_path);
	free(state->ready_path);
	free(state->pid_path);
}

int
main(int argc, char **argv)
{
	BrokerState state;
	sigset_t	waitmask;
	bool		ok;
	int			first_topic;

	memset(&state, 0, sizeof(state));
	state.nbrokers = DEFAULT_BROKERS;
	state.control_fd = -1;
	state.log_fd = -1;

	first_topic = parse_options(argc, argv, &state);
	setup_signals(&waitmask);

	ok = prepare_dir(&state) &&
		start_cluster(&state) &&
		create_initial_topics(&state, argc - first_topic, argv + first_topic) &&
		publish_state(&state);
	if (ok)
		ok = serve(&state, &waitmask);

	shutdown_broker(&state);
	return ok ? 0 : 1;
}
