"""The HTTP publish API: ``POST /realtime/api/publish`` for programs that are not Django.

See ``docs/publishing.md``. Every answer is JSON; errors read
``{"error": code, "message": text}`` plus ``"fields"`` for a bad request.
"""

import json
import math
import time

from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from . import tokens
from .api import notify
from .conf import setting
from .envelope import validate_type
from .exceptions import EnvelopeError, StreamNameError
from .streams import user_stream, validate_stream

FIELDS = {"stream", "user", "type", "payload", "idempotency_key", "ephemeral"}


class _Invalid(Exception):
    """The request body cannot be published; ``fields`` maps field names to messages."""

    def __init__(self, fields):
        super().__init__(fields)
        self.fields = fields


@csrf_exempt
def publish(request):
    """Publish one message for the bearer of a publish token.

    Answers 202 ``{"stream", "seq", "id", "created"}``; 400 (bad body, with
    ``fields``), 401 (no or bad token), 403 (stream outside the token's
    patterns), 405, 413 (body over ``PUBLISH_MAX_BODY``) or 429 (over
    ``PUBLISH_RATE_LIMIT``, with ``Retry-After``).
    """
    if request.method != "POST":
        response = _error(405, "method_not_allowed", _("Use POST."))
        response["Allow"] = "POST"
        return response
    credential = tokens.authenticate(_bearer(request))
    if credential is None:
        response = _error(
            401,
            "unauthorized",
            _("Send a valid publish token: 'Authorization: Bearer <token>'."),
        )
        response["WWW-Authenticate"] = 'Bearer realm="realtime"'
        return response
    retry_after = _over_rate_limit(credential)
    if retry_after is not None:
        response = _error(429, "rate_limited", _("Too many requests for this token; retry later."))
        response["Retry-After"] = str(retry_after)
        return response
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
        stream, options = _parse(request.body)
    except _Invalid as exc:
        return _error(400, "invalid", _("The message cannot be published."), fields=exc.fields)
    if not credential.allows(stream):
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


def _error(status, code, message, fields=None):
    body = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return JsonResponse(body, status=status)


def _bearer(request):
    scheme, _sep, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def _over_rate_limit(credential):
    """Count this request in a fixed window; return seconds to wait if over the limit."""
    limit = setting("PUBLISH_RATE_LIMIT")
    if limit is None:
        return None
    window = setting("PUBLISH_RATE_WINDOW")
    now = time.time()
    key = f"realtime:publish:{credential.key}:{int(now // window)}"
    cache = caches[setting("PUBLISH_CACHE")]
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:
        # The counter expired between add() and incr(): this is a new window.
        cache.set(key, 1, timeout=window + 1)
        count = 1
    if count <= limit:
        return None
    return max(1, math.ceil(window - now % window))


def _parse(body):
    """Validate a request body; return ``(stream, notify keyword arguments)``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Invalid({"body": [_("The body must be a JSON object.")]}) from None
    if not isinstance(data, dict):
        raise _Invalid({"body": [_("The body must be a JSON object.")]})
    errors = {}
    for name in sorted(set(data) - FIELDS):
        errors[name] = [_("Unknown field.")]
    stream = None
    if ("stream" in data) == ("user" in data):
        errors["stream"] = [_("Give exactly one of 'stream' and 'user'.")]
    elif "stream" in data:
        try:
            stream = validate_stream(data["stream"])
        except StreamNameError as exc:
            errors["stream"] = [str(exc)]
    else:
        stream = _user_stream(data["user"], errors)
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
        elif ephemeral is True:
            errors["idempotency_key"] = [
                _("Ephemeral messages are not stored, so they cannot be idempotent.")
            ]
    if errors:
        raise _Invalid(errors)
    return stream, {
        "type": data["type"],
        "payload": payload,
        "persist": not ephemeral,
        "idempotency_key": key,
    }


def _user_stream(value, errors):
    """Resolve ``user`` (a pk as a number, or a username) to its stream."""
    User = get_user_model()
    users = User._default_manager
    user = None
    if isinstance(value, int) and not isinstance(value, bool):
        user = users.filter(pk=value).first()
    elif isinstance(value, str) and value:
        user = users.filter(**{User.USERNAME_FIELD: value}).first()
        if user is None and value.isdigit():
            user = users.filter(pk=int(value)).first()
    if user is None:
        errors["user"] = [_("No such user.")]
        return None
    return user_stream(user)
