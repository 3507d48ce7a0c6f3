"""The HTTP publish API's batch form: ``{"messages": [...]}``, published all or nothing."""

import json
import os
import shutil
import subprocess
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime.models import Message
from realtime.testing import capture_notifications
from tests.test_publish import doc_block, failing_queries, make_token, post, stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_rate_counters():
    cache.clear()
    yield
    cache.clear()


#: The plainest valid item.
ORDERS = {"stream": "orders", "type": "x"}


def batch(*items):
    return {"messages": list(items)}


def test_batch_answers_202_with_one_result_per_item_in_order(client):
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    _obj, token = make_token()
    body = batch(
        {"stream": "orders", "type": "order.shipped", "payload": {"order": 17}},
        {"user": "alice", "type": "order.shipped", "payload": {"order": 17}},
        {"stream": "orders", "type": "order.shipped", "payload": {"order": 18}},
        {"user": bob.pk, "type": "order.shipped", "payload": {"order": 18}},
        {"stream": "project:3", "type": "x"},
        {"stream": "orders", "type": "order.paid", "payload": {"order": 19}},
        {"user": str(alice.pk), "type": "hello"},
    )
    with capture_notifications() as sent:
        response = post(client, body, token)
    assert response.status_code == 202, response.json()
    results = response.json()["results"]
    assert [(r["stream"], r["seq"], r["created"]) for r in results] == [
        ("orders", 1, True),
        (f"user:{alice.pk}", 1, True),
        ("orders", 2, True),
        (f"user:{bob.pk}", 1, True),
        ("project:3", 1, True),
        ("orders", 3, True),
        (f"user:{alice.pk}", 2, True),
    ]
    assert len({r["id"] for r in results}) == 7
    assert stored("orders") == [
        (1, "order.shipped", {"order": 17}),
        (2, "order.shipped", {"order": 18}),
        (3, "order.paid", {"order": 19}),
    ]
    assert stored(f"user:{alice.pk}") == [(1, "order.shipped", {"order": 17}), (2, "hello", {})]
    assert sorted((n.stream, n.seq, n.id) for n in sent) == sorted(
        (r["stream"], r["seq"], r["id"]) for r in results
    )


def test_seqs_continue_each_stream_without_gaps(client):
    _obj, token = make_token()
    assert post(client, {"stream": "orders", "type": "x"}, token).json()["seq"] == 1
    project = {"stream": "project:1", "type": "x"}
    first = post(client, batch(ORDERS, ORDERS, ORDERS, project), token)
    second = post(client, batch(project, ORDERS), token)
    assert [r["seq"] for r in first.json()["results"]] == [2, 3, 4, 1]
    assert [r["seq"] for r in second.json()["results"]] == [2, 5]
    assert [seq for seq, _t, _p in stored("orders")] == [1, 2, 3, 4, 5]


def test_retrying_the_same_batch_returns_the_same_seqs_and_stores_nothing(client):
    User.objects.create_user("alice")
    _obj, token = make_token()
    body = batch(
        {"stream": "orders", "type": "order.shipped", "payload": {"order": 17}, "idempotency_key": "o17"},
        {"user": "alice", "type": "order.shipped", "payload": {"order": 17}, "idempotency_key": "o17"},
        {"stream": "orders", "type": "order.shipped", "payload": {"order": 18}, "idempotency_key": "o18"},
    )
    with capture_notifications() as sent:
        first = post(client, body, token)
    with capture_notifications() as again:
        second = post(client, body, token)
    assert (first.status_code, second.status_code) == (202, 202)
    one, two = first.json()["results"], second.json()["results"]
    assert [r["created"] for r in one] == [True] * 3 and [r["created"] for r in two] == [False] * 3
    strip = lambda results: [(r["stream"], r["seq"], r["id"]) for r in results]  # noqa: E731
    assert strip(one) == strip(two)
    assert Message.objects.count() == 3
    assert len(sent) == 3 and len(again) == 0


def test_a_retry_with_new_items_stores_only_the_new_ones(client):
    _obj, token = make_token()
    post(client, batch({"stream": "orders", "type": "x", "idempotency_key": "a"}), token)
    response = post(
        client,
        batch(
            {"stream": "orders", "type": "x", "idempotency_key": "a"},
            {"stream": "orders", "type": "x", "idempotency_key": "b"},
        ),
        token,
    )
    assert [(r["seq"], r["created"]) for r in response.json()["results"]] == [(1, False), (2, True)]


