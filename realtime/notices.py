"""Sending admin :class:`~realtime.models.Notice` objects to their audience."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .api import notify
from .streams import BROADCAST, STAFF, user_stream

#: The envelope type of a notice.
NOTICE_TYPE = "notice"


def audience_streams(notice):
    """The streams that reach the notice's audience, in a stable order.

    Everyone: ``broadcast``; staff: ``staff``; selected users: each one's
    stream; selected groups: the stream of each active member.
    """
    from .models import Notice

    if notice.audience == Notice.Audience.EVERYONE:
        return [BROADCAST]
    if notice.audience == Notice.Audience.STAFF:
        return [STAFF]
    users = get_user_model()._default_manager
    if notice.audience == Notice.Audience.USERS:
        pks = notice.users.values_list("pk", flat=True)
    else:
        pks = (
            users.filter(groups__in=notice.groups.all(), is_active=True)
            .values_list("pk", flat=True)
            .distinct()
        )
    return [user_stream(pk) for pk in sorted(pks)]


def payload(notice):
    """The payload of a notice's envelope: ``{id, title, body, level, link}``."""
    return {
        "id": notice.pk,
        "title": notice.title,
        "body": notice.body,
        "level": notice.level,
        "link": notice.link,
    }


def send(notice):
    """Publish ``notice`` to its audience; return the list of ``Published`` (may be empty).

    Every call publishes new messages (new seqs). Inside a transaction the
    messages are stored with it and pushed when it commits.
    """
    from .models import Notice

    streams = audience_streams(notice)
    if not streams:
        return []
    with transaction.atomic():
        published = notify(streams, NOTICE_TYPE, payload(notice), inbox=True)
        now = timezone.now()
        Notice.objects.filter(pk=notice.pk).update(sent_at=now, send_count=F("send_count") + 1)
    notice.sent_at = now
    notice.send_count = Notice.objects.values_list("send_count", flat=True).get(pk=notice.pk)
    return published
