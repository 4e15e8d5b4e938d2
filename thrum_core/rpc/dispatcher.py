"""Request processing (SPEC §8.3): one JSON-RPC value in, response bytes out.

Transports hand complete lines/frames to :meth:`Dispatcher.handle_bytes` and
write back what it returns.  The steps run in the SPEC's order and the first
failing step wins.  A handler that raises becomes an error reply for that one
call; nothing here ever raises into the transport.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

import trio
from pydantic import ValidationError

from thrum_core.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PermissionDenied,
    ThrumError,
    Timeout,
)
from thrum_core.rpc.spec import CallContext, MethodRegistry, MethodSpec

if TYPE_CHECKING:
    from thrum_core.interfaces import Connection
    from thrum_core.kernel import Kernel

log = logging.getLogger("thrum.rpc")

MAX_BATCH = 100
_MISSING = object()

_decode = json.JSONDecoder().decode


class RawJSON:
    """JSON text encoded elsewhere (by SQLite's JSON functions, say), to be sent as it is.

    A handler may return one as its result or as a value of its result dict:
    the dispatcher writes the text into the reply instead of building and
    encoding Python objects for it (a page of 100 messages).  Anywhere deeper
    in a result it is decoded and encoded again, so it is always correct.
    The text must be one valid JSON value.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text[:60]!r})"

    def value(self) -> Any:
        """The decoded value."""
        return _decode(self.text)


def _default(obj: Any) -> Any:
    if type(obj) is RawJSON:
        return obj.value()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# One encoder for every reply: json.dumps with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_str = json.encoder.encode_basestring


def _encode(obj: Any) -> str:
    """``_ENCODER.encode(obj)``, calling the C encoder directly where there is one.

    ``JSONEncoder.encode`` spends more time setting up than encoding a small
    reply; this makes the same C encoder with the same options (a fresh
    ``markers`` dict: circular references are still refused).
    """
    if _c_make_encoder is None:
        return _ENCODER.encode(obj)
    chunks = _c_make_encoder({}, _default, _encode_str, None, ":", ",", False, False, False)(obj, 0)
    return "".join(chunks)


#: Compact JSON text of a value, as in replies (for transports' notifications).
encode_json = _encode


def _has_raw(reply: Any) -> bool:
    """Whether ``reply`` (a response object) carries :class:`RawJSON` where it is spliced in."""
    if type(reply) is not dict:
        return False
    result = reply.get("result")
    if type(result) is RawJSON:
        return True
    return type(result) is dict and any(type(v) is RawJSON for v in result.values())


def _splice(reply: dict[str, Any]) -> str:
    """Encode a response whose result (or a value of it) is :class:`RawJSON`."""
    result = reply["result"]
    if type(result) is RawJSON:
        body = result.text
    elif all(type(k) is str for k in result):
        body = (
            "{"
            + ",".join(
                f"{_encode(k)}:{v.text if type(v) is RawJSON else _encode(v)}" for k, v in result.items()
            )
            + "}"
        )
    else:
        body = _encode(result)
    return '{"jsonrpc":"2.0","result":' + body + ',"id":' + _encode(reply.get("id")) + "}"


def encode_reply(reply: Any) -> str:
    """A response object, or a batch of them, as JSON text (:class:`RawJSON` spliced in)."""
    if type(reply) is dict:
        return _splice(reply) if _has_raw(reply) else _encode(reply)
    if type(reply) is list and any(_has_raw(r) for r in reply):
        return "[" + ",".join(_splice(r) if _has_raw(r) else _encode(r) for r in reply) + "]"
    return _encode(reply)


