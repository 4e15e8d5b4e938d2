"""Saved context and preambles (SPEC §5.6, §9.9), and ``context.prime``.

Files live in the main ``.thrum/context/`` (D6): ``<name>.md`` (≤ 1 MiB) and
``<name>.preamble.md`` (legacy ``<name>_preamble.md`` is read).
``context.show`` falls back to ``<sync dir>/context/<name>.md`` (published by
``context.sync``, which the git sync plugin provides).

``context.prime`` gathers every section independently; a section that fails
or whose plugin is missing is ``null`` with an ``errors`` entry.  The inbox
comes from ``message.list`` and the sync state from ``sync.status`` when
those methods are registered (else from the kernel's own status).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from pydantic import model_validator

from thrum_core.errors import InvalidParams, NotFound, PayloadTooLarge, PermissionDenied, ThrumError
from thrum_core.fsutil import atomic_write_bytes
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import CallContext, Params
from thrum_core.timefmt import format_ts
from thrum_plugins.rpc._agent_ops import context_files, now_ts
from thrum_plugins.rpc._agent_queries import (
    agent_rows,
    open_sessions,
    session_row,
    view_for,
    work_contexts_for,
)
from thrum_plugins.rpc._agent_state import reader
from thrum_plugins.rpc._caller import Caller, resolve_caller

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import MethodRegistrar

log = logging.getLogger("thrum.context")

__all__ = ["MAX_CONTEXT_BYTES", "default_preamble"]

MAX_CONTEXT_BYTES = 1024 * 1024
THRUM_BLOCK_BEGIN = "<!-- BEGIN THRUM -->"


class AgentParams(Params):
    """Params naming an agent (default: the caller)."""

    agent_name: str | None = None


class ShowParams(AgentParams):
    """``context.show`` params."""

    no_preamble: bool = False


class SaveParams(AgentParams):
    """``context.save`` params."""

    content: str


class PreambleSaveParams(AgentParams):
    """``context.preamble.save`` params: exactly one of ``content`` and ``init``."""

    content: str | None = None
    init: bool = False

    @model_validator(mode="after")
    def _one(self) -> PreambleSaveParams:
        if (self.content is None) == (not self.init):
            raise ValueError("give exactly one of content and init")
        return self


def _agent_name(ctx: CallContext, given: str | None) -> tuple[str, dict[str, Any]]:
    """The agent a context call is about, and its ``agents`` row (-32001 when unknown)."""
    if given:
        name = given.removeprefix("@")
    else:
        caller = ctx.caller
        if not isinstance(caller, Caller):
            if not ctx.caller_agent_id and getattr(ctx.connection, "session_id", None) is None:
                raise PermissionDenied("no_caller", f"{ctx.method} needs agent_name or a caller")
            caller = resolve_caller(ctx, "caller")
        name = caller.agent_id
    rows = agent_rows(reader(ctx.kernel), agent_ids=[name])
    if not rows:
        raise NotFound("agent", name, f"no agent named {name!r} (see thrum agent list)")
    return name, dict(rows[0])


def _files(ctx: CallContext, name: str) -> dict[str, Path]:
    try:
        return context_files(ctx.kernel, name)
    except ValueError as exc:
        raise InvalidParams("agent_name", str(exc)) from None


def default_preamble(kernel: Kernel, agent: dict[str, Any]) -> str:
    """The default preamble: an identity block and the five essential commands (SPEC §5.6)."""
    name = agent.get("agent_id", "")
    return (
        f"# Agent: {name}\n\n"
        f"- Name: {name}\n"
        f"- Role: {agent.get('role') or ''}\n"
        f"- Module: {agent.get('module') or ''}\n"
        f"- Repository: {kernel.paths.main_root.name}\n\n"
        "## Essential commands\n\n"
        "- `thrum inbox --unread` — read new messages\n"
        '- `thrum send "TEXT" --to @AGENT` — message an agent, a role or a group\n'
        '- `thrum reply MSG_ID "TEXT"` — answer a message\n'
        "- `thrum team` — see who is working on what\n"
        "- `thrum context save --file FILE` — save your working context for the next session\n"
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThrumError(f"cannot read {path}: {exc}") from None


def _encode(content: str, field: str) -> bytes:
    """UTF-8 bytes of ``content``; -32005 above 1 MiB."""
    data = content.encode("utf-8")
    if len(data) > MAX_CONTEXT_BYTES:
        raise PayloadTooLarge(
            field,
            MAX_CONTEXT_BYTES,
            len(data),
            f"{field} is {len(data)} bytes; saved context is limited to {MAX_CONTEXT_BYTES} bytes (1 MiB)",
        )
    return data


def _write(path: Path, content: str, field: str) -> int:
    data = _encode(content, field)
    atomic_write_bytes(path, data, 0o644)
    return len(data)


def _preamble(files: dict[str, Path]) -> str | None:
    text = _read(files["preamble"])
    return text if text is not None else _read(files["legacy_preamble"])


# ------------------------------------------------------------------------------------------ methods


async def context_save(params: SaveParams, ctx: CallContext) -> dict[str, Any]:
    """Save an agent's context (≤ 1 MiB, -32005) and create the default preamble if missing."""
    name, agent = _agent_name(ctx, params.agent_name)
    _encode(params.content, "content")
    files = _files(ctx, name)

    def save() -> int:
        written = _write(files["context"], params.content, "content")
        if not files["preamble"].exists() and not files["legacy_preamble"].exists():
            _write(files["preamble"], default_preamble(ctx.kernel, agent), "content")
        return written

    written = await trio.to_thread.run_sync(save)
    return {"agent_name": name, "saved_at": now_ts(), "bytes": written}


