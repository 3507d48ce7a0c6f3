"""Errors raised by realtime.

Each error subclasses :class:`RealtimeError` and the builtin it resembles, so
callers can catch either ``realtime.RealtimeError`` or, say, ``ValueError``.
"""

from django.core.exceptions import ImproperlyConfigured


class RealtimeError(Exception):
    """Base class of every error raised by realtime."""


class EnvelopeError(RealtimeError, ValueError):
    """A message cannot be published: its type, payload or size is invalid.

    ``path`` names the offending place in the payload (``payload.items[2].at``)
    when there is one.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class MessageTooLarge(EnvelopeError):
    """The encoded envelope is larger than ``REALTIME["MAX_MESSAGE_SIZE"]``."""


class StreamNameError(RealtimeError, ValueError):
    """A stream name or publish target is not valid."""


class RealtimeConfigError(RealtimeError, ImproperlyConfigured):
    """A ``REALTIME`` setting is missing or wrong; the message names the key."""
