"""One user, or one anonymous address, cannot hold more sockets than the limit.

Before: one user opened 2,000 sockets (29.5 kB each) on one process.
"""

import asyncio
import json

import pytest
import websockets
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


async def open_socket(server, cookie=None, headers=None):
    """Connect; return ``(ws, first frame)``: a welcome, or the refusal's error frame."""
    sent = {**({"Cookie": cookie} if cookie else {}), **(headers or {})}
    ws = await connect(server.ws_url, origin=server.url, additional_headers=sent, ping_interval=None)
    return ws, json.loads(await ws.recv())


async def refused(server, cookie=None, headers=None):
    """True if the server refuses this socket as documented: error frame, then 4029."""
    ws, first = await open_socket(server, cookie, headers)
    assert first["type"] == "error" and first["payload"]["code"] == "too_many_connections", first
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4029
    return True


async def test_a_user_over_the_limit_is_refused_across_processes(server, login):
    limit = {"MAX_CONNECTIONS_PER_USER": 3}
    first, second = server(realtime=limit, name="a"), server(realtime=limit, name="b")
    _user, cookie = await login()
    _other, other_cookie = await login("bob")
    held = []
    try:
        for target in (first, second, first):
            ws, welcome = await open_socket(target, cookie)
            assert welcome["type"] == "welcome"
            held.append(ws)
        # The fourth is refused on either process: the count is shared through Redis.
        assert await refused(first, cookie)
        assert await refused(second, cookie)
        # Another user is not affected.
        ws, welcome = await open_socket(second, other_cookie)
        assert welcome["type"] == "welcome"
        held.append(ws)
        # Closing one frees its slot.
        await held.pop(0).close()
        await asyncio.sleep(0.3)
        ws, welcome = await open_socket(second, cookie)
        assert welcome["type"] == "welcome"
        held.append(ws)
    finally:
        await asyncio.gather(*(ws.close() for ws in held))


async def test_anonymous_sockets_are_limited_per_address(server):
    daphne = server(
        realtime={"ALLOW_ANONYMOUS": True, "MAX_CONNECTIONS_PER_IP": 2, "TRUSTED_PROXIES": ["127.0.0.1"]}
    )
    held = []
    try:
        for _ in range(2):
            ws, welcome = await open_socket(daphne)
            assert welcome["type"] == "welcome"
            held.append(ws)
        assert await refused(daphne)
        # Behind the trusted proxy (127.0.0.1 here), X-Forwarded-For names the client.
        for _ in range(2):
            ws, welcome = await open_socket(daphne, headers={"X-Forwarded-For": "203.0.113.7"})
            assert welcome["type"] == "welcome"
            held.append(ws)
        assert await refused(daphne, headers={"X-Forwarded-For": "203.0.113.7"})
        # A forged hop left of the client's real address changes nothing.
        assert await refused(daphne, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    finally:
        await asyncio.gather(*(ws.close() for ws in held))
