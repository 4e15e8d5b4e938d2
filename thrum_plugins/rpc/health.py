"""``health``: is the daemon up, and what state is it in (SPEC §9.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.rpc.spec import CallContext, MethodRegistrar


async def health(params: None, ctx: CallContext) -> dict[str, Any]:
    """The daemon's status, version, uptime, ids, sync state and identity block."""
    kernel = ctx.kernel
    store = kernel.store
    degraded = bool(store is not None and store.degraded)
    return {
        "status": "degraded" if degraded else "ok",
        "version": kernel.version,
        "uptime_ms": kernel.uptime_ms(),
        "repo_id": kernel.repo_id,
        "daemon_id": kernel.daemon_id,
        "sync_state": kernel.status.get("sync_state", "stopped"),
        "local_only": kernel.config.daemon.local_only,
        "ws_port": kernel.status.get("ws_port"),
        "peers": int(kernel.status.get("peers", 0)),
        "identity": kernel.identity_block(),
        "pid": kernel.status.get("pid"),
        "started_at": kernel.started_at,
    }


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("health", health, auth="open", transports={"unix", "ws"})
