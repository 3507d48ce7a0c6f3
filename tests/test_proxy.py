"""The proxy setup of docs/deployment.md, run for real: nginx in front of two daphne processes.

nginx runs the guide's ```nginx block (tests/nginx.py substitutes only the
ports and wraps it in a minimal nginx.conf), so the guide cannot drift from
what is tested. The processes share a private Redis and the test database, as
in tests/test_e2e.py; messages come from a separate publishing process.
"""

import asyncio
import http.client
import json
import re
import time

import pytest
import websockets
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect

from realtime.conf import DEFAULTS
from tests.nginx import NginxServer, backend_port, guide_site
from tests.procs import finish, publish
from tests.test_e2e import cluster, login_cookie, received_everything  # noqa: F401  (fixtures)
from tests.wsclient import RecordingClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

#: What the guide tells deployments behind nginx to set.
BEHIND_NGINX = {"TRUSTED_PROXIES": ["127.0.0.1"]}


class ProxiedClient(RecordingClient):
    """A recording client that also notes which backend nginx chose for each connection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The backend port of every connection, in order; the last one serves the client now.
        self.backends = []

    def _record(self, frame):
        if frame["type"] == "welcome":
            self.backends.append(backend_port(self._ws.response.headers))
        super()._record(frame)


@pytest.fixture
def proxy(tmp_path):
    """Start nginx with the guide's configuration in front of the given daphne servers."""
    started = []

    def start(servers, overrides=None):
        server = NginxServer(tmp_path, [f"127.0.0.1:{s.port}" for s in servers], overrides).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def proxied_env(**realtime):
    return {"REALTIME_JSON": json.dumps({**BEHIND_NGINX, **realtime})}


async def open_clients(nginx, cookie, count, **kwargs):
    clients = [ProxiedClient(nginx.ws_url, cookie=cookie, origin=nginx.url, **kwargs) for _ in range(count)]
    await asyncio.gather(*(c.start() for c in clients))
    return clients


def count_by_backend(clients):
    counts = {}
    for client in clients:
        counts[client.backends[-1]] = counts.get(client.backends[-1], 0) + 1
    return counts


async def test_restart_behind_nginx_loses_nothing_and_the_restarted_backend_serves_again(
    cluster, login_cookie, daphne_factory, proxy, capsys  # noqa: F811
):
    total, tail = 600, 50
    servers, env = cluster(2, extra=proxied_env())
    restarting, staying = servers
    nginx = proxy(servers)
    _, cookie = await sync_to_async(login_cookie)()
    clients = await open_clients(nginx, cookie, 200)
    newcomers = []
    try:
        before = count_by_backend(clients)
        assert set(before) == {restarting.port, staying.port} and min(before.values()) >= 20, before

        publisher = publish(env, "broadcast", total, delay=0.02)
        started = time.monotonic()
        while min(len(c.seqs("broadcast")) for c in clients) < 50:
            assert time.monotonic() - started < 20, "the publisher did not get going"
            await asyncio.sleep(0.05)

        moved = [c for c in clients if c.backends[-1] == restarting.port]
        # (A client may have retried its first connect on a loaded machine.)
        connects, closes = {c: c.connects for c in clients}, {c: len(c.closes) for c in clients}
        sigterm = time.monotonic()
        await sync_to_async(restarting.stop)()  # SIGTERM: realtime closes its sockets with 1001
        while any(len(c.closes) == closes[c] for c in moved) and time.monotonic() - sigterm < 10:
            await asyncio.sleep(0.05)  # the close frames pass through nginx
        codes = {str(c.closes[closes[c]:][:1]) for c in moved}
        assert codes == {"[1001]"}, codes
        restarted = await sync_to_async(daphne_factory)(env=env, name="restarted", port=restarting.port)
        back = time.monotonic()
        # The closed sockets reconnected while it was down. New ones (new tabs,
        # page loads) fill it: least_conn, and max_fails=0 so nginx does not
        # keep avoiding it for the connects it refused.
        newcomers = await open_clients(nginx, cookie, 40)
        filled = time.monotonic()
        after = count_by_backend(clients + newcomers)

        await sync_to_async(finish)(publisher)
        await sync_to_async(finish)(publish(env, "broadcast", tail, start=total))
        end = total + tail
        await received_everything(clients, "broadcast", end)
        for client in newcomers:
            await client.wait_for("broadcast", 1, 10)
            seqs = client.seqs("broadcast")
            assert seqs and seqs == list(range(seqs[0], end + 1)), "a client that joined late missed or repeated"

        assert all(c.connects == connects[c] + (c in moved) for c in clients), "a client reconnected more than once"
        assert restarting.port in after and staying.port in after, after
        assert all(c.backends == [restarting.port] for c in newcomers), (
            count_by_backend(newcomers), nginx.errors(), restarted.output()
        )

        moved_to = count_by_backend(moved)
        with capsys.disabled():
            print(
                f"\n[proxy] 200 clients via nginx, {end} messages, one backend restarted with SIGTERM: "
                f"0 lost, 0 duplicated, in order. Before: {before}; the {len(moved)} closed with 1001 "
                f"reconnected to {moved_to}; the restarted one listened {back - sigterm:.1f}s after SIGTERM "
                f"and took all {len(newcomers)} new clients ({filled - back:.1f}s): {after}; "
                f"{time.monotonic() - started:.1f}s from the first publish"
            )
    finally:
        await asyncio.gather(*(c.stop() for c in clients + newcomers))


