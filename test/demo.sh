#!/usr/bin/env bash
# make demo: the main job end to end.
#
# Access-log events go to a Kafka topic; pg_streamagg keeps two window
# tables over them (hits and bytes per IP per minute, errors per IP over
# five minutes sliding by one); the demo prints the tables, the status
# view and the dead letters, then cleans up.
#
# It starts a real Apache Kafka broker (test/kafka/kafka.sh; the jars come
# from Maven Central the first time, KAFKA_VERSION picks the version) and a
# throwaway PostgreSQL cluster unless KAFKA_BROKERS (a bootstrap list of an
# existing cluster; the topic must exist or be auto-created) and PGHOST
# (with PGPORT, PGUSER, PGDATABASE as usual; the server must preload
# pg_streamagg) point at existing ones.  DEMO_BROKER=mock uses librdkafka's
# mock cluster instead of Kafka.  DEMO_MESSAGES sets how many events to
# produce (default 50000).  KEEP=1 (make demo KEEP=1) leaves the broker and
# the cluster running at the end and prints how to connect.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

N=${DEMO_MESSAGES:-50000}
TOPIC=${DEMO_TOPIC:-access-log}
WORK=$(mktemp -d /tmp/pg_streamagg_demo.XXXXXX)
chmod 755 "$WORK"
BROKER_PID=""
KAFKA_DIR=""
OWN_CLUSTER=0

say() { printf '\n==> %s\n' "$*"; }

# as the postgres user when we are root, from a directory it may enter
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then (cd "$WORK" && runuser -u postgres -- "$@"); else "$@"; fi
}

