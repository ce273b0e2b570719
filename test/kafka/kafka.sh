#!/usr/bin/env bash
# test/kafka/kafka.sh: Apache Kafka (KRaft) brokers for the tests, the demo
# and the benchmark.  Loopback only, free ports, everything under DIR.
#
#   kafka.sh fetch
#       copy the jars of $KAFKA_VERSION into the cache (Maven Central);
#       quiet and quick when they are already there
#   kafka.sh start DIR [--nodes N] [--sasl] [--ssl]
#       format and start N (default 1) combined controller+broker nodes;
#       returns once every broker serves.  Writes
#         DIR/bootstrap       PLAINTEXT listeners, host:port,...
#         DIR/bootstrap_sasl  SASL_PLAINTEXT listeners (--sasl; PLAIN and
#                             SCRAM-SHA-256/512; users in DIR/sasl_users)
#         DIR/bootstrap_ssl   SSL listeners (--ssl), server certificate
#                             signed by the throwaway CA in DIR/ca.pem
#         DIR/pids            one JVM pid per line (node order)
#         DIR/nodeK/          node K's config, data and server.log
#   kafka.sh stop DIR [NODE]        clean shutdown (SIGTERM, then SIGKILL);
#                                   without NODE every node, and leftovers
#   kafka.sh kill DIR [NODE]        SIGKILL one node (default 1)
#   kafka.sh restart DIR [NODE]     stop NODE (default 1) if it runs, start
#                                   it again and wait until it serves
#   kafka.sh pid DIR [NODE]         pid of a running node (exit 1 if none)
#   kafka.sh tool DIR TOOL ARGS...  run one of Kafka's command-line tools
#                                   (kafka-topics, kafka-consumer-groups,
#                                   kafka-configs, ...) against the cluster
#                                   of DIR; --bootstrap-server is added when
#                                   the tool takes one and ARGS have none.
#                                   DIR "-" means no cluster of ours:
#                                   $KAFKA_BROKERS is used.
#   kafka.sh lib                    print the jar directory of $KAFKA_VERSION
#   kafka.sh versions               the pinned versions (the first is the
#                                   default)
#
# Environment:
#   KAFKA_VERSION   Kafka version (default below; pinned: KAFKA_VERSIONS)
#   SA_CACHE        cache root (default $HOME/.cache/pg_streamagg); the jars
#                   go to $SA_CACHE/kafka-VERSION/lib
#   KAFKA_LIB       use this jar directory instead of the cache
#   KAFKA_HEAP      broker heap (default 512m)
#   KAFKA_START_TIMEOUT  seconds to wait for a broker (default 90)

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# the two versions the test suite is run against; the first is the default
KAFKA_VERSIONS="3.9.2 4.4.0"
KAFKA_VERSION=${KAFKA_VERSION:-${KAFKA_VERSIONS%% *}}
SA_CACHE=${SA_CACHE:-${HOME:-/tmp}/.cache/pg_streamagg}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}

SASL_USER=streamagg
SASL_PASSWORD=streamagg-secret

die() { printf 'kafka.sh: %s\n' "$*" >&2; exit 1; }
note() { [ -n "${KAFKA_SH_QUIET:-}" ] || printf 'kafka.sh: %s\n' "$*" >&2; }

cache_dir() { printf '%s/kafka-%s' "$SA_CACHE" "$1"; }

lib_dir() {
	if [ -n "${KAFKA_LIB:-}" ]; then
		printf '%s' "$KAFKA_LIB"
	else
		printf '%s/lib' "$(cache_dir "$KAFKA_VERSION")"
	fi
}

# ---------------------------------------------------------------- fetch

