#!/usr/bin/env bash
# pg_streamagg test driver, run by `make test`.
#
#   1. installs missing Debian packages
#   2. builds the extension (-Werror) and the test tools, installs the extension
#   3. copies the tree into a scratch directory owned by an unprivileged user
#      (PostgreSQL refuses to run as root)
#   4. starts the test broker (test/bin/mock_broker)
#   5. runs the pg_regress suite (sql/*.sql against expected/*.out)
#   6. runs the TAP suite (test/t/*.pl); every TAP script gets a fresh test
#      broker of its own, so faults injected by one script never leak into
#      the next and scripts can run in parallel (TAP_JOBS).  A script with a
#      line "# broker: kafka [OPTIONS]" gets a real Apache Kafka instead
#      (test/kafka/kafka.sh start DIR OPTIONS: --nodes N, --sasl, --ssl);
#      the others get librdkafka's mock cluster (test/bin/mock_broker)
#   7. tears everything down and prints one final line: "N passed, M failed"
#
# Environment knobs (all optional):
#   TESTS="t/003_foo.pl 004"  run only these TAP scripts (t/NAME.pl, NAME.pl,
#                             NAME or a numeric prefix)
#   SKIP_REGRESS=1            skip the pg_regress suite
#   SKIP_TAP=1                skip the TAP suite
#   SKIP_BUILD=1              do not rebuild/reinstall (development shortcut)
#   KEEP_TEST_DIR=1           keep the scratch directory after the run
#   TAP_JOBS=2                TAP scripts to run at the same time (1: one by one)
#   TAP_SCRIPT_TIMEOUT=900    seconds before one TAP script is killed
#   REGRESS_TIMEOUT=900       seconds before the pg_regress run is killed
#   TEST_USER=name            unprivileged user to run as when invoked as root
#   PG_CONFIG=path            pg_config to build/test against
#   KAFKA_VERSION=x.y.z       Apache Kafka version of the real-broker scripts
#                             (default: the first of test/kafka/kafka.sh's
#                             pinned KAFKA_VERSIONS)
#   SKIP_KAFKA=1              skip the scripts that need a real broker
#   KAFKACHECK=1              (make kafkacheck) run only the scripts marked
#                             "# kafkacheck: yes", against the existing
#                             cluster in KAFKA_BROKERS (no broker of ours)
#   SA_CACHE=dir              where the Kafka jars are cached
#                             (default $HOME/.cache/pg_streamagg)

# (some functions below are only reached from traps)
# shellcheck disable=SC2317
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1

PASSED=0
FAILED=0
BROKEN=0          # infrastructure failures (build, broker, ...)
SUMMARY_DONE=0
WORK=""
BROKER_WRAPPERS=() # pids of the background broker commands
declare -A JOB_SCRIPT=() JOB_T0=()   # running TAP jobs, by pid
RUN_AS=""         # empty: run tests as the invoking user
FAILED_ITEMS=()

REQUIRED_PKGS=(postgresql-15 postgresql-server-dev-15 librdkafka-dev
	libipc-run-perl kcat pkg-config make gcc python3-confluent-kafka
	python3-psycopg2 openssl util-linux)
# the real-broker scripts need a JRE (Kafka 4 wants 17 or later) and Maven;
# either may come from elsewhere than these packages
command -v java >/dev/null 2>&1 || REQUIRED_PKGS+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || REQUIRED_PKGS+=(maven)

KAFKA_SH=$REPO/test/kafka/kafka.sh
EXTERNAL_KAFKA=""
if [ "${KAFKACHECK:-0}" = 1 ]; then
	EXTERNAL_KAFKA=${KAFKA_BROKERS:-}
fi
KAFKA_TEST_CACHE=""   # SA_CACHE as the test user sees it

# ---------------------------------------------------------------- helpers

say()  { printf '==> %s\n' "$*"; }
warn() { printf '!!! %s\n' "$*" >&2; }

now_s() { date +%s; }

