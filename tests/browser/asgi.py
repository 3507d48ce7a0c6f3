"""The demo project's ASGI app plus WebSocket routes that misbehave on purpose.

``ws/test/close/?code=N`` sends a ``welcome`` and closes with code N
(``code=raise`` raises instead, which daphne turns into 1011);
``ws/test/garbage/`` sends frames a client must survive, then a valid one;
``ws/test/script/`` plays a server that repeats, skips and resyncs (see
:class:`ScriptedConsumer`); ``ws/test/slow/`` and ``ws/test/too-many/`` close
like a server shedding a slow reader (4010) or refusing one socket too many
(4029).
"""

import json
from urllib.parse import parse_qs

# First: it sets Django up, which the imports below need.
from project.asgi import django_asgi_app  # isort: skip

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from realtime.routing import not_found_urlpatterns, websocket_urlpatterns


def authorize(user, stream):
    """``REALTIME["AUTHORIZE"]`` of the subscribe tests: the defaults plus ``orders``."""
    from realtime.streams import default_authorize

    return stream == "orders" or default_authorize(user, stream)


def frame(type_, payload, stream="", seq=None):
    return json.dumps(
        {"type": type_, "stream": stream, "seq": seq, "id": "", "ts": "2026-01-01T00:00:00.000Z", "payload": payload}
    )


WELCOME = frame("welcome", {"protocol": 1, "streams": {}, "epochs": {}, "heartbeat": 60000, "user": None})

#: What ``ws/test/garbage/`` sends after its welcome, in order.
GARBAGE = [
    {"text": '{"type": "notice", "payload": {"title": "unterminated'},
    {"bytes": b"\x00\xff\xfe binary, not UTF-8"},
    {"text": '{"type": "notice", "stream": "", "seq": null, "payload": ["wrong", "shape"]}'},
    {"text": frame("notice", {"title": "after the garbage"})},
]


class CloseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(WELCOME)
        code = parse_qs(self.scope["query_string"].decode()).get("code", ["1000"])[0]
        if code == "raise":
            raise RuntimeError("test-only consumer failing on purpose (daphne answers 1011)")
        await self.close(code=int(code))


class SlowReaderConsumer(AsyncWebsocketConsumer):
    """Stream ``s``: the message after the client's ``?resume=`` position, then close with 4010."""

    async def connect(self):
        await self.accept()
        resume = parse_qs(self.scope["query_string"].decode()).get("resume")
        last = (json.loads(resume[0])["streams"].get("s") if resume else None) or 0
        await self.send(frame("welcome", {"protocol": 1, "streams": {"s": last}, "epochs": {"s": "e1"}, "heartbeat": 60000}))
        await self.send(frame("notice", {"n": last + 1}, stream="s", seq=last + 1))
        await self.close(code=4010)


class TooManyConnectionsConsumer(AsyncWebsocketConsumer):
    """What the server does with a socket over ``MAX_CONNECTIONS_PER_USER``: an error frame, then 4029."""

    async def connect(self):
        await self.accept()
        message = "You already have 50 open connections; close a tab and reload."
        await self.send(frame("error", {"code": "too_many_connections", "message": message}))
        await self.close(code=4029)


class GarbageConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(WELCOME)
        for item in GARBAGE:
            await self.send(text_data=item.get("text"), bytes_data=item.get("bytes"))


class ScriptedConsumer(AsyncWebsocketConsumer):
    """Stream ``s`` with duplicates, a resync, a stale and a skipped message.

    Answers ``resume`` with the messages after the client's seq up to 13 or,
    once a pong has claimed more, up to 15; answers ``ping`` with head 15.
    """

    async def connect(self):
        await self.accept()
        self.head = 13
        await self.send(frame("welcome", {"protocol": 1, "streams": {"s": 0}, "epochs": {"s": "e1"}, "heartbeat": 60000}))
        for seq in (1, 2, 1, 2, 3):
            await self.message(seq)
        await self.send(frame("resync", {"stream": "s", "seq": 10, "epoch": "e2", "reason": "pruned"}, stream="s"))
        for seq in (11, 5, 13):
            await self.message(seq)

    async def receive(self, text_data=None, bytes_data=None):
        data = json.loads(text_data)
        if data["type"] == "ping":
            self.head = 15
            await self.send(frame("pong", {"streams": {"s": 15}, "id": data.get("id")}))
        elif data["type"] == "resume":
            for seq in range(data["streams"]["s"] + 1, self.head + 1):
                await self.message(seq)

    async def message(self, seq):
        await self.send(frame("notice", {"n": seq}, stream="s", seq=seq))


test_urlpatterns = [
    path("ws/test/script/", ScriptedConsumer.as_asgi()),
    path("ws/test/close/", CloseConsumer.as_asgi()),
    path("ws/test/garbage/", GarbageConsumer.as_asgi()),
    path("ws/test/slow/", SlowReaderConsumer.as_asgi()),
    path("ws/test/too-many/", TooManyConnectionsConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(test_urlpatterns + websocket_urlpatterns + not_found_urlpatterns))
        ),
    }
)
