"""The demo project's ASGI stack: Origin checks and unknown paths."""

import pytest
from channels.testing import WebsocketCommunicator

from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def open_socket(path, origin):
    communicator = WebsocketCommunicator(application, path, headers=[(b"origin", origin), (b"host", b"127.0.0.1")])
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_foreign_origin_is_refused():
    communicator, connected = await open_socket("/ws/realtime/", b"http://evil.example")
    # A close before accept: daphne answers the handshake with HTTP 403.
    assert not connected


async def test_same_origin_reaches_the_consumer_which_wants_a_login():
    communicator, connected = await open_socket("/ws/realtime/", b"http://127.0.0.1:8000")
    assert connected
    output = await communicator.receive_output(2)
    assert output["type"] == "websocket.close" and output["code"] == 4401
    await communicator.disconnect()


async def test_unknown_path_is_refused_cleanly():
    communicator, connected = await open_socket("/ws/elsewhere/", b"http://127.0.0.1:8000")
    assert not connected
