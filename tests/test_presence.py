"""Presence: one behaviour suite run against each backend, auto-selection, and an end-to-end crash test."""

import asyncio
import json
import time
import types
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client

from realtime import presence
from realtime.exceptions import RealtimeConfigError
from realtime.presence import InMemoryPresence, RedisPresence


class FakeUser:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


class FakeConsumer:
    def __init__(self, user, streams):
        self.connection_id = uuid.uuid4().hex
        self.user = user
        self.streams = list(streams)


@pytest.fixture
def clock(monkeypatch):
    fake = types.SimpleNamespace(now=1_000_000.0)
    fake.time = lambda: fake.now
    monkeypatch.setattr(presence, "time", fake)
    return fake


class PresenceBehaviour:
    """What every backend must do; subclasses provide ``backend``."""

    @pytest.fixture
    def backend(self):
        raise NotImplementedError

    async def test_connect_and_query(self, backend, clock):
        alice, bob = FakeUser(1), FakeUser(2)
        a1 = FakeConsumer(alice, ["broadcast", "user:1"])
        a2 = FakeConsumer(alice, ["broadcast", "user:1", "orders"])
        b1 = FakeConsumer(bob, ["broadcast", "user:2", "orders"])
        anon = FakeConsumer(AnonymousUser(), ["broadcast"])
        for consumer in (a1, a2, b1, anon):
            await backend.connected(consumer)
        assert backend.online_users() == [1, 2]
        assert backend.online_users("orders") == [1, 2]
        assert backend.online_users("user:1") == [1]
        assert backend.online_users("nothing") == []
        assert (backend.connections(alice), backend.connections(2), backend.connections(3)) == (2, 1, 0)
        assert backend.is_online(alice) and backend.is_online(2) and not backend.is_online(3)
        assert backend.stream_counts() == {
            "broadcast": {"users": 2, "connections": 4},
            "orders": {"users": 2, "connections": 2},
            "user:1": {"users": 1, "connections": 2},
            "user:2": {"users": 1, "connections": 1},
        }

    async def test_disconnect_removes_only_that_connection(self, backend, clock):
        alice = FakeUser(1)
        first, second = FakeConsumer(alice, ["broadcast"]), FakeConsumer(alice, ["broadcast", "orders"])
        await backend.connected(first)
        await backend.connected(second)
        await backend.disconnected(second)
        assert backend.connections(alice) == 1
        assert backend.online_users("orders") == []
        assert backend.online_users() == [1]
        await backend.disconnected(first)
        assert backend.online_users() == [] and not backend.is_online(alice)
        assert backend.stream_counts() == {}

    async def test_entries_expire_unless_touched(self, backend, clock):
        alice, bob = FakeUser(1), FakeUser(2)
        kept, crashed = FakeConsumer(alice, ["broadcast"]), FakeConsumer(bob, ["broadcast"])
        await backend.connected(kept)
        await backend.connected(crashed)
        clock.now += backend.ttl - 1
        await backend.touch(kept)
        assert backend.online_users() == [1, 2]
        clock.now += 2
        assert backend.online_users() == [1]
        assert backend.online_users("broadcast") == [1]
        assert not backend.is_online(bob)
        assert backend.stream_counts() == {"broadcast": {"users": 1, "connections": 1}}
        clock.now += backend.ttl
        assert backend.online_users() == [] and backend.stream_counts() == {}

    async def test_touch_follows_subscriptions(self, backend, clock):
        consumer = FakeConsumer(FakeUser(7), ["broadcast", "orders"])
        await backend.connected(consumer)
        consumer.streams = ["broadcast", "project:1"]
        await backend.touch(consumer)
        assert backend.online_users("orders") == []
        assert backend.online_users("project:1") == [7]
        await backend.disconnected(consumer)
        assert backend.online_users("project:1") == []

    async def test_many_sockets_at_once(self, backend, clock):
        consumers = [FakeConsumer(FakeUser(i % 50), ["broadcast", f"user:{i % 50}"]) for i in range(400)]
        await asyncio.gather(*(backend.connected(c) for c in consumers))
        assert backend.online_users() == list(range(50))
        assert backend.stream_counts()["broadcast"] == {"users": 50, "connections": 400}
        await asyncio.gather(*(backend.disconnected(c) for c in consumers))
        assert backend.online_users() == [] and backend.stream_counts() == {}


