"""The durable log (streams, messages), publish tokens and admin notices."""

import json
import secrets

from django.conf import settings
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
    # Inbox items get their own running number per stream (Message.inbox_seq),
    # so unread counts subtract ordinals of inbox items only. Every inbox item
    # up to inbox_floor has been pruned.
    inbox_head = models.BigIntegerField(_("inbox items"), default=0)
    inbox_floor = models.BigIntegerField(_("pruned inbox items"), default=0)
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

    # No index of its own: the unique (stream, seq) index serves every lookup
    # by stream. No database constraint either: rows are only written with
    # the pk of the stream row the publish holds locked, Django's CASCADE
    # deletes a stream's messages, and PostgreSQL's deferred check cost ~10 %
    # of a publish (a second lock on the stream row at every commit).
    stream = models.ForeignKey(
        Stream,
        on_delete=models.CASCADE,
        related_name="messages",
        verbose_name=_("stream"),
        db_index=False,
        db_constraint=False,
    )
    seq = models.BigIntegerField(_("seq"))
    type = models.CharField(_("type"), max_length=100)
    envelope = models.TextField(_("envelope"))
    created_at = models.DateTimeField(_("created at"), db_index=True)
    idempotency_key = models.CharField(
        _("idempotency key"), max_length=200, null=True, blank=True
    )
    # The item's number among its stream's inbox items (1, 2, 3 ...); None for
    # messages that are not inbox items (realtime.inbox).
    inbox_seq = models.BigIntegerField(_("inbox seq"), null=True, blank=True)

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
        indexes = [
            # An inbox page: one stream's newest inbox items, backwards from a cursor.
            models.Index(
                fields=["stream", "inbox_seq"],
                condition=models.Q(inbox_seq__isnull=False),
                name="realtime_message_inbox",
            ),
        ]

    def __str__(self):
        return f"{self.stream.name}#{self.seq} {self.type}"

    @property
    def payload(self):
        """The message payload, decoded from the stored envelope."""
        return json.loads(self.envelope)["payload"]


class InboxState(models.Model):
    """What one user has read of one stream's inbox items.

    Every inbox item with ``inbox_seq <= read_upto`` is read; ``read`` lists
    the read ones above it (kept short: reading the next item moves the
    cursor), ``archived`` the archived ones anywhere (archived is read too).
    Unread = the stream's ``inbox_head`` - ``max(read_upto, inbox_floor)`` -
    the entries of ``read`` above the floor: one row per user and stream,
    whatever the history's size, and nothing per recipient when a stream is
    published to.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("user")
    )
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="inbox_states", verbose_name=_("stream")
    )
    read_upto = models.BigIntegerField(_("read up to"), default=0)
    read = models.JSONField(_("read above the cursor"), default=list, blank=True)
    archived = models.JSONField(_("archived"), default=list, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("inbox state")
        verbose_name_plural = _("inbox states")
        constraints = [
            models.UniqueConstraint(fields=["user", "stream"], name="realtime_inbox_state_user_stream"),
        ]

    def __str__(self):
        return f"{self.user} @ {self.stream}"


def validate_stream_patterns(value):
    """Each line must be a stream name, optionally with the globs ``*``, ``?`` and ``[...]``."""
    import re

    from django.core.exceptions import ValidationError

    lines = [line.strip() for line in value.splitlines() if line.strip()]
    if not lines:
        raise ValidationError(_("Give at least one stream pattern."), code="required")
    bad = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.:@*?\[\]!-]{1,150}", line)]
    if bad:
        raise ValidationError(
            _("Not a stream pattern: %(patterns)s. Use A-Z a-z 0-9 _ . : @ - and * ? [ ]."),
            code="invalid",
            params={"patterns": ", ".join(bad)},
        )


class PublishToken(models.Model):
    """A bearer token that lets a program publish through the HTTP API.

    Only a SHA-256 of the token is stored; the token itself is shown once, when
    it is created. ``prefix`` is the public part that finds the row; ``streams``
    holds the stream name patterns (globs such as ``orders:*``, one per line)
    the token may publish to.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)
    streams = models.TextField(
        _("allowed streams"),
        validators=[validate_stream_patterns],
        help_text=_(
            "Stream name patterns this token may publish to, one per line; "
            "* matches anything, e.g. orders:* or user:*."
        ),
    )
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("publish token")
        verbose_name_plural = _("publish tokens")
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def patterns(self):
        """The allowed stream patterns as a list."""
        return [line.strip() for line in self.streams.splitlines() if line.strip()]


def validate_link(value):
    """Accept a site-relative path or an http(s) URL, nothing a browser would run."""
    from django.core.exceptions import ValidationError
    from django.core.validators import URLValidator

    if value.startswith("/") and not value.startswith("//"):
        return
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError(
            _("Enter a path starting with / or an http(s) URL."), code="invalid"
        ) from None


class Notice(models.Model):
    """An announcement written in the admin and pushed to its audience as a ``notice``."""

    class Level(models.TextChoices):
        INFO = "info", _("Info")
        SUCCESS = "success", _("Success")
        WARNING = "warning", _("Warning")
        ERROR = "error", _("Error")

    class Audience(models.TextChoices):
        EVERYONE = "everyone", _("Everyone")
        STAFF = "staff", _("Staff")
        USERS = "users", _("Selected users")
        GROUPS = "groups", _("Selected groups")

    title = models.CharField(_("title"), max_length=200)
    body = models.TextField(_("body"), blank=True)
    level = models.CharField(_("level"), max_length=10, choices=Level.choices, default=Level.INFO)
    link = models.CharField(_("link"), max_length=500, blank=True, validators=[validate_link])
    audience = models.CharField(
        _("audience"), max_length=10, choices=Audience.choices, default=Audience.EVERYONE
    )
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="+",
        verbose_name=_("users"),
        help_text=_("Used when the audience is “Selected users”."),
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="+",
        verbose_name=_("groups"),
        help_text=_("Used when the audience is “Selected groups”."),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
        editable=False,
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("last sent at"), null=True, blank=True, editable=False)
    send_count = models.PositiveIntegerField(_("times sent"), default=0, editable=False)

    class Meta:
        verbose_name = _("notice")
        verbose_name_plural = _("notices")
        ordering = ["-created_at"]

    def __str__(self):
        return self.title
