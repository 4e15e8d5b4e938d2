"""The orjson line parsing gives exactly what the standard library path gave.

``decode_line``, ``lineparse.fast_object`` and the inlined parse of
``Projection._file_rows`` are compared, for any bytes, with the reference:
the standard library's reading of a line (``thrum_core.canonical.parse_text``,
which ``decode_line`` falls back to), objects compared
with their types, key order and the sign of zero.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from events_testtypes import DAEMON, make_paths, make_registry
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from thrum_core.canonical import canonical_line, parse_text
from thrum_core.events.lineparse import MAX_FAST_DEPTH, fast_object
from thrum_core.events.projection import decode_line
from thrum_core.events.store import EventStore
from thrum_core.ids import event_id_of
from thrum_core.timefmt import parse_ts_ns

# ---------------------------------------------------------------- the reference


def ref_decode_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``decode_line`` without orjson: the standard library's reading (``canonical.parse_text``)."""
    if line.endswith(b"\n"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, None
    return parse_text(text), text


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types: key order, int/float and ``-0.0`` count (any depth)."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if list(x) != list(y):
                return False
            todo.extend((x[k], y[k]) for k in x)
        elif type(x) is list:
            if len(x) != len(y):
                return False
            todo.extend(zip(x, y, strict=True))
        elif type(x) is float:
            if math.isnan(x) or math.isnan(y):
                if not (math.isnan(x) and math.isnan(y)):
                    return False
            elif x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif x != y:
            return False
    return True


def check_line(line: bytes) -> None:
    """``decode_line`` and ``fast_object`` agree with the reference on ``line``."""
    ref_obj, ref_text = ref_decode_line(line)
    obj, text = decode_line(line)
    assert same(obj, ref_obj), (line, obj, ref_obj)
    assert text == ref_text
    body = line[:-1] if line.endswith(b"\n") else line
    fast = fast_object(body)
    if fast is not None:
        assert same(fast, ref_obj), (line, fast, ref_obj)


# ---------------------------------------------------------------- JSON-ish text

WS = st.sampled_from(["", "", "", " ", "\t", "\r", "\n", " \r\n "])
# Key alphabet kept small so that duplicate keys are common.
KEYS = st.sampled_from(["a", "b", "type", "\\u0061", "é", "\\ud800", "k\\n"]) | st.text(max_size=4)


def _digits(draw: st.DrawFn, lo: int, hi: int) -> str:
    n = draw(st.integers(lo, hi))
    return "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=n, max_size=n)))


@st.composite
def number_literal(draw: st.DrawFn) -> str:
    """Number literals: valid ones of every size (beyond 64 bits too) and near misses."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["1.", ".5", "01", "-01", "1e", "1e+", "-", "+1", "0x1", "1_0", "--1"]))
    if kind == 1:
        return draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "-NaN", "nan", "inf"]))
    if kind == 2:
        edge = draw(st.sampled_from([2**63, 2**64, 10**18, 10**19, 10**20]))
        return str(draw(st.sampled_from([1, -1])) * (edge + draw(st.integers(-2, 2))))
    if kind == 3:
        value = draw(st.floats(allow_nan=False, allow_infinity=False))
        return draw(
            st.sampled_from([repr(value), orjson.dumps(value).decode(), f"{value:.17e}", f"{value:.25g}"])
        )
    sign = draw(st.sampled_from(["", "", "-"]))
    head = draw(st.sampled_from(["0", "1", "9"])) if draw(st.booleans()) else "1" + _digits(draw, 0, 45)
    text = sign + head
    if draw(st.booleans()):
        text += "." + _digits(draw, 1, 45)
    if draw(st.booleans()):
        exp_sign = draw(st.sampled_from(["", "+", "-"]))
        text += draw(st.sampled_from("eE")) + exp_sign + str(draw(st.integers(0, 400)))
    return text


@st.composite
def string_literal(draw: st.DrawFn) -> str:
    """String literals: plain, escaped, with (lone) surrogate escapes, control characters, bad escapes."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return json.dumps(draw(st.text(max_size=8)), ensure_ascii=draw(st.booleans()))
    if kind == 1:
        return json.dumps(draw(st.text(max_size=8)))  # astral characters as surrogate pairs
    pieces = draw(
        st.lists(
            st.sampled_from(
                [
                    "x",
                    "é",
                    "😀",
                    "\\ud800",
                    "\\udc00",
                    "\\ud83d\\ude00",
                    "\\uD83D\\uDE00",
                    "\\ud83d\\u0041",
                    "\\udfff\\ud800",
                    "\\u0000",
                    "\\u001f",
                    "\\/",
                    "\\\\",
                    '\\"',
                    "\\b\\f\\n\\r\\t",
                    "\\x",
                    "\\u12",
                    "\\U0041",
                    "\x00",
                    "\x1f",
                    "\x7f",
                    "\u2028",
                    "\ufeff",
                    "\ud800",  # raw: its surrogatepass encoding is invalid UTF-8
                ]
            ),
            max_size=4,
        )
    )
    return '"' + "".join(pieces) + '"'


SCALARS = (
    number_literal()
    | string_literal()
    | st.sampled_from(["null", "true", "false", "True", "nul", "[]", "{}", "[1,]", '{"a":1,}'])
)


def _array(items: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.tuples(WS, items, WS), max_size=4).map(
        lambda xs: "[" + ",".join(a + v + b for a, v, b in xs) + "]"
    )


def _object(items: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    key = KEYS.map(lambda k: '"' + k + '"')
    pairs = st.lists(st.tuples(key, WS, items), max_size=4)
    return pairs.map(lambda ps: "{" + ",".join(k + ":" + w + v for k, w, v in ps) + "}")


JSON_TEXT = st.recursive(SCALARS, lambda inner: _array(inner) | _object(inner), max_leaves=12)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def json_line(draw: st.DrawFn) -> bytes:
    """A JSON-ish line: mostly an event-like object, then mutated at the byte level."""
    kind = draw(st.integers(0, 3))
    if kind == 0:  # a well-formed value written canonically (thrum's own lines)
        value = draw(VALUES)
        obj = {"type": "t.x", "timestamp": "2026-01-01T00:00:00.000001Z", "v": value}
        line = canonical_line(obj)[:-1]
    elif kind == 1:  # the same written by json.dumps with other options
        value = draw(VALUES)
        obj = {"v": value, "type": "t.x", "timestamp": "2026-01-01T00:00:00Z"}
        line = json.dumps(
            obj, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0]))
        ).encode()
        line = line.replace(b"\n", b" ")
    elif kind == 2:  # a hand-made event object with any members
        members = draw(_object(JSON_TEXT))
        head = '{"type":"t.x","timestamp":"2026-01-01T00:00:00.000001Z"'
        line = _encode(head + ("," + members[1:] if members != "{}" else "}"))
    else:  # any JSON-ish text
        line = _encode(draw(JSON_TEXT))
    line = _encode(draw(WS)) + line + _encode(draw(WS))
    mutation = draw(st.integers(0, 6))
    if mutation == 1:  # trailing bytes
        line += draw(
            st.sampled_from([b"x", b"{}", b",", b"\x00", b"\x0b", b"\x0c", b"\xff", b"\xc2\xa0", b" ]"])
        )
    elif mutation == 2:  # a byte inserted anywhere
        at = draw(st.integers(0, len(line)))
        byte = draw(
            st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\xef\xbb\xbf", b"0", b"9", b'"', b" "])
        )
        line = line[:at] + byte + line[at:]
    elif mutation == 3:  # a leading BOM or other space
        line = draw(st.sampled_from([b"\xef\xbb\xbf", b"\x0c", b"\xc2\xa0"])) + line
    elif mutation == 4 and line:  # a byte dropped
        at = draw(st.integers(0, len(line) - 1))
        line = line[:at] + line[at + 1 :]
    return line


