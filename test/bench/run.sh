#!/usr/bin/env bash
# pg_streamagg benchmark driver, run by `make bench`.
#
#   1. installs missing Debian packages (PostgreSQL, librdkafka, a JDK,
#      Maven, gnuplot, ...)
#   2. builds and installs the extension (like `make test`), builds the test
#      producer (make -C test), the benchmark's C tools (make -C test/bench)
#      and its Java peers (Flink SQL and Kafka Streams, pinned Maven projects
#      in test/bench/flink and test/bench/kstreams; Maven fetches them)
#   3. starts a real Kafka broker (test/kafka/kafka.sh) unless KAFKA_BROKERS
#      names a cluster, and a throwaway PostgreSQL cluster with pg_streamagg
#      preloaded, as an unprivileged user when run as root
#   4. runs test/bench/bench.py: throughput of every variant and peer on the
#      realistic and dense workloads, latency at a steady rate, worker memory
#      on a backlog
#   5. prints the table and writes test/bench/results/latest.md,
#      latest.json and throughput.png
#   6. tears everything down (also on failure or Ctrl-C)
#
# Environment knobs (all optional):
#   KAFKA_BROKERS=host:port,...  use this Kafka cluster instead of starting one
#                             (the benchmark creates and deletes its own topics,
#                             named streamagg_bench_<pid>_*)
#   KAFKA_VERSION=x.y.z       the Kafka version kafka.sh runs (its default
#                             otherwise); with KAFKA_BROKERS, only reported
#   KAFKA_HEAP=1g             heap of the broker kafka.sh starts
#   BENCH_REPEAT=3            rounds of the throughput runs (median reported)
#   BENCH_MESSAGES=1200000    messages of the realistic topic (8 partitions)
#   BENCH_DENSE_MESSAGES=1000000  messages of the dense topic
#   BENCH_FLINK_REPEAT=2      rounds that also run Flink SQL (~1 min each)
#   BENCH_KSTREAMS_REPEAT=1   runs of Kafka Streams
#   BENCH_HOP_SECONDS=60      time bound of each hopping-window run
#   BENCH_LATENCY_RATE=20000  msg/s of the latency test
#   BENCH_LATENCY_SECONDS=20  duration of the latency test
#   BENCH_BACKLOG=5000000     messages of the memory test
#   BENCH_BACKLOG_PARTITIONS=8
#   BENCH_SKIP="latency,rss"  parts to leave out
#   BENCH_NO_REFERENCE=1      leave out the reference row
#   BENCH_VARIANTS=bare,sa1   run only these throughput variants (development;
#                             bench.py lists them)
#   BENCH_PERF=1              also profile the worker with perf (needs root
#                             or perf_event_paranoid <= 1; installs linux-perf)
#   BENCH_SHARED_BUFFERS=512MB
#   BENCH_JAVA_HEAP=2g        -Xmx of the Java peers
#   BENCH_RESULTS=dir         write the results there instead of test/bench/results
#   SKIP_BUILD=1              use the installed extension as it is
#   BENCH_BUILD_DESC=text     what that installed extension was built from
#                             (for the report; default: this checkout)
#   KEEP_BENCH_DIR=1          keep the scratch directory (logs, data)
#   TEST_USER=name            unprivileged user to run PostgreSQL as (root only)
#   PG_CONFIG=path            PostgreSQL to build and run against

# (some functions below are only reached from traps)
# shellcheck disable=SC2317
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/../.." && pwd)
cd "$REPO" || exit 1

REQUIRED_PKGS=(postgresql-15 postgresql-server-dev-15 librdkafka-dev pkg-config
	make gcc python3 python3-confluent-kafka python3-psycopg2 gnuplot-nox
	openjdk-17-jdk-headless maven)
[ "${BENCH_PERF:-0}" = 1 ] && REQUIRED_PKGS+=(linux-perf)

