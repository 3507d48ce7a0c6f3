"""System checks added for issue #4 (realtime.E003, E004, W004-W007), compared as exact objects."""

import pytest
from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.checks import Error, Warning, run_checks
from django.urls import include, path

from realtime import checks
from realtime.routing import not_found_urlpatterns, websocket_urlpatterns

MINE = {"realtime.E003", "realtime.E004", "realtime.W004", "realtime.W005", "realtime.W006", "realtime.W007", "realtime.W008"}


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


def test_project_settings_raise_none_of_these():
    assert [m for m in run_checks() if m.id in MINE] == []


@pytest.mark.parametrize("name", ["mounted", "nested", "opaque_app", "undeterminable"])
def test_route_found_or_undeterminable(settings, name):
    settings.ASGI_APPLICATION = f"tests.test_checks.{name}"
    assert checks.check_websocket_route() == []


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
