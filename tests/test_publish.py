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
from django.urls import reverse

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


def test_unknown_user_is_a_field_error(client):
    _obj, token = make_token()
    response = post(client, {"user": "nobody", "type": "hello"}, token)
    assert response.status_code == 400
    assert response.json()["fields"] == {"user": ["No such user."]}


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
