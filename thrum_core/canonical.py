"""Canonical JSON for event lines, and the lenient line reader (SPEC §2.2, §6.4).

Writers serialise every event with :func:`canonical_line`, so the same event is
the same bytes on every machine: keys sorted by code point at every depth, no
spaces, non-ASCII written raw, U+2028/U+2029 escaped, NaN/Infinity refused.
Readers use :func:`parse_line`, which accepts any JSON object and never raises.

Standard library only: the CLI imports this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LINE_DECODER",
    "canonical_bytes",
    "canonical_json",
    "canonical_line",
    "parse_line",
    "parse_text",
    "structured_text",
]


def _mapping_to_dict(o: Any) -> Any:
    # json only serialises dict subclasses; accept any Mapping as an object.
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# One shared encoder: the C accelerator is used because indent is None.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_mapping_to_dict,
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (math.inf, -math.inf):
        raise ValueError(f"number {literal[:40]} is out of range")
    return value


#: The decoder of log lines.  It refuses NaN/Infinity/-Infinity and numbers
#: that overflow to infinity (``1e400``): they are not JSON a peer can read
#: (Go refuses them) and could never be re-serialised canonically, so such a
#: line is invalid rather than an event whose id or rewrite would fail later.
LINE_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_SCAN = LINE_DECODER.scan_once  # type: ignore[attr-defined]


def canonical_json(obj: Any) -> str:
    """Return the canonical JSON text of ``obj`` (SPEC §2.2), without a newline.

    Raises ``ValueError`` for NaN or infinite floats and ``TypeError`` for values
    JSON cannot represent.  Any ``Mapping`` is written as an object.
    """
    text = _ENCODER.encode(obj)
    # json leaves the two JavaScript line terminators raw; escape them so a line
    # survives tools that treat them as line breaks.
    if "\u2028" in text:
        text = text.replace("\u2028", "\\u2028")
    if "\u2029" in text:
        text = text.replace("\u2029", "\\u2029")
    return text


def canonical_line(obj: Any) -> bytes:
    """Return the JSONL line for ``obj``: canonical JSON in UTF-8 plus ``\\n``.

    Raises ``ValueError`` (``UnicodeEncodeError``) when a string holds a lone
    surrogate, since such text cannot be written as UTF-8.
    """
    return (canonical_json(obj) + "\n").encode("utf-8")


def canonical_bytes(obj: Any) -> bytes:
    """Return canonical JSON as UTF-8 bytes, never failing on lone surrogates.

    Used for content hashes (SPEC §3.2) of objects read from disk: a line may
    legally contain an escaped lone surrogate (``"\\ud800"``), which Python keeps
    as a lone code point; it is hashed as its surrogate-pass encoding so the id
    is still deterministic.
    """
    return canonical_json(obj).encode("utf-8", "surrogatepass")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """Parse one JSONL line leniently (SPEC §2.2, §6.4); never raises.

    One trailing ``\\n`` and then one trailing ``\\r`` are removed.  Returns the
    object when the line is valid UTF-8 holding exactly one JSON object (any key
    order, spacing or escaping), otherwise ``None`` — including for other JSON
    values, a BOM, NaN/Infinity, or nesting too deep to parse.
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_text(text)


def parse_text(text: str) -> dict[str, Any] | None:
    """:func:`parse_line` of a line already decoded (one trailing ``\\r`` is ignored)."""
    if text.endswith("\r"):
        text = text[:-1]
    try:
        if text[:1] == "{":
            # What JSONDecoder.decode does, minus the leading-whitespace regex.
            value, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(" \t\n\r"):
                return None
        else:
            value = LINE_DECODER.decode(text)
    except (StopIteration, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    if type(value) is dict:
        return value
    return None


def structured_text(obj: Mapping[str, Any]) -> str:
    """Return the text stored in ``body.structured`` (SPEC §6.2).

    ``body.structured`` is a JSON object serialised as canonical compact text
    (a string, as in the Go tool).  Raises ``TypeError`` when ``obj`` is not a
    mapping and ``ValueError`` for NaN/Infinity.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"structured must be a JSON object, not {type(obj).__name__}")
    return canonical_json(obj)
