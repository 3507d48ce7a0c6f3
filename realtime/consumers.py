"""The WebSocket endpoint: one connection's lifecycle, its live messages and its output.

Live messages arrive from the process's :class:`~realtime.hub.Hub`;
:class:`~realtime.delivery.Delivery` decides, per stream, whether each is
next, a duplicate, or shows a gap that :mod:`realtime.replay` fills from the
log first, so the client sees every seq once, in order. Client frames are
handled in :mod:`realtime.inbound`.

Nothing a client sends can crash a connection, and however a connection ends
(close, crash, cancellation by the server) it leaves the hub, its group
memberships, its presence entry and its connection count behind it: see
:meth:`RealtimeConsumer.__call__`. Everything it writes goes through one
bounded :class:`~realtime.outbound.Output` (docs/security.md).
"""

import asyncio
import functools
import logging
import time
import uuid

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.db import DatabaseError

from . import envelope, limits, metrics, presence, sessions
from .conf import get_config
from .delivery import Delivery, Live
from .hub import get_hub
from .inbound import ClientFrames, first_in_a_while
from .outbound import DaphneOutput, output_for
from .protocol import (
    CLOSE_SERVER_ERROR,
    CLOSE_SLOW,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHENTICATED,
    PROTOCOL_VERSION,
    ProtocolError,
    parse_query,
)
from .replay import Replay
from .servers import daphne
from .streams import authorize, streams_for, user_stream

logger = logging.getLogger("realtime")


class RealtimeConsumer(ClientFrames, Replay, AsyncWebsocketConsumer):
    """Serves ``/ws/realtime/``: see ``docs/protocol.md`` for the wire protocol."""

    # No per-connection layer channel (the per-process hub receives for
    # everyone), and no groups of Channels' own to join.
    channel_layer = None
    groups = ()

    # Until connect() runs, a failing connection has nothing to release.
    hub = None
    connection_id = None
    limit_key = None
    _out = None
    _released = False
    _closing = False
    _close_code = None  # the first close code sent or received

    @classmethod
    def as_asgi(cls, **initkwargs):
        """The ASGI app of this consumer: a new instance per connection, as Channels' ``as_asgi()``.

        A plain function that returns the instance's coroutine instead of a
        coroutine that awaits it: one frame less kept by every open socket.
        """

        def app(scope, receive, send):
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls
        app.consumer_initkwargs = initkwargs
        functools.update_wrapper(app, cls, updated=())
        return app

    async def __call__(self, scope, receive, send):
        """Serve one connection: its messages, one at a time, to :meth:`dispatch`.

        ``AsyncConsumer.__call__`` without a channel layer, minus its extra
        task: Channels waits for ``receive()`` in a task of its own (to race
        it with the layer's), which an idle socket pays for with about 4 KiB
        (bench/memory.py); with one source of messages, awaiting it gives
        the same order.
        """
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
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
        self._opened_at = time.monotonic()
        self._sent = 0  # live messages written to the socket
        self._replayed = 0  # messages written from the log
        self.user = self.scope.get("user")
        metrics.connections_opened.inc()
        metrics.connections_open.inc()
        self.delivery = Delivery(self.config["MAX_OUTBOUND_BUFFER"])
        self._tasks = None  # a set once there is a task to track
        self._invalid = 0
        self._failures = 0
        self._refusals = 0
        self._tokens = float(self.config["INBOUND_BURST"])
        self._refill_at = time.monotonic()
        self._control = None
        self._replaying = None  # an asyncio.Lock once a replay starts
        self._session_key = None
        self._verified_at = time.monotonic()
        self._verifying = None
        send = _innermost_send(self.base_send)
        self._out = output_for(send, self.config["MAX_OUTBOUND_BUFFER"])
        if isinstance(self._out, DaphneOutput):
            daphne.track(self._out.socket)
            daphne.forget_handshake(self._out.socket)
            daphne.limit_inbound(self._out.socket, self.config["MAX_INBOUND_SIZE"])
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
                await self._forbidden(name)
            else:
                await self._error(code, "This connection has joined too many streams.", stream=name)
        await self._start(names, starts, heads, resyncs)
        if authenticated and user_stream(self.user) not in self.delivery and not self._released:
            # disconnect_user() travels on the user's stream; listen for it even
            # when DEFAULT_STREAMS leaves that stream out (push() ignores
            # messages of streams this socket has not joined).
            self._control = user_stream(self.user)
            await self._subscribe_hub(self._control)
        if not self._released:
            await self._presence(presence.connected)

    async def disconnect(self, code):
        if self._close_code is None:
            self._close_code = code
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
        for task in list(self._tasks or ()):
            task.cancel()
        limits.release(self)
        if self.hub is not None:
            presence.in_background(presence.disconnected(self))
            for name in [*self.delivery.streams, self._control]:
                if name is not None:
                    self.hub.unsubscribe(self, name)
            self.delivery.clear()
        self._log_close()

    def _log_close(self):
        """One line and the close metrics for a connection that ended, however it ended."""
        code = self._close_code
        metrics.connections_open.dec()
        metrics.connections_closed.labels(code=metrics.code_label(code)).inc()
        user = self.user
        logger.info(
            "realtime: connection closed connection=%s user=%s code=%s duration=%.3f sent=%d replayed=%d",
            self.connection_id,
            user.pk if user is not None and user.is_authenticated else "-",
            "-" if code is None else code,
            time.monotonic() - self._opened_at,
            self._sent,
            self._replayed,
        )

    @property
    def streams(self):
        """Names of the streams this socket has joined."""
        return self.delivery.streams

    async def _presence(self, hook):
        try:
            await hook(self)
        except Exception:
            # Presence is advisory; a presence store outage must not cost the socket.
            logger.warning("realtime: presence %s failed", hook.__name__, exc_info=True)

    async def close(self, code=None, reason=None):
        """Close after the frames already written; later writes are dropped."""
        if self._close_code is None and not self._released:
            self._close_code = 1000 if code is None else code
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

    # Live delivery ---------------------------------------------------------

    def push(self, stream, seq, out):
        """Take one message (an :class:`~realtime.outbound.Outgoing`) of a stream from the hub.

        Synchronous on purpose: a fan-out to 5,000 sockets must not create
        5,000 coroutines (their garbage set off 0.5 s collections, measured).
        Returns True if the message was written to the socket now.
        """
        if self._closing:
            return False
        action = self.delivery.live(stream, seq, out.text)
        if action is Live.SEND:
            if self._out.write(out):
                self._sent += 1
                return True
            self._slow()
        elif action is Live.GAP:
            self._spawn_catch_up(stream, replay=True)
        return False

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
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reset(self, stream, epoch):
        """The hub reports that ``stream``'s history was reset (a new epoch)."""
        if stream in self.delivery:
            if self.delivery.is_held(stream):
                self.delivery.hold(stream)  # what was queued belongs to the old history
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
            if first_in_a_while("session check"):
                logger.warning("realtime: cannot check sessions (connection %s and maybe others)", self.connection_id, exc_info=True)
            return
        if not valid:
            logger.info("realtime: connection %s: the session ended; closing with %d", self.connection_id, CLOSE_UNAUTHENTICATED)
            await self.close(code=CLOSE_UNAUTHENTICATED)

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