cmd_fetch() {
	local cache lib tmp log
	if [ -n "${KAFKA_LIB:-}" ]; then
		[ -f "$KAFKA_LIB/.complete" ] || ls "$KAFKA_LIB"/kafka_2.13-*.jar >/dev/null 2>&1 ||
			die "KAFKA_LIB=$KAFKA_LIB holds no Kafka jars"
		return 0
	fi
	cache=$(cache_dir "$KAFKA_VERSION")
	lib=$cache/lib
	[ -f "$cache/.complete" ] && return 0
	command -v java >/dev/null 2>&1 || die "java not found (apt-get install default-jre-headless)"
	command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
	mkdir -p "$cache"
	exec 9>"$cache/.lock"
	flock 9
	[ -f "$cache/.complete" ] && return 0
	note "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $lib"
	tmp=$cache/lib.tmp
	log=$cache/fetch.log
	rm -rf "$tmp"
	if ! mvn -B -q -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
		-Dkafka.lib="$tmp" dependency:copy-dependencies >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "could not fetch Apache Kafka $KAFKA_VERSION with Maven (is Maven Central reachable? full log: $log)"
	fi
	ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 ||
		die "Maven gave no kafka_2.13-$KAFKA_VERSION.jar (log: $log)"
	# class index: lets `tool` find a tool's class in this version
	python3 - "$tmp" >"$cache/classes.txt" <<-'EOF'
	import glob, sys, zipfile
	for jar in sorted(glob.glob(sys.argv[1] + '/*.jar')):
	    for n in zipfile.ZipFile(jar).namelist():
	        if n.endswith('.class') and '$' not in n:
	            print(n[:-6].replace('/', '.'))
	EOF
	rm -rf "$lib"
	mv "$tmp" "$lib"
	touch "$lib/.complete" "$cache/.complete"
	chmod -R a+rX "$cache" 2>/dev/null || true
	note "Apache Kafka $KAFKA_VERSION: $(find "$lib" -name '*.jar' | wc -l) jars"
}

require_lib() {
	local lib
	lib=$(lib_dir)
	[ -f "$lib/.complete" ] || [ -n "${KAFKA_LIB:-}" ] ||
		die "no jars for Kafka $KAFKA_VERSION in $lib: run 'kafka.sh fetch' first"
	printf '%s' "$lib"
}

# ---------------------------------------------------------------- helpers

JVM_COMMON=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
	-Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
	-Dorg.slf4j.simpleLogger.showDateTime=true
	-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS)

# free_ports N: N distinct free TCP ports on 127.0.0.1
free_ports() {
	python3 - "$1" <<-'EOF'
	import socket, sys
	socks = []
	for _ in range(int(sys.argv[1])):
	    s = socket.socket()
	    s.bind(('127.0.0.1', 0))
	    socks.append(s)
	print(' '.join(str(s.getsockname()[1]) for s in socks))
	EOF
}

# a random Kafka cluster id (16 bytes, URL-safe base64, no leading dash)
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		case "$id" in -*) ;; *) break ;; esac
	done
	printf '%s' "$id"
}

load_env() {
	local dir=$1
	[ -f "$dir/cluster.env" ] || die "$dir holds no cluster (no cluster.env)"
	# shellcheck disable=SC1091
	. "$dir/cluster.env"
}

node_pid() {
	local dir=$1 n=$2 pid
	[ -f "$dir/node$n/pid" ] || return 1
	pid=$(cat "$dir/node$n/pid")
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	# the pid must still be our JVM (pids are reused)
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir/node$n/server.properties" || return 1
	printf '%s' "$pid"
}

write_pids() {
	local dir=$1 n pid
	: >"$dir/pids.tmp"
	for n in $(seq 1 "$NODES"); do
		pid=$(node_pid "$dir" "$n" || true)
		echo "${pid:-}" >>"$dir/pids.tmp"
	done
	mv "$dir/pids.tmp" "$dir/pids"
}

# ---------------------------------------------------------------- SSL

make_certs() {
	local dir=$1 ssl=$1/ssl
	command -v openssl >/dev/null 2>&1 || die "openssl not found"
	mkdir -p "$ssl"
	(
		cd "$ssl"
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=pg_streamagg test CA' \
			-keyout ca.key -out ca.pem
		openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' \
			-keyout server.key -out server.csr
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-days 2 -extfile server.ext -out server.crt
		# Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain
		openssl pkcs8 -topk8 -nocrypt -in server.key -out server.pk8
		cat server.pk8 server.crt ca.pem >server-keystore.pem
	) >"$ssl/openssl.log" 2>&1 || { cat "$ssl/openssl.log" >&2; die "openssl failed"; }
	cp "$ssl/ca.pem" "$dir/ca.pem"
}

