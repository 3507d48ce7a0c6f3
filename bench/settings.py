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
# The load generator is one address with thousands of anonymous sockets.
REALTIME = {
    "ALLOW_ANONYMOUS": True,
    "MAX_CONNECTIONS_PER_IP": 1_000_000,
    # bench/pings.py varies these per server.
    **json.loads(os.environ.get("BENCH_REALTIME_JSON", "{}")),
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
