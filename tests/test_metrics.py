"""Prometheus metrics: what real connections and publishes count, the endpoint's protection, the close log line."""

import importlib.util
import json
import logging
import re
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.core.checks import Error, Warning
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from realtime import anotify, checks, hub, layer, metrics, store
from realtime.exceptions import RealtimeConfigError
from realtime.hub import get_hub
from realtime.store import Published
from tests.channels_client import eventually, store_only

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "m" * 40


@pytest.fixture(autouse=True)
def _deliveries_at_once(monkeypatch):
    """Hubs add up deliveries for a second before counting them; tests count at once."""
    monkeypatch.setattr(hub, "DELIVERIES_FLUSH_INTERVAL", 0)


@pytest.fixture
def metrics_on(settings):
    settings.REALTIME = {**settings.REALTIME, "METRICS": {"ENABLED": True, "TOKEN": TOKEN}}
    return settings


async def scrape(token=TOKEN):
    response = await AsyncClient().get("/realtime/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def samples(text):
    """``{(sample name, frozenset(labels)): value}`` of a scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before, after, name, **labels):
    key = (name, frozenset(labels.items()))
    return after.get(key, 0) - before.get(key, 0)


# What real connections count -------------------------------------------------


async def test_a_scrape_shows_connections_publishes_and_deliveries(metrics_on, connect, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    before = await scrape()
    first = await connect(alice)
    second = await connect(bob)
    await anotify("broadcast", "t")
    await anotify(alice, "dm")
    await anotify("project:1", "t")  # nobody listens: published, not delivered
    assert (await first.recv())["type"] == "t" and (await first.recv())["type"] == "dm"
    assert (await second.recv())["type"] == "t"
    during = await scrape()
    assert delta(before, during, "realtime_connections_opened_total") == 2
    assert delta(before, during, "realtime_connections_open") == 2
    assert delta(before, during, "realtime_presence_entries") == 2
    assert delta(before, during, "realtime_messages_published_total", stream_class="broadcast") == 1
    assert delta(before, during, "realtime_messages_published_total", stream_class="user") == 1
    assert delta(before, during, "realtime_messages_published_total", stream_class="project") == 1
    assert delta(before, during, "realtime_deliveries_total") == 3
    assert delta(before, during, "realtime_publish_seconds_count") == 3

    await first.c.disconnect(code=1000)
    anonymous = await connect(AnonymousUser(), expect_welcome=False)
    assert await anonymous.close_code() == 4401
    await anonymous.c.disconnect(code=1000)  # the client's answer; the server's code counts
    after = await scrape()
    assert delta(before, after, "realtime_connections_opened_total") == 3
    assert delta(before, after, "realtime_connections_open") == 1  # bob's
    assert delta(before, after, "realtime_presence_entries") == 1
    assert delta(before, after, "realtime_connections_closed_total", code="1000") == 1
    assert delta(before, after, "realtime_connections_closed_total", code="4401") == 1


async def test_a_presence_store_that_fails_leaves_only_its_metric_out(metrics_on, monkeypatch, caplog):
    from realtime import presence

    def down():
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(presence, "entry_count", down)
    scraped = await scrape()
    assert ("realtime_connections_open", frozenset()) in scraped
    assert not any(name == "realtime_presence_entries" for name, _labels in scraped)
    assert "presence entries left out, the store failed: ConnectionError: Redis is down" in caplog.text


async def test_replays_resyncs_gap_fills_log_reads_and_refused_frames(metrics_on, connect, make_user):
    user = await make_user()
    for _ in range(5):
        await anotify("broadcast", "t")
    await sync_to_async(store.prune)(max_count=3)
    before = await scrape()
    client = await connect(user, resume={"streams": {"broadcast": 1}})
    assert (await client.recv())["payload"]["reason"] == "pruned"
    assert [f["seq"] for f in await client.messages(3)] == [3, 4, 5]
    await store_only("broadcast")  # seq 6, never pushed: the next push shows the gap
    await anotify("broadcast", "t")
    assert [f["seq"] for f in await client.messages(2)] == [6, 7]
    await client.send("[]")
    assert (await client.recv())["payload"]["code"] == "not_an_object"
    after = await scrape()
    assert delta(before, after, "realtime_resyncs_total", reason="pruned") == 1
    assert delta(before, after, "realtime_replays_total") == 1
    assert delta(before, after, "realtime_messages_replayed_total") == 3
    assert delta(before, after, "realtime_gap_fills_total") == 1
    assert delta(before, after, "realtime_log_read_seconds_count") >= 2  # the replay and the fill
    assert delta(before, after, "realtime_frames_refused_total", code="not_an_object") == 1
    assert delta(before, after, "realtime_deliveries_total") == 2  # seq 6 (filled) and 7


async def test_a_ping_that_finds_the_log_ahead_counts_a_catch_up(metrics_on, connect, make_user):
    client = await connect(await make_user())
    before = await scrape()
    await store_only("broadcast")  # published while the layer was down
    await client.send({"type": "ping"})
    assert [f["type"] for f in await client.messages(2)] == ["t", "pong"]
    after = await scrape()
    assert delta(before, after, "realtime_catch_ups_total") == 1
    assert delta(before, after, "realtime_deliveries_total") == 1


async def test_a_push_the_layer_refuses_counts_a_layer_failure(metrics_on, caplog):
    class Down:
        async def group_send(self, group, message):
            raise ConnectionError("Redis is down")

    before = await scrape()
    await layer._deliver(Down(), [layer.message(Published("broadcast", 1, "x", "{}"))])
    after = await scrape()
    assert delta(before, after, "realtime_layer_failures_total", operation="send") == 1


async def test_fan_outs_count_their_sockets_at_most_once_a_second(metrics_on, connect, make_user, monkeypatch):
    monkeypatch.setattr(hub, "DELIVERIES_FLUSH_INTERVAL", 1.0)
    user = await make_user()
    clients = [await connect(user) for _ in range(3)]
    calls = []

    class Recorder:
        def inc(self, amount=1):
            calls.append(amount)

    metrics.deliveries.inc(0)  # settle the names, then replace one
    monkeypatch.setattr(metrics, "deliveries", Recorder())
    await anotify("broadcast", "t")
    await anotify("broadcast", "t")
    for client in clients:
        assert [f["type"] for f in await client.messages(2)] == ["t", "t"]
    assert calls == []
    await eventually(lambda: calls, timeout=3)
    assert calls == [6]


# Off, and missing ------------------------------------------------------------


async def test_off_by_default_the_endpoint_is_404_and_metrics_are_no_ops(connect, make_user):
    client = await connect(await make_user())
    await anotify("broadcast", "t")
    await client.recv()
    assert metrics.deliveries is metrics.OFF and metrics.connections_closed.labels(code="1000") is metrics.OFF
    response = await AsyncClient().get("/realtime/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


def test_metrics_on_without_prometheus_client_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(RealtimeConfigError, match=r'pip install "django-realtime-notify\[metrics\]"'):
        metrics._import()


# The endpoint's protection -----------------------------------------------------


def test_token_required(settings, client):
    settings.REALTIME = {**settings.REALTIME, "METRICS": {"ENABLED": True, "TOKEN": TOKEN}}
    assert client.get("/realtime/metrics").status_code == 401
    response = client.get("/realtime/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/realtime/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and b"realtime_connections_open" in response.content
    assert client.post("/realtime/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_allowlist_uses_the_client_address_behind_trusted_proxies(settings, client):
    settings.REALTIME = {
        **settings.REALTIME,
        "TRUSTED_PROXIES": ["10.0.0.1"],
        "METRICS": {"ENABLED": True, "ALLOW_IPS": ["192.0.2.0/24"]},
    }
    assert client.get("/realtime/metrics", REMOTE_ADDR="198.51.100.7").status_code == 403
    assert client.get("/realtime/metrics", REMOTE_ADDR="192.0.2.9").status_code == 200
    via_proxy = {"REMOTE_ADDR": "10.0.0.1"}
    assert client.get("/realtime/metrics", HTTP_X_FORWARDED_FOR="192.0.2.9", **via_proxy).status_code == 200
    assert client.get("/realtime/metrics", HTTP_X_FORWARDED_FOR="198.51.100.7", **via_proxy).status_code == 403
    # A foreign peer cannot claim an allowed address.
    assert client.get("/realtime/metrics", HTTP_X_FORWARDED_FOR="192.0.2.9", REMOTE_ADDR="198.51.100.7").status_code == 403


def test_token_and_allowlist_both_apply(settings, client):
    settings.REALTIME = {
        **settings.REALTIME,
        "METRICS": {"ENABLED": True, "TOKEN": TOKEN, "ALLOW_IPS": ["192.0.2.9"]},
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/realtime/metrics", headers=auth, REMOTE_ADDR="198.51.100.7").status_code == 403
    assert client.get("/realtime/metrics", REMOTE_ADDR="192.0.2.9").status_code == 401
    assert client.get("/realtime/metrics", headers=auth, REMOTE_ADDR="192.0.2.9").status_code == 200


@pytest.mark.parametrize(
    "value, message",
    [
        ({"ENABLED": "yes"}, 'settings.REALTIME["METRICS"]["ENABLED"] must be True or False'),
        ({"TOKENS": "x"}, 'Unknown key(s) in settings.REALTIME["METRICS"]: TOKENS'),
        ({"ALLOW_IPS": "10.0.0.1"}, 'settings.REALTIME["METRICS"]["ALLOW_IPS"] must be a list'),
        ({"ALLOW_IPS": ["prometheus"]}, "has 'prometheus', which is not an IP address"),
    ],
)
def test_invalid_metrics_settings_name_the_key(settings, value, message):
    from realtime.conf import get_config

    settings.REALTIME = {"METRICS": value}
    with pytest.raises(RealtimeConfigError) as raised:
        get_config()
    assert message in str(raised.value)


# Checks ------------------------------------------------------------------------

W011 = Warning(
    'REALTIME["METRICS"] is enabled with neither a TOKEN nor ALLOW_IPS: anyone who '
    "reaches <realtime urls>/metrics reads how many users are connected and what they do.",
    hint='Set REALTIME["METRICS"]["TOKEN"] (from the environment) and/or '
    '["ALLOW_IPS"] (your Prometheus server\'s address); see docs/operations.md.',
    id="realtime.W011",
)


@pytest.mark.parametrize(
    "value, expected",
    [
        ({}, []),
        ({"ENABLED": False}, []),
        ({"ENABLED": True}, [W011]),
        ({"ENABLED": True, "TOKEN": TOKEN}, []),
        ({"ENABLED": True, "ALLOW_IPS": ["10.0.0.0/8"]}, []),
    ],
)
def test_check_warns_about_unprotected_metrics(settings, value, expected):
    settings.REALTIME = {"METRICS": value}
    assert checks.check_metrics() == expected


def test_check_errors_when_prometheus_client_is_missing(settings, monkeypatch):
    settings.REALTIME = {"METRICS": {"ENABLED": True, "TOKEN": TOKEN}}
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "prometheus_client" else find_spec(name, *args)
    )
    assert checks.check_metrics() == [
        Error(
            'REALTIME["METRICS"]["ENABLED"] is True but prometheus_client is not installed: '
            "the metrics endpoint and every connection would fail.",
            hint='pip install "django-realtime-notify[metrics]"',
            id="realtime.E007",
        )
    ]


# The close log line --------------------------------------------------------------

LINE = re.compile(
    r"realtime: connection closed connection=(?P<connection>[0-9a-f]{32}) user=(?P<user>\S+) "
    r"code=(?P<code>\S+) duration=(?P<duration>\d+\.\d{3}) sent=(?P<sent>\d+) replayed=(?P<replayed>\d+)$"
)


async def test_one_line_per_close_with_user_code_duration_and_counts(connect, make_user, caplog):
    user = await make_user()
    for _ in range(2):
        await anotify("broadcast", "t")
    client = await connect(user, resume={"streams": {"broadcast": 0}})
    (consumer,) = get_hub().subscribers[f"user:{user.pk}"]
    await client.messages(2)  # replayed
    for _ in range(3):
        await anotify(user, "dm")
    await client.messages(3)  # live
    caplog.set_level(logging.INFO, logger="realtime")
    await client.c.disconnect(code=1001)
    await eventually(lambda: any(LINE.search(r.getMessage()) for r in caplog.records))
    (line,) = [LINE.search(r.getMessage()) for r in caplog.records if LINE.search(r.getMessage())]
    assert line["connection"] == consumer.connection_id
    assert (line["user"], line["code"], line["sent"], line["replayed"]) == (str(user.pk), "1001", "3", "2")
    assert 0 <= float(line["duration"]) < 30
    record = next(r for r in caplog.records if LINE.search(r.getMessage()))
    assert record.name == "realtime" and record.levelno == logging.INFO


async def test_a_refused_connection_is_logged_too(connect, caplog):
    caplog.set_level(logging.INFO, logger="realtime")
    client = await connect(AnonymousUser(), expect_welcome=False)
    assert await client.close_code() == 4401
    await client.c.disconnect(code=1000)
    await eventually(lambda: any(LINE.search(r.getMessage()) for r in caplog.records))
    (line,) = [LINE.search(r.getMessage()) for r in caplog.records if LINE.search(r.getMessage())]
    assert (line["user"], line["code"], line["sent"], line["replayed"]) == ("-", "4401", "0", "0")


# The dashboard ------------------------------------------------------------------


def test_the_grafana_dashboard_uses_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ()) if "expr" in target
    ]
    assert len(queries) >= 8
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name) for q in queries for name in re.findall(r"\brealtime_\w+", q)}
    defined = {spec[1] for spec in metrics.SPECS.values()}
    assert used and used <= defined, used - defined
    assert {"realtime_resyncs", "realtime_gap_fills", "realtime_connections_closed"} <= used


# Several processes, one endpoint --------------------------------------------------


@pytest.mark.e2e
def test_one_scrape_reports_every_daphne_process_of_the_box(daphne_factory, tmp_path, redis_url, layer_prefix):
    import asyncio
    import urllib.request

    from django.contrib.auth.models import User
    from django.test import Client as HttpClient

    from tests.wsclient import RecordingClient

    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        # Presence in Redis, as in production: the scrape reads every process's entries there.
        "REDIS_URL": redis_url,
        "REALTIME_REDIS_PREFIX": layer_prefix,
        "REALTIME_JSON": json.dumps({"METRICS": {"ENABLED": True, "TOKEN": TOKEN}}),
    }
    first, second = daphne_factory(env=env, name="first"), daphne_factory(env=env, name="second")
    http = HttpClient()
    http.force_login(User.objects.create_user("alice"))
    cookie = f"sessionid={http.cookies['sessionid'].value}"

    def scrape_from(server):
        request = urllib.request.Request(server.url + "/realtime/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return samples(response.read().decode())

    def value(scraped, name):
        return scraped.get((name, frozenset()), 0)

    async def scenario():
        clients = [
            RecordingClient(server.ws_url, cookie=cookie, origin=server.url) for server in (first, first, second)
        ]
        await asyncio.gather(*(client.start() for client in clients))
        try:
            both = await asyncio.to_thread(scrape_from, second)
            assert value(both, "realtime_connections_open") == 3
            assert value(both, "realtime_connections_opened_total") == 3
            # Read from the shared presence store (Redis) at the scrape: every process's.
            assert value(both, "realtime_presence_entries") == 3
            second.kill()  # SIGKILL: no chance to remove its open-connections value
            third = daphne_factory(env=env, name="third")
            after = await asyncio.to_thread(scrape_from, third)
            assert value(after, "realtime_connections_open") == 2  # the first process's
            assert value(after, "realtime_connections_opened_total") >= 3  # counters of the dead still count
        finally:
            await asyncio.gather(*(client.stop() for client in clients))

    asyncio.run(scenario())


def test_stream_classes_are_bounded(monkeypatch):
    # Stream names come from publishers: a class per distinct colon-less name
    # would grow Prometheus' series without end.
    monkeypatch.setattr(metrics, "_stream_classes", set())
    labels = {metrics.stream_class(f"order{i}") for i in range(metrics.MAX_STREAM_CLASSES + 100)}
    assert len(labels) == metrics.MAX_STREAM_CLASSES + 1
    assert "other" in labels
    assert metrics.stream_class("order0:5") == "order0"  # a class already seen keeps its name
