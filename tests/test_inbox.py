"""The inbox: counts in O(1), pages, mark read / all read / archive, pushes, bad input."""

import datetime
import json

import hypothesis
import pytest
from django.contrib.auth.models import User
from hypothesis import strategies as st
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime import inbox, notify, notify_many, reset_stream
from realtime.inbox import InboxError
from realtime.models import InboxState, Message, Stream
from realtime.store import prune
from realtime.testing import capture_notifications

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_sensitive]


@pytest.fixture
def ann():
    return User.objects.create_user("ann", date_joined=timezone.now() - datetime.timedelta(days=1))


@pytest.fixture
def bob():
    return User.objects.create_user("bob", date_joined=timezone.now() - datetime.timedelta(days=1))


def counts(user):
    return inbox.unread_count(user)["streams"]


def test_only_inbox_items_count_and_a_broadcast_is_stored_once(ann, bob):
    notify("broadcast", "notice", {"n": 1}, inbox=True)
    notify("broadcast", "task.updated", {"n": 2})  # model sync and the like never count
    notify(ann, "mention", {"n": 3}, inbox=True)
    assert Message.objects.filter(stream__name="broadcast").count() == 2
    assert inbox.unread_count(ann) == {
        "total": 2,
        "streams": {"broadcast": 1, f"user:{ann.pk}": 1},
        # The newest seq the counts include: the task.updated message is in, though it does not count.
        "heads": {"broadcast": 2, f"user:{ann.pk}": 1},
    }
    assert inbox.unread_count(bob)["total"] == 1


def test_inbox_types_setting(ann, settings):
    settings.REALTIME = {"INBOX_TYPES": ["mention"]}
    notify(ann, "mention", {})
    notify(ann, "mention", {}, inbox=False)
    notify(ann, "other", {})
    assert counts(ann)[f"user:{ann.pk}"] == 1


def test_items_before_the_user_joined_are_read(bob):
    notify("broadcast", "notice", {"old": True}, inbox=True)
    Message.objects.update(created_at=timezone.now() - datetime.timedelta(days=2))
    notify("broadcast", "notice", {"old": False}, inbox=True)
    assert counts(bob)["broadcast"] == 1


def test_mark_read_all_read_and_archive(ann):
    seqs = [notify(ann, "mention", {"n": n}, inbox=True).seq for n in range(5)]
    stream = f"user:{ann.pk}"
    assert inbox.mark_read(ann, [{"stream": stream, "seq": seqs[1]}, (stream, seqs[3])])["streams"][stream] == 3
    page = inbox.items(ann)
    assert [(i["payload"]["n"], i["read"]) for i in page["items"]] == [(4, False), (3, True), (2, False), (1, True), (0, False)]
    assert inbox.archive(ann, [(stream, seqs[0])])["streams"][stream] == 2
    assert [i["payload"]["n"] for i in inbox.items(ann)["items"]] == [4, 3, 2, 1]
    state = InboxState.objects.get(user=ann)
    assert (state.read_upto, state.read) == (2, [4])  # the cursor moved over 1 and 2... of inbox seqs
    assert inbox.mark_all_read(ann)["total"] == 0
    assert InboxState.objects.get(user=ann).read == []


def test_mark_all_read_writes_one_row_whatever_the_unread(ann):
    notify_many([(ann, "mention", {"n": n}) for n in range(300)], persist=True) and None
    Message.objects.filter(stream__name=f"user:{ann.pk}").update(inbox_seq=None)
    notify_many([{"target": ann, "type": "mention", "payload": {"n": n}, "inbox": True} for n in range(300)])
    assert inbox.unread_count(ann)["total"] == 300
    with CaptureQueriesContext(connection) as queries:
        inbox.mark_all_read(ann)
    writes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT"))]
    # the state row, and the inbox.changed message (counter + row)
    assert len([w for w in writes if "realtime_inboxstate" in w]) <= 2, writes
    assert inbox.unread_count(ann)["total"] == 0


