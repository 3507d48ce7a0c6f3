"""Settings for daphne and publisher processes started by the end-to-end tests.

They share the test database that pytest-django created, and the channel layer
named by the environment (REDIS_SENTINELS or REDIS_URL as in project/settings.py,
or the in-memory layer without either).
"""

import json
import os

from project.settings import redis_host
from tests.settings import *  # noqa: F401,F403
from tests.settings import DATABASES, REALTIME

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]
else:
    DATABASES["default"]["NAME"] = DATABASES["default"].get("TEST", {}).get("NAME") or (
        "test_" + DATABASES["default"]["NAME"]
    )

if redis_host():
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{**redis_host(), "socket_timeout": None, "max_connections": 1000}],
                "prefix": os.environ.get("REALTIME_REDIS_PREFIX", "asgi"),
            },
        }
    }

# Tests pass extra REALTIME keys (short heartbeats, small limits) as JSON.
REALTIME = {**REALTIME, **json.loads(os.environ.get("REALTIME_JSON", "{}"))}
