"""The address of the client behind a request or a socket, proxies considered.

The peer address of a connection is the client's unless it is one of
``REALTIME["TRUSTED_PROXIES"]``: then the client is the right-most address of
``X-Forwarded-For`` that is not a trusted proxy itself. Left of that, anyone
can write anything into the header, so nothing there is believed.

(``daphne --proxy-headers`` rewrites the ASGI ``client`` from the header
itself, for every peer; with it, leave ``TRUSTED_PROXIES`` empty.)
"""

import ipaddress

from .conf import setting

__all__ = ["from_scope", "from_request"]


def from_scope(scope):
    """The client address of an ASGI ``scope`` (a string; ``""`` if unknown)."""
    client = scope.get("client") or ("", 0)
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"x-forwarded-for"
    ]
    return resolve(str(client[0] or ""), forwarded)


def from_request(request):
    """The client address of a Django ``HttpRequest`` (a string; ``""`` if unknown)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return resolve(request.META.get("REMOTE_ADDR", ""), [forwarded] if forwarded else [])


def resolve(peer, forwarded_headers):
    """Apply ``TRUSTED_PROXIES`` to a peer address and its ``X-Forwarded-For`` values."""
    proxies = setting("TRUSTED_PROXIES")
    if not proxies or not in_networks(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_headers for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, proxies):
            return _normalise(hop)
    # Every hop is a proxy we trust: the left-most one is as close as we get.
    return _normalise(hops[0]) if hops else peer


def in_networks(address, networks):
    """True if ``address`` (text) is an IP address inside one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _normalise(hop):
    # Bound what a header can make us store as a key (cache, presence).
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return hop[:64]
