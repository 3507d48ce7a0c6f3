"""Publishes ``count`` messages {"n", "t"} to one kind of server, at a rate or as a burst.

    python -m bench.publisher KIND COUNT RATE TARGET [INBOX_USERS]

KIND is raw (TARGET: ws URL of /publish), tutorial (group_send on the layer)
or realtime (notify() to "broadcast"). RATE is messages per second; 0 sends
as fast as the publisher can. With INBOX_USERS (realtime only), message m goes
to the stream "bench:u<m % INBOX_USERS>" instead, numbered n = m // INBOX_USERS
within it: round-robin, so every user's stream gets its share in order.

The first publish of a fresh process opens its connections (database, Redis,
a socket) and imports what it loads lazily (the channel layer's backend): it
is much slower than the rest and would decide the p99 of a paced workload. So the publisher warms up first, with a message nobody
receives, and talks with the orchestrator on stdin/stdout:

    -> WARM <milliseconds the cold first publish took>
    <- GO
    -> <seconds the timed publishing took>
"""

import asyncio
import json
import os
import sys
import time

WARMUP_STREAM = "bench-warmup"


def cold_ms(started):
    return (time.perf_counter() - started) * 1000


def handshake(cold):
    """Report the warm-up and wait for the orchestrator's go; return when timing starts."""
    print(f"WARM {cold:.1f}", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "GO":
        raise SystemExit(f"expected GO on stdin, got {line!r}")
    return time.monotonic()


async def ahandshake(cold):
    return await asyncio.get_running_loop().run_in_executor(None, handshake, cold)


def stamp(n):
    return {"n": n, "t": time.time() * 1000}


async def paced(count, rate, send):
    start = time.monotonic()
    for n in range(count):
        if rate:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await send(n)


async def raw(count, rate, url):
    from websockets.asyncio.client import connect

    started = time.perf_counter()
    # Whatever the publish socket carries goes to every client: warm up with
    # the handshake and a ping round trip instead of a message.
    async with connect(url, max_queue=None, compression=None) as ws:
        await (await ws.ping())
        began = await ahandshake(cold_ms(started))
        await paced(count, rate, lambda n: ws.send(json.dumps({"type": "bench", "payload": stamp(n)})))
        elapsed = time.monotonic() - began
        await asyncio.sleep(0.2)
    return elapsed


async def tutorial(count, rate):
    from channels.layers import get_channel_layer

    started = time.perf_counter()
    # The tutorial's publishing snippet: get_channel_layer() (which builds the
    # layer, importing channels-redis, on first use) and group_send.
    layer = get_channel_layer()
    await layer.group_send(WARMUP_STREAM, {"type": "bench.message", "message": {"type": "bench", "payload": {}}})
    began = await ahandshake(cold_ms(started))

    async def send(n):
        await layer.group_send("bench", {"type": "bench.message", "message": {"type": "bench", "payload": stamp(n)}})

    await paced(count, rate, send)
    return time.monotonic() - began


def realtime(count, rate, users):
    from realtime import notify

    started = time.perf_counter()
    notify(WARMUP_STREAM, "bench", {})
    began = handshake(cold_ms(started))
    for m in range(count):
        if rate:
            delay = began + m / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if users:
            notify(f"bench:u{m % users}", "bench", stamp(m // users))
        else:
            notify("broadcast", "bench", stamp(m))
    return time.monotonic() - began


def main():
    kind, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    users = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if users and kind != "realtime":
        raise SystemExit("INBOX_USERS needs KIND realtime: the other servers have no per-user streams")
    if kind == "raw":
        elapsed = asyncio.run(raw(count, rate, sys.argv[4]))
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        import django

        django.setup()
        if kind == "tutorial":
            elapsed = asyncio.run(tutorial(count, rate))
        else:
            elapsed = realtime(count, rate, users)
    print(f"{elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
