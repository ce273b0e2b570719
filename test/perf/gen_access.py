#!/usr/bin/env python3
"""Realistic access-log messages as sa_produce batch lines (test/perf).

Message i goes to partition i % PARTITIONS with event time
2024-01-01T00:00:00Z + i milliseconds, so every (minute, ip) group of a
1-minute window holds about six messages: many keys, few events per key.

    {"ts":"2024-01-01T00:00:00.123Z","ip":"10.0.39.15","path":"/items/4821",
     "status":200,"bytes":5123}

--ts epoch writes ts as epoch milliseconds instead of an ISO-8601 string.
With --expect FILE the exact GROUP BY of a window of --size seconds and
--slide seconds (count, sum(bytes) per window_start and ip) is written as
COPY text, so a run can be checked row by row.
"""
import argparse
import random
import sys
import time

BASE_MS = 1704067200000          # 2024-01-01T00:00:00Z
IPS = 10000
STATUS = [200] * 84 + [304] * 5 + [404] * 4 + [301] * 3 + [500] * 2 + [502, 503]


def iso(ms):
    s, m = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--ts", choices=["iso", "epoch"], default="iso")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--expect")
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--slide", type=int, default=0)
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    ips = ["10.0.%d.%d" % (i >> 8, i & 255) for i in range(IPS)]
    size = a.size * 1000
    slide = (a.slide or a.size) * 1000
    groups = {}
    out = sys.stdout
    chunk = []
    sec_cache = {}
    for i in range(a.count):
        ms = BASE_MS + i
        ip = ips[rnd.randrange(IPS)]
        nbytes = rnd.randrange(200, 50001)
        status = STATUS[rnd.randrange(100)]
        if a.ts == "iso":
            s, m = divmod(ms, 1000)
            head = sec_cache.get(s)
            if head is None:
                head = sec_cache[s] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
            ts = '"%s.%03dZ"' % (head, m)
        else:
            ts = str(ms)
        chunk.append('%d\t\\N\t0\t{"ts":%s,"ip":"%s","path":"/items/%d","status":%d,"bytes":%d}\n'
                     % (i % a.partitions, ts, ip, rnd.randrange(10000), status, nbytes))
        if a.expect:
            last = ms - ms % slide
            st = last
            while st + size > ms:
                g = groups.get((st, ip))
                if g is None:
                    groups[(st, ip)] = [1, nbytes]
                else:
                    g[0] += 1
                    g[1] += nbytes
                st -= slide
        if len(chunk) >= 10000:
            out.write("".join(chunk))
            chunk = []
    out.write("".join(chunk))
    out.flush()
    if a.expect:
        with open(a.expect, "w") as f:
            for (st, ip), (c, b) in groups.items():
                f.write("%s\t%s\t%s\t%d\t%d\n" % (iso(st), iso(st + size), ip, c, b))


if __name__ == "__main__":
    main()
