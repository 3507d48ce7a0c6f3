"""Who is connected: per connection, per user and per stream, with a TTL.

The consumer calls three hooks; each receives the consumer, which exposes
``connection_id``, ``user`` and ``streams`` (the joined stream names).
``websocket.disconnect`` is not delivered when a server process dies, so every
entry carries an expiry that the client's heartbeat ping pushes forward;
entries of a crashed process drop out within ``TTL`` seconds.

Query from sync code with :func:`online_users`, :func:`is_online` and
:func:`connections`. The backend is chosen by ``REALTIME["PRESENCE"]``: by
default Redis when the channel layer is channels_redis (so every server
process sees every connection), else this process's memory.
"""

import asyncio
import logging
import threading
import time
import weakref
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .conf import setting
from .exceptions import RealtimeConfigError

__all__ = [
    "BasePresence",
    "InMemoryPresence",
    "RedisPresence",
    "get_backend",
    "online_users",
    "is_online",
    "connections",
    "stream_counts",
    "entry_count",
]

logger = logging.getLogger("realtime")

DEFAULT_TTL = 60


class BasePresence:
    """What every presence backend does; storage is left to subclasses.

    Subclasses implement :meth:`_record`, :meth:`_forget`, :meth:`_entries`,
    :meth:`_user_connections` and :meth:`_stream_names`. ``shared`` says
    whether every server process sees the same entries.
    """

    shared = False

    def __init__(self, ttl=DEFAULT_TTL, **options):
        self.ttl = ttl
        # Streams recorded per local connection, so a touch can drop the ones left since.
        self._joined = {}

    # Hooks called by the consumer -----------------------------------------

    async def connected(self, consumer):
        """Record a connection that has joined its streams."""
        streams = set(consumer.streams)
        self._joined[consumer.connection_id] = streams
        await self._record(consumer.connection_id, _user_key(consumer.user), streams, set(), self._expiry())

    async def touch(self, consumer):
        """Push the connection's expiry forward and follow its subscriptions."""
        streams = set(consumer.streams)
        left = self._joined.get(consumer.connection_id, set()) - streams
        self._joined[consumer.connection_id] = streams
        await self._record(consumer.connection_id, _user_key(consumer.user), streams, left, self._expiry())

    async def disconnected(self, consumer):
        """Forget a connection that closed."""
        streams = self._joined.pop(consumer.connection_id, set()) | set(consumer.streams)
        await self._forget(consumer.connection_id, _user_key(consumer.user), streams)

    def _expiry(self):
        return time.time() + self.ttl

    # Connection limits (see realtime.limits) -------------------------------

    async def claim(self, key, connection_id, limit):
        """Count ``connection_id`` under ``key`` unless ``limit`` live ones are there; True if counted.

        Shared backends override this so that every server process sees the
        same counts; the default counts nothing (``realtime.limits`` counts
        per process itself).
        """
        return True

    async def unclaim(self, key, connection_id):
        """Stop counting ``connection_id`` under ``key``."""

    # Queries ---------------------------------------------------------------

    def online_users(self, stream=None):
        """Primary keys of the users with a live connection (to ``stream`` if given), sorted."""
        keys = {user for user, _conn in self._entries(stream, time.time()) if user}
        return sorted(_to_pk(key) for key in keys)

    def connections(self, user):
        """How many live connections ``user`` (a user or a pk) has."""
        return self._user_connections(str(getattr(user, "pk", user)), time.time())

    def is_online(self, user):
        """True if ``user`` (a user or a pk) has at least one live connection."""
        return self.connections(user) > 0

    def entry_count(self):
        """Live entries (one per connection) the backend holds: every process's when it is shared."""
        return len(self._entries(None, time.time()))

    def stream_counts(self):
        """``{stream: {"users": n, "connections": m}}`` for every stream with a live connection."""
        now = time.time()
        counts = {}
        for name in self._stream_names(now):
            entries = self._entries(name, now)
            if entries:
                counts[name] = {
                    "users": len({user for user, _conn in entries if user}),
                    "connections": len(entries),
                }
        return counts

    # Storage: must be implemented by a subclass ----------------------------

    async def _record(self, connection_id, user, streams, left, expires):
        """Store the connection with ``expires`` (epoch seconds) in ``streams``; drop it from ``left``.

        ``user`` is the user's pk as a string, ``""`` for an anonymous connection.
        Must be implemented by a subclass.
        """
        raise NotImplementedError("subclasses of BasePresence must provide a _record() method")

    async def _forget(self, connection_id, user, streams):
        """Remove the connection everywhere. Must be implemented by a subclass."""
        raise NotImplementedError("subclasses of BasePresence must provide a _forget() method")

    def _entries(self, stream, now):
        """Live ``(user, connection_id)`` pairs, of ``stream`` or of all connections if None.

        Must be implemented by a subclass.
        """
        raise NotImplementedError("subclasses of BasePresence must provide an _entries() method")

    def _user_connections(self, user, now):
        """Number of live connections of ``user`` (a pk string). Must be implemented by a subclass."""
        raise NotImplementedError("subclasses of BasePresence must provide a _user_connections() method")

    def _stream_names(self, now):
        """Names of the streams that may have live connections. Must be implemented by a subclass."""
        raise NotImplementedError("subclasses of BasePresence must provide a _stream_names() method")


