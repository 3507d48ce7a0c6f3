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
    # Open sockets one user may hold (counted across server processes when
    # presence is shared, else per process); the next one is closed with 4029.
    "MAX_CONNECTIONS_PER_USER": 50,
    # Open anonymous sockets per client IP address (with ALLOW_ANONYMOUS).
    "MAX_CONNECTIONS_PER_IP": 100,
    # Bytes queued for one socket but not yet written to the network; a client
    # that falls this far behind is closed with 4010 and resumes from its seq.
    "MAX_OUTBOUND_BUFFER": 1024 * 1024,
    # Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For is
    # trusted for the client IP (connection limits, publish API failure limits).
    "TRUSTED_PROXIES": [],
    # Re-check on pings (at most once per half heartbeat) that the socket's
    # session still logs its user in: password change, expiry, deletion.
    "VERIFY_SESSIONS": True,
    # Seconds a client has to send complete HTTP request headers to daphne
    # (slowloris protection for every daphne connection; None: off).
    "HANDSHAKE_TIMEOUT": 15,
    # Write frames to daphne's sockets directly (framed once per message);
    # False uses the plain ASGI send for every frame.
    "DAPHNE_FAST_PATH": True,
    # Under daphne, seconds between SIGTERM and closing the sockets with 1001,
    # during which readyz answers 503 so load balancers stop sending new ones.
    "DRAIN_SECONDS": 0,
    # Seconds readyz waits for the database and the channel layer to answer.
    "HEALTH_TIMEOUT": 2,
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
    # Messages pushed together (one notify() to a list, notify_many(), one
    # transaction) that touch more streams than this travel as one layer
    # message to every server process instead of one per stream.
    "WIDE_PUSH_STREAMS": 16,
    # Message types that are inbox items unless notify(..., inbox=False) says
    # otherwise (admin notices always are); see docs/inbox.md.
    "INBOX_TYPES": [],
    # Dotted path to ``(user) -> list[str]``: the streams whose inbox items
    # make up a user's inbox (default: the user's DEFAULT_STREAMS).
    "INBOX_STREAMS": "realtime.inbox.default_inbox_streams",
    # Items one inbox request may name (mark read, archive).
    "INBOX_MAX_ITEMS": 500,
    # HTTP publish API (``POST <realtime urls>/api/publish``): largest request body, in bytes
    # (room for a full batch of ordinary messages).
    "PUBLISH_MAX_BODY": 1024 * 1024,
    # Most messages one batch request may carry.
    "PUBLISH_MAX_BATCH": 1000,
    # Messages one publish token may publish per PUBLISH_RATE_WINDOW seconds: a
    # request counts one, a batch one per message (None: no limit).
    "PUBLISH_RATE_LIMIT": 6000,
    "PUBLISH_RATE_WINDOW": 60,
    # Failed token attempts one client IP may make per PUBLISH_RATE_WINDOW
    # before it gets 429 without its token being looked at (None: no limit).
    "PUBLISH_AUTH_FAILURE_LIMIT": 20,
    # Cache alias holding the publish API's rate-limit counters.
    "PUBLISH_CACHE": "default",
    # Publish tokens kept in settings instead of the database (e.g. read from the
    # environment): a list of {"name": str, "secret": str, "streams": [glob, ...]}.
    "PUBLISH_TOKENS": [],
    # Who is connected: {"BACKEND": dotted path, "TTL": seconds, "URL": redis URL,
    # "SENTINEL": a channels-redis Sentinel host entry, "PREFIX": key prefix}.
    # Empty: Redis when the channel layer is channels_redis (its first host, its
    # prefix), else in this process's memory.
    "PRESENCE": {},
    # Prometheus metrics at ``<realtime urls>/metrics`` (docs/operations.md):
    # {"ENABLED": bool, "TOKEN": bearer token, "ALLOW_IPS": [address or network]}.
    # Off (404) unless ENABLED; with a TOKEN and/or ALLOW_IPS, both must match.
    "METRICS": {},
}

