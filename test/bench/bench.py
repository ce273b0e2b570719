#!/usr/bin/env python3
"""The pg_streamagg benchmark: measurements, table and chart.

run.sh prepares everything this needs (packages, builds, a Kafka broker, a
throwaway PostgreSQL cluster with pg_streamagg preloaded, the Java peers)
and then runs

    bench.py --dsn DSN --jdbc-url URL --brokers BOOTSTRAP --pgdata DIR ...

What is measured (README.md explains why, and what limits each figure):

  throughput   two preloaded topics (8 partitions, lz4), each read to the
               end by every variant of its workload, in rounds, the variants
               interleaved so that background load hits them alike:
                 realistic  1.2M access-log messages, event time +1 ms per
                            message, ISO-8601 ts (the headline)
                   bare       C librdkafka consumer that only counts (ceiling)
                   python     hand-written exactly-once consumer
                   flink      Flink SQL job, local MiniCluster, parallelism 2
                   kstreams   Kafka Streams, exactly_once_v2, 2 threads
                   sa1        pg_streamagg, one tumbling window
                   sa4        pg_streamagg, four windows on the stream
                   sa1_p2     sa1 with parallelism => 2
                   hop60      one hopping window of 60 hops, time-bounded
                   hop1000    one hopping window of 1,000 hops, time-bounded
                   bare_big   reference: bare with unbounded prefetch
                 dense      1M messages, event time +1 ms every 10 messages,
                            epoch-millisecond ts (the original benchmark)
                   dense_bare, dense_sa1
  latency      a steady 20k msg/s for 20 s into an empty topic read by a
               one-window stream: produce time -> offsets committed
  rss          the worker's peak memory while it drains a 5M-message backlog

Results: results/latest.md (table + details), results/latest.json (every
figure of every run), results/throughput.png (chart, via throughput.gp).
The exit status is 1 if any run gave a wrong result (totals, or a peer's
table different from pg_streamagg's), after the results are written.
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
import traceback

import psycopg2
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")

COLUMNS = "ip text, status int, bytes bigint, ts timestamptz"
AGGS = "count(*) AS hits, sum(bytes) AS bytes"

# (name suffix, create_window arguments)
ONE_WINDOW = [
    ("hits", dict(size="1 minute", group_by="ip", aggregates=AGGS)),
]
FOUR_WINDOWS = ONE_WINDOW + [
    ("hop", dict(size="5 minutes", slide="1 minute", group_by="status", aggregates=AGGS)),
    ("errors", dict(size="1 minute", group_by="ip",
                    aggregates="count(*) AS errors", filter="status >= 500")),
    ("totals", dict(group_by="ip",
                    aggregates="count(*) AS hits, sum(bytes) AS bytes, "
                               "max(ts) AS last_seen")),
]
# hopping windows, slide 1 minute (the tumbling window's size): a message
# belongs to `hops` windows
HOPS = {"hop60": ("60 minutes", 60), "hop1000": ("1000 minutes", 1000)}


def hop_window(key):
    size, _ = HOPS[key]
    return [("hits", dict(size=size, slide="1 minute", group_by="ip", aggregates=AGGS))]


# key -> (workload, label, chart label); the table's order
VARIANTS = {
    "bare": ("realistic", "bare librdkafka consumer (ceiling)", "bare consumer"),
    "python": ("realistic", "hand-written exactly-once consumer (Python)", "hand-written (Python)"),
    "flink": ("realistic", "Flink SQL, 2 slots (MiniCluster), JDBC upsert", "Flink SQL (2 cores)"),
    "kstreams": ("realistic", "Kafka Streams, exactly_once_v2, 2 threads", "Kafka Streams (2 threads)"),
    "sa1": ("realistic", "pg_streamagg, 1 tumbling window", "pg_streamagg 1 window"),
    "sa4": ("realistic", "pg_streamagg, 4 windows", "pg_streamagg 4 windows"),
    "sa1_p2": ("realistic", "pg_streamagg, 1 window, parallelism => 2", "pg_streamagg 2 workers"),
    "hop60": ("realistic", "pg_streamagg, hopping 60 min / 1 min (60 hops)", "pg_streamagg hop 60"),
    "hop1000": ("realistic", "pg_streamagg, hopping 1000 min / 1 min (1,000 hops)",
                "pg_streamagg hop 1000"),
    "bare_big": ("realistic", "ref: bare consumer, unbounded prefetch", None),
    "dense_bare": ("dense", "bare librdkafka consumer (ceiling)", "dense: bare"),
    "dense_sa1": ("dense", "pg_streamagg, 1 tumbling window", "dense: pg_streamagg"),
}
# run in every round, in this order (the bare consumer several times)
ROUND = ["sa1", "bare", "python", "flink", "sa4", "sa1_p2", "dense_bare", "dense_sa1",
         "bare_big"]
# run once, after the rounds
ONCE = ["kstreams", "hop60", "hop1000"]
REFERENCE = ["bare_big"]
# the reference row's consumer settings (see README.md, "What limits the figures")
UNBOUNDED = ["queued.min.messages=10000000", "queued.max.messages.kbytes=2097151"]
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
        self.pids = children_of(postmaster) + [os.getpid()]
        if broker_pid:
            self.pids += children_of(broker_pid)
        self.broker_pid = broker_pid
        self.pg = set(children_of(postmaster))
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
                if self.broker_pid and p != os.getpid() and p not in self.pg:
                    broker += c1 - c0
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
        self.data = {}            # workload -> expected totals of its topic
        self.topic = {}           # workload -> topic
        self.lat_topic = args.topic_prefix + "latency"
        self.failures = []        # wrong results: the exit status is 1
        self.versions = {}
        self.have_ref = False     # ref_hits holds pg_streamagg's realistic result
        self.results = {"started": datetime.datetime.now(datetime.timezone.utc)
                         .strftime("%Y-%m-%d %H:%M UTC")}
        self.admin = AdminClient({"bootstrap.servers": args.brokers})
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

    def fail(self, what):
        self.failures.append(what)
        log("FAILED: " + what)

    def create_topic(self, topic, partitions):
        """A topic of the run (all of them are deleted at the end)."""
        fs = self.admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=30)
        for f in fs.values():
            f.result()
        deadline = time.monotonic() + 30
        while True:
            md = self.admin.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is not None and t.error is None and len(t.partitions) == partitions and all(
                    p.leader >= 0 for p in t.partitions.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("topic %s not ready after 30 s" % topic)
            time.sleep(0.2)

    def delete_topics(self):
        try:
            md = self.admin.list_topics(timeout=10)
            mine = [t for t in md.topics if t.startswith(self.a.topic_prefix)]
            if mine:
                for f in self.admin.delete_topics(mine, request_timeout=60).values():
                    try:
                        f.result()
                    except Exception:   # pylint: disable=broad-except
                        pass
        except Exception as e:          # pylint: disable=broad-except
            log("could not delete the benchmark's topics: %s" % e)

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

    def preload(self, topic, count, partitions, summary, workload):
        """gen_data.py | sa_produce -l -z lz4; checks that all of it is kept."""
        t0 = time.monotonic()
        gen = subprocess.Popen([sys.executable, os.path.join(HERE, "gen_data.py"),
                                "--count", str(count), "--partitions", str(partitions),
                                "--workload", workload, "--summary", summary],
                               stdout=subprocess.PIPE)
        prod = subprocess.run([self.a.sa_produce, "-b", self.a.brokers, "-t", topic,
                               "-l", "-z", "lz4"], stdin=gen.stdout,
                              capture_output=True, text=True)
        gen.stdout.close()
        if gen.wait() != 0 or prod.returncode != 0:
            sys.exit("preloading %s failed: %s" % (topic, prod.stderr))
        wm = self.watermarks(topic)
        held = sum(hi - lo for lo, hi in wm.values())
        if any(lo != 0 for lo, _ in wm.values()) or held != count:
            sys.exit("the broker kept %d of the %d messages of %s" % (held, count, topic))
        with open(summary) as f:
            totals = json.load(f)
        log("%s: %d %s messages in %d partitions, produced in %.1f s"
            % (topic, count, workload, partitions, time.monotonic() - t0))
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

    def worker_pids(self, name):
        return [r[0] for r in self.q(
            "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE '%%pg_streamagg%%' "
            "AND application_name LIKE %s ORDER BY application_name",
            ("pg_streamagg %s/%%" % name,))]

    def worker_pid(self, name):
        pids = self.worker_pids(name)
        return pids[0] if pids else None

    def committed(self, name):
        return self.q1("SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets "
                       "WHERE stream = %s", (name,))

    def drop_stream(self, name):
        pids = self.worker_pids(name)
        self.q("SELECT streamagg.drop_stream(%s, cascade => true)", (name,))
        deadline = time.monotonic() + 60
        while any(proc_cpu(p) is not None for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def drain(self, name, total, t0, timeout=600, sample_every=0.02, workers=1,
              bounded=False):
        """Poll until the stream has committed `total` messages (or, with
        bounded, until `timeout` seconds have passed).  Returns (seconds to
        the first commit, seconds to the last, messages committed, worker
        pids, CPU of the workers, peak memory figures of the first worker),
        times counted from t0 (time.monotonic() taken just before the stream
        was created)."""
        t_first = None
        pids = []
        peak = {}
        cpu = {}
        while True:
            now = time.monotonic()
            if len(pids) < workers:
                pids = self.worker_pids(name)
                if pids and self.worker_started is None:
                    self.worker_started = now - t0
            for i, pid in enumerate(pids):
                if i == 0:
                    for k, v in proc_mem(pid).items():
                        peak[k] = max(peak.get(k, 0), v)
                cpu[pid] = proc_cpu(pid) or cpu.get(pid)
            done = self.committed(name)
            if done and t_first is None:
                t_first = now - t0
            if done >= total:
                return t_first, now - t0, done, pids, sum(c or 0 for c in cpu.values()), peak
            if now - t0 > timeout:
                if bounded:
                    return (t_first, now - t0, done, pids,
                            sum(c or 0 for c in cpu.values()), peak)
                raise RuntimeError("stream %s: not drained after %d s" % (name, timeout))
            time.sleep(sample_every)

    def run_sa(self, key, rnd, windows, parallelism=1):
        workload = VARIANTS[key][0]
        name = "%s_r%d" % (key, rnd)
        total = self.data[workload]["messages"]
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        t0 = time.monotonic()
        self.worker_started = None
        self.create_stream(name, self.topic[workload], windows, None, parallelism)
        try:
            t_first, seconds, _, _, cpu, peak = self.drain(name, total, t0,
                                                           workers=parallelism)
            cpuw = cw.close(cpu or 0)   # the worker started after cw
            ok, why = self.verify_sa(name, windows, self.data[workload])
            if ok and key == "sa1" and not self.have_ref:
                # pg_streamagg's result, which every peer's must equal
                self.q("DROP TABLE IF EXISTS ref_hits")
                self.q("CREATE TABLE ref_hits AS SELECT window_start, ip, hits::bigint AS hits, "
                       "bytes::bigint AS bytes FROM %s_hits" % name)
                self.have_ref = True
        finally:
            self.drop_stream(name)
        return {"messages": total, "seconds": seconds, "first_commit_s": t_first,
                "worker_start_s": self.worker_started,
                "cpu": cpu, "cpu_detail": {"workers": cpu}, "peak_kb": peak,
                "load": cpuw, "ok": ok, "why": why}

    def run_hop(self, key, rnd):
        """A hopping window, bounded by --hop-seconds: the rate is what was
        committed by then.  Checks that the committed rows hold each
        committed message once per hop (one snapshot)."""
        name = "%s_r%d" % (key, rnd)
        hops = HOPS[key][1]
        total = self.data["realistic"]["messages"]
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        t0 = time.monotonic()
        self.worker_started = None
        self.create_stream(name, self.topic["realistic"], hop_window(key))
        try:
            t_first, seconds, done, _, cpu, peak = self.drain(
                name, total, t0, timeout=self.a.hop_seconds, sample_every=0.1, bounded=True)
            cpuw = cw.close(cpu or 0)
            size_s = 60 * hops
            if self.q1("SELECT to_regclass(%s) IS NOT NULL", (name + "_hits_slices",)):
                # kept as slices: the view combines the open windows at read
                # time (reading all of a 1000-hop view is ~10M rows out of
                # ~200M slice reads), so the hits of all windows are counted
                # from the tables: the closed windows, plus each slice times
                # the open windows that hold it (those starting after the
                # stored horizon minus the size, up to the slice itself)
                done, hits, rows = self.q(
                    "WITH h AS (SELECT coalesce(max(extract(epoch FROM window_end)), '-Infinity') AS h "
                    "             FROM {t}_slices WHERE window_start = '-infinity') "
                    "SELECT (SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets WHERE stream = %s), "
                    "       (SELECT coalesce(sum(hits), 0) FROM {t}_closed) "
                    "     + (SELECT coalesce(sum(s.hits * greatest(0, ceil((extract(epoch FROM s.window_start) "
                    "            - greatest(extract(epoch FROM s.window_start) - {size}, h.h - {size})) / 60))), 0) "
                    "          FROM {t}_slices s, h WHERE s.window_start > '-infinity'), "
                    "       (SELECT count(*) FROM {t}_slices) + (SELECT count(*) FROM {t}_closed)"
                    .format(t=name + "_hits", size=size_s), (name,))[0]
            else:
                done, hits, rows = self.q(
                    "SELECT (SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets "
                    "WHERE stream = %%s), (SELECT coalesce(sum(hits), 0) FROM %s_hits), "
                    "(SELECT count(*) FROM %s_hits)" % (name, name), (name,))[0]
            ok = int(hits) == hops * int(done)
            why = "" if ok else "%d hits for %d committed messages × %d hops" % (hits, done, hops)
        finally:
            self.drop_stream(name)
        return {"messages": int(done), "seconds": seconds, "first_commit_s": t_first,
                "worker_start_s": self.worker_started, "bounded_s": self.a.hop_seconds,
                "complete": int(done) >= total, "rows": rows,
                "cpu": cpu, "cpu_detail": {"worker": cpu}, "peak_kb": peak,
                "load": cpuw, "ok": ok, "why": why}

    def verify_sa(self, name, windows, d):
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
        rows = self.q1("SELECT count(*) FROM %s_hits" % name)
        if rows != d["minute_ip_rows"]:
            return False, "%s_hits: %d rows, expected %d" % (name, rows, d["minute_ip_rows"])
        dead = self.q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = %s",
                       (name,))
        if dead:
            return False, "%d dead letters" % dead
        return True, ""

    def compare_with_ours(self, table):
        """(rows of ours missing from table, rows of table not in ours):
        window_start, ip, hits, bytes EXCEPT both ways."""
        if not self.have_ref:
            return None
        cols = "window_start, ip, hits::bigint, bytes::bigint"
        a = self.q1("SELECT count(*) FROM (SELECT %s FROM ref_hits EXCEPT "
                    "SELECT %s FROM %s) x" % (cols, cols, table))
        b = self.q1("SELECT count(*) FROM (SELECT %s FROM %s EXCEPT "
                    "SELECT %s FROM ref_hits) x" % (cols, table, cols))
        return a, b

    def check_peer(self, table, d):
        """ok, why for a peer's result table: totals, then equality with ours."""
        got = tuple(int(x or 0) for x in self.q("SELECT sum(hits), sum(bytes), count(*) "
                                                "FROM %s" % table)[0])
        want = (d["messages"], d["sum_bytes"], d["minute_ip_rows"])
        if got != want:
            return False, "totals (hits, bytes, rows) %s, expected %s" % (got, want)
        cmp = self.compare_with_ours(table)
        if cmp is None:
            return True, "not compared: no pg_streamagg result to compare with"
        if cmp != (0, 0):
            return False, ("differs from pg_streamagg's table: %d of our rows missing, "
                           "%d rows not in ours" % cmp)
        return True, ""

    # -- the peers

    def run_bare(self, key, rnd, extra=()):
        """The worker's consumer settings, with the prefetch bound the
        cluster's streamagg.queue_kbytes gives; extra -X settings after."""
        workload = VARIANTS[key][0]
        self.checkpoint()
        kb = self.q1("SELECT setting FROM pg_settings WHERE name = 'streamagg.queue_kbytes'")
        cmd = [self.tool("bare_consumer"), "-b", self.a.brokers, "-t", self.topic[workload],
               "-X", "queued.max.messages.kbytes=%s" % kb]
        for x in extra:
            cmd += ["-X", x]
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        r = json.loads(out.stdout)
        cpu = r["cpu_user"] + r["cpu_sys"]
        ok = r["messages"] == self.data[workload]["messages"]
        return {"messages": r["messages"], "seconds": r["seconds"],
                "first_commit_s": r["first_message_s"], "cpu": cpu,
                "cpu_detail": {"consumer": cpu}, "load": cw.close(cpu),
                "ok": ok, "why": "" if ok else "wrong count"}

    def run_python(self, key, rnd):
        d = self.data["realistic"]
        self.q("TRUNCATE py_hits, py_offsets")
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        out = subprocess.run([sys.executable, os.path.join(HERE, "consumer_py.py"),
                              "--brokers", self.a.brokers, "--topic", self.topic["realistic"],
                              "--dsn", self.a.dsn],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError("consumer_py.py failed: %s" % out.stderr[-2000:])
        r = json.loads(out.stdout)
        own = r["cpu_user"] + r["cpu_sys"]
        ok, why = self.check_peer("py_hits", d)
        return {"messages": r["messages"], "seconds": r["seconds"],
                "first_commit_s": r["first_commit_s"], "cpu": own + r["backend_cpu"],
                "cpu_detail": {"python": own, "backend": r["backend_cpu"]},
                "load": cw.close(own + r["backend_cpu"]), "ok": ok, "why": why}

    def java(self, project, main, args, timeout):
        """Runs a Java peer; returns (its JSON line, wall seconds)."""
        jar = os.path.join(self.a.java_dir, project, "target", project + "-bench.jar")
        lib = os.path.join(self.a.java_dir, project, "target", "lib", "*")
        cmd = [self.a.java, "-Xmx%s" % self.a.java_heap, "-Duser.timezone=UTC",
               "-cp", jar + ":" + lib, main] + args
        errlog = os.path.join(self.a.tmp, "%s.stderr" % project)
        t0 = time.monotonic()
        with open(errlog, "a") as err:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                 timeout=timeout)
        wall = time.monotonic() - t0
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            with open(errlog) as f:
                tail = f.read()[-3000:]
            raise RuntimeError("%s exited with %d: %s" % (main, out.returncode, tail))
        return json.loads(lines[-1]), wall

    def run_flink(self, key, rnd):
        d = self.data["realistic"]
        self.q("DROP TABLE IF EXISTS flink_hits")
        self.q("CREATE TABLE flink_hits (window_start timestamptz NOT NULL, "
               "window_end timestamptz NOT NULL, ip text NOT NULL, hits bigint NOT NULL, "
               "bytes bigint NOT NULL, PRIMARY KEY (window_start, ip))")
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        r, wall = self.java("flink", "streamagg.bench.FlinkJob",
                            ["--brokers", self.a.brokers, "--topic", self.topic["realistic"],
                             "--jdbc-url", self.a.jdbc_url, "--jdbc-user", self.a.db_user,
                             "--table", "flink_hits", "--group", "%sflink_r%d"
                             % (self.a.topic_prefix, rnd),
                             "--parallelism", str(self.a.flink_parallelism)],
                            self.a.peer_timeout)
        self.versions["Flink"] = r.get("flink")
        ok, why = self.check_peer("flink_hits", d)
        return {"messages": d["messages"], "seconds": r["seconds"],
                "first_commit_s": None, "process_s": wall,
                "jvm_to_submit_s": r.get("jvm_to_submit_s"), "cpu": r["cpu_s"],
                "cpu_detail": {"jvm": r["cpu_s"]}, "load": cw.close(r["cpu_s"]),
                "ok": ok, "why": why}

    def run_kstreams(self, key, rnd):
        d = self.data["realistic"]
        out_topic = "%sks_out_r%d" % (self.a.topic_prefix, rnd)
        self.create_topic(out_topic, 8)
        rows = os.path.join(self.a.tmp, "kstreams_rows.tsv")
        state = os.path.join(self.a.tmp, "kstreams_state_r%d" % rnd)
        self.checkpoint()
        cw = CpuWindow(self.postmaster, self.a.broker_pid)
        r, wall = self.java("kstreams", "streamagg.bench.KStreamsJob",
                            ["--brokers", self.a.brokers, "--topic", self.topic["realistic"],
                             "--output", out_topic, "--app-id",
                             "%sks_r%d" % (self.a.topic_prefix, rnd), "--state-dir", state,
                             "--messages", str(d["messages"]), "--rows", rows,
                             "--threads", str(self.a.kstreams_threads),
                             "--timeout-s", str(self.a.peer_timeout)],
                            self.a.peer_timeout + 60)
        self.versions["Kafka Streams"] = r.get("kafka_streams")
        load = cw.close(r["cpu_s"])
        shutil.rmtree(state, ignore_errors=True)
        # its final rows (the latest update of every window and ip) into PostgreSQL
        self.q("DROP TABLE IF EXISTS ks_hits, ks_rows")
        self.q("CREATE TABLE ks_rows (window_ms bigint, ip text, hits bigint, bytes bigint)")
        with open(rows) as f, self.db.cursor() as cur:
            cur.copy_expert("COPY ks_rows FROM STDIN", f)
        self.q("CREATE TABLE ks_hits AS SELECT to_timestamp(window_ms / 1000.0) AS window_start, "
               "ip, hits, bytes FROM ks_rows")
        ok, why = self.check_peer("ks_hits", d)
        return {"messages": d["messages"], "seconds": r["seconds"], "first_commit_s": None,
                "process_s": wall, "cpu": r["cpu_s"], "cpu_detail": {"jvm": r["cpu_s"]},
                "load": load, "ok": ok, "why": why}

    # -- the parts of the benchmark

    def throughput(self):
        for workload, n in (("realistic", self.a.messages), ("dense", self.a.dense_messages)):
            topic = self.a.topic_prefix + workload
            print("==> throughput: preloading topic %s" % topic, flush=True)
            self.create_topic(topic, 8)
            self.topic[workload] = topic
            self.data[workload] = self.preload(topic, n, 8, os.path.join(
                self.a.tmp, "%s.json" % workload), workload)
        subprocess.run([sys.executable, os.path.join(HERE, "consumer_py.py"),
                        "--brokers", self.a.brokers, "--topic", self.topic["realistic"],
                        "--dsn", self.a.dsn, "--setup"], check=True)
        plan = {
            "bare": lambda r: self.run_bare("bare", r),
            "dense_bare": lambda r: self.run_bare("dense_bare", r),
            "bare_big": lambda r: self.run_bare("bare_big", r, UNBOUNDED),
            "python": lambda r: self.run_python("python", r),
            "flink": lambda r: self.run_flink("flink", r),
            "kstreams": lambda r: self.run_kstreams("kstreams", r),
            "sa1": lambda r: self.run_sa("sa1", r, ONE_WINDOW),
            "dense_sa1": lambda r: self.run_sa("dense_sa1", r, ONE_WINDOW),
            "sa4": lambda r: self.run_sa("sa4", r, FOUR_WINDOWS),
            "sa1_p2": lambda r: self.run_sa("sa1_p2", r, ONE_WINDOW, 2),
            "hop60": lambda r: self.run_hop("hop60", r),
            "hop1000": lambda r: self.run_hop("hop1000", r),
        }
        wanted = set(plan)
        if self.a.no_reference:
            wanted -= set(REFERENCE)
        if self.a.variants:
            wanted = set(k for k in self.a.variants.split(",") if k)
            unknown = wanted - set(plan)
            if unknown:
                sys.exit("unknown variant(s): %s (known: %s)" % (", ".join(sorted(unknown)),
                                                                 ", ".join(plan)))
        repeat = {"flink": self.a.flink_repeat, "kstreams": self.a.kstreams_repeat}
        schedule = []
        for rnd in range(1, self.a.repeat + 1):
            for key in ROUND:
                if key in wanted and rnd <= repeat.get(key, self.a.repeat):
                    n = self.a.bare_repeat if key in ("bare", "dense_bare", "bare_big") else 1
                    schedule += [(rnd, key)] * n
        for key in ONCE:
            if key in wanted:
                schedule += [(r, key) for r in range(1, repeat.get(key, 1) + 1)]
        last_round = 0
        for rnd, key in schedule:
            if key in ROUND and rnd != last_round:
                print("==> throughput round %d of %d" % (rnd, self.a.repeat), flush=True)
                last_round = rnd
            elif key in ONCE and last_round != -1:
                print("==> throughput: the peers and variants run once", flush=True)
                last_round = -1
            try:
                r = plan[key](rnd)
            except Exception as e:      # pylint: disable=broad-except
                traceback.print_exc()
                r = {"messages": 0, "seconds": None, "cpu": None, "ok": False,
                     "why": "failed: %s" % str(e).strip().splitlines()[0][:300],
                     "error": str(e)[-3000:], "load": None, "first_commit_s": None,
                     "cpu_detail": {}}
            r.update(variant=key, workload=VARIANTS[key][0], round=rnd,
                     rate=r["messages"] / r["seconds"] if r.get("seconds") else None)
            self.runs.append(r)
            if not r["ok"]:
                self.fail("%s round %d: %s" % (key, rnd, r["why"]))
            if r["rate"] is not None:
                log("%-10s %9.0f msg/s  %6.2f s  cpu %6.2f s  other load %.2f cores%s%s"
                    % (key, r["rate"], r["seconds"], r["cpu"] or 0,
                       r["load"]["other_cores"] if r.get("load") else 0,
                       "" if r.get("complete", True) else
                       "  (bounded: %d messages in %d s)" % (r["messages"], r["bounded_s"]),
                       "" if r["ok"] else "  WRONG: " + r["why"]))
            elif r.get("why", "").startswith("failed"):
                log("%-10s %s" % (key, r["why"]))

    def latency(self):
        rate, secs = self.a.latency_rate, self.a.latency_seconds
        print("==> latency: %d msg/s for %d s" % (rate, secs), flush=True)
        name = "lat"
        self.create_stream(name, self.lat_topic, ONE_WINDOW)
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
                                 "-t", self.lat_topic, "-F", bare_log, "-D",
                                 str(self.a.latency_warmup + secs + 3)],
                                stdout=subprocess.DEVNULL)
        time.sleep(1)
        prod = subprocess.Popen([self.tool("paced_producer"), "-b", self.a.brokers,
                                 "-t", self.lat_topic, "-r", str(rate), "-d", str(secs),
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
                target = self.watermarks(self.lat_topic)
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
        backlog_topic = self.a.topic_prefix + "backlog"
        self.create_topic(backlog_topic, parts)
        data = self.preload(backlog_topic, n, parts, os.path.join(self.a.tmp, "backlog.json"),
                            "realistic")
        self.checkpoint()
        name = "rss"
        t0 = time.monotonic()
        self.create_stream(name, backlog_topic, ONE_WINDOW)
        t_first, t_end, _, pids, cpu, peak = self.drain(name, n, t0, sample_every=0.05)
        pid = pids[0]
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
        self.create_stream(name, self.topic["realistic"], ONE_WINDOW)
        pid = None
        while pid is None:
            pid = self.worker_pid(name)
            time.sleep(0.01)
        rec = subprocess.Popen([perf, "record", "-q", "-F", "999", "-g", "-p", str(pid),
                                "-o", out], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        self.drain(name, self.data["realistic"]["messages"], time.monotonic())
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
                    % self.data["realistic"]["messages"])
            f.write("\n".join(lines) + "\n")
        log("written results/profile.txt")


# ---------------------------------------------------------------- report


# ---------------------------------------------------------------- report

def fmt_rate(x):
    return "{:,.0f}".format(x)


def machine_info():
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
    return "nproc %d (%s), %.0f GB RAM, Linux %s" % (os.cpu_count(), model, mem,
                                                      platform.release())


def versions(b):
    import confluent_kafka
    v = {"PostgreSQL": b.q1("SHOW server_version"),
         "librdkafka": confluent_kafka.libversion()[0],
         "Kafka": b.a.kafka_version or "?"}
    v.update({k: x for k, x in b.versions.items() if x})
    try:
        out = subprocess.run([b.a.java, "-version"], capture_output=True, text=True)
        v["Java"] = out.stderr.splitlines()[0].split('"')[1]
    except (OSError, IndexError):
        pass
    v["Python"] = platform.python_version()
    return v
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




def summarize(b):
    """variant -> {median, lo, hi, runs, cpu_us, ...} over its measured runs."""
    by = {}
    for r in b.runs:
        by.setdefault(r["variant"], []).append(r)
    med = {}
    for k, rs in by.items():
        good = [r for r in rs if r["rate"] is not None]
        if not good:
            med[k] = {"median": None, "runs": rs}
            continue
        rates = sorted(r["rate"] for r in good)
        cpus = [r["cpu"] / r["messages"] * 1e6 for r in good if r["cpu"] and r["messages"]]
        hwm = [r["peak_kb"].get("VmHWM", 0) for r in good if r.get("peak_kb")]
        anon = [r["peak_kb"].get("RssAnon", 0) for r in good if r.get("peak_kb")]
        med[k] = {"median": statistics.median(rates), "lo": rates[0], "hi": rates[-1],
                  "runs": rs, "cpu_us": statistics.median(cpus) if cpus else None,
                  "hwm_mb": max(hwm) / 1024 if hwm else None,
                  "anon_mb": max(anon) / 1024 if anon else None,
                  "wrong": sum(1 for r in rs if not r["ok"])}
    return med


def report(b):
    a = b.a
    med = summarize(b)

    def m(k):
        return med.get(k, {}).get("median")

    def ratio(x, base):
        return "%.2f×" % (x / base) if x and base else "—"

    rows = []
    for k, (workload, label, _) in VARIANTS.items():
        if k not in med:
            continue
        s = med[k]
        x = s["median"]
        base_bare = m("bare") if workload == "realistic" else m("dense_bare")
        notes = []
        if x is None:
            notes.append("**failed**: %s" % s["runs"][0]["why"])
        elif s["wrong"]:
            notes.append("**%d run(s) wrong: %s**" % (s["wrong"], "; ".join(
                r["why"] for r in s["runs"] if not r["ok"])))
        hop = [r for r in s["runs"] if "bounded_s" in r and r["rate"] is not None]
        if hop and not all(r["complete"] for r in hop):
            r = hop[0]
            notes.append("bounded: %s of %s messages in %.0f s, %s rows"
                         % (fmt_rate(r["messages"]), fmt_rate(b.data["realistic"]["messages"]),
                            r["seconds"], fmt_rate(r["rows"])))
        rss = "—"
        if s.get("hwm_mb"):
            rss = "%.0f MB (%.0f private)" % (s["hwm_mb"], s["anon_mb"] or 0)
        nruns = len([r for r in s["runs"] if r["rate"] is not None])
        rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |%s" % (
            workload, label, fmt_rate(x) if x else "—",
            "%d%s" % (nruns, " (%s–%s)" % (fmt_rate(s["lo"]), fmt_rate(s["hi"]))
                      if nruns > 1 else ""),
            ratio(x, base_bare) if k not in ("bare", "dense_bare") else "1.00×",
            ratio(x, m("python")) if workload == "realistic" else "—",
            ratio(x, m("flink")) if workload == "realistic" else "—",
            "%.1f" % s["cpu_us"] if s.get("cpu_us") else "—", rss,
            "  " + "; ".join(notes) if notes else ""))
    table = "\n".join(["| workload | variant | msgs/s (median) | runs (min–max) | vs bare "
                       "| vs hand-written | vs Flink | CPU µs/msg | worker peak RSS |",
                       "|---|---|---:|---|---:|---:|---:|---:|---:|"] + rows)

    lat = b.results.get("latency")
    rss = b.results.get("rss")
    tg = ["| target (issue 12) | measured | |", "|---|---:|---|"]

    def target(label, num, den, want):
        x, y = m(num), m(den)
        if x and y:
            tg.append("| %s | %.2f× | %s |" % (label, x / y, "" if not want else
                                                "met" if x / y >= want else "**not met**"))
        else:
            tg.append("| %s | — | not measured |" % label)
    target("realistic, 1 worker ≥ 0.5× the bare consumer", "sa1", "bare", 0.5)
    target("realistic, 1 worker ≥ 10× the hand-written consumer", "sa1", "python", 10)
    target("realistic, 1 worker ≥ 5× Flink SQL (2 cores)", "sa1", "flink", 5)
    target("realistic, 1 worker vs Kafka Streams (no target)", "sa1", "kstreams", 0)
    target("dense, 1 worker ≥ 0.8× the bare consumer", "dense_sa1", "dense_bare", 0.8)
    target("4 windows ≥ 0.6× 1 window", "sa4", "sa1", 0.6)
    target("parallelism => 2 ≥ 1.7× 1 worker", "sa1_p2", "sa1", 1.7)
    target("hopping, 60 hops ≥ 0.5× tumbling", "hop60", "sa1", 0.5)
    target("hopping, 1,000 hops ≥ 0.2× tumbling", "hop1000", "sa1", 0.2)
    if lat:
        tg.append("| latency p99 ≤ 250 ms at %s msg/s | %.0f ms (p50 %.0f ms) | %s |"
                  % (fmt_rate(lat["rate_target"]), lat["p99_ms"], lat["p50_ms"],
                     "met" if lat["p99_ms"] <= 250 else "**not met**"))
    if rss:
        private = rss["peak_kb"].get("RssAnon", 0) / 1024
        tg.append("| worker private RSS < 256 MB on a %s backlog | %.0f MB (VmHWM %.0f MB) | %s |"
                  % (fmt_rate(rss["messages"]), private, rss["peak_kb"].get("VmHWM", 0) / 1024,
                     "met" if private < 256 else "**not met**"))
    targets = "\n".join(tg)

    det = ["| variant | round: msgs/s | s to worker start / first commit | CPU s (where) "
           "| broker CPU s | other load (cores) | notes |",
           "|---|---|---:|---|---:|---:|---|"]
    for k in VARIANTS:
        rs = [r for r in b.runs if r["variant"] == k]
        if not rs:
            continue
        good = [r for r in rs if r["rate"] is not None]
        where = ", ".join("%s %.2f" % (w, statistics.median(
            [r["cpu_detail"].get(w) or 0 for r in good])) for w in
            (good[0]["cpu_detail"] if good else {}))
        starts = [r["worker_start_s"] for r in good if r.get("worker_start_s") is not None]
        firsts = [r["first_commit_s"] for r in good if r.get("first_commit_s") is not None]
        notes = []
        proc = [r["process_s"] for r in good if r.get("process_s")]
        if proc:
            notes.append("whole process %.1f s (JVM start, plan, job)" % statistics.median(proc))
        notes += ["round %d: %s" % (r["round"], r["why"]) for r in rs if r.get("why")]
        loads = [r["load"] for r in good if r.get("load")]
        det.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            k, " / ".join("%d: %s" % (r["round"], fmt_rate(r["rate"]) if r["rate"] else "failed")
                          for r in rs),
            ("%.2f / " % statistics.median(starts) if starts else "")
            + ("%.2f" % statistics.median(firsts) if firsts else "—"), where or "—",
            "%.1f" % statistics.median(x["broker_cpu"] for x in loads)
            if loads and a.broker_pid else "—",
            "%.2f" % max(x["other_cores"] for x in loads) if loads else "—",
            "; ".join(notes)))
    details = "\n".join(det)
    other = max((r["load"]["other_cores"] for r in b.runs if r.get("load")), default=0)

    extra = []
    if lat:
        extra.append("- Latency: %s messages produced at %s msg/s (target %s) for %d s "
                     "(after %g s of warm-up at the same rate) into 8 partitions, read by a "
                     "one-window stream with the default streamagg.batch_time; produce → "
                     "visible p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms (offsets "
                     "polled every %d ms, which adds up to that much). The same messages "
                     "reached a bare consumer following the topic after p50 %s ms, p99 %s ms "
                     "(the transport: producer linger, broker, fetch), and the broker "
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
        extra.append("- Backlog: %s realistic messages held in %d partitions before the stream "
                     "was created, drained in %.1f s (%s msg/s); worker peak VmHWM %.0f MB, of "
                     "which private (RssAnon) at most %.0f MB and shared buffers (RssShmem) at "
                     "most %.0f MB; streamagg.queue_kbytes = %s.%s%s"
                     % (fmt_rate(rss["messages"]), rss["partitions"], rss["seconds"],
                        fmt_rate(rss["rate"]), pk.get("VmHWM", 0) / 1024,
                        pk.get("RssAnon", 0) / 1024, pk.get("RssShmem", 0) / 1024,
                        rss["queue_kbytes"],
                        " **%s of the messages became dead letters (%s) instead of being "
                        "aggregated**." % (fmt_rate(sum(rss["dead_letters"].values())),
                                           ", ".join("%s: %s" % kv for kv in
                                                     rss["dead_letters"].items()))
                        if rss["dead_letters"] else " Every message was aggregated.",
                        "" if rss["ok"] else " **Messages unaccounted for.**"))
    if b.failures:
        extra.append("- **Wrong or failed runs** (the benchmark exits with status 1):\n"
                     + "\n".join("  - " + f for f in b.failures))

    lib, tree, _ = b.build
    if a.build_desc:
        tree = a.build_desc
    if build_info(b)[0] != lib:
        lib += " (replaced by another installation during the run; the workers kept using this one)"
    v = versions(b)
    dr = b.data.get("realistic", {})
    dd = b.data.get("dense", {})
    md = """# pg_streamagg benchmark — latest results

Run {started} with `make bench`: {repeat} rounds (the bare consumers {bare_repeat}× per round,
Flink SQL in {flink_repeat} of them; Kafka Streams and the hopping windows once), medians shown.

- Machine: {machine}. Other load during the runs: up to {other:.2f} cores busy outside
  this benchmark (other work on the machine may have been running).
- Versions: {versions}.
- Broker: {broker}.
- Measured: {lib}; {tree}.
- PostgreSQL: synchronous_commit = on, fsync = on, shared_buffers = {sb}.
- **realistic**: {nr} JSON access-log messages (`ip`, `status`, `bytes`, `url`, ISO-8601 `ts`
  with milliseconds and `Z`), 10,000 ips, event time +1 ms per message, 8 partitions, lz4:
  {rows_r} (minute, ip) rows. **dense**: {nd} messages, event time +1 ms every 10 messages,
  epoch-millisecond `ts`: {rows_d} rows.

{table}

"vs bare" is against the bare consumer of the same workload; "vs hand-written" and "vs Flink"
against those peers' medians. Every peer's result table is compared with pg_streamagg's
(`EXCEPT` both ways) and its totals checked; a run that differs is flagged and fails the
benchmark. CPU µs/msg: the pg_streamagg workers; the Python consumer plus its PostgreSQL
backend; the Java peers' JVM (not the PostgreSQL backends serving Flink's JDBC sink); the bare
consumer. The hopping windows run for at most {hop_s} s each: their rate is what was committed
by then (start-up included).

## Targets

{targets}

## Details

{details}

{extra}

Reproduce: `make bench` (see test/bench/README.md). Raw figures: `latest.json`.
""".format(started=b.results["started"], repeat=a.repeat, bare_repeat=a.bare_repeat,
           flink_repeat=min(a.flink_repeat, a.repeat), machine=machine_info(), other=other,
           versions=", ".join("%s %s" % kv for kv in v.items()),
           broker=a.broker_desc, lib=lib, tree=tree, sb=b.q1("SHOW shared_buffers"),
           nr=fmt_rate(dr.get("messages", 0)), rows_r=fmt_rate(dr.get("minute_ip_rows", 0)),
           nd=fmt_rate(dd.get("messages", 0)), rows_d=fmt_rate(dd.get("minute_ip_rows", 0)),
           table=table, hop_s=a.hop_seconds, targets=targets, details=details,
           extra="\n".join(extra))
    b.results["versions"] = v
    return md, med


def chart(b, med):
    """results/throughput.png: throughput of every variant that has a chart label."""
    dat = os.path.join(b.a.tmp, "throughput.dat")
    keys = [k for k, (_, _, cl) in VARIANTS.items() if cl and med.get(k, {}).get("median")]
    if not keys:
        return None
    with open(dat, "w") as f:
        f.write("# label median min max group\n")
        for k in keys:
            s = med[k]
            group = 1 if k in ("bare", "python", "flink", "kstreams", "dense_bare") else 0
            f.write('"%s" %.0f %.0f %.0f %d\n' % (VARIANTS[k][2], s["median"], s["lo"],
                                                  s["hi"], group))
    gp = shutil.which("gnuplot")
    if not gp:
        log("gnuplot not found: no chart")
        return None
    png = os.path.join(b.a.results, "throughput.png")
    subtitle = "realistic: %s messages, dense: %s; medians; %s" % (
        fmt_rate(b.data["realistic"]["messages"]), fmt_rate(b.data["dense"]["messages"]),
        b.results["started"])
    ymax = 1.3 * max(med[k]["median"] for k in keys) / 1000
    subprocess.run([gp, "-e", "datafile='%s'; outfile='%s'; subtitle='%s'; note='%s'; ymax=%.0f"
                    % (dat, png, subtitle, "blue: pg_streamagg, grey: peers", ymax),
                    os.path.join(HERE, "throughput.gp")], check=True)
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--jdbc-url", required=True, help="the same cluster, for Flink's sink")
    ap.add_argument("--db-user", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--broker-pid", type=int, default=0,
                    help="the broker's process (for its CPU time), 0 if not local")
    ap.add_argument("--broker-desc", default="?")
    ap.add_argument("--kafka-version", default="")
    ap.add_argument("--topic-prefix", default="streamagg_bench_")
    ap.add_argument("--pgdata", required=True)
    ap.add_argument("--tools", required=True, help="directory of bare_consumer etc.")
    ap.add_argument("--sa-produce", required=True)
    ap.add_argument("--java", default="java")
    ap.add_argument("--java-dir", default=HERE,
                    help="directory holding flink/ and kstreams/ (built)")
    ap.add_argument("--java-heap", default="2g")
    ap.add_argument("--build-desc", default="",
                    help="what the installed library was built from (with SKIP_BUILD=1)")
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bare-repeat", type=int, default=3,
                    help="runs of the bare consumers per round")
    ap.add_argument("--flink-repeat", type=int, default=2)
    ap.add_argument("--flink-parallelism", type=int, default=2)
    ap.add_argument("--kstreams-repeat", type=int, default=1)
    ap.add_argument("--kstreams-threads", type=int, default=2)
    ap.add_argument("--peer-timeout", type=int, default=600)
    ap.add_argument("--hop-seconds", type=int, default=60)
    ap.add_argument("--messages", type=int, default=1200000)
    ap.add_argument("--dense-messages", type=int, default=1000000)
    ap.add_argument("--latency-rate", type=int, default=20000)
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--latency-warmup", type=float, default=3)
    ap.add_argument("--poll-ms", type=int, default=5)
    ap.add_argument("--backlog", type=int, default=5000000)
    ap.add_argument("--backlog-partitions", type=int, default=8)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--variants", default="",
                    help="comma list of variants to run (default: all)")
    ap.add_argument("--skip", default="", help="comma list of: latency,rss")
    ap.add_argument("--perf", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.results, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))

    b = Bench(a)
    try:
        b.throughput()
        if "latency" not in skip:
            print("==> latency", flush=True)
            b.create_topic(b.lat_topic, 8)
            try:
                b.latency()
            except Exception as e:      # pylint: disable=broad-except
                traceback.print_exc()
                b.fail("latency: %s" % e)
        if "rss" not in skip:
            try:
                b.rss()
            except Exception as e:      # pylint: disable=broad-except
                traceback.print_exc()
                b.fail("rss: %s" % e)
        if a.perf:
            b.profile()
    finally:
        b.delete_topics()
    md, med = report(b)
    with open(os.path.join(a.results, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.results, "latest.json"), "w") as f:
        json.dump({"runs": b.runs, "data": b.data, "failures": b.failures, **b.results}, f,
                  indent=1, default=str)
        f.write("\n")
    chart(b, med)
    print()
    print(md)
    print("written: %s" % ", ".join(os.path.join(a.results, x) for x in
                                    ("latest.md", "latest.json", "throughput.png")))
    if b.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
