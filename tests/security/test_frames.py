"""No client frame crashes a connection, and no way of ending one leaves anything behind.

Before: ``{"type":"ping","id":"\\ud800"}`` (valid JSON with a lone surrogate)
or 20,000 nested ``[`` closed the socket with 1011, and the dead connection
kept its group memberships, memory and presence entry: 2,000 such crashes
added 46 MB to a server.
"""

import asyncio
import json
import random
from urllib.parse import quote

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.security.conftest import group_members, presence_entries, rss

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

MiB = 1024 * 1024
HOOKS = {"AUTHORIZE": "tests.security.hooks.authorize"}
#: What the fuzz may provoke: errors answered in frames, never a close.
LENIENT = {**HOOKS, "INBOUND_RATE": 100_000, "INBOUND_BURST": 100_000, "MAX_INVALID_FRAMES": 1_000_000}
CLIENT_TYPES = ["ping", "subscribe", "unsubscribe", "resume"]
FIELDS = ["id", "stream", "since", "epoch", "streams", "epochs", "type"]


def random_text(rng, length=None):
    """A JSON string literal body: any code point, lone surrogates as \\u escapes included."""
    length = rng.randint(0, 40) if length is None else length
    out = []
    for _ in range(length):
        pick = rng.random()
        if pick < 0.15:
            out.append("\\u%04x" % rng.randint(0xD800, 0xDFFF))  # lone surrogate
        elif pick < 0.25:
            out.append(rng.choice(["\\n", "\\u0000", '\\"', "\\\\", "😀", "\u202e", ":", "*"]))
        else:
            out.append(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])).replace('"', "").replace("\\", ""))
    return '"' + "".join(out) + '"'


