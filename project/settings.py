"""Settings of the realtime demo site.

The environment picks the moving parts:
- ``REDIS_URL`` set: channels_redis's RedisChannelLayer, so several server
  processes and other programs (commands, workers) share live delivery.
  Unset: the in-memory layer, one process only (the embedded default).
- ``REDIS_SENTINELS`` set (``host:port,host:port,...``, with
  ``REDIS_SENTINEL_MASTER``, default ``mymaster``): the same, on the master
  those Redis Sentinels name, for the layer, presence and the cache alike.
- ``DATABASE_URL`` set (e.g. postgres://...): that database. Unset: SQLite.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret-realtime-demo-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "realtime",
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "project.asgi.application"

if os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60, conn_health_checks=True)
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # Reuse connections: realtime's server reads the log from a worker
            # thread, and opening a connection per read was measurable.
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # Take the write lock when a transaction starts, so concurrent
                # publishers queue up instead of failing with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }


def redis_host():
    """The channel layer's Redis host entry that the environment names, or None.

    ``REDIS_SENTINELS`` gives channels-redis's Sentinel entry, which realtime's
    presence and :class:`realtime.sentinel.SentinelPool` (the cache) take too.
    """
    if os.environ.get("REDIS_SENTINELS"):
        sentinels = [address.rsplit(":", 1) for address in os.environ["REDIS_SENTINELS"].split(",")]
        return {
            "sentinels": [(host, int(port)) for host, port in sentinels],
            "master_name": os.environ.get("REDIS_SENTINEL_MASTER", "mymaster"),
            # A sentinel that does not answer within a second is skipped.
            "sentinel_kwargs": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    if os.environ.get("REDIS_URL"):
        return {"address": os.environ["REDIS_URL"]}
    return None


_redis_host = redis_host()
if _redis_host:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        **_redis_host,
                        # redis-py 8's default 5 s timeout races channels-redis's
                        # 5 s blocking read and kills idle receivers.
                        "socket_timeout": None,
                        # The default pool of 100 raises instead of waiting when
                        # many clients disconnect at once.
                        "max_connections": 1000,
                    }
                ],
                "capacity": 1000,
            },
        }
    }
    # One cache for every process: the publish API's rate limit counts per token
    # across processes only through a shared cache.
    if "sentinels" in _redis_host:
        # Django's RedisCache finds the master through the sentinels too; of
        # the location, only the database number is used.
        CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://sentinel/0",
                "OPTIONS": {"pool_class": "realtime.sentinel.SentinelPool", **_redis_host},
            }
        }
    else:
        CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REALTIME = {
    # realtime's default read rules, plus the demo board for signed-in users.
    "AUTHORIZE": "project.realtime_hooks.authorize",
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = "UTC"
USE_I18N = True
# The demo's own catalog (templates/, static/, project/). Listed here, not only
# found as the "project" app's, so its wording wins over other apps' catalogs
# that share a msgid; tests/test_demo_i18n.py says how to refresh it.
LOCALE_PATHS = [BASE_DIR / "project" / "locale"]
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "build" / "static"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-8s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # Not propagated: daphne gives the root logger a handler too, and every line would show twice.
    "loggers": {
        "realtime": {
            "handlers": ["console"],
            "level": os.environ.get("REALTIME_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
