"""Agent lifecycle event types: tables, reducers, routing and the cleanup tombstone.

Event types (SPEC §6.2): ``agent.register``, ``agent.session.start`` /
``agent.session.end`` (read-only aliases ``session.start`` / ``session.end``,
D14), ``agent.update`` and the tombstone ``agent.cleanup`` (§6.7).

Projection tables (SPEC §7.2 column names): ``agents``, ``sessions``,
``agent_work_contexts``, ``agent_tombstones``, plus ``agent_tombstone_refs``
(sessions and messages an ``agent.cleanup`` removed, so the tombstone filter
still recognises their other events — Go ``session.end`` lines carry no
``agent_id``, receipts by others name only the message).  Local tables (kept
across rebuilds): ``presence``, ``local_contexts``, ``session_scopes``,
``session_refs``.

Reducers are pure functions of the projection and the event, idempotent and
order-independent (SPEC §7.3): every "latest wins" choice compares sort keys.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from thrum_core.events.types import (
    ApplyContext,
    EventType,
    EventTypeRegistrar,
    InvalidEvent,
    SortKey,
    StoredEvent,
    TombstonePredicate,
    TombstoneRule,
)
from thrum_core.ids import shard_name
from thrum_core.timefmt import format_ts
from thrum_plugins.rpc._message_schema import prepare_rebuild_reads

__all__ = [
    "LIST_FIELDS",
    "SESSION_TYPES",
    "WORK_CONTEXT_COLUMNS",
    "build_cleanup_filter",
    "k_to_sort_key",
    "register_agent_event_types",
    "route_agent_update",
]

MIGRATION_OWNER = "agents"
LOCAL_MIGRATION_OWNER = "agents_local"

#: Columns of ``agent_work_contexts`` / ``local_contexts`` besides ``session_id``, ``agent_id``, ``k``.
WORK_CONTEXT_COLUMNS = (
    "branch",
    "worktree_path",
    "unmerged_commits",
    "uncommitted_files",
    "changed_files",
    "file_changes",
    "git_updated_at",
    "current_task",
    "task_updated_at",
    "intent",
    "intent_updated_at",
)
#: Work-context fields stored as JSON text.
LIST_FIELDS = frozenset({"unmerged_commits", "uncommitted_files", "changed_files", "file_changes"})

SESSION_TYPES = frozenset({"agent.session.start", "agent.session.end", "session.start", "session.end"})
_AGENT_KEYED = frozenset({"agent.register", "agent.update"}) | SESSION_TYPES
_MESSAGE_EDITS = frozenset({"message.edit", "message.delete"})
_MEMBER_TYPES = frozenset({"group.member.add", "group.member.remove"})

_WC_COLS_SQL = ", ".join(WORK_CONTEXT_COLUMNS)

_PROJECTION_STEPS = [
    """
    CREATE TABLE agents (
        agent_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'agent',
        name TEXT,
        role TEXT,
        module TEXT,
        display TEXT,
        hostname TEXT,
        worktree TEXT,
        agent_pid INTEGER,
        origin_daemon TEXT NOT NULL DEFAULT '',
        registered_at TEXT,
        reg_k TEXT
    );
    CREATE INDEX agents_role ON agents(role);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        agent_id TEXT,
        started_at TEXT,
        ended_at TEXT,
        end_reason TEXT,
        origin_daemon TEXT NOT NULL DEFAULT '',
        start_k TEXT,
        end_k TEXT
    );
    CREATE INDEX sessions_agent ON sessions(agent_id, start_k);
    CREATE INDEX sessions_open ON sessions(agent_id) WHERE ended_at IS NULL;
    CREATE TABLE agent_work_contexts (
        session_id TEXT PRIMARY KEY,
        agent_id TEXT,
        branch TEXT,
        worktree_path TEXT,
        unmerged_commits TEXT,
        uncommitted_files TEXT,
        changed_files TEXT,
        file_changes TEXT,
        git_updated_at TEXT,
        current_task TEXT,
        task_updated_at TEXT,
        intent TEXT,
        intent_updated_at TEXT,
        k TEXT
    );
    CREATE INDEX agent_work_contexts_agent ON agent_work_contexts(agent_id);
    CREATE TABLE agent_tombstones (
        agent_id TEXT PRIMARY KEY,
        k TEXT NOT NULL,
        at TEXT
    );
    CREATE TABLE agent_tombstone_refs (
        kind TEXT NOT NULL,
        ref_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        PRIMARY KEY (kind, ref_id)
    );
    """
]

_LOCAL_STEPS = [
    """
    CREATE TABLE IF NOT EXISTS presence (
        agent_id TEXT PRIMARY KEY,
        session_id TEXT,
        last_seen_at TEXT,
        agent_status TEXT,
        agent_status_at TEXT
    );
    CREATE TABLE IF NOT EXISTS local_contexts (
        session_id TEXT PRIMARY KEY,
        agent_id TEXT,
        branch TEXT,
        worktree_path TEXT,
        unmerged_commits TEXT,
        uncommitted_files TEXT,
        changed_files TEXT,
        file_changes TEXT,
        git_updated_at TEXT,
        current_task TEXT,
        task_updated_at TEXT,
        intent TEXT,
        intent_updated_at TEXT,
        k TEXT
    );
    CREATE INDEX IF NOT EXISTS local_contexts_agent ON local_contexts(agent_id);
    CREATE TABLE IF NOT EXISTS session_scopes (
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        added_at TEXT,
        PRIMARY KEY (session_id, type, value)
    );
    CREATE TABLE IF NOT EXISTS session_refs (
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        added_at TEXT,
        PRIMARY KEY (session_id, type, value)
    );
    """
]


# ------------------------------------------------------------------------------------------ helpers


def k_to_sort_key(k: str) -> SortKey:
    """Parse a ``K`` column (``<20-digit ns>|<event_id>``) back into a sort key."""
    ns, _, eid = k.partition("|")
    return (int(ns), eid.encode("utf-8", "surrogatepass"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_list(value: Any) -> str | None:
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return None


def _require_id(ev: StoredEvent, key: str) -> str:
    value = ev.obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{ev.type} without {key}")
    return value


def route_agent_update(obj: Mapping[str, Any]) -> str:
    """``messages/<shard(agent_id)>.jsonl`` (SPEC §6.3)."""
    agent_id = obj.get("agent_id")
    return f"messages/{shard_name(agent_id if isinstance(agent_id, str) else '')}.jsonl"


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
    return row is not None


# ----------------------------------------------------------------------------------------- reducers


def reduce_register(ctx: ApplyContext, ev: StoredEvent) -> None:
    """Insert the agent, or update it when this registration is the latest (SPEC §7.3)."""
    o = ev.obj
    agent_id = _require_id(ev, "agent_id")
    kind = _text(o.get("kind")) or "agent"
    if kind == "human":
        kind = "user"
    pid = o.get("agent_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        pid = o.get("claude_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        pid = None
    at = format_ts(ev.ts_ns)
    fields = (
        kind,
        _text(o.get("name")),
        _text(o.get("role")) or "",
        _text(o.get("module")) or "",
        _text(o.get("display")) or "",
        _text(o.get("hostname")) or "",
        _text(o.get("worktree")),
        pid,
        ev.origin_daemon,
    )
    db = ctx.db
    row = db.execute("SELECT reg_k, registered_at FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO agents(agent_id, kind, name, role, module, display, hostname, worktree, agent_pid,"
            " origin_daemon, registered_at, reg_k) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (agent_id, *fields, at, ev.k),
        )
        return
    registered_at = min(row["registered_at"] or at, at)
    if row["reg_k"] is None or ev.k > row["reg_k"]:
        db.execute(
            "UPDATE agents SET kind=?, name=?, role=?, module=?, display=?, hostname=?, worktree=?,"
            " agent_pid=?, origin_daemon=?, registered_at=?, reg_k=? WHERE agent_id=?",
            (*fields, registered_at, ev.k, agent_id),
        )
    else:
        db.execute("UPDATE agents SET registered_at=? WHERE agent_id=?", (registered_at, agent_id))


def reduce_session_start(ctx: ApplyContext, ev: StoredEvent) -> None:
    """Upsert the session; the earliest start wins (a row may come from its end first)."""
    session_id = _require_id(ev, "session_id")
    agent_id = _text(ev.obj.get("agent_id"))
    at = format_ts(ev.ts_ns)
    db = ctx.db
    row = db.execute("SELECT start_k FROM sessions WHERE session_id=?", (session_id,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO sessions(session_id, agent_id, started_at, origin_daemon, start_k)"
            " VALUES (?,?,?,?,?)",
            (session_id, agent_id or "", at, ev.origin_daemon, ev.k),
        )
    elif row["start_k"] is None or ev.k < row["start_k"]:
        db.execute(
            "UPDATE sessions SET agent_id=COALESCE(?, agent_id), started_at=?, origin_daemon=?, start_k=?"
            " WHERE session_id=?",
            (agent_id, at, ev.origin_daemon, ev.k, session_id),
        )


def reduce_session_end(ctx: ApplyContext, ev: StoredEvent) -> None:
    """Upsert the session; ``ended_at``/``end_reason`` come from the end with the greatest key."""
    session_id = _require_id(ev, "session_id")
    agent_id = _text(ev.obj.get("agent_id"))
    reason = _text(ev.obj.get("reason"))
    at = format_ts(ev.ts_ns)
    db = ctx.db
    row = db.execute("SELECT end_k, agent_id FROM sessions WHERE session_id=?", (session_id,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO sessions(session_id, agent_id, ended_at, end_reason, origin_daemon, end_k)"
            " VALUES (?,?,?,?,?,?)",
            (session_id, agent_id or "", at, reason, ev.origin_daemon, ev.k),
        )
        return
    # The start's agent_id wins: Go end lines carry none.
    new_agent = row["agent_id"] or agent_id or ""
    if row["end_k"] is None or ev.k > row["end_k"]:
        db.execute(
            "UPDATE sessions SET agent_id=?, ended_at=?, end_reason=?, end_k=? WHERE session_id=?",
            (new_agent, at, reason, ev.k, session_id),
        )
    elif new_agent != row["agent_id"]:
        db.execute("UPDATE sessions SET agent_id=? WHERE session_id=?", (new_agent, session_id))


def reduce_update(ctx: ApplyContext, ev: StoredEvent) -> None:
    """Per element: replace the session's work context when this event is newer (SPEC §7.3)."""
    agent_id = _require_id(ev, "agent_id")
    contexts = ev.obj.get("work_contexts")
    if not isinstance(contexts, list):
        raise InvalidEvent("agent.update without a work_contexts list")
    db = ctx.db
    for wc in contexts:
        if not isinstance(wc, Mapping):
            continue
        session_id = _text(wc.get("session_id"))
        if session_id is None:
            continue
        row = db.execute("SELECT k FROM agent_work_contexts WHERE session_id=?", (session_id,)).fetchone()
        if row is not None and row["k"] is not None and ev.k <= row["k"]:
            continue
        values = [
            _json_list(wc.get(col)) if col in LIST_FIELDS else _text(wc.get(col))
            for col in WORK_CONTEXT_COLUMNS
        ]
        db.execute(
            f"INSERT OR REPLACE INTO agent_work_contexts(session_id, agent_id, {_WC_COLS_SQL}, k)"
            f" VALUES (?,?,{','.join('?' * len(WORK_CONTEXT_COLUMNS))},?)",
            (session_id, agent_id, *values, ev.k),
        )


