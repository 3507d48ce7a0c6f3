"""Whether the login a socket was opened with still holds.

Channels resolves ``scope["user"]`` once, at the handshake. Django ends a
login in ways no open socket hears of: the session expires or is deleted
(admin, ``clearsessions``, a cache eviction), or its auth hash stops matching
because the password changed (Django rotates it). The consumer asks
:func:`still_logged_in` on pings, at most once per half heartbeat, and at once
when :mod:`realtime.signals` reports that the user was saved.
"""

from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user


def session_key(scope):
    """The key of the session a connection was opened with, or None (no session middleware)."""
    session = scope.get("session")
    if session is None:
        return None
    return session.session_key


async def still_logged_in(key, user):
    """True if session ``key`` still logs ``user`` in, by Django's own rules.

    Reads the session afresh from its store and asks
    :func:`django.contrib.auth.get_user` about it, so expiry, deletion, the
    password hash (with ``SECRET_KEY_FALLBACKS``), ``is_active`` and the
    authentication backend are judged as on the next HTTP request. Nothing is
    written: where Django would flush or rotate the session, that is left to
    the next HTTP request.
    """
    return await database_sync_to_async(_check)(key, str(user.pk))


def _check(key, user_pk):
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    current = get_user(SimpleNamespace(session=_ReadOnlySession(store.load())))
    return current.is_authenticated and str(current.pk) == user_pk


class _ReadOnlySession:
    """The mapping ``get_user()`` reads, ignoring its writes (``flush``, ``cycle_key``)."""

    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def get(self, key, default=None):
        return self._data.get(key, default)

    def __setitem__(self, key, value):
        pass

    def flush(self):
        pass

    def cycle_key(self):
        pass
