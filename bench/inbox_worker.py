"""The measuring process of ``python -m bench.inbox``: fills one private database, times the inbox, prints JSON.

bench/inbox.py starts it with the environment of one database (SQLite or
PostgreSQL, migrated, ``DJANGO_SETTINGS_MODULE=bench.settings``, a private
Redis) and the sizes as a JSON argument. It writes progress to stderr and
its results as one JSON object on the last line of stdout.

The data is what the real code writes: users with ``bulk_create``, the log
with :func:`realtime.store.append_many` in batches (``Entry(..., inbox=True)``
for inbox items, so ``Message.inbox_seq`` and ``Stream.inbox_head`` are
realtime's own), read state with :func:`realtime.inbox.mark_read`. Next to
it, django-notifications-hq's table (``notifications_notification``, one row
per recipient, its fields and indexes as its migrations 0001-0009 leave them)
is created from an equivalent model and filled with the same notifications.
"""

import datetime
import json
import os
import random
import re
import statistics
import sys
import time

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.db import connection, models, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.inbox import USER_STREAM_SHARES, inbox_streams  # noqa: E402
from realtime import inbox, notify  # noqa: E402
from realtime.envelope import encode_payload  # noqa: E402
from realtime.models import InboxState, Message, Stream  # noqa: E402
from realtime.store import Entry, append_many  # noqa: E402

#: Messages per append_many() call while filling the log.
FILL_BATCH = 5000
#: Share of the measured user's streams' messages that are not inbox items
#: (model sync and the like), per inbox item.
NOISE = 0.6
#: Share of inbox items among the messages of the other streams.
OTHER_INBOX = 1 / 3
JOINED = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)


class Failed(Exception):
    """The data or a measurement is not what it must be: the run is worthless."""


def log(text):
    print(f"[{connection.vendor}] {text}", file=sys.stderr, flush=True)


# django-notifications-hq's model ------------------------------------------------


class Notification(models.Model):
    """``notifications.base.models.AbstractNotification`` of django-notifications-hq 1.8.3, as migrated.

    Same columns, types, ``db_index`` flags, ``index_together = ("recipient",
    "unread")`` and ordering; ``data`` is jsonfield's JSONField, a text column.
    Only the reverse relation names differ (not in the schema).
    """

    id = models.AutoField(primary_key=True)
    level = models.CharField(max_length=20, default="info")
    recipient = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    unread = models.BooleanField(default=True, db_index=True)
    actor_content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    actor_object_id = models.CharField(max_length=255)
    verb = models.CharField(max_length=255)
    description = models.TextField(blank=True, null=True)
    target_content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+", null=True)
    target_object_id = models.CharField(max_length=255, blank=True, null=True)
    action_object_content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", null=True
    )
    action_object_object_id = models.CharField(max_length=255, blank=True, null=True)
    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    public = models.BooleanField(default=True, db_index=True)
    deleted = models.BooleanField(default=False, db_index=True)
    emailed = models.BooleanField(default=False, db_index=True)
    data = models.TextField(blank=True, null=True)

    class Meta:
        app_label = "notifications"
        db_table = "notifications_notification"
        ordering = ("-timestamp",)
        indexes = [models.Index(fields=["recipient", "unread"], name="notificatio_recipie_index_together")]


# Measuring ----------------------------------------------------------------------

_INSERT_DELETE = re.compile(r'\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|DELETE\s+FROM)\s+"?(\w+)', re.I)
_UPDATE = re.compile(r'\bUPDATE\s+"?(\w+)"?\s+SET\b', re.I)  # not "SELECT ... FOR UPDATE"
_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


def statements_of(captured):
    """``(statements, write statements, tables written)`` of captured queries; transaction control left out."""
    real = [q["sql"] for q in captured if not _CONTROL.match(q["sql"])]
    tables, writes = set(), 0
    for sql in real:
        found = _INSERT_DELETE.findall(sql) + _UPDATE.findall(sql)
        if found:
            writes += 1
            tables.update(found)
    return len(real), writes, sorted(tables)