async def open_socket(nginx, source, forwarded=None):
    """An anonymous socket from loopback address ``source``; its first frame."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    ws = await connect(
        nginx.ws_url, origin=nginx.url, additional_headers=headers, local_addr=(source, 0), open_timeout=10
    )
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, frame


def publish_with_bad_token(nginx, source):
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10, source_address=(source, 0))
    try:
        conn.request(
            "POST", "/realtime/api/publish", body=b"{}",
            headers={"Authorization": "Bearer not-a-token", "Content-Type": "application/json"},
        )
        return conn.getresponse().status
    finally:
        conn.close()


async def test_realtime_sees_the_client_address_through_nginx(cluster, proxy):  # noqa: F811
    servers, env = cluster(2, extra=proxied_env(ALLOW_ANONYMOUS=True, MAX_CONNECTIONS_PER_IP=2, PUBLISH_AUTH_FAILURE_LIMIT=3))
    nginx = proxy(servers)
    sockets = []
    try:
        # WebSocket (location /ws/): anonymous sockets are counted per client address,
        # here 127.0.0.2 and 127.0.0.3 although every socket reaches daphne from nginx's 127.0.0.1.
        for source, forwarded, expected in [
            ("127.0.0.2", None, "welcome"),
            ("127.0.0.2", None, "welcome"),
            ("127.0.0.2", None, "too_many_connections"),
            # A forged X-Forwarded-For hop stays left of the one nginx appends: ignored.
            ("127.0.0.3", "127.0.0.2", "welcome"),
            ("127.0.0.3", None, "welcome"),
            ("127.0.0.3", None, "too_many_connections"),
        ]:
            ws, frame = await open_socket(nginx, source, forwarded)
            sockets.append(ws)
            got = frame["payload"]["code"] if frame["type"] == "error" else frame["type"]
            assert got == expected, (source, forwarded, frame)
            if expected != "welcome":
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 4029

        # HTTP (location /): the publish API's failed-token limit is per client address too.
        statuses = []
        while 429 not in statuses:
            assert len(statuses) < 20, statuses
            statuses.append(await asyncio.to_thread(publish_with_bad_token, nginx, "127.0.0.2"))
        assert set(statuses) == {401, 429}, statuses
        assert await asyncio.to_thread(publish_with_bad_token, nginx, "127.0.0.3") == 401, (
            "an address that never failed was blocked: realtime saw nginx's address, not the client's"
        )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


def seconds(directive, site):
    """The value in seconds of ``directive`` in the guide's ``location /ws/`` block."""
    location = re.search(r"location /ws/ \{(.*?)\}", site, re.S)[1]
    return int(re.search(rf"^\s*{directive}\s+(\d+)s;", location, re.M)[1])


async def test_the_heartbeat_keeps_sockets_open_past_proxy_read_timeout(cluster, login_cookie, proxy):  # noqa: F811
    heartbeat = DEFAULTS["HEARTBEAT_INTERVAL"]
    read_timeout = seconds("proxy_read_timeout", guide_site())
    assert read_timeout > 2 * heartbeat, (read_timeout, heartbeat)
    # The same ratio, 40 times faster: an idle socket is cut at proxy_read_timeout,
    # one that pings on the heartbeat is not.
    scale = 40
    servers, env = cluster(2, extra=proxied_env())
    nginx = proxy(servers, overrides={"proxy_read_timeout": f"{read_timeout * 1000 // scale}ms"})
    _, cookie = await sync_to_async(login_cookie)()
    pinging = await open_clients(nginx, cookie, 2, ping_every=heartbeat / scale)
    silent = await open_clients(nginx, cookie, 2)
    try:
        await asyncio.sleep(1.5 * read_timeout / scale)
        assert all(c.connects == 1 and not c.closes for c in pinging), [c.closes for c in pinging]
        assert all(c.closes and c.closes[0] == 1006 for c in silent), [c.closes for c in silent]
        await sync_to_async(finish)(publish(env, "broadcast", 3))
        assert all(await asyncio.gather(*(c.wait_for("broadcast", 3, 10) for c in pinging)))
    finally:
        await asyncio.gather(*(c.stop() for c in pinging + silent))

