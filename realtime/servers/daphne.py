"""Under daphne: frame once, write directly, measure buffers, refuse big frames, guard handshakes.

Through ASGI every ``websocket.send`` is encoded and framed again for each
socket, and daphne (twisted) buffers whatever a peer does not read, without
limit. Reaching past ASGI into daphne's WebSocket protocol (autobahn) and its
twisted transport lets realtime:

* frame a message once per process (autobahn's ``PreparedMessage``) and write
  it to each socket with one ``send`` when nothing is buffered (:func:`send`);
* see how many bytes wait for a socket (:func:`buffered`), which bounds each
  socket's memory (``MAX_OUTBOUND_BUFFER``) and paces replays;
* have autobahn refuse frames over ``MAX_INBOUND_SIZE`` with a close frame
  1009 before buffering them, instead of dropping the TCP connection (1006)
  after buffering up to daphne's 1 MiB (:func:`limit_inbound`);
* close every socket with 1001 when daphne shuts down (:func:`track`), after
  ``DRAIN_SECONDS`` during which readiness says 503 (:func:`install`);
* let go of the HTTP request a socket was upgraded from, which twisted keeps
  for the socket's lifetime (:func:`forget_handshake`), and give each socket's
  application a lighter queue than ``asyncio.Queue`` (:class:`Inbox`): both
  are memory every idle socket pays;
* drop connections whose HTTP request headers take longer than
  ``HANDSHAKE_TIMEOUT`` (slowloris), which neither daphne nor twisted bound:
  twisted's idle timeout restarts with every byte received (:func:`install`).

All of this reads attributes that are not public API. They are checked once,
at import: if any is missing (a twisted, autobahn or daphne release renamed
it), :data:`PROBLEM` says which, and realtime uses the plain ASGI path for
everything (it fails closed). ``tests/test_daphne_contract.py`` fails naming
the attribute. ``REALTIME["DAPHNE_FAST_PATH"] = False`` switches the socket
parts off by hand; the handshake guard has its own ``HANDSHAKE_TIMEOUT = None``.
"""

import asyncio
import collections
import functools
import hashlib
import inspect
import logging
import sys
import textwrap
import weakref

from ..conf import setting

logger = logging.getLogger("realtime")

#: Why the daphne integration is off (a sentence), or None when it can be used.
PROBLEM = None

try:  # daphne is a dependency, but realtime must run under any ASGI server
    from autobahn.websocket.protocol import PreparedMessage
    from autobahn.websocket.protocol import WebSocketProtocol as _AutobahnProtocol
    from daphne.http_protocol import HTTPFactory as _HTTPFactory
    from daphne.http_protocol import WebRequest as _WebRequest
    from daphne.server import Server as _DaphneServer
    from daphne.ws_protocol import WebSocketProtocol as _DaphneWebSocket
    from twisted.internet import abstract as _abstract
    from twisted.internet import tcp as _tcp
    from twisted.internet import unix as _unix
    from twisted.web import http as _http
except ImportError as exc:  # pragma: no cover - daphne is installed with realtime
    PROBLEM = f"cannot import {exc.name}"

#: Attributes this module relies on, as ``(owner, name)``; an owner is a class,
#: or ``"FileDescriptor()"`` and ``"HTTPChannel()"`` for attributes twisted sets
#: in ``__init__``.
CONTRACT = (
    ("twisted.internet.abstract.FileDescriptor", "dataBuffer"),
    ("twisted.internet.abstract.FileDescriptor", "offset"),
    ("twisted.internet.abstract.FileDescriptor", "connected"),
    ("twisted.internet.abstract.FileDescriptor", "disconnecting"),
    ("twisted.internet.abstract.FileDescriptor", "_writeDisconnected"),
    ("twisted.internet.abstract.FileDescriptor", "write"),
    ("twisted.internet.abstract.FileDescriptor", "producer"),
    ("twisted.internet.abstract.FileDescriptor", "unregisterProducer"),
    ("FileDescriptor()", "_tempDataBuffer"),
    ("FileDescriptor()", "_tempDataLen"),
    ("twisted.internet.tcp.Server", "TLS"),
    ("twisted.internet.tcp.Server", "loseConnection"),
    ("twisted.web.http.Request", "gotLength"),
    ("twisted.web.http.Request", "finish"),
    ("HTTPChannel()", "_handlingRequest"),
    ("autobahn.websocket.protocol.WebSocketProtocol", "sendPreparedMessage"),
    ("autobahn.websocket.protocol.WebSocketProtocol", "sendCloseFrame"),
    ("autobahn.websocket.protocol.WebSocketProtocol", "STATE_OPEN"),
    ("autobahn.websocket.protocol.WebSocketProtocol", "CONFIG_ATTRS_COMMON"),
    ("daphne.server.Server", "handle_reply"),
    ("daphne.server.Server", "kill_all_applications"),
    ("daphne.http_protocol.HTTPFactory", "buildProtocol"),
    ("daphne.http_protocol.WebRequest", "gotLength"),
)