def timed(call, calls, warmup=3, before=None):
    """Median, p90 and min in ms of ``calls`` timed calls after ``warmup`` untimed ones; ``before`` runs untimed."""
    samples = []
    for index in range(warmup + calls):
        if before is not None:
            before()
        began = time.perf_counter()
        call()
        elapsed = time.perf_counter() - began
        if index >= warmup:
            samples.append(elapsed * 1000)
    samples.sort()
    return {
        "ms": statistics.median(samples),
        "p90": samples[round(0.9 * (len(samples) - 1))],
        "min": samples[0],
        "calls": calls,
    }


def counted(call, before=None, snapshot=None):
    """One more call with its queries captured: statements, writes, tables, and rows changed per table.

    ``snapshot()`` returns ``{table: state}`` taken before and after the call:
    an int is a row count (rows added = the difference), a dict maps each
    row's key to a version of it (rows changed = keys new or different).
    ``call`` may return ``{table: rows}`` itself (an ``UPDATE``'s count).
    """
    if before is not None:
        before()
    start = snapshot() if snapshot else {}
    with CaptureQueriesContext(connection) as queries:
        told = call()
    end = snapshot() if snapshot else {}
    statements, writes, tables = statements_of(queries.captured_queries)
    rows = dict(told) if isinstance(told, dict) else {}
    for table, now in end.items():
        if isinstance(now, int):
            changed = now - start[table]
        else:
            changed = sum(1 for key, version in now.items() if start[table].get(key) != version)
        if changed:
            rows[table] = changed
    return {"queries": statements, "writes": writes, "tables": tables, "rows": rows}


class Statements:
    """Records the SQL and parameters of every statement run through Django's cursors (``execute_wrapper``)."""

    def __init__(self):
        self.seen = []

    def __call__(self, execute, sql, params, many, context):
        self.seen.append((sql, params))
        return execute(sql, params, many, context)


def recorded(call):
    """``(sql, params)`` of the statements ``call`` runs."""
    statements = Statements()
    with connection.execute_wrapper(statements):
        call()
    return statements.seen


