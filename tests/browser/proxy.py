"""A TCP proxy that can turn into a black hole, to test what a dead link does.

``blackhole()`` stops forwarding in both directions without closing anything:
bytes wait in the proxy and the kernel's buffers, as they would behind a
router that lost its route. ``restore()`` lets them through again.
``drop()`` resets every connection (the browser sees 1006).
"""

import asyncio
import threading

from tests.procs import free_port


class BlackHoleProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` from a thread of its own."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._transports = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self):
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _shutdown(self):
        self._server.close()
        for transport in list(self._transports):
            transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def blackhole(self):
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self):
        self._loop.call_soon_threadsafe(self._flowing.set)

    def drop(self):
        def abort_all():
            for transport in list(self._transports):
                transport.abort()

        self._loop.call_soon_threadsafe(abort_all)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, client_reader, client_writer):
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._transports |= {client_writer.transport, upstream_writer.transport}
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer),
            self._pipe(upstream_reader, client_writer),
        )
        self._transports -= {client_writer.transport, upstream_writer.transport}

    async def _pipe(self, reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
