#!/usr/bin/env python3
"""Generate the benchmark's access-log messages as sa_produce batch lines.

Each line is "PARTITION<TAB>\\N<TAB>0<TAB>PAYLOAD" (null key, timestamp =
now), partitions assigned round robin so that every partition gets the same
number of messages.  A payload is one JSON access-log record of about 88
bytes:

    {"ts":1704067200123,"ip":"10.0.39.15","path":"/items/4821",
     "status":200,"bytes":5123}

ip is uniform among 10,000 addresses (the worst case for aggregation: every
batch touches thousands of groups), status follows a typical web mix,
bytes is uniform in 200..50,000.  ts (event time, epoch milliseconds)
starts at 2024-01-01 00:00 UTC and advances 1 ms every 10 messages, i.e.
the stream carries 10,000 events per second of event time; it never goes
backwards inside a partition, so no message is late.

The generator is deterministic (--seed).  With --summary it also writes
the totals a correct consumer must end up with (JSON), which the benchmark
checks after every run.
"""
import argparse
import json
import random
import sys

BASE_MS = 1704067200000          # 2024-01-01T00:00:00Z
EVENTS_PER_MS = 10
IPS = 10000
# (status, share in percent)
STATUS_MIX = [(200, 84), (304, 5), (404, 4), (301, 3), (500, 2), (502, 1), (503, 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--summary", help="write the expected totals (JSON) here")
    args = ap.parse_args()

    rnd = random.Random(args.seed)
    ips = ["10.0.%d.%d" % (i >> 8, i & 255) for i in range(IPS)]
    statuses = [s for s, share in STATUS_MIX for _ in range(share)]
    out = sys.stdout
    total_bytes = 0
    errors = 0                     # status >= 500
    chunk = []
    nparts = args.partitions
    randrange = rnd.randrange
    for i in range(args.count):
        status = statuses[randrange(100)]
        nbytes = randrange(200, 50001)
        total_bytes += nbytes
        if status >= 500:
            errors += 1
        chunk.append('%d\t\\N\t0\t{"ts":%d,"ip":"%s","path":"/items/%d","status":%d,"bytes":%d}\n'
                     % (i % nparts, BASE_MS + i // EVENTS_PER_MS,
                        ips[randrange(IPS)],
                        randrange(10000), status, nbytes))
        if len(chunk) >= 10000:
            out.write("".join(chunk))
            chunk = []
    out.write("".join(chunk))
    out.flush()
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump({"messages": args.count, "sum_bytes": total_bytes,
                       "errors_5xx": errors,
                       "first_ts_ms": BASE_MS,
                       "last_ts_ms": BASE_MS + (args.count - 1) // EVENTS_PER_MS}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
