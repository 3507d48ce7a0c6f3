"""The durable log: one row per stream, one row per persisted message."""

import json
import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _


def new_epoch():
    """A short random token; a new one marks a stream whose history was reset."""
    return secrets.token_hex(4)


class Stream(models.Model):
    """A named sequence of messages with a gapless ``seq`` counter.

    ``last_seq`` is the seq of the newest committed message. ``epoch`` changes
    when the stream's history is reset, so clients holding seqs of the old
    history are told to resync instead of resuming.
    """

    name = models.CharField(_("name"), max_length=150, unique=True)
    last_seq = models.BigIntegerField(_("last seq"), default=0)
    epoch = models.CharField(_("epoch"), max_length=16, default=new_epoch)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("stream")
        verbose_name_plural = _("streams")
        ordering = ["name"]

    def __str__(self):
        return self.name


class Message(models.Model):
    """One persisted message; ``envelope`` is the exact JSON text sent to clients."""

    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="messages", verbose_name=_("stream")
    )
    seq = models.BigIntegerField(_("seq"))
    type = models.CharField(_("type"), max_length=100)
    envelope = models.TextField(_("envelope"))
    created_at = models.DateTimeField(_("created at"), db_index=True)
    idempotency_key = models.CharField(
        _("idempotency key"), max_length=200, null=True, blank=True
    )

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="realtime_message_seq"),
            models.UniqueConstraint(
                fields=["stream", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="realtime_message_idempotency",
            ),
        ]

    def __str__(self):
        return f"{self.stream.name}#{self.seq} {self.type}"

    @property
    def payload(self):
        """The message payload, decoded from the stored envelope."""
        return json.loads(self.envelope)["payload"]
