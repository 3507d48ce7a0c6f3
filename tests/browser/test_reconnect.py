"""Which closes make the client reconnect, and how long it waits."""

import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST = {"backoff_min": 50, "backoff_max": 100, "heartbeat": 60000}


@pytest.mark.parametrize("code", [1000, 4401])
def test_no_reconnect_after_final_close(live, open_page, code):
    server = live()
    page = open_page(server, url=f"/ws/test/close/?code={code}", **FAST)
    wait_until(page, "rec.closes.length >= 1")
    # Ten times the largest backoff: a retry would have happened by now.
    page.wait_for_timeout(1000)

    assert page.evaluate("rec.closes.map((c) => c.code)") == [code]
    assert page.evaluate("rec.states.map((s) => s.newState)") == ["connecting", "open", "closed"]
    assert page.evaluate("__frames.filter((f) => f.dir === 'connect').length") == 1


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
          const codes = [1000, 1001, 1006, 1008, 1011, 4000, 4008, 4009, 4401, 4403, 4500];
          return Object.fromEntries(codes.map((code) => [code, defaultShouldReconnect({ code })]));
        }"""
    )
    assert verdicts == {
        "1000": False, "1001": True, "1006": True, "1008": False, "1011": True, "4000": True,
        "4008": False, "4009": False, "4401": False, "4403": False, "4500": True,
    }