def error_response(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": request_id}


def _dumps(obj: Any) -> bytes:
    return _encode(obj).encode()


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "params"


def validation_error_to_thrum(exc: ValidationError) -> ThrumError:
    """The first pydantic error as -32602 ``{field, reason}``."""
    first = exc.errors(include_url=False)[0]
    field = _field_path(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        reason = "unknown parameter"
    elif first.get("type") == "missing":
        reason = "required"
    else:
        reason = str(first.get("msg", "invalid"))
    data: dict[str, Any] = {"field": field, "reason": reason}
    ctx = first.get("ctx") or {}
    if "expected" in ctx:
        data["allowed"] = ctx["expected"]
    return ThrumError(f"invalid parameter {field!r}: {reason}", data, code=INVALID_PARAMS)


class LentScope:
    """A cancel scope a transport has already entered around its task, lent to one request at a time.

    Entering a :class:`trio.CancelScope` is one of the dearest steps of a
    call, and most handlers finish without ever suspending, so they cannot be
    cancelled anyway.  A transport that runs requests inline in a task sitting
    inside its own scope lends that scope: the dispatcher records the
    request's deadline with :meth:`arm` without applying it; the transport calls
    :meth:`activate` just before the request first suspends (from then on the
    task serves only that request) and :meth:`release` after a request that
    finished without suspending.  When the deadline fires, ``Cancelled``
    propagates to the transport's ``with`` block, which sends
    :meth:`timeout_reply`.  ``ctx.cancel_scope`` is this scope, so
    ``mark_submitted`` shields it as usual.
    """

    __slots__ = ("cancel_scope", "deadline", "timeout")

    def __init__(self, cancel_scope: trio.CancelScope):
        self.cancel_scope = cancel_scope
        self.deadline = math.inf
        self.timeout: tuple[Any, bool, float, str] | None = None

    def arm(self, deadline: float, rid: Any, notification: bool, seconds: float, method: str) -> None:
        """Record the request's absolute deadline and what to answer if it passes."""
        self.deadline = deadline
        self.timeout = (rid, notification, seconds, method)

    def activate(self) -> None:
        """Apply the armed deadline (unless the handler already shielded or re-timed the scope)."""
        scope = self.cancel_scope
        if self.deadline != math.inf and not scope.shield and scope.deadline == math.inf:
            scope.deadline = self.deadline

    def release(self) -> None:
        """Forget the request that just finished inline; undo anything it did to the scope."""
        scope = self.cancel_scope
        if scope.shield:
            scope.shield = False
        if scope.deadline != math.inf:
            scope.deadline = math.inf
        self.deadline = math.inf
        self.timeout = None

    def timeout_reply(self) -> bytes | None:
        """The encoded -32004 reply for the armed request (``None`` for a notification)."""
        if self.timeout is None:
            return None
        rid, notification, seconds, method = self.timeout
        if notification:
            return None
        exc = Timeout(int(seconds * 1000), f"{method} timed out after {seconds:g} s")
        return _dumps({"jsonrpc": "2.0", "error": exc.to_error_object(), "id": rid})


class Dispatcher:
    """Validates requests, resolves callers, runs handlers under deadlines."""

    def __init__(self, kernel: Kernel, methods: MethodRegistry, *, default_deadline_s: float = 10.0):
        self.kernel = kernel
        self.methods = methods
        self.default_deadline_s = default_deadline_s
        self.inflight = 0
        # Created only while someone waits: making an Event per busy period costs on every request.
        self._idle: trio.Event | None = None

    async def wait_idle(self) -> None:
        """Return when no request is being processed."""
        while self.inflight:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    # -- bytes in, bytes out ----------------------------------------------
    async def handle_bytes(
        self,
        data: bytes | str,
        conn: Connection | None,
        transport: str,
        *,
        lent_scope: LentScope | None = None,
    ) -> bytes | None:
        """Process one JSON-RPC value; return the encoded reply or ``None``.

        ``lent_scope``: see :class:`LentScope` (used for a single request, not a batch).
        """
        try:
            # Strict UTF-8 (SPEC §8.1): invalid bytes are a parse error (UnicodeDecodeError is a ValueError).
            value = _decode(data.decode() if isinstance(data, (bytes, bytearray)) else data)
        except (ValueError, RecursionError) as exc:
            return _dumps(error_response(None, PARSE_ERROR, "Parse error", {"reason": str(exc)[:200]}))
        if type(value) is dict:
            reply = await self.handle_request(value, conn, transport, lent_scope=lent_scope)
        else:
            reply = await self.handle_value(value, conn, transport)
        if reply is None:
            return None
        try:
            return encode_reply(reply).encode()
        except (TypeError, ValueError) as exc:
            log.exception("unserialisable result")
            rid = reply.get("id") if isinstance(reply, dict) else None
            return _dumps(
                error_response(rid, INTERNAL_ERROR, "result could not be encoded", {"reason": str(exc)[:200]})
            )

    async def handle_value(self, value: Any, conn: Connection | None, transport: str) -> Any | None:
        """Process a decoded request object or batch."""
        if isinstance(value, list):
            return await self._handle_batch(value, conn, transport)
        return await self.handle_request(value, conn, transport)

    async def _handle_batch(self, batch: list[Any], conn: Connection | None, transport: str) -> Any | None:
        if not batch:
            return error_response(
                None, INVALID_REQUEST, "Invalid request: empty batch", {"reason": "empty_batch"}
            )
        if len(batch) > MAX_BATCH:
            return error_response(
                None,
                INVALID_REQUEST,
                f"Invalid request: a batch holds at most {MAX_BATCH} requests",
                {"reason": "batch_too_large", "limit": MAX_BATCH},
            )
        replies: list[Any] = [None] * len(batch)

        async def run(index: int, element: Any) -> None:
            replies[index] = await self.handle_request(element, conn, transport)

        async with trio.open_nursery() as nursery:
            for i, element in enumerate(batch):
                nursery.start_soon(run, i, element)
        out = [r for r in replies if r is not None]
        return out or None

    # -- one request ---------------------------------------------------------
    async def handle_request(
        self, req: Any, conn: Connection | None, transport: str, *, lent_scope: LentScope | None = None
    ) -> dict | None:
        """Process one request object; ``None`` for notifications."""
        if not isinstance(req, dict):
            return error_response(
                None, INVALID_REQUEST, "Invalid request: not an object", {"reason": "not_object"}
            )
        rid = req.get("id", _MISSING)
        notification = rid is _MISSING
        if notification:
            rid = None
        elif rid is not None and (
            isinstance(rid, bool)
            or not isinstance(rid, (str, int, float))
            or (isinstance(rid, float) and not math.isfinite(rid))
        ):
            return error_response(None, INVALID_REQUEST, "Invalid request: bad id", {"reason": "bad_id"})
        if req.get("jsonrpc") != "2.0":
            return error_response(
                rid, INVALID_REQUEST, 'Invalid request: jsonrpc must be "2.0"', {"reason": "jsonrpc"}
            )
        method = req.get("method")
        if not isinstance(method, str):
            return error_response(
                rid, INVALID_REQUEST, "Invalid request: method must be a string", {"reason": "method"}
            )

        self.inflight += 1
        try:
            result = await self._call(req, method, rid, conn, transport, notification, lent_scope)
        except ThrumError as exc:
            if notification:
                return None
            return {"jsonrpc": "2.0", "error": exc.to_error_object(), "id": rid}
        except Exception as exc:
            log.exception("method %s failed", method)
            if notification:
                return None
            return error_response(
                rid,
                INTERNAL_ERROR,
                f"internal error in {method}: {type(exc).__name__}",
                {"reason": str(exc)[:500]},
            )
        finally:
            self.inflight -= 1
            if self.inflight == 0 and self._idle is not None:
                self._idle.set()
                self._idle = None
        if notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": rid}

    def _lookup(self, method: str, transport: str) -> MethodSpec:
        spec = self.methods.get(method)
        if spec is None:
            raise ThrumError(f"Method not found: {method}", {"method": method}, code=METHOD_NOT_FOUND)
        if transport not in spec.transports:
            raise ThrumError(
                f"method {method} is not available on the {transport} transport",
                {"method": method, "reason": "transport", "transports": sorted(spec.transports)},
                code=METHOD_NOT_FOUND,
            )
        return spec

    def _validate(self, spec: MethodSpec, raw: Any) -> tuple[Any, str | None]:
        if raw is _MISSING or raw is None:
            if spec.params is None:
                return None, None
            raw = {}
        if not isinstance(raw, dict):
            raise ThrumError(
                "params must be an object", {"field": "params", "reason": "not_object"}, code=INVALID_PARAMS
            )
        caller = raw.get("caller_agent_id")
        if caller is not None and not isinstance(caller, str):
            raise ThrumError(
                "caller_agent_id must be a string",
                {"field": "caller_agent_id", "reason": "not a string"},
                code=INVALID_PARAMS,
            )
        clean = {
            k: v
            for k, v in raw.items()
            if v is not None and k != "caller_agent_id" and not k.startswith("x_")
        }
        if spec.params is None:
            if clean:
                field = sorted(clean)[0]
                raise ThrumError(
                    f"invalid parameter {field!r}: unknown parameter",
                    {"field": field, "reason": "unknown parameter"},
                    code=INVALID_PARAMS,
                )
            return None, caller
        try:
            return spec.params.model_validate(clean), caller
        except ValidationError as exc:
            raise validation_error_to_thrum(exc) from None

    async def _call(
        self,
        req: dict,
        method: str,
        rid: Any,
        conn: Connection | None,
        transport: str,
        notification: bool = False,
        lent: LentScope | None = None,
    ) -> Any:
        spec = self._lookup(method, transport)
        params, caller_agent_id = self._validate(spec, req.get("params", _MISSING))
        ctx = CallContext(
            kernel=self.kernel,
            method=method,
            transport=transport,
            request_id=rid,
            connection=conn,
            caller_agent_id=caller_agent_id,
        )
        if spec.auth in ("caller", "session"):
            caller = self.kernel.pm.hook.thrum_resolve_caller(ctx=ctx, auth=spec.auth)
            if caller is None:
                raise PermissionDenied("no_caller", "this method needs a caller: pass caller_agent_id")
            ctx.caller = caller
        elif spec.auth == "admin" and transport != "unix":
            raise PermissionDenied("forbidden", f"{method} is only available on the Unix socket")

        deadline = spec.deadline_for(params, self.default_deadline_s)
        if lent is not None:
            ctx.cancel_scope = lent.cancel_scope
            lent.arm(trio.current_time() + deadline, rid, notification, deadline, method)
            return await spec.handler(params, ctx)
        with trio.CancelScope(deadline=trio.current_time() + deadline) as scope:
            ctx.cancel_scope = scope
            return await spec.handler(params, ctx)
        # Reached only when the deadline cancelled the handler before it
        # submitted anything to the writer (after that the scope is shielded
        # and the handler returns its real result above).
        raise Timeout(int(deadline * 1000), f"{method} timed out after {deadline:g} s")