cleanup() {
	set +e
	if [ "${KEEP:-0}" = 1 ] && [ "${DEMO_DONE:-0}" = 1 ]; then
		say "KEEP=1: the broker and the cluster keep running"
		[ "$OWN_CLUSTER" = 1 ] && echo "    psql -h $WORK -p 54329 -U postgres postgres"
		echo "    Kafka: $KAFKA_BROKERS (topic $TOPIC)"
		echo "    stop them: ${PGBIN:-}/pg_ctl -D $WORK/data stop${KAFKA_DIR:+; bash test/kafka/kafka.sh stop $KAFKA_DIR}${BROKER_PID:+; kill $BROKER_PID}"
		return
	fi
	if [ "$OWN_CLUSTER" = 1 ]; then
		as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1
	elif [ -n "${PGHOST:-}" ]; then
		psql -qX -c "SELECT streamagg.drop_stream('access', cascade => true)" >/dev/null 2>&1
	fi
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
	[ -n "$KAFKA_DIR" ] && bash test/kafka/kafka.sh stop "$KAFKA_DIR" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

install_missing() {
	local pkgs=(postgresql-15 postgresql-server-dev-15 librdkafka-dev pkg-config make gcc python3)
	local missing=() p
	if [ -z "${KAFKA_BROKERS:-}" ] && [ "${DEMO_BROKER:-kafka}" != mock ]; then
		pkgs+=(kcat openssl util-linux)
		command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
		command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
	fi
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	say "installing ${missing[*]}"
	local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

build() {
	say "building and installing pg_streamagg"
	make -s >/dev/null
	make -s -C test >/dev/null
	if [ "$(id -u)" -eq 0 ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
}

start_broker() {
	if [ -n "${KAFKA_BROKERS:-}" ]; then
		say "using Kafka at $KAFKA_BROKERS"
		return
	fi
	if [ "${DEMO_BROKER:-kafka}" != mock ]; then
		say "starting Apache Kafka ${KAFKA_VERSION:-$(bash test/kafka/kafka.sh versions | cut -d' ' -f1)} (KRaft, one node on loopback)"
		bash test/kafka/kafka.sh fetch
		KAFKA_DIR=$WORK/kafka
		bash test/kafka/kafka.sh start "$KAFKA_DIR"
		KAFKA_BROKERS=$(cat "$KAFKA_DIR/bootstrap")
		bash test/kafka/kafka.sh tool "$KAFKA_DIR" kafka-topics --create --topic "$TOPIC" --partitions 4
		echo "    bootstrap: $KAFKA_BROKERS"
		return
	fi
	say "starting the test broker (librdkafka's mock cluster, 3 brokers on loopback)"
	test/bin/mock_broker --dir "$WORK/broker" "$TOPIC:4" &
	BROKER_PID=$!
	for _ in $(seq 100); do [ -f "$WORK/broker/ready" ] && break; sleep 0.1; done
	KAFKA_BROKERS=$(cat "$WORK/broker/bootstrap")
	echo "    bootstrap: $KAFKA_BROKERS"
}

start_cluster() {
	PGBIN=$("${PG_CONFIG:-pg_config}" --bindir)
	if [ -n "${PGHOST:-}" ]; then
		say "using PostgreSQL at $PGHOST"
		return
	fi
	say "starting a throwaway PostgreSQL cluster with shared_preload_libraries = 'pg_streamagg'"
	[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
	as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
	cat >>"$WORK/data/postgresql.conf" <<-EOF
	shared_preload_libraries = 'pg_streamagg'
	listen_addresses = ''
	unix_socket_directories = '$WORK'
	port = 54329
	streamagg.batch_time = '100ms'
	EOF
	as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
	OWN_CLUSTER=1
	export PGHOST=$WORK PGPORT=54329 PGUSER=postgres PGDATABASE=postgres
}

produce() {
	say "producing $N access-log events (and 3 broken ones) to topic $TOPIC"
	python3 - "$N" <<-'EOF' | test/bin/sa_produce -b "$KAFKA_BROKERS" -t "$TOPIC" -l -z lz4
	import json, random, sys, time
	n = int(sys.argv[1]); random.seed(7)
	now = int(time.time() * 1000)
	ips = ['10.0.0.%d' % i for i in range(1, 21)]
	urls = ['/', '/login', '/cart', '/search', '/api/items', '/api/orders']
	for i in range(n):
	    ev = {'ip': random.choice(ips), 'url': random.choice(urls),
	          'status': random.choices([200, 301, 404, 500, 503], [80, 5, 8, 4, 3])[0],
	          'bytes': random.randint(200, 20000),
	          'ts': now - 600000 + i * 600000 // n}
	    print('-1\t%s\t\t%s' % (ev['ip'], json.dumps(ev)))
	print('-1\tbroken\t\t{"ip": "10.0.0.1", "status": ')
	print('-1\tbroken\t\t{"ip": "10.0.0.2", "status": "teapot", "bytes": 1, "ts": %d}' % now)
	print('-1\tbroken\t\t\\xff\\xfe not even text')
	EOF
}

run_sql() { psql -X -v ON_ERROR_STOP=1 "$@"; }

install_missing
build
start_broker
start_cluster
produce

say "listening for windows that become final (LISTEN streamagg_closed)"
(cd "$WORK" && psql -X -q -c "LISTEN streamagg_closed" -c "SELECT pg_sleep(6)" >"$WORK/notify.out" 2>&1) &
LISTENER=$!
sleep 0.5

say "creating the stream and its windows (one transaction)"
run_sql -q -o /dev/null <<EOF
CREATE EXTENSION IF NOT EXISTS pg_streamagg;
BEGIN;
SELECT streamagg.create_stream(
    name       => 'access',
    topic      => '$TOPIC',
    brokers    => '$KAFKA_BROKERS',
    columns    => 'ip text, url text, status int, bytes bigint, ts timestamptz',
    format     => 'json',
    event_time => 'ts');
SELECT streamagg.create_window(
    name       => 'hits_per_ip',
    stream     => 'access',
    size       => '1 minute',
    group_by   => 'ip',
    aggregates => 'count(*) AS hits, sum(bytes) AS bytes');
SELECT streamagg.create_window(
    name       => 'errors_per_ip',
    stream     => 'access',
    size       => '5 minutes',
    slide      => '1 minute',
    group_by   => 'ip',
    aggregates => 'count(*) AS errors',
    filter     => 'status >= 500');
COMMIT;
EOF
cat <<EOF
    SELECT streamagg.create_stream(name => 'access', topic => '$TOPIC', ...,
        columns => 'ip text, url text, status int, bytes bigint, ts timestamptz', event_time => 'ts');
    SELECT streamagg.create_window(name => 'hits_per_ip', stream => 'access', size => '1 minute',
        group_by => 'ip', aggregates => 'count(*) AS hits, sum(bytes) AS bytes');
    SELECT streamagg.create_window(name => 'errors_per_ip', stream => 'access', size => '5 minutes',
        slide => '1 minute', group_by => 'ip', aggregates => 'count(*) AS errors', filter => 'status >= 500');
EOF

say "waiting for the workers to commit all $((N + 3)) messages"
for _ in $(seq 600); do
	done_n=$(run_sql -Atq -c "SELECT messages FROM streamagg.status WHERE stream = 'access'")
	[ "${done_n:-0}" -ge $((N + 3)) ] && break
	sleep 0.2
done

say "SELECT * FROM hits_per_ip ORDER BY window_start DESC, hits DESC LIMIT 8"
run_sql -c "SELECT * FROM hits_per_ip ORDER BY window_start DESC, hits DESC LIMIT 8"
say "SELECT * FROM errors_per_ip ORDER BY window_start DESC, errors DESC LIMIT 8"
run_sql -c "SELECT * FROM errors_per_ip ORDER BY window_start DESC, errors DESC LIMIT 8"
say "the totals agree with the events produced"
run_sql -c "SELECT (SELECT sum(hits) FROM hits_per_ip) AS aggregated,
                   (SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'access') AS dead_letters,
                   (SELECT messages FROM streamagg.status WHERE stream = 'access') AS consumed"
say "SELECT * FROM streamagg.status"
run_sql -x -c "SELECT * FROM streamagg.status"
say "SELECT partition, \"offset\", reason, error FROM streamagg.dead_letters"
run_sql -c "SELECT partition, \"offset\", reason, error, encode(payload, 'escape') AS payload FROM streamagg.dead_letters ORDER BY 1, 2"
say "final rows only: the windows the watermark has closed (hits_per_ip_final)"
run_sql -c "SELECT streamagg.watermark('access')"
run_sql -c "SELECT * FROM hits_per_ip_final ORDER BY window_start DESC, hits DESC LIMIT 5"
wait "$LISTENER" 2>/dev/null
say "a notification a listener received when windows became final"
grep -m 1 'Asynchronous notification' "$WORK/notify.out" || echo "    (none arrived within the listener's 6 s)"
DEMO_DONE=1
cat <<EOF

==> what to try next
    make demo KEEP=1            keep the broker and the cluster, and connect with psql
    SELECT streamagg.pause('access'); ... SELECT streamagg.resume('access');
    SELECT streamagg.reset_offsets('access', "to" => 'earliest');   -- a rebuild: the tables are recomputed
    SELECT streamagg.create_window('top_urls', 'access', size => '5 minutes', group_by => 'url',
                                   aggregates => 'count(*) AS hits, avg(bytes) AS avg_bytes');
    README.md: time model, security and privileges, settings; make test, make bench
EOF
[ "${KEEP:-0}" = 1 ] || say "done; cleaning up"
