"""The inbox in a real browser: the bell of ``{% realtime_inbox %}`` and ``realtime.inbox``.

Every page here is the demo's (the bell is in its top bar) except where a
test needs the black-hole proxy, which only the bare test page can use: it
takes the WebSocket URL from the query string.
"""

from pathlib import Path

import pytest
from django.core.management import call_command

import realtime
from realtime import notices
from realtime.models import Notice
from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BELL = ".realtime-inbox-button"
BADGE = ".realtime-inbox-badge"
PANEL = ".realtime-inbox-panel"
ITEMS = ".realtime-inbox-item"
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "inbox.png"


@pytest.fixture
def deliver(worker, redis_layer_settings):
    """``deliver(target, title)``: publish an inbox item; returns its ``(stream, seq)``."""

    def send(target, title, **payload):
        published = worker(realtime.notify, target, "notice", {"title": title, **payload}, inbox=True)
        return published.stream, published.seq

    return send


def demo_page(open_page, server, **kwargs):
    page = open_page(server, path="/", **kwargs)
    page.wait_for_selector("#connection[data-state=open]")
    return page


def badge(page):
    """What the bell shows: ``(badge text or None when hidden, the button's aria-label)``."""
    return page.evaluate(
        """(selectors) => {
          const badge = document.querySelector(selectors.badge);
          return [badge.hidden ? null : badge.textContent, document.querySelector(selectors.bell).getAttribute("aria-label")];
        }""",
        {"badge": BADGE, "bell": BELL},
    )


def wait_for_badge(page, text, timeout=5000):
    expression = (
        "document.querySelector(selectors.badge).hidden"
        if text is None
        else "!document.querySelector(selectors.badge).hidden && document.querySelector(selectors.badge).textContent === selectors.text"
    )
    page.wait_for_function(f"(selectors) => {expression}", arg={"badge": BADGE, "text": text}, timeout=timeout)


def open_bell(page):
    page.click(BELL)
    page.wait_for_selector(f"{PANEL}:not([hidden])")
    page.wait_for_function("(s) => !document.querySelector(s).hasAttribute('aria-busy')", arg=".realtime-inbox-list")


def titles(page):
    return page.locator(f"{ITEMS} .realtime-inbox-title").all_inner_texts()


def test_an_item_for_the_user_shows_in_the_bell(live, open_page, user, deliver, worker):
    server = live()
    page = demo_page(open_page, server)
    assert badge(page) == [None, "Notifications"]

    deliver(user, "Your export is ready", body="3 files, 2 MB.", link="/exports/7/", level="success")
    wait_for_badge(page, "1")
    assert badge(page) == ["1", "Notifications, 1 unread"]
    assert page.evaluate(f"[realtime.inbox.count, realtime.inbox.countFor('user:{user.pk}')]") == [1, 1]

    open_bell(page)
    assert page.locator(BELL).get_attribute("aria-expanded") == "true"
    assert titles(page) == ["Your export is ready"]
    item = page.locator(ITEMS).first
    assert "realtime-inbox-unread" in item.get_attribute("class")
    assert "realtime-inbox-level-success" in item.get_attribute("class")
    assert item.locator(".realtime-inbox-unread-label").inner_text() == "Unread:"
    assert item.locator(".realtime-inbox-body").inner_text() == "3 files, 2 MB."
    assert item.locator("a.realtime-inbox-title").get_attribute("href") == f"{server.url.rstrip('/')}/exports/7/"
    assert item.locator("time").inner_text() == "now"

    # Arriving while the panel is open, on top of the list: an admin notice and the command's text.
    notice = worker(Notice.objects.create, title="Deploy at 18:00", body="Expect a minute of downtime.")
    worker(notices.send, notice)
    worker(call_command, "realtime_notify", "--user", user.username, "--text", "hi")
    wait_for_badge(page, "3")
    page.wait_for_function("(s) => document.querySelectorAll(s).length === 3", arg=ITEMS)
    assert titles(page) == ["hi", "Deploy at 18:00", "Your export is ready"]
    assert page.page_errors == [] and page.console_errors == []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))


