"""Prometheus metrics: every metric object of realtime, and their exposition.

Every key of :data:`SPECS` is a name of this module. Code elsewhere calls
``metrics.<name>.inc(...)`` (always through the module, never a name
imported from it). Off by default: then each name is :data:`OFF`, whose
methods do nothing, so instrumentation costs a method call. The first call
after start-up (or after ``REALTIME`` changes) reads
``REALTIME["METRICS"]["ENABLED"]`` and puts the real metrics, or
:data:`OFF`, in place of every name.

Nothing here runs once per socket per message: a hub adds up its
deliveries and counts them at most once a second (:mod:`realtime.hub`).

With ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts),
prometheus_client keeps the values in files there and :func:`exposition`
reports every process of the box; see docs/operations.md.
"""

import atexit
import collections
import logging
import os
import re
import threading

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import setting
from .exceptions import RealtimeConfigError
from .protocol import (
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHENTICATED,
)

logger = logging.getLogger("realtime")

#: Seconds buckets of the latency histograms: a database read or write.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: ``attribute: (type, metric name, help, label names)``; counters get ``_total`` on exposition.
SPECS = {
    "connections_open": ("Gauge", "realtime_connections_open", "WebSocket connections open now.", ()),
    "connections_opened": ("Counter", "realtime_connections_opened", "WebSocket connections accepted.", ()),
    "connections_closed": (
        "Counter",
        "realtime_connections_closed",
        "WebSocket connections ended, by close code (none: the server cancelled it; other: a code not listed).",
        ("code",),
    ),
    "messages_published": (
        "Counter",
        "realtime_messages_published",
        "Messages pushed after their commit, by stream class (the name before the first ':').",
        ("stream_class",),
    ),
    "deliveries": ("Counter", "realtime_deliveries", "Live messages written to sockets by the hub's fan-out.", ()),
    "gap_fills": (
        "Counter",
        "realtime_gap_fills",
        "Gaps the hub filled from the log because a later seq arrived first.",
        (),
    ),
    "catch_ups": (
        "Counter",
        "realtime_catch_ups",
        "Times the hub found the log ahead of what it fanned out (tail sweep, layer back, ping) and filled it.",
        (),
    ),
    "replays": ("Counter", "realtime_replays", "Replays of the log to one socket (resume, gap, ping).", ()),
    "messages_replayed": ("Counter", "realtime_messages_replayed", "Messages sent to sockets from the log by replays.", ()),
    "resyncs": ("Counter", "realtime_resyncs", "resync frames sent to clients, by reason.", ("reason",)),
    "frames_refused": (
        "Counter",
        "realtime_frames_refused",
        "Client frames answered with an error frame, by error code.",
        ("code",),
    ),
    "layer_failures": (
        "Counter",
        "realtime_layer_failures",
        "Channel layer operations that failed, by operation (send, receive, group_add).",
        ("operation",),
    ),
    "log_read_seconds": (
        "Histogram",
        "realtime_log_read_seconds",
        "Seconds one read of the log took (replays and gap fills).",
        (),
    ),
    "publish_seconds": (
        "Histogram",
        "realtime_publish_seconds",
        "Seconds notify() took to store a call's messages (one statement or one batch).",
        (),
    ),
}

#: Close codes reported by their number; any other is ``other`` (clients choose codes freely).
KNOWN_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013}
    | {CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_SLOW, CLOSE_TOO_MANY_CONNECTIONS, CLOSE_UNAUTHENTICATED, CLOSE_SERVER_ERROR}
)


def code_label(code):
    """The ``code`` label of ``connections_closed`` for a close code (an int or None)."""
    if code is None:
        return "none"
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


#: Distinct ``stream_class`` labels one process reports; later ones are ``other``.
#: Stream names are the publishers' (the HTTP API's too): a stream named
#: without a colon per user or per order would otherwise make a series each.
MAX_STREAM_CLASSES = 50
_stream_classes = set()


def stream_class(stream):
    """The ``stream_class`` label: ``"project:12"`` -> ``"project"``, ``"broadcast"`` -> ``"broadcast"``."""
    name = stream.partition(":")[0]
    if name not in _stream_classes:
        if len(_stream_classes) >= MAX_STREAM_CLASSES:
            return "other"
        _stream_classes.add(name)
    return name


def count_published(streams):
    """Count messages pushed to ``streams``: one ``inc`` per stream class, nothing while off."""
    counter = messages_published  # noqa: F821 (set by _reset and _settle)
    if counter is OFF:
        return
    for name, count in collections.Counter(stream_class(stream) for stream in streams).items():
        counter.labels(stream_class=name).inc(count)


