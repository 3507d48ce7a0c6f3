"""Clients that stop reading cost a server at most MAX_OUTBOUND_BUFFER each, and lose nothing.

Before the cap, ten sockets resuming a 20-40 MB stream and then not reading
grew one daphne by 241-447 MB (twisted buffers whatever a peer does not read).
"""

import asyncio
import datetime
import json
import time
import uuid
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from realtime import envelope
from realtime.models import Message, Stream
from tests.procs import UvicornServer, finish, publish
from tests.security.conftest import RawSocket, rss
from tests.wsclient import RecordingClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

MiB = 1024 * 1024
CAP = MiB  # the default MAX_OUTBOUND_BUFFER


def fill(stream, count, size):
    """Write ``count`` messages of about ``size`` bytes to ``stream``'s log directly."""
    payload = json.dumps({"pad": "x" * size})
    row = Stream.objects.create(name=stream, last_seq=count)
    now = timezone.now()
    ts = now.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    Message.objects.bulk_create(
        [
            Message(
                stream=row,
                seq=seq,
                type="history",
                created_at=now,
                envelope=envelope.build("history", stream, seq, payload, id=uuid.uuid4().hex, ts=ts),
            )
            for seq in range(1, count + 1)
        ],
        batch_size=500,
    )
    return row


def resume_query(stream, since):
    return "resume=" + quote(json.dumps({"streams": {stream: since}}))


def peak_rss(pid, seconds):
    """The highest RSS of ``pid`` sampled every 0.1 s for ``seconds``."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        time.sleep(0.1)
    return peak


async def test_ten_stalled_resumes_of_a_20_mb_stream_cost_at_most_the_cap_each(server, login):
    user, cookie = await login()
    stream = f"user:{user.pk}"
    count, size = 10_000, 2_000
    await sync_to_async(fill)(stream, count, size)
    daphne = server()
    # Warm up outside the measurement: a connection that replays a little and reads it.
    warm = RawSocket(daphne.port, cookie, query=resume_query(stream, count - 50))
    frames = [warm.recv_json() for _ in range(51)]
    assert frames[-1]["seq"] == count
    warm.close()
    await asyncio.sleep(0.5)
    before = rss(daphne.proc.pid)

    stalled = [RawSocket(daphne.port, cookie, query=resume_query(stream, 0), rcvbuf=4096) for _ in range(10)]
    try:
        peak = await sync_to_async(peak_rss)(daphne.proc.pid, 6)
        growth = peak - before
        print(f"\n[stalled resumes] 10 sockets x 20 MB history: RSS +{growth / MiB:.1f} MiB (limit {10 * CAP / MiB + 16:.0f})")
        assert growth <= 10 * CAP + 16 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"

        # Paced, not dropped: a stalled socket that starts reading gets the whole history, in order.
        reader = stalled[0]
        reader.sock.settimeout(30)
        welcome = reader.recv_json()
        assert welcome["type"] == "welcome" and welcome["payload"]["streams"][stream] == 0
        seqs = []
        while len(seqs) < count:
            frame = reader.recv_json()
            assert frame is not None, "closed before the end of the history"
            if frame["stream"] == stream:
                seqs.append(frame["seq"])
        assert seqs == list(range(1, count + 1))
    finally:
        for sock in stalled:
            sock.close()


async def test_slow_socket_is_closed_with_4010_while_100_others_keep_up(server, login):
    daphne = server(realtime={"HEARTBEAT_INTERVAL": 25})
    slow_user, slow_cookie = await login("slow")
    _reader, cookie = await login("reader")
    readers = [RecordingClient(daphne.ws_url, cookie=cookie, origin=daphne.url) for _ in range(100)]
    await asyncio.gather(*(r.start() for r in readers))
    slow = RawSocket(daphne.port, slow_cookie, rcvbuf=4096)
    await asyncio.sleep(0.5)
    before = rss(daphne.proc.pid)
    env = daphne.env_extra
    try:
        flood = publish(env, f"user:{slow_user.pk}", 350, pad=60_000)  # 21 MB at the slow socket
        ticks = publish(env, "broadcast", 200, delay=0.02)
        peak = await sync_to_async(peak_rss)(daphne.proc.pid, 3)
        await sync_to_async(finish)(flood + ticks)
        assert all(await asyncio.gather(*(r.wait_for("broadcast", 200, 30) for r in readers)))
        peak = max(peak, rss(daphne.proc.pid))

        latencies = sorted(
            arrival - _epoch(frame["ts"])
            for r in readers
            for frame, arrival in zip(r.frames, r.arrivals)
            if frame["stream"] == "broadcast"
        )
        p99 = latencies[int(len(latencies) * 0.99)]
        growth = peak - before
        print(
            f"\n[slow socket] 21 MB to a socket that does not read: closed with 4010, RSS +{growth / MiB:.1f} MiB; "
            f"100 readers: p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        assert "closing it with 4010" in daphne.output()
        assert slow.close_code_within(10) in (4010, None)  # the close frame waits behind unread data
        assert growth <= CAP + 16 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        assert p99 < 0.2, f"p99 {p99 * 1000:.0f} ms"
        for r in readers:
            assert r.seqs("broadcast") == list(range(1, 201))
    finally:
        slow.close()
        await asyncio.gather(*(r.stop() for r in readers))


def _epoch(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def test_under_uvicorn_a_slow_socket_costs_at_most_the_cap(server, login):
    """The plain ASGI path: uvicorn makes send() wait, so the backlog is realtime's queue, capped."""
    daphne = server(kind=UvicornServer, name="uvicorn")
    slow_user, slow_cookie = await login("slow")
    _reader, cookie = await login("reader")
    reader = await RecordingClient(daphne.ws_url, cookie=cookie, origin=daphne.url).start()
    slow = RawSocket(daphne.port, slow_cookie, rcvbuf=4096)
    await asyncio.sleep(0.5)
    before = rss(daphne.proc.pid)
    try:
        flood = publish(daphne.env_extra, f"user:{slow_user.pk}", 350, pad=60_000)
        ticks = publish(daphne.env_extra, "broadcast", 50, delay=0.02)
        peak = await sync_to_async(peak_rss)(daphne.proc.pid, 3)
        await sync_to_async(finish)(flood + ticks)
        assert await reader.wait_for("broadcast", 50, 20)
        peak = max(peak, rss(daphne.proc.pid))
        growth = peak - before
        print(f"\n[slow socket, uvicorn] 21 MB to a socket that does not read: RSS +{growth / MiB:.1f} MiB")
        assert "closing it with 4010" in daphne.output()
        assert growth <= CAP + 16 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        assert reader.seqs("broadcast") == list(range(1, 51))
    finally:
        slow.close()
        await reader.stop()