WORK=""
RUN_AS=""
PGDATA_DIR=""
BROKER_PID=""
KAFKA_DIR=""
KAFKA_SH=$REPO/test/kafka/kafka.sh
BROKER_DESC=""
CHILD_PID=""
FAILED=0
PY=/usr/bin/python3    # Debian's python3: the one python3-* packages serve
[ -x "$PY" ] || PY=python3

say()  { printf '==> %s\n' "$*"; }
warn() { printf '!!! %s\n' "$*" >&2; }

die() {
	warn "$*"
	FAILED=1
	exit 1
}

as_user() {
	if [ -n "$RUN_AS" ]; then
		runuser -u "$RUN_AS" -- "$@"
	else
		"$@"
	fi
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		warn "need root privileges for: $* (and sudo is not available)"
		return 1
	fi
}

show_tail() {
	local file=$1 lines=${2:-40}
	[ -f "$file" ] || return 0
	printf -- '---- last %s lines of %s ----\n' "$lines" "$file"
	tail -n "$lines" "$file"
	printf -- '---- end ----\n'
}

# stop_pid PID SIGNAL: signal, wait up to 10 s, then SIGKILL
stop_pid() {
	local pid=$1 sig=$2
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
}

# ---------------------------------------------------------------- teardown

# descendants PID: all processes below PID, from /proc
descendants() {
	local stat line rest pid p c
	local -A kids=()
	for stat in /proc/[0-9]*/stat; do
		{ read -r line <"$stat"; } 2>/dev/null || continue
		rest=${line##*) }
		rest=${rest#* }
		pid=${stat#/proc/}
		pid=${pid%/stat}
		kids[${rest%% *}]+=" $pid"
	done
	local queue=("$1")
	while [ "${#queue[@]}" -gt 0 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		for c in ${kids[$p]:-}; do
			echo "$c"
			queue+=("$c")
		done
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	trap '' PIPE
	if [ -n "$CHILD_PID" ]; then
		# bench.py and whatever it started (consumers, producers, perf)
		local p
		for p in $(descendants "$CHILD_PID") "$CHILD_PID"; do
			stop_pid "$p" TERM
		done
		wait "$CHILD_PID" 2>/dev/null
	fi
	if [ -n "$PGDATA_DIR" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
		as_user "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
			stop_pid "$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null)" QUIT
	fi
	if [ -n "$KAFKA_DIR" ]; then
		bash "$KAFKA_SH" stop "$KAFKA_DIR" >>"$WORK/log/kafka.log" 2>&1 ||
			warn "kafka.sh stop failed (see $WORK/log/kafka.log)"
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
			show_tail "$WORK/log/postgres.log" 40
			show_tail "$WORK/log/kafka.log" 20
		fi
		if [ "${KEEP_BENCH_DIR:-0}" = 1 ]; then
			say "scratch directory kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	[ "$FAILED" -ne 0 ] && [ "$rc" -eq 0 ] && rc=1
	exit "$rc"
}
trap cleanup EXIT
trap 'warn "interrupted"; FAILED=1; exit 130' INT TERM HUP

# ---------------------------------------------------------------- 1. packages

install_packages() {
	if ! command -v dpkg-query >/dev/null 2>&1; then
		warn "dpkg-query not found: not a Debian system, assuming dependencies are present"
		return 0
	fi
	local missing=() p
	for p in "${REQUIRED_PKGS[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	say "installing missing packages: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
		die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------- 2. build

build() {
	local log=$WORK/log/build.log
	if [ "${SKIP_BUILD:-0}" = 1 ]; then
		say "SKIP_BUILD=1: using the installed extension"
	else
		say "building and installing the extension"
		{ make PG_CONFIG="$PG_CONFIG" && as_root make PG_CONFIG="$PG_CONFIG" install; } \
			>"$log" 2>&1 || { show_tail "$log" 60; die "building the extension failed"; }
	fi
	say "building the test producer and the benchmark tools"
	{ make -C test && make -C test/bench; } >>"$log" 2>&1 ||
		{ show_tail "$log" 60; die "building the tools failed"; }
	say "building the Java peers (Flink SQL, Kafka Streams) with Maven"
	local p
	for p in flink kstreams; do
		mvn -B -q -f "$BENCH/$p/pom.xml" package >>"$log" 2>&1 ||
			{ show_tail "$log" 60; die "building test/bench/$p failed (Maven)"; }
	done
	[ -f "$("$PG_CONFIG" --pkglibdir)/pg_streamagg.so" ] ||
		die "pg_streamagg is not installed (run without SKIP_BUILD=1)"
}

# ---------------------------------------------------------------- 3. user, broker, cluster

pick_user() {
	[ "$(id -u)" -eq 0 ] || return 0
	if [ -n "${TEST_USER:-}" ]; then
		RUN_AS=$TEST_USER
	elif getent passwd postgres >/dev/null; then
		RUN_AS=postgres
	else
		RUN_AS=streamagg_test
		getent passwd "$RUN_AS" >/dev/null ||
			useradd --system --no-create-home --shell /bin/sh "$RUN_AS" ||
			die "could not create user $RUN_AS"
	fi
	getent passwd "$RUN_AS" >/dev/null || die "user $RUN_AS does not exist"
}

create_workdir() {
	WORK=$(mktemp -d /tmp/pg_streamagg_bench.XXXXXX) || die "mktemp failed"
	chmod 0755 "$WORK"
	mkdir -p "$WORK/log" "$WORK/tmp" "$WORK/sock" "$WORK/broker"
	[ -n "$RUN_AS" ] && { chown -R "$RUN_AS:" "$WORK" || die "chown $WORK failed"; }
}

start_broker() {
	if [ -n "${KAFKA_BROKERS:-}" ]; then
		BROKERS=$KAFKA_BROKERS
		BROKER_DESC="the existing cluster at $KAFKA_BROKERS (KAFKA_BROKERS)"
		say "using the Kafka cluster at $BROKERS"
		return
	fi
	[ -f "$KAFKA_SH" ] ||
		die "no Kafka broker: test/kafka/kafka.sh is missing; set KAFKA_BROKERS=host:port"
	say "fetching and starting a Kafka broker (test/kafka/kafka.sh)"
	bash "$KAFKA_SH" fetch >>"$WORK/log/kafka.log" 2>&1 ||
		{ show_tail "$WORK/log/kafka.log"; die "kafka.sh fetch failed"; }
	KAFKA_DIR=$WORK/kafka
	KAFKA_HEAP=${KAFKA_HEAP:-1g} bash "$KAFKA_SH" start "$KAFKA_DIR" >>"$WORK/log/kafka.log" 2>&1 ||
		{ show_tail "$WORK/log/kafka.log"; die "kafka.sh start failed"; }
	BROKERS=$(head -n 1 "$KAFKA_DIR/bootstrap")
	BROKER_PID=$(bash "$KAFKA_SH" pid "$KAFKA_DIR" 1 2>/dev/null) || BROKER_PID=""
	if [ -z "${KAFKA_VERSION:-}" ]; then
		# the version kafka.sh ran: kafka_2.13-VERSION.jar in its jar directory
		local jar
		jar=$(ls "$(bash "$KAFKA_SH" lib)"/kafka_2.13-*.jar 2>/dev/null | grep -v -- '-test' | head -n 1)
		jar=${jar##*/kafka_2.13-}
		KAFKA_VERSION=${jar%.jar}
	fi
	BROKER_DESC="one Apache Kafka broker (KRaft) on this machine, started by test/kafka/kafka.sh"
}

free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# synchronous_commit stays on: exactly once needs the batch's commit (window
# rows + offsets) to be durable before the messages count as consumed.
start_cluster() {
	PGDATA_DIR=$WORK/pgdata
	PGPORT=$(free_port)
	say "starting a throwaway PostgreSQL cluster (port $PGPORT on 127.0.0.1 for the JDBC peer)"
	as_user "$BINDIR/initdb" -D "$PGDATA_DIR" -A trust -E UTF8 --locale=C.UTF-8 \
		>"$WORK/log/initdb.log" 2>&1 || { show_tail "$WORK/log/initdb.log"; die "initdb failed"; }
	cat >>"$PGDATA_DIR/postgresql.conf" <<-EOF
		# pg_streamagg benchmark
		shared_preload_libraries = 'pg_streamagg'
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$WORK/sock'
		port = $PGPORT
		max_worker_processes = 32
		shared_buffers = ${BENCH_SHARED_BUFFERS:-512MB}
		max_wal_size = 8GB
		min_wal_size = 1GB
		checkpoint_timeout = 30min
		synchronous_commit = on
		fsync = on
		log_min_messages = info
		log_line_prefix = '%m [%p] %b '
	EOF
	as_user "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$WORK/log/postgres.log" -w -t 60 start \
		>/dev/null || die "PostgreSQL did not start"
	DBUSER=${RUN_AS:-$(id -un)}
	DSN="host=$WORK/sock port=$PGPORT user=$DBUSER dbname=postgres"
	JDBC_URL="jdbc:postgresql://127.0.0.1:$PGPORT/postgres"
	"$BINDIR/psql" "$DSN" -qAtc "CREATE EXTENSION pg_streamagg" >/dev/null ||
		die "CREATE EXTENSION pg_streamagg failed"
}

# ---------------------------------------------------------------- main

install_packages
if [ -z "${PG_CONFIG:-}" ]; then
	if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
command -v "$PG_CONFIG" >/dev/null 2>&1 || die "pg_config not found ($PG_CONFIG)"
BINDIR=$("$PG_CONFIG" --bindir)
export PG_CONFIG

pick_user
create_workdir
build
start_broker
start_cluster

args=(--dsn "$DSN" --jdbc-url "$JDBC_URL" --db-user "$DBUSER" --brokers "$BROKERS"
	--broker-pid "${BROKER_PID:-0}" --broker-desc "$BROKER_DESC"
	--kafka-version "${KAFKA_VERSION:-}" --topic-prefix "streamagg_bench_$$_"
	--pgdata "$PGDATA_DIR" --tools "$BENCH/bin" --sa-produce "$REPO/test/bin/sa_produce"
	--java "$(command -v java)" --java-dir "$BENCH" --java-heap "${BENCH_JAVA_HEAP:-2g}"
	--build-desc "${BENCH_BUILD_DESC:-}"
	--tmp "$WORK/tmp" --results "${BENCH_RESULTS:-$BENCH/results}"
	--repeat "${BENCH_REPEAT:-3}" --messages "${BENCH_MESSAGES:-1200000}"
	--dense-messages "${BENCH_DENSE_MESSAGES:-1000000}"
	--flink-repeat "${BENCH_FLINK_REPEAT:-2}" --kstreams-repeat "${BENCH_KSTREAMS_REPEAT:-1}"
	--hop-seconds "${BENCH_HOP_SECONDS:-60}"
	--latency-rate "${BENCH_LATENCY_RATE:-20000}"
	--latency-seconds "${BENCH_LATENCY_SECONDS:-20}"
	--backlog "${BENCH_BACKLOG:-5000000}"
	--backlog-partitions "${BENCH_BACKLOG_PARTITIONS:-8}"
	--skip "${BENCH_SKIP:-}")
[ "${BENCH_NO_REFERENCE:-0}" = 1 ] && args+=(--no-reference)
[ -n "${BENCH_VARIANTS:-}" ] && args+=(--variants "$BENCH_VARIANTS")
[ "${BENCH_PERF:-0}" = 1 ] && args+=(--perf)

T0=$(date +%s)
# bench.py runs as the invoking user: it only talks to the cluster through
# its socket and reads the worker's /proc entries (root, or the same user).
"$PY" "$BENCH/bench.py" "${args[@]}" &
CHILD_PID=$!
wait "$CHILD_PID"
rc=$?
CHILD_PID=""
[ "$rc" -eq 0 ] || die "bench.py failed (exit status $rc)"
say "benchmark finished in $(($(date +%s) - T0)) s"
exit 0