def reduce_cleanup(ctx: ApplyContext, ev: StoredEvent) -> None:
    """Record the tombstone and delete the rows of the events it covers (SPEC §6.7)."""
    agent_id = _require_id(ev, "agent_id")
    db = ctx.db
    row = db.execute("SELECT k FROM agent_tombstones WHERE agent_id=?", (agent_id,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO agent_tombstones(agent_id, k, at) VALUES (?,?,?)",
            (agent_id, ev.k, format_ts(ev.ts_ns)),
        )
        k = ev.k
    elif ev.k > row["k"]:
        db.execute(
            "UPDATE agent_tombstones SET k=?, at=? WHERE agent_id=?", (ev.k, format_ts(ev.ts_ns), agent_id)
        )
        k = ev.k
    else:
        k = row["k"]
    ns, eid = k_to_sort_key(k)

    db.execute("DELETE FROM agents WHERE agent_id=? AND (reg_k IS NULL OR reg_k < ?)", (agent_id, k))
    sessions = [
        r[0]
        for r in db.execute(
            "SELECT session_id FROM sessions WHERE agent_id=? AND COALESCE(start_k, end_k) < ?", (agent_id, k)
        )
    ]
    for session_id in sessions:
        db.execute(
            "INSERT OR IGNORE INTO agent_tombstone_refs(kind, ref_id, agent_id) VALUES ('session',?,?)",
            (session_id, agent_id),
        )
        db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))
    db.execute("DELETE FROM agent_work_contexts WHERE agent_id=? AND k < ?", (agent_id, k))

    # Tables of the messaging and group plugins, when they are installed.
    if _table_exists(db, "messages"):
        if ctx.rebuilding:  # rows and indexes a rebuild defers
            prepare_rebuild_reads(db)
        message_ids = [
            r[0]
            for r in db.execute(
                "SELECT message_id FROM messages WHERE agent_id=? AND create_k < ?", (agent_id, k)
            )
        ]
        for message_id in message_ids:
            db.execute(
                "INSERT OR IGNORE INTO agent_tombstone_refs(kind, ref_id, agent_id) VALUES ('message',?,?)",
                (message_id, agent_id),
            )
            for table in (
                "message_scopes",
                "message_refs",
                "message_recipients",
                "message_reads",
                "message_edits",
                "messages",
            ):
                if _table_exists(db, table):
                    db.execute(f"DELETE FROM {table} WHERE message_id=?", (message_id,))
    if _table_exists(db, "message_reads"):
        db.execute(
            "DELETE FROM message_reads WHERE agent_id=? AND event_id IN ("
            " SELECT event_id FROM events WHERE ts_ns < ? OR (ts_ns = ? AND event_id < ?))",
            (agent_id, ns, ns, eid.decode("utf-8", "surrogatepass")),
        )
    if _table_exists(db, "group_members"):
        db.execute(
            "DELETE FROM group_members WHERE member_type='agent' AND member_value=? AND k < ?", (agent_id, k)
        )


