"""Daemon-side state of the agent plugins: presence, local tables, live git contexts.

- :class:`Presence` keeps every local agent's last activity in memory (read
  on every ``agent.list``/``team.list``) and persists it to the local
  ``presence`` table at most every :data:`PRESENCE_FLUSH_S` seconds, at
  ``agent.set-status`` and at shutdown (SPEC §7.4: "at most every 30 s").
- :func:`write_local` runs a function against the writer's connection, inside
  the writer, for the local tables (``presence``, ``local_contexts``,
  ``session_scopes``, ``session_refs``) that no event describes.
- :func:`extract_live` re-reads the git state of worktrees on this host,
  concurrently, at most :data:`LIVE_TIMEOUT_S` each, through the work-context
  helper processes (:mod:`thrum_plugins.rpc._workctx_pool`; started on first
  use, stopped at shutdown).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from thrum_core.timefmt import format_ts, parse_ts_ns

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel

__all__ = [
    "LIVE_TIMEOUT_S",
    "PRESENCE_FLUSH_S",
    "Presence",
    "extract_live",
    "plugin_state",
    "presence",
    "reader",
    "store_git_contexts",
    "write_local",
]

log = logging.getLogger("thrum.agents")

T = TypeVar("T")

PRESENCE_FLUSH_S = 30.0
LIVE_TIMEOUT_S = 5.0
STATE_KEY = "agents"

_GIT_FIELDS = (
    "branch",
    "worktree_path",
    "unmerged_commits",
    "uncommitted_files",
    "changed_files",
    "file_changes",
    "git_updated_at",
)


def plugin_state(kernel: Kernel) -> dict[str, Any]:
    """The agent plugins' shared runtime dict on ``kernel``."""
    return kernel.plugin_state(STATE_KEY)


def reader(kernel: Kernel) -> sqlite3.Connection:
    """A read-only projection connection for the current thread."""
    if kernel.store is None:
        raise RuntimeError("the event store is not open")
    return kernel.store.reader()


