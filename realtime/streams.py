"""Stream names, their channel-layer groups, and who may read them.

A stream is a named, ordered log of messages: ``broadcast`` (everyone allowed),
``user:<pk>`` (one user), ``staff``, and any application stream such as
``orders`` or ``project:12``.
"""

import hashlib
import inspect
import re

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from .conf import setting
from .exceptions import RealtimeConfigError, StreamNameError

BROADCAST = "broadcast"
STAFF = "staff"
USER_PREFIX = "user:"

# Used with fullmatch only: "$" would also accept a trailing newline.
STREAM_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,150}")
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def validate_stream(name):
    """Return ``name`` if it is a valid stream name, else raise :class:`StreamNameError`."""
    if not isinstance(name, str) or not STREAM_RE.fullmatch(name):
        raise StreamNameError(
            f"Stream name {name!r} is invalid: use 1-150 characters from "
            "A-Z a-z 0-9 _ . : @ -"
        )
    return name


def user_stream(user_or_pk):
    """The private stream of a user (or of a primary key)."""
    pk = getattr(user_or_pk, "pk", user_or_pk)
    if pk is None:
        raise StreamNameError("An unsaved or anonymous user has no stream.")
    return f"{USER_PREFIX}{pk}"


def group_name(stream):
    """Map a stream name to a valid Channels group name (``[A-Za-z0-9._-]``, < 100 chars).

    The readable part helps when looking at Redis; the hash keeps names that
    differ only in characters Channels does not allow from colliding.
    """
    digest = hashlib.blake2s(stream.encode("utf-8"), digest_size=8).hexdigest()
    return f"rt.{_GROUP_UNSAFE.sub('_', stream)[:60]}.{digest}"


def resolve_targets(target):
    """Turn a ``notify()`` target into a list of unique stream names, in order.

    A target is a stream name, a user instance, or a list/tuple/set of those.
    """
    if isinstance(target, (list, tuple, set, frozenset)):
        items = list(target)
        if not items:
            raise StreamNameError("notify() was given an empty list of targets.")
    else:
        items = [target]
    streams = []
    for item in items:
        if isinstance(item, str):
            name = validate_stream(item)
        elif hasattr(item, "pk") and hasattr(item, "is_authenticated"):
            if not item.is_authenticated:
                raise StreamNameError("Cannot notify an anonymous user.")
            name = user_stream(item)
        else:
            raise StreamNameError(
                f"notify() target must be a stream name, a user, or a list of them; "
                f"got {type(item).__name__}."
            )
        if name not in streams:
            streams.append(name)
    return streams


def default_streams(user):
    """Streams every connection of ``user`` joins: broadcast, its own, staff if staff."""
    if user is None or not user.is_authenticated:
        return [BROADCAST]
    streams = [BROADCAST, user_stream(user)]
    if user.is_staff:
        streams.append(STAFF)
    return streams


def default_authorize(user, stream):
    """The default read rule: broadcast, one's own user stream, staff for staff."""
    if stream == BROADCAST:
        return True
    if user is None or not user.is_authenticated:
        return False
    if stream == STAFF:
        return bool(user.is_staff)
    return stream == user_stream(user)


def load_hook(key):
    """The callable a ``REALTIME`` key names (a dotted path, or the callable itself)."""
    path = setting(key)
    if callable(path):
        return path
    try:
        return import_string(path)
    except ImportError as exc:
        raise RealtimeConfigError(
            f'settings.REALTIME["{key}"] = {path!r} cannot be imported: {exc}'
        ) from exc


def default_streams_of(user):
    """The configured ``DEFAULT_STREAMS`` of ``user``, from sync code (views, template tags)."""
    return [validate_stream(name) for name in load_hook("DEFAULT_STREAMS")(user)]


async def authorize(user, stream):
    """Ask the configured ``AUTHORIZE`` hook whether ``user`` may read ``stream``."""
    check = load_hook("AUTHORIZE")
    if check is default_authorize:
        return default_authorize(user, stream)
    if inspect.iscoroutinefunction(check):
        return bool(await check(user, stream))
    return bool(await sync_to_async(check)(user, stream))


async def streams_for(user):
    """The configured ``DEFAULT_STREAMS`` for a new connection of ``user``."""
    func = load_hook("DEFAULT_STREAMS")
    if func is default_streams:
        names = default_streams(user)
    elif inspect.iscoroutinefunction(func):
        names = await func(user)
    else:
        names = await sync_to_async(func)(user)
    return [validate_stream(name) for name in names]
