"""Redis Sentinel for realtime's own Redis clients.

channels-redis reaches a Sentinel-managed master by itself: a host entry of
``CHANNEL_LAYERS`` may be ``{"sentinels": [(host, port), ...], "master_name":
"mymaster", "sentinel_kwargs": {...}}`` plus connection options (``db``,
``password``, ``socket_timeout``...). The same entry serves realtime's two
other Redis users:

* presence (:class:`realtime.presence.RedisPresence`) takes it from the
  channel layer's first host, or from ``REALTIME["PRESENCE"]["SENTINEL"]``;
* the publish API's rate-limit cache, when it is Django's ``RedisCache``,
  takes it as ``OPTIONS`` with ``"pool_class": "realtime.sentinel.SentinelPool"``.

Every pool here asks the sentinels for the master's address whenever it opens
a connection (redis-py's Sentinel pools), so after a failover the next
connection goes to the new master. They also ask, at most once per
:data:`MASTER_CHECK_INTERVAL`, when they hand out a pooled connection: a master
that vanished without closing its sockets (a partition, a frozen host) would
otherwise leave idle connections that wait for a read timeout — forever with
the layer's ``socket_timeout: None``. A changed address drops them (redis-py's
``get_master_address``). Nothing connects before the first command.
"""

import time

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import parse_url

__all__ = ["SentinelPool", "is_sentinel", "master_pool"]

#: How long a question to one sentinel may take, unless the entry's
#: ``sentinel_kwargs`` say otherwise: an unreachable sentinel must not stall
#: the search for the master (redis-py's default is no timeout at all).
SENTINEL_KWARGS = {"socket_connect_timeout": 1, "socket_timeout": 1}


#: Seconds between two questions to the sentinels when a pool hands out a connection.
MASTER_CHECK_INTERVAL = 1.0


def is_sentinel(host):
    """True if ``host`` (a channels-redis host entry) names a Sentinel-managed master."""
    return isinstance(host, dict) and "master_name" in host


def _check_due(pool):
    now = time.monotonic()
    if now < getattr(pool, "_master_checked", 0.0) + MASTER_CHECK_INTERVAL:
        return False
    pool._master_checked = now
    return True


class _FollowsMaster(redis.sentinel.SentinelConnectionPool):
    """A Sentinel pool whose idle connections to a vanished master go once another is promoted."""

    def get_connection(self, *args, **kwargs):
        if _check_due(self):
            try:
                self.get_master_address()
            except redis.RedisError:
                pass  # no sentinel answered: keep what the pool has
        return super().get_connection(*args, **kwargs)


class _AsyncBlockingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Finds the master through Sentinel, waits for a free connection instead of
    raising, and drops idle connections to a vanished master (as :class:`_FollowsMaster`)."""

    async def get_connection(self, *args, **kwargs):
        if _check_due(self):
            try:
                await self.get_master_address()
            except redis.RedisError:
                pass
        return await super().get_connection(*args, **kwargs)


def master_pool(host, *, is_async=False, **options):
    """A connection pool to the master that ``host`` (a channels-redis Sentinel entry) names.

    ``options`` override the entry's connection options. With ``is_async``, a
    :mod:`redis.asyncio` pool that waits for a free connection
    (``max_connections``, ``timeout``) like ``BlockingConnectionPool``.
    """
    host = dict(host)
    name = host.pop("master_name")
    sentinels = [tuple(address) for address in host.pop("sentinels")]
    sentinel_kwargs = host.pop("sentinel_kwargs", None) or SENTINEL_KWARGS
    if is_async:
        manager = redis.asyncio.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        return _AsyncBlockingSentinelPool(name, manager, **{**host, **options})
    manager = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    return _FollowsMaster(name, manager, **{**host, **options})


class SentinelPool(_FollowsMaster):
    """A ``pool_class`` for Django's ``RedisCache`` that finds the master through Sentinel.

    The cache's ``OPTIONS`` carry the Sentinel entry beside ``pool_class``::

        "OPTIONS": {
            "pool_class": "realtime.sentinel.SentinelPool",
            "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379)],
            "master_name": "mymaster",
        }

    ``LOCATION`` still gives the database and credentials
    (``redis://:password@mymaster/0``); its host and port are not used.
    """

    @classmethod
    def from_url(cls, url, *, sentinels, master_name, sentinel_kwargs=None, **options):
        """Build the pool as Django's cache does (``pool_class.from_url(LOCATION, **OPTIONS)``)."""
        address = {key: value for key, value in parse_url(url).items() if key not in ("host", "port")}
        manager = redis.sentinel.Sentinel(
            [tuple(s) for s in sentinels], sentinel_kwargs=sentinel_kwargs or SENTINEL_KWARGS
        )
        return cls(master_name, manager, **{**options, **address})
