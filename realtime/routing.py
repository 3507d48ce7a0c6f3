"""WebSocket routes: include ``websocket_urlpatterns`` in your ASGI application."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from .consumers import RealtimeConsumer
from .servers import daphne

# Building the WebSocket routes means a server is being set up: under daphne,
# give its HTTP connections a deadline for their request headers (slowloris).
daphne.install()

#: The default mount point; the JS client connects here unless told otherwise.
WEBSOCKET_PATH = "ws/realtime/"


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Refuses a WebSocket to a path nothing serves (HTTP 403 at handshake).

    Channels' ``URLRouter`` raises for an unknown path, which daphne logs as a
    server error; append this route last to refuse it cleanly instead.
    """

    async def connect(self):
        await self.close()


websocket_urlpatterns = [path(WEBSOCKET_PATH, RealtimeConsumer.as_asgi(), name="realtime")]

#: A catch-all to put after every other WebSocket route.
not_found_urlpatterns = [re_path(r"", NotFoundConsumer.as_asgi())]
