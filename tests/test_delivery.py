"""Per-socket delivery decisions, without Channels: order, duplicates, gaps, held streams, resume."""

import pytest

from realtime.delivery import Delivery, Live, start_position


def joined(*streams, at=0, limit=1000):
    delivery = Delivery(limit)
    for stream in streams:
        delivery.join(stream)
        delivery.last[stream] = at
        delivery.release(stream)
    return delivery


def test_in_order_messages_are_sent_and_duplicates_dropped():
    d = joined("s")
    assert [d.live("s", seq, "x") for seq in (1, 2, 2, 1, 3)] == [
        Live.SEND, Live.SEND, Live.DROP, Live.DROP, Live.SEND,
    ]
    assert d.last["s"] == 3


def test_a_gap_holds_the_stream_and_the_queue_drains_in_order():
    d = joined("s")
    assert d.live("s", 3, "three") is Live.GAP
    assert d.is_held("s")
    assert d.live("s", 5, "five") is Live.HELD
    assert d.live("s", 4, "four") is Live.HELD
    assert d.live("s", None, "ephemeral") is Live.DROP  # never replayed, so not queued either
    # The catch-up reads 1 and 2 from the log ...
    d.last["s"] = 2
    # ... then takes the queue, sorted, each once.
    assert d.drain("s") == (["three", "four", "five"], False)
    assert d.last["s"] == 5


def test_drain_stops_at_a_gap_for_the_log_to_fill():
    d = joined("s")
    d.live("s", 2, "two")
    d.live("s", 4, "four")
    d.last["s"] = 1
    assert d.drain("s") == (["two"], True)
    assert d.last["s"] == 2


def test_messages_of_streams_not_joined_are_dropped():
    assert joined("s").live("other", 1, "x") is Live.DROP


def test_ephemeral_messages_pass_when_not_held():
    d = joined("s", at=7)
    assert d.live("s", None, "typing") is Live.SEND and d.last["s"] == 7


def test_a_queue_over_the_limit_is_dropped_and_the_log_read_instead():
    d = joined("s", limit=10)
    assert d.live("s", 3, "x" * 6) is Live.GAP
    assert d.live("s", 4, "y" * 6) is Live.HELD  # 12 bytes would wait: dropped
    assert d.take_overflow("s") is True and d.take_overflow("s") is False
    assert d.drain("s") == ([], False)


def test_leave_forgets_everything():
    d = joined("s")
    d.live("s", 3, "x")
    assert d.leave("s") is True and d.leave("s") is False
    assert "s" not in d and not d.is_held("s") and not d.has_queued("s")


@pytest.mark.parametrize(
    "since, their_epoch, head, epoch, expected",
    [
        (None, None, 9, "e1", (9, None)),  # new messages only
        (4, "e1", 9, "e1", (4, None)),  # resume
        (4, None, 9, "e1", (4, None)),  # no epoch known yet: trust the seq
        (9, "e1", 9, "e1", (9, None)),  # up to date
        (4, "e0", 9, "e1", (9, "epoch")),  # the history was reset
        (12, "e1", 9, "e1", (9, "ahead")),  # e.g. the database was recreated
        (0, "e1", 0, "", (0, None)),  # a stream that never had a message
    ],
)
def test_start_position(since, their_epoch, head, epoch, expected):
    assert start_position(since, their_epoch, head, epoch) == expected


def test_held_streams_share_one_budget():
    """A socket replaying many streams at once cannot queue the limit once per stream."""
    d = joined("a", "b", "c", limit=10)
    assert d.live("a", 3, "x" * 6) is Live.GAP
    assert d.live("b", 3, "y" * 6) is Live.GAP  # 12 bytes in all: b's queue goes
    assert d.queued_bytes == 6 and d.take_overflow("b") and not d.overflowed("a")
    assert d.live("c", 3, "z" * 4) is Live.GAP
    assert d.queued_bytes == 10
    d.release("a")
    assert d.queued_bytes == 4
    d.last["c"] = 2
    assert d.drain("c") == (["z" * 4], False) and d.queued_bytes == 0
