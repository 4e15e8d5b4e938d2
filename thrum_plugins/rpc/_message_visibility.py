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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thrum_core.timefmt import parse_ts_ns
from thrum_plugins.rpc._group_expand import expand_group, groups_containing, table_exists
from thrum_plugins.rpc._message_schema import TRIGGERS

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
    "rebuild_finish",
    "rebuild_start",
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
_WATCH_MEMO = "messages.agent_watch"


def ensure_agent_watch(db: sqlite3.Connection, memo: dict[str, Any] | None = None) -> bool:
    """Create the ``agents`` triggers that feed ``vis_dirty`` if they are missing.

    Cheap when nothing changed: the check is keyed on the connection's
    ``schema_version`` (a rebuild drops ``agents`` and its triggers with it),
    and a reducer passes its ``ctx.memo`` to skip even that within an ingest.
    Returns whether the ``agents`` table exists.
    """
    if memo is not None:
        known = memo.get(_WATCH_MEMO)
        if known is not None:
            return bool(known)
        exists = ensure_agent_watch(db)
        memo[_WATCH_MEMO] = exists
        return exists
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
    return AgentInfo(agent_id, row[0] or "agent", row[1] or "", _reg_ns(row[2]))


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
    """Registration instants (:func:`_reg_ns`) of those of ``agent_ids`` that are registered."""
    ids = list(agent_ids)
    out: dict[str, int] = {}
    if not ids or not table_exists(db, "agents"):
        return out
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        out.update(
            (agent_id, _reg_ns(reg))
            for agent_id, reg in db.execute(
                f"SELECT agent_id, registered_at FROM agents WHERE agent_id IN ({marks})", chunk
            )
        )
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


def recompute_agent(
    db: sqlite3.Connection,
    agent_id: str,
    groups_of: Mapping[str, set[str]] | None = None,
    *,
    fresh: bool = False,
    broadcasts: bool = True,
) -> None:
    """Bring the ``dyn`` rows and the broadcast recipient rows of one agent up to date.

    ``groups_of`` (from :func:`_groups_by_agent`) spares the group expansions
    when many agents are recomputed together.  ``fresh``: the agent has no
    ``dyn`` row yet (:func:`rebuild_finish` of a registered agent), so the
    agent's current rows are not read.  ``broadcasts=False`` leaves its
    recipient rows of broadcasts alone (:func:`rebuild_finish` derives them).
    """
    info = agent_info(db, agent_id)
    # dynamic visibility of non-broadcast messages
    desired: dict[str, tuple[int, int, int]] = {}
    if info is not None:
        groups = groups_containing(db, agent_id) if groups_of is None else groups_of.get(agent_id, set())
        keys = agent_keys(info, groups)
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for mid, ns, deleted in db.execute(
                f"SELECT a.message_id, a.created_ns, m.deleted FROM message_audience a"
                f" JOIN messages m ON m.message_id = a.message_id"
                f" WHERE a.key IN ({marks}) AND a.created_ns >= ?",
                (*chunk, info.registered_ns),
            ):
                desired[mid] = (ns, 0, deleted)
    current: set[str] = (
        set()
        if fresh
        else {r[0] for r in db.execute("SELECT message_id FROM inbox WHERE viewer=? AND dyn=1", (agent_id,))}
    )
    _set_flag(db, agent_id, [(m, *desired[m]) for m in sorted(set(desired) - current)], "dyn")
    _clear_flag(db, agent_id, sorted(current - set(desired)), "dyn")
    if not broadcasts:
        return
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
    have: set[str] = (
        set()
        if fresh
        else {
            r[0]
            for r in db.execute(
                "SELECT message_id FROM inbox WHERE viewer=? AND star=1 AND rcpt=1", (agent_id,)
            )
        }
    )
    _set_flag(db, agent_id, [(m, *want[m]) for m in sorted(set(want) - have)], "rcpt")
    _clear_flag(db, agent_id, sorted(have - set(want)), "rcpt")


def process_dirty(
    db: sqlite3.Connection,
    memo: dict[str, Any] | None = None,
    *,
    fresh: bool = False,
    broadcasts: bool = True,
) -> int:
    """Recompute every agent in ``vis_dirty`` and empty it; return how many were processed.

    ``fresh`` and ``broadcasts``: see :func:`recompute_agent` (every agent in
    ``vis_dirty`` must be in that state).
    """
    ensure_agent_watch(db, memo)
    dirty = [r[0] for r in db.execute("SELECT agent_id FROM vis_dirty")]
    groups_of = _groups_by_agent(db) if len(dirty) > 1 else None
    for agent_id in dirty:
        recompute_agent(db, agent_id, groups_of, fresh=fresh, broadcasts=broadcasts)
    if dirty:
        db.execute("DELETE FROM vis_dirty")
    return len(dirty)