def test_unread_count_is_two_queries_at_most(ann):
    notify(["broadcast", ann], "notice", {}, inbox=True)
    inbox.unread_count(ann)  # creates the state rows
    with CaptureQueriesContext(connection) as queries:
        inbox.unread_count(ann)
    assert len(queries) <= 2


def test_pages_are_stable_newest_first_across_streams(ann):
    for n in range(7):
        notify("broadcast" if n % 2 else ann, "notice", {"n": n}, inbox=True)
    first = inbox.items(ann, limit=3)
    assert [i["payload"]["n"] for i in first["items"]] == [6, 5, 4]
    notify(ann, "notice", {"n": 7}, inbox=True)  # arrives while paging: not on the next pages
    second = inbox.items(ann, before=first["next"], limit=3)
    assert [i["payload"]["n"] for i in second["items"]] == [3, 2, 1]
    third = inbox.items(ann, before=second["next"], limit=3)
    assert [i["payload"]["n"] for i in third["items"]] == [0]
    assert third["next"] is None


def test_changes_are_pushed_to_the_users_stream(ann):
    result = notify(ann, "mention", {}, inbox=True)
    with capture_notifications() as sent:
        inbox.mark_read(ann, [(result.stream, result.seq)])
    [changed] = sent.filter(type=inbox.CHANGED)
    assert changed.stream == f"user:{ann.pk}"
    assert changed.payload == {
        "read": [[result.stream, result.seq]],
        "unread": {"total": 0, "streams": {"broadcast": 0, f"user:{ann.pk}": 0}, "heads": {"broadcast": 0, f"user:{ann.pk}": 1}},
    }
    assert '"inbox":true' in result.text and '"inbox"' not in json.dumps(changed.envelope).replace('"type": "inbox.changed"', "")


@pytest.mark.parametrize(
    "refs, code",
    [
        ([("user:999", 1)], "unknown_stream"),  # another user's item
        ([("orders", 1)], "unknown_stream"),  # not an inbox stream of this user
        ([("broadcast", 99)], "not_an_item"),  # beyond the head
        ([("broadcast", 2)], "not_an_item"),  # a message that is not an inbox item
        ([("broadcast", "1")], "invalid"),
        ([{"stream": "broadcast"}], "invalid"),
        ("broadcast:1", "invalid"),
        ([("broadcast", 1)] * 501, "too_many"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(ann, refs, code):
    notify("broadcast", "notice", {}, inbox=True)
    notify("broadcast", "task.updated", {})
    notify("orders", "notice", {}, inbox=True)
    before = inbox.unread_count(ann)
    with pytest.raises(InboxError) as caught:
        inbox.mark_read(ann, refs)
    assert caught.value.code == code
    assert inbox.unread_count(ann) == before


def test_anonymous_users_have_no_inbox():
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(InboxError, match="signed-in"):
        inbox.unread_count(AnonymousUser())


def test_prune_beyond_the_cursor_keeps_counts_right(ann):
    for n in range(10):
        notify(ann, "mention", {"n": n}, inbox=True)
    inbox.mark_read(ann, [(f"user:{ann.pk}", 9)])  # also stores an inbox.changed, seq 11
    assert counts(ann)[f"user:{ann.pk}"] == 9
    prune(max_count=3)  # seqs 1..8 are gone, unread or not
    assert Stream.objects.get(name=f"user:{ann.pk}").inbox_floor == 8
    assert counts(ann)[f"user:{ann.pk}"] == 1  # 10; 9 was read
    assert [(i["seq"], i["read"]) for i in inbox.items(ann)["items"]] == [(10, False), (9, True)]


def test_reset_stream_starts_the_inbox_again(ann):
    notify(ann, "mention", {}, inbox=True)
    inbox.mark_all_read(ann)
    reset_stream(f"user:{ann.pk}")
    notify(ann, "mention", {}, inbox=True)
    assert counts(ann)[f"user:{ann.pk}"] == 1


def two_streams(user):
    """INBOX_STREAMS for the property tests: fresh streams per user."""
    return [f"team:{user.pk}", f"user:{user.pk}"]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from([0, 1]), st.booleans()),
        st.tuples(st.just("read"), st.lists(st.integers(0, 30), max_size=4)),
        st.tuples(st.just("archive"), st.lists(st.integers(0, 30), max_size=3)),
        st.tuples(st.just("all"), st.sampled_from([None, 0, 1])),
    ),
    max_size=25,
)


