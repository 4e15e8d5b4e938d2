"""Purge: the ``purge.executed`` tombstone and the admin RPC ``purge`` (SPEC §6.7, §9.13).

``purge.executed {cutoff}`` removes, for the greatest cutoff seen (the
*effective* cutoff):

(a) every message whose ``message.create`` instant is before the cutoff,
    together with every ``message.*`` event (edit, delete, receipt) for it;
(b) every session whose ``agent.session.end`` (or legacy ``session.end``)
    instant is before the cutoff, together with its start and the
    ``agent.update`` work contexts for it.

Agents, groups, unknown types, open sessions and tombstones themselves are
never purged.

The reducer raises ``meta('purge_cutoff')``, records the purged message and
session ids in ``p_purge_messages`` / ``p_purge_sessions`` (so that edits,
receipts and session events arriving later are recognised even after the log
lines of the purged creates are gone), and deletes the projection rows of the
messaging and sessions plugins, looked up by the SPEC §7.2 column names; a
table that is absent (its plugin disabled) is skipped.  The store then rewrites
the log files without the covered lines (SPEC §6.7 (2)).

``purge`` (admin, Unix socket only): ``{before?, all, dry_run = true}`` →
``{cutoff, dry_run, messages, sessions, events, files_rewritten}``; a cutoff in
the future is -32602.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, field_validator

from thrum_core.errors import InvalidParams
from thrum_core.events.types import EventType, InvalidEvent, TombstonePredicate, TombstoneRule
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import Params
from thrum_core.timefmt import format_ts, parse_point_in_time, parse_ts_ns
from thrum_plugins.rpc._message_schema import prepare_rebuild_reads

if TYPE_CHECKING:
    from thrum_core.events.types import ApplyContext, EventTypeRegistrar, Pending, SortKey, StoredEvent
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

__all__ = [
    "PURGE_TYPE",
    "PurgeParams",
    "PurgePlan",
    "build_purge_filter",
    "plan_purge",
    "purge_predicate",
    "resolve_cutoff",
]

PURGE_TYPE = "purge.executed"
META_KEY = "purge_cutoff"

#: ``message.*`` types a purged message takes with it (``message.create`` is judged by its instant).
MESSAGE_TYPES = frozenset({"message.create", "message.edit", "message.delete", "message.receipt"})
#: Session start / end names, SPEC and legacy (D14).
SESSION_START_TYPES = frozenset({"agent.session.start", "session.start"})
SESSION_END_TYPES = frozenset({"agent.session.end", "session.end"})
SESSION_TYPES = SESSION_START_TYPES | SESSION_END_TYPES
UPDATE_TYPE = "agent.update"
#: Every type a purge can cover (the others are never looked at).
PURGEABLE_TYPES = MESSAGE_TYPES | SESSION_TYPES | {UPDATE_TYPE}

#: Projection tables of other plugins whose rows go with a purged message / session.
MESSAGE_TABLES = ("message_scopes", "message_refs", "message_recipients", "message_reads", "message_edits")
SESSION_TABLES = ("agent_work_contexts",)

MIGRATIONS = [
    """
    CREATE TABLE p_purge_messages (message_id TEXT PRIMARY KEY);
    CREATE TABLE p_purge_sessions (session_id TEXT PRIMARY KEY);
    """
]


class PurgeExecuted(BaseModel):
    """A locally written ``purge.executed`` event (envelope fields are checked by the writer)."""

    cutoff: str

    @field_validator("cutoff")
    @classmethod
    def _cutoff_is_ts(cls, v: str) -> str:
        if parse_ts_ns(v) is None:
            raise ValueError("cutoff must be an RFC 3339 timestamp")
        return v


# --------------------------------------------------------------------------- helpers


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f'PRAGMA table_info("{table}")')}


def _meta_cutoff(db: sqlite3.Connection) -> tuple[int, str] | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None or row[0] is None:
        return None
    ns = parse_ts_ns(row[0])
    return None if ns is None else (ns, row[0])


def effective_cutoff(db: sqlite3.Connection) -> int | None:
    """The greatest cutoff applied so far (ns), or ``None`` before any purge."""
    got = _meta_cutoff(db)
    return None if got is None else got[0]


def _ids_from_events(db: sqlite3.Connection, types: Iterable[str], key: str, cutoff: int) -> set[str]:
    """``key`` of the stored lines of ``types`` whose instant is before ``cutoff``."""
    names = sorted(types)
    marks = ",".join("?" * len(names))
    out: set[str] = set()
    rows = db.execute(
        f"SELECT line FROM events WHERE type IN ({marks}) AND ts_ns < ? AND line IS NOT NULL "
        "AND state != 'tombstoned'",
        (*names, cutoff),
    )
    for (line,) in rows:
        try:
            obj = json.loads(line)
        except (TypeError, ValueError):
            continue
        value = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(value, str) and value:
            out.add(value)
    return out


def _purged_sets(db: sqlite3.Connection, cutoff: int) -> tuple[set[str], set[str]]:
    """Message and session ids a purge at ``cutoff`` removes, from the log index and the rows."""
    tables = _tables(db)
    messages = _ids_from_events(db, {"message.create"}, "message_id", cutoff) if "events" in tables else set()
    sessions = _ids_from_events(db, SESSION_END_TYPES, "session_id", cutoff) if "events" in tables else set()
    if "messages" in tables and "created_ns" in _columns(db, "messages"):
        messages.update(
            r[0] for r in db.execute("SELECT message_id FROM messages WHERE created_ns < ?", (cutoff,))
        )
    if "sessions" in tables:
        for sid, ended_at in db.execute(
            "SELECT session_id, ended_at FROM sessions WHERE ended_at IS NOT NULL"
        ):
            ns = parse_ts_ns(ended_at)
            if ns is not None and ns < cutoff:
                sessions.add(sid)
    return messages, sessions


def _recorded_sets(db: sqlite3.Connection) -> tuple[set[str], set[str]]:
    tables = _tables(db)
    messages = (
        {r[0] for r in db.execute("SELECT message_id FROM p_purge_messages")}
        if "p_purge_messages" in tables
        else set()
    )
    sessions = (
        {r[0] for r in db.execute("SELECT session_id FROM p_purge_sessions")}
        if "p_purge_sessions" in tables
        else set()
    )
    return messages, sessions


# --------------------------------------------------------------------------- the predicate


def purge_predicate(cutoff: int, messages: set[str], sessions: set[str]) -> TombstonePredicate:
    """``(obj, sort_key) -> bool`` for a purge at ``cutoff`` (ns) with the purged id sets.

    ``messages``/``sessions`` are the ids already known to be purged; events
    are also judged on their own: a ``message.create`` or a session end before
    the cutoff is covered.
    """

    def covered(obj: Mapping[str, Any], key: SortKey) -> bool:
        typ = obj.get("type")
        if typ not in PURGEABLE_TYPES:
            return False
        if typ in MESSAGE_TYPES:
            if typ == "message.create" and key[0] < cutoff:
                return True
            mid = obj.get("message_id")
            return isinstance(mid, str) and mid in messages
        if typ in SESSION_TYPES:
            if typ in SESSION_END_TYPES and key[0] < cutoff:
                return True
            sid = obj.get("session_id")
            return isinstance(sid, str) and sid in sessions
        # agent.update: covered when every work context it carries belongs to a purged session.
        contexts = obj.get("work_contexts")
        if not isinstance(contexts, list) or not contexts:
            return False
        for wc in contexts:
            sid = wc.get("session_id") if isinstance(wc, dict) else None
            if not (isinstance(sid, str) and sid in sessions):
                return False
        return True

    return covered


def build_purge_filter(db: sqlite3.Connection) -> TombstonePredicate | None:
    """The :class:`TombstoneRule` filter: ``None`` before any purge."""
    cutoff = effective_cutoff(db)
    if cutoff is None:
        return None
    messages, sessions = _recorded_sets(db)
    return purge_predicate(cutoff, messages, sessions)


# --------------------------------------------------------------------------- the reducer


def _delete_rows(db: sqlite3.Connection, messages: set[str], sessions: set[str]) -> None:
    tables = _tables(db)
    if messages:
        if "messages" in tables:
            db.execute("DELETE FROM messages WHERE message_id IN (SELECT message_id FROM p_purge_messages)")
        for table in MESSAGE_TABLES:
            if table in tables and "message_id" in _columns(db, table):
                db.execute(
                    f'DELETE FROM "{table}" WHERE message_id IN (SELECT message_id FROM p_purge_messages)'
                )
    if sessions:
        if "sessions" in tables:
            db.execute("DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM p_purge_sessions)")
        for table in SESSION_TABLES:
            if table in tables and "session_id" in _columns(db, table):
                db.execute(
                    f'DELETE FROM "{table}" WHERE session_id IN (SELECT session_id FROM p_purge_sessions)'
                )


def reduce_purge(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Raise the effective cutoff, record the purged ids and delete their rows."""
    raw = ev.obj.get("cutoff")
    cutoff = parse_ts_ns(raw)
    if cutoff is None or not isinstance(raw, str):
        raise InvalidEvent(f"purge.executed without a valid cutoff: {raw!r}")
    db = ctx.db
    if ctx.rebuilding and "messages" in _tables(db):  # rows and indexes a rebuild defers
        prepare_rebuild_reads(db)
    current = _meta_cutoff(db)
    if current is None or cutoff > current[0]:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_KEY, raw))
        effective = cutoff
    else:
        effective = current[0]
    messages, sessions = _purged_sets(db, effective)
    if messages:
        db.executemany(
            "INSERT OR IGNORE INTO p_purge_messages(message_id) VALUES (?)", [(m,) for m in messages]
        )
    if sessions:
        db.executemany(
            "INSERT OR IGNORE INTO p_purge_sessions(session_id) VALUES (?)", [(s,) for s in sessions]
        )
    _delete_rows(db, messages, sessions)
    return None


