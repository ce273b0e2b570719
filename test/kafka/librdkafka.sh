#!/usr/bin/env bash
# test/kafka/librdkafka.sh: an optional, newer librdkafka to build and test
# the extension against (Debian 12 ships 2.0.2).  Not used by default.
#
# librdkafka's source comes from the npm registry: the node-rdkafka package
# bundles it under deps/librdkafka.
#
#   librdkafka.sh build     fetch node-rdkafka@$NODE_RDKAFKA (npm pack) and
#                           build its librdkafka (C library only; SSL, SASL
#                           PLAIN/SCRAM, lz4, zlib; no GSSAPI, curl, zstd)
#                           into $SA_CACHE/librdkafka-VERSION (as root:
#                           /var/cache/pg_streamagg/librdkafka-VERSION, which
#                           the unprivileged test user can read)
#   librdkafka.sh env       print the environment that builds and runs
#                           against it, for `eval`:
#                             eval "$(test/kafka/librdkafka.sh env)"
#                             PG_CONFIG=... make test
#                           (PKG_CONFIG_PATH for the build, LD_LIBRARY_PATH
#                           for the servers and tools that load it)
#   librdkafka.sh version   the librdkafka version of that package
#
# Needs npm, gcc, make, libssl-dev, zlib1g-dev, python3.

set -euo pipefail

NODE_RDKAFKA=${NODE_RDKAFKA:-3.6.1}    # bundles librdkafka 2.12.0
SA_CACHE=${SA_CACHE:-${HOME:-/tmp}/.cache/pg_streamagg}
SRC=$SA_CACHE/node-rdkafka-$NODE_RDKAFKA

die() { printf 'librdkafka.sh: %s\n' "$*" >&2; exit 1; }

fetch() {
	[ -f "$SRC/.complete" ] && return 0
	command -v npm >/dev/null 2>&1 || die "npm not found (apt-get install npm)"
	rm -rf "$SRC"
	mkdir -p "$SRC"
	(cd "$SRC" && npm pack --silent "node-rdkafka@$NODE_RDKAFKA" >/dev/null) ||
		die "npm pack node-rdkafka@$NODE_RDKAFKA failed"
	tar -C "$SRC" -xzf "$SRC"/node-rdkafka-*.tgz
	[ -x "$SRC/package/deps/librdkafka/configure" ] ||
		die "node-rdkafka@$NODE_RDKAFKA has no deps/librdkafka"
	touch "$SRC/.complete"
}

version() {
	fetch
	python3 - "$SRC/package/deps/librdkafka/src/rdkafka.h" <<-'EOF'
	import re, sys
	v = int(re.search(r'#define RD_KAFKA_VERSION\s+(0x[0-9a-fA-F]+)', open(sys.argv[1]).read()).group(1), 16)
	print('%d.%d.%d' % (v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff))
	EOF
}

# the install prefix must be readable by the user the test servers run as
# (root's home is not): as root it is under /var/cache/pg_streamagg
prefix() {
	local root=$SA_CACHE
	[ "$(id -u)" = 0 ] && root=/var/cache/pg_streamagg
	printf '%s/librdkafka-%s' "${LIBRDKAFKA_ROOT:-$root}" "$(version)"
}

build() {
	local p src
	p=$(prefix)
	[ -f "$p/.complete" ] && { echo "$p"; return 0; }
	src=$SRC/package/deps/librdkafka
	(
		cd "$src"
		./configure --prefix="$p" --disable-gssapi --disable-curl --disable-zstd
		make -C src -j"$(nproc)"
		make -C src install
	) >"$SRC/build.log" 2>&1 || { tail -n 30 "$SRC/build.log" >&2; die "build failed (log: $SRC/build.log)"; }
	[ -f "$p/lib/pkgconfig/rdkafka.pc" ] || die "no rdkafka.pc in $p"
	touch "$p/.complete"
	chmod -R a+rX "$p"
	echo "$p"
}

case "${1:-}" in
	build) build ;;
	version) version ;;
	env)
		p=$(prefix)
		[ -f "$p/.complete" ] || die "not built yet: librdkafka.sh build"
		printf 'export PKG_CONFIG_PATH=%q\n' "$p/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
		printf 'export LD_LIBRARY_PATH=%q\n' "$p/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
		;;
	*) sed -n '2,22s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