@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(operations)
def test_counts_match_a_model_over_any_interleaving(settings, ops):
    settings.REALTIME = {"INBOX_STREAMS": "tests.test_inbox.two_streams"}
    user = User.objects.create_user(f"u{User.objects.count()}", date_joined=timezone.now() - datetime.timedelta(days=1))
    names = two_streams(user)
    items, read, archived = [], set(), set()  # items: (stream, seq) of inbox items in publish order
    for op in ops:
        if op[0] == "publish":
            _, which, is_item = op
            result = notify(names[which], "t", {}, inbox=is_item)
            if is_item:
                items.append((result.stream, result.seq))
        elif op[0] in ("read", "archive") and items:
            refs = [items[i % len(items)] for i in op[1]]
            if op[0] == "read":
                inbox.mark_read(user, refs)
            else:
                inbox.archive(user, refs)
                archived.update(refs)
            read.update(refs)
        elif op[0] == "all":
            stream = None if op[1] is None else names[op[1]]
            inbox.mark_all_read(user, stream)
            read.update(ref for ref in items if stream in (None, ref[0]))
        expected = {name: sum(1 for ref in items if ref[0] == name and ref not in read) for name in names}
        assert counts(user) == expected
    listed = [(i["stream"], i["seq"]) for i in inbox.items(user, limit=100)["items"]]
    assert listed == [ref for ref in sorted(items, key=lambda r: -Message.objects.get(stream__name=r[0], seq=r[1]).pk) if ref not in archived]


def test_two_tabs_marking_while_items_arrive_end_exact(ann, settings):
    """Concurrent writers: two "tabs" mark disjoint items read while a third publishes."""
    import threading

    from django.db import connections

    first = [notify(ann, "mention", {"n": n}, inbox=True) for n in range(40)]
    errors = []

    def run(work):
        try:
            work()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    tabs = [
        lambda: [inbox.mark_read(ann, [(r.stream, r.seq)]) for r in first[0::2]],
        lambda: [inbox.mark_read(ann, [(r.stream, r.seq)]) for r in first[1::2][:15]],
        lambda: [notify(ann, "mention", {"late": n}, inbox=True) for n in range(20)],
    ]
    threads = [threading.Thread(target=run, args=(work,)) for work in tabs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    # 40 + 20 items, 20 + 15 read
    assert counts(ann)[f"user:{ann.pk}"] == 25


async def test_frames_mark_read_and_answer_the_new_counts(connect, make_user):
    from asgiref.sync import sync_to_async

    from realtime import anotify

    user = await make_user("carol")
    client = await connect(user)
    first = await anotify(user, "mention", {"n": 1}, inbox=True)
    await anotify(user, "mention", {"n": 2}, inbox=True)
    assert [f["seq"] for f in await client.messages(2)] == [1, 2]
    await client.send({"type": "inbox.read", "id": 7, "items": [{"stream": first.stream, "seq": first.seq}]})
    # The reply, and the inbox.changed pushed to every socket of the user, in either order.
    frames = {frame["type"]: frame for frame in await client.messages(2)}
    reply, changed = frames["inbox"], frames["inbox.changed"]
    assert (reply["payload"]["id"], reply["payload"]["unread"]["total"]) == (7, 1)
    assert changed["payload"]["read"] == [[first.stream, first.seq]]
    await client.send({"type": "inbox.read", "items": [{"stream": "user:999", "seq": 1}]})
    error = await client.recv()
    assert (error["type"], error["payload"]["code"]) == ("error", "unknown_stream")
    await client.send({"type": "inbox.read_all"})
    frames = {frame["type"]: frame for frame in await client.messages(2)}
    assert frames["inbox"]["payload"]["unread"]["total"] == 0
    assert (await sync_to_async(inbox.unread_count)(user))["total"] == 0
