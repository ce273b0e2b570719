#!/usr/bin/env python3
"""The hand-written exactly-once consumer the benchmark compares against.

This is the program a competent user would write without pg_streamagg,
with Debian's python3-confluent-kafka and python3-psycopg2, to maintain
the same result as the benchmark's one-window variant: hits and bytes per
ip in 1-minute tumbling windows of event time.

Exactly once, the usual way: the consumer's offsets live in PostgreSQL, in
the same transaction as the aggregates they cover.

  * start: read the offsets table, assign() every partition at its stored
    offset (or the beginning), no consumer group, nothing committed to Kafka;
  * loop: consume() a batch (up to --batch messages or --batch-time
    seconds, the same bounds pg_streamagg uses by default), json.loads()
    each payload (an ISO-8601 ts through datetime.fromisoformat, an epoch
    millisecond one as it is), fold it into a dict keyed by (window start, ip), then in
    ONE transaction upsert the dict with execute_values (rows sorted, so
    that concurrent writers would lock in the same order) and upsert the
    next offset of each partition; commit (synchronous_commit on).

It stops once it has committed everything up to the high watermarks it
read at start-up, and prints one line of JSON with its own timings and the
CPU time of its process and of the PostgreSQL backend serving it.

    consumer_py.py --brokers B --topic T --dsn DSN [--setup] [--batch N]
"""
import argparse
import datetime
import json
import os
import resource
import sys
import time

import psycopg2
import psycopg2.extras
from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING

WINDOW_MS = 60000
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MS = datetime.timedelta(milliseconds=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS py_hits (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    ip           text NOT NULL,
    hits         bigint NOT NULL,
    bytes        numeric NOT NULL,
    PRIMARY KEY (window_start, ip)
);
CREATE TABLE IF NOT EXISTS py_offsets (
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

UPSERT_HITS = """
INSERT INTO py_hits AS t (window_start, window_end, ip, hits, bytes) VALUES %s
ON CONFLICT (window_start, ip) DO UPDATE
SET hits = t.hits + EXCLUDED.hits, bytes = t.bytes + EXCLUDED.bytes
"""
HITS_TEMPLATE = ("(to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), "
                 "%s, %s, %s)")

UPSERT_OFFSETS = """
INSERT INTO py_offsets AS o (topic, partition, next_offset) VALUES %s
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset
"""


def cpu_of(pid):
    """user + system seconds of a process (0 if it cannot be read)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def stored_offsets(cur, topic):
    cur.execute("SELECT partition, next_offset FROM py_offsets WHERE topic = %s",
                (topic,))
    return dict(cur.fetchall())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--batch", type=int, default=20000)
    ap.add_argument("--batch-time", type=float, default=0.2)
    ap.add_argument("--setup", action="store_true",
                    help="create the tables and exit")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    t0 = time.monotonic()

    db = psycopg2.connect(args.dsn)
    cur = db.cursor()
    if args.setup:
        cur.execute(SCHEMA)
        db.commit()
        return

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "bench.consumer_py",      # assign() needs one
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
    })
    meta = consumer.list_topics(args.topic, timeout=10)
    partitions = sorted(meta.topics[args.topic].partitions)
    start = stored_offsets(cur, args.topic)
    db.commit()
    end = {}
    for p in partitions:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(args.topic, p),
                                                timeout=10)
        end[p] = hi
    consumer.assign([TopicPartition(args.topic, p, start.get(p, OFFSET_BEGINNING))
                     for p in partitions])
    done = {p: start.get(p, 0) for p in partitions}

    messages = batches = 0
    t_first = None
    while any(done[p] < end[p] for p in partitions):
        if time.monotonic() - t0 > args.timeout:
            sys.exit("consumer_py: timed out")
        msgs = consumer.consume(num_messages=args.batch, timeout=args.batch_time)
        if not msgs:
            continue
        agg = {}
        next_offset = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit("consumer_py: %s" % err)
            r = json.loads(m.value())
            ts = r["ts"]
            if isinstance(ts, str):     # ISO-8601, e.g. 2024-01-01T00:00:00.123Z
                dt = datetime.datetime.fromisoformat(ts)
                ts = (dt - EPOCH) // ONE_MS
            key = (ts - ts % WINDOW_MS, r["ip"])
            a = agg.get(key)
            if a is None:
                agg[key] = [1, r["bytes"]]
            else:
                a[0] += 1
                a[1] += r["bytes"]
            next_offset[m.partition()] = m.offset() + 1
        rows = [(ws, ws + WINDOW_MS, ip, c, s)
                for (ws, ip), (c, s) in sorted(agg.items())]
        psycopg2.extras.execute_values(cur, UPSERT_HITS, rows,
                                       template=HITS_TEMPLATE, page_size=5000)
        psycopg2.extras.execute_values(
            cur, UPSERT_OFFSETS,
            [(args.topic, p, o) for p, o in sorted(next_offset.items())])
        db.commit()
        if t_first is None:
            t_first = time.monotonic() - t0
        messages += len(msgs)
        batches += 1
        done.update(next_offset)

    seconds = time.monotonic() - t0
    cur.execute("SELECT pg_backend_pid()")
    backend_pid = cur.fetchone()[0]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"messages": messages, "batches": batches,
                      "seconds": round(seconds, 4),
                      "first_commit_s": round(t_first or 0, 4),
                      "cpu_user": ru.ru_utime, "cpu_sys": ru.ru_stime,
                      "backend_cpu": cpu_of(backend_pid)}))
    consumer.close()
    db.close()


if __name__ == "__main__":
    main()