#: Per-socket attributes, checked on the first socket (they only exist on a live one).
SOCKET_CONTRACT = (
    "transport", "state", "send_queue", "_perMessageCompress", "factory", "http_request_data", "http_headers",
)
TRANSPORT_CONTRACT = ("socket", "dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen")
#: autobahn options set per socket by :func:`limit_inbound` (its CONFIG_ATTRS).
SOCKET_OPTIONS = ("failByDrop", "maxMessagePayloadSize", "maxFramePayloadSize")


def _owners():
    return {
        "twisted.internet.abstract.FileDescriptor": _abstract.FileDescriptor,
        # A dummy reactor: only __init__'s attributes are looked at, and the
        # global reactor must not be imported (daphne installs its own).
        "FileDescriptor()": _abstract.FileDescriptor(reactor=object()),
        "twisted.internet.tcp.Server": _tcp.Server,
        "twisted.web.http.Request": _http.Request,
        "HTTPChannel()": _http.HTTPChannel(),
        "autobahn.websocket.protocol.WebSocketProtocol": _AutobahnProtocol,
        "daphne.server.Server": _DaphneServer,
        "daphne.http_protocol.HTTPFactory": _HTTPFactory,
        "daphne.http_protocol.WebRequest": _WebRequest,
    }


def check_contract():
    """Return a sentence naming the first missing attribute, or None if all are there."""
    if PROBLEM is not None:
        return PROBLEM
    try:
        owners = _owners()
    except Exception as exc:  # a constructor's signature changed
        return f"cannot build the objects to check ({exc!r})"
    for owner, name in CONTRACT:
        if not hasattr(owners[owner], name):
            return f"{owner} has no attribute {name!r}"
    missing = [name for name in SOCKET_OPTIONS if name not in _AutobahnProtocol.CONFIG_ATTRS_COMMON]
    if missing:
        return f"autobahn's CONFIG_ATTRS_COMMON no longer lists {missing[0]!r}"
    return None


PROBLEM = check_contract()
_PLAIN_TRANSPORTS = () if PROBLEM else (_tcp.Server, _unix.Server)
_socket_checked = False
_warned = False


def enabled():
    """True when the socket fast path may be used in this process."""
    if PROBLEM is not None:
        _warn_once(f"realtime: daphne fast path off ({PROBLEM}); using plain ASGI sends.")
        return False
    return setting("DAPHNE_FAST_PATH")


def disable(reason):
    """Turn the fast path off for this process (after an unexpected failure in it)."""
    global PROBLEM
    if PROBLEM is None:
        PROBLEM = reason
        logger.error("realtime: daphne fast path switched off: %s; using plain ASGI sends.", reason)


def _warn_once(message):
    global _warned
    if not _warned:
        _warned = True
        logger.warning(message)


