"""Sessions (SPEC §9.5, §10.1): start, end, list, heartbeat, setIntent, setTask."""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any, Literal

import trio
from pydantic import Field, field_validator

from thrum_core.errors import Conflict, InvalidParams, NotFound, PermissionDenied
from thrum_core.ids import new_session_id
from thrum_core.markers import hookimpl
from thrum_core.names import (
    validate_intent,
    validate_scope_type,
    validate_scope_value,
    validate_task,
)
from thrum_core.rpc.spec import Params
from thrum_core.timefmt import format_ts, now_ns, parse_ts_ns
from thrum_plugins.rpc._agent_ops import (
    context_element,
    now_ts,
    refresh_contexts,
    session_worktree,
)
from thrum_plugins.rpc._agent_queries import (
    View,
    agent_rows,
    list_sessions,
    session_row,
    view_for,
    work_contexts_for,
)
from thrum_plugins.rpc._agent_state import (
    extract_live,
    plugin_state,
    presence,
    reader,
    store_git_contexts,
    worktree_on_host,
    write_local,
)
from thrum_plugins.rpc._caller import Caller, caller_of, touch_presence

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext, MethodRegistrar


class Scope(Params):
    """A ``{type, value}`` scope or ref (SPEC §4)."""

    type: str
    value: str

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return validate_scope_type(v)

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        return validate_scope_value(v)


ScopeList = list[Scope]


# ------------------------------------------------------------------------------------------ start


class StartParams(Params):
    """``session.start`` params."""

    agent_id: str | None = None
    scopes: ScopeList | None = Field(default=None, max_length=32)
    refs: ScopeList | None = Field(default=None, max_length=32)
    worktree: str | None = None


def _end_event(session_id: str, agent_id: str, reason: str) -> dict[str, Any]:
    return {"type": "agent.session.end", "session_id": session_id, "agent_id": agent_id, "reason": reason}


def _final_update(db: sqlite3.Connection, session_id: str, agent_id: str) -> dict[str, Any] | None:
    """``agent.update`` carrying a session's last work context (when it has one)."""
    element = context_element(db, session_id, agent_id)
    if len(element) <= 1:
        return None
    return {"type": "agent.update", "agent_id": agent_id, "work_contexts": [element]}


def _detach(kernel: Kernel, session_id: str) -> None:
    for conn in kernel.connections_for_session(session_id):
        conn.session_id = None


def _start_agent(ctx: CallContext, requested: str | None) -> str:
    asserted = ctx.caller_agent_id
    conn = ctx.connection
    user = getattr(conn, "user_id", None) if conn is not None else None
    agent_id = requested.removeprefix("@") if requested else None
    for name, other in (("caller_agent_id", asserted), ("connection user", user)):
        if other and agent_id and other != agent_id:
            raise PermissionDenied(
                "caller_mismatch", f"agent_id {agent_id!r} does not match the {name} {other!r}"
            )
    agent_id = agent_id or asserted or user
    if not agent_id:
        raise PermissionDenied("no_caller", "session.start needs agent_id (or caller_agent_id)")
    return agent_id


def _start_lock(kernel: Kernel) -> trio.Lock:
    state = plugin_state(kernel)
    lock: trio.Lock | None = state.get("session_start_lock")
    if lock is None:
        lock = state["session_start_lock"] = trio.Lock()
    return lock


def _plan_start(
    db: sqlite3.Connection, view: View, agent_id: str
) -> tuple[list[dict[str, str]], list[dict[str, Any]], str]:
    """``(ended sessions, events, new session id)``: end every open session, then start a new one."""
    events: list[dict[str, Any]] = []
    ended: list[dict[str, str]] = []
    open_rows = db.execute(
        "SELECT session_id, started_at FROM sessions"
        " WHERE agent_id=? AND ended_at IS NULL AND start_k IS NOT NULL ORDER BY start_k",
        (agent_id,),
    ).fetchall()
    last_seen = view.last_seen_ns(agent_id)
    for old in open_rows:
        started = parse_ts_ns(old["started_at"]) or 0
        recent = max(last_seen or 0, started)
        reason = "superseded" if view.now_ns - recent <= view.presence_timeout_ns else "crash_recovered"
        events.append(_end_event(old["session_id"], agent_id, reason))
        update = _final_update(db, old["session_id"], agent_id)
        if update is not None:
            events.append(update)
        ended.append({"session_id": old["session_id"], "reason": reason})
    session_id = new_session_id()
    events.append({"type": "agent.session.start", "session_id": session_id, "agent_id": agent_id})
    return ended, events, session_id


