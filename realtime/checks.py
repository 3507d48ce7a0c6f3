"""System checks for the mistakes that bite in production."""

import ast
import importlib.util

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .exceptions import RealtimeConfigError


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs):
    """Validate ``REALTIME`` and the Channels settings realtime depends on."""
    from .conf import get_config

    messages = []
    try:
        config = get_config()
    except RealtimeConfigError as exc:
        return [Error(str(exc), hint="See docs/settings.md for every key.", id="realtime.E001")]
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Error(
                "ASGI_APPLICATION is not set, so no server can route WebSockets to realtime.",
                hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' and route "
                "realtime.routing.websocket_urlpatterns there.",
                id="realtime.E002",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    layer = layers.get(config["CHANNEL_LAYER"])
    if layer is None:
        messages.append(
            Warning(
                f"CHANNEL_LAYERS has no {config['CHANNEL_LAYER']!r} layer: messages reach "
                "clients only on their next heartbeat, not live.",
                hint="Configure channels_redis.core.RedisChannelLayer (or the in-memory "
                "layer for a one-process development server).",
                id="realtime.W001",
            )
        )
        return messages
    backend = layer.get("BACKEND", "")
    try:
        import_string(backend)
    except ImportError as exc:
        messages.append(
            Error(
                f"CHANNEL_LAYERS[{config['CHANNEL_LAYER']!r}] uses {backend!r}, which cannot be imported "
                f"({exc}): notify() would refuse to publish.",
                hint=(
                    'pip install "django-realtime-notify[redis]" (it brings channels-redis and redis).'
                    if backend.startswith("channels_redis")
                    else "Install the package that provides it, or correct the dotted path."
                ),
                id="realtime.E005",
            )
        )
        return messages
    if backend.endswith("InMemoryChannelLayer") and not settings.DEBUG:
        messages.append(
            Warning(
                "The in-memory channel layer is configured with DEBUG off: messages "
                "published by other processes (workers, commands, other servers) are not "
                "pushed live.",
                hint="Use channels_redis.core.RedisChannelLayer in production.",
                id="realtime.W002",
            )
        )
    if backend.startswith("channels_redis") and _redis_needs_timeout(layer):
        messages.append(
            Warning(
                "redis-py 8 gives pooled connections a 5 s socket_timeout, which races "
                "channels-redis's 5 s blocking read and drops idle receivers.",
                hint='Give each host in CHANNEL_LAYERS[...]["CONFIG"]["hosts"] as a dict with '
                '"socket_timeout": None (see docs/deployment.md).',
                id="realtime.W003",
            )
        )
    return messages


def _redis_needs_timeout(layer):
    try:
        import redis
    except ImportError:
        return False
    major = int(str(getattr(redis, "__version__", "0")).split(".")[0] or 0)
    if major < 8:
        return False
    hosts = (layer.get("CONFIG") or {}).get("hosts") or []
    if not hosts:
        return True
    return any(not isinstance(h, dict) or "socket_timeout" not in h for h in hosts)


def _config_or_none():
    from .conf import get_config

    try:
        return get_config()
    except RealtimeConfigError:
        return None  # realtime.E001 reports it.


@register(Tags.compatibility)
def check_installed_apps(app_configs=None, **kwargs):
    """``daphne`` and ``channels`` belong in INSTALLED_APPS next to realtime."""
    from django.apps import apps

    messages = []
    if not apps.is_installed("daphne"):
        messages.append(
            Warning(
                "'daphne' is not in INSTALLED_APPS, so `manage.py runserver` serves HTTP only "
                "and WebSockets to realtime fail during development.",
                hint="Put 'daphne' first in INSTALLED_APPS (before django.contrib.staticfiles).",
                id="realtime.W005",
            )
        )
    if not apps.is_installed("channels"):
        messages.append(
            Warning(
                "'channels' is not in INSTALLED_APPS: Channels' own system checks and "
                "`runworker` are unavailable.",
                hint="Add 'channels' to INSTALLED_APPS.",
                id="realtime.W006",
            )
        )
    return messages


@register(Tags.urls)
def check_websocket_route(app_configs=None, **kwargs):
    """The ASGI application routes WebSockets to the realtime consumer.

    Walks ``ASGI_APPLICATION`` through ProtocolTypeRouter, middleware and
    URLRouter; if any part cannot be looked into, it reports nothing.
    """
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return []  # realtime.E002 reports it.
    try:
        application = import_string(path)
    except Exception:
        return []
    if _routes_to_realtime(application) is False:
        return [
            Error(
                f"The ASGI application {path} does not route WebSockets to realtime's consumer.",
                hint="In your asgi.py, route 'websocket' to URLRouter(realtime.routing."
                "websocket_urlpatterns) (inside AllowedHostsOriginValidator(AuthMiddlewareStack(...))).",
                id="realtime.E003",
            )
        ]
    return []


#: Modules that need Django set up when they are imported.
_NEED_SETUP = ("realtime.routing", "realtime.consumers", "channels.auth")
_SETUP_CALLS = {"get_asgi_application", "setup"}


@register(Tags.compatibility)
def check_asgi_import_order(app_configs=None, **kwargs):
    """asgi.py must set Django up before it imports the WebSocket routes.

    Under ``manage.py`` Django is already set up, so a wrong order only fails
    when daphne imports the module; this reads the module's source instead.
    """
    path = getattr(settings, "ASGI_APPLICATION", None)
    module = path.rpartition(".")[0] if path else ""
    try:
        spec = importlib.util.find_spec(module) if module else None
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except Exception:
        return []  # nothing to read; E002 and E003 speak for a missing application
    setup_line = None
    for node in tree.body:
        if setup_line is None and any(_is_setup_call(inner) for inner in ast.walk(node)):
            setup_line = node.lineno
        imported = _imported_needing_setup(node)
        if imported and setup_line is None:
            return [
                Warning(
                    f"{spec.origin} imports {imported} (line {node.lineno}) before "
                    "get_asgi_application() runs: daphne will fail to load it with "
                    "AppRegistryNotReady or ImproperlyConfigured.",
                    hint="Call get_asgi_application() first, then import channels.auth and "
                    "realtime.routing (see the asgi.py in the README).",
                    id="realtime.W009",
                )
            ]
    return []


def _is_setup_call(node):
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in _SETUP_CALLS


def _imported_needing_setup(node):
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
        if any(name == needed or name.startswith(needed + ".") for needed in _NEED_SETUP):
            return name
    return None


def _routes_to_realtime(app, depth=0):
    """True: found; False: certainly absent; None: cannot tell."""
    from channels.routing import ProtocolTypeRouter, URLRouter

    from .consumers import RealtimeConsumer

    if depth > 30:
        return None
    consumer = getattr(app, "consumer_class", None)
    if consumer is not None:
        return isinstance(consumer, type) and issubclass(consumer, RealtimeConsumer)
    if isinstance(app, ProtocolTypeRouter):
        websocket = app.application_mapping.get("websocket")
        return False if websocket is None else _routes_to_realtime(websocket, depth + 1)
    if isinstance(app, URLRouter):
        found = [_routes_to_realtime(route.callback, depth + 1) for route in app.routes]
        if True in found:
            return True
        return None if None in found else False
    for attribute in ("application", "inner", "app"):
        inner = getattr(app, attribute, None)
        if inner is not None:
            return _routes_to_realtime(inner, depth + 1)
    return None


#: The first daphne that caps frame and message sizes (CVE-2026-44545).
SAFE_DAPHNE = (4, 2, 3)


@register(Tags.security)
def check_daphne_version(app_configs=None, **kwargs):
    """daphne before 4.2.2 buffers a frame of any size before the application sees it."""
    try:
        import daphne
    except ImportError:
        return []
    version = str(getattr(daphne, "__version__", ""))
    try:
        installed = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        return []
    if installed >= SAFE_DAPHNE:
        return []
    return [
        Warning(
            f"daphne {version} is installed: versions before 4.2.2 read WebSocket frames of any "
            "size into memory before realtime can refuse them (CVE-2026-44545).",
            hint='pip install "daphne>=4.2.3"',
            id="realtime.W008",
        )
    ]


@register(Tags.compatibility)
def check_presence(app_configs=None, **kwargs):
    """Presence entries must outlive the interval between two heartbeats."""
    from .presence import DEFAULT_TTL

    config = _config_or_none()
    if config is None:
        return []
    ttl = config["PRESENCE"].get("TTL", DEFAULT_TTL)
    if config["HEARTBEAT_INTERVAL"] >= ttl:
        return [
            Warning(
                f'REALTIME["HEARTBEAT_INTERVAL"] ({config["HEARTBEAT_INTERVAL"]} s) is not shorter '
                f"than the presence TTL ({ttl} s): connected users drop out of presence between pings.",
                hint='Make REALTIME["PRESENCE"]["TTL"] at least twice HEARTBEAT_INTERVAL.',
                id="realtime.W004",
            )
        ]
    return []


@register(Tags.security)
def check_publish_tokens(app_configs=None, **kwargs):
    """Tokens in ``REALTIME["PUBLISH_TOKENS"]`` must be long random secrets."""
    from .tokens import MIN_SECRET_LENGTH

    config = _config_or_none()
    if config is None:
        return []
    return [
        Error(
            f'The secret of publish token {token["name"]!r} in REALTIME["PUBLISH_TOKENS"] is '
            f"{'empty' if not token['secret'] else 'shorter than %d characters' % MIN_SECRET_LENGTH}: "
            "it can be guessed.",
            hint='Generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"',
            id="realtime.E004",
        )
        for token in config["PUBLISH_TOKENS"]
        if len(token["secret"]) < MIN_SECRET_LENGTH
    ]


@register(Tags.urls)
def check_publish_api(app_configs=None, **kwargs):
    """A mounted publish API needs a way to create tokens."""
    from django.apps import apps
    from django.urls import NoReverseMatch, reverse

    config = _config_or_none()
    if config is None or config["PUBLISH_TOKENS"] or apps.is_installed("django.contrib.admin"):
        return []
    try:
        reverse("realtime:publish")
    except NoReverseMatch:
        return []
    except Exception:
        return []  # a broken URLconf is reported by Django's own checks.
    return [
        Warning(
            "The HTTP publish API is mounted, but tokens are created in the admin and "
            'django.contrib.admin is not installed, and REALTIME["PUBLISH_TOKENS"] is empty: '
            "every request will be refused.",
            hint='Install django.contrib.admin, or list tokens in REALTIME["PUBLISH_TOKENS"], '
            "or do not include realtime.urls.",
            id="realtime.W007",
        )
    ]


@register(Tags.security)
def check_metrics(app_configs=None, **kwargs):
    """Metrics that are on need prometheus_client, and a token or an address allowlist."""
    config = _config_or_none()
    if config is None or not config["METRICS"]["ENABLED"]:
        return []
    if importlib.util.find_spec("prometheus_client") is None:
        return [
            Error(
                'REALTIME["METRICS"]["ENABLED"] is True but prometheus_client is not installed: '
                "the metrics endpoint and every connection would fail.",
                hint='pip install "django-realtime-notify[metrics]"',
                id="realtime.E007",
            )
        ]
    if not config["METRICS"]["TOKEN"] and not config["METRICS"]["ALLOW_IPS"]:
        return [
            Warning(
                'REALTIME["METRICS"] is enabled with neither a TOKEN nor ALLOW_IPS: anyone who '
                "reaches <realtime urls>/metrics reads how many users are connected and what they do.",
                hint='Set REALTIME["METRICS"]["TOKEN"] (from the environment) and/or '
                '["ALLOW_IPS"] (your Prometheus server\'s address); see docs/operations.md.',
                id="realtime.W011",
            )
        ]
    return []


#: The Django feature releases realtime is tested on (noxfile.py); keep in step
#: with pyproject.toml's ``Django`` range and its classifiers.
TESTED_DJANGO = ((5, 2), (6, 0), (6, 1))


@register(Tags.compatibility)
def check_django_version(app_configs=None, **kwargs):
    """An older Django than realtime needs is an error; a newer, untested one a warning."""
    import django

    release = tuple(django.VERSION[:2])
    tested = ", ".join("%d.%d" % version for version in TESTED_DJANGO)
    if release < min(TESTED_DJANGO):
        return [
            Error(
                f"Django {django.get_version()} is older than realtime supports (tested: {tested}).",
                hint=f'pip install "Django~={"%d.%d" % min(TESTED_DJANGO)}.0"',
                id="realtime.E006",
            )
        ]
    if release not in TESTED_DJANGO:
        return [
            Warning(
                f"Django {django.get_version()} is newer than the releases realtime is tested on ({tested}).",
                hint="Run its test suite on this Django (noxfile.py) before relying on it, "
                "or pin the tested release.",
                id="realtime.W010",
            )
        ]
    return []
