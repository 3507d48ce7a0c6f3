"""Channel layer sends from synchronous code, without making the publisher wait.

``async_to_sync`` called from plain sync code (a management command, a Celery
task, a script) runs each call on a fresh event loop, and channels-redis keeps
its connections per loop: every ``notify()`` would open, and leak until the loop
closes, a new Redis connection (measured: ~4 ms of a 5 ms publish). Here such
sends run on a daemon thread's loop whose connections are reused, and the
publisher does not wait for them: :func:`submit` queues the messages and
returns, so the next database write overlaps the previous push, and whatever
queued up while a send was in flight leaves as one batch (few layer messages,
see :func:`realtime.layer.send`). Every message sent this way is already in
the log, so a push that fails or is dropped costs latency, not the message.
The queue is bounded (:data:`MAX_PENDING`), and :func:`flush` runs at exit so
a short script's pushes are not cut off.

Code already inside an ASGI server hands the send back to the server's loop
with ``async_to_sync`` instead, and waits for it: the in-memory layer only
works on that loop.
"""

import asyncio
import atexit
import collections
import logging
import os
import threading

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import InMemoryChannelLayer

logger = logging.getLogger("realtime")

#: How long one send may take before it is given up (the messages stay in the log).
SEND_TIMEOUT = 5.0

#: Sends leave at most once per this many seconds: a message that arrives
#: after a quiet spell goes at once, and while a publisher keeps publishing,
#: everything it published in the interval leaves as one batch. One
#: channels-redis group_send costs four Redis round trips and ~0.3 ms of CPU
#: that the publishing thread waits for (the GIL): per message at a thousand
#: a second, per batch here.
INTERVAL = 0.005

#: After a send, the loop keeps looking for more (every :data:`INTERVAL`)
#: this long before it sleeps until woken: a publisher in a loop never has to
#: wake it, which is a thread switch each time.
LINGER = 0.05

#: Messages queued for the background loop at most; more are not pushed live
#: (clients still get them from the log at their next heartbeat).
MAX_PENDING = 50_000

_lock = threading.Lock()
_background = None


class _Background:
    """A daemon thread's event loop that delivers queued messages in order."""

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue = collections.deque()  # (layer, deliver, messages)
        self.count = 0  # messages queued or being sent
        self.draining = False
        self.changed = threading.Condition()
        self.task = None
        threading.Thread(target=self.loop.run_forever, name="realtime-sender", daemon=True).start()

    def submit(self, layer, deliver, messages):
        with self.changed:
            if self.count + len(messages) > MAX_PENDING:
                return False
            self.queue.append((layer, deliver, messages))
            self.count += len(messages)
            start = not self.draining
            self.draining = True
        if start:
            self.loop.call_soon_threadsafe(self._start)
        return True

    def _start(self):
        self.task = self.loop.create_task(self._drain())

    async def _drain(self):
        idle_since = None
        last_send = 0.0
        while True:
            wait = last_send + INTERVAL - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            with self.changed:
                if self.queue:
                    # Everything queued for the same layer leaves together, in order.
                    layer, deliver, batch = self.queue.popleft()
                    batch = list(batch)
                    while self.queue and self.queue[0][0] is layer and self.queue[0][1] is deliver:
                        batch.extend(self.queue.popleft()[2])
                else:
                    batch = None
                    idle_since = idle_since or self.loop.time()
                    if self.loop.time() - idle_since >= LINGER:
                        self.draining = False
                        self.changed.notify_all()
                        return
            if batch is None:
                await asyncio.sleep(INTERVAL)
                continue
            idle_since = None
            last_send = self.loop.time()
            try:
                await deliver(layer, batch)
            except Exception:
                logger.exception("realtime: pushing %d message(s) failed", len(batch))
            finally:
                with self.changed:
                    self.count -= len(batch)
                    self.changed.notify_all()

    def flush(self, timeout):
        with self.changed:
            return self.changed.wait_for(lambda: self.count == 0, timeout)


def _get_background():
    global _background
    with _lock:
        # A forked child (Celery prefork, gunicorn) has the parent's object but not its thread.
        if _background is None or _background.pid != os.getpid() or _background.loop.is_closed():
            _background = _Background()
        return _background


def send(layer, deliver, messages):
    """Have ``await deliver(layer, messages)`` run; return False if the queue was full.

    From plain sync code it is queued on the background loop and this returns
    at once (``deliver`` must handle its own errors and timeouts); inside an
    ASGI server, or with the in-memory layer, it runs on the server's loop
    and this waits for it.
    """
    if isinstance(layer, InMemoryChannelLayer) or _inside_asgi_thread():
        async_to_sync(deliver)(layer, messages)
        return True
    return _get_background().submit(layer, deliver, messages)


def flush(timeout=SEND_TIMEOUT):
    """Wait until every submitted message was handed to the layer (or given up); True if so."""
    background = _background
    if background is None or background.pid != os.getpid():
        return True
    return background.flush(timeout)


atexit.register(flush)


def _inside_asgi_thread():
    # asgiref marks threads that sync_to_async runs code in; async_to_sync from
    # there returns to the server's own loop, whose connections are long-lived.
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    return loop is not None and getattr(local, "main_event_loop_pid", None) == os.getpid() and loop.is_running()
