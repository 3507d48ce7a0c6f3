"""``REALTIME["AUTHORIZE"]`` of the abuse suite: realtime's defaults, plus any ``fuzz:*`` stream.

Streams of their own let a test see, in Redis, whether a closed connection
left its group membership behind.
"""

from realtime.streams import default_authorize


def authorize(user, stream):
    return stream.startswith("fuzz:") or default_authorize(user, stream)