def socket_for(send):
    """The daphne WebSocket protocol behind an ASGI ``send`` callable, or None.

    None as well when the fast path is off, or the transport is one it does
    not handle (TLS terminated by daphne itself): that socket takes the plain
    ASGI path.
    """
    global _socket_checked
    if not enabled() or not isinstance(send, functools.partial) or not send.args:
        return None
    owner = getattr(send.func, "__self__", None)
    protocol = send.args[0]
    if not (isinstance(owner, _DaphneServer) and isinstance(protocol, _DaphneWebSocket)):
        return None
    transport = protocol.transport
    if type(transport) not in _PLAIN_TRANSPORTS or transport.TLS:
        return None
    if not _socket_checked:
        _socket_checked = True
        for obj, names in ((protocol, SOCKET_CONTRACT + SOCKET_OPTIONS), (transport, TRANSPORT_CONTRACT)):
            for name in names:
                if not hasattr(obj, name):
                    disable(f"{type(obj).__name__} has no attribute {name!r}")
                    return None
    return protocol


def buffered(socket):
    """Bytes written to ``socket`` that have not reached the kernel yet."""
    transport = socket.transport
    waiting = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    if socket.send_queue:
        waiting += sum(len(data) for data, _sync in socket.send_queue)
    return waiting


def is_open(socket):
    """True while frames may be written to ``socket``."""
    return socket.state == socket.STATE_OPEN


def send(socket, out):
    """Write ``out``'s frame (a :class:`~realtime.outbound.Outgoing`) to an open socket.

    When nothing is waiting in twisted's or autobahn's buffers, the frame goes
    straight to the kernel with one ``send``; twisted would instead register
    the socket for writing, write on the next loop turn and unregister it: two
    more system calls and several allocations per socket and message, which
    at 5,000 sockets was most of the fan-out's cost. Anything not sent at
    once, and compressed sockets, take autobahn's normal path.
    """
    frame = out.frame
    transport = socket.transport
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
        and not socket.send_queue
        and socket._perMessageCompress is None
    ):
        try:
            sent = transport.socket.send(frame)
        except OSError:
            sent = 0  # EAGAIN, or an error twisted will find and report itself
        if sent == len(frame):
            return
        transport.write(frame[sent:])
        return
    socket.sendPreparedMessage(out.prepared)


def prepare(data):
    """A server-to-client text frame of ``data`` (UTF-8 bytes), framed once for every socket."""
    # Server-to-client frames are not masked, so one frame fits every socket.
    return PreparedMessage(data, False, False, False)


def forget_handshake(socket):
    """Let go of the HTTP request that the open ``socket`` was upgraded from.

    twisted's ``HTTPChannel`` registers itself as its transport's producer and
    stays registered after daphne hands the transport to the WebSocket
    protocol, which keeps the channel and the upgrade request (its headers,
    buffers and addresses) for as long as the socket is open: about 4 KiB
    per idle socket (bench/memory.py). For a connection in the middle of a
    request, as an upgraded one stays, the channel's pause and resume do
    nothing, so unregistering it changes nothing but the memory.

    autobahn, too, keeps the raw request and its parsed headers, which it
    reads only during the handshake (the application has ``scope["headers"]``).
    """
    transport = socket.transport
    producer = transport.producer
    if isinstance(producer, _http.HTTPChannel) and producer._handlingRequest:
        transport.unregisterProducer()
    socket.http_request_data = b""
    # Also daphne's ``socket.request.headers``: the same dict.
    socket.http_headers.clear()


def limit_inbound(socket, max_size):
    """Have autobahn refuse frames and messages over ``max_size`` bytes with 1009.

    daphne drops such a connection (1006) and only after buffering up to its
    own limit (1 MiB by default); per socket, realtime's smaller limit applies
    before the payload is read, and the client learns why.
    """
    socket.failByDrop = False
    socket.maxMessagePayloadSize = max_size
    socket.maxFramePayloadSize = max_size


# Shutdown: 1001 to every socket -------------------------------------------

#: Seconds the reactor waits after the 1001 frames so they are flushed.
GOING_AWAY_FLUSH = 0.3

_sockets = weakref.WeakSet()
_hooked = False


def track(socket):
    """Remember an open socket so a server shutdown can close it with 1001."""
    global _hooked
    _sockets.add(socket)
    if not _hooked and "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", _going_away, reactor)
        _hooked = True


def _going_away(reactor):
    from twisted.internet.task import deferLater

    delay = _drain_seconds()
    if delay:
        # Keep listening meanwhile: readyz must be reachable to say 503.
        return deferLater(reactor, delay, _close_all, reactor)
    return _close_all(reactor)


