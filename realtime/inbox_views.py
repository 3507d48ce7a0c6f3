"""JSON endpoints of the inbox for the signed-in user (session and CSRF, like any form).

``GET inbox/`` a page of items with the unread counts (``?before=&limit=``),
``GET inbox/count``, ``POST inbox/read`` and ``POST inbox/archive``
(``{"items": [{"stream", "seq"}, ...]}``), ``POST inbox/read-all``
(``{"stream": name}`` or ``{}``). See docs/inbox.md. Every answer is JSON:
an error reads ``{"error": code, "message": text}`` and changes nothing.
"""

import json

from django.db import DatabaseError
from django.http import JsonResponse

from . import inbox
from .views import UNAVAILABLE_RETRY_AFTER


def _endpoint(method):
    return lambda view: _answer(view, method)


def _answer(view, method):
    def wrapped(request):
        if request.method != method:
            return _error(405, "method_not_allowed", f"Use {method}.", headers={"Allow": method})
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return _error(403, "anonymous", "Sign in to read an inbox.")
        try:
            return JsonResponse(view(request, user))
        except inbox.InboxError as exc:
            return _error(403 if exc.code == "unknown_stream" else 400, exc.code, str(exc))
        except DatabaseError:
            return _error(503, "unavailable", "The database is unavailable; retry later.",
                          headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _error(status, code, message, headers=None):
    return JsonResponse({"error": code, "message": message}, status=status, headers=headers)


def _body(request):
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise inbox.InboxError("invalid", "The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise inbox.InboxError("invalid", "The body must be a JSON object.")
    return data


@_endpoint("GET")
def page(request, user):
    """A page of the inbox, newest first, with the unread counts."""
    limit = request.GET.get("limit", "20")
    if not limit.isdigit():
        raise inbox.InboxError("invalid", "limit must be a number.")
    return inbox.items(user, before=request.GET.get("before") or None, limit=int(limit))


@_endpoint("GET")
def count(request, user):
    """The unread counts: ``{"total": n, "streams": {name: n}}``."""
    return inbox.unread_count(user)


@_endpoint("POST")
def read(request, user):
    """Mark ``items`` read; answers the new counts."""
    return inbox.mark_read(user, _body(request).get("items"))


@_endpoint("POST")
def archive(request, user):
    """Archive ``items`` (read, and no longer listed); answers the new counts."""
    return inbox.archive(user, _body(request).get("items"))


@_endpoint("POST")
def read_all(request, user):
    """Mark everything read, or one ``stream``'s items; answers the new counts."""
    return inbox.mark_all_read(user, _body(request).get("stream"))
