"""/realtime/healthz and /realtime/readyz, and the drain SIGTERM starts under daphne."""

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.db import connections
from django.db.utils import OperationalError
from django.test import AsyncClient

from realtime import health
from tests.procs import finish, free_port, publish
from tests.test_e2e import cluster, login_cookie, start_clients  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def not_draining(monkeypatch):
    monkeypatch.setattr(health, "_draining", False)


async def test_healthz_answers():
    response = await AsyncClient().get("/realtime/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_with_database_and_layer_up():
    response = await AsyncClient().get("/realtime/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok"}


async def test_readyz_says_which_part_is_down_when_the_layer_is_unreachable(settings):
    # A port nothing listens on: the channel layer's round trip fails.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        response = await AsyncClient().get("/realtime/readyz")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "problems": {"channel_layer": "unreachable"}}


async def test_readyz_names_the_database_when_it_fails(monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("connection refused: secret.internal:5432")

    # On the class: the check runs in the thread of Django's sync code.
    monkeypatch.setattr(type(connections["default"]), "cursor", refuse)
    response = await AsyncClient().get("/realtime/readyz")
    assert response.status_code == 503
    # Short words only: the endpoint takes no credentials, so no host names.
    assert response.json() == {"status": "unavailable", "problems": {"database": "unreachable"}}


async def test_readyz_times_out_a_check_that_hangs(monkeypatch, settings):
    settings.REALTIME = {**settings.REALTIME, "HEALTH_TIMEOUT": 0.2}

    async def hang():
        await asyncio.sleep(10)

    monkeypatch.setattr(health, "_channel_layer", hang)
    started = time.monotonic()
    response = await AsyncClient().get("/realtime/readyz")
    assert time.monotonic() - started < 2
    assert response.json()["problems"] == {"channel_layer": "timeout"}


async def test_readyz_is_503_once_draining():
    health.start_draining()
    response = await AsyncClient().get("/realtime/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == {"server": "draining"}
    assert (await AsyncClient().get("/realtime/healthz")).status_code == 200


async def test_health_endpoints_only_answer_get():
    assert (await AsyncClient().post("/realtime/readyz")).status_code == 405


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.e2e
async def test_sigterm_turns_readiness_off_then_closes_sockets_after_the_drain(cluster, login_cookie):  # noqa: F811
    # Long enough for a publisher process to start and deliver on a busy 2-core box.
    drain = 6
    servers, env = cluster(1, extra={"REALTIME_JSON": json.dumps({"DRAIN_SECONDS": drain})})
    server = servers[0]
    _, cookie = await sync_to_async(login_cookie)()
    clients = await start_clients(servers, cookie, 3)
    try:
        assert await sync_to_async(get)(server.url + "/realtime/readyz") == (200, {"status": "ok"})
        server.proc.send_signal(signal.SIGTERM)
        sigterm = time.monotonic()
        status, body = 200, {}
        while status == 200 and time.monotonic() - sigterm < 2:
            status, body = await sync_to_async(get)(server.url + "/realtime/readyz")
        assert (status, body.get("problems")) == (503, {"server": "draining"})
        # The open sockets are served as before while the load balancer catches up.
        await sync_to_async(finish)(publish(env, "broadcast", 5))
        assert all(await asyncio.gather(*(c.wait_for("broadcast", 5, 10) for c in clients)))
        assert not any(c.closes for c in clients), [c.closes for c in clients]
        while not all(c.closes for c in clients) and time.monotonic() - sigterm < drain + 10:
            await asyncio.sleep(0.05)
        closed_after = time.monotonic() - sigterm
        assert all(c.closes[0] == 1001 for c in clients), [c.closes for c in clients]
        assert drain - 0.5 < closed_after < drain + 5, closed_after
        print(f"\n[drain] readyz 503 at once after SIGTERM; sockets served, then closed with 1001 after {closed_after:.1f}s")
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
