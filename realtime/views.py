"""The HTTP publish API: ``POST /realtime/api/publish`` for programs that are not Django.

See ``docs/publishing.md``. Every answer is JSON, failures included; errors
read ``{"error": code, "message": text}`` plus ``"fields"`` for a bad request.
"""

import json
import logging
import math
import time
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.db.models import Q
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from . import clientip, tokens
from .api import notify
from .conf import setting
from .envelope import validate_type
from .exceptions import EnvelopeError, StreamNameError
from .streams import user_stream, validate_stream

FIELDS = {"stream", "user", "type", "payload", "idempotency_key", "ephemeral"}

#: ``Retry-After`` seconds of a 503 answered while the database is unavailable.
UNAVAILABLE_RETRY_AFTER = 5

logger = logging.getLogger("realtime")


class _Invalid(Exception):
    """The request body cannot be published; ``fields`` maps field names to messages."""

    def __init__(self, fields):
        super().__init__(fields)
        self.fields = fields


@csrf_exempt
def publish(request):
    """Publish one message for the bearer of a publish token.

    Answers 202 ``{"stream", "seq", "id", "created"}``; 400 (bad body, with
    ``fields``), 401 (no or bad token), 403 (target outside the token's
    patterns, or no such user: the two answer alike), 405, 413 (body over
    ``PUBLISH_MAX_BODY``), 429 (over ``PUBLISH_RATE_LIMIT`` for the token or
    ``PUBLISH_AUTH_FAILURE_LIMIT`` for the client address, with
    ``Retry-After``), 503 (the database is unavailable, with ``Retry-After``)
    or 500 (anything else, logged with its traceback). Never an HTML page.
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
        stream, user, options = _parse(request.body)
    except _Invalid as exc:
        return _error(400, "invalid", _("The message cannot be published."), fields=exc.fields)
    if user is not None:
        stream = _user_stream(credential, user)
        if stream is None:
            return _error(403, "forbidden", _("This token may not publish to that target."))
    elif not credential.allows(stream):
        return _error(
            403,
            "forbidden",
            _("This token may not publish to stream %(stream)r.") % {"stream": stream},
        )
    try:
        published = notify(stream, **options)
    except EnvelopeError as exc:
        field = "payload" if exc.path else "message"
        return _error(400, "invalid", _("The message cannot be published."), fields={field: [str(exc)]})
    return JsonResponse(
        {"stream": published.stream, "seq": published.seq, "id": published.id, "created": published.created},
        status=202,
    )


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
    count, seconds_left = _window_count(credential.key, add=1)
    return seconds_left if count > limit else None


def _auth_failures_blocked(address):
    """Seconds to wait if ``address`` has used up ``PUBLISH_AUTH_FAILURE_LIMIT`` in this window, else None."""
    limit = setting("PUBLISH_AUTH_FAILURE_LIMIT")
    if limit is None:
        return None
    count, seconds_left = _window_count(_failures_counter(address), add=0)
    return seconds_left if count >= limit else None


def _count_auth_failure(address):
    """Count one failed authentication from ``address`` in the current window."""
    if setting("PUBLISH_AUTH_FAILURE_LIMIT") is not None:
        _window_count(_failures_counter(address), add=1)


def _failures_counter(address):
    # Quoted: X-Forwarded-For is free text, and memcached refuses keys with spaces.
    return f"auth-failures:{quote(address, safe='.:')}"


def _window_count(name, add):
    """Add ``add`` to counter ``name`` of the current fixed window; return ``(count, seconds left)``.

    Windows are ``PUBLISH_RATE_WINDOW`` seconds of the wall clock; counters
    live in the ``PUBLISH_CACHE`` cache. If the cache fails, the count is 0:
    the rate limits fail open rather than take the whole API down.
    """
    window = setting("PUBLISH_RATE_WINDOW")
    now = time.time()
    key = f"realtime:publish:{name}:{int(now // window)}"
    seconds_left = max(1, math.ceil(window - now % window))
    cache = caches[setting("PUBLISH_CACHE")]
    try:
        if not add:
            return cache.get(key, 0), seconds_left
        cache.add(key, 0, timeout=window + 1)
        try:
            return cache.incr(key, add), seconds_left
        except ValueError:
            # The counter expired between add() and incr(): this is a new window.
            cache.set(key, add, timeout=window + 1)
            return add, seconds_left
    except Exception as exc:
        # Each cache backend raises its own client's errors (redis, pymemcache, OSError...).
        logger.warning(
            "Publish API rate limits not applied, the cache %r failed: %s: %s",
            setting("PUBLISH_CACHE"),
            type(exc).__name__,
            exc,
        )
        return 0, seconds_left


def _parse(body):
    """Validate a request body; return ``(stream, user, notify keyword arguments)``.

    Exactly one of ``stream`` and ``user`` is not None; ``user`` is the value
    the body gave, not yet looked up.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's stack allows.
        raise _Invalid({"body": [_("The body must be a JSON object.")]}) from None
    if not isinstance(data, dict):
        raise _Invalid({"body": [_("The body must be a JSON object.")]})
    errors = {}
    for name in sorted(set(data) - FIELDS):
        errors[name] = [_("Unknown field.")]
    stream = user = None
    if ("stream" in data) == ("user" in data):
        errors["stream"] = [_("Give exactly one of 'stream' and 'user'.")]
    elif "stream" in data:
        try:
            stream = validate_stream(data["stream"])
        except StreamNameError as exc:
            errors["stream"] = [str(exc)]
    else:
        user = data["user"]
        if isinstance(user, bool) or not isinstance(user, (int, str)) or user == "":
            errors["user"] = [_("Give a primary key (a number) or a username (a non-empty string).")]
        elif isinstance(user, str) and "\x00" in user:
            errors["user"] = [_("Must not contain NUL characters.")]
    try:
        validate_type(data.get("type"))
    except EnvelopeError as exc:
        errors["type"] = [str(exc) if "type" in data else _("This field is required.")]
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        errors["payload"] = [_("The payload must be a JSON object.")]
    ephemeral = data.get("ephemeral", False)
    if not isinstance(ephemeral, bool):
        errors["ephemeral"] = [_("Must be true or false.")]
    key = data.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            errors["idempotency_key"] = [_("Must be a string of 1-200 characters.")]
        elif "\x00" in key:
            # PostgreSQL text cannot hold NUL: the insert would fail as if the database were down.
            errors["idempotency_key"] = [_("Must not contain NUL characters.")]
        elif ephemeral is True:
            errors["idempotency_key"] = [
                _("Ephemeral messages are not stored, so they cannot be idempotent.")
            ]
    if errors:
        raise _Invalid(errors)
    return stream, user, {
        "type": data["type"],
        "payload": payload,
        "persist": not ephemeral,
        "idempotency_key": key,
    }


def _user_stream(credential, value):
    """The stream of the user ``value`` names if that user exists and the token may publish there.

    Otherwise None, whichever of the two it was, so a token holder cannot
    probe which users exist. Both run the same one query and the same pattern
    match, so timing does not tell them apart either.
    """
    pk = _find_user(value)
    # Match even for a user who does not exist: the same work whatever the answer.
    allowed = credential.allows(user_stream(value if pk is None else pk))
    return user_stream(pk) if pk is not None and allowed else None


def _find_user(value):
    """The pk of the user ``value`` names, or None.

    A number is a pk; a string is a username, or a pk written in digits if no
    username matches. One query in every case.
    """
    User = get_user_model()
    if isinstance(value, int):
        lookup = Q(pk=value)
    else:
        lookup = Q(**{User.USERNAME_FIELD: value})
        # No integer pk has more than 20 digits; int() refuses strings over 4300.
        if value.isascii() and value.isdigit() and len(value) <= 20:
            lookup |= Q(pk=int(value))
    rows = list(User._default_manager.filter(lookup).values_list("pk", User.USERNAME_FIELD)[:2])
    for pk, username in rows:
        if username == value:
            return pk
    return rows[0][0] if rows else None
