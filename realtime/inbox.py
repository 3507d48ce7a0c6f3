"""The notification inbox: unread counts, pages of items, mark read, archive.

An inbox item is a message published with ``inbox=True`` (or of a type in
``INBOX_TYPES``; admin notices always are). It is stored once, in its
stream's log, whatever the number of recipients: a notice to ``broadcast``
is one row. Each inbox item also gets the next number of its stream's inbox
(``Message.inbox_seq``; ``Stream.inbox_head`` counts them), and what a user
has read of a stream is one :class:`~realtime.models.InboxState` row: a
cursor (everything up to it is read) and the few read items above it. So::

    unread = inbox_head - max(read_upto, inbox_floor) - len(read above it)

is two numbers and a short list, whatever the history's size; marking all
read moves the cursor (one row); retention raises ``inbox_floor`` (pruned
items are neither readable nor unread).

Which streams make up a user's inbox is ``REALTIME["INBOX_STREAMS"]``
(default: the user's ``DEFAULT_STREAMS``). Every change is pushed to the
user's own stream as an ``inbox.changed`` message, so every tab and device
updates its badge; it is stored, so a device that was away catches up.
"""

import base64
import binascii
import json

from django.db import IntegrityError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from .conf import setting
from .exceptions import RealtimeError
from .models import InboxState, Message, Stream
from .streams import load_hook, default_streams_of, user_stream, validate_stream

__all__ = [
    "InboxError",
    "unread_count",
    "items",
    "mark_read",
    "mark_all_read",
    "archive",
    "CHANGED",
]

#: The type of the message that tells a user's clients their inbox changed.
CHANGED = "inbox.changed"

#: Items one page may hold.
MAX_PAGE = 100


class InboxError(RealtimeError, ValueError):
    """An inbox request names something the user cannot read or change; nothing was changed.

    ``code`` says which: ``anonymous``, ``unknown_stream``, ``not_an_item``,
    ``too_many``, ``invalid``.
    """

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def default_inbox_streams(user):
    """The default ``INBOX_STREAMS``: the streams a user's connections join (``DEFAULT_STREAMS``)."""
    return default_streams_of(user)


def inbox_streams(user):
    """The names of the streams that feed ``user``'s inbox, in order; anonymous users have none."""
    if user is None or not getattr(user, "is_authenticated", False):
        return []
    names = []
    for name in load_hook("INBOX_STREAMS")(user):
        if validate_stream(name) not in names:
            names.append(name)
    return names


# Reading -------------------------------------------------------------------


def unread_count(user):
    """``{"total": n, "streams": {name: n}, "heads": {name: seq}}``: the user's unread inbox items.

    ``heads`` is each stream's newest seq the counts include: a client that
    receives an item with a seq at or below it knows not to add it again,
    whichever of the two reached it first. Two queries once every stream has
    a state row (one when all of them have): the user's states joined with
    their streams' counters, then the streams that have none yet.
    """
    return _counts(_views(user))


def _counts(views):
    counts = {name: view.unread for name, view in views.items()}
    heads = {name: view.seq for name, view in views.items()}
    return {"total": sum(counts.values()), "streams": counts, "heads": heads}


