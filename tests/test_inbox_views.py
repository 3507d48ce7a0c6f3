"""The inbox's JSON endpoints: session and CSRF like any form, JSON for every answer."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from realtime import notify

pytestmark = pytest.mark.django_db

JSON = {"content_type": "application/json"}


@pytest.fixture
def ann():
    return User.objects.create_user("ann", password="unused-password")


@pytest.fixture
def browser(ann):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    client.get("/")  # a page sets the csrftoken cookie
    return client


def csrf(client):
    return {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


def test_page_count_read_archive_read_all(browser, ann):
    first = notify(ann, "mention", {"title": "one"}, inbox=True)
    second = notify("broadcast", "notice", {"title": "two"}, inbox=True)
    page = browser.get("/realtime/inbox/").json()
    assert [i["payload"]["title"] for i in page["items"]] == ["two", "one"]
    assert page["unread"]["total"] == 2 and page["next"] is None
    assert browser.get("/realtime/inbox/count").json()["total"] == 2
    body = json.dumps({"items": [{"stream": first.stream, "seq": first.seq}]})
    assert browser.post("/realtime/inbox/read", body, **JSON, **csrf(browser)).json()["total"] == 1
    body = json.dumps({"items": [{"stream": "broadcast", "seq": second.seq}]})
    assert browser.post("/realtime/inbox/archive", body, **JSON, **csrf(browser)).json()["total"] == 0
    assert [i["payload"]["title"] for i in browser.get("/realtime/inbox/").json()["items"]] == ["one"]
    notify(ann, "mention", {}, inbox=True)
    assert browser.post("/realtime/inbox/read-all", "{}", **JSON, **csrf(browser)).json()["total"] == 0


def test_changes_need_the_csrf_token(browser, ann):
    result = notify(ann, "mention", {}, inbox=True)
    body = json.dumps({"items": [{"stream": result.stream, "seq": result.seq}]})
    assert browser.post("/realtime/inbox/read", body, **JSON).status_code == 403
    assert browser.get("/realtime/inbox/count").json()["total"] == 1


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/realtime/inbox/read", "not json", 400, "invalid"),
        ("/realtime/inbox/read", '{"items": [{"stream": "user:999999", "seq": 1}]}', 403, "unknown_stream"),
        ("/realtime/inbox/read", '{"items": [{"stream": "broadcast", "seq": 99}]}', 400, "not_an_item"),
        ("/realtime/inbox/read-all", '{"stream": "orders"}', 403, "unknown_stream"),
    ],
)
def test_bad_requests_answer_json_and_change_nothing(browser, ann, path, body, status, code):
    notify("broadcast", "notice", {}, inbox=True)
    response = browser.post(path, body, **JSON, **csrf(browser))
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert browser.get("/realtime/inbox/count").json()["total"] == 1


def test_anonymous_and_wrong_methods_answer_json(browser):
    anonymous = Client()
    response = anonymous.get("/realtime/inbox/count")
    assert (response.status_code, response.json()["error"]) == (403, "anonymous")
    response = browser.get("/realtime/inbox/read")
    assert (response.status_code, response["Allow"]) == (405, "POST")
    assert browser.get("/realtime/inbox/?limit=x").status_code == 400
    assert browser.get("/realtime/inbox/?before=garbage").json()["error"] == "invalid"
