"""``python -m bench.pings``: what a ping costs the server, with and without the session check.

The bundled client pings every ``HEARTBEAT_INTERVAL`` (25 s). With
``VERIFY_SESSIONS`` a ping may also re-read the socket's session and user
(at most once per half heartbeat). Here 200 logged-in clients each ping once a
second for 20 s -- 200 pings/s, what 5,000 sockets send at the default
heartbeat -- against a fresh daphne per setting, with the heartbeat set to 1 s
so that every ping re-checks; the server's CPU per ping is compared within
one run, the two settings alternating.

    python -m bench.pings [--clients 200] [--seconds 20]
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from bench.__main__ import ROOT, Run, cpu_seconds, start_redis

MAKE_SESSIONS = """
import json, sys
import django
django.setup()
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
keys = []
for i in range(int(sys.argv[1])):
    user = User.objects.create_user(f"pinger{i}")
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    keys.append(store.session_key)
print(json.dumps(keys))
"""


async def pinger(ws, seconds, interval=1.0):
    """Ping every ``interval`` s for ``seconds``, starting at a random moment; return pings answered."""
    await asyncio.sleep(random.random() * interval)
    deadline = time.monotonic() + seconds
    answered = 0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "ping", "id": answered}))
        while json.loads(await ws.recv())["type"] != "pong":
            pass
        answered += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - sent)))
    return answered


def measure(run, cookies, seconds, verify):
    os.environ["BENCH_REALTIME_JSON"] = json.dumps({"VERIFY_SESSIONS": verify, "HEARTBEAT_INTERVAL": 1})
    run.env["BENCH_REALTIME_JSON"] = os.environ["BENCH_REALTIME_JSON"]
    run.start("realtime")
    try:
        pids = [p.pid for p in run.procs]

        async def go():
            from websockets.asyncio.client import connect

            sockets = []
            for cookie in cookies:
                ws = await connect(run.urls[0], origin=run.origin, additional_headers={"Cookie": cookie}, ping_interval=None)
                assert json.loads(await ws.recv())["type"] == "welcome"
                sockets.append(ws)
            await asyncio.gather(*(pinger(ws, 3) for ws in sockets))  # warm-up, outside the window
            cpu0 = cpu_seconds(pids)
            pings = sum(await asyncio.gather(*(pinger(ws, seconds) for ws in sockets)))
            cpu1 = cpu_seconds(pids)
            await asyncio.gather(*(ws.close() for ws in sockets))
            return (cpu1 - cpu0) * 1e6 / pings, pings / seconds

        return asyncio.run(go())
    finally:
        run.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="realtime-bench-pings-")
    redis, redis_port = start_redis(tmp)
    try:
        run = Run(tmp, redis_port)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=run.env, check=True)
        made = subprocess.run(
            [sys.executable, "-c", MAKE_SESSIONS, str(args.clients)], cwd=ROOT, env=run.env,
            check=True, capture_output=True, text=True,
        )
        cookies = [f"sessionid={key}" for key in json.loads(made.stdout)]
        results = {}
        for verify in (False, True, False, True):  # alternate, fresh server each time
            cost, rate = measure(run, cookies, args.seconds, verify)
            results.setdefault(verify, []).append(cost)
            print(f"VERIFY_SESSIONS={verify!s:5}  {cost:6.0f} µs server CPU per ping  ({rate:,.0f} pings/s)", flush=True)
        off, on = min(results[False]), min(results[True])
        print(
            f"\nat 200 pings/s (5,000 sockets at the default heartbeat): ping {off:.0f} µs, "
            f"ping + session check {on:.0f} µs of server CPU; the check costs {on - off:.0f} µs, "
            f"{(on - off) * 200 / 1e6:.1%} of a core for those 5,000 sockets."
        )
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
