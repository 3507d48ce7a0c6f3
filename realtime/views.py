"""The HTTP publish API: ``POST /realtime/api/publish`` for programs that are not Django.

See ``docs/publishing.md``. The body is one message, or ``{"messages": [...]}``
for a batch published all or nothing. Every answer is JSON, failures
included; errors read ``{"error": code, "message": text}`` plus ``"fields"``
for a bad request (and for a batch refused with 403).
"""

import json
import logging
import math
import time
from typing import NamedTuple
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from . import clientip, tokens
from .api import notify, notify_many
from .conf import setting
from .envelope import validate_type
from .exceptions import EnvelopeError, StreamNameError
from .streams import user_stream, validate_stream

FIELDS = {"stream", "user", "type", "payload", "idempotency_key", "ephemeral"}

#: ``Retry-After`` seconds of a 503 answered while the database is unavailable.
UNAVAILABLE_RETRY_AFTER = 5

#: No integer primary key lies outside this range; larger numbers name nobody.
_PK_RANGE = range(-(2**63), 2**63)

logger = logging.getLogger("realtime")


class _Invalid(Exception):
    """The request body cannot be published; ``fields`` maps field names to messages."""

    def __init__(self, fields, message=None):
        super().__init__(fields)
        self.fields = fields
        self.message = message


class _Item(NamedTuple):
    """One valid message of a body; exactly one of ``stream`` and ``user`` is not None.

    ``user`` is the value the body gave, not yet looked up.
    """

    stream: str | None
    user: int | str | None
    type: str
    payload: dict | None
    persist: bool
    idempotency_key: str | None


