"""One message, many sockets: frame the text once per process, not once per socket.

Through ASGI every ``websocket.send`` is encoded to UTF-8 and framed again by
the server for each socket. Under daphne the hub can instead hand autobahn a
``PreparedMessage`` (framed once, autobahn's own broadcast optimisation) and
write it to each socket directly. When the server is not daphne, or the socket
is not open, sends take the ordinary ASGI path.
"""

import functools

try:  # daphne is a dependency, but the fast path must never be required
    from autobahn.websocket.protocol import PreparedMessage
    from daphne.server import Server as _DaphneServer
    from daphne.ws_protocol import WebSocketProtocol as _DaphneWebSocket
except ImportError:  # pragma: no cover
    PreparedMessage = _DaphneServer = _DaphneWebSocket = None


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


def daphne_socket(send):
    """The daphne WebSocket protocol behind an ASGI ``send`` callable, or None."""
    if _DaphneServer is None or not isinstance(send, functools.partial) or not send.args:
        return None
    owner = getattr(send.func, "__self__", None)
    protocol = send.args[0]
    if isinstance(owner, _DaphneServer) and isinstance(protocol, _DaphneWebSocket):
        return protocol
    return None
