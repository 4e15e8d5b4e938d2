"""Projection tables of the messaging plugin (SPEC §7.2) and the derived tables that make inboxes fast.

The SPEC tables (``messages``, ``message_scopes``, ``message_refs``,
``message_recipients``, ``message_reads``, ``message_edits``) hold what the log
says.  Three derived tables, maintained by the reducers and by the triggers
below, answer "what is in agent A's inbox" without evaluating visibility
(SPEC §7.4) row by row:

``inbox``
    One row per (viewer, message) for every message the viewer authored
    (``self``), is a recipient of (``rcpt``), or sees through a mention or group
    address as the projection stands now (``dyn``), plus *reader rows* for
    broadcasts the viewer read.  ``vis`` = ``self OR rcpt OR dyn``.
``inbox_counts``
    How many ``inbox`` rows each viewer has per combination of flags; kept
    exact by triggers, so inbox totals and unread counts are a few lookups.
``star_hours``
    Live (not deleted) broadcast messages per hour.  Broadcasts and legacy
    unaddressed messages (``star = 1``) are visible to every agent registered
    at or before their creation, so they are never fanned out per agent: the
    inbox count of broadcasts is a sum over hours.
``message_audience``
    The dynamic addresses of non-broadcast messages: ``m:<mention value>`` and
    ``g:<group name>`` with the creation instant, to recompute one agent's
    ``dyn`` rows when its role, registration or groups change.
``messages.scopes_json`` / ``refs_json``
    The message's scopes and refs as JSON arrays (sorted like the tables), so
    a page of results is read with one query.
``vis_dirty``
    Agents whose ``dyn`` rows may be stale (filled by triggers on ``agents``
    and by the group reducers); processed inside the writer before the next
    messaging reducer or query.

Every derived row follows the SPEC tables through triggers, so a plugin that
deletes SPEC rows (``agent.cleanup``, ``purge``) keeps them consistent.
"""

from __future__ import annotations

__all__ = [
    "HOUR_NS",
    "MESSAGE_MIGRATION_OWNER",
    "MESSAGE_STEPS",
    "REBUILD_DEFERRED_INDEXES",
    "REBUILD_LATE_INDEXES",
    "TRIGGERS",
    "bulk_rows",
    "drop_deferred_indexes",
    "flush_bulk_rows",
    "prepare_rebuild_reads",
    "rebuilt_messages",
    "restore_deferred_indexes",
    "restore_late_indexes",
    "restore_refs_index",
]

import sqlite3
from collections.abc import Iterable
from typing import Any

MESSAGE_MIGRATION_OWNER = "messages"
HOUR_NS = 3_600_000_000_000

