"""Bad input from the server or from the page's own handlers never breaks the client."""

import pytest

from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_garbage_frames_are_reported_and_skipped(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/garbage/", hold=1)
    page.evaluate(
        """() => {
          window.calls = [];
          realtime.on("notice", () => { throw new Error("handler bug"); });
          realtime.on("notice", (message) => calls.push(message.payload.title));
          realtime.connect();
        }"""
    )
    wait_until(page, "rec.messages.length >= 1")
    page.wait_for_timeout(200)

    assert page.page_errors == []
    assert page.evaluate("rec.messages.map((m) => m.payload.title)") == ["after the garbage"]
    # The second handler ran although the first threw.
    assert page.evaluate("calls") == ["after the garbage"]
    assert len(page.evaluate("rec.invalid")) == 3
    invalid = [text for text in page.console_errors if "invalid frame" in text]
    assert len(invalid) == 3, page.console_errors
    # console.error got the raw data, so the bad frame can be seen in the console.
    assert '{"type": "notice", "payload": {"title": "unterminated' in invalid[0]
    assert "ArrayBuffer" in invalid[1]
    assert '"payload": ["wrong", "shape"]' in invalid[2]
    assert any("handler bug" in text or 'handler for "notice" threw' in text for text in page.console_errors)
    assert page.evaluate("rec.errors") == [{"kind": "handler", "code": None, "event": "notice"}]
    assert page.evaluate("realtime.state") == "open"


def test_backoff_has_full_jitter_above_the_floor(live, open_page):
    server = live()
    page = open_page(server, hold=1)
    samples = page.evaluate(
        """async () => {
          const { backoffDelay } = await import("/static/realtime/realtime.js");
          const out = [];
          for (let attempt = 0; attempt <= 10; attempt++) {
            out.push(Array.from({ length: 200 }, () => backoffDelay(attempt, 1000, 30000)));
          }
          return out;
        }"""
    )
    floor = 250
    for attempt, delays in enumerate(samples):
        ceiling = min(30000, 1000 * 2**attempt)
        assert all(floor <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, f"attempt {attempt}: no jitter"
        # Full jitter spreads over the whole window, not just near its top.
        window = ceiling - floor
        assert min(delays) < floor + window * 0.25 and max(delays) > floor + window * 0.75, attempt
