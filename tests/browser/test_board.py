"""The demo board: task edits in one tab, or in the admin, show up live in every other tab."""

from contextlib import suppress
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

import realtime
from project.models import Task

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

#: Set on each board page when it opens; still there at the end means the page never reloaded.
NO_RELOAD = "window.__sameDocument = true"


@pytest.fixture
def tabs(live, open_page, user, redis_layer_settings):
    """``tabs(as_user=None)``: two board pages (alice and bob, or ``as_user`` twice), connected."""

    def open_(as_user=None):
        server = live()
        bob = User.objects.create_user("bob", password="unused-password")
        pages = [
            open_page(server, path="/board/", as_user=as_user),
            open_page(server, path="/board/", as_user=as_user or bob),
        ]
        for page in pages:
            page.wait_for_selector("#connection[data-state=open]")
            page.evaluate(NO_RELOAD)
        return pages

    return open_


def column(page, status):
    """The titles in one column of the board, top to bottom."""
    return page.locator(f'.column[data-status="{status}"] .task-title').all_inner_texts()


def board(page):
    return {status: column(page, status) for status in ("todo", "doing", "done")}


def wait_for_board(page, expected, timeout=10000):
    """Wait until the page shows exactly ``expected`` ({status: [titles]})."""
    page.wait_for_function(
        """(expected) => Object.entries(expected).every(([status, titles]) => {
             const shown = [...document.querySelectorAll(`.column[data-status="${status}"] .task-title`)];
             return JSON.stringify(shown.map((node) => node.textContent)) === JSON.stringify(titles);
           })""",
        arg=expected,
        timeout=timeout,
    )
    assert board(page) == expected


def task_messages(page):
    """``(seq, event, fields)`` of every ``board`` message the page's client delivered (conftest's recorder)."""
    frames = page.evaluate("__delivered")
    return [
        (frame["seq"], frame["payload"]["event"], frame["payload"]["fields"])
        for frame in frames
        if frame["stream"] == "board" and frame["type"].startswith("demo.task.")
    ]


def card(page, title):
    return page.locator(".task", has=page.locator(".task-title", has_text=title))


def test_edits_in_one_tab_show_live_in_the_other(tabs):
    first, second = tabs()
    empty = {"todo": [], "doing": [], "done": []}
    assert board(second) == empty

    first.fill("#new-task input[name=title]", "Write the release notes")
    first.press("#new-task input[name=title]", "Enter")
    wait_for_board(second, {"todo": ["Write the release notes"], "doing": [], "done": []})
    assert first.input_value("#new-task input[name=title]") == ""

    card(first, "Write the release notes").locator("[data-action=forward]").click()
    wait_for_board(second, {"todo": [], "doing": ["Write the release notes"], "done": []})

    card(first, "Write the release notes").locator("[data-action=rename]").click()
    first.fill(".task-rename", "Publish the release notes")
    first.press(".task-rename", "Enter")
    wait_for_board(second, {"todo": [], "doing": ["Publish the release notes"], "done": []})

    card(first, "Publish the release notes").locator("[data-action=delete]").click()
    wait_for_board(second, empty)
    wait_for_board(first, empty)

    # One message per edit, each applied once, without reloading either page.
    assert not Task.objects.exists()
    for page in (first, second):
        assert [(event, fields) for _, event, fields in task_messages(page)] == [
            ("created", {"title": "Write the release notes", "status": "todo"}),
            ("updated", {"status": "doing"}),
            ("updated", {"title": "Publish the release notes"}),
            ("deleted", {"title": "Publish the release notes", "status": "doing"}),
        ]
        assert page.evaluate("window.__sameDocument") is True
        assert page.page_errors == []


def test_admin_edits_show_live_in_every_tab(tabs, worker):
    staff = User.objects.create_user("dana", password="unused-password", is_staff=True, is_superuser=True)
    worker(Task.objects.create, title="Book the venue")
    worker(Task.objects.create, title="Order the cake", status="doing")
    pages = tabs()
    for page in pages:
        # Rendered by the server, before any message.
        assert board(page) == {"todo": ["Book the venue"], "doing": ["Order the cake"], "done": []}

    admin = Client()
    admin.force_login(staff)
    venue = Task.objects.get(title="Book the venue")
    change = {"title": "Venue booked", "status": "done", "_save": "Save"}
    response = worker(admin.post, f"/admin/demo/task/{venue.pk}/change/", change)
    assert response.status_code == 302, response.content.decode()[:2000]
    for page in pages:
        wait_for_board(page, {"todo": [], "doing": ["Order the cake"], "done": ["Venue booked"]})
    ARTIFACTS.mkdir(exist_ok=True)
    pages[0].screenshot(path=str(ARTIFACTS / "board.png"))

    cake = Task.objects.get(title="Order the cake")
    response = worker(admin.post, f"/admin/demo/task/{cake.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    for page in pages:
        wait_for_board(page, {"todo": [], "doing": [], "done": ["Venue booked"]})
        assert page.evaluate("window.__sameDocument") is True


class Rollback(Exception):
    pass


def test_rolled_back_edits_show_nowhere(tabs, worker, user):
    task = worker(Task.objects.create, title="Keep me")
    first, second = tabs(as_user=user)  # the same user in two tabs

    def edit_and_roll_back():
        with suppress(Rollback), transaction.atomic():
            Task.objects.create(title="Never created")
            changed = Task.objects.get(pk=task.pk)
            changed.title, changed.status = "Never renamed", "done"
            changed.save()
            raise Rollback

    worker(edit_and_roll_back)
    worker(Task.objects.create, title="Created after the rollback")
    for page in (first, second):
        wait_for_board(page, {"todo": ["Keep me", "Created after the rollback"], "doing": [], "done": []})
        assert [event for _, event, _ in task_messages(page)] == ["created"]
        assert "Never" not in page.content()


def test_resync_reloads_the_board(tabs, worker):
    worker(Task.objects.create, title="Water the plants")
    first, second = tabs()
    # A change no signal reports, then a reset of the stream's history: the
    # pages are told to resync and fetch the board again.
    worker(Task.objects.filter(title="Water the plants").update, title="Plants watered", status="done")
    assert worker(realtime.reset_stream, "board") is True
    for page in (first, second):
        wait_for_board(page, {"todo": [], "doing": [], "done": ["Plants watered"]})

    # Seqs start again after the reset, and the page follows them.
    worker(Task.objects.create, title="Buy new plants")
    for page in (first, second):
        wait_for_board(page, {"todo": ["Buy new plants"], "doing": [], "done": ["Plants watered"]})
        assert page.evaluate("window.__sameDocument") is True


def test_changes_between_rendering_and_connecting_are_fetched(live, open_page, worker, redis_layer_settings):
    server = live()
    page = open_page(server, path="/board/")
    page.wait_for_selector("#connection[data-state=open]")

    def add_task_then_load(route):
        # The page is rendered; its script, and so its subscription, is not there yet.
        worker(Task.objects.create, title="Added before the page connected")
        route.continue_()

    page.context.route("**/static/board.js", add_task_then_load)
    page.reload()
    wait_for_board(page, {"todo": ["Added before the page connected"], "doing": [], "done": []})
    assert task_messages(page) == []
