"""Publishes ``count`` messages {"n", "t"} to one kind of server, at a rate or as a burst.

    python -m bench.publisher KIND COUNT RATE TARGET

KIND is raw (TARGET: ws URL of /publish), tutorial (group_send on the layer)
or realtime (notify() to "broadcast"). RATE is messages per second; 0 sends
as fast as the publisher can. Prints the seconds it took.
"""

import asyncio
import json
import os
import sys
import time


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

    async with connect(url, max_queue=None, compression=None) as ws:
        await paced(count, rate, lambda n: ws.send(json.dumps({"type": "bench", "payload": {"n": n, "t": time.time() * 1000}})))
        await asyncio.sleep(0.2)


async def tutorial(count, rate):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def send(n):
        await layer.group_send(
            "bench", {"type": "bench.message", "message": {"type": "bench", "payload": {"n": n, "t": time.time() * 1000}}}
        )

    await paced(count, rate, send)


def realtime(count, rate):
    from realtime import notify

    start = time.monotonic()
    for n in range(count):
        if rate:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        notify("broadcast", "bench", {"n": n, "t": time.time() * 1000})


def main():
    kind, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    started = time.monotonic()
    if kind == "raw":
        asyncio.run(raw(count, rate, sys.argv[4]))
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        import django

        django.setup()
        if kind == "tutorial":
            asyncio.run(tutorial(count, rate))
        else:
            realtime(count, rate)
    print(f"{time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
