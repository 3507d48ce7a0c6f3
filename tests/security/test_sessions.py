"""Every way a login ends closes the user's sockets with 4401: at once where Django
sends a signal, within one heartbeat where it does not.

Before: only logout closed them; after a password change, session expiry or
deletion, or a logout while Redis was down, the socket kept receiving the
user's private stream.
"""

import asyncio
import datetime
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from tests.wsclient import RecordingClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

HEARTBEAT = 2


async def closed_within(client, seconds):
    """Seconds until the server closed ``client`` with 4401; fails after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if 4401 in client.closes:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"still open after {seconds} s; closes: {client.closes}")


async def open_client(daphne, cookie, ping=True):
    client = RecordingClient(
        daphne.ws_url, cookie=cookie, origin=daphne.url, ping_every=HEARTBEAT if ping else None
    )
    return await client.start()


def session_of(cookie):
    return Session.objects.get(session_key=cookie.split("=", 1)[1])


@pytest.fixture
def daphne(server, redis_layer_settings):
    """A server with a short heartbeat; this process publishes through the same Redis."""
    return server(realtime={"HEARTBEAT_INTERVAL": HEARTBEAT})


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda user, cookie: (user.set_password("new-password"), user.save()), id="password-changed"),
        pytest.param(lambda user, cookie: (setattr(user, "is_active", False), user.save()), id="deactivated"),
        pytest.param(lambda user, cookie: user.delete(), id="user-deleted"),
    ],
)
async def test_signalled_endings_close_at_once(daphne, login, end):
    user, cookie = await login()
    client = await open_client(daphne, cookie, ping=False)
    try:
        await sync_to_async(end)(user, cookie)
        took = await closed_within(client, 1.5)
        print(f"\n[session] closed {took * 1000:.0f} ms after the save")
        assert client.connects == 1  # 4401: the client does not come back
    finally:
        await client.stop()


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(
            lambda user, cookie: User.objects.filter(pk=user.pk).update(password="changed-behind-the-orm"),
            id="password-changed-without-signal",
        ),
        pytest.param(lambda user, cookie: session_of(cookie).delete(), id="session-deleted"),
        pytest.param(
            lambda user, cookie: Session.objects.filter(session_key=session_of(cookie).session_key).update(
                expire_date=timezone.now() - datetime.timedelta(seconds=1)
            ),
            id="session-expired",
        ),
    ],
)
async def test_silent_endings_close_within_a_heartbeat(daphne, login, end):
    user, cookie = await login()
    client = await open_client(daphne, cookie)
    try:
        await asyncio.sleep(HEARTBEAT + 0.5)  # a ping has passed its check
        await sync_to_async(end)(user, cookie)
        took = await closed_within(client, HEARTBEAT + 1)
        print(f"\n[session] closed {took:.2f} s after the session ended (heartbeat {HEARTBEAT} s)")
    finally:
        await client.stop()


async def test_logout_while_redis_is_down_closes_at_the_next_ping(server, redis_server, login):
    daphne = server(realtime={"HEARTBEAT_INTERVAL": HEARTBEAT}, env={"REDIS_URL": redis_server.url})
    _user, cookie = await login()
    client = await open_client(daphne, cookie)
    try:
        redis_server.stop()
        browser = Client()
        browser.cookies["sessionid"] = cookie.split("=", 1)[1]
        await sync_to_async(browser.post)("/logout/")  # its disconnect_user() cannot reach Redis
        took = await closed_within(client, HEARTBEAT + 1)
        print(f"\n[session] logged out with Redis down: closed {took:.2f} s later")
    finally:
        await client.stop()
