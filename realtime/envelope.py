"""The one message format: validation and encoding, done once per publish.

Every server-to-client message is a JSON object::

    {"type": str, "stream": str, "seq": int | null, "id": str, "ts": str, "payload": {...}}

``notify()`` validates the type and payload here, in the caller's process, so a
mistake raises :class:`~realtime.exceptions.EnvelopeError` where the caller can
see it. The payload is encoded to JSON once; the envelope around it is built
by string concatenation so the same text is stored in the log and written to
every socket without being encoded again.
"""

import datetime
import decimal
import json
import math
import re
import uuid

from django.utils.functional import Promise

from .exceptions import EnvelopeError, MessageTooLarge

# fullmatch, never match with "$": "$" also matches before a trailing newline.
TYPE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")

#: Types the protocol uses for its own frames; applications cannot publish them.
RESERVED_TYPES = frozenset(
    {
        "ping",
        "pong",
        "welcome",
        "subscribe",
        "subscribed",
        "unsubscribe",
        "unsubscribed",
        "resume",
        "resync",
        "error",
        "inbox",
        "inbox.read",
        "inbox.archive",
        "inbox.read_all",
    }
)

MAX_DEPTH = 64

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_dumps = _encoder.encode
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text):
    """Return ``text`` with every unpaired surrogate replaced by U+FFFD.

    A surrogate pair that arrived as two code points (e.g. from JSON decoded
    with ``surrogatepass``) is joined back into the character it encodes.
    """
    if _SURROGATE_RE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def validate_type(type_):
    """Raise :class:`EnvelopeError` unless ``type_`` may be published."""
    if not isinstance(type_, str):
        raise EnvelopeError(f"Message type must be a string, got {type(type_).__name__}.")
    if not TYPE_RE.fullmatch(type_):
        raise EnvelopeError(
            f"Message type {type_!r} is invalid: use 1-100 characters from "
            "A-Z a-z 0-9 _ . : -"
        )
    if type_ in RESERVED_TYPES:
        raise EnvelopeError(
            f"Message type {type_!r} is reserved by the realtime protocol; "
            f"reserved types: {', '.join(sorted(RESERVED_TYPES))}."
        )
    return type_


def normalize_payload(payload):
    """Return a JSON-ready copy of ``payload`` (a dict), or raise :class:`EnvelopeError`.

    Datetimes, dates and times become ISO 8601 strings (aware datetimes in UTC
    with a ``Z``), Decimals and UUIDs become strings, tuples become lists and
    lazy translation strings are evaluated. Invalid text is replaced, not
    rejected. Anything else that JSON cannot carry raises, naming its path.
    """
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise EnvelopeError(
            f"Message payload must be a dict (a JSON object), got {type(payload).__name__}.",
            path="payload",
        )
    return _normalize(payload, "payload", 0)


def _normalize(value, path, depth):
    # Exact type checks first: they cover nearly every real payload cheaply.
    kind = type(value)
    if kind is str:
        return clean_text(value)
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise EnvelopeError(f"{path} is {value!r}, which JSON cannot represent.", path=path)
    if depth >= MAX_DEPTH:
        raise EnvelopeError(f"{path} is nested more than {MAX_DEPTH} levels deep.", path=path)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EnvelopeError(
                    f"{path} has a key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be strings.",
                    path=path,
                )
            out[clean_text(key)] = _normalize(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, str):
        return clean_text(str(value))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _normalize(float(value), path, depth)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(datetime.timezone.utc)
            return value.isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise EnvelopeError(f"{path} is {value!r}, which JSON cannot represent.", path=path)
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Promise):
        return clean_text(str(value))
    raise EnvelopeError(
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which cannot "
        "be sent as JSON. Convert it to a str, number, bool, None, list or dict.",
        path=path,
    )


def encode_payload(payload):
    """Validate and encode ``payload`` once; return its JSON text."""
    return _dumps(normalize_payload(payload))


def now_iso():
    """The current UTC time as ISO 8601 with millisecond precision and ``Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(type_, stream, seq, payload_json, *, id="", ts=None, inbox=False):
    """Assemble an envelope's JSON text around an already encoded payload.

    Only ``type``, ``stream``, ``id`` and ``ts`` are encoded here; they are
    short, so a fan-out to many streams pays for the payload once. An inbox
    item (:mod:`realtime.inbox`) carries ``"inbox":true``.
    """
    head, tail = halves(type_, stream, payload_json, id=id, ts=ts, inbox=inbox)
    return f"{head}{'null' if seq is None else int(seq)}{tail}"


def halves(type_, stream, payload_json, *, id="", ts=None, inbox=False):
    """The envelope's text before and after its seq.

    The log's single-statement append (:mod:`realtime.store`) lets the
    database put the seq it allocates between the two, so the text is
    complete without a second round trip.
    """
    head = '{"type":%s,"stream":%s,"seq":' % (_dumps(type_), _dumps(stream))
    tail = ',"id":%s,"ts":%s,%s"payload":%s}' % (
        _dumps(id),
        _dumps(ts or now_iso()),
        '"inbox":true,' if inbox else "",
        payload_json,
    )
    return head, tail


#: The widest seq, id and timestamp an envelope can carry, for :func:`check_size`.
_WIDEST = build("", "", 10**18, "", id="0" * 32, ts="2000-01-01T00:00:00.000Z")
_INBOX_MARK = len('"inbox":true,')


def check_size(type_, stream, payload_json, limit, inbox=False):
    """Raise :class:`MessageTooLarge` if the envelope of ``payload_json`` can exceed ``limit`` bytes of UTF-8.

    Computed from the parts, without building the envelope: type and stream
    names are ASCII; seq, id and timestamp are counted at their widest.
    """
    # Cheap bound first: a str of n code points is at most 4n bytes of UTF-8.
    fixed = len(_WIDEST) + len(type_) + len(stream) + (_INBOX_MARK if inbox else 0)
    if fixed + len(payload_json) * 4 <= limit:
        return
    size = fixed + len(payload_json.encode("utf-8"))
    if size > limit:
        raise MessageTooLarge(
            f"The encoded message is {size} bytes; the limit is {limit} "
            '(settings.REALTIME["MAX_MESSAGE_SIZE"]). Send an id and let the '
            "client fetch the rest.",
        )


def control(type_, payload=None, stream=""):
    """Encode a protocol frame (``pong``, ``welcome``, ``error`` ...) as envelope text."""
    return build(type_, stream, None, _dumps(payload or {}))
