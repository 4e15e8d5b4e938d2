"""The call point ``thrum init`` uses for Go-era data (SPEC §15.5 step 6, §6.8).

:func:`migrate_legacy_data` finds legacy files in the thrum dir.  With none it
returns ``None`` (nothing to do, ``migrated: null``).  The import itself
belongs to the event-store work (``thrum migrate``); until it is wired in
here, found sources are reported as pending so the user is told to run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thrum_core.paths import ThrumPaths

__all__ = ["find_legacy_sources", "migrate_legacy_data"]


def find_legacy_sources(thrum_dir: Path) -> list[Path]:
    """Legacy Go data under ``thrum_dir`` (SPEC §6.8), sorted; empty when there is none.

    ``events.jsonl``, ``messages/*.jsonl``, ``messages.jsonl``, the old sync
    worktree ``sync/``, and a Go ``var/messages.db`` (recognised by a sibling
    ``schema_version`` file in ``.thrum``, which thrum never writes).
    """
    found: list[Path] = []
    for name in ("events.jsonl", "messages.jsonl"):
        candidate = thrum_dir / name
        if candidate.is_file():
            found.append(candidate)
    messages = thrum_dir / "messages"
    if messages.is_dir() and any(messages.glob("*.jsonl")):
        found.append(messages)
    if (thrum_dir / "sync").is_dir():
        found.append(thrum_dir / "sync")
    go_db = thrum_dir / "var" / "messages.db"
    if go_db.is_file() and (thrum_dir / "schema_version").is_file():
        found.append(go_db)
    return sorted(found)


def migrate_legacy_data(paths: ThrumPaths, *, dry_run: bool = False) -> dict[str, Any] | None:
    """Import legacy data found in ``paths.thrum_dir``; ``None`` when there is nothing to do.

    The event-store work replaces the body below with the real import (the
    same code as ``thrum migrate``) and returns its result object
    ``{sources, imported, duplicates, invalid, receipts, dry_run}``.
    """
    sources = find_legacy_sources(paths.thrum_dir)
    if not sources:
        return None
    return {
        "sources": [str(p) for p in sources],
        "imported": 0,
        "duplicates": 0,
        "invalid": 0,
        "receipts": 0,
        "dry_run": dry_run,
        "pending": True,
    }
