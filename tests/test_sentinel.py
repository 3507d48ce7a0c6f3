"""Redis Sentinel: realtime's three Redis users follow a failover, proven with real processes.

One master, one replica and three sentinels (redis-server processes on free
loopback ports, nothing shared with any other Redis), two daphne processes
configured as the demo is by ``REDIS_SENTINELS``, 50 clients and a steady
publisher in a third process. The master is SIGKILLed (its sockets close) or
frozen with SIGSTOP (a partition: its sockets stay open and nothing answers);
the sentinels promote the replica; every client must end with every message
exactly once, in order, and presence and the cache must follow.
"""

import asyncio
import datetime
import http.client
import json
import re
import signal
import time

import pytest
import redis
from asgiref.sync import sync_to_async
from django.core.cache import caches

from project.settings import redis_host
from realtime import presence
from realtime.conf import DEFAULTS
from realtime.exceptions import RealtimeConfigError
from realtime.presence import RedisPresence
from realtime.sentinel import SentinelPool, master_pool
from tests.procs import ROOT, RedisServer, SentinelServer, finish, publish
from tests.test_e2e import login_cookie, received_everything, start_clients  # noqa: F401  (fixture)

MASTER = "mymaster"


class Sentinels:
    """A master, its replica and three sentinels watching them, all private to one test."""

    def __init__(self, workdir):
        self.master = RedisServer(workdir)
        self.replica = RedisServer(workdir, args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [SentinelServer(workdir, self.master, MASTER) for _ in range(3)]

    def start(self):
        self.master.start()
        self.replica.start()
        _wait(lambda: _info(self.replica.port).get("master_link_status") == "up", "the replica to sync")
        # Started after the replica synced: a sentinel learns of replicas from the master's INFO.
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(self._watching, "every sentinel to see the replica and the two other sentinels")
        return self

    def _watching(self):
        for sentinel in self.sentinels:
            state = redis.Redis("127.0.0.1", sentinel.port, decode_responses=True).sentinel_master(MASTER)
            if state["num-slaves"] != 1 or state["num-other-sentinels"] != 2:
                return False
        return True

    @property
    def host(self):
        """The channels-redis host entry for this master."""
        return {"sentinels": [("127.0.0.1", s.port) for s in self.sentinels], "master_name": MASTER}

    @property
    def env(self):
        """What the demo's settings (and tests/e2e_settings.py) read."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
        }

    def master_port(self):
        """The master's port as the first sentinel names it."""
        return int(redis.Redis("127.0.0.1", self.sentinels[0].port).sentinel_get_master_addr_by_name(MASTER)[1])

    def stop(self):
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()


def _info(port):
    try:
        return redis.Redis("127.0.0.1", port, decode_responses=True, socket_timeout=1).info("replication")
    except redis.ConnectionError:
        return {}


def _wait(condition, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for {what}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture
def sentinels(tmp_path):
    group = Sentinels(tmp_path)
    try:
        yield group.start()
    finally:
        group.stop()


def readiness(server):
    """``GET /realtime/readyz`` of ``server``: its status code."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/realtime/readyz")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def ready_again(server, killed):
    """Seconds from ``killed`` until ``server``'s readyz turns 200 again, after a 503.

    readyz is 503 while the hub has lost the channel layer (and while the
    layer does not answer a round trip): 200 again means live delivery is back.
    """
    lost = False
    while time.time() - killed < 30:
        status = await asyncio.to_thread(readiness, server)
        if status == 503:
            lost = True
        elif lost:
            return time.time() - killed
        await asyncio.sleep(0.05)
    state = "not ready again" if lost else "never unready"
    pytest.fail(f"{server.url} was {state} 30s after the fault:\n{server.output()}")


def lateness(client, since):
    """The longest time between publishing and arrival of a message published after ``since``."""
    late = 0.0
    for frame, arrived in zip(client.frames, client.arrivals):
        if frame.get("seq") is not None:
            published = datetime.datetime.fromisoformat(frame["ts"].replace("Z", "+00:00")).timestamp()
            if published >= since:
                late = max(late, arrived - published)
    return late


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_failover_under_load_loses_nothing(
    sentinels, daphne_factory, login_cookie, layer_prefix, settings, capsys, fault  # noqa: F811
):
    total, tail, count = 600, 20, 50
    # The default sweep (tests/settings.py shortens it): it is what keeps streams moving meanwhile.
    env = {
        **sentinels.env,
        "REALTIME_REDIS_PREFIX": layer_prefix,
        "REALTIME_JSON": json.dumps({"SWEEP_DELAY": DEFAULTS["SWEEP_DELAY"]}),
    }
    servers = [daphne_factory(env=env, name=f"daphne{i}") for i in range(2)]
    user, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, count)
    newcomer = None
    # The test process reaches the same master the way the demo's cache and presence do.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://sentinel/0",
            "OPTIONS": {"pool_class": "realtime.sentinel.SentinelPool", **sentinels.host},
        }
    }
    settings.REALTIME = {
        **settings.REALTIME, "PRESENCE": {"SENTINEL": sentinels.host, "PREFIX": f"{layer_prefix}:realtime:presence:"}
    }
    cache = caches["default"]
    try:
        await sync_to_async(cache.set)("counter", 1)
        assert all([await asyncio.to_thread(readiness, s) == 200 for s in servers])
        publisher = publish(env, "broadcast", total, delay=0.02)
        started = time.monotonic()
        while min(len(c.seqs("broadcast")) for c in clients) < 50:
            assert time.monotonic() - started < 30, "the publisher did not get going"
            await asyncio.sleep(0.05)

        old = sentinels.master.port
        killed = time.time()
        if fault == "killed":
            sentinels.master.stop()  # SIGKILL: its sockets close
        else:
            # SIGSTOP: a partition. Its sockets stay open and nothing answers on them.
            sentinels.master.proc.send_signal(signal.SIGSTOP)
        recovered = asyncio.gather(*(ready_again(s, killed) for s in servers))
        while sentinels.master_port() == old:
            assert time.time() - killed < 20, "no sentinel promoted the replica"
            await asyncio.sleep(0.05)
        promoted = time.time() - killed
        recovered = await recovered

        # A socket opened after the failover counts itself in presence on the new master.
        newcomer = (await start_clients(servers[:1], cookie, 1))[0]
        await sync_to_async(finish)(publisher)
        await sync_to_async(finish)(publish(env, "broadcast", tail, start=total))
        end = total + tail
        await received_everything(clients, "broadcast", end)
        assert all(c.connects == 1 for c in clients), [c.closes for c in clients]
        assert await newcomer.wait_for("broadcast", 1, 10)

        # Presence and the cache followed the failover too.
        assert await sync_to_async(presence.connections)(user) == count + 1
        assert await sync_to_async(cache.incr)("counter") == 2, "the cache lost what it held (not replicated?)"

        late = max(lateness(c, killed) for c in clients)
        with capsys.disabled():
            print(
                f"\n[sentinel] {count} clients on 2 servers, {end} messages, master {fault}: 0 lost, "
                f"0 duplicated, in order, no client reconnected. Replica promoted {promoted:.1f}s after the "
                f"fault; live delivery back (readyz 200) after {max(recovered):.1f}s; meanwhile the log "
                f"sweep kept every message within {late:.2f}s of its publication"
            )
        assert max(recovered) < 10, recovered
    finally:
        await asyncio.gather(*(c.stop() for c in clients + [newcomer] if c is not None))


# Configuration ------------------------------------------------------------

HOST = {"sentinels": [("127.0.0.1", 1), ["127.0.0.1", 2]], "master_name": MASTER}


def test_presence_takes_the_sentinel_entry_of_the_channel_layer(settings):
    entry = {**HOST, "socket_timeout": None, "max_connections": 1000}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [entry], "prefix": "p"}}
    }
    settings.REALTIME = {}
    backend = presence.get_backend()
    assert (type(backend), backend.sentinel, backend.url, backend.prefix) == (
        RedisPresence, entry, None, "p:realtime:presence:"
    )


def test_presence_sentinel_setting(settings):
    settings.REALTIME = {"PRESENCE": {"BACKEND": "realtime.presence.RedisPresence", "SENTINEL": HOST}}
    assert presence.get_backend().sentinel == HOST
    wrongs = ({"sentinels": []}, {"sentinels": [], "master_name": MASTER}, {"sentinels": ["a:1"], "master_name": "m"})
    for wrong in wrongs:
        settings.REALTIME = {"PRESENCE": {"SENTINEL": wrong}}
        with pytest.raises(RealtimeConfigError, match=r'REALTIME\["PRESENCE"\]\["SENTINEL"\] must be a dict'):
            presence.get_backend()


def test_pools_ask_the_sentinels_and_keep_the_connection_options():
    pool = master_pool({**HOST, "db": 3, "socket_timeout": None}, socket_timeout=2)
    assert pool.service_name == MASTER and pool.is_master
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["socket_timeout"]) == (3, 2)
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (sentinel["host"], sentinel["port"], sentinel["socket_timeout"]) == ("127.0.0.1", 1, 1)

    waiting = master_pool(HOST, is_async=True, max_connections=7, timeout=3)
    assert (waiting.max_connections, waiting.timeout, waiting.service_name) == (7, 3, MASTER)

    # As Django's RedisCache builds it: LOCATION gives the database and password, not the host.
    cached = SentinelPool.from_url("redis://:secret@ignored:1/5", **HOST)
    options = cached.connection_kwargs
    assert (cached.service_name, options["db"], options["password"]) == (MASTER, 5, "secret")
    assert "host" not in options


def test_the_guide_and_the_demo_configure_all_three_users(monkeypatch, settings):
    guide = (ROOT / "docs" / "deployment.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "REDIS_MASTER" in b]
    names = {}
    exec(block, names)
    master = names["REDIS_MASTER"]
    monkeypatch.setenv("REDIS_SENTINELS", ",".join(f"{h}:{p}" for h, p in master["sentinels"]))
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", master["master_name"])
    assert redis_host() == master, "the demo's REDIS_SENTINELS must build the guide's entry"

    settings.CHANNEL_LAYERS, settings.CACHES, settings.REALTIME = names["CHANNEL_LAYERS"], names["CACHES"], {}
    assert presence.get_backend().sentinel["master_name"] == master["master_name"]
    pool = caches["default"]._cache.get_client(write=True).connection_pool
    assert (type(pool), pool.service_name, pool.connection_kwargs["db"]) == (SentinelPool, "mymaster", 0)
