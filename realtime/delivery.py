"""Where one socket stands in each of its streams, and what to do with the next message.

No I/O: the consumer (:mod:`realtime.consumers`) asks, then reads the log or
writes to the socket as told. Per stream it keeps ``last``, the seq of the last
message written to this socket (the client has everything up to it, or is
about to). While a stream catches up from the log it is *held*: live messages
for it wait in a queue, in order, so the client sees every seq once, in
order, whatever the channel layer does.
"""

from enum import Enum


class Live(Enum):
    """What :meth:`Delivery.live` decided for a live message."""

    DROP = "drop"  # not joined, a duplicate, or ephemeral while held
    SEND = "send"  # next in line: write it (``last`` has advanced)
    HELD = "held"  # queued behind a catch-up already running
    GAP = "gap"  # ahead of ``last``: queued; the missing range must be read from the log


def start_position(since, their_epoch, head, epoch):
    """Where a stream starts for a client that holds ``since`` (None: wants new messages only).

    Returns ``(start, reason)``: the seq after which the client gets every
    message, and why it cannot resume where it asked (``"epoch"``: the history
    was reset; ``"ahead"``: it claims more than exists) or None.
    """
    if since is None:
        return head, None
    if their_epoch and epoch and their_epoch != epoch:
        return head, "epoch"
    if since > head:
        return head, "ahead"
    return since, None


class Delivery:
    """The positions and queues of one socket's streams.

    ``limit`` bounds the bytes of live messages queued for all of the socket's
    held streams together: past it, the queue of the stream being added to is
    dropped and that stream marked to be read further from the log
    (everything persisted is there), so replays, however many and however
    long, cannot make live traffic pile up in memory.

    Every open socket keeps one, mostly idle: then it holds its positions and
    two empty dicts (bench/memory.py).
    """

    __slots__ = ("limit", "last", "_held", "_queued_total", "_overflowed")

    def __init__(self, limit):
        self.limit = limit
        self.last = {}
        # {stream: [(seq, text), ...]}: the held streams, each with what waits for it.
        self._held = {}
        self._queued_total = 0
        # Streams whose queue went over the limit (a dict as a set: an empty
        # dict costs 64 bytes, an empty set 216).
        self._overflowed = {}

    def __contains__(self, stream):
        return stream in self.last

    @property
    def streams(self):
        """Names of the joined streams, in joining order."""
        return list(self.last)

    def is_held(self, stream):
        return stream in self._held

    def join(self, stream):
        """Join ``stream``, held until its start is known (see :meth:`hold`)."""
        self.last[stream] = -1
        self.hold(stream)

    def leave(self, stream):
        """Forget ``stream``; True if it was joined."""
        joined = self.last.pop(stream, None) is not None
        self.release(stream)
        self._overflowed.pop(stream, None)
        return joined

    def clear(self):
        for stream in self.streams:
            self.leave(stream)

    def hold(self, stream):
        """Make live messages of ``stream`` wait until :meth:`release`."""
        self._empty(stream)
        self._held[stream] = []

    def release(self, stream):
        """Let live messages of ``stream`` through again; drops what was queued."""
        self._empty(stream)
        self._held.pop(stream, None)
        if not self._held:
            # An emptied dict keeps its table; an idle socket need not.
            self._held = {}

    def _empty(self, stream):
        queue = self._held.get(stream)
        if queue:
            self._queued_total -= sum(len(text) for _seq, text in queue)
            self._held[stream] = []

    @property
    def queued_bytes(self):
        """Bytes of live messages waiting behind catch-ups, all streams together."""
        return self._queued_total

    def has_queued(self, stream):
        return bool(self._held.get(stream))

    def live(self, stream, seq, text):
        """Decide about a live message of ``stream`` (``seq`` None: ephemeral)."""
        last = self.last.get(stream)
        if last is None:
            return Live.DROP
        if stream in self._held:
            if seq is None:
                return Live.DROP
            self._queue(stream, seq, text)
            return Live.HELD
        if seq is None:
            return Live.SEND
        if seq <= last:
            return Live.DROP
        if seq > last + 1:
            self.hold(stream)
            self._queue(stream, seq, text)
            return Live.GAP
        self.last[stream] = seq
        return Live.SEND

    def _queue(self, stream, seq, text):
        size = len(text)
        if self._queued_total + size > self.limit:
            self._empty(stream)
            self._overflowed[stream] = True
            return
        self._held[stream].append((seq, text))
        self._queued_total += size

    def take_overflow(self, stream):
        """True (once) if queued messages of ``stream`` were dropped: read further from the log."""
        return self._overflowed.pop(stream, False)

    def overflowed(self, stream):
        return stream in self._overflowed

    def drain(self, stream):
        """Take the queued messages that follow ``last``, in order, advancing ``last``.

        Returns ``(texts, gap)``: ``gap`` is True when the queue skips a seq,
        whose range must then be read from the log (the rest of the queue is
        committed, so the log has it too).
        """
        queue = self._held.get(stream) or []
        self._empty(stream)
        texts = []
        for seq, text in sorted(queue):
            last = self.last.get(stream)
            if last is None:
                return texts, False
            if seq <= last:
                continue
            if seq > last + 1:
                return texts, True
            self.last[stream] = seq
            texts.append(text)
        return texts, False