# Record an infrastructure failure; the run continues to teardown.
broken() {
	warn "$*"
	BROKEN=$((BROKEN + 1))
	FAILED_ITEMS+=("harness: $*")
}

# Print the last lines of a file to the terminal, framed.
show_tail() {
	local file=$1 lines=${2:-60}
	[ -f "$file" ] || return 0
	printf -- '---- last %s lines of %s ----\n' "$lines" "${file#"$WORK"/}"
	tail -n "$lines" "$file"
	printf -- '---- end of %s ----\n' "${file#"$WORK"/}"
}

# Run a command as the unprivileged test user (or as ourselves when not root).
as_user() {
	if [ -n "$RUN_AS" ]; then
		runuser -u "$RUN_AS" -- "$@"
	else
		"$@"
	fi
}

# Run a command with root privileges (directly, or through sudo).
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

# Run a long command in the background and wait for it, so that an
# interrupt (Ctrl-C, SIGTERM) reaches our trap at once instead of after the
# command has finished; the trap then stops the command's process tree.
# run_child LOG CMD...: run CMD in the scratch copy of the tree, output to LOG.
CHILD_PID=""
run_child() {
	local log=$1
	shift
	(cd "$WORK/src" && "$@") >"$log" 2>&1 &
	CHILD_PID=$!
	wait "$CHILD_PID"
	local rc=$?
	CHILD_PID=""
	return "$rc"
}

# ---------------------------------------------------------------- teardown

# descendants PID: all processes below PID (read from /proc; procps may be
# missing on a minimal system)
descendants() {
	local stat line rest pid p c
	local -A kids=()
	for stat in /proc/[0-9]*/stat; do
		{ read -r line <"$stat"; } 2>/dev/null || continue
		rest=${line##*) }         # fields after "pid (comm) "
		rest=${rest#* }           # drop the state
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

# Stop a process and everything below it.
kill_tree() {
	local pids p
	pids="$(descendants "$1") $1"
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null
	for _ in $(seq 1 50); do
		local alive=0
		for p in $pids; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ "$alive" -eq 0 ] && return 0
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null
}

stop_pid() {
	# stop_pid PID SIGNAL: signal, wait up to 10 s, then SIGKILL
	local pid=$1 sig=$2
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
}

# stop_leftover_postgres [DIR [PATH_GLOB]]: stop every postmaster whose data
# directory lives under DIR (default: the scratch dir) and matches PATH_GLOB.
stop_leftover_postgres() {
	local dir=${1:-$WORK} glob=${2:-*}
	[ -n "$dir" ] && [ -d "$dir" ] || return 0
	local pidfile pid cmd
	while IFS= read -r pidfile; do
		pid=$(head -n 1 "$pidfile" 2>/dev/null)
		case "$pid" in '' | *[!0-9]*) continue ;; esac
		kill -0 "$pid" 2>/dev/null || continue
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
		case "$cmd" in
			*postgres* | *postmaster*)
				say "stopping leftover postgres (pid $pid, ${pidfile%/postmaster.pid})"
				stop_pid "$pid" QUIT
				;;
		esac
	done < <(find "$dir" -path "$glob" -name postmaster.pid -type f 2>/dev/null)
}

# stop_broker DIR: stop the broker serving DIR
stop_broker() {
	local dir=$1 pid=""
	if [ -f "$dir/pid" ]; then
		pid=$(head -n 1 "$dir/pid" 2>/dev/null)
		case "$pid" in '' | *[!0-9]*) pid="" ;; esac
	fi
	[ -n "$pid" ] && stop_pid "$pid" TERM
}

# stop_kafka DIR: stop the Apache Kafka cluster of DIR (and any leftover JVM
# of it)
stop_kafka() {
	local dir=$1
	[ -d "$dir" ] || return 0
	KAFKA_SH_QUIET=1 bash "$KAFKA_SH" stop "$dir" >/dev/null 2>&1
}