# ---------------------------------------------------------------- start

# write_config DIR K: node K's server.properties
write_config() {
	local dir=$1 n=$2 rf=$NODES
	[ "$rf" -gt 3 ] && rf=3
	local p="PORT_PLAIN_$n" c="PORT_CTRL_$n" s="PORT_SASL_$n" t="PORT_SSL_$n"
	local listeners="PLAINTEXT://127.0.0.1:${!p},CONTROLLER://127.0.0.1:${!c}"
	local advertised="PLAINTEXT://127.0.0.1:${!p}"
	local protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
	if [ "$SASL" = 1 ]; then
		listeners+=",SASL_PLAINTEXT://127.0.0.1:${!s}"
		advertised+=",SASL_PLAINTEXT://127.0.0.1:${!s}"
		protomap+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
	fi
	if [ "$SSL" = 1 ]; then
		listeners+=",SSL://127.0.0.1:${!t}"
		advertised+=",SSL://127.0.0.1:${!t}"
		protomap+=",SSL:SSL"
	fi
	mkdir -p "$dir/node$n/data"
	cat >"$dir/node$n/server.properties" <<-EOF
	# node $n of the test cluster in $dir (written by kafka.sh)
	process.roles=broker,controller
	node.id=$n
	controller.quorum.voters=$VOTERS
	controller.listener.names=CONTROLLER
	listeners=$listeners
	advertised.listeners=$advertised
	listener.security.protocol.map=$protomap
	inter.broker.listener.name=PLAINTEXT
	log.dirs=$dir/node$n/data
	auto.create.topics.enable=false
	num.partitions=1
	default.replication.factor=1
	offsets.topic.replication.factor=$rf
	offsets.topic.num.partitions=1
	transaction.state.log.replication.factor=$rf
	transaction.state.log.min.isr=1
	transaction.state.log.num.partitions=1
	group.initial.rebalance.delay.ms=0
	num.network.threads=2
	num.io.threads=2
	background.threads=2
	num.recovery.threads.per.data.dir=1
	num.replica.fetchers=1
	log.cleaner.threads=1
	log.cleaner.dedupe.buffer.size=4194304
	log.cleaner.backoff.ms=500
	log.retention.check.interval.ms=1000
	log.retention.ms=-1
	log.retention.bytes=-1
	broker.heartbeat.interval.ms=500
	broker.session.timeout.ms=3000
	replica.lag.time.max.ms=3000
	controlled.shutdown.enable=true
	transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
	transaction.remove.expired.transaction.cleanup.interval.ms=60000
	share.coordinator.state.topic.replication.factor=$rf
	share.coordinator.state.topic.min.isr=1
	EOF
	if [ "$SASL" = 1 ]; then
		cat >>"$dir/node$n/server.properties" <<-EOF
		sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
		listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
		listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
		listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
		EOF
	fi
	if [ "$SSL" = 1 ]; then
		cat >>"$dir/node$n/server.properties" <<-EOF
		ssl.keystore.type=PEM
		ssl.keystore.location=$dir/ssl/server-keystore.pem
		ssl.truststore.type=PEM
		ssl.truststore.location=$dir/ssl/ca.pem
		ssl.client.auth=none
		ssl.endpoint.identification.algorithm=
		EOF
	fi
}

# launch_node DIR K: start node K's JVM in the background
launch_node() {
	local dir=$1 n=$2 pid
	(
		cd "$dir/node$n"
		exec setsid java -Xmx"$KAFKA_HEAP" -Xms64m "${JVM_COMMON[@]}" \
			-Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
			-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info \
			-Dorg.slf4j.simpleLogger.log.kafka.server.BrokerServer=info \
			-cp "$LIB/*" kafka.Kafka "$dir/node$n/server.properties"
	) </dev/null >>"$dir/node$n/server.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/node$n/pid"
}

