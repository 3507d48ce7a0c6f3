"""``python -m bench.memory``: what an idle WebSocket connection costs a fresh server process.

For each count of clients and each repetition, a fresh daphne serving
``project.asgi:application`` (``bench.settings``: channels-redis on a private
redis-server, SQLite) takes that many connections from the Node load
generator (``bench/loadgen.js``, which waits for every ``welcome``). The
server's RSS (``/proc/PID/statm``) is read once it listens and again
``--settle`` seconds after the last client connected; the difference over
the clients is KiB per connection. The first connections of a fresh process
also pay for one-time allocations (imports, database and Redis connections,
the hub); ``--warmup K`` opens and closes K connections before the first
reading to leave them out.

``--servers`` picks what is measured: ``realtime`` (the default) and the
anchors, measured the same way: ``raw`` (the bare ``websockets`` server,
``bench/raw_server.py``) and ``tutorial`` (the Channels tutorial,
``bench/tutorial_asgi.py``).

``--tracemalloc`` serves ``bench.memory_hook:application`` instead (the same
app, with tracemalloc on; RSS figures are then meaningless) and prints what
the connections added to the Python heap, per connection, by allocating line,
by the first caller outside the standard library, by package, by the last few
frames outside the standard library, and the live objects added per type
(see bench/memory_hook.py).

    python -m bench.memory [--clients 1000,5000] [--repeat 2] [--servers realtime,tutorial,raw]
                           [--warmup 0] [--settle 2] [--tracemalloc [--frames 25]]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import BENCH, ROOT, free_port, rss_bytes, start_redis, wait_port

KIB = 1024
APPS = {
    "realtime": ("project.asgi:application", "/ws/realtime/", "realtime"),
    "tutorial": ("bench.tutorial_asgi:application", "/ws/tutorial/", "plain"),
}


class Clients:
    """The Node load generator holding ``count`` idle connections open until :meth:`close`."""

    def __init__(self, url, origin, count, mode):
        config = {"urls": [url], "clients": count, "origin": origin, "mode": mode, "maxMessages": 1}
        self.proc = subprocess.Popen(
            ["node", str(BENCH / "loadgen.js"), json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.close()
            raise SystemExit(f"load generator did not get ready: {line!r}")

    def close(self):
        if self.proc.poll() is None:
            # "DONE 0": nothing to wait for; it reports, closes its sockets and exits.
            try:
                self.proc.stdin.write("DONE 0\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Server:
    """One fresh server process of ``kind``."""

    def __init__(self, kind, env, tmp, probe):
        self.port = free_port()
        self.dump = Path(tmp) / f"heap-{self.port}.json"
        env = {**env, "BENCH_MEMORY_DUMP": str(self.dump)}
        if kind == "raw":
            cmd = [sys.executable, "-m", "bench.raw_server", str(self.port)]
            path, self.mode = "/", "plain"
        else:
            app, path, self.mode = APPS[kind]
            if probe:
                app = "bench.memory_hook:application"
            cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), app]
        self.log = open(Path(tmp) / f"{kind}-{self.port}.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        self.url = f"ws://127.0.0.1:{self.port}{path}"
        self.origin = f"http://127.0.0.1:{self.port}"

    @property
    def rss(self):
        return rss_bytes([self.proc.pid])

    def threads(self):
        with open(f"/proc/{self.proc.pid}/status") as fh:
            return int(next(line for line in fh if line.startswith("Threads:")).split()[1])

    def heap_baseline(self):
        self.proc.send_signal(signal.SIGUSR1)

    def heap_dump(self, timeout=300):
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not self.dump.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the server wrote no heap dump")
            time.sleep(0.2)
        return json.loads(self.dump.read_text())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(kind, count, env, tmp, args):
    """One fresh server, ``count`` idle clients: its figures."""
    server = Server(kind, env, tmp, args.tracemalloc)
    try:
        time.sleep(args.settle)
        if args.warmup:
            Clients(server.url, server.origin, args.warmup, server.mode).close()
            # Under tracemalloc the server needs far longer to let the warm-up go.
            time.sleep(args.settle * (10 if args.tracemalloc else 1))
        rss0 = server.rss
        if args.tracemalloc:
            server.heap_baseline()
            time.sleep(1)
        clients = Clients(server.url, server.origin, count, server.mode)
        try:
            time.sleep(args.settle)
            rss1 = server.rss
            threads = server.threads()
            heap = server.heap_dump() if args.tracemalloc else None
        finally:
            clients.close()
    finally:
        server.stop()
    return {"kib_per_conn": (rss1 - rss0) / count / KIB, "rss0_mib": rss0 / KIB / KIB,
            "rss1_mib": rss1 / KIB / KIB, "threads": threads, "heap": heap}


def show_heap(heap, count):
    per = lambda size: f"{size / count / KIB:7.2f}"  # noqa: E731
    print(f"  traced heap growth: {heap['traced_diff'] / count / KIB:.2f} KiB/conn; "
          f"asyncio tasks {heap['tasks'][0]} -> {heap['tasks'][1]}")
    print("  by package (first caller outside the standard library), KiB/conn:")
    for name, size in heap["package"]:
        if abs(size) >= count * 16:
            print(f"    {per(size)}  {name}")
    print("  by caller, KiB/conn:")
    for name, size in heap["caller"][:25]:
        print(f"    {per(size)}  {name}")
    print("  by path (frames outside the standard library, innermost first), KiB/conn:")
    for name, size in heap["path"][:30]:
        print(f"    {per(size)}  {name}")
    print("  by allocating line, KiB/conn (objects/conn):")
    for name, size, n in heap["lineno"][:25]:
        print(f"    {per(size)}  ({n / count:5.2f})  {name}")
    print("  live objects added per connection, by type:")
    print("    " + ", ".join(f"{name} {n / count:.2f}" for name, n in heap["types"][:25]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1000,5000", help="comma-separated counts of idle connections")
    parser.add_argument("--repeat", type=int, default=2, help="fresh servers per count (medians are reported)")
    parser.add_argument("--servers", default="realtime", help="realtime, tutorial, raw (comma-separated)")
    parser.add_argument("--warmup", type=int, default=0, help="connections opened and closed before the first reading")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each reading")
    parser.add_argument("--tracemalloc", action="store_true", help="print what the connections add to the heap")
    parser.add_argument("--frames", type=int, default=25, help="frames kept per allocation with --tracemalloc")
    args = parser.parse_args(argv)
    if shutil.which("node") is None or not (BENCH / "node_modules" / "ws").exists():
        raise SystemExit("bench.memory needs Node.js and bench/node_modules (run `make bench` once, or npm ci in bench/).")
    counts = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    if args.tracemalloc and "raw" in servers:
        raise SystemExit("--tracemalloc probes the Django servers only")
    tmp = tempfile.mkdtemp(prefix="realtime-memory-")
    redis, redis_port = start_redis(tmp, "--maxclients", "20000")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SQLITE_PATH": str(Path(tmp) / "bench.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_TRACEMALLOC_FRAMES": str(args.frames),
    }
    results = {}
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        for kind in servers:
            for count in counts:
                for i in range(args.repeat):
                    subprocess.run(["redis-cli", "-p", str(redis_port), "flushall"], stdout=subprocess.DEVNULL, check=True)
                    r = measure(kind, count, env, tmp, args)
                    results.setdefault((kind, count), []).append(r["kib_per_conn"])
                    print(f"{kind:9} {count:6} #{i + 1}: {r['kib_per_conn']:6.1f} KiB/conn  "
                          f"(RSS {r['rss0_mib']:.1f} -> {r['rss1_mib']:.1f} MiB, {r['threads']} threads)", flush=True)
                    if r["heap"] is not None:
                        show_heap(r["heap"], count)
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| server | clients | KiB/conn (median) | runs |")
    print("|---|---|---|---|")
    for (kind, count), values in results.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {kind} | {count:,} | {statistics.median(values):.1f} | {runs} |")
    if args.tracemalloc:
        print("\n(--tracemalloc: RSS includes tracemalloc's own bookkeeping; read the heap figures instead.)")


if __name__ == "__main__":
    main()
