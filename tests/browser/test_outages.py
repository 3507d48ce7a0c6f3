"""Outages the client must ride out without losing or repeating a message."""


import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HEARTBEAT = 200


def test_black_hole_is_detected_by_missed_pongs_and_healed(live, open_page, publish, proxy):
    server = live()
    hole = proxy(server)
    page = open_page(
        server,
        url=f"ws://127.0.0.1:{hole.port}/ws/realtime/",
        heartbeat=HEARTBEAT,
        connect_timeout=1000,
        backoff_min=100,
        backoff_max=400,
    )
    wait_until(page, "realtime.state === 'open'")
    publish("broadcast", 0)
    wait_until(page, "rec.messages.length === 1")
    # Let a few heartbeats go through first: pongs arrive while the link is fine.
    wait_until(page, "__frames.filter((f) => f.dir === 'in' && f.data.includes('\"pong\"')).length >= 2")

    hole.blackhole()
    started = page.evaluate("performance.now()")
    for n in range(1, 11):
        publish("broadcast", n)
    wait_until(page, "rec.closes.length >= 1")
    dead = page.evaluate("rec.closes[0]")
    assert dead["code"] == 4000
    # Declared dead after two unanswered pings: at least two intervals after the
    # outage began, at most three plus scheduling slack on a busy machine.
    assert 2 * HEARTBEAT - 60 <= dead["t"] - started <= 3 * HEARTBEAT + 1500
    unanswered = page.evaluate(
        """(() => {
          const first = __frames.filter((f) => f.socket === 1);
          const lastPong = Math.max(...first.filter((f) => f.dir === 'in' && f.data.includes('"pong"')).map((f) => f.t));
          return first.filter((f) => f.dir === 'out' && f.data.includes('"ping"') && f.t > lastPong && f.t <= rec.closes[0].t).length;
        })()"""
    )
    assert unanswered == 2
    # Still down: the client keeps trying (and timing out) but shows nothing new.
    page.wait_for_timeout(1200)
    assert notices(page) == [0]

    # Read the clock first: the reconnect may land before a read after restore().
    restored = page.evaluate("performance.now()")
    hole.restore()
    wait_until(page, "rec.messages.length >= 11")
    page.wait_for_timeout(4 * HEARTBEAT)

    assert notices(page) == list(range(11))
    # One reconnect: the sockets given up on during the outage close late, and
    # their callbacks must not disturb the new connection.
    opened = page.evaluate("rec.states.filter((s) => s.newState === 'open').map((s) => s.t)")
    assert len([t for t in opened if t > restored]) == 1
    assert page.evaluate("realtime.state") == "open"
    assert page.page_errors == []


def test_server_killed_and_restarted(live, open_page, publish):
    backoff_min, backoff_max, backoff_floor = 100, 400, 50
    server = live()
    page = open_page(
        server,
        heartbeat=1000,
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        backoff_floor=backoff_floor,
        min_uptime=60000,
    )
    wait_until(page, "realtime.state === 'open'")
    publish("broadcast", 0)
    wait_until(page, "rec.messages.length === 1")

    server.kill()
    for n in range(1, 21):
        publish("broadcast", n)
    # Down long enough for the retry delays to reach the cap.
    wait_until(page, "rec.states.filter((s) => s.newState === 'waiting').length >= 6")
    server = live(port=server.port)
    wait_until(page, "rec.messages.length >= 21", timeout=30000)
    page.wait_for_timeout(500)

    assert notices(page) == list(range(21))
    assert page.evaluate("rec.closes[0].code") == 1006
    states = page.evaluate("rec.states")
    waits = [s for s in states if s["newState"] == "waiting"]
    assert [w["attempt"] for w in waits] == list(range(len(waits)))
    for wait in waits:
        ceiling = min(backoff_max, backoff_min * 2 ** wait["attempt"])
        assert backoff_floor <= wait["delay"] <= ceiling, wait
    assert any(backoff_min * 2 ** w["attempt"] > backoff_max for w in waits), "never reached the cap"
    assert len({w["delay"] for w in waits}) > 1, "no jitter"
    # The client really waited that long before each attempt (timers never fire early).
    for wait, after in zip(states, states[1:]):
        if wait["newState"] == "waiting":
            assert after["newState"] == "connecting"
            assert wait["delay"] - 5 <= after["t"] - wait["t"] <= wait["delay"] + 1000
    assert page.page_errors == []
