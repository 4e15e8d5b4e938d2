"""What git sync needs before pygit2 is loaded: its names and plain-file reads of git's layout.

The daemon checks the sync worktree before it opens the store (§11.1).  In the
usual case (branch, worktree and data all in place) plain reads of the ref and
of the worktree's administrative files can tell, and the daemon answers
``health`` without having loaded pygit2 (about 100 ms); the engine
(:mod:`thrum_plugins.sync._git_impl`) is imported later, by the sync loop.
:func:`healthy_sync_tip` only ever says "healthy"; anything it does not
recognise (a missing or broken worktree, packed or reftable refs it cannot read,
relative worktree paths) leaves the decision, and any repair, to the engine.

Standard library only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["NETWORK_TIMEOUT_S", "SYNC_BRANCH", "SYNC_REF", "healthy_sync_tip", "read_ref"]

SYNC_BRANCH = "a-sync"
SYNC_REF = f"refs/heads/{SYNC_BRANCH}"
#: Seconds a fetch or push may take before it is abandoned.
NETWORK_TIMEOUT_S = 60.0

_OID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def read_ref(common_dir: Path, ref: str) -> str | None:
    """The object id ``ref`` names, from its loose file or ``packed-refs``.

    ``None`` when the ref does not exist or is not a plain object id (a
    symbolic ref, an unreadable file, another ref storage such as reftable).
    """
    try:
        text = (common_dir / ref).read_text("ascii").strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError):
        return None
    else:
        return text if _OID.fullmatch(text) else None
    try:
        with (common_dir / "packed-refs").open("rb") as fh:
            wanted = ref.encode()
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and parts[1] == wanted:
                    oid = parts[0].decode("ascii", "replace")
                    return oid if _OID.fullmatch(oid) else None
    except OSError:
        return None
    return None


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _read(path: Path) -> str:
    return path.read_text("utf-8").strip()


def healthy_sync_tip(common_dir: Path, sync_dir: Path) -> str | None:
    """The tip of ``refs/heads/a-sync`` when plain files show a healthy, initialised sync worktree.

    The same facts the engine's ``check_worktree`` verifies, plus what makes
    ``ensure_branch`` and the data initialisation no-ops: the branch exists;
    ``sync_dir`` is a real directory with a ``.git`` file whose ``gitdir:``
    (absolute) names ``<common dir>/worktrees/<name>``; that directory has
    ``commondir`` (leading back to ``common_dir``), ``gitdir`` (leading back to
    ``sync_dir/.git``) and ``HEAD`` = ``ref: refs/heads/a-sync``; and the
    worktree holds something besides ``.git``.  ``None`` otherwise: then the
    engine must look (and repair) before the store opens.
    """
    tip = read_ref(common_dir, SYNC_REF)
    if tip is None:
        return None
    try:
        if sync_dir.is_symlink() or not sync_dir.is_dir():
            return None
        dotgit = sync_dir / ".git"
        if dotgit.is_symlink() or not dotgit.is_file():
            return None
        link = _read(dotgit)
        if not link.startswith("gitdir:"):
            return None
        admin = Path(link[len("gitdir:") :].strip())
        if not admin.is_absolute() or not _same(admin.parent, common_dir / "worktrees"):
            return None
        if not all((admin / name).is_file() for name in ("commondir", "gitdir", "HEAD")):
            return None
        back = Path(_read(admin / "gitdir"))
        if not back.is_absolute() or back.name != ".git" or not _same(back.parent, sync_dir):
            return None
        if not _same(admin / _read(admin / "commondir"), common_dir):
            return None
        if _read(admin / "HEAD") != f"ref: {SYNC_REF}":
            return None
        with os.scandir(sync_dir) as entries:
            if not any(entry.name != ".git" for entry in entries):
                return None
    except (OSError, UnicodeDecodeError):
        return None
    return tip
