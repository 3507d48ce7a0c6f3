"""Connection counts per user and per anonymous address, in one process (tests/security: across two)."""

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser

from realtime import limits

pytestmark = pytest.mark.django_db


def consumer(user, address="192.0.2.1", n=0):
    return SimpleNamespace(
        user=user, scope={"client": (address, 1000 + n), "headers": []}, connection_id=f"c{address}-{n}", limit_key=None
    )


async def test_a_user_gets_the_limit_and_a_freed_slot_back(settings, django_user_model):
    settings.REALTIME = {"MAX_CONNECTIONS_PER_USER": 2}
    user = django_user_model(pk=42, username="alice")
    first, second, third = (consumer(user, n=n) for n in range(3))
    assert await limits.admit(first) and await limits.admit(second)
    assert not await limits.admit(third) and third.limit_key is None
    limits.release(first)
    limits.release(first)  # idempotent
    assert await limits.admit(third)
    assert limits.local_count("user:42") == 2
    limits.release(second)
    limits.release(third)
    assert limits.local_count("user:42") == 0


async def test_anonymous_sockets_count_per_address(settings):
    settings.REALTIME = {"MAX_CONNECTIONS_PER_IP": 1}
    here, there = consumer(AnonymousUser(), "192.0.2.1"), consumer(AnonymousUser(), "192.0.2.2")
    again = consumer(AnonymousUser(), "192.0.2.1", n=1)
    assert await limits.admit(here) and await limits.admit(there)
    assert not await limits.admit(again)
    limits.release(here)
    limits.release(there)
