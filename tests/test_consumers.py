"""The consumer through Channels' WebsocketCommunicator: protocol, replay, healing, bad input."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from realtime import adisconnect_user, anotify, inbound, store
from realtime.api import reset_stream
from realtime.hub import get_hub
from tests.channels_client import Client, allow_orders, app, eventually, seqs, store_only

pytestmark = pytest.mark.django_db(transaction=True)

# Connecting ---------------------------------------------------------------


async def test_welcome_lists_default_streams_and_heartbeat(connect, make_user):
    user = await make_user()
    await anotify("broadcast", "t")
    client = await connect(user)
    payload = client.welcome["payload"]
    assert payload["streams"] == {"broadcast": 1, f"user:{user.pk}": 0}
    assert payload["heartbeat"] == 25000 and payload["protocol"] == 1 and payload["user"] == user.pk
    assert payload["epochs"]["broadcast"] and payload["epochs"][f"user:{user.pk}"] == ""


async def test_staff_also_join_the_staff_stream(connect, make_user):
    client = await connect(await make_user(is_staff=True))
    assert "staff" in client.welcome["payload"]["streams"]


async def test_anonymous_is_closed_with_4401(connect):
    client = await connect(AnonymousUser(), expect_welcome=False)
    assert await client.close_code() == 4401


async def test_anonymous_allowed_gets_broadcast_only(connect, settings):
    settings.REALTIME = {"ALLOW_ANONYMOUS": True}
    client = await connect(AnonymousUser())
    assert list(client.welcome["payload"]["streams"]) == ["broadcast"]
    await anotify("broadcast", "hello")
    assert (await client.recv())["type"] == "hello"


# Live delivery ------------------------------------------------------------


async def test_live_messages_arrive_in_order_with_the_stored_text(connect, make_user):
    user = await make_user()
    client = await connect(user)
    sent = [await anotify(user, "dm", {"n": n, "s": "你好 🎉"}) for n in range(5)]
    frames = await client.messages(5)
    assert [f["payload"]["n"] for f in frames] == list(range(5))
    assert seqs(frames) == [1, 2, 3, 4, 5]
    assert [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in frames] == [r.text for r in sent]


async def test_ephemeral_messages_pass_through(connect, make_user):
    client = await connect(await make_user())
    await anotify("broadcast", "cursor", {"x": 1}, persist=False)
    frame = await client.recv()
    assert frame["type"] == "cursor" and frame["seq"] is None


async def test_a_ping_heals_a_loss_before_the_pong(connect, make_user):
    client = await connect(await make_user())
    await store_only("broadcast", payload={"n": 1})  # published while the layer was down
    await client.send({"type": "ping", "id": 7})
    frames = await client.messages(2)
    assert frames[0]["seq"] == 1 and frames[0]["stream"] == "broadcast"
    assert frames[1]["type"] == "pong"
    assert frames[1]["payload"]["id"] == 7
    assert frames[1]["payload"]["streams"]["broadcast"] == 1
    assert frames[1]["payload"]["epochs"]["broadcast"]


async def test_a_ping_heals_this_socket_before_the_pong_even_when_the_hub_is_current(connect, make_user):
    user = await make_user()
    client = await connect(user, resume={"streams": {"broadcast": 0}})
    # Another socket of this process already brought the hub up to date, but
    # this one is behind: its own catch-up must also precede the pong.
    await store_only("broadcast", payload={"n": 1})
    await store_only("broadcast", payload={"n": 2})
    hub = get_hub()
    (consumer,) = hub.subscribers["broadcast"]
    consumer.delivery.last["broadcast"] = 0
    hub.fanned_out["broadcast"] = 2
    await client.send({"type": "ping"})
    frames = await client.messages(3)
    assert [f["type"] for f in frames] == ["t", "t", "pong"]


# Resume and resync --------------------------------------------------------


async def test_resume_replays_exactly_the_missed_messages_then_live(connect, make_user):
    user = await make_user()
    for n in range(1, 6):
        await anotify("broadcast", "t", {"n": n})
    client = await connect(user, resume={"streams": {"broadcast": 2}})
    assert client.welcome["payload"]["streams"]["broadcast"] == 2
    await anotify("broadcast", "t", {"n": 6})
    frames = await client.messages(4)
    assert seqs(frames) == [3, 4, 5, 6]
    await client.nothing()


async def test_resume_beyond_retention_sends_resync_first(connect, make_user):
    user = await make_user()
    for _ in range(10):
        await anotify("broadcast", "t")
    await sync_to_async(store.prune)(max_count=3)
    client = await connect(user, resume={"streams": {"broadcast": 2}})
    resync = await client.recv()
    assert resync["type"] == "resync"
    assert resync["payload"] == {
        "stream": "broadcast", "seq": 7, "epoch": client.welcome["payload"]["epochs"]["broadcast"], "reason": "pruned"
    }
    assert seqs(await client.messages(3)) == [8, 9, 10]


async def test_resume_with_a_stale_epoch_resyncs_to_the_head(connect, make_user):
    user = await make_user()
    for _ in range(3):
        await anotify("broadcast", "t")
    client = await connect(user, resume={"streams": {"broadcast": 1}, "epochs": {"broadcast": "oldepoch"}})
    resync = await client.recv()
    assert resync["type"] == "resync" and resync["payload"]["reason"] == "epoch" and resync["payload"]["seq"] == 3
    await anotify("broadcast", "t")
    assert (await client.recv())["seq"] == 4


async def test_resume_from_the_future_resyncs(connect, make_user):
    client = await connect(await make_user(), resume={"streams": {"broadcast": 99}})
    resync = await client.recv()
    assert resync["payload"]["reason"] == "ahead" and resync["payload"]["seq"] == 0


async def test_resume_frame_on_an_open_connection_resends_from_the_given_seq(connect, make_user):
    client = await connect(await make_user())
    for _ in range(3):
        await anotify("broadcast", "t")
    assert seqs(await client.messages(3)) == [1, 2, 3]
    await client.send({"type": "resume", "streams": {"broadcast": 1}})
    assert seqs(await client.messages(2)) == [2, 3]


async def test_invalid_resume_query_is_reported_and_the_connection_works(connect, make_user):
    user = await make_user()
    communicator = WebsocketCommunicator(app, "/ws/realtime/?resume=%7Bnot-json")
    communicator.scope["user"] = user
    assert (await communicator.connect())[0]
    client = Client(communicator)
    assert (await client.recv())["type"] == "welcome"
    error = await client.recv()
    assert error["type"] == "error" and error["payload"]["code"] == "invalid_resume"
    await communicator.disconnect()


async def test_reset_stream_resyncs_connected_clients(connect, make_user):
    client = await connect(await make_user())
    await anotify("broadcast", "t")
    await client.recv()
    await sync_to_async(reset_stream)("broadcast")
    resync = await client.recv()
    assert resync["type"] == "resync" and resync["payload"]["reason"] == "reset" and resync["payload"]["seq"] == 0
    await anotify("broadcast", "t")
    assert (await client.recv())["seq"] == 1


# Subscriptions ------------------------------------------------------------


async def test_a_user_cannot_read_another_users_stream(connect, make_user, caplog):
    alice, bob = await make_user("alice"), await make_user("bob")
    client = await connect(alice)
    with caplog.at_level("INFO", logger="realtime"):
        await client.send({"type": "subscribe", "stream": f"user:{bob.pk}"})
        error = await client.recv()
    assert error["type"] == "error" and error["payload"]["code"] == "forbidden"
    # The server says why, where the developer looks.
    assert f"AUTHORIZE refused stream 'user:{bob.pk}' to user {alice.pk}" in caplog.text
    await anotify(bob, "secret")
    await client.nothing()


async def test_refusals_beyond_a_few_are_logged_at_debug(connect, make_user, caplog):
    client = await connect(await make_user())
    with caplog.at_level("INFO", logger="realtime"):
        for n in range(8):
            await client.send({"type": "subscribe", "stream": f"secret:{n}"})
            assert (await client.recv())["payload"]["code"] == "forbidden"
    assert caplog.text.count("AUTHORIZE refused") == inbound.REFUSALS_LOGGED


async def test_subscribe_with_the_authorize_hook_and_since(connect, make_user, settings):
    settings.REALTIME = {"AUTHORIZE": "tests.channels_client.allow_orders"}
    for n in range(3):
        await anotify("orders", "t", {"n": n})
    client = await connect(await make_user())
    await client.send({"type": "subscribe", "stream": "orders", "since": 1})
    subscribed = await client.recv()
    assert subscribed["type"] == "subscribed" and subscribed["payload"]["seq"] == 1
    assert seqs(await client.messages(2)) == [2, 3]
    await client.send({"type": "unsubscribe", "stream": "orders"})
    assert (await client.recv())["type"] == "unsubscribed"
    await anotify("orders", "t")
    await client.nothing()


async def test_stream_limit_per_connection(connect, make_user, settings):
    settings.REALTIME = {"AUTHORIZE": "tests.channels_client.allow_orders", "MAX_STREAMS_PER_CONNECTION": 2}
    client = await connect(await make_user())
    await client.send({"type": "subscribe", "stream": "orders"})
    error = await client.recv()
    assert error["payload"]["code"] == "too_many_streams"


# Bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame, code",
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('{"type": "launch"}', "unknown_type"),
        ('{"type": "subscribe", "stream": "no spaces allowed"}', "invalid_stream"),
        ('{"type": "resume", "streams": {"broadcast": -1}}', "invalid_resume"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_lives(connect, make_user, frame, code):
    client = await connect(await make_user())
    await client.send(frame)
    error = await client.recv()
    assert error["type"] == "error" and error["payload"]["code"] == code
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"


async def test_binary_frames_get_an_error(connect, make_user):
    client = await connect(await make_user())
    await client.c.send_to(bytes_data=b"\x00\x01")
    assert (await client.recv())["payload"]["code"] == "binary_frame"


async def test_oversized_frame_closes_with_4009(connect, make_user, settings):
    settings.REALTIME = {"MAX_INBOUND_SIZE": 1024}
    client = await connect(await make_user())
    await client.send(json.dumps({"type": "ping", "pad": "é" * 600}))
    assert await client.close_code() == 4009


async def test_flooding_closes_with_4008(connect, make_user, settings):
    settings.REALTIME = {"INBOUND_BURST": 5, "INBOUND_RATE": 1}
    client = await connect(await make_user())
    for _ in range(6):
        await client.send({"type": "ping"})
    assert [(await client.recv())["type"] for _ in range(5)] == ["pong"] * 5
    assert await client.close_code() == 4008


async def test_persistent_garbage_closes_with_4008(connect, make_user, settings):
    settings.REALTIME = {"MAX_INVALID_FRAMES": 3}
    client = await connect(await make_user())
    for _ in range(4):
        await client.send("garbage")
    assert [(await client.recv())["type"] for _ in range(3)] == ["error"] * 3
    assert await client.close_code() == 4008


# Revocation ---------------------------------------------------------------


async def test_disconnect_user_closes_only_their_sockets(connect, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    client_a, client_b = await connect(alice), await connect(bob)
    await adisconnect_user(alice)
    assert await client_a.close_code() == 4401
    await anotify("broadcast", "still-here")
    assert (await client_b.recv())["type"] == "still-here"


def no_user_stream(user):
    return ["broadcast"]


async def test_disconnect_user_works_without_the_user_stream_joined(connect, make_user, settings):
    settings.REALTIME = {"DEFAULT_STREAMS": "tests.test_consumers.no_user_stream"}
    alice = await make_user("alice")
    client = await connect(alice)
    assert list(client.welcome["payload"]["streams"]) == ["broadcast"]
    await anotify(alice, "private")  # not joined: must not be delivered
    await client.nothing()
    await adisconnect_user(alice)
    assert await client.close_code() == 4401


async def test_disconnect_user_works_after_unsubscribing_the_user_stream(connect, make_user):
    alice = await make_user("alice")
    client = await connect(alice)
    await client.send({"type": "unsubscribe", "stream": f"user:{alice.pk}"})
    assert (await client.recv())["type"] == "unsubscribed"
    await adisconnect_user(alice)
    assert await client.close_code() == 4401


async def test_with_the_layer_down_sockets_still_connect_and_heal_from_the_log(connect, make_user, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:9/0", "socket_timeout": None}]},
        }
    }
    client = await connect(await make_user())
    await store_only("broadcast", payload={"n": 1})  # what notify() stores during an outage
    await client.send({"type": "ping"})
    frames = await client.messages(2)
    assert [f["type"] for f in frames] == ["t", "pong"] and frames[0]["seq"] == 1


# Failures inside the server ------------------------------------------------


def raise_on(stream):
    def authorize(user, name):
        if name == stream:
            raise ValueError("a bug in the project's AUTHORIZE hook")
        return allow_orders(user, name)

    return authorize


async def test_a_failing_handler_answers_internal_error_and_the_connection_lives(connect, make_user, settings, caplog):
    settings.REALTIME = {"AUTHORIZE": raise_on("project:1")}
    client = await connect(await make_user())
    for _ in range(3):
        await client.send({"type": "subscribe", "stream": "project:1"})
        error = await client.recv()
        assert error["type"] == "error" and error["payload"]["code"] == "internal_error"
    await client.send({"type": "ping", "id": 7})
    assert (await client.recv())["payload"]["id"] == 7
    # Logged once, with the connection id, not once per frame.
    logged = [r for r in caplog.records if "websocket.receive failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info


async def test_a_failing_connect_closes_with_4500_and_leaves_the_hub(connect, make_user, settings):
    settings.REALTIME = {"AUTHORIZE": raise_on("project:1")}
    client = await connect(await make_user(), resume={"streams": {"project:1": 0}}, expect_welcome=False)
    assert await client.close_code() == 4500
    await client.c.disconnect()
    assert get_hub().subscribers == {}


async def test_a_database_error_during_a_ping_still_gets_a_pong(connect, make_user, monkeypatch, caplog):
    from django.db import OperationalError

    client = await connect(await make_user())

    def down(names, using=None):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(store, "heads", down)
    monkeypatch.setattr(inbound, "_logged_at", {})
    get_hub()._heads.clear()
    await client.send({"type": "ping", "id": 1})
    pong = await client.recv()
    assert pong["type"] == "pong" and pong["payload"] == {"streams": {}, "epochs": {}, "id": 1}
    assert "cannot read stream heads" in caplog.text


async def test_a_database_error_during_a_replay_closes_with_4500(connect, make_user, monkeypatch):
    from django.db import OperationalError

    user = await make_user()
    for n in range(3):
        await store_only(f"user:{user.pk}", payload={"n": n})

    def down(*args, **kwargs):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(store, "read_after", down)
    client = await connect(user, resume={"streams": {f"user:{user.pk}": 0}})
    assert await client.close_code() == 4500


async def test_frames_after_the_servers_close_are_ignored(connect, make_user, settings):
    settings.REALTIME = {"MAX_INBOUND_SIZE": 100}
    client = await connect(await make_user())
    await client.send("x" * 200)
    assert await client.close_code() == 4009
    await client.send({"type": "ping"})  # used to raise inside daphne and end with 1011
    await client.nothing()


async def test_a_closed_connection_leaves_the_hub_even_when_cancelled(connect, make_user):
    client = await connect(await make_user(), resume={"streams": {"orders": 0}})
    hub = get_hub()
    assert hub.subscribers
    client.c.future.cancel()  # what daphne does to an application that will not stop
    await eventually(lambda: hub.subscribers == {})
