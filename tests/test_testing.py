"""realtime.testing: the helpers users import in their own tests."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import transaction

from realtime import layer, notify
from realtime.api import disconnect_user
from realtime.testing import Notification, capture_notifications, connect


@pytest.mark.django_db
def test_capture_records_what_notify_pushes():
    alice = User.objects.create_user("alice")
    with capture_notifications() as sent:
        published = notify("orders", "order.shipped", {"order": 1})
        notify([alice, "broadcast"], "hello", {"n": 2})
        notify("orders", "typing", persist=False)
        disconnect_user(alice)
    first = sent[0]
    assert isinstance(first, Notification)
    assert (first.stream, first.type, first.payload, first.seq, first.id) == (
        "orders",
        "order.shipped",
        {"order": 1},
        1,
        published.id,
    )
    assert first.envelope == json.loads(published.text)
    assert [(n.stream, n.type, n.seq) for n in sent] == [
        ("orders", "order.shipped", 1),
        (f"user:{alice.pk}", "hello", 1),
        ("broadcast", "hello", 1),
        ("orders", "typing", None),
    ]
    assert [n.type for n in sent.filter(stream="orders")] == ["order.shipped", "typing"]
    assert [n.stream for n in sent.filter(type="hello")] == [f"user:{alice.pk}", "broadcast"]
    assert sent.revoked == [alice.pk]


@pytest.mark.django_db
def test_capture_skips_rolled_back_and_removes_its_tap():
    with capture_notifications() as sent:
        assert layer._taps
        with pytest.raises(ZeroDivisionError):
            with transaction.atomic():
                notify("orders", "lost")
                1 / 0
        notify("orders", "kept")
    assert layer._taps == []
    assert [(n.type, n.seq) for n in sent] == [("kept", 1)]


@pytest.mark.django_db
def test_forward_also_sends_to_the_layer():
    forwarded = []
    with layer.tap(forwarded.append, forward=False):  # stands for the channel layer
        with capture_notifications(forward=True) as sent:
            notify("orders", "x")
    assert len(sent) == 1 and [m["stream"] for batch in forwarded for m in batch] == ["orders"]


@pytest.mark.django_db
def test_without_forward_nothing_reaches_the_layer(monkeypatch):
    sends = []
    monkeypatch.setattr(layer.sender, "send", lambda *args: sends.append(args) or True)
    monkeypatch.setattr(layer, "serving", lambda: True)
    with capture_notifications() as sent:
        notify("orders", "x")
    assert len(sent) == 1 and sends == []


@pytest.mark.django_db(transaction=True)
async def test_connect_returns_a_logged_in_communicator_and_its_welcome():
    alice = await sync_to_async(User.objects.create_user)("alice")
    communicator, welcome = await connect(alice)
    try:
        assert welcome["type"] == "welcome"
        assert welcome["payload"]["user"] == alice.pk
        assert set(welcome["payload"]["streams"]) == {"broadcast", f"user:{alice.pk}"}
        await sync_to_async(notify)(alice, "hello", {"n": 1})
        frame = json.loads(await communicator.receive_from(timeout=5))
        assert (frame["type"], frame["stream"], frame["seq"], frame["payload"]) == (
            "hello",
            f"user:{alice.pk}",
            1,
            {"n": 1},
        )
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_connect_raises_when_refused():
    with pytest.raises(AssertionError, match="4401"):
        await connect(None)
