"""Settings for the test suite: the demo project with test-friendly overrides."""

import os
import tempfile

from project.settings import *  # noqa: F401,F403
from project.settings import DATABASES, INSTALLED_APPS, REALTIME

# Child processes (daphne, publishers) get the parent's folder through the
# environment; the process that made it removes it at the end (tests/conftest.py).
_tmp = os.environ.get("REALTIME_TEST_TMP") or tempfile.mkdtemp(prefix="realtime-tests-")
OWNS_TEST_TMP = "REALTIME_TEST_TMP" not in os.environ

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not shared-cache memory: SQLite's shared cache takes table locks
    # that ignore the busy timeout, and the concurrency tests need real locking.
    DATABASES["default"]["NAME"] = os.path.join(_tmp, "db.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(_tmp, "test.sqlite3")}

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Even when REDIS_URL is set for the run: tests must not share state through it.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The load tests connect hundreds of sockets as one user; tests/security sets
# the connection limits it checks.
REALTIME = {**REALTIME, "SWEEP_DELAY": 0.2, "MAX_CONNECTIONS_PER_USER": 10_000, "MAX_CONNECTIONS_PER_IP": 10_000}
