"""Who sees a message (SPEC §7.4), as rows of the ``inbox`` table.

Visibility has a static part (author, ``recipients``) and a dynamic part
(mentions of an agent, its role or username; group addresses, evaluated with
the groups and agents *as they are now*, for messages created at or after the
agent's ``registered_at``).  Broadcasts (``star``) are visible by time alone and
are not fanned out (see :mod:`thrum_plugins.rpc._message_schema`).

The ``dyn`` rows of an agent go stale when its role, kind or registration
changes, or when a group's expansion changes.  Triggers on ``agents`` (created
here, because that table belongs to another plugin) and the group reducers
record such agents in ``vis_dirty``; :func:`process_dirty` recomputes them.
It runs inside the writer: at the start of every messaging reducer and, from
the query path, through ``store.run_exclusive`` before reading an agent whose
rows are dirty.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from thrum_core.timefmt import parse_ts_ns
from thrum_plugins.rpc._group_expand import expand_group, groups_containing, table_exists

__all__ = [
    "AgentInfo",
    "Audience",
    "agent_info",
    "agent_keys",
    "audience_of",
    "ensure_agent_watch",
    "insert_viewers",
    "message_viewers",
    "process_dirty",
    "recompute_agent",
]

NEVER = 1 << 62  # "registered at" of an unknown agent: later than every message

_AGENT_WATCH = (
    "CREATE TRIGGER IF NOT EXISTS thrum_vis_agents_ins AFTER INSERT ON agents BEGIN"
    " INSERT OR IGNORE INTO vis_dirty(agent_id) VALUES (NEW.agent_id); END;",
    "CREATE TRIGGER IF NOT EXISTS thrum_vis_agents_upd AFTER UPDATE OF kind, role, registered_at ON agents"
    " WHEN OLD.kind IS NOT NEW.kind OR OLD.role IS NOT NEW.role OR OLD.registered_at IS NOT NEW.registered_at"
    " BEGIN INSERT OR IGNORE INTO vis_dirty(agent_id) VALUES (NEW.agent_id); END;",
    "CREATE TRIGGER IF NOT EXISTS thrum_vis_agents_del AFTER DELETE ON agents BEGIN"
    " INSERT OR IGNORE INTO vis_dirty(agent_id) VALUES (OLD.agent_id); END;",
)

_watched: dict[int, int] = {}


def ensure_agent_watch(db: sqlite3.Connection) -> bool:
    """Create the ``agents`` triggers that feed ``vis_dirty`` if they are missing.

    Cheap when nothing changed: the check is keyed on the connection's
    ``schema_version`` (a rebuild drops ``agents`` and its triggers with it).
    Returns whether the ``agents`` table exists.
    """
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    key = id(db)
    if _watched.get(key) == version:
        return True
    if not table_exists(db, "agents") or not table_exists(db, "vis_dirty"):
        return False
    present = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name LIKE 'thrum_vis_agents_%'"
    ).fetchone()[0]
    if present < len(_AGENT_WATCH):
        for sql in _AGENT_WATCH:
            db.execute(sql)
        # Agents that changed before the triggers existed: recompute each once.
        db.execute("INSERT OR IGNORE INTO vis_dirty(agent_id) SELECT agent_id FROM agents")
    _watched[key] = db.execute("PRAGMA schema_version").fetchone()[0]
    return True


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """The fields of an agent that visibility depends on."""

    agent_id: str
    kind: str
    role: str
    registered_ns: int


def agent_info(db: sqlite3.Connection, agent_id: str) -> AgentInfo | None:
    """The registered agent ``agent_id`` (``None`` when unknown or tombstoned)."""
    if not table_exists(db, "agents"):
        return None
    row = db.execute("SELECT kind, role, registered_at FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
    if row is None:
        return None
    reg = parse_ts_ns(row[2])
    return AgentInfo(agent_id, row[0] or "agent", row[1] or "", NEVER if reg is None else reg)


def agent_keys(info: AgentInfo, groups: Iterable[str]) -> list[str]:
    """The audience keys that make a non-broadcast message visible to the agent."""
    keys = [f"m:{info.agent_id}"]
    if info.kind == "agent" and info.role:
        keys.append(f"m:{info.role}")
    elif info.kind == "user" and info.agent_id.startswith("user:"):
        keys.append(f"m:{info.agent_id[5:]}")
    keys.extend(f"g:{g}" for g in sorted(groups))
    return keys


@dataclass(frozen=True, slots=True)
class Audience:
    """How a message is addressed: broadcast flag and dynamic keys."""

    star: bool
    addressed: bool
    keys: tuple[str, ...]


def audience_of(
    scopes: Sequence[tuple[str, str]], refs: Sequence[tuple[str, str]], recipients: Sequence[str]
) -> Audience:
    """The audience of a message from its scopes, refs and recipients (SPEC §7.3, §7.4).

    A mention of a recipient's own id adds no key: the recipient sees the
    message anyway, and ids never equal roles (SPEC §4), so the key would reach
    nobody else.
    """
    star = False
    keys: list[str] = []
    addressed = bool(recipients)
    listed = set(recipients)
    for typ, value in refs:
        if typ == "mention":
            addressed = True
            if value not in listed:
                keys.append(f"m:{value}")
        elif typ == "group":
            addressed = True
            if value == "everyone":
                star = True
            else:
                keys.append(f"g:{value}")
        elif typ == "broadcast":
            addressed = True
            star = True
    for typ, value in scopes:
        if typ == "group":
            addressed = True
            if value == "everyone":
                star = True
            else:
                keys.append(f"g:{value}")
        elif typ == "broadcast":
            addressed = True
            star = True
    if not addressed:
        star = True
    return Audience(star, addressed, tuple(dict.fromkeys(keys)))


def _key_agents(db: sqlite3.Connection, key: str, has_agents: bool) -> list[tuple[str, str | None]]:
    """``(agent_id, registered_at)`` of the agents a dynamic key reaches right now."""
    kind, _, value = key.partition(":")
    if kind == "g":
        ids = sorted(expand_group(db, value))
        if not has_agents or not ids:
            return [(a, None) for a in ids]
        out: list[tuple[str, str | None]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(
                (r[0], r[1])
                for r in db.execute(
                    f"SELECT agent_id, registered_at FROM agents WHERE agent_id IN ({marks})", chunk
                )
            )
        return out
    if not has_agents:
        return []
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT agent_id, registered_at FROM agents WHERE agent_id=?"
            " OR (kind='agent' AND role=?) OR (kind='user' AND agent_id=?)",
            (value, value, f"user:{value}"),
        )
    ]


def _registered_ns(db: sqlite3.Connection, agent_ids: Iterable[str]) -> dict[str, int]:
    ids = list(agent_ids)
    out: dict[str, int] = {}
    if not ids or not table_exists(db, "agents"):
        return out
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for agent_id, reg in db.execute(
            f"SELECT agent_id, registered_at FROM agents WHERE agent_id IN ({marks})", chunk
        ):
            ns = parse_ts_ns(reg)
            if ns is not None:
                out[agent_id] = ns
    return out


def message_viewers(
    db: sqlite3.Connection,
    *,
    author: str,
    recipients: Sequence[str],
    audience: Audience,
    created_ns: int,
) -> dict[str, list[int]]:
    """``{viewer: [self, rcpt, dyn]}`` for a message, from the projection as it is now.

    Broadcasts get the author's row and rows for recipients that registered
    after the message (or are unknown); everyone else sees them by time.
    """
    viewers: dict[str, list[int]] = {author: [1, 0, 0]}
    if audience.star:
        regs = _registered_ns(db, recipients)
        for r in recipients:
            if regs.get(r, NEVER) > created_ns:
                viewers.setdefault(r, [0, 0, 0])[1] = 1
        return viewers
    for r in recipients:
        viewers.setdefault(r, [0, 0, 0])[1] = 1
    if audience.keys:
        has_agents = table_exists(db, "agents")
        for key in audience.keys:
            for agent_id, reg in _key_agents(db, key, has_agents):
                reg_ns = parse_ts_ns(reg) if reg is not None else None
                if reg_ns is None or reg_ns <= created_ns:
                    viewers.setdefault(agent_id, [0, 0, 0])[2] = 1
    return viewers


def insert_viewers(
    db: sqlite3.Connection,
    message_id: str,
    created_ns: int,
    star: bool,
    deleted: int,
    viewers: Mapping[str, Sequence[int]],
    *,
    with_reads: bool,
) -> None:
    """Insert (or merge into) the ``inbox`` rows of one message."""
    s = 1 if star else 0
    if not with_reads:
        db.executemany(
            "INSERT INTO inbox(viewer, message_id, created_ns, star, self, rcpt, dyn, deleted, read)"
            " VALUES (?,?,?,?,?,?,?,?,0)",
            [(v, message_id, created_ns, s, f[0], f[1], f[2], deleted) for v, f in viewers.items()],
        )
        return
    db.executemany(
        "INSERT INTO inbox(viewer, message_id, created_ns, star, self, rcpt, dyn, deleted, read)"
        " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,"
        " EXISTS(SELECT 1 FROM message_reads WHERE message_id=?2 AND agent_id=?1))"
        " ON CONFLICT(viewer, message_id) DO UPDATE SET"
        " self=excluded.self, rcpt=excluded.rcpt, dyn=excluded.dyn",
        [(v, message_id, created_ns, s, f[0], f[1], f[2], deleted) for v, f in viewers.items()],
    )


def _set_flag(
    db: sqlite3.Connection, viewer: str, rows: Iterable[tuple[str, int, int, int]], flag: str
) -> None:
    """Turn ``flag`` on for (message_id, created_ns, star, deleted) rows of ``viewer``."""
    db.executemany(
        f"INSERT INTO inbox(viewer, message_id, created_ns, star, {flag}, deleted, read)"
        " VALUES (?1,?2,?3,?4,1,?5, EXISTS(SELECT 1 FROM message_reads WHERE message_id=?2 AND agent_id=?1))"
        f" ON CONFLICT(viewer, message_id) DO UPDATE SET {flag}=1",
        [(viewer, mid, ns, star, deleted) for mid, ns, star, deleted in rows],
    )


def _clear_flag(db: sqlite3.Connection, viewer: str, message_ids: Iterable[str], flag: str) -> None:
    ids = [(viewer, m) for m in message_ids]
    db.executemany(f"UPDATE inbox SET {flag}=0 WHERE viewer=? AND message_id=?", ids)
    db.executemany(
        "DELETE FROM inbox WHERE viewer=? AND message_id=? AND self=0 AND rcpt=0 AND dyn=0"
        " AND NOT (star=1 AND read=1)",
        ids,
    )


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def recompute_agent(db: sqlite3.Connection, agent_id: str) -> None:
    """Bring the ``dyn`` rows and the broadcast recipient rows of one agent up to date."""
    info = agent_info(db, agent_id)
    # dynamic visibility of non-broadcast messages
    desired: dict[str, tuple[int, int, int]] = {}
    if info is not None:
        keys = agent_keys(info, groups_containing(db, agent_id))
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for mid, ns, deleted in db.execute(
                f"SELECT a.message_id, a.created_ns, m.deleted FROM message_audience a"
                f" JOIN messages m ON m.message_id = a.message_id"
                f" WHERE a.key IN ({marks}) AND a.created_ns >= ?",
                (*chunk, info.registered_ns),
            ):
                desired[mid] = (ns, 0, deleted)
    current = {r[0] for r in db.execute("SELECT message_id FROM inbox WHERE viewer=? AND dyn=1", (agent_id,))}
    _set_flag(db, agent_id, [(m, *desired[m]) for m in sorted(set(desired) - current)], "dyn")
    _clear_flag(db, agent_id, sorted(current - set(desired)), "dyn")
    # broadcasts addressed to the agent before it registered
    reg = NEVER if info is None else info.registered_ns
    want = {
        r[0]: (r[1], 1, r[2])
        for r in db.execute(
            "SELECT m.message_id, m.created_ns, m.deleted FROM message_recipients r"
            " JOIN messages m ON m.message_id = r.message_id"
            " WHERE r.agent_id=? AND m.star=1 AND m.created_ns < ?",
            (agent_id, reg),
        )
    }
    have = {
        r[0]
        for r in db.execute("SELECT message_id FROM inbox WHERE viewer=? AND star=1 AND rcpt=1", (agent_id,))
    }
    _set_flag(db, agent_id, [(m, *want[m]) for m in sorted(set(want) - have)], "rcpt")
    _clear_flag(db, agent_id, sorted(have - set(want)), "rcpt")


def process_dirty(db: sqlite3.Connection) -> int:
    """Recompute every agent in ``vis_dirty`` and empty it; return how many were processed."""
    ensure_agent_watch(db)
    dirty = [r[0] for r in db.execute("SELECT agent_id FROM vis_dirty")]
    for agent_id in dirty:
        recompute_agent(db, agent_id)
    if dirty:
        db.execute("DELETE FROM vis_dirty")
    return len(dirty)


def is_dirty(db: sqlite3.Connection, agent_id: str) -> bool:
    """Whether the agent's rows wait for :func:`process_dirty` (readers call this)."""
    return db.execute("SELECT 1 FROM vis_dirty WHERE agent_id=?", (agent_id,)).fetchone() is not None


def any_dirty(db: sqlite3.Connection) -> bool:
    """Whether any agent waits for :func:`process_dirty`."""
    return db.execute("SELECT 1 FROM vis_dirty LIMIT 1").fetchone() is not None
