"""Client-to-server frames: parsing and validation, with no I/O.

The consumer hands every text frame to :func:`parse`, which returns a
:class:`Command` or raises :class:`ProtocolError` with a stable ``code`` that
is sent back to the client in an ``error`` frame.
"""

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .streams import STREAM_RE

PROTOCOL_VERSION = 1

CLIENT_TYPES = ("ping", "subscribe", "unsubscribe", "resume")


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


def parse(text):
    """Parse one text frame into a :class:`Command`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"Frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("not_an_object", "Frame must be a JSON object with a 'type'.")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"Unknown frame type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}.",
        )
    command = Command(type=kind, id=_small_id(data.get("id")))
    if kind in ("subscribe", "unsubscribe"):
        command.stream = _stream(data.get("stream"))
        if kind == "subscribe":
            command.positions = {command.stream: _seq(data.get("since"), "since")}
            if data.get("epoch") is not None:
                command.epochs = {command.stream: _epoch(data.get("epoch"))}
    elif kind == "resume":
        command.positions, command.epochs = parse_positions(data)
    return command


def parse_positions(data):
    """Validate ``{"streams": {name: seq}, "epochs": {name: epoch}}``."""
    streams = data.get("streams", {})
    epochs = data.get("epochs") or {}
    if not isinstance(streams, dict) or not isinstance(epochs, dict):
        raise ProtocolError("invalid_resume", "'streams' and 'epochs' must be JSON objects.")
    positions = {_stream(name): _seq(seq, f"streams.{name}") for name, seq in streams.items()}
    known = {_stream(name): _epoch(epoch) for name, epoch in epochs.items() if epoch}
    return positions, known


def parse_query(query_string):
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
    try:
        data = json.loads(values[-1])
    except ValueError:
        raise ProtocolError("invalid_resume", "The 'resume' query parameter is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_resume", "The 'resume' query parameter must be a JSON object.")
    return parse_positions(data)


def _stream(value):
    if not isinstance(value, str) or not STREAM_RE.match(value):
        raise ProtocolError("invalid_stream", f"Invalid stream name {value!r}.")
    return value


def _seq(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("invalid_resume", f"'{name}' must be a non-negative integer or null.")
    return value


def _epoch(value):
    if not isinstance(value, str) or len(value) > 16:
        raise ProtocolError("invalid_resume", "An epoch must be a short string.")
    return value


def _small_id(value):
    # Echoed back in the reply; bounded so a client cannot make us echo megabytes.
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 64):
        return value
    return None