@csrf_exempt
def publish(request):
    """Publish one message, or a batch of them, for the bearer of a publish token.

    Answers 202 ``{"stream", "seq", "id", "created"}`` (a batch:
    ``{"results": [...]}``, one such object per message, in order); 400 (bad
    body, with ``fields``), 401 (no or bad token), 403 (target outside the
    token's patterns, or no such user: the two answer alike), 405, 413 (body
    over ``PUBLISH_MAX_BODY``), 429 (over ``PUBLISH_RATE_LIMIT`` for the token
    or ``PUBLISH_AUTH_FAILURE_LIMIT`` for the client address, with
    ``Retry-After``), 503 (the database is unavailable, with ``Retry-After``)
    or 500 (anything else, logged with its traceback). Never an HTML page.
    A batch answered 4xx or 503 published nothing.
    """
    try:
        return _publish(request)
    except DatabaseError as exc:
        logger.warning(
            "Publish API answered 503, the database is unavailable: %s: %s", type(exc).__name__, exc
        )
        return _error(
            503,
            "unavailable",
            _("The database is unavailable; retry later."),
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    except Exception:
        logger.exception("Publish API answered 500 after an unexpected error.")
        return _error(500, "internal", _("The server failed to handle the request; retry later."))


def _publish(request):
    """The API itself; :func:`publish` turns what it raises into JSON answers."""
    if request.method != "POST":
        return _error(405, "method_not_allowed", _("Use POST."), headers={"Allow": "POST"})
    address = clientip.from_request(request)
    # Before the token is looked at: a blocked address learns nothing, even from a good token.
    retry_after = _auth_failures_blocked(address)
    if retry_after is not None:
        return _rate_limited(_("Too many failed authentications from this address; retry later."), retry_after)
    credential = tokens.authenticate(_bearer(request))
    if credential is None:
        _count_auth_failure(address)
        return _error(
            401,
            "unauthorized",
            _("Send a valid publish token: 'Authorization: Bearer <token>'."),
            headers={"WWW-Authenticate": 'Bearer realm="realtime"'},
        )
    retry_after = _over_rate_limit(credential)
    if retry_after is not None:
        return _rate_limited(_("Too many requests for this token; retry later."), retry_after)
    limit = setting("PUBLISH_MAX_BODY")
    try:
        too_big = int(request.META.get("CONTENT_LENGTH") or 0) > limit or len(request.body) > limit
    except (ValueError, RequestDataTooBig):
        too_big = True
    if too_big:
        return _error(
            413,
            "too_large",
            _("The request body is larger than %(limit)d bytes.") % {"limit": limit},
        )
    try:
        items, batch = _parse(request.body)
    except _Invalid as exc:
        message = exc.message or _("The message cannot be published.")
        return _error(400, "invalid", message, fields=exc.fields)
    streams, refused = _streams(credential, items)
    if batch:
        return _publish_batch(credential, items, streams, refused)
    if refused:
        [(_field, reason)] = refused.values()
        return _error(403, "forbidden", reason)
    [item], [stream] = items, streams
    try:
        # A savepoint when the request already runs in a transaction
        # (ATOMIC_REQUESTS): a failed publish leaves that transaction usable.
        with transaction.atomic():
            published = notify(
                stream,
                item.type,
                item.payload,
                persist=item.persist,
                idempotency_key=item.idempotency_key,
            )
    except EnvelopeError as exc:
        field = "payload" if exc.path else "message"
        return _error(400, "invalid", _("The message cannot be published."), fields={field: [str(exc)]})
    return JsonResponse(_result(published), status=202)


def _publish_batch(credential, items, streams, refused):
    """Count and publish a parsed batch, all or nothing; return the answer.

    ``streams`` and ``refused`` are what :func:`_streams` made of ``items``.
    """
    if refused:
        named = [f"messages[{index}]" for index in refused]
        return _error(
            403,
            "forbidden",
            _("This token may not publish to the targets of %(items)s; nothing was published.")
            % {"items": ", ".join(named[:10]) + (", …" if len(named) > 10 else "")},
            fields={f"messages[{index}].{field}": [reason] for index, (field, reason) in refused.items()},
        )
    # The request counted one on arrival; its other messages count now.
    extra = len(items) - 1
    counter = None
    limit = setting("PUBLISH_RATE_LIMIT")
    if limit is not None and extra:
        counter, seconds_left = _window(credential.key)
        if _window_count(counter, extra) > limit:
            _window_count(counter, -extra)
            return _rate_limited(
                _("This batch would exceed the token's rate limit; retry later."), seconds_left
            )
    messages = [
        {
            "target": stream,
            "type": item.type,
            "payload": item.payload,
            "idempotency_key": item.idempotency_key,
            "persist": item.persist,
        }
        for stream, item in zip(streams, items)
    ]
    try:
        with transaction.atomic():  # a savepoint, as for one message
            published = notify_many(messages)
    except Exception as exc:
        # Nothing was published, so the batch counts as the one request it was.
        if counter is not None:
            _window_count(counter, -extra)
        if not isinstance(exc, EnvelopeError):
            raise
        where = f"messages[{exc.index}]"
        field = f"{where}.payload" if exc.path else where
        return _error(
            400,
            "invalid",
            _("The batch cannot be published; nothing was stored."),
            fields={field: [str(exc).removeprefix(f"{where}: ")]},
        )
    return JsonResponse({"results": [_result(result) for result in published]}, status=202)


def _result(published):
    """The JSON of one published message: what a single message answers, one item of a batch's results."""
    return {
        "stream": published.stream,
        "seq": published.seq,
        "id": published.id,
        "created": published.created,
    }


def _error(status, code, message, fields=None, headers=None):
    body = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return JsonResponse(body, status=status, headers=headers)


def _rate_limited(message, retry_after):
    return _error(429, "rate_limited", message, headers={"Retry-After": str(retry_after)})


def _bearer(request):
    scheme, _sep, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def _over_rate_limit(credential):
    """Count a request of this token; return seconds to wait if it is over ``PUBLISH_RATE_LIMIT``."""
    limit = setting("PUBLISH_RATE_LIMIT")
    if limit is None:
        return None
    counter, seconds_left = _window(credential.key)
    return seconds_left if _window_count(counter, 1) > limit else None


def _auth_failures_blocked(address):
    """Seconds to wait if ``address`` has used up ``PUBLISH_AUTH_FAILURE_LIMIT`` in this window, else None."""
    limit = setting("PUBLISH_AUTH_FAILURE_LIMIT")
    if limit is None:
        return None
    counter, seconds_left = _window(_failures_counter(address))
    return seconds_left if _window_count(counter, 0) >= limit else None


def _count_auth_failure(address):
    """Count one failed authentication from ``address`` in the current window."""
    if setting("PUBLISH_AUTH_FAILURE_LIMIT") is not None:
        _window_count(_window(_failures_counter(address))[0], 1)


def _failures_counter(address):
    # Quoted: X-Forwarded-For is free text, and memcached refuses keys with spaces.
    return f"auth-failures:{quote(address, safe='.:')}"


def _window(name):
    """The cache key of counter ``name`` in the current window, and the seconds the window has left.

    Windows are ``PUBLISH_RATE_WINDOW`` seconds of the wall clock.
    """
    window = setting("PUBLISH_RATE_WINDOW")
    now = time.time()
    return f"realtime:publish:{name}:{int(now // window)}", max(1, math.ceil(window - now % window))


def _window_count(key, add):
    """Add ``add`` (negative: take back) to the counter ``key`` of :func:`_window`; return its count.

    Counters live in the ``PUBLISH_CACHE`` cache. If the cache fails, the
    count is 0: the rate limits fail open rather than take the whole API down.
    """
    timeout = setting("PUBLISH_RATE_WINDOW") + 1
    cache = caches[setting("PUBLISH_CACHE")]
    try:
        if not add:
            return cache.get(key, 0)
        if add > 0:
            cache.add(key, 0, timeout=timeout)
        try:
            return cache.incr(key, add)
        except ValueError:
            # The counter expired since it was read or created: this is a new window.
            if add < 0:
                return 0
            cache.set(key, add, timeout=timeout)
            return add
    except Exception as exc:
        # Each cache backend raises its own client's errors (redis, pymemcache, OSError...).
        logger.warning(
            "Publish API rate limits not applied, the cache %r failed: %s: %s",
            setting("PUBLISH_CACHE"),
            type(exc).__name__,
            exc,
        )
        return 0


def _parse(body):
    """Validate a request body; return ``(items, batch)``.

    ``items`` is a list of :class:`_Item`: one for a single message, or every
    message of a batch (``{"messages": [...]}``, ``batch`` True). A batch's
    field errors are keyed by the item's path: ``messages[3].payload``.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's stack allows.
        raise _Invalid({"body": [_("The body must be a JSON object.")]}) from None
    if not isinstance(data, dict):
        raise _Invalid({"body": [_("The body must be a JSON object.")]})
    if "messages" not in data:
        return [_parse_item(data)], False
    errors = {name: [_("Unknown field.")] for name in sorted(set(data) - {"messages"})}
    messages = data["messages"]
    if not isinstance(messages, list):
        errors["messages"] = [_("Must be a list of messages.")]
    elif not messages:
        errors["messages"] = [_("Give at least one message.")]
    else:
        too_many = _batch_too_large(len(messages))
        if too_many:
            errors["messages"] = [too_many]
    if not errors:
        items = []
        for index, message in enumerate(messages):
            try:
                items.append(_parse_item(message, f"messages[{index}]"))
            except _Invalid as exc:
                errors.update(exc.fields)
    if errors:
        raise _Invalid(errors, _("The batch cannot be published; nothing was stored."))
    return items, True


def _batch_too_large(count):
    """Why a batch of ``count`` messages is refused whatever they hold, or None."""
    limit = setting("PUBLISH_MAX_BATCH")
    if count > limit:
        return _("Send at most %(limit)d messages per request (PUBLISH_MAX_BATCH).") % {"limit": limit}
    rate = setting("PUBLISH_RATE_LIMIT")
    if rate is not None and count > rate:
        # A 429 would invite retries that can never succeed.
        return _(
            "Send at most %(limit)d messages per request: this token may publish no more "
            "per window (PUBLISH_RATE_LIMIT)."
        ) % {"limit": rate}
    return None


def _parse_item(data, where=""):
    """Validate one message, the body itself or the item at ``where`` of a batch; return an :class:`_Item`.

    Field errors are keyed ``<where>.<field>`` (just ``<field>`` for a body).
    """
    if not isinstance(data, dict):
        raise _Invalid({where: [_("Must be a JSON object.")]})
    key = (lambda name: f"{where}.{name}") if where else str
    errors = {}
    for name in sorted(set(data) - FIELDS):
        errors[key(name)] = [_("Unknown field.")]
    stream = user = None
    if ("stream" in data) == ("user" in data):
        errors[key("stream")] = [_("Give exactly one of 'stream' and 'user'.")]
    elif "stream" in data:
        try:
            stream = validate_stream(data["stream"])
        except StreamNameError as exc:
            errors[key("stream")] = [str(exc)]
    else:
        user = data["user"]
        if isinstance(user, bool) or not isinstance(user, (int, str)) or user == "":
            errors[key("user")] = [_("Give a primary key (a number) or a username (a non-empty string).")]
        elif isinstance(user, str) and (problem := _text_error(user)):
            errors[key("user")] = [problem]
    try:
        validate_type(data.get("type"))
    except EnvelopeError as exc:
        errors[key("type")] = [str(exc) if "type" in data else _("This field is required.")]
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        errors[key("payload")] = [_("The payload must be a JSON object.")]
    ephemeral = data.get("ephemeral", False)
    if not isinstance(ephemeral, bool):
        errors[key("ephemeral")] = [_("Must be true or false.")]
    idempotency_key = data.get("idempotency_key")
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200:
            errors[key("idempotency_key")] = [_("Must be a string of 1-200 characters.")]
        elif problem := _text_error(idempotency_key):
            errors[key("idempotency_key")] = [problem]
        elif ephemeral is True:
            errors[key("idempotency_key")] = [
                _("Ephemeral messages are not stored, so they cannot be idempotent.")
            ]
    if errors:
        raise _Invalid(errors)
    return _Item(stream, user, data["type"], payload, not ephemeral, idempotency_key)


def _text_error(value):
    """Why the database could not take the string ``value``, or None.

    JSON strings can hold two things a query cannot carry: NUL characters
    (PostgreSQL text cannot hold them, and the query would fail as if the
    database were down) and unpaired surrogates (``"\\ud800"``), which have
    no UTF-8 encoding (the driver would raise, a 500).
    """
    if "\x00" in value:
        return _("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _("Must not contain unpaired surrogates (U+D800 to U+DFFF).")
    return None


def _streams(credential, items):
    """Return each item's stream, and ``{index: (field, reason)}`` for the items refused.

    The stream of an item the token may not publish to is None. Every
    ``user`` is looked up with one query, whatever their number. A user who
    does not exist is refused exactly like one the token may not publish to,
    after the same pattern match, so a token holder cannot probe which users
    exist, not even by timing.
    """
    users = _find_users([item.user for item in items if item.user is not None])
    streams, refused = [], {}
    for index, item in enumerate(items):
        if item.user is not None:
            pk = users.get(item.user)
            # Match even for a user who does not exist: the same work whatever the answer.
            allowed = credential.allows(user_stream(item.user if pk is None else pk))
            stream = user_stream(pk) if pk is not None and allowed else None
            if stream is None:
                refused[index] = ("user", _("This token may not publish to that target."))
        elif credential.allows(item.stream):
            stream = item.stream
        else:
            stream = None
            reason = _("This token may not publish to stream %(stream)r.") % {"stream": item.stream}
            refused[index] = ("stream", reason)
        streams.append(stream)
    return streams, refused


def _find_users(values):
    """Map each of ``values`` that names a user to that user's pk, with one query for them all.

    A number is a pk; a string is a username, or a pk written in digits if no
    username matches. Values that name nobody are left out.
    """
    User = get_user_model()
    field = User.USERNAME_FIELD
    names = {value for value in values if isinstance(value, str)}
    pks = {value for value in values if isinstance(value, int) and value in _PK_RANGE}
    # No integer pk has more than 20 digits; int() refuses strings over 4300.
    digits = {name: int(name) for name in names if name.isascii() and name.isdigit() and len(name) <= 20}
    pks.update(pk for pk in digits.values() if pk in _PK_RANGE)
    if not names and not pks:
        return {}
    rows = list(
        User._default_manager.filter(Q(**{f"{field}__in": names}) | Q(pk__in=pks)).values_list("pk", field)
    )
    by_name = {username: pk for pk, username in rows}
    existing = {pk for pk, _username in rows}
    found = {}
    for value in values:
        if isinstance(value, str) and value in by_name:
            found[value] = by_name[value]
        else:
            pk = digits.get(value) if isinstance(value, str) else value
            if pk in existing:
                found[value] = pk
    return found
