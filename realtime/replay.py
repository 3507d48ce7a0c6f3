"""Bringing one connection's streams up to date from the log, in order, paced by the socket.

Part of :class:`~realtime.consumers.RealtimeConsumer` (a mixin): joining
streams and deciding where each starts, then replaying what the client
missed before letting live messages through. The decisions are
:mod:`realtime.delivery`'s; this module does the reading and writing.
"""

import asyncio
import logging

from channels.db import database_sync_to_async

from . import envelope, metrics, store
from .delivery import start_position
from .protocol import CLOSE_SERVER_ERROR

logger = logging.getLogger("realtime")


class Replay:
    """Joining and catching up, for :class:`~realtime.consumers.RealtimeConsumer`.

    Uses the consumer's ``delivery``, ``hub``, ``config``, ``_out``,
    ``_replaying`` (None until the first replay) and ``send_text``.
    """

    async def _join(self, names, positions, epochs):
        """Subscribe to ``names`` and decide where each starts.

        Streams stay busy (live messages queue up) until :meth:`_start`.
        """
        for name in names:
            self.delivery.join(name)
        for name in names:
            await self._subscribe_hub(name)
        heads = await database_sync_to_async(store.heads)(names)
        starts, known, resyncs = {}, {}, []
        for name in names:
            head, epoch = heads[name]
            start, reason = start_position(positions.get(name), epochs.get(name), head, epoch)
            if reason:
                resyncs.append((name, head, epoch, reason))
            self.delivery.last[name] = start
            starts[name] = start
            known[name] = epoch
        return starts, known, heads, resyncs

    async def _subscribe_hub(self, name):
        await self.hub.subscribe(self, name)
        if self._released:
            # The connection ended while we waited; _release() could not see this one.
            self.hub.unsubscribe(self, name)

    async def _start(self, names, starts, heads, resyncs):
        for name, head, epoch, reason in resyncs:
            await self._resync(name, head, epoch, reason)
        for name in names:
            if name not in self.delivery:
                continue
            behind = starts[name] < heads[name][0]
            if behind or self.delivery.has_queued(name):
                self._spawn_catch_up(name, replay=behind)
            else:
                self.delivery.release(name)

    def _spawn_catch_up(self, stream, replay):
        self._spawn(self._catch_up(stream, replay))

    async def _catch_up(self, stream, replay):
        """Replay from the log and drain queued live messages, in seq order."""
        delivery = self.delivery
        try:
            while stream in delivery and not self._closing:
                if replay or delivery.take_overflow(stream):
                    await self._replay(stream)
                    if delivery.overflowed(stream):
                        continue
                texts, replay = delivery.drain(stream)
                for text in texts:
                    await self.send_text(text)
                self._sent += len(texts)
                if not replay and not delivery.has_queued(stream):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "realtime: connection %s: replay of %s failed; closing so the client resumes",
                self.connection_id,
                stream,
            )
            await self.close(code=CLOSE_SERVER_ERROR)
        finally:
            delivery.release(stream)

    async def _replay(self, stream):
        """Send the log after the stream's position, paced by the socket.

        A batch is read only when the socket's buffer is below half the
        limit, and batches shrink to fit the limit, so a client resuming a
        huge history from seq 0 costs this server one batch and one buffer
        at a time, never the history.
        """
        limit = self.config["MAX_OUTBOUND_BUFFER"]
        # Until a batch shows how large this stream's messages are, assume the
        # largest allowed: a first batch of 100 rows could otherwise hold
        # 100 x MAX_MESSAGE_SIZE (6.4 MiB) per connection.
        batch = max(1, min(self.config["REPLAY_BATCH"], (limit // 2) // self.config["MAX_MESSAGE_SIZE"]))
        last = self.delivery.last
        if self._replaying is None:
            self._replaying = asyncio.Lock()
        metrics.replays.inc()
        while stream in last and not self._closing:
            await self._out.drained(limit // 4)
            async with self._replaying:  # one batch in memory per connection
                after = last.get(stream)
                if after is None or self._closing:
                    return
                rows = await database_sync_to_async(store.read_after)(stream, after, batch)
                if not rows or stream not in last:
                    return
                if rows[0][0] > after + 1:
                    heads = await self.hub.heads([stream])
                    await self._resync(stream, rows[0][0] - 1, heads[stream][1], "pruned")
                size = sent = 0
                try:
                    for seq, text in rows:
                        if self._out.buffered > limit // 2:
                            await self._out.drained(limit // 4)
                        if stream not in last or self._closing:
                            return
                        last[stream] = seq
                        size += len(text)
                        await self.send_text(text)
                        sent += 1
                finally:
                    self._replayed += sent
                    metrics.messages_replayed.inc(sent)
            if len(rows) < batch:
                return
            batch = max(1, min(self.config["REPLAY_BATCH"], (limit // 2) * len(rows) // max(size, 1)))

    async def _resync(self, stream, seq, epoch, reason):
        self.delivery.last[stream] = seq
        metrics.resyncs.labels(reason=reason).inc()
        await self.send_text(
            envelope.control(
                "resync",
                {"stream": stream, "seq": seq, "epoch": epoch, "reason": reason},
                stream=stream,
            )
        )
