#!/usr/bin/env bash
# Per-message cost of the worker on a realistic stream (test/perf).
#
#   test/perf/measure.sh throughput   N messages, native: seconds and msg/s
#   test/perf/measure.sh callgrind    the postmaster under callgrind: worker
#                                     instructions per message and its profile
#
# Workload (gen_access.py): access-log JSON, 8 partitions, lz4, event time
# +1 ms per message, 10,000 IPs, ISO-8601 ts with milliseconds and Z.  One
# window: count(*), sum(bytes) by ip.  Every run is checked row by row
# against the exact GROUP BY (EXCEPT both ways) and fails on a difference.
#
# Knobs: MESSAGES (throughput, default 1200000), CG_SMALL / CG_LARGE
# (callgrind: two topics; instructions per message are the difference of
# the two workers' totals over the difference in messages, so set-up costs
# cancel out; defaults 50000 / 150000), SIZE / SLIDE (window, seconds;
# default 60 / tumbling), TS=iso|epoch, PARALLELISM, VERIFY=0 (skip the
# GROUP BY check: for runs whose expected rows would not fit), BATCH (callgrind batch
# size, default 50000), PG_CONFIG, KEEP=1 (keep the scratch directory).
set -euo pipefail

MODE=${1:-throughput}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
BIN=$("$PG_CONFIG" --bindir)
SIZE=${SIZE:-60}
SLIDE=${SLIDE:-}
TS=${TS:-iso}
PARALLELISM=${PARALLELISM:-1}
PY=/usr/bin/python3
RUN_AS=""
[ "$(id -u)" -eq 0 ] && RUN_AS=postgres

as_user() { if [ -n "$RUN_AS" ]; then runuser -u "$RUN_AS" -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/sa_perf.XXXXXX)
chmod 0755 "$WORK"
mkdir -p "$WORK/broker" "$WORK/sock" "$WORK/cg"
[ -n "$RUN_AS" ] && chown -R "$RUN_AS:" "$WORK"
BROKER_WRAPPER=""
PM_PID=""

