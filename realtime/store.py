"""Reads and writes of the durable log (synchronous; call from a thread in async code).

Sequence numbers are allocated by an ``UPDATE ... SET last_seq = last_seq + 1``
on the stream's row as the first statement that touches the stream: the row
stays locked until the publishing transaction ends, so a second publisher
waits, and a seq can never be visible before a lower one, be used twice, or be
skipped by a rolled-back publish. Starting with a write (not a SELECT) also
keeps SQLite from deadlocking on a read-to-write lock upgrade.
"""

import datetime
import json
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import envelope
from .models import Message, Stream, new_epoch


@dataclass(frozen=True)
class Published:
    """What ``notify()`` did for one stream.

    ``seq`` is None for an ephemeral message. ``created`` is False when the
    idempotency key matched an earlier message, which is returned instead and
    not pushed again.
    """

    stream: str
    seq: int | None
    id: str
    text: str
    created: bool = True


def db_alias():
    """The database the log is written to (honours database routers)."""
    return router.db_for_write(Message)


def _allocate(name, using):
    streams = Stream.objects.using(using)
    if not streams.filter(name=name).update(last_seq=F("last_seq") + 1):
        try:
            with transaction.atomic(using=using):
                streams.create(name=name, last_seq=1)
        except IntegrityError:
            # Another publisher created it first; its row lock now orders us.
            streams.filter(name=name).update(last_seq=F("last_seq") + 1)
    return streams.filter(name=name).values_list("pk", "last_seq").get()


def append(name, type_, payload_json, *, idempotency_key=None, using=None):
    """Append one message to stream ``name``; must run inside ``transaction.atomic``.

    Returns a :class:`Published`. With an ``idempotency_key`` already used on
    this stream, the earlier message is returned and nothing is written.
    """
    using = using or db_alias()
    stream_pk, seq = _allocate(name, using)
    if idempotency_key is not None:
        existing = (
            Message.objects.using(using)
            .filter(stream_id=stream_pk, idempotency_key=idempotency_key)
            .values_list("seq", "envelope")
            .first()
        )
        if existing is not None:
            # We hold the row lock, so giving the seq back keeps the log gapless.
            Stream.objects.using(using).filter(pk=stream_pk).update(
                last_seq=F("last_seq") - 1
            )
            old_seq, text = existing
            return Published(name, old_seq, _id_of(text), text, created=False)
    created_at = timezone.now()
    message_id = uuid.uuid4().hex
    text = envelope.build(
        type_, name, seq, payload_json, id=message_id, ts=_iso(created_at)
    )
    Message.objects.using(using).create(
        stream_id=stream_pk,
        seq=seq,
        type=type_,
        envelope=text,
        created_at=created_at,
        idempotency_key=idempotency_key,
    )
    return Published(name, seq, message_id, text)


def _iso(moment):
    return (
        moment.astimezone(datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _id_of(text):
    return json.loads(text).get("id", "")


def heads(names, using=None):
    """Return ``{name: (last_seq, epoch)}`` for the given streams.

    A stream that has never been published to reports ``(0, "")``: its epoch
    is not known until its first message creates it.
    """
    using = using or db_alias()
    found = {
        name: (seq, epoch)
        for name, seq, epoch in Stream.objects.using(using)
        .filter(name__in=list(names))
        .values_list("name", "last_seq", "epoch")
    }
    return {name: found.get(name, (0, "")) for name in names}


def read_after(name, after, limit, using=None):
    """Return up to ``limit`` ``(seq, envelope)`` pairs of ``name`` with seq > ``after``, in order."""
    using = using or db_alias()
    return list(
        Message.objects.using(using)
        .filter(stream__name=name, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "envelope")[:limit]
    )


def reset(name, using=None):
    """Delete a stream's history and give it a new epoch; return the epoch (None: no such stream)."""
    using = using or db_alias()
    epoch = new_epoch()
    with transaction.atomic(using=using):
        if not Stream.objects.using(using).filter(name=name).update(last_seq=0, epoch=epoch):
            return None
        Message.objects.using(using).filter(stream__name=name).delete()
    return epoch


def prune(*, max_age=None, max_count=None, now=None, using=None):
    """Delete log entries older than ``max_age`` seconds or beyond ``max_count`` per stream.

    The newest message of every stream is always kept, so its seq stays
    readable. Returns the number of messages deleted.
    """
    if max_age is None and max_count is None:
        return 0
    using = using or db_alias()
    now = now or timezone.now()
    deleted = 0
    for stream_pk, last_seq in Stream.objects.using(using).values_list("pk", "last_seq"):
        expired = Q()
        if max_count is not None:
            expired |= Q(seq__lte=last_seq - max_count)
        if max_age is not None:
            expired |= Q(created_at__lt=now - datetime.timedelta(seconds=max_age))
        deleted += (
            Message.objects.using(using)
            .filter(expired, stream_id=stream_pk, seq__lt=last_seq)
            .delete()[0]
        )
    return deleted