INTS = (
    st.integers()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e16, 5e-324, 2.0**63]
)
VALUES = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


# ---------------------------------------------------------------- decode_line and fast_object


@settings(max_examples=1500)
@given(line=json_line())
@example(line=b'{"a":18446744073709551616}')
@example(line=b'{"a":"\\ud800"}')
def test_decode_line_matches_the_standard_library(line: bytes) -> None:
    check_line(line)
    check_line(line + b"\n")
    check_line(line + b"\r\n")


@settings(max_examples=500)
@given(value=VALUES)
def test_canonical_lines_agree(value: Any) -> None:
    line = canonical_line({"type": "t.x", "v": value})[:-1]
    check_line(line)
    assert same(decode_line(line)[0], json.loads(line))


EDGE_LINES = [
    # numbers
    b'{"a":1}',
    b'{"a":-0}',
    b'{"a":-0.0}',
    b'{"a":0e0}',
    b'{"a":-0e0}',
    b'{"a":-0E-0}',
    b'{"a":1e400}',
    b'{"a":-1e400}',
    b'{"a":1.7976931348623159e308}',
    b'{"a":1e-400}',
    b'{"a":-1e-400}',
    b'{"a":4.9e-324}',
    b'{"a":2.4703282292062328e-324}',
    b'{"a":0.30000000000000001}',
    b'{"a":9223372036854775807}',
    b'{"a":9223372036854775808}',
    b'{"a":18446744073709551615}',
    b'{"a":18446744073709551616}',
    b'{"a":-9223372036854775808}',
    b'{"a":-9223372036854775809}',
    b'{"a":1' + b"0" * 30 + b"}",
    b'{"a":1' + b"0" * 5000 + b"}",  # over the int digit limit: rejected by both
    b'{"a":123456789012345678901234567890.5}',
    b'{"a":1.' + b"1" * 40 + b"}",
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":-Infinity}',
    b'{"a":1.}',
    b'{"a":.5}',
    b'{"a":01}',
    b'{"a":1e}',
    # strings
    b'{"a":"\\ud800"}',
    b'{"a":"\\udc00"}',
    b'{"a":"\\ud83d"}',
    b'{"a":"\\ud83d\\ude00"}',
    b'{"a":"\\ud83d\\u0041"}',
    b'{"a":"\\ud800\\ud800"}',
    b'{"\\ud800":1}',
    b'{"a":"\\u0000\\u001f\\/"}',
    b'{"a":"\x00"}',
    b'{"a":"\x1f"}',
    b'{"a":"\x7f"}',
    b'{"a":"\xe2\x80\xa8"}',
    b'{"a":"\\u2028"}',
    b'{"a":"\\x"}',
    # invalid UTF-8
    b'{"a":"\xff"}',
    b'{"a":"\xed\xa0\x80"}',
    b'{"a":"\xc0\x80"}',
    b'{"a":"\xf4\x90\x80\x80"}',
    b'{"a":1}\xff',
    # whitespace and framing
    b' {"a":1}',
    b'{"a":1} ',
    b'\t{"a":1}\r',
    b'{"a":1}\r\r',
    b'{ "a" : [ 1 , 2 ] }',
    b'\xef\xbb\xbf{"a":1}',
    b'\x0c{"a":1}',
    b'{"a":1}\x0b',
    b'\xc2\xa0{"a":1}',
    # not an object, trailing garbage
    b"[1]",
    b"1",
    b'"x"',
    b"null",
    b"",
    b"{",
    b'{"a":1}x',
    b'{"a":1}{"b":2}',
    b'{"a":1,}',
    b'{"a":[1,]}',
    # duplicate keys: the first key's place, the last value
    b'{"a":1,"a":2}',
    b'{"b":0,"a":1,"b":2}',
    b'{"\\u0061":1,"a":2}',
    b'{"a":{"x":1},"a":[2]}',
]


