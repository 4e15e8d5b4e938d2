"""The ``example.*`` RPC methods: params models and handlers.

Imported only by the daemon (from ``thrum_register_rpc_methods``), so the
CLI, which imports ``plugin.py`` to list commands, never pays for pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from thrum_core.rpc.spec import Params

if TYPE_CHECKING:
    from thrum_core.rpc.spec import CallContext


class HelloParams(Params):
    """Parameters of ``example.hello`` (strict and closed, like every thrum ``Params``)."""

    name: str = Field("world", min_length=1, max_length=64)
    shout: bool = False


async def hello(params: HelloParams, ctx: CallContext) -> dict[str, Any]:
    """Greet ``params.name``; say which daemon answered."""
    greeting = f"Hello, {params.name}!"
    if params.shout:
        greeting = greeting.upper()
    return {"greeting": greeting, "daemon_id": ctx.kernel.daemon_id}