def items(user, before=None, limit=20):
    """A page of the user's inbox, newest first across its streams.

    Returns ``{"items": [...], "next": cursor or None, "unread": ...}``; pass
    ``next`` as ``before`` for the following page. Each item is the
    message's envelope (``stream``, ``seq``, ``id``, ``ts``, ``type``,
    ``payload``) plus ``read``. Archived items are left out. One indexed
    query per stream, each reading at most ``limit`` rows, whatever the
    history's size.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InboxError("invalid", f"limit must be an integer from 1 to {MAX_PAGE}.")
    views = _views(user)
    bounds = _decode_cursor(before, views)
    candidates, full = [], False
    for name, view in views.items():
        bound = bounds.get(name)
        if view.stream_pk is None or bound == 0:
            continue
        rows = Message.objects.filter(stream_id=view.stream_pk, inbox_seq__gt=view.floor)
        if bound is not None:
            rows = rows.filter(inbox_seq__lt=bound)
        if view.archived:
            rows = rows.exclude(inbox_seq__in=view.archived)
        found = list(rows.order_by("-inbox_seq").values_list("pk", "seq", "inbox_seq", "envelope")[:limit])
        full = full or len(found) == limit
        candidates.extend((pk, name, seq, inbox_seq, text) for pk, seq, inbox_seq, text in found)
    # Newest first across streams: row ids grow in publish order.
    candidates.sort(reverse=True)
    page = candidates[:limit]
    for _pk, name, _seq, inbox_seq, _text in page:
        bounds[name] = min(bounds.get(name) or inbox_seq + 1, inbox_seq)
    result = []
    for _pk, name, seq, inbox_seq, text in page:
        item = json.loads(text)
        item["read"] = views[name].is_read(inbox_seq)
        result.append(item)
    # Some candidates were left for later, or a stream may hold more than it gave.
    more = len(candidates) > len(page) or full
    return {"items": result, "next": _encode_cursor(bounds) if more and page else None, "unread": _counts(views)}


# Changing ------------------------------------------------------------------


def mark_read(user, refs):
    """Mark the items ``refs`` (``(stream, seq)`` pairs or ``{"stream", "seq"}`` dicts) read.

    Returns the new :func:`unread_count`. Items already read stay read.
    """
    return _change(user, refs, archive=False)


def archive(user, refs):
    """Archive the items ``refs``: they are read and no longer listed by :func:`items`."""
    return _change(user, refs, archive=True)


def mark_all_read(user, stream=None):
    """Mark every item of the user's inbox read (or of one of its streams); returns the new counts.

    One row written per stream, whatever the number of unread items.
    Items published after this call's transaction started stay unread.
    """
    names = inbox_streams(user)
    if not names:
        raise InboxError("anonymous", "Only a signed-in user has an inbox.")
    if stream is not None:
        if stream not in names:
            raise InboxError("unknown_stream", f"{stream!r} is not one of this user's inbox streams.")
        names = [stream]
    with transaction.atomic():
        states = _locked_states(user, names)
        heads = dict(Stream.objects.filter(name__in=names).values_list("name", "inbox_head"))
        for name, state in states.items():
            head = heads.get(name, 0)
            if state.read_upto < head or state.read:
                state.read_upto, state.read = max(state.read_upto, head), []
                state.save(update_fields=["read_upto", "read", "updated_at"])
        counts = unread_count(user)
        _announce(user, counts, {"all": stream or "*"})
    return counts


def _change(user, refs, archive):
    names = inbox_streams(user)
    if not names:
        raise InboxError("anonymous", "Only a signed-in user has an inbox.")
    wanted = _parse_refs(refs, names)
    if not wanted:
        return unread_count(user)
    found = _inbox_seqs(wanted)
    missing = [ref for ref in wanted if ref not in found]
    if missing:
        stream, seq = missing[0]
        raise InboxError(
            "not_an_item", f"{stream} #{seq} is not an item of this inbox (no such inbox message)."
        )
    with transaction.atomic():
        states = _locked_states(user, sorted({stream for stream, _ in wanted}))
        floors = dict(Stream.objects.filter(name__in=list(states)).values_list("name", "inbox_floor"))
        for name, state in states.items():
            mine = sorted(found[ref] for ref in wanted if ref[0] == name)
            read = set(state.read)
            read.update(n for n in mine if n > state.read_upto)
            archived = set(state.archived)
            if archive:
                archived.update(mine)
            state.read_upto, state.read = _compact(state.read_upto, read, floors.get(name, 0))
            state.archived = sorted(n for n in archived if n > floors.get(name, 0))
            state.save(update_fields=["read_upto", "read", "archived", "updated_at"])
        counts = unread_count(user)
        change = {"archived" if archive else "read": [[stream, seq] for stream, seq in wanted]}
        _announce(user, counts, change)
    return counts


def _compact(read_upto, read, floor):
    """Move the cursor over read items that follow it; drop what is below it or pruned."""
    read_upto = max(read_upto, floor)
    while read_upto + 1 in read:
        read_upto += 1
    return read_upto, sorted(n for n in read if n > read_upto)


def _announce(user, counts, change):
    from .api import notify

    notify(user_stream(user), CHANGED, {**change, "unread": counts}, inbox=False)


# Internals -----------------------------------------------------------------


def unread_of(head, floor, read_upto, read):
    """Unread items of a stream whose inbox counter is ``head``, pruned up to ``floor``,
    for a user who has read up to ``read_upto`` and ``read`` above it."""
    done = max(read_upto, floor)
    return max(0, head - done - sum(1 for n in read if n > done))


class _View:
    """One stream of a user's inbox: its counters and the user's read state."""

    __slots__ = ("stream_pk", "seq", "head", "floor", "read_upto", "read", "archived")

    def __init__(self, stream_pk=None, seq=0, head=0, floor=0, read_upto=0, read=(), archived=()):
        # seq: the stream's last_seq, read with head in one statement (one snapshot).
        self.stream_pk, self.seq, self.head, self.floor = stream_pk, seq, head, floor
        self.read_upto, self.read, self.archived = read_upto, frozenset(read), list(archived)

    @property
    def unread(self):
        return unread_of(self.head, self.floor, self.read_upto, self.read)

    def is_read(self, inbox_seq):
        return inbox_seq <= self.read_upto or inbox_seq in self.read


def _views(user):
    names = inbox_streams(user)
    if not names:
        raise InboxError("anonymous", "Only a signed-in user has an inbox.")
    views = dict.fromkeys(names)
    for stream_pk, name, seq, head, floor, read_upto, read, archived in InboxState.objects.filter(
        user=user, stream__name__in=names
    ).values_list(
        "stream_id",
        "stream__name",
        "stream__last_seq",
        "stream__inbox_head",
        "stream__inbox_floor",
        "read_upto",
        "read",
        "archived",
    ):
        views[name] = _View(stream_pk, seq, head, floor, read_upto, read, archived)
    missing = [name for name, view in views.items() if view is None]
    if missing:
        for name, view in _start(user, missing).items():
            views[name] = view
    return views


def _start(user, names):
    """Create the state rows of streams the user has none for yet; return their views.

    A user's inbox starts when they joined: items of shared streams
    published before that count as read.
    """
    streams = {
        name: (pk, seq, head, floor)
        for pk, name, seq, head, floor in Stream.objects.filter(name__in=names).values_list(
            "pk", "name", "last_seq", "inbox_head", "inbox_floor"
        )
    }
    joined = getattr(user, "date_joined", None)
    views, new = {}, []
    for name in names:
        if name not in streams:
            views[name] = _View()  # nothing published yet: no row to hang a state on
            continue
        pk, seq, head, floor = streams[name]
        start = 0
        oldest = None
        if joined is not None and head:
            # Through the (stream, seq) index: when everything stored is newer
            # than the user, there is nothing to search (a long backward scan
            # on SQLite otherwise, measured 50 ms for a 100,000-item stream).
            oldest = (
                Message.objects.filter(stream_id=pk).order_by("seq").values_list("created_at", flat=True).first()
            )
        if oldest is not None and oldest < joined:
            before = (
                Message.objects.filter(stream_id=pk, inbox_seq__isnull=False, created_at__lt=joined)
                .order_by("-inbox_seq")
                .values_list("inbox_seq", flat=True)
                .first()
            )
            start = before or 0
        views[name] = _View(pk, seq, head, floor, start)
        new.append(InboxState(user=user, stream_id=pk, read_upto=start))
    if new:
        # Two requests may start the same rows at once: both compute the same start.
        InboxState.objects.bulk_create(new, ignore_conflicts=True)
    return views


def _locked_states(user, names):
    """The user's state rows of ``names`` (created if missing), locked, in name order.

    A stream nothing was published to yet has no row and is left out.
    """
    if connections[InboxState.objects.db].vendor == "sqlite":
        # SQLite locks the whole database at the first write: take it before
        # reading, or two deferred transactions deadlock upgrading their locks.
        InboxState.objects.filter(user=user, stream__name__in=names).update(updated_at=timezone.now())
    views = _views(user)
    names = [name for name in names if views[name].stream_pk is not None]
    states = {
        state.stream.name: state
        for state in InboxState.objects.select_for_update()
        .select_related("stream")
        .filter(user=user, stream__name__in=names)
        .order_by("stream__name")
    }
    for name in names:
        if name not in states:
            try:
                with transaction.atomic():
                    InboxState.objects.create(user=user, stream_id=views[name].stream_pk)
            except IntegrityError:
                pass
            states[name] = (
                InboxState.objects.select_for_update().select_related("stream").get(user=user, stream__name=name)
            )
    return states


def _parse_refs(refs, names):
    if not isinstance(refs, (list, tuple)):
        raise InboxError("invalid", "Give the items as a list of {stream, seq} objects.")
    limit = setting("INBOX_MAX_ITEMS")
    if len(refs) > limit:
        raise InboxError("too_many", f"At most {limit} items per request (INBOX_MAX_ITEMS); got {len(refs)}.")
    wanted = []
    for index, ref in enumerate(refs):
        if isinstance(ref, dict):
            stream, seq = ref.get("stream"), ref.get("seq")
        elif isinstance(ref, (list, tuple)) and len(ref) == 2:
            stream, seq = ref
        else:
            raise InboxError("invalid", f"items[{index}] must be a {{stream, seq}} object.")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or seq > 2**62:
            raise InboxError("invalid", f"items[{index}].seq must be a positive integer.")
        if stream not in names:
            raise InboxError("unknown_stream", f"items[{index}]: {stream!r} is not one of this user's inbox streams.")
        if (stream, seq) not in wanted:
            wanted.append((stream, seq))
    return wanted


def _inbox_seqs(wanted):
    """``{(stream, seq): inbox_seq}`` of the refs that are inbox items. One query."""
    lookup = Q()
    for stream, seq in wanted:
        lookup |= Q(stream__name=stream, seq=seq)
    return {
        (name, seq): inbox_seq
        for name, seq, inbox_seq in Message.objects.filter(lookup, inbox_seq__isnull=False).values_list(
            "stream__name", "seq", "inbox_seq"
        )
    }


def _encode_cursor(bounds):
    raw = json.dumps({name: bound for name, bound in bounds.items() if bound is not None}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor, views):
    if cursor in (None, ""):
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        raise InboxError("invalid", "before is not a cursor this inbox gave out.") from None
    if not isinstance(data, dict) or not all(
        name in views and isinstance(bound, int) and not isinstance(bound, bool) and bound >= 0
        for name, bound in data.items()
    ):
        raise InboxError("invalid", "before is not a cursor this inbox gave out.")
    return dict(data)
