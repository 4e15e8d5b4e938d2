"""A small set of event types used by the event store tests.

- ``test.note`` ``{note_id, author, text}``: inserted into ``p_test_notes``;
  routed to ``messages/<author>.jsonl``; provides ``note:<note_id>``.
- ``test.note.edit`` ``{note_id, author, text}``: pending until its note
  exists; the edit with the greatest sort key sets the text.
- ``test.purge`` ``{cutoff}``: a tombstone; notes created before the greatest
  cutoff are purged with their edits.
- ``test.order`` ``{n}``: records the order reducers ran in (``p_test_order``).
- ``test.local`` local table ``p_test_local`` (survives rebuilds).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from thrum_core.events.projection import Projection
from thrum_core.events.types import (
    ApplyContext,
    EventType,
    EventTypeRegistry,
    InvalidEvent,
    Pending,
    SortKey,
    StoredEvent,
    TombstoneRule,
)
from thrum_core.ids import shard_name
from thrum_core.paths import ThrumPaths
from thrum_core.timefmt import parse_ts_ns

MIGRATIONS = [
    """
    CREATE TABLE p_test_notes (
        note_id TEXT PRIMARY KEY, author TEXT, text TEXT, created_ns INTEGER,
        create_k TEXT, edit_k TEXT NOT NULL DEFAULT '');
    CREATE TABLE p_test_note_edits (event_id TEXT PRIMARY KEY, note_id TEXT, text TEXT, k TEXT);
    CREATE TABLE p_test_purge (id INTEGER PRIMARY KEY CHECK (id = 1), cutoff INTEGER);
    CREATE TABLE p_test_purged (note_id TEXT PRIMARY KEY);
    CREATE TABLE p_test_order (n INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT);
    """,
]
LOCAL_MIGRATIONS = ["CREATE TABLE p_test_local (key TEXT PRIMARY KEY, value TEXT)"]

DAEMON = "d_01KDVDNA000000000000000000"

#: Set ``FAIL["on"] = True`` to make the note reducer raise a SQLite error.
FAIL: dict[str, bool] = {"on": False}


class NoteModel(BaseModel):
    type: str
    note_id: str
    author: str
    text: str


def route_by_author(obj: Mapping[str, Any]) -> str:
    return f"messages/{shard_name(str(obj.get('author') or ''))}.jsonl"


def reduce_note(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    if FAIL["on"]:
        ctx.db.execute("INSERT INTO no_such_table VALUES (1)")
    note_id = ev.obj.get("note_id")
    if not isinstance(note_id, str) or not note_id:
        raise InvalidEvent("note without note_id")
    ctx.db.execute(
        "INSERT OR IGNORE INTO p_test_notes(note_id, author, text, created_ns, create_k) VALUES (?,?,?,?,?)",
        (note_id, ev.obj.get("author"), ev.obj.get("text"), ev.ts_ns, ev.k),
    )
    ctx.provide(f"note:{note_id}")
    return None


def reduce_edit(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    note_id = ev.obj.get("note_id")
    row = ctx.db.execute("SELECT edit_k FROM p_test_notes WHERE note_id=?", (note_id,)).fetchone()
    if row is None:
        return ctx.pending(f"note:{note_id}")
    ctx.db.execute(
        "INSERT OR IGNORE INTO p_test_note_edits(event_id, note_id, text, k) VALUES (?,?,?,?)",
        (ev.event_id, note_id, ev.obj.get("text"), ev.k),
    )
    if ev.k > row["edit_k"]:
        ctx.db.execute(
            "UPDATE p_test_notes SET text=?, edit_k=? WHERE note_id=?", (ev.obj.get("text"), ev.k, note_id)
        )
    return None


def reduce_purge(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    cutoff = parse_ts_ns(ev.obj.get("cutoff"))
    if cutoff is None:
        raise InvalidEvent("bad cutoff")
    ctx.db.execute(
        "INSERT INTO p_test_purge(id, cutoff) VALUES (1, ?) "
        "ON CONFLICT(id) DO UPDATE SET cutoff = MAX(cutoff, excluded.cutoff)",
        (cutoff,),
    )
    (cut,) = ctx.db.execute("SELECT cutoff FROM p_test_purge").fetchone()
    ctx.db.execute(
        "INSERT OR IGNORE INTO p_test_purged SELECT note_id FROM p_test_notes WHERE created_ns < ?", (cut,)
    )
    ctx.db.execute("DELETE FROM p_test_note_edits WHERE note_id IN (SELECT note_id FROM p_test_purged)")
    ctx.db.execute("DELETE FROM p_test_notes WHERE note_id IN (SELECT note_id FROM p_test_purged)")
    return None


def build_purge_filter(db: sqlite3.Connection) -> Callable[[Mapping[str, Any], SortKey], bool] | None:
    row = db.execute("SELECT cutoff FROM p_test_purge").fetchone()
    if row is None:
        return None
    cutoff = row[0]
    purged = {r[0] for r in db.execute("SELECT note_id FROM p_test_purged")}

    def covered(obj: Mapping[str, Any], key: SortKey) -> bool:
        typ = obj.get("type")
        if typ == "test.note":
            return key[0] < cutoff
        if typ == "test.note.edit":
            return obj.get("note_id") in purged
        return False

    return covered


def reduce_order(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute("INSERT INTO p_test_order(k) VALUES (?)", (ev.k,))
    return None


def make_registry(*, extra_steps: list[str] | None = None, with_edit: bool = True) -> EventTypeRegistry:
    """A registry holding the test types (as plugin ``testplug``)."""
    reg = EventTypeRegistry()
    register = reg.bound("testplug")
    register.migrations("testplug", MIGRATIONS + (extra_steps or []))
    register.migrations("testplug", LOCAL_MIGRATIONS, local=True)
    register(
        EventType("test.note", reduce_note, route=route_by_author, model=NoteModel, aliases=("note.old",))
    )
    if with_edit:
        register(EventType("test.note.edit", reduce_edit, route=route_by_author))
    register(EventType("test.purge", reduce_purge, tombstone=TombstoneRule(build_purge_filter)))
    register(EventType("test.order", reduce_order))
    return reg


def make_paths(root: Path) -> ThrumPaths:
    """A real :class:`ThrumPaths` for a throw-away repository at ``root``."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    paths = ThrumPaths.for_root(root)
    paths.var_dir.mkdir(parents=True, exist_ok=True)
    paths.sync_dir.mkdir(parents=True, exist_ok=True)
    return paths


