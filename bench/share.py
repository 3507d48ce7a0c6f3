"""``python -m bench.share``: the browser client's size, and the latency sharing one socket adds.

Size: bytes and gzip -9 bytes of the client's modules (realtime.js, share.js,
worker.js, autostart.js), what a page downloads to connect.

Latency: for each sharing mode ("worker": a SharedWorker holds the socket;
"leader": no SharedWorker, so one tab holds it, elected with Web Locks, and
the others reach it over a BroadcastChannel), a fresh daphne serving
``project.asgi:application`` (``bench.share_settings``: a private
redis-server, SQLite, static files served) and a fresh headless Chromium.
One browser context opens two pages with their own sockets (``?share=0``,
"direct" A and B) and three that share one (``?share=1``). A separate
publisher process (``django.setup()``, ``realtime.notify("broadcast", ...)``)
sends ``--messages`` messages at ``--rate`` per second; every page stamps
each one with ``performance.timeOrigin + performance.now()`` when its
``message`` handler runs. Per message, the hop is the arrival on a shared
page (in leader mode one that does not hold the socket, a "follower") minus
the arrival on direct page A; the noise floor is direct page B minus direct
page A: two sockets of the same browser getting the same frame. In leader
mode the follower minus the leader tab is reported too: the relay alone,
without the socket's place in the fan-out. The pages are served
cross-origin isolated (COOP + COEP), so that Chromium's clock steps by
5 µs rather than 100 µs. The first 100 messages are a warm-up, outside the statistics. Every page must get
every message exactly once, in order, or the run fails.

    python -m bench.share [--messages 1000] [--rate 200] [--repeat 1]
"""

import argparse
import gzip
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import ROOT, free_port, wait_port, start_redis

STATIC = ROOT / "realtime" / "static" / "realtime"
CLIENT_FILES = ["realtime.js", "share.js", "worker.js", "autostart.js"]
MODES = ("worker", "leader")
WARMUP = 100
DIRECT, SHARED = 2, 3
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu"]
TARGET_MS = 1.0

#: The publisher: warms its connections up on a stream nobody reads, then
#: publishes COUNT messages to "broadcast" at RATE per second.
PUBLISHER = """
import sys, time
import django
django.setup()
from realtime import notify
count, rate = int(sys.argv[1]), float(sys.argv[2])
notify("bench-warmup", "bench.warmup", {})
began = time.monotonic()
for i in range(count):
    delay = began + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    notify("broadcast", "bench.tick", {"i": i})
print(f"{time.monotonic() - began:.3f}", flush=True)
"""

#: The smallest step of the page's clock: Chromium coarsens performance.now()
#: on pages that are not cross-origin isolated.
CLOCK_STEP = """() => {
  let smallest = Infinity, last = performance.now();
  for (let n = 0; n < 200000; n++) {
    const now = performance.now();
    if (now !== last) { smallest = Math.min(smallest, now - last); last = now; }
  }
  return smallest;
}"""


def sizes():
    rows = []
    for name in CLIENT_FILES:
        data = (STATIC / name).read_bytes()
        rows.append((name, len(data), len(gzip.compress(data, compresslevel=9, mtime=0))))
    return rows


def percentile(values, p):
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def summary(values):
    return {"median": statistics.median(values), "p90": percentile(values, 90), "p99": percentile(values, 99)}


def migrated_database(tmp):
    """A migrated SQLite file, copied for every run so that each starts from an empty log."""
    path = Path(tmp) / "template.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SQLITE_PATH": str(path),
           "REDIS_URL": "redis://127.0.0.1:1/0", "DJANGO_SETTINGS_MODULE": "bench.share_settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    return path


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path, size=3000):
    try:
        return Path(path).read_text(errors="replace")[-size:]
    except OSError:
        return ""


