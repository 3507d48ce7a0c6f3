"""The WebSocket endpoint: joins streams, relays the hub's messages, heals gaps.

Per stream the consumer keeps the seq of the last message it wrote to this
socket. Live messages arrive from the :class:`~realtime.hub.Hub`; one at or
below that seq is a duplicate and is dropped, one that skips ahead makes the
consumer read the missing range from the log first. While a stream is being
replayed, live messages for it wait in a queue, so the client always sees
seqs in order, each once.
"""

import asyncio
import logging
import time
import uuid

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper

from . import envelope, presence, store
from . import frames
from .frames import Outgoing, daphne_socket
from .conf import get_config
from .hub import get_hub
from .protocol import PROTOCOL_VERSION, ProtocolError, parse, parse_query
from .streams import authorize, streams_for, user_stream

logger = logging.getLogger("realtime")

#: Close codes. Daphne (autobahn) lets applications send only 1000 and
#: 3000-4999, so the 1008/1009 of RFC 6455 are sent as 4008/4009.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 4008
CLOSE_TOO_BIG = 4009


class RealtimeConsumer(AsyncWebsocketConsumer):
    """Serves ``/ws/realtime/``: see ``docs/protocol.md`` for the wire protocol."""

    # No per-connection layer channel: the per-process hub receives for everyone.
    channel_layer_alias = "realtime:no-per-connection-channel"

    async def dispatch(self, message):
        # Channels runs close_old_connections in a thread before every handler;
        # our handlers reach the database only through database_sync_to_async,
        # which does that itself, so skip the thread hop on every frame.
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    # Lifecycle -------------------------------------------------------------

    async def connect(self):
        self.config = get_config()
        self.connection_id = uuid.uuid4().hex
        self.user = self.scope.get("user")
        self.last = {}
        self._busy = set()
        self._pending = {}
        self._tasks = set()
        self._invalid = 0
        self._tokens = float(self.config["INBOUND_BURST"])
        self._refill_at = time.monotonic()
        self.hub = None
        self._control = None
        self._write = _innermost_send(self.base_send)
        self._socket = daphne_socket(self._write)
        if self._socket is not None:
            frames.track(self._socket)
        authenticated = self.user is not None and self.user.is_authenticated
        await self.accept()
        if not authenticated and not self.config["ALLOW_ANONYMOUS"]:
            # Accept first: a refusal before accepting reaches the browser as a
            # bare HTTP 403 it cannot tell from a wrong Origin.
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query_error = None
        try:
            positions, epochs = parse_query(self.scope.get("query_string", b""))
        except ProtocolError as exc:
            positions, epochs, query_error = {}, {}, exc
        self.hub = get_hub()
        defaults = await streams_for(self.user)
        wanted = list(dict.fromkeys([*defaults, *positions]))
        refused = []
        names = []
        for name in wanted:
            if len(names) >= self.config["MAX_STREAMS_PER_CONNECTION"]:
                refused.append((name, "too_many_streams"))
            elif name in defaults or await authorize(self.user, name):
                names.append(name)
            else:
                refused.append((name, "forbidden"))
        starts, known, heads, resyncs = await self._join(names, positions, epochs)
        await self.send_text(
            envelope.control(
                "welcome",
                {
                    "protocol": PROTOCOL_VERSION,
                    "streams": starts,
                    "epochs": known,
                    "heartbeat": int(self.config["HEARTBEAT_INTERVAL"] * 1000),
                    "max_frame": self.config["MAX_INBOUND_SIZE"],
                    "user": getattr(self.user, "pk", None) if authenticated else None,
                },
            )
        )
        if query_error is not None:
            await self._error(query_error.code, str(query_error))
        for name, code in refused:
            if code == "forbidden":
                await self._error(code, f"You may not read stream {name!r}.", stream=name)
            else:
                await self._error(code, "This connection has joined too many streams.", stream=name)
        await self._start(names, starts, heads, resyncs)
        if authenticated and user_stream(self.user) not in self.last:
            # disconnect_user() travels on the user's stream; listen for it even
            # when DEFAULT_STREAMS leaves that stream out (push() ignores
            # messages of streams this socket has not joined).
            self._control = user_stream(self.user)
            await self.hub.subscribe(self, self._control)
        await self._presence(presence.connected)

    async def disconnect(self, code):
        for task in list(getattr(self, "_tasks", ())):
            task.cancel()
        if getattr(self, "hub", None) is not None:
            await self._presence(presence.disconnected)
            for name in list(self.last):
                self.last.pop(name, None)
                await self.hub.unsubscribe(self, name)
            if self._control is not None:
                await self.hub.unsubscribe(self, self._control)

    @property
    def streams(self):
        """Names of the streams this socket has joined."""
        return list(self.last)

    async def _presence(self, hook):
        try:
            await hook(self)
        except Exception:
            # Presence is advisory; a presence store outage must not cost the socket.
            logger.warning("realtime: presence %s failed", hook.__name__, exc_info=True)

    # Joining streams -------------------------------------------------------

    async def _join(self, names, positions, epochs):
        """Subscribe to ``names`` and decide where each starts.

        Streams stay busy (live messages queue up) until :meth:`_start`.
        """
        for name in names:
            self.last[name] = -1
            self._busy.add(name)
            self._pending[name] = []
        for name in names:
            await self.hub.subscribe(self, name)
        heads = await database_sync_to_async(store.heads)(names)
        starts, known, resyncs = {}, {}, []
        for name in names:
            head, epoch = heads[name]
            since, their_epoch = positions.get(name), epochs.get(name)
            start, reason = head, None
            if since is not None:
                if their_epoch and epoch and their_epoch != epoch:
                    reason = "epoch"
                elif since > head:
                    reason = "ahead"
                else:
                    start = since
            if reason:
                resyncs.append((name, head, epoch, reason))
            self.last[name] = start
            starts[name] = start
            known[name] = epoch
        return starts, known, heads, resyncs

    async def _start(self, names, starts, heads, resyncs):
        for name, head, epoch, reason in resyncs:
            await self._resync(name, head, epoch, reason)
        for name in names:
            if name not in self.last:
                continue
            behind = starts[name] < heads[name][0]
            if behind or self._pending.get(name):
                self._spawn_catch_up(name, replay=behind)
            else:
                self._busy.discard(name)
                self._pending.pop(name, None)

    # Live delivery ---------------------------------------------------------

    def push(self, stream, seq, out):
        """Take one message (an :class:`Outgoing`) of a stream from the hub.

        Synchronous on purpose: a fan-out to 5,000 sockets must not create
        5,000 coroutines (their garbage set off 0.5 s collections, measured).
        Returns None when done, or the text the hub must still send with
        :meth:`send_text` (servers other than daphne).
        """
        last = self.last.get(stream)
        if last is None:
            return None
        if stream in self._busy:
            if seq is not None:
                self._pending[stream].append((seq, out.text))
            return None
        if seq is not None:
            if seq <= last:
                return None
            if seq > last + 1:
                self._busy.add(stream)
                self._pending[stream] = [(seq, out.text)]
                self._spawn_catch_up(stream, replay=True)
                return None
            self.last[stream] = seq
        socket = self._socket
        if socket is not None and socket.state == socket.STATE_OPEN:
            frames.send_prepared(socket, out)
            return None
        return out.text

    async def send_text(self, text):
        """Send one text frame through ASGI."""
        await self._write({"type": "websocket.send", "text": text})

    def _spawn_catch_up(self, stream, replay):
        task = asyncio.ensure_future(self._catch_up(stream, replay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, stream, replay):
        """Replay from the log and drain queued live messages, in seq order."""
        try:
            while stream in self.last:
                if replay:
                    await self._replay(stream)
                queue = self._pending.get(stream)
                if not queue:
                    return
                self._pending[stream] = []
                replay = False
                for seq, text in sorted(queue):
                    last = self.last.get(stream)
                    if last is None:
                        return
                    if seq <= last:
                        continue
                    if seq > last + 1:
                        # The rest is committed, so the log has it.
                        replay = True
                        break
                    self.last[stream] = seq
                    await self.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("realtime: replay of %s failed; closing so the client resumes", stream)
            await self.close(code=4500)
        finally:
            self._busy.discard(stream)
            self._pending.pop(stream, None)

    async def _replay(self, stream):
        batch = self.config["REPLAY_BATCH"]
        while stream in self.last:
            last = self.last[stream]
            rows = await database_sync_to_async(store.read_after)(stream, last, batch)
            if not rows or stream not in self.last:
                return
            if rows[0][0] > last + 1:
                heads = await self.hub.heads([stream])
                await self._resync(stream, rows[0][0] - 1, heads[stream][1], "pruned")
            for seq, text in rows:
                self.last[stream] = seq
                await self.send_text(text)
            if len(rows) < batch:
                return

    async def _resync(self, stream, seq, epoch, reason):
        self.last[stream] = seq
        await self.send_text(
            envelope.control(
                "resync",
                {"stream": stream, "seq": seq, "epoch": epoch, "reason": reason},
                stream=stream,
            )
        )

    async def reset(self, stream, epoch):
        """The hub reports that ``stream``'s history was reset (a new epoch)."""
        if stream in self.last:
            self._pending.pop(stream, None)
            if stream in self._busy:
                self._pending[stream] = []
            await self._resync(stream, 0, epoch, "reset")

    async def revoke(self, user_pk, code):
        """The hub relays a ``disconnect_user()``: close if this socket is that user's."""
        if self.user is not None and self.user.is_authenticated and str(self.user.pk) == str(user_pk):
            await self.close(code=code or CLOSE_UNAUTHENTICATED)

    # Client frames ---------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.hub is None:
            return
        if not self._take_token():
            await self.close(code=CLOSE_POLICY)
            return
        if text_data is None:
            await self._invalid_frame("binary_frame", "Binary frames are not part of the protocol; send JSON text.")
            return
        limit = self.config["MAX_INBOUND_SIZE"]
        if len(text_data) > limit or (len(text_data) * 4 > limit and len(text_data.encode("utf-8")) > limit):
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            command = parse(text_data)
        except ProtocolError as exc:
            await self._invalid_frame(exc.code, str(exc))
            return
        await getattr(self, f"_on_{command.type}")(command)

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
        self._invalid += 1
        if self._invalid > self.config["MAX_INVALID_FRAMES"]:
            await self.close(code=CLOSE_POLICY)
            return
        await self._error(code, message)

    async def _on_ping(self, command):
        names = [n for n in self.last if n not in self._busy]
        heads = await self.hub.heads(list(self.last))
        behind = [n for n in names if heads[n][0] > self.last.get(n, heads[n][0])]
        if behind:
            # A push was lost while the link looked fine; heal it before the pong
            # so the client hears of it only if healing failed.
            await self.hub.catch_up(behind)
            for name in behind:
                if name in self.last and name not in self._busy and self.last[name] < heads[name][0]:
                    # Inline, not a task: the pong must not overtake the healing.
                    self._busy.add(name)
                    self._pending[name] = []
                    await self._catch_up(name, replay=True)
        payload = {
            "streams": {n: seq for n, (seq, _) in heads.items()},
            # Lets a client that joined an empty stream (epoch "") learn it.
            "epochs": {n: epoch for n, (_, epoch) in heads.items() if epoch},
        }
        if command.id is not None:
            payload["id"] = command.id
        await self.send_text(envelope.control("pong", payload))
        # After the pong: a slow presence store must not look like a dead link.
        await self._presence(presence.touch)

    async def _on_subscribe(self, command):
        await self._subscribe_many(command.positions, command.epochs, reply=True)

    async def _on_unsubscribe(self, command):
        name = command.stream
        if self.last.pop(name, None) is not None:
            self._busy.discard(name)
            self._pending.pop(name, None)
            if self.user.is_authenticated and name == user_stream(self.user):
                self._control = name  # stay reachable by disconnect_user()
            else:
                await self.hub.unsubscribe(self, name)
        await self.send_text(envelope.control("unsubscribed", {"stream": name}, stream=name))

    async def _on_resume(self, command):
        fresh = {n: s for n, s in command.positions.items() if n not in self.last}
        if fresh:
            await self._subscribe_many(fresh, command.epochs, reply=True)
        joined = [n for n in command.positions if n in self.last and n not in fresh and n not in self._busy]
        if not joined:
            return
        heads = await database_sync_to_async(store.heads)(joined)
        for name in joined:
            head, epoch = heads[name]
            since, their_epoch = command.positions[name], command.epochs.get(name)
            if since is None or name in self._busy:
                continue
            if their_epoch and epoch and their_epoch != epoch:
                await self._resync(name, head, epoch, "epoch")
            elif since > head:
                await self._resync(name, head, epoch, "ahead")
            else:
                # The client holds up to ``since``; anything later is re-sent and
                # the client drops what it already has.
                self.last[name] = since
                if since < head:
                    self._busy.add(name)
                    self._pending[name] = []
                    self._spawn_catch_up(name, replay=True)

    async def _subscribe_many(self, positions, epochs, reply):
        names = []
        for name in positions:
            if name in self.last:
                await self.send_text(
                    envelope.control("subscribed", {"stream": name, "seq": self.last[name]}, stream=name)
                )
            elif len(self.last) + len(names) >= self.config["MAX_STREAMS_PER_CONNECTION"]:
                await self._error("too_many_streams", "This connection has joined too many streams.", stream=name)
            elif not await authorize(self.user, name):
                await self._error("forbidden", f"You may not read stream {name!r}.", stream=name)
            else:
                names.append(name)
        if not names:
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

    # Output ----------------------------------------------------------------

    async def _error(self, code, message, **extra):
        await self.send_text(envelope.control("error", {"code": code, "message": message, **extra}))


def _innermost_send(send):
    """Skip Channels' session middleware for outgoing frames.

    It wraps ``send`` to save the session on ``http.response.start`` and
    ``websocket.accept``; for ``websocket.send`` it only reads the session,
    which cost a quarter of the server's CPU in a fan-out (py-spy, make bench).
    """
    while isinstance(getattr(send, "__self__", None), InstanceSessionWrapper):
        send = send.__self__.real_send
    return send
