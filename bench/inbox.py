"""``python -m bench.inbox``: the inbox's targets, measured, next to django-notifications-hq's model.

realtime stores an inbox item once, in its stream's log, and keeps per user
and stream one cursor row (:mod:`realtime.inbox`); django-notifications-hq
(the usual Django choice) writes one row per recipient with an ``unread``
flag. Both are measured in the same run, on the same machine and database:

1. the unread count of a user with 100,000 inbox items over five streams
   (``broadcast``, ``staff``, ``user:<pk>``, a team and a project: the
   ``INBOX_STREAMS`` hook :func:`inbox_streams` below) who read a few hundred
   (target: ≤ 2 queries, ≤ 2 ms);
2. mark all read with 10 and with 100,000 unread (target: the rows written
   do not depend on how many were unread);
3. a notice to ``broadcast`` with 100,000 users (target: 1 message and 1
   stream row written);
4. pages 1, 2 and 50 of the inbox, 20 items each, with 1,000,000 messages in
   the log over 1,000 streams, inbox items and others mixed (target: ≤ 10 ms),
   with the plan of the per-stream query.

Each figure is the median of ``calls`` timed calls after a warm-up; the
queries and the rows written come from one more call with every query
captured (``CaptureQueriesContext``) and the tables compared before and after.
The hq model's writes of 100,000 rows are timed fewer times (``heavy_calls``).

The data is written by the real code (bench/inbox_worker.py says how) into
private databases: a temporary SQLite file and, when ``DATABASE_URL`` is set,
a database ``realtime_bench_inbox_<pid>`` on that server, dropped at the end;
channel-layer pushes go to a private redis-server on a free port.

    [DATABASE_URL=postgres://...] python -m bench.inbox [--quick] [--out docs/performance.md]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.__main__ import ROOT, start_redis

BEGIN, END = "<!-- bench-inbox:begin -->", "<!-- bench-inbox:end -->"

#: Teams and projects users belong to (``pk % TEAMS``), each a stream of their inbox.
TEAMS, PROJECTS = 50, 200
#: The measured user's inbox items per stream of :func:`inbox_streams` (shares of
#: ``my_items``) and the other messages there (shares of 0.6 × ``my_items``).
USER_STREAM_SHARES = [(0.20, 0.20), (0.10, 0.05), (0.40, 0.10), (0.15, 0.10), (0.15, 0.15)]

SIZES = {
    "full": {"users": 100_000, "my_items": 100_000, "messages": 1_000_000, "streams": 1000,
             "hq_rows": 1_000_000, "calls": 25, "heavy_calls": 7},
    "quick": {"users": 2000, "my_items": 2000, "messages": 20_000, "streams": 100,
              "hq_rows": 20_000, "calls": 5, "heavy_calls": 2},
}
WORKER_TIMEOUT = 900


def inbox_streams(user):
    """``REALTIME["INBOX_STREAMS"]`` of this benchmark: five streams per user."""
    from realtime.streams import user_stream

    return ["broadcast", "staff", user_stream(user), f"team:{user.pk % TEAMS}", f"project:{user.pk % PROJECTS}"]


class Failed(Exception):
    """A database could not be set up or measured."""


# Private databases and Redis -------------------------------------------------


def migrate(env):
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def sqlite_env(tmp, env):
    env = {**env, "SQLITE_PATH": str(Path(tmp) / "inbox.sqlite3")}
    env.pop("DATABASE_URL", None)
    migrate(env)
    return env


class Postgres:
    """``realtime_bench_inbox_<pid>`` next to the database of ``url`` (which is never written to)."""

    def __init__(self, url):
        from psycopg import sql

        self.url = url
        name = f"realtime_bench_inbox_{os.getpid()}"
        self.create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        self.drop_sql = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        self.private = urlunsplit(urlsplit(url)._replace(path="/" + name))

    def env(self, env):
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(self.drop_sql)
            admin.execute(self.create)
        env = {**env, "DATABASE_URL": self.private}
        migrate(env)
        return env

    def drop(self):
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(self.drop_sql)


def run_worker(label, env, sizes):
    """Fill and measure one database in a fresh process; its JSON results."""
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.inbox_worker", json.dumps(sizes)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, timeout=WORKER_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise Failed(f"{label}: the worker ran over {WORKER_TIMEOUT} s") from None
    if done.returncode:
        raise Failed(f"{label}: the worker exited with {done.returncode} (its log is above)")
    try:
        result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise Failed(f"{label}: the worker printed no results: {done.stdout[-2000:]!r}") from None
    result["seconds"] = time.monotonic() - began
    return result


# Reporting ---------------------------------------------------------------------


def ms(value):
    return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def plural(n, one, many):
    return f"{n:,} {one if n == 1 else many}"


def rows_text(rows):
    return " + ".join(f"{table} {n:,}" for table, n in sorted(rows.items())) or "none"


def cell(figure, write=False):
    if figure is None:
        return "—"
    words = ("statement", "statements") if write else ("query", "queries")
    text = f"{ms(figure['ms'])} · {plural(figure['queries'], *words)}"
    if write:
        total = sum(figure["rows"].values())
        text += f" ({figure['writes']:,} writing) · {plural(total, 'row', 'rows')}: {rows_text(figure['rows'])}"
    return text


def operations(sizes):
    """The table's rows: ``(key, operation, is a write, target, judge)``.

    ``judge(side)`` says from one database's realtime results whether the
    target is met (None: no target).
    """
    s = sizes
    k = f"{s['my_items']:,}"
    sample = min(1000, s["users"])
    pages = "≤ 10 ms"
    return [
        ("unread", f"`unread_count(user)`: {k} items over 5 streams, {s['expected unread']:,} unread", False,
         "≤ 2 queries, ≤ 2 ms", lambda side: side["unread"]["queries"] <= 2 and side["unread"]["ms"] <= 2),
        ("unread_first", "`unread_count(user)`, a user's first call (creates its state rows)", True, "—", None),
        ("page1", "`items(user, limit=20)`, page 1 (hq: `ListView` page, COUNT + OFFSET)", False,
         pages, lambda side: side["page1"]["ms"] <= 10),
        ("page2", "`items()`, page 2 via `next`", False, pages, lambda side: side["page2"]["ms"] <= 10),
        ("page50", "`items()`, page 50 via `next`", False, pages, lambda side: side["page50"]["ms"] <= 10),
        ("mark10", "`mark_all_read(user)`, 10 unread (2 per stream)", True,
         "rows written independent of the unread count", _same_rows),
        ("mark_all", f"`mark_all_read(user)`, {k} unread", True,
         "rows written independent of the unread count", _same_rows),
        ("broadcast", f'`notify("broadcast", ..., inbox=True)`, {s["users"]:,} users '
         "(hq: one row per user, one `INSERT ... SELECT`)", True,
         "1 message + 1 stream row written", lambda side: side["broadcast"]["rows"] == {"message": 1, "stream": 1}),
        ("notify_send", f"hq `notify.send()` as shipped, {s['users']:,} recipients: one `save()` each "
         f"({sample:,} timed in one transaction, × {s['users'] / sample:,.0f})", True, "—", None),
    ]


def _same_rows(side):
    return side["mark10"]["rows"] == side["mark_all"]["rows"]


def render(results):
    """The side-by-side table and whether each target was met."""
    labels = list(results)
    sizes = next(iter(results.values()))["sizes"]
    columns = [f"realtime {label}" for label in labels] + [f"notifications-hq-style {label}" for label in labels]
    lines = [f"| operation | {' | '.join(columns)} | target | met? |", "|---|" + "---|" * (len(columns) + 2)]
    for key, text, write, target, judge in operations(sizes):
        cells = [cell(results[label]["realtime"].get(key), write) for label in labels]
        cells += [cell(results[label]["hq"].get(key), write) for label in labels]
        if judge is None:
            verdict = "—"
        else:
            verdict = " · ".join(
                f"{label} {'**met**' if judge(results[label]['realtime']) else '**not met**'}" for label in labels
            )
        lines.append(f"| {text} | {' | '.join(cells)} | {target} | {verdict} |")
    return "\n".join(lines)


def missed(results):
    """``(label, key)`` of every target not met."""
    out = []
    for label, result in results.items():
        for key, _text, _write, _target, judge in operations(result["sizes"]):
            if judge is not None and not judge(result["realtime"]):
                out.append((label, key))
    return out


def method(results):
    parts = []
    for label, r in results.items():
        s = r["sizes"]
        fill = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in r["fill"].items())
        parts.append(
            f"- {label} {r['version']}: {s['log rows']:,} messages in the log over {s['streams (log)']:,} streams "
            f"(the measured user's 5 hold {s['my_items']:,} inbox items; a third of the others' messages are "
            f"inbox items), {s['users']:,} users, {s['hq rows']:,} rows in the hq table "
            f"({s['my_items']:,} the measured user's). Filled in {r['fill_total']:.0f} s ({fill}); "
            f"measured in {r['measure_s']:.0f} s, the machine's load average (1 min) "
            f"{r['load'][0]:.1f} at the start and {r['load'][1]:.1f} at the end (others share it)."
        )
    s = next(iter(results.values()))["sizes"]
    return "\n".join(parts) + f"""

