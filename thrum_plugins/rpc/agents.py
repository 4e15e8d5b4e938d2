"""Agents (SPEC §9.4): register, list, whoami, listContext, delete, cleanup, set-status.

This plugin also owns the agent event types and tables
(:mod:`thrum_plugins.rpc._agent_events`), resolves RPC callers
(``thrum_resolve_caller``, :mod:`thrum_plugins.rpc._caller`) and persists
presence (a service and a shutdown hook).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import trio
from pydantic import Field

from thrum_core.errors import Conflict, InvalidParams, NotFound
from thrum_core.ids import unnamed_agent_id
from thrum_core.markers import hookimpl
from thrum_core.names import validate_agent_name, validate_display_name, validate_module, validate_role
from thrum_core.rpc.spec import Params
from thrum_core.timefmt import parse_ts_ns
from thrum_plugins.rpc._agent_events import register_agent_event_types
from thrum_plugins.rpc._agent_ops import (
    delete_agent,
    hostname,
    identity_dirs,
    local_open_sessions,
    now_ts,
    refresh_contexts,
)
from thrum_plugins.rpc._agent_queries import (
    agent_rows,
    build_agent,
    get_agent,
    list_agents,
    list_work_contexts,
    open_sessions,
    view_for,
    work_contexts_for,
)
from thrum_plugins.rpc._agent_state import (
    flush_presence,
    presence,
    presence_service,
    reader,
    worktree_on_host,
)
from thrum_plugins.rpc._caller import caller_of, resolve_caller, touch_presence

if TYPE_CHECKING:
    from thrum_core.events.types import EventTypeRegistrar
    from thrum_core.kernel import Kernel
    from thrum_core.plugins.registry import Registrar
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

_REGISTER_LOCK_KEY = "register_lock"


# -------------------------------------------------------------------------------------- register


class RegisterParams(Params):
    """``agent.register`` params."""

    name: str | None = None
    role: str
    module: str
    display: str | None = None
    worktree: str | None = None
    hostname: str | None = None
    agent_pid: int | None = Field(default=None, ge=0)
    force: bool = False
    re_register: bool = False


def _check(field: str, fn: Any, value: str) -> str:
    try:
        return str(fn(value))
    except ValueError as exc:
        raise InvalidParams(field, str(exc)) from None


def _register_lock(kernel: Kernel) -> trio.Lock:
    from thrum_plugins.rpc._agent_state import plugin_state

    state = plugin_state(kernel)
    lock: trio.Lock | None = state.get(_REGISTER_LOCK_KEY)
    if lock is None:
        lock = state[_REGISTER_LOCK_KEY] = trio.Lock()
    return lock


def _group_names(db: sqlite3.Connection) -> set[str]:
    try:
        return {r[0] for r in db.execute("SELECT name FROM groups WHERE deleted_k IS NULL")}
    except sqlite3.OperationalError:
        return set()


def _check_namespace(db: sqlite3.Connection, agent_id: str, named: bool, role: str) -> None:
    """SPEC §4: agent ids, roles of ``kind: agent`` agents and group names are disjoint."""
    groups = _group_names(db)
    if named:
        if agent_id == role:
            raise Conflict(
                "name_taken", f"agent name {agent_id!r} cannot be the same as its role", name=agent_id
            )
        holder = db.execute(
            "SELECT agent_id FROM agents WHERE role=? AND kind='agent' AND agent_id<>? LIMIT 1",
            (agent_id, agent_id),
        ).fetchone()
        if holder is not None:
            raise Conflict(
                "name_taken",
                f"agent name {agent_id!r} is already used as a role (by {holder[0]!r}); choose another name",
                name=agent_id,
            )
        if agent_id in groups:
            raise Conflict("name_taken", f"agent name {agent_id!r} is already a group name", name=agent_id)
    other = db.execute("SELECT 1 FROM agents WHERE agent_id=? AND agent_id<>?", (role, agent_id)).fetchone()
    if other is not None:
        raise Conflict(
            "name_taken", f"role {role!r} is already the name of an agent; choose another role", role=role
        )
    if role in groups:
        raise Conflict("name_taken", f"role {role!r} is already a group name", role=role)


def _in_use_elsewhere(
    kernel: Kernel, db: sqlite3.Connection, row: sqlite3.Row, host: str, worktree: str | None
) -> bool:
    if open_sessions(db, [row["agent_id"]]).get(row["agent_id"]) is None:
        return False
    if row["hostname"] and host and row["hostname"] != host:
        return True
    old = row["worktree"]
    return bool(
        worktree and old and os.path.realpath(old) != os.path.realpath(worktree) and worktree_on_host(old)
    )


async def agent_register(params: RegisterParams, ctx: CallContext) -> dict[str, Any]:
    """Register an agent, or update or confirm an existing registration (SPEC §9.4)."""
    kernel = ctx.kernel
    role = _check("role", validate_role, params.role)
    module = _check("module", validate_module, params.module)
    display = _check("display", validate_display_name, params.display) if params.display is not None else None
    if params.name is not None:
        agent_id = _check("name", validate_agent_name, params.name)
    else:
        agent_id = unnamed_agent_id(kernel.repo_id, role, module)
    worktree = params.worktree
    if worktree is not None and not os.path.isabs(worktree):
        raise InvalidParams("worktree", "must be an absolute path")
    host = params.hostname or hostname()
    if worktree is not None and host == hostname() and not os.path.isdir(worktree):
        raise InvalidParams("worktree", f"no such directory on this host: {worktree}")

    async with _register_lock(kernel):
        db = reader(kernel)
        _check_namespace(db, agent_id, params.name is not None, role)
        rows = agent_rows(db, agent_ids=[agent_id])
        row = rows[0] if rows else None
        event: dict[str, Any] = {"type": "agent.register", "agent_id": agent_id, "kind": "agent"}
        if params.name is not None:
            event["name"] = agent_id
        event.update(role=role, module=module)
        if row is None:
            status = "registered"
            new_display, new_worktree, new_pid = display, worktree, params.agent_pid
        else:
            new_display = display if display is not None else (row["display"] or None)
            new_worktree = worktree if worktree is not None else row["worktree"]
            new_pid = params.agent_pid if params.agent_pid is not None else row["agent_pid"]
            reason = None
            if row["role"] != role or row["module"] != module:
                reason = "role_changed"
            elif _in_use_elsewhere(kernel, db, row, host, worktree):
                reason = "in_use_elsewhere"
            if reason is not None and not (params.force or params.re_register):
                existing = build_agent(row, open_sessions(db, [agent_id]).get(agent_id), view_for(kernel))
                what = (
                    f"is registered as role {row['role']!r}, module {row['module']!r}"
                    if reason == "role_changed"
                    else f"has an open session from {row['hostname'] or 'another host'}"
                    f":{row['worktree'] or '?'}"
                )
                raise Conflict(
                    reason,
                    f"agent {agent_id!r} {what}; pass force or re_register to take it over",
                    status="conflict",
                    existing=existing,
                )
            unchanged = (
                (row["display"] or None) == new_display
                and (row["worktree"] or None) == (new_worktree or None)
                and (row["agent_pid"] or None) == (new_pid or None)
                and (row["hostname"] or "") == host
                and (row["kind"] or "agent") == "agent"
                and (row["name"] or None) == event.get("name")
            )
            status = "registered" if unchanged and reason is None else "updated"
        for key, value in (("display", new_display), ("hostname", host), ("worktree", new_worktree)):
            if value:
                event[key] = value
        if new_pid:
            event["agent_pid"] = new_pid
        if row is None or status == "updated":
            await kernel.emit([event], ctx=ctx)
        registered = (
            reader(kernel)
            .execute("SELECT registered_at FROM agents WHERE agent_id=?", (agent_id,))
            .fetchone()
        )
    # No presence refresh: a restarted agent registers again before session.start, which must still
    # see how long ago the old session was last active (superseded vs crash_recovered).
    return {
        "agent_id": agent_id,
        "name": agent_id,
        "status": status,
        "registered_at": registered[0] if registered is not None else None,
    }


# ------------------------------------------------------------------------------------ list, whoami


class ListParams(Params):
    """``agent.list`` params."""

    role: str | None = None
    module: str | None = None
    kind: Literal["agent", "user"] | None = None
    status: Literal["active", "offline"] | None = None


async def agent_list(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    """Registered agents, sorted by id (SPEC §9.4)."""
    _touch_asserted(ctx)
    db = reader(ctx.kernel)
    agents = list_agents(
        db,
        view_for(ctx.kernel),
        role=params.role,
        module=params.module,
        kind=params.kind,
        status=params.status,
    )
    return {"agents": agents}


def _touch_asserted(ctx: CallContext) -> None:
    """Open methods: a ``caller_agent_id`` naming a local agent still counts as activity."""
    agent_id = ctx.caller_agent_id
    if not agent_id:
        return
    row = (
        reader(ctx.kernel)
        .execute("SELECT origin_daemon FROM agents WHERE agent_id=?", (agent_id,))
        .fetchone()
    )
    if row is not None and (not row[0] or row[0] == ctx.kernel.daemon_id):
        touch_presence(ctx, agent_id)


def whoami_result(kernel: Kernel, agent_id: str, source: str, session_id: str | None) -> dict[str, Any]:
    """The ``agent.whoami`` result for an agent (also used by ``context.prime``)."""
    db = reader(kernel)
    agent = get_agent(db, view_for(kernel), agent_id)
    if agent is None:
        raise NotFound("agent", agent_id)
    session = None
    ctx_row: dict[str, Any] = {}
    if session_id is not None:
        session = db.execute("SELECT started_at FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        ctx_row = work_contexts_for(db, [(session_id, agent_id)]).get(session_id) or {}
    return {
        "agent_id": agent["agent_id"],
        "name": agent["name"],
        "kind": agent["kind"],
        "role": agent["role"],
        "module": agent["module"],
        "display": agent["display"],
        "source": source,
        "session_id": session_id,
        "session_start": session[0] if session is not None else None,
        "intent": ctx_row.get("intent"),
        "current_task": ctx_row.get("current_task"),
        "branch": ctx_row.get("branch"),
        "worktree": ctx_row.get("worktree_path") or agent["worktree"],
    }


async def agent_whoami(params: None, ctx: CallContext) -> dict[str, Any]:
    """Who the caller is, with its session and work context (SPEC §9.4)."""
    caller = caller_of(ctx)
    return whoami_result(ctx.kernel, caller.agent_id, caller.source, caller.session_id)


# --------------------------------------------------------------------------------------- contexts


class ListContextParams(Params):
    """``agent.listContext`` params."""

    agent_id: str | None = None
    role: str | None = None
    branch: str | None = None
    file: str | None = None
    live: bool = False
    include_ended: bool = False


def _list_context_deadline(params: ListContextParams | None) -> float:
    return 30.0 if params is not None and params.live else 10.0


async def agent_list_context(params: ListContextParams, ctx: CallContext) -> dict[str, Any]:
    """Work contexts, newest first; ``live`` re-extracts local worktrees first (SPEC §9.4)."""
    kernel = ctx.kernel
    agent_id = params.agent_id.removeprefix("@") if params.agent_id else None
    file = params.file
    if file is not None:
        file = file.strip().removeprefix("./")
        if not file or file.startswith("/") or "\x00" in file:
            raise InvalidParams("file", "must be a repository-relative path")
    if params.live:
        db = reader(kernel)
        targets = local_open_sessions(kernel, db, [agent_id] if agent_id else None)
        if params.role is not None:
            holders = {r["agent_id"] for r in agent_rows(db, role=params.role)}
            targets = [t for t in targets if t[1] in holders]
        await refresh_contexts(kernel, targets)
    contexts = list_work_contexts(
        reader(kernel),
        agent_id=agent_id,
        role=params.role,
        branch=params.branch,
        file=file,
        include_ended=params.include_ended,
    )
    return {"contexts": contexts}


# ---------------------------------------------------------------------------------------- delete


class DeleteParams(Params):
    """``agent.delete`` params."""

    name: str


async def agent_delete(params: DeleteParams, ctx: CallContext) -> dict[str, Any]:
    """Delete an agent: tombstone, identity file, context files (SPEC §9.4)."""
    agent_id = params.name.removeprefix("@")
    if not agent_rows(reader(ctx.kernel), agent_ids=[agent_id]):
        raise NotFound("agent", agent_id, f"no agent named {agent_id!r} (see thrum agent list)")
    return await delete_agent(ctx.kernel, ctx, agent_id, method="manual", reason="manual deletion")


class CleanupParams(Params):
    """``agent.cleanup`` params."""

    dry_run: bool = False
    force: bool = False
    threshold: int = Field(default=30, ge=1, le=3650)


def _last_activity(db: sqlite3.Connection, agent_id: str, kernel: Kernel) -> int | None:
    stamps: list[Any] = []
    row = db.execute("SELECT reg_k FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
    if row is not None and row[0]:
        stamps.append(int(str(row[0]).split("|", 1)[0]))
    row = db.execute(
        "SELECT MAX(COALESCE(ended_at, started_at)) FROM sessions WHERE agent_id=?", (agent_id,)
    ).fetchone()
    stamps.append(parse_ts_ns(row[0]) if row else None)
    for sql in (
        "SELECT MAX(created_ns) FROM messages WHERE agent_id=?",
        "SELECT MAX(read_at) FROM message_reads WHERE agent_id=?",
    ):
        try:
            value = db.execute(sql, (agent_id,)).fetchone()[0]
        except sqlite3.OperationalError:
            continue
        stamps.append(value if isinstance(value, int) else parse_ts_ns(value))
    row = db.execute(
        "SELECT MAX(git_updated_at) FROM local_contexts WHERE agent_id=?", (agent_id,)
    ).fetchone()
    stamps.append(parse_ts_ns(row[0]) if row else None)
    stamps.append(presence(kernel).last_seen_ns(agent_id))
    known = [s for s in stamps if isinstance(s, int) and s > 0]
    return max(known) if known else None


def _message_count(db: sqlite3.Connection, agent_id: str) -> int:
    try:
        return int(db.execute("SELECT COUNT(*) FROM messages WHERE agent_id=?", (agent_id,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _branch_missing(kernel: Kernel, db: sqlite3.Connection, agent_id: str) -> bool:
    contexts = list_work_contexts(db, agent_id=agent_id, include_ended=True)
    branches = {c["branch"] for c in contexts if c.get("branch")}
    if not branches:
        return False
    try:
        import pygit2

        repo = pygit2.Repository(str(kernel.paths.git_common_dir))
        return not any(repo.references.get(f"refs/heads/{b}") is not None for b in branches)
    except Exception:
        return False


def find_orphans(kernel: Kernel, threshold_days: int) -> list[dict[str, Any]]:
    """Agents with a SPEC §9.4 orphan reason (blocking: reads files and git)."""
    from thrum_cli.identity import find_identity_file
    from thrum_core.timefmt import format_ts

    db = kernel.store.open_reader() if kernel.store is not None else None
    if db is None:
        return []
    try:
        now = time.time_ns()
        host = hostname()
        orphans: list[dict[str, Any]] = []
        for row in agent_rows(db, kind="agent"):
            agent_id = row["agent_id"]
            reasons: list[str] = []
            worktree = row["worktree"]
            on_this_host = (row["hostname"] or host) == host
            if on_this_host and worktree and os.path.isabs(worktree):
                if not os.path.isdir(worktree):
                    reasons.append("worktree_missing")
                elif not any(find_identity_file(d, agent_id) for d in identity_dirs(kernel, worktree)):
                    reasons.append("identity_missing")
            last = _last_activity(db, agent_id, kernel)
            days = (now - last) // (86_400 * 10**9) if last is not None else None
            if last is None or (days is not None and days >= threshold_days):
                reasons.append("stale")
            if not reasons:
                continue
            if _branch_missing(kernel, db, agent_id):
                reasons.append("branch_missing")
            orphans.append(
                {
                    "agent_id": agent_id,
                    "role": row["role"] or "",
                    "module": row["module"] or "",
                    "hostname": row["hostname"] or "",
                    "worktree": worktree or None,
                    "last_seen_at": format_ts(last) if last is not None else None,
                    "days_since_last_seen": int(days) if days is not None else None,
                    "reasons": reasons,
                    "message_count": _message_count(db, agent_id),
                }
            )
        return orphans
    finally:
        db.close()


async def agent_cleanup(params: CleanupParams, ctx: CallContext) -> dict[str, Any]:
    """Find orphaned agents; delete them with ``force`` (SPEC §9.4)."""
    if params.dry_run and params.force:
        raise InvalidParams("force", "dry_run and force cannot be used together")
    kernel = ctx.kernel
    orphans = await trio.to_thread.run_sync(find_orphans, kernel, params.threshold)
    deleted: list[str] = []
    if params.force:
        for orphan in orphans:
            reason = "orphan: " + ", ".join(orphan["reasons"])
            await delete_agent(kernel, ctx, orphan["agent_id"], method="automated", reason=reason)
            deleted.append(orphan["agent_id"])
    return {"orphans": orphans, "deleted": deleted, "dry_run": not params.force}


# ------------------------------------------------------------------------------------ set-status


class SetStatusParams(Params):
    """``agent.set-status`` params."""

    agent: str | None = None
    status: Literal["working", "idle", "blocked"]


async def agent_set_status(params: SetStatusParams, ctx: CallContext) -> dict[str, Any]:
    """Record an agent's self-reported status in presence and its identity file (no event)."""
    from thrum_cli.identity import find_identity_file, write_identity_file

    kernel = ctx.kernel
    caller = caller_of(ctx)
    agent_id = params.agent.removeprefix("@") if params.agent else caller.agent_id
    rows = agent_rows(reader(kernel), agent_ids=[agent_id])
    if not rows:
        raise NotFound("agent", agent_id)
    at = now_ts()
    presence(kernel).set_status(agent_id, params.status, at)
    await flush_presence(kernel)
    worktree = rows[0]["worktree"]
    updates = {"agent_status": params.status, "agent_status_updated_at": at}
    if worktree_on_host(worktree):
        found = next(
            (d for d in identity_dirs(kernel, worktree) if find_identity_file(d, agent_id) is not None), None
        )
        if found is not None:
            await trio.to_thread.run_sync(lambda: write_identity_file(found, agent_id, updates=updates))
    return {"agent": agent_id, "status": params.status, "updated_at": at}


