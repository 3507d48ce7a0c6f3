"""The demo board's views and read rule (the live part is tests/browser/test_board.py)."""

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client

from project.models import Task
from project.realtime_hooks import authorize
from realtime.testing import capture_notifications

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="unused-password")


@pytest.fixture
def client(alice):
    client = Client()
    client.force_login(alice)
    return client


def pushed(sent):
    return [(n.stream, n.type, n.payload["fields"]) for n in sent]


def test_the_board_needs_a_login():
    assert Client().get("/board/").url.startswith("/login/")
    assert Client().get("/board/state/").status_code == 302
    assert Client().post("/board/tasks/", {"title": "x"}).status_code == 302
    assert not Task.objects.exists()


def test_page_and_state_show_the_tasks_and_the_seq_they_include(client):
    Task.objects.create(title="Book the venue", status="doing")
    page = client.get("/board/")
    assert page.status_code == 200
    assert page.context["seq"] == 1
    assert b"Book the venue" in page.content
    state = client.get("/board/state/").json()
    task = {"pk": Task.objects.get().pk, "title": "Book the venue", "status": "doing"}
    assert state == {"seq": 1, "tasks": [task]}


def test_create_answers_json_to_the_script_and_redirects_a_form(client):
    with capture_notifications() as sent:
        response = client.post("/board/tasks/", {"title": "  Order the cake "}, **JSON)
        assert client.post("/board/tasks/", {"title": "Send invites"}).url == "/board/"
    task = Task.objects.get(title="Order the cake")
    assert response.status_code == 201
    assert response.json() == {"pk": task.pk, "title": "Order the cake", "status": "todo"}
    assert pushed(sent) == [
        ("board", "demo.task.created", {"title": "Order the cake", "status": "todo"}),
        ("board", "demo.task.created", {"title": "Send invites", "status": "todo"}),
    ]


def test_invalid_edits_are_refused_and_push_nothing(client):
    task = Task.objects.create(title="Book the venue")
    with capture_notifications() as sent:
        blank = client.post("/board/tasks/", {"title": "  "}, **JSON)
        bad_status = client.post(f"/board/tasks/{task.pk}/", {"status": "someday"}, **JSON)
        nothing = client.post(f"/board/tasks/{task.pk}/", {}, **JSON)
        page = client.post("/board/tasks/", {"title": ""})
        missing = client.post("/board/tasks/999/", {"status": "done"}, **JSON)
    assert blank.status_code == 400 and "title" in blank.json()["errors"]
    assert bad_status.status_code == 400 and "status" in bad_status.json()["errors"]
    assert nothing.status_code == 400
    assert page.status_code == 400 and b"Give the task a title." in page.content
    assert missing.status_code == 404
    assert sent == []


def test_moves_and_renames_push_only_what_changed(client):
    task = Task.objects.create(title="Book the venue")
    with capture_notifications() as sent:
        client.post(f"/board/tasks/{task.pk}/", {"status": "doing"}, **JSON)
        client.post(f"/board/tasks/{task.pk}/", {"title": "Venue booked", "status": "doing"}, **JSON)
        client.post(f"/board/tasks/{task.pk}/", {"title": "Venue booked"}, **JSON)
        assert client.post(f"/board/tasks/{task.pk}/delete/").url == "/board/"
    assert pushed(sent) == [
        ("board", "demo.task.updated", {"status": "doing"}),
        ("board", "demo.task.updated", {"title": "Venue booked"}),
        ("board", "demo.task.deleted", {"title": "Venue booked", "status": "doing"}),
    ]
    assert not Task.objects.exists()


def test_posts_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/board/tasks/", {"title": "x"}, **JSON).status_code == 403
    assert not Task.objects.exists()


def test_signed_in_users_may_read_the_board_and_the_default_rules_stay(alice):
    bob = User.objects.create_user("bob", password="unused-password")
    assert authorize(alice, "board") is True
    assert authorize(AnonymousUser(), "board") is False
    assert authorize(None, "board") is False
    assert authorize(alice, f"user:{alice.pk}") is True
    assert authorize(alice, f"user:{bob.pk}") is False
    assert authorize(alice, "staff") is False
    assert authorize(AnonymousUser(), "broadcast") is True
