"""The ``REALTIME`` setting: one dict, merged over defaults, read lazily.

Nothing here reads settings at import time. :func:`get_config` caches the merged
dict and the cache is dropped whenever Django's ``setting_changed`` fires (tests
using ``override_settings`` see their values at once).
"""

from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import RealtimeConfigError

DEFAULTS = {
    # Let connections without a logged-in user in (they get ``broadcast`` only).
    "ALLOW_ANONYMOUS": False,
    # Dotted path to ``(user, stream) -> bool`` (sync or async): may this user read it?
    "AUTHORIZE": "realtime.streams.default_authorize",
    # Dotted path to ``(user) -> list[str]``: streams a connection joins on connect.
    "DEFAULT_STREAMS": "realtime.streams.default_streams",
    # Channel layer alias used for live delivery.
    "CHANNEL_LAYER": "default",
    # Largest encoded envelope ``notify()`` accepts, in bytes of UTF-8.
    "MAX_MESSAGE_SIZE": 64 * 1024,
    # Largest frame a client may send; a larger one closes the socket with 1009.
    "MAX_INBOUND_SIZE": 64 * 1024,
    # Client frames allowed per second (sustained) and in a burst; beyond: close 1008.
    "INBOUND_RATE": 20,
    "INBOUND_BURST": 60,
    # Invalid frames tolerated on one connection before it is closed with 1008.
    "MAX_INVALID_FRAMES": 20,
    # Streams one connection may join.
    "MAX_STREAMS_PER_CONNECTION": 100,
    # How often the bundled client pings, in seconds; sent to clients in ``welcome``.
    "HEARTBEAT_INTERVAL": 25,
    # Keep log entries at least this many seconds (None: forever) ...
    "RETENTION_SECONDS": 7 * 24 * 3600,
    # ... and at most this many per stream (None: no limit). Pruned by ``realtime_prune``.
    "RETENTION_COUNT": 10_000,
    # Messages read from the log per query when replaying or filling a gap.
    "REPLAY_BATCH": 500,
    # After live traffic on a stream, check the log this many seconds later for
    # messages the channel layer dropped at the tail of a burst.
    "SWEEP_DELAY": 1.0,
}


@lru_cache(maxsize=None)
def get_config():
    """Return the ``REALTIME`` setting merged over :data:`DEFAULTS`.

    Raises :class:`~realtime.exceptions.RealtimeConfigError` naming the key for
    an unknown key or a value of the wrong kind.
    """
    user = getattr(settings, "REALTIME", {}) or {}
    if not isinstance(user, dict):
        raise RealtimeConfigError("settings.REALTIME must be a dict.")
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise RealtimeConfigError(
            "Unknown key(s) in settings.REALTIME: %s. Known keys: %s."
            % (", ".join(unknown), ", ".join(sorted(DEFAULTS)))
        )
    config = {**DEFAULTS, **user}
    for key in (
        "MAX_MESSAGE_SIZE",
        "MAX_INBOUND_SIZE",
        "INBOUND_BURST",
        "MAX_INVALID_FRAMES",
        "MAX_STREAMS_PER_CONNECTION",
        "REPLAY_BATCH",
    ):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive integer, got {value!r}.'
            )
    for key in ("INBOUND_RATE", "HEARTBEAT_INTERVAL", "SWEEP_DELAY"):
        value = config[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive number, got {value!r}.'
            )
    for key in ("RETENTION_SECONDS", "RETENTION_COUNT"):
        value = config[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive integer or None, got {value!r}.'
            )
    return config


def setting(key):
    """Return one merged ``REALTIME`` value."""
    return get_config()[key]


@receiver(setting_changed)
def _reset_config(*, setting, **kwargs):
    if setting == "REALTIME":
        get_config.cache_clear()