_TABLES = """
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    thread_id TEXT,
    reply_to TEXT,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    create_k TEXT NOT NULL,
    updated_at TEXT,
    updated_ns INTEGER,
    edit_k TEXT,
    edit_count INTEGER NOT NULL DEFAULT 0,
    body_format TEXT NOT NULL DEFAULT 'markdown',
    body_content TEXT NOT NULL DEFAULT '',
    body_structured TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at TEXT,
    delete_reason TEXT,
    delete_k TEXT,
    authored_by TEXT,
    disclosed INTEGER NOT NULL DEFAULT 0,
    addressed INTEGER NOT NULL DEFAULT 1,
    origin_daemon TEXT NOT NULL DEFAULT '',
    star INTEGER NOT NULL DEFAULT 0,
    thread_k TEXT,
    rcpt_count INTEGER NOT NULL DEFAULT 0,
    scopes_json TEXT,
    refs_json TEXT
);
CREATE INDEX messages_created ON messages(created_ns, message_id);
CREATE INDEX messages_author ON messages(agent_id, created_ns, message_id);
CREATE INDEX messages_thread ON messages(thread_id, created_ns) WHERE thread_id IS NOT NULL;
CREATE INDEX messages_star ON messages(created_ns, message_id) WHERE star = 1 AND deleted = 0;
CREATE TABLE message_scopes (
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (message_id, type, value)
) WITHOUT ROWID;
CREATE INDEX message_scopes_tv ON message_scopes(type, value);
CREATE TABLE message_refs (
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (message_id, type, value)
) WITHOUT ROWID;
CREATE INDEX message_refs_tv ON message_refs(type, value);
CREATE TABLE message_recipients (
    message_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (message_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX message_recipients_agent ON message_recipients(agent_id);
CREATE TABLE message_reads (
    message_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    read_at TEXT NOT NULL,
    read_ns INTEGER NOT NULL,
    session_id TEXT,
    event_id TEXT,
    PRIMARY KEY (message_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX message_reads_agent ON message_reads(agent_id);
CREATE TABLE message_edits (
    event_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    edited_at TEXT NOT NULL,
    edited_by TEXT,
    content TEXT,
    structured TEXT,
    k TEXT NOT NULL
);
CREATE INDEX message_edits_message ON message_edits(message_id, k);
CREATE TABLE message_audience (
    key TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (key, created_ns, message_id)
) WITHOUT ROWID;
CREATE INDEX message_audience_message ON message_audience(message_id);
CREATE TABLE inbox (
    viewer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    star INTEGER NOT NULL DEFAULT 0,
    self INTEGER NOT NULL DEFAULT 0,
    rcpt INTEGER NOT NULL DEFAULT 0,
    dyn INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    read INTEGER NOT NULL DEFAULT 0,
    vis INTEGER GENERATED ALWAYS AS (self OR rcpt OR dyn) VIRTUAL,
    PRIMARY KEY (viewer, message_id)
) WITHOUT ROWID;
CREATE INDEX inbox_page ON inbox(viewer, star, created_ns, message_id);
CREATE INDEX inbox_message ON inbox(message_id);
CREATE TABLE inbox_counts (
    viewer TEXT NOT NULL,
    star INTEGER NOT NULL,
    self INTEGER NOT NULL,
    vis INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    read INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (viewer, star, self, vis, deleted, read)
) WITHOUT ROWID;
CREATE TABLE star_hours (
    hour INTEGER PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE vis_dirty (
    agent_id TEXT PRIMARY KEY
);
"""

