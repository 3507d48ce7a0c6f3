"""Per-process fan-out from the channel layer to this process's open sockets.

The Channels tutorial gives every consumer its own layer channel, so a message
to N clients is N layer deliveries, N queue wake-ups and N handler dispatches.
Here each server process (each event loop) has one :class:`Hub` with one layer
channel. It joins the group of every stream that has a local subscriber and,
for each message, writes the already encoded text to the local sockets.

The hub also keeps the log's promise on the live path: it tracks the last seq
it fanned out per stream and fills any gap (a message the layer dropped over
capacity, or published while Redis was away) from the database before going
on, and a short while after live traffic it checks the log for a dropped tail.
"""

import asyncio
import logging
import time
import weakref

from channels.db import database_sync_to_async

from . import layer as layer_messages
from . import metrics, store
from .conf import setting
from .outbound import Outgoing
from .streams import group_name

logger = logging.getLogger("realtime")

#: Group memberships are re-asserted this often: a Redis restart or failover
#: forgets them, and channels-redis expires them after ``group_expiry``.
REJOIN_INTERVAL = 600.0

#: Deliveries are added to the metric at most this often: a Prometheus
#: counter's ``inc()`` costs more than a delivery to one socket's share of CPU.
DELIVERIES_FLUSH_INTERVAL = 1.0

#: Pongs share one database read of stream heads per this many seconds ...
HEADS_TTL = 0.5
#: ... and pings that arrive this close together share one query.
HEADS_BATCH_WINDOW = 0.02

_hubs = weakref.WeakKeyDictionary()


