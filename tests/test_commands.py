"""The realtime_notify and realtime_online management commands."""

import asyncio
import json
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from realtime import presence
from realtime.models import Message
from realtime.streams import group_name

pytestmark = pytest.mark.django_db


def run(name, *args):
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stored(stream):
    return [(m.seq, m.type, m.payload) for m in Message.objects.filter(stream__name=stream)]


# realtime_notify ------------------------------------------------------------


def test_in_memory_layer_fails_clearly_but_stores():
    with pytest.raises(CommandError) as caught:
        run("realtime_notify", "--broadcast", "--text", "Deploy at 5")
    message = str(caught.value)
    assert "stored but cannot be pushed live" in message
    assert "REDIS_URL" in message and "channels_redis" in message and "--store-only" in message
    assert stored("broadcast") == [(1, "notice", {"text": "Deploy at 5"})]


def test_store_only_succeeds_and_prints_stream_and_seq():
    alice = User.objects.create_user("alice")
    out, err = run(
        "realtime_notify",
        "--store-only",
        "--user",
        "alice",
        "--staff",
        "--stream",
        "orders",
        "--type",
        "order.shipped",
        "--payload",
        '{"order": 17}',
    )
    lines = out.splitlines()
    assert [line.split(" id=")[0] for line in lines] == [
        "orders seq=1",
        f"user:{alice.pk} seq=1",
        "staff seq=1",
    ]
    assert "next heartbeat" in err
    assert stored("orders") == [(1, "order.shipped", {"order": 17})]


def test_idempotency_key_publishes_once():
    out1, _ = run("realtime_notify", "--store-only", "--stream", "orders", "--idempotency-key", "k1")
    out2, _ = run("realtime_notify", "--store-only", "--stream", "orders", "--idempotency-key", "k1")
    assert out1.split()[:2] == out2.split()[:2] == ["orders", "seq=1"]
    assert "not sent again" in out2 and "not sent again" not in out1
    assert len(stored("orders")) == 1


def test_ephemeral_with_in_memory_layer_sends_nothing_even_store_only():
    with pytest.raises(CommandError, match="Nothing was sent"):
        run("realtime_notify", "--store-only", "--broadcast", "--ephemeral")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Say where to publish"),
        (["--user", "nobody"], "No user 'nobody'"),
        (["--broadcast", "--payload", "{nope"], "not valid JSON"),
        (["--broadcast", "--payload", "[1]"], "JSON object"),
        (["--broadcast", "--type", "welcome"], "reserved"),
        (["--stream", "bad name"], "invalid"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run("realtime_notify", "--store-only", *args)
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_redis_layer_pushes_live(redis_layer_settings):
    layer = get_channel_layer()

    async def listen():
        channel = await layer.new_channel()
        await layer.group_add(group_name("broadcast"), channel)
        return channel

    channel = async_to_sync(listen)()
    out, err = run("realtime_notify", "--broadcast", "--ephemeral", "--text", "hi")
    assert out.startswith("broadcast seq=- id=") and err == ""
    message = async_to_sync(asyncio.wait_for)(layer.receive(channel), 5)
    assert message["stream"] == "broadcast" and json.loads(message["text"])["payload"] == {"text": "hi"}


# realtime_online ------------------------------------------------------------


class Conn:
    def __init__(self, cid, user, streams):
        self.connection_id, self.user, self.streams = cid, user, streams


def test_online_lists_users_and_counts_per_stream(settings, redis_url, layer_prefix):
    settings.REALTIME = {
        "PRESENCE": {
            "BACKEND": "realtime.presence.RedisPresence",
            "URL": redis_url,
            "PREFIX": f"{layer_prefix}:p:",
        }
    }
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")

    async def connect_all():
        await presence.connected(Conn("a1", alice, ["broadcast", "orders"]))
        await presence.connected(Conn("a2", alice, ["broadcast"]))
        await presence.connected(Conn("b1", bob, ["broadcast"]))

    asyncio.run(connect_all())
    out, _ = run("realtime_online")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["2", "user(s)", "online"]
    assert rows[2:] == [["broadcast", "2", "3"], ["orders", "1", "1"]]
    out, _ = run("realtime_online", "--stream", "orders")
    assert out.splitlines() == [f"alice ({alice.pk})"]
    data = json.loads(run("realtime_online", "--json")[0])
    assert data["users"] == {str(alice.pk): "alice", str(bob.pk): "bob"}
    assert data["streams"]["broadcast"] == {"users": 2, "connections": 3}


def test_online_with_in_memory_presence_fails_clearly(settings):
    settings.REALTIME = {}
    with pytest.raises(CommandError, match="cannot see any connection.*REDIS_URL"):
        run("realtime_online")
