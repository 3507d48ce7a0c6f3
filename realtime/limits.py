"""How many sockets one user, or one anonymous client address, may hold open.

Every socket costs its server process memory (tens of KiB) and a share of
every fan-out, so a logged-in user must not be able to open thousands. A
socket over ``MAX_CONNECTIONS_PER_USER`` (anonymous ones: over
``MAX_CONNECTIONS_PER_IP`` per client address, see :mod:`realtime.clientip`)
gets an ``error`` frame ``too_many_connections`` and is closed with 4029.

Counts are exact within a server process. When the presence backend is
shared (Redis), they also hold across processes: the backend keeps a claim
per socket that the heartbeat refreshes, so claims of a crashed process expire
with the presence TTL. If that store is unreachable, sockets are admitted
(and the per-process count still applies): a presence outage must not lock
everyone out.
"""

import logging

from . import clientip, presence
from .conf import setting

logger = logging.getLogger("realtime")

#: Sockets of this process per limit key.
_holders = {}


def limit_key(consumer):
    """``(key, limit)`` for a connection: its user, or its client address if anonymous."""
    user = consumer.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}", setting("MAX_CONNECTIONS_PER_USER")
    return f"ip:{clientip.from_scope(consumer.scope)}", setting("MAX_CONNECTIONS_PER_IP")


async def admit(consumer):
    """Count ``consumer`` against its limit; False (and nothing counted) if it is over."""
    key, limit = limit_key(consumer)
    holders = _holders.setdefault(key, set())
    if len(holders) >= limit:
        return False
    holders.add(consumer.connection_id)
    consumer.limit_key = key
    backend = presence.get_backend()
    if backend.shared:
        try:
            admitted = await backend.claim(key, consumer.connection_id, limit)
        except Exception:
            logger.warning("realtime: cannot count connections in the presence store; admitting", exc_info=True)
            admitted = True
        if not admitted:
            _forget_local(key, consumer.connection_id)
            consumer.limit_key = None
            return False
    return True


def release(consumer):
    """Stop counting ``consumer`` (idempotent; safe for a connection never admitted)."""
    key = getattr(consumer, "limit_key", None)
    if key is None:
        return
    consumer.limit_key = None
    _forget_local(key, consumer.connection_id)
    backend = presence.get_backend()
    if backend.shared:
        presence.in_background(backend.unclaim(key, consumer.connection_id))


def _forget_local(key, connection_id):
    holders = _holders.get(key)
    if holders is not None:
        holders.discard(connection_id)
        if not holders:
            del _holders[key]


def local_count(key):
    """Sockets this process counts under ``key`` (``"user:<pk>"`` or ``"ip:<address>"``)."""
    return len(_holders.get(key, ()))
