"""Settings for the Django servers of ``make bench`` (tutorial and realtime).

Both use channels-redis with its defaults (capacity 100), as a user would. The
database is the demo project's: SQLite at ``SQLITE_PATH``, or ``DATABASE_URL``.
"""

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
REALTIME = {"ALLOW_ANONYMOUS": True}
LOGGING = {"version": 1, "disable_existing_loggers": False}
