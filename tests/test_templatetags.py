"""``{% realtime_client %}``: the script tag, its options and the positions it hands over."""

import json
import re
from html import unescape

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory

import realtime

pytestmark = pytest.mark.django_db


def render(source, user, **context):
    request = RequestFactory().get("/")
    request.user = user
    return Template("{% load realtime %}" + source).render(Context({"request": request, **context}))


def attributes(html):
    return {name: unescape(value) for name, value in re.findall(r' data-([a-z-]+)(?:="([^"]*)")?', html)}


def test_renders_module_script_with_positions_of_the_users_streams():
    user = User.objects.create_user("alice")
    realtime.notify("broadcast", "notice", {"n": 1})
    realtime.notify("broadcast", "notice", {"n": 2})
    realtime.notify(user, "notice", {"n": 3})

    html = render("{% realtime_client %}", user)

    assert html.startswith('<script type="module" src="/static/realtime/autostart.js" data-realtime-client')
    data = attributes(html)
    assert data["url"] == "/ws/realtime/"
    assert data["heartbeat"] == "25000"
    positions = json.loads(data["positions"])
    assert positions["streams"] == {"broadcast": 2, f"user:{user.pk}": 1}
    assert set(positions["epochs"]) == {"broadcast", f"user:{user.pk}"}
    assert "autoconnect" not in data and "global" not in data and "nonce" not in html


def test_tabs_share_a_connection_keyed_by_user_unless_turned_off(settings):
    settings.REALTIME = {"ALLOW_ANONYMOUS": True}
    user = User.objects.create_user("carol")
    data = attributes(render("{% realtime_client %}", user))
    # The key keeps two users' tabs apart; the worker is the app's static file.
    assert (data["share"], data["worker"]) == (str(user.pk), "/static/realtime/worker.js")
    assert attributes(render("{% realtime_client %}", AnonymousUser()))["share"] == "anon"
    off = attributes(render("{% realtime_client share=False %}", user))
    assert "share" not in off and "worker" not in off


def test_options_nonce_and_global():
    user = User.objects.create_user("bob", is_staff=True)
    html = render(
        '{% realtime_client nonce=csp url="/live/" heartbeat=5000 backoff_min=500 backoff_max=8000 '
        "min_uptime=3000 connect_timeout=4000 autoconnect=False global=True %}",
        user,
        csp="r4nd0m",
    )
    data = attributes(html)
    assert {k: data[k] for k in ("url", "heartbeat", "backoff-min", "backoff-max", "min-uptime", "connect-timeout")} == {
        "url": "/live/", "heartbeat": "5000", "backoff-min": "500", "backoff-max": "8000",
        "min-uptime": "3000", "connect-timeout": "4000",
    }
    assert data["autoconnect"] == "false"
    assert data["global"] == "realtime"
    assert ' nonce="r4nd0m"' in html
    assert set(json.loads(data["positions"])["streams"]) == {"broadcast", f"user:{user.pk}", "staff"}
    assert attributes(render('{% realtime_client global="rt" %}', user))["global"] == "rt"


def test_anonymous_without_allow_anonymous_does_not_connect():
    data = attributes(render("{% realtime_client %}", AnonymousUser()))
    assert json.loads(data["positions"]) == {"streams": {}, "epochs": {}}
    assert data["autoconnect"] == "false"


def test_anonymous_with_allow_anonymous_gets_broadcast(settings):
    settings.REALTIME = {"ALLOW_ANONYMOUS": True}
    realtime.notify("broadcast", "notice", {"n": 1})
    data = attributes(render("{% realtime_client %}", AnonymousUser()))
    assert json.loads(data["positions"])["streams"] == {"broadcast": 1}
    assert "autoconnect" not in data


def test_unknown_option_is_a_template_error():
    with pytest.raises(TemplateSyntaxError, match="heartbeat_ms"):
        render("{% realtime_client heartbeat_ms=1 %}", AnonymousUser())


def test_backoff_floor_becomes_a_data_attribute_and_is_left_out_unless_given():
    user = User.objects.create_user("carol")
    assert attributes(render("{% realtime_client backoff_floor=400 %}", user))["backoff-floor"] == "400"
    # An unresolved variable means "not given": the client keeps its default floor.
    assert "backoff-floor" not in attributes(render("{% realtime_client backoff_floor=missing %}", user))
