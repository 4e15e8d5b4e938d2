"""Tests for thrum_core.canonical (SPEC §2.2, §6.2, §6.4)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thrum_core.canonical import (
    LINE_DECODER,
    canonical_bytes,
    canonical_json,
    canonical_line,
    parse_line,
    structured_text,
)

SPEC_EVENT = {
    "type": "message.create",
    "timestamp": "2026-01-01T00:00:30.000000Z",
    "event_id": "evt_01KDVDP79G04HMASW9NF6YY093",
    "v": 1,
    "origin_daemon": "d_01KDVDNA000000000000000000",
    "message_id": "msg_01KDVDP79G04HMASW9NF6YY094",
    "agent_id": "furiosa",
    "session_id": "ses_01KDVDNA000000000000000001",
    "body": {"format": "markdown", "content": "Héllo <b>&\u2028"},
    "recipients": ["maximus"],
    "refs": [{"type": "mention", "value": "maximus"}],
}

# Copied from SPEC §3.4, byte for byte (the \u2028 is the six ASCII characters).
SPEC_LINE = (
    '{"agent_id":"furiosa","body":{"content":"Héllo <b>&\\u2028","format":"markdown"},'
    '"event_id":"evt_01KDVDP79G04HMASW9NF6YY093","message_id":"msg_01KDVDP79G04HMASW9NF6YY094",'
    '"origin_daemon":"d_01KDVDNA000000000000000000","recipients":["maximus"],'
    '"refs":[{"type":"mention","value":"maximus"}],"session_id":"ses_01KDVDNA000000000000000001",'
    '"timestamp":"2026-01-01T00:00:30.000000Z","type":"message.create","v":1}\n'
).encode()


def test_spec_canonical_line_vector() -> None:
    assert canonical_line(SPEC_EVENT) == SPEC_LINE


def test_spec_line_parses_back_to_the_event() -> None:
    assert parse_line(SPEC_LINE) == SPEC_EVENT


def test_keys_sorted_by_code_point_at_every_depth() -> None:
    obj = {"b": {"z": 1, "a": [{"y": 0, "x": 0}]}, "a": 1, "B": 2, "é": 3, "\U0001f600": 4, "~": 5}
    assert canonical_json(obj) == ('{"B":2,"a":1,"b":{"a":[{"x":0,"y":0}],"z":1},"~":5,"é":3,"\U0001f600":4}')


def test_escaping_rules() -> None:
    text = canonical_json({"s": 'a/b<c>&d"e\\f\n\t\x01\x7f\u2029é'})
    # / < > & and non-ASCII raw; quote, backslash and control chars escaped;
    # U+2028/U+2029 escaped.
    assert text == '{"s":"a/b<c>&d\\"e\\\\f\\n\\t\\u0001\x7f\\u2029é"}'


def test_integers_have_no_fraction_or_exponent() -> None:
    assert canonical_json({"n": 10**20, "m": -3, "t": True, "f": False, "z": None}) == (
        '{"f":false,"m":-3,"n":100000000000000000000,"t":true,"z":null}'
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": [1, bad]})
    with pytest.raises(ValueError):
        canonical_line({"x": bad})


def test_any_mapping_is_written_as_an_object() -> None:
    inner = MappingProxyType({"b": 1, "a": 2})
    assert canonical_json({"m": inner, "o": OrderedDict([("z", 1), ("y", 2)])}) == (
        '{"m":{"a":2,"b":1},"o":{"y":2,"z":1}}'
    )


def test_unserialisable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_lone_surrogate_cannot_be_written_but_can_be_hashed() -> None:
    obj = json.loads('{"x":"\\ud800"}')
    with pytest.raises(ValueError):
        canonical_line(obj)
    assert canonical_bytes(obj) == '{"x":"\ud800"}'.encode("utf-8", "surrogatepass")


def test_no_bom_and_newline_terminated() -> None:
    line = canonical_line({"a": 1})
    assert line == b'{"a":1}\n'
    assert not line.startswith(b"\xef\xbb\xbf")


def test_parse_line_accepts_any_layout() -> None:
    assert parse_line(b'  { "b" : 1 ,\t"a":"\\u00e9\\/" }  \r\n') == {"b": 1, "a": "é/"}
    assert parse_line(b'{"a":1}\r') == {"a": 1}
    assert parse_line(b'{"a":1}') == {"a": 1}
    assert parse_line(b"{}\n") == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n",
        b"[1,2]",
        b'"text"',
        b"42",
        b"null",
        b'{"a":1',  # torn
        b'{"a":1}{"b":2}',
        b'{"a":1} x',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'\xef\xbb\xbf{"a":1}',  # BOM
        b'{"a":"\xff"}',  # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # too deep for the parser
    ],
)
def test_parse_line_returns_none_for_non_objects(raw: bytes) -> None:
    assert parse_line(raw) is None


def test_parse_line_keeps_last_duplicate_key_like_go() -> None:
    assert parse_line(b'{"a":1,"a":2}') == {"a": 2}


def test_parse_line_handles_a_16_mib_line() -> None:
    content = "x" * (16 * 1024 * 1024)
    obj = parse_line(canonical_line({"type": "t", "body": {"content": content}}))
    assert obj is not None
    assert obj["body"]["content"] == content


def test_structured_text_is_canonical_compact_text() -> None:
    assert structured_text({"z": [1, {"b": "<é>"}], "a": None}) == '{"a":null,"z":[1,{"b":"<é>"}]}'


@pytest.mark.parametrize("bad", [[1, 2], "text", 3, None])
def test_structured_text_requires_an_object(bad: Any) -> None:
    with pytest.raises(TypeError):
        structured_text(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_round_trips_through_json_loads(obj: dict[str, Any]) -> None:
    text = canonical_json(obj)
    assert json.loads(text) == obj
    # Idempotent: re-serialising the parsed value gives the same bytes.
    assert canonical_json(json.loads(text)) == text
    assert "\u2028" not in text and "\u2029" not in text
    assert text == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).replace(
        "\u2028", "\\u2028"
    ).replace("\u2029", "\\u2029")


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_parse_line_inverts_canonical_line(obj: dict[str, Any]) -> None:
    try:
        line = canonical_line(obj)
    except UnicodeEncodeError:
        return  # lone surrogates cannot be written as UTF-8
    assert parse_line(line) == obj


def _decoded(raw: bytes) -> dict[str, Any] | None:
    """What ``parse_line`` means: the whole text (less ``\\n``, ``\\r``) through ``LINE_DECODER.decode``."""
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        value = LINE_DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if type(value) is dict else None


def test_parse_line_fast_path_agrees_with_the_decoder() -> None:
    samples = [
        SPEC_LINE.rstrip(b"\n"),
        b'{"a":1}',
        b' {"a":1} ',
        b'{"a":1}\r',
        b'{"a":1}x',
        b'{"a":1}{"b":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',
        b'{"a":"\xff"}',
        b'{"a":"\\ud800"}',
        b'{"a":1,"a":2}',
        b"\xef\xbb\xbf{}",
        b"{}",
        b"[1]",
        b'"s"',
        b"{",
        b"}",
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":"\\u2028","b":[1,2.5,-3e2,true,false,null]}',
    ]
    for raw in samples:
        assert parse_line(raw) == _decoded(raw), raw[:40]