class InMemoryPresence(BasePresence):
    """Presence in this process's memory: right for one server process (the embedded default)."""

    def __init__(self, ttl=DEFAULT_TTL, **options):
        super().__init__(ttl, **options)
        self._lock = threading.Lock()
        self._connections = {}

    async def _record(self, connection_id, user, streams, left, expires):
        with self._lock:
            self._connections[connection_id] = (user, frozenset(streams), expires)

    async def _forget(self, connection_id, user, streams):
        with self._lock:
            self._connections.pop(connection_id, None)

    def _live(self, now):
        with self._lock:
            for connection_id in [c for c, entry in self._connections.items() if entry[2] <= now]:
                del self._connections[connection_id]
            return list(self._connections.items())

    def _entries(self, stream, now):
        return [
            (user, connection_id)
            for connection_id, (user, streams, _expires) in self._live(now)
            if stream is None or stream in streams
        ]

    def _user_connections(self, user, now):
        return sum(1 for _c, entry in self._live(now) if entry[0] == user)

    def _stream_names(self, now):
        return sorted({name for _c, entry in self._live(now) for name in entry[1]})


class RedisPresence(BasePresence):
    """Presence in Redis, shared by every server process.

    Sorted sets scored by expiry time: ``<prefix>all`` and ``<prefix>s:<stream>``
    hold ``<user>|<connection>``, ``<prefix>u:<user>`` holds connection ids and
    ``<prefix>streams`` the stream names. Reads drop expired members first, and
    every key expires on its own once nothing refreshes it. Nothing outside
    the prefix is touched. With ``sentinel`` (a channels-redis Sentinel host
    entry) every new connection asks the sentinels where the master is, so
    presence follows a failover.
    """

    shared = True

    def __init__(self, ttl=DEFAULT_TTL, url=None, prefix="realtime:presence:", sentinel=None, **options):
        super().__init__(ttl, **options)
        if not url and not sentinel:
            raise RealtimeConfigError(
                'RedisPresence needs a Redis URL: set settings.REALTIME["PRESENCE"]["URL"] '
                '(or ["SENTINEL"] for a Sentinel-managed master).'
            )
        self.url = url
        # A channels-redis Sentinel host entry; wins over ``url`` (realtime.sentinel).
        self.sentinel = sentinel
        self.prefix = prefix
        # The limit key each local connection is counted under, refreshed with its entry.
        self._claims = {}
        self._claim_scripts = weakref.WeakKeyDictionary()
        self._async_clients = weakref.WeakKeyDictionary()
        self._sync_client = None
        self._client_lock = threading.Lock()

    def _key(self, *parts):
        return self.prefix + ":".join(parts)

    def _async_client(self):
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # Wait for a free connection instead of failing when many sockets
            # open or close at once (a plain pool raises when it runs out).
            options = {"max_connections": 50, "timeout": 10, "socket_timeout": 5, "socket_connect_timeout": 2}
            if self.sentinel:
                from .sentinel import master_pool

                pool = master_pool(self.sentinel, is_async=True, **options)
            else:
                pool = redis.asyncio.BlockingConnectionPool.from_url(self.url, **options)
            client = redis.asyncio.Redis(connection_pool=pool)
            self._async_clients[loop] = client
        return client

    @property
    def client(self):
        """The synchronous Redis client used by the query API."""
        with self._client_lock:
            if self._sync_client is None:
                import redis

                options = {"socket_timeout": 2, "socket_connect_timeout": 2, "decode_responses": True}
                if self.sentinel:
                    from .sentinel import master_pool

                    self._sync_client = redis.Redis(connection_pool=master_pool(self.sentinel, **options))
                else:
                    self._sync_client = redis.Redis.from_url(self.url, **options)
            return self._sync_client

    async def _record(self, connection_id, user, streams, left, expires):
        member = f"{user}|{connection_id}"
        keep = int(self.ttl) + 1
        pipe = self._async_client().pipeline(transaction=False)
        for key in (self._key("all"), *(self._key("s", name) for name in streams)):
            pipe.zadd(key, {member: expires})
            pipe.expire(key, keep)
        for name in left:
            pipe.zrem(self._key("s", name), member)
        if streams:
            pipe.zadd(self._key("streams"), {name: expires for name in streams}, gt=True)
            pipe.expire(self._key("streams"), keep)
        if user:
            pipe.zadd(self._key("u", user), {connection_id: expires})
            pipe.expire(self._key("u", user), keep)
        claim = self._claims.get(connection_id)
        if claim is not None:
            pipe.zadd(self._key("c", claim), {connection_id: expires})
            pipe.expire(self._key("c", claim), keep)
        await pipe.execute()

    #: Drop expired claims, and add this one if fewer than ARGV[2] remain.
    CLAIM_SCRIPT = """
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    return 1
    """

    async def claim(self, key, connection_id, limit):
        client = self._async_client()
        script = self._claim_scripts.get(client)
        if script is None:
            script = self._claim_scripts[client] = client.register_script(self.CLAIM_SCRIPT)
        now = time.time()
        admitted = await script(
            keys=[self._key("c", key)], args=[now, limit, now + self.ttl, connection_id, int(self.ttl) + 1]
        )
        if admitted:
            self._claims[connection_id] = key
        return bool(admitted)

    async def unclaim(self, key, connection_id):
        self._claims.pop(connection_id, None)
        await self._async_client().zrem(self._key("c", key), connection_id)

    async def _forget(self, connection_id, user, streams):
        member = f"{user}|{connection_id}"
        pipe = self._async_client().pipeline(transaction=False)
        pipe.zrem(self._key("all"), member)
        for name in streams:
            pipe.zrem(self._key("s", name), member)
        if user:
            pipe.zrem(self._key("u", user), connection_id)
        await pipe.execute()

    def entry_count(self):
        # One ZCOUNT, whatever the number of entries: a scrape must stay cheap.
        return self.client.zcount(self._key("all"), time.time(), "+inf")

    def _live_members(self, key, now):
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zrangebyscore(key, now, "+inf")
        return pipe.execute()[1]

    def _entries(self, stream, now):
        key = self._key("all") if stream is None else self._key("s", stream)
        return [tuple(member.split("|", 1)) for member in self._live_members(key, now)]

    def _user_connections(self, user, now):
        return len(self._live_members(self._key("u", user), now))

    def _stream_names(self, now):
        return sorted(self._live_members(self._key("streams"), now))