# wait_serving DIR K...: wait until the given nodes answer metadata requests
# on their PLAINTEXT listener, and the whole cluster lists them
wait_serving() {
	local dir=$1 n p deadline ok out
	shift
	deadline=$(($(date +%s) + START_TIMEOUT))
	while :; do
		ok=1
		for n in "$@"; do
			if ! node_pid "$dir" "$n" >/dev/null; then
				tail -n 40 "$dir/node$n/server.log" >&2
				die "Kafka node $n ($dir) exited during startup"
			fi
			p="PORT_PLAIN_$n"
			out=$(timeout 10 kcat -b "127.0.0.1:${!p}" -L -m 3 -t __no_such_topic__ 2>/dev/null || true)
			# the node must be registered (unfenced) to be listed
			echo "$out" | grep -q "broker $n at" || ok=0
		done
		[ "$ok" = 1 ] && return 0
		if [ "$(date +%s)" -ge "$deadline" ]; then
			for n in "$@"; do tail -n 30 "$dir/node$n/server.log" >&2; done
			die "Kafka ($dir) not serving after ${START_TIMEOUT}s"
		fi
		sleep 0.2
	done
}

cmd_start() {
	local dir="" n ports i k
	NODES=1
	SASL=0
	SSL=0
	while [ $# -gt 0 ]; do
		case "$1" in
			--nodes) NODES=$2; shift 2 ;;
			--nodes=*) NODES=${1#--nodes=}; shift ;;
			--sasl) SASL=1; shift ;;
			--ssl) SSL=1; shift ;;
			-*) die "start: unknown option $1" ;;
			*) [ -z "$dir" ] || die "start: one DIR only"; dir=$1; shift ;;
		esac
	done
	[ -n "$dir" ] || die "usage: kafka.sh start DIR [--nodes N] [--sasl] [--ssl]"
	case "$NODES" in '' | *[!0-9]* | 0) die "--nodes wants a positive number" ;; esac
	command -v kcat >/dev/null 2>&1 || die "kcat not found (apt-get install kcat)"
	command -v java >/dev/null 2>&1 || die "java not found (apt-get install default-jre-headless)"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ -f "$dir/cluster.env" ] && node_pid "$dir" 1 >/dev/null && die "a cluster already runs in $dir"
	LIB=$(require_lib)

	ports=($(free_ports $((NODES * 4))))
	VOTERS=""
	{
		echo "KAFKA_VERSION=$KAFKA_VERSION"
		echo "LIB='$LIB'"
		echo "NODES=$NODES"
		echo "SASL=$SASL"
		echo "SSL=$SSL"
		i=0
		for n in $(seq 1 "$NODES"); do
			for k in PLAIN CTRL SASL SSL; do
				echo "PORT_${k}_$n=${ports[$i]}"
				eval "PORT_${k}_$n=${ports[$i]}"
				i=$((i + 1))
			done
			VOTERS+="${VOTERS:+,}$n@127.0.0.1:$(eval echo "\$PORT_CTRL_$n")"
		done
		echo "VOTERS=$VOTERS"
		echo "CLUSTER_ID=$(cluster_id)"
	} >"$dir/cluster.env"
	load_env "$dir"

	[ "$SSL" = 1 ] && make_certs "$dir"
	local fmt_extra=()
	if [ "$SASL" = 1 ]; then
		fmt_extra+=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
			--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
		printf '%s %s\n' "$SASL_USER" "$SASL_PASSWORD" >"$dir/sasl_users"
	fi

	# format every node's log directory (in parallel: one JVM each)
	local fpids=()
	for n in $(seq 1 "$NODES"); do
		write_config "$dir" "$n"
		java -Xmx256m "${JVM_COMMON[@]}" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
			-cp "$LIB/*" kafka.tools.StorageTool format -t "$CLUSTER_ID" \
			-c "$dir/node$n/server.properties" "${fmt_extra[@]}" \
			</dev/null >"$dir/node$n/format.log" 2>&1 &
		fpids+=($!)
	done
	n=1
	for i in "${fpids[@]}"; do
		if ! wait "$i"; then
			cat "$dir/node$n/format.log" >&2
			die "formatting node $n failed"
		fi
		n=$((n + 1))
	done

	for n in $(seq 1 "$NODES"); do
		launch_node "$dir" "$n"
	done
	write_pids "$dir"
	wait_serving "$dir" $(seq 1 "$NODES")
	write_pids "$dir"

	local plain="" sasl="" ssl="" p
	for n in $(seq 1 "$NODES"); do
		p="PORT_PLAIN_$n"; plain+="${plain:+,}127.0.0.1:${!p}"
		p="PORT_SASL_$n"; sasl+="${sasl:+,}127.0.0.1:${!p}"
		p="PORT_SSL_$n"; ssl+="${ssl:+,}127.0.0.1:${!p}"
	done
	echo "$plain" >"$dir/bootstrap"
	[ "$SASL" = 1 ] && echo "$sasl" >"$dir/bootstrap_sasl"
	[ "$SSL" = 1 ] && echo "$ssl" >"$dir/bootstrap_ssl"
	note "Kafka $KAFKA_VERSION serving at $plain${SASL:+}"
	return 0
}

