"""The store's fast line and timestamp parsers agree with the reference ones."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thrum_core.canonical import parse_line
from thrum_core.events.projection import decode_line, ts_ns
from thrum_core.timefmt import TS_MAX_NS, format_ts, parse_ts_ns


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1}',
        b'{"a":1}\r',
        b'{"a":1}\n',
        b'{"a":1}\r\n',
        b' {"a" : [1, 2]} ',
        b'{"a":1} \t',
        b'{"a":1} x',
        b"[1]",
        b"null",
        b"\xef\xbb\xbf{}",
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":"\xff"}',
        b'{"a":"\\ud800"}',
        b"",
        b"{",
        b'{"a":1}{"b":2}',
        b"[" * 100_000,
        b'{"a":' * 100_000,
    ],
)
def test_decode_line_agrees_with_parse_line(raw: bytes) -> None:
    obj, text = decode_line(raw)
    assert obj == parse_line(raw)
    if obj is not None:
        assert text == raw.removesuffix(b"\n").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(value=json_values, pad=st.sampled_from(["", " ", "\t", "\r", " \n "]), junk=st.binary(max_size=3))
def test_decode_line_agrees_on_generated_lines(value: object, pad: str, junk: bytes) -> None:
    for raw in (
        (pad + json.dumps(value) + pad).encode(),
        (json.dumps(value, ensure_ascii=False) + pad).encode() + junk,
        json.dumps({"k": value}, separators=(",", ":")).encode(),
    ):
        assert decode_line(raw)[0] == parse_line(raw)


@given(ns=st.integers(min_value=0, max_value=TS_MAX_NS))
def test_ts_ns_of_written_timestamps(ns: int) -> None:
    try:
        text = format_ts(ns)
    except ValueError:  # beyond year 9999: not writable
        return
    assert ts_ns(text) == parse_ts_ns(text) == ns // 1000 * 1000


TEMPLATE = "2026-01-01T00:00:30.123456Z"


@given(
    edits=st.lists(st.tuples(st.integers(0, 26), st.sampled_from(list("0123456789TtZz:.-+ x٣"))), max_size=3)
)
def test_ts_ns_agrees_with_parse_ts_ns_on_near_misses(edits: list[tuple[int, str]]) -> None:
    chars = list(TEMPLATE)
    for i, c in edits:
        chars[i] = c
    s = "".join(chars)
    assert ts_ns(s) == parse_ts_ns(s)


@pytest.mark.parametrize(
    "s",
    [
        "2026-01-01T23:59:59.999999Z",
        "2026-01-01T24:00:00.000000Z",
        "2026-01-01T00:60:00.000000Z",
        "2026-01-01T00:00:60.000000Z",
        "2026-02-29T00:00:00.000000Z",
        "2024-02-29T00:00:00.000000Z",
        "1969-12-31T23:59:59.000000Z",
        "5138-11-16T09:46:39.999999Z",
        "5138-11-16T09:46:40.000000Z",
        "2026-01-01t00:00:00.000000Z",
        "2026-01-01T00:00:00.00000٣Z",
        "2026-01-01T00:00:00+00:00",
        None,
        12,
    ],
)
def test_ts_ns_edge_cases(s: object) -> None:
    assert ts_ns(s) == parse_ts_ns(s)
