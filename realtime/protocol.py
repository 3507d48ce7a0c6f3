"""Client-to-server frames: parsing and validation, with no I/O.

The consumer hands every text frame to :func:`parse`, which returns a
:class:`Command` or raises :class:`ProtocolError` with a stable ``code`` that
is sent back to the client in an ``error`` frame.
"""

import json
import math
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .envelope import clean_text
from .streams import STREAM_RE

PROTOCOL_VERSION = 1

CLIENT_TYPES = ("ping", "subscribe", "unsubscribe", "resume", "inbox.read", "inbox.archive", "inbox.read_all")

#: Close codes (see docs/protocol.md). Daphne (autobahn) lets applications
#: send only 1000 and 3000-4999, so RFC 6455's 1008/1009 are sent as 4008/4009.
CLOSE_POLICY = 4008  # flooding, or too many invalid frames
CLOSE_TOO_BIG = 4009  # a frame over MAX_INBOUND_SIZE (daphne itself answers 1009)
CLOSE_SLOW = 4010  # the client fell MAX_OUTBOUND_BUFFER behind; reconnect and resume
CLOSE_TOO_MANY_CONNECTIONS = 4029  # over MAX_CONNECTIONS_PER_USER / _PER_IP
CLOSE_UNAUTHENTICATED = 4401  # not logged in, or the login ended
CLOSE_SERVER_ERROR = 4500  # the server could not read the log; reconnect and resume

#: Largest seq a client may name: the log's seq column is a signed 64-bit integer.
MAX_SEQ = 2**63 - 1

#: Characters of client input quoted back in an error message.
ECHO_LIMIT = 80


class ProtocolError(ValueError):
    """A client frame the server cannot act on; ``code`` is machine-readable."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


@dataclass
class Command:
    """A valid client frame.

    ``positions`` maps stream names to the last seq the client holds (None: it
    holds nothing and wants new messages only); ``epochs`` the epochs it knows.
    """

    type: str
    id: object = None
    stream: str | None = None
    positions: dict = field(default_factory=dict)
    epochs: dict = field(default_factory=dict)
    #: ``inbox.read`` / ``inbox.archive``: ``[(stream, seq), ...]``.
    items: list = field(default_factory=list)


def parse(text, max_streams=None, max_items=None):
    """Parse one text frame into a :class:`Command`.

    Never raises anything but :class:`ProtocolError`, whatever the text:
    nesting too deep for the JSON parser, numbers too long to convert, lone
    surrogates and values of the wrong type all become an error code.
    ``max_streams`` bounds how many streams one ``resume`` may name,
    ``max_items`` how many items one ``inbox.read`` or ``inbox.archive`` may.
    """
    data = _loads(text, "invalid_json", "Frame is not valid JSON")
    if not isinstance(data, dict):
        raise ProtocolError("not_an_object", "Frame must be a JSON object with a 'type'.")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"Unknown frame type {_echo(kind)}; expected one of {', '.join(CLIENT_TYPES)}.",
        )
    command = Command(type=kind, id=_small_id(data.get("id")))
    if kind in ("subscribe", "unsubscribe"):
        command.stream = _stream(data.get("stream"))
        if kind == "subscribe":
            command.positions = {command.stream: _seq(data.get("since"), "'since'")}
            if data.get("epoch") is not None:
                command.epochs = {command.stream: _epoch(data.get("epoch"))}
    elif kind == "resume":
        command.positions, command.epochs = parse_positions(data, max_streams)
    elif kind in ("inbox.read", "inbox.archive"):
        command.items = _items(data.get("items"), max_items)
    elif kind == "inbox.read_all" and data.get("stream") is not None:
        command.stream = _stream(data.get("stream"))
    return command


def _items(value, max_items):
    """``[{"stream", "seq"}, ...]`` (or ``[stream, seq]`` pairs) as ``[(stream, seq)]``."""
    if not isinstance(value, list) or not value:
        raise ProtocolError("invalid_items", "'items' must be a non-empty list of {stream, seq} objects.")
    if max_items is not None and len(value) > max_items:
        raise ProtocolError("too_many", f"At most {max_items} items per frame (INBOX_MAX_ITEMS).")
    items = []
    for item in value:
        if isinstance(item, dict):
            stream, seq = item.get("stream"), item.get("seq")
        elif isinstance(item, list) and len(item) == 2:
            stream, seq = item
        else:
            raise ProtocolError("invalid_items", "Each item must be a {stream, seq} object.")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
            raise ProtocolError("invalid_items", "Each item's seq must be a positive integer.")
        items.append((_stream(stream), seq))
    return items


def _loads(text, code, what):
    try:
        return json.loads(text)
    except RecursionError:
        raise ProtocolError(code, f"{what}: nested too deeply.") from None
    except ValueError as exc:  # includes integers too long to convert
        raise ProtocolError(code, f"{what}: {exc}") from None


def parse_positions(data, max_streams=None):
    """Validate ``{"streams": {name: seq}, "epochs": {name: epoch}}``."""
    streams = data.get("streams", {})
    epochs = data.get("epochs") or {}
    if not isinstance(streams, dict) or not isinstance(epochs, dict):
        raise ProtocolError("invalid_resume", "'streams' and 'epochs' must be JSON objects.")
    if max_streams is not None and (len(streams) > max_streams or len(epochs) > max_streams):
        raise ProtocolError("invalid_resume", f"A resume may name at most {max_streams} streams.")
    positions = {_stream(name): _seq(seq, "Each seq in 'streams'") for name, seq in streams.items()}
    known = {_stream(name): _epoch(epoch) for name, epoch in epochs.items() if epoch}
    return positions, known


def parse_query(query_string, max_streams=None):
    """Read resume positions from the connect URL's ``?resume=<JSON>``.

    Resuming in the URL (rather than in a first frame) means the server knows
    where each stream starts before it sends anything, so no live message can
    overtake the replay.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    values = parse_qs(query_string).get("resume")
    if not values:
        return {}, {}
    data = _loads(values[-1], "invalid_resume", "The 'resume' query parameter is not valid JSON")
    if not isinstance(data, dict):
        raise ProtocolError("invalid_resume", "The 'resume' query parameter must be a JSON object.")
    return parse_positions(data, max_streams)


def _stream(value):
    if not isinstance(value, str) or not STREAM_RE.fullmatch(value):
        raise ProtocolError("invalid_stream", f"Invalid stream name {_echo(value)}.")
    return value


def _seq(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ProtocolError("invalid_resume", f"{name} must be an integer from 0 to 2**63-1, or null.")
    return value


def _epoch(value):
    if not isinstance(value, str) or len(value) > 16:
        raise ProtocolError("invalid_resume", "An epoch must be a short string.")
    return clean_text(value)


def _small_id(value):
    # Echoed back in the reply, so it must encode: bounded (no megabytes
    # echoed), finite (JSON has no NaN) and valid text (no lone surrogates).
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= MAX_SEQ else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= 64:
        return clean_text(value)
    return None


def _echo(value):
    """``repr(value)``, cut short: client input quoted back in an error."""
    text = repr(value)
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 3] + "..."
