"""The HTTP publish API under abuse and outage, through a real daphne.

A stranger guessing tokens, a token holder sending a body built to crash the
parser, and a database that is down: each must get a JSON answer it can act
on, never Django's HTML error page, and never a hung request.
"""

import http.client
import json
import re
import time

import pytest
from django.contrib.auth.models import User

from realtime import tokens
from realtime.models import Message, PublishToken
from tests.procs import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

PATH = "/realtime/api/publish"
SETTINGS_SECRET = "settings-token-" + "s" * 32
BAD_TOKEN = "rtp_deadbeef_" + "A" * 43


def make_token(patterns="orders\nuser:*"):
    obj = PublishToken(name="shop", streams=patterns)
    secret = tokens.issue(obj)
    obj.save()
    return secret


def post(server, body, token=None, headers=None):
    """POST to the publish API; return ``(status, headers, parsed JSON body, seconds taken)``."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", PATH, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    content_type = response.getheader("Content-Type")
    assert content_type == "application/json", (response.status, raw[:300], server.output())
    return response.status, response, json.loads(raw), elapsed


def start(daphne_factory, realtime=None, env=None):
    return daphne_factory(env={"REALTIME_JSON": json.dumps(realtime or {}), **(env or {})})


def test_database_down_answers_503_json_quickly(daphne_factory):
    """With PostgreSQL unreachable the server starts, and every publish answers 503 fast."""
    settings_token = {"name": "env", "secret": SETTINGS_SECRET, "streams": ["orders", "user:*"]}
    server = start(
        daphne_factory,
        realtime={"PUBLISH_TOKENS": [settings_token]},
        env={"DATABASE_URL": f"postgres://realtime@127.0.0.1:{free_port()}/nope"},
    )
    cases = [
        (SETTINGS_SECRET, {"stream": "orders", "type": "order.shipped"}),  # notify() needs the database
        (SETTINGS_SECRET, {"user": "alice", "type": "hello"}),  # the user lookup does
        ("rtp_abcdef01_" + "A" * 43, {"stream": "orders", "type": "x"}),  # a database token's lookup does
    ]
    for token, body in cases:
        status, response, answer, elapsed = post(server, body, token)
        assert status == 503, (answer, server.output())
        assert answer["error"] == "unavailable" and answer["message"]
        assert 1 <= int(response.getheader("Retry-After")) <= 30
        assert elapsed < 5, elapsed
    # A token that is neither a settings token nor shaped like a database token needs no database.
    status, _response, answer, _elapsed = post(server, {"stream": "orders", "type": "x"}, "garbage")
    assert (status, answer["error"]) == (401, "unauthorized")
    # Once per request, at WARNING.
    logged = re.findall(r"WARNING +realtime Publish API answered 503, the database is unavailable", server.output())
    assert len(logged) == len(cases), server.output()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize(
    "body",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"stream": "orders", "type": "x", "payload": {"a": ' + "[" * 20_000 + "]" * 20_000 + "}}",
    ],
    ids=["body", "payload"],
)
def test_deep_nesting_answers_400_json(daphne_factory, body):
    token = make_token()
    server = start(daphne_factory)
    status, _response, answer, _elapsed = post(server, body, token)
    assert status == 400, (answer, server.output())
    assert answer["error"] == "invalid" and set(answer["fields"]) == {"body"}
    status, _response, answer, _elapsed = post(server, {"stream": "orders", "type": "x"}, token)
    assert (status, answer["seq"]) == (202, 1)
    assert "Traceback" not in server.output()


def test_failed_tokens_from_one_address_hold_back_even_a_good_token(daphne_factory):
    # A window far longer than the test, so it cannot roll over half-way.
    server = start(daphne_factory, realtime={"PUBLISH_AUTH_FAILURE_LIMIT": 3, "PUBLISH_RATE_WINDOW": 3600})
    token = make_token()
    body = {"stream": "orders", "type": "x"}
    # X-Forwarded-For is not believed from a peer that is not a trusted proxy.
    codes = [post(server, body, BAD_TOKEN, {"X-Forwarded-For": f"203.0.113.{i}"})[0] for i in range(3)]
    assert codes == [401, 401, 401]
    status, response, answer, _elapsed = post(server, body, token)
    assert status == 429, (answer, server.output())
    assert answer["error"] == "rate_limited"
    assert 1 <= int(response.getheader("Retry-After")) <= 3600
    assert post(server, body, token, {"X-Forwarded-For": "198.51.100.9"})[0] == 429
    assert not Message.objects.exists()


def test_failure_limit_counts_per_client_behind_a_trusted_proxy(daphne_factory):
    server = start(
        daphne_factory,
        realtime={
            "PUBLISH_AUTH_FAILURE_LIMIT": 2,
            "PUBLISH_RATE_WINDOW": 3600,
            "TRUSTED_PROXIES": ["127.0.0.1"],
        },
    )
    token = make_token()
    body = {"stream": "orders", "type": "x"}
    attacker, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
    assert [post(server, body, BAD_TOKEN, attacker)[0] for _ in range(2)] == [401, 401]
    assert post(server, body, token, attacker)[0] == 429
    # The attacker cannot get out by writing another address left of the proxy's.
    assert post(server, body, token, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})[0] == 429
    assert post(server, body, token, neighbour)[0] == 202


def test_unknown_and_forbidden_users_answer_byte_for_byte_alike(daphne_factory):
    User.objects.create_user("alice")
    token = make_token("orders")
    server = start(daphne_factory)
    answers = []
    for user in ("alice", "nobody"):
        status, _response, answer, _elapsed = post(server, {"user": user, "type": "hello"}, token)
        answers.append((status, answer))
    forbidden = {"error": "forbidden", "message": "This token may not publish to that target."}
    assert answers[0] == answers[1] == (403, forbidden)