def dump_tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The plugin projection tables, sorted, for comparisons.

    ``p_test_purged`` is left out: it remembers purged notes, which a rebuild
    from the rewritten log never sees.
    """
    out = {}
    for table, cols in (
        ("p_test_notes", "note_id, author, text, created_ns, create_k, edit_k"),
        ("p_test_note_edits", "event_id, note_id, text, k"),
        ("p_test_purge", "cutoff"),
    ):
        out[table] = sorted(tuple(r) for r in conn.execute(f"SELECT {cols} FROM {table}"))
    return out


def note(note_id: str, author: str = "alice", text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "test.note", "note_id": note_id, "author": author, "text": text, **extra}


def edit(note_id: str, author: str = "alice", text: str = "edited", **extra: Any) -> dict[str, Any]:
    return {"type": "test.note.edit", "note_id": note_id, "author": author, "text": text, **extra}


class Observed:
    """Collects what ``on_applied`` receives."""

    def __init__(self) -> None:
        self.batches: list[list[StoredEvent]] = []

    def __call__(self, events: list[StoredEvent]) -> None:
        self.batches.append(list(events))

    @property
    def events(self) -> list[StoredEvent]:
        return [e for b in self.batches for e in b]


def fail_next_apply(monkeypatch: Any, error: Exception) -> None:
    """Make the next ``Projection.apply_rows`` call raise ``error`` (later calls work)."""
    real = Projection.apply_rows
    calls = {"n": 0}

    def failing_once(self: Projection, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Projection, "apply_rows", failing_once)
