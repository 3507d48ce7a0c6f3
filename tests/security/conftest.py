"""Fixtures of the abuse suite: a daphne with chosen limits, logged-in users, raw sockets, RSS."""

import base64
import json
import os
import socket
import struct
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client


def rss(pid):
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@pytest.fixture
def server(daphne_factory, redis_url, layer_prefix):
    """Start a daphne on the session Redis with extra ``REALTIME`` keys; returns it."""

    def start(realtime=None, env=None, name="daphne", **options):
        merged = {
            "REDIS_URL": redis_url,
            "REALTIME_REDIS_PREFIX": layer_prefix,
            "REALTIME_JSON": json.dumps(realtime or {}),
            **(env or {}),
        }
        server = daphne_factory(env=merged, name=name, **options)
        server.env_extra = merged
        return server

    return start


@pytest.fixture
def login():
    """``login(username)`` -> ``(user, "sessionid=...")`` for a new user with a real session."""

    def make(username="alice", **fields):
        user = User.objects.create_user(username, password="old-password", **fields)
        client = Client()
        client.force_login(user)
        return user, f"sessionid={client.cookies['sessionid'].value}"

    return sync_to_async(make)


class RawSocket:
    """A WebSocket opened by hand on a plain TCP socket, to behave as no library would.

    It can stop reading (``rcvbuf`` keeps the kernel from absorbing much), send
    any frame, and read frames and the close code when asked.
    """

    def __init__(self, port, cookie=None, query="", path="/ws/realtime/", rcvbuf=None, headers=None, timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path}{'?' + query if query else ''} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://127.0.0.1:{port}",
        ]
        if cookie:
            lines.append(f"Cookie: {cookie}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            byte = self.sock.recv(1)  # one at a time: frames may follow at once
            if not byte:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += byte
        self.status = int(head.split(b" ", 2)[1])
        self.buffer = b""

    def send_frame(self, payload, opcode=0x1):
        """Send one masked frame (text by default) of ``payload`` bytes."""
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, obj):
        self.send_frame(json.dumps(obj).encode())

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self):
        """``(opcode, payload)`` of the next frame from the server."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def recv_json(self):
        """The next text frame, decoded; None if the next frame is a close."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return None

    def close_code_within(self, seconds):
        """Read until the server's close frame; its code (None: the TCP connection ended without one)."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(seconds)
        try:
            while time.monotonic() < deadline:
                opcode, payload = self.recv_frame()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (ConnectionError, OSError):
            return None
        raise TimeoutError(f"no close within {seconds} s")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def group_members(redis_url, prefix):
    """Members of every channel-layer group under ``prefix`` in Redis (hub channels joined)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return {
            key.decode(): client.zcard(key)
            for key in client.scan_iter(match=f"{prefix}:group:*")
            if client.zcard(key)
        }
    finally:
        client.close()


def presence_entries(redis_url, prefix):
    """Live entries of the presence ``all`` set (connections any process reports)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.zcount(f"{prefix}:realtime:presence:all", time.time(), "+inf")
    finally:
        client.close()
