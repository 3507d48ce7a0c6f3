"""Parsing client frames: whatever arrives, the answer is a Command or a ProtocolError."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import envelope
from realtime.protocol import MAX_SEQ, ProtocolError, parse, parse_query

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),  # st.text() includes lone surrogates
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "subscribe", "unsubscribe", "resume"]) | st.text(max_size=5)},
    optional={
        "id": json_values,
        "stream": json_values | st.sampled_from(["orders", "user:1\n", "a" * 151]),
        "since": json_values,
        "epoch": json_values,
        "streams": st.dictionaries(st.text(max_size=12), json_values, max_size=5) | json_values,
        "epochs": st.dictionaries(st.text(max_size=12), json_values, max_size=5) | json_values,
    },
)


def reply_encodes(command):
    """What the consumer echoes must become valid UTF-8 JSON."""
    payload = {"id": command.id} if command.id is not None else {}
    envelope.control("pong", payload).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(frames)
def test_any_frame_parses_or_is_refused_with_a_code(frame):
    text = json.dumps(frame, allow_nan=True)
    try:
        command = parse(text, max_streams=100)
    except ProtocolError as exc:
        assert exc.code and str(exc)
        str(exc).encode("utf-8")  # error messages quote input: they must encode too
        return
    reply_encodes(command)
    for name, seq in command.positions.items():
        assert seq is None or 0 <= seq <= MAX_SEQ


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_text_is_refused_cleanly(data):
    try:
        parse(data.decode("utf-8", "surrogateescape"))
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "text, code",
    [
        ("[" * 20_000, "invalid_json"),
        ('{"type":"resume","streams":' + "[" * 20_000, "invalid_json"),
        ('{"type":"ping","id":1' + "0" * 5000 + "}", "invalid_json"),
        ('{"type":' + "[" * 50 + "]" * 50 + "}", "unknown_type"),
        ('{"type":"subscribe","stream":"user:1\\n"}', "invalid_stream"),
        ('{"type":"subscribe","stream":"orders","since":1e400}', "invalid_resume"),
        ('{"type":"subscribe","stream":"orders","since":%d}' % (2**63), "invalid_resume"),
        ('{"type":"resume","streams":{"orders":-1}}', "invalid_resume"),
    ],
)
def test_frames_that_used_to_crash_or_slip_through(text, code):
    with pytest.raises(ProtocolError) as refused:
        parse(text)
    assert refused.value.code == code


@pytest.mark.parametrize("raw, echoed", [('"\\ud800"', "\ufffd"), ("NaN", None), ("Infinity", None), ("1" + "0" * 30, None), ('"x"', "x")])
def test_ping_ids_are_echoed_only_when_they_encode(raw, echoed):
    command = parse('{"type":"ping","id":%s}' % raw)
    assert command.id == echoed
    reply_encodes(command)


def test_a_resume_names_a_bounded_number_of_streams():
    many = {"streams": {f"s{i}": 0 for i in range(101)}}
    with pytest.raises(ProtocolError, match="at most 100"):
        parse(json.dumps({"type": "resume", **many}), max_streams=100)
    with pytest.raises(ProtocolError, match="at most 100"):
        parse_query("resume=" + json.dumps(many), max_streams=100)
    with pytest.raises(ProtocolError):
        parse_query("resume=" + "[" * 20_000)


def test_error_messages_quote_little_of_the_input():
    with pytest.raises(ProtocolError) as refused:
        parse(json.dumps({"type": "x" * 10_000}))
    assert len(str(refused.value)) < 200
