# pg_streamagg — PGXS build.
#
#   make / make install      build and install the extension
#   make test                everything: deps, build, test broker, pg_regress, TAP
#   make demo                the main job end to end on a throwaway cluster
#   make bench               the side-by-side benchmark

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

.PHONY: test demo bench tools

tools:
	$(MAKE) -C test

test:
	bash test/run_tests.sh

demo:
	bash test/demo.sh

bench:
	bash test/bench/run.sh