# ---------------------------------------------------------------- stop/kill/restart

# stop_node DIR K SIGNAL: signal node K, wait until it is gone (SIGKILL
# after 20 s)
stop_node() {
	local dir=$1 n=$2 sig=$3 pid
	pid=$(node_pid "$dir" "$n") || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
}

# every JVM still running with a config file of DIR (even if pids are lost)
leftover_pids() {
	local dir=$1 f pid
	for f in $(grep -laF -- "$dir/node" /proc/[0-9]*/cmdline 2>/dev/null); do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = java ] && echo "$pid"
	done
	return 0
}

cmd_stop() {
	local dir=${1:?usage: kafka.sh stop DIR [NODE]} node=${2:-} n pids p
	[ -d "$dir" ] || return 0
	dir=$(cd "$dir" && pwd)
	if [ -n "$node" ]; then
		load_env "$dir"
		stop_node "$dir" "$node" TERM
		write_pids "$dir"
		return 0
	fi
	if [ -f "$dir/cluster.env" ]; then
		load_env "$dir"
		# all at once, and not for long: the data is thrown away, and the
		# clean shutdown of the last nodes of a cluster waits for a quorum
		pids=""
		for n in $(seq 1 "$NODES"); do
			p=$(node_pid "$dir" "$n") && kill -TERM "$p" 2>/dev/null && pids+=" $p"
		done
		for _ in $(seq 1 50); do
			local alive=0
			for p in $pids; do
				kill -0 "$p" 2>/dev/null && alive=1
			done
			[ "$alive" = 0 ] && break
			sleep 0.1
		done
	fi
	pids=$(leftover_pids "$dir")
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.2
	fi
	[ -f "$dir/cluster.env" ] && write_pids "$dir"
	return 0
}

cmd_kill() {
	local dir=${1:?usage: kafka.sh kill DIR [NODE]} node=${2:-1} pid
	dir=$(cd "$dir" && pwd)
	load_env "$dir"
	pid=$(node_pid "$dir" "$node") || die "node $node of $dir is not running"
	kill -KILL "$pid"
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	write_pids "$dir"
}

cmd_restart() {
	local dir=${1:?usage: kafka.sh restart DIR [NODE]} node=${2:-1}
	dir=$(cd "$dir" && pwd)
	load_env "$dir"
	stop_node "$dir" "$node" TERM
	launch_node "$dir" "$node"
	wait_serving "$dir" "$node"
	write_pids "$dir"
}

cmd_pid() {
	local dir=${1:?usage: kafka.sh pid DIR [NODE]} node=${2:-1}
	dir=$(cd "$dir" && pwd)
	node_pid "$dir" "$node"
	echo
}

# ---------------------------------------------------------------- tools

