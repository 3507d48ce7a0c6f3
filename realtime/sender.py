"""Channel layer sends from synchronous code, on one long-lived event loop.

``async_to_sync`` called from plain sync code (a management command, a Celery
task, a script) runs each call on a fresh event loop, and channels-redis keeps
its connections per loop: every ``notify()`` would open, and leak until the loop
closes, a new Redis connection (measured: ~4 ms of a 5 ms publish). Here such
sends run on a daemon thread's loop whose connections are reused.

Code already inside an ASGI server hands the send back to the server's loop
with ``async_to_sync`` instead: the in-memory layer only works on that loop.
"""

import asyncio
import os
import threading

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import InMemoryChannelLayer

#: How long a synchronous publisher waits for the layer before giving up.
SEND_TIMEOUT = 5.0

_lock = threading.Lock()
_loop = None
_loop_pid = None


def _background_loop():
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="realtime-sender", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run(layer, coroutine_function, *args):
    """Run ``coroutine_function(*args)`` against ``layer`` from sync code; return its result."""
    if isinstance(layer, InMemoryChannelLayer) or _inside_asgi_thread():
        return async_to_sync(coroutine_function)(*args)
    future = asyncio.run_coroutine_threadsafe(
        asyncio.wait_for(coroutine_function(*args), SEND_TIMEOUT), _background_loop()
    )
    return future.result()


def _inside_asgi_thread():
    # asgiref marks threads that sync_to_async runs code in; async_to_sync from
    # there returns to the server's own loop, whose connections are long-lived.
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    return loop is not None and getattr(local, "main_event_loop_pid", None) == os.getpid() and loop.is_running()
