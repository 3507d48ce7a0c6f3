"""Frames on their way to one socket: in order, with a bound on what may wait.

Every frame a connection sends goes through its :class:`Output`, which knows
how many bytes are queued for the socket and not yet written to the network.
A live message that would take that over ``MAX_OUTBOUND_BUFFER`` is refused
(:meth:`Output.write` returns False) and the consumer closes the socket with
4010: the client resumes from its last seq, so a client that stops reading
costs at most the cap and loses nothing. Replays wait for the buffer to drain
(:meth:`Output.drained`) before reading more of the log.

:class:`DaphneOutput` writes frames straight into daphne's sockets and reads
their buffers (:mod:`realtime.servers.daphne`); :class:`AsgiOutput` works with
any server through ASGI ``send``, counting what waits in its own queue (a
server with flow control, such as uvicorn, makes ``send`` wait while its
buffer is full, so the queue is where a slow client's backlog collects).
"""

import asyncio
import logging
from collections import deque

from .servers import daphne

logger = logging.getLogger("realtime")


class Outgoing:
    """The text of one message, with its UTF-8 size and WebSocket frame built on first use.

    The hub makes one per message and process, so a fan-out to many sockets
    encodes and frames the text once.
    """

    __slots__ = ("text", "_prepared", "_size")

    def __init__(self, text):
        self.text = text
        self._prepared = None
        self._size = None

    @property
    def prepared(self):
        """The message framed once for every daphne socket."""
        if self._prepared is None:
            self._prepared = daphne.prepare(self.text.encode("utf-8"))
        return self._prepared

    @property
    def frame(self):
        """The bytes of the whole frame, header included."""
        return self.prepared.payloadHybi

    @property
    def size(self):
        """Bytes of UTF-8 in the text."""
        if self._size is None:
            self._size = len(self.text.encode("utf-8"))
        return self._size


class Output:
    """What a connection writes through; subclasses decide how bytes reach the socket."""

    __slots__ = ("limit",)

    def __init__(self, limit):
        self.limit = limit

    @property
    def buffered(self):
        """Bytes queued for the socket and not yet handed to the kernel."""
        raise NotImplementedError("subclasses of Output must provide buffered")

    def write(self, out):
        """Queue or write ``out`` (an :class:`Outgoing`) after everything written before.

        Returns False, writing nothing, if that would take the bytes waiting
        over the limit (a frame larger than the limit still goes out when
        nothing waits). Writing to a closed output silently does nothing.
        """
        raise NotImplementedError("subclasses of Output must provide write()")

    def write_text(self, text):
        """:meth:`write` for a frame of this connection only."""
        return self.write(Outgoing(text))

    async def drained(self, low):
        """Return once at most ``low`` bytes wait, or the socket is closed."""
        raise NotImplementedError("subclasses of Output must provide drained()")

    async def close(self, code):
        """Close the socket with ``code`` after the frames already written."""
        raise NotImplementedError("subclasses of Output must provide close()")

    def discard(self):
        """Drop what is queued and write nothing more (the socket is going away)."""


class _Close:
    """A close frame's place in an :class:`AsgiOutput` queue."""

    __slots__ = ("code",)
    size = 0

    def __init__(self, code):
        self.code = code


class AsgiOutput(Output):
    """Frames sent one after another through ASGI ``send`` by a writer task."""

    __slots__ = ("_send", "_queue", "_bytes", "_writer", "_progress", "_open", "_closing")

    def __init__(self, send, limit):
        super().__init__(limit)
        self._send = send
        self._queue = deque()
        self._bytes = 0
        self._writer = None
        self._progress = asyncio.Event()
        self._open = True  # accepting frames
        self._closing = False  # a close is queued or sent

    @property
    def buffered(self):
        return self._bytes

    def write(self, out):
        if not self._open:
            return True
        size = out.size
        if self._bytes and self._bytes + size > self.limit:
            return False
        self._queue.append(out)
        self._bytes += size
        self._wake()
        return True

    def _wake(self):
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._run())

    async def _run(self):
        try:
            while self._queue:
                item = self._queue[0]
                if isinstance(item, _Close):
                    await self._send({"type": "websocket.close", "code": item.code})
                else:
                    await self._send({"type": "websocket.send", "text": item.text})
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
                    self._bytes -= item.size
                self._progress.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The server refused the send: the socket is gone or going.
            logger.debug("realtime: send failed; dropping the rest of this socket's queue", exc_info=True)
            self.discard()
        finally:
            self._writer = None
            self._progress.set()

    async def drained(self, low):
        while self._bytes > low and self._open:
            self._progress.clear()
            await self._progress.wait()

    async def close(self, code):
        if self._closing:
            return
        self._closing = True
        if self._open:
            self._open = False
            self._queue.append(_Close(code))
            self._wake()
            return
        # Discarded: the writer may be stuck on a client that does not read,
        # so the close does not wait behind it.
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception:
            logger.debug("realtime: close failed; the socket is gone", exc_info=True)

    def discard(self):
        self._open = False
        self._queue.clear()
        self._bytes = 0
        self._progress.set()


class DaphneOutput(Output):
    """Frames written straight into a daphne socket, measured in its own buffers.

    Should the fast path ever fail, this socket switches to an
    :class:`AsgiOutput` for good (so frames stay in order) and the fast path
    is switched off for the process; the frame that hit the failure is sent
    the ordinary way, not lost.
    """

    __slots__ = ("socket", "_send", "_fallback")

    #: Seconds between looks at a socket's buffer while waiting for it to drain.
    POLL_MIN, POLL_MAX = 0.005, 0.1

    def __init__(self, socket, send, limit):
        super().__init__(limit)
        self.socket = socket
        self._send = send
        self._fallback = None

    @property
    def buffered(self):
        if self._fallback is not None:
            return self._fallback.buffered
        try:
            return daphne.buffered(self.socket)
        except Exception:
            self._fail_over("reading the buffer size")
            return self._fallback.buffered

    def write(self, out):
        if self._fallback is not None:
            return self._fallback.write(out)
        socket = self.socket
        try:
            if not daphne.is_open(socket):
                return True  # closing: the client resumes from what it got
            waiting = daphne.buffered(socket)
            if waiting and waiting + len(out.frame) > self.limit:
                return False
            daphne.send(socket, out)
            return True
        except Exception:
            self._fail_over("writing a frame")
            return self._fallback.write(out)

    def _fail_over(self, what):
        logger.exception("realtime: daphne fast path failed %s", what)
        daphne.disable(f"an exception while {what}")
        self._fallback = AsgiOutput(self._send, self.limit)

    async def drained(self, low):
        if self._fallback is not None:
            return await self._fallback.drained(low)
        delay = self.POLL_MIN
        while daphne.is_open(self.socket) and self.buffered > low:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX)
            if self._fallback is not None:
                return await self._fallback.drained(low)

    async def close(self, code):
        if self._fallback is not None:
            return await self._fallback.close(code)
        # daphne writes the close frame synchronously, after what is buffered.
        await self._send({"type": "websocket.close", "code": code})

    def discard(self):
        if self._fallback is not None:
            self._fallback.discard()


def output_for(send, limit):
    """The :class:`Output` for a socket reached through ASGI ``send``."""
    socket = daphne.socket_for(send)
    if socket is not None:
        return DaphneOutput(socket, send, limit)
    return AsgiOutput(send, limit)