tool_class() {
	local lib=$1 name=$2 index c
	index=$(dirname "$lib")/classes.txt
	case "$name" in *.*) echo "$name"; return 0 ;; esac
	name=${name%.sh}
	local cands=()
	case "$name" in
		kafka-topics) cands=(org.apache.kafka.tools.TopicCommand kafka.admin.TopicCommand) ;;
		kafka-consumer-groups) cands=(org.apache.kafka.tools.consumer.group.ConsumerGroupCommand kafka.admin.ConsumerGroupCommand) ;;
		kafka-configs) cands=(org.apache.kafka.tools.ConfigCommand kafka.admin.ConfigCommand) ;;
		kafka-get-offsets) cands=(org.apache.kafka.tools.GetOffsetShell kafka.tools.GetOffsetShell) ;;
		kafka-console-producer) cands=(org.apache.kafka.tools.ConsoleProducer kafka.tools.ConsoleProducer) ;;
		kafka-console-consumer) cands=(org.apache.kafka.tools.consumer.ConsoleConsumer kafka.tools.ConsoleConsumer) ;;
		kafka-leader-election) cands=(org.apache.kafka.tools.LeaderElectionCommand kafka.admin.LeaderElectionCommand) ;;
		kafka-transactions) cands=(org.apache.kafka.tools.TransactionsCommand) ;;
		kafka-metadata-quorum) cands=(org.apache.kafka.tools.MetadataQuorumCommand) ;;
		kafka-features) cands=(org.apache.kafka.tools.FeatureCommand) ;;
		kafka-delete-records) cands=(org.apache.kafka.tools.DeleteRecordsCommand kafka.admin.DeleteRecordsCommand) ;;
		kafka-log-dirs) cands=(org.apache.kafka.tools.LogDirsCommand kafka.admin.LogDirsCommand) ;;
		kafka-dump-log) cands=(org.apache.kafka.tools.DumpLogSegments kafka.tools.DumpLogSegments) ;;
		kafka-reassign-partitions) cands=(org.apache.kafka.tools.reassign.ReassignPartitionsCommand kafka.admin.ReassignPartitionsCommand) ;;
		kafka-storage) cands=(kafka.tools.StorageTool) ;;
		*) die "unknown tool $name (give a class name to run any other)" ;;
	esac
	for c in "${cands[@]}"; do
		if [ ! -f "$index" ] || grep -qxF "$c" "$index"; then
			echo "$c"
			return 0
		fi
	done
	die "tool $name: none of ${cands[*]} is in Kafka $KAFKA_VERSION"
}

cmd_tool() {
	local dir=${1:?usage: kafka.sh tool DIR TOOL ARGS...} name=${2:?usage: kafka.sh tool DIR TOOL ARGS...}
	shift 2
	local bootstrap="" lib class a has_bs=0
	if [ "$dir" = - ]; then
		bootstrap=${KAFKA_BROKERS:?kafka.sh tool -: KAFKA_BROKERS is not set}
		lib=$(require_lib)
	else
		dir=$(cd "$dir" && pwd)
		load_env "$dir"
		lib=$LIB
		bootstrap=$(cat "$dir/bootstrap")
	fi
	class=$(tool_class "$lib" "$name")
	for a in "$@"; do
		case "$a" in --bootstrap-server | --bootstrap-server=* | --bootstrap-controller*) has_bs=1 ;; esac
	done
	local extra=()
	case "${name%.sh}" in
		kafka-topics | kafka-consumer-groups | kafka-configs | kafka-get-offsets | \
			kafka-leader-election | kafka-transactions | kafka-metadata-quorum | \
			kafka-features | kafka-delete-records | kafka-log-dirs | \
			kafka-reassign-partitions | kafka-console-consumer | kafka-console-producer)
			[ "$has_bs" = 0 ] && extra=(--bootstrap-server "$bootstrap") ;;
	esac
	exec java -Xmx256m "${JVM_COMMON[@]}" -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
		-cp "$lib/*" "$class" "${extra[@]}" "$@"
}

# ---------------------------------------------------------------- main

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
	fetch) cmd_fetch "$@" ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	kill) cmd_kill "$@" ;;
	restart) cmd_restart "$@" ;;
	pid) cmd_pid "$@" ;;
	tool) cmd_tool "$@" ;;
	lib) require_lib; echo ;;
	versions) echo "$KAFKA_VERSIONS" ;;
	*) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
