"""Receivers that close a user's sockets when the user may no longer read them.

Connected by :meth:`realtime.apps.RealtimeConfig.ready` via :func:`connect`.
"""

from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import router, transaction
from django.db.models.signals import post_save


def connect():
    """Connect realtime's receivers (idempotent)."""
    user_logged_out.connect(close_on_logout, dispatch_uid="realtime.close_on_logout")
    post_save.connect(
        close_on_deactivation, sender=get_user_model(), dispatch_uid="realtime.close_on_deactivation"
    )


def close_on_logout(sender, request=None, user=None, **kwargs):
    """Logging out closes the user's sockets (on every server process) with 4401."""
    if user is not None and user.pk is not None:
        _disconnect_on_commit(user.pk)


def close_on_deactivation(sender, instance, created=False, update_fields=None, raw=False, **kwargs):
    """Saving a user with ``is_active=False`` closes their sockets once the save commits."""
    if created or raw or getattr(instance, "is_active", True):
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    _disconnect_on_commit(instance.pk, using=router.db_for_write(sender))


def _disconnect_on_commit(pk, using=None):
    from .api import disconnect_user

    transaction.on_commit(partial(disconnect_user, pk), using=using)
