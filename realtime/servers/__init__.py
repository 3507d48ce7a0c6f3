"""What realtime does differently under a particular ASGI server.

Everything here reaches past ASGI into one server's internals, so it lives
apart from the protocol code and can be switched off; the plain ASGI path in
:mod:`realtime.outbound` works under any server.
"""
