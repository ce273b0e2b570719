#!/usr/bin/env python3
"""The pg_streamagg benchmark: measurements, table and chart.

run.sh prepares everything this needs (packages, builds, a test broker, a
throwaway PostgreSQL cluster with pg_streamagg preloaded) and then runs

    bench.py --dsn DSN --brokers BOOTSTRAP --pgdata DIR --broker-pid PID ...

What is measured (README.md explains why, and what limits each figure):

  throughput   the same preloaded topic (8 partitions, lz4, 1M access-log
               messages) read to the end by each variant, in rounds, the
               variants interleaved so that background load hits them alike:
                 bare        C librdkafka consumer that only counts (ceiling)
                 python      hand-written exactly-once consumer
                 sa1         pg_streamagg, one tumbling window
                 sa4         pg_streamagg, four windows on the stream
               plus two reference rows that are not part of the targets:
                 bare_big    the bare consumer with unbounded prefetch
                 sa1_q16     sa1 with the prefetch bounded at 16 MB
  latency      a steady 20k msg/s for 20 s into an empty topic read by a
               one-window stream: produce time -> offsets committed
  rss          the worker's peak memory while it drains a 5M-message backlog

Results: results/latest.md (table + details), results/latest.json (every
figure of every run), results/throughput.png (chart, via throughput.gp).
"""
import argparse
import bisect
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import psycopg2
from confluent_kafka import Consumer, TopicPartition

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "bench"
LAT_TOPIC = "latency"
BACKLOG_TOPIC = "backlog"
CLK_TCK = os.sysconf("SC_CLK_TCK")

COLUMNS = "ip text, status int, bytes bigint, ts timestamptz"

# (name suffix, create_window arguments)
ONE_WINDOW = [
    ("hits", dict(size="1 minute", group_by="ip",
                  aggregates="count(*) AS hits, sum(bytes) AS bytes")),
]
FOUR_WINDOWS = ONE_WINDOW + [
    ("hop", dict(size="5 minutes", slide="1 minute", group_by="status",
                 aggregates="count(*) AS hits, sum(bytes) AS bytes")),
    ("errors", dict(size="1 minute", group_by="ip",
                    aggregates="count(*) AS errors", filter="status >= 500")),
    ("totals", dict(group_by="ip",
                    aggregates="count(*) AS hits, sum(bytes) AS bytes, "
                               "max(ts) AS last_seen")),
]

VARIANTS = {
    "bare": "1. bare librdkafka consumer (ceiling)",
    "python": "2. hand-written consumer (Python)",
    "sa1": "3. pg_streamagg, 1 window",
    "sa4": "4. pg_streamagg, 4 windows",
    "bare_big": "ref: bare consumer, unbounded prefetch",
    "sa1_q16": "ref: pg_streamagg, 1 window, prefetch bound 16 MB",
    "sa1_p2": "ref: pg_streamagg, 1 window, parallelism 2 (both cores)",
}
CHART_LABELS = {
    "bare": "1 bare consumer (ceiling)",
    "python": "2 hand-written (Python)",
    "sa1": "3 pg_streamagg, 1 window",
    "sa4": "4 pg_streamagg, 4 windows",
    "sa1_q16": "ref: 1 window, 16 MB prefetch",
    "sa1_p2": "ref: 1 window, 2 workers",
}
MAIN = ["bare", "python", "sa1", "sa4"]
REFERENCE = ["bare_big", "sa1_q16", "sa1_p2"]
# the reference rows' consumer settings (see README.md, "What limits the figures")
UNBOUNDED = ["queued.min.messages=10000000", "queued.max.messages.kbytes=2097151"]
PREFETCH_16MB = {"queued.max.messages.kbytes": 16384}


def log(msg):
    print("    " + msg, flush=True)


# ---------------------------------------------------------------- /proc

def proc_cpu(pid):
    """user + system CPU seconds of a live process, None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def proc_mem(pid):
    """VmRSS, VmHWM, RssAnon, RssShmem of a process, in kB ({} if gone)."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem", "RssFile"):
                    out[key] = int(rest.split()[0])
    except OSError:
        return {}
    return out


def machine_busy():
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]                  # idle + iowait
    total = sum(v[:8])                  # without guest time (counted in user)
    return total - idle, total