async def session_start(params: StartParams, ctx: CallContext) -> dict[str, Any]:
    """End the agent's open sessions, start a new one and attach this connection (SPEC §9.5)."""
    kernel = ctx.kernel
    agent_id = _start_agent(ctx, params.agent_id)
    if params.worktree is not None and not os.path.isabs(params.worktree):
        raise InvalidParams("worktree", "must be an absolute path")
    if params.worktree is not None and not os.path.isdir(params.worktree):
        raise InvalidParams("worktree", f"no such directory on this host: {params.worktree}")
    db = reader(kernel)
    rows = agent_rows(db, agent_ids=[agent_id])
    if not rows:
        raise PermissionDenied(
            "not_registered",
            f"agent {agent_id!r} is not registered (run thrum agent register or thrum quickstart first)",
        )
    agent = rows[0]
    worktree = params.worktree or agent["worktree"] or None
    fields: dict[str, Any] = {}
    if worktree and worktree_on_host(worktree):
        fields = (await extract_live([worktree])).get(worktree, {})

    # Reading the open sessions and emitting the new start is one step: two concurrent starts of the
    # same agent must not both leave a session open.
    async with _start_lock(kernel):
        ended, events, session_id = _plan_start(reader(kernel), view_for(kernel), agent_id)
        stored = await kernel.emit(events, ctx=ctx)
    started_at = format_ts(stored[-1].ts_ns)
    # Subscriptions of ended sessions are dropped by the subscriptions plugin, which observes
    # agent.session.end (SPEC §10.1).
    for old in ended:
        _detach(kernel, old["session_id"])

    added = now_ts()

    def seed(conn: sqlite3.Connection) -> None:
        for table, items in (("session_scopes", params.scopes or []), ("session_refs", params.refs or [])):
            conn.executemany(
                f"INSERT OR IGNORE INTO {table}(session_id, type, value, added_at) VALUES (?,?,?,?)",
                [(session_id, item.type, item.value, added) for item in items],
            )
        if not fields and worktree:
            conn.execute(
                "INSERT OR REPLACE INTO local_contexts(session_id, agent_id, worktree_path) VALUES (?,?,?)",
                (session_id, agent_id, worktree),
            )

    await write_local(kernel, seed)
    if fields:
        await store_git_contexts(kernel, [(session_id, agent_id, fields)])
    if ctx.connection is not None:
        ctx.connection.session_id = session_id
    touch_presence(ctx, agent_id, session_id)
    return {"session_id": session_id, "agent_id": agent_id, "started_at": started_at, "ended_sessions": ended}


# -------------------------------------------------------------------------------- caller's session


def _owned_session(
    ctx: CallContext, caller: Caller, session_id: str | None, *, must_be_open: bool
) -> sqlite3.Row:
    """The session a caller acts on: the given one (checked) or its current one."""
    db = reader(ctx.kernel)
    if session_id is None:
        if caller.session_id is None:
            raise NotFound(
                "session", None, f"agent {caller.agent_id!r} has no open session (run thrum session start)"
            )
        session_id = caller.session_id
    row = session_row(db, session_id)
    if row is None or (row["start_k"] is None and row["ended_at"] is None):
        raise NotFound("session", session_id)
    if row["agent_id"] != caller.agent_id:
        raise PermissionDenied(
            "not_owner", f"session {session_id} belongs to {row['agent_id']!r}, not {caller.agent_id!r}"
        )
    if must_be_open and row["ended_at"] is not None:
        raise Conflict("already_ended", f"session {session_id} already ended at {row['ended_at']}")
    return row


# -------------------------------------------------------------------------------------------- end


class EndParams(Params):
    """``session.end`` params."""

    session_id: str | None = None
    reason: Literal["normal", "crash"] = "normal"