class TestInMemoryPresence(PresenceBehaviour):
    @pytest.fixture
    def backend(self):
        return InMemoryPresence(ttl=30)

    def test_not_shared(self, backend):
        assert backend.shared is False


class TestRedisPresence(PresenceBehaviour):
    @pytest.fixture
    def backend(self, redis_url, layer_prefix):
        prefix = f"{layer_prefix}:presence:"
        yield RedisPresence(ttl=30, url=redis_url, prefix=prefix)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)

    async def test_keys_stay_under_the_prefix_and_expire(self, backend, redis_url, clock):
        other = redis.Redis.from_url(redis_url, decode_responses=True)
        other.set("unrelated-key", "kept")
        await backend.connected(FakeConsumer(FakeUser(1), ["broadcast"]))
        keys = set(other.scan_iter(match="*"))
        mine = {k for k in keys if k.startswith(backend.prefix)}
        assert mine == {backend.prefix + k for k in ("all", "s:broadcast", "streams", "u:1")}
        assert all(0 < other.ttl(k) <= 31 for k in mine)
        assert other.get("unrelated-key") == "kept"
        other.delete("unrelated-key")

    def test_shared_and_needs_url(self, backend):
        assert backend.shared is True
        with pytest.raises(RealtimeConfigError, match=r'REALTIME\["PRESENCE"\]\["URL"\]'):
            RedisPresence(ttl=30)


# Choosing the backend ------------------------------------------------------


def test_default_is_in_memory_with_the_in_memory_layer(settings):
    settings.REALTIME = {}
    backend = presence.get_backend()
    assert type(backend) is InMemoryPresence and backend.ttl == 60
    assert presence.get_backend() is backend


def test_default_is_redis_with_a_redis_layer(redis_layer_settings, redis_url, layer_prefix):
    redis_layer_settings.REALTIME = {"PRESENCE": {"TTL": 5}}
    backend = presence.get_backend()
    assert type(backend) is RedisPresence
    assert (backend.url, backend.prefix, backend.ttl) == (redis_url, f"{layer_prefix}:realtime:presence:", 5)


def test_explicit_backend_and_options(settings):
    settings.REALTIME = {
        "PRESENCE": {
            "BACKEND": "realtime.presence.RedisPresence",
            "URL": "redis://127.0.0.1:1/0",
            "PREFIX": "x:",
            "TTL": 9,
        }
    }
    backend = presence.get_backend()
    assert (type(backend), backend.url, backend.prefix, backend.ttl) == (
        RedisPresence,
        "redis://127.0.0.1:1/0",
        "x:",
        9,
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ({"TTL": 0}, "TTL"),
        ({"TTL": "60"}, "TTL"),
        ({"URL": ""}, "URL"),
        ({"HOST": "x"}, "Unknown key"),
        ([], "must be a dict"),
    ],
)
def test_invalid_presence_settings(settings, value, message):
    settings.REALTIME = {"PRESENCE": value}
    with pytest.raises(RealtimeConfigError, match=message):
        presence.get_backend()


def test_unimportable_backend(settings):
    settings.REALTIME = {"PRESENCE": {"BACKEND": "nowhere.Presence"}}
    with pytest.raises(RealtimeConfigError, match="cannot be imported"):
        presence.get_backend()