def check_arrivals(label, arrivals, count):
    """Every message exactly once, in order: ``payload.i`` is 0..count-1 and seqs consecutive."""
    seqs = [a[0] for a in arrivals]
    numbers = [a[2] for a in arrivals]
    if numbers != list(range(count)) or not seqs or seqs != list(range(seqs[0], seqs[0] + count)):
        missing = sorted(set(range(count)) - set(numbers))
        dupes = len(numbers) - len(set(numbers))
        raise SystemExit(
            f"{label}: got {len(arrivals)} of {count} messages, {len(missing)} missing "
            f"(first: {missing[:5]}), {dupes} duplicated, in order: {numbers == sorted(numbers)}"
        )
    return seqs


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_mode(playwright, mode, template_db, args):
    """One fresh server and browser in ``mode``: the hop and noise-floor samples, in ms."""
    with tempfile.TemporaryDirectory(prefix=f"realtime-bench-share-{mode}-") as tmp:
        database = Path(tmp) / "bench.sqlite3"
        shutil.copy(template_db, database)
        redis = daphne = publisher = browser = None
        server_log = Path(tmp) / "daphne.log"
        try:
            redis, redis_port = start_redis(tmp)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "SQLITE_PATH": str(database),
                "DJANGO_SETTINGS_MODULE": "bench.share_settings",
            }
            port = free_port()
            with open(server_log, "ab") as log:
                daphne = subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            wait_port(port, daphne)
            base = f"http://127.0.0.1:{port}/bench/share/"

            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context()
            if mode == "leader":
                context.add_init_script("delete window.SharedWorker;")
            errors = []
            pages = []
            for share in [0] * DIRECT + [1] * SHARED:
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{base}?share={share}")
                pages.append(page)
            direct, shared = pages[:DIRECT], pages[DIRECT:]
            for n, page in enumerate(pages):
                try:
                    page.wait_for_function("() => window.realtime && window.realtime.state === 'open'", timeout=20000)
                except Exception:
                    state = page.evaluate("() => window.realtime ? [window.realtime.state, window.realtime.sharing] : null")
                    raise SystemExit(
                        f"{mode}: page {n} ({'direct' if n < DIRECT else 'shared'}) never opened: "
                        f"[state, sharing] = {state}; page errors: {errors}; server log: {log_tail(server_log)}"
                    )

            expected = ["worker"] * SHARED if mode == "worker" else ["follower"] * (SHARED - 1) + ["leader"]

            def sharing():
                seen = [p.evaluate("() => window.realtime.sharing") for p in pages]
                return seen if seen[:DIRECT] == [None] * DIRECT and sorted(seen[DIRECT:]) == expected else None

            try:
                seen = wait_for(sharing, 10, "sharing")
            except SystemExit:
                seen = [p.evaluate("() => window.realtime.sharing") for p in pages]
                raise SystemExit(f"{mode}: realtime.sharing is {seen} (direct, then shared pages); "
                                 f"expected [None, None] then {expected} in any order; page errors: {errors}")
            measured = next(n for n, s in enumerate(seen) if s in ("worker", "follower"))
            clock_step = direct[0].evaluate(CLOCK_STEP)
            isolated = all(p.evaluate("() => crossOriginIsolated") for p in pages)

            with open(Path(tmp) / "publisher.log", "w+") as perr:
                publisher = subprocess.Popen(
                    [sys.executable, "-c", PUBLISHER, str(args.messages), str(args.rate)],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=perr, text=True,
                )
                try:
                    out, _ = publisher.communicate(timeout=args.messages / args.rate + 60)
                except subprocess.TimeoutExpired:
                    raise SystemExit(f"{mode}: the publisher did not finish")
                if publisher.returncode:
                    perr.seek(0)
                    raise SystemExit(f"{mode}: the publisher failed: {perr.read()[-3000:]}")
            published_s = float(out.strip())

            count = args.messages
            try:
                wait_for(lambda: all(p.evaluate("() => window.arrivals.length") >= count for p in pages),
                         30, "every page to get every message")
            except SystemExit:
                pass  # check_arrivals says what is missing
            time.sleep(0.5)  # anything duplicated arrives too
            arrivals = [p.evaluate("() => window.arrivals") for p in pages]
            if errors:
                raise SystemExit(f"{mode}: page errors: {errors}")
            seqs = [check_arrivals(f"{mode}: page {n} ({seen[n] or 'direct'})", a, count)
                    for n, a in enumerate(arrivals)]
            if any(s != seqs[0] for s in seqs):
                raise SystemExit(f"{mode}: the pages got different seqs for the same messages")

            a, b, s = arrivals[0], arrivals[1], arrivals[measured]
            hop = [s[i][1] - a[i][1] for i in range(WARMUP, count)]
            noise = [b[i][1] - a[i][1] for i in range(WARMUP, count)]
            relay = None
            if mode == "leader":
                lead = arrivals[seen.index("leader")]
                relay = summary([s[i][1] - lead[i][1] for i in range(WARMUP, count)])
            return {
                "mode": mode, "measured": seen[measured], "hop": summary(hop), "noise": summary(noise),
                "relay": relay, "samples": len(hop), "clock_step": clock_step, "isolated": isolated,
                "published_s": published_s, "chromium": browser.version,
            }
        finally:
            if browser is not None:
                try:
                    browser.close()
                except Exception:
                    pass
            stop(publisher)
            stop(daphne)
            stop(redis)


