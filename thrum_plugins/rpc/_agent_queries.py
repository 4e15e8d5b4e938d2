"""Read side of the agent plugins: the Agent, Session, WorkContext and TeamMember shapes (SPEC §9.2).

Everything here is a function of a read connection and a :class:`View`
(this daemon's id, "now", the presence timeout and the in-memory presence),
so other plugins (messaging, MCP) can build the same shapes::

    from thrum_plugins.rpc._agent_queries import get_agent, view_for
    agent = get_agent(kernel.store.reader(), view_for(kernel), "furiosa")

Derived semantics (SPEC §7.4): a *local* agent (``origin_daemon`` = this
daemon's id or ``""``) is ``active`` iff it has an open session and activity
within ``daemon.presence_timeout``; a remote agent iff it has an open session.
The work context of a session is ``agent_work_contexts`` overlaid by newer
``local_contexts`` git fields; contexts of ended sessions are not listed
unless asked for.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thrum_core.timefmt import format_ts, parse_ts_ns
from thrum_plugins.rpc._agent_events import LIST_FIELDS, WORK_CONTEXT_COLUMNS

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_plugins.rpc._agent_state import Presence

__all__ = [
    "GIT_FIELDS",
    "RowLike",
    "View",
    "agent_rows",
    "build_agent",
    "build_session",
    "get_agent",
    "list_agents",
    "list_sessions",
    "list_work_contexts",
    "open_sessions",
    "session_row",
    "team_members",
    "view_for",
    "work_contexts_for",
]

GIT_FIELDS = (
    "branch",
    "worktree_path",
    "unmerged_commits",
    "uncommitted_files",
    "changed_files",
    "file_changes",
    "git_updated_at",
)

# The same few timestamps (session starts, context updates) are parsed on every team/list call.
_ns = functools.lru_cache(maxsize=16384)(parse_ts_ns)

#: A row as SQLite returns it, or the same fields in a mapping.
RowLike = sqlite3.Row | Mapping[str, Any]

_AGENT_COLS = (
    "agent_id, kind, name, role, module, display, hostname, worktree, agent_pid, origin_daemon,"
    " registered_at, reg_k"
)


@dataclass(frozen=True)
class View:
    """What derived fields depend on besides the tables."""

    daemon_id: str
    now_ns: int
    presence_timeout_ns: int
    presence: Presence | None = None

    def is_local(self, origin_daemon: str | None) -> bool:
        """Whether an agent with this ``origin_daemon`` was registered by this daemon."""
        return not origin_daemon or origin_daemon == self.daemon_id

    def last_seen_ns(self, agent_id: str) -> int | None:
        """In-memory last activity of a local agent."""
        return self.presence.last_seen_ns(agent_id) if self.presence is not None else None

    def agent_status(self, agent_id: str) -> str | None:
        """``agent.set-status`` value of a local agent."""
        return self.presence.agent_status(agent_id)[0] if self.presence is not None else None


def view_for(kernel: Kernel) -> View:
    """The :class:`View` of ``kernel`` now."""
    from thrum_plugins.rpc._agent_state import presence

    return View(
        daemon_id=kernel.daemon_id,
        now_ns=time.time_ns(),
        presence_timeout_ns=int(kernel.config.daemon.presence_timeout) * 1_000_000_000,
        presence=presence(kernel),
    )


def _in(column: str, values: Sequence[str]) -> tuple[str, list[str]]:
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


# ------------------------------------------------------------------------------------------- rows


def agent_rows(
    db: sqlite3.Connection,
    *,
    agent_ids: Sequence[str] | None = None,
    role: str | None = None,
    module: str | None = None,
    kind: str | None = None,
) -> list[sqlite3.Row]:
    """Rows of live (not tombstoned) agents, sorted by ``agent_id``."""
    where: list[str] = []
    args: list[Any] = []
    if agent_ids is not None:
        if not agent_ids:
            return []
        clause, values = _in("agent_id", agent_ids)
        where.append(clause)
        args.extend(values)
    for column, value in (("role", role), ("module", module), ("kind", kind)):
        if value is not None:
            where.append(f"{column}=?")
            args.append(value)
    sql = f"SELECT {_AGENT_COLS} FROM agents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return db.execute(sql + " ORDER BY agent_id", args).fetchall()


def session_row(db: sqlite3.Connection, session_id: str) -> sqlite3.Row | None:
    """The ``sessions`` row of ``session_id``."""
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM sessions WHERE session_id=?", (session_id,)
    ).fetchone()
    return row


def open_sessions(db: sqlite3.Connection, agent_ids: Sequence[str] | None = None) -> dict[str, sqlite3.Row]:
    """Each agent's most recently started open session (SPEC §8.6 "the caller's session")."""
    sql = "SELECT * FROM sessions WHERE ended_at IS NULL AND start_k IS NOT NULL"
    args: list[Any] = []
    if agent_ids is not None:
        if not agent_ids:
            return {}
        clause, args = _in("agent_id", agent_ids)
        sql += " AND " + clause
    out: dict[str, sqlite3.Row] = {}
    for row in db.execute(sql + " ORDER BY start_k", args):
        out[row["agent_id"]] = row
    return out