stop_all_brokers() {
	local d p
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		for d in "$WORK"/broker*; do
			[ -d "$d" ] && stop_broker "$d"
		done
		for d in "$WORK"/kafka_*; do
			[ -d "$d" ] && stop_kafka "$d"
		done
	fi
	# the background commands may be runuser wrappers: make sure they are gone
	for p in "${BROKER_WRAPPERS[@]}"; do
		stop_pid "$p" TERM
		wait "$p" 2>/dev/null
	done
	BROKER_WRAPPERS=()
}

# On failure keep the logs (only the logs) in a separate directory.
save_logs() {
	[ -n "$WORK" ] && [ -d "$WORK" ] || return 0
	local dest
	dest=$(mktemp -d /tmp/pg_streamagg_logs.XXXXXX) || return 0
	(
		cd "$WORK" || exit 0
		find . \( -path ./src/tmp_check/portlock -prune \) -o -type f \
			\( -name '*.log' -o -name '*.out' -o -name '*.diffs' \
			-o -name 'regress_log_*' -o -name 'control.log' \) -print 2>/dev/null |
			grep -v -e '^\./src/expected/' -e '^\./src/sql/' -e '/pgdata/' |
			while IFS= read -r f; do
				mkdir -p "$dest/$(dirname "$f")"
				cp -p "$f" "$dest/$f" 2>/dev/null
			done
	)
	chmod -R a+rX "$dest" 2>/dev/null
	say "logs kept in $dest"
}

print_summary() {
	[ "$SUMMARY_DONE" -eq 1 ] && return 0
	SUMMARY_DONE=1
	local failed=$((FAILED + BROKEN))
	if [ "${#FAILED_ITEMS[@]}" -gt 0 ]; then
		echo
		echo "Failures:"
		printf '  - %s\n' "${FAILED_ITEMS[@]}"
	fi
	echo
	echo "$PASSED passed, $failed failed"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	trap '' PIPE    # stdout may be gone; finish the cleanup anyway
	local p
	for p in $CHILD_PID "${!JOB_SCRIPT[@]}"; do
		kill_tree "$p"
		wait "$p" 2>/dev/null
	done
	CHILD_PID=""
	JOB_SCRIPT=()
	stop_all_brokers
	stop_leftover_postgres
	local failed=$((FAILED + BROKEN))
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "${KEEP_TEST_DIR:-0}" = 1 ]; then
			say "scratch directory kept: $WORK"
		else
			[ "$failed" -gt 0 ] && save_logs
			rm -rf "$WORK"
		fi
	fi
	print_summary
	if [ "$failed" -gt 0 ]; then
		exit 1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'warn "interrupted"; BROKEN=$((BROKEN + 1)); exit 130' INT TERM HUP
trap 'BROKEN=$((BROKEN + 1)); exit 141' PIPE

# Abort the run (infrastructure problem): counts as one failure.
die() {
	broken "$*"
	exit 1
}

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
	if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
		die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
		die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------- 2. build

build() {
	local log=$1 rc t
	say "building (make PG_CFLAGS=-Werror, make -C test, make install)"
	(
		echo "+ make clean"
		make PG_CONFIG="$PG_CONFIG" clean
		echo "+ make PG_CFLAGS=-Werror"
		make PG_CONFIG="$PG_CONFIG" PG_CFLAGS=-Werror || exit 11
		echo "+ make -C test"
		make -C test PG_CONFIG="$PG_CONFIG" || exit 12
	) >"$log" 2>&1
	rc=$?
	if [ "$rc" -ne 0 ]; then
		show_tail "$log" 80
		case $rc in
			11) die "build of the extension failed (see above)" ;;
			12) die "build of the test tools (make -C test) failed (see above)" ;;
			*) die "build failed (see above)" ;;
		esac
	fi
	as_root make PG_CONFIG="$PG_CONFIG" install >>"$log" 2>&1 || {
		show_tail "$log" 40
		die "make install failed (see above)"
	}
	for t in mock_broker sa_produce; do
		[ -x test/bin/$t ] || die "make -C test did not produce test/bin/$t"
	done
}

