"""The background sender: publishers do not wait for Redis, sends coalesce, the queue is bounded."""

import asyncio
import time

from realtime import sender


class SlowLayer:
    """Stands in for channels-redis: each send takes ``delay`` seconds; records what arrives."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.batches = []

        async def deliver(layer, messages):
            await asyncio.sleep(self.delay)
            self.batches.append(list(messages))

        # One function, as realtime.layer passes: only sends with the same one coalesce.
        self.deliver = deliver


def test_submit_returns_before_the_send_and_flush_waits_for_it():
    layer = SlowLayer(delay=0.2)
    started = time.monotonic()
    assert sender.send(layer, layer.deliver, [1])
    assert time.monotonic() - started < 0.1
    assert layer.batches == []
    assert sender.flush(2)
    assert layer.batches == [[1]]


def test_what_queues_up_during_a_send_leaves_as_one_batch_in_order():
    layer = SlowLayer(delay=0.1)
    sender.send(layer, layer.deliver, [0])
    time.sleep(0.02)  # the first send is in flight
    for n in range(1, 100):
        sender.send(layer, layer.deliver, [n])
    assert sender.flush(2)
    assert layer.batches == [[0], list(range(1, 100))]


def test_a_full_queue_refuses_more(monkeypatch):
    monkeypatch.setattr(sender, "MAX_PENDING", 10)
    layer = SlowLayer(delay=0.3)
    assert sender.send(layer, layer.deliver, list(range(8)))
    assert not sender.send(layer, layer.deliver, list(range(3)))
    assert sender.flush(2)
    assert sender.send(layer, layer.deliver, list(range(3)))
    assert sender.flush(2)
    assert layer.batches == [list(range(8)), list(range(3))]


def test_a_failing_send_is_logged_and_the_next_one_still_goes(caplog):
    layer = SlowLayer()

    async def broken(layer_, messages):
        raise RuntimeError("boom")

    sender.send(layer, broken, [1])
    sender.send(layer, layer.deliver, [2])
    assert sender.flush(2)
    assert layer.batches == [[2]]
    assert "pushing 1 message(s) failed" in caplog.text
