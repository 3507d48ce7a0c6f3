"""realtime's system checks, compared as exact objects."""

import pytest
from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.checks import Error, Warning, run_checks
from django.urls import include, path

from realtime import checks
from realtime.routing import not_found_urlpatterns, websocket_urlpatterns

MINE = {f"realtime.E00{n}" for n in range(1, 6)} | {f"realtime.W00{n}" for n in range(1, 10)}


class OtherConsumer(AsyncWebsocketConsumer):
    pass


async def opaque_app(scope, receive, send):
    """An ASGI app the check cannot look into."""


mounted = ProtocolTypeRouter(
    {
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns + not_found_urlpatterns))
        )
    }
)
nested = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [path("other/", OtherConsumer.as_asgi()), path("app/", URLRouter(websocket_urlpatterns))]
        )
    }
)
missing = ProtocolTypeRouter(
    {
        "websocket": AuthMiddlewareStack(
            URLRouter([path("ws/other/", OtherConsumer.as_asgi())] + not_found_urlpatterns)
        )
    }
)
http_only = ProtocolTypeRouter({"http": opaque_app})
undeterminable = ProtocolTypeRouter({"websocket": URLRouter([path("ws/x/", opaque_app)])})

E003 = Error(
    "The ASGI application {} does not route WebSockets to realtime's consumer.",
    hint="In your asgi.py, route 'websocket' to URLRouter(realtime.routing.websocket_urlpatterns) "
    "(inside AllowedHostsOriginValidator(AuthMiddlewareStack(...))).",
    id="realtime.E003",
)


def e003(path):
    return Error(E003.msg.format(path), hint=E003.hint, id=E003.id)


# Django 6.1's model checks ask the database whether it supports JSONField.
@pytest.mark.django_db
def test_project_settings_raise_none_of_these(settings):
    settings.DEBUG = True  # as the demo runs (pytest-django turns it off)
    assert [m for m in run_checks() if m.id in MINE] == []


@pytest.mark.parametrize("name", ["mounted", "nested", "opaque_app", "undeterminable"])
def test_route_found_or_undeterminable(settings, name):
    settings.ASGI_APPLICATION = f"tests.test_checks.{name}"
    assert checks.check_websocket_route() == []


@pytest.mark.django_db  # all of Django's checks run (see above)
@pytest.mark.parametrize("name", ["missing", "http_only"])
def test_route_missing(settings, name):
    settings.ASGI_APPLICATION = f"tests.test_checks.{name}"
    assert checks.check_websocket_route() == [e003(f"tests.test_checks.{name}")]
    assert e003(f"tests.test_checks.{name}") in run_checks()


def test_route_check_ignores_unimportable_or_unset(settings):
    settings.ASGI_APPLICATION = "tests.nowhere.application"
    assert checks.check_websocket_route() == []
    settings.ASGI_APPLICATION = None
    assert checks.check_websocket_route() == []


def test_daphne_and_channels_missing(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a not in ("daphne", "channels")]
    assert checks.check_installed_apps() == [
        Warning(
            "'daphne' is not in INSTALLED_APPS, so `manage.py runserver` serves HTTP only "
            "and WebSockets to realtime fail during development.",
            hint="Put 'daphne' first in INSTALLED_APPS (before django.contrib.staticfiles).",
            id="realtime.W005",
        ),
        Warning(
            "'channels' is not in INSTALLED_APPS: Channels' own system checks and `runworker` are unavailable.",
            hint="Add 'channels' to INSTALLED_APPS.",
            id="realtime.W006",
        ),
    ]


@pytest.mark.parametrize("heartbeat, ttl", [(60, 60), (90, 60), (25, 20)])
def test_heartbeat_not_shorter_than_presence_ttl(settings, heartbeat, ttl):
    settings.REALTIME = {"HEARTBEAT_INTERVAL": heartbeat, "PRESENCE": {"TTL": ttl}}
    assert checks.check_presence() == [
        Warning(
            f'REALTIME["HEARTBEAT_INTERVAL"] ({heartbeat} s) is not shorter than the presence TTL '
            f"({ttl} s): connected users drop out of presence between pings.",
            hint='Make REALTIME["PRESENCE"]["TTL"] at least twice HEARTBEAT_INTERVAL.',
            id="realtime.W004",
        )
    ]