# --------------------------------------------------------------------------- planning (dry run / counts)


@dataclass
class PurgePlan:
    """What a purge at ``cutoff`` removes (or would remove)."""

    cutoff: int
    messages: int = 0
    sessions: int = 0
    events: int = 0
    files: set[str] = field(default_factory=set)

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        """``{cutoff, dry_run, messages, sessions, events, files_rewritten}`` (SPEC §9.13)."""
        return {
            "cutoff": format_ts(self.cutoff),
            "dry_run": dry_run,
            "messages": self.messages,
            "sessions": self.sessions,
            "events": self.events,
            "files_rewritten": len(self.files),
        }


def plan_purge(db: sqlite3.Connection, cutoff: int) -> PurgePlan:
    """Count what a purge at ``cutoff`` removes that is still present (read-only)."""
    plan = PurgePlan(cutoff)
    current = effective_cutoff(db)
    effective = cutoff if current is None else max(cutoff, current)
    messages, sessions = _purged_sets(db, effective)
    old_messages, old_sessions = _recorded_sets(db)
    pred = purge_predicate(effective, messages | old_messages, sessions | old_sessions)
    tables = _tables(db)
    if "messages" in tables:
        plan.messages = sum(1 for (mid,) in db.execute("SELECT message_id FROM messages") if mid in messages)
    else:
        plan.messages = len(messages - old_messages)
    if "sessions" in tables:
        plan.sessions = sum(1 for (sid,) in db.execute("SELECT session_id FROM sessions") if sid in sessions)
    else:
        plan.sessions = len(sessions - old_sessions)
    names = sorted(PURGEABLE_TYPES)
    marks = ",".join("?" * len(names))
    rows = db.execute(
        f"SELECT line, ts_ns, event_id, file FROM events WHERE type IN ({marks}) AND line IS NOT NULL "
        "AND state != 'tombstoned'",
        names,
    )
    for line, ts_ns, eid, file in rows:
        try:
            obj = json.loads(line)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, dict) and pred(obj, (int(ts_ns), str(eid).encode("utf-8", "surrogatepass"))):
            plan.events += 1
            if file:
                plan.files.add(file)
    return plan


