"""A small stand-in for the agents, sessions, messaging and groups plugins, for purge tests.

It registers the SPEC event types those plugins own with minimal reducers that
fill the SPEC §7.2 tables (only the columns purge looks at, plus a few
more), so the purge plugin can be tested with real events, a real store and
real SQLite whether or not the feature plugins are installed.  Tests that
have the real plugins use those instead.
"""

from __future__ import annotations

from thrum_core.events.legacy import spec_route
from thrum_core.events.types import ApplyContext, EventType, EventTypeRegistrar, Pending, StoredEvent
from thrum_core.markers import hookimpl
from thrum_core.timefmt import format_ts

TABLES = """
CREATE TABLE agents (agent_id TEXT PRIMARY KEY, role TEXT, registered_at TEXT);
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, agent_id TEXT, started_at TEXT, ended_at TEXT,
                       end_reason TEXT, start_k TEXT, end_k TEXT);
CREATE TABLE agent_work_contexts (session_id TEXT PRIMARY KEY, agent_id TEXT, current_task TEXT, k TEXT);
CREATE TABLE messages (message_id TEXT PRIMARY KEY, agent_id TEXT, created_at TEXT, created_ns INTEGER,
                       create_k TEXT, body_content TEXT, edit_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE message_edits (event_id TEXT PRIMARY KEY, message_id TEXT, content TEXT, k TEXT);
CREATE TABLE message_reads (message_id TEXT, agent_id TEXT, read_at TEXT, event_id TEXT,
                            PRIMARY KEY (message_id, agent_id));
CREATE TABLE groups (group_id TEXT PRIMARY KEY, name TEXT, created_by TEXT);
"""


def _register(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute(
        "INSERT OR IGNORE INTO agents(agent_id, role, registered_at) VALUES (?,?,?)",
        (ev.obj.get("agent_id"), ev.obj.get("role"), format_ts(ev.ts_ns)),
    )
    return None


def _session_start(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute(
        "INSERT INTO sessions(session_id, agent_id, started_at, start_k) VALUES (?,?,?,?) "
        "ON CONFLICT(session_id) DO UPDATE SET started_at=excluded.started_at, start_k=excluded.start_k",
        (ev.obj.get("session_id"), ev.obj.get("agent_id"), format_ts(ev.ts_ns), ev.k),
    )
    return None


def _session_end(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute(
        "INSERT INTO sessions(session_id, agent_id, ended_at, end_reason, end_k) VALUES (?,?,?,?,?) "
        "ON CONFLICT(session_id) DO UPDATE SET ended_at=excluded.ended_at, end_reason=excluded.end_reason, "
        "end_k=excluded.end_k WHERE sessions.end_k IS NULL OR excluded.end_k > sessions.end_k",
        (ev.obj.get("session_id"), ev.obj.get("agent_id"), format_ts(ev.ts_ns), ev.obj.get("reason"), ev.k),
    )
    return None


def _update(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    for wc in ev.obj.get("work_contexts") or []:
        ctx.db.execute(
            "INSERT INTO agent_work_contexts(session_id, agent_id, current_task, k) VALUES (?,?,?,?) "
            "ON CONFLICT(session_id) DO UPDATE SET current_task=excluded.current_task, k=excluded.k "
            "WHERE excluded.k > agent_work_contexts.k",
            (wc.get("session_id"), ev.obj.get("agent_id"), wc.get("current_task"), ev.k),
        )
    return None


def _create(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    mid = ev.obj.get("message_id")
    ctx.db.execute(
        "INSERT OR IGNORE INTO messages(message_id, agent_id, created_at, created_ns, create_k, "
        "body_content) VALUES (?,?,?,?,?,?)",
        (
            mid,
            ev.obj.get("agent_id"),
            format_ts(ev.ts_ns),
            ev.ts_ns,
            ev.k,
            (ev.obj.get("body") or {}).get("content"),
        ),
    )
    ctx.provide(f"message:{mid}")
    return None


def _known(ctx: ApplyContext, mid: object) -> bool:
    return ctx.db.execute("SELECT 1 FROM messages WHERE message_id=?", (mid,)).fetchone() is not None


def _edit(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    mid = ev.obj.get("message_id")
    if not _known(ctx, mid):
        return ctx.pending(f"message:{mid}")
    ctx.db.execute(
        "INSERT OR IGNORE INTO message_edits(event_id, message_id, content, k) VALUES (?,?,?,?)",
        (ev.event_id, mid, (ev.obj.get("body") or {}).get("content"), ev.k),
    )
    ctx.db.execute(
        "UPDATE messages SET edit_count=(SELECT COUNT(*) FROM message_edits WHERE message_id=?) "
        "WHERE message_id=?",
        (mid, mid),
    )
    return None


def _receipt(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    mid = ev.obj.get("message_id")
    if not _known(ctx, mid):
        return ctx.pending(f"message:{mid}")
    ctx.db.execute(
        "INSERT INTO message_reads(message_id, agent_id, read_at, event_id) VALUES (?,?,?,?) "
        "ON CONFLICT(message_id, agent_id) DO UPDATE SET read_at=excluded.read_at, "
        "event_id=excluded.event_id WHERE excluded.read_at < message_reads.read_at",
        (mid, ev.obj.get("agent_id"), ev.obj.get("read_at"), ev.event_id),
    )
    return None


def _group(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute(
        "INSERT OR IGNORE INTO groups(group_id, name, created_by) VALUES (?,?,?)",
        (ev.obj.get("group_id"), ev.obj.get("name"), ev.obj.get("created_by")),
    )
    return None


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    register.migrations("standin", [TABLES])
    register(EventType("agent.register", _register))
    register(EventType("agent.session.start", _session_start, aliases=("session.start",)))
    register(EventType("agent.session.end", _session_end, aliases=("session.end",)))
    register(EventType("agent.update", _update, route=spec_route))
    register(EventType("message.create", _create, route=spec_route))
    register(EventType("message.edit", _edit, route=spec_route))
    register(EventType("message.receipt", _receipt, route=spec_route))
    register(EventType("group.create", _group, route=spec_route))
