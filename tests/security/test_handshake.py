"""Slowloris: connections that dribble their request headers are dropped after
HANDSHAKE_TIMEOUT, while new clients keep connecting at once.

Before: one handshake byte every 10 s kept a connection open for good
(twisted's idle timeout restarts with every byte; daphne's timeouts start
only once the headers are complete).
"""

import asyncio
import json
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

TIMEOUT = 3
REQUEST = b"GET /ws/realtime/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


def dribble(port, seconds, prefix=b""):
    """Send ``prefix``, then one header byte a second; return when the server hung up (or None)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(1)
    started = time.monotonic()
    try:
        if prefix:
            sock.sendall(prefix)
            response = b""
            while b"\r\n\r\n" not in response:
                response += sock.recv(65536)
            started = time.monotonic()  # the deadline starts again after a response
        for byte in REQUEST * 10:
            if time.monotonic() - started > seconds:
                return None
            sock.send(bytes([byte]))
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except socket.timeout:
                pass
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - started
    finally:
        sock.close()
    return None


async def time_to_welcome(server, cookie):
    started = time.monotonic()
    async with connect(server.ws_url, origin=server.url, additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        return time.monotonic() - started


async def test_dribbled_headers_are_dropped_and_others_connect_at_once(server, login):
    daphne = server(realtime={"HANDSHAKE_TIMEOUT": TIMEOUT})
    _user, cookie = await login()
    await time_to_welcome(daphne, cookie)  # warm up
    loop = asyncio.get_running_loop()
    threads = ThreadPoolExecutor(41)
    keep_alive = b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    slow = [loop.run_in_executor(threads, dribble, daphne.port, TIMEOUT + 10) for _ in range(40)]
    slow.append(loop.run_in_executor(threads, dribble, daphne.port, TIMEOUT + 10, keep_alive))
    await asyncio.sleep(1)
    waits = [await time_to_welcome(daphne, cookie) for _ in range(10)]
    # An upgraded socket is not a handshake: it outlives the deadline.
    async with connect(daphne.ws_url, origin=daphne.url, additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        dropped_after = await asyncio.gather(*slow)
        await ws.send('{"type":"ping","id":1}')
        assert json.loads(await ws.recv())["type"] == "pong"
    print(
        f"\n[slowloris] 41 dribbling connections dropped after {min(dropped_after):.1f}-{max(dropped_after):.1f} s "
        f"(HANDSHAKE_TIMEOUT {TIMEOUT} s); new clients meanwhile: median {statistics.median(waits) * 1000:.0f} ms "
        f"to welcome, slowest {max(waits) * 1000:.0f} ms"
    )
    threads.shutdown()
    assert all(d is not None and d <= TIMEOUT + 1.5 for d in dropped_after), dropped_after
    assert statistics.median(waits) < 0.1, waits