def resolve_cutoff(before: str | None, all_: bool, now: int) -> int:
    """The cutoff (ns, whole microseconds) for ``purge`` params; -32602 on bad input or a future time."""
    if (before is None) == (not all_):
        raise InvalidParams(
            "before" if before is not None else "all",
            "exactly_one",
            "give exactly one of before (a duration, date or timestamp) and all",
        )
    if all_:
        cutoff = now
    else:
        assert before is not None
        try:
            cutoff = parse_point_in_time(before, now=now, mode="before")
        except ValueError as exc:
            raise InvalidParams("before", "invalid", str(exc)) from None
        if cutoff > now:
            raise InvalidParams(
                "before",
                "future",
                f"the cut-off {format_ts(cutoff)} is in the future; purge removes past data only",
            )
    return cutoff // 1000 * 1000


# --------------------------------------------------------------------------- RPC


class PurgeParams(Params):
    """``purge`` params (SPEC §9.13)."""

    before: str | None = None
    all: bool = False
    dry_run: bool = True


async def purge(params: PurgeParams | None, ctx: CallContext) -> dict[str, Any]:
    """Preview (``dry_run``) or execute a purge; counts of what is / would be removed."""
    import trio

    p = params or PurgeParams()
    cutoff = resolve_cutoff(p.before, p.all, time.time_ns())
    store = ctx.kernel.store
    if store is None:
        raise RuntimeError("the event store is not open")

    def preview() -> PurgePlan:
        conn = store.open_reader()
        try:
            return plan_purge(conn, cutoff)
        finally:
            conn.close()

    plan = await trio.to_thread.run_sync(preview)
    if not p.dry_run:
        await ctx.kernel.emit([{"type": PURGE_TYPE, "cutoff": format_ts(cutoff)}], ctx=ctx)
    return plan.to_json(p.dry_run)


# --------------------------------------------------------------------------- hooks


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    register.migrations("purge", MIGRATIONS)
    register(
        EventType(
            PURGE_TYPE,
            reduce_purge,
            model=PurgeExecuted,
            tombstone=TombstoneRule(build_filter=build_purge_filter),
        )
    )


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("purge", purge, params=PurgeParams, auth="admin", transports={"unix"}, deadline_s=300.0)
