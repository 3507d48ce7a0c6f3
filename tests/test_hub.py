"""The per-process hub: membership, fan-out, and filling what the channel layer loses.

Through the consumer (Channels' communicator, the in-memory layer) where a
client must see the effect, and with plain subscriber objects for the hub's
own bookkeeping.
"""

import asyncio

import pytest
from channels.layers import get_channel_layer

from realtime import anotify, layer, store
from realtime.hub import Hub
from realtime.streams import group_name
from tests.channels_client import eventually, store_only

pytestmark = pytest.mark.django_db(transaction=True)


class Recorder:
    """A subscriber that records what the hub hands it."""

    def __init__(self, fail=False):
        self.pushed, self.rechecked, self.revoked = [], [], []
        self.fail = fail

    def push(self, stream, seq, out):
        if self.fail:
            raise RuntimeError("a broken connection")
        self.pushed.append((stream, seq, out.text))

    async def reset(self, stream, epoch):
        pass

    async def revoke(self, user_pk, code):
        self.revoked.append((user_pk, code))

    def recheck(self, user_pk):
        self.rechecked.append(user_pk)


def group_members(hub, stream):
    return [channel for channel in hub.layer.groups.get(group_name(stream), {}) if channel == hub.channel]


async def test_a_dropped_layer_message_is_filled_from_the_log(connect, make_user):
    client = await connect(await make_user())
    await anotify("broadcast", "t", {"n": 1})
    await store_only("broadcast", payload={"n": 2})  # the layer "lost" this one
    await anotify("broadcast", "t", {"n": 3})
    frames = await client.messages(3)
    assert [f["payload"]["n"] for f in frames] == [1, 2, 3]
    await client.nothing()


async def test_a_duplicated_layer_message_is_delivered_once(connect, make_user):
    client = await connect(await make_user())
    result = await anotify("broadcast", "t")
    await client.recv()
    layer = get_channel_layer()
    await layer.group_send(
        group_name("broadcast"),
        {"type": "realtime.message", "stream": "broadcast", "seq": result.seq, "text": result.text},
    )
    await client.nothing()


async def test_a_lost_tail_is_healed_by_the_hub_sweep(connect, make_user):
    client = await connect(await make_user())
    await anotify("broadcast", "t", {"n": 1})
    await store_only("broadcast", payload={"n": 2})  # last of a burst, dropped
    frames = await client.messages(2, timeout=3)
    assert [f["payload"]["n"] for f in frames] == [1, 2]


async def test_a_duplicate_after_a_lost_tail_still_triggers_the_sweep(connect, make_user):
    client = await connect(await make_user())
    first = await anotify("broadcast", "t", {"n": 1})
    await client.recv()
    await asyncio.sleep(0.5)  # the sweep armed by message 1 has run and found nothing
    await store_only("broadcast", payload={"n": 2})  # dropped by the layer
    # All that reaches the hub afterwards is a late duplicate of message 1.
    await get_channel_layer().group_send(
        group_name("broadcast"),
        {"type": "realtime.message", "stream": "broadcast", "seq": first.seq, "text": first.text},
    )
    frame = await client.recv(timeout=2)
    assert frame["seq"] == 2


async def test_unexpected_layer_message_does_not_close_anything(connect, make_user):
    client = await connect(await make_user())
    await get_channel_layer().group_send(group_name("broadcast"), {"type": "chat.message", "text": "hi"})
    await anotify("broadcast", "t")
    assert (await client.recv())["type"] == "t"


async def test_concurrent_pings_share_one_heads_query(connect, make_user, monkeypatch):
    clients = [await connect(await make_user(f"user{i}")) for i in range(12)]
    calls = []
    real_heads = store.heads

    def counting_heads(names, using=None):
        calls.append(len(names))
        return real_heads(names, using)

    monkeypatch.setattr(store, "heads", counting_heads)
    for client in clients:
        await client.send({"type": "ping"})
    for client in clients:
        assert (await client.recv())["type"] == "pong"
    # broadcast + 12 private user streams, read together.
    assert len(calls) <= 2 and sum(calls) == 13


@pytest.fixture
async def hub():
    """A hub on the in-memory layer; whatever a test left subscribed leaves at the end."""
    hub = Hub(get_channel_layer())
    yield hub
    for stream, subscribers in list(hub.subscribers.items()):
        for subscriber in list(subscribers):
            hub.unsubscribe(subscriber, stream)
    await eventually(lambda: hub._leave_task is None)


