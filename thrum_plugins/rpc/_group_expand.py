"""Group lookups and expansion (SPEC §7.4), shared by reducers and queries.

Expansion of a group: members ``agent`` (that agent, when registered),
``role`` (every agent of kind ``agent`` with that role; ``*`` = every such
agent) and ``group`` (the named group, expanded recursively; cycles are
ignored and nesting deeper than :data:`MAX_DEPTH` is not followed).
Tombstoned agents are not in the ``agents`` table, so they are skipped.
Works on any connection (the writer's or a reader).
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "expand_group",
    "group_nests",
    "groups_containing",
    "live_group",
    "table_exists",
]

MAX_DEPTH = 10


_tables: dict[int, tuple[int, frozenset[str]]] = {}


def table_exists(db: sqlite3.Connection, name: str) -> bool:
    """Whether ``name`` is a table of ``db`` (optional plugins' tables may be missing).

    Cached per connection until its ``schema_version`` changes.
    """
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    cached = _tables.get(id(db))
    if cached is None or cached[0] != version:
        names = frozenset(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        _tables[id(db)] = cached = (version, names)
    return name in cached[1]


def live_group(db: sqlite3.Connection, name: str) -> Any:
    """The canonical live group row called ``name`` (``sqlite3.Row`` or tuple), or ``None``."""
    return db.execute(
        "SELECT group_id, name, description, created_at, created_by FROM groups"
        " WHERE name=? AND deleted_k IS NULL AND canonical_id IS NULL ORDER BY create_k LIMIT 1",
        (name,),
    ).fetchone()


def _members(db: sqlite3.Connection, group_id: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT member_type, member_value FROM group_members WHERE group_id=? AND present=1", (group_id,)
        )
    ]


def _role_agents(db: sqlite3.Connection, role: str, has_agents: bool) -> set[str]:
    if not has_agents:
        return set()
    if role == "*":
        return {r[0] for r in db.execute("SELECT agent_id FROM agents WHERE kind='agent'")}
    return {r[0] for r in db.execute("SELECT agent_id FROM agents WHERE kind='agent' AND role=?", (role,))}


def expand_group(db: sqlite3.Connection, name: str) -> set[str]:
    """Agent ids in the expansion of the live group ``name`` (empty when there is none)."""
    has_agents = table_exists(db, "agents")
    out: set[str] = set()
    seen: set[str] = set()

    def walk(group_name: str, depth: int) -> None:
        if group_name in seen or depth > MAX_DEPTH:
            return
        seen.add(group_name)
        row = live_group(db, group_name)
        if row is None:
            return
        for member_type, value in _members(db, row[0]):
            if member_type == "agent":
                if not has_agents or db.execute("SELECT 1 FROM agents WHERE agent_id=?", (value,)).fetchone():
                    out.add(value)
            elif member_type == "role":
                out.update(_role_agents(db, value, has_agents))
            elif member_type == "group":
                walk(value, depth + 1)

    walk(name, 0)
    return out


def group_nests(db: sqlite3.Connection, parent: str, child: str) -> bool:
    """Whether the live group ``parent`` is, or (transitively) contains, the group ``child``."""
    seen: set[str] = set()
    stack = [(parent, 0)]
    while stack:
        name, depth = stack.pop()
        if name == child:
            return True
        if name in seen or depth > MAX_DEPTH:
            continue
        seen.add(name)
        row = live_group(db, name)
        if row is None:
            continue
        stack.extend((value, depth + 1) for mt, value in _members(db, row[0]) if mt == "group")
    return False


def groups_containing(db: sqlite3.Connection, agent_id: str) -> set[str]:
    """Names of the live groups whose expansion contains ``agent_id``."""
    if not table_exists(db, "groups"):
        return set()
    names = [r[0] for r in db.execute("SELECT DISTINCT name FROM groups WHERE deleted_k IS NULL")]
    return {name for name in names if agent_id in expand_group(db, name)}