def _user_key(user):
    if user is None or not user.is_authenticated:
        return ""
    return str(user.pk)


def _to_pk(key):
    return get_user_model()._meta.pk.to_python(key)


@lru_cache(maxsize=None)
def get_backend():
    """The configured presence backend (one instance per process)."""
    options = dict(setting("PRESENCE"))
    ttl = options.pop("TTL", DEFAULT_TTL)
    path = options.pop("BACKEND", None)
    if path is None:
        derived = _from_channel_layer()
        if "URL" in options or "SENTINEL" in options:
            # A Redis named here, not the layer's: keep only the layer's key prefix.
            path = "realtime.presence.RedisPresence"
            derived = {"PREFIX": derived["PREFIX"]} if derived else {}
        else:
            path = "realtime.presence.RedisPresence" if derived else "realtime.presence.InMemoryPresence"
        for key, value in (derived or {}).items():
            options.setdefault(key, value)
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise RealtimeConfigError(
            f'settings.REALTIME["PRESENCE"]["BACKEND"] = {path!r} cannot be imported: {exc}'
        ) from exc
    return backend_class(ttl=ttl, **{key.lower(): value for key, value in options.items()})


def _from_channel_layer():
    """``{"URL" or "SENTINEL", "PREFIX"}`` from a channels_redis layer's first host, or None."""
    layer = (getattr(settings, "CHANNEL_LAYERS", {}) or {}).get(setting("CHANNEL_LAYER")) or {}
    if not str(layer.get("BACKEND", "")).startswith("channels_redis"):
        return None
    config = layer.get("CONFIG") or {}
    prefix = f"{config.get('prefix', 'asgi')}:realtime:presence:"
    hosts = config.get("hosts") or [("localhost", 6379)]
    host = hosts[0]
    if isinstance(host, dict) and "master_name" in host:
        return {"SENTINEL": host, "PREFIX": prefix}
    if isinstance(host, dict):
        host = host.get("address")
    if isinstance(host, (list, tuple)) and len(host) == 2:
        host = f"redis://{host[0]}:{host[1]}/0"
    if not isinstance(host, str):
        logger.warning(
            "realtime: cannot derive a Redis URL for presence from CHANNEL_LAYERS; keeping "
            'presence in memory. Set REALTIME["PRESENCE"]["URL"].'
        )
        return None
    return {"URL": host, "PREFIX": prefix}


