"""The ceiling: a bare ``websockets`` broadcast server, no framework.

Clients connect to ``/``; a publisher connects to ``/publish`` and every text
frame it sends is written, as is, to every client.
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

clients = set()


async def handler(ws):
    if ws.request.path == "/publish":
        async for message in ws:
            broadcast(clients, message)
        return
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)


async def main(port):
    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=None, compression=None, backlog=2048):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