def test_one_key_twice_in_a_batch_is_one_message(client):
    _obj, token = make_token()
    response = post(
        client,
        batch(
            {"stream": "orders", "type": "x", "idempotency_key": "k"},
            {"stream": "project:1", "type": "x", "idempotency_key": "k"},
            {"stream": "orders", "type": "x", "idempotency_key": "k"},
        ),
        token,
    )
    results = response.json()["results"]
    assert [(r["stream"], r["seq"], r["created"]) for r in results] == [
        ("orders", 1, True),
        ("project:1", 1, True),
        ("orders", 1, False),
    ]
    assert results[0]["id"] == results[2]["id"]
    assert Message.objects.count() == 2


def test_an_ephemeral_item_is_pushed_not_stored(client):
    _obj, token = make_token()
    with capture_notifications() as sent:
        response = post(
            client,
            batch(
                {"stream": "orders", "type": "order.shipped"},
                {"stream": "orders", "type": "typing", "ephemeral": True},
                {"stream": "orders", "type": "order.paid"},
            ),
            token,
        )
    assert response.status_code == 202
    results = response.json()["results"]
    assert [(r["seq"], r["created"]) for r in results] == [(1, True), (None, True), (2, True)]
    assert stored("orders") == [(1, "order.shipped", {}), (2, "order.paid", {})]
    assert sorted((n.type, n.seq) for n in sent if n.seq is None) == [("typing", None)]
    assert len(sent) == 3


# Invalid batches: 400, every fault named by its item, nothing stored ---------


@pytest.fixture
def earlier_message(client):
    """One message stored before the test's batch, so "nothing stored" is measured, not assumed."""
    _obj, token = make_token()
    assert post(client, ORDERS, token).status_code == 202
    return token


def refused(client, body, token, status=400):
    before = Message.objects.count()
    with capture_notifications() as sent:
        response = post(client, body, token)
    assert response.status_code == status, response.json()
    assert Message.objects.count() == before
    assert list(sent) == []
    return response.json()


def test_invalid_items_are_400_keyed_by_their_path(client, earlier_message):
    answer = refused(
        client,
        batch(
            {"stream": "bad name!", "type": "x"},
            {"stream": "orders", "type": "x"},
            {"stream": "orders", "type": "x", "paylod": {}},
            {"stream": "orders", "type": "x", "payload": [1]},
            "not an object",
            {"user": "a\x00b", "type": "welcome", "ephemeral": True, "idempotency_key": "k"},
        ),
        earlier_message,
    )
    assert answer["error"] == "invalid"
    assert answer["message"] == "The batch cannot be published; nothing was stored."
    assert answer["fields"] == {
        "messages[0].stream": [
            "Stream name 'bad name!' is invalid: use 1-150 characters from A-Z a-z 0-9 _ . : @ -"
        ],
        "messages[2].paylod": ["Unknown field."],
        "messages[3].payload": ["The payload must be a JSON object."],
        "messages[4]": ["Must be a JSON object."],
        "messages[5].user": ["Must not contain NUL characters."],
        "messages[5].type": [answer["fields"]["messages[5].type"][0]],
        "messages[5].idempotency_key": ["Ephemeral messages are not stored, so they cannot be idempotent."],
    }
    assert "reserved" in answer["fields"]["messages[5].type"][0]


def test_payload_errors_found_while_encoding_name_the_item(client, earlier_message):
    deep = json.loads("[" * 200 + "]" * 200)
    answer = refused(
        client,
        batch({"stream": "orders", "type": "x"}, {"stream": "orders", "type": "x", "payload": {"a": deep}}),
        earlier_message,
    )
    [(field, [text])] = answer["fields"].items()
    assert field == "messages[1].payload"
    assert "nested more than" in text and not text.startswith("messages[")


def test_a_message_too_large_names_the_item(client, earlier_message, settings):
    settings.REALTIME = {"MAX_MESSAGE_SIZE": 300}
    answer = refused(
        client,
        batch(
            {"stream": "orders", "type": "x"},
            {"stream": "orders", "type": "x"},
            {"stream": "orders", "type": "x", "payload": {"text": "y" * 500}},
        ),
        earlier_message,
    )
    [(field, [text])] = answer["fields"].items()
    assert field == "messages[2]" and "MAX_MESSAGE_SIZE" in text


SURROGATE = "Must not contain unpaired surrogates (U+D800 to U+DFFF)."


