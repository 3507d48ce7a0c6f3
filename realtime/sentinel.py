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
connection goes to the new master. Nothing connects before the first command.
"""

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


def is_sentinel(host):
    """True if ``host`` (a channels-redis host entry) names a Sentinel-managed master."""
    return isinstance(host, dict) and "master_name" in host


class _AsyncBlockingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Finds the master through Sentinel, and waits for a free connection instead of raising."""


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
    return redis.sentinel.SentinelConnectionPool(name, manager, **{**host, **options})


class SentinelPool(redis.sentinel.SentinelConnectionPool):
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