def explain(sql, params):
    """The plan of one statement: EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        depth, lines = {0: -1}, []
        for node, parent, _unused, detail in cursor.fetchall():
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)


def scalar(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


# Filling ------------------------------------------------------------------------


class World:
    """The run's data: users, the log (realtime) and the notifications table (hq), and the measured user."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.me = None
        self.names = []  # the measured user's inbox streams
        self.items = {}  # inbox items per stream of the measured user
        self.read = {}  # inbox_seqs the measured user read, per stream

    def fill(self):
        began = time.monotonic()
        self.users()
        self.fill_s = {"users": time.monotonic() - began}
        began = time.monotonic()
        self.fill_log()
        self.fill_s["log"] = time.monotonic() - began
        began = time.monotonic()
        self.read_state()
        self.fill_s["read state"] = time.monotonic() - began
        began = time.monotonic()
        self.notifications()
        self.fill_s["notifications"] = time.monotonic() - began
        if connection.vendor == "postgresql":
            began = time.monotonic()
            # What autovacuum does soon after a bulk load: statistics for the planner,
            # and a visibility map for index-only scans (hq's count uses one).
            with connection.cursor() as cursor:
                for table in ("realtime_message", "realtime_stream", "realtime_inboxstate", "auth_user",
                              "notifications_notification"):
                    cursor.execute(f"VACUUM ANALYZE {table}")
            self.fill_s["vacuum analyze"] = time.monotonic() - began

    def users(self):
        count = self.sizes["users"]
        for start in range(0, count, 5000):
            User.objects.bulk_create(
                [User(username=f"u{n:07d}", password="!", date_joined=JOINED) for n in range(start, min(count, start + 5000))]
            )
        self.me = User.objects.order_by("pk").first()
        self.user_pks = list(User.objects.order_by("pk").values_list("pk", flat=True))
        if len(self.user_pks) != count or self.user_pks[-1] - self.user_pks[0] != count - 1:
            raise Failed(f"expected {count} users with consecutive pks, got {len(self.user_pks)}")
        self.names = inbox_streams(self.me)
        log(f"{count:,} users; the measured user is {self.me.username}, inbox streams {self.names}")

    def plan(self):
        """``{stream: (inbox items, other messages)}`` over ``streams`` streams, ``messages`` in all."""
        s = self.sizes
        plan = {}
        for name, (share, noise) in zip(self.names, USER_STREAM_SHARES):
            plan[name] = (round(s["my_items"] * share), round(s["my_items"] * NOISE * noise))
        others = [name for name in inbox_streams_universe(self.user_pks) if name not in plan][: s["streams"] - len(plan)]
        left = s["messages"] - sum(a + b for a, b in plan.values())
        if left < len(others):
            raise Failed(f"{s['messages']} messages cannot fill {s['streams']} streams")
        for index, name in enumerate(others):
            count = left // len(others) + (index < left % len(others))
            items = round(count * OTHER_INBOX)
            plan[name] = (items, count - items)
        return plan

    def fill_log(self):
        plan = self.plan()
        self.items = {name: plan[name][0] for name in self.names}
        names = list(plan)
        deck = []
        for index, (items, other) in enumerate(plan.values()):
            deck.extend([2 * index + 1] * items)
            deck.extend([2 * index] * other)
        random.Random(20261126).shuffle(deck)
        total = len(deck)
        log(f"filling the log: {total:,} messages over {len(plan):,} streams "
            f"({sum(self.items.values()):,} inbox items in the measured user's 5) with append_many, "
            f"{FILL_BATCH:,} per call")
        began = time.monotonic()
        for start in range(0, total, FILL_BATCH):
            entries = []
            for offset, card in enumerate(deck[start : start + FILL_BATCH]):
                n = start + offset
                if card & 1:
                    payload = {"title": f"Build #{n} finished", "url": f"/builds/{n}/", "level": "info"}
                    entries.append(Entry(names[card >> 1], "notice", encode_payload(payload), None, True))
                else:
                    payload = {"model": "task", "pk": n, "fields": {"done": bool(n & 1)}}
                    entries.append(Entry(names[card >> 1], "task.updated", encode_payload(payload), None, False))
            append_many(entries)
            if start and start % (FILL_BATCH * 40) == 0:
                log(f"  {start:,} messages, {start / (time.monotonic() - began):,.0f}/s")
        self.check_log(plan)

    def check_log(self, plan=None):
        """Every stream's counters match its rows: ``last_seq`` = rows = max seq, ``inbox_head`` = items = max inbox_seq."""
        bad = scalar(
            "SELECT count(*) FROM realtime_stream s LEFT JOIN (SELECT stream_id, count(*) AS n, max(seq) AS top, "
            "count(inbox_seq) AS items, max(inbox_seq) AS head FROM realtime_message GROUP BY stream_id) m "
            "ON m.stream_id = s.id WHERE s.last_seq <> coalesce(m.n, 0) OR s.last_seq <> coalesce(m.top, 0) "
            "OR s.inbox_head <> coalesce(m.items, 0) OR s.inbox_head <> coalesce(m.head, 0)"
        )
        if bad:
            raise Failed(f"{bad} stream(s) whose last_seq/inbox_head do not match their messages")
        if plan is not None:
            heads = dict(Stream.objects.values_list("name", "inbox_head"))
            wrong = {name: (heads.get(name), items) for name, (items, _) in plan.items() if heads.get(name, 0) != items}
            if wrong:
                raise Failed(f"inbox_head differs from the plan: {dict(list(wrong.items())[:5])}")
            rows = Message.objects.count()
            if rows != sum(a + b for a, b in plan.values()):
                raise Failed(f"the log holds {rows} messages, the plan {sum(a + b for a, b in plan.values())}")

    def read_state(self):
        """The measured user reads the oldest items of each stream (a cursor) and three more above it."""
        inbox.unread_count(self.me)  # creates the state rows, as a first visit does
        for name in self.names:
            n = self.items[name]
            prefix = min(500, n // 4)
            wanted = set(range(1, prefix + 1)) | {k for k in (prefix + 10, prefix + 20, prefix + 30) if k <= n}
            seqs = list(
                Message.objects.filter(stream__name=name, inbox_seq__in=sorted(wanted)).values_list("seq", flat=True)
            )
            for start in range(0, len(seqs), 500):
                inbox.mark_read(self.me, [(name, seq) for seq in seqs[start : start + 500]])
            self.read[name] = wanted
        self.expected_unread = sum(self.items[name] - len(self.read[name]) for name in self.names)
        self.read_count = sum(len(r) for r in self.read.values())
        got = inbox.unread_count(self.me)["total"]
        if got != self.expected_unread:
            raise Failed(f"unread_count() says {got}, the items read leave {self.expected_unread}")
        log(f"read state: {self.read_count} items read, {got:,} unread")

    def notifications(self):
        """hq's table with the same notifications: the measured user's 100,000 among other users' rows."""
        with connection.schema_editor() as editor:
            editor.create_model(Notification)
            # Indexes and foreign keys are built after the load, as a restore would.
            later = [str(sql) for sql in editor.deferred_sql]
            editor.deferred_sql.clear()
        s = self.sizes
        total, mine = s["hq_rows"], s["my_items"]
        if total % mine or total // mine < 2:
            raise Failed("hq_rows must be a multiple (> 1) of my_items")
        every = total // mine  # one row in `every` is the measured user's
        if connection.vendor == "postgresql":
            stamp = "TIMESTAMPTZ '2024-01-01 00:00:00+00' + n * INTERVAL '1 second'"
        else:
            stamp = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', '2024-01-01 00:00:00', '+' || n || ' seconds')"
        actor = ContentType.objects.get_for_model(User).pk
        first, others = self.user_pks[0], len(self.user_pks) - 1
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
                "INSERT INTO notifications_notification (level, recipient_id, unread, actor_content_type_id, "
                "actor_object_id, verb, description, target_content_type_id, target_object_id, "
                "action_object_content_type_id, action_object_object_id, timestamp, public, deleted, emailed, data) "
                "SELECT 'info', "
                f"CASE WHEN n %% {every} = 0 THEN %s ELSE %s + 1 + n %% %s END, "
                # The measured user read as many as in realtime (its oldest); others a third.
                f"CASE WHEN n %% {every} = 0 THEN n / {every} > %s ELSE n %% 3 <> 0 END, "
                "%s, CAST(n %% 997 AS TEXT), 'finished', 'Build #' || CAST(n AS TEXT) || ' finished', "
                f"NULL, NULL, NULL, NULL, {stamp}, "
                "n = n, n <> n, n <> n, '{\"url\": \"/builds/' || CAST(n AS TEXT) || '/\"}' FROM g",
                [total, first, first, others, self.read_count, actor],
            )
            for sql in later:
                cursor.execute(sql)
        rows = Notification.objects.count()
        unread = Notification.objects.filter(recipient=self.me, unread=True).count()
        if rows != total or unread != self.expected_unread:
            raise Failed(f"hq table: {rows} rows, {unread} unread for the measured user; "
                         f"expected {total} and {self.expected_unread}")
        log(f"hq table: {rows:,} rows, {Notification.objects.filter(recipient=self.me).count():,} "
            f"of the measured user, {unread:,} unread; {len(later)} indexes and constraints")


