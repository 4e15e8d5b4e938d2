"""Shared by the messaging rebuild tests: a store with the messaging plugins, and its tables as rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from events_testtypes import make_paths

from thrum_core.events.store import EventStore
from thrum_core.events.types import EventTypeRegistry
from thrum_core.testing import make_test_pm

T = TypeVar("T")

PLUGINS = ("rpc.agents", "rpc.messages", "rpc.groups")
BASE = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SEC = 1_000_000_000
#: The messaging plugin's tables.
MESSAGE_TABLES = (
    "messages",
    "message_scopes",
    "message_refs",
    "message_recipients",
    "message_reads",
    "message_edits",
    "message_audience",
    "inbox",
    "inbox_counts",
    "star_hours",
)
_COUNTS = ("inbox_counts", "star_hours")


def open_store(root: Path) -> EventStore:
    """An opened store under ``root`` whose registry holds the event types of :data:`PLUGINS`."""
    store = EventStore(make_paths(root), EventTypeRegistry.from_plugins(make_test_pm(PLUGINS)), "d_TEST")
    store.open()
    return store


def live_and_rebuilt(
    root: Path, events: Sequence[Mapping[str, Any]], batch: int, read: Callable[[sqlite3.Connection], T]
) -> tuple[T, T]:
    """``read`` of a store under ``root`` that applied ``events`` live, then of the same store rebuilt.

    Live, the events are written ``batch`` at a time (``source="sync"``), as
    the writer applies what a merge brought.
    """
    store = open_store(root)
    try:
        for start in range(0, len(events), batch):
            store.write_now(list(events[start : start + batch]), source="sync")
        live = read(store.reader())
        store.rebuild()
        return live, read(store.reader())
    finally:
        store.close()


def dump_tables(conn: sqlite3.Connection, tables: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of those ``tables`` that exist, sorted; counts of 0 (the live path leaves them) left out."""
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {
        t: sorted(
            (tuple(r) for r in conn.execute(f"SELECT * FROM {t}") if t not in _COUNTS or r[-1]), key=str
        )
        for t in tables
        if t in present
    }
