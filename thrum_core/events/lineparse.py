"""Fast parsing of one log line with ``orjson``, exact to the standard library.

The log readers (:meth:`thrum_core.events.projection.Projection._file_rows`,
:func:`thrum_core.events.projection.decode_line`) define a line's object by
the standard library's JSON decoder (NaN/Infinity rejected).  ``orjson``
parses a typical event line in about half the time, and this module uses it
only where it is known to give exactly the same Python object; everywhere
else the caller keeps the standard library's answer.

``orjson`` is only trusted where it is known to agree:

- a line that ``orjson`` parses to an object ``value`` with
  ``orjson.dumps(value) == line`` (nearly every line thrum writes: canonical
  JSON is compact and keeps non-ASCII raw, as ``orjson`` does; it differs
  for escaped U+2028/U+2029 and floats with a one-digit exponent, ``1e-07``
  against ``1e-7``) gives the standard library's object *by construction*:
  the standard library parses ``orjson``'s own output, whose numbers are
  exact ints and round-tripping floats, whose strings are valid UTF-8, and
  whose objects have no duplicate keys, back to ``value``.  A number
  ``orjson`` read differently (an integer beyond 64 bits read as a float,
  say) would not print back to the same bytes;
- any other line that ``orjson`` parses to an object: whitespace, escapes,
  key order and duplicate keys (first key's place, last value) are treated
  alike by both, so only numbers can differ.  ``orjson`` turns integers
  outside ``[-2**63, 2**64)`` into floats, and each such literal has at least
  :data:`LONG_DIGITS` digits in a row, so a line holding that many ASCII
  digits in a row (anywhere, also inside a string: a cheap, conservative
  test) is left to the standard library.  Floats are correctly rounded by
  both (tested);
- nesting: ``orjson`` parses up to 1024 levels, the standard library raises
  ``RecursionError`` below the interpreter's recursion limit (1000 by
  default) less the caller's own depth.  Lines that may nest deeper than
  :data:`MAX_FAST_DEPTH` levels are left to the standard library;
- whatever ``orjson`` refuses that the standard library accepts (lone
  surrogate escapes such as ``"\\ud800"``, numbers that overflow to
  infinity such as ``1e400``) raises, and the caller falls back.  Both refuse
  invalid UTF-8, a BOM, NaN/Infinity (refused by thrum's decoder), control
  characters in strings, trailing commas and trailing garbage.

See ``tests/core/events/test_line_parsing.py`` (checked against orjson 3.13).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["DIGIT_RUNS", "LONG_DIGITS", "MAX_FAST_DEPTH", "SHALLOW_LINE", "dumps", "fast_object", "loads"]

#: ``orjson.loads`` (raises :class:`orjson.JSONDecodeError`, a ``ValueError``).
loads = orjson.loads

#: ``orjson.dumps`` (raises :class:`orjson.JSONEncodeError`, a ``TypeError``,
#: beyond its own nesting limit of 254 levels).
dumps = orjson.dumps

#: ``bytes.translate`` table: ASCII digits → ``0``, any other byte → a space.
DIGIT_RUNS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))

#: 19 digits in a row (in a line translated by :data:`DIGIT_RUNS`): the
#: shortest integer literal that may lie outside orjson's 64-bit range.
LONG_DIGITS = b"0" * 19

#: Lines with at most this many opening brackets may be parsed by ``orjson``.
#: The standard library parses this depth unless its caller already stands
#: within about 600 frames of the (default) recursion limit.
MAX_FAST_DEPTH = 400

#: A line this short nests at most :data:`MAX_FAST_DEPTH` levels (each level
#: takes an opening and a closing byte), so its brackets need no counting.
SHALLOW_LINE = 2 * MAX_FAST_DEPTH


def fast_object(line: bytes) -> dict[str, Any] | None:
    """The JSON object ``line`` holds, when ``orjson`` surely parses it as the standard library does.

    ``None`` means "not decided here": ``line`` is not a JSON object, or
    ``orjson`` refuses it, or it is one of the inputs where the two could
    differ; the caller then asks the standard library.  A returned object
    equals (types, key order and values) what thrum's ``json.JSONDecoder``
    gives for ``line`` decoded as UTF-8.  :meth:`Projection._file_rows
    <thrum_core.events.projection.Projection._file_rows>` inlines this.
    """
    if len(line) > SHALLOW_LINE and line.count(b"[") + line.count(b"{") > MAX_FAST_DEPTH:
        return None
    try:
        value = loads(line)
        if type(value) is not dict:
            return None
        if dumps(value) == line:
            return value
    except orjson.JSONDecodeError:
        return None
    except orjson.JSONEncodeError:  # deeper than orjson.dumps goes: check the digits
        pass
    if LONG_DIGITS in line.translate(DIGIT_RUNS):
        return None
    return value
