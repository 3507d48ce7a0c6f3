"""What applications call: :func:`notify`, :func:`notify_many` and their async twins."""

import asyncio
import logging
import time
import uuid

from asgiref.sync import sync_to_async
from django.db import transaction

from . import envelope, layer, metrics, store
from .conf import setting
from .exceptions import EnvelopeError, RealtimeError
from .store import Entry, Published
from .streams import resolve_targets, user_stream, validate_stream

__all__ = [
    "notify",
    "anotify",
    "notify_many",
    "anotify_many",
    "positions",
    "reset_stream",
    "disconnect_user",
    "adisconnect_user",
    "recheck_sessions",
    "Published",
]

logger = logging.getLogger("realtime")

_TARGET_LISTS = (list, tuple, set, frozenset)


def notify(target, type, payload=None, *, persist=True, idempotency_key=None, after_commit=False, inbox=None):
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

    Inside ``transaction.atomic()`` the message is appended in the caller's
    transaction (atomic with their data) and pushed when the outermost block
    commits, so a rolled-back change notifies nobody. The stream's row stays
    locked until then; with ``after_commit=True`` the append instead waits for
    the caller's commit and runs in a short transaction of its own (see
    docs/notify.md), and ``notify()`` returns None. If the channel layer is
    unreachable the message is still stored, the failure is logged, and
    connected clients recover it on their next heartbeat.

    ``inbox=True`` makes the message an item of its recipients' inboxes
    (unread counts, mark read: :mod:`realtime.inbox`); the default, None,
    means: if ``type`` is in ``REALTIME["INBOX_TYPES"]``.

    Returns a :class:`~realtime.store.Published` (``stream``, ``seq``, ``id``,
    ``text``) for a single target, or a list of them for a list of targets.
    """
    _refuse_event_loop()
    streams = resolve_targets(target)
    inbox = _inbox(type, inbox, persist)
    payload_json = _encode(type, payload, streams, inbox)
    _check_key(idempotency_key, persist)
    entries = [Entry(name, type, payload_json, idempotency_key, inbox) for name in streams]
    results = _publish(entries, persist, after_commit)
    if results is None or isinstance(target, _TARGET_LISTS):
        return results
    return results[0]


def notify_many(messages, *, persist=True, after_commit=False):
    """Publish many messages, each with its own target and payload, in one transaction.

    ``messages`` is an iterable of ``(target, type, payload)`` tuples, or of
    dicts with the keys ``target``, ``type`` and optionally ``payload``,
    ``idempotency_key``, ``inbox`` and ``persist`` (default: the ``persist``
    argument)::

        notify_many((member, "project.invited", {"project": p.pk, "role": role})
                    for member, role in invitations)

    Every message is validated before anything is stored: an invalid one
    raises the error :func:`notify` would, its text starting with
    ``messages[<index>]:`` and its ``index`` attribute naming the item.
    The messages are stored with a constant number of statements whatever
    their number, streams locked in name order so concurrent batches cannot
    deadlock, and pushed together on commit.

    Returns one result per item, as :func:`notify` returns it for that
    item's target (a list for a list target); None with ``after_commit=True``
    inside a transaction.
    """
    _refuse_event_loop()
    stored, ephemeral, shapes = [], [], []
    for index, item in enumerate(messages):
        try:
            target, type_, payload, key, keep, inbox = _item(item, persist)
            streams = resolve_targets(target)
            inbox = _inbox(type_, inbox, keep)
            payload_json = _encode(type_, payload, streams, inbox)
            _check_key(key, keep)
        except RealtimeError as exc:
            exc.index = getattr(exc, "index", index)
            exc.args = (f"messages[{index}]: {exc}",)
            raise
        batch = stored if keep else ephemeral
        shapes.append((batch is stored, len(batch), len(streams), isinstance(target, _TARGET_LISTS)))
        batch.extend(Entry(name, type_, payload_json, key, inbox) for name in streams)
    if not shapes:
        return []
    layer.get_layer()
    if after_commit and _deferred(stored, ephemeral):
        return None
    results = {True: _publish(stored, True, False) or [], False: _publish(ephemeral, False, False) or []}
    out = []
    for keep, start, count, many in shapes:
        mine = results[keep][start : start + count]
        out.append(mine if many else mine[0])
    return out


async def anotify(target, type, payload=None, *, persist=True, idempotency_key=None, after_commit=False, inbox=None):
    """Async twin of :func:`notify`, for consumers and async views."""
    return await sync_to_async(notify, thread_sensitive=True)(
        target,
        type,
        payload,
        persist=persist,
        idempotency_key=idempotency_key,
        after_commit=after_commit,
        inbox=inbox,
    )


async def anotify_many(messages, *, persist=True, after_commit=False):
    """Async twin of :func:`notify_many`."""
    return await sync_to_async(notify_many, thread_sensitive=True)(
        list(messages), persist=persist, after_commit=after_commit
    )


def _item(item, persist):
    if isinstance(item, dict):
        unknown = set(item) - {"target", "type", "payload", "idempotency_key", "persist", "inbox"}
        if unknown or "target" not in item or "type" not in item:
            raise EnvelopeError(
                "Give each message as (target, type, payload) or a dict with 'target', 'type' and "
                f"optionally 'payload', 'idempotency_key', 'persist', 'inbox'; got keys {sorted(item)}."
            )
        keep = item.get("persist", persist)
        if not isinstance(keep, bool):
            raise EnvelopeError("'persist' must be True or False.")
        key = item.get("idempotency_key")
        return item["target"], item["type"], item.get("payload"), key, keep, item.get("inbox")
    if isinstance(item, tuple) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None, None, persist, None
    raise EnvelopeError(
        f"Give each message as (target, type, payload) or a dict; got {type(item).__name__}."
    )


def _encode(type_, payload, streams, inbox=False):
    """Validate ``type_`` and ``payload`` for ``streams``; return the payload's JSON text."""
    envelope.validate_type(type_)
    payload_json = envelope.encode_payload(payload)
    envelope.check_size(type_, max(streams, key=len), payload_json, setting("MAX_MESSAGE_SIZE"), inbox)
    return payload_json


