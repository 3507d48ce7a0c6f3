"""The private attributes of twisted, autobahn and daphne that realtime's fast path reads.

When an upgrade renames one, the first test fails naming it; realtime then
runs on the plain ASGI path (slower fan-out, no per-socket buffer cap under
daphne) until realtime/servers/daphne.py is adapted.
"""

import asyncio

import pytest

from realtime.servers import daphne


def test_installed_versions_have_every_attribute_the_fast_path_reads():
    assert daphne.check_contract() is None, f"the daphne fast path is off: {daphne.check_contract()}"
    assert daphne.PROBLEM is None


@pytest.mark.parametrize("owner, _name", daphne.CONTRACT)
def test_a_missing_attribute_is_named(monkeypatch, owner, _name):
    monkeypatch.setattr(daphne, "CONTRACT", ((owner, "renamed_in_a_new_release"),))
    assert daphne.check_contract() == f"{owner} has no attribute 'renamed_in_a_new_release'"


def test_a_missing_attribute_turns_the_fast_path_off(monkeypatch, settings):
    monkeypatch.setattr(daphne, "PROBLEM", "twisted.internet.tcp.Server has no attribute 'TLS'")
    assert daphne.enabled() is False
    assert daphne.socket_for(object()) is None


def test_the_switch_turns_the_fast_path_off(settings):
    settings.REALTIME = {"DAPHNE_FAST_PATH": False}
    assert daphne.enabled() is False


def test_installed_daphne_gets_the_lighter_queue():
    # When a daphne release changes create_application, sockets silently go back
    # to asyncio.Queue (~3 KiB more each): this names the change to adapt to.
    assert daphne.INBOX_PROBLEM is None, daphne.INBOX_PROBLEM


async def test_inbox_hands_out_events_first_in_first_out():
    inbox = daphne.Inbox()
    for event in ("connect", "receive", "disconnect"):
        inbox.put_nowait(event)
    assert [await inbox.get() for _ in range(3)] == ["connect", "receive", "disconnect"]
    assert inbox._items is None  # an idle socket holds no deque


async def test_inbox_wakes_waiting_getters_in_order():
    inbox = daphne.Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await first == 1 and await second == 2


async def test_a_cancelled_getter_passes_its_event_on():
    inbox = daphne.Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("event")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "event"
    with pytest.raises(asyncio.CancelledError):
        await first
