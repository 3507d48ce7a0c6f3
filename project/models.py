from django.db import models
from django.utils.translation import gettext_lazy as _

from realtime import sync

#: The stream every board page listens to (see ``realtime_hooks.authorize``).
BOARD_STREAM = "board"


@sync.register(stream=BOARD_STREAM, fields=["title", "status"])
class Task(models.Model):
    """A card on the demo board; every save and delete is pushed to ``board`` when it commits."""

    class Status(models.TextChoices):
        TODO = "todo", _("To do")
        DOING = "doing", _("Doing")
        DONE = "done", _("Done")

    title = models.CharField(_("title"), max_length=200)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.TODO)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("task")
        verbose_name_plural = _("tasks")

    def __str__(self):
        return self.title

    def as_json(self):
        """What the board page gets for one task: the fields of its ``board`` messages, plus pk."""
        return {"pk": self.pk, "title": self.title, "status": self.status}