def _groups_by_agent(db: sqlite3.Connection) -> dict[str, set[str]]:
    """:func:`groups_containing` of every agent at once (each live group expanded once)."""
    out: dict[str, set[str]] = {}
    if not table_exists(db, "groups"):
        return out
    for (name,) in db.execute("SELECT DISTINCT name FROM groups WHERE deleted_k IS NULL").fetchall():
        for agent_id in expand_group(db, name):
            out.setdefault(agent_id, set()).add(name)
    return out


def is_dirty(db: sqlite3.Connection, agent_id: str) -> bool:
    """Whether the agent's rows wait for :func:`process_dirty` (readers call this)."""
    return db.execute("SELECT 1 FROM vis_dirty WHERE agent_id=?", (agent_id,)).fetchone() is not None


def any_dirty(db: sqlite3.Connection) -> bool:
    """Whether any agent waits for :func:`process_dirty`."""
    return db.execute("SELECT 1 FROM vis_dirty LIMIT 1").fetchone() is not None


# --------------------------------------------------------------------------- rebuild

#: Triggers taken down while a rebuild applies the log: the reducers then skip
#: the inbox (``ctx.rebuilding``) and :func:`rebuild_finish` computes every
#: derived row once, with set-based statements.
_REBUILD_DROPPED = ("star_hours_ins", "message_reads_ins")
#: Triggers that count ``inbox`` rows, down while the inbox is filled in bulk.
_COUNT_TRIGGERS = ("inbox_count_ins", "inbox_count_upd", "inbox_count_del")
#: Registration instants of the agents, for :func:`rebuild_finish` (a temporary table).
_REGISTERED = "rebuild_registered"

#: The ``inbox`` rows of every message from its author, recipients and readers,
#: in one pass sorted by the primary key (filled like an index, not probed
#: row by row): the author's row (``self``); a recipient's row (``rcpt``) of a
#: non-broadcast, or of a broadcast the recipient is not registered for at
#: its creation (an unknown agent never is); a reader's row of a broadcast;
#: ``read`` for whichever of those the viewer read.  A read of another
#: message gives no row of its own (a ``dyn`` row, made afterwards, reads it).
_FILL_INBOX = (
    "INSERT INTO inbox(viewer, message_id, created_ns, star, self, rcpt, dyn, deleted, read)"
    " SELECT viewer, message_id, created_ns, star, max(self), max(rcpt), 0, deleted, max(rd) FROM ("
    " SELECT agent_id AS viewer, message_id, created_ns, star, 1 AS self, 0 AS rcpt, deleted, 0 AS rd"
    " FROM messages"
    " UNION ALL"
    " SELECT r.agent_id, m.message_id, m.created_ns, m.star, 0, 1, m.deleted, 0"
    " FROM message_recipients r JOIN messages m ON m.message_id = r.message_id"
    f" LEFT JOIN temp.{_REGISTERED} g ON g.agent_id = r.agent_id"
    " WHERE m.star = 0 OR g.reg_ns IS NULL OR m.created_ns < g.reg_ns"
    " UNION ALL"
    " SELECT r.agent_id, m.message_id, m.created_ns, m.star, 0, 0, m.deleted, 1"
    " FROM message_reads r JOIN messages m ON m.message_id = r.message_id"
    ") GROUP BY viewer, message_id HAVING max(self) OR max(rcpt) OR star ORDER BY viewer, message_id"
)
#: ``inbox_counts`` row flags as one letter per inbox row (``A`` + a 5-bit code;
#: ``a`` = some flag is not 0 or 1), concatenated per viewer: the viewers come
#: in primary-key order, so nothing is sorted (see :func:`_count_inbox`).
_FLAG_LETTERS = (
    "SELECT viewer, group_concat(char(CASE WHEN star IN (0,1) AND self IN (0,1) AND vis IN (0,1)"
    " AND deleted IN (0,1) AND read IN (0,1) THEN 65 + star * 16 + self * 8 + vis * 4 + deleted * 2 + read"
    " ELSE 97 END), '') FROM inbox GROUP BY viewer"
)
_COUNT_INBOX = (
    "INSERT INTO inbox_counts(viewer, star, self, vis, deleted, read, n)"
    " SELECT viewer, star, self, vis, deleted, read, count(*) FROM inbox"
    " GROUP BY viewer, star, self, vis, deleted, read"
)


