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

    # Make the last step fail, after both counters moved: all or nothing.
    def insert(*args):
        raise RuntimeError("the database went away half-way")

    monkeypatch.setattr(store, "_insert", insert)
    with pytest.raises(RuntimeError):
        notify(["a", "b"], "t", {"x": 2})
    assert seqs("a") == [1] and store.heads(["a", "b"]) == {"a": (1, store.heads(["a"])["a"][1]), "b": (1, store.heads(["b"])["b"][1])}


def test_concurrent_batches_on_overlapping_streams_stay_gapless_without_deadlock(settings):
    """8 processes publish notify_many() batches to random subsets, in random orders, of the same streams."""
    tmp = os.path.dirname(settings.DATABASES["default"].get("TEST", {}).get("NAME") or "/tmp/x")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.e2e_settings", "REALTIME_TEST_TMP": tmp}
    env.pop("REDIS_URL", None)
    names = [f"team:{i}" for i in range(6)]
    notify(names[:3], "t")  # half of them exist, half are created by the racing batches
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.publisher", ",".join(names), "15", "--batches", str(seed)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in range(8)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    got = {}
    for out, _ in outputs:
        for line in out.split("\n"):
            if line:
                name, seq = line.split()
                got.setdefault(name, []).append(int(seq))
    for name in names:
        first = 2 if name in names[:3] else 1
        assert sorted(got[name]) == list(range(first, first + len(got[name]))), name
        assert seqs(name) == list(range(1, first + len(got[name])))
        assert store.heads([name])[name][0] == len(seqs(name))


def test_a_batch_appends_in_order_with_consecutive_seqs_per_stream():
    notify("a", "t")
    entries = [store.Entry(name, "t", f'{{"i":{i}}}') for i, name in enumerate(["b", "a", "b", "c", "a"])]
    results = store.append_many(entries)
    assert [(r.stream, r.seq) for r in results] == [("b", 1), ("a", 2), ("b", 2), ("c", 1), ("a", 3)]
    texts = dict(Message.objects.values_list("id", "envelope"))
    assert sorted(texts.values()) == sorted([r.text for r in results] + [Message.objects.get(stream__name="a", seq=1).envelope])
    assert [m.payload["i"] for m in Message.objects.filter(stream__name="b").order_by("seq")] == [0, 2]


def test_idempotency_keys_within_a_batch_and_across_retries():
    entries = [
        store.Entry("orders", "t", '{"v":1}', "k1"),
        store.Entry("orders", "t", '{"v":2}', "k1"),  # the same key again: the first message
        store.Entry("orders", "t", '{"v":3}', "k2"),
        store.Entry("refunds", "t", '{"v":4}', "k1"),  # keys are per stream
    ]
    first = store.append_many(entries)
    assert [(r.stream, r.seq, r.created) for r in first] == [
        ("orders", 1, True), ("orders", 1, False), ("orders", 2, True), ("refunds", 1, True)
    ]
    assert first[1].id == first[0].id and first[1].text == first[0].text
    retry = store.append_many(entries)
    assert [(r.seq, r.created) for r in retry] == [(1, False), (1, False), (2, False), (1, False)]
    assert [r.text for r in retry] == [first[0].text, first[0].text, first[2].text, first[3].text]
    assert seqs("orders") == [1, 2] and seqs("refunds") == [1]
    assert store.append("orders", "t", "{}").seq == 3


def test_a_batch_costs_the_same_statements_whatever_its_size():
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    notify([f"user:{i}" for i in range(10)], "t")
    counts = []
    for size in (10, 600):
        with CaptureQueriesContext(conn) as queries:
            store.append_many([store.Entry(f"user:{i % 10}", "t", "{}") for i in range(size)])
        counts.append(len(queries))
    # 600 rows need a second multi-row INSERT (500 per statement), nothing else.
    assert counts[1] <= counts[0] + 1, counts


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
