"""What applications call: :func:`notify` and its async twin :func:`anotify`."""

import asyncio
import logging
import uuid
from functools import partial

from asgiref.sync import sync_to_async
from django.db import transaction

from . import envelope, layer, store
from .conf import setting
from .exceptions import EnvelopeError, RealtimeError
from .store import Published
from .streams import resolve_targets, user_stream, validate_stream

__all__ = [
    "notify",
    "anotify",
    "positions",
    "reset_stream",
    "disconnect_user",
    "adisconnect_user",
    "recheck_sessions",
    "Published",
]

logger = logging.getLogger("realtime")


def notify(target, type, payload=None, *, persist=True, idempotency_key=None):
    """Publish a message of ``type`` with ``payload`` to ``target``.

    ``target`` is a stream name (``"broadcast"``, ``"orders"``, ``"project:12"``),
    a user (their private stream), or a list of those. ``payload`` is a dict;
    datetimes, Decimals and UUIDs are converted, anything else JSON cannot carry
    raises :class:`~realtime.exceptions.EnvelopeError` naming its path.

    With ``persist=True`` (the default) the message is appended to each stream's
    log with the next ``seq``, so clients that were away receive it when they
    come back. ``persist=False`` sends an ephemeral message (``seq`` null, never
    replayed) for high-rate, disposable updates. The same ``idempotency_key``
    on a stream yields the first message again and publishes nothing new.

    Inside ``transaction.atomic()`` the push happens when the outermost block
    commits, so a rolled-back change notifies nobody. If the channel layer is
    unreachable the message is still stored, the failure is logged, and
    connected clients recover it on their next heartbeat.

    Returns a :class:`~realtime.store.Published` (``stream``, ``seq``, ``id``,
    ``text``) for a single target, or a list of them for a list of targets.
    """
    _refuse_event_loop()
    streams = resolve_targets(target)
    envelope.validate_type(type)
    payload_json = envelope.encode_payload(payload)
    envelope.check_size(type, max(streams, key=len), payload_json, setting("MAX_MESSAGE_SIZE"))
    # Before anything is stored: a layer that cannot exist is a configuration error.
    layer.get_layer()
    if not persist:
        if idempotency_key is not None:
            raise EnvelopeError("idempotency_key needs persist=True: ephemeral messages are not stored.")
        message_id = uuid.uuid4().hex
        results = [
            Published(name, None, message_id, envelope.build(type, name, None, payload_json, id=message_id))
            for name in streams
        ]
        using = store.db_alias()
        transaction.on_commit(partial(_push, results), using=using)
    else:
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200:
                raise EnvelopeError("idempotency_key must be a string of 1-200 characters.")
        using = store.db_alias()
        with transaction.atomic(using=using):
            # A fixed lock order keeps two multi-stream publishers from deadlocking.
            by_name = {
                name: store.append(name, type, payload_json, idempotency_key=idempotency_key, using=using)
                for name in sorted(streams)
            }
            results = [by_name[name] for name in streams]
            fresh = [r for r in results if r.created]
            if fresh:
                transaction.on_commit(partial(_push, fresh), using=using)
    return results if isinstance(target, (list, tuple, set, frozenset)) else results[0]


async def anotify(target, type, payload=None, *, persist=True, idempotency_key=None):
    """Async twin of :func:`notify`, for consumers and async views."""
    return await sync_to_async(notify, thread_sensitive=True)(
        target, type, payload, persist=persist, idempotency_key=idempotency_key
    )


def positions(streams):
    """Where ``streams`` stand now: ``{"streams": {name: seq}, "epochs": {name: epoch}}``.

    This is the shape a client resumes from (``?resume=``, see
    docs/protocol.md). Render it into a page, read it *before* the data the
    page shows, and a client that connects later receives everything
    published in between; anything already reflected in the page arrives
    again and must be harmless to apply twice.
    """
    heads = store.heads([validate_stream(name) for name in streams])
    return {
        "streams": {name: seq for name, (seq, _) in heads.items()},
        "epochs": {name: epoch for name, (_, epoch) in heads.items() if epoch},
    }


def reset_stream(name):
    """Forget a stream's history and start its seqs again from 1.

    Connected clients and clients that come back with old seqs are sent a
    ``resync`` for it. Returns True if the stream existed.
    """
    _refuse_event_loop()
    epoch = store.reset(validate_stream(name))
    if epoch is None:
        return False
    layer.send([layer.reset(name, epoch)])
    return True


def disconnect_user(user, code=4401):
    """Close every open socket of ``user`` (a user or a pk), on every server process.

    Used on logout and deactivation; the bundled client does not reconnect
    after 4401. Works across processes only with a shared channel layer.
    """
    _refuse_event_loop()
    pk = getattr(user, "pk", user)
    layer.send([layer.revoke(user_stream(pk), pk, code)])


async def adisconnect_user(user, code=4401):
    """Async twin of :func:`disconnect_user`."""
    await sync_to_async(disconnect_user, thread_sensitive=True)(user, code)


def recheck_sessions(user):
    """Have every open socket of ``user`` (a user or a pk) check its session now.

    A socket whose session no longer logs the user in (deleted, expired, or
    signed with an old password hash) closes with 4401. realtime calls this
    whenever a user is saved; call it after ending sessions some other way
    (e.g. deleting them from a cache). Without it, sockets notice at their
    next ping. No-op when ``REALTIME["VERIFY_SESSIONS"]`` is off.
    """
    _refuse_event_loop()
    pk = getattr(user, "pk", user)
    layer.send([layer.recheck(user_stream(pk), pk)])


def _refuse_event_loop():
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RealtimeError(
        "notify() was called from async code (an event loop is running in this "
        "thread). Use 'await realtime.anotify(...)' instead."
    )


def _push(results):
    layer.send([layer.message(result) for result in results])