def test_heartbeat_default_ttl_fits(settings):
    settings.REALTIME = {"HEARTBEAT_INTERVAL": 59}
    assert checks.check_presence() == []
    settings.REALTIME = {"HEARTBEAT_INTERVAL": 60}
    assert [m.id for m in checks.check_presence()] == ["realtime.W004"]


def test_short_or_empty_settings_token(settings):
    settings.REALTIME = {
        "PUBLISH_TOKENS": [
            {"name": "good", "secret": "x" * 32, "streams": ["a"]},
            {"name": "short", "secret": "x" * 31, "streams": ["a"]},
            {"name": "empty", "secret": "", "streams": ["a"]},
        ]
    }
    hint = 'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    assert checks.check_publish_tokens() == [
        Error(
            "The secret of publish token 'short' in REALTIME[\"PUBLISH_TOKENS\"] is shorter than 32 "
            "characters: it can be guessed.",
            hint=hint,
            id="realtime.E004",
        ),
        Error(
            "The secret of publish token 'empty' in REALTIME[\"PUBLISH_TOKENS\"] is empty: it can be guessed.",
            hint=hint,
            id="realtime.E004",
        ),
    ]


W007 = Warning(
    "The HTTP publish API is mounted, but tokens are created in the admin and django.contrib.admin "
    'is not installed, and REALTIME["PUBLISH_TOKENS"] is empty: every request will be refused.',
    hint='Install django.contrib.admin, or list tokens in REALTIME["PUBLISH_TOKENS"], or do not include '
    "realtime.urls.",
    id="realtime.W007",
)

#: ROOT_URLCONF for the publish API tests: only realtime.urls.
urlpatterns = [path("realtime/", include("realtime.urls"))]


def test_publish_api_without_a_way_to_make_tokens(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django.contrib.admin"]
    settings.ROOT_URLCONF = "tests.test_checks"
    assert checks.check_publish_api() == [W007]
    settings.REALTIME = {"PUBLISH_TOKENS": [{"name": "env", "secret": "x" * 40, "streams": ["*"]}]}
    assert checks.check_publish_api() == []


def test_publish_api_fine_with_admin_or_not_mounted(settings):
    settings.ROOT_URLCONF = "tests.test_checks"
    assert checks.check_publish_api() == []
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django.contrib.admin"]
    settings.ROOT_URLCONF = "tests.urls_without_realtime"
    assert checks.check_publish_api() == []


@pytest.mark.parametrize("version", ["4.2.1", "4.1.2", "3.0.2"])
def test_daphne_without_frame_limits(monkeypatch, version):
    import daphne

    monkeypatch.setattr(daphne, "__version__", version)
    assert checks.check_daphne_version() == [
        Warning(
            f"daphne {version} is installed: versions before 4.2.2 read WebSocket frames of any "
            "size into memory before realtime can refuse them (CVE-2026-44545).",
            hint='pip install "daphne>=4.2.3"',
            id="realtime.W008",
        )
    ]


@pytest.mark.parametrize("version", ["4.2.3", "4.3.0", "5.0"])
def test_daphne_with_frame_limits(monkeypatch, version):
    import daphne

    monkeypatch.setattr(daphne, "__version__", version)
    assert checks.check_daphne_version() == []


def test_invalid_settings_name_the_key(settings):
    settings.REALTIME = {"HEARTBEAT_INTERVAL": 0}
    assert checks.check_settings() == [
        Error(
            'settings.REALTIME["HEARTBEAT_INTERVAL"] must be a positive number, got 0.',
            hint="See docs/settings.md for every key.",
            id="realtime.E001",
        )
    ]


def test_no_asgi_application(settings):
    settings.ASGI_APPLICATION = None
    assert Error(
        "ASGI_APPLICATION is not set, so no server can route WebSockets to realtime.",
        hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' and route "
        "realtime.routing.websocket_urlpatterns there.",
        id="realtime.E002",
    ) in checks.check_settings()


def test_layer_alias_missing(settings):
    settings.CHANNEL_LAYERS = {}
    assert checks.check_settings() == [
        Warning(
            "CHANNEL_LAYERS has no 'default' layer: messages reach clients only on their next heartbeat, not live.",
            hint="Configure channels_redis.core.RedisChannelLayer (or the in-memory layer for a one-process "
            "development server).",
            id="realtime.W001",
        )
    ]


def test_in_memory_layer_in_production(settings):
    settings.DEBUG = False
    assert [m.id for m in checks.check_settings()] == ["realtime.W002"]
    settings.DEBUG = True
    assert checks.check_settings() == []


def redis_layer(host):
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}}


