# pg_streamagg — PGXS build.
#
#   make / make install      build and install the extension
#   make test                everything: deps, build, test broker, pg_regress, TAP
#                            (the 1NN_kafka_* scripts against Apache Kafka)
#   make kafkacheck          the real-broker subset against an existing cluster:
#                            KAFKA_BROKERS=host:port,... make kafkacheck
#   make demo                the main job end to end on a throwaway cluster
#   make bench               the side-by-side benchmark
#   make soak                10 minutes of producing under random faults

MODULE_big = pg_streamagg
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

EXTENSION = pg_streamagg
DATA = $(wildcard extension/pg_streamagg--*.sql)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=test/regress.conf

PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags rdkafka)
SHLIB_LINK = $(shell pkg-config --libs rdkafka)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on every header of ours (they are few and small)
$(OBJS): $(wildcard src/*.h)

.PHONY: test kafkacheck demo bench soak tools unlink-installed-lib

# `install` rewrites files in place; a running server that maps the old
# library would execute the new bytes.  Unlinking first gives the new
# library a new inode, and running servers keep the old one until restart.
install-lib-shared: unlink-installed-lib
unlink-installed-lib:
	rm -f '$(DESTDIR)$(pkglibdir)/$(MODULE_big)$(DLSUFFIX)'

tools:
	$(MAKE) -C test

test:
	bash test/run_tests.sh

kafkacheck:
	KAFKACHECK=1 SKIP_REGRESS=1 bash test/run_tests.sh

demo:
	bash test/demo.sh

bench:
	bash test/bench/run.sh

# the soak (test/t/013_soak.pl) for SOAK_SECONDS (default 10 minutes);
# rss.tsv, rss.svg, faults.tsv and summary.txt land in SOAK_OUT
SOAK_SECONDS ?= 600
SOAK_OUT ?= /tmp/pg_streamagg-soak
soak:
	mkdir -p $(SOAK_OUT) && chmod 777 $(SOAK_OUT)
	TAP_SCRIPT_TIMEOUT=$$(( $(SOAK_SECONDS) + 900 )) SOAK_SECONDS=$(SOAK_SECONDS) SOAK_OUT=$(SOAK_OUT) TESTS=013 SKIP_REGRESS=1 bash test/run_tests.sh
	@echo "soak results: $(SOAK_OUT)"
