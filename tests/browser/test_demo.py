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
