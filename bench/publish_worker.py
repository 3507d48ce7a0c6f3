"""One publishing process of ``python -m bench.publish``.

    python -m bench.publish_worker '<json config>'

Run with the environment bench/publish.py prepares (``DJANGO_SETTINGS_MODULE``,
``REDIS_URL``, the database). The worker sets Django up, warms up (connections
open, code paths run once) outside the timed window, writes ``{"ready": ...}``
as one JSON line to stdout and waits for ``GO`` on stdin, so that the parent can
release several workers together. It then times its operation and writes one
JSON line: ``start``/``end`` (``time.monotonic()``, which all processes share),
``messages`` timed, ``published`` in all (warm-up included, for the parent to
check against the database) and per-call ``samples`` in seconds where the
operation has calls worth timing one by one.

If the operation cannot run against this version of realtime (no
``notify_many``, no ``after_commit=``), the ready line is
``{"unavailable": reason}`` instead and the worker exits.
"""

import asyncio
import json
import os
import sys
import time

import django

#: Untimed publishes before the release: connections open, code paths run once.
WARMUP = 50
#: Seconds of work a long transaction does after notifying (a view under ATOMIC_REQUESTS).
WORK_SECONDS = 0.02
USERS = [f"user:{i}" for i in range(1, 1001)]


def payload(n):
    """A ~250-byte payload, different per message."""
    return {"n": n, "t": time.time() * 1000, "text": "x" * 200}


class Protocol:
    """The ready/GO/result exchange with the parent, on the original stdout.

    Library output printed to stdout would corrupt the JSON lines, so fd 1 is
    pointed at stderr (the worker's log) and the exchange keeps a private copy.
    """

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, message):
        self.out.write(json.dumps(message) + "\n")

    def release(self, **info):
        """Report ready, then block until the parent says GO."""
        self.send({"ready": True, **info})
        line = sys.stdin.readline()
        if line.strip() != "GO":
            # The parent gave up on this measurement (another worker failed).
            sys.exit(0)

    def unavailable(self, reason):
        self.send({"unavailable": reason})
        sys.exit(0)


def timed(release, count, publish, warmup=WARMUP):
    """Call ``publish(i)`` ``warmup`` times, wait for the release, then ``count`` times, timed."""
    for i in range(warmup):
        publish(i)
    release()
    start = time.monotonic()
    for i in range(count):
        publish(i)
    return {"start": start, "end": time.monotonic(), "messages": count, "published": warmup + count}


def timed_calls(release, calls, call, messages_per_call):
    """One untimed call, the release, then ``calls`` calls, each timed on its own."""
    call()
    release()
    samples = []
    start = time.monotonic()
    for _ in range(calls):
        begun = time.perf_counter()
        call()
        samples.append(time.perf_counter() - begun)
    return {
        "start": start, "end": time.monotonic(), "samples": samples,
        "messages": calls * messages_per_call, "published": (calls + 1) * messages_per_call,
    }


# Baselines -------------------------------------------------------------------

def op_raw(cfg, proto):
    """One autocommit INSERT per message through the bare driver: what the database can do."""
    db, tag = cfg["db"], cfg["tag"]
    if db["vendor"] == "sqlite":
        import sqlite3

        conn = sqlite3.connect(db["path"], isolation_level=None, timeout=20)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = "INSERT INTO bench_raw (stream, seq, body) VALUES (?, ?, ?)"
    else:
        import psycopg

        conn = psycopg.connect(db["dsn"], autocommit=True)
        sql = "INSERT INTO bench_raw (stream, seq, body) VALUES (%s, %s, %s)"
    result = timed(proto.release, cfg["count"], lambda i: conn.execute(sql, (tag, i, json.dumps(payload(i)))))
    conn.close()
    return result


def op_group_send(cfg, proto):
    """channels-redis ``group_send`` on the configured layer: live delivery with no log.

    The group has no members, as the streams' groups have none while nobody
    listens in this benchmark: both pay for reaching Redis, not for delivery.
    """
    from channels.layers import get_channel_layer

    async def run():
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()

        async def send(i):
            await layer.group_send("bench", {"type": "bench.message", "text": json.dumps(payload(i))})

        # Warm-up and timed sends share one loop: channels-redis keeps its connections per loop.
        for i in range(WARMUP):
            await send(i)
        await loop.run_in_executor(None, proto.release)
        start = time.monotonic()
        for i in range(cfg["count"]):
            await send(i)
        return {"start": start, "end": time.monotonic(), "messages": cfg["count"], "published": WARMUP + cfg["count"]}

    return asyncio.run(run())


