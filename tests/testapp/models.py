"""Models used only by the test suite."""

from django.db import models

from realtime import sync


@sync.register(stream=lambda task: f"project:{task.project}", fields=["title", "status"])
class Task(models.Model):
    """Pushed with the default settings: all events, two fields."""

    project = models.IntegerField(default=1)
    title = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="open")
    notes = models.TextField(blank=True)


class Comment(models.Model):
    """Pushed with a serializer, only on creation, with a fixed type."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)
    hidden = models.BooleanField(default=False)


sync.register(
    Comment,
    stream=lambda comment: None if comment.hidden else f"project:{comment.task.project}",
    events=("created",),
    type="comment.added",
    serializer=lambda comment: {"text": comment.text.upper(), "task": comment.task_id},
)
