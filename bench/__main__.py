"""``make bench``: fan-out speed and loss of four servers, measured in one run.

Servers: (a) a raw ``websockets`` broadcast (the ceiling), (b) the Channels
tutorial's group broadcast on daphne (what users would write), (c) realtime on
one daphne process, (d) realtime on two daphne processes sharing one Redis.
Each gets the same Node ``ws`` load generator (bench/loadgen.js), which checks
loss, duplicates and order per connection, and a publisher in a separate
process (bench/publisher.py), warmed up before timing starts. Workloads
broadcast to every client (steady, burst, scale) or send each message to one
client's own stream (inbox, realtime only). Every repetition
runs on freshly started server processes, so the memory a connection costs is
never memory an earlier run freed. Everything runs on loopback: a private
redis-server, SQLite.

    python -m bench [--repeat 3] [--quick] [--only raw,realtime] [--out docs/performance.md]
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WORKLOADS = {
    # name: (clients, messages, rate per second; 0 = as fast as possible)
    "steady": (1000, 100, 10),
    "burst": (1000, 500, 0),
    "scale": (5000, 20, 2),
    "inbox": (1000, 10000, 0),
}
QUICK = {"steady": (300, 30, 10), "burst": (300, 200, 0), "scale": (1000, 10, 2), "inbox": (300, 3000, 0)}
# Workloads where every client reads its own stream and message m goes to
# client m % clients only: single-user notices, which only realtime has.
INBOX = {"inbox"}

SERVERS = ["raw", "tutorial", "realtime", "realtime-2proc"]
EXTRA_SERVERS = ["realtime-uvicorn", "realtime-metrics"]
LABELS = {
    "raw": "raw websockets (ceiling)",
    "tutorial": "Channels tutorial, daphne + channels-redis",
    "realtime": "realtime, 1 daphne process",
    "realtime-2proc": "realtime, 2 daphne processes",
    "realtime-uvicorn": "realtime, 1 uvicorn process (websockets)",
    "realtime-metrics": "realtime, 1 daphne process, Prometheus metrics on (multiprocess mode)",
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on {port}")


def start_redis(tmp, *options):
    """A private redis-server on a free port (the shared one is never touched): ``(process, port)``."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp, *options],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_bytes(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as fh:
            total += int(fh.read().split()[1]) * PAGE
    return total


