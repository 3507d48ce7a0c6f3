"""One connection per browser: the tabs of one user share a socket (share.js, worker.js).

Every tab here is the bare test page with ``?share=1``, in one browser
context (one profile: tabs of one browser). The server counts the sockets:
its Prometheus metrics are on, and ``realtime_connections_opened_total`` is
how many it accepted. Three ways to share are tested the same way: in a
SharedWorker (Chromium has it), through a leader tab (SharedWorker removed
before the page's scripts run) and not at all (Web Locks removed too).
"""

import re
import threading
import time
import urllib.request

import pytest
from django.contrib.auth.models import User
from django.test import Client

import realtime
from tests.browser.conftest import FRAME_RECORDER, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

METRICS = {"METRICS": {"ENABLED": True, "ALLOW_IPS": ["127.0.0.1"]}}

#: Before any script of the page: take away what a mode must do without.
WITHOUT = {
    "worker": "",
    "leader": "delete window.SharedWorker;",
    "none": "delete window.SharedWorker; Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });",
}


def metric(server, name):
    """The value of an unlabelled metric in a scrape of ``server`` (0 when absent)."""
    with urllib.request.urlopen(f"{server.url.rstrip('/')}/realtime/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def sockets_opened(server):
    """WebSocket connections the server has accepted since it started."""
    return metric(server, "realtime_connections_opened_total")


def sockets_open(server):
    return metric(server, "realtime_connections_open")


@pytest.fixture
def profile(browser, user):
    """``profile(server, mode, as_user=None)``: a browser context logged in; ``.tab()`` opens a page in it."""
    contexts = []

    def start(server, mode="worker", as_user=None):
        client = Client()
        client.force_login(as_user or user)
        context = browser.new_context(base_url=server.url)
        contexts.append(context)
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": "127.0.0.1", "path": "/"}]
        )
        context.add_init_script(FRAME_RECORDER)
        context.add_init_script(WITHOUT[mode])

        def tab(path="/test/page/?share=1"):
            page = context.new_page()
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.goto(path)
            page.wait_for_function("window.realtime && realtime.state === 'open'", timeout=15000)
            return page

        context.tab = tab
        return context

    yield start
    for context in contexts:
        context.close()


def notices(page):
    return page.evaluate("rec.messages.filter((m) => m.type === 'notice').map((m) => m.payload.n)")


def wait_for_notices(pages, count, timeout=30000):
    for page in pages:
        wait_until(page, f"rec.messages.filter((m) => m.type === 'notice').length >= {count}", timeout=timeout)


def publish_many(worker, target, numbers):
    def send():
        for n in numbers:
            realtime.notify(target, "notice", {"n": n})

    worker(send)


EXPECTED_SHARING = {"worker": {"worker"}, "leader": {"leader", "follower"}, "none": {None}}


@pytest.mark.parametrize("mode", ["worker", "leader", "none"])
def test_ten_tabs_hold_one_socket_and_each_gets_every_message_once(live, profile, worker, redis_layer_settings, mode):
    server = live(realtime=METRICS)
    context = profile(server, mode)
    tabs = [context.tab() for _ in range(10)]
    sharing = [tab.evaluate("realtime.sharing") for tab in tabs]
    assert set(sharing) == EXPECTED_SHARING[mode]
    if mode == "leader":
        assert sharing.count("leader") == 1
    assert sockets_opened(server) == (10 if mode == "none" else 1)

    publish_many(worker, "broadcast", range(1, 1001))
    wait_for_notices(tabs, 1000)
    time.sleep(0.3)  # anything extra would arrive now
    for tab in tabs:
        assert notices(tab) == list(range(1, 1001))
        assert tab.errors == []
    assert sockets_opened(server) == (10 if mode == "none" else 1)


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_the_tab_holding_the_socket_closes_mid_burst_and_nothing_is_lost(live, profile, worker, redis_layer_settings, mode):
    server = live(realtime=METRICS)
    context = profile(server, mode)
    tabs = [context.tab() for _ in range(4)]
    # The first tab made the worker, or leads.
    assert tabs[0].evaluate("realtime.sharing") == ("worker" if mode == "worker" else "leader")
    total = 600
    burst = threading.Thread(target=publish_many, args=(worker, "broadcast", range(1, total + 1)))
    burst.start()
    wait_until(tabs[1], "rec.messages.filter((m) => m.type === 'notice').length >= 100")
    tabs[0].close()
    closed_at = time.monotonic()
    rest = tabs[1:]
    if mode == "leader":
        # Another tab takes the socket within 3 s.
        for _ in range(60):
            if any(tab.evaluate("realtime.sharing === 'leader' && realtime.state === 'open'") for tab in rest):
                break
            time.sleep(0.05)
        assert time.monotonic() - closed_at < 3
        assert [tab.evaluate("realtime.sharing") for tab in rest].count("leader") == 1
    burst.join()
    wait_for_notices(rest, total)
    time.sleep(0.3)
    for tab in rest:
        assert notices(tab) == list(range(1, total + 1))


