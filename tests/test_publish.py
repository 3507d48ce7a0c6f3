"""The HTTP publish API: tokens, scopes, every status code, and the documented examples."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.cache.backends.base import BaseCache
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from realtime import tokens
from realtime.models import Message, PublishToken
from realtime.testing import capture_notifications

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parent.parent / "docs" / "publishing.md"
URL = "/realtime/api/publish"


@pytest.fixture(autouse=True)
def _clear_rate_counters():
    cache.clear()
    yield
    cache.clear()


def make_token(patterns="orders\nproject:*\nuser:*", name="shop", active=True):
    obj = PublishToken(name=name, streams=patterns, active=active)
    secret = tokens.issue(obj)
    obj.save()
    return obj, secret


def post(client, body, token=None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", **headers, **extra)


def stored(stream):
    return [(m.seq, m.type, m.payload) for m in Message.objects.filter(stream__name=stream)]


def test_url_name():
    assert reverse("realtime:publish") == URL


def test_publish_to_stream_answers_202_and_stores_and_pushes(client):
    _obj, token = make_token()
    with capture_notifications() as sent:
        response = post(
            client, {"stream": "orders", "type": "order.shipped", "payload": {"order": 17}}, token
        )
    assert response.status_code == 202
    body = response.json()
    assert body["stream"] == "orders" and body["seq"] == 1 and body["created"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert stored("orders") == [(1, "order.shipped", {"order": 17})]
    assert [(n.stream, n.seq, n.id, n.payload) for n in sent] == [("orders", 1, body["id"], {"order": 17})]


def test_user_by_pk_and_by_username(client):
    alice = User.objects.create_user("alice")
    _obj, token = make_token()
    by_pk = post(client, {"user": alice.pk, "type": "hello"}, token)
    by_name = post(client, {"user": "alice", "type": "hello"}, token)
    by_pk_string = post(client, {"user": str(alice.pk), "type": "hello"}, token)
    assert [r.status_code for r in (by_pk, by_name, by_pk_string)] == [202, 202, 202]
    assert {r.json()["stream"] for r in (by_pk, by_name, by_pk_string)} == {f"user:{alice.pk}"}
    assert [seq for seq, _t, _p in stored(f"user:{alice.pk}")] == [1, 2, 3]


def answer_and_queries(client, body, token):
    with CaptureQueriesContext(connection) as queries:
        response = post(client, body, token)
    return response.status_code, response.json(), len(queries)


def test_unknown_user_and_forbidden_user_answer_alike(client):
    """A token holder cannot tell from the answer, or the work done, whether a user exists."""
    alice = User.objects.create_user("alice")
    User.objects.create_user("42")
    _scoped, orders_only = make_token("orders", name="orders-only")
    _all, any_user = make_token("user:*", name="any-user")
    # Recently used, so authenticating costs the same query count every time below.
    PublishToken.objects.update(last_used_at=timezone.now())
    forbidden = {"error": "forbidden", "message": "This token may not publish to that target."}
    answers = [
        answer_and_queries(client, {"user": user, "type": "hello"}, token)
        for user, token in [
            ("alice", orders_only),  # exists, not allowed
            ("nobody", any_user),  # allowed pattern, no such user
            ("nobody", orders_only),  # neither
            (alice.pk, orders_only),
            (alice.pk + 1000, any_user),
            (str(alice.pk), orders_only),
            (str(alice.pk + 1000), any_user),
            ("42", orders_only),  # a username made of digits
        ]
    ]
    assert {(status, json.dumps(body)) for status, body, _n in answers} == {(403, json.dumps(forbidden))}
    # Token lookup plus one user lookup, whichever the case.
    assert {queries for _s, _b, queries in answers} == {2}
    assert Message.objects.count() == 0


def test_digits_name_a_username_before_a_pk(client):
    alice = User.objects.create_user("alice")
    digits = User.objects.create_user(str(alice.pk))
    _obj, token = make_token()
    response = post(client, {"user": str(alice.pk), "type": "hello"}, token)
    assert response.json()["stream"] == f"user:{digits.pk}"


@pytest.mark.parametrize(
    "user, message",
    [
        ("", "Give a primary key (a number) or a username (a non-empty string)."),
        (True, "Give a primary key (a number) or a username (a non-empty string)."),
        (1.5, "Give a primary key (a number) or a username (a non-empty string)."),
        (None, "Give a primary key (a number) or a username (a non-empty string)."),
        ([1], "Give a primary key (a number) or a username (a non-empty string)."),
        ({"pk": 1}, "Give a primary key (a number) or a username (a non-empty string)."),
        ("al\x00ice", "Must not contain NUL characters."),
    ],
)
def test_malformed_user_is_a_field_error(client, user, message):
    User.objects.create_user("alice")
    _obj, token = make_token()
    response = post(client, {"user": user, "type": "hello"}, token)
    assert response.status_code == 400
    assert response.json()["fields"] == {"user": [message]}


@pytest.mark.parametrize("user", [10**30, "1" * 5000, "\u00b2", "\u0661"])
def test_out_of_range_or_odd_digit_users_are_unknown(client, user):
    _obj, token = make_token()
    response = post(client, {"user": user, "type": "hello"}, token)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_ephemeral_is_pushed_not_stored(client):
    _obj, token = make_token()
    with capture_notifications() as sent:
        response = post(client, {"stream": "orders", "type": "typing", "ephemeral": True}, token)
    assert response.status_code == 202
    assert response.json()["seq"] is None
    assert stored("orders") == []
    assert [(n.stream, n.seq) for n in sent] == [("orders", None)]


def test_retries_with_one_idempotency_key_create_one_message(client):
    _obj, token = make_token()
    body = {
        "stream": "orders",
        "type": "order.paid",
        "payload": {"order": 3},
        "idempotency_key": "order-3-paid",
    }
    with capture_notifications() as sent:
        first = post(client, body, token)
        second = post(client, body, token)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["created"] is True and second.json()["created"] is False
    assert (first.json()["seq"], first.json()["id"]) == (second.json()["seq"], second.json()["id"])
    assert stored("orders") == [(1, "order.paid", {"order": 3})]
    assert len(sent) == 1


@pytest.mark.parametrize(
    "body, fields",
    [
        ("not json", {"body"}),
        ("[1, 2]", {"body"}),
        ({"type": "x"}, {"stream"}),
        ({"stream": "orders", "user": 1, "type": "x"}, {"stream"}),
        ({"stream": "bad name!", "type": "x"}, {"stream"}),
        ({"stream": "orders"}, {"type"}),
        ({"stream": "orders", "type": "welcome"}, {"type"}),
        ({"stream": "orders", "type": "x", "payload": [1]}, {"payload"}),
        ({"stream": "orders", "type": "x", "payload": {"n": 1}, "paylod": {}}, {"paylod"}),
        ({"stream": "orders", "type": "x", "ephemeral": "yes"}, {"ephemeral"}),
        ({"stream": "orders", "type": "x", "idempotency_key": ""}, {"idempotency_key"}),
        ({"stream": "orders", "type": "x", "ephemeral": True, "idempotency_key": "k"}, {"idempotency_key"}),
        ({"stream": "orders", "type": "x", "idempotency_key": "a\x00b"}, {"idempotency_key"}),
        ({"stream": "user:1\n", "type": "x"}, {"stream"}),
        ({"stream": "orders\n", "type": "x"}, {"stream"}),
        ({"stream": "orders", "type": "x\n"}, {"type"}),
    ],
)
def test_bad_envelope_is_400_with_field_errors(client, body, fields):
    _obj, token = make_token()
    response = post(client, body, token)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "invalid"
    assert set(data["fields"]) == fields
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"stream": "orders", "type": "x", "payload": {"a": ' + "[" * 20_000 + "]" * 20_000 + "}}",
        '{"a": ' * 20_000,
    ],
)
def test_deep_nesting_is_400_not_a_crash(client, body):
    _obj, token = make_token()
    response = post(client, body, token)
    assert response.status_code == 400
    assert response.json()["fields"] == {"body": ["The body must be a JSON object."]}


def test_nesting_within_the_stack_is_refused_by_the_envelope(client):
    _obj, token = make_token()
    deep = json.loads("[" * 200 + "]" * 200)
    response = post(client, {"stream": "orders", "type": "x", "payload": {"a": deep}}, token)
    assert response.status_code == 400
    assert "nested more than" in response.json()["fields"]["payload"][0]


def test_envelope_error_from_notify_is_400(client, settings):
    settings.REALTIME = {"MAX_MESSAGE_SIZE": 200}
    _obj, token = make_token()
    response = post(client, {"stream": "orders", "type": "x", "payload": {"text": "y" * 500}}, token)
    assert response.status_code == 400
    assert "MAX_MESSAGE_SIZE" in response.json()["fields"]["message"][0]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer rtp_nothere_secret", "Bearer garbage"],
)
def test_missing_or_wrong_token_is_401(client, header):
    make_token()
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.post(
        URL, json.dumps({"stream": "orders", "type": "x"}), content_type="application/json", **extra
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"] == 'Bearer realm="realtime"'
    assert Message.objects.count() == 0


def test_right_prefix_wrong_secret_is_401(client):
    obj, token = make_token()
    forged = f"rtp_{obj.prefix}_{'A' * 43}"
    assert forged != token
    assert post(client, {"stream": "orders", "type": "x"}, forged).status_code == 401


def test_inactive_token_is_401(client):
    _obj, token = make_token(active=False)
    assert post(client, {"stream": "orders", "type": "x"}, token).status_code == 401


def test_secret_is_compared_with_compare_digest(client):
    obj, token = make_token()
    with mock.patch("realtime.tokens.hmac.compare_digest", return_value=False) as compare:
        response = post(client, {"stream": "orders", "type": "x"}, token)
    assert response.status_code == 401
    compare.assert_called_once_with(tokens.hash_token(token), obj.secret_hash)


def test_only_the_hash_is_stored_and_last_used_is_recorded(client):
    obj, token = make_token()
    assert token.startswith(f"rtp_{obj.prefix}_") and len(token) > 40
    obj.refresh_from_db()
    assert token not in (obj.secret_hash, obj.prefix) and obj.secret_hash == tokens.hash_token(token)
    assert obj.last_used_at is None
    post(client, {"stream": "orders", "type": "x"}, token)
    obj.refresh_from_db()
    assert obj.last_used_at is not None


@pytest.mark.parametrize(
    "patterns, stream, status",
    [
        ("orders", "orders", 202),
        ("orders", "orders2", 403),
        ("project:*", "project:12", 202),
        ("project:*", "project", 403),
        ("project:*", "broadcast", 403),
        ("user:*\nbroadcast", "broadcast", 202),
        ("user:1?", "user:12", 202),
        ("user:1?", "user:123", 403),
    ],
)
def test_token_scopes(client, patterns, stream, status):
    _obj, token = make_token(patterns)
    response = post(client, {"stream": stream, "type": "x"}, token)
    assert response.status_code == status
    assert Message.objects.filter(stream__name=stream).count() == (1 if status == 202 else 0)
    if status == 403:
        assert response.json()["error"] == "forbidden"


def test_user_target_is_checked_against_its_stream(client):
    alice = User.objects.create_user("alice")
    _obj, token = make_token("orders")
    response = post(client, {"user": "alice", "type": "x"}, token)
    assert response.status_code == 403
    assert not Message.objects.filter(stream__name=f"user:{alice.pk}").exists()


def test_settings_tokens(client, settings):
    secret = "s" * 40
    settings.REALTIME = {"PUBLISH_TOKENS": [{"name": "env", "secret": secret, "streams": ["orders"]}]}
    assert post(client, {"stream": "orders", "type": "x"}, secret).status_code == 202
    assert post(client, {"stream": "staff", "type": "x"}, secret).status_code == 403
    assert post(client, {"stream": "orders", "type": "x"}, "s" * 39).status_code == 401


def test_get_is_405_with_json(client):
    _obj, token = make_token()
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


def test_body_over_limit_is_413(client, settings):
    settings.REALTIME = {"PUBLISH_MAX_BODY": 100}
    _obj, token = make_token()
    small = {"stream": "orders", "type": "x", "payload": {"t": "y" * 20}}
    large = {"stream": "orders", "type": "x", "payload": {"t": "y" * 100}}
    assert post(client, small, token).status_code == 202
    response = post(client, large, token)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert len(stored("orders")) == 1


def test_rate_limit_per_token_is_429(client, settings):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": 3, "PUBLISH_RATE_WINDOW": 60}
    _obj, token = make_token(name="a")
    _other, other_token = make_token(name="b")
    codes = [post(client, {"stream": "orders", "type": "x"}, token).status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    limited = post(client, {"stream": "orders", "type": "x"}, token)
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert post(client, {"stream": "orders", "type": "x"}, other_token).status_code == 202
    assert len(stored("orders")) == 4


def test_rate_limit_window_resets(client, settings):
    settings.REALTIME = {"PUBLISH_RATE_LIMIT": 1, "PUBLISH_RATE_WINDOW": 60}
    _obj, token = make_token()
    with mock.patch("realtime.views.time.time", return_value=6000.0):
        assert post(client, {"stream": "orders", "type": "x"}, token).status_code == 202
        assert post(client, {"stream": "orders", "type": "x"}, token).status_code == 429
    with mock.patch("realtime.views.time.time", return_value=6060.0):
        assert post(client, {"stream": "orders", "type": "x"}, token).status_code == 202


# Failed authentications per client address ----------------------------------

BAD_TOKEN = "rtp_nothere_" + "A" * 43


def test_failed_authentications_per_address_are_limited(client, settings):
    settings.REALTIME = {"PUBLISH_AUTH_FAILURE_LIMIT": 3, "PUBLISH_RATE_WINDOW": 60}
    _obj, token = make_token()
    body = {"stream": "orders", "type": "x"}
    with mock.patch("realtime.views.time.time", return_value=6000.0):
        codes = [post(client, body, BAD_TOKEN).status_code, post(client, body, "garbage").status_code]
        codes.append(post(client, body).status_code)  # no token at all counts too
        assert codes == [401, 401, 401]
        with mock.patch("realtime.tokens.authenticate") as authenticate:
            limited = post(client, body, token)
        assert limited.status_code == 429
        assert limited.json() == {
            "error": "rate_limited",
            "message": "Too many failed authentications from this address; retry later.",
        }
        assert limited["Retry-After"] == "60"
        authenticate.assert_not_called()
        assert post(client, body, token, REMOTE_ADDR="10.1.2.3").status_code == 202
    with mock.patch("realtime.views.time.time", return_value=6060.0):
        assert post(client, body, token).status_code == 202
    assert len(stored("orders")) == 2


def test_successful_authentications_are_not_counted(client, settings):
    settings.REALTIME = {"PUBLISH_AUTH_FAILURE_LIMIT": 2, "PUBLISH_RATE_WINDOW": 3600}
    _obj, token = make_token()
    body = {"stream": "orders", "type": "x", "ephemeral": True}
    codes = [post(client, body, token).status_code for _ in range(5)]
    codes.append(post(client, body, BAD_TOKEN).status_code)
    codes.append(post(client, body, token).status_code)
    codes.append(post(client, body, BAD_TOKEN).status_code)
    codes.append(post(client, body, token).status_code)
    assert codes == [202] * 5 + [401, 202, 401, 429]


def test_failure_limit_none_is_off(client, settings):
    settings.REALTIME = {"PUBLISH_AUTH_FAILURE_LIMIT": None}
    codes = {post(client, {"stream": "orders", "type": "x"}, BAD_TOKEN).status_code for _ in range(30)}
    assert codes == {401}


def test_failure_limit_default_is_20(client):
    _obj, token = make_token()
    codes = [post(client, {"stream": "orders", "type": "x"}, BAD_TOKEN).status_code for _ in range(20)]
    assert set(codes) == {401}
    assert post(client, {"stream": "orders", "type": "x"}, token).status_code == 429


def test_failures_count_per_client_behind_trusted_proxies(client, settings):
    settings.REALTIME = {"PUBLISH_AUTH_FAILURE_LIMIT": 2, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    _obj, token = make_token()
    body = {"stream": "orders", "type": "x", "ephemeral": True}

    def via_proxy(token, forwarded):
        return post(client, body, token, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert [via_proxy(BAD_TOKEN, "203.0.113.7") for _ in range(2)] == [401, 401]
    assert via_proxy(token, "203.0.113.7") == 429
    assert via_proxy(token, "203.0.113.7, 10.0.0.9") == 429
    assert via_proxy(token, "203.0.113.8") == 202
    # Whatever the proxy wrote is a key of its own, spaces included.
    assert via_proxy(token, "203.0.113.7 and more") == 202


def test_forwarded_for_from_an_untrusted_peer_is_ignored(client, settings):
    settings.REALTIME = {"PUBLISH_AUTH_FAILURE_LIMIT": 2, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    _obj, token = make_token()
    body = {"stream": "orders", "type": "x"}
    for forwarded in ("203.0.113.1", "203.0.113.2"):
        bad = post(client, body, BAD_TOKEN, REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR=forwarded)
        assert bad.status_code == 401
    fresh = post(client, body, token, REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="203.0.113.3")
    assert fresh.status_code == 429


class BrokenCache(BaseCache):
    """A cache whose server is down: every call raises, as django-redis or pymemcache would."""

    def __init__(self, location, params):
        super().__init__(params)

    def _down(self, *args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    add = get = set = incr = delete = clear = _down


def test_cache_outage_fails_open(client, settings, caplog):
    settings.CACHES = {**settings.CACHES, "broken": {"BACKEND": "tests.test_publish.BrokenCache"}}
    settings.REALTIME = {"PUBLISH_CACHE": "broken", "PUBLISH_RATE_LIMIT": 1, "PUBLISH_AUTH_FAILURE_LIMIT": 1}
    _obj, token = make_token()
    body = {"stream": "orders", "type": "x"}
    with caplog.at_level("WARNING", logger="realtime"):
        codes = [post(client, body, token).status_code for _ in range(3)]
        codes += [post(client, body, BAD_TOKEN).status_code for _ in range(3)]
    assert codes == [202, 202, 202, 401, 401, 401]
    warnings = [r.getMessage() for r in caplog.records if r.name == "realtime"]
    assert warnings and all("rate limits not applied, the cache 'broken' failed" in w for w in warnings)


# Failures of the server itself: JSON, never Django's HTML page ----------------


def failing_queries(table):
    """Make every SQL statement that names ``table`` fail as if the database were down."""

    def wrapper(execute, sql, params, many, context):
        if table in sql:
            raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
        return execute(sql, params, many, context)

    return connection.execute_wrapper(wrapper)


@pytest.mark.parametrize(
    "table, body, settings_token",
    [
        ("realtime_publishtoken", {"stream": "orders", "type": "x"}, False),
        ("auth_user", {"user": "alice", "type": "x"}, False),
        ("realtime_stream", {"stream": "orders", "type": "x"}, False),
        ("", {"stream": "orders", "type": "x"}, True),
        ("", {"user": "alice", "type": "x"}, True),
    ],
)
def test_database_outage_is_503_json(client, settings, caplog, table, body, settings_token):
    settings.REALTIME = {
        "PUBLISH_AUTH_FAILURE_LIMIT": 1,
        "PUBLISH_TOKENS": [{"name": "env", "secret": "s" * 40, "streams": ["orders", "user:*"]}],
    }
    User.objects.create_user("alice")
    _obj, db_token = make_token()
    token = "s" * 40 if settings_token else db_token
    with caplog.at_level("WARNING", logger="realtime"), failing_queries(table):
        response = post(client, body, token)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "unavailable", "message": "The database is unavailable; retry later."}
    assert response["Retry-After"] == "5"
    [record] = [r for r in caplog.records if r.name == "realtime"]
    assert record.levelname == "WARNING" and "OperationalError" in record.getMessage()
    # An outage is not a failed authentication: the address is not held back afterwards.
    assert post(client, body, token).status_code == 202


def test_settings_tokens_authenticate_without_the_database(settings):
    settings.REALTIME = {"PUBLISH_TOKENS": [{"name": "env", "secret": "s" * 40, "streams": ["orders"]}]}
    with failing_queries(""):
        credential = tokens.authenticate("s" * 40)
        with pytest.raises(OperationalError):
            tokens.authenticate(BAD_TOKEN)
    assert credential.key == "settings:env"


def test_unexpected_error_is_json_500_logged_with_traceback(client, caplog):
    _obj, token = make_token()
    with caplog.at_level("WARNING", logger="realtime"):
        with mock.patch("realtime.views.notify", side_effect=RuntimeError("boom")):
            response = post(client, {"stream": "orders", "type": "x"}, token)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "internal",
        "message": "The server failed to handle the request; retry later.",
    }
    [record] = [r for r in caplog.records if r.name == "realtime"]
    assert record.levelname == "ERROR" and record.exc_info[1].args == ("boom",)


def test_no_csrf_token_needed():
    from django.test import Client

    _obj, token = make_token()
    strict = Client(enforce_csrf_checks=True)
    assert post(strict, {"stream": "orders", "type": "x"}, token).status_code == 202


def test_admin_shows_the_token_once(admin_client):
    response = admin_client.post(
        "/admin/realtime/publishtoken/add/",
        {"name": "shop", "streams": "orders\nuser:*", "active": "on"},
        follow=True,
    )
    assert response.status_code == 200
    obj = PublishToken.objects.get(name="shop")
    shown = [str(m) for m in response.context["messages"]]
    match = re.search(r"(rtp_[0-9a-f]{8}_[A-Za-z0-9_-]{43})", " ".join(shown))
    assert match, shown
    assert tokens.hash_token(match.group(1)) == obj.secret_hash
    assert obj.patterns == ["orders", "user:*"]
    again = admin_client.get(f"/admin/realtime/publishtoken/{obj.pk}/change/")
    assert match.group(1) not in again.content.decode()


# The documented examples, run against a live daphne -------------------------


def doc_block(language, contains):
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S)
    matching = [b for b in blocks if contains in b]
    assert matching, f"docs/publishing.md has no ```{language} block containing {contains!r}"
    return matching[0]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_documented_curl_command_publishes(daphne_factory):
    curl = shutil.which("curl")
    assert curl, "curl is not installed: apt-get install curl"
    _obj, token = make_token()
    server = daphne_factory()
    command = doc_block("sh", "curl").replace("http://127.0.0.1:8000", server.url)
    result = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "REALTIME_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["stream"] == "orders" and answer["seq"] == 1, (answer, server.output())
    assert stored("orders") == [(1, "order.shipped", {"order": 17})]
    assert Message.objects.get(stream__name="orders").idempotency_key == "order-17-shipped"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_documented_php_examples_publish(daphne_factory, tmp_path):
    php = shutil.which("php")
    assert php, "php is not installed: apt-get install php-cli php-curl (see scripts/system-deps.sh)"
    alice = User.objects.create_user("alice")
    _obj, token = make_token()
    server = daphne_factory()
    env = {**os.environ, "REALTIME_TOKEN": token, "REALTIME_URL": server.url}
    outputs = []
    for contains in ("curl_init", "file_get_contents"):
        script = tmp_path / f"{contains}.php"
        script.write_text(doc_block("php", contains))
        result = subprocess.run([php, str(script)], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout.strip())
    assert outputs == [f"user:{alice.pk} 1", "202 orders 1"]
    assert stored(f"user:{alice.pk}") == [(1, "order.shipped", {"order": 17, "carrier": "DHL"})]
    assert stored("orders") == [(1, "order.created", {"order": 18})]


@pytest.mark.parametrize(
    "value, message",
    [
        ({"PUBLISH_MAX_BODY": 0}, "PUBLISH_MAX_BODY"),
        ({"PUBLISH_RATE_LIMIT": "10"}, "PUBLISH_RATE_LIMIT"),
        ({"PUBLISH_RATE_WINDOW": None}, "PUBLISH_RATE_WINDOW"),
        ({"PUBLISH_CACHE": None}, "PUBLISH_CACHE"),
        ({"PUBLISH_TOKENS": {"name": "x"}}, "must be a list"),
        ({"PUBLISH_TOKENS": [{"name": "x", "secret": "y" * 40}]}, "exactly the keys"),
        (
            {"PUBLISH_TOKENS": [{"name": "x", "secret": "y" * 40, "streams": "orders"}]},
            "list of stream name patterns",
        ),
        ({"PUBLISH_TOKENS": [{"name": "x", "secret": None, "streams": ["a"]}]}, r'\["secret"\]'),
        ({"PUBLISH_TOKENS": [{"name": "x", "secret": "y", "streams": ["a"]}] * 2}, "unique"),
    ],
)
def test_invalid_publish_settings_name_the_key(settings, value, message):
    from realtime.conf import get_config
    from realtime.exceptions import RealtimeConfigError

    settings.REALTIME = value
    with pytest.raises(RealtimeConfigError, match=message):
        get_config()


@pytest.mark.parametrize("streams", ["", "   \n  ", "orders\nbad name", "orders/*"])
def test_admin_refuses_bad_patterns(admin_client, streams):
    response = admin_client.post("/admin/realtime/publishtoken/add/", {"name": "shop", "streams": streams})
    assert response.status_code == 200
    assert "streams" in response.context["adminform"].form.errors
    assert not PublishToken.objects.exists()