#: The triggers, by name (the rebuild hooks drop and recreate some of them).
TRIGGERS: dict[str, str] = {
    "inbox_count_ins": """
CREATE TRIGGER inbox_count_ins AFTER INSERT ON inbox BEGIN
    INSERT INTO inbox_counts(viewer, star, self, vis, deleted, read, n)
    VALUES (NEW.viewer, NEW.star, NEW.self, NEW.vis, NEW.deleted, NEW.read, 1)
    ON CONFLICT(viewer, star, self, vis, deleted, read) DO UPDATE SET n = n + 1;
END;
""",
    "inbox_count_del": """
CREATE TRIGGER inbox_count_del AFTER DELETE ON inbox BEGIN
    UPDATE inbox_counts SET n = n - 1
    WHERE viewer = OLD.viewer AND star = OLD.star AND self = OLD.self AND vis = OLD.vis
      AND deleted = OLD.deleted AND read = OLD.read;
END;
""",
    "inbox_count_upd": """
CREATE TRIGGER inbox_count_upd AFTER UPDATE ON inbox BEGIN
    UPDATE inbox_counts SET n = n - 1
    WHERE viewer = OLD.viewer AND star = OLD.star AND self = OLD.self AND vis = OLD.vis
      AND deleted = OLD.deleted AND read = OLD.read;
    INSERT INTO inbox_counts(viewer, star, self, vis, deleted, read, n)
    VALUES (NEW.viewer, NEW.star, NEW.self, NEW.vis, NEW.deleted, NEW.read, 1)
    ON CONFLICT(viewer, star, self, vis, deleted, read) DO UPDATE SET n = n + 1;
END;
""",
    "star_hours_ins": """
CREATE TRIGGER star_hours_ins AFTER INSERT ON messages WHEN NEW.star = 1 AND NEW.deleted = 0 BEGIN
    INSERT INTO star_hours(hour, n) VALUES (NEW.created_ns / 3600000000000, 1)
    ON CONFLICT(hour) DO UPDATE SET n = n + 1;
END;
""",
    "star_hours_del": """
CREATE TRIGGER star_hours_del AFTER DELETE ON messages WHEN OLD.star = 1 AND OLD.deleted = 0 BEGIN
    UPDATE star_hours SET n = n - 1 WHERE hour = OLD.created_ns / 3600000000000;
END;
""",
    "star_hours_upd": """
CREATE TRIGGER star_hours_upd AFTER UPDATE OF star, deleted, created_ns ON messages BEGIN
    UPDATE star_hours SET n = n - 1
    WHERE OLD.star = 1 AND OLD.deleted = 0 AND hour = OLD.created_ns / 3600000000000;
    INSERT INTO star_hours(hour, n) SELECT NEW.created_ns / 3600000000000, 1
    WHERE NEW.star = 1 AND NEW.deleted = 0
    ON CONFLICT(hour) DO UPDATE SET n = n + 1;
END;
""",
    "messages_deleted_flag": """
CREATE TRIGGER messages_deleted_flag AFTER UPDATE OF deleted ON messages WHEN OLD.deleted != NEW.deleted BEGIN
    UPDATE inbox SET deleted = NEW.deleted WHERE message_id = NEW.message_id;
END;
""",
    "messages_gone": """
CREATE TRIGGER messages_gone AFTER DELETE ON messages BEGIN
    DELETE FROM inbox WHERE message_id = OLD.message_id;
    DELETE FROM message_audience WHERE message_id = OLD.message_id;
    DELETE FROM message_scopes WHERE message_id = OLD.message_id;
    DELETE FROM message_refs WHERE message_id = OLD.message_id;
    DELETE FROM message_recipients WHERE message_id = OLD.message_id;
    DELETE FROM message_reads WHERE message_id = OLD.message_id;
    DELETE FROM message_edits WHERE message_id = OLD.message_id;
END;
""",
    "message_reads_ins": """
CREATE TRIGGER message_reads_ins AFTER INSERT ON message_reads BEGIN
    UPDATE inbox SET read = 1 WHERE viewer = NEW.agent_id AND message_id = NEW.message_id;
    INSERT OR IGNORE INTO inbox(viewer, message_id, created_ns, star, deleted, read)
    SELECT NEW.agent_id, message_id, created_ns, 1, deleted, 1 FROM messages
    WHERE message_id = NEW.message_id AND star = 1;
END;
""",
    "message_reads_del": """
CREATE TRIGGER message_reads_del AFTER DELETE ON message_reads BEGIN
    DELETE FROM inbox WHERE viewer = OLD.agent_id AND message_id = OLD.message_id
        AND self = 0 AND rcpt = 0 AND dyn = 0;
    UPDATE inbox SET read = 0 WHERE viewer = OLD.agent_id AND message_id = OLD.message_id;
END;
""",
    "message_recipients_del": """
CREATE TRIGGER message_recipients_del AFTER DELETE ON message_recipients BEGIN
    UPDATE messages SET rcpt_count = rcpt_count - 1 WHERE message_id = OLD.message_id;
    UPDATE inbox SET rcpt = 0 WHERE viewer = OLD.agent_id AND message_id = OLD.message_id;
    DELETE FROM inbox WHERE viewer = OLD.agent_id AND message_id = OLD.message_id
        AND self = 0 AND rcpt = 0 AND dyn = 0 AND NOT (star = 1 AND read = 1);
END;
""",
}

_TRIGGERS = "".join(TRIGGERS.values())

#: Projection migration steps of the ``messages`` owner.
MESSAGE_STEPS: list[str] = [_TABLES + _TRIGGERS]


#: Secondary indexes a full rebuild drops before it applies the log and
#: creates again (one sort each, instead of a B-tree insert per row) after
#: the finish hook derived the inbox.  No reducer of a common event reads
#: them; the rare ones that do (``agent.cleanup``, ``purge``) call
#: :func:`restore_deferred_indexes` first, and the general path of a
#: ``message.create`` (which looks up replies) calls :func:`restore_refs_index`.
#: Statements as in the migration.
REBUILD_DEFERRED_INDEXES: dict[str, str] = {
    line.split()[2]: line
    for line in _TABLES.splitlines()
    if line.startswith("CREATE INDEX ")
    and line.split()[2]
    in (
        "messages_created",
        "messages_author",
        "messages_thread",
        "messages_star",
        "message_scopes_tv",
        "message_refs_tv",
        "message_recipients_agent",
        "message_reads_agent",
    )
}


#: Indexes of ``inbox`` a full rebuild drops at its start and creates after
#: the finish hook filled the table (which it does by primary key only).
REBUILD_LATE_INDEXES: dict[str, str] = {
    line.split()[2]: line
    for line in _TABLES.splitlines()
    if line.startswith("CREATE INDEX ") and line.split()[2] in ("inbox_page", "inbox_message")
}


