"""What travels on the channel layer between publishers and the hubs of server processes.

Every message goes to the group of one stream (:func:`realtime.streams.group_name`),
where the hub of each server process with a subscriber receives it
(:mod:`realtime.hub`). Five types:

``realtime.message``
    a published message: ``stream``, ``seq`` (None: ephemeral) and ``text``, the
    envelope exactly as stored and as sent to clients;
``realtime.batch``
    several published messages that left together: ``messages``, a list of
    ``[stream, seq, text]`` in publish order. Sent to the stream's group when
    they share one stream, and to :data:`HUBS_GROUP` (every server process)
    when one send touches more than ``WIDE_PUSH_STREAMS`` streams: one layer
    message instead of one per stream (a notice to 1,000 users);
``realtime.reset``
    a stream's history was reset: ``stream``, ``epoch``;
``realtime.revoke``
    close a user's sockets: ``stream`` (the user's), ``user``, ``code``;
``realtime.recheck``
    a user's sockets check their session now: ``stream``, ``user``.

One :func:`send` becomes as few layer messages as that allows, and sends from
plain sync code do not wait for Redis (:mod:`realtime.sender`).

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

from . import metrics, sender
from .conf import setting
from .exceptions import RealtimeConfigError
from .streams import group_name

#: The group every hub joins, for batches that touch many streams.
HUBS_GROUP = "rt.hubs"

#: A batch layer message carries envelopes of at most about this many characters.
BATCH_MAX_CHARS = 256 * 1024

logger = logging.getLogger("realtime")

MESSAGE = "realtime.message"
BATCH = "realtime.batch"
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
    if not sender.send(layer, _deliver, messages):
        logger.warning(
            "realtime: %d message(s) stored but not pushed live: %d are already waiting for "
            "the channel layer (clients recover them from the log on their next heartbeat).",
            len(messages),
            sender.MAX_PENDING,
        )


async def _deliver(layer, messages):
    try:
        await asyncio.wait_for(_group_send_all(layer, coalesce(messages)), sender.SEND_TIMEOUT)
    except Exception:
        metrics.layer_failures.labels(operation="send").inc()
        logger.warning(
            "realtime: channel layer unreachable; %d message(s) stored but not pushed "
            "live (clients recover them from the log on their next heartbeat).",
            len(messages),
            exc_info=True,
        )


async def _group_send_all(layer, sends):
    for group, message_ in sends:
        await layer.group_send(group, message_)


def coalesce(messages):
    """``[(group, layer message)]`` that carry ``messages`` in as few sends as possible.

    Published messages of one stream stay in order; control messages keep
    their place relative to the published messages around them.
    """
    sends, run = [], []
    for message_ in messages:
        if message_["type"] == MESSAGE:
            run.append(message_)
            continue
        sends.extend(_coalesce_run(run))
        run = []
        sends.append((group_name(message_["stream"]), message_))
    sends.extend(_coalesce_run(run))
    return sends


def _coalesce_run(run):
    by_stream = {}
    for message_ in run:
        by_stream.setdefault(message_["stream"], []).append(message_)
    if len(by_stream) > setting("WIDE_PUSH_STREAMS"):
        return [(HUBS_GROUP, batch) for batch in _batches(run)]
    sends = []
    for stream, messages in by_stream.items():
        if len(messages) == 1:
            sends.append((group_name(stream), messages[0]))
        else:
            sends.extend((group_name(stream), batch) for batch in _batches(messages))
    return sends


def _batches(messages):
    items, size = [], 0
    for message_ in messages:
        if items and size + len(message_["text"]) > BATCH_MAX_CHARS:
            yield {"type": BATCH, "messages": items}
            items, size = [], 0
        items.append([message_["stream"], message_["seq"], message_["text"]])
        size += len(message_["text"])
    if items:
        yield {"type": BATCH, "messages": items}


def flush(timeout=sender.SEND_TIMEOUT):
    """Wait until what this process sent has reached the channel layer (or was given up); True if so.

    Runs by itself at interpreter exit. Useful in tests and before
    ``os._exit()``.
    """
    return sender.flush(timeout)


def _warn_once(key, message_, *args):
    if key not in _warned:
        _warned.add(key)
        logger.warning(message_, *args)
