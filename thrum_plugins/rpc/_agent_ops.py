"""Operations shared by the agent, session, team and context RPC plugins.

- the SessionWorkContext element an ``agent.update`` carries (full state of
  the session, so a later event replaces the row wholesale, SPEC §7.3);
- refreshing the git work context of local sessions (heartbeat, ``live``
  listContext, who-has) through :mod:`thrum_plugins.rpc._workctx`;
- where an agent's identity file and context files live;
- deleting an agent (``agent.delete`` and ``agent.cleanup --force``).
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thrum_core.names import safe_child
from thrum_core.timefmt import format_ts, now_ns
from thrum_plugins.rpc._agent_events import WORK_CONTEXT_COLUMNS
from thrum_plugins.rpc._agent_queries import work_contexts_for
from thrum_plugins.rpc._agent_state import (
    extract_live,
    presence,
    reader,
    store_git_contexts,
    worktree_on_host,
    write_local,
)

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext

__all__ = [
    "context_element",
    "context_files",
    "delete_agent",
    "hostname",
    "identity_dirs",
    "refresh_contexts",
    "session_worktree",
]


@functools.lru_cache(maxsize=1)
def hostname() -> str:
    """This host's name (as ``agent.register`` records it)."""
    return socket.gethostname()


def now_ts() -> str:
    """Now as a written timestamp."""
    return format_ts(now_ns())


# ----------------------------------------------------------------------------------- work contexts


def context_element(db: sqlite3.Connection, session_id: str, agent_id: str, **changes: Any) -> dict[str, Any]:
    """The SessionWorkContext of a session with ``changes`` applied, empty fields omitted (SPEC §6.2)."""
    merged = work_contexts_for(db, [(session_id, agent_id)]).get(session_id)
    element: dict[str, Any] = {"session_id": session_id}
    for column in WORK_CONTEXT_COLUMNS:
        value = changes[column] if column in changes else (merged or {}).get(column)
        if value in (None, "", []):
            continue
        element[column] = value
    return element


def session_worktree(db: sqlite3.Connection, session_id: str, agent_worktree: str | None) -> str | None:
    """The worktree of a session: recorded at ``session.start`` (local), else the agent's."""
    row = db.execute("SELECT worktree_path FROM local_contexts WHERE session_id=?", (session_id,)).fetchone()
    if row is not None and row[0]:
        return str(row[0])
    return agent_worktree or None


async def refresh_contexts(kernel: Kernel, sessions: Iterable[tuple[str, str, str | None]]) -> int:
    """Re-extract the git context of ``(session_id, agent_id, worktree)`` on this host; return how many."""
    wanted = [(s, a, w) for s, a, w in sessions if w and worktree_on_host(w)]
    if not wanted:
        return 0
    fields = await extract_live(w for _, _, w in wanted if w)
    rows = [(s, a, fields[w]) for s, a, w in wanted if w in fields]
    await store_git_contexts(kernel, rows)
    return len(rows)


def local_open_sessions(
    kernel: Kernel, db: sqlite3.Connection, agent_ids: Iterable[str] | None = None
) -> list[tuple[str, str, str | None]]:
    """``(session_id, agent_id, worktree)`` of open sessions of local agents."""
    sql = (
        "SELECT s.session_id, a.agent_id, a.worktree, a.origin_daemon FROM sessions s"
        " JOIN agents a ON a.agent_id = s.agent_id WHERE s.ended_at IS NULL AND s.start_k IS NOT NULL"
    )
    args: list[Any] = []
    ids = list(agent_ids) if agent_ids is not None else None
    if ids is not None:
        if not ids:
            return []
        sql += f" AND a.agent_id IN ({','.join('?' * len(ids))})"
        args.extend(ids)
    out: list[tuple[str, str, str | None]] = []
    for session_id, agent_id, worktree, origin in db.execute(sql, args):
        if origin and origin != kernel.daemon_id:
            continue
        out.append((session_id, agent_id, session_worktree(db, session_id, worktree)))
    return out


# ---------------------------------------------------------------------------------- files on disk


def identity_dirs(kernel: Kernel, worktree: str | None) -> list[Path]:
    """Directories that may hold an agent's identity file on this host."""
    dirs: list[Path] = []
    if worktree and os.path.isabs(worktree) and os.path.isdir(worktree):
        dirs.append(Path(worktree) / ".thrum" / "identities")
    main = kernel.paths.identities_dir
    if main not in dirs:
        dirs.append(main)
    return dirs


def context_files(kernel: Kernel, name: str) -> dict[str, Path]:
    """``{context, preamble, legacy_preamble}`` paths of an agent; ``ValueError`` for an unsafe name."""
    base = kernel.paths.context_dir
    base.mkdir(parents=True, exist_ok=True)
    return {
        "context": safe_child(base, f"{name}.md"),
        "preamble": safe_child(base, f"{name}.preamble.md"),
        "legacy_preamble": safe_child(base, f"{name}_preamble.md"),
    }


# ---------------------------------------------------------------------------------------- deletion


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def delete_agent(
    kernel: Kernel, ctx: CallContext, agent_id: str, *, method: str, reason: str
) -> dict[str, Any]:
    """Emit ``agent.cleanup`` for ``agent_id`` and remove its identity file and context files."""
    from thrum_cli.identity import remove_identity_file

    db = reader(kernel)
    row = db.execute("SELECT worktree, origin_daemon FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
    worktree = row["worktree"] if row is not None else None
    local = row is not None and (not row["origin_daemon"] or row["origin_daemon"] == kernel.daemon_id)
    sessions = [r[0] for r in db.execute("SELECT session_id FROM sessions WHERE agent_id=?", (agent_id,))]
    before = db.execute("SELECT COUNT(*) FROM events WHERE state='tombstoned'").fetchone()[0]

    await kernel.emit(
        [{"type": "agent.cleanup", "agent_id": agent_id, "reason": reason, "method": method}], ctx=ctx
    )

    after = reader(kernel).execute("SELECT COUNT(*) FROM events WHERE state='tombstoned'").fetchone()[0]
    identity_removed = False
    if local or worktree_on_host(worktree):
        for directory in identity_dirs(kernel, worktree):
            try:
                identity_removed = remove_identity_file(directory, agent_id) or identity_removed
            except ValueError:
                pass
    context_removed = 0
    try:
        files = context_files(kernel, agent_id)
    except ValueError:
        files = {}
    for path in files.values():
        context_removed += _remove(path)

    for conn in list(kernel.connections.values()):
        if conn.session_id in sessions:
            conn.session_id = None
    presence(kernel).forget(agent_id)

    def drop_local(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM local_contexts WHERE agent_id=?", (agent_id,))
        for table in ("session_scopes", "session_refs"):
            conn.executemany(f"DELETE FROM {table} WHERE session_id=?", [(s,) for s in sessions])

    await write_local(kernel, drop_local)
    return {
        "agent_id": agent_id,
        "deleted": True,
        "identity_file_removed": identity_removed,
        "context_files_removed": context_removed,
        "lines_removed": max(0, int(after) - int(before)),
    }


def tombstoned(db: sqlite3.Connection, agent_id: str) -> bool:
    """Whether ``agent_id`` has an ``agent.cleanup`` tombstone."""
    return db.execute("SELECT 1 FROM agent_tombstones WHERE agent_id=?", (agent_id,)).fetchone() is not None


def as_mapping(row: sqlite3.Row | None) -> Mapping[str, Any] | None:
    """A ``sqlite3.Row`` as a dict (``None`` stays ``None``)."""
    return dict(row) if row is not None else None