# ------------------------------------------------------------------------------------------- hooks


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    register_agent_event_types(register)


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    both = {"unix", "ws"}
    register("agent.register", agent_register, params=RegisterParams, auth="open", transports=both)
    register("agent.list", agent_list, params=ListParams, auth="open", transports=both)
    register(
        "agent.listContext",
        agent_list_context,
        params=ListContextParams,
        auth="open",
        transports=both,
        deadline_s=_list_context_deadline,
    )
    register("agent.whoami", agent_whoami, auth="caller", transports=both)
    register("agent.set-status", agent_set_status, params=SetStatusParams, auth="caller", transports=both)
    register(
        "agent.delete", agent_delete, params=DeleteParams, auth="admin", transports={"unix"}, deadline_s=30
    )
    register(
        "agent.cleanup", agent_cleanup, params=CleanupParams, auth="admin", transports={"unix"}, deadline_s=60
    )


@hookimpl
def thrum_resolve_caller(ctx: CallContext, auth: str) -> Any:
    return resolve_caller(ctx, auth)


@hookimpl
def thrum_register_services(register: Registrar) -> None:
    register("agents.presence", presence_service)


@hookimpl
def thrum_shutdown(kernel: Kernel) -> Any:
    return _shut_down(kernel)


async def _shut_down(kernel: Kernel) -> None:
    pool = sys.modules.get("thrum_plugins.rpc._workctx_pool")  # loaded only if an extraction ever ran
    if pool is not None:
        await trio.to_thread.run_sync(pool.close_shared_pool)
    if kernel.store is not None:
        await flush_presence(kernel)
