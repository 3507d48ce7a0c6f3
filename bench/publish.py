"""``python -m bench.publish``: how fast messages are *published*, against baselines of the same run.

Publishing is what an application pays inside its request: ``notify()``
appends the message to the stream's log in the database (allocating the next
seq under the stream's row lock) and hands it to the channel layer once the
transaction commits. Delivery to sockets is ``python -m bench``'s business.

Every figure is compared with a baseline measured by the same kind of process
in the same run, on the same database, because absolute numbers on a shared
2-core machine say little:

- the raw driver ceiling: one autocommit ``INSERT`` per message into a scratch
  table through bare psycopg / sqlite3 (the most a durable log could do);
- channels-redis ``group_send`` (live delivery, no log: what users would
  otherwise write) and Redis ``XADD`` (a log in memory);
- ``notify()`` from one process, from four on one hot stream and on a stream
  each; ``notify()`` to a list of 1,000 streams, ``notify_many()`` of 1,000
  messages and 1,000 ``notify()`` in one transaction, each timed per call;
- four processes whose transactions notify a hot stream, then work 20 ms
  (a view under ATOMIC_REQUESTS): how long a publisher waits for the stream's
  lock, with and without ``after_commit=True``;
- the first ``notify()`` of a fresh process (connections opened).

Each measurement runs in fresh processes (bench/publish_worker.py) that set
Django up and warm up before a common release; a rate is the messages of all
processes divided by the wall time from the release to the last one
finishing. After each measurement the database (or Redis) is checked to hold
exactly what the workers say they published, with no gap in any stream's seqs.

Everything is private: a redis-server on a free port, a temporary SQLite file
and, when ``DATABASE_URL`` is set, a database ``realtime_bench_<pid>`` created
on that PostgreSQL server and dropped at the end.

    [DATABASE_URL=postgres://...] python -m bench.publish [--quick] [--repeat 3] [--out docs/performance.md]
"""

import argparse
import json
import os
import platform
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.__main__ import ROOT, start_redis

BEGIN, END = "<!-- bench-publish:begin -->", "<!-- bench-publish:end -->"

# Sizes (full, quick), chosen so that a full run with PostgreSQL takes ~3 minutes.
SIZES = {
    "count": (2000, 500),  # messages of a one-process run
    "per_proc": (500, 125),  # messages per process when four run at once
    "calls": (5, 3),  # timed calls of the 1,000-stream rows (median reported)
    "requests": (20, 8),  # transactions per process in the 20 ms-transaction rows
}
COLD_PROCESSES = 3
READY_TIMEOUT, RESULT_TIMEOUT = 120, 300

# key: (label, worker operation, processes, figure). Figures: "rate" msg/s,
# "call" s per call, "long" msg/s and per-request publish time, "cold" s of the first call.
ROWS = {
    "raw1": ("raw driver INSERT, 1 process (ceiling)", "raw", 1, "rate"),
    "raw4": ("raw driver INSERT, 4 processes (ceiling)", "raw", 4, "rate"),
    "gs1": ("channels-redis group_send, 1 process (no log)", "group_send", 1, "rate"),
    "gs4": ("channels-redis group_send, 4 processes (no log)", "group_send", 4, "rate"),
    "xadd1": ("Redis XADD, 1 process", "xadd", 1, "rate"),
    "xadd4": ("Redis XADD, 4 processes", "xadd", 4, "rate"),
    "seq": ('`notify("broadcast")`, 1 process', "notify", 1, "rate"),
    "hot4": ("`notify()`, 4 processes, one hot stream", "notify", 4, "rate"),
    "sep4": ("`notify()`, 4 processes, a stream each", "notify", 4, "rate"),
    "list": ("`notify([1,000 user streams])`, one call", "notify_list", 1, "call"),
    "many": ("`notify_many(1,000 messages)`, one call", "notify_many", 1, "call"),
    "atomic": ("1,000 `notify()` in one `atomic()`, commit included", "notify_atomic", 1, "call"),
    "long": ("4 processes, hot stream, 20 ms transactions", "long_tx", 4, "long"),
    "long_ac": ("the same with `after_commit=True`", "long_tx", 4, "long"),
    "cold": ("first `notify()` of a fresh process", "cold", 1, "cold"),
}
# Measured in this order, so that each notify row runs right after its baselines.
ORDER = ["raw1", "gs1", "seq", "raw4", "gs4", "hot4", "sep4", "xadd1", "xadd4",
         "list", "many", "atomic", "long", "long_ac", "cold"]