async def write_local(kernel: Kernel, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(conn)`` on the writer's connection in one transaction, between writer batches."""
    store = kernel.store
    if store is None:
        raise RuntimeError("the event store is not open")

    def job() -> T:
        conn = store.projection.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return await store.run_exclusive(job)


# ------------------------------------------------------------------------------------------ presence


@dataclass
class _Seen:
    last_seen_ns: int
    session_id: str | None
    agent_status: str | None = None
    agent_status_at: str | None = None


class Presence:
    """Last activity and ``agent.set-status`` of local agents (SPEC §7.4, §9.4)."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self._dirty: set[str] = set()
        self._loaded = False
        self._flushed_ns = 0

    @property
    def loaded(self) -> bool:
        """Whether the ``presence`` table was read."""
        return self._loaded

    def ensure_loaded(self, db: sqlite3.Connection) -> None:
        """Read the ``presence`` table once (the daemon's previous run)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            rows = db.execute(
                "SELECT agent_id, session_id, last_seen_at, agent_status, agent_status_at FROM presence"
            ).fetchall()
        except sqlite3.OperationalError:
            return
        for agent_id, session_id, last_seen_at, status, status_at in rows:
            ns = parse_ts_ns(last_seen_at) or 0
            if agent_id not in self._seen:
                self._seen[agent_id] = _Seen(ns, session_id, status, status_at)

    def touch(self, agent_id: str, session_id: str | None = None, now_ns: int | None = None) -> int:
        """Record activity of ``agent_id`` now; return the instant recorded."""
        now = time.time_ns() if now_ns is None else now_ns
        seen = self._seen.get(agent_id)
        if seen is None:
            self._seen[agent_id] = _Seen(now, session_id)
        else:
            seen.last_seen_ns = max(seen.last_seen_ns, now)
            if session_id is not None:
                seen.session_id = session_id
        self._dirty.add(agent_id)
        return now

    def set_status(self, agent_id: str, status: str, at: str) -> None:
        """Record an ``agent.set-status`` value."""
        seen = self._seen.get(agent_id)
        if seen is None:
            seen = self._seen[agent_id] = _Seen(0, None)
        seen.agent_status = status
        seen.agent_status_at = at
        self._dirty.add(agent_id)

    def forget(self, agent_id: str) -> None:
        """Drop an agent (deleted)."""
        self._seen.pop(agent_id, None)
        self._dirty.add(agent_id)

    def last_seen_ns(self, agent_id: str) -> int | None:
        """The last activity of ``agent_id`` (``None`` when never seen here)."""
        seen = self._seen.get(agent_id)
        return seen.last_seen_ns if seen is not None and seen.last_seen_ns else None

    def agent_status(self, agent_id: str) -> tuple[str | None, str | None]:
        """``(agent_status, agent_status_at)`` of ``agent_id``."""
        seen = self._seen.get(agent_id)
        return (seen.agent_status, seen.agent_status_at) if seen is not None else (None, None)

    def due(self, now_ns: int | None = None) -> bool:
        """Whether dirty rows have waited long enough to be written."""
        now = time.time_ns() if now_ns is None else now_ns
        return bool(self._dirty) and now - self._flushed_ns >= PRESENCE_FLUSH_S * 1e9

    def take_rows(self) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Rows to upsert and agent ids to delete; clears the dirty set."""
        upserts: list[tuple[Any, ...]] = []
        deletes: list[str] = []
        for agent_id in sorted(self._dirty):
            seen = self._seen.get(agent_id)
            if seen is None:
                deletes.append(agent_id)
            else:
                last = format_ts(seen.last_seen_ns) if seen.last_seen_ns else None
                upserts.append((agent_id, seen.session_id, last, seen.agent_status, seen.agent_status_at))
        self._dirty.clear()
        self._flushed_ns = time.time_ns()
        return upserts, deletes


def presence(kernel: Kernel) -> Presence:
    """The kernel's :class:`Presence`, loaded from the database on first use."""
    state = plugin_state(kernel)
    tracker: Presence | None = state.get("presence")
    if tracker is None:
        tracker = state["presence"] = Presence()
    if not tracker.loaded and kernel.store is not None:
        tracker.ensure_loaded(reader(kernel))
    return tracker


async def flush_presence(kernel: Kernel) -> None:
    """Write the dirty presence rows to the ``presence`` table."""
    tracker = presence(kernel)
    upserts, deletes = tracker.take_rows()
    if not upserts and not deletes:
        return

    def write(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO presence(agent_id, session_id, last_seen_at, agent_status, agent_status_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(agent_id) DO UPDATE SET session_id=excluded.session_id,"
            " last_seen_at=excluded.last_seen_at, agent_status=excluded.agent_status,"
            " agent_status_at=excluded.agent_status_at",
            upserts,
        )
        conn.executemany("DELETE FROM presence WHERE agent_id=?", [(a,) for a in deletes])

    await write_local(kernel, write)


async def presence_service(kernel: Kernel) -> None:
    """Persist presence every :data:`PRESENCE_FLUSH_S` seconds (a daemon service)."""
    while True:
        await trio.sleep(PRESENCE_FLUSH_S)
        try:
            await flush_presence(kernel)
        except Exception:
            log.exception("could not persist presence")


# ------------------------------------------------------------------------------------- git contexts


def worktree_on_host(path: str | None) -> bool:
    """Whether ``path`` is an absolute directory that exists on this host."""
    return bool(path) and os.path.isabs(path or "") and os.path.isdir(path or "")


async def extract_live(
    worktrees: Iterable[str], timeout: float = LIVE_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """Extract the git work context of each worktree concurrently (≤ ``timeout`` s each).

    Returns ``{worktree: fields}`` for the extractions that finished in time;
    a worktree that timed out or is not a directory is absent.
    """
    from thrum_plugins.rpc._workctx_pool import shared_pool

    extract = shared_pool().extract
    results: dict[str, dict[str, Any]] = {}

    async def one(path: str) -> None:
        with trio.move_on_after(timeout):
            fields = await trio.to_thread.run_sync(extract, path, abandon_on_cancel=True)
            fields.pop("error", None)
            results[path] = fields

    async with trio.open_nursery() as nursery:
        for path in sorted(set(worktrees)):
            if worktree_on_host(path):
                nursery.start_soon(one, path)
    return results


def _git_row(session_id: str, agent_id: str, fields: Mapping[str, Any]) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in _GIT_FIELDS:
        value = fields.get(name)
        if isinstance(value, list):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        values.append(value)
    return (session_id, agent_id, *values)


async def store_git_contexts(kernel: Kernel, rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Upsert the git fields of ``(session_id, agent_id, fields)`` into ``local_contexts``."""
    prepared = [_git_row(s, a, f) for s, a, f in rows]
    if not prepared:
        return
    cols = ", ".join(_GIT_FIELDS)
    updates = ", ".join(f"{c}=excluded.{c}" for c in _GIT_FIELDS)
    marks = ",".join("?" * len(_GIT_FIELDS))
    sql = (
        f"INSERT INTO local_contexts(session_id, agent_id, {cols}) VALUES (?,?,{marks})"
        f" ON CONFLICT(session_id) DO UPDATE SET agent_id=excluded.agent_id, {updates}"
    )

    def write(conn: sqlite3.Connection) -> None:
        conn.executemany(sql, prepared)

    await write_local(kernel, write)