@pytest.mark.parametrize(
    "body, fields",
    [
        ('{"user": "al\\ud800ice", "type": "x"}', {"user": [SURROGATE]}),
        ('{"stream": "orders", "type": "x", "idempotency_key": "\\udfff"}', {"idempotency_key": [SURROGATE]}),
        (
            '{"messages": [{"stream": "orders", "type": "x"}, {"user": "\\ud800", "type": "x"}]}',
            {"messages[1].user": [SURROGATE]},
        ),
        (
            '{"messages": [{"stream": "orders", "type": "x", "idempotency_key": "k\\ud800"}]}',
            {"messages[0].idempotency_key": [SURROGATE]},
        ),
    ],
)
def test_strings_without_a_utf8_encoding_are_400_not_500(client, earlier_message, body, fields):
    """JSON can spell lone surrogates; the database driver cannot encode them."""
    User.objects.create_user("alice")
    assert refused(client, body, earlier_message)["fields"] == fields


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"messages": []}, {"messages": ["Give at least one message."]}),
        ({"messages": {"stream": "orders"}}, {"messages": ["Must be a list of messages."]}),
        ({"messages": None}, {"messages": ["Must be a list of messages."]}),
        (
            {"messages": [{"stream": "orders", "type": "x"}], "stream": "orders"},
            {"stream": ["Unknown field."]},
        ),
    ],
)
def test_malformed_batches_are_400(client, earlier_message, body, fields):
    assert refused(client, body, earlier_message)["fields"] == fields


def test_more_than_publish_max_batch_is_400(client, settings):
    settings.REALTIME = {"PUBLISH_MAX_BATCH": 3}
    _obj, token = make_token()
    answer = refused(client, batch(*[ORDERS] * 4), token)
    assert answer["fields"] == {"messages": ["Send at most 3 messages per request (PUBLISH_MAX_BATCH)."]}
    assert post(client, batch(*[ORDERS] * 3), token).status_code == 202


def test_a_full_default_batch_fits_the_default_body_limit(client, settings):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": None}
    User.objects.create_user("alice")
    _obj, token = make_token()
    item = {
        "user": "alice",
        "type": "order.shipped",
        "payload": {"order": 123456, "carrier": "DHL", "tracking": "JJD000390007982", "note": "x" * 60},
        "idempotency_key": "order-123456-shipped-0000",
    }
    body = json.dumps(batch(*[{**item, "idempotency_key": f"order-{i}"} for i in range(1000)]))
    assert len(body) > 200_000
    response = post(client, body, token)
    assert response.status_code == 202, response.json()
    assert len(response.json()["results"]) == 1000
    assert Message.objects.count() == 1000


def test_the_body_limit_still_applies_to_batches(client, settings):
    settings.REALTIME = {"PUBLISH_MAX_BODY": 1000}
    _obj, token = make_token()
    answer = refused(client, batch(*[ORDERS] * 40), token, status=413)
    assert answer["error"] == "too_large"


# Forbidden targets: 403, every one named, nothing stored ----------------------


def test_a_forbidden_target_is_403_naming_the_item(client, earlier_message):
    User.objects.create_user("alice")
    answer = refused(
        client,
        batch(
            {"stream": "orders", "type": "x"},
            {"stream": "staff", "type": "x"},
            {"user": "alice", "type": "x"},
            {"user": "nobody", "type": "x"},
        ),
        earlier_message,
        status=403,
    )
    assert answer == {
        "error": "forbidden",
        "message": (
            "This token may not publish to the targets of messages[1], messages[3]; nothing was published."
        ),
        "fields": {
            "messages[1].stream": ["This token may not publish to stream 'staff'."],
            "messages[3].user": ["This token may not publish to that target."],
        },
    }


def test_unknown_and_forbidden_users_answer_alike_in_a_batch(client):
    User.objects.create_user("alice")
    _obj, orders_only = make_token("orders\nproject:*", name="orders-only")
    answers = [
        refused(client, batch(ORDERS, {"user": user, "type": "x"}), orders_only, status=403)
        for user in ("alice", "nobody", 10**30, "\u00b2")
    ]
    assert len({json.dumps(answer) for answer in answers}) == 1
    assert answers[0]["fields"] == {"messages[1].user": ["This token may not publish to that target."]}


def test_a_batch_looks_all_its_users_up_with_one_query(client):
    users = [User.objects.create_user(f"user{i}") for i in range(30)]
    User.objects.create_user(str(users[3].pk + 10_000))  # a username made of digits
    _obj, token = make_token()
    items = [{"user": u.username, "type": "x"} for u in users[:10]]
    items += [{"user": u.pk, "type": "x"} for u in users[10:20]]
    items += [{"user": str(u.pk), "type": "x"} for u in users[20:]]
    items.append({"user": str(users[3].pk + 10_000), "type": "x"})
    with CaptureQueriesContext(connection) as queries:
        response = post(client, batch(*items), token)
    assert response.status_code == 202, response.json()
    assert len([q for q in queries if '"auth_user"' in q["sql"]]) == 1
    streams = [r["stream"] for r in response.json()["results"]]
    digits_user = User.objects.get(username=str(users[3].pk + 10_000))
    assert streams == [f"user:{u.pk}" for u in users] + [f"user:{digits_user.pk}"]
    # Refused batches too: the same one query, whichever users exist.
    with CaptureQueriesContext(connection) as queries:
        unknown = [{"user": "nobody", "type": "x"}, {"user": 99_999, "type": "x"}]
        refused(client, batch(*items, *unknown), token, status=403)
    assert len([q for q in queries if '"auth_user"' in q["sql"]]) == 1


