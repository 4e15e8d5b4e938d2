"""Shared by the messaging rebuild tests: a store with the messaging plugins, and its tables as rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from events_testtypes import make_paths

from thrum_core.events.store import EventStore
from thrum_core.events.types import EventTypeRegistry
from thrum_core.testing import make_test_pm

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
