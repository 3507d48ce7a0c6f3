"""Talking to the realtime consumer in-process, through Channels' WebsocketCommunicator.

Fixtures ``connect`` and ``make_user`` (tests/conftest.py) use :class:`Client`.
"""

import asyncio
import json
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import transaction

from realtime import store
from realtime.envelope import encode_payload
from realtime.routing import websocket_urlpatterns

app = URLRouter(websocket_urlpatterns)


def allow_orders(user, stream):
    return stream in ("broadcast", "orders", "project:1") or stream == f"user:{user.pk}"


@pytest.fixture
def make_user():
    async def make(name="alice", **extra):
        return await sync_to_async(User.objects.create_user)(name, **extra)

    return make


class Client:
    def __init__(self, communicator):
        self.c = communicator

    async def recv(self, timeout=2):
        return json.loads(await self.c.receive_from(timeout))

    async def send(self, frame):
        await self.c.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def messages(self, count, timeout=2):
        return [await self.recv(timeout) for _ in range(count)]

    async def nothing(self, timeout=0.3):
        assert await self.c.receive_nothing(timeout), "expected no frame"

    async def close_code(self, timeout=2):
        output = await self.c.receive_output(timeout)
        assert output["type"] == "websocket.close", output
        return output.get("code")


@pytest.fixture
async def connect():
    opened = []

    async def connect(user, resume=None, expect_welcome=True):
        path = "/ws/realtime/"
        if resume is not None:
            path += "?resume=" + quote(json.dumps(resume))
        communicator = WebsocketCommunicator(app, path)
        communicator.scope["user"] = user
        connected, _ = await communicator.connect()
        assert connected
        opened.append(communicator)
        client = Client(communicator)
        if expect_welcome:
            client.welcome = await client.recv()
            assert client.welcome["type"] == "welcome"
        return client

    yield connect
    for communicator in opened:
        if not communicator.future.done():
            await communicator.disconnect()


async def store_only(stream, type_="t", payload=None):
    """Append to the log without pushing: what a dropped layer message looks like."""

    def work():
        with transaction.atomic():
            return store.append(stream, type_, encode_payload(payload or {}))

    return await sync_to_async(work)()


async def eventually(condition, timeout=2.0):
    """Wait until ``condition()`` is true (polling the loop), or fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def seqs(frames):
    return [f["seq"] for f in frames]