@receiver(setting_changed)
def _reset_backend(*, setting, **kwargs):
    if setting in ("REALTIME", "CHANNEL_LAYERS"):
        get_backend.cache_clear()


# Hooks called by the consumer ---------------------------------------------


async def connected(consumer):
    """A socket finished joining its streams."""
    await get_backend().connected(consumer)


async def touch(consumer):
    """The client pinged: the socket is alive; refresh its TTL."""
    await get_backend().touch(consumer)


async def disconnected(consumer):
    """The socket closed (not called when a server process dies)."""
    await get_backend().disconnected(consumer)


_background = set()


def in_background(coroutine):
    """Run a presence write without making the caller wait; failures are logged.

    Used where a connection is being torn down and may itself be cancelled:
    the entry must still go.
    """
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task):
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("realtime: a presence update failed", exc_info=task.exception())


# Queries -------------------------------------------------------------------


def online_users(stream=None):
    """Primary keys of users connected now (to ``stream`` if given), on every process the backend sees."""
    return get_backend().online_users(stream)


def is_online(user):
    """True if ``user`` (a user or a pk) has a live connection."""
    return get_backend().is_online(user)


def connections(user):
    """How many live connections ``user`` (a user or a pk) has."""
    return get_backend().connections(user)


def stream_counts():
    """``{stream: {"users": n, "connections": m}}`` of streams with live connections."""
    return get_backend().stream_counts()


def entry_count():
    """Live presence entries: connections, on every process the backend sees."""
    return get_backend().entry_count()
