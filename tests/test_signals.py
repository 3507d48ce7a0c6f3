"""Revocation: logging out or deactivating a user closes that user's sockets with 4401."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from realtime.testing import capture_notifications, connect

pytestmark = pytest.mark.django_db(transaction=True)


async def assert_closed_with(communicator, code):
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": code}


async def test_logout_closes_that_users_socket_only():
    alice = await sync_to_async(User.objects.create_user)("alice")
    bob = await sync_to_async(User.objects.create_user)("bob")
    alice_ws, _ = await connect(alice)
    bob_ws, _ = await connect(bob)
    client = Client()
    await sync_to_async(client.force_login)(alice)
    await sync_to_async(client.logout)()
    await assert_closed_with(alice_ws, 4401)
    assert await bob_ws.receive_nothing(timeout=0.5)
    await bob_ws.disconnect()


async def test_deactivation_closes_the_socket():
    alice = await sync_to_async(User.objects.create_user)("alice")
    alice_ws, _ = await connect(alice)
    alice.first_name = "Al"
    await sync_to_async(alice.save)()
    assert await alice_ws.receive_nothing(timeout=0.3)
    alice.is_active = False
    await sync_to_async(alice.save)()
    await assert_closed_with(alice_ws, 4401)


def test_deactivation_waits_for_commit_and_respects_update_fields():
    alice = User.objects.create_user("alice")
    with capture_notifications() as sent:
        alice.is_active = False
        alice.save(update_fields=["first_name"])
        assert sent.revoked == []
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                alice.save()
                raise RuntimeError
        assert sent.revoked == []
        with transaction.atomic():
            alice.save(update_fields=["is_active"])
            assert sent.revoked == []
        assert sent.revoked == [alice.pk]


def test_new_inactive_user_and_active_saves_revoke_nothing():
    with capture_notifications() as sent:
        alice = User.objects.create_user("alice", is_active=False)
        bob = User.objects.create_user("bob")
        bob.save()
    assert sent.revoked == [] and alice.pk