# Baselines that do not touch the database: measured once per repetition, in the first pass.
NO_DATABASE = ("gs1", "gs4", "xadd1", "xadd4")
# Which baseline each notify row is compared with (same process count).
VERSUS = {"seq": ("raw1", "gs1"), "hot4": ("raw4", "gs4"), "sep4": ("raw4", "gs4")}


class Failed(Exception):
    """A measurement that did not produce a trustworthy figure."""


class Database:
    """One private database of the run, with a bare connection for the checks."""

    def __init__(self, label, vendor, env, worker, conn, version, drop=lambda: None):
        self.label, self.vendor, self.env, self.worker = label, vendor, env, worker
        self.conn, self.version, self._drop = conn, version, drop

    def scalar(self, sql, *params):
        if self.vendor == "sqlite":
            sql = sql.replace("%s", "?")
        return self.conn.execute(sql, params).fetchone()[0]

    def close(self):
        self.conn.close()
        self._drop()


def migrate(env):
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def sqlite_database(tmp, env):
    path = Path(tmp) / "publish.sqlite3"
    env = {**env, "SQLITE_PATH": str(path)}
    env.pop("DATABASE_URL", None)
    migrate(env)
    conn = sqlite3.connect(path, isolation_level=None, timeout=20)
    conn.execute("CREATE TABLE bench_raw (id integer PRIMARY KEY, stream text, seq bigint, body text)")
    return Database("SQLite", "sqlite", env, {"vendor": "sqlite", "path": str(path)}, conn, sqlite3.sqlite_version)


def postgres_database(url, env):
    """Create ``realtime_bench_<pid>`` next to the database of ``url``, which is never written to."""
    import psycopg
    from psycopg import sql

    name = f"realtime_bench_{os.getpid()}"
    create, drop = (sql.SQL(q).format(sql.Identifier(name)) for q in ("CREATE DATABASE {}", "DROP DATABASE IF EXISTS {} WITH (FORCE)"))
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(create)
    private = urlunsplit(urlsplit(url)._replace(path="/" + name))

    def drop_database():
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(drop)

    try:
        env = {**env, "DATABASE_URL": private}
        migrate(env)
        conn = psycopg.connect(private, autocommit=True)
        conn.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, stream text, seq bigint, body text)")
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    except BaseException:
        drop_database()
        raise
    return Database("PostgreSQL", "postgresql", env, {"vendor": "postgresql", "dsn": private}, conn, version, drop_database)


# Running workers -------------------------------------------------------------

