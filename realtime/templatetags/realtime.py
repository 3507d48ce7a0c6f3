"""``{% load realtime %}{% realtime_client %}``: the browser client, configured for this page.

The tag renders a ``<script type="module">`` that starts the client of
``static/realtime/realtime.js`` with its options in ``data-*`` attributes. It
also renders where each of the user's streams stands at render time, so the
first connect resumes from there: a message published between the page being
rendered and the socket opening is still delivered. See ``docs/client.md``.
"""

import json

from django import template
from django.template.loader import render_to_string

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


def initial_positions(user):
    """``{"streams": {name: seq}, "epochs": {name: epoch}}`` of ``user``'s default streams now.

    Empty for an anonymous user unless ``REALTIME["ALLOW_ANONYMOUS"]``.
    """
    from ..api import positions
    from ..streams import default_streams_of

    if (user is None or not user.is_authenticated) and not setting("ALLOW_ANONYMOUS"):
        return {"streams": {}, "epochs": {}}
    return positions(default_streams_of(user))


@register.simple_tag(takes_context=True)
def realtime_client(context, nonce=None, autoconnect=True, **options):
    """Render the ``<script>`` that starts a realtime client for the current user.

    Options: ``url`` (default: the app's WebSocket path), ``heartbeat`` (ms,
    default: ``REALTIME["HEARTBEAT_INTERVAL"]``), ``backoff_min``,
    ``backoff_max``, ``backoff_floor``, ``min_uptime``, ``connect_timeout``
    (ms), ``nonce`` (CSP), ``autoconnect`` (False: call ``connect()``
    yourself) and ``global`` (True: expose the client as ``window.realtime``;
    a string: under that name).
    An anonymous visitor gets a client that does not connect unless
    ``REALTIME["ALLOW_ANONYMOUS"]`` is on.
    """
    from ..routing import WEBSOCKET_PATH

    global_name = options.pop("global", None)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise template.TemplateSyntaxError(
            f"realtime_client got unknown option(s) {', '.join(unknown)}; "
            f"known: nonce, autoconnect, global, {', '.join(OPTIONS)}."
        )
    request = context.get("request")
    user = getattr(request, "user", None) or context.get("user")
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
    attributes.append(("positions", json.dumps(initial_positions(user), separators=(",", ":"))))
    if not autoconnect:
        attributes.append(("autoconnect", "false"))
    if global_name:
        attributes.append(("global", "realtime" if global_name is True else str(global_name)))
    return render_to_string(
        "realtime/client.html", {"attributes": attributes, "nonce": nonce}
    )
