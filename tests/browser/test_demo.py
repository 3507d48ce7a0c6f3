"""The demo site: staff send notices from the page, users see them as toasts."""

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User

import realtime
from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
# The picture in the docs changes only when asked for, so test runs leave the tree clean.
SCREENSHOT = ROOT / ("docs" if os.environ.get("REALTIME_UPDATE_SCREENSHOT") else "test-artifacts") / "screenshot.png"


def send(page, title, body="", level="info", to=None):
    if to:
        page.click("label:has(input[value=user])")
        page.fill("input[name=username]", to)
    else:
        page.click("label:has(input[value=everyone])")
    page.click(f"label.level-{level}")
    page.fill("input[name=title]", title)
    page.fill("textarea[name=body]", body)
    page.click("#notice-form button[type=submit]")
    page.wait_for_function("document.getElementById('send-status').textContent.startsWith('Sent')")


def test_staff_notice_reaches_users_as_toasts(live, open_page, user, worker, redis_layer_settings):
    staff = User.objects.create_user("dana", password="unused-password", is_staff=True)
    server = live()
    alice = open_page(server, path="/")
    desk = open_page(server, path="/", as_user=staff, viewport={"width": 1200, "height": 720})
    for page in (alice, desk):
        page.wait_for_selector("#connection[data-state=open]")
    assert desk.locator("#connection").inner_text() == "Live"
    assert alice.locator("#notice-form").count() == 0

    worker(
        realtime.notify, "broadcast", "notice",
        {"title": "Deploy finished", "body": "Version 2.4 is live on every server.", "level": "success", "sender": "ci"},
    )
    send(desk, "Database maintenance at 22:00", "Expect a minute of read-only mode.", level="warning")
    send(desk, "Welcome aboard, Alice", "Your workspace is ready.", to="alice")
    send(desk, "Lunch is here", "Kitchen, second floor.")

    wait_until(alice, "document.querySelectorAll('#feed li').length === 4")
    wait_until(desk, "document.querySelectorAll('#feed li').length === 3")
    assert alice.locator("#feed .notice-title").all_inner_texts() == [
        "Lunch is here", "Welcome aboard, Alice", "Database maintenance at 22:00", "Deploy finished",
    ]
    assert alice.locator(".toast .toast-title").first.inner_text() == "Lunch is here"
    assert desk.locator("#feed .notice-title").all_inner_texts() == [
        "Lunch is here", "Database maintenance at 22:00", "Deploy finished",
    ]
    assert alice.page_errors == [] and desk.page_errors == []

    # Keep the newest toast for the picture.
    for close in desk.locator(".toast .toast-close").all()[1:]:
        close.click()
    desk.wait_for_function("document.querySelectorAll('.toast').length === 1")
    desk.wait_for_timeout(700)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    desk.screenshot(path=str(SCREENSHOT))


def test_countdown_badge_while_waiting(live, open_page):
    server = live()
    page = open_page(server, path="/")
    page.wait_for_selector("#connection[data-state=open]")
    server.kill()
    page.wait_for_selector("#connection[data-state=waiting]")
    assert page.locator("#connection").inner_text().startswith("Reconnecting in ")


def shown(page, selector):
    """``(title, body, level, href)`` of each feed item or toast, newest first."""
    return page.eval_on_selector_all(
        selector,
        """(nodes) => nodes.map((node) => {
             const title = node.querySelector(".notice-title, .toast-title");
             const body = node.querySelector(".notice-body, .toast-body");
             const level = [...node.classList].find((name) => name.startsWith("level-")).slice(6);
             return [title.textContent, body.textContent, level, title.getAttribute("href")];
           })""",
    )


def test_every_documented_payload_shape_renders(live, open_page, user, worker, redis_layer_settings):
    """The shapes in README, docs/commands.md and docs/admin-notices.md, and what to do with the rest."""
    from django.core.management import call_command

    from realtime import notices
    from realtime.models import Notice

    server = live()
    page = open_page(server, path="/")
    page.wait_for_selector("#connection[data-state=open]")

    # docs/commands.md: `realtime_notify --broadcast --text "Deploying in 5 minutes"` sends {"text": ...}.
    worker(call_command, "realtime_notify", "--broadcast", "--text", "Deploying in 5 minutes")
    # README: title and level, no body.
    worker(realtime.notify, "broadcast", "notice", {"title": "Deploy at 18:00", "level": "warning"})
    # docs/admin-notices.md: {id, title, body, level, link}.
    notice = worker(
        Notice.objects.create, title="Maintenance at 22:00", body="Expect a minute of read-only mode.",
        level="error", link="/status/",
    )
    worker(notices.send, notice)
    # docs/publishing.md: any JSON object; title and text together, an unknown level, a link a browser would run.
    worker(
        realtime.notify, "broadcast", "notice",
        {"title": "Build 881", "text": "passed on main", "level": "critical", "link": "javascript:alert(1)"},
    )
    worker(realtime.notify, "broadcast", "notice", {"order": 17})

    wait_until(page, "document.querySelectorAll('#feed li').length === 5")
    origin = server.url.rstrip("/")
    assert shown(page, "#feed .notice") == [
        ["Notice", "", "info", None],
        ["Build 881", "passed on main", "info", None],
        ["Maintenance at 22:00", "Expect a minute of read-only mode.", "error", f"{origin}/status/"],
        ["Deploy at 18:00", "", "warning", None],
        ["Deploying in 5 minutes", "", "info", None],
    ]
    assert shown(page, "#toasts .toast") == shown(page, "#feed .notice")
    assert page.locator("#feed-count").inner_text() == "5 received"
    # The level is the colour of the feed's dot and the toast's stripe; an error toast is an alert.
    colours = page.eval_on_selector_all(
        "#feed .notice-dot", "(dots) => dots.map((dot) => getComputedStyle(dot).backgroundColor)"
    )
    info, warning, error = "rgb(59, 130, 246)", "rgb(217, 119, 6)", "rgb(220, 38, 38)"
    assert colours == [info, info, error, warning, info]
    assert page.locator(".toast.level-error").get_attribute("role") == "alert"
    assert page.locator("#feed .notice-body:visible").count() == 2
    assert page.page_errors == []
