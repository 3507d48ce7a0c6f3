"""Frames from the client: rate limits, parsing, and the commands.

Part of :class:`~realtime.consumers.RealtimeConsumer` (a mixin). Parsing is
:mod:`realtime.protocol`'s and never raises anything but ``ProtocolError``;
here each valid command is carried out: ``ping`` (heal, then pong, and now
and then a session check), ``subscribe``, ``unsubscribe``, ``resume``, and
the inbox's ``inbox.read``, ``inbox.archive`` and ``inbox.read_all``
(:mod:`realtime.inbox`; answered with an ``inbox`` frame of the new counts).
"""

import logging
import time

from channels.db import database_sync_to_async
from django.db import DatabaseError

from . import envelope, metrics, presence, store
from .delivery import start_position
from .protocol import CLOSE_POLICY, CLOSE_TOO_BIG, ProtocolError, parse
from .streams import authorize, user_stream

logger = logging.getLogger("realtime")

#: Refused streams logged at INFO per connection; later ones at DEBUG.
REFUSALS_LOGGED = 5

#: Seconds between two log lines about the same outage (every socket meets it).
OUTAGE_LOG_INTERVAL = 60.0
_logged_at = {}


def first_in_a_while(what):
    """True at most once per :data:`OUTAGE_LOG_INTERVAL` for ``what``, in this process."""
    now = time.monotonic()
    if now - _logged_at.get(what, -OUTAGE_LOG_INTERVAL) < OUTAGE_LOG_INTERVAL:
        return False
    _logged_at[what] = now
    return True


