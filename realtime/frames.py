"""One message, many sockets: frame the text once per process, not once per socket.

Through ASGI every ``websocket.send`` is encoded to UTF-8 and framed again by
the server for each socket. Under daphne the hub can instead hand autobahn a
``PreparedMessage`` (framed once, autobahn's own broadcast optimisation) and
write it to each socket directly. When the server is not daphne, or the socket
is not open, sends take the ordinary ASGI path.

The same access lets a stopping daphne say goodbye properly: on SIGTERM every
open socket gets a 1001 ("going away") close frame, which clients treat as a
reason to reconnect, instead of a dropped TCP connection (1006).
"""

import functools
import sys
import weakref

try:  # daphne is a dependency, but the fast path must never be required
    from autobahn.websocket.protocol import PreparedMessage
    from daphne.server import Server as _DaphneServer
    from daphne.ws_protocol import WebSocketProtocol as _DaphneWebSocket
    from twisted.internet import tcp as _tcp
    from twisted.internet import unix as _unix

    _PLAIN_TRANSPORTS = (_tcp.Server, _unix.Server)
except ImportError:  # pragma: no cover
    PreparedMessage = _DaphneServer = _DaphneWebSocket = None
    _PLAIN_TRANSPORTS = ()


class Outgoing:
    """The text of one message, with its WebSocket frame built on first use."""

    __slots__ = ("text", "_prepared")

    def __init__(self, text):
        self.text = text
        self._prepared = None

    @property
    def prepared(self):
        if self._prepared is None:
            # Server-to-client frames are not masked, so one frame fits every socket.
            self._prepared = PreparedMessage(self.text.encode("utf-8"), False, False, False)
        return self._prepared


def send_prepared(socket, out):
    """Write ``out``'s frame to an open daphne socket.

    When nothing is waiting in twisted's or autobahn's buffers, the frame goes
    straight to the kernel with one ``send``; twisted would instead register
    the socket for writing, write on the next loop turn and unregister it: two
    more system calls and several allocations per socket and message, which
    at 5,000 sockets was most of the fan-out's cost. Anything not sent at
    once, TLS, and any other transport take autobahn's normal path.
    """
    frame = out.prepared.payloadHybi
    transport = socket.transport
    if (
        type(transport) in _PLAIN_TRANSPORTS
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
        and not getattr(socket, "send_queue", None)
        and getattr(socket, "_perMessageCompress", None) is None
    ):
        try:
            sent = transport.socket.send(frame)
        except OSError:
            sent = 0  # EAGAIN, or an error twisted will find and report itself
        if sent == len(frame):
            return
        frame = frame[sent:]
        transport.write(frame)
        return
    socket.sendPreparedMessage(out.prepared)


def daphne_socket(send):
    """The daphne WebSocket protocol behind an ASGI ``send`` callable, or None."""
    if _DaphneServer is None or not isinstance(send, functools.partial) or not send.args:
        return None
    owner = getattr(send.func, "__self__", None)
    protocol = send.args[0]
    if isinstance(owner, _DaphneServer) and isinstance(protocol, _DaphneWebSocket):
        return protocol
    return None


#: Seconds the reactor waits after the 1001 frames so they are flushed.
GOING_AWAY_FLUSH = 0.3

_sockets = weakref.WeakSet()
_hooked = False


def track(socket):
    """Remember an open daphne socket so a server shutdown can close it with 1001."""
    global _hooked
    _sockets.add(socket)
    if not _hooked and "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", _going_away, reactor)
        _hooked = True


def _going_away(reactor):
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