def get_hub():
    """The hub of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(layer_messages.get_layer())
    return hub


class Hub:
    """Fans layer messages out to subscribed consumers of one event loop.

    A subscriber is any object with ``push(stream, seq, out)`` (``out`` an
    :class:`~realtime.outbound.Outgoing`; writes or queues it without
    waiting, and returns True if it wrote it: a delivery), ``async
    reset(stream, epoch)``, ``async revoke(user_pk, code)`` and
    ``recheck(user_pk)``.
    """

    def __init__(self, layer):
        self.layer = layer
        self.channel = None
        self.subscribers = {}
        # The last seq this process fanned out per stream (a socket's own
        # position is its Delivery's: they differ while it catches up).
        self.fanned_out = {}
        self._membership = asyncio.Lock()
        self._fanout = asyncio.Lock()
        self._task = None
        self._rejoin_task = None
        self._stale = False
        self._dirty = set()
        self._sweep_handle = None
        self._heads = {}
        self._wanted = set()
        self._heads_batch = None
        self._leaving = set()
        self._leave_task = None
        self._delivered = 0  # not yet added to metrics.deliveries
        self._flush_handle = None

    # Membership -------------------------------------------------------------

    async def subscribe(self, consumer, stream):
        """Add ``consumer`` to ``stream``; on return, every later commit reaches it."""
        async with self._membership:
            subs = self.subscribers.get(stream)
            if subs is None:
                try:
                    await self._start()
                    if self.layer is not None and not self._stale:
                        try:
                            await self.layer.group_add(group_name(stream), self.channel)
                        except Exception:
                            metrics.layer_failures.labels(operation="group_add").inc()
                            # Serve the socket from the log meanwhile; the receive
                            # loop re-joins every group once the layer is back.
                            logger.warning("realtime: group_add failed for %s", stream, exc_info=True)
                            self._stale = True
                            self._start_rejoin()
                    heads = await database_sync_to_async(store.heads)([stream])
                except BaseException:
                    # A socket that vanished while it joined (its task is
                    # cancelled) may leave the group joined with nobody
                    # subscribed: leave it, or it stays in Redis for good.
                    self._schedule_leave(stream)
                    raise
                self.fanned_out[stream] = heads[stream][0]
                subs = self.subscribers[stream] = set()
            subs.add(consumer)

    def unsubscribe(self, consumer, stream):
        """Remove ``consumer`` from ``stream`` at once; the last one out leaves the group.

        Synchronous, so a connection that is being cancelled still lets go;
        leaving the layer group runs as the hub's own task.
        """
        subs = self.subscribers.get(stream)
        if subs is None:
            return
        subs.discard(consumer)
        if subs:
            return
        del self.subscribers[stream]
        self.fanned_out.pop(stream, None)
        self._heads.pop(stream, None)
        self._schedule_leave(stream)

    def _schedule_leave(self, stream):
        self._leaving.add(stream)
        if self._leave_task is None:
            self._leave_task = asyncio.ensure_future(self._leave())
            self._leave_task.add_done_callback(_log_failure)

    async def _leave(self):
        try:
            while self._leaving:
                async with self._membership:
                    # A stream subscribed again meanwhile keeps its group.
                    streams = [s for s in self._leaving if s not in self.subscribers]
                    self._leaving.clear()
                    await self._discard(streams)
                    if not self.subscribers:
                        # Sockets that closed while the discards above were
                        # awaited left streams of this channel too: leave them
                        # now, before the channel is given up (the next
                        # subscriber gets a new one, and a group joined by the
                        # old one would keep it in Redis for good).
                        while self._leaving:
                            streams = list(self._leaving)
                            self._leaving.clear()
                            await self._discard(streams)
                        await self._discard([], hubs=True)
                        await self._stop()
        finally:
            self._leave_task = None

    async def _discard(self, streams, hubs=False):
        if self.layer is None or self._stale:
            return
        groups = [group_name(stream) for stream in streams] + ([layer_messages.HUBS_GROUP] if hubs else [])
        for group in groups:
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:
                # The group expires on its own; a dead layer must not stop the others.
                logger.warning("realtime: group_discard failed for %s", group, exc_info=True)

    async def _start(self):
        if self._task is not None:
            return
        if self.layer is not None:
            self.channel = await self.layer.new_channel(prefix="realtime-hub.")
            try:
                await self.layer.group_add(layer_messages.HUBS_GROUP, self.channel)
            except Exception:
                metrics.layer_failures.labels(operation="group_add").inc()
                logger.warning("realtime: joining the hubs group failed", exc_info=True)
                self._stale = True
                self._start_rejoin()
        self._task = asyncio.create_task(self._run(), name="realtime-hub")
        layer_messages.hub_started(self)

    async def _stop(self):
        task, self._task = self._task, None
        if task is None:
            return
        layer_messages.hub_stopped(self)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_deliveries()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._dirty.clear()
        for pending in (task, self._rejoin_task):
            if pending is not None:
                pending.cancel()
        self._rejoin_task = None
        try:
            await task
        except asyncio.CancelledError:
            pass

    def problem(self):
        """Why live messages cannot reach this process now (readiness), or None."""
        if self._stale:
            return "layer_lost"  # serving from the log until the layer is back
        if self._task is not None and self._task.done():
            return "stopped"
        return None

    # Receiving --------------------------------------------------------------

    async def _run(self):
        if self.layer is None:
            return
        backoff = 0.25
        next_rejoin = time.monotonic() + REJOIN_INTERVAL
        while True:
            try:
                if self._stale or time.monotonic() > next_rejoin:
                    await self._rejoin()
                    next_rejoin = time.monotonic() + REJOIN_INTERVAL
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.layer_failures.labels(operation="receive").inc()
                if not self._stale:
                    logger.warning(
                        "realtime: channel layer receive failed; retrying and then "
                        "catching up from the log.",
                        exc_info=True,
                    )
                self._stale = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.25
            try:
                await self.handle(message)
            except Exception:
                logger.exception("realtime: failed to fan out a layer message")

    def _start_rejoin(self):
        if self._rejoin_task is None or self._rejoin_task.done():
            self._rejoin_task = asyncio.ensure_future(self._rejoin_soon())

    async def _rejoin_soon(self):
        # The receive loop may be parked in a receive that still works (only a
        # group_add failed), so it would not notice; retry from here.
        delay = 0.5
        while self._stale and self._task is not None:
            await asyncio.sleep(delay)
            try:
                await self._rejoin()
            except Exception:
                metrics.layer_failures.labels(operation="group_add").inc()
                delay = min(delay * 2, 5.0)

    async def _rejoin(self):
        async with self._membership:
            streams = list(self.subscribers)
            await self.layer.group_add(layer_messages.HUBS_GROUP, self.channel)
            for stream in streams:
                await self.layer.group_add(group_name(stream), self.channel)
        if self._stale:
            logger.info("realtime: channel layer is back; catching up %d stream(s)", len(streams))
            self._stale = False
            await self.catch_up(streams)

    async def handle(self, message):
        """Fan one layer message out to local subscribers, filling any gap first."""
        if message.get("type") == layer_messages.RESET:
            await self._reset(message.get("stream"), message.get("epoch"))
            return
        if message.get("type") == layer_messages.REVOKE:
            for consumer in tuple(self.subscribers.get(message.get("stream"), ())):
                await consumer.revoke(message.get("user"), message.get("code"))
            return
        if message.get("type") == layer_messages.RECHECK:
            for consumer in tuple(self.subscribers.get(message.get("stream"), ())):
                consumer.recheck(message.get("user"))
            return
        if message.get("type") == layer_messages.BATCH:
            items = message.get("messages")
            for item in items if isinstance(items, list) else ():
                if isinstance(item, (list, tuple)) and len(item) == 3:
                    await self._apply(*item)
            return
        if message.get("type") != layer_messages.MESSAGE:
            # Channels' own consumers raise here and close every socket in the
            # group; an unexpected message must cost one log line, not the sockets.
            logger.warning("realtime: ignoring layer message of type %r", message.get("type"))
            return
        await self._apply(message.get("stream"), message.get("seq"), message.get("text"))

    async def _apply(self, stream, seq, text):
        """Fan out one published message, filling the gap before it from the log."""
        if stream not in self.subscribers or not isinstance(text, str):
            return
        if seq is None:
            await self._fan_out(stream, None, text)
            return
        # Every persisted message, duplicates included, re-arms the sweep: when
        # the layer drops the tail of a burst, the last message that did arrive
        # may be one a previous fill already sent.
        self._schedule_sweep(stream)
        self._note(stream, seq)
        async with self._fanout:
            last = self.fanned_out.get(stream)
            if last is None or seq <= last:
                return
            if seq > last + 1:
                metrics.gap_fills.inc()
                await self._fill(stream, upto=seq - 1)
            if seq == self.fanned_out.get(stream, seq) + 1:
                self.fanned_out[stream] = seq
                await self._fan_out(stream, seq, text)

    async def _reset(self, stream, epoch):
        if stream not in self.subscribers:
            return
        async with self._fanout:
            self.fanned_out[stream] = 0
            self._heads.pop(stream, None)
            for consumer in tuple(self.subscribers.get(stream, ())):
                try:
                    await consumer.reset(stream, epoch)
                except Exception:
                    logger.exception("realtime: reset of one connection failed")

    async def _fan_out(self, stream, seq, text):
        out = Outgoing(text)
        written = 0
        for consumer in tuple(self.subscribers.get(stream, ())):
            try:
                if consumer.push(stream, seq, out):
                    written += 1
            except Exception:
                logger.exception("realtime: delivery to one connection failed")
        self._delivered += written
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                DELIVERIES_FLUSH_INTERVAL, self._flush_deliveries
            )

    def _flush_deliveries(self):
        self._flush_handle = None
        delivered, self._delivered = self._delivered, 0
        metrics.deliveries.inc(delivered)

    async def _fill(self, stream, upto=None):
        """Read what this process has not fanned out yet from the log and fan it out."""
        batch = setting("REPLAY_BATCH")
        while stream in self.fanned_out:
            last = self.fanned_out[stream]
            limit = batch if upto is None else min(batch, upto - last)
            if limit <= 0:
                return
            rows = await database_sync_to_async(store.read_after)(stream, last, limit)
            for seq, text in rows:
                if stream not in self.fanned_out:
                    return
                # A jump here means those seqs were pruned; each consumer notices
                # the jump and sends its client a resync.
                self.fanned_out[stream] = seq
                await self._fan_out(stream, seq, text)
            if len(rows) < limit:
                return

    # Catching up with the log ----------------------------------------------

    def _schedule_sweep(self, stream):
        self._dirty.add(stream)
        if self._sweep_handle is None:
            loop = asyncio.get_running_loop()
            self._sweep_handle = loop.call_later(setting("SWEEP_DELAY"), self._sweep)

    def _sweep(self):
        self._sweep_handle = None
        streams, self._dirty = self._dirty, set()
        if streams and self._task is not None:
            task = asyncio.ensure_future(self.catch_up(streams))
            task.add_done_callback(_log_failure)

    async def catch_up(self, streams):
        """Fan out whatever the log holds beyond what this process has sent."""
        streams = [s for s in streams if s in self.subscribers]
        if not streams:
            return
        heads = await database_sync_to_async(store.heads)(streams)
        for stream in streams:
            self._note(stream, heads[stream][0], heads[stream][1])
            if heads[stream][0] > self.fanned_out.get(stream, heads[stream][0]):
                metrics.catch_ups.inc()
                async with self._fanout:
                    await self._fill(stream)
                # The log was ahead of the layer: more may be in flight or lost.
                self._schedule_sweep(stream)

    # Stream heads for pongs ------------------------------------------------

    def _note(self, stream, seq, epoch=None):
        cached = self._heads.get(stream)
        if cached is not None and seq >= cached[0]:
            self._heads[stream] = (seq, epoch or cached[1], cached[2])

    async def heads(self, streams):
        """``{stream: (last_seq, epoch)}``, sharing database reads among callers.

        Every ping asks for the heads of its socket's streams, including the
        user's private stream that no cache entry serves twice; pings arriving
        within :data:`HEADS_BATCH_WINDOW` share one query.
        """
        now = time.monotonic()
        missing = [s for s in streams if s not in self._heads or now - self._heads[s][2] > HEADS_TTL]
        if missing:
            self._wanted.update(missing)
            if self._heads_batch is None:
                self._heads_batch = asyncio.ensure_future(self._read_wanted())
            # Shielded: a socket closing while it waits must not cancel the others' read.
            await asyncio.shield(self._heads_batch)
        return {s: self._heads[s][:2] if s in self._heads else (0, "") for s in streams}

    async def _read_wanted(self):
        try:
            await asyncio.sleep(HEADS_BATCH_WINDOW)
        finally:
            wanted, self._wanted = self._wanted, set()
            self._heads_batch = None
        fresh = await database_sync_to_async(store.heads)(sorted(wanted))
        now = time.monotonic()
        for stream, (seq, epoch) in fresh.items():
            self._heads[stream] = (seq, epoch, now)


def _log_failure(task):
    if not task.cancelled() and task.exception() is not None:
        logger.warning("realtime: catching up from the log failed", exc_info=task.exception())
