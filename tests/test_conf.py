"""The limits added against abusive clients: defaults, and errors that name the key."""

import ipaddress

import pytest

from realtime.conf import get_config
from realtime.exceptions import RealtimeConfigError


def test_safe_defaults(settings):
    settings.REALTIME = {}  # the suite's settings raise the connection limits
    config = get_config()
    assert config["MAX_OUTBOUND_BUFFER"] == 1024 * 1024
    assert (config["MAX_CONNECTIONS_PER_USER"], config["MAX_CONNECTIONS_PER_IP"]) == (50, 100)
    assert config["HANDSHAKE_TIMEOUT"] == 15
    assert config["VERIFY_SESSIONS"] is True and config["DAPHNE_FAST_PATH"] is True
    assert config["PUBLISH_AUTH_FAILURE_LIMIT"] == 20
    assert config["TRUSTED_PROXIES"] == ()


def test_trusted_proxies_become_networks(settings):
    settings.REALTIME = {"TRUSTED_PROXIES": ["10.0.0.0/8", "127.0.0.1", "::1"]}
    assert get_config()["TRUSTED_PROXIES"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ({"MAX_OUTBOUND_BUFFER": 0}, r'\["MAX_OUTBOUND_BUFFER"\] must be a positive integer'),
        ({"MAX_OUTBOUND_BUFFER": 100_000}, r'\["MAX_OUTBOUND_BUFFER"\] must be at least twice MAX_MESSAGE_SIZE'),
        ({"MAX_CONNECTIONS_PER_USER": None}, r'\["MAX_CONNECTIONS_PER_USER"\]'),
        ({"MAX_CONNECTIONS_PER_IP": -1}, r'\["MAX_CONNECTIONS_PER_IP"\]'),
        ({"HANDSHAKE_TIMEOUT": 0}, r'\["HANDSHAKE_TIMEOUT"\]'),
        ({"HANDSHAKE_TIMEOUT": "15"}, r'\["HANDSHAKE_TIMEOUT"\]'),
        ({"VERIFY_SESSIONS": "yes"}, r'\["VERIFY_SESSIONS"\] must be True or False'),
        ({"DAPHNE_FAST_PATH": 1}, r'\["DAPHNE_FAST_PATH"\]'),
        ({"TRUSTED_PROXIES": "10.0.0.1"}, r'\["TRUSTED_PROXIES"\] must be a list'),
        ({"TRUSTED_PROXIES": ["proxy.internal"]}, r"'proxy.internal', which is not an IP address"),
        ({"PUBLISH_AUTH_FAILURE_LIMIT": 0}, r'\["PUBLISH_AUTH_FAILURE_LIMIT"\]'),
        ({"NO_SUCH_KEY": 1}, r"Unknown key\(s\) in settings.REALTIME: NO_SUCH_KEY"),
        ({"HEARTBEAT_INTERVAL": 0}, r'\["HEARTBEAT_INTERVAL"\] must be a positive number'),
        ({"INBOUND_RATE": True}, r'\["INBOUND_RATE"\]'),
        ({"MAX_INBOUND_SIZE": 1.5}, r'\["MAX_INBOUND_SIZE"\] must be a positive integer'),
        ({"REPLAY_BATCH": 0}, r'\["REPLAY_BATCH"\]'),
        ({"RETENTION_COUNT": 0}, r'\["RETENTION_COUNT"\] must be a positive integer or None'),
        ({"PUBLISH_CACHE": ""}, r'\["PUBLISH_CACHE"\] must be a cache alias'),
        ({"PRESENCE": {"TTL": 0}}, r'\["PRESENCE"\]\["TTL"\]'),
        ({"PRESENCE": {"HOST": "x"}}, r"Unknown key\(s\) in settings.REALTIME\[\"PRESENCE\"\]: HOST"),
    ],
)
def test_invalid_limits_name_the_key(settings, value, message):
    settings.REALTIME = value
    with pytest.raises(RealtimeConfigError, match=message):
        get_config()


def test_handshake_timeout_may_be_off(settings):
    settings.REALTIME = {"HANDSHAKE_TIMEOUT": None}
    assert get_config()["HANDSHAKE_TIMEOUT"] is None


def test_realtime_must_be_a_dict(settings):
    settings.REALTIME = ["HEARTBEAT_INTERVAL", 25]
    with pytest.raises(RealtimeConfigError, match="settings.REALTIME must be a dict"):
        get_config()
