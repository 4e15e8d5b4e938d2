"""A plugin of ``test.*`` RPC methods for protocol-conformance tests.

Register it in-process with ``register_plugin(conformance_plugin, "test")``
or advertise it as an entry point of a daemon subprocess
(:func:`thrum_core.testing.plugins.write_entry_point_dist`).

Methods:

``test.echo``      params :class:`EchoParams`; returns them (``exclude_unset``).
``test.slow``      sleeps ``seconds`` then returns ``{"slept": seconds}``.
``test.boom``      raises :class:`RuntimeError` (→ -32603).
``test.fail``      raises the :class:`~thrum_core.errors.ThrumError` described by its params.
``test.deadline``  deadline 0.2 s; sleeps ``seconds`` (→ -32004 when past it).
``test.bump``      increments a counter; ``test.counter`` reads it (notifications run).
``test.emit``      pushes ``count`` ``test.note`` notifications to the caller's connection,
                   then returns ``{"sent": n}``.
``test.ws_only``   registered for the ``ws`` transport only.
``test.gate``      waits until ``test.open_gate`` is called (many in flight at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import trio
from pydantic import Field

from thrum_core.errors import ThrumError
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import Params

if TYPE_CHECKING:
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

PLUGIN_NAME = "test"
DEADLINE_S = 0.2


class Scope(Params):
    """One scope entry (a nested model, for dotted error paths)."""

    type: Literal["agent", "group", "module"]
    value: str


class EchoParams(Params):
    """Typed fields that exercise validation (-32602)."""

    text: str
    count: int = Field(0, ge=0, le=1000)
    ratio: float = 0.0
    flag: bool = False
    scopes: list[Scope] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class SlowParams(Params):
    """How long ``test.slow``/``test.deadline`` sleep."""

    seconds: float = Field(ge=0, le=60)
    tag: str | None = None


class FailParams(Params):
    """The error ``test.fail`` raises."""

    code: int
    message: str = "failed on purpose"
    data: dict[str, Any] | None = None


class EmitParams(Params):
    """How many notifications ``test.emit`` pushes."""

    count: int = Field(1, ge=0, le=10000)


def _state(ctx: CallContext) -> dict[str, Any]:
    state = ctx.kernel.plugin_state(PLUGIN_NAME)
    if "gate" not in state:
        state["gate"] = trio.Event()
        state["counter"] = 0
        state["gate_waiting"] = 0
    return state


async def echo(params: EchoParams, ctx: CallContext) -> dict[str, Any]:
    """Return the validated params (only those the caller set)."""
    return params.model_dump(mode="json", exclude_unset=True)


async def slow(params: SlowParams, ctx: CallContext) -> dict[str, Any]:
    """Sleep, then answer."""
    await trio.sleep(params.seconds)
    return {"slept": params.seconds, "tag": params.tag}


async def boom(params: None, ctx: CallContext) -> None:
    """Fail with an unexpected exception."""
    raise RuntimeError("boom on purpose")


async def fail(params: FailParams, ctx: CallContext) -> None:
    """Fail with a chosen JSON-RPC error."""
    raise ThrumError(params.message, params.data, code=params.code)


async def bump(params: None, ctx: CallContext) -> int:
    """Increment the counter; return its new value."""
    state = _state(ctx)
    state["counter"] += 1
    return int(state["counter"])


async def counter(params: None, ctx: CallContext) -> int:
    """The counter's value."""
    return int(_state(ctx)["counter"])


async def emit(params: EmitParams, ctx: CallContext) -> dict[str, int]:
    """Push notifications to the calling connection before answering."""
    sent = 0
    if ctx.connection is not None:
        for i in range(params.count):
            if ctx.connection.notify("test.note", {"i": i}):
                sent += 1
    return {"sent": sent}


async def ws_only(params: None, ctx: CallContext) -> str:
    """Only reachable over WebSocket."""
    return "ws"


async def gate(params: None, ctx: CallContext) -> dict[str, int]:
    """Wait for ``test.open_gate``; return how many were waiting when it opened."""
    state = _state(ctx)
    state["gate_waiting"] += 1
    try:
        await state["gate"].wait()
    finally:
        state["gate_waiting"] -= 1
    return {"opened": 1}


async def gate_waiting(params: None, ctx: CallContext) -> int:
    """How many ``test.gate`` calls are waiting."""
    return int(_state(ctx)["gate_waiting"])


async def open_gate(params: None, ctx: CallContext) -> int:
    """Release every ``test.gate`` call (and future ones until ``test.close_gate``)."""
    state = _state(ctx)
    waiting = int(state["gate_waiting"])
    state["gate"].set()
    return waiting


async def close_gate(params: None, ctx: CallContext) -> None:
    """Make later ``test.gate`` calls wait again."""
    _state(ctx)["gate"] = trio.Event()


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    """Register the ``test.*`` methods."""
    register("test.echo", echo, params=EchoParams)
    register("test.slow", slow, params=SlowParams, deadline_s=60.0)
    register("test.deadline", slow, params=SlowParams, deadline_s=DEADLINE_S)
    register("test.boom", boom)
    register("test.fail", fail, params=FailParams)
    register("test.bump", bump)
    register("test.counter", counter)
    register("test.emit", emit, params=EmitParams)
    register("test.ws_only", ws_only, transports={"ws"})
    register("test.gate", gate, deadline_s=60.0)
    register("test.gate_waiting", gate_waiting)
    register("test.open_gate", open_gate)
    register("test.close_gate", close_gate)