async def context_show(params: ShowParams, ctx: CallContext) -> dict[str, Any]:
    """An agent's saved context and preamble; falls back to the copy published on a-sync."""
    name, _agent = _agent_name(ctx, params.agent_name)
    files = _files(ctx, name)
    source: str | None = None
    path = files["context"]
    content = _read(path)
    if content is not None:
        source = "local"
    else:
        synced = ctx.kernel.paths.sync_dir / "context" / f"{name}.md"
        content = _read(synced)
        if content is not None:
            source, path = "a-sync", synced
    updated_at = None
    if content is not None:
        try:
            updated_at = format_ts(os.stat(path).st_mtime_ns)
        except OSError:
            updated_at = None
    return {
        "agent_name": name,
        "content": content,
        "preamble": None if params.no_preamble else _preamble(files),
        "source": source,
        "updated_at": updated_at,
        "bytes": len(content.encode("utf-8")) if content is not None else 0,
    }


async def context_clear(params: AgentParams, ctx: CallContext) -> dict[str, Any]:
    """Remove an agent's saved context (idempotent)."""
    name, _agent = _agent_name(ctx, params.agent_name)
    try:
        _files(ctx, name)["context"].unlink()
        cleared = True
    except FileNotFoundError:
        cleared = False
    return {"agent_name": name, "cleared": cleared}


async def preamble_show(params: AgentParams, ctx: CallContext) -> dict[str, Any]:
    """An agent's preamble (``null`` when it has none)."""
    name, agent = _agent_name(ctx, params.agent_name)
    content = _preamble(_files(ctx, name))
    return {
        "agent_name": name,
        "content": content,
        "is_default": content is not None and content == default_preamble(ctx.kernel, agent),
    }


async def preamble_save(params: PreambleSaveParams, ctx: CallContext) -> dict[str, Any]:
    """Write an agent's preamble (``init`` writes the default)."""
    name, agent = _agent_name(ctx, params.agent_name)
    files = _files(ctx, name)
    content = default_preamble(ctx.kernel, agent) if params.init else (params.content or "")
    written = _write(files["preamble"], content, "content")
    return {"agent_name": name, "saved_at": now_ts(), "bytes": written}


# -------------------------------------------------------------------------------------------- prime


async def _call_method(ctx: CallContext, method: str, params: dict[str, Any]) -> Any:
    """Run another plugin's handler in-process (``None`` when the method is not registered)."""
    spec = ctx.kernel.methods.get(method)
    if spec is None:
        return None
    model = spec.params.model_validate(params) if spec.params is not None else None
    sub = CallContext(
        kernel=ctx.kernel,
        method=method,
        transport=ctx.transport,
        request_id=ctx.request_id,
        connection=ctx.connection,
        caller_agent_id=ctx.caller_agent_id,
        caller=ctx.caller,
    )
    return await spec.handler(model, sub)