# Rate limits: a batch counts one per message ----------------------------------


def test_a_batch_counts_one_per_message_against_the_rate_limit(client, settings):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": 10, "PUBLISH_RATE_WINDOW": 60}
    _obj, token = make_token(name="a")
    _other, other_token = make_token(name="b")
    four = batch(*[ORDERS] * 4)
    with mock.patch("realtime.views.time.time", return_value=6000.0):
        assert [post(client, four, token).status_code for _ in range(2)] == [202, 202]
        limited = post(client, four, token)
        assert limited.status_code == 429
        assert limited.json() == {
            "error": "rate_limited",
            "message": "This batch would exceed the token's rate limit; retry later.",
        }
        assert limited["Retry-After"] == "60"
        # The refused batch counted as one request only: one message still fits.
        assert post(client, ORDERS, token).status_code == 202
        assert post(client, ORDERS, token).status_code == 429
        assert post(client, four, other_token).status_code == 202
    with mock.patch("realtime.views.time.time", return_value=6060.0):
        assert post(client, four, token).status_code == 202
    assert len(stored("orders")) == 4 + 4 + 1 + 4 + 4


def test_a_batch_larger_than_the_rate_limit_is_400_not_429(client, settings):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": 5}
    _obj, token = make_token()
    answer = refused(client, batch(*[ORDERS] * 6), token)
    assert answer["fields"] == {
        "messages": [
            "Send at most 5 messages per request: "
            "this token may publish no more per window (PUBLISH_RATE_LIMIT)."
        ]
    }
    assert post(client, batch(*[ORDERS] * 4), token).status_code == 202


# Failures of the server itself -------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", ["realtime_stream", "realtime_message"])
def test_database_outage_is_503_and_stores_nothing(client, settings, caplog, table):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": 5, "PUBLISH_RATE_WINDOW": 3600}
    User.objects.create_user("alice")
    _obj, token = make_token()
    five = batch(*[ORDERS] * 3, *[{"user": "alice", "type": "x"}] * 2)
    with caplog.at_level("WARNING", logger="realtime"), failing_queries(table):
        with capture_notifications() as sent:
            response = post(client, five, token)
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable", "message": "The database is unavailable; retry later."}
    assert response["Retry-After"] == "5"
    assert Message.objects.count() == 0 and list(sent) == []
    # The failed batch counted one request, not five: four messages still fit.
    response = post(client, batch(*[ORDERS] * 4), token)
    assert response.status_code == 202
    assert [r["seq"] for r in response.json()["results"]] == [1, 2, 3, 4]


def test_unexpected_error_is_json_500(client, caplog):
    _obj, token = make_token()
    with caplog.at_level("WARNING", logger="realtime"):
        with mock.patch("realtime.views.notify_many", side_effect=RuntimeError("boom")):
            response = post(client, batch({"stream": "orders", "type": "x"}), token)
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    [record] = [r for r in caplog.records if r.name == "realtime"]
    assert record.levelname == "ERROR" and record.exc_info[1].args == ("boom",)


def test_publish_max_batch_is_validated(settings):
    from realtime.conf import get_config
    from realtime.exceptions import RealtimeConfigError

    for value in (0, "10", None, True):
        settings.REALTIME = {"PUBLISH_MAX_BATCH": value}
        with pytest.raises(RealtimeConfigError, match=r'\["PUBLISH_MAX_BATCH"\] must be a positive integer'):
            get_config()


# The documented example, run against a live daphne ---------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_documented_batch_curl_command_publishes_and_retries(daphne_factory):
    assert shutil.which("curl"), "curl is not installed: apt-get install curl"
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    _obj, token = make_token()
    server = daphne_factory()
    command = doc_block("sh", '"messages"').replace("http://127.0.0.1:8000", server.url)
    answers = []
    for _ in range(2):
        result = subprocess.run(
            ["bash", "-c", command],
            env={**os.environ, "REALTIME_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        answers.append(json.loads(result.stdout))
    first, again = ([(r["stream"], r["seq"], r["created"]) for r in a["results"]] for a in answers)
    assert first == [
        ("orders", 1, True),
        (f"user:{alice.pk}", 1, True),
        ("orders", 2, True),
        (f"user:{bob.pk}", 1, True),
    ], server.output()
    assert again == [(stream, seq, False) for stream, seq, _created in first]
    assert [r["id"] for r in answers[0]["results"]] == [r["id"] for r in answers[1]["results"]]
    assert stored("orders") == [(1, "order.shipped", {"order": 17}), (2, "order.shipped", {"order": 18})]
    assert Message.objects.count() == 4
