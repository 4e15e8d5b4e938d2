"""Error types shared by every part of thrum.

A :class:`ThrumError` carries a JSON-RPC error code (SPEC §8.4), one readable
sentence and an optional ``data`` object.  Handlers raise them; the dispatcher
turns them into error replies; the CLI prints them.  This module is stdlib-only
because the CLI imports it.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32001
PERMISSION = -32002
CONFLICT = -32003
TIMEOUT = -32004
TOO_LARGE = -32005

# CLI-side codes (SPEC §15.3)
DAEMON_NOT_RUNNING = -32010
NOT_INITIALIZED = -32011


class ThrumError(Exception):
    """An error with a JSON-RPC code, a readable message and optional data."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: dict[str, Any] | None = None, *, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_error_object(self) -> dict[str, Any]:
        """Return the JSON-RPC ``error`` member for this error."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, {self.data!r})"


class ParseError(ThrumError):
    """The input was not valid JSON (-32700)."""

    code = PARSE_ERROR


class InvalidRequest(ThrumError):
    """The value is not a valid JSON-RPC request (-32600)."""

    code = INVALID_REQUEST


class MethodNotFound(ThrumError):
    """No such method, or not on this transport (-32601)."""

    code = METHOD_NOT_FOUND


class InvalidParams(ThrumError):
    """A parameter is missing, of the wrong type or out of range (-32602)."""

    code = INVALID_PARAMS

    def __init__(self, field: str, reason: str, message: str | None = None, **extra: Any):
        data: dict[str, Any] = {"field": field, "reason": reason, **extra}
        super().__init__(message or f"invalid parameter {field!r}: {reason}", data)


class InternalError(ThrumError):
    """Something failed inside the daemon (-32603)."""

    code = INTERNAL_ERROR


class NotFound(ThrumError):
    """A named thing does not exist (-32001); ``kind`` says what was looked for."""

    code = NOT_FOUND

    def __init__(self, kind: str, id: str | None = None, message: str | None = None, **extra: Any):
        data: dict[str, Any] = {"kind": kind, **extra}
        if id is not None:
            data["id"] = id
        super().__init__(message or f"{kind} not found" + (f": {id}" if id else ""), data)


class PermissionDenied(ThrumError):
    """Identity or permission problem (-32002); ``reason`` is one of SPEC §8.4's."""

    code = PERMISSION

    def __init__(self, reason: str, message: str | None = None, **extra: Any):
        super().__init__(message or f"permission denied: {reason}", {"reason": reason, **extra})


class Conflict(ThrumError):
    """The request conflicts with the current state (-32003)."""

    code = CONFLICT

    def __init__(self, reason: str, message: str | None = None, **extra: Any):
        super().__init__(message or f"conflict: {reason}", {"reason": reason, **extra})


class Timeout(ThrumError):
    """A deadline passed (-32004)."""

    code = TIMEOUT

    def __init__(self, timeout_ms: int, message: str | None = None):
        super().__init__(message or f"request timed out after {timeout_ms} ms", {"timeout_ms": timeout_ms})


class PayloadTooLarge(ThrumError):
    """A field is larger than allowed (-32005)."""

    code = TOO_LARGE

    def __init__(self, field: str, limit: int, size: int, message: str | None = None):
        super().__init__(
            message or f"{field} is too large: {size} bytes (limit {limit})",
            {"field": field, "limit": limit, "size": size},
        )


class DaemonNotRunning(ThrumError):
    """The CLI could not reach the daemon (-32010)."""

    code = DAEMON_NOT_RUNNING

    def __init__(self, message: str = "thrum daemon is not running — start it with: thrum daemon start"):
        super().__init__(message)


class NotInitialized(ThrumError):
    """No ``.thrum/`` directory was found (-32011)."""

    code = NOT_INITIALIZED

    def __init__(self, message: str = "not initialized (run thrum init)"):
        super().__init__(message)


class PluginError(Exception):
    """A plugin broke a rule of the plugin surface (duplicate name, bad registration)."""


def error_from_object(err: dict[str, Any]) -> ThrumError:
    """Rebuild a :class:`ThrumError` from a JSON-RPC ``error`` member (client side)."""
    code = int(err.get("code", INTERNAL_ERROR))
    exc = ThrumError(str(err.get("message", "error")), err.get("data"), code=code)
    return exc
