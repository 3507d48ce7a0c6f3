"""The page's lifecycle: visibility, network changes, leaving the page."""

import pytest

from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONNECTS = "__frames.filter((f) => f.dir === 'connect').length"
PINGS = """__frames.filter((f) => f.dir === 'out' && f.data.includes('"ping"')).length"""


def test_visible_again_pings_at_once(live, open_page):
    server = live()
    page = open_page(server, heartbeat=60000)
    wait_until(page, "realtime.state === 'open'")
    set_visibility = """(state) => {
      Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
      Object.defineProperty(document, "hidden", { value: state === "hidden", configurable: true });
      document.dispatchEvent(new Event("visibilitychange"));
    }"""

    page.evaluate(set_visibility, "hidden")
    page.wait_for_timeout(200)
    assert page.evaluate(PINGS) == 0
    shown = page.evaluate(f"({set_visibility})('visible'), performance.now()")
    wait_until(page, f"{PINGS} === 1", timeout=2000)
    sent = page.evaluate("__frames.find((f) => f.dir === 'out' && f.data.includes('\"ping\"')).t")
    assert sent - shown < 100
    wait_until(page, "__frames.some((f) => f.dir === 'in' && f.data.includes('\"pong\"'))", timeout=2000)


@pytest.mark.parametrize(
    "event",
    ["window.dispatchEvent(new Event('online'))", "document.dispatchEvent(new Event('visibilitychange'))"],
    ids=["online", "visible"],
)
def test_online_or_visible_brings_the_retry_forward_but_not_into_the_event(live, open_page, event):
    server = live()
    page = open_page(
        server, url="/ws/test/close/?code=raise", backoff_min=3000, backoff_max=60000, backoff_floor=300, hold=1
    )
    # The longest first delay the jitter allows, so only the event can explain a quick retry.
    page.evaluate("Math.random = () => 1; realtime.connect()")
    wait_until(page, "realtime.state === 'waiting'")
    assert page.evaluate("rec.states.at(-1).delay") == 3000
    fired = page.evaluate(
        f"""() => {{
          Math.random = () => 0;
          const t = performance.now();
          {event};
          return {{ t, connects: {CONNECTS}, retryIn: realtime.retryAt - Date.now() }};
        }}"""
    )
    # Every tab sees the event at the same moment: none may reconnect inside it.
    assert fired["connects"] == 1
    assert 250 <= fired["retryIn"] <= 300
    wait_until(page, f"{CONNECTS} === 2", timeout=3000)
    # Retried at the bottom of [floor, floor + backoff_min], long before the 3 s it had left.
    retried = page.evaluate("__frames.filter((f) => f.dir === 'connect')[1].t")
    assert 300 - 5 <= retried - fired["t"] < 2000


def test_online_keeps_a_retry_that_is_due_sooner(live, open_page):
    server = live()
    page = open_page(
        server, url="/ws/test/close/?code=raise", backoff_min=3000, backoff_max=60000, backoff_floor=1000, hold=1
    )
    # The shortest delay, 1 s; the event would make it 1 s + 3 s.
    page.evaluate("Math.random = () => 0; realtime.connect()")
    wait_until(page, "realtime.state === 'waiting'")
    assert page.evaluate("rec.states.at(-1).delay") == 1000
    moved = page.evaluate(
        """() => {
          const before = realtime.retryAt;
          Math.random = () => 1;
          window.dispatchEvent(new Event("online"));
          return realtime.retryAt - before;
        }"""
    )
    assert moved == 0
    wait_until(page, f"{CONNECTS} === 2", timeout=4000)
    waiting = page.evaluate("rec.states.find((s) => s.newState === 'waiting').t")
    retried = page.evaluate("__frames.filter((f) => f.dir === 'connect')[1].t")
    assert 1000 - 5 <= retried - waiting < 2500


def test_pagehide_closes_normally_and_stays_closed(live, open_page):
    server = live()
    page = open_page(server, backoff_min=50, backoff_max=50)
    wait_until(page, "realtime.state === 'open'")
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }))")
    wait_until(page, "realtime.state === 'closed'")
    page.wait_for_timeout(500)
    assert page.evaluate("rec.closes.map((c) => c.code)") == [1000]
    assert page.evaluate("__frames.filter((f) => f.dir === 'connect').length") == 1
    # Back from the back/forward cache: connected again.
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true }))")
    wait_until(page, "realtime.state === 'open'")