def _last_activity(db: sqlite3.Connection, agent_ids: Sequence[str] | None) -> dict[str, str]:
    """The latest session start or end per agent (last_seen_at of agents seen through sessions only)."""
    sql = "SELECT agent_id, MAX(COALESCE(ended_at, started_at)) FROM sessions"
    args: list[Any] = []
    if agent_ids is not None:
        if not agent_ids:
            return {}
        clause, args = _in("agent_id", agent_ids)
        sql += " WHERE " + clause
    return {r[0]: r[1] for r in db.execute(sql + " GROUP BY agent_id", args) if r[1]}


# ----------------------------------------------------------------------------------------- agents


def _last_seen(row: RowLike, open_session: RowLike | None, view: View, activity: str | None) -> int | None:
    candidates: list[int] = []
    if view.is_local(row["origin_daemon"]):
        seen = view.last_seen_ns(row["agent_id"])
        if seen:
            candidates.append(seen)
    if open_session is not None:
        started = _ns(open_session["started_at"])
        if started is not None:
            candidates.append(started)
    if activity:
        ns = _ns(activity)
        if ns is not None:
            candidates.append(ns)
    return max(candidates) if candidates else None


def _status(row: RowLike, open_session: RowLike | None, view: View, last_seen: int | None) -> str:
    if open_session is None:
        return "offline"
    if not view.is_local(row["origin_daemon"]):
        return "active"
    if last_seen is not None and view.now_ns - last_seen <= view.presence_timeout_ns:
        return "active"
    return "offline"


def build_agent(
    row: RowLike,
    open_session: RowLike | None,
    view: View,
    activity: str | None = None,
) -> dict[str, Any]:
    """The SPEC §9.2 Agent for an ``agents`` row and its open session (if any)."""
    last_seen = _last_seen(row, open_session, view, activity)
    local = view.is_local(row["origin_daemon"])
    return {
        "agent_id": row["agent_id"],
        "name": row["name"] or row["agent_id"],
        "kind": row["kind"] or "agent",
        "role": row["role"] or "",
        "module": row["module"] or "",
        "display": row["display"] or "",
        "hostname": row["hostname"] or "",
        "worktree": row["worktree"] or None,
        "origin_daemon": row["origin_daemon"] or "",
        "is_local": local,
        "registered_at": row["registered_at"],
        "last_seen_at": format_ts(last_seen) if last_seen is not None else None,
        "status": _status(row, open_session, view, last_seen),
        "session_id": open_session["session_id"] if open_session is not None else None,
        "agent_status": view.agent_status(row["agent_id"]) if local else None,
    }