def _close_all(reactor):
    from twisted.internet import tcp, unix
    from twisted.internet.task import deferLater

    # Stop accepting first, or clients reconnect to the dying process at once.
    for reader in reactor.getReaders():
        if isinstance(reader, (tcp.Port, unix.Port)):
            reader.stopListening()
    closed = 0
    for socket in list(_sockets):
        if socket.state == socket.STATE_OPEN:
            # sendClose() refuses 1001 (autobahn allows applications 1000 and
            # 3000-4999); daphne itself uses sendCloseFrame for its 1011.
            socket.sendCloseFrame(code=1001, isReply=False)
            closed += 1
    if closed:
        return deferLater(reactor, GOING_AWAY_FLUSH, lambda: None)
    return None


def _drain_seconds():
    try:
        return setting("DRAIN_SECONDS")
    except Exception:  # a broken setting must not stop the shutdown
        logger.exception("realtime: cannot read DRAIN_SECONDS; closing at once")
        return 0


def _draining(kill_all_applications):
    """daphne's ``kill_all_applications`` (its first step on SIGTERM), after the drain.

    Readiness turns 503 at once (:mod:`realtime.health`); the sockets and
    their applications go on for ``DRAIN_SECONDS`` before daphne cancels
    them and :func:`_going_away` closes them with 1001.
    """

    @functools.wraps(kill_all_applications)
    def wrapper(self):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        from .. import health

        health.start_draining()
        delay = _drain_seconds()
        if delay:
            logger.info("realtime: draining for %ss before closing sockets", delay)
            return deferLater(reactor, delay, kill_all_applications, self)
        return kill_all_applications(self)

    wrapper.realtime_draining = True
    return wrapper


# Handshake deadline (slowloris) ---------------------------------------------

#: Connections dropped because their request headers were too slow (this process).
slow_handshakes = 0


def install():
    """Guard daphne's HTTP connections with ``HANDSHAKE_TIMEOUT``; give its WebSockets an :class:`Inbox`.

    Replaces ``daphne.http_protocol.HTTPFactory.buildProtocol`` and
    ``daphne.server.Server.create_application`` with wrappers (idempotent);
    harmless in processes that are not a daphne server. The second only
    where :data:`INBOX_PROBLEM` is None.
    """
    if PROBLEM is not None:
        return
    if not getattr(_HTTPFactory.buildProtocol, "realtime_guarded", False):
        _HTTPFactory.buildProtocol = _guarded(_HTTPFactory.buildProtocol)
    if INBOX_PROBLEM is None and not getattr(_DaphneServer.create_application, "realtime_inbox", False):
        _DaphneServer.create_application = _with_inbox(_DaphneServer.create_application)
    if not getattr(_DaphneServer.kill_all_applications, "realtime_draining", False):
        _DaphneServer.kill_all_applications = _draining(_DaphneServer.kill_all_applications)


def _guarded(build):
    @functools.wraps(build)
    def buildProtocol(self, addr):
        protocol = build(self, addr)
        timeout = setting("HANDSHAKE_TIMEOUT")
        if protocol is not None and timeout is not None:
            _HeaderDeadline(protocol, timeout)
        return protocol

    buildProtocol.realtime_guarded = True
    return buildProtocol


