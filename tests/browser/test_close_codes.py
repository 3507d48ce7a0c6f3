"""What the client does with the server's close codes: 4010 resumes, 4029 and 1009 end it."""

import json
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import serve

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST = {"backoff_min": 50, "backoff_max": 100, "backoff_floor": 20, "heartbeat": 60000}
CONNECTS = "__frames.filter((f) => f.dir === 'connect').length"
WELCOME = {
    "type": "welcome", "stream": "", "seq": None, "id": "", "ts": "2026-01-01T00:00:00.000Z",
    "payload": {"protocol": 1, "streams": {}, "epochs": {}, "heartbeat": 60000, "user": None},
}


@pytest.fixture
def bare_server():
    """A WebSocket server outside daphne: a welcome, then a close with ``?code=N``.

    An ASGI application can only close with 1000 or 3000-4999, so codes that
    only the server software sends (1009) come from here.
    """

    def handler(connection):
        code = int(parse_qs(urlsplit(connection.request.path).query)["code"][0])
        connection.send(json.dumps(WELCOME))
        connection.close(code, "test close")

    server = serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="bare-websocket-server", daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
    server.shutdown()
    thread.join(10)


def test_slow_reader_4010_reconnects_and_resumes_from_its_last_seq(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/slow/", **FAST)
    wait_until(page, "rec.messages.length >= 3")
    page.evaluate("realtime.close()")

    # Every socket delivered one message and was closed as too slow; nothing lost or repeated.
    delivered = notices(page)
    assert delivered == list(range(1, len(delivered) + 1))
    closes = page.evaluate("rec.closes.map((c) => c.code)")
    assert closes[:3] == [4010, 4010, 4010]
    waits = page.evaluate("rec.states.filter((s) => s.newState === 'waiting')")
    assert [w["code"] for w in waits[:2]] == [4010, 4010]
    assert all(20 <= w["delay"] <= 100 for w in waits), waits
    # Each reconnect asked the server to resume after the last message delivered.
    urls = page.evaluate("__frames.filter((f) => f.dir === 'connect').map((f) => f.url)")
    resumed = [json.loads(parse_qs(urlsplit(url).query)["resume"][0]) for url in urls[1:3]]
    assert [r["streams"]["s"] for r in resumed] == [1, 2]
    assert [r["epochs"]["s"] for r in resumed] == ["e1", "e1"]
    assert page.page_errors == []


def test_too_many_connections_4029_closes_for_good_and_tells_the_page(live, open_page):
    server = live()
    page = open_page(server, url="/ws/test/too-many/", hold=1, **FAST)
    page.evaluate(
        """() => {
          // What a page would listen to: the error to show, the close, the state.
          window.seen = [];
          realtime.on("error", (e) => seen.push({ event: "error", kind: e.kind, code: e.code, message: e.message }));
          realtime.on("close", (c) => seen.push({ event: "close", code: c.code }));
          realtime.on("state", (s) => seen.push({ event: "state", newState: s.newState, code: s.code ?? null }));
          window.readiness = realtime.ready().then(() => "ready", (error) => error.message);
          realtime.connect();
        }"""
    )
    wait_until(page, "realtime.state === 'closed'")
    # Ten times the largest backoff: a retry would have happened by now.
    page.wait_for_timeout(1000)

    assert page.evaluate(CONNECTS) == 1
    assert page.evaluate("seen") == [
        {"event": "state", "newState": "connecting", "code": None},
        {
            "event": "error", "kind": "server", "code": "too_many_connections",
            "message": "You already have 50 open connections; close a tab and reload.",
        },
        {"event": "close", "code": 4029},
        {"event": "state", "newState": "closed", "code": 4029},
    ]
    assert page.evaluate("readiness") == "realtime: the connection closed (code 4029) before it was ready"
    assert page.evaluate("[realtime.state, realtime.retryAt]") == ["closed", None]


def test_message_too_big_1009_is_not_retried(live, open_page, bare_server):
    server = live()
    code = 1009
    page = open_page(server, url=f"{bare_server}?code={code}", **FAST)
    wait_until(page, "realtime.state === 'closed'")
    page.wait_for_timeout(1000)

    assert page.evaluate("rec.closes.map((c) => c.code)") == [code]
    assert page.evaluate("rec.states.map((s) => [s.newState, s.code ?? null])") == [
        ["connecting", None], ["open", None], ["closed", code],
    ]
    assert page.evaluate(CONNECTS) == 1


def test_bare_server_1011_is_retried(live, open_page, bare_server):
    """The control of the test above: from the same server, a 1011 is retried."""
    server = live()
    page = open_page(server, url=f"{bare_server}?code=1011", **FAST)
    wait_until(page, f"{CONNECTS} >= 2")
    assert page.evaluate("rec.closes[0].code") == 1011