def test_a_tab_opened_later_gets_what_was_published_since_it_was_rendered(live, profile, worker, redis_layer_settings):
    # The page renders where each stream stands; messages published before
    # its script joins the shared socket must still reach it, and only it.
    server = live(realtime=METRICS)
    context = profile(server)
    first = context.tab()
    page = context.new_page()
    page.goto("/test/page/?share=1&hold=1")
    publish_many(worker, "broadcast", range(1, 6))
    wait_for_notices([first], 5)
    page.evaluate("realtime.connect()")
    wait_for_notices([page], 5)
    publish_many(worker, "broadcast", [6])
    wait_for_notices([first, page], 6)
    time.sleep(0.3)
    assert notices(page) == [1, 2, 3, 4, 5, 6]
    assert notices(first) == [1, 2, 3, 4, 5, 6]
    assert sockets_opened(server) == 1


def test_subscriptions_are_counted_across_tabs(live, profile, worker, redis_layer_settings):
    server = live(realtime={**METRICS, "AUTHORIZE": "tests.browser.asgi.authorize"})
    context = profile(server)
    first, second = context.tab(), context.tab()
    for tab in (first, second):
        tab.evaluate("realtime.subscribe('orders')")
    wait_until(first, "true")
    publish_many(worker, "orders", [1])
    wait_for_notices([first, second], 1)
    # One tab leaves the stream: the other still receives it, the first does not.
    first.evaluate("realtime.unsubscribe('orders')")
    time.sleep(0.3)
    publish_many(worker, "orders", [2])
    wait_for_notices([second], 2)
    time.sleep(0.3)
    assert notices(first) == [1]
    # A third tab that never asked for it does not receive it.
    third = context.tab()
    publish_many(worker, "orders", [3])
    wait_for_notices([second], 3)
    time.sleep(0.3)
    assert notices(third) == []


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_a_per_browser_handler_runs_in_one_tab_per_message(live, profile, worker, redis_layer_settings, mode):
    server = live(realtime=METRICS)
    context = profile(server, mode)
    tabs = [context.tab() for _ in range(3)]
    for tab in tabs:
        tab.evaluate("window.toasts = []; realtime.on('notice', (m) => toasts.push(m.payload.n), { perBrowser: true }); null")
    publish_many(worker, "broadcast", range(1, 6))
    wait_for_notices(tabs, 5)
    time.sleep(0.3)
    shown = sorted(n for tab in tabs for n in tab.evaluate("toasts"))
    assert shown == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_logout_in_one_tab_closes_every_tab(live, profile, redis_layer_settings, mode):
    server = live(realtime=METRICS)
    context = profile(server, mode)
    tabs = [context.tab() for _ in range(3)]
    tabs[0].evaluate(
        """async () => {
          const token = document.cookie.match(/csrftoken=([^;]+)/)?.[1] || "";
          await fetch("/logout/", { method: "POST", headers: { "X-CSRFToken": token }, credentials: "same-origin" });
        }"""
    )
    for tab in tabs:
        wait_until(tab, "realtime.state === 'closed'", timeout=10000)
        assert 4401 in tab.evaluate("rec.closes.map((c) => c.code)")
    assert sockets_open(server) == 0


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_a_user_who_logs_in_over_another_never_gets_the_first_ones_messages(
    live, profile, worker, user, redis_layer_settings, mode
):
    # A heartbeat of 2 s: the server checks the session on pings, at most once per half heartbeat.
    server = live(realtime={**METRICS, "HEARTBEAT_INTERVAL": 2})
    bob = User.objects.create_user("bob", password="bob-password-123")
    context = profile(server, mode)
    alice_tabs = [context.tab() for _ in range(2)]
    # Bob signs in in a third tab of the same browser, over alice's session.
    login = context.new_page()
    login.goto("/login/")
    login.fill("input[name=username]", "bob")
    login.fill("input[name=password]", "bob-password-123")
    login.press("input[name=password]", "Enter")
    login.wait_for_url(lambda url: "/login/" not in url)
    bob_tab = context.tab()
    # Bob's tabs have a socket of their own, led by his first tab: the page the login led to.
    assert bob_tab.evaluate("realtime.sharing") == ("worker" if mode == "worker" else "follower")
    for tab in alice_tabs:
        wait_until(tab, "realtime.state === 'closed'", timeout=10000)

    publish_many(worker, user, [1])
    publish_many(worker, bob, [2])
    wait_for_notices([bob_tab], 1)
    time.sleep(0.5)
    assert notices(bob_tab) == [2]
    for tab in alice_tabs:
        assert notices(tab) == []
    assert {m["stream"] for m in bob_tab.evaluate("rec.messages")} <= {"broadcast", f"user:{bob.pk}"}