def children_of(root):
    """pids of root and everything below it."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent[int(d)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    kids = {}
    for pid, ppid in parent.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


class CpuWindow:
    """CPU used during a run: by the whole machine, and by our processes
    (the PostgreSQL cluster, the broker) that live across the run."""

    def __init__(self, postmaster, broker_pid):
        self.pids = children_of(postmaster) + [broker_pid, os.getpid()]
        self.broker_pid = broker_pid
        self.t0 = time.monotonic()
        self.busy0, self.total0 = machine_busy()
        self.cpu0 = {p: proc_cpu(p) for p in self.pids}

    def close(self, extra_ours=0.0):
        """extra_ours: CPU of our processes that exited during the run."""
        seconds = time.monotonic() - self.t0
        busy1, total1 = machine_busy()
        ncpu = os.cpu_count() or 1
        busy = (busy1 - self.busy0) / CLK_TCK
        ours = extra_ours
        broker = 0.0
        for p, c0 in self.cpu0.items():
            c1 = proc_cpu(p)
            if c0 is not None and c1 is not None:
                ours += c1 - c0
                if p == self.broker_pid:
                    broker = c1 - c0
        return {"seconds": seconds,
                "machine_busy_cores": busy / seconds if seconds else 0,
                "ours_cores": ours / seconds if seconds else 0,
                "other_cores": max(0.0, busy - ours) / seconds if seconds else 0,
                "broker_cpu": broker,
                "cores": ncpu}


# ---------------------------------------------------------------- bench

class Bench:
    def __init__(self, args):
        self.a = args
        self.db = psycopg2.connect(args.dsn)
        self.db.autocommit = True
        self.postmaster = int(open(os.path.join(args.pgdata, "postmaster.pid"))
                              .readline())
        self.runs = []            # every throughput run
        self.worker_started = None
        self.data = {}            # expected totals of the bench topic
        self.results = {"started": datetime.datetime.now(datetime.timezone.utc)
                         .strftime("%Y-%m-%d %H:%M UTC")}
        # the library the postmaster loaded at start-up, which every worker of
        # this run uses even if the installed file is replaced meanwhile
        self.build = build_info(self)
        if args.perf and shutil.which("perf"):
            # keep its symbols for perf report, whatever happens to the file
            subprocess.run(["perf", "buildid-cache", "-a", self.build[2]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # -- helpers

    def q(self, sql, params=None):
        with self.db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def q1(self, sql, params=None):
        rows = self.q(sql, params)
        return rows[0][0] if rows else None

    def tool(self, name):
        return os.path.join(self.a.tools, name)

    def watermarks(self, topic):
        c = Consumer({"bootstrap.servers": self.a.brokers, "group.id": "bench.wm"})
        try:
            md = c.list_topics(topic, timeout=10)
            out = {}
            for p in sorted(md.topics[topic].partitions):
                out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            return out
        finally:
            c.close()

    def preload(self, topic, count, partitions, summary):
        """gen_data.py | sa_produce -l -z lz4; checks that all of it is kept."""
        t0 = time.monotonic()
        gen = subprocess.Popen([sys.executable, os.path.join(HERE, "gen_data.py"),
                                "--count", str(count), "--partitions", str(partitions),
                                "--summary", summary], stdout=subprocess.PIPE)
        prod = subprocess.run([self.a.sa_produce, "-b", self.a.brokers, "-t", topic,
                               "-l", "-z", "lz4"], stdin=gen.stdout,
                              capture_output=True, text=True)
        gen.stdout.close()
        if gen.wait() != 0 or prod.returncode != 0:
            sys.exit("preloading %s failed: %s" % (topic, prod.stderr))
        wm = self.watermarks(topic)
        held = sum(hi - lo for lo, hi in wm.values())
        if any(lo != 0 for lo, _ in wm.values()) or held != count:
            sys.exit("the test broker kept %d of the %d messages of %s (retention); "
                     "use more partitions" % (held, count, topic))
        with open(summary) as f:
            totals = json.load(f)
        log("%s: %d messages in %d partitions, produced in %.1f s"
            % (topic, count, partitions, time.monotonic() - t0))
        return totals

    def checkpoint(self):
        """Same starting point for every run: no dirty buffers left by the
        previous one, no checkpoint due in the middle of this one."""
        self.q("CHECKPOINT")

    # -- pg_streamagg

    def create_stream(self, name, topic, windows, options=None, parallelism=1):
        """create_stream + create_window in one transaction."""
        opts = json.dumps(options or {})
        with self.db.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT streamagg.create_stream(name => %s, topic => %s, "
                        "brokers => %s, columns => %s, format => 'json', "
                        "event_time => 'ts', parallelism => %s, options => %s)",
                        (name, topic, self.a.brokers, COLUMNS, parallelism, opts))
            for suffix, w in windows:
                args = ", ".join("%s => %%s" % k for k in w)
                cur.execute("SELECT streamagg.create_window(name => %%s, stream => %%s, %s)"
                            % args, [name + "_" + suffix, name] + list(w.values()))
            cur.execute("COMMIT")

    def worker_pid(self, name):
        return self.q1("SELECT pid FROM pg_stat_activity "
                       "WHERE backend_type LIKE '%%pg_streamagg%%' "
                       "AND application_name = %s", ("pg_streamagg %s/0" % name,))

    def committed(self, name):
        return self.q1("SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets "
                       "WHERE stream = %s", (name,))

    def drop_stream(self, name):
        pid = self.worker_pid(name)
        self.q("SELECT streamagg.drop_stream(%s, cascade => true)", (name,))
        deadline = time.monotonic() + 30
        while pid and proc_cpu(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def drain(self, name, total, t0, timeout=600, sample_every=0.02):
        """Poll until the stream has committed `total` messages.  Returns
        (seconds to the first commit, seconds to the last, worker pid,
        worker CPU, peak memory figures), times counted from t0
        (time.monotonic() taken just before the stream was created)."""
        t_first = None
        pid = None
        peak = {}
        cpu = None
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                raise RuntimeError("stream %s: not drained after %d s" % (name, timeout))
            if pid is None:
                pid = self.worker_pid(name)
                if pid is not None:
                    self.worker_started = now - t0
            if pid is not None:
                for k, v in proc_mem(pid).items():
                    peak[k] = max(peak.get(k, 0), v)
                cpu = proc_cpu(pid) or cpu
            done = self.committed(name)
            if done and t_first is None:
                t_first = now - t0
            if done >= total:
                return t_first, now - t0, pid, cpu, peak
            time.sleep(sample_every)

    def run_sa(self, key, rnd, windows, options=None, parallelism=1):
        name = "%s_r%d" % (key, rnd)
        total = self.data["messages"]
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        t0 = time.monotonic()
        self.create_stream(name, TOPIC, windows, options, parallelism)
        self.worker_started = None
        t_first, seconds, pid, cpu, peak = self.drain(name, total, t0)
        cpuw = cw.close(cpu or 0)   # the worker started after cw
        ok, why = self.verify_sa(name, windows)
        self.drop_stream(name)
        return {"messages": total, "seconds": seconds, "first_commit_s": t_first,
                "worker_start_s": self.worker_started,
                "cpu": cpu, "cpu_detail": {"worker": cpu}, "peak_kb": peak,
                "load": cpuw, "ok": ok, "why": why}

    def verify_sa(self, name, windows):
        d = self.data
        expect = {
            "hits": ("SELECT sum(hits), sum(bytes) FROM %s", (d["messages"], d["sum_bytes"])),
            "hop": ("SELECT sum(hits), sum(bytes) FROM %s",
                    (5 * d["messages"], 5 * d["sum_bytes"])),
            "errors": ("SELECT sum(errors), NULL FROM %s", (d["errors_5xx"], None)),
            "totals": ("SELECT sum(hits), sum(bytes) FROM %s", (d["messages"], d["sum_bytes"])),
        }
        for suffix, _ in windows:
            sql, want = expect[suffix]
            got = self.q(sql % (name + "_" + suffix))[0]
            got = tuple(int(x) if x is not None else None for x in got)
            if got != want:
                return False, "%s_%s: got %s, expected %s" % (name, suffix, got, want)
        dead = self.q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = %s",
                       (name,))
        if dead:
            return False, "%d dead letters" % dead
        return True, ""

    # -- the other two consumers

    def run_bare(self, key, rnd, extra=()):
        """The worker's consumer settings, with the prefetch bound the
        cluster's streamagg.queue_kbytes gives; extra -X settings after."""
        self.checkpoint()
        kb = self.q1("SELECT setting FROM pg_settings WHERE name = 'streamagg.queue_kbytes'")
        cmd = [self.tool("bare_consumer"), "-b", self.a.brokers, "-t", TOPIC,
               "-X", "queued.max.messages.kbytes=%s" % kb]
        for x in extra:
            cmd += ["-X", x]
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        cpu = r["cpu_user"] + r["cpu_sys"]
        ok = r["messages"] == self.data["messages"]
        return {"messages": r["messages"], "seconds": r["seconds"],
                "first_commit_s": r["first_message_s"], "cpu": cpu,
                "cpu_detail": {"consumer": cpu}, "load": cw.close(cpu),
                "ok": ok, "why": "" if ok else "wrong count"}

    def run_python(self, key, rnd):
        self.q("TRUNCATE py_hits, py_offsets")
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        out = subprocess.run([sys.executable, os.path.join(HERE, "consumer_py.py"),
                              "--brokers", self.a.brokers, "--topic", TOPIC,
                              "--dsn", self.a.dsn],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("consumer_py.py failed: %s" % out.stderr)
        r = json.loads(out.stdout)
        own = r["cpu_user"] + r["cpu_sys"]
        got = tuple(int(x) for x in self.q("SELECT sum(hits), sum(bytes) FROM py_hits")[0])
        want = (self.data["messages"], self.data["sum_bytes"])
        return {"messages": r["messages"], "seconds": r["seconds"],
                "first_commit_s": r["first_commit_s"], "cpu": own + r["backend_cpu"],
                "cpu_detail": {"python": own, "backend": r["backend_cpu"]},
                "load": cw.close(own + r["backend_cpu"]),
                "ok": got == want, "why": "" if got == want else "got %s" % (got,)}

    # -- the parts of the benchmark

    def throughput(self):
        n = self.a.messages
        print("==> throughput: preloading topic %s" % TOPIC, flush=True)
        self.data = self.preload(TOPIC, n, 8, os.path.join(self.a.tmp, "bench.json"))
        subprocess.run([sys.executable, os.path.join(HERE, "consumer_py.py"),
                        "--brokers", self.a.brokers, "--topic", TOPIC,
                        "--dsn", self.a.dsn, "--setup"], check=True)
        plan = {
            "bare": lambda r: self.run_bare("bare", r),
            "bare_big": lambda r: self.run_bare("bare_big", r, UNBOUNDED),
            "python": lambda r: self.run_python("python", r),
            "sa1": lambda r: self.run_sa("sa1", r, ONE_WINDOW),
            "sa4": lambda r: self.run_sa("sa4", r, FOUR_WINDOWS),
            "sa1_q16": lambda r: self.run_sa("sa1_q16", r, ONE_WINDOW, PREFETCH_16MB),
            # CPU and memory figures of this row are worker 0's only
            "sa1_p2": lambda r: self.run_sa("sa1_p2", r, ONE_WINDOW, None, 2),
        }
        order = MAIN + ([] if self.a.no_reference else REFERENCE)
        if self.a.variants:
            order = [k for k in self.a.variants.split(",") if k]
            unknown = [k for k in order if k not in plan]
            if unknown:
                sys.exit("unknown variant(s): %s (known: %s)" % (", ".join(unknown),
                                                                 ", ".join(plan)))
        for rnd in range(1, self.a.repeat + 1):
            print("==> throughput round %d of %d" % (rnd, self.a.repeat), flush=True)
            # the bare consumer takes ~2 s and varies most: more samples of it
            for key in [k for k in order for _ in
                        range(self.a.bare_repeat if k.startswith("bare") else 1)]:
                r = plan[key](rnd)
                r.update(variant=key, round=rnd, rate=r["messages"] / r["seconds"])
                self.runs.append(r)
                log("%-9s %9.0f msg/s  %6.2f s  cpu %5.2f s  other load %.2f cores%s"
                    % (key, r["rate"], r["seconds"], r["cpu"] or 0,
                       r["load"]["other_cores"], "" if r["ok"] else "  WRONG: " + r["why"]))

    def latency(self):
        rate, secs = self.a.latency_rate, self.a.latency_seconds
        print("==> latency: %d msg/s for %d s" % (rate, secs), flush=True)
        name = "lat"
        self.create_stream(name, LAT_TOPIC, ONE_WINDOW)
        deadline = time.monotonic() + 60
        while (self.q1("SELECT count(*) FROM streamagg.offsets WHERE stream = %s", (name,)) < 8
               or self.worker_pid(name) is None):
            if time.monotonic() > deadline:
                raise RuntimeError("latency stream did not start")
            time.sleep(0.05)
        time.sleep(2)               # let the consumer settle at the end of the topic
        pid = self.worker_pid(name)
        logfile = os.path.join(self.a.tmp, "latency.log")
        # the transport alone: a bare consumer follows the same topic
        bare_log = os.path.join(self.a.tmp, "latency_bare.log")
        bare = subprocess.Popen([self.tool("bare_consumer"), "-b", self.a.brokers,
                                 "-t", LAT_TOPIC, "-F", bare_log, "-D",
                                 str(self.a.latency_warmup + secs + 3)],
                                stdout=subprocess.DEVNULL)
        time.sleep(1)
        prod = subprocess.Popen([self.tool("paced_producer"), "-b", self.a.brokers,
                                 "-t", LAT_TOPIC, "-r", str(rate), "-d", str(secs),
                                 "-w", str(self.a.latency_warmup), "-o", logfile],
                                stdout=subprocess.PIPE, text=True)
        polls = []                  # (time, {partition: next_offset})
        peak = {}
        period = self.a.poll_ms / 1000.0
        cur = self.db.cursor()
        wait_until = None
        while True:
            t = time.time()
            cur.execute("SELECT partition, next_offset FROM streamagg.offsets "
                        "WHERE stream = %s", (name,))
            polls.append((t, dict(cur.fetchall())))
            for k, v in proc_mem(pid).items():
                peak[k] = max(peak.get(k, 0), v)
            if wait_until is None and prod.poll() is not None:
                wait_until = time.monotonic() + 10
                target = self.watermarks(LAT_TOPIC)
            if wait_until is not None and (
                    all(polls[-1][1].get(p, 0) >= hi for p, (lo, hi) in target.items())
                    or time.monotonic() > wait_until):
                break
            time.sleep(max(0.0, period - (time.time() - t)))
        pstats = json.loads(prod.stdout.read())
        if prod.wait() != 0:
            raise RuntimeError("paced_producer failed: %s" % pstats)
        self.drop_stream(name)
        if bare.wait() != 0:
            raise RuntimeError("bare_consumer -F failed")
        arrived = {}
        with open(bare_log) as f:
            for line in f:
                p, off, us = line.split()
                arrived[(int(p), int(off))] = int(us)

        # visibility of each message: first poll whose offset passed it
        per_part = {}
        for t, offs in polls:
            for p, o in offs.items():
                per_part.setdefault(p, ([], []))
                per_part[p][0].append(o)
                per_part[p][1].append(t)
        lat = []                    # produce -> visible
        ack = []                    # produce -> acknowledged by the broker
        fetched = []                # produce -> received by the bare consumer
        unseen = 0
        with open(logfile) as f, open(os.path.join(self.a.tmp, "latency.tsv"), "w") as out:
            out.write("produced_s\tpartition\toffset\tack_ms\tlatency_ms\n")
            for line in f:
                p, off, us, ack_us = line.split()
                offs, times = per_part.get(int(p), ([], []))
                i = bisect.bisect_right(offs, int(off))
                if i >= len(offs):
                    unseen += 1
                    continue
                lat.append(times[i] - int(us) / 1e6)
                ack.append((int(ack_us) - int(us)) / 1e6)
                if (int(p), int(off)) in arrived:
                    fetched.append((arrived[(int(p), int(off))] - int(us)) / 1e6)
                out.write("%.6f\t%s\t%s\t%.1f\t%.1f\n"
                          % (int(us) / 1e6, p, off, ack[-1] * 1000, lat[-1] * 1000))
        lat.sort()
        ack.sort()
        fetched.sort()
        if not lat:
            raise RuntimeError("latency: no message became visible")

        def pct(q, v=lat):
            return v[min(len(v) - 1, int(q * len(v)))] * 1000

        self.results["latency"] = {
            "rate_target": rate, "rate_achieved": pstats["rate"],
            "warmup_s": self.a.latency_warmup,
            "messages": len(lat), "unseen": unseen, "poll_ms": self.a.poll_ms,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000, "mean_ms": statistics.fmean(lat) * 1000,
            "ack_p50_ms": pct(0.5, ack), "ack_p99_ms": pct(0.99, ack),
            "fetch_messages": len(fetched),
            "fetch_p50_ms": pct(0.5, fetched) if fetched else None,
            "fetch_p99_ms": pct(0.99, fetched) if fetched else None,
            "worker_peak_kb": peak}
        r = self.results["latency"]
        log("%d messages at %.0f msg/s: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms"
            % (r["messages"], r["rate_achieved"], r["p50_ms"], r["p90_ms"], r["p99_ms"],
               r["max_ms"]))
        log("transport alone (bare consumer): p50 %s ms, p99 %s ms; broker ack p50 %.0f ms, "
            "p99 %.0f ms" % (r["fetch_p50_ms"] and round(r["fetch_p50_ms"]),
                             r["fetch_p99_ms"] and round(r["fetch_p99_ms"]),
                             r["ack_p50_ms"], r["ack_p99_ms"]))

    def rss(self):
        n, parts = self.a.backlog, self.a.backlog_partitions
        print("==> worker memory on a backlog of %d messages (%d partitions)" % (n, parts),
              flush=True)
        data = self.preload(BACKLOG_TOPIC, n, parts, os.path.join(self.a.tmp, "backlog.json"))
        self.checkpoint()
        name = "rss"
        t0 = time.monotonic()
        self.create_stream(name, BACKLOG_TOPIC, ONE_WINDOW)
        t_first, t_end, pid, cpu, peak = self.drain(name, n, t0, sample_every=0.05)
        hwm = proc_mem(pid).get("VmHWM", 0)
        peak["VmHWM"] = max(peak.get("VmHWM", 0), hwm)
        hits, nbytes = (int(x or 0) for x in
                        self.q("SELECT sum(hits), sum(bytes) FROM rss_hits")[0])
        dead = dict(self.q("SELECT reason, count(*) FROM streamagg.dead_letters "
                           "WHERE stream = %s GROUP BY reason", (name,)))
        # exactly once: every message aggregated or kept as a dead letter
        ok = hits + sum(dead.values()) == data["messages"]
        diag = None
        if not ok or dead:
            diag = {"offsets": self.q("SELECT partition, next_offset, messages, dead_letters "
                                      "FROM streamagg.offsets WHERE stream = %s "
                                      "ORDER BY partition", (name,)),
                    "per_window": self.q("SELECT window_start::text, sum(hits)::bigint "
                                         "FROM rss_hits GROUP BY 1 ORDER BY 1")}
        queue_kb = self.q1("SELECT current_setting('streamagg.queue_kbytes')")
        self.drop_stream(name)
        self.results["rss"] = {"messages": n, "partitions": parts, "seconds": t_end,
                               "rate": n / t_end, "first_commit_s": t_first,
                               "worker_cpu": cpu, "peak_kb": peak, "ok": ok,
                               "aggregated": hits, "dead_letters": dead,
                               "bytes_ok": nbytes == data["sum_bytes"], "diagnostics": diag,
                               "queue_kbytes": queue_kb}
        log("drained in %.1f s (%.0f msg/s): peak VmHWM %.0f MB, peak RssAnon %.0f MB, "
            "peak RssShmem %.0f MB; aggregated %d, dead letters %s%s"
            % (t_end, n / t_end, peak.get("VmHWM", 0) / 1024, peak.get("RssAnon", 0) / 1024,
               peak.get("RssShmem", 0) / 1024, hits, dead or "none",
               "" if ok else "  WRONG: messages unaccounted for"))

    def profile(self):
        """perf record of the worker during one more one-window run."""
        perf = shutil.which("perf")
        if not perf:
            log("perf not found: no profile")
            return
        print("==> profiling the worker (one window)", flush=True)
        name = "prof"
        out = os.path.join(self.a.tmp, "perf.data")
        self.checkpoint()
        self.create_stream(name, TOPIC, ONE_WINDOW)
        pid = None
        while pid is None:
            pid = self.worker_pid(name)
            time.sleep(0.01)
        rec = subprocess.Popen([perf, "record", "-q", "-F", "999", "-g", "-p", str(pid),
                                "-o", out], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        self.drain(name, self.data["messages"], time.monotonic())
        rec.send_signal(2)
        rec.wait()
        self.drop_stream(name)
        rep = subprocess.run([perf, "report", "-i", out, "--no-children", "--stdio",
                              "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.7"],
                             capture_output=True, text=True)
        dsos = subprocess.run([perf, "report", "-i", out, "--no-children", "--stdio",
                               "--sort", "dso", "-g", "none"], capture_output=True, text=True)
        lines = [ln.rstrip() for ln in (dsos.stdout + rep.stdout).splitlines()
                 if ln.strip() and not ln.startswith("#")]
        self.results["profile"] = lines
        with open(os.path.join(self.a.results, "profile.txt"), "w") as f:
            f.write("perf profile of a pg_streamagg worker draining %d messages into one "
                    "window\n(self time; by library, then by function)\n\n"
                    % self.data["messages"])
            f.write("\n".join(lines) + "\n")
        log("written results/profile.txt")


# ---------------------------------------------------------------- report

def median_run(runs):
    rates = sorted(r["rate"] for r in runs)
    return statistics.median(rates), rates[0], rates[-1]


def fmt_rate(x):
    return "{:,.0f}".format(x)


def machine_info(b):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = b.q1("SHOW server_version")
    import confluent_kafka
    return "%d x %s, %.0f GB RAM, Linux %s; PostgreSQL %s, librdkafka %s" % (
        os.cpu_count(), model, mem, platform.release(), pg, confluent_kafka.libversion()[0])


def build_info(b):
    """Which pg_streamagg was measured: the library's checksum and date, and
    the state of the checkout the benchmark ran from."""
    import hashlib
    libdir = b.q1("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")
    lib = os.path.join(libdir, "pg_streamagg.so")
    try:
        with open(lib, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = datetime.datetime.fromtimestamp(os.stat(lib).st_mtime, datetime.timezone.utc)
        lib_desc = "%s (sha256 %s…, installed %s)" % (lib, digest,
                                                       built.strftime("%Y-%m-%d %H:%M UTC"))
    except OSError:
        lib_desc = lib
    try:
        repo = os.path.dirname(os.path.dirname(HERE))
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--",
                                "src", "extension", "Makefile"],
                               capture_output=True, text=True).stdout.strip()
        tree = "checkout %s%s" % (head, " with uncommitted changes in src/extension"
                                  if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        tree = "checkout unknown"
    return lib_desc, tree, lib


def report(b):
    a = b.a
    by = {}
    for r in b.runs:
        by.setdefault(r["variant"], []).append(r)
    med = {k: median_run(v) for k, v in by.items()}
    ceiling = med["bare"][0] if "bare" in med else None
    hand = med["python"][0] if "python" in med else None

    def ratio(x, base, pct):
        if not base:
            return "—"
        return "%.0f%%" % (100 * x / base) if pct else "%.1f×" % (x / base)
    lat = b.results.get("latency")
    rss = b.results.get("rss")

    def cpu_us(k):
        cpus = [r["cpu"] for r in by[k] if r["cpu"]]
        return statistics.median(cpus) / b.data["messages"] * 1e6 if cpus else None

    rows = []
    for k in MAIN + REFERENCE:
        if k not in by:
            continue
        m, lo, hi = med[k]
        c = cpu_us(k)
        latcell = rsscell = "—"
        if k == "sa1" and lat:
            latcell = "%.0f / %.0f ms" % (lat["p50_ms"], lat["p99_ms"])
        if k == "sa1" and rss:
            rsscell = "%.0f MB (%.0f MB private)" % (rss["peak_kb"].get("VmHWM", 0) / 1024,
                                                     rss["peak_kb"].get("RssAnon", 0) / 1024)
        wrong = sum(1 for r in by[k] if not r["ok"])
        rows.append("| %s | %s | %s | %s | %s | %s | %s |%s"
                    % (VARIANTS[k], fmt_rate(m), ratio(m, ceiling, True), ratio(m, hand, False),
                       "%.1f" % c if c else "—", latcell, rsscell,
                       "  **%d run(s) gave wrong totals**" % wrong if wrong else ""))
    head = ["| variant | msgs/s (median) | vs ceiling | vs hand-written | CPU µs/msg "
            "| latency p50 / p99 | worker peak RSS |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    table = "\n".join(head + rows)

    def target(label, ok, value):
        if not isinstance(ok, str):
            ok = "met" if ok else "**not met**"
        return "| %s | %s | %s |" % (label, value, ok)

    tg = ["| target | measured | |", "|---|---:|---|"]
    if "sa1" in med and ceiling and hand:
        s1 = med["sa1"][0]
        tg.append(target("1 window ≥ 50% of the ceiling", s1 >= 0.5 * ceiling,
                         "%.0f%%" % (100 * s1 / ceiling)))
        tg.append(target("1 window ≥ 10× the hand-written consumer", s1 >= 10 * hand,
                         "%.1f×" % (s1 / hand)))
        if "sa4" in med:
            tg.append(target("4 windows ≥ 60% of 1 window", med["sa4"][0] >= 0.6 * s1,
                             "%.0f%%" % (100 * med["sa4"][0] / s1)))
    if lat:
        tg.append(target("latency p99 ≤ 500 ms at %s msg/s" % fmt_rate(lat["rate_target"]),
                         lat["p99_ms"] <= 500, "%.0f ms" % lat["p99_ms"]))
    if rss:
        total = rss["peak_kb"].get("VmHWM", 0) / 1024
        private = rss["peak_kb"].get("RssAnon", 0) / 1024
        if total < 256:
            verdict = "met"
        elif private < 256:
            verdict = ("met for the worker's own memory; **not met** counting the shared "
                       "buffers it touched")
        else:
            verdict = "**not met**"
        tg.append(target("worker RSS < 256 MB on a %s backlog" % fmt_rate(rss["messages"]),
                         verdict, "%.0f MB (%.0f MB private)" % (total, private)))
    targets = "\n".join(tg)

    # details
    det = ["| variant | runs (msgs/s) | s to worker start / first commit | CPU s (where) "
           "| broker CPU s | other load (cores) | worker peak RSS |",
           "|---|---|---:|---|---:|---:|---:|"]
    for k in MAIN + REFERENCE:
        if k not in by:
            continue
        rs = by[k]
        where = ", ".join("%s %.2f" % (w, statistics.median(
            [r["cpu_detail"][w] or 0 for r in rs])) for w in rs[0]["cpu_detail"])
        hwm = [r["peak_kb"].get("VmHWM", 0) for r in rs if r.get("peak_kb")]
        starts = [r["worker_start_s"] for r in rs if r.get("worker_start_s") is not None]
        det.append("| %s | %s | %s%.2f | %s | %.2f | %.2f | %s |" % (
            k, " / ".join(fmt_rate(r["rate"]) for r in rs),
            "%.2f / " % statistics.median(starts) if starts else "",
            statistics.median(r["first_commit_s"] or 0 for r in rs), where,
            statistics.median(r["load"]["broker_cpu"] for r in rs),
            max(r["load"]["other_cores"] for r in rs),
            "%.0f MB" % (max(hwm) / 1024) if hwm else "—"))
    details = "\n".join(det)
    other = max((r["load"]["other_cores"] for r in b.runs), default=0)

    extra = []
    if lat:
        extra.append("- Latency: %s messages produced at %s msg/s (target %s) for %d s "
                     "(after %g s of warm-up at the same rate) into 8 partitions, read by a "
                     "one-window stream with the default streamagg.batch_time; produce → "
                     "visible p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms (offsets "
                     "polled every %d ms, which adds up to that much). The same messages "
                     "reached a bare consumer following the topic after p50 %s ms, p99 %s ms "
                     "(the transport: producer linger, test broker, fetch), and the broker "
                     "acknowledged them after p50 %.0f ms, p99 %.0f ms."
                     % (fmt_rate(lat["messages"]), fmt_rate(lat["rate_achieved"]),
                        fmt_rate(lat["rate_target"]), a.latency_seconds, lat["warmup_s"],
                        lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["max_ms"],
                        lat["poll_ms"],
                        "%.0f" % lat["fetch_p50_ms"] if lat["fetch_p50_ms"] else "?",
                        "%.0f" % lat["fetch_p99_ms"] if lat["fetch_p99_ms"] else "?",
                        lat["ack_p50_ms"], lat["ack_p99_ms"]))
    if rss:
        pk = rss["peak_kb"]
        extra.append("- Backlog: %s messages held in %d partitions before the stream was "
                     "created, drained in %.1f s (%s msg/s); worker peak VmHWM %.0f MB, of "
                     "which private (RssAnon) at most %.0f MB and shared buffers (RssShmem) at "
                     "most %.0f MB; streamagg.queue_kbytes = %s.%s%s"
                     % (fmt_rate(rss["messages"]), rss["partitions"], rss["seconds"],
                        fmt_rate(rss["rate"]), pk.get("VmHWM", 0) / 1024,
                        pk.get("RssAnon", 0) / 1024, pk.get("RssShmem", 0) / 1024,
                        rss["queue_kbytes"],
                        " **%s of the messages became dead letters (%s) instead of being "
                        "aggregated** (every message is accounted for, but the window totals "
                        "are short; see the README)."
                        % (fmt_rate(sum(rss["dead_letters"].values())),
                           ", ".join("%s: %s" % kv for kv in rss["dead_letters"].items()))
                        if rss["dead_letters"] else " Every message was aggregated.",
                        "" if rss["ok"] else " **Messages unaccounted for.**"))

    lib, tree, _ = b.build
    if build_info(b)[0] != lib:
        lib += " (replaced by another installation during the run; the workers kept using this one)"
    md = """# pg_streamagg benchmark — latest results

Run {started} with `make bench` ({repeat} rounds, the bare consumer {bare_repeat}× per round;
medians shown) on {machine}.
Measured: {lib}; {tree}.
Topic: {n} JSON access-log messages (~86 bytes, 10,000 distinct ips), 8 partitions,
lz4, on the test broker (librdkafka's mock cluster) on the same machine.
PostgreSQL: synchronous_commit = on, fsync = on, shared_buffers = {sb}.
Other load on the machine during the runs: up to {other:.2f} cores busy outside this
benchmark (other engineers' tests may have been running).

{table}

"Ceiling" is variant 1 with the worker's own consumer settings; "hand-written" is
variant 2. Latency and peak RSS were measured on the one-window configuration
(details below). CPU µs/msg counts every process of the variant (the Python consumer
plus its PostgreSQL backend; the pg_streamagg worker alone; the bare consumer).

## Targets

{targets}

## Details

{details}

{extra}

Reproduce: `make bench` (see test/bench/README.md). Raw figures: `latest.json`.
""".format(started=b.results["started"], repeat=a.repeat, machine=machine_info(b),
           lib=lib, tree=tree, bare_repeat=a.bare_repeat,
           n=fmt_rate(b.data["messages"]), sb=b.q1("SHOW shared_buffers"), other=other,
           table=table, targets=targets, details=details, extra="\n".join(extra))
    return md, med


def chart(b, med):
    """results/throughput.png; the unbounded-prefetch reference is an order
    of magnitude above the rest, so it is written on the chart, not drawn."""
    dat = os.path.join(b.a.tmp, "throughput.dat")
    with open(dat, "w") as f:
        f.write("# label median min max group\n")
        for k in MAIN + REFERENCE:
            if k in med and k in CHART_LABELS:
                m, lo, hi = med[k]
                f.write('"%s" %.0f %.0f %.0f %d\n'
                        % (CHART_LABELS[k], m, lo, hi, 0 if k in MAIN else 1))
    gp = shutil.which("gnuplot")
    if not gp:
        log("gnuplot not found: no chart")
        return None
    if not any(k in med for k in CHART_LABELS):
        return None
    note = ""
    if "bare_big" in med:
        note = "not drawn: bare consumer with unbounded prefetch, %s msg/s" % fmt_rate(
            med["bare_big"][0])
    png = os.path.join(b.a.results, "throughput.png")
    subtitle = "%s messages, 8 partitions; median of %d rounds; %s" % (
        fmt_rate(b.data["messages"]), b.a.repeat, b.results["started"])
    ymax = 1.3 * max(med[k][0] for k in CHART_LABELS if k in med) / 1000
    subprocess.run([gp, "-e", "datafile='%s'; outfile='%s'; subtitle='%s'; note='%s'; ymax=%.0f"
                    % (dat, png, subtitle, note, ymax), os.path.join(HERE, "throughput.gp")],
                   check=True)
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--broker-pid", type=int, required=True)
    ap.add_argument("--pgdata", required=True)
    ap.add_argument("--tools", required=True, help="directory of bare_consumer etc.")
    ap.add_argument("--sa-produce", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bare-repeat", type=int, default=3,
                    help="runs of the bare consumer per round")
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--latency-rate", type=int, default=20000)
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--latency-warmup", type=float, default=3)
    ap.add_argument("--poll-ms", type=int, default=5)
    ap.add_argument("--backlog", type=int, default=5000000)
    ap.add_argument("--backlog-partitions", type=int, default=40)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--variants", default="",
                    help="comma list of variants to run (default: all)")
    ap.add_argument("--skip", default="", help="comma list of: latency,rss")
    ap.add_argument("--perf", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.results, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))

    b = Bench(a)
    b.throughput()
    if "latency" not in skip:
        b.latency()
    if "rss" not in skip:
        b.rss()
    if a.perf:
        b.profile()
    md, med = report(b)
    with open(os.path.join(a.results, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.results, "latest.json"), "w") as f:
        json.dump({"runs": b.runs, "data": b.data, **b.results}, f, indent=1, default=str)
        f.write("\n")
    chart(b, med)
    print()
    print(md)
    print("written: %s" % ", ".join(os.path.join(a.results, x) for x in
                                    ("latest.md", "latest.json", "throughput.png")))


if __name__ == "__main__":
    main()
