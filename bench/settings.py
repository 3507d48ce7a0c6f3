"""Settings for the Django servers of ``make bench`` (tutorial and realtime).

Both use channels-redis with its defaults (capacity 100), as a user would. The
database is the demo project's: SQLite at ``SQLITE_PATH``, or ``DATABASE_URL``.
"""

import json
import os

from project.settings import *  # noqa: F401,F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": None, "max_connections": 10000}],
            "prefix": "bench",
        },
    }
}


async def authorize(user, stream):
    """The default rule, plus the "bench:*" streams, which the anonymous clients of the inbox workload read."""
    from realtime.streams import default_authorize

    return stream.startswith("bench:") or default_authorize(user, stream)


# The load generator is one address with thousands of anonymous sockets.
REALTIME = {
    "ALLOW_ANONYMOUS": True,
    "AUTHORIZE": "bench.settings.authorize",
    "MAX_CONNECTIONS_PER_IP": 1_000_000,
    # bench/pings.py varies these per server.
    **json.loads(os.environ.get("BENCH_REALTIME_JSON", "{}")),
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