# ------------------------------------------------------------------------------------- tombstones


def build_cleanup_filter(db: sqlite3.Connection) -> TombstonePredicate | None:
    """The ``agent.cleanup`` predicate: events of tombstoned agents before their tombstone."""
    agents: dict[str, SortKey] = {
        r[0]: k_to_sort_key(r[1]) for r in db.execute("SELECT agent_id, k FROM agent_tombstones")
    }
    if not agents:
        return None
    sessions: dict[str, SortKey] = {}
    messages: dict[str, SortKey] = {}
    for kind, ref_id, agent_id in db.execute("SELECT kind, ref_id, agent_id FROM agent_tombstone_refs"):
        key = agents.get(agent_id)
        if key is None:
            continue
        (sessions if kind == "session" else messages)[ref_id] = key

    def covered(obj: Mapping[str, Any], key: SortKey) -> bool:
        typ = obj.get("type")
        if not isinstance(typ, str):
            return False
        aid = obj.get("agent_id")
        limit = agents.get(aid) if isinstance(aid, str) else None
        if typ in _AGENT_KEYED:
            if limit is None and typ in SESSION_TYPES:
                sid = obj.get("session_id")
                limit = sessions.get(sid) if isinstance(sid, str) else None
            return limit is not None and key < limit
        if typ.startswith("message."):
            if typ == "message.create":
                return limit is not None and key < limit
            mid = obj.get("message_id")
            owner = messages.get(mid) if isinstance(mid, str) else None
            if owner is not None and key < owner:
                return True
            # Receipts by X, and edits/deletes by X (the editor is the author).
            return limit is not None and key < limit and (typ == "message.receipt" or typ in _MESSAGE_EDITS)
        if typ in _MEMBER_TYPES and obj.get("member_type") == "agent":
            value = obj.get("member_value")
            member_limit = agents.get(value) if isinstance(value, str) else None
            return member_limit is not None and key < member_limit
        return False

    return covered


# ------------------------------------------------------------------------------------ registration


def register_agent_event_types(register: EventTypeRegistrar) -> None:
    """Register the agent event types and their tables (called from ``thrum_register_event_types``)."""
    register.migrations(MIGRATION_OWNER, _PROJECTION_STEPS)
    register.migrations(LOCAL_MIGRATION_OWNER, _LOCAL_STEPS, local=True)
    register(EventType("agent.register", reduce_register))
    register(EventType("agent.session.start", reduce_session_start, aliases=("session.start",)))
    register(EventType("agent.session.end", reduce_session_end, aliases=("session.end",)))
    register(EventType("agent.update", reduce_update, route=route_agent_update))
    register(EventType("agent.cleanup", reduce_cleanup, tombstone=TombstoneRule(build_cleanup_filter)))
