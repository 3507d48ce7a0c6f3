"""What travels on the channel layer between publishers and the hubs of server processes.

Every message goes to the group of one stream (:func:`realtime.streams.group_name`),
where the hub of each server process with a subscriber receives it
(:mod:`realtime.hub`). Four types:

``realtime.message``
    a published message: ``stream``, ``seq`` (None: ephemeral) and ``text``, the
    envelope exactly as stored and as sent to clients;
``realtime.reset``
    a stream's history was reset: ``stream``, ``epoch``;
``realtime.revoke``
    close a user's sockets: ``stream`` (the user's), ``user``, ``code``;
``realtime.recheck``
    a user's sockets check their session now: ``stream``, ``user``.

Sending never raises: the log already holds every persisted message, so a
layer that is down costs latency (clients recover on their next ping), not
messages. :func:`tap` lets tests see what is sent (``realtime.testing``).
"""

import asyncio
import logging
import weakref
from contextlib import contextmanager

from channels.exceptions import InvalidChannelLayerError
from channels.layers import InMemoryChannelLayer, get_channel_layer

from . import sender
from .conf import setting
from .exceptions import RealtimeConfigError
from .streams import group_name

logger = logging.getLogger("realtime")

MESSAGE = "realtime.message"
RESET = "realtime.reset"
REVOKE = "realtime.revoke"
RECHECK = "realtime.recheck"


def message(published):
    """The layer message of a :class:`~realtime.store.Published`."""
    return {"type": MESSAGE, "stream": published.stream, "seq": published.seq, "text": published.text}


def reset(stream, epoch):
    return {"type": RESET, "stream": stream, "epoch": epoch}


def revoke(stream, user_pk, code):
    return {"type": REVOKE, "stream": stream, "user": user_pk, "code": code}


def recheck(stream, user_pk):
    return {"type": RECHECK, "stream": stream, "user": user_pk}


def get_layer():
    """The configured channel layer (``REALTIME["CHANNEL_LAYER"]``), or None if there is none.

    Raises :class:`~realtime.exceptions.RealtimeConfigError` when its
    ``BACKEND`` cannot be imported (channels-redis not installed, a typo), so
    a publisher learns it before anything is stored (check ``realtime.E005``).
    """
    alias = setting("CHANNEL_LAYER")
    try:
        return get_channel_layer(alias)
    except (InvalidChannelLayerError, ImportError) as exc:
        raise RealtimeConfigError(
            f"The channel layer {alias!r} cannot be created: {exc}. Install its backend "
            '(channels-redis: pip install "django-realtime-notify[redis]") or fix CHANNEL_LAYERS.'
        ) from exc


# Hubs of this process --------------------------------------------------------

_running = weakref.WeakSet()


def hub_started(hub):
    """``hub`` started receiving on the running loop (called by :class:`~realtime.hub.Hub`)."""
    hub.loop = asyncio.get_running_loop()
    _running.add(hub)


def hub_stopped(hub):
    _running.discard(hub)


def serving():
    """True if a hub runs in this process, so an in-process layer reaches clients."""
    return any(not hub.loop.is_closed() for hub in list(_running))


# Sending ---------------------------------------------------------------------

_taps = []
_warned = set()


@contextmanager
def tap(record, forward=True):
    """Call ``record(messages)`` for every :func:`send` inside the block.

    With ``forward=False`` nothing reaches the layer meanwhile.
    """
    entry = (record, forward)
    _taps.append(entry)
    try:
        yield
    finally:
        _taps.remove(entry)


def send(messages):
    """Send ``messages`` (dicts made by the constructors above) to their streams' groups.

    Never raises. Messages other than ``realtime.message`` concern only
    sockets a hub serves, so with nobody to reach they are dropped quietly;
    a published message that cannot be pushed is logged (it is in the log).
    """
    forward = True
    for record, passes in list(_taps):
        record(messages)
        forward = forward and passes
    if not forward or not messages:
        return
    control = all(m["type"] != MESSAGE for m in messages)
    try:
        layer = get_layer()
    except RealtimeConfigError:
        logger.exception("realtime: %d message(s) not pushed live", len(messages))
        return
    if layer is None:
        if not control:
            _warn_once(
                "no-layer",
                "realtime: no channel layer %r is configured (CHANNEL_LAYERS); messages are "
                "stored but only reach clients on their next heartbeat.",
                setting("CHANNEL_LAYER"),
            )
        return
    if isinstance(layer, InMemoryChannelLayer) and not serving():
        if not control:
            _warn_once(
                "in-memory",
                "realtime: message stored but not pushed live: the InMemoryChannelLayer only "
                "reaches WebSocket clients served by this same process, and this process "
                "serves none. Configure channels_redis (set REDIS_URL in the demo project) "
                "to publish from other processes; connected clients still pick the message "
                "up from the log on their next heartbeat.",
            )
        return
    try:
        sender.run(layer, _group_send_all, layer, messages)
    except Exception:
        logger.warning(
            "realtime: channel layer unreachable; %d message(s) stored but not pushed "
            "live (clients recover them from the log on their next heartbeat).",
            len(messages),
            exc_info=True,
        )


async def _group_send_all(layer, messages):
    for message_ in messages:
        await layer.group_send(group_name(message_["stream"]), message_)


def _warn_once(key, message_, *args):
    if key not in _warned:
        _warned.add(key)
        logger.warning(message_, *args)
