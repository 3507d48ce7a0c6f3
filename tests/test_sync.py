"""Model-save pushes (realtime.sync) with the test app's Task and Comment models."""

import pytest
from django.db import models, transaction

from realtime import sync
from realtime.exceptions import RealtimeConfigError
from realtime.models import Message
from realtime.testing import capture_notifications
from tests.testapp.models import Comment, Task

pytestmark = pytest.mark.django_db


def frames(sent):
    return [(n.stream, n.type, n.payload) for n in sent]


def test_create_update_delete_push_the_right_envelopes():
    with capture_notifications() as sent:
        task = Task.objects.create(project=3, title="Write docs", notes="not pushed")
        task.status = "done"
        task.save()
        pk = task.pk
        task.delete()
    assert frames(sent) == [
        (
            "project:3",
            "testapp.task.created",
            {
                "model": "testapp.task",
                "pk": pk,
                "event": "created",
                "fields": {"title": "Write docs", "status": "open"},
            },
        ),
        (
            "project:3",
            "testapp.task.updated",
            {
                "model": "testapp.task",
                "pk": pk,
                "event": "updated",
                "fields": {"title": "Write docs", "status": "done"},
            },
        ),
        (
            "project:3",
            "testapp.task.deleted",
            {
                "model": "testapp.task",
                "pk": pk,
                "event": "deleted",
                "fields": {"title": "Write docs", "status": "done"},
            },
        ),
    ]
    assert [n.seq for n in sent] == [1, 2, 3]
    assert Message.objects.filter(stream__name="project:3").count() == 3


def test_update_fields_pushes_only_changed_registered_fields():
    task = Task.objects.create(title="a")
    with capture_notifications() as sent:
        task.status = "done"
        task.save(update_fields=["status", "notes"])
        task.notes = "x"
        task.save(update_fields=["notes"])
    assert frames(sent) == [
        (
            "project:1",
            "testapp.task.updated",
            {"model": "testapp.task", "pk": task.pk, "event": "updated", "fields": {"status": "done"}},
        ),
    ]


def test_nothing_is_pushed_or_stored_inside_a_rolled_back_atomic():
    with capture_notifications() as sent:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                Task.objects.create(title="rolled back")
                raise RuntimeError("boom")
    assert sent == []
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_push_waits_for_commit():
    with capture_notifications() as sent:
        with transaction.atomic():
            Task.objects.create(title="a")
            assert sent == []
        assert len(sent) == 1


def test_serializer_type_events_and_none_stream():
    task = Task.objects.create(project=5, title="t")
    with capture_notifications() as sent:
        comment = Comment.objects.create(task=task, text="hello")
        comment.text = "edited"
        comment.save()  # Comment is registered for "created" only
        Comment.objects.create(task=task, text="secret", hidden=True)  # stream callable returns None
        pk = comment.pk
        comment.delete()
    assert frames(sent) == [
        (
            "project:5",
            "comment.added",
            {
                "model": "testapp.comment",
                "pk": pk,
                "event": "created",
                "fields": {"text": "HELLO", "task": task.pk},
            },
        ),
    ]


def test_explicit_push_for_changes_signals_miss():
    first = Task.objects.create(title="a")
    second = Task.objects.create(title="b", project=2)
    with capture_notifications() as sent:
        Task.objects.update(status="archived")
        Task.objects.bulk_create([Task(title="c")])
        assert sent == []
        sync.push_many(Task.objects.filter(pk__in=[first.pk, second.pk]).order_by("pk"), event="updated")
        sync.push(first, event="deleted")
    assert [(n.stream, n.payload["pk"], n.payload["event"], n.payload["fields"]["status"]) for n in sent] == [
        ("project:1", first.pk, "updated", "archived"),
        ("project:2", second.pk, "updated", "archived"),
        ("project:1", first.pk, "deleted", "open"),
    ]


def test_raw_saves_push_nothing():
    with capture_notifications() as sent:
        Task.save_base(Task(title="fixture"), raw=True)
    assert sent == []


def test_registry_errors():
    with pytest.raises(sync.AlreadyRegistered):
        sync.register(Task, stream="x")
    with pytest.raises(sync.NotRegistered):
        sync.push(Message())
    with pytest.raises(RealtimeConfigError, match="has no field 'nope'"):
        sync.register(Message, stream="x", fields=["nope"])
    with pytest.raises(RealtimeConfigError, match="events"):
        sync.register(Message, stream="x", events=("saved",))
    with pytest.raises(RealtimeConfigError, match="not a string"):
        sync.register(Message, stream="x", fields="type")
    with pytest.raises(ValueError, match="event must be"):
        sync.push(Task(title="x"), event="saved")


def test_unregister_stops_pushes_and_register_as_call():
    sync.unregister(Task)
    try:
        with capture_notifications() as sent:
            Task.objects.create(title="silent")
        assert sent == []
        sync.register(Task, stream="tasks", fields=["title"], events=["updated"], type="task.changed")
        with capture_notifications() as sent:
            task = Task.objects.create(title="a")
            task.save()
        assert frames(sent) == [
            (
                "tasks",
                "task.changed",
                {"model": "testapp.task", "pk": task.pk, "event": "updated", "fields": {"title": "a"}},
            ),
        ]
    finally:
        sync.unregister(Task)
        sync.register(Task, stream=lambda task: f"project:{task.project}", fields=["title", "status"])


def test_decorator_returns_the_class():
    class Note(models.Model):
        text = models.CharField(max_length=10)

        class Meta:
            app_label = "testapp"

    try:
        assert sync.register(stream="notes", fields=["text"])(Note) is Note
        assert sync._registry[Note].fields == ("text",)
    finally:
        sync.unregister(Note)


def test_queryset_delete_publishes_per_object():
    first, second = Task.objects.create(title="a"), Task.objects.create(title="b")
    with capture_notifications() as sent:
        Task.objects.all().delete()
    assert sorted((n.type, n.payload["pk"]) for n in sent) == [
        ("testapp.task.deleted", first.pk),
        ("testapp.task.deleted", second.pk),
    ]
