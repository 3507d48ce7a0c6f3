"""System checks for the mistakes that bite in production."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

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