# ---------------------------------------------------------------- 3. user + scratch dir

pick_user() {
	[ "$(id -u)" -eq 0 ] || return 0
	if [ -n "${TEST_USER:-}" ]; then
		RUN_AS=$TEST_USER
	elif getent passwd postgres >/dev/null; then
		RUN_AS=postgres
	else
		RUN_AS=streamagg_test
		if ! getent passwd "$RUN_AS" >/dev/null; then
			useradd --system --no-create-home --shell /bin/sh "$RUN_AS" ||
				die "could not create user $RUN_AS"
		fi
	fi
	getent passwd "$RUN_AS" >/dev/null || die "user $RUN_AS does not exist"
}

create_workdir() {
	WORK=$(mktemp -d /tmp/pg_streamagg_test.XXXXXX) || die "mktemp failed"
	chmod 0755 "$WORK"
	mkdir -p "$WORK/src" "$WORK/log" "$WORK/tmp" "$WORK/regress_out"
}

# Copy the tree (minus .git and test leftovers) into the scratch directory and
# hand everything to the test user.
copy_tree() {
	tar -C "$REPO" -cf - \
		--exclude=./.git --exclude=./tmp_check --exclude=./results \
		--exclude=./regression.diffs --exclude=./regression.out \
		--exclude=./log --exclude=./test/tmp_check . |
		tar -C "$WORK/src" -xf - || die "could not copy the tree to $WORK"
	if [ -n "$RUN_AS" ]; then
		chown -R "$RUN_AS:" "$WORK" || die "chown $WORK failed"
	fi
}

# ---------------------------------------------------------------- 4. broker

# start_broker DIR LOG: start a test broker serving DIR; on success sets
# BROKER_BOOTSTRAP, on failure prints why and returns 1.
start_broker() {
	local dir=$1 log=$2 pid
	as_user "$WORK/src/test/bin/mock_broker" --dir "$dir" >"$log" 2>&1 &
	pid=$!
	BROKER_WRAPPERS+=("$pid")
	for _ in $(seq 1 300); do     # 30 s
		[ -e "$dir/ready" ] && break
		if ! kill -0 "$pid" 2>/dev/null; then
			show_tail "$log" 40
			warn "test broker ($dir) exited during startup"
			return 1
		fi
		sleep 0.1
	done
	if [ ! -e "$dir/ready" ]; then
		show_tail "$log" 40
		warn "test broker ($dir) not ready after 30 s"
		return 1
	fi
	BROKER_BOOTSTRAP=$(head -n 1 "$dir/bootstrap" 2>/dev/null)
	if [ -z "$BROKER_BOOTSTRAP" ]; then
		warn "test broker ($dir) wrote no bootstrap list"
		return 1
	fi
	return 0
}

# script_broker SCRIPT: the broker line of a TAP script ("kafka --nodes 3"),
# empty for the mock broker
script_broker() {
	sed -n 's/^#[[:space:]]*broker:[[:space:]]*//p' "$WORK/src/$1" 2>/dev/null | head -n 1
}

needs_kafka() {
	case "$(script_broker "$1")" in kafka*) return 0 ;; esac
	return 1
}

# Fetch the Kafka jars (as the invoking user, into its cache) and make them
# readable by the test user: when they are not (root's home), they are
# copied into the scratch directory.
prepare_kafka() {
	local v cache
	v=${KAFKA_VERSION:-$(bash "$KAFKA_SH" versions | awk '{print $1}')}
	KAFKA_VERSION=$v
	export KAFKA_VERSION
	say "Apache Kafka $v: fetching the jars (cached)"
	bash "$KAFKA_SH" fetch ||
		die "could not fetch Apache Kafka $v (see above); SKIP_KAFKA=1 skips the real-broker tests"
	cache=$(dirname "$(bash "$KAFKA_SH" lib)")
	if as_user test -r "$cache/lib/kafka-clients-$v.jar"; then
		KAFKA_TEST_CACHE=$(dirname "$cache")
	else
		mkdir -p "$WORK/kafka-cache"
		cp -a "$cache" "$WORK/kafka-cache/" || die "could not copy $cache"
		[ -n "$RUN_AS" ] && chown -R "$RUN_AS:" "$WORK/kafka-cache"
		KAFKA_TEST_CACHE=$WORK/kafka-cache
	fi
}