def inbox_streams_universe(user_pks):
    """Stream names in the order the fill takes them for other streams: teams, projects, then users."""
    from bench.inbox import PROJECTS, TEAMS

    names = [f"team:{n}" for n in range(TEAMS)] + [f"project:{n}" for n in range(PROJECTS)]
    return names + [f"user:{pk}" for pk in user_pks]


# The operations -----------------------------------------------------------------

PAGES = (1, 2, 50)


class Realtime:
    """realtime's side of each operation: :mod:`realtime.inbox` and ``notify()``."""

    label = "realtime"

    def __init__(self, world):
        self.world, self.me = world, world.me

    def snapshot(self):
        """The rows a realtime write may change: the user's state rows, every stream's counters, the log's size."""
        return {
            "inboxstate": {
                pk: (at, upto) for pk, at, upto in InboxState.objects.values_list("pk", "updated_at", "read_upto")
            },
            "stream": {pk: (a, b) for pk, a, b in Stream.objects.values_list("pk", "last_seq", "inbox_head")},
            "message": Message.objects.count(),
        }

    def unread(self):
        got = inbox.unread_count(self.me)["total"]
        if got != self.world.expected_unread:
            raise Failed(f"unread_count() = {got}, expected {self.world.expected_unread}")

    def cursors(self):
        """The ``before`` that leads to each of :data:`PAGES` (None for page 1), by paging with ``next``."""
        found, before = {1: None}, None
        for number in range(2, max(PAGES) + 1):
            before = inbox.items(self.me, before=before, limit=20)["next"]
            if before is None:
                raise Failed(f"the inbox ended before page {number}")
            found[number] = before
        return {number: found[number] for number in PAGES}

    def page(self, number, before):
        def call():
            got = inbox.items(self.me, before=before, limit=20)["items"]
            if len(got) != 20:
                raise Failed(f"page {number} has {len(got)} items")

        return call

    def per_stream_query(self, call):
        """The (sql, params) of the page query that reads the user's own stream."""
        pk = Stream.objects.get(name=self.world.names[2]).pk
        seen = recorded(call)
        for sql, params in seen:
            where = sql.find('"stream_id" = %s')
            if "realtime_message" in sql and "inbox_seq" in sql and where > 0 and params[sql[:where].count("%s")] == pk:
                return sql, params
        raise Failed(f"no query of the stream {pk} among those items() ran: {seen}")

    def set_unread(self, per_stream):
        """Before a mark-all-read (untimed): ``per_stream`` unread items in each stream, or all (None)."""
        heads = dict(Stream.objects.filter(name__in=self.world.names).values_list("pk", "inbox_head"))
        for pk, stream_pk in InboxState.objects.filter(user=self.me).values_list("pk", "stream_id"):
            upto = 0 if per_stream is None else heads[stream_pk] - per_stream
            InboxState.objects.filter(pk=pk).update(read_upto=upto, read=[])
        want = sum(self.world.items.values()) if per_stream is None else per_stream * len(heads)
        got = inbox.unread_count(self.me)["total"]
        if got != want:
            raise Failed(f"set {want} unread items, unread_count() says {got}")

    def mark_all_read(self):
        left = inbox.mark_all_read(self.me)["total"]
        if left:
            raise Failed(f"mark_all_read() left {left} unread")

    def broadcast(self):
        notify("broadcast", "notice", {"title": "Maintenance tonight at 22:00", "url": "/status/"}, inbox=True)


