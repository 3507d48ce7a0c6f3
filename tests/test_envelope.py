import datetime
import decimal
import json
import uuid

import pytest
from django.utils.translation import gettext_lazy
from hypothesis import given
from hypothesis import strategies as st

from realtime import EnvelopeError, MessageTooLarge
from realtime.envelope import (
    RESERVED_TYPES,
    build,
    check_size,
    clean_text,
    encode_payload,
    normalize_payload,
    validate_type,
)


@pytest.mark.parametrize("good", ["notice", "order.shipped", "a:b-c_d", "X" * 100])
def test_valid_types_pass(good):
    assert validate_type(good) == good


@pytest.mark.parametrize("bad", ["", "has space", "ünïcode", "x" * 101, None, 3, "a/b"])
def test_invalid_types_are_refused(bad):
    with pytest.raises(EnvelopeError):
        validate_type(bad)


@pytest.mark.parametrize("reserved", sorted(RESERVED_TYPES))
def test_reserved_types_are_refused_with_the_reason(reserved):
    with pytest.raises(EnvelopeError, match="reserved"):
        validate_type(reserved)


def test_envelope_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_type("")


def test_payload_must_be_a_dict():
    with pytest.raises(EnvelopeError, match="must be a dict"):
        normalize_payload(["not", "a", "dict"])
    assert normalize_payload(None) == {}


def test_rich_values_are_converted():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    out = normalize_payload(
        {
            "when": when,
            "day": datetime.date(2026, 1, 2),
            "at": datetime.time(12, 30),
            "price": decimal.Decimal("19.99"),
            "id": ident,
            "pair": (1, 2),
            "lazy": gettext_lazy("Hello"),
        }
    )
    assert out == {
        "when": "2026-01-01T19:04:05Z",
        "day": "2026-01-02",
        "at": "12:30:00",
        "price": "19.99",
        "id": str(ident),
        "pair": [1, 2],
        "lazy": "Hello",
    }


def test_unserialisable_value_names_its_path():
    with pytest.raises(EnvelopeError) as info:
        normalize_payload({"items": [{"ok": 1}, {"at": object()}]})
    assert info.value.path == "payload.items[1].at"
    assert "payload.items[1].at" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), decimal.Decimal("NaN"), {1, 2}, b"bytes"])
def test_values_json_cannot_carry_are_refused(value):
    with pytest.raises(EnvelopeError, match="payload.v"):
        normalize_payload({"v": value})


def test_non_string_keys_are_refused():
    with pytest.raises(EnvelopeError, match="keys must be strings"):
        normalize_payload({"a": {1: "x"}})


def test_deep_nesting_is_refused_not_a_recursion_error():
    deep = {}
    node = deep
    for _ in range(200):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(EnvelopeError, match="nested"):
        normalize_payload(deep)


def test_emoji_and_cjk_stay_as_is_in_utf8():
    text = encode_payload({"msg": "你好 🎉"})
    assert text == '{"msg":"你好 🎉"}'
    assert "\\u" not in text


def test_lone_surrogates_are_replaced_not_a_crash():
    text = encode_payload({"bad": "a\ud800b", "pair": "\ud83d\ude00"})
    text.encode("utf-8")  # must not raise
    assert json.loads(text) == {"bad": "a\ufffdb", "pair": "😀"}


def test_build_wraps_the_encoded_payload_once():
    text = build("order.shipped", "orders", 7, '{"a":1}', id="abc", ts="2026-01-01T00:00:00.000Z")
    assert json.loads(text) == {
        "type": "order.shipped",
        "stream": "orders",
        "seq": 7,
        "id": "abc",
        "ts": "2026-01-01T00:00:00.000Z",
        "payload": {"a": 1},
    }
    assert json.loads(build("t", "s", None, "{}"))["seq"] is None


@given(st.text(max_size=60), st.integers(min_value=100, max_value=400))
def test_size_limit_is_the_widest_envelopes_utf8_bytes(text, limit):
    payload_json = encode_payload({"t": text})
    widest = build("order.shipped", "orders", 10**18, payload_json, id="f" * 32, ts="2026-11-26T03:09:21.953Z")
    too_big = len(widest.encode("utf-8")) > limit
    if too_big:
        with pytest.raises(MessageTooLarge, match=f"the limit is {limit}"):
            check_size("order.shipped", "orders", payload_json, limit)
    else:
        check_size("order.shipped", "orders", payload_json, limit)


@given(st.text())
def test_any_text_encodes_to_valid_utf8(text):
    encoded = encode_payload({text: [text, {"k": text}]})
    encoded.encode("utf-8")
    decoded = json.loads(encoded)
    assert decoded == {clean_text(text): [clean_text(text), {"k": clean_text(text)}]}


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_valid_text_round_trips_exactly(text):
    assert json.loads(encode_payload({"t": text})) == {"t": text}


@given(st.lists(st.sampled_from(["a", "😀", "\ud800", "\udc00", "\ud83d", "\ude00", "中"]), max_size=12))
def test_surrogate_soup_never_raises(parts):
    text = "".join(parts)
    cleaned = clean_text(text)
    cleaned.encode("utf-8")
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in cleaned)
