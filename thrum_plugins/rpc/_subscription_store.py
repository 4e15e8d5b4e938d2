"""Subscriptions (SPEC §9.7, §10.1): the local ``subscriptions`` table and its in-memory index.

The table survives restarts and rebuilds (it is a *local* table); the index is
what the push notifier reads on every projected message, so matching costs no
SQL.  Ephemeral subscriptions (``connection_id`` set) die with their
connection; all of a session's subscriptions die when the session ends.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from thrum_plugins.rpc._group_expand import table_exists
from thrum_plugins.rpc._message_common import write_local

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel

__all__ = [
    "LOCAL_OWNER",
    "LOCAL_STEPS",
    "Subscription",
    "SubscriptionIndex",
    "forget_in_background",
    "subscription_index",
]

log = logging.getLogger("thrum.subscriptions")

LOCAL_OWNER = "subscriptions"
LOCAL_STEPS = [
    """
    CREATE TABLE IF NOT EXISTS subscriptions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        connection_id TEXT,
        scope_type TEXT,
        scope_value TEXT,
        mention_role TEXT,
        "all" INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS subscriptions_session ON subscriptions(session_id);
    """
]
STATE_KEY = "subscriptions"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription row, plus the agent of its session."""

    id: int
    session_id: str
    agent_id: str
    connection_id: str | None
    scope_type: str | None
    scope_value: str | None
    mention_role: str | None
    all: bool
    created_at: str

    @property
    def filter(self) -> tuple[str | None, str | None, str | None, bool]:
        """What it matches; two subscriptions of a session with the same filter are one."""
        return (self.scope_type, self.scope_value, self.mention_role, self.all)

    def to_json(self) -> dict[str, Any]:
        """The ``subscriptions.list`` item."""
        return {
            "id": self.id,
            "scope_type": self.scope_type,
            "scope_value": self.scope_value,
            "mention_role": self.mention_role,
            "all": self.all,
            "ephemeral": self.connection_id is not None,
            "created_at": self.created_at,
        }


class SubscriptionIndex:
    """Subscriptions by session, lowest id first."""

    def __init__(self) -> None:
        self.by_session: dict[str, list[Subscription]] = {}
        self.loaded = False
        self.watched_connections: set[str] = set()

    def load(self, db: sqlite3.Connection) -> None:
        """Read every subscription (with its session's agent) from the projection."""
        self.by_session.clear()
        has_sessions = table_exists(db, "sessions")
        sql = (
            "SELECT s.id, s.session_id, coalesce(x.agent_id, ''), s.connection_id, s.scope_type,"
            " s.scope_value,"
            ' s.mention_role, s."all", s.created_at FROM subscriptions s LEFT JOIN sessions x'
            " ON x.session_id = s.session_id ORDER BY s.id"
            if has_sessions
            else "SELECT id, session_id, '', connection_id, scope_type, scope_value, mention_role, \"all\","
            " created_at FROM subscriptions ORDER BY id"
        )
        for row in db.execute(sql):
            self.add(
                Subscription(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8])
            )
        self.loaded = True

    def add(self, sub: Subscription) -> None:
        subs = self.by_session.setdefault(sub.session_id, [])
        subs.append(sub)
        subs.sort(key=lambda s: s.id)

    def find(
        self, session_id: str, filter_: tuple[str | None, str | None, str | None, bool]
    ) -> Subscription | None:
        return next((s for s in self.by_session.get(session_id, ()) if s.filter == filter_), None)

    def get(self, sub_id: int) -> Subscription | None:
        return next((s for subs in self.by_session.values() for s in subs if s.id == sub_id), None)

    def for_session(self, session_id: str) -> list[Subscription]:
        return list(self.by_session.get(session_id, ()))

    def remove(self, ids: Iterable[int]) -> list[int]:
        gone = set(ids)
        removed: list[int] = []
        for session_id in list(self.by_session):
            keep = []
            for s in self.by_session[session_id]:
                (removed.append(s.id) if s.id in gone else keep.append(s))
            if keep:
                self.by_session[session_id] = keep
            else:
                del self.by_session[session_id]
        return removed

    def remove_session(self, session_id: str) -> list[int]:
        return [s.id for s in self.by_session.pop(session_id, [])]

    def remove_connection(self, connection_id: str) -> list[int]:
        return self.remove(
            s.id for subs in self.by_session.values() for s in subs if s.connection_id == connection_id
        )

    def __bool__(self) -> bool:
        return bool(self.by_session)


def subscription_index(kernel: Kernel) -> SubscriptionIndex:
    """The kernel's index, loaded from the projection on first use."""
    state = kernel.plugin_state(STATE_KEY)
    index = state.get("index")
    if index is None:
        index = state["index"] = SubscriptionIndex()
    assert isinstance(index, SubscriptionIndex)
    if not index.loaded and kernel.store is not None:
        index.load(kernel.store.reader())
    return index


def delete_rows(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete subscription rows by id (on the writer's connection)."""
    conn.executemany("DELETE FROM subscriptions WHERE id=?", [(i,) for i in ids])


def forget_in_background(kernel: Kernel, ids: list[int]) -> None:
    """Delete rows from a synchronous callback (connection close, observer), without blocking it."""
    if not ids:
        return

    async def run() -> None:
        try:
            await write_local(kernel, lambda conn: delete_rows(conn, ids))
        except Exception:
            log.exception("could not delete subscriptions %s", ids)

    try:
        trio.lowlevel.spawn_system_task(run)
    except RuntimeError:
        log.warning("no trio run to delete subscriptions %s", ids)