class Hq:
    """django-notifications-hq's side: the ORM calls its views and ``notify.send()`` make."""

    label = "hq"

    def __init__(self, world):
        self.world, self.me = world, world.me
        self.mine = Notification.objects.filter(recipient=self.me)

    def snapshot(self):
        return {"notification": Notification.objects.count()}

    def unread(self):
        # live_unread_notification_count: request.user.notifications.unread().count()
        got = Notification.objects.filter(recipient=self.me, unread=True).count()
        if got != self.world.expected_unread:
            raise Failed(f"hq unread count = {got}, expected {self.world.expected_unread}")

    def page(self, number, _before=None):
        # AllNotificationsList: a ListView, paginate_by 20, over user.notifications.all() (ordering -timestamp).
        def call():
            got = list(Paginator(self.mine.all(), 20).page(number).object_list)
            if len(got) != 20:
                raise Failed(f"hq page {number} has {len(got)} rows")

        return call

    def set_unread(self, count):
        """Before a mark-all-read (untimed): the newest ``count`` rows unread, or all (None)."""
        if count is None:
            self.settle(self.mine.update(unread=True))
            self.expect = self.world.sizes["my_items"]
        else:
            self.settle(self.mine.filter(unread=True).update(unread=False))
            newest = list(self.mine.order_by("-timestamp").values_list("pk", flat=True)[:count])
            self.expect = Notification.objects.filter(pk__in=newest).update(unread=True)

    def settle(self, changed):
        """After an untimed write of many rows, vacuum them away on PostgreSQL (untimed).

        Otherwise the next timed statement wades through the dead row versions
        of the reset (measured: a mark-all-read of 10 rows took 60 ms instead
        of 1 ms); in production autovacuum does this work, in the background.
        """
        if changed >= 10_000 and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM notifications_notification")

    def mark_all_read(self):
        # mark_all_as_read view: user.notifications.mark_all_as_read() = filter(unread=True).update(unread=False)
        changed = Notification.objects.filter(recipient=self.me, unread=True).update(unread=False)
        if changed != self.expect:
            raise Failed(f"hq mark all read changed {changed} rows, expected {self.expect}")
        return {"notification (updated)": changed}

    def broadcast(self):
        """A notice to every user, one row each, in one ``INSERT ... SELECT``: the per-recipient model's floor."""
        actor = ContentType.objects.get_for_model(User).pk
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO notifications_notification (level, recipient_id, unread, actor_content_type_id, "
                "actor_object_id, verb, description, timestamp, public, deleted, emailed, data) "
                "SELECT 'info', id, %s, %s, '1', 'announced', 'Maintenance tonight at 22:00', %s, %s, %s, %s, "
                "'{\"url\": \"/status/\"}' FROM auth_user",
                [True, actor, now, True, False, False],
            )
            added = cursor.rowcount
        if added != self.world.sizes["users"]:
            raise Failed(f"hq broadcast wrote {added} rows for {self.world.sizes['users']} users")

    def notify_send(self, recipients):
        """django-notifications-hq's ``notify_handler`` loop (1.8.3): one ``save()`` per recipient, in one transaction."""
        actor = self.me
        content_type = ContentType.objects.get_for_model(actor)
        timestamp = timezone.now()
        with transaction.atomic():
            for recipient in User.objects.all()[:recipients]:
                Notification(
                    recipient=recipient,
                    actor_content_type=content_type,
                    actor_object_id=actor.pk,
                    verb="announced",
                    public=True,
                    description="Maintenance tonight at 22:00",
                    timestamp=timestamp,
                    level="info",
                ).save()

    def forget_new(self, top):
        """Delete the rows a broadcast added (untimed), so every call starts from the same table."""
        self.settle(Notification.objects.filter(pk__gt=top).delete()[0])


