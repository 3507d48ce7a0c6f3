"""A minimal protocol client for end-to-end tests, on the ``websockets`` library.

It records every frame the server sends (so a test can prove the server sent
no duplicate and no gap), and on a lost connection reconnects with
``?resume=`` from the highest seq it holds per stream, like the bundled JS
client does.
"""

import asyncio
import json
import time
from urllib.parse import quote

import websockets
from websockets.asyncio.client import connect


#: Close codes after which the bundled client does not reconnect (docs/protocol.md).
FINAL_CODES = (1000, 1009, 4008, 4009, 4029, 4401)


class RecordingClient:
    def __init__(self, ws_url, *, cookie=None, origin=None, ping_every=None):
        self.ws_url = ws_url
        self.headers = {"Cookie": cookie} if cookie else {}
        self.origin = origin
        self.ping_every = ping_every
        self.frames = []
        #: time.time() at which each frame of ``frames`` arrived.
        self.arrivals = []
        self.received = {}
        self.epochs = {}
        self.closes = []
        self.connects = 0
        self._task = None
        self._ws = None
        self._welcome = asyncio.Event()

    def seqs(self, stream):
        return [seq for seq, _ in self.received.get(stream, [])]

    def payloads(self, stream):
        return [payload for _, payload in self.received.get(stream, [])]

    def _url(self):
        last = {s: max(seqs) for s, seqs in ((s, self.seqs(s)) for s in self.received) if seqs}
        if not last:
            return self.ws_url
        return self.ws_url + "?resume=" + quote(json.dumps({"streams": last, "epochs": self.epochs}))

    async def start(self, timeout=20):
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._welcome.wait(), timeout)
        return self

    async def _run(self):
        while True:
            try:
                async with connect(
                    self._url(), origin=self.origin, additional_headers=self.headers,
                    max_queue=None, open_timeout=20, ping_interval=None,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    pinger = asyncio.create_task(self._ping(ws)) if self.ping_every else None
                    try:
                        async for raw in ws:
                            self._record(json.loads(raw))
                    except websockets.ConnectionClosed:
                        pass  # a close code other than 1000/1001: read it below
                    finally:
                        if pinger:
                            pinger.cancel()
                    self.closes.append(ws.close_code)
                    if ws.close_code in FINAL_CODES:
                        return
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, TimeoutError) as exc:
                self.closes.append(repr(exc))
            self._ws = None
            await asyncio.sleep(0.2)

    async def _ping(self, ws):
        while True:
            await asyncio.sleep(self.ping_every)
            try:
                await ws.send('{"type":"ping"}')
            except websockets.ConnectionClosed:
                return

    def _record(self, frame):
        self.frames.append(frame)
        self.arrivals.append(time.time())
        kind = frame["type"]
        if kind == "welcome":
            self.epochs.update({k: v for k, v in frame["payload"]["epochs"].items() if v})
            self._welcome.set()
        elif frame["seq"] is not None:
            self.received.setdefault(frame["stream"], []).append((frame["seq"], frame["payload"]))

    async def send(self, frame):
        await self._ws.send(json.dumps(frame))

    async def wait_for(self, stream, count, timeout):
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.seqs(stream)) < count:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self):
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._ws is not None:
            await self._ws.close()
