"""JSON-RPC conformance cases (SPEC §8.3, §8.4) shared by in-process and subprocess tests.

Each :class:`Case` is one line sent to a daemon that has
:mod:`thrum_core.testing.conformance_plugin` registered, and what must come
back: a reply matching ``expect`` (see :func:`matches`), or nothing at all
(``expect is NO_REPLY``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ANY = object()
"""Matches any value (the key must still be present)."""

NO_REPLY = None


@dataclass(frozen=True)
class Case:
    """One request line and the reply it must get."""

    name: str
    line: bytes
    expect: Any


def matches(actual: Any, expected: Any) -> bool:
    """Whether ``actual`` matches ``expected``.

    Dict keys of ``expected`` must be present and match recursively (extra
    keys in ``actual`` are allowed); lists match element-wise; :data:`ANY`
    matches anything; ``True`` does not match ``1``.
    """
    if expected is ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def req(method: str, params: Any = ..., id: Any = 1, **extra: Any) -> dict[str, Any]:
    """A request object (``params`` omitted when ``...``)."""
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id, **extra}
    if params is not ...:
        out["params"] = params
    return out


def note(method: str, params: Any = ...) -> dict[str, Any]:
    """A notification (no ``id``)."""
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not ...:
        out["params"] = params
    return out


def err(code: int, id: Any = None, message: Any = ANY, **data: Any) -> dict[str, Any]:
    """An expected error response; ``data`` keys must be present with these values."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": id}


def ok(result: Any, id: Any = 1) -> dict[str, Any]:
    """An expected result response."""
    return {"jsonrpc": "2.0", "result": result, "id": id}


SCOPES_BAD = [
    {"type": "agent", "value": "a"},
    {"type": "group", "value": "g"},
    {"type": "planet", "value": "x"},
]

