"""The daphne fast path fails closed: switched off, or broken mid-run, nothing is lost or delayed."""

import asyncio
import time

import pytest

from tests.procs import finish, publish
from tests.security.conftest import RawSocket
from tests.wsclient import RecordingClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


async def deliver(daphne, cookie, count=50):
    clients = [RecordingClient(daphne.ws_url, cookie=cookie, origin=daphne.url) for _ in range(3)]
    await asyncio.gather(*(c.start() for c in clients))
    try:
        started = time.monotonic()
        await asyncio.to_thread(finish, publish(daphne.env_extra, "broadcast", count))
        assert all(await asyncio.gather(*(c.wait_for("broadcast", count, 10) for c in clients)))
        for client in clients:
            assert client.seqs("broadcast") == list(range(1, count + 1))
            assert client.connects == 1
        return time.monotonic() - started
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_a_fast_path_failure_falls_back_without_loss_or_delay(daphne_factory, server, login):
    _user, cookie = await login()
    daphne = server()
    daphne.stop()
    broken = daphne_factory(env=daphne.env_extra, name="broken", app="tests.security.asgi_failing_fast_path:application")
    broken.env_extra = daphne.env_extra
    took = await deliver(broken, cookie)
    output = broken.output()
    assert output.count("daphne fast path failed") == 1, output[-3000:]
    assert "daphne fast path switched off" in output
    assert took < 10


async def test_switched_off_the_asgi_path_serves_and_checks_frame_size(server, login):
    _user, cookie = await login()
    daphne = server(realtime={"DAPHNE_FAST_PATH": False})
    await deliver(daphne, cookie)
    sock = RawSocket(daphne.port, cookie)
    assert sock.recv_json()["type"] == "welcome"
    sock.send_frame(b"x" * 70_000)
    assert sock.close_code_within(5) == 4009  # realtime's own check: autobahn was left alone


async def test_frames_over_the_limit_get_1009_before_they_are_read(server, login):
    _user, cookie = await login()
    daphne = server()
    sock = RawSocket(daphne.port, cookie)
    assert sock.recv_json()["type"] == "welcome"
    # Announce 100 MiB, send 64 KiB of it: refused on the header, not after buffering.
    sock.sock.sendall(bytes([0x81, 0xFF]) + (100 * 1024 * 1024).to_bytes(8, "big") + b"\0\0\0\0" + b"x" * 65536)
    assert sock.close_code_within(5) == 1009
