"""``{% load realtime %}``: the browser client and the notification bell, configured for this page.

``{% realtime_client %}`` renders a ``<script type="module">`` that starts the
client of ``static/realtime/realtime.js`` with its options in ``data-*``
attributes. It also renders where each of the user's streams stands at render
time, so the first connect resumes from there: a message published between
the page being rendered and the socket opening is still delivered. For a
signed-in user it renders the inbox's endpoint, unread counts and CSRF token
too. ``{% realtime_inbox %}`` renders the bell that shows that inbox. See
``docs/client.md``.
"""

import json
from uuid import uuid4

from django import template
from django.conf import settings
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse

from ..conf import setting

register = template.Library()

#: Tag arguments and the ``data-*`` attribute each becomes.
OPTIONS = {
    "url": "url",
    "heartbeat": "heartbeat",
    "backoff_min": "backoff-min",
    "backoff_max": "backoff-max",
    "backoff_floor": "backoff-floor",
    "min_uptime": "min-uptime",
    "connect_timeout": "connect-timeout",
}

#: Django's defaults, which the client assumes when the tag does not name others.
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "X-CSRFToken"

#: The most items one page of the bell's list may ask for (the inbox's own limit).
MAX_PAGE_SIZE = 100


def initial_positions(user):
    """``{"streams": {name: seq}, "epochs": {name: epoch}}`` of ``user``'s default streams now.

    Empty for an anonymous user unless ``REALTIME["ALLOW_ANONYMOUS"]``.
    """
    from ..api import positions
    from ..streams import default_streams_of

    if (user is None or not user.is_authenticated) and not setting("ALLOW_ANONYMOUS"):
        return {"streams": {}, "epochs": {}}
    return positions(default_streams_of(user))


def inbox_url():
    """The URL of the inbox endpoint, or None when the project does not include ``realtime.urls``."""
    try:
        return reverse("realtime:inbox")
    except NoReverseMatch:
        return None


def unread_now(user):
    """``{"total", "streams", "ts"}``: the user's unread inbox items and when they were counted.

    None for a user without an inbox (anonymous, or no inbox streams).
    """
    from .. import inbox
    from ..envelope import now_iso

    if user is None or not user.is_authenticated:
        return None
    # Taken before counting: every item published up to this moment is in the counts.
    counted_at = now_iso()
    try:
        return {**inbox.unread_count(user), "ts": counted_at}
    except inbox.InboxError:
        return None


def _user(context):
    request = context.get("request")
    return request, getattr(request, "user", None) or context.get("user")


def _inbox_attributes(request, user):
    """The ``data-*`` pairs that turn the client's inbox on for ``user``; none when it has no inbox."""
    url = inbox_url()
    unread = unread_now(user) if url else None
    if unread is None:
        return []
    attributes = [("inbox-url", url), ("inbox-unread", json.dumps(unread, separators=(",", ":")))]
    if request is not None and hasattr(request, "META"):
        attributes.append(("csrf-token", get_token(request)))
    if not settings.CSRF_USE_SESSIONS and settings.CSRF_COOKIE_NAME != CSRF_COOKIE:
        attributes.append(("csrf-cookie", settings.CSRF_COOKIE_NAME))
    header = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-")
    if header.lower() != CSRF_HEADER.lower():
        attributes.append(("csrf-header", header))
    return attributes


@register.simple_tag(takes_context=True)
def realtime_client(context, nonce=None, autoconnect=True, inbox=True, share=True, **options):
    """Render the ``<script>`` that starts a realtime client for the current user.

    Options: ``url`` (default: the app's WebSocket path), ``heartbeat`` (ms,
    default: ``REALTIME["HEARTBEAT_INTERVAL"]``), ``backoff_min``,
    ``backoff_max``, ``backoff_floor``, ``min_uptime``, ``connect_timeout``
    (ms), ``nonce`` (CSP), ``autoconnect`` (False: call ``connect()``
    yourself), ``global`` (True: expose the client as ``window.realtime``;
    a string: under that name), ``inbox`` (False: leave the client's
    inbox off, which otherwise fetches the unread count on every connect)
    and ``share`` (False: this page's client connects on its own rather than
    sharing one connection with the user's other tabs).
    An anonymous visitor gets a client that does not connect unless
    ``REALTIME["ALLOW_ANONYMOUS"]`` is on, and never an inbox.
    """
    from ..routing import WEBSOCKET_PATH

    global_name = options.pop("global", None)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise template.TemplateSyntaxError(
            f"realtime_client got unknown option(s) {', '.join(unknown)}; "
            f"known: nonce, autoconnect, global, inbox, share, {', '.join(OPTIONS)}."
        )
    request, user = _user(context)
    anonymous = user is None or not user.is_authenticated
    if anonymous and not setting("ALLOW_ANONYMOUS"):
        autoconnect = False
    script_name = getattr(request, "META", {}).get("SCRIPT_NAME", "").rstrip("/")
    values = {
        "url": f"{script_name}/{WEBSOCKET_PATH}",
        "heartbeat": int(setting("HEARTBEAT_INTERVAL") * 1000),
        # None or "" (a variable that does not resolve) means: not given.
        **{key: value for key, value in options.items() if value not in (None, "")},
    }
    attributes = [(OPTIONS[key], value) for key, value in values.items()]
    # Counted before the positions are read: an item published in between is
    # replayed and counted once, rather than missed by both.
    if inbox and not anonymous:
        attributes.extend(_inbox_attributes(request, user))
    attributes.append(("positions", json.dumps(initial_positions(user), separators=(",", ":"))))
    if not autoconnect:
        attributes.append(("autoconnect", "false"))
    if share:
        # Tabs share a connection per user: the key keeps two users' tabs apart.
        attributes.append(("share", "anon" if anonymous else str(user.pk)))
        attributes.append(("worker", static("realtime/worker.js")))
    if global_name:
        attributes.append(("global", "realtime" if global_name is True else str(global_name)))
    return render_to_string(
        "realtime/client.html", {"attributes": attributes, "nonce": nonce}
    )


@register.simple_tag(takes_context=True)
def realtime_inbox(context, nonce=None, page_size=20, **options):
    """Render the notification bell of the signed-in user's inbox; nothing for anonymous visitors.

    A button with the unread count that opens a panel listing the items,
    newest first, with "mark read", "archive", "mark all as read" and "load
    more". It attaches to the page's ``{% realtime_client %}`` (which must be
    on the page, before or after it). Options: ``nonce`` (CSP, for its
    ``<script>`` and ``<link>``) and ``page_size`` (items per page, 1 to 100).
    The markup is ``realtime/inbox.html``; its look, ``--realtime-inbox-*``
    CSS custom properties (``static/realtime/inbox.css``).
    """
    if options:
        raise template.TemplateSyntaxError(
            f"realtime_inbox got unknown option(s) {', '.join(sorted(options))}; known: nonce, page_size."
        )
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise template.TemplateSyntaxError(
            f"realtime_inbox's page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {page_size!r}."
        )
    _request, user = _user(context)
    unread = unread_now(user) if inbox_url() else None
    if unread is None:
        return ""
    total = unread["total"]
    return render_to_string(
        "realtime/inbox.html",
        {
            "id": f"realtime-inbox-{uuid4().hex[:8]}",
            "total": total,
            "badge": "99+" if total > 99 else total,
            "page_size": page_size,
            "nonce": nonce,
        },
    )
