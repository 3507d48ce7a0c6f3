"""The WebSocket endpoint: joins streams, relays the hub's messages, heals gaps.

Per stream the consumer keeps the seq of the last message it wrote to this
socket. Live messages arrive from the :class:`~realtime.hub.Hub`; one at or
below that seq is a duplicate and is dropped, one that skips ahead makes the
consumer read the missing range from the log first. While a stream is being
replayed, live messages for it wait in a queue, so the client always sees
seqs in order, each once.

Nothing a client sends can crash a connection, and however a connection ends
(close, crash, cancellation by the server) it leaves the hub, its group
memberships, its presence entry and its connection count behind it: see
:meth:`RealtimeConsumer.__call__`. Everything it writes goes through one
bounded :class:`~realtime.outbound.Output` (docs/security.md).
"""

import asyncio
import logging
import time
import uuid

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.db import DatabaseError

from . import envelope, limits, presence, sessions, store
from .conf import get_config
from .hub import get_hub
from .outbound import Outgoing, output_for
from .protocol import (
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHENTICATED,
    PROTOCOL_VERSION,
    ProtocolError,
    parse,
    parse_query,
)
from .servers import daphne
from .streams import authorize, streams_for, user_stream

logger = logging.getLogger("realtime")


class RealtimeConsumer(AsyncWebsocketConsumer):
    """Serves ``/ws/realtime/``: see ``docs/protocol.md`` for the wire protocol."""

    # No per-connection layer channel: the per-process hub receives for everyone.
    channel_layer_alias = "realtime:no-per-connection-channel"

    # Until connect() runs, a failing connection has nothing to release.
    hub = None
    connection_id = None
    limit_key = None
    _out = None
    _released = False
    _closing = False

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the connection ends: websocket.disconnect (which daphne
            # does not deliver after an application error), an exception, or
            # cancellation by the server.
            self._release()

    async def dispatch(self, message):
        # Channels runs close_old_connections in a thread before every handler;
        # our handlers reach the database only through database_sync_to_async,
        # which does that itself, so skip the thread hop on every frame.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            return
        try:
            await handler(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception as exc:
            await self._failed(message["type"], exc)

    # Lifecycle -------------------------------------------------------------

    async def connect(self):
        self.config = get_config()
        self.connection_id = uuid.uuid4().hex
        self.user = self.scope.get("user")
        self.last = {}
        self._busy = set()
        self._pending = {}
        self._pending_bytes = {}
        self._overflowed = set()
        self._tasks = set()
        self._invalid = 0
        self._failures = 0
        self._tokens = float(self.config["INBOUND_BURST"])
        self._refill_at = time.monotonic()
        self._control = None
        self._replaying = asyncio.Lock()
        self._session_key = None
        self._verified_at = time.monotonic()
        self._verifying = None
        send = _innermost_send(self.base_send)
        self._out = output_for(send, self.config["MAX_OUTBOUND_BUFFER"])
        socket = getattr(self._out, "socket", None)
        if socket is not None:
            daphne.track(socket)
            daphne.limit_inbound(socket, self.config["MAX_INBOUND_SIZE"])
        authenticated = self.user is not None and self.user.is_authenticated
        await self.accept()
        if not authenticated and not self.config["ALLOW_ANONYMOUS"]:
            # Accept first: a refusal before accepting reaches the browser as a
            # bare HTTP 403 it cannot tell from a wrong Origin.
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await limits.admit(self):
            await self._error("too_many_connections", "Too many open connections; close some and reload.")
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        if authenticated and self.config["VERIFY_SESSIONS"]:
            self._session_key = sessions.session_key(self.scope)
        query_error = None
        try:
            positions, epochs = parse_query(
                self.scope.get("query_string", b""), self.config["MAX_STREAMS_PER_CONNECTION"]
            )
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
        if authenticated and user_stream(self.user) not in self.last and not self._released:
            # disconnect_user() travels on the user's stream; listen for it even
            # when DEFAULT_STREAMS leaves that stream out (push() ignores
            # messages of streams this socket has not joined).
            self._control = user_stream(self.user)
            await self._subscribe_hub(self._control)
        if not self._released:
            await self._presence(presence.connected)

    async def disconnect(self, code):
        self._release()

    def _release(self):
        """Leave everything this connection holds; runs once, synchronously.

        Synchronous so that a cancelled connection cannot stop half-way: the
        hub and the counters let go at once, and the writes to shared stores
        (group membership, presence) run as tasks of their own.
        """
        if self._released:
            return
        self._released = True
        self._closing = True
        if self._out is not None:
            self._out.discard()
        if self.connection_id is None:
            return
        for task in list(self._tasks):
            task.cancel()
        limits.release(self)
        if self.hub is not None:
            presence.in_background(presence.disconnected(self))
            for name in [*self.last, self._control]:
                if name is not None:
                    self.hub.unsubscribe(self, name)
            self.last.clear()
            self._pending.clear()

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

    async def close(self, code=None, reason=None):
        """Close after the frames already written; later writes are dropped."""
        if self._out is None:
            await super().close(code, reason)
            return
        if self._closing:
            return
        self._closing = True
        await self._out.close(1000 if code is None else code)

    async def _failed(self, event, exc):
        """An exception escaped a handler: log it once, then answer instead of crashing."""
        self._failures += 1
        log = logger.exception if self._failures == 1 else logger.debug
        log("realtime: connection %s: %s failed", self.connection_id, event, exc_info=exc)
        if self._closing:
            return
        if event != "websocket.receive" or isinstance(exc, DatabaseError):
            # Without the database (or a complete connect) this socket cannot
            # keep its promises; the client reconnects and resumes.
            await self.close(code=CLOSE_SERVER_ERROR)
            return
        await self._error("internal_error", "The server failed to handle this frame.")

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
            await self._subscribe_hub(name)
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

    async def _subscribe_hub(self, name):
        await self.hub.subscribe(self, name)
        if self._released:
            # The connection ended while we waited; _release() could not see this one.
            self.hub.unsubscribe(self, name)

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
                self._settle(name)

    def _settle(self, stream):
        self._busy.discard(stream)
        self._pending.pop(stream, None)
        self._pending_bytes.pop(stream, None)

    def _hold(self, stream):
        """Make live messages of ``stream`` wait (in order) until a catch-up drains them."""
        self._busy.add(stream)
        self._pending[stream] = []
        self._pending_bytes[stream] = 0

    # Live delivery ---------------------------------------------------------

    def push(self, stream, seq, out):
        """Take one message (an :class:`~realtime.outbound.Outgoing`) of a stream from the hub.

        Synchronous on purpose: a fan-out to 5,000 sockets must not create
        5,000 coroutines (their garbage set off 0.5 s collections, measured).
        """
        last = self.last.get(stream)
        if last is None or self._closing:
            return
        if stream in self._busy:
            if seq is not None:
                self._queue(stream, seq, out.text)
            return
        if seq is not None:
            if seq <= last:
                return
            if seq > last + 1:
                self._hold(stream)
                self._queue(stream, seq, out.text)
                self._spawn_catch_up(stream, replay=True)
                return
            self.last[stream] = seq
        if not self._out.write(out):
            self._slow()

    def _queue(self, stream, seq, text):
        """Keep a live message for after the replay; past the buffer limit, let the log keep it."""
        size = len(text)
        if self._pending_bytes.get(stream, 0) + size > self.config["MAX_OUTBOUND_BUFFER"]:
            # Everything persisted is in the log: replay further instead of holding it here.
            self._pending[stream] = []
            self._pending_bytes[stream] = 0
            self._overflowed.add(stream)
            return
        self._pending[stream].append((seq, text))
        self._pending_bytes[stream] = self._pending_bytes.get(stream, 0) + size

    def _slow(self):
        """The client is not reading fast enough: let it go and resume later."""
        if self._closing:
            return
        logger.info(
            "realtime: connection %s is %d bytes behind; closing it with %d (it resumes)",
            self.connection_id,
            self._out.buffered,
            CLOSE_SLOW,
        )
        self._out.discard()
        self._spawn(self.close(code=CLOSE_SLOW))

    async def send_text(self, text):
        """Send one text frame after everything written before."""
        if self._closing:
            return
        if not self._out.write_text(text):
            self._slow()

    def _spawn(self, coroutine):
        if self._released:
            coroutine.close()
            return None
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_catch_up(self, stream, replay):
        self._spawn(self._catch_up(stream, replay))

    async def _catch_up(self, stream, replay):
        """Replay from the log and drain queued live messages, in seq order."""
        try:
            while stream in self.last and not self._closing:
                if replay or stream in self._overflowed:
                    self._overflowed.discard(stream)
                    await self._replay(stream)
                    if stream in self._overflowed:
                        continue
                queue = self._pending.get(stream)
                if not queue:
                    return
                self._pending[stream] = []
                self._pending_bytes[stream] = 0
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
            logger.exception(
                "realtime: connection %s: replay of %s failed; closing so the client resumes",
                self.connection_id,
                stream,
            )
            await self.close(code=CLOSE_SERVER_ERROR)
        finally:
            self._settle(stream)

    async def _replay(self, stream):
        """Send the log after ``self.last[stream]``, paced by the socket.

        A batch is read only when the socket's buffer is below half the
        limit, and batches shrink to fit the limit, so a client resuming a
        huge history from seq 0 costs this server one batch and one buffer
        at a time, never the history.
        """
        limit = self.config["MAX_OUTBOUND_BUFFER"]
        batch = min(self.config["REPLAY_BATCH"], 100)
        while stream in self.last and not self._closing:
            await self._out.drained(limit // 4)
            async with self._replaying:  # one batch in memory per connection
                last = self.last.get(stream)
                if last is None or self._closing:
                    return
                rows = await database_sync_to_async(store.read_after)(stream, last, batch)
                if not rows or stream not in self.last:
                    return
                if rows[0][0] > last + 1:
                    heads = await self.hub.heads([stream])
                    await self._resync(stream, rows[0][0] - 1, heads[stream][1], "pruned")
                size = 0
                for seq, text in rows:
                    if self._out.buffered > limit // 2:
                        await self._out.drained(limit // 4)
                    if stream not in self.last or self._closing:
                        return
                    self.last[stream] = seq
                    size += len(text)
                    await self.send_text(text)
            if len(rows) < batch:
                return
            batch = max(1, min(self.config["REPLAY_BATCH"], (limit // 2) * len(rows) // max(size, 1)))

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
                self._hold(stream)
            await self._resync(stream, 0, epoch, "reset")

    async def revoke(self, user_pk, code):
        """The hub relays a ``disconnect_user()``: close if this socket is that user's."""
        if self._is_user(user_pk):
            await self.close(code=code or CLOSE_UNAUTHENTICATED)

    def recheck(self, user_pk):
        """The hub relays that this user was saved: verify the session now, not at the next ping."""
        if self._is_user(user_pk):
            self._verify(force=True)

    def _is_user(self, user_pk):
        return self.user is not None and self.user.is_authenticated and str(self.user.pk) == str(user_pk)

    # Session checks --------------------------------------------------------

    def _verify(self, force=False):
        """Start a check that the session still logs the user in (at most one at a time)."""
        if self._session_key is None or self._closing:
            return
        if self._verifying is not None and not self._verifying.done():
            return
        now = time.monotonic()
        if not force and now - self._verified_at < self.config["HEARTBEAT_INTERVAL"] / 2:
            return
        self._verified_at = now
        self._verifying = self._spawn(self._check_session())

    async def _check_session(self):
        try:
            valid = await sessions.still_logged_in(self._session_key, self.user)
        except Exception:
            # A session store outage must not log everyone out; the next ping retries.
            if _first_in_a_while("session check"):
                logger.warning("realtime: cannot check sessions (connection %s and maybe others)", self.connection_id, exc_info=True)
            return
        if not valid:
            logger.info("realtime: connection %s: the session ended; closing with %d", self.connection_id, CLOSE_UNAUTHENTICATED)
            await self.close(code=CLOSE_UNAUTHENTICATED)

    # Client frames ---------------------------------------------------------

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
            command = parse(text_data, self.config["MAX_STREAMS_PER_CONNECTION"])
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
        self._verify()
        payload = {"streams": {}, "epochs": {}}
        try:
            payload = await self._heal()
        except DatabaseError:
            # The link is fine, the database is not: answer (so the client does
            # not drop a working socket) without heads; the next ping heals.
            if _first_in_a_while("pong heads"):
                logger.warning("realtime: cannot read stream heads for pongs; answering without them", exc_info=True)
        if command.id is not None:
            payload["id"] = command.id
        await self.send_text(envelope.control("pong", payload))
        # After the pong: a slow presence store must not look like a dead link.
        await self._presence(presence.touch)

    async def _heal(self):
        """Send whatever the log has beyond what this socket got; return the pong's heads."""
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
                    self._hold(name)
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
        if self.last.pop(name, None) is not None:
            self._settle(name)
            self._overflowed.discard(name)
            if self.user is not None and self.user.is_authenticated and name == user_stream(self.user):
                self._control = name  # stay reachable by disconnect_user()
            else:
                self.hub.unsubscribe(self, name)
        await self.send_text(envelope.control("unsubscribed", {"stream": name}, stream=name))

    async def _on_resume(self, command):
        fresh = {n: s for n, s in command.positions.items() if n not in self.last}
        if fresh:
            await self._subscribe_many(fresh, command.epochs)
        joined = [n for n in command.positions if n in self.last and n not in fresh and n not in self._busy]
        if not joined:
            return
        heads = await database_sync_to_async(store.heads)(joined)
        for name in joined:
            head, epoch = heads[name]
            since, their_epoch = command.positions[name], command.epochs.get(name)
            if since is None or name in self._busy or name not in self.last:
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
                    self._hold(name)
                    self._spawn_catch_up(name, replay=True)

    async def _subscribe_many(self, positions, epochs):
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

    # Output ----------------------------------------------------------------

    async def _error(self, code, message, **extra):
        await self.send_text(envelope.control("error", {"code": code, "message": message, **extra}))


#: Seconds between two log lines about the same outage (every socket meets it).
OUTAGE_LOG_INTERVAL = 60.0
_logged_at = {}


def _first_in_a_while(what):
    """True at most once per :data:`OUTAGE_LOG_INTERVAL` for ``what``, in this process."""
    now = time.monotonic()
    if now - _logged_at.get(what, -OUTAGE_LOG_INTERVAL) < OUTAGE_LOG_INTERVAL:
        return False
    _logged_at[what] = now
    return True


def _innermost_send(send):
    """Skip Channels' session middleware for outgoing frames.

    It wraps ``send`` to save the session on ``http.response.start`` and
    ``websocket.accept``; for ``websocket.send`` it only reads the session,
    which cost a quarter of the server's CPU in a fan-out (py-spy, make bench).
    """
    while isinstance(getattr(send, "__self__", None), InstanceSessionWrapper):
        send = send.__self__.real_send
    return send
