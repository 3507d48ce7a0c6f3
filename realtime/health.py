"""Liveness and readiness, for load balancers and orchestrators.

``GET <realtime urls>/healthz`` answers 200 while the process serves requests
at all. ``GET <realtime urls>/readyz`` answers 200 only while this process
should get new sockets: the database and the channel layer answer within
``HEALTH_TIMEOUT`` seconds, this process's hub is not cut off from the layer,
and the server is not shutting down. Otherwise 503, with the reasons as JSON
(short words, never an exception's text: the endpoints take no credentials).

Under daphne, SIGTERM starts a drain (:mod:`realtime.servers.daphne`):
readiness turns 503 at once while everything else goes on for
``DRAIN_SECONDS``, so a load balancer that polls ``readyz`` stops sending
new sockets before the open ones are closed with 1001.
"""

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from . import hub
from . import layer as layer_messages
from .conf import setting

logger = logging.getLogger("realtime")

#: A group nobody joins: leaving it is a round trip to the layer that changes nothing.
PROBE_GROUP = "rt.readyz"
PROBE_CHANNEL = "rt.readyz.probe"

_draining = False


def start_draining():
    """Make :func:`readyz` answer 503 from now on: this process is shutting down."""
    global _draining
    _draining = True


def draining():
    return _draining


@require_GET
async def healthz(request):
    """200 while the process answers."""
    return JsonResponse({"status": "ok"})


@require_GET
async def readyz(request):
    """200 if this process should get new sockets, else 503 with the reasons."""
    problems = {}
    if _draining:
        problems["server"] = "draining"
    timeout = setting("HEALTH_TIMEOUT")
    checks = {"database": _database(), "channel_layer": _channel_layer()}
    results = await asyncio.gather(*(_within(check, timeout) for check in checks.values()))
    for name, problem in zip(checks, results):
        if problem:
            problems[name] = problem
    problem = _hub()
    if problem:
        problems["hub"] = problem
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})


async def _within(check, timeout):
    try:
        await asyncio.wait_for(check, timeout)
    except asyncio.TimeoutError:
        return "timeout"
    except Exception as exc:
        logger.warning("realtime: readiness check failed: %r", exc)
        return "unreachable"
    return None


async def _database():
    await sync_to_async(_select_one, thread_sensitive=True)()


def _select_one():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer():
    layer = layer_messages.get_layer()
    if layer is not None:
        await layer.group_discard(PROBE_GROUP, PROBE_CHANNEL)


def _hub():
    """Why this process's hub cannot deliver live messages, or None."""
    try:
        current = hub._hubs.get(asyncio.get_running_loop())
    except RuntimeError:
        return None
    if current is None:
        return None  # not started: no socket has joined a stream yet
    return current.problem()