class _HeaderDeadline:
    """Abort a connection whose request line and headers do not arrive in time.

    Armed when the connection is made and again when a response is finished
    (the next request, or an idle keep-alive connection, gets the same time);
    disarmed when a request's headers are complete. A WebSocket upgrade never
    finishes its request, so an open socket is never touched.
    """

    __slots__ = ("timeout", "transport", "call", "__weakref__")

    def __init__(self, protocol, timeout):
        self.timeout = timeout
        self.transport = None
        self.call = None
        deadline = weakref.ref(self)
        make_connection, connection_lost = protocol.makeConnection, protocol.connectionLost

        def makeConnection(transport):
            self.transport = transport
            self.arm()
            make_connection(transport)

        def connectionLost(reason):
            self.disarm()
            self.transport = None
            connection_lost(reason)

        def requestFactory(*args, **kwargs):
            return _GuardedRequest(deadline, *args, **kwargs)

        # Instance attributes: twisted calls these through the protocol object.
        protocol.makeConnection = makeConnection
        protocol.connectionLost = connectionLost
        protocol.requestFactory = requestFactory

    def arm(self):
        from twisted.internet import reactor

        self.disarm()
        if self.transport is not None:
            self.call = reactor.callLater(self.timeout, self.expire)

    def disarm(self):
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    def expire(self):
        global slow_handshakes
        self.call = None
        if self.transport is not None:
            slow_handshakes += 1
            logger.debug("realtime: dropping a connection whose request headers took over %s s", self.timeout)
            # Nothing is being written while a request is awaited, so this closes
            # at once; a FIN rather than a reset lets an idle keep-alive client
            # retry cleanly on a new connection.
            self.transport.loseConnection()


class _GuardedRequest(_WebRequest if PROBLEM is None else object):
    """daphne's request, telling its connection's deadline when headers are in and when it is done."""

    def __init__(self, deadline, *args, **kwargs):
        self._realtime_deadline = deadline
        super().__init__(*args, **kwargs)

    def gotLength(self, length):
        deadline = self._realtime_deadline()
        if deadline is not None:
            deadline.disarm()
        super().gotLength(length)

    def finish(self):
        super().finish()
        deadline = self._realtime_deadline()
        if deadline is not None:
            deadline.arm()


# A lighter queue per WebSocket ---------------------------------------------


class Inbox:
    """The queue daphne fills with one WebSocket's events: ``asyncio.Queue``, lighter.

    daphne gives each connection's application an ``asyncio.Queue``: three
    deques and an ``Event`` with a fourth, about 3 KiB that every idle socket
    keeps (bench/memory.py). daphne only calls ``put_nowait()`` and the
    application only awaits ``get()``, so this has just those two, with the
    same behaviour (unbounded, first in first out, waiting getters served in
    order, a cancelled getter passing its wake-up on), and holds a deque only
    while events wait to be read.
    """

    __slots__ = ("_items", "_getters")

    def __init__(self):
        self._items = None
        self._getters = []

    def put_nowait(self, item):
        """Queue ``item`` and wake the first waiting getter."""
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._wake_next()

    async def get(self):
        """The oldest event, once there is one."""
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                try:
                    self._getters.remove(getter)
                except ValueError:
                    pass
                if self._items and not getter.cancelled():
                    self._wake_next()
                raise
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def _wake_next(self):
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


#: The source of the daphne ``Server.create_application`` that :func:`_with_inbox`
#: repeats (daphne 4.2): with any other, daphne's own runs, with its ``asyncio.Queue``.
CREATE_APPLICATION_SHA256 = "6d6da219bd73c1338da9c91ee957b27140ef0f0f16c50db47a8279df167be32f"


def _check_create_application():
    if PROBLEM is not None:
        return PROBLEM
    try:
        source = textwrap.dedent(inspect.getsource(_DaphneServer.create_application))
    except (OSError, TypeError):
        return "the source of daphne.server.Server.create_application is not available"
    if hashlib.sha256(source.encode()).hexdigest() != CREATE_APPLICATION_SHA256:
        return "daphne.server.Server.create_application is not the one realtime knows"
    return None


#: Why WebSockets keep daphne's ``asyncio.Queue`` (a sentence), or None.
INBOX_PROBLEM = _check_create_application()


def _with_inbox(create_application):
    """daphne's ``create_application``, giving a WebSocket's application an :class:`Inbox` to receive from."""

    @functools.wraps(create_application)
    def wrapper(self, protocol, scope):
        if scope.get("type") != "websocket" or not enabled():
            return create_application(self, protocol, scope)
        # daphne 4.2's, line for line, with an Inbox for its asyncio.Queue.
        assert "application_instance" not in self.connections[protocol]
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope,
            receive=inbox.get,
            send=functools.partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance,
            loop=asyncio.get_event_loop(),
        )
        return inbox

    wrapper.realtime_inbox = True
    return wrapper