def read_line(proc, deadline, log):
    """The next JSON line of a worker (each phase writes exactly one)."""
    fd, buf = proc.stdout.fileno(), b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise Failed(f"worker {proc.pid} timed out; its log:\n{tail(log)}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise Failed(f"worker {proc.pid} exited with {proc.wait()}; its log:\n{tail(log)}")
        buf += chunk
    return json.loads(buf)


def tail(path, chars=3000):
    return Path(path).read_text(errors="replace")[-chars:]


def run_workers(db, tmp, configs):
    """Start one worker per config, release them together; return (results, release time) or a reason."""
    procs, logs = [], []
    try:
        for i, cfg in enumerate(configs):
            logs.append(Path(tmp) / f"worker-{cfg['op']}-{i}.log")
            with open(logs[-1], "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.publish_worker", json.dumps(cfg)],
                    cwd=ROOT, env=db.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                ))
        deadline = time.monotonic() + READY_TIMEOUT
        ready = [read_line(proc, deadline, log) for proc, log in zip(procs, logs)]
        missing = [r["unavailable"] for r in ready if "unavailable" in r]
        if missing:
            return missing[0], None
        released = time.monotonic()
        try:
            for proc in procs:
                proc.stdin.write(b"GO\n")
                proc.stdin.flush()
        except BrokenPipeError:
            raise Failed(f"a worker exited before its release: {[p.poll() for p in procs]}") from None
        deadline = time.monotonic() + RESULT_TIMEOUT
        results = [read_line(proc, deadline, log) for proc, log in zip(procs, logs)]
        for proc, log in zip(procs, logs):
            if proc.wait(30):
                raise Failed(f"worker {proc.pid} exited with {proc.returncode}; its log:\n{tail(log)}")
        return results, released
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Bench:
    """The measurements of one run: workers, checks, figures."""

    def __init__(self, tmp, redis_url, sizes):
        import redis

        self.tmp, self.sizes = tmp, sizes
        self.redis = redis.Redis.from_url(redis_url)

    def configs(self, db, key, tag):
        """The worker configs of measurement ``key``, one per process."""
        _, op, procs, _ = ROWS[key]
        s = self.sizes
        common = {"op": op, "count": s["count"] if procs == 1 else s["per_proc"], "calls": s["calls"],
                  "db": db.worker, "tag": tag}
        if op == "long_tx":
            common.update(count=s["requests"], after_commit=key == "long_ac")
        return [{**common, "target": f"bench:{p}" if key == "sep4" else "broadcast"} for p in range(procs)]

    def stored(self, db, key, tag):
        """What the store of measurement ``key`` holds: rows of this tag, stream length, or log size."""
        if key.startswith("raw"):
            return db.scalar("SELECT count(*) FROM bench_raw WHERE stream = %s", tag)
        if key.startswith("xadd"):
            return self.redis.xlen(tag)
        if key.startswith("gs"):
            return 0  # nothing durable to count: group_send keeps no log
        return db.scalar("SELECT count(*) FROM realtime_message"), db.scalar("SELECT coalesce(sum(last_seq), 0) FROM realtime_stream")

    def check(self, db, key, before, after, published):
        if key.startswith("gs"):
            return
        if isinstance(before, tuple):
            (m0, s0), (m1, s1) = before, after
            if m1 - m0 != published or s1 - s0 != published:
                raise Failed(f"workers published {published} messages, the log gained {m1 - m0} "
                             f"rows and {s1 - s0} seqs")
            gaps = db.scalar(
                "SELECT count(*) FROM realtime_stream s LEFT JOIN (SELECT stream_id, count(*) AS n, max(seq) AS top "
                "FROM realtime_message GROUP BY stream_id) m ON m.stream_id = s.id "
                "WHERE s.last_seq <> coalesce(m.n, 0) OR s.last_seq <> coalesce(m.top, 0)"
            )
            if gaps:
                raise Failed(f"{gaps} stream(s) whose last_seq does not match their stored messages")
        elif after - before != published:
            raise Failed(f"workers published {published} messages, {after - before} were stored")

    def measure(self, db, key, rep):
        """One figure of ``key``: msg/s, seconds per call, a dict (long transactions), or a reason it is n/a."""
        tag = f"bench:{key}:{rep}"
        if key == "cold":
            firsts = [self.measure_once(db, key, tag)[0][0]["samples"][0] for _ in range(COLD_PROCESSES)]
            return statistics.median(firsts)
        results, released = self.measure_once(db, key, tag)
        if released is None:
            return f"n/a ({results})"
        figure = ROWS[key][3]
        rate = sum(r["messages"] for r in results) / (max(r["end"] for r in results) - released)
        samples = sorted(s for r in results for s in r.get("samples", ()))
        if figure == "call":
            return statistics.median(samples)
        if figure == "long":
            return {"rate": rate, "p50": statistics.median(samples), "p99": samples[round(0.99 * (len(samples) - 1))]}
        return rate

    def measure_once(self, db, key, tag):
        before = self.stored(db, key, tag)
        results, released = run_workers(db, self.tmp, self.configs(db, key, tag))
        if released is not None:
            self.check(db, key, before, self.stored(db, key, tag), sum(r["published"] for r in results))
        return results, released


# Reporting -------------------------------------------------------------------

def show(key, value):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    figure = ROWS[key][3]
    if figure == "rate":
        return f"{value:,.0f} msg/s"
    if figure == "long":
        return f"{value['rate']:,.0f} msg/s; publish p50 {ms(value['p50'])}, p99 {ms(value['p99'])}"
    return ms(value)


