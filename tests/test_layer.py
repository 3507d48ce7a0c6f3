"""What travels on the channel layer, and sending it without ever raising."""

import logging

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from realtime import layer
from realtime.exceptions import RealtimeConfigError
from realtime.store import Published
from realtime.streams import group_name


def test_the_four_messages():
    published = Published("orders", 3, "abc", '{"type":"t"}')
    assert layer.message(published) == {"type": "realtime.message", "stream": "orders", "seq": 3, "text": '{"type":"t"}'}
    assert layer.reset("orders", "e2") == {"type": "realtime.reset", "stream": "orders", "epoch": "e2"}
    assert layer.revoke("user:7", 7, 4401) == {"type": "realtime.revoke", "stream": "user:7", "user": 7, "code": 4401}
    assert layer.recheck("user:7", 7) == {"type": "realtime.recheck", "stream": "user:7", "user": 7}


def test_messages_reach_the_streams_group(monkeypatch):
    monkeypatch.setattr(layer, "serving", lambda: True)  # as inside a server process
    channel_layer = get_channel_layer()
    channel = async_to_sync(channel_layer.new_channel)()
    async_to_sync(channel_layer.group_add)(group_name("orders"), channel)
    layer.send([layer.reset("orders", "e2")])
    assert async_to_sync(channel_layer.receive)(channel) == layer.reset("orders", "e2")


def test_with_nobody_to_reach_control_messages_go_quietly(caplog, monkeypatch):
    monkeypatch.setattr(layer, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="realtime"):
        layer.send([layer.revoke("user:7", 7, 4401)])
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="realtime"):
        layer.send([layer.message(Published("orders", 1, "x", "{}"))])
    assert "only reaches WebSocket clients served by this same process" in caplog.text


def test_no_layer_configured(settings, caplog, monkeypatch):
    monkeypatch.setattr(layer, "_warned", set())
    settings.CHANNEL_LAYERS = {}
    with caplog.at_level(logging.WARNING, logger="realtime"):
        layer.send([layer.message(Published("orders", 1, "x", "{}"))])
        layer.send([layer.message(Published("orders", 2, "x", "{}"))])
    assert caplog.text.count("no channel layer 'default' is configured") == 1
    assert layer.get_layer() is None


def test_a_backend_that_cannot_be_imported_is_a_configuration_error(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "nowhere.Layer"}}
    with pytest.raises(RealtimeConfigError, match="cannot be created"):
        layer.get_layer()
    layer.send([layer.reset("orders", "e")])  # still never raises


def test_taps_see_every_send_and_may_hold_it_back(monkeypatch):
    sent = []
    monkeypatch.setattr(layer.sender, "send", lambda *args: sent.append(args) or True)
    monkeypatch.setattr(layer, "serving", lambda: True)
    seen = []
    with layer.tap(seen.append, forward=False):
        layer.send([layer.reset("orders", "e")])
    assert seen == [[layer.reset("orders", "e")]] and sent == []
    with layer.tap(seen.append):
        layer.send([layer.reset("orders", "f")])
    assert len(seen) == 2 and len(sent) == 1
    assert layer._taps == []
