"""The demo's ASGI app with a fast path that breaks on its fifth write, as after a bad upgrade."""

from project.asgi import application  # noqa: F401  (sets Django up first)
from realtime.servers import daphne

_send = daphne.send
_calls = 0


def send(socket, out):
    global _calls
    _calls += 1
    if _calls == 5:
        raise AttributeError("'Server' object has no attribute '_tempDataBuffer' (simulated upgrade)")
    return _send(socket, out)


daphne.send = send