def test_redis_layer_without_socket_timeout(settings):
    settings.CHANNEL_LAYERS = redis_layer("redis://127.0.0.1:6379/0")
    assert [m.id for m in checks.check_settings()] == ["realtime.W003"]
    settings.CHANNEL_LAYERS = redis_layer({"address": "redis://127.0.0.1:6379/0", "socket_timeout": None})
    assert checks.check_settings() == []


@pytest.mark.parametrize(
    "backend, hint",
    [
        ("channels_redis.core.RedisChannelLayer", 'pip install "django-realtime-notify[redis]"'),
        ("mylayers.Typo", "Install the package that provides it"),
    ],
)
def test_layer_backend_that_cannot_be_imported(settings, monkeypatch, backend, hint):
    import sys

    monkeypatch.setitem(sys.modules, "channels_redis", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "channels_redis.core", None)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend}}
    [error] = checks.check_settings()
    assert error.id == "realtime.E005" and repr(backend) in error.msg and hint in error.hint


ASGI_WRONG = """\
import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from realtime.routing import websocket_urlpatterns

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = ProtocolTypeRouter({"http": get_asgi_application(), "websocket": URLRouter(websocket_urlpatterns)})
"""

ASGI_RIGHT = """\
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
"""


@pytest.mark.parametrize("source, found", [(ASGI_WRONG, True), (ASGI_RIGHT, False)])
def test_asgi_that_imports_the_routes_before_setting_django_up(settings, tmp_path, monkeypatch, source, found):
    name = f"ordercheck_{found}".lower()  # find_spec caches the package by name
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.ASGI_APPLICATION = f"{name}.asgi.application"
    expected = [
        Warning(
            f"{package / 'asgi.py'} imports realtime.routing (line 5) before get_asgi_application() runs: "
            "daphne will fail to load it with AppRegistryNotReady or ImproperlyConfigured.",
            hint="Call get_asgi_application() first, then import channels.auth and realtime.routing "
            "(see the asgi.py in the README).",
            id="realtime.W009",
        )
    ]
    assert checks.check_asgi_import_order() == (expected if found else [])


def test_the_demos_asgi_is_in_order():
    assert checks.check_asgi_import_order() == []


@pytest.mark.parametrize("version", [(5, 1, 9, "final", 0), (4, 2, 30, "final", 0)])
def test_django_older_than_supported(monkeypatch, version):
    import django

    monkeypatch.setattr(django, "VERSION", version)
    assert checks.check_django_version() == [
        Error(
            f"Django {django.get_version()} is older than realtime supports (tested: 5.2, 6.0, 6.1).",
            hint='pip install "Django~=5.2.0"',
            id="realtime.E006",
        )
    ]


def test_django_newer_than_tested(monkeypatch):
    import django

    monkeypatch.setattr(django, "VERSION", (6, 2, 0, "final", 0))
    assert checks.check_django_version() == [
        Warning(
            "Django 6.2 is newer than the releases realtime is tested on (5.2, 6.0, 6.1).",
            hint="Run its test suite on this Django (noxfile.py) before relying on it, or pin the tested release.",
            id="realtime.W010",
        )
    ]


def test_installed_django_is_tested():
    assert checks.check_django_version() == []