cleanup() {
	set +e
	if [ -n "$PM_PID" ]; then
		kill -QUIT "$PM_PID" 2>/dev/null
		for _ in $(seq 1 300); do kill -0 "$PM_PID" 2>/dev/null || break; sleep 0.1; done
	fi
	[ -n "$BROKER_WRAPPER" ] && kill "$(head -n 1 "$WORK/broker/pid" 2>/dev/null)" 2>/dev/null
	[ -n "$BROKER_WRAPPER" ] && wait "$BROKER_WRAPPER" 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

as_user "$REPO/test/bin/mock_broker" --dir "$WORK/broker" t1:8 t2:8 >"$WORK/broker.log" 2>&1 &
BROKER_WRAPPER=$!
for _ in $(seq 1 300); do [ -e "$WORK/broker/ready" ] && break; sleep 0.1; done
BROKERS=$(head -n 1 "$WORK/broker/bootstrap")

produce() {	# topic count expect-file
	local expect=(--expect "$3")
	[ "${VERIFY:-1}" = 0 ] && expect=()
	"$PY" "$HERE/gen_access.py" --count "$2" --ts "$TS" --size "$SIZE" --slide "${SLIDE:-0}" \
		"${expect[@]}" | "$REPO/test/bin/sa_produce" -b "$BROKERS" -t "$1" -l -z lz4 >/dev/null
}

as_user "$BIN/initdb" -D "$WORK/pgdata" -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1
cat >>"$WORK/pgdata/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_streamagg'
listen_addresses = ''
unix_socket_directories = '$WORK/sock'
port = 5432
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
autovacuum = off
log_min_messages = info
EOF
if [ "$MODE" = callgrind ]; then
	echo "fsync = off" >>"$WORK/pgdata/postgresql.conf"
	as_user valgrind --tool=callgrind --callgrind-out-file="$WORK/cg/cg.%p" \
		"$BIN/postgres" -D "$WORK/pgdata" >"$WORK/postgres.log" 2>&1 &
else
	as_user "$BIN/postgres" -D "$WORK/pgdata" >"$WORK/postgres.log" 2>&1 &
fi
PM_PID=$!
for _ in $(seq 1 600); do
	as_user "$BIN/pg_isready" -q -h "$WORK/sock" -p 5432 && break
	sleep 0.2
done
psql() { as_user "$BIN/psql" -h "$WORK/sock" -p 5432 -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
psql -c "CREATE EXTENSION pg_streamagg"

slide_arg="NULL"
[ -n "$SLIDE" ] && slide_arg="'$SLIDE seconds'"

# run STREAM TOPIC COUNT EXPECTFILE OPTIONS: create, drain, verify; prints seconds
run_stream() {
	local name=$1 topic=$2 count=$3 expect=$4 opts=$5 t0 t1 done=0 pid
	t0=$(date +%s.%N)
	psql -c "BEGIN" -c "SELECT streamagg.create_stream(name => '$name', topic => '$topic',
		brokers => '$BROKERS', columns => 'ip text, path text, status int, bytes bigint, ts timestamptz',
		format => 'json', event_time => 'ts', parallelism => $PARALLELISM, options => '$opts')" \
		-c "SELECT streamagg.create_window(name => '${name}_w', stream => '$name',
		size => '$SIZE seconds', slide => $slide_arg, group_by => 'ip',
		aggregates => 'count(*) AS hits, sum(bytes) AS bytes')" -c "COMMIT" >/dev/null
	while [ "$done" -lt "$count" ]; do
		sleep 0.05
		done=$(psql -c "SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets WHERE stream = '$name'")
	done
	t1=$(date +%s.%N)
	pid=$(psql -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE application_name LIKE 'pg_streamagg $name/%'")
	if [ "${VERIFY:-1}" = 0 ]; then
		local read gaps
		read=$(psql -c "SELECT sum(messages) FROM streamagg.offsets WHERE stream = '$name'")
		gaps=$(psql -c "SELECT count(*) FROM streamagg.gaps WHERE stream = '$name'")
		echo "$name: $count messages ($read read, $gaps gaps) in $(echo "$t1 - $t0" | bc) s (not verified: VERIFY=0); worker $pid" >&2
		WORKER_PIDS=$pid
		SECONDS_TAKEN=$(echo "$t1 - $t0" | bc)
		return
	fi
	psql -c "CREATE TABLE ${name}_expect (window_start timestamptz, window_end timestamptz, ip text, hits bigint, bytes numeric)"
	psql -c "\\copy ${name}_expect FROM '$expect'"
	local diff
	diff=$(psql -c "SELECT (SELECT count(*) FROM (SELECT window_start, window_end, ip, hits, bytes FROM ${name}_w
		EXCEPT SELECT * FROM ${name}_expect) a) + (SELECT count(*) FROM (SELECT * FROM ${name}_expect
		EXCEPT SELECT window_start, window_end, ip, hits, bytes FROM ${name}_w) b)")
	local rows
	rows=$(psql -c "SELECT count(*) FROM ${name}_w")
	if [ "$diff" != 0 ]; then
		echo "FAIL: $name differs from the GROUP BY in $diff rows" >&2
		exit 1
	fi
	echo "$name: $count messages, $rows rows (equal to the GROUP BY) in $(echo "$t1 - $t0" | bc) s; worker $pid" >&2
	WORKER_PIDS=$pid
	SECONDS_TAKEN=$(echo "$t1 - $t0" | bc)
}

drop_stream() {
	psql -c "SELECT streamagg.drop_stream('$1', cascade => true)" >/dev/null
}

if [ "$MODE" = throughput ]; then
	N=${MESSAGES:-1200000}
	produce t1 "$N" "$WORK/expect1"
	psql -c "CHECKPOINT"
	run_stream s1 t1 "$N" "$WORK/expect1" '{}'
	printf 'RESULT throughput messages=%d seconds=%s msg_per_s=%.0f\n' "$N" "$SECONDS_TAKEN" \
		"$(echo "$N / $SECONDS_TAKEN" | bc -l)"
	grep -E "ERROR|FATAL" "$WORK/postgres.log" | head -5 || true
else
	A=${CG_SMALL:-50000}
	B=${CG_LARGE:-150000}
	BATCH=${BATCH:-50000}
	opts="{\"streamagg.batch_size\": \"$BATCH\", \"streamagg.batch_time\": \"600000\"}"
	produce t1 "$A" "$WORK/expect1"
	produce t2 "$B" "$WORK/expect2"
	run_stream s1 t1 "$A" "$WORK/expect1" "$opts"
	p1=$WORKER_PIDS
	drop_stream s1
	run_stream s2 t2 "$B" "$WORK/expect2" "$opts"
	p2=$WORKER_PIDS
	drop_stream s2
	for _ in $(seq 1 600); do
		[ -s "$WORK/cg/cg.$p1" ] && [ -s "$WORK/cg/cg.$p2" ] && ! kill -0 "$p2" 2>/dev/null && break
		sleep 0.2
	done
	ir() { awk '/^totals:/ {print $2}' "$1"; }
	i1=$(ir "$WORK/cg/cg.$p1")
	i2=$(ir "$WORK/cg/cg.$p2")
	printf 'RESULT callgrind small=%d large=%d Ir_small=%s Ir_large=%s Ir_per_message=%.0f\n' \
		"$A" "$B" "$i1" "$i2" "$(echo "($i2 - $i1) / ($B - $A)" | bc -l)"
	out=${CG_OUT:-$REPO/test/perf/last}
	mkdir -p "$out"
	# the summary line of a forked process's file is not its total: fix it
	sed "s/^summary: .*/summary: $i2/" "$WORK/cg/cg.$p2" >"$out/callgrind.out"
	callgrind_annotate --threshold=95 "$out/callgrind.out" 2>/dev/null | sed -n "1,/Auto-annotated/p" >"$out/self.txt"
	callgrind_annotate --inclusive=yes --threshold=99 "$out/callgrind.out" 2>/dev/null | sed -n "1,/Auto-annotated/p" >"$out/inclusive.txt"
	echo "profile of the large run: $out/self.txt, $out/inclusive.txt" >&2
fi