def random_value(rng, depth=0):
    """JSON text of a random value, numbers JSON (and Python) find awkward included."""
    kinds = ["int", "huge", "float", "special", "text", "null", "bool"]
    if depth < 4:
        kinds += ["list", "object"]
    kind = rng.choice(kinds)
    if kind == "int":
        return str(rng.randint(-(2**70), 2**70))
    if kind == "huge":
        return rng.choice(["1" + "0" * rng.randint(20, 5000), "1e400", "-1e400", "1e-400", "123456789" * 400])
    if kind == "float":
        return repr(rng.uniform(-1e308, 1e308))
    if kind == "special":
        return rng.choice(["NaN", "Infinity", "-Infinity"])
    if kind == "text":
        return random_text(rng)
    if kind == "null":
        return "null"
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "list":
        return "[" + ",".join(random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    return random_object(rng, depth + 1)


def random_object(rng, depth=0, keys=None):
    keys = keys or [rng.choice(FIELDS + ["x", "streams"]) for _ in range(rng.randint(0, 5))]
    items = []
    for key in keys:
        if key in ("stream", "streams", "epochs") and rng.random() < 0.5:
            value = random_streams(rng) if key != "stream" else rng.choice(['"fuzz:a"', '"broadcast"', random_text(rng)])
        else:
            value = random_value(rng, depth)
        items.append(f'"{key}":{value}')
    return "{" + ",".join(items) + "}"


def random_streams(rng):
    names = [rng.choice(['"fuzz:%d"' % rng.randint(0, 5), '"staff"', '"user:1"', random_text(rng, 5)]) for _ in range(rng.randint(0, 6))]
    return "{" + ",".join(f"{name}:{random_value(rng, 3)}" for name in names) + "}"


def fuzz_frame(rng):
    """One frame: ``("text" | "binary", data)``."""
    pick = rng.random()
    if pick < 0.1:
        return "binary", rng.randbytes(rng.randint(0, 200))
    if pick < 0.2:
        return "text", rng.randbytes(rng.randint(0, 200)).decode("latin-1")
    if pick < 0.25:
        opener = rng.choice(["[", "{\"a\":", "{\"type\":\"resume\",\"streams\":"])
        return "text", opener * rng.randint(1000, 20_000) if opener == "[" else opener * 2000
    if pick < 0.3:
        return "text", rng.choice(
            [
                '{"type":"ping","id":"\\ud800"}',
                '{"type":"ping","id":NaN}',
                '{"type":"ping","id":1' + "0" * 4000 + "}",
                '{"type":"subscribe","stream":"user:1\\n"}',
                '{"type":"subscribe","stream":"fuzz:a","since":1e400}',
                '{"type":"subscribe","stream":"fuzz:a","since":' + str(2**64) + "}",
                '{"type":"resume","streams":{"fuzz:a":-1},"epochs":{"fuzz:a":"\\udfff"}}',
                '{"type":"resume","streams":{' + ",".join(f'"fuzz:{i}":0' for i in range(500)) + "}}",
            ]
        )
    keys = ["type"] + [rng.choice(FIELDS) for _ in range(rng.randint(0, 4))]
    text = random_object(rng, keys=keys)
    if rng.random() < 0.8:
        text = text.replace(text.split(",")[0].rstrip("}"), '{"type":"%s"' % rng.choice(CLIENT_TYPES), 1)
    return "text", text


async def fuzz_connection(ws_url, cookie, rng, count, origin):
    """Send ``count`` fuzzed frames, then a ping; return (pong received, frames received, close code)."""
    async with connect(ws_url, origin=origin, additional_headers={"Cookie": cookie}, max_size=None, ping_interval=None) as ws:
        received = []

        async def reader():
            async for raw in ws:
                frame = json.loads(raw)
                received.append(frame)
                if frame["type"] == "pong" and frame["payload"].get("id") == "done":
                    return True
            return False

        task = asyncio.create_task(reader())
        try:
            for _ in range(count):
                kind, data = fuzz_frame(rng)
                await ws.send(data if kind == "text" else data)
            await ws.send('{"type":"ping","id":"done"}')
            pong = await asyncio.wait_for(task, 60)
        except websockets.ConnectionClosed:
            pong = False
        code = ws.close_code
        return pong, received, code


async def test_10000_fuzzed_frames_close_nothing_leak_nothing(server, login, redis_url, layer_prefix):
    daphne = server(realtime=LENIENT)
    _user, cookie = await login()
    rng = random.Random(20261126)
    before = None
    answered = 0
    for round_ in range(20):
        pong, received, code = await fuzz_connection(daphne.ws_url, cookie, rng, 500, daphne.url)
        assert pong and code is None, f"round {round_}: pong={pong} close={code}\n{daphne.output()[-3000:]}"
        assert not [f for f in received if f["type"] == "error" and f["payload"]["code"] == "internal_error"]
        answered += len(received)
        if round_ == 1:
            before = rss(daphne.proc.pid)  # after a warm-up of 1,000 frames
    await asyncio.sleep(1.5)
    growth = rss(daphne.proc.pid) - before
    print(f"\n[fuzz] 10,000 frames over 20 connections: 0 closes, {answered} frames answered, RSS +{growth / MiB:.1f} MiB")
    output = daphne.output()
    assert "Traceback" not in output and "failed" not in output, output[-3000:]
    assert group_members(redis_url, layer_prefix) == {}
    assert presence_entries(redis_url, layer_prefix) == 0
    assert growth < 8 * MiB


async def drain(ws):
    async for _ in ws:
        pass


async def misbehave(ws_url, cookie, origin, index):
    """Join a stream of one's own, then end the connection one of the ways a client can."""
    query = "?resume=" + quote(json.dumps({"streams": {f"fuzz:{index}": 0}}))
    way = index % 5
    try:
        async with connect(ws_url + query, origin=origin, additional_headers={"Cookie": cookie}, ping_interval=None, close_timeout=2) as ws:
            welcome = json.loads(await ws.recv())
            assert f"fuzz:{index}" in welcome["payload"]["streams"], welcome
            if way == 0:
                await ws.send("x" * 70_000)  # over MAX_INBOUND_SIZE
            elif way == 1:
                for _ in range(100):  # over INBOUND_BURST, with frames answered without waiting
                    await ws.send('{"type":"unsubscribe","stream":"nothing"}')
            elif way == 2:
                for _ in range(30):  # over MAX_INVALID_FRAMES
                    await ws.send("not json")
            elif way == 3:
                await ws.send('{"type":"ping","id":"\\ud800"}')  # used to close with 1011
                await ws.send("[" * 20_000)
                ws.transport.abort()  # and vanish without a close frame
                return "aborted"
            else:
                ws.transport.abort()
                return "aborted"
            await asyncio.wait_for(drain(ws), 30)
            return ws.close_code
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_2000_policy_closed_or_vanished_connections_leave_nothing(server, login, redis_url, layer_prefix):
    daphne = server(realtime={**HOOKS, "PRESENCE": {"TTL": 5}, "HEARTBEAT_INTERVAL": 2})
    _user, cookie = await login()
    semaphore = asyncio.Semaphore(40)

    async def one(index):
        async with semaphore:
            return await misbehave(daphne.ws_url, cookie, daphne.url, index)

    # The allocator's high-water mark settles after a few thousand connections of
    # unique streams (measured: flat after ~1,000 on Python 3.11, after ~3,000 on
    # 3.13, +31 MiB on the way); a leak grows with every connection. So rounds of
    # 1,000 run until one grows by less than 2 KiB per connection, and a leak
    # never gets there.
    codes = list(await asyncio.gather(*(one(i) for i in range(1000))))
    await asyncio.sleep(1)
    growths = []
    for round_ in range(1, 7):
        before = rss(daphne.proc.pid)
        codes += await asyncio.gather(*(one(i) for i in range(round_ * 1000, (round_ + 1) * 1000)))
        await asyncio.sleep(1)
        growths.append(rss(daphne.proc.pid) - before)
        if growths[-1] < 2 * MiB and round_ >= 2:
            break
    expected = {0: {1009}, 1: {4008}, 2: {4008}, 3: {"aborted"}, 4: {"aborted"}}
    wrong = [(i, code) for i, code in enumerate(codes) if code not in expected[i % 5]]
    # A client still sending when the server's close handshake times out gets a
    # TCP reset, which discards the close frame it had not read yet: on a loaded
    # 2-core machine a few of the thousands that flood frames see no code.
    unread = [(i, code) for i, code in wrong if code is None and i % 5 in (1, 2)]
    assert len(unread) <= len(codes) // 100 and len(wrong) == len(unread), wrong[:10]
    await asyncio.sleep(6)  # past the presence TTL
    rounds = ", ".join(f"+{g / MiB:.1f}" for g in growths)
    print(
        f"\n[crashes] {len(codes):,} connections closed by policy or vanished: groups left 0, presence 0, "
        f"RSS per 1,000 after the first: {rounds} MiB"
    )
    assert group_members(redis_url, layer_prefix) == {}
    assert presence_entries(redis_url, layer_prefix) == 0
    assert growths[-1] < 2 * MiB, f"RSS grew in every round of 1,000 (MiB): {rounds}"  # before: 23 MiB per 1,000
    assert "Traceback" not in daphne.output()
