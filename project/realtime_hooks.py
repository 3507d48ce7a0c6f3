"""``REALTIME["AUTHORIZE"]`` of the demo: realtime's default rules, plus the board for signed-in users."""

from realtime.streams import default_authorize

from .models import BOARD_STREAM


def authorize(user, stream):
    """May ``user`` read ``stream``? Everyone signed in may read the board."""
    if stream == BOARD_STREAM:
        return user is not None and user.is_authenticated
    return default_authorize(user, stream)