def test_mark_read_in_one_tab_updates_the_other_within_a_second(live, open_page, user, deliver):
    server = live()
    first, second = demo_page(open_page, server), demo_page(open_page, server)
    deliver(user, "one")
    deliver(user, "two")
    for page in (first, second):
        wait_for_badge(page, "2")

    open_bell(first)
    first.locator(ITEMS).filter(has_text="one").locator("[data-action=read]").click()
    wait_for_badge(second, "1", timeout=1000)
    wait_for_badge(first, "1")
    read = first.locator(ITEMS).filter(has_text="one")
    assert "realtime-inbox-unread" not in read.get_attribute("class")
    assert read.locator("[data-action=read]").is_hidden()
    # The button that was clicked is gone: focus moved to its item, not to the page.
    assert first.evaluate("document.activeElement.matches('.realtime-inbox-item')")

    # The other tab's open list follows as well.
    open_bell(second)
    assert second.locator(f"{ITEMS}.realtime-inbox-unread").all_inner_texts()[0].count("two") == 1
    assert second.locator(f"{ITEMS}.realtime-inbox-unread").count() == 1


def test_mark_all_read_clears_every_tab(live, open_page, user, deliver):
    server = live()
    first, second = demo_page(open_page, server), demo_page(open_page, server)
    for n in range(3):
        deliver(user if n % 2 else "broadcast", f"item {n}")
    for page in (first, second):
        wait_for_badge(page, "3")

    open_bell(second)
    open_bell(first)
    first.click("[data-action=read-all]")
    for page in (first, second):
        wait_for_badge(page, None, timeout=1000)
        assert badge(page) == [None, "Notifications"]
        page.wait_for_function("(s) => document.querySelectorAll(s).length === 0", arg=f"{ITEMS}.realtime-inbox-unread")
    assert first.locator("[data-action=read-all]").get_attribute("aria-disabled") == "true"
    assert first.evaluate("realtime.inbox.counts") == second.evaluate("realtime.inbox.counts")
    assert first.evaluate("realtime.inbox.count") == 0


def test_a_tab_that_was_offline_comes_back_to_the_right_count(live, open_page, user, deliver, proxy):
    server = live()
    hole = proxy(server)
    away = open_page(
        server,
        url=f"ws://127.0.0.1:{hole.port}/ws/realtime/",
        heartbeat=200,
        connect_timeout=1000,
        backoff_min=100,
        backoff_max=300,
    )
    wait_until(away, "realtime.state === 'open'")
    here = demo_page(open_page, server)
    refs = [deliver(user, f"item {n}") for n in range(4)]
    wait_until(away, "realtime.inbox.count === 4")
    wait_for_badge(here, "4")

    hole.blackhole()
    wait_until(away, "rec.closes.length >= 1")
    open_bell(here)
    here.locator(ITEMS).filter(has_text="item 0").locator("[data-action=read]").click()
    here.locator(ITEMS).filter(has_text="item 1").locator("[data-action=archive]").click()
    wait_for_badge(here, "2")
    deliver("broadcast", "while away")
    wait_for_badge(here, "3")
    assert away.evaluate("realtime.inbox.count") == 4

    hole.restore()
    wait_until(away, "realtime.state === 'open' && realtime.inbox.count === 3")
    away.wait_for_timeout(300)
    assert away.evaluate("realtime.inbox.counts") == here.evaluate("realtime.inbox.counts")
    assert away.evaluate("realtime.inbox.count") == 3
    # And it was asked for again after the reconnect, not only replayed.
    assert refs and away.evaluate(
        "performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/realtime/inbox/count')).length"
    ) >= 2