async def session_end(params: EndParams, ctx: CallContext) -> dict[str, Any]:
    """End a session: ``agent.session.end`` then its final ``agent.update`` (SPEC §9.5)."""
    kernel = ctx.kernel
    caller = caller_of(ctx)
    row = _owned_session(ctx, caller, params.session_id, must_be_open=True)
    session_id = row["session_id"]
    events = [_end_event(session_id, caller.agent_id, params.reason)]
    update = _final_update(reader(kernel), session_id, caller.agent_id)
    if update is not None:
        events.append(update)
    stored = await kernel.emit(events, ctx=ctx)
    ended_ns = stored[0].ts_ns
    _detach(kernel, session_id)
    started = parse_ts_ns(row["started_at"])
    return {
        "session_id": session_id,
        "ended_at": format_ts(ended_ns),
        "duration_ms": max(0, (ended_ns - started) // 1_000_000) if started is not None else 0,
    }


# ------------------------------------------------------------------------------------------- list


class ListParams(Params):
    """``session.list`` params."""

    active: bool = False
    agent_id: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


async def session_list(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    """Sessions, newest first (SPEC §9.5)."""
    agent_id = params.agent_id.removeprefix("@") if params.agent_id else None
    sessions = list_sessions(
        reader(ctx.kernel), view_for(ctx.kernel), active=params.active, agent_id=agent_id, limit=params.limit
    )
    return {"sessions": sessions}


# -------------------------------------------------------------------------------------- heartbeat


class HeartbeatParams(Params):
    """``session.heartbeat`` params."""

    session_id: str | None = None
    add_scopes: ScopeList | None = Field(default=None, max_length=32)
    remove_scopes: ScopeList | None = Field(default=None, max_length=32)
    add_refs: ScopeList | None = Field(default=None, max_length=32)
    remove_refs: ScopeList | None = Field(default=None, max_length=32)


async def session_heartbeat(params: HeartbeatParams, ctx: CallContext) -> dict[str, Any]:
    """Refresh presence, scopes/refs and the git work context; no event (SPEC §9.5)."""
    kernel = ctx.kernel
    caller = caller_of(ctx)
    row = _owned_session(ctx, caller, params.session_id, must_be_open=True)
    session_id = row["session_id"]
    added = now_ts()

    def edit(conn: sqlite3.Connection) -> None:
        for table, items in (("session_scopes", params.remove_scopes), ("session_refs", params.remove_refs)):
            conn.executemany(
                f"DELETE FROM {table} WHERE session_id=? AND type=? AND value=?",
                [(session_id, i.type, i.value) for i in items or []],
            )
        for table, items in (("session_scopes", params.add_scopes), ("session_refs", params.add_refs)):
            conn.executemany(
                f"INSERT OR IGNORE INTO {table}(session_id, type, value, added_at) VALUES (?,?,?,?)",
                [(session_id, i.type, i.value, added) for i in items or []],
            )

    if any((params.add_scopes, params.remove_scopes, params.add_refs, params.remove_refs)):
        await write_local(kernel, edit)
    db = reader(kernel)
    agent = agent_rows(db, agent_ids=[caller.agent_id])[0]
    worktree = session_worktree(db, session_id, agent["worktree"])
    if caller.is_local:
        await refresh_contexts(kernel, [(session_id, caller.agent_id, worktree)])
    seen = presence(kernel).touch(caller.agent_id, session_id)
    context = work_contexts_for(reader(kernel), [(session_id, caller.agent_id)]).get(session_id) or {}
    return {
        "session_id": session_id,
        "last_seen_at": format_ts(seen),
        "branch": context.get("branch"),
        "unmerged_commits": len(context.get("unmerged_commits") or ()),
        "changed_files": len(context.get("changed_files") or ()),
        "uncommitted_files": len(context.get("uncommitted_files") or ()),
        "git_updated_at": context.get("git_updated_at"),
    }


# ------------------------------------------------------------------------------- intent and task


class IntentParams(Params):
    """``session.setIntent`` params."""

    session_id: str | None = None
    intent: str

    @field_validator("intent")
    @classmethod
    def _intent(cls, v: str) -> str:
        return validate_intent(v)


class TaskParams(Params):
    """``session.setTask`` params."""

    session_id: str | None = None
    current_task: str

    @field_validator("current_task")
    @classmethod
    def _task(cls, v: str) -> str:
        return validate_task(v)


async def _emit_context_change(ctx: CallContext, session_id: str | None, **changes: Any) -> tuple[str, str]:
    caller = caller_of(ctx)
    row = _owned_session(ctx, caller, session_id, must_be_open=True)
    sid = row["session_id"]
    at = format_ts(now_ns())
    stamp_field = "intent_updated_at" if "intent" in changes else "task_updated_at"
    element = context_element(reader(ctx.kernel), sid, caller.agent_id, **changes, **{stamp_field: at})
    await ctx.kernel.emit(
        [{"type": "agent.update", "agent_id": caller.agent_id, "work_contexts": [element]}], ctx=ctx
    )
    return sid, at


async def session_set_intent(params: IntentParams, ctx: CallContext) -> dict[str, Any]:
    """Set (or with ``""`` clear) the session's intent; emits ``agent.update`` (D7)."""
    sid, at = await _emit_context_change(ctx, params.session_id, intent=params.intent or None)
    return {"session_id": sid, "intent": params.intent, "intent_updated_at": at}


async def session_set_task(params: TaskParams, ctx: CallContext) -> dict[str, Any]:
    """Set (or with ``""`` clear) the session's current task; emits ``agent.update`` (D7)."""
    sid, at = await _emit_context_change(ctx, params.session_id, current_task=params.current_task or None)
    return {"session_id": sid, "current_task": params.current_task, "task_updated_at": at}


# ------------------------------------------------------------------------------------------- hooks


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    both = {"unix", "ws"}
    register("session.start", session_start, params=StartParams, auth="open", transports=both)
    register("session.end", session_end, params=EndParams, auth="caller", transports=both)
    register("session.list", session_list, params=ListParams, auth="open", transports=both)
    register(
        "session.heartbeat",
        session_heartbeat,
        params=HeartbeatParams,
        auth="caller",
        transports=both,
        deadline_s=30,
    )
    register("session.setIntent", session_set_intent, params=IntentParams, auth="caller", transports=both)
    register("session.setTask", session_set_task, params=TaskParams, auth="caller", transports=both)