CASES: list[Case] = [
    # -32700: not JSON at all (id cannot be read → null)
    Case(
        "parse-error-truncated-object",
        b'{"jsonrpc":"2.0","method":"health",',
        err(-32700, None, "Parse error"),
    ),
    Case("parse-error-garbage", b"hello there", err(-32700, None, "Parse error", reason=ANY)),
    Case("parse-error-bad-utf8", b'{"jsonrpc":"2.0","method":"\xff\xfe","id":1}', err(-32700, None)),
    Case("parse-error-trailing-garbage", b'{"jsonrpc":"2.0","method":"health","id":1} x', err(-32700, None)),
    # -32600: the value is not a request
    Case("not-object-string", b'"health"', err(-32600, None, reason="not_object")),
    Case("not-object-number", b"42", err(-32600, None, reason="not_object")),
    Case("not-object-null", b"null", err(-32600, None, reason="not_object")),
    Case("not-object-true", b"true", err(-32600, None, reason="not_object")),
    Case("empty-batch", b"[]", err(-32600, None, reason="empty_batch")),
    Case(
        "batch-too-large",
        _line([req("health", id=i) for i in range(101)]),
        err(-32600, None, reason="batch_too_large"),
    ),
    Case("bad-jsonrpc-version", _line({"jsonrpc": "1.0", "method": "health", "id": 7}), err(-32600, 7)),
    Case("missing-jsonrpc", _line({"method": "health", "id": 8}), err(-32600, 8)),
    Case("jsonrpc-number", _line({"jsonrpc": 2.0, "method": "health", "id": 9}), err(-32600, 9)),
    Case("method-not-string", _line({"jsonrpc": "2.0", "method": 5, "id": 10}), err(-32600, 10)),
    Case("method-missing", _line({"jsonrpc": "2.0", "id": 11}), err(-32600, 11)),
    Case("id-object", _line({"jsonrpc": "2.0", "method": "health", "id": {"a": 1}}), err(-32600, None)),
    Case("id-array", _line({"jsonrpc": "2.0", "method": "health", "id": [1]}), err(-32600, None)),
    Case("id-bool", _line({"jsonrpc": "2.0", "method": "health", "id": True}), err(-32600, None)),
    Case(
        "invalid-request-without-id-still-answered",
        _line({"jsonrpc": "1.0", "method": "health"}),
        err(-32600),
    ),
    # ids are echoed exactly
    Case("id-string", _line(req("test.counter", id="abc-1")), ok(ANY, "abc-1")),
    Case("id-zero", _line(req("test.counter", id=0)), ok(ANY, 0)),
    Case("id-float", _line(req("test.counter", id=1.5)), ok(ANY, 1.5)),
    Case("id-negative", _line(req("test.counter", id=-3)), ok(ANY, -3)),
    Case("id-null-is-a-request", _line(req("test.counter", id=None)), ok(ANY, None)),
    # -32601
    Case("unknown-method", _line(req("no.such", id=20)), err(-32601, 20, method="no.such")),
    Case("empty-method-name", _line(req("", id=21)), err(-32601, 21, method="")),
    Case(
        "wrong-transport",
        _line(req("test.ws_only", id=22)),
        err(-32601, 22, method="test.ws_only", reason="transport", transports=["ws"]),
    ),
    # -32602
    Case("params-array", _line(req("test.echo", [1, 2], id=30)), err(-32602, 30, field="params")),
    Case("params-string", _line(req("test.echo", "x", id=31)), err(-32602, 31, field="params")),
    Case("params-missing-required", _line(req("test.echo", {}, id=32)), err(-32602, 32, field="text")),
    Case(
        "params-unknown-key",
        _line(req("test.echo", {"text": "a", "nmae": 1}, id=33)),
        err(-32602, 33, field="nmae", reason="unknown parameter"),
    ),
    Case(
        "params-no-coercion-str-int",
        _line(req("test.echo", {"text": "a", "count": "10"}, id=34)),
        err(-32602, 34, field="count"),
    ),
    Case(
        "params-no-coercion-float-int",
        _line(req("test.echo", {"text": "a", "count": 1.0}, id=35)),
        err(-32602, 35, field="count"),
    ),
    Case(
        "params-no-coercion-bool-int",
        _line(req("test.echo", {"text": "a", "count": True}, id=36)),
        err(-32602, 36, field="count"),
    ),
    Case(
        "params-no-coercion-int-str",
        _line(req("test.echo", {"text": 5}, id=37)),
        err(-32602, 37, field="text"),
    ),
    Case(
        "params-no-coercion-str-bool",
        _line(req("test.echo", {"text": "a", "flag": "true"}, id=38)),
        err(-32602, 38, field="flag"),
    ),
    Case(
        "params-range",
        _line(req("test.echo", {"text": "a", "count": -1}, id=39)),
        err(-32602, 39, field="count"),
    ),
    Case(
        "params-nested-field-path",
        _line(req("test.echo", {"text": "a", "scopes": SCOPES_BAD}, id=40)),
        err(-32602, 40, field="scopes.2.type"),
    ),
    Case(
        "params-nested-unknown-key",
        _line(
            req("test.echo", {"text": "a", "scopes": [{"type": "agent", "value": "v", "extra": 1}]}, id=41)
        ),
        err(-32602, 41, field="scopes.0.extra", reason="unknown parameter"),
    ),
    Case(
        "params-dict-value-type",
        _line(req("test.echo", {"text": "a", "tags": {"k": 1}}, id=42)),
        err(-32602, 42, field="tags.k"),
    ),
    Case(
        "params-null-required-is-absent",
        _line(req("test.echo", {"text": None}, id=43)),
        err(-32602, 43, field="text", reason="required"),
    ),
    Case(
        "params-for-paramless-method",
        _line(req("test.counter", {"x": 1}, id=44)),
        err(-32602, 44, field="x", reason="unknown parameter"),
    ),
    Case(
        "caller-agent-id-not-string",
        _line(req("test.counter", {"caller_agent_id": 5}, id=45)),
        err(-32602, 45, field="caller_agent_id"),
    ),
    # accepted forms
    Case(
        "params-x-keys-ignored",
        _line(req("test.echo", {"text": "a", "x_trace": "t", "x_": 1}, id=50)),
        ok({"text": "a"}, 50),
    ),
    Case(
        "params-null-is-absent",
        _line(req("test.echo", {"text": "a", "count": None, "tags": None}, id=51)),
        ok({"text": "a"}, 51),
    ),
    Case(
        "params-int-for-float",
        _line(req("test.echo", {"text": "a", "ratio": 2}, id=52)),
        ok({"text": "a", "ratio": 2.0}, 52),
    ),
    Case(
        "params-nested-valid",
        _line(req("test.echo", {"text": "a", "scopes": [{"type": "module", "value": "m"}]}, id=53)),
        ok({"text": "a", "scopes": [{"type": "module", "value": "m"}]}, 53),
    ),
    Case("params-null-for-paramless", _line(req("test.counter", None, id=54)), ok(ANY, 54)),
    Case("params-empty-for-paramless", _line(req("test.counter", {}, id=55)), ok(ANY, 55)),
    Case(
        "params-caller-agent-id-accepted",
        _line(req("test.counter", {"caller_agent_id": "agent_a"}, id=56)),
        ok(ANY, 56),
    ),
    Case(
        "unicode-roundtrip",
        _line(req("test.echo", {"text": "héllo ✓ 𝄞"}, id=57)),
        ok({"text": "héllo ✓ 𝄞"}, 57),
    ),
    # handler errors
    Case("handler-raises", _line(req("test.boom", id=60)), err(-32603, 60)),
    Case(
        "handler-thrum-error",
        _line(req("test.fail", {"code": -32003, "message": "nope", "data": {"reason": "busy"}}, id=61)),
        err(-32003, 61, "nope", reason="busy"),
    ),
    Case(
        "deadline-exceeded",
        _line(req("test.deadline", {"seconds": 2}, id=62)),
        err(-32004, 62, timeout_ms=200),
    ),
    Case(
        "deadline-met", _line(req("test.deadline", {"seconds": 0}, id=63)), ok({"slept": 0, "tag": None}, 63)
    ),
    # notifications: never a reply, even for errors
    Case("notification-ok", _line(note("test.counter")), NO_REPLY),
    Case("notification-unknown-method", _line(note("no.such")), NO_REPLY),
    Case("notification-bad-params", _line(note("test.echo", {"count": "x"})), NO_REPLY),
    Case("notification-handler-raises", _line(note("test.boom")), NO_REPLY),
    Case("notification-wrong-transport", _line(note("test.ws_only")), NO_REPLY),
    Case("notification-params-array", _line(note("test.echo", [1])), NO_REPLY),
    Case("notification-deadline", _line(note("test.deadline", {"seconds": 1})), NO_REPLY),
    # batches
    Case("batch-single", _line([req("test.counter", id=70)]), [ok(ANY, 70)]),
    Case(
        "batch-all-notifications", _line([note("test.counter"), note("test.boom"), note("no.such")]), NO_REPLY
    ),
    Case("batch-of-non-objects", _line([1, "x"]), [err(-32600, None, reason="not_object")] * 2),
    Case("batch-nested-batch", _line([[req("test.counter")]]), [err(-32600, None, reason="not_object")]),
]