# start_kafka DIR LOG OPTIONS...: start a real Kafka for one script; on
# success sets BROKER_BOOTSTRAP
start_kafka() {
	local dir=$1 log=$2
	shift 2
	if ! as_user env SA_CACHE="$KAFKA_TEST_CACHE" KAFKA_VERSION="$KAFKA_VERSION" \
		HOME="$WORK" bash "$WORK/src/test/kafka/kafka.sh" start "$dir" "$@" >"$log" 2>&1; then
		show_tail "$log" 60
		warn "Apache Kafka ($dir) did not start"
		stop_kafka "$dir"
		return 1
	fi
	BROKER_BOOTSTRAP=$(head -n 1 "$dir/bootstrap" 2>/dev/null)
	[ -n "$BROKER_BOOTSTRAP" ] || { warn "Kafka ($dir) wrote no bootstrap list"; return 1; }
	return 0
}

# ---------------------------------------------------------------- common env

# Environment shared by both suites, as an `env` command line (runuser
# keeps the environment, but spelling it out makes the run reproducible).
set_test_env() {
	TEST_ENV=(env -u LC_ALL -u LANGUAGE -u LC_MESSAGES -u LC_CTYPE -u LC_COLLATE
		-u PGHOST -u PGPORT -u PGDATA -u PGUSER -u PGDATABASE -u PGSERVICE
		-u PGOPTIONS -u PGPASSWORD -u PGHOSTADDR
		LANG=C.UTF-8
		HOME="$WORK" TMPDIR="$WORK/tmp"
		PATH="$BINDIR:$PATH"
		PG_CONFIG="$PG_CONFIG"
		KAFKA_SH="$WORK/src/test/kafka/kafka.sh"
		SA_CACHE="${KAFKA_TEST_CACHE:-$WORK/.cache/pg_streamagg}"
		KAFKA_VERSION="${KAFKA_VERSION:-}")
}

# ---------------------------------------------------------------- 5. pg_regress

run_regress() {
	local tests=() f
	for f in "$WORK"/src/sql/*.sql; do
		[ -e "$f" ] || continue
		f=${f##*/}
		tests+=("${f%.sql}")
	done
	if [ "${#tests[@]}" -eq 0 ]; then
		say "pg_regress: no sql/*.sql tests, skipping"
		return 0
	fi
	local pg_regress="$PKGLIBDIR/pgxs/src/test/regress/pg_regress"
	[ -x "$pg_regress" ] || die "pg_regress not found at $pg_regress"
	say "pg_regress: ${#tests[@]} test(s)"
	local log="$WORK/log/pg_regress.log" t0 rc
	t0=$(now_s)
	if ! start_broker "$WORK/broker" "$WORK/log/broker_regress.log"; then
		broken "could not start the test broker for pg_regress"
		return 0
	fi
	run_child "$log" as_user "${TEST_ENV[@]}" \
		KAFKA_BROKERS="$BROKER_BOOTSTRAP" MOCK_BROKER_DIR="$WORK/broker" \
		timeout --kill-after=15 "${REGRESS_TIMEOUT:-900}" \
		"$pg_regress" \
		--temp-instance="$WORK/regress_instance" \
		--temp-config=test/regress.conf \
		--bindir="$BINDIR" \
		--inputdir=. \
		--outputdir="$WORK/regress_out" \
		--dbname=contrib_regression \
		"${tests[@]}"
	rc=$?
	stop_broker "$WORK/broker"
	grep -vE '^(CREATE|ALTER) DATABASE$' "$log"

	# PG 15 prints "test NAME ... ok|FAILED|failed (ignored)  N ms"
	local t line fail=0 pass=0
	for t in "${tests[@]}"; do
		line=$(grep -E "^(test| )[[:space:]]*${t}[[:space:]]+\.\.\. " "$log" | tail -n 1)
		case "$line" in
			*"... ok"*) pass=$((pass + 1)) ;;
			*"failed (ignored)"*) pass=$((pass + 1)) ;;
			*)
				fail=$((fail + 1))
				if [ -n "$line" ]; then
					FAILED_ITEMS+=("pg_regress: $t")
				else
					FAILED_ITEMS+=("pg_regress: $t (no result)")
				fi
				;;
		esac
	done
	PASSED=$((PASSED + pass))
	FAILED=$((FAILED + fail))
	say "pg_regress: $pass ok, $fail failing, $(($(now_s) - t0)) s"
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		broken "pg_regress exited with status $rc"
	fi
	if [ "$rc" -ne 0 ] || [ "$fail" -gt 0 ]; then
		if [ -f "$WORK/regress_out/regression.diffs" ]; then
			echo "---- regression.diffs (first 300 lines) ----"
			head -n 300 "$WORK/regress_out/regression.diffs"
			echo "---- end of regression.diffs ----"
		fi
		grep -q 'running regression test queries' "$log" ||
			show_tail "$WORK/regress_out/log/initdb.log" 20
		show_tail "$WORK/regress_out/log/postmaster.log" 60
	fi
}

