#!/usr/bin/env python3
"""Generate the benchmark's access-log messages as sa_produce batch lines.

Each line is "PARTITION<TAB>\\N<TAB>0<TAB>PAYLOAD" (null key, timestamp =
now), partitions assigned round robin so that every partition gets the same
number of messages.  Two workloads (--workload):

  realistic  event time advances 1 ms per message (1,000 events per second
             of event time: ~6 messages per ip per 1-minute window, so a
             million messages make ~170k (minute, ip) rows); ts is an
             ISO-8601 string with milliseconds and Z, as most producers
             write it:
               {"ip":"10.0.39.15","status":200,"bytes":5123,
                "url":"/items/4821","ts":"2024-01-01T00:00:00.123Z"}
  dense      the original benchmark data: event time advances 1 ms every
             10 messages (~60 messages per ip per window), ts in epoch
             milliseconds:
               {"ts":1704067200123,"ip":"10.0.39.15","path":"/items/4821",
                "status":200,"bytes":5123}

In both, ip is uniform among 10,000 addresses (every batch touches
thousands of groups), status follows a typical web mix, bytes is uniform in
200..50,000, and event time starts at 2024-01-01 00:00 UTC and never goes
backwards inside a partition, so no message is late.

The generator is deterministic (--seed).  With --summary it also writes
the totals a correct consumer must end up with (JSON), which the benchmark
checks after every run.
"""
import argparse
import json
import random
import sys
import time

BASE_MS = 1704067200000          # 2024-01-01T00:00:00Z
# workload -> messages per millisecond of event time
EVENTS_PER_MS = {"dense": 10, "realistic": 1}
IPS = 10000
# (status, share in percent)
STATUS_MIX = [(200, 84), (304, 5), (404, 4), (301, 3), (500, 2), (502, 1), (503, 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workload", choices=sorted(EVENTS_PER_MS), default="dense")
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
    per_ms = EVENTS_PER_MS[args.workload]
    realistic = args.workload == "realistic"
    minute_ips = set()             # (minute, ip): the rows of a 1-minute window
    sec_cache = [None, ""]         # ISO-8601 prefix of the current second
    for i in range(args.count):
        status = statuses[randrange(100)]
        nbytes = randrange(200, 50001)
        total_bytes += nbytes
        if status >= 500:
            errors += 1
        ts = BASE_MS + i // per_ms
        ipi = randrange(IPS)
        minute_ips.add((ts // 60000) * IPS + ipi)
        if realistic:
            sec = ts // 1000
            if sec_cache[0] != sec:
                sec_cache = [sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))]
            chunk.append('%d\t\\N\t0\t{"ip":"%s","status":%d,"bytes":%d,"url":"/items/%d",'
                         '"ts":"%s.%03dZ"}\n'
                         % (i % nparts, ips[ipi], status, nbytes, randrange(10000),
                            sec_cache[1], ts % 1000))
        else:
            chunk.append('%d\t\\N\t0\t{"ts":%d,"ip":"%s","path":"/items/%d","status":%d,'
                         '"bytes":%d}\n'
                         % (i % nparts, ts, ips[ipi], randrange(10000), status, nbytes))
        if len(chunk) >= 10000:
            out.write("".join(chunk))
            chunk = []
    out.write("".join(chunk))
    out.flush()
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump({"workload": args.workload, "messages": args.count,
                       "sum_bytes": total_bytes, "errors_5xx": errors,
                       "minute_ip_rows": len(minute_ips),
                       "first_ts_ms": BASE_MS,
                       "last_ts_ms": BASE_MS + (args.count - 1) // per_ms}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