def test_a_frozen_leader_hands_the_socket_over_and_catches_up_when_it_resumes(live, profile, worker, redis_layer_settings):
    # Browsers freeze background tabs (page lifecycle); a frozen leader would
    # starve the others. Headless Chromium does not freeze a visible page (the
    # DevTools protocol's setWebLifecycleState fires no event there), so the
    # test dispatches the lifecycle's own events: freeze, then resume.
    server = live(realtime=METRICS)
    context = profile(server, "leader")
    tabs = [context.tab() for _ in range(3)]
    assert tabs[0].evaluate("realtime.sharing") == "leader"
    tabs[0].evaluate("document.dispatchEvent(new Event('freeze'))")
    frozen_at = time.monotonic()
    while not any(tab.evaluate("realtime.sharing === 'leader' && realtime.state === 'open'") for tab in tabs[1:]):
        assert time.monotonic() - frozen_at < 3, "no tab took the socket over within 3 s"
        time.sleep(0.05)
    assert tabs[0].evaluate("[realtime.sharing, realtime.state]") == [None, "closed"]
    publish_many(worker, "broadcast", range(1, 51))
    wait_for_notices(tabs[1:], 50)
    assert notices(tabs[0]) == []

    tabs[0].evaluate("document.dispatchEvent(new Event('resume'))")
    wait_until(tabs[0], "realtime.state === 'open'")
    assert tabs[0].evaluate("realtime.sharing") == "follower"
    wait_for_notices(tabs, 50)
    publish_many(worker, "broadcast", [51])
    wait_for_notices(tabs, 51)
    time.sleep(0.3)
    for tab in tabs:
        assert notices(tab) == list(range(1, 52))
    assert sockets_opened(server) == 2


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_after_a_restart_one_tab_fetches_the_inbox_count_for_all(live, profile, worker, user, redis_layer_settings, mode):
    server = live(realtime=METRICS)
    context = profile(server, mode)
    asked = []
    context.on("request", lambda request: "/realtime/inbox/count" in request.url and asked.append(request.url))
    tabs = [context.tab() for _ in range(4)]
    for tab in tabs:
        wait_until(tab, "realtime.inbox.count === 0")
    # The first tab fetched the count when it opened the socket; the others rendered theirs.
    assert len(asked) == 1

    server.kill()
    worker(realtime.notify, user, "notice", {"n": 1}, inbox=True)  # stored while the server is away
    server = live(realtime=METRICS, port=server.port)
    for tab in tabs:
        wait_until(tab, "realtime.inbox.count === 1 && realtime.state === 'open'", timeout=30000)
    time.sleep(0.5)
    # One tab fetched for all four (twice at most: an answer the replayed item
    # overtook is asked again).
    assert 2 <= len(asked) <= 3, asked
    for tab in tabs:
        assert tab.evaluate(f"[realtime.inbox.count, realtime.inbox.countFor('user:{user.pk}')]") == [1, 1]
        assert tab.errors == []


def test_tabs_start_another_worker_when_theirs_dies_and_lose_nothing(live, profile, worker, browser, redis_layer_settings):
    # A SharedWorker that dies closes no port: its tabs would stay "open" and
    # hear nothing. Killed here through the DevTools protocol, as a crash.
    server = live(realtime=METRICS)
    context = profile(server)
    tabs = [context.tab() for _ in range(3)]
    publish_many(worker, "broadcast", [1])
    wait_for_notices(tabs, 1)
    cdp = browser.new_browser_cdp_session()
    [shared] = [t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "shared_worker"]
    cdp.send("Target.closeTarget", {"targetId": shared["targetId"]})
    killed_at = time.monotonic()
    publish_many(worker, "broadcast", range(2, 6))  # while no worker holds a socket: stored, replayed later

    for tab in tabs:
        wait_until(tab, "rec.messages.filter((m) => m.type === 'notice').length >= 5", timeout=30000)
    recovered = time.monotonic() - killed_at
    # At worst 15 s: two checks go unanswered, WORKER_CHECK_INTERVAL (5 s)
    # apart, and the third tick starts a new worker; then a socket and a replay.
    assert recovered < 25, recovered
    publish_many(worker, "broadcast", [6])
    wait_for_notices(tabs, 6)
    time.sleep(0.3)
    for tab in tabs:
        assert notices(tab) == [1, 2, 3, 4, 5, 6]
        assert tab.evaluate("[realtime.sharing, realtime.state]") == ["worker", "open"]
    assert sockets_opened(server) == 2


@pytest.mark.parametrize("mode", ["worker", "leader"])
def test_one_tab_flooding_pings_and_resumes_does_not_get_the_shared_socket_closed(
    live, profile, worker, redis_layer_settings, mode
):
    # Every tab's frames count against the one socket's INBOUND_BURST (60): a
    # tab that asks 300 times (a bug, a loop, many tabs catching up at once)
    # must not get the socket every tab shares closed with 4008.
    server = live(realtime=METRICS)
    context = profile(server, mode)
    tabs = [context.tab() for _ in range(3)]
    publish_many(worker, "broadcast", [1])
    wait_for_notices(tabs, 1)
    tabs[1].evaluate("for (let i = 0; i < 150; i++) { realtime.ping(); realtime._resume({ broadcast: 0 }); }")
    publish_many(worker, "broadcast", [2])
    wait_for_notices(tabs, 2)
    time.sleep(0.5)  # the gathered resume's replay, which every tab drops
    for tab in tabs:
        assert notices(tab) == [1, 2]
        assert tab.evaluate("[realtime.state, rec.closes.length]") == ["open", 0]
    assert sockets_opened(server) == 1