async def subscribed(hub, stream, **options):
    recorder = Recorder(**options)
    await hub.subscribe(recorder, stream)
    return recorder


async def test_one_broken_subscriber_does_not_stop_the_fan_out(hub):
    await subscribed(hub, "orders", fail=True)
    fine = await subscribed(hub, "orders")
    published = await anotify("orders", "t")
    await hub.handle(layer.message(published))
    assert fine.pushed == [("orders", published.seq, published.text)]


async def test_the_last_subscriber_out_leaves_the_group_and_stops_the_hub(hub):
    first, second = await subscribed(hub, "orders"), await subscribed(hub, "orders")
    assert group_members(hub, "orders")
    hub.unsubscribe(first, "orders")  # synchronous: a cancelled connection still lets go
    await eventually(lambda: hub._leave_task is None)
    assert group_members(hub, "orders") and hub.subscribers["orders"] == {second}
    hub.unsubscribe(second, "orders")
    assert "orders" not in hub.subscribers
    await eventually(lambda: not group_members(hub, "orders"))
    assert not layer.serving()


async def test_a_stream_joined_again_before_the_group_is_left_keeps_its_group(hub):
    first = await subscribed(hub, "orders")
    hub.unsubscribe(first, "orders")  # the group_discard is pending ...
    again = await subscribed(hub, "orders")  # ... and this runs first
    await eventually(lambda: hub._leave_task is None)
    assert group_members(hub, "orders")
    published = await anotify("orders", "t")
    await hub.handle(layer.message(published))
    assert [seq for _stream, seq, _text in again.pushed] == [published.seq]


async def test_revoke_and_recheck_reach_the_users_stream_only(hub):
    mine, other = await subscribed(hub, "user:7"), await subscribed(hub, "user:8")
    await hub.handle(layer.revoke("user:7", 7, 4401))
    await hub.handle(layer.recheck("user:7", 7))
    assert (mine.revoked, mine.rechecked) == ([(7, 4401)], [7])
    assert (other.revoked, other.rechecked) == ([], [])


async def test_a_gap_is_filled_from_the_log_before_the_message_after_it(hub):
    recorder = await subscribed(hub, "orders")
    await store_only("orders", payload={"n": 1})  # the layer lost this one
    second = await anotify("orders", "t", {"n": 2})
    await hub.handle(layer.message(second))
    assert [seq for _stream, seq, _text in recorder.pushed] == [1, 2]
    heads = await asyncio.to_thread(store.heads, ["orders"])
    assert hub.fanned_out["orders"] == heads["orders"][0] == 2


async def test_a_batch_is_fanned_out_in_order_and_fills_gaps(connect, make_user):
    client = await connect(await make_user())
    first = await anotify("broadcast", "t", {"n": 1})
    await client.recv()
    stored = [await store_only("broadcast", payload={"n": n}) for n in (2, 3, 4)]
    # The batch misses seq 2 (dropped) and carries a stream nobody here reads.
    await get_channel_layer().group_send(
        layer.HUBS_GROUP,
        {
            "type": "realtime.batch",
            "messages": [
                ["nobody-reads-this", 1, '{"type":"t"}'],
                ["broadcast", stored[1].seq, stored[1].text],
                ["broadcast", first.seq, first.text],  # a duplicate
                ["broadcast", stored[2].seq, stored[2].text],
            ],
        },
    )
    frames = await client.messages(3)
    assert [f["payload"]["n"] for f in frames] == [2, 3, 4]
    await client.nothing()


async def test_notify_many_to_many_streams_reaches_each_socket_once(connect, make_user, settings):
    settings.REALTIME = {**getattr(settings, "REALTIME", {}), "WIDE_PUSH_STREAMS": 2}
    users = [await make_user(f"user{i}") for i in range(4)]
    clients = [await connect(user) for user in users]
    from realtime import anotify_many

    await anotify_many([(user, "t", {"to": user.pk}) for user in users])
    for client, user in zip(clients, users):
        frame = await client.recv()
        assert (frame["stream"], frame["payload"]) == (f"user:{user.pk}", {"to": user.pk})
        await client.nothing()