def _create_missing(db: sqlite3.Connection, statements: Iterable[str]) -> None:
    """Run ``CREATE INDEX`` ``statements`` as no-ops for the indexes that exist."""
    for sql in statements:
        db.execute(sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))


def drop_deferred_indexes(db: sqlite3.Connection) -> None:
    """Drop :data:`REBUILD_DEFERRED_INDEXES` and :data:`REBUILD_LATE_INDEXES` (start of a full rebuild)."""
    for name in (*REBUILD_DEFERRED_INDEXES, *REBUILD_LATE_INDEXES):
        db.execute(f"DROP INDEX IF EXISTS {name}")


def restore_late_indexes(db: sqlite3.Connection) -> None:
    """Create whichever of :data:`REBUILD_LATE_INDEXES` is missing."""
    _create_missing(db, REBUILD_LATE_INDEXES.values())


def restore_refs_index(db: sqlite3.Connection) -> None:
    """Create ``message_refs_tv`` (deferred by a rebuild) if it is missing: replies are looked up by it."""
    _create_missing(db, [REBUILD_DEFERRED_INDEXES["message_refs_tv"]])


def restore_deferred_indexes(db: sqlite3.Connection) -> None:
    """Create whichever of :data:`REBUILD_DEFERRED_INDEXES` is missing (a no-op when none is)."""
    _create_missing(db, REBUILD_DEFERRED_INDEXES.values())


# --------------------------------------------------------------------------- bulk rows
#: Rows of ``message_recipients``, ``message_scopes``, ``message_refs`` and
#: ``message_audience`` a rebuild's ``message.create`` reducer queued, per
#: write connection (``id(db)`` → the connection and its rows by statement),
#: written with one ``executemany`` per statement when :data:`BULK_FLUSH_ROWS`
#: have gathered, before anything reads or deletes those tables during the
#: rebuild (:func:`prepare_rebuild_reads`) and by the finish hook.  No
#: reducer of a common event reads them; the rare ones that do call
#: :func:`prepare_rebuild_reads` first.
_BulkEntry = tuple[sqlite3.Connection, dict[str, list[tuple[Any, ...]]], set[str]]
_BULK: dict[int, _BulkEntry] = {}
#: Queued rows that trigger a flush.
BULK_FLUSH_ROWS = 4096
#: At most this many ids in :func:`rebuilt_messages` (the set is emptied when full).
KNOWN_MESSAGES_MAX = 1 << 16


def _bulk_entry(db: sqlite3.Connection) -> _BulkEntry:
    entry = _BULK.get(id(db))
    if entry is None or entry[0] is not db:
        entry = _BULK[id(db)] = (db, {}, set())
    return entry


def bulk_rows(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The queue of rows (statement → parameter tuples) of ``db``'s rebuild."""
    return _bulk_entry(db)[1]


def rebuilt_messages(db: sqlite3.Connection) -> set[str]:
    """Ids of messages a rebuild of ``db`` inserted and nothing deleted since (a bounded, partial set).

    The rebuild's ``message.create`` reducer adds the messages it inserts
    (the set is emptied when it holds :data:`KNOWN_MESSAGES_MAX`), and
    :func:`prepare_rebuild_reads`, which every reducer that deletes message
    rows calls first, empties it: an id in the set is a stored message, so a
    read receipt of it can be queued (its statement would find the message).
    """
    return _bulk_entry(db)[2]


def flush_bulk_rows(db: sqlite3.Connection) -> None:
    """Write the rows queued for ``db`` (a no-op when none are)."""
    entry = _BULK.get(id(db))
    if entry is None or entry[0] is not db:
        return
    queued = entry[1]
    for sql, rows in queued.items():
        if rows:
            db.executemany(sql, rows)
    queued.clear()


def discard_bulk_rows(db: sqlite3.Connection) -> None:
    """Forget what a rebuild of ``db`` queued (its start: a failed rebuild may have left rows)."""
    entry = _BULK.get(id(db))
    if entry is not None and entry[0] is db:
        del _BULK[id(db)]


def prepare_rebuild_reads(db: sqlite3.Connection) -> None:
    """In a rebuild, before reading or deleting message rows: write queued rows, restore indexes.

    Also forgets :func:`rebuilt_messages` (the caller may delete some).
    """
    flush_bulk_rows(db)
    rebuilt_messages(db).clear()
    restore_deferred_indexes(db)