# ---------------------------------------------------------------- 6. TAP

# Fill TAP_SCRIPTS with the selected scripts, relative to $WORK/src.
resolve_tap_tests() {
	local want found t f s dup
	TAP_SCRIPTS=()
	if [ -z "${TESTS:-}" ]; then
		for f in "$WORK"/src/test/t/*.pl; do
			[ -e "$f" ] || continue
			s="test/t/${f##*/}"
			if [ "${KAFKACHECK:-0}" = 1 ]; then
				grep -q '^#[[:space:]]*kafkacheck:[[:space:]]*yes' "$f" || continue
			elif [ "${SKIP_KAFKA:-0}" = 1 ] && needs_kafka "$s"; then
				continue
			fi
			TAP_SCRIPTS+=("$s")
		done
		return 0
	fi
	for want in $TESTS; do
		found=""
		t=${want#./}
		t=${t#test/}
		t=${t#t/}
		for f in "$WORK/src/test/t/$t" "$WORK/src/test/t/$t.pl"; do
			[ -f "$f" ] && { found="test/t/${f##*/}"; break; }
		done
		if [ -z "$found" ]; then
			# numeric or name prefix
			for f in "$WORK"/src/test/t/"$t"*.pl; do
				[ -f "$f" ] && { found="test/t/${f##*/}"; break; }
			done
		fi
		if [ -z "$found" ]; then
			broken "TESTS: no TAP script matches '$want'"
			continue
		fi
		dup=0
		for s in "${TAP_SCRIPTS[@]}"; do
			[ "$s" = "$found" ] && dup=1
		done
		[ "$dup" -eq 0 ] && TAP_SCRIPTS+=("$found")
	done
}

# launch_tap SCRIPT: start a broker for SCRIPT, then SCRIPT itself in the
# background (prove output in log/tap_NAME.log, exit status in tap_NAME.rc).
launch_tap() {
	local script=$1 name pid kind
	name=$(basename "$script" .pl)
	local dir="$WORK/broker_$name" log="$WORK/log/tap_$name.log"
	local rcfile="$WORK/log/tap_$name.rc"
	local kenv=()
	kind=$(script_broker "$script")
	JOB_T0_PENDING=$(now_s)
	if [ -n "$EXTERNAL_KAFKA" ]; then
		BROKER_BOOTSTRAP=$EXTERNAL_KAFKA
		dir=""
		kenv=(KAFKA_EXTERNAL=1 KAFKA_DIR=-)
	elif [ "${kind%% *}" = kafka ]; then
		dir="$WORK/kafka_$name"
		# shellcheck disable=SC2086
		if ! start_kafka "$dir" "$WORK/log/kafka_$name.log" ${kind#kafka}; then
			FAILED=$((FAILED + 1))
			FAILED_ITEMS+=("TAP: $script: could not start Apache Kafka")
			printf 'FAIL   %s (could not start Apache Kafka)\n' "$script"
			return 0
		fi
		kenv=(KAFKA_DIR="$dir"
			KAFKA_BROKERS_SASL="$(cat "$dir/bootstrap_sasl" 2>/dev/null)"
			KAFKA_BROKERS_SSL="$(cat "$dir/bootstrap_ssl" 2>/dev/null)")
	elif ! start_broker "$dir" "$WORK/log/broker_$name.log"; then
		FAILED=$((FAILED + 1))
		FAILED_ITEMS+=("TAP: $script: could not start its test broker")
		printf 'FAIL   %s (could not start its test broker)\n' "$script"
		return 0
	fi
	(
		cd "$WORK/src" || exit 1
		as_user "${TEST_ENV[@]}" "${kenv[@]}" \
			KAFKA_BROKERS="$BROKER_BOOTSTRAP" MOCK_BROKER_DIR="$dir" \
			TESTDIR="$WORK/src" \
			TESTDATADIR="$WORK/src/tmp_check" \
			TESTLOGDIR="$WORK/src/tmp_check/log" \
			PGPORT=65432 \
			PG_REGRESS="$PKGLIBDIR/pgxs/src/test/regress/pg_regress" \
			timeout --kill-after=15 "${TAP_SCRIPT_TIMEOUT:-900}" \
			prove -v -I test/lib -I "$PKGLIBDIR/pgxs/src/test/perl" "$script"
		echo $? >"$rcfile"
	) >"$log" 2>&1 &
	pid=$!
	JOB_SCRIPT[$pid]=$script
	JOB_T0[$pid]=$JOB_T0_PENDING   # the broker's start counts
}

# finish_tap SCRIPT RC DURATION: count and report one finished script.
finish_tap() {
	local script=$1 rc=$2 dur=$3 name log pass fail
	name=$(basename "$script" .pl)
	log="$WORK/log/tap_$name.log"
	stop_broker "$WORK/broker_$name"
	local kafka_t0 kafka_stop=""
	if [ -d "$WORK/kafka_$name" ]; then
		kafka_t0=$(now_s)
		stop_kafka "$WORK/kafka_$name"
		kafka_stop=$(($(now_s) - kafka_t0))
		dur=$((dur + kafka_stop))
	fi
	# a script killed by its timeout leaves its servers behind
	stop_leftover_postgres "$WORK/src/tmp_check" "*/t_${name}_*"
	# top-level TAP lines only (subtests are indented and summarised by their
	# parent's line); "not ok ... # TODO" is an expected failure
	pass=$(grep -cE '^ok [0-9]+' "$log")
	fail=$(grep -E '^not ok [0-9]+' "$log" | grep -cvE '#[[:space:]]*TODO')
	# a script that died, bailed out, timed out or broke its plan counts as
	# one more failure on top of its "not ok" lines
	local why=""
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		why="timed out after ${TAP_SCRIPT_TIMEOUT:-900} s"
	elif grep -q '^Bail out!' "$log"; then
		why="bailed out"
	elif grep -q 'Looks like your test exited with' "$log"; then
		why="script died"
	elif grep -qE 'Bad plan|planned [0-9]+ tests? but ran|No plan found' "$log"; then
		why="bad plan"
	elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		why="prove exited with status $rc"
	fi
	[ -n "$why" ] && fail=$((fail + 1))
	PASSED=$((PASSED + pass))
	FAILED=$((FAILED + fail))
	if [ "$fail" -eq 0 ]; then
		printf 'ok     %-40s %4d assertions  %4ds\n' "$script" "$pass" "$dur"
		return 0
	fi
	printf 'FAIL   %-40s %4d ok, %d failing%s  %4ds\n' "$script" "$pass" "$fail" \
		"${why:+ ($why)}" "$dur"
	FAILED_ITEMS+=("TAP: $script: $fail failing${why:+ ($why)}")
	grep -E '^not ok [0-9]+' "$log" | grep -vE '#[[:space:]]*TODO' | sed 's/^/    /'
	show_tail "$log" 80
	local f
	show_tail "$WORK/src/tmp_check/log/regress_log_$name" 100
	for f in "$WORK"/src/tmp_check/log/"${name}"_*.log; do
		show_tail "$f" 40
	done
	show_tail "$WORK/broker_$name/control.log" 20
	for f in "$WORK"/kafka_"$name"/node*/server.log; do
		show_tail "$f" 40
	done
}

# Collect the TAP jobs that have finished.
reap_tap_jobs() {
	local pid script name rc
	for pid in "${!JOB_SCRIPT[@]}"; do
		script=${JOB_SCRIPT[$pid]}
		name=$(basename "$script" .pl)
		[ -f "$WORK/log/tap_$name.rc" ] || continue
		wait "$pid" 2>/dev/null
		rc=$(cat "$WORK/log/tap_$name.rc")
		case "$rc" in '' | *[!0-9]*) rc=1 ;; esac
		finish_tap "$script" "$rc" $(($(now_s) - JOB_T0[$pid]))
		unset "JOB_SCRIPT[$pid]" "JOB_T0[$pid]"
	done
}

run_tap() {
	local s jobs=${TAP_JOBS:-2}
	case "$jobs" in '' | *[!0-9]* | 0) jobs=1 ;; esac
	resolve_tap_tests
	if [ "${#TAP_SCRIPTS[@]}" -eq 0 ]; then
		say "TAP: no test scripts, skipping"
		return 0
	fi
	# the jars: for our brokers, and for Kafka's tools (also against an
	# existing cluster)
	for s in "${TAP_SCRIPTS[@]}"; do
		if needs_kafka "$s"; then
			prepare_kafka
			set_test_env
			break
		fi
	done
	[ -n "$EXTERNAL_KAFKA" ] && say "TAP: against the existing Kafka cluster at $EXTERNAL_KAFKA"
	say "TAP: ${#TAP_SCRIPTS[@]} script(s), $jobs at a time"
	for s in "${TAP_SCRIPTS[@]}"; do
		while [ "${#JOB_SCRIPT[@]}" -ge "$jobs" ]; do
			sleep 0.2
			reap_tap_jobs
		done
		launch_tap "$s"
	done
	while [ "${#JOB_SCRIPT[@]}" -gt 0 ]; do
		sleep 0.2
		reap_tap_jobs
	done
}

# ---------------------------------------------------------------- main

T_START=$(now_s)

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
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
export PG_CONFIG

if [ "${KAFKACHECK:-0}" = 1 ] && [ -z "$EXTERNAL_KAFKA" ]; then
	die "make kafkacheck needs KAFKA_BROKERS=host:port,... (an existing Kafka cluster)"
fi

pick_user
create_workdir
BROKER_BOOTSTRAP=""

if [ "${SKIP_BUILD:-0}" = 1 ]; then
	say "SKIP_BUILD=1: not building"
else
	build "$WORK/log/build.log"
fi
copy_tree

[ -x "$WORK/src/test/bin/mock_broker" ] || die "test/bin/mock_broker is missing (make -C test)"
set_test_env

if [ "${SKIP_REGRESS:-0}" = 1 ]; then
	say "SKIP_REGRESS=1: skipping pg_regress"
else
	run_regress
fi

if [ "${SKIP_TAP:-0}" = 1 ]; then
	say "SKIP_TAP=1: skipping TAP"
else
	run_tap
fi

say "total time $(($(now_s) - T_START)) s"
# cleanup (EXIT trap) prints the summary and sets the exit status
exit 0