def test_keyboard_opens_moves_and_closes(live, open_page, user, deliver):
    server = live()
    page = demo_page(open_page, server)
    deliver(user, "first")
    deliver(user, "second")
    wait_for_badge(page, "2")

    page.focus(BELL)
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{PANEL}:not([hidden])")
    assert page.locator(BELL).get_attribute("aria-expanded") == "true"
    assert page.evaluate("document.activeElement === document.querySelector('.realtime-inbox-panel')")
    page.wait_for_function("(s) => document.querySelectorAll(s).length === 2", arg=ITEMS)

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.action") == "read-all"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent").count("second") == 1
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent").count("first") == 1
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.action") == "read"
    page.keyboard.press("Enter")
    wait_for_badge(page, "1")

    page.keyboard.press("Escape")
    page.wait_for_selector(PANEL, state="hidden")
    assert page.locator(BELL).get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.activeElement === document.querySelector('.realtime-inbox-button')")
    # Space opens too; Escape from the button closes.
    page.keyboard.press(" ")
    page.wait_for_selector(f"{PANEL}:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector(PANEL, state="hidden")


def test_archive_removes_the_item(live, open_page, user, deliver):
    server = live()
    page = demo_page(open_page, server)
    deliver(user, "keep")
    deliver(user, "archive me")
    wait_for_badge(page, "2")

    open_bell(page)
    page.locator(ITEMS).filter(has_text="archive me").locator("[data-action=archive]").click()
    page.wait_for_function("(s) => document.querySelectorAll(s).length === 1", arg=ITEMS)
    wait_for_badge(page, "1")
    assert titles(page) == ["keep"]

    # Gone for good: not in the next load either.
    page.keyboard.press("Escape")
    open_bell(page)
    assert titles(page) == ["keep"]


def test_load_more_pages_through_the_inbox(live, open_page, user, worker, redis_layer_settings):
    server = live()
    page = demo_page(open_page, server)
    # Not "notice": the demo would also show 23 toasts, over the bell.
    worker(
        realtime.notify_many,
        [{"target": user, "type": "mention", "payload": {"title": f"item {n}"}, "inbox": True} for n in range(23)],
    )
    wait_for_badge(page, "23")

    open_bell(page)
    assert len(titles(page)) == 20
    page.click("[data-action=more]")
    page.wait_for_function("(s) => document.querySelectorAll(s).length === 23", arg=ITEMS)
    assert titles(page) == [f"item {n}" for n in range(22, -1, -1)]
    assert page.locator("[data-action=more]").is_hidden()
    assert page.evaluate("document.activeElement.textContent").count("item 2") == 1


def test_the_open_bell_speaks_the_pages_language(live, open_page, user, deliver):
    from tests.browser.test_demo_i18n import english_words, switch

    server = live()
    page = demo_page(open_page, server)
    switch(page, "zh-hans")
    deliver(user, "午饭到了", body="在二楼厨房。")
    wait_for_badge(page, "1")
    assert badge(page) == ["1", "通知，1 条未读"]
    open_bell(page)
    assert page.locator(f"{ITEMS} time").inner_text() == "现在"
    assert page.locator(f"{ITEMS} .realtime-inbox-unread-label").inner_text() == "未读："
    assert english_words(page) == []


def test_anonymous_pages_have_no_bell_and_ask_nothing(browser, live):
    server = live(realtime={"ALLOW_ANONYMOUS": True})
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        asked = []
        page.on("request", lambda request: "/inbox" in request.url and asked.append(request.url))
        page.goto("/login/")
        assert page.locator(".realtime-inbox").count() == 0
        # The bare page's client connects anonymously: its inbox stays off.
        page.goto("/test/page/")
        page.wait_for_function("window.realtime && realtime.state === 'open'")
        assert page.evaluate("[realtime.inbox.enabled, realtime.inbox.count]") == [False, None]
        error = page.evaluate("realtime.inbox.items().then(() => null, (error) => error.code)")
        assert error == "disabled"
        assert asked == []
    finally:
        context.close()


#: A fake client for ``Inbox`` alone: it emits what the test gives it; ``fetch`` answers from ``answers``.
FAKE_CLIENT = """async () => {
  const { Inbox } = await import("/static/realtime/realtime.js");
  const handlers = {};
  const client = { _welcomedAt: null, on: (type, handler) => { (handlers[type] ||= []).push(handler); } };
  const emit = (type, detail) => handlers[type].forEach((handler) => handler(detail));
  const answers = (window.answers = []);
  const asked = (window.asked = []);
  window.fetch = (url) => {
    asked.push(String(url));
    return new Promise((resolve) => answers.push((body) => resolve(new Response(JSON.stringify(body)))));
  };
  const inbox = new Inbox(client, { url: "/realtime/inbox/", unread: { total: 1, streams: { broadcast: 1, "user:7": 0 }, ts: "2030-01-01T00:00:10.000Z" } });
  const counts = (window.counts = []);
  inbox.on("count", ({ total }) => counts.push(total));
  const at = (seconds) => new Date(Date.UTC(2030, 0, 1, 0, 0, seconds)).toISOString();
  window.item = (stream, seq, seconds) => emit("message", { type: "notice", stream, seq, ts: at(seconds), inbox: true, payload: {} });
  window.changed = (seconds, streams, heads) => emit("message", {
    type: "inbox.changed", stream: "user:7", seq: 99, ts: at(seconds), payload: { read: [], unread: { total: 0, streams, heads } },
  });
  window.welcome = () => emit("open", { user: 7 });
  window.inbox = inbox;
}"""


@pytest.fixture
def fake_inbox(live, open_page):
    """``fake_inbox()``: ``(server, page)``, the page running :data:`FAKE_CLIENT` (an ``Inbox`` alone)."""

    def start():
        server = live()
        page = open_page(server, hold=1)
        page.evaluate(FAKE_CLIENT)
        return server, page

    return start


def test_counts_are_ordered_by_server_time_whatever_order_they_arrive_in(fake_inbox):
    _server, page = fake_inbox()
    page.evaluate("welcome()")
    page.evaluate("answers.shift()({ total: 1, streams: { broadcast: 1, 'user:7': 0 } })")
    wait_until(page, "asked.length === 1")

    # Replayed after a reconnect, streams one after the other: a newer item first ...
    page.evaluate("item('broadcast', 5, 21)")
    page.evaluate("item('broadcast', 5, 21)")  # the same item again: counted once
    assert page.evaluate("inbox.countFor('broadcast')") == 2
    # ... then a change from before it: its counts, plus the item that came after it.
    page.evaluate("changed(15, { broadcast: 0, 'user:7': 0 })")
    assert page.evaluate("inbox.counts") == {"total": 1, "streams": {"broadcast": 1, "user:7": 0}}
    # An item older than that change is in its counts already; an older change is ignored.
    page.evaluate("item('broadcast', 4, 12)")
    page.evaluate("changed(11, { broadcast: 3, 'user:7': 0 })")
    assert page.evaluate("inbox.count") == 1
    # An item on a stream that is not part of the inbox does not count.
    page.evaluate("item('orders', 1, 30)")
    assert page.evaluate("[inbox.count, counts]") == [1, [2, 1]]


def test_a_recount_spoiled_by_inbox_traffic_is_taken_again(fake_inbox):
    server, page = fake_inbox()
    page.evaluate("() => { window.refreshed = inbox.refresh(); }")
    wait_until(page, "answers.length === 1")
    # An item arrives while the count is on its way: the answer may predate it.
    page.evaluate("item('user:7', 3, 40)")
    page.evaluate("answers.shift()({ total: 1, streams: { broadcast: 1, 'user:7': 0 } })")
    wait_until(page, "answers.length === 1")
    assert page.evaluate("inbox.count") == 2
    page.evaluate("answers.shift()({ total: 5, streams: { broadcast: 1, 'user:7': 4 } })")
    assert page.evaluate("refreshed") == {"total": 5, "streams": {"broadcast": 1, "user:7": 4}}
    assert page.evaluate("[inbox.count, asked]") == [5, ["http://127.0.0.1:%d/realtime/inbox/count" % server.port] * 2]
    # An item from before that count is not added again; a later one is.
    page.evaluate("item('user:7', 2, 39)")
    page.evaluate("item('user:7', 4, 50)")
    assert page.evaluate("inbox.countFor('user:7')") == 5


def test_a_count_that_overtakes_its_item_is_not_added_to_again(fake_inbox):
    # The count's answer left before the item was published and came back
    # with it included, ahead of the item's own message (CI saw a bell at 2
    # for one item). Its heads say which seqs it includes; time cannot.
    _server, page = fake_inbox()
    page.evaluate("welcome()")
    wait_until(page, "answers.length === 1")
    page.evaluate("answers.shift()({ total: 2, streams: { broadcast: 1, 'user:7': 1 }, heads: { broadcast: 4, 'user:7': 3 } })")
    wait_until(page, "inbox.count === 2")
    page.evaluate("item('user:7', 3, 40)")
    assert page.evaluate("inbox.counts") == {"total": 2, "streams": {"broadcast": 1, "user:7": 1}}
    page.evaluate("item('user:7', 4, 41)")
    assert page.evaluate("inbox.countFor('user:7')") == 2
    # A change counts what it includes, plus the items seen above its heads, whatever their times.
    page.evaluate("item('broadcast', 5, 30)")
    page.evaluate("changed(35, { broadcast: 0, 'user:7': 0 }, { broadcast: 4, 'user:7': 3 })")
    assert page.evaluate("inbox.counts") == {"total": 2, "streams": {"broadcast": 1, "user:7": 1}}


# The tags' markup (no browser; run in the worker thread, away from Playwright's loop) ---------


@pytest.fixture
def render(worker):
    """``render(source, user, **context)``: a template using the realtime tags, rendered for ``user``."""
    from django.template import Context, Template
    from django.test import RequestFactory

    def render_(source, user, **context):
        request = RequestFactory().get("/")
        request.user = user
        return Template("{% load realtime %}" + source).render(Context({"request": request, **context}))

    return lambda source, user, **context: worker(render_, source, user, **context)


def test_the_bell_renders_the_count_labels_and_nonce(user, render, deliver):
    deliver(user, "one")
    deliver(user, "two")
    html = render("{% realtime_inbox nonce=csp page_size=5 %}", user, csp="r4nd0m")
    assert 'aria-label="Notifications, 2 unread"' in html
    assert 'data-label-unread="Notifications, %(count)s unread"' in html
    assert 'data-page-size="5"' in html
    assert 'data-inbox-badge aria-hidden="true">2</span>' in html
    assert html.count(' nonce="r4nd0m"') == 2  # the stylesheet and the script
    assert 'src="/static/realtime/inbox.js"' in html and 'href="/static/realtime/inbox.css"' in html
    chinese = render("{% load i18n %}{% language 'zh-hans' %}{% realtime_inbox %}{% endlanguage %}", user)
    assert 'aria-label="通知，2 条未读"' in chinese and 'data-label-unread="通知，%(count)s 条未读"' in chinese
    assert "全部标为已读" in chinese and "归档" in chinese


def test_the_bell_hides_its_badge_at_zero_and_is_absent_for_anonymous_visitors(user, render):
    from django.contrib.auth.models import AnonymousUser

    html = render("{% realtime_inbox %}", user)
    assert 'aria-label="Notifications"' in html and "data-inbox-badge aria-hidden=\"true\" hidden>0</span>" in html
    assert render("{% realtime_inbox %}", AnonymousUser()) == ""


@pytest.mark.parametrize("source", ["{% realtime_inbox page_size=0 %}", '{% realtime_inbox page_size="5" %}', "{% realtime_inbox size=5 %}"])
def test_bad_bell_arguments_are_template_errors(user, render, source):
    from django.template import TemplateSyntaxError

    with pytest.raises(TemplateSyntaxError, match="realtime_inbox"):
        render(source, user)


def test_the_client_tag_turns_the_inbox_on_for_signed_in_users_only(user, render, deliver):
    import json
    import re
    from html import unescape

    from django.contrib.auth.models import AnonymousUser

    deliver("broadcast", "for everyone")

    def data(html):
        return {name: unescape(value) for name, value in re.findall(r' data-([a-z-]+)="([^"]*)"', html)}

    signed_in = data(render("{% realtime_client %}", user))
    assert signed_in["inbox-url"] == "/realtime/inbox/"
    unread = json.loads(signed_in["inbox-unread"])
    assert (unread["total"], unread["streams"]) == (1, {"broadcast": 1, f"user:{user.pk}": 0})
    assert unread["ts"].endswith("Z") and len(signed_in["csrf-token"]) == 64
    assert "csrf-cookie" not in signed_in and "csrf-header" not in signed_in
    assert "inbox-url" not in data(render("{% realtime_client inbox=False %}", user))
    assert "inbox-url" not in data(render("{% realtime_client %}", AnonymousUser()))


def test_the_client_tag_names_a_csrf_cookie_and_header_that_are_not_djangos_defaults(user, render, settings):
    settings.CSRF_COOKIE_NAME = "xsrf"
    settings.CSRF_HEADER_NAME = "HTTP_X_XSRF_TOKEN"
    html = render("{% realtime_client %}", user)
    assert ' data-csrf-cookie="xsrf"' in html and ' data-csrf-header="X-XSRF-TOKEN"' in html
