"""The durable log: gapless seqs under concurrency, idempotency, retention, reset."""

import datetime
import os
import subprocess
import sys
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from realtime import store
from realtime.api import notify
from realtime.models import Message, Stream
from tests.procs import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_sensitive]


def seqs(stream):
    return list(Message.objects.filter(stream__name=stream).order_by("seq").values_list("seq", flat=True))


def test_first_message_creates_the_stream_with_seq_1():
    result = notify("orders", "created", {"id": 1})
    assert (result.stream, result.seq, result.created) == ("orders", 1, True)
    stream = Stream.objects.get(name="orders")
    assert stream.last_seq == 1 and len(stream.epoch) == 8


def test_seqs_are_per_stream():
    notify("a", "t")
    notify("a", "t")
    notify("b", "t")
    assert seqs("a") == [1, 2] and seqs("b") == [1]


def test_stored_envelope_is_the_text_that_is_sent():
    result = notify("orders", "created", {"name": "咖啡 ☕"})
    message = Message.objects.get(stream__name="orders", seq=1)
    assert message.envelope == result.text
    assert message.payload == {"name": "咖啡 ☕"}
    assert message.type == "created"


def test_idempotency_key_yields_the_first_message_and_keeps_the_log_gapless():
    first = notify("orders", "created", {"v": 1}, idempotency_key="order-17")
    again = notify("orders", "created", {"v": 2}, idempotency_key="order-17")
    after = notify("orders", "created", {"v": 3})
    assert again.created is False and again.seq == first.seq and again.id == first.id
    assert again.text == first.text
    assert after.seq == 2
    assert seqs("orders") == [1, 2]


def test_rolled_back_publish_leaves_no_gap():
    notify("orders", "t")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            notify("orders", "t")
            raise RuntimeError("rollback")
    assert notify("orders", "t").seq == 2
    assert seqs("orders") == [1, 2]


def _publish_from_threads(stream, threads, per_thread):
    errors = []

    def work():
        try:
            for _ in range(per_thread):
                notify(stream, "t")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_concurrent_threads_get_exactly_1_to_n():
    errors = _publish_from_threads("hot", threads=8, per_thread=25)
    assert errors == []
    assert seqs("hot") == list(range(1, 201))
    assert Stream.objects.get(name="hot").last_seq == 200


def test_concurrent_threads_creating_the_same_stream():
    # Every thread's first publish races to create the stream row.
    errors = _publish_from_threads("fresh", threads=8, per_thread=1)
    assert errors == []
    assert seqs("fresh") == list(range(1, 9))


def test_concurrent_processes_get_exactly_1_to_n(settings):
    tmp = os.path.dirname(settings.DATABASES["default"].get("TEST", {}).get("NAME") or "/tmp/x")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.e2e_settings", "REALTIME_TEST_TMP": tmp}
    env.pop("REDIS_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.publisher", "multi", "25"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(8)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    got = sorted(int(line) for out, _ in outputs for line in out.split())
    assert got == list(range(1, 201))
    assert seqs("multi") == list(range(1, 201))


def test_multi_target_publish_is_one_transaction(monkeypatch):
    results = notify(["b", "a", "b"], "t", {"x": 1})
    assert [r.stream for r in results] == ["b", "a"]
    assert all(r.seq == 1 for r in results)
    assert seqs("a") == [1] and seqs("b") == [1]

    # Streams are appended in name order; make the second one fail.
    real_append = store.append

    def append(name, *args, **kwargs):
        if name == "b":
            raise RuntimeError("the database went away half-way")
        return real_append(name, *args, **kwargs)

    monkeypatch.setattr(store, "append", append)
    with pytest.raises(RuntimeError):
        notify(["a", "b"], "t", {"x": 2})
    # All or nothing: "a" kept neither the message nor the seq.
    assert seqs("a") == [1] and store.heads(["a"])["a"][0] == 1


def test_heads_reports_unknown_streams_as_zero():
    notify("orders", "t")
    heads = store.heads(["orders", "nothing-yet"])
    assert heads["orders"][0] == 1 and heads["orders"][1]
    assert heads["nothing-yet"] == (0, "")


def test_read_after_returns_ordered_pages():
    for _ in range(5):
        notify("orders", "t")
    assert [s for s, _ in store.read_after("orders", 1, 2)] == [2, 3]
    assert [s for s, _ in store.read_after("orders", 3, 10)] == [4, 5]
    assert store.read_after("orders", 5, 10) == []


def test_prune_by_count_keeps_the_newest():
    for _ in range(10):
        notify("orders", "t")
    notify("other", "t")
    assert store.prune(max_count=3) == 7
    assert seqs("orders") == [8, 9, 10]
    assert seqs("other") == [1]


def test_prune_by_age_always_keeps_the_newest_message():
    for _ in range(3):
        notify("orders", "t")
    Message.objects.update(created_at=timezone.now() - datetime.timedelta(days=30))
    assert store.prune(max_age=3600) == 2
    assert seqs("orders") == [3]
    # The counter is untouched: the next message is 4, not 1.
    assert notify("orders", "t").seq == 4


def test_reset_starts_a_new_epoch():
    notify("orders", "t")
    old = Stream.objects.get(name="orders").epoch
    epoch = store.reset("orders")
    assert epoch and epoch != old
    assert seqs("orders") == []
    assert notify("orders", "t").seq == 1
    assert store.reset("missing") is None
