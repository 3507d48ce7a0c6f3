"""The private attributes of twisted, autobahn and daphne that realtime's fast path reads.

When an upgrade renames one, the first test fails naming it; realtime then
runs on the plain ASGI path (slower fan-out, no per-socket buffer cap under
daphne) until realtime/servers/daphne.py is adapted.
"""

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
