"""Per stream, each message once and in order, whatever the server repeats or skips."""

import json

import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_duplicates_dropped_resync_followed_gaps_and_pong_heads_healed(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/script/", heartbeat=60000)
    # The server sent 1 2 1 2 3, resync to 10, 11, a stale 5, then 13 (12 missing).
    wait_until(page, "rec.messages.length >= 6")
    assert notices(page) == [1, 2, 3, 11, 12, 13]
    assert page.evaluate("rec.resyncs") == [{"stream": "s", "seq": 10, "epoch": "e2", "reason": "pruned"}]

    # The pong says the stream is at 15: the client asks for what it lacks.
    page.evaluate("realtime.ping()")
    wait_until(page, "rec.messages.length >= 8")
    page.wait_for_timeout(200)

    assert notices(page) == [1, 2, 3, 11, 12, 13, 14, 15]
    resumes = [
        json.loads(frame["data"])
        for frame in page.evaluate("__frames.filter((f) => f.dir === 'out')")
        if json.loads(frame["data"])["type"] == "resume"
    ]
    assert resumes == [
        {"type": "resume", "streams": {"s": 11}, "epochs": {"s": "e2"}},
        {"type": "resume", "streams": {"s": 13}, "epochs": {"s": "e2"}},
    ]
    positions = page.evaluate("realtime.positions")
    assert (positions["streams"]["s"], positions["epochs"]["s"]) == (15, "e2")
    assert page.page_errors == []