class _Off:
    """Stands in for every metric while metrics are off: each method does nothing."""

    __slots__ = ()

    def labels(self, *args, **kwargs):
        return self

    def inc(self, amount=1):
        pass

    def dec(self, amount=1):
        pass

    def set(self, value):
        pass

    def observe(self, value):
        pass


OFF = _Off()


class _Pending:
    """A metric not looked up yet: the first call settles every name, then forwards."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def labels(self, *args, **kwargs):
        return _settle()[self.name].labels(*args, **kwargs)

    def inc(self, amount=1):
        _settle()[self.name].inc(amount)

    def dec(self, amount=1):
        _settle()[self.name].dec(amount)

    def set(self, value):
        _settle()[self.name].set(value)

    def observe(self, value):
        _settle()[self.name].observe(value)


_lock = threading.Lock()
_real = None  # the prometheus_client objects, made once per process
_registry = None  # where they are registered when not in multiprocess mode


def enabled():
    """True if ``REALTIME["METRICS"]["ENABLED"]``."""
    return setting("METRICS")["ENABLED"]


def multiprocess():
    """True if prometheus_client keeps values in ``PROMETHEUS_MULTIPROC_DIR`` (every process of the box)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


def _settle():
    current = _build() if enabled() else {name: OFF for name in SPECS}
    globals().update(current)
    return current


def _build():
    """The real metric objects, created and registered on first use."""
    global _real, _registry
    with _lock:
        if _real is None:
            prometheus_client = _import()
            registry = None if multiprocess() else prometheus_client.CollectorRegistry()
            made = {}
            for attribute, (kind, name, documentation, labels) in SPECS.items():
                extra = {}
                if kind == "Gauge":
                    # Open sockets of live processes only, added up over the box.
                    extra["multiprocess_mode"] = "livesum"
                elif kind == "Histogram":
                    extra["buckets"] = LATENCY_BUCKETS
                made[attribute] = getattr(prometheus_client, kind)(
                    name, documentation, labels, registry=registry, **extra
                )
            if registry is not None:
                registry.register(PresenceEntries())
            else:
                _forget_dead_processes()
                from prometheus_client import multiprocess as mp

                # Drop this process's open-connections file when it exits.
                atexit.register(mp.mark_process_dead, os.getpid())
            _registry, _real = registry, made
        return _real


def _forget_dead_processes():
    """Drop the open-connections values of processes of this box that are gone (killed, crashed).

    prometheus_client adds up the ``livesum`` gauge files of every process
    that did not exit through :func:`atexit`; one killed with SIGKILL would
    count its sockets for good.
    """
    from prometheus_client import multiprocess as mp

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    for name in os.listdir(directory):
        match = re.fullmatch(r"gauge_live\w*?_(\d+)\.db", name)
        if match and not _alive(int(match[1])):
            mp.mark_process_dead(int(match[1]), directory)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _import():
    try:
        import prometheus_client
    except ImportError:
        raise RealtimeConfigError(
            'settings.REALTIME["METRICS"]["ENABLED"] is True but prometheus_client is not installed: '
            'pip install "django-realtime-notify[metrics]" (or prometheus-client).'
        ) from None
    return prometheus_client


def exposition():
    """``(body, content type)`` of the metrics in Prometheus' text format.

    In multiprocess mode, every process's values read from
    ``PROMETHEUS_MULTIPROC_DIR``; otherwise this process's. Presence entries
    are read from the presence store at each scrape (:class:`PresenceEntries`).
    """
    prometheus_client = _import()
    _build()
    registry = _registry
    if registry is None:
        from prometheus_client import multiprocess as mp

        registry = prometheus_client.CollectorRegistry()
        mp.MultiProcessCollector(registry)
        registry.register(PresenceEntries())
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST


class PresenceEntries:
    """``realtime_presence_entries``: live presence entries (connections), read at scrape time.

    One ``ZCOUNT`` with the Redis backend, the same figure from every process
    and box (it is the store's); with the in-memory backend, this process's.
    A store that does not answer leaves the metric out of the scrape, logged.
    """

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from . import presence

        try:
            value = presence.entry_count()
        except Exception as exc:  # each backend raises its own client's errors
            logger.warning(
                "realtime: metrics: presence entries left out, the store failed: %s: %s", type(exc).__name__, exc
            )
            return
        yield GaugeMetricFamily(
            "realtime_presence_entries", "Live presence entries (connections) in the presence store.", value=value
        )


def _reset():
    globals().update({name: _Pending(name) for name in SPECS})


_reset()


@receiver(setting_changed)
def _settings_changed(*, setting, **kwargs):
    if setting == "REALTIME":
        _reset()