MIXED_BATCH = [
    req("test.echo", {"text": "one"}, id=1),
    {"foo": "bar"},
    note("test.bump"),
    req("no.such", id=2),
    req("test.echo", {"text": 5}, id=3),
    req("test.boom", id=4),
    note("no.such"),
    req("test.slow", {"seconds": 0.05}, id=5),
]
"""A batch mixing valid, invalid and notification elements; see :data:`MIXED_BATCH_REPLIES`."""

MIXED_BATCH_REPLIES = {
    1: ok({"text": "one"}, 1),
    None: err(-32600, None),
    2: err(-32601, 2, method="no.such"),
    3: err(-32602, 3, field="text"),
    4: err(-32603, 4),
    5: ok({"slept": 0.05, "tag": None}, 5),
}
"""The expected replies to :data:`MIXED_BATCH`, by id (any order; nothing for the notifications)."""

TOO_LARGE_REPLY = (
    b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"request too large",'
    b'"data":{"limit":4194304}},"id":null}'
)
"""The exact reply to a line over 4 MiB (SPEC §8.1)."""

MAX_LINE = 4 * 1024 * 1024


def padded_request(size: int, id: Any = "big") -> bytes:
    """A valid ``test.echo`` request line of exactly ``size`` bytes (without ``\\n``)."""
    head = _line(req("test.echo", {"text": ""}, id=id))
    # Pad inside the string value so the line stays one valid request.
    pad = size - len(head)
    if pad < 0:
        raise ValueError("size too small")
    return head.replace(b'"text":""', b'"text":"' + b"a" * pad + b'"', 1)