Each time is the median of {s['calls']} calls after 3 untimed ones ({s['heavy_calls']} after 1 for the hq
model's 100,000-row writes: its mark-all-read of every row and its broadcast); state is reset
untimed before each write. Statements, writing statements and rows come from one more call:
rows are the rows that changed, per table (a row written twice counts once). realtime's writes
include the `inbox.changed` message `mark_all_read` publishes (1 message + its stream's counter);
pushes to the channel layer (a private Redis) are handed to realtime's sender thread, so their
round trip is not in the times. The hq model is django-notifications-hq
1.8.3's `Notification` (same columns and indexes, created from an equivalent model), queried the
way its views do: `user.notifications.unread().count()`, `mark_all_as_read()` = one `UPDATE` of
the unread rows, and `AllNotificationsList` (`paginate_by = 20`: a `COUNT(*)` and an `OFFSET`
page, rendering not included). Its broadcast row is its floor, one `INSERT ... SELECT` over
`auth_user`; the library's own `notify.send()` saves one row per recipient, in the next row.
PostgreSQL tables were `VACUUM ANALYZE`d after the load, as autovacuum would, and the hq table
is vacuumed (untimed) after each reset or delete of ≥ 10,000 rows, so that hq's timed statements
do not wade through dead row versions the benchmark itself left; SQLite has no `ANALYZE` (Django
never runs it)."""


def explains(results):
    blocks = []
    for label, r in results.items():
        for title, text in r["explain"].items():
            blocks.append(f"{label}, {title}:\n\n```\n{text}\n```")
    return "\n\n".join(blocks)


def report(results):
    gone = missed(results)
    verdict = "every target met" if not gone else "targets not met: " + ", ".join(f"{l} {k}" for l, k in gone)
    return f"""{render(results)}

{verdict.capitalize()}.

{method(results)}

The plans (PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)`; SQLite: `EXPLAIN QUERY PLAN`) of the query
`items()` runs per stream, for the user's own stream (the largest), of the join-date query a
user's first `unread_count()` runs per stream (here on `broadcast`, for a user who joined before
every stored message), and of hq's count and page 50:

{explains(results)}"""


def report_section(body, versions):
    return f"""{BEGIN}
Produced by `python -m bench.inbox` on {time.strftime("%Y-%m-%d")}: {os.cpu_count()} cores,
{platform.python_implementation()} {platform.python_version()}, {platform.system()} {platform.release()}; {versions}.

{body}
{END}"""


def write_report(path, section):
    """Replace the part of ``path`` between this benchmark's markers (appended if absent)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + section + rest.split(END, 1)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few calls; prints, writes nothing")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    sizes = SIZES["quick" if args.quick else "full"]
    if shutil.which("redis-server") is None:
        raise SystemExit("bench.inbox needs redis-server on PATH (apt-get install redis-server).")
    tmp = tempfile.mkdtemp(prefix="realtime-bench-inbox-")
    redis, postgres, results = None, None, {}
    started = time.monotonic()
    try:
        redis, redis_port = start_redis(tmp)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_REALTIME_JSON": json.dumps({"INBOX_STREAMS": "bench.inbox.inbox_streams"}),
        }
        results["SQLite"] = run_worker("SQLite", sqlite_env(tmp, env), sizes)
        if os.environ.get("DATABASE_URL"):
            postgres = Postgres(os.environ["DATABASE_URL"])
            results["PostgreSQL"] = run_worker("PostgreSQL", postgres.env(env), sizes)
    except Failed as exc:
        raise SystemExit(f"bench.inbox FAILED: {exc}") from None
    finally:
        if postgres is not None:
            postgres.drop()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    body = report(results)
    print("\n" + body + f"\n\nRun took {time.monotonic() - started:.0f} s.")
    if not args.quick:
        versions = ", ".join(f"{label} {r['version']}" for label, r in results.items())
        write_report(Path(args.out), report_section(body, versions))
        print(f"\nwritten to {args.out}")
    gone = missed(results)
    if gone:
        raise SystemExit(f"{len(gone)} target(s) not met: {gone}")


if __name__ == "__main__":
    main()
