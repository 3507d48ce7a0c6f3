"""Helpers for testing code that uses realtime, in your own test suite.

``capture_notifications()`` records what ``notify()`` pushes, without a server
or channel layer; ``connect()`` opens a logged-in WebSocket to the realtime
consumer in-process with :class:`channels.testing.WebsocketCommunicator`.
"""

import json
from contextlib import contextmanager
from dataclasses import dataclass

from django.test import TestCase

__all__ = ["Notification", "capture_notifications", "connect"]


@dataclass(frozen=True)
class Notification:
    """One message as it was pushed to a stream; ``envelope`` is the decoded frame."""

    stream: str
    type: str
    payload: dict
    seq: int | None
    id: str
    envelope: dict


class CapturedNotifications(list):
    """A list of :class:`Notification` in push order, with a filter for convenience.

    ``revoked`` lists the user pks passed to ``disconnect_user()`` meanwhile.
    """

    def __init__(self):
        super().__init__()
        self.revoked = []

    def filter(self, stream=None, type=None):
        """The notifications of ``stream`` and/or ``type``."""
        return [
            n for n in self if (stream is None or n.stream == stream) and (type is None or n.type == type)
        ]


@contextmanager
def capture_notifications(*, forward=False, using=None):
    """Record every message ``notify()`` pushes inside the ``with`` block.

    Messages are recorded when they would be pushed, that is after the
    transaction commits: one published in a rolled-back ``atomic`` block is
    not recorded. In a test wrapped in a transaction (Django's ``TestCase``,
    pytest-django's ``django_db``), commit callbacks registered inside the
    block run when it exits, as Django's ``captureOnCommitCallbacks`` does.
    With ``forward=True`` messages also go to the channel layer as usual::

        with capture_notifications() as sent:
            order.ship()
        assert [(n.stream, n.type) for n in sent] == [("user:7", "order.shipped")]
    """
    from . import layer

    captured = CapturedNotifications()

    def record(messages):
        for message in messages:
            if message["type"] == layer.MESSAGE:
                frame = json.loads(message["text"])
                captured.append(
                    Notification(
                        stream=frame["stream"],
                        type=frame["type"],
                        payload=frame["payload"],
                        seq=frame["seq"],
                        id=frame["id"],
                        envelope=frame,
                    )
                )
            elif message["type"] == layer.REVOKE:
                captured.revoked.append(message["user"])

    with layer.tap(record, forward=forward):
        with TestCase.captureOnCommitCallbacks(using=using or _db_alias(), execute=True):
            yield captured


def _db_alias():
    from .store import db_alias

    return db_alias()


async def connect(user, path="/ws/realtime/", application=None, *, query_string="", timeout=5):
    """Open a WebSocket to the realtime consumer as ``user``; return ``(communicator, welcome)``.

    ``user`` is put in ``scope["user"]`` (None: anonymous). ``welcome`` is the
    decoded ``welcome`` frame. ``application`` defaults to realtime's
    WebSocket routes. Raise :class:`AssertionError` if the server refuses or
    closes the connection. Close it with ``await communicator.disconnect()``.

    The consumer reads the database from other threads, so the test must
    commit its data: use ``TransactionTestCase`` or
    ``@pytest.mark.django_db(transaction=True)``.
    """
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth.models import AnonymousUser

    from .routing import websocket_urlpatterns

    if application is None:
        application = URLRouter(websocket_urlpatterns)
    if query_string:
        path = f"{path}?{query_string}"
    communicator = WebsocketCommunicator(application, path)
    communicator.scope["user"] = user if user is not None else AnonymousUser()
    accepted, code = await communicator.connect(timeout=timeout)
    if not accepted:
        raise AssertionError(f"realtime refused the WebSocket (close code {code}).")
    first = await communicator.receive_output(timeout)
    if first["type"] == "websocket.close":
        await communicator.wait()
        raise AssertionError(f"realtime closed the WebSocket with code {first.get('code')}.")
    welcome = json.loads(first["text"])
    if welcome.get("type") != "welcome":
        raise AssertionError(f"expected a welcome frame first, got {welcome!r}.")
    return communicator, welcome