class Run:
    def __init__(self, tmp, redis_port):
        self.tmp = tmp
        self.redis_port = redis_port
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "SQLITE_PATH": str(Path(tmp) / "bench.sqlite3"),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
        }
        self.procs = []

    def start(self, kind):
        """Start fresh server processes of ``kind``, on a Redis without the last run's groups."""
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "flushall"], stdout=subprocess.DEVNULL, check=True)
        ports = [free_port() for _ in range(2 if kind == "realtime-2proc" else 1)]
        for port in ports:
            if kind == "raw":
                cmd = [sys.executable, "-m", "bench.raw_server", str(port)]
            elif kind == "realtime-uvicorn":
                cmd = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1",
                       "--port", str(port), "--ws", "websockets", "--no-access-log", "--log-level", "warning",
                       "--ws-ping-interval", "0"]
            else:
                app = "bench.tutorial_asgi:application" if kind == "tutorial" else "project.asgi:application"
                cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
            log = open(Path(self.tmp) / f"{kind}-{port}.log", "ab")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.server_env(kind), stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            wait_port(port, proc)
        path = {"raw": "/", "tutorial": "/ws/tutorial/"}.get(kind, "/ws/realtime/")
        self.urls = [f"ws://127.0.0.1:{port}{path}" for port in ports]
        self.origin = f"http://127.0.0.1:{ports[0]}"
        self.publish_target = f"ws://127.0.0.1:{ports[0]}/publish"
        self.kind = kind

    def server_env(self, kind):
        if kind != "realtime-metrics":
            return self.env
        # The documented production setup: values kept in files, one endpoint per box.
        directory = Path(self.tmp) / f"prometheus-{len(self.procs)}"
        directory.mkdir(exist_ok=True)
        extra = {**json.loads(self.env.get("BENCH_REALTIME_JSON", "{}")), "METRICS": {"ENABLED": True, "TOKEN": "bench"}}
        return {**self.env, "BENCH_REALTIME_JSON": json.dumps(extra), "PROMETHEUS_MULTIPROC_DIR": str(directory)}

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []

    def measure(self, clients, count, rate, inbox=False):
        """One repetition on the running servers: connect, publish, drain; return its figures."""
        pids = [p.pid for p in self.procs]
        rss0 = rss_bytes(pids)
        config = {
            "urls": self.urls, "clients": clients, "origin": self.origin,
            "mode": "realtime" if self.kind.startswith("realtime") else "plain", "inbox": inbox,
            # A server still delivering after 45 s counts what it has not delivered as lost.
            "idleMs": 8000, "drainMs": 45000, "maxMessages": -(-count // clients) if inbox else count,
        }
        gen = subprocess.Popen(
            ["node", str(BENCH / "loadgen.js"), json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        pub = None
        errors = open(Path(self.tmp) / "publisher.log", "w+")
        try:
            line = gen.stdout.readline()
            if line.strip() != "READY":
                raise SystemExit(f"load generator did not get ready: {line!r}")
            time.sleep(0.5)
            rss1 = rss_bytes(pids)
            kind = "realtime" if self.kind.startswith("realtime") else self.kind
            pub = subprocess.Popen(
                [sys.executable, "-m", "bench.publisher", kind, str(count), str(rate), self.publish_target,
                 *([str(clients)] if inbox else [])],
                cwd=ROOT, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                text=True, bufsize=1,
            )
            # The publisher opens its connections with a first message nobody
            # receives; the timing starts after it.
            warm = pub.stdout.readline().split()
            if len(warm) != 2 or warm[0] != "WARM":
                pub.kill()
                pub.wait()
                raise SystemExit(f"publisher did not warm up: {warm!r} {tail(errors)}")
            cpu0 = cpu_seconds(pids)
            started = time.time() * 1000
            pub.stdin.write("GO\n")
            pub.stdin.flush()
            out = pub.communicate()[0]
            if pub.returncode:
                raise SystemExit(f"publisher failed: {tail(errors)}")
            gen.stdin.write(f"DONE {count}\n")
            gen.stdin.flush()
            line = gen.stdout.readline()
            if not line.startswith("{"):
                raise SystemExit(f"load generator failed: {line!r}")
            result = json.loads(line)
            cpu1 = cpu_seconds(pids)
            gen.wait(30)
        finally:
            for proc in (gen, pub):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            errors.close()
        delivered = max(result["delivered"], 1)
        span = max(result["lastArrival"] - started, 1) / 1000
        return {
            **result,
            "deliveries_per_s": delivered / span,
            "cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / delivered,
            "kib_per_connection": (rss1 - rss0) / clients / 1024,
            "cold_ms": float(warm[1]),
            "publish_s": float(out.strip() or 0),
        }


def tail(fh, size=2000):
    fh.seek(0)
    return fh.read()[-size:]


def median_of(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tutorial-repeat", type=int, default=1,
        help="repetitions for the Channels tutorial (slow: it falls tens of seconds behind)",
    )
    parser.add_argument("--quick", action="store_true", help="small workloads, to try the harness")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers: " + ",".join(SERVERS + EXTRA_SERVERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    if shutil.which("node") is None or not (BENCH / "node_modules" / "ws").exists():
        raise SystemExit("bench needs Node.js and bench/node_modules (run `make bench`, which runs npm ci).")
    workloads = {k: (QUICK if args.quick else WORKLOADS)[k] for k in args.workloads.split(",")}
    servers = args.only.split(",")
    tmp = tempfile.mkdtemp(prefix="realtime-bench-")
    redis, redis_port = start_redis(tmp, "--maxclients", "20000")
    run = Run(tmp, redis_port)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=run.env, check=True)
    results = {}
    started = time.monotonic()
    try:
        for kind in servers:
            for name, (clients, count, rate) in workloads.items():
                if name in INBOX and not kind.startswith("realtime"):
                    continue
                runs = []
                repeat = args.tutorial_repeat if kind == "tutorial" else args.repeat
                for i in range(repeat):
                    # Fresh processes every time: a process that served an earlier
                    # run reuses the memory it freed, and KiB/conn would understate.
                    run.start(kind)
                    try:
                        r = run.measure(clients, count, rate, inbox=name in INBOX)
                    finally:
                        run.stop()
                    runs.append(r)
                    print(
                        f"{kind:15} {name:7} #{i + 1}: {r['deliveries_per_s']:9,.0f} deliveries/s  "
                        f"lost {r['lost']:6}  dup {r['duplicated']:4}  reordered {r['reordered']}  "
                        f"misrouted {r['misrouted']}  p50 {r['p50']} ms  p99 {r['p99']} ms  "
                        f"cpu {r['cpu_us_per_delivery']:6.1f} us/delivery  {r['kib_per_connection']:5.1f} KiB/conn  "
                        f"cold first publish {r['cold_ms']:.0f} ms",
                        flush=True,
                    )
                results[(kind, name)] = {
                    key: median_of(runs, key)
                    for key in ("deliveries_per_s", "lost", "duplicated", "reordered", "p50", "p99", "max",
                                "cpu_us_per_delivery", "kib_per_connection", "cold_ms", "expected")
                }
                for key in ("lost", "duplicated", "reordered", "misrouted"):
                    results[(kind, name)][key + "_max"] = max(r[key] for r in runs)
    finally:
        redis.terminate()
        redis.wait(10)
    elapsed = time.monotonic() - started
    report = render(results, workloads, servers, args, elapsed)
    print(report)
    if not args.quick:
        write_report(Path(args.out), report_section(report, args))
        plot(results, workloads, servers, Path(args.out).with_name("performance.png"))
    shutil.rmtree(tmp, ignore_errors=True)


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "n/a"


def shape(name, clients, count, rate):
    """The "clients × msgs" cell: what each client receives, and at what pace."""
    pace = f" @{rate}/s" if rate else " burst"
    if name in INBOX:
        return f"{clients} × {count // clients} own ({count} sent){pace}"
    return f"{clients} × {count}{pace}"


def render(results, workloads, servers, args, elapsed):
    lines = [
        "| server | workload | clients × msgs | deliveries/s | lost | dup | p50 ms | p99 ms | max ms "
        "| CPU µs/delivery | KiB/conn | cold first publish ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    disorder = []
    for kind in servers:
        for name, (clients, count, rate) in workloads.items():
            r = results.get((kind, name))
            if not r:
                if name in INBOX and not kind.startswith("realtime"):
                    lines.append(f"| {LABELS[kind]} | {name} | {shape(name, clients, count, rate)} " + "| n/a " * 9 + "|")
                continue
            lines.append(
                f"| {LABELS[kind]} | {name} | {shape(name, clients, count, rate)} "
                f"| {r['deliveries_per_s']:,.0f} | {r['lost']:,.0f} (max {r['lost_max']:,}) | {r['duplicated_max']:,} "
                f"| {r['p50']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['cpu_us_per_delivery']:.1f} "
                f"| {r['kib_per_connection']:.1f} | {r['cold_ms']:.0f} |"
            )
            if r["reordered_max"] or r["misrouted_max"]:
                disorder.append(
                    f"{LABELS[kind]} {name}: {r['reordered_max']:,} out of order, "
                    f"{r['misrouted_max']:,} on another user's connection (worst run)"
                )
    ratios = []
    for name in workloads:
        rt, raw, tut = (results.get((k, name)) for k in ("realtime", "raw", "tutorial"))
        if not rt:
            continue
        parts = [f"- **{name}**:"]
        if raw:
            parts.append(f"CPU/delivery realtime/raw {ratio(rt['cpu_us_per_delivery'], raw['cpu_us_per_delivery'])},")
            parts.append(f"p99 realtime/raw {ratio(rt['p99'], raw['p99'])},")
        if tut:
            parts.append(f"CPU/delivery tutorial/realtime {ratio(tut['cpu_us_per_delivery'], rt['cpu_us_per_delivery'])},")
        two = results.get(("realtime-2proc", name))
        if two and workloads[name][2] == 0:  # at a fixed rate, throughput is the rate
            parts.append(f"throughput 2 processes/1 process {ratio(two['deliveries_per_s'], rt['deliveries_per_s'])}")
        if len(parts) > 1:
            ratios.append(" ".join(parts).rstrip(","))
    if ratios:
        lines += ["", "Ratios (medians of the same run):", "", *ratios]
    lines += [
        "",
        f"{args.repeat} repetitions per cell ({args.tutorial_repeat} for the tutorial), medians; lost/dup also "
        f"as the worst run. Every repetition starts fresh server processes, so KiB/conn (RSS growth while "
        f"the clients connect) is never memory an earlier run freed. Cold first publish: the publisher "
        f"process's first message, which loads the channel layer and opens its connections; it goes before "
        f"the timing starts, to a stream nobody reads, and is not in p50/p99. inbox: each message to one "
        f"client's own stream, "
        f"round-robin (realtime only: the others have no per-user streams). "
        + (f"Out of order or misrouted: {'; '.join(disorder)}. " if disorder else
           "No message arrived out of order or on another user's connection. ")
        + f"Run took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def report_section(table, args):
    return f"""{BEGIN}
Produced by `make bench` (`python -m bench --repeat {args.repeat}`) on
{time.strftime("%Y-%m-%d")}: {os.cpu_count()} cores, {platform.python_implementation()}
{platform.python_version()}, {platform.system()} {platform.release()}.

{table}

![deliveries/s and p99 latency vs clients](performance.png)
{END}"""


def write_report(path, section):
    """Replace the generated part of ``path`` (between the markers), keeping the prose around it."""
    text = path.read_text() if path.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + section + tail)


def plot(results, workloads, servers, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
        return
    steady = [n for n in ("steady", "scale") if n in workloads]
    if not steady:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in servers:
        xs = [workloads[n][0] for n in steady if (kind, n) in results]
        if not xs:
            continue
        left.plot(xs, [results[(kind, n)]["deliveries_per_s"] for n in steady if (kind, n) in results], "o-", label=LABELS[kind])
        right.plot(xs, [results[(kind, n)]["p99"] for n in steady if (kind, n) in results], "o-", label=LABELS[kind])
    left.set(title="deliveries/s (steady rate)", xlabel="clients", ylabel="deliveries/s")
    right.set(title="p99 latency", xlabel="clients", ylabel="ms", yscale="log")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
