"""Group event types, their tables and reducers (SPEC §6.2, §7.2, §7.3).

``group.create`` / ``.delete`` / ``.member.add`` / ``.member.remove`` are
written by thrum; ``group.update`` is read-only (Go wrote it).  Two live groups
with the same name (created concurrently on two clones) merge: the one with
the smaller ``create_k`` is canonical, the other's ``canonical_id`` points to
it, and member events and deletes naming either id apply to the canonical
group.

A membership change can change which agents see messages addressed to the
group (SPEC §7.4), so the reducers mark the agents whose expansion changed in
``vis_dirty`` (see :mod:`thrum_plugins.rpc._message_visibility`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from thrum_core.events.types import (
    ApplyContext,
    EventType,
    EventTypeRegistrar,
    InvalidEvent,
    Pending,
    StoredEvent,
)
from thrum_core.ids import shard_name
from thrum_core.timefmt import format_ts
from thrum_plugins.rpc._group_expand import expand_group, table_exists

__all__ = [
    "GROUP_MIGRATION_OWNER",
    "GROUP_STEPS",
    "MEMBER_TYPES",
    "register_group_event_types",
]

GROUP_MIGRATION_OWNER = "groups"
MEMBER_TYPES = ("agent", "role", "group")

GROUP_STEPS: list[str] = [
    """
    CREATE TABLE groups (
        group_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT,
        created_at TEXT,
        created_by TEXT,
        create_k TEXT NOT NULL,
        update_k TEXT,
        deleted_k TEXT,
        deleted_at TEXT,
        deleted_by TEXT,
        canonical_id TEXT
    );
    CREATE INDEX groups_name ON groups(name, create_k);
    CREATE TABLE group_members (
        group_id TEXT NOT NULL,
        member_type TEXT NOT NULL,
        member_value TEXT NOT NULL,
        present INTEGER NOT NULL,
        k TEXT NOT NULL,
        added_at TEXT,
        added_by TEXT,
        PRIMARY KEY (group_id, member_type, member_value)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_value ON group_members(member_type, member_value);
    """
]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    timestamp: str
    event_id: str
    v: int
    origin_daemon: str


class GroupCreateEvent(_Envelope):
    """A locally written ``group.create``."""

    group_id: str
    name: str
    description: str | None = None
    created_by: str


class GroupDeleteEvent(_Envelope):
    """A locally written ``group.delete``."""

    group_id: str
    name: str
    deleted_by: str


class GroupMemberAddEvent(_Envelope):
    """A locally written ``group.member.add``."""

    group_id: str
    member_type: str
    member_value: str
    added_by: str


class GroupMemberRemoveEvent(_Envelope):
    """A locally written ``group.member.remove``."""

    group_id: str
    member_type: str
    member_value: str
    removed_by: str


def _route(actor_key: str) -> Any:
    def route(obj: Mapping[str, Any]) -> str:
        actor = obj.get(actor_key)
        return f"messages/{shard_name(actor if isinstance(actor, str) else '')}.jsonl"

    return route


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _require(ev: StoredEvent, key: str) -> str:
    value = ev.obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{ev.type} without {key}")
    return value


def _mark_dirty(db: sqlite3.Connection, agents: set[str]) -> None:
    if agents and table_exists(db, "vis_dirty"):
        db.executemany("INSERT OR IGNORE INTO vis_dirty(agent_id) VALUES (?)", [(a,) for a in agents])


def _expansion(db: sqlite3.Connection, name: str) -> set[str]:
    return expand_group(db, name)


def _watch(ctx: ApplyContext, *names: str) -> set[str] | None:
    """The agents of the groups ``names`` before a change, to mark the changed ones dirty after it.

    ``None`` during a full rebuild: its finish hook (messaging's
    ``rebuild_finish``) recomputes every agent's visibility anyway.
    """
    if ctx.rebuilding:
        return None
    out: set[str] = set()
    for name in names:
        out |= _expansion(ctx.db, name)
    return out


def _recanonicalize(db: sqlite3.Connection, name: str) -> None:
    """Make the live group of ``name`` with the smallest ``create_k`` canonical; fold the others in."""
    rows = db.execute(
        "SELECT group_id FROM groups WHERE name=? AND deleted_k IS NULL ORDER BY create_k, group_id", (name,)
    ).fetchall()
    if not rows:
        return
    canonical = rows[0][0]
    db.execute("UPDATE groups SET canonical_id=NULL WHERE group_id=?", (canonical,))
    for (other,) in rows[1:]:
        db.execute("UPDATE groups SET canonical_id=? WHERE group_id=?", (canonical, other))
        for mt, mv, present, k, added_at, added_by in db.execute(
            "SELECT member_type, member_value, present, k, added_at, added_by FROM group_members"
            " WHERE group_id=?",
            (other,),
        ).fetchall():
            _upsert_member(db, canonical, mt, mv, present, k, added_at, added_by)
        db.execute("DELETE FROM group_members WHERE group_id=?", (other,))


def _upsert_member(
    db: sqlite3.Connection,
    group_id: str,
    member_type: str,
    member_value: str,
    present: int,
    k: str,
    added_at: str | None,
    added_by: str | None,
) -> None:
    row = db.execute(
        "SELECT k FROM group_members WHERE group_id=? AND member_type=? AND member_value=?",
        (group_id, member_type, member_value),
    ).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO group_members(group_id, member_type, member_value, present, k, added_at, added_by)"
            " VALUES (?,?,?,?,?,?,?)",
            (group_id, member_type, member_value, present, k, added_at, added_by),
        )
    elif k > row[0]:
        if present:
            db.execute(
                "UPDATE group_members SET present=1, k=?, added_at=?, added_by=?"
                " WHERE group_id=? AND member_type=? AND member_value=?",
                (k, added_at, added_by, group_id, member_type, member_value),
            )
        else:
            db.execute(
                "UPDATE group_members SET present=0, k=?"
                " WHERE group_id=? AND member_type=? AND member_value=?",
                (k, group_id, member_type, member_value),
            )


def _resolve(db: sqlite3.Connection, group_id: str) -> tuple[str, str, str | None] | None:
    """``(canonical group_id, name, deleted_k)`` of the group ``group_id`` names, or ``None`` if unknown."""
    row = db.execute(
        "SELECT name, deleted_k, canonical_id FROM groups WHERE group_id=?", (group_id,)
    ).fetchone()
    if row is None:
        return None
    name, deleted_k, canonical = row[0], row[1], row[2]
    if canonical:
        crow = db.execute("SELECT name, deleted_k FROM groups WHERE group_id=?", (canonical,)).fetchone()
        if crow is not None:
            return canonical, crow[0], crow[1]
    return group_id, name, deleted_k


def reduce_group_create(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Insert the group (the smallest ``create_k`` wins for a repeated id) and merge same-name groups."""
    o = ev.obj
    group_id = _require(ev, "group_id")
    name = _require(ev, "name")
    db = ctx.db
    row = db.execute("SELECT create_k, name FROM groups WHERE group_id=?", (group_id,)).fetchone()
    before = _watch(ctx, name)
    if row is None:
        db.execute(
            "INSERT INTO groups(group_id, name, description, created_at, created_by, create_k)"
            " VALUES (?,?,?,?,?,?)",
            (
                group_id,
                name,
                _text(o.get("description")),
                format_ts(ev.ts_ns),
                _text(o.get("created_by")),
                ev.k,
            ),
        )
    elif ev.k < row[0]:
        db.execute(
            "UPDATE groups SET name=?, description=?, created_at=?, created_by=?, create_k=?"
            " WHERE group_id=?",
            (
                name,
                _text(o.get("description")),
                format_ts(ev.ts_ns),
                _text(o.get("created_by")),
                ev.k,
                group_id,
            ),
        )
    else:
        return None
    _recanonicalize(db, name)
    if before is not None:
        _mark_dirty(db, before | _expansion(db, name))
    ctx.provide(f"group:{group_id}")
    return None


def reduce_group_delete(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Mark the (canonical) group deleted, drop its members, free its name."""
    group_id = _require(ev, "group_id")
    db = ctx.db
    resolved = _resolve(db, group_id)
    if resolved is None:
        return ctx.pending(f"group:{group_id}")
    target, name, deleted_k = resolved
    if deleted_k is not None and deleted_k <= ev.k:
        return None
    before = _watch(ctx, name)
    db.execute(
        "UPDATE groups SET deleted_k=?, deleted_at=?, deleted_by=? WHERE group_id=? OR canonical_id=?",
        (ev.k, format_ts(ev.ts_ns), _text(ev.obj.get("deleted_by")), target, target),
    )
    db.execute("DELETE FROM group_members WHERE group_id=?", (target,))
    _recanonicalize(db, name)
    if before is not None:
        _mark_dirty(db, before | _expansion(db, name))
    return None


def _reduce_member(ctx: ApplyContext, ev: StoredEvent, present: int) -> Pending | None:
    o = ev.obj
    group_id = _require(ev, "group_id")
    member_type = _require(ev, "member_type")
    member_value = _require(ev, "member_value")
    db = ctx.db
    resolved = _resolve(db, group_id)
    if resolved is None:
        return ctx.pending(f"group:{group_id}")
    target, name, deleted_k = resolved
    if deleted_k is not None:
        return None
    before = _watch(ctx, name)
    actor = _text(o.get("added_by") if present else o.get("removed_by"))
    _upsert_member(db, target, member_type, member_value, present, ev.k, format_ts(ev.ts_ns), actor)
    if before is not None:
        _mark_dirty(db, before ^ _expansion(db, name))
    return None


def reduce_member_add(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Add (or re-add) a member when this event is newer than the member's last change."""
    return _reduce_member(ctx, ev, 1)


def reduce_member_remove(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Remove a member when this event is newer than the member's last change."""
    return _reduce_member(ctx, ev, 0)


def reduce_group_update(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Read-only Go event: name/description when newer than the last update."""
    group_id = _require(ev, "group_id")
    fields = ev.obj.get("fields")
    if not isinstance(fields, Mapping):
        raise InvalidEvent("group.update without fields")
    db = ctx.db
    row = db.execute("SELECT update_k, name FROM groups WHERE group_id=?", (group_id,)).fetchone()
    if row is None:
        return ctx.pending(f"group:{group_id}")
    if row[0] is not None and ev.k <= row[0]:
        return None
    old_name = row[1]
    new_name = _text(fields.get("name")) or old_name
    description = fields.get("description")
    before = _watch(ctx, old_name, new_name)
    if isinstance(description, str):
        db.execute(
            "UPDATE groups SET name=?, description=?, update_k=? WHERE group_id=?",
            (new_name, description, ev.k, group_id),
        )
    else:
        db.execute("UPDATE groups SET name=?, update_k=? WHERE group_id=?", (new_name, ev.k, group_id))
    if new_name != old_name:
        _recanonicalize(db, old_name)
        _recanonicalize(db, new_name)
    if before is not None:
        _mark_dirty(db, before | _expansion(db, old_name) | _expansion(db, new_name))
    return None


def register_group_event_types(register: EventTypeRegistrar) -> None:
    """Register the group tables and event types (from ``thrum_register_event_types``)."""
    register.migrations(GROUP_MIGRATION_OWNER, GROUP_STEPS)
    register(
        EventType("group.create", reduce_group_create, route=_route("created_by"), model=GroupCreateEvent)
    )
    register(
        EventType("group.delete", reduce_group_delete, route=_route("deleted_by"), model=GroupDeleteEvent)
    )
    register(
        EventType("group.member.add", reduce_member_add, route=_route("added_by"), model=GroupMemberAddEvent)
    )
    register(
        EventType(
            "group.member.remove",
            reduce_member_remove,
            route=_route("removed_by"),
            model=GroupMemberRemoveEvent,
        )
    )
    register(EventType("group.update", reduce_group_update, route=_route("updated_by")))
