"""Which closes make the client reconnect, and how long it waits."""

import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST = {"backoff_min": 50, "backoff_max": 100, "heartbeat": 60000}


def test_no_reconnect_after_final_close(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/close/?code=1000", **FAST)
    wait_until(page, "rec.closes.length >= 1")
    # Ten times the largest backoff: a retry would have happened by now.
    page.wait_for_timeout(1000)

    assert page.evaluate("rec.closes.map((c) => c.code)") == [1000]
    assert page.evaluate("rec.states.map((s) => s.newState)") == ["connecting", "open", "closed"]
    assert page.evaluate("__frames.filter((f) => f.dir === 'connect').length") == 1


def test_4401_after_welcome_is_looked_at_once_then_final(live, open_page):
    server = live()
    # This server welcomes and closes with 4401 every time: one retry, then stop.
    page = open_page(server, url="/ws/test/close/?code=4401", **FAST)
    wait_until(page, "rec.closes.length >= 2")
    page.wait_for_timeout(1000)

    assert page.evaluate("rec.closes.map((c) => c.code)") == [4401, 4401]
    assert page.evaluate("rec.states.map((s) => s.newState)") == [
        "connecting", "open", "waiting", "connecting", "open", "closed",
    ]
    assert page.evaluate("__frames.filter((f) => f.dir === 'connect').length") == 2


def test_reconnect_after_server_error_1011_without_resetting_attempts(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/close/?code=raise", min_uptime=60000, **FAST)
    wait_until(page, "rec.states.filter((s) => s.newState === 'waiting').length >= 3")

    closes = page.evaluate("rec.closes.map((c) => c.code)")
    assert closes[:3] == [1011, 1011, 1011]
    waits = page.evaluate("rec.states.filter((s) => s.newState === 'waiting')")
    # Each connection failed before min_uptime, so the attempt count keeps growing.
    assert [w["attempt"] for w in waits[:3]] == [0, 1, 2]
    assert page.evaluate("__frames.filter((f) => f.dir === 'connect').length") >= 3


def test_reconnect_after_abnormal_close_1006(live, open_page, proxy, publish):
    server = live()
    hole = proxy(server)
    page = open_page(server, url=f"ws://127.0.0.1:{hole.port}/ws/realtime/", **FAST)
    wait_until(page, "realtime.state === 'open'")
    hole.drop()
    wait_until(page, "rec.closes.length >= 1")
    publish("broadcast", 1)
    wait_until(page, "rec.states.filter((s) => s.newState === 'open').length >= 2")
    wait_until(page, "rec.messages.length >= 1")

    assert page.evaluate("rec.closes.map((c) => c.code)") == [1006]
    assert notices(page) == [1]


def test_default_reconnect_policy(live, open_page):
    server = live()
    page = open_page(server, hold=1)
    verdicts = page.evaluate(
        """async () => {
          const { defaultShouldReconnect } = await import("/static/realtime/realtime.js");
          const codes = [1000, 1001, 1006, 1008, 1009, 1011, 4000, 4008, 4009, 4010, 4029, 4401, 4403, 4500];
          return Object.fromEntries(codes.map((code) => [code, defaultShouldReconnect({ code })]));
        }"""
    )
    assert verdicts == {
        "1000": False, "1001": True, "1006": True, "1008": False, "1009": False, "1011": True, "4000": True,
        "4008": False, "4009": False, "4010": True, "4029": False, "4401": False, "4403": False, "4500": True,
    }


def test_backoff_delay_never_goes_below_the_floor(live, open_page):
    server = live()
    page = open_page(server, hold=1)
    delays = page.evaluate(
        """async () => {
          const { backoffDelay, wakeDelay } = await import("/static/realtime/realtime.js");
          const attempts = [...Array(11).keys()];
          return {
            lowest: attempts.map((attempt) => backoffDelay(attempt, 1000, 30000, () => 0)),
            highest: attempts.map((attempt) => backoffDelay(attempt, 1000, 30000, () => 1)),
            ownFloor: backoffDelay(3, 1000, 30000, () => 0, 600),
            ceilingUnderFloor: [backoffDelay(0, 50, 100, () => 0), backoffDelay(5, 50, 100, () => 1)],
            wake: [wakeDelay(250, 1000, () => 0), wakeDelay(250, 1000, () => 0.5), wakeDelay(250, 1000, () => 1)],
          };
        }"""
    )
    assert delays["lowest"] == [250] * 11
    assert delays["highest"] == [min(30000, 1000 * 2**attempt) for attempt in range(11)]
    assert delays["ownFloor"] == 600
    assert delays["ceilingUnderFloor"] == [250, 250]
    assert delays["wake"] == [250, 750, 1250]


def test_retry_waits_for_the_floor_given_to_the_template_tag(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/close/?code=raise", backoff_min=10, backoff_max=10, backoff_floor=400, hold=1)
    assert page.evaluate("document.querySelector('script[data-realtime-client]').dataset.backoffFloor") == "400"
    page.evaluate("Math.random = () => 0; realtime.connect()")
    wait_until(page, "__frames.filter((f) => f.dir === 'connect').length >= 2")

    waiting = page.evaluate("rec.states.find((s) => s.newState === 'waiting')")
    assert waiting["delay"] == 400
    retried = page.evaluate("__frames.filter((f) => f.dir === 'connect')[1].t")
    assert 400 - 5 <= retried - waiting["t"] < 2000