@pytest.mark.parametrize("line", EDGE_LINES)
def test_edge_cases(line: bytes) -> None:
    check_line(line)
    check_line(line + b"\n")


def test_edge_case_values() -> None:
    """The standard library's answers that orjson alone would get wrong are kept."""
    assert decode_line(b'{"a":18446744073709551616}')[0] == {"a": 2**64}
    assert type(decode_line(b'{"a":18446744073709551616}')[0]["a"]) is int  # type: ignore[index]
    assert decode_line(b'{"a":-9223372036854775809}')[0] == {"a": -(2**63) - 1}
    assert decode_line(b'{"a":"\\ud800"}')[0] == {"a": "\ud800"}
    assert decode_line(b'{"a":1e400}') == (None, '{"a":1e400}')  # overflows: no canonical form
    assert decode_line(b'{"a":1e-400}')[0] == {"a": 0.0}
    assert decode_line(b'{"a":NaN}') == (None, '{"a":NaN}')
    assert decode_line(b'{"a":"\xff"}') == (None, None)
    assert decode_line(b'{"a":1,"a":2}')[0] == {"a": 2}
    zero = decode_line(b'{"a":-0.0}')[0]
    assert zero is not None and math.copysign(1.0, zero["a"]) == -1.0
    assert type(decode_line(b'{"a":-0}')[0]["a"]) is int  # type: ignore[index]


@pytest.mark.parametrize(
    "depth", [10, 254, 255, 300, MAX_FAST_DEPTH - 1, MAX_FAST_DEPTH + 1, 990, 1000, 1023, 1025, 5000]
)
@pytest.mark.parametrize("bracket", [b"[", b'{"a":'])
def test_deep_nesting(depth: int, bracket: bytes) -> None:
    close = b"]" if bracket == b"[" else b"}"
    line = b'{"type":"t.x","v":' + bracket * depth + b"1" + close * depth + b"}"
    check_line(line)


