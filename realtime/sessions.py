"""Whether the login a socket was opened with still holds.

Channels resolves ``scope["user"]`` once, at the handshake. Django ends a
login in ways no open socket hears of: the session expires or is deleted
(admin, ``clearsessions``, a cache eviction), or its auth hash stops matching
because the password changed (Django rotates it). The consumer asks
:func:`still_logged_in` on pings, at most once per half heartbeat, and at once
when :mod:`realtime.signals` reports that the user was saved.

Checks are cheap because they are shared: those asked for within
:data:`BATCH_WINDOW` on one event loop run together, in one worker thread,
with one query for all database-backed sessions and one per authentication
backend for their users (measured in docs/performance.md).
"""

import asyncio
import weakref
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.backends import ModelBackend
from django.utils import timezone
from django.utils.crypto import constant_time_compare

#: Seconds during which session checks are gathered into one batch.
BATCH_WINDOW = 0.02

_batches = weakref.WeakKeyDictionary()


def session_key(scope):
    """The key of the session a connection was opened with, or None (no session middleware)."""
    session = scope.get("session")
    if session is None:
        return None
    return session.session_key


async def still_logged_in(key, user):
    """True if session ``key`` still logs ``user`` in, judged as Django's ``get_user()`` would.

    The session is read afresh from its store: expired, deleted, an auth hash
    that matches neither the password's nor one made with
    ``SECRET_KEY_FALLBACKS``, an inactive or deleted user, or a backend no
    longer in ``AUTHENTICATION_BACKENDS`` all mean no. Nothing is written
    (where Django would flush or rotate the session, the next HTTP request
    does). Raises what the session store or database raises.
    """
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _Batch()
    return await batch.ask(key, str(user.pk))


class _Batch:
    def __init__(self):
        self._wanted = {}
        self._task = None

    async def ask(self, key, user_pk):
        future = asyncio.get_running_loop().create_future()
        self._wanted.setdefault((key, user_pk), []).append(future)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return await future

    async def _run(self):
        try:
            await asyncio.sleep(BATCH_WINDOW)
        finally:
            wanted, self._wanted = self._wanted, {}
            self._task = None
        try:
            verdicts = await database_sync_to_async(check_many)(list(wanted))
        except Exception as exc:
            for futures in wanted.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for pair, futures in wanted.items():
            for future in futures:
                if not future.done():
                    future.set_result(verdicts[pair])


def check_many(pairs):
    """``{(session_key, user_pk): bool}`` for many sessions at once (synchronous)."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    sessions = _load(store_class, {key for key, _pk in pairs})
    users = _users({_user_ref(data) for data in sessions.values()} - {None})
    verdicts = {}
    for key, user_pk in pairs:
        data = sessions.get(key)
        user = users.get(_user_ref(data)) if data else None
        verdicts[(key, user_pk)] = user is not None and str(user.pk) == user_pk and _hash_matches(data, user)
    return verdicts


def _load(store_class, keys):
    """``{key: session dict}`` of the sessions that exist and have not expired."""
    if hasattr(store_class, "get_model_class"):  # db and cached_db: one query for all
        rows = (
            store_class.get_model_class()
            ._default_manager.filter(session_key__in=keys, expire_date__gt=timezone.now())
            .values_list("session_key", "session_data")
        )
        decoder = store_class()
        return {key: decoder.decode(data) for key, data in rows}
    return {key: data for key in keys if (data := store_class(key).load())}


def _user_ref(data):
    if not data or SESSION_KEY not in data or data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    return data[BACKEND_SESSION_KEY], data[SESSION_KEY]


def _users(refs):
    """``{(backend path, user id): user}`` for the users the backends still return."""
    found = {}
    by_backend = {}
    for path, user_id in refs:
        by_backend.setdefault(path, []).append(user_id)
    for path, user_ids in by_backend.items():
        backend = load_backend(path)
        if type(backend).get_user is ModelBackend.get_user:
            # ModelBackend.get_user, for all of them in one query.
            pk = get_user_model()._meta.pk
            rows = get_user_model()._default_manager.in_bulk([pk.to_python(i) for i in user_ids])
            for user_id in user_ids:
                user = rows.get(pk.to_python(user_id))
                if user is not None and backend.user_can_authenticate(user):
                    found[(path, user_id)] = user
        else:
            for user_id in user_ids:
                user = backend.get_user(get_user_model()._meta.pk.to_python(user_id))
                if user is not None:
                    found[(path, user_id)] = user
    return found


def _hash_matches(data, user):
    # As django.contrib.auth.get_user() verifies the session.
    if not hasattr(user, "get_session_auth_hash"):
        return True
    session_hash = data.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(session_hash, old) for old in user.get_session_auth_fallback_hash())
