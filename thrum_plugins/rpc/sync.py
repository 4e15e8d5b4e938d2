"""``sync.force``, ``sync.status`` (SPEC §9.10) and ``context.sync`` (§9.9).

The methods talk to the git sync service of the kernel
(:mod:`thrum_plugins.sync._git_service`); without it (the ``sync.git``
plugin disabled) ``sync.status`` reports ``stopped`` and the others say that
sync is not running.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thrum_core.errors import InternalError, InvalidParams, NotFound, PermissionDenied
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import Params

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext, MethodRegistrar
    from thrum_plugins.sync._git_service import GitSyncService

log = logging.getLogger("thrum.sync")

__all__ = ["FORCE_WAIT_DEADLINE_S", "ContextSyncParams", "ForceParams"]

#: ``sync.force {wait: true}`` and ``context.sync`` answer -32004 after this long (the cycle continues).
FORCE_WAIT_DEADLINE_S = 90.0
_STATE_KEY = "sync.git"


class ForceParams(Params):
    """``sync.force`` params."""

    wait: bool = False


class ContextSyncParams(Params):
    """``context.sync`` params (default: the caller)."""

    agent_name: str | None = None


def _service(kernel: Kernel) -> GitSyncService | None:
    return kernel.plugin_state(_STATE_KEY).get("service")


def _stopped_status(kernel: Kernel) -> dict[str, Any]:
    """``sync.status`` when the git sync plugin is not loaded."""
    from thrum_plugins.sync._git_service import local_only_source

    return {
        "running": False,
        "sync_state": "stopped",
        "local_only": bool(kernel.config.daemon.local_only),
        "local_only_source": local_only_source(kernel),
        "remote": None,
        "branch": "a-sync",
        "worktree": str(kernel.paths.sync_dir),
        "interval_s": int(kernel.config.daemon.sync_interval),
        "last_sync_at": None,
        "last_attempt_at": None,
        "next_sync_at": None,
        "last_error": None,
        "pending_events": 0,
        "head": None,
    }


async def sync_status(params: None, ctx: CallContext) -> dict[str, Any]:
    """The sync loop's state, schedule, last results and local-only source."""
    svc = _service(ctx.kernel)
    if svc is None:
        return _stopped_status(ctx.kernel)
    return svc.status()


async def sync_force(params: ForceParams, ctx: CallContext) -> dict[str, Any]:
    """Start a cycle now (one more is queued behind a running one); with ``wait``, its report."""
    svc = _service(ctx.kernel)
    if svc is None:
        status = _stopped_status(ctx.kernel)
        return {
            "triggered": False,
            "sync_state": status["sync_state"],
            "local_only": status["local_only"],
            "last_sync_at": None,
        }
    waiter = svc.trigger()
    triggered = svc.running
    cycle: dict[str, Any] | None = None
    if params.wait:
        await waiter.done.wait()
        if waiter.report is not None:
            cycle = waiter.report.to_json()
    result: dict[str, Any] = {
        "triggered": triggered,
        "sync_state": svc.state,
        "local_only": svc.local_only,
        "last_sync_at": svc.last_sync_at,
    }
    if cycle is not None:
        result["cycle"] = cycle
    return result


def _agent_name(ctx: CallContext, given: str | None) -> str:
    """The agent ``context.sync`` is about: ``agent_name`` or the caller; -32001 when unknown."""
    name = given.removeprefix("@") if given else getattr(ctx.caller, "agent_id", None)
    if not name:
        raise PermissionDenied("no_caller", "context.sync needs agent_name or a caller")
    try:
        from thrum_plugins.rpc._agent_queries import agent_rows
        from thrum_plugins.rpc._agent_state import reader
    except ImportError:  # pragma: no cover - the agents plugin ships with thrum
        return name
    if not agent_rows(reader(ctx.kernel), agent_ids=[name]):
        raise NotFound("agent", name, f"no agent named {name!r} (see thrum agent list)")
    return name


async def context_sync(params: ContextSyncParams, ctx: CallContext) -> dict[str, Any]:
    """Publish ``.thrum/context/<name>.md`` to ``<sync dir>/context/`` and push it (§9.9)."""
    from thrum_plugins.rpc._agent_ops import context_files

    kernel = ctx.kernel
    name = _agent_name(ctx, params.agent_name)
    try:
        source = context_files(kernel, name)["context"]
    except ValueError as exc:
        raise InvalidParams("agent_name", str(exc)) from None
    if not source.is_file():
        raise NotFound(
            "agent", name, f"{name} has no saved context to publish (save it with thrum context save)"
        )
    svc = _service(kernel)
    if svc is None or not svc.running:
        reason = svc.stopped_reason() if svc is not None else "the git sync plugin is not loaded"
        raise InternalError(f"context sync is not possible: {reason}")
    return await svc.publish_context(name, source)


def _force_deadline(params: ForceParams | None) -> float:
    return FORCE_WAIT_DEADLINE_S if params is not None and params.wait else 10.0


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("sync.status", sync_status, auth="open")
    register("sync.force", sync_force, params=ForceParams, auth="open", deadline_s=_force_deadline)
    register(
        "context.sync",
        context_sync,
        params=ContextSyncParams,
        auth="caller",
        deadline_s=FORCE_WAIT_DEADLINE_S,
    )
