"""Reads and writes of the durable log (synchronous; call from a thread in async code).

Sequence numbers are allocated under the stream row's lock, taken by the
first statement that touches the stream: the row stays locked until the
publishing transaction ends, so a second publisher waits, and a seq can never
be visible before a lower one, be used twice, or be skipped by a rolled-back
publish. Starting with a write (not a plain SELECT) also keeps SQLite from
deadlocking on a read-to-write lock upgrade.

Publishing costs a constant number of round trips, whatever the batch size:

* one message to one existing stream, without an idempotency key, is one
  statement on PostgreSQL (``WITH s AS (UPDATE ... RETURNING) INSERT ...
  SELECT``, the database splicing the seq into the envelope) and two on SQLite
  (``UPDATE ... RETURNING``, ``INSERT``);
* anything else (many streams, idempotency keys, new streams) locks all its
  streams in name order with one statement, so concurrent batches cannot
  deadlock, creates missing streams with one more, checks idempotency keys with
  one query, moves every counter with one ``UPDATE ... FROM (VALUES ...)`` and
  writes every message with multi-row ``INSERT`` statements.

Other database backends take a portable ORM path with the same guarantees, at
a few statements per stream.
"""

import datetime
import json
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from . import envelope, metrics
from .models import Message, Stream, new_epoch

#: Rows per multi-row INSERT and names per IN list: far below every backend's
#: parameter limit (SQLite's is 32,766; 6 parameters per message row).
CHUNK = 500


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


class Entry(NamedTuple):
    """One message to append: its stream, type, encoded payload, idempotency key,
    and whether it is an inbox item (:mod:`realtime.inbox`)."""

    stream: str
    type: str
    payload_json: str
    key: str | None = None
    inbox: bool = False


def db_alias():
    """The database the log is written to (honours database routers)."""
    return router.db_for_write(Message)


def append(name, type_, payload_json, *, idempotency_key=None, using=None):
    """Append one message to stream ``name``; return its :class:`Published`.

    With an ``idempotency_key`` already used on this stream, the earlier
    message is returned and nothing is written.
    """
    return append_many([Entry(name, type_, payload_json, idempotency_key)], using=using)[0]


def append_many(entries, using=None):
    """Append :class:`Entry` items, in order, in one transaction; return one :class:`Published` each.

    Joins the caller's transaction when there is one (without a savepoint:
    a failure aborts it, as a failed ``save()`` would), so the messages commit
    or roll back with the caller's data. Entries of one stream get
    consecutive seqs in list order; an entry whose key matches an earlier
    message of its stream (stored, or earlier in ``entries``) yields that
    message with ``created=False``.
    """
    using = using or db_alias()
    if not entries:
        return []
    connection = connections[using]
    stamp = timezone.now()
    if len(entries) == 1 and entries[0].key is None and connection.vendor == "postgresql":
        # One statement is atomic by itself: no BEGIN/COMMIT round trips.
        result = _append_one_postgresql(connection, entries[0], stamp)
        if result is not None:
            return [result]
    if len(entries) == 1 and entries[0].key is None and connection.vendor == "sqlite":
        result = _append_one_sqlite(connection, entries[0], stamp)
        if result is not None:
            return [result]
    with transaction.atomic(using=using, savepoint=False):
        if connection.vendor in ("postgresql", "sqlite"):
            return _Batch(connection, entries, stamp).run()
        return _append_portable(using, entries, stamp)


def _tables(connection):
    quote = connection.ops.quote_name
    return quote(Stream._meta.db_table), quote(Message._meta.db_table)


