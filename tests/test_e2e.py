"""End to end with real processes: daphne servers, a private Redis, separate publishers.

These are the cases the Channels tutorial architecture fails: a burst larger
than channels-redis's capacity, and a Redis restart under load.
"""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from tests.procs import finish, publish
from tests.wsclient import RecordingClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def login_cookie():
    def make(username="alice"):
        user = User.objects.create_user(username)
        client = Client()
        client.force_login(user)
        return user, f"sessionid={client.cookies['sessionid'].value}"

    return make


@pytest.fixture
def cluster(daphne_factory, redis_url, layer_prefix):
    """Start n daphne processes on one Redis; returns them and the env publishers need."""

    def start(n=2, redis=None, extra=None):
        env = {"REDIS_URL": redis or redis_url, "REALTIME_REDIS_PREFIX": layer_prefix, **(extra or {})}
        return [daphne_factory(env=env, name=f"daphne{i}") for i in range(n)], env

    return start


async def start_clients(servers, cookie, count, **kwargs):
    clients = []
    for i in range(count):
        server = servers[i % len(servers)]
        clients.append(RecordingClient(server.ws_url, cookie=cookie, origin=server.url, **kwargs))
    await asyncio.gather(*(c.start() for c in clients))
    return clients


async def received_everything(clients, stream, end, timeout=60):
    """Wait for messages 1..``end`` of ``stream`` at every client; assert each has them once, in order.

    Their payloads are ``{"n": 0..end-1}``, as tests/publisher.py sends them.
    """
    done = await asyncio.gather(*(c.wait_for(stream, end, timeout) for c in clients))
    counts = sorted(len(c.seqs(stream)) for c in clients)
    assert all(done), f"per-client counts (min/max): {counts[0]}/{counts[-1]}"
    for client in clients:
        assert client.seqs(stream) == list(range(1, end + 1)), "gap, duplicate or reordering"
        assert [p["n"] for p in client.payloads(stream)] == list(range(end))


async def test_two_servers_one_redis_publisher_in_a_third_process(cluster, login_cookie):
    servers, env = cluster(2)
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 6)
    await sync_to_async(finish)(publish(env, "broadcast", 50))
    try:
        await received_everything(clients, "broadcast", 50, 30)
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_burst_of_2000_to_200_clients_loses_nothing(cluster, login_cookie, capsys):
    servers, env = cluster(2)
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 200)
    started = time.monotonic()
    children = publish(env, "broadcast", 2000, procs=4)
    try:
        await sync_to_async(finish)(children)
        published = time.monotonic() - started
        done = await asyncio.gather(*(c.wait_for("broadcast", 2000, 120) for c in clients))
        elapsed = time.monotonic() - started
        counts = sorted(len(c.seqs("broadcast")) for c in clients)
        assert all(done), f"per-client counts (min/max): {counts[0]}/{counts[-1]}"
        for client in clients:
            assert client.seqs("broadcast") == list(range(1, 2001)), "gap, duplicate or reordering"
        with capsys.disabled():
            print(
                f"\n[burst] 2000 messages x 200 clients over 2 servers: every client got 2000/2000, "
                f"0 duplicates; published in {published:.1f}s, all delivered in {elapsed:.1f}s "
                f"({400_000 / elapsed:,.0f} deliveries/s)"
            )
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_redis_restart_under_load_loses_nothing(cluster, login_cookie, redis_server):
    servers, env = cluster(2, redis=redis_server.url)
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 20, ping_every=1.0)
    try:
        finish_first = publish(env, "broadcast", 100, procs=1)
        await sync_to_async(finish)(finish_first)
        redis_server.stop()
        # Published while Redis is down: stored, the push fails and is logged.
        await sync_to_async(finish)(publish(env, "broadcast", 100, start=100))
        redis_server.start()
        await sync_to_async(finish)(publish(env, "broadcast", 100, start=200))
        await received_everything(clients, "broadcast", 300)
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_idle_connection_survives_15s_on_redis(cluster, login_cookie):
    servers, env = cluster(1)
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 3)
    try:
        await asyncio.sleep(15)
        await sync_to_async(finish)(publish(env, "broadcast", 1))
        assert all(await asyncio.gather(*(c.wait_for("broadcast", 1, 5) for c in clients)))
        assert all(c.connects == 1 for c in clients), [c.closes for c in clients]
        # redis-py 8's 5 s socket_timeout would have broken the hub's blocking read.
        assert "receive failed" not in servers[0].output()
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_graceful_restart_says_going_away_and_loses_nothing(cluster, login_cookie, daphne_factory, redis_url, layer_prefix):
    servers, env = cluster(1)
    server = servers[0]
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 5)
    try:
        await sync_to_async(finish)(publish(env, "broadcast", 10))
        assert all(await asyncio.gather(*(c.wait_for("broadcast", 10, 20) for c in clients)))
        await sync_to_async(server.stop)()  # SIGTERM
        assert all(c.closes and c.closes[0] == 1001 for c in clients), [c.closes for c in clients]
        await sync_to_async(finish)(publish(env, "broadcast", 10, start=10))
        daphne_factory(env=env, name="restarted", port=server.port)
        assert all(await asyncio.gather(*(c.wait_for("broadcast", 20, 30) for c in clients)))
        for client in clients:
            assert client.seqs("broadcast") == list(range(1, 21))
            assert client.connects == 2, client.closes
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