#: What ``REALTIME["METRICS"]`` holds when a key is left out.
METRICS_DEFAULTS = {"ENABLED": False, "TOKEN": "", "ALLOW_IPS": []}


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
        "MAX_CONNECTIONS_PER_USER",
        "MAX_CONNECTIONS_PER_IP",
        "MAX_OUTBOUND_BUFFER",
        "REPLAY_BATCH",
        "WIDE_PUSH_STREAMS",
        "INBOX_MAX_ITEMS",
    ):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive integer, got {value!r}.'
            )
    for key in ("INBOUND_RATE", "HEARTBEAT_INTERVAL", "SWEEP_DELAY", "HEALTH_TIMEOUT"):
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
    for key in ("PUBLISH_RATE_LIMIT", "PUBLISH_AUTH_FAILURE_LIMIT"):
        value = config[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive integer or None, got {value!r}.'
            )
    drain = config["DRAIN_SECONDS"]
    if not isinstance(drain, (int, float)) or isinstance(drain, bool) or drain < 0:
        raise RealtimeConfigError(
            f'settings.REALTIME["DRAIN_SECONDS"] must be a number of seconds, 0 or more, got {drain!r}.'
        )
    timeout = config["HANDSHAKE_TIMEOUT"]
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise RealtimeConfigError(
            f'settings.REALTIME["HANDSHAKE_TIMEOUT"] must be a positive number of seconds or None, got {timeout!r}.'
        )
    for key in ("VERIFY_SESSIONS", "DAPHNE_FAST_PATH", "ALLOW_ANONYMOUS"):
        if not isinstance(config[key], bool):
            raise RealtimeConfigError(f'settings.REALTIME["{key}"] must be True or False, got {config[key]!r}.')
    if config["MAX_OUTBOUND_BUFFER"] < 2 * config["MAX_MESSAGE_SIZE"]:
        # Replays pace themselves at half the buffer; a message must fit beside that.
        raise RealtimeConfigError(
            'settings.REALTIME["MAX_OUTBOUND_BUFFER"] must be at least twice MAX_MESSAGE_SIZE '
            f'({2 * config["MAX_MESSAGE_SIZE"]}), got {config["MAX_OUTBOUND_BUFFER"]}.'
        )
    config["TRUSTED_PROXIES"] = _networks(config["TRUSTED_PROXIES"], 'settings.REALTIME["TRUSTED_PROXIES"]')
    if not isinstance(config["PUBLISH_CACHE"], str) or not config["PUBLISH_CACHE"]:
        raise RealtimeConfigError(
            f'settings.REALTIME["PUBLISH_CACHE"] must be a cache alias, got {config["PUBLISH_CACHE"]!r}.'
        )
    for key in ("PUBLISH_MAX_BODY", "PUBLISH_MAX_BATCH", "PUBLISH_RATE_WINDOW"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RealtimeConfigError(
                f'settings.REALTIME["{key}"] must be a positive integer, got {value!r}.'
            )
    _validate_publish_tokens(config["PUBLISH_TOKENS"])
    _validate_presence(config["PRESENCE"])
    config["METRICS"] = _validate_metrics(config["METRICS"])
    types = config["INBOX_TYPES"]
    if not isinstance(types, (list, tuple, set, frozenset)) or not all(isinstance(t, str) for t in types):
        raise RealtimeConfigError(
            f'settings.REALTIME["INBOX_TYPES"] must be a list of message types, got {types!r}.'
        )
    config["INBOX_TYPES"] = frozenset(types)
    return config


def _networks(entries, where):
    """Return a list of addresses and networks (``TRUSTED_PROXIES``, ``ALLOW_IPS``) as :mod:`ipaddress` networks."""
    import ipaddress

    if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
        raise RealtimeConfigError(f'{where} must be a list of addresses or networks such as "10.0.0.0/8".')
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except (TypeError, ValueError):
            raise RealtimeConfigError(f"{where} has {entry!r}, which is not an IP address or network.") from None
    return tuple(networks)


def _validate_publish_tokens(tokens):
    if not isinstance(tokens, (list, tuple)):
        raise RealtimeConfigError(
            'settings.REALTIME["PUBLISH_TOKENS"] must be a list of dicts with "name", '
            f'"secret" and "streams", got {tokens!r}.'
        )
    names = set()
    for index, token in enumerate(tokens):
        where = f'settings.REALTIME["PUBLISH_TOKENS"][{index}]'
        if not isinstance(token, dict) or set(token) != {"name", "secret", "streams"}:
            raise RealtimeConfigError(
                f'{where} must be a dict with exactly the keys "name", "secret" and "streams".'
            )
        if not isinstance(token["name"], str) or not token["name"] or token["name"] in names:
            raise RealtimeConfigError(f'{where}["name"] must be a unique, non-empty string.')
        names.add(token["name"])
        if not isinstance(token["secret"], str):
            raise RealtimeConfigError(f'{where}["secret"] must be a string.')
        streams = token["streams"]
        if (
            isinstance(streams, str)
            or not isinstance(streams, (list, tuple))
            or not all(isinstance(p, str) and p for p in streams)
        ):
            raise RealtimeConfigError(
                f'{where}["streams"] must be a list of stream name patterns such as "orders:*".'
            )


def _validate_presence(presence):
    where = 'settings.REALTIME["PRESENCE"]'
    if not isinstance(presence, dict):
        raise RealtimeConfigError(f"{where} must be a dict, got {presence!r}.")
    unknown = sorted(set(presence) - {"BACKEND", "TTL", "URL", "SENTINEL", "PREFIX"})
    if unknown:
        raise RealtimeConfigError(
            f"Unknown key(s) in {where}: {', '.join(unknown)}. Known keys: BACKEND, PREFIX, SENTINEL, TTL, URL."
        )
    ttl = presence.get("TTL", 60)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
        raise RealtimeConfigError(f'{where}["TTL"] must be a positive number of seconds, got {ttl!r}.')
    for key in ("BACKEND", "URL", "PREFIX"):
        if key in presence and not (isinstance(presence[key], str) and presence[key]):
            raise RealtimeConfigError(f'{where}["{key}"] must be a non-empty string.')
    sentinel = presence.get("SENTINEL")
    if sentinel is not None and not (
        isinstance(sentinel, dict)
        and isinstance(sentinel.get("master_name"), str)
        and isinstance(sentinel.get("sentinels"), (list, tuple))
        and sentinel["sentinels"]
        and all(isinstance(s, (list, tuple)) and len(s) == 2 for s in sentinel["sentinels"])
    ):
        raise RealtimeConfigError(
            f'{where}["SENTINEL"] must be a dict like {{"sentinels": [("10.0.0.1", 26379), ...], '
            f'"master_name": "mymaster"}}, got {sentinel!r}.'
        )


def _validate_metrics(metrics):
    """Return ``METRICS`` merged over :data:`METRICS_DEFAULTS`, ``ALLOW_IPS`` as networks."""
    where = 'settings.REALTIME["METRICS"]'
    if not isinstance(metrics, dict):
        raise RealtimeConfigError(f"{where} must be a dict, got {metrics!r}.")
    unknown = sorted(set(metrics) - set(METRICS_DEFAULTS))
    if unknown:
        raise RealtimeConfigError(
            f"Unknown key(s) in {where}: {', '.join(unknown)}. Known keys: ALLOW_IPS, ENABLED, TOKEN."
        )
    merged = {**METRICS_DEFAULTS, **metrics}
    if not isinstance(merged["ENABLED"], bool):
        raise RealtimeConfigError(f'{where}["ENABLED"] must be True or False, got {merged["ENABLED"]!r}.')
    if not isinstance(merged["TOKEN"], str):
        raise RealtimeConfigError(f'{where}["TOKEN"] must be a string.')
    merged["ALLOW_IPS"] = _networks(merged["ALLOW_IPS"], f'{where}["ALLOW_IPS"]')
    return merged


def setting(key):
    """Return one merged ``REALTIME`` value."""
    return get_config()[key]


@receiver(setting_changed)
def _reset_config(*, setting, **kwargs):
    if setting == "REALTIME":
        get_config.cache_clear()