def _inbox(type_, inbox, persist):
    """Whether a message of ``type_`` is an inbox item (``inbox`` as given: True, False or None)."""
    if inbox is None:
        return persist and type_ in setting("INBOX_TYPES")
    if not isinstance(inbox, bool):
        raise EnvelopeError(f"inbox must be True, False or None, got {inbox!r}.")
    if inbox and not persist:
        raise EnvelopeError("inbox=True needs persist=True: inbox items are stored to be read later.")
    return inbox


def _check_key(key, persist):
    if key is None:
        return
    if not persist:
        raise EnvelopeError("idempotency_key needs persist=True: ephemeral messages are not stored.")
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise EnvelopeError("idempotency_key must be a string of 1-200 characters.")


def _publish(entries, persist, after_commit):
    """Store (unless ephemeral) and push ``entries``; their results, or None when deferred."""
    if not entries:
        return []
    # Before anything is stored: a layer that cannot exist is a configuration error.
    layer.get_layer()
    if after_commit and _deferred(entries if persist else [], [] if persist else entries):
        return None
    using = store.db_alias()
    if persist:
        started = time.perf_counter()
        results = store.append_many(entries, using=using)
        metrics.publish_seconds.observe(time.perf_counter() - started)
    else:
        results = []
        for e in entries:
            message_id = uuid.uuid4().hex
            results.append(Published(e.stream, None, message_id, envelope.build(e.type, e.stream, None, e.payload_json, id=message_id)))
    fresh = [r for r in results if r.created]
    if fresh:
        _on_commit(_Push, fresh, using)
    return results


class _Hook:
    """A commit hook carrying what one call published."""

    def __init__(self, items):
        self.items = list(items)


class _Push(_Hook):
    def __call__(self):
        metrics.count_published(result.stream for result in self.items)
        layer.send([layer.message(result) for result in self.items])


class _Append(_Hook):
    """``after_commit=True``: append in a short transaction of its own, after the caller's commit."""

    def __call__(self):
        stored = [entry for keep, entry in self.items if keep]
        ephemeral = [entry for keep, entry in self.items if not keep]
        try:
            _publish(stored, True, False)
            _publish(ephemeral, False, False)
        except Exception:
            # The caller's transaction has committed; raising now would turn
            # their success into an error without bringing the message back.
            logger.exception(
                "realtime: %d message(s) published with after_commit=True could not be stored "
                "after the transaction committed (streams: %s).",
                len(stored),
                ", ".join(sorted({entry.stream for entry in stored}))[:500],
            )


def _deferred(stored, ephemeral):
    """Register an after-commit append if a transaction is open; True if it was."""
    using = store.db_alias()
    if not transaction.get_connection(using).in_atomic_block:
        return False
    _on_commit(_Append, [(True, e) for e in stored] + [(False, e) for e in ephemeral], using)
    return True


def _on_commit(kind, items, using):
    # One hook per call, never merged into an earlier one: Django's
    # captureOnCommitCallbacks and savepoint rollbacks count hooks by position.
    # The hooks of one commit run back to back, and the sender sends what
    # queued up meanwhile as one batch (realtime.sender).
    transaction.on_commit(kind(items), using=using, robust=kind is _Append)


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