def list_agents(
    db: sqlite3.Connection,
    view: View,
    *,
    agent_ids: Sequence[str] | None = None,
    role: str | None = None,
    module: str | None = None,
    kind: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Agents matching the filters, sorted by ``agent_id`` (``agent.list``)."""
    rows = agent_rows(db, agent_ids=agent_ids, role=role, module=module, kind=kind)
    ids = [r["agent_id"] for r in rows] if agent_ids is not None or len(rows) < 500 else None
    sessions = open_sessions(db, ids)
    activity = _last_activity(db, ids)
    agents = [build_agent(r, sessions.get(r["agent_id"]), view, activity.get(r["agent_id"])) for r in rows]
    if status is not None:
        agents = [a for a in agents if a["status"] == status]
    return agents


def get_agent(db: sqlite3.Connection, view: View, agent_id: str) -> dict[str, Any] | None:
    """One Agent, or ``None`` when it is not registered (or was deleted)."""
    found = list_agents(db, view, agent_ids=[agent_id])
    return found[0] if found else None


# --------------------------------------------------------------------------------------- sessions


def build_session(row: RowLike, view: View, intent: str | None = None) -> dict[str, Any]:
    """The SPEC §9.2 Session for a ``sessions`` row."""
    ended = row["ended_at"] is not None
    if ended:
        last_seen: str | None = row["ended_at"]
    else:
        seen = view.last_seen_ns(row["agent_id"]) if view.is_local(row["origin_daemon"]) else None
        started = _ns(row["started_at"])
        best = max([n for n in (seen, started) if n is not None], default=None)
        last_seen = format_ts(best) if best is not None else row["started_at"]
    return {
        "session_id": row["session_id"],
        "agent_id": row["agent_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "end_reason": row["end_reason"],
        "last_seen_at": last_seen,
        "status": "ended" if ended else "active",
        "intent": intent,
    }


def list_sessions(
    db: sqlite3.Connection, view: View, *, active: bool = False, agent_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Sessions newest first (``session.list``); sessions of deleted agents are absent."""
    sql = "SELECT s.* FROM sessions s JOIN agents a ON a.agent_id = s.agent_id"
    where: list[str] = []
    args: list[Any] = []
    if active:
        where.append("s.ended_at IS NULL")
    if agent_id is not None:
        where.append("s.agent_id=?")
        args.append(agent_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY COALESCE(s.start_k, s.end_k) DESC LIMIT ?"
    args.append(limit)
    rows = db.execute(sql, args).fetchall()
    intents = _intents(db, [r["session_id"] for r in rows])
    return [build_session(r, view, intents.get(r["session_id"])) for r in rows]


def _intents(db: sqlite3.Connection, session_ids: Sequence[str]) -> dict[str, str]:
    if not session_ids:
        return {}
    clause, args = _in("session_id", session_ids)
    return {
        r[0]: r[1]
        for r in db.execute(f"SELECT session_id, intent FROM agent_work_contexts WHERE {clause}", args)
        if r[1]
    }


# ----------------------------------------------------------------------------------- work contexts


def _decode(column: str, value: Any) -> Any:
    if column in LIST_FIELDS:
        if not value:
            return []
        try:
            decoded = json.loads(value)
        except ValueError:
            return []
        return decoded if isinstance(decoded, list) else []
    return value if value != "" else None


def _newer(local_ts: Any, shared_ts: Any) -> bool:
    local_ns = _ns(local_ts)
    if local_ns is None:
        return False
    shared_ns = _ns(shared_ts)
    return shared_ns is None or local_ns > shared_ns


def merge_context(
    session_id: str, agent_id: str, shared: RowLike | None, local: RowLike | None
) -> dict[str, Any]:
    """One WorkContext: the event-sourced row overlaid by newer local git fields."""
    out: dict[str, Any] = {"session_id": session_id, "agent_id": agent_id}
    for column in WORK_CONTEXT_COLUMNS:
        out[column] = _decode(column, shared[column] if shared is not None else None)
    if local is not None and (shared is None or _newer(local["git_updated_at"], shared["git_updated_at"])):
        for column in GIT_FIELDS:
            out[column] = _decode(column, local[column])
    for commit in out["unmerged_commits"]:
        if isinstance(commit, dict):
            commit.setdefault("files", [])
    return out


def _rows_by_session(
    db: sqlite3.Connection, table: str, session_ids: Sequence[str]
) -> dict[str, sqlite3.Row]:
    out: dict[str, sqlite3.Row] = {}
    for start in range(0, len(session_ids), 500):
        chunk = session_ids[start : start + 500]
        clause, args = _in("session_id", chunk)
        for row in db.execute(f"SELECT * FROM {table} WHERE {clause}", args):
            out[row["session_id"]] = row
    return out


def work_contexts_for(db: sqlite3.Connection, pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Merged WorkContexts for ``(session_id, agent_id)`` pairs, by session id."""
    wanted = dict(pairs)
    ids = list(wanted)
    shared = _rows_by_session(db, "agent_work_contexts", ids)
    local = _rows_by_session(db, "local_contexts", ids)
    return {
        sid: merge_context(sid, wanted[sid], shared.get(sid), local.get(sid))
        for sid in ids
        if sid in shared or sid in local
    }


def _touches(ctx: Mapping[str, Any], path: str) -> bool:
    """``path`` is in ``changed_files`` or ``uncommitted_files`` (or under an untracked ``dir/`` there)."""
    if path in (ctx.get("changed_files") or ()):
        return True
    return any(
        item == path or (item.endswith("/") and path.startswith(item))
        for item in ctx.get("uncommitted_files") or ()
        if isinstance(item, str)
    )


def list_work_contexts(
    db: sqlite3.Connection,
    *,
    agent_id: str | None = None,
    role: str | None = None,
    branch: str | None = None,
    file: str | None = None,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    """WorkContexts matching the filters, newest ``git_updated_at`` first (``agent.listContext``)."""
    sql = (
        "SELECT c.session_id, a.agent_id FROM ("
        " SELECT session_id, agent_id FROM agent_work_contexts"
        " UNION SELECT session_id, agent_id FROM local_contexts) c"
        " JOIN agents a ON a.agent_id = c.agent_id"
        " LEFT JOIN sessions s ON s.session_id = c.session_id"
    )
    where: list[str] = []
    args: list[Any] = []
    if not include_ended:
        where.append("s.ended_at IS NULL")
    if agent_id is not None:
        where.append("a.agent_id=?")
        args.append(agent_id)
    if role is not None:
        where.append("a.role=?")
        args.append(role)
    if where:
        sql += " WHERE " + " AND ".join(where)
    pairs = [(r[0], r[1]) for r in db.execute(sql, args)]
    contexts = list(work_contexts_for(db, pairs).values())
    if branch is not None:
        contexts = [c for c in contexts if c["branch"] == branch]
    if file is not None:
        contexts = [c for c in contexts if _touches(c, file)]
    contexts.sort(key=lambda c: (_ns(c["git_updated_at"]) or -1, c["session_id"]), reverse=True)
    return contexts


# ------------------------------------------------------------------------------------------- team


def team_members(
    db: sqlite3.Connection,
    view: View,
    *,
    include_offline: bool = False,
    role: str | None = None,
    inbox_counts: Mapping[str, tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """TeamMembers: active newest session first, then (``include_offline``) offline most recently seen."""
    rows = agent_rows(db, role=role)
    sessions = open_sessions(db)
    activity = _last_activity(db, None)
    agents = [build_agent(r, sessions.get(r["agent_id"]), view, activity.get(r["agent_id"])) for r in rows]
    if not include_offline:
        agents = [a for a in agents if a["status"] == "active"]
    pairs = [(a["session_id"], a["agent_id"]) for a in agents if a["session_id"]]
    contexts = work_contexts_for(db, pairs)
    counts = inbox_counts or {}
    members: list[dict[str, Any]] = []
    for agent in agents:
        session = sessions.get(agent["agent_id"]) if agent["session_id"] else None
        ctx = contexts.get(agent["session_id"] or "") or {}
        total, unread = counts.get(agent["agent_id"], (0, 0))
        members.append(
            {
                **agent,
                "session_start": session["started_at"] if session is not None else None,
                "intent": ctx.get("intent"),
                "current_task": ctx.get("current_task"),
                "branch": ctx.get("branch"),
                "unmerged_commits": len(ctx.get("unmerged_commits") or ()),
                "uncommitted_files": list(ctx.get("uncommitted_files") or ()),
                "file_changes": list(ctx.get("file_changes") or ()),
                "inbox_total": int(total),
                "inbox_unread": int(unread),
            }
        )
    active = [m for m in members if m["status"] == "active"]
    offline = [m for m in members if m["status"] != "active"]
    active.sort(key=lambda m: (m["session_start"] or "", m["agent_id"]), reverse=True)
    offline.sort(key=lambda m: (_ns(m["last_seen_at"]) or -1, m["agent_id"]), reverse=True)
    return active + offline