def ms(seconds):
    return f"{seconds * 1000:,.1f} ms" if seconds < 0.01 else f"{seconds * 1000:,.0f} ms"


def number(value):
    return value if isinstance(value, (int, float)) else None


class Results:
    """Every repetition's figure, per database and row; medians and paired ratios from them.

    A ratio is the median of per-repetition ratios, each of two figures
    measured seconds apart: the disk's fsync time drifts by several times
    within a run on a shared machine, and a ratio of two medians taken at
    different moments would carry that drift.
    """

    def __init__(self, labels):
        self.labels = labels
        self.runs = {label: {key: [] for key in ROWS} for label in labels}
        for label in labels[1:]:
            # Measured in the first pass only; every column shows the same runs.
            self.runs[label].update({key: self.runs[labels[0]][key] for key in NO_DATABASE})

    def add(self, label, key, value):
        self.runs[label][key].append(value)

    def median(self, label, key):
        """The median over repetitions; a string (n/a, error) in any repetition wins."""
        runs = self.runs[label][key]
        if not runs:
            return None
        text = [r for r in runs if isinstance(r, str)]
        if text:
            return text[0]
        if isinstance(runs[0], dict):
            return {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        return statistics.median(runs)

    def ratio(self, label, key, base):
        pairs = list(zip(self.runs[label][key], self.runs[label][base]))
        if not pairs or any(number(a) is None or not number(b) for a, b in pairs):
            return None
        return statistics.median(a / b for a, b in pairs)

    def noisy(self, threshold=1.5):
        """Rows whose repetitions differ by more than ``threshold`` times: (label, key, low, high)."""
        found = []
        for label in self.labels:
            for key, (_, _, _, figure) in ROWS.items():
                values = [v for v in self.runs[label][key] if number(v)]
                if figure == "rate" and len(values) > 1 and max(values) > threshold * min(values):
                    if key not in NO_DATABASE or label == self.labels[0]:
                        found.append((label, key, min(values), max(values)))
        return found


def render(results):
    labels = results.labels
    lines = [
        f"| workload | {' | '.join(labels)} | notify / raw driver | notify / group_send |",
        "|---|" + "---|" * len(labels) + "---|---|",
    ]
    for key, (label, *_) in ROWS.items():
        cells = [show(key, results.median(db, key)) for db in labels]
        ratios = []
        for base, form in zip(VERSUS.get(key, ("", "")), ("{:.0%}", "{:.2f}×")):
            parts = [(db, results.ratio(db, key, base)) for db in labels] if base else []
            ratios.append(" · ".join(f"{db} {form.format(r)}" for db, r in parts if r is not None))
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def targets(results):
    """The issue's targets, each with the figure it is judged on and met / not met."""
    labels = results.labels

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    def at_least(label, key, floor=0, base=None, share=0):
        value = results.median(label, key)
        if number(value) is None:
            return f"{show(key, value)}: {verdict(False)}"
        if base is None:
            return f"{show(key, value)}: {verdict(value >= floor)}"
        r = results.ratio(label, key, base)
        ok = r is not None and r >= share and value >= floor
        return f"{show(key, value)} = {'?' if r is None else format(r, '.0%')} of raw: {verdict(ok)}"

    def at_most(label, key, limit):
        value = results.median(label, key)
        return f"{show(key, value)}: {verdict(number(value) is not None and value <= limit)}"

    rules = [
        ("sequential `notify()` to one stream: PostgreSQL ≥ 55 % of raw 1-process and ≥ 3,000 msg/s; "
         "SQLite ≥ 8,000 msg/s",
         lambda db: at_least(db, "seq", 3000, "raw1", 0.55) if db == "PostgreSQL" else at_least(db, "seq", 8000)),
        ("`notify(list of 1,000)` ≤ 100 ms", lambda db: at_most(db, "list", 0.1)),
        ("`notify_many` of 1,000 ≤ 100 ms", lambda db: at_most(db, "many", 0.1)),
        ("4 processes, a stream each ≥ 60 % of raw 4-process", lambda db: at_least(db, "sep4", 0, "raw4", 0.6)),
        ("one hot stream from 4 processes ≥ 2,500 msg/s on PostgreSQL",
         lambda db: at_least(db, "hot4", 2500) if db == "PostgreSQL" else "—"),
    ]
    lines = ["| target | SQLite | PostgreSQL |", "|---|---|---|"]
    for text, judge in rules:
        cells = [judge(db) if db in labels else "not measured (set DATABASE_URL)" for db in ("SQLite", "PostgreSQL")]
        lines.append(f"| {text} | {' | '.join(cells)} |")
    return "\n".join(lines)


def report(results, args, elapsed):
    s = {k: v[args.quick] for k, v in SIZES.items()}
    noisy = "; ".join(f"{label} {ROWS[key][0]} {low:,.0f}–{high:,.0f} msg/s" for label, key, low, high in results.noisy())
    return f"""{render(results)}

Targets of the issue:

{targets(results)}

Medians of {args.repeat} repetition(s), each in fresh processes released together after a
warm-up; one process publishes {s['count']:,} messages, each of four {s['per_proc']:,}; per-call
rows are the median of {s['calls']} calls; the cold row is the median of {COLD_PROCESSES} fresh
processes. Ratios are medians of per-repetition ratios of figures measured one
after the other. "publish p50/p99" is the time a request spent in `atomic()` +
`notify()` apart from its own 20 ms of work: waiting for the stream's lock (on
SQLite, `BEGIN IMMEDIATE` takes the database's write lock when the block
opens, and waiting writers poll, so the lock is not handed over in turn),
writing and committing. group_send and XADD do not use the database; they are
measured once per repetition and shown in each column.
Rows that varied by more than 1.5× between repetitions: {noisy or "none"}. Run took {elapsed:.0f} s."""


def report_section(body, dbs, args):
    versions = ", ".join(f"{db.label} {db.version}" for db in dbs)
    return f"""{BEGIN}
Produced by `python -m bench.publish --repeat {args.repeat}` on {time.strftime("%Y-%m-%d")}:
{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()},
{platform.system()} {platform.release()}; {versions}.

{body}
{END}"""


def write_report(path, section):
    """Replace the part of ``path`` between this benchmark's markers (appended if absent)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + section + rest.split(END, 1)[1])


def measure_all(bench, dbs, repeat):
    """Every row on every database, ``repeat`` times; a failed measurement is reported, not fatal."""
    results, errors = Results([db.label for db in dbs]), []
    for rep in range(repeat):
        for db in dbs:
            for key in ORDER:
                if (key == "cold" and rep) or (key in NO_DATABASE and db is not dbs[0]):
                    continue
                began = time.monotonic()
                try:
                    value = bench.measure(db, key, rep)
                except Failed as exc:
                    errors.append(f"{db.label} / {ROWS[key][0]}: {exc}")
                    print(f"ERROR {errors[-1]}", file=sys.stderr, flush=True)
                    value = "**error** (see stderr)"
                results.add(db.label, key, value)
                print(f"{db.label:10} {ROWS[key][0]:55} #{rep + 1}: {show(key, value)} "
                      f"({time.monotonic() - began:.1f} s)", flush=True)
    return results, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs, one repetition; prints, writes nothing")
    parser.add_argument("--repeat", type=int, help="repetitions per figure (default 3, quick 1)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    sizes = {k: v[args.quick] for k, v in SIZES.items()}
    if shutil.which("redis-server") is None:
        raise SystemExit("bench.publish needs redis-server on PATH (apt-get install redis-server).")
    tmp = tempfile.mkdtemp(prefix="realtime-bench-publish-")
    redis, dbs = None, []
    started = time.monotonic()
    try:
        redis, redis_port = start_redis(tmp)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "bench.settings"}
        dbs.append(sqlite_database(tmp, env))
        if os.environ.get("DATABASE_URL"):
            dbs.append(postgres_database(os.environ["DATABASE_URL"], env))
        results, errors = measure_all(Bench(tmp, redis_url, sizes), dbs, args.repeat)
    finally:
        for db in dbs:
            db.close()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    body = report(results, args, time.monotonic() - started)
    print("\n" + body)
    if errors:
        raise SystemExit(f"{len(errors)} measurement(s) failed (above); {args.out} not written.")
    if not args.quick:
        write_report(Path(args.out), report_section(body, dbs, args))
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
