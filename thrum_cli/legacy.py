"""The call point ``thrum init`` uses for Go-era data (SPEC §15.5 step 6, §6.8).

:func:`migrate_legacy_data` imports legacy files found in the repository with
the same code as ``thrum migrate``; with none it returns ``None``
(``migrated: null``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thrum_core.paths import ThrumPaths

__all__ = ["migrate_legacy_data"]


def migrate_legacy_data(paths: ThrumPaths, *, dry_run: bool = False) -> dict[str, Any] | None:
    """Import legacy data not imported yet; ``None`` when there is nothing to do.

    A running daemon holds the lock the import needs: then the sources are
    reported as pending (run ``thrum daemon stop && thrum migrate``).
    """
    from thrum_core.errors import Conflict
    from thrum_core.events.legacy import find_legacy_sources, migrate_repository

    sources = find_legacy_sources(paths)
    if not sources:
        return None
    try:
        return migrate_repository(paths, sources=sources, dry_run=dry_run).to_json()
    except Conflict as exc:
        return {
            "sources": [str(s.path) for s in sources],
            "imported": 0,
            "duplicates": 0,
            "invalid": 0,
            "receipts": 0,
            "dry_run": dry_run,
            "pending": True,
            "error": exc.message,
        }