def op_xadd(cfg, proto):
    """Redis ``XADD``: a durable-in-memory log without a database."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return timed(proto.release, cfg["count"], lambda i: client.xadd(cfg["tag"], {"body": json.dumps(payload(i))}))


# realtime --------------------------------------------------------------------

def op_notify(cfg, proto):
    """Sequential ``notify()`` calls to one stream."""
    from realtime import notify

    return timed(proto.release, cfg["count"], lambda i: notify(cfg["target"], "bench", payload(i)))


def op_notify_list(cfg, proto):
    """``notify()`` to a list of 1,000 user streams: one call, one message each."""
    from realtime import notify

    return timed_calls(proto.release, cfg["calls"], lambda: notify(USERS, "bench", payload(0)), len(USERS))


def op_notify_many(cfg, proto):
    """``notify_many()`` of 1,000 different messages to 1,000 user streams."""
    import realtime

    notify_many = getattr(realtime, "notify_many", None)
    if notify_many is None:
        proto.unavailable("notify_many not available")
    return timed_calls(
        proto.release, cfg["calls"], lambda: notify_many([(name, "bench", payload(i)) for i, name in enumerate(USERS)]),
        len(USERS),
    )


def op_notify_atomic(cfg, proto):
    """1,000 ``notify()`` calls inside one ``transaction.atomic()``, commit included."""
    from django.db import transaction
    from realtime import notify

    def call():
        with transaction.atomic():
            for i, name in enumerate(USERS):
                notify(name, "bench", payload(i))

    return timed_calls(proto.release, cfg["calls"], call, len(USERS))


def op_long_tx(cfg, proto):
    """Requests that notify a hot stream, then work 20 ms in the same transaction.

    Each sample is the time the request spent publishing: the whole ``atomic``
    block minus its own work, i.e. the wait for the stream's lock (taken by
    ``notify()`` on PostgreSQL, by ``BEGIN IMMEDIATE`` on SQLite), the writes
    and the commit (where an ``after_commit=True`` message is appended).
    """
    from django.db import transaction
    from realtime import notify

    kwargs = {"after_commit": True} if cfg["after_commit"] else {}

    def request(i):
        begun = time.perf_counter()
        with transaction.atomic():
            notify("hot", "bench", payload(i), **kwargs)
            work = time.perf_counter()
            time.sleep(WORK_SECONDS)
            work = time.perf_counter() - work
        return time.perf_counter() - begun - work

    try:
        request(0)
    except TypeError as exc:
        if "after_commit" not in str(exc):
            raise
        proto.unavailable("notify() has no after_commit")
    request(1)
    proto.release()
    start = time.monotonic()
    samples = [request(i) for i in range(cfg["count"])]
    return {
        "start": start, "end": time.monotonic(), "samples": samples,
        "messages": cfg["count"], "published": 2 + cfg["count"],
    }


def op_cold(cfg, proto):
    """The first ``notify()`` of a fresh process: opens the database and Redis connections.

    Imports happen before the clock starts; they are paid once per process
    whether or not it publishes.
    """
    from realtime import notify

    proto.release()
    start = time.monotonic()
    begun = time.perf_counter()
    notify("broadcast", "bench", payload(0))
    return {"start": start, "end": time.monotonic(), "samples": [time.perf_counter() - begun],
            "messages": 1, "published": 1}


OPS = {
    "raw": op_raw, "group_send": op_group_send, "xadd": op_xadd, "notify": op_notify,
    "notify_list": op_notify_list, "notify_many": op_notify_many, "notify_atomic": op_notify_atomic,
    "long_tx": op_long_tx, "cold": op_cold,
}


def main():
    cfg = json.loads(sys.argv[1])
    proto = Protocol()
    django.setup()
    proto.send(OPS[cfg["op"]](cfg, proto))


if __name__ == "__main__":
    main()
