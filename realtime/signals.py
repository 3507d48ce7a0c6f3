"""Receivers that close a user's sockets when the user may no longer read them.

Connected by :meth:`realtime.apps.RealtimeConfig.ready` via :func:`connect`.
Logout, deactivation and deletion close at once; any other save of a user
(a password change among them: Django sends no signal of its own for it)
makes that user's sockets check their session now rather than at the next
ping (see :mod:`realtime.sessions`).
"""

from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import router, transaction
from django.db.models.signals import post_delete, post_save

#: A save of only these fields leaves the session valid (login records last_login).
_HARMLESS_FIELDS = frozenset({"last_login"})


def connect():
    """Connect realtime's receivers (idempotent)."""
    User = get_user_model()
    user_logged_out.connect(close_on_logout, dispatch_uid="realtime.close_on_logout")
    post_save.connect(close_on_deactivation, sender=User, dispatch_uid="realtime.close_on_deactivation")
    post_save.connect(recheck_on_save, sender=User, dispatch_uid="realtime.recheck_on_save")
    post_delete.connect(close_on_delete, sender=User, dispatch_uid="realtime.close_on_delete")


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


def recheck_on_save(sender, instance, created=False, update_fields=None, raw=False, **kwargs):
    """Saving an active user (e.g. a new password) makes their sockets re-check their session."""
    if created or raw or not getattr(instance, "is_active", True):
        return
    if update_fields is not None and set(update_fields) <= _HARMLESS_FIELDS:
        return
    from .api import recheck_sessions
    from .conf import setting

    if not setting("VERIFY_SESSIONS"):
        return

    transaction.on_commit(partial(recheck_sessions, instance.pk), using=router.db_for_write(sender))


def close_on_delete(sender, instance, **kwargs):
    """Deleting a user closes their sockets once the delete commits."""
    if instance.pk is not None:
        _disconnect_on_commit(instance.pk, using=router.db_for_write(sender))


def _disconnect_on_commit(pk, using=None):
    from .api import disconnect_user

    transaction.on_commit(partial(disconnect_user, pk), using=using)
