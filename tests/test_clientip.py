"""The client address behind TRUSTED_PROXIES."""

import pytest
from django.test import RequestFactory

from realtime import clientip


@pytest.mark.parametrize(
    "proxies, peer, forwarded, expected",
    [
        ([], "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # no proxies trusted: the header is ignored
        (["10.0.0.0/8"], "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # the peer is no proxy of ours
        (["10.0.0.0/8"], "10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        (["10.0.0.0/8"], "10.0.0.2", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # a forged left hop
        (["10.0.0.0/8"], "10.0.0.2", ["198.51.100.1, 10.0.0.7"], "198.51.100.1"),  # two proxies deep
        (["10.0.0.0/8"], "10.0.0.2", ["10.0.0.9"], "10.0.0.9"),  # only proxies: the left-most
        (["10.0.0.0/8"], "10.0.0.2", [], "10.0.0.2"),
        (["10.0.0.0/8"], "10.0.0.2", ["2001:DB8::1"], "2001:db8::1"),
        (["10.0.0.0/8"], "10.0.0.2", ["unknown, " + "x" * 500], "x" * 64),
    ],
)
def test_resolve(settings, proxies, peer, forwarded, expected):
    settings.REALTIME = {"TRUSTED_PROXIES": proxies}
    assert clientip.resolve(peer, forwarded) == expected


def test_from_scope_and_from_request_agree(settings):
    settings.REALTIME = {"TRUSTED_PROXIES": ["127.0.0.1"]}
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"192.0.2.4")]}
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.4")
    assert clientip.from_scope(scope) == clientip.from_request(request) == "192.0.2.4"
    assert clientip.from_scope({}) == ""