def measure(world):
    """Every operation on both sides; the figures and the plans."""
    s = world.sizes
    calls, heavy = s["calls"], s["heavy_calls"]
    rt, hq = Realtime(world), Hq(world)
    out = {"realtime": {}, "hq": {}, "explain": {}}

    def record(side, key, figure, count):
        out[side.label][key] = {**figure, **count}
        extra = f", {count['rows']}" if count.get("rows") else ""
        log(f"{side.label:8} {key:16} {figure['ms']:9.2f} ms (p90 {figure['p90']:.2f}, n={figure['calls']}), "
            f"{count['queries']} queries, {count['writes']} writes{extra}")

    # 1. Unread count.
    for side in (rt, hq):
        record(side, "unread", timed(side.unread, calls), counted(side.unread))
    # The first count of a user creates its state rows (realtime only): 20 users' first calls.
    firsts = [User.objects.get(pk=pk) for pk in world.user_pks[1 : 1 + calls]]
    samples = []
    for user in firsts:
        began = time.perf_counter()
        inbox.unread_count(user)
        samples.append((time.perf_counter() - began) * 1000)
    probe = User.objects.get(pk=world.user_pks[1 + calls])
    record(rt, "unread_first", _figure(samples), counted(lambda: inbox.unread_count(probe) and None, snapshot=rt.snapshot))
    # Its per-stream query for the newest item older than the user's join date, on the largest stream.
    fresh = User.objects.get(pk=world.user_pks[2 + calls])
    big = Stream.objects.get(name="broadcast").pk
    for sql, params in recorded(lambda: inbox.unread_count(fresh)):
        if "created_at" in sql and "realtime_message" in sql and big in params:
            out["explain"]["realtime first unread_count(), the join-date query of broadcast"] = (
                f"{_inline(sql, params)}\n\n{explain(sql, params)}"
            )

    # 4. Pages, and the plans behind them.
    cursors = rt.cursors()
    for number, before in cursors.items():
        for side in (rt, hq):
            call = side.page(number, before)
            record(side, f"page{number}", timed(call, calls), counted(call))
    for number in (1, 50):
        sql, params = rt.per_stream_query(rt.page(number, cursors[number]))
        out["explain"][f"realtime items() page {number}, query of the stream user:<pk>"] = (
            f"{_inline(sql, params)}\n\n{explain(sql, params)}"
        )
    for key, call in (("hq unread count", hq.unread), ("hq page 50", hq.page(50))):
        sql, params = [q for q in recorded(call) if "notifications_notification" in q[0]][-1]
        out["explain"][key] = f"{_inline(sql, params)}\n\n{explain(sql, params)}"

    # 2. Mark all read, 10 and all unread.
    for key, unread in (("mark10", 2), ("mark_all", None)):
        before = lambda: rt.set_unread(unread)  # noqa: E731
        record(rt, key, timed(rt.mark_all_read, calls, before=before),
               counted(rt.mark_all_read, before, rt.snapshot))
    for key, unread, n in (("mark10", 10, calls), ("mark_all", None, heavy)):
        before = lambda: hq.set_unread(unread)  # noqa: E731
        record(hq, key, timed(hq.mark_all_read, n, warmup=1, before=before),
               counted(hq.mark_all_read, before, hq.snapshot))

    # 3. A notice to every user.
    record(rt, "broadcast", timed(rt.broadcast, calls), counted(rt.broadcast, snapshot=rt.snapshot))
    top = Notification.objects.order_by("-pk").values_list("pk", flat=True).first()
    forget = lambda: hq.forget_new(top)  # noqa: E731
    record(hq, "broadcast", timed(hq.broadcast, heavy, warmup=1, before=forget),
           counted(hq.broadcast, forget, hq.snapshot))
    forget()
    sample = min(1000, s["users"])
    send = lambda: hq.notify_send(sample)  # noqa: E731
    figure = timed(send, heavy, warmup=1, before=forget)
    scale = s["users"] / sample
    figure = {**figure, "ms": figure["ms"] * scale, "p90": figure["p90"] * scale, "min": figure["min"] * scale,
              "sample": sample}
    count = counted(send, forget, hq.snapshot)
    count["rows"] = {table: round(n * scale) for table, n in count["rows"].items()}
    count["queries"] += round(count["writes"] * (scale - 1))
    count["writes"] = round(count["writes"] * scale)
    record(hq, "notify_send", figure, count)
    forget()
    return out


