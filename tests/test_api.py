"""notify() and friends: validation in the caller, push on commit, outages logged not raised."""

import asyncio
import logging

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction

from realtime import (
    EnvelopeError,
    MessageTooLarge,
    RealtimeError,
    StreamNameError,
    anotify,
    disconnect_user,
    notify,
    positions,
    reset_stream,
)
from realtime import api, layer
from realtime.models import Message
from realtime.streams import group_name

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A raw layer channel joined to some streams' groups, read from sync test code."""

    def __init__(self, *streams):
        # One loop for all reads: channels-redis binds a channel's buffer to a loop.
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        for stream in streams:
            self.loop.run_until_complete(self.layer.group_add(group_name(stream), self.channel))

    def get(self, timeout=2.0):
        return self.loop.run_until_complete(asyncio.wait_for(self.layer.receive(self.channel), timeout))

    def nothing(self, timeout=0.3):
        with pytest.raises(asyncio.TimeoutError):
            self.get(timeout)


@pytest.fixture
def listen(redis_layer_settings):
    listeners = []

    def make(*streams):
        listeners.append(Listener(*streams))
        return listeners[-1]

    yield make
    for listener in listeners:
        # Close only this loop's connections; the sender thread owns its own.
        loop_layer = listener.layer._layers.pop(listener.loop, None)
        if loop_layer is not None:
            listener.loop.run_until_complete(loop_layer.flush())
        listener.loop.close()


def test_push_happens_on_commit_not_before(listen):
    listener = listen("orders")
    with transaction.atomic():
        result = notify("orders", "created", {"id": 1})
        listener.nothing()
    message = listener.get()
    assert message["type"] == "realtime.message"
    assert (message["stream"], message["seq"], message["text"]) == ("orders", 1, result.text)


def test_rolled_back_publish_notifies_nobody(listen):
    listener = listen("orders")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            notify("orders", "created", {"id": 1})
            1 / 0
    listener.nothing()
    assert not Message.objects.exists()


def test_outside_a_transaction_the_push_is_immediate(listen):
    listener = listen("orders")
    notify("orders", "created")
    assert listener.get(1.0)["seq"] == 1


def test_ephemeral_messages_have_no_seq_and_are_not_stored(listen):
    listener = listen("cursor")
    result = notify("cursor", "moved", {"x": 3}, persist=False)
    assert result.seq is None
    message = listener.get()
    assert message["seq"] is None and '"seq":null' in message["text"]
    assert not Message.objects.exists()


def test_a_list_of_targets_reaches_each_stream(listen):
    user = User.objects.create_user("ann")
    listener = listen("broadcast", f"user:{user.pk}")
    results = notify(["broadcast", user], "hello")
    assert [r.stream for r in results] == ["broadcast", f"user:{user.pk}"]
    got = {listener.get()["stream"], listener.get()["stream"]}
    assert got == {"broadcast", f"user:{user.pk}"}


def test_idempotent_retry_is_not_pushed_again(listen):
    listener = listen("orders")
    notify("orders", "created", idempotency_key="k1")
    listener.get()
    again = notify("orders", "created", idempotency_key="k1")
    assert again.created is False
    listener.nothing()


def test_layer_outage_is_logged_and_the_message_kept(settings, caplog):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:9/0", "socket_timeout": None}]},
        }
    }
    with caplog.at_level(logging.WARNING, logger="realtime"):
        result = notify("orders", "created", {"id": 1})
        # The push leaves in the background: notify() returned before it failed.
        assert layer.flush()
    assert result.seq == 1
    assert Message.objects.filter(stream__name="orders", seq=1).exists()
    assert "channel layer unreachable" in caplog.text


def test_in_memory_layer_without_a_server_says_so(caplog, monkeypatch):
    monkeypatch.setattr(layer, "_warned", set())  # it warns once per process
    assert not layer.serving()
    with caplog.at_level(logging.WARNING, logger="realtime"):
        notify("orders", "created")
    assert "InMemoryChannelLayer only reaches WebSocket clients served by this same process" in caplog.text
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    "target, error",
    [
        ("bad name!", StreamNameError),
        ([], StreamNameError),
        (42, StreamNameError),
        (AnonymousUser(), StreamNameError),
    ],
)
def test_bad_targets_are_refused(target, error):
    with pytest.raises(error):
        notify(target, "t")
    assert not Message.objects.exists()


def test_errors_are_raised_before_anything_is_stored():
    with pytest.raises(EnvelopeError, match="payload.when"):
        notify("orders", "t", {"when": object()})
    with pytest.raises(EnvelopeError, match="reserved"):
        notify("orders", "pong")
    with pytest.raises(MessageTooLarge):
        notify("orders", "t", {"blob": "x" * 70_000})
    with pytest.raises(EnvelopeError, match="persist=True"):
        notify("orders", "t", persist=False, idempotency_key="k")
    assert not Message.objects.exists()


def test_size_limit_follows_the_setting(settings):
    settings.REALTIME = {"MAX_MESSAGE_SIZE": 1024}
    with pytest.raises(MessageTooLarge, match="1024"):
        notify("orders", "t", {"blob": "x" * 1000})
    notify("orders", "t", {"blob": "x" * 800})


async def test_notify_from_async_code_points_to_anotify():
    with pytest.raises(RealtimeError, match="anotify"):
        notify("orders", "t")
    result = await anotify("orders", "t", {"ok": True})
    assert result.seq == 1


def test_reset_stream_tells_connected_processes(listen):
    listener = listen("orders")
    notify("orders", "t")
    listener.get()
    assert reset_stream("orders") is True
    message = listener.get()
    assert message["type"] == "realtime.reset" and message["epoch"]
    assert reset_stream("never-used") is False


def test_disconnect_user_sends_a_revoke_to_their_stream(listen):
    user = User.objects.create_user("bob")
    listener = listen(f"user:{user.pk}")
    disconnect_user(user)
    message = listener.get()
    assert message == {"type": "realtime.revoke", "stream": f"user:{user.pk}", "user": user.pk, "code": 4401}


def test_positions_are_what_a_client_resumes_from():
    notify("orders", "t")
    notify("orders", "t")
    result = positions(["orders", "empty"])
    assert result["streams"] == {"orders": 2, "empty": 0}
    assert set(result["epochs"]) == {"orders"}
    with pytest.raises(StreamNameError):
        positions(["bad name"])


def test_a_layer_that_cannot_be_imported_is_refused_before_anything_is_stored(settings, monkeypatch):
    import sys

    from realtime import RealtimeConfigError

    monkeypatch.setitem(sys.modules, "channels_redis", None)  # channels-redis not installed
    monkeypatch.setitem(sys.modules, "channels_redis.core", None)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}
    with pytest.raises(RealtimeConfigError, match=r'pip install "django-realtime-notify\[redis\]"'):
        notify("orders", "created")
    # A caller that retries cannot publish twice: nothing was stored.
    assert not Message.objects.exists()
