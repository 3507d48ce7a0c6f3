"""notify_many(), after_commit=True and how one commit's messages travel on the layer."""

import logging

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from realtime import EnvelopeError, MessageTooLarge, StreamNameError, layer, notify, notify_many
from realtime.models import Message
from tests.test_api import listen  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_sensitive]


def stored():
    return list(Message.objects.order_by("stream__name", "seq").values_list("stream__name", "seq", "type"))


def test_each_item_gets_its_own_target_and_payload():
    ann = User.objects.create_user("ann")
    results = notify_many(
        [
            (ann, "invited", {"role": "owner"}),
            ("project:1", "created", {"id": 1}),
            {"target": ["project:1", "staff"], "type": "created", "payload": {"id": 2}},
            {"target": "project:1", "type": "pinged"},
        ]
    )
    assert (results[0].stream, results[0].seq) == (f"user:{ann.pk}", 1)
    assert (results[1].stream, results[1].seq) == ("project:1", 1)
    assert [(r.stream, r.seq) for r in results[2]] == [("project:1", 2), ("staff", 1)]
    assert (results[3].stream, results[3].seq) == ("project:1", 3)
    assert Message.objects.get(stream__name=f"user:{ann.pk}").payload == {"role": "owner"}
    assert [m.payload for m in Message.objects.filter(stream__name="project:1").order_by("seq")] == [
        {"id": 1}, {"id": 2}, {}
    ]


@pytest.mark.parametrize(
    "bad, error, text",
    [
        (("orders", "created", {"at": object()}), EnvelopeError, "messages[2]: payload.at is a builtins.object"),
        (("orders", "ping", {}), EnvelopeError, "messages[2]: Message type 'ping' is reserved"),
        (("no spaces", "created", {}), StreamNameError, "messages[2]: Stream name 'no spaces' is invalid"),
        (("orders", "created", {"x": "y" * 70_000}), MessageTooLarge, "messages[2]: The encoded message is"),
        ({"target": "orders"}, EnvelopeError, "messages[2]: Give each message as"),
        ({"target": "orders", "type": "t", "persist": False, "idempotency_key": "k"}, EnvelopeError, "messages[2]: idempotency_key needs persist=True"),
        ("orders", EnvelopeError, "messages[2]: Give each message as"),
    ],
)
def test_one_invalid_item_refuses_the_whole_batch_naming_it(listen, bad, error, text):
    listener = listen("orders")
    with pytest.raises(error) as caught:
        notify_many([("orders", "created", {"n": 0}), ("orders", "created", {"n": 1}), bad])
    assert str(caught.value).startswith(text)
    assert caught.value.index == 2
    assert stored() == []
    listener.nothing()


def test_the_error_keeps_the_payload_path():
    with pytest.raises(EnvelopeError) as caught:
        notify_many([("orders", "created", {"items": [1, {"at": {1, 2}}]})])
    assert caught.value.path == "payload.items[1].at" and caught.value.index == 0


def test_ephemeral_items_are_pushed_not_stored(listen):
    listener = listen("cursor")
    results = notify_many([{"target": "cursor", "type": "moved", "persist": False}, ("orders", "created", {})])
    assert results[0].seq is None and results[1].seq == 1
    assert stored() == [("orders", 1, "created")]
    assert listener.get()["seq"] is None


def test_a_rolled_back_batch_stores_and_pushes_nothing(listen):
    listener = listen("orders")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            notify_many([("orders", "created", {}), ("orders", "created", {})])
            1 / 0
    listener.nothing()
    assert stored() == []
    assert notify("orders", "created").seq == 1


def test_messages_of_one_stream_travel_as_one_batch_in_order(listen):
    listener = listen("orders")
    results = notify_many([("orders", "created", {"n": n}) for n in range(3)])
    message = listener.get()
    assert message["type"] == "realtime.batch"
    assert message["messages"] == [["orders", r.seq, r.text] for r in results]
    listener.nothing()


def test_a_notice_to_many_streams_is_one_layer_message_to_every_server(listen, settings):
    hubs = listen("user:3")
    hubs.loop.run_until_complete(hubs.layer.group_add(layer.HUBS_GROUP, hubs.channel))
    streams = [f"user:{i}" for i in range(40)]
    results = notify(streams, "notice", {"title": "Maintenance at 22:00"})
    message = hubs.get()
    assert message["type"] == "realtime.batch"
    assert message["messages"] == [[r.stream, r.seq, r.text] for r in results]
    hubs.nothing()  # not also once more on user:3's own group


def test_a_few_streams_go_to_their_own_groups(listen):
    listener = listen("a", "b")
    notify(["a", "b"], "t")
    got = [listener.get(), listener.get()]
    assert sorted((m["type"], m["stream"]) for m in got) == [("realtime.message", "a"), ("realtime.message", "b")]


def test_after_commit_appends_once_the_caller_committed(listen):
    listener = listen("orders")
    with transaction.atomic():
        assert notify("orders", "created", {"id": 1}, after_commit=True) is None
        assert stored() == []  # nothing written, no lock held
        User.objects.create_user("ann")
    message = listener.get()
    assert (message["stream"], message["seq"]) == ("orders", 1)
    assert stored() == [("orders", 1, "created")]


def test_after_commit_is_dropped_with_a_rollback(listen):
    listener = listen("orders")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            notify_many([("orders", "created", {})], after_commit=True)
            1 / 0
    listener.nothing()
    assert stored() == []


def test_after_commit_outside_a_transaction_publishes_at_once():
    assert notify("orders", "created", after_commit=True).seq == 1


def test_after_commit_still_validates_in_the_caller():
    with pytest.raises(EnvelopeError):
        with transaction.atomic():
            notify("orders", "created", {"x": object()}, after_commit=True)


def test_an_after_commit_append_that_fails_is_logged_not_raised(monkeypatch, caplog):
    from realtime import store

    def broken(*args, **kwargs):
        raise RuntimeError("database gone")

    with caplog.at_level(logging.ERROR, logger="realtime"):
        with transaction.atomic():
            notify("orders", "created", after_commit=True)
            monkeypatch.setattr(store, "append_many", broken)
    assert "could not be stored after the transaction committed (streams: orders)" in caplog.text


def test_pushes_from_a_script_leave_without_waiting_and_are_flushed(listen):
    listener = listen("orders")
    for n in range(50):
        notify("orders", "created", {"n": n})
    assert layer.flush()
    seqs = []
    while len(seqs) < 50:
        message = listener.get()
        seqs += [item[1] for item in message["messages"]] if message["type"] == "realtime.batch" else [message["seq"]]
    assert seqs == list(range(1, 51))