WHY = {
    "worker": "the worker parses the frame and posts it to the tab over a MessagePort",
    "leader": "the leader tab parses the frame and posts it to this tab over a BroadcastChannel",
}


def verdict(r):
    added = r["hop"]["median"] - r["noise"]["median"]
    figures = f"median hop {r['hop']['median']:.3f} − noise {r['noise']['median']:.3f} = {added:.3f} ms"
    if added <= 0:
        return added, f"met: {figures}: no delay above the noise floor; {WHY[r['mode']]}"
    if added < TARGET_MS:
        return added, f"met: {figures} < 1 ms; {WHY[r['mode']]}"
    return added, f"not met: {figures} ≥ 1 ms; {WHY[r['mode']]}"


def report(size_rows, results, args):
    print("## Client size\n")
    print("| file | bytes | gzip -9 bytes |")
    print("|---|---:|---:|")
    for name, raw, packed in size_rows:
        print(f"| {name} | {raw:,} | {packed:,} |")
    print(f"| **total** | **{sum(r[1] for r in size_rows):,}** | **{sum(r[2] for r in size_rows):,}** |")
    print()
    print("## Latency the shared connection adds\n")
    print(f"{args.messages:,} messages to \"broadcast\" at {args.rate:g}/s per run, the first {WARMUP} a warm-up; "
          f"statistics over the other {args.messages - WARMUP:,}. Hop: shared page − direct page A; "
          "noise floor: direct page B − direct page A (ms).\n")
    print("| mode | run | measured page | hop median | hop p90 | hop p99 | noise median | noise p90 | noise p99 "
          "| added median | target < 1 ms median added |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    runs = {}
    for r in results:
        runs[r["mode"]] = runs.get(r["mode"], 0) + 1
        added, why = verdict(r)
        h, n = r["hop"], r["noise"]
        print(f"| {r['mode']} | {runs[r['mode']]} | {r['measured']} | {h['median']:.3f} | {h['p90']:.3f} | "
              f"{h['p99']:.3f} | {n['median']:.3f} | {n['p90']:.3f} | {n['p99']:.3f} | {added:.3f} | {why} |")
    print()
    runs = 0
    for r in results:
        if r["relay"]:
            runs += 1
            x = r["relay"]
            print(f"Leader run {runs}, follower − leader tab (the BroadcastChannel relay alone, without the "
                  f"socket's place in the fan-out): median {x['median']:.3f}, p90 {x['p90']:.3f}, "
                  f"p99 {x['p99']:.3f} ms.  ")
    steps = sorted({round(r["clock_step"], 4) for r in results})
    isolated = "cross-origin isolated" if all(r["isolated"] for r in results) else "NOT all cross-origin isolated"
    print(f"The noise floor's median is not 0: which of the browser's sockets gets a frame first is set per run "
          f"(the server writes to them in turn, the browser passes each to its tab's process), so a socket's "
          f"place in that order moves hop and noise medians by tenths of a ms from run to run; `--repeat` shows "
          f"the spread.  ")
    print(f"Chromium {results[0]['chromium']} (headless), {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, daphne, private redis-server, SQLite, loopback. "
          f"Pages {isolated} (COOP + COEP); smallest step of their clock: "
          f"{', '.join(f'{s * 1000:.1f}' for s in steps)} µs.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200, help="messages per second")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode, each on a fresh server and browser")
    args = parser.parse_args(argv)
    if args.messages <= WARMUP + 1:
        raise SystemExit(f"--messages must be more than {WARMUP + 1} (the first {WARMUP} are a warm-up)")
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    size_rows = sizes()
    results = []
    with tempfile.TemporaryDirectory(prefix="realtime-bench-share-") as tmp:
        template_db = migrated_database(tmp)
        with sync_playwright() as playwright:
            for repeat in range(args.repeat):
                for mode in MODES:
                    result = run_mode(playwright, mode, template_db, args)
                    results.append(result)
                    print(f"{mode} run {repeat + 1}: added median "
                          f"{result['hop']['median'] - result['noise']['median']:.3f} ms "
                          f"(published in {result['published_s']:.2f} s)", file=sys.stderr, flush=True)
    report(size_rows, results, args)


if __name__ == "__main__":
    main()