def _claude_md(worktree: str | None, kernel: Kernel) -> dict[str, Any]:
    root = Path(worktree) if worktree and os.path.isdir(worktree) else kernel.paths.main_root
    text = _read(root / "CLAUDE.md")
    return {"present": text is not None, "thrum_block": bool(text and THRUM_BLOCK_BEGIN in text)}


async def context_prime(params: None, ctx: CallContext) -> dict[str, Any]:
    """Everything an agent needs at the start of a session, each section gathered independently."""
    from thrum_plugins.rpc.agents import whoami_result
    from thrum_plugins.rpc.team import members

    kernel = ctx.kernel
    caller = ctx.caller
    assert isinstance(caller, Caller)
    agent_id = caller.agent_id
    errors: dict[str, str] = {}
    result: dict[str, Any] = {}

    async def section(key: str, fn: Any) -> None:
        try:
            result[key] = await fn()
        except Exception as exc:
            log.debug("prime section %s failed", key, exc_info=True)
            result[key] = None
            errors[key] = exc.message if isinstance(exc, ThrumError) else f"{type(exc).__name__}: {exc}"

    async def agent() -> Any:
        return whoami_result(kernel, agent_id, caller.source, caller.session_id)

    async def session() -> Any:
        if caller.session_id is None:
            return None
        from thrum_plugins.rpc._agent_queries import build_session

        row = session_row(reader(kernel), caller.session_id)
        if row is None:
            return None
        ctx_row = (
            work_contexts_for(reader(kernel), [(caller.session_id, agent_id)]).get(caller.session_id) or {}
        )
        return build_session(row, view_for(kernel), ctx_row.get("intent"))

    async def work_context() -> Any:
        sid = (
            caller.session_id
            or (open_sessions(reader(kernel), [agent_id]).get(agent_id) or {"session_id": None})["session_id"]
        )
        if sid is None:
            return None
        return work_contexts_for(reader(kernel), [(sid, agent_id)]).get(sid)

    async def team() -> Any:
        return await members(kernel)

    async def inbox() -> Any:
        if kernel.methods.get("message.list") is None:
            raise ThrumError("inbox unavailable: the messaging plugin is not installed")
        unread = await _call_method(
            ctx,
            "message.list",
            {
                "for_agent": agent_id,
                "unread": True,
                "exclude_self": True,
                "page_size": 10,
                "sort_order": "asc",
            },
        )
        everything = await _call_method(
            ctx, "message.list", {"for_agent": agent_id, "exclude_self": True, "page_size": 1}
        )
        return {
            "total": int(everything.get("total", 0)),
            "unread": int(unread.get("total", 0)),
            "messages": unread.get("messages", []),
        }

    async def context() -> Any:
        files = context_files(kernel, agent_id)
        return {"content": _read(files["context"]), "preamble": _preamble(files)}

    async def sync() -> Any:
        status = await _call_method(ctx, "sync.status", {})
        if status is None:
            return {
                "sync_state": kernel.status.get("sync_state", "stopped"),
                "local_only": kernel.config.daemon.local_only,
            }
        return {"sync_state": status.get("sync_state"), "local_only": status.get("local_only")}

    async def claude_md() -> Any:
        row = agent_rows(reader(kernel), agent_ids=[agent_id])
        return _claude_md(row[0]["worktree"] if row else None, kernel)

    for key, fn in (
        ("agent", agent),
        ("session", session),
        ("work_context", work_context),
        ("team", team),
        ("inbox", inbox),
        ("context", context),
        ("sync", sync),
        ("claude_md", claude_md),
    ):
        await section(key, fn)
    result["single_agent_mode"] = bool(kernel.config.daemon.single_agent_mode)
    result["errors"] = errors
    return result


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    both = {"unix", "ws"}
    register("context.save", context_save, params=SaveParams, auth="caller", transports=both)
    register("context.show", context_show, params=ShowParams, auth="open", transports=both)
    register("context.clear", context_clear, params=AgentParams, auth="caller", transports=both)
    register("context.preamble.show", preamble_show, params=AgentParams, auth="open", transports=both)
    register(
        "context.preamble.save", preamble_save, params=PreambleSaveParams, auth="caller", transports=both
    )
    register("context.prime", context_prime, auth="caller", transports=both)
