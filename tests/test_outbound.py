"""Outputs: frames in order, a byte cap, draining, and the fast path's fallback (pure logic)."""

import asyncio

import pytest

from realtime.outbound import AsgiOutput, DaphneOutput, Outgoing
from realtime.servers import daphne


class SlowServer:
    """An ASGI ``send`` that holds every frame until released, like a full socket."""

    def __init__(self):
        self.sent = []
        self.gate = asyncio.Event()

    async def send(self, message):
        await self.gate.wait()
        self.sent.append(message)


async def test_frames_go_out_in_order_and_the_close_after_them():
    server = SlowServer()
    server.gate.set()
    out = AsgiOutput(server.send, limit=1000)
    for n in range(3):
        assert out.write(Outgoing(f"m{n}"))
    await out.close(4010)
    await asyncio.sleep(0)
    await out.drained(0)
    assert server.sent == [
        {"type": "websocket.send", "text": "m0"},
        {"type": "websocket.send", "text": "m1"},
        {"type": "websocket.send", "text": "m2"},
        {"type": "websocket.close", "code": 4010},
    ]
    assert out.write(Outgoing("after the close")) is True and len(server.sent) == 4


async def test_a_write_over_the_cap_is_refused_and_drained_waits():
    server = SlowServer()
    out = AsgiOutput(server.send, limit=10)
    assert out.write(Outgoing("x" * 8))
    assert out.write(Outgoing("y" * 3)) is False  # 11 bytes would wait
    assert out.write(Outgoing("é")) is True  # 2 bytes of UTF-8: 10
    assert out.buffered == 10
    waiter = asyncio.ensure_future(out.drained(2))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    server.gate.set()
    await asyncio.wait_for(waiter, 1)
    assert out.buffered <= 2


async def test_one_frame_larger_than_the_cap_still_goes_out_alone():
    server = SlowServer()
    server.gate.set()
    out = AsgiOutput(server.send, limit=10)
    assert out.write(Outgoing("z" * 50))
    await out.drained(0)
    assert server.sent[0]["text"] == "z" * 50


async def test_discard_drops_what_waits():
    server = SlowServer()
    out = AsgiOutput(server.send, limit=100)
    out.write(Outgoing("a"))
    out.write(Outgoing("b"))
    out.discard()
    server.gate.set()
    await asyncio.sleep(0.01)
    assert out.buffered == 0 and len(server.sent) <= 1


class RenamedSocket:
    """A daphne socket after an upgrade renamed what the fast path reads."""

    state = STATE_OPEN = 3


async def test_a_failing_fast_path_sends_the_frame_the_plain_way(monkeypatch, caplog):
    monkeypatch.setattr(daphne, "PROBLEM", None)
    server = SlowServer()
    server.gate.set()
    out = DaphneOutput(RenamedSocket(), server.send, limit=1000)
    assert out.write(Outgoing("kept"))
    assert out.write(Outgoing("and the next"))
    await out.drained(0)
    assert [m["text"] for m in server.sent] == ["kept", "and the next"]
    assert daphne.PROBLEM == "an exception while writing a frame"
    assert caplog.text.count("daphne fast path failed") == 1


@pytest.mark.parametrize("text", ["plain", "ünïcødé 😀"])
def test_outgoing_sizes_are_bytes_of_utf8(text):
    assert Outgoing(text).size == len(text.encode("utf-8"))


async def test_a_close_after_discard_does_not_wait_behind_a_stuck_send():
    sent = []

    async def stuck_on_text(message):
        if message["type"] == "websocket.send":
            await asyncio.Event().wait()  # a client that never reads
        sent.append(message)

    out = AsgiOutput(stuck_on_text, limit=10)
    out.write(Outgoing("stuck"))
    await asyncio.sleep(0)
    out.discard()
    await asyncio.wait_for(out.close(4010), 1)
    assert sent == [{"type": "websocket.close", "code": 4010}]
