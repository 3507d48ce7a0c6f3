"""realtime: live notifications from any Django code to the browser, with none lost.

Publish with :func:`realtime.notify` (or ``await realtime.anotify(...)``).
"""

from .exceptions import (
    EnvelopeError,
    MessageTooLarge,
    RealtimeConfigError,
    RealtimeError,
    StreamNameError,
)

__version__ = "0.1.0"

__all__ = [
    "notify",
    "anotify",
    "notify_many",
    "anotify_many",
    "positions",
    "reset_stream",
    "disconnect_user",
    "adisconnect_user",
    "recheck_sessions",
    "EnvelopeError",
    "MessageTooLarge",
    "RealtimeConfigError",
    "RealtimeError",
    "StreamNameError",
]


def __getattr__(name):
    # The API imports models; load it on first use so importing the package in
    # settings or INSTALLED_APPS does not need the app registry.
    if name in ("notify", "anotify", "notify_many", "anotify_many", "positions", "reset_stream", "disconnect_user", "adisconnect_user", "recheck_sessions"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