def rebuild_start(db: sqlite3.Connection) -> None:
    """Before a rebuild applies the log: drop the triggers :func:`rebuild_finish` makes up for."""
    for name in _REBUILD_DROPPED:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")


def rebuild_finish(db: sqlite3.Connection) -> None:
    """After a rebuild applied the log: derive ``inbox``, its counts and ``star_hours``.

    Gives the rows the live path leaves (every reducer maintaining them event
    by event): an inbox row per author, recipient (:data:`_FILL_INBOX`),
    dynamic viewer (through :func:`recompute_agent` of every agent) and
    reader of a broadcast, with ``read`` and ``deleted`` as they stand; then
    the counts.  Recreates the triggers :func:`rebuild_start` dropped.
    """
    for name in _COUNT_TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
    db.execute("DELETE FROM inbox")
    db.execute("DELETE FROM inbox_counts")
    has_agents = table_exists(db, "agents")
    db.execute(f"DROP TABLE IF EXISTS temp.{_REGISTERED}")
    db.execute(f"CREATE TEMP TABLE {_REGISTERED}(agent_id TEXT PRIMARY KEY, reg_ns INTEGER NOT NULL)")
    try:
        if has_agents:
            db.executemany(
                f"INSERT INTO temp.{_REGISTERED}(agent_id, reg_ns) VALUES (?,?)",
                [(a, _reg_ns(reg)) for a, reg in db.execute("SELECT agent_id, registered_at FROM agents")],
            )
        db.execute(_FILL_INBOX)
    finally:
        db.execute(f"DROP TABLE IF EXISTS temp.{_REGISTERED}")
    if has_agents:
        ensure_agent_watch(db)
        # Every registered agent is recomputed, and so far none has a dyn row.
        db.execute("DELETE FROM vis_dirty")
        db.execute("INSERT INTO vis_dirty(agent_id) SELECT agent_id FROM agents")
        process_dirty(db, fresh=True, broadcasts=False)
    else:
        _dyn_without_agents(db)
    _count_inbox(db)
    db.execute("DELETE FROM star_hours")
    db.execute(
        "INSERT INTO star_hours(hour, n) SELECT created_ns / 3600000000000, count(*) FROM messages"
        " WHERE star = 1 AND deleted = 0 GROUP BY created_ns / 3600000000000"
    )
    for name in (*_COUNT_TRIGGERS, *_REBUILD_DROPPED):
        db.execute(TRIGGERS[name])


def _reg_ns(registered_at: Any) -> int:
    """The instant an agent registered (:data:`NEVER` when unreadable)."""
    ns = parse_ts_ns(registered_at)
    return NEVER if ns is None else ns


def _count_inbox(db: sqlite3.Connection) -> None:
    """Fill ``inbox_counts`` from ``inbox`` (empty), as ``GROUP BY viewer, star, self, vis, deleted, read``.

    That statement sorts every inbox row; :data:`_FLAG_LETTERS` reads them in
    primary-key order and the letters of each viewer are counted here.  Flags
    other than 0 and 1 (which no writer leaves) fall back to the statement.
    """
    rows: list[tuple[str, int, int, int, int, int, int]] = []
    for viewer, letters in db.execute(_FLAG_LETTERS):
        for letter, n in Counter(letters).items():
            code = ord(letter) - 65
            if not 0 <= code < 32:
                db.execute(_COUNT_INBOX)
                return
            rows.append((viewer, code >> 4, code >> 3 & 1, code >> 2 & 1, code >> 1 & 1, code & 1, n))
    db.executemany(
        "INSERT INTO inbox_counts(viewer, star, self, vis, deleted, read, n) VALUES (?,?,?,?,?,?,?)", rows
    )


def _dyn_without_agents(db: sqlite3.Connection) -> None:
    """The dynamic viewers of every addressed message when no ``agents`` table exists."""
    rows = db.execute(
        "SELECT m.message_id, m.agent_id, m.created_ns, m.deleted FROM messages m"
        " WHERE m.star = 0 AND EXISTS (SELECT 1 FROM message_audience a WHERE a.message_id = m.message_id)"
    ).fetchall()
    for message_id, author, created_ns, deleted in rows:
        keys = tuple(
            r[0] for r in db.execute("SELECT key FROM message_audience WHERE message_id=?", (message_id,))
        )
        recipients = [
            r[0]
            for r in db.execute("SELECT agent_id FROM message_recipients WHERE message_id=?", (message_id,))
        ]
        viewers = message_viewers(
            db,
            author=author,
            recipients=recipients,
            audience=Audience(False, True, keys),
            created_ns=created_ns,
        )
        insert_viewers(db, message_id, created_ns, False, deleted, viewers, with_reads=True)