def _figure(samples):
    samples = sorted(samples)
    return {"ms": statistics.median(samples), "p90": samples[round(0.9 * (len(samples) - 1))],
            "min": samples[0], "calls": len(samples)}


def _inline(sql, params):
    """The statement with its parameters written in, to read (the plan is of the parametrized one)."""
    text = sql.replace("{", "{{").replace("}", "}}").replace("%s", "{}")
    return text.format(*(p if isinstance(p, (int, float)) else f"'{p}'" for p in params))


def main():
    sizes = json.loads(sys.argv[1])
    began = time.monotonic()
    world = World(sizes)
    world.fill()
    fill = time.monotonic() - began
    load = os.getloadavg()[0]
    out = measure(world)
    world.check_log()
    out.update(
        sizes={**sizes, "log rows": Message.objects.count(), "streams (log)": Stream.objects.count(),
               "hq rows": Notification.objects.count(), "expected unread": world.expected_unread},
        fill=world.fill_s,
        fill_total=fill,
        measure_s=time.monotonic() - began - fill,
        load=[load, os.getloadavg()[0]],
        version=connection.Database.sqlite_version if connection.vendor == "sqlite"
        else scalar("SHOW server_version").split()[0],
    )
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Failed as exc:
        log(f"FAILED: {exc}")
        raise SystemExit(2) from None
