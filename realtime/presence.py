"""Who is connected (placeholder: the backends are being built in issue #4).

The consumer calls these three hooks; each receives the consumer, which
exposes ``connection_id``, ``user`` and ``streams`` (the joined stream names).
"""


async def connected(consumer):
    """A socket finished joining its streams."""


async def touch(consumer):
    """The client pinged: the socket is alive; refresh its TTL."""


async def disconnected(consumer):
    """The socket closed (not called when a server process dies)."""