class ClientFrames:
    """The client's side of the protocol, for :class:`~realtime.consumers.RealtimeConsumer`."""

    async def receive(self, text_data=None, bytes_data=None):
        if self.hub is None or self._closing:
            return
        if not self._take_token():
            await self.close(code=CLOSE_POLICY)
            return
        if text_data is None:
            await self._invalid_frame("binary_frame", "Binary frames are not part of the protocol; send JSON text.")
            return
        limit = self.config["MAX_INBOUND_SIZE"]
        if len(text_data) > limit or (len(text_data) * 4 > limit and len(text_data.encode("utf-8", "surrogatepass")) > limit):
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            command = parse(text_data, self.config["MAX_STREAMS_PER_CONNECTION"], self.config["INBOX_MAX_ITEMS"])
        except ProtocolError as exc:
            await self._invalid_frame(exc.code, str(exc))
            return
        if command.type.startswith("inbox."):
            await self._on_inbox(command)
            return
        await getattr(self, f"_on_{command.type}")(command)

    async def _on_inbox(self, command):
        from . import inbox

        def change():
            if command.type == "inbox.read_all":
                return inbox.mark_all_read(self.user, command.stream)
            if command.type == "inbox.archive":
                return inbox.archive(self.user, command.items)
            return inbox.mark_read(self.user, command.items)

        try:
            unread = await database_sync_to_async(change)()
        except inbox.InboxError as exc:
            await self._invalid_frame(exc.code, str(exc))
            return
        payload = {"unread": unread}
        if command.id is not None:
            payload["id"] = command.id
        await self.send_text(envelope.control("inbox", payload))

    def _take_token(self):
        now = time.monotonic()
        self._tokens = min(
            float(self.config["INBOUND_BURST"]),
            self._tokens + (now - self._refill_at) * self.config["INBOUND_RATE"],
        )
        self._refill_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _invalid_frame(self, code, message):
        metrics.frames_refused.labels(code=code).inc()
        self._invalid += 1
        if self._invalid > self.config["MAX_INVALID_FRAMES"]:
            await self.close(code=CLOSE_POLICY)
            return
        await self._error(code, message)

    async def _on_ping(self, command):
        self._verify()
        payload = {"streams": {}, "epochs": {}}
        try:
            payload = await self._heal()
        except DatabaseError:
            # The link is fine, the database is not: answer (so the client does
            # not drop a working socket) without heads; the next ping heals.
            if first_in_a_while("pong heads"):
                logger.warning("realtime: cannot read stream heads for pongs; answering without them", exc_info=True)
        if command.id is not None:
            payload["id"] = command.id
        await self.send_text(envelope.control("pong", payload))
        # After the pong: a slow presence store must not look like a dead link.
        await self._presence(presence.touch)

    async def _heal(self):
        """Send whatever the log has beyond what this socket got; return the pong's heads."""
        delivery = self.delivery
        heads = await self.hub.heads(delivery.streams)
        behind = [
            n for n in heads if n in delivery and not delivery.is_held(n) and heads[n][0] > delivery.last[n]
        ]
        if behind:
            # A push was lost while the link looked fine; heal it before the pong
            # so the client hears of it only if healing failed.
            await self.hub.catch_up(behind)
            for name in behind:
                if name in delivery and not delivery.is_held(name) and delivery.last[name] < heads[name][0]:
                    # Inline, not a task: the pong must not overtake the healing.
                    delivery.hold(name)
                    await self._catch_up(name, replay=True)
        return {
            "streams": {n: seq for n, (seq, _) in heads.items()},
            # Lets a client that joined an empty stream (epoch "") learn it.
            "epochs": {n: epoch for n, (_, epoch) in heads.items() if epoch},
        }

    async def _on_subscribe(self, command):
        await self._subscribe_many(command.positions, command.epochs)

    async def _on_unsubscribe(self, command):
        name = command.stream
        if self.delivery.leave(name):
            if self.user is not None and self.user.is_authenticated and name == user_stream(self.user):
                self._control = name  # stay reachable by disconnect_user()
            else:
                self.hub.unsubscribe(self, name)
        await self.send_text(envelope.control("unsubscribed", {"stream": name}, stream=name))

    async def _on_resume(self, command):
        delivery = self.delivery
        fresh = {n: s for n, s in command.positions.items() if n not in delivery}
        if fresh:
            await self._subscribe_many(fresh, command.epochs)
        joined = [n for n in command.positions if n in delivery and n not in fresh and not delivery.is_held(n)]
        if not joined:
            return
        heads = await database_sync_to_async(store.heads)(joined)
        for name in joined:
            since = command.positions[name]
            if since is None or name not in delivery or delivery.is_held(name):
                continue
            head, epoch = heads[name]
            start, reason = start_position(since, command.epochs.get(name), head, epoch)
            if reason:
                await self._resync(name, head, epoch, reason)
            else:
                # The client holds up to ``since``; anything later is re-sent and
                # the client drops what it already has.
                delivery.last[name] = start
                if start < head:
                    delivery.hold(name)
                    self._spawn_catch_up(name, replay=True)

    async def _subscribe_many(self, positions, epochs):
        names = []
        for name in positions:
            if name in self.delivery:
                await self.send_text(
                    envelope.control("subscribed", {"stream": name, "seq": self.delivery.last[name]}, stream=name)
                )
            elif len(self.delivery.streams) + len(names) >= self.config["MAX_STREAMS_PER_CONNECTION"]:
                await self._error("too_many_streams", "This connection has joined too many streams.", stream=name)
            elif not await authorize(self.user, name):
                await self._forbidden(name)
            else:
                names.append(name)
        if not names or self._closing:
            return
        starts, known, heads, resyncs = await self._join(names, positions, epochs)
        for name in names:
            await self.send_text(
                envelope.control(
                    "subscribed",
                    {"stream": name, "seq": starts[name], "epoch": known[name]},
                    stream=name,
                )
            )
        await self._start(names, starts, heads, resyncs)

    async def _forbidden(self, stream):
        self._refusals += 1
        # The developer's first clue when a stream stays silent; a client
        # asking for stream after stream must not flood the log, though.
        log = logger.info if self._refusals <= REFUSALS_LOGGED else logger.debug
        log(
            'realtime: AUTHORIZE refused stream %r to user %s (connection %s); streams beyond the '
            'defaults need REALTIME["AUTHORIZE"] to allow them',
            stream,
            getattr(self.user, "pk", None),
            self.connection_id,
        )
        await self._error("forbidden", f"You may not read stream {stream!r}.", stream=stream)