def _append_one_postgresql(connection, entry, stamp):
    """One message to an existing stream in one round trip; None if the stream does not exist yet."""
    streams, messages = _tables(connection)
    message_id = uuid.uuid4().hex
    head, tail = envelope.halves(
        entry.type, entry.stream, entry.payload_json, id=message_id, ts=_iso(stamp), inbox=entry.inbox
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH s AS (UPDATE {streams} SET last_seq = last_seq + 1, inbox_head = inbox_head + %s "
            f"WHERE name = %s RETURNING id, last_seq, inbox_head) "
            f"INSERT INTO {messages} (stream_id, seq, type, envelope, created_at, idempotency_key, inbox_seq) "
            f"SELECT s.id, s.last_seq, %s, %s::text || s.last_seq::text || %s::text, %s, NULL, "
            f"CASE WHEN %s THEN s.inbox_head END FROM s RETURNING seq",
            [int(entry.inbox), entry.stream, entry.type, head, tail, stamp, entry.inbox],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return Published(entry.stream, row[0], message_id, f"{head}{row[0]}{tail}")


def _append_one_sqlite(connection, entry, stamp):
    """One message to an existing stream in two statements; None if the stream does not exist yet.

    Runs on the sqlite3 connection itself, in its own ``BEGIN IMMEDIATE``
    transaction when Django is in autocommit mode: Django's ``atomic()`` and
    cursor wrappers cost more than the statements (measured: ~60 % of a
    publish). With ``DEBUG`` or a query capture on, Django's cursor is used,
    so the statements show up in ``connection.queries``.
    """
    streams, messages = _tables(connection)
    if connection.queries_logged:
        with transaction.atomic(using=connection.alias, savepoint=False), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {streams} SET last_seq = last_seq + 1, inbox_head = inbox_head + %s "
                f"WHERE name = %s RETURNING id, last_seq, inbox_head",
                [int(entry.inbox), entry.stream],
            )
            row = cursor.fetchone()
            if row is None:
                return None
            result, values = _row(connection, entry, row[0], row[1], row[2], stamp)
            _insert(connection, [values])
            return result
    connection.ensure_connection()
    if connection.in_atomic_block:
        connection.validate_no_broken_transaction()
    own = connection.get_autocommit()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            if own:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(
                f"UPDATE {streams} SET last_seq = last_seq + 1, inbox_head = inbox_head + ? "
                "WHERE name = ? RETURNING id, last_seq, inbox_head",
                (int(entry.inbox), entry.stream),
            )
            row = cursor.fetchone()
            if row is None:
                if own:
                    cursor.execute("ROLLBACK")
                return None
            result, values = _row(connection, entry, row[0], row[1], row[2], stamp)
            cursor.execute(
                f"INSERT INTO {messages} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            if own:
                cursor.execute("COMMIT")
            return result
        except BaseException:
            if own and connection.connection.in_transaction:
                connection.connection.rollback()
            raise
        finally:
            cursor.close()


_COLUMNS = "stream_id, seq, type, envelope, created_at, idempotency_key, inbox_seq"


def _row(connection, entry, stream_pk, seq, inbox_head, stamp):
    """The :class:`Published` of ``entry`` at ``seq`` and its message row's values.

    ``inbox_head`` is the stream's inbox count including this entry.
    """
    message_id = uuid.uuid4().hex
    text = envelope.build(
        entry.type, entry.stream, seq, entry.payload_json, id=message_id, ts=_iso(stamp), inbox=entry.inbox
    )
    values = (
        stream_pk,
        seq,
        entry.type,
        text,
        connection.ops.adapt_datetimefield_value(stamp),
        entry.key,
        inbox_head if entry.inbox else None,
    )
    return Published(entry.stream, seq, message_id, text), values


def _insert(connection, rows):
    _, messages = _tables(connection)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {messages} ({_COLUMNS}) VALUES {placeholders}",
                [value for row in chunk for value in row],
            )


class _Batch:
    """Any number of entries on PostgreSQL or SQLite, in a constant number of statements."""

    def __init__(self, connection, entries, stamp):
        self.connection = connection
        self.entries = entries
        self.stamp = stamp
        self.names = sorted({entry.stream for entry in entries})

    def run(self):
        heads = self._lock(self.names)  # {name: (pk, last_seq, inbox_head)}
        missing = [name for name in self.names if name not in heads]
        if missing:
            self._create(missing)
            heads.update(self._lock(missing))
        earlier = self._earlier_messages(heads)
        results, rows, moved = [], [], set()
        for entry in self.entries:
            stream_pk, last, inbox_head = heads[entry.stream]
            if entry.key is not None and (entry.stream, entry.key) in earlier:
                results.append(earlier[entry.stream, entry.key])
                continue
            seq = last + 1
            inbox_head += entry.inbox
            heads[entry.stream] = (stream_pk, seq, inbox_head)
            moved.add(entry.stream)
            result, values = _row(self.connection, entry, stream_pk, seq, inbox_head, self.stamp)
            results.append(result)
            rows.append(values)
            if entry.key is not None:
                # A later entry with the same key on this stream is its retry.
                earlier[entry.stream, entry.key] = Published(entry.stream, seq, result.id, result.text, created=False)
        if moved:
            self._move([heads[name] for name in sorted(moved)])
            _insert(self.connection, rows)
        return results

    def _lock(self, names):
        """Lock the rows of ``names`` that exist, in name order; return ``{name: (pk, last_seq, inbox_head)}``."""
        streams, _ = _tables(self.connection)
        found = {}
        with self.connection.cursor() as cursor:
            for start in range(0, len(names), CHUNK):
                chunk = names[start : start + CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                if self.connection.vendor == "postgresql":
                    # ORDER BY before FOR UPDATE: rows are locked in name order.
                    sql = (
                        f"SELECT id, name, last_seq, inbox_head FROM {streams} WHERE name IN ({marks}) "
                        f"ORDER BY name FOR UPDATE"
                    )
                else:
                    # SQLite locks the whole database at the first write; a
                    # write that changes nothing takes the lock and reads.
                    sql = (
                        f"UPDATE {streams} SET last_seq = last_seq WHERE name IN ({marks}) "
                        f"RETURNING id, name, last_seq, inbox_head"
                    )
                cursor.execute(sql, chunk)
                found.update((name, (pk, last_seq, inbox)) for pk, name, last_seq, inbox in cursor.fetchall())
        return found

    def _create(self, names):
        # In name order, like the locks: two batches creating the same new
        # streams wait for each other instead of deadlocking.
        streams, _ = _tables(self.connection)
        stamp = self.connection.ops.adapt_datetimefield_value(self.stamp)
        with self.connection.cursor() as cursor:
            for start in range(0, len(names), CHUNK):
                chunk = names[start : start + CHUNK]
                cursor.execute(
                    f"INSERT INTO {streams} (name, last_seq, inbox_head, inbox_floor, epoch, created_at) VALUES "
                    + ", ".join(["(%s, 0, 0, 0, %s, %s)"] * len(chunk))
                    + " ON CONFLICT (name) DO NOTHING",
                    [value for name in chunk for value in (name, new_epoch(), stamp)],
                )

    def _earlier_messages(self, heads):
        """``{(stream, key): Published}`` of stored messages whose keys the entries reuse."""
        keyed = {(entry.stream, entry.key) for entry in self.entries if entry.key is not None}
        if not keyed:
            return {}
        _, messages = _tables(self.connection)
        names = {heads[stream][0]: stream for stream, _ in keyed}
        keys = sorted({key for _, key in keyed})
        found = {}
        with self.connection.cursor() as cursor:
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                cursor.execute(
                    f"SELECT stream_id, idempotency_key, seq, envelope FROM {messages} "
                    f"WHERE stream_id IN ({', '.join(['%s'] * len(names))}) "
                    f"AND idempotency_key IN ({', '.join(['%s'] * len(chunk))})",
                    [*names, *chunk],
                )
                for stream_pk, key, seq, text in cursor.fetchall():
                    stream = names[stream_pk]
                    if (stream, key) in keyed:
                        found[stream, key] = Published(stream, seq, _id_of(text), text, created=False)
        return found

    def _move(self, counters):
        """Set each stream's counters: ``counters`` is ``[(pk, last_seq, inbox_head)]``."""
        streams, _ = _tables(self.connection)
        with self.connection.cursor() as cursor:
            for start in range(0, len(counters), CHUNK):
                chunk = counters[start : start + CHUNK]
                cursor.execute(
                    f"UPDATE {streams} SET last_seq = v.column2, inbox_head = v.column3 FROM (VALUES "
                    + ", ".join(["(%s, %s, %s)"] * len(chunk))
                    + f") AS v WHERE {streams}.id = v.column1",
                    [value for pair in chunk for value in pair],
                )


def _append_portable(using, entries, stamp):
    """The same guarantees through the ORM, for database backends without the SQL above."""
    streams = Stream.objects.using(using)
    names = sorted({entry.stream for entry in entries})
    for name in names:
        # Locks in name order; a missing stream is created (or waited for).
        if not streams.filter(name=name).update(last_seq=F("last_seq")):
            try:
                with transaction.atomic(using=using):
                    streams.create(name=name, last_seq=0)
            except IntegrityError:
                streams.filter(name=name).update(last_seq=F("last_seq"))
    heads = {
        name: (pk, last, inbox)
        for pk, name, last, inbox in streams.filter(name__in=names).values_list("pk", "name", "last_seq", "inbox_head")
    }
    results, rows, earlier = [], [], {}
    connection = connections[using]
    for entry in entries:
        stream_pk, last, inbox_head = heads[entry.stream]
        if entry.key is not None:
            if (entry.stream, entry.key) not in earlier:
                stored = (
                    Message.objects.using(using)
                    .filter(stream_id=stream_pk, idempotency_key=entry.key)
                    .values_list("seq", "envelope")
                    .first()
                )
                if stored is not None:
                    earlier[entry.stream, entry.key] = Published(
                        entry.stream, stored[0], _id_of(stored[1]), stored[1], created=False
                    )
            if (entry.stream, entry.key) in earlier:
                results.append(earlier[entry.stream, entry.key])
                continue
        inbox_head += entry.inbox
        heads[entry.stream] = (stream_pk, last + 1, inbox_head)
        result, _values = _row(connection, entry, stream_pk, last + 1, inbox_head, stamp)
        results.append(result)
        rows.append(Message(stream_id=stream_pk, seq=last + 1, type=entry.type, envelope=result.text,
                            created_at=stamp, idempotency_key=entry.key,
                            inbox_seq=inbox_head if entry.inbox else None))
        if entry.key is not None:
            earlier[entry.stream, entry.key] = Published(entry.stream, last + 1, result.id, result.text, created=False)
    for name in names:
        pk, last, inbox_head = heads[name]
        streams.filter(pk=pk).update(last_seq=last, inbox_head=inbox_head)
    Message.objects.using(using).bulk_create(rows, batch_size=CHUNK)
    return results


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
    started = time.perf_counter()
    rows = list(
        Message.objects.using(using)
        .filter(stream__name=name, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "envelope")[:limit]
    )
    metrics.log_read_seconds.observe(time.perf_counter() - started)
    return rows


def reset(name, using=None):
    """Delete a stream's history and give it a new epoch; return the epoch (None: no such stream).

    Its inbox starts again too: counters at zero, read states dropped.
    """
    from .models import InboxState

    using = using or db_alias()
    epoch = new_epoch()
    with transaction.atomic(using=using):
        if not Stream.objects.using(using).filter(name=name).update(
            last_seq=0, inbox_head=0, inbox_floor=0, epoch=epoch
        ):
            return None
        Message.objects.using(using).filter(stream__name=name).delete()
        InboxState.objects.using(using).filter(stream__name=name).delete()
    return epoch


def prune(*, max_age=None, max_count=None, now=None, using=None):
    """Delete log entries older than ``max_age`` seconds or beyond ``max_count`` per stream.

    The newest message of every stream is always kept, so its seq stays
    readable. A stream's ``inbox_floor`` rises past the inbox items deleted,
    so unread counts stop counting them. Returns the number of messages
    deleted.
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
        doomed = Message.objects.using(using).filter(expired, stream_id=stream_pk, seq__lt=last_seq)
        with transaction.atomic(using=using):
            # Items are pruned oldest first, so the floor is the last one deleted.
            floor = doomed.filter(inbox_seq__isnull=False).aggregate(floor=Max("inbox_seq"))["floor"]
            deleted += doomed.delete()[0]
            if floor is not None:
                Stream.objects.using(using).filter(pk=stream_pk, inbox_floor__lt=floor).update(inbox_floor=floor)
    return deleted