def test_module_api_delegates_to_the_backend(settings):
    settings.REALTIME = {}
    backend = presence.get_backend()
    asyncio.run(presence.connected(FakeConsumer(FakeUser(4), ["broadcast"])))
    assert presence.online_users() == [4] == backend.online_users()
    assert presence.is_online(4) and presence.connections(4) == 1
    assert presence.stream_counts() == {"broadcast": {"users": 1, "connections": 1}}


# The consumer calls the hooks ----------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_consumer_records_and_forgets_its_connection(settings):
    from realtime.testing import connect

    settings.REALTIME = {"SWEEP_DELAY": 0.2}
    alice = await sync_to_async(User.objects.create_user)("alice")
    communicator, _welcome = await connect(alice)
    assert presence.online_users() == [alice.pk]
    assert presence.online_users(f"user:{alice.pk}") == [alice.pk]
    await communicator.send_json_to({"type": "ping"})
    assert json.loads(await communicator.receive_from(timeout=5))["type"] == "pong"
    assert presence.connections(alice) == 1
    await communicator.disconnect()
    assert presence.online_users() == []


# End to end: two servers on one Redis, one killed --------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
async def test_two_servers_share_presence_and_a_killed_one_expires(
    daphne_factory, redis_layer_settings, redis_url, layer_prefix
):
    import websockets

    ttl, heartbeat = 3, 1
    env = {
        "REDIS_URL": redis_url,
        "REALTIME_REDIS_PREFIX": layer_prefix,
        "REALTIME_JSON": json.dumps({"HEARTBEAT_INTERVAL": heartbeat, "PRESENCE": {"TTL": ttl}}),
    }
    servers = [daphne_factory(env=env, name=f"daphne{i}") for i in range(2)]

    def login(name):
        user = User.objects.create_user(name)
        client = Client()
        client.force_login(user)
        return user, f"sessionid={client.cookies['sessionid'].value}"

    (alice, alice_cookie), (bob, bob_cookie), (carol, carol_cookie) = [
        await sync_to_async(login)(name) for name in ("alice", "bob", "carol")
    ]

    async def open_socket(server, cookie):
        ws = await websockets.connect(
            server.ws_url, additional_headers={"Cookie": cookie, "Origin": server.url}, open_timeout=10
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        return ws

    survivor, doomed = servers
    kept = [await open_socket(survivor, alice_cookie), await open_socket(survivor, bob_cookie)]
    lost = [await open_socket(doomed, carol_cookie), await open_socket(doomed, bob_cookie)]

    async def heartbeat_loop(sockets):
        while True:
            for ws in sockets:
                try:
                    await ws.send(json.dumps({"type": "ping"}))
                except websockets.ConnectionClosed:
                    pass
            await asyncio.sleep(heartbeat)

    async def drain(ws):
        try:
            async for _frame in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    tasks = [asyncio.ensure_future(heartbeat_loop(kept + lost))] + [
        asyncio.ensure_future(drain(ws)) for ws in kept + lost
    ]
    try:
        deadline = time.monotonic() + 10
        while await sync_to_async(presence.online_users)() != sorted([alice.pk, bob.pk, carol.pk]):
            assert time.monotonic() < deadline, await sync_to_async(presence.online_users)()
            await asyncio.sleep(0.1)
        assert await sync_to_async(presence.connections)(bob) == 2
        assert presence.get_backend().shared

        await sync_to_async(doomed.kill)()
        killed_at = time.monotonic()

        def state():
            return presence.online_users(), presence.is_online(carol), presence.connections(bob)

        while await sync_to_async(state)() != (sorted([alice.pk, bob.pk]), False, 1):
            assert time.monotonic() - killed_at < ttl + heartbeat + 2, await sync_to_async(state)()
            await asyncio.sleep(0.1)
        # The survivor's clients keep pinging, so they outlive the TTL.
        await asyncio.sleep(ttl + heartbeat)
        assert await sync_to_async(presence.online_users)() == sorted([alice.pk, bob.pk])
    finally:
        for task in tasks:
            task.cancel()
        for ws in kept + lost:
            await ws.close()
