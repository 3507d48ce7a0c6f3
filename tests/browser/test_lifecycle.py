"""The page's lifecycle: visibility, network changes, leaving the page."""

import pytest

from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

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
def test_online_or_visible_skips_the_wait(live, open_page, event):
    server = live()
    page = open_page(server, url="/ws/test/close/?code=raise", backoff_min=60000, backoff_max=60000, hold=1)
    # The longest delay the jitter allows, so only the event can explain a quick retry.
    page.evaluate("Math.random = () => 1; realtime.connect()")
    wait_until(page, "realtime.state === 'waiting'")
    assert page.evaluate("rec.states.at(-1).delay") == 60000
    page.evaluate(event)
    wait_until(page, "__frames.filter((f) => f.dir === 'connect').length === 2", timeout=2000)


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