def test_orjson_behaviour_relied_on() -> None:
    """What lineparse assumes of orjson (a new orjson that changes it must be looked at)."""
    for bad in (
        b'"\\ud800"',
        b'"\\udc00"',
        b"NaN",
        b"1e400",
        b"\xef\xbb\xbf{}",
        b'"\xff"',
        b"[1,]",
        b'"\x01"',
    ):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(bad)
    # Too deep for orjson.dumps: JSONEncodeError, a TypeError (_file_rows catches that).
    assert issubclass(orjson.JSONEncodeError, TypeError)
    assert issubclass(orjson.JSONDecodeError, ValueError)
    # Floats print back to the same float, as floats (the canonical-line proof).
    for bits in range(0, 2**64, 2**64 // 4099):
        value = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
        if math.isfinite(value):
            assert same(json.loads(orjson.dumps(value)), value)


# ---------------------------------------------------------------- Projection._file_rows


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    store = EventStore(make_paths(tmp_path_factory.mktemp("lines") / "repo"), make_registry(), DAEMON)
    store.open()
    yield store
    store.close()


def expected_rows(content: bytes) -> list[tuple[int, str, int, dict[str, Any], bytes, str]]:
    """What ``_file_rows`` yields by the reference parse: ``(ts, eid, offset, obj, line, text)``."""
    rows = []
    off = 0
    for raw in content.split(b"\n")[:-1]:
        start, off = off, off + len(raw) + 1
        if not raw or raw.isspace():
            continue
        obj, text = ref_decode_line(raw)
        if obj is None or text is None:
            continue
        typ = obj.get("type")
        ts = parse_ts_ns(obj.get("timestamp"))
        if type(typ) is not str or not typ or ts is None:
            continue
        eid = obj.get("event_id")
        if type(eid) is not str or not eid:
            eid = event_id_of(obj)
        rows.append((ts, eid, start, obj, raw, text))
    return rows


_FILE_NO = iter(range(10**9))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(json_line(), min_size=1, max_size=8))
def test_file_rows_match_the_standard_library(reader: EventStore, lines: list[bytes]) -> None:
    proj = reader.projection
    sync_dir: Path = reader.paths.sync_dir
    rel = f"lines/f{next(_FILE_NO)}.jsonl"
    (sync_dir / "lines").mkdir(exist_ok=True)
    content = b"".join(line + b"\n" for line in lines)
    (sync_dir / rel).write_bytes(content)
    ends: dict[str, int] = {}
    got = list(proj._file_rows(sync_dir, 0, rel, 0, ends, order=0, scan_only=True))
    want = expected_rows(content)
    assert len(got) == len(want), (got, want)
    for (ts, eid, idx, off, obj, line, text, file), (wts, weid, woff, wobj, wline, wtext) in zip(
        got, want, strict=True
    ):
        assert (ts, eid, idx, off, line, text, file) == (wts, weid, 0, woff, wline, wtext, rel)
        assert type(text) is str
        assert same(obj, wobj), (line, obj, wobj)
    assert ends[rel] == len(content)


def _deep(depth: int, bracket: bytes) -> bytes:
    close = b"]" if bracket == b"[" else b"}"
    return (
        b'{"type":"t.x","timestamp":"2026-01-01T00:00:00Z","v":'
        + bracket * depth
        + b"1"
        + close * depth
        + b"}"
    )


def test_file_rows_edge_cases(reader: EventStore) -> None:
    """Every edge case, also as an event, and deep lines (away from the stack-dependent boundary)."""
    head = b'{"type":"t.x","timestamp":"2026-01-01T00:00:00.000001Z","event_id":"evt_e",'
    lines = [line for line in EDGE_LINES if b"\n" not in line]
    lines += [head + line[1:] for line in lines if line.startswith(b'{"')]
    lines += [
        _deep(d, b)
        for d in (10, 254, 255, 300, MAX_FAST_DEPTH - 1, MAX_FAST_DEPTH + 1, 1023, 1025, 5000)
        for b in (b"[", b'{"a":')
    ]
    content = b"".join(line + b"\n" for line in lines)
    rel = "lines/edges.jsonl"
    (reader.paths.sync_dir / "lines").mkdir(exist_ok=True)
    (reader.paths.sync_dir / rel).write_bytes(content)
    ends: dict[str, int] = {}
    got = list(reader.projection._file_rows(reader.paths.sync_dir, 0, rel, 0, ends, order=0, scan_only=True))
    want = expected_rows(content)
    assert [(r[0], r[1], r[3], r[5], r[6]) for r in got] == [(w[0], w[1], w[2], w[4], w[5]) for w in want]
    assert all(same(r[4], w[3]) for r, w in zip(got, want, strict=True))
    assert len(want) > 40  # most of the event variants are events
