"""Live git work-context extraction for a worktree on this host (SPEC §9.14), with pygit2.

Daemon-side only: used by the heartbeat, ``agent.listContext{live: true}`` and ``who-has``. No git
subprocess is started; everything is read through libgit2.

Cost model (what the code is shaped around):

* one ``repo.status()`` call — the only working-tree scan (stats every indexed file, reads every
  non-ignored directory); untracked directories are reported as ``dir/`` (``--untracked-files=normal``,
  as ``git status --porcelain`` does) so a large untracked tree is never recursed. The index is never
  written back (``git status`` refreshes it opportunistically; a daemon must not take another
  process's ``index.lock``, as with ``GIT_OPTIONAL_LOCKS=0``);
* one tree-to-tree diff ``merge-base..HEAD`` with a patch per file for the numstat — reading the blobs
  is the expensive part (loose objects: an open + inflate each);
* one commit walk ``base..HEAD`` with a tree-to-tree diff per commit (paths only) that yields both
  ``unmerged_commits`` and each path's ``last_modified`` — no blame, no per-file log. Each diff costs a
  fixed ~0.15 ms of libgit2 set-up.

Both costly inputs are content-addressed, so they are memoised across calls in bounded LRU caches: a
commit's file list by commit id, a numstat by ``(old blob, new blob, path)``. A repeated heartbeat then
costs the status scan, the walk and one tree diff; after a new commit only that commit and the blobs it
changed are read.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import pygit2
from pygit2.enums import DeltaStatus, DiffFind, FileStatus, SortMode

__all__ = ["BASE_REFS", "clear_caches", "extract_work_context", "file_state"]

#: Candidate base references, first existing wins (SPEC §9.14).
BASE_REFS: tuple[str, ...] = (
    "refs/remotes/origin/main",
    "refs/remotes/origin/master",
    "refs/heads/main",
    "refs/heads/master",
)

# Beyond ``max_commits`` the walk only continues to date paths of ``file_changes``; this bounds it on a
# branch that is thousands of commits ahead of a stale base.
_DATE_WALK_LIMIT = 1000

_STATUS_NAMES: dict[DeltaStatus, str] = {
    DeltaStatus.ADDED: "added",
    DeltaStatus.DELETED: "deleted",
    DeltaStatus.MODIFIED: "modified",
    DeltaStatus.RENAMED: "renamed",
    DeltaStatus.COPIED: "added",
    DeltaStatus.TYPECHANGE: "modified",
}


class _LRU:
    """A small thread-safe LRU map (the daemon may extract from worker threads)."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# commit id → tuple of paths it changes. A commit id fixes its tree and its parents, hence the result.
_COMMIT_FILES = _LRU(8192)
# (old blob id, new blob id, path) → (additions, deletions). The path stands in for the gitattributes that
# can make a file binary.
_NUMSTAT = _LRU(32768)


def clear_caches() -> None:
    """Forget the memoised commit file lists and numstats (for benchmarks and tests)."""
    _COMMIT_FILES.clear()
    _NUMSTAT.clear()


def _ts(seconds: float) -> str:
    """Format a POSIX time as the written timestamp form (UTC, 6 fractional digits, ``Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _empty(worktree_path: str) -> dict[str, Any]:
    return {
        "branch": None,
        "worktree_path": worktree_path,
        "unmerged_commits": [],
        "uncommitted_files": [],
        "changed_files": [],
        "file_changes": [],
        "git_updated_at": _ts(datetime.now(UTC).timestamp()),
    }


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def extract_work_context(worktree: str | os.PathLike[str], *, max_commits: int = 50) -> dict[str, Any]:
    """Extract the git-derived fields of a SessionWorkContext for ``worktree`` (SPEC §6.2, §9.14).

    Returns ``{branch, worktree_path, unmerged_commits, uncommitted_files, changed_files, file_changes,
    git_updated_at}``:

    * ``branch`` — the checked-out branch's short name; ``None`` when HEAD is detached or unborn;
    * ``worktree_path`` — ``worktree`` made absolute (not resolved through symlinks);
    * ``unmerged_commits`` — ``base..HEAD`` newest first, at most ``max_commits``,
      ``{sha: 12 hex, message: subject line, files: [paths]}`` (a merge commit lists only the paths that
      differ from every parent, like ``git show``'s combined diff);
    * ``uncommitted_files`` — every path ``git status --porcelain`` reports, untracked included (an
      untracked directory as ``dir/``; a staged rename as its new path only), sorted;
    * ``changed_files`` — paths changed in ``base...HEAD`` (diff ``merge-base(base, HEAD)..HEAD``, renames
      detected and reported under the new path), sorted;
    * ``file_changes`` — one ``{path, additions, deletions, status, last_modified}`` per changed path,
      most recently modified first; binary files count 0/0; ``last_modified`` is the newest author date
      of a ``base..HEAD`` commit touching the path;
    * ``git_updated_at`` — now.

    The base is the first existing of ``origin/main``, ``origin/master``, ``main``, ``master``; without
    one (or with HEAD at the base) the commit and change fields are empty. The function never raises:
    a failing part leaves its fields empty and adds ``error`` (a short reason) to the result. ``error``
    is not a SessionWorkContext field; callers drop it before writing an event.
    """
    path = os.path.abspath(os.fspath(worktree))
    result = _empty(path)
    errors: list[str] = []
    try:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such directory: {path}")
        repo = pygit2.Repository(path)
    except Exception as exc:
        result["error"] = _describe(exc)
        return result

    head: pygit2.Commit | None = None
    try:
        if not repo.head_is_unborn:
            head = repo.head.peel(pygit2.Commit)
            if not repo.head_is_detached:
                result["branch"] = repo.head.shorthand
    except Exception as exc:
        errors.append(f"head: {_describe(exc)}")

    if head is not None:
        try:
            _fill_history(repo, head, max(0, max_commits), result)
        except Exception as exc:
            result["unmerged_commits"], result["changed_files"], result["file_changes"] = [], [], []
            errors.append(f"history: {_describe(exc)}")

    if not repo.is_bare:
        try:
            result["uncommitted_files"] = _uncommitted(repo, head)
        except Exception as exc:
            errors.append(f"status: {_describe(exc)}")

    if errors:
        result["error"] = "; ".join(errors)
    return result


def _find_base(repo: pygit2.Repository) -> pygit2.Oid | None:
    for name in BASE_REFS:
        ref = repo.references.get(name)
        if ref is not None:
            return ref.peel(pygit2.Commit).id
    return None


def _fill_history(
    repo: pygit2.Repository, head: pygit2.Commit, max_commits: int, out: dict[str, Any]
) -> None:
    """Fill ``unmerged_commits``, ``changed_files`` and ``file_changes`` of ``out``."""
    base = _find_base(repo)
    if base is None or base == head.id:
        return

    # Numstat of base...HEAD: the merge base against HEAD (``git diff base...HEAD``). Unrelated histories
    # have no merge base, and git refuses the three-dot diff then: changes stay empty.
    changes: dict[str, dict[str, Any]] = {}
    merge_base = repo.merge_base(base, head.id)
    if merge_base is not None and merge_base != head.id:
        diff = repo[merge_base].peel(pygit2.Tree).diff_to_tree(head.tree, context_lines=0)
        diff.find_similar(flags=DiffFind.FIND_RENAMES)
        for position, delta in enumerate(diff.deltas):
            deleted = delta.status == DeltaStatus.DELETED
            file_path = delta.old_file.path if deleted else delta.new_file.path
            key = (delta.old_file.id, delta.new_file.id, file_path)
            stats = _NUMSTAT.get(key)
            if stats is None:
                # Only now is a patch (and so the blob contents) produced for this file.
                patch = diff[position]
                if patch is None or patch.delta.is_binary:
                    stats = (0, 0)
                else:
                    _, additions, deletions = patch.line_stats
                    stats = (additions, deletions)
                _NUMSTAT.put(key, stats)
            changes[file_path] = {
                "path": file_path,
                "additions": stats[0],
                "deletions": stats[1],
                "status": _STATUS_NAMES.get(delta.status, "modified"),
                "last_modified": None,
            }

    undated = set(changes)
    commits: list[dict[str, Any]] = []
    walker = repo.walk(head.id, SortMode.TOPOLOGICAL | SortMode.TIME)
    walker.hide(base)
    newest_author_time: int | None = None
    for walked, commit in enumerate(walker):
        if walked >= max_commits and (not undated or walked >= _DATE_WALK_LIMIT):
            break
        files = _commit_files(repo, commit)
        if newest_author_time is None:
            newest_author_time = commit.author.time
        if walked < max_commits:
            commits.append({"sha": str(commit.id)[:12], "message": _subject(commit.message), "files": files})
        if undated:
            stamp: str | None = None
            for file_path in files:
                if file_path in undated:
                    stamp = stamp or _ts(commit.author.time)
                    changes[file_path]["last_modified"] = stamp
                    undated.discard(file_path)

    if undated:
        # Only reachable through an evil merge the combined diff missed, or the walk limit: fall back to
        # the newest commit's date rather than leave the timestamp out.
        fallback = _ts(newest_author_time if newest_author_time is not None else head.author.time)
        for file_path in undated:
            changes[file_path]["last_modified"] = fallback

    out["unmerged_commits"] = commits
    out["changed_files"] = sorted(changes)
    # Newest first, then by path. Timestamps share one fixed-width format, so text order is time order.
    file_changes = sorted(changes.values(), key=lambda c: c["path"])
    file_changes.sort(key=lambda c: c["last_modified"], reverse=True)
    out["file_changes"] = file_changes


def _subject(message: str) -> str:
    """The subject line of a commit message (git's ``%s``: the first paragraph joined on one line)."""
    paragraph = message.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _tree_paths(diff: pygit2.Diff) -> list[str]:
    # Without rename detection every delta has the same old and new path (as ``git diff-tree -r``).
    return [delta.new_file.path for delta in diff.deltas]


def _commit_files(repo: pygit2.Repository, commit: pygit2.Commit) -> list[str]:
    """Paths a commit changes against its parent; for a merge, those differing from every parent."""
    cached = _COMMIT_FILES.get(commit.id)
    if cached is None:
        cached = tuple(_compute_commit_files(repo, commit))
        _COMMIT_FILES.put(commit.id, cached)
    return list(cached)


def _compute_commit_files(repo: pygit2.Repository, commit: pygit2.Commit) -> list[str]:
    parent_ids = commit.parent_ids
    tree = commit.tree
    if not parent_ids:
        return _tree_paths(tree.diff_to_tree(swap=True))
    if len(parent_ids) == 1:
        return _tree_paths(repo[parent_ids[0]].peel(pygit2.Tree).diff_to_tree(tree))
    common: set[str] | None = None
    for parent_id in parent_ids:
        paths = set(_tree_paths(repo[parent_id].peel(pygit2.Tree).diff_to_tree(tree)))
        common = paths if common is None else common & paths
        if not common:
            return []
    return sorted(common or ())


def _uncommitted(repo: pygit2.Repository, head: pygit2.Commit | None) -> list[str]:
    """Paths of ``git status --porcelain`` (untracked included, staged rename → new path), sorted."""
    status = repo.status(untracked_files="normal", ignored=False)
    # libgit2's status has no rename detection: a staged ``git mv a b`` shows ``a`` index-deleted and ``b``
    # index-new. Porcelain lists only ``b``, so pair them up with a head-to-index diff — only when both
    # kinds are present, which keeps the common case to the single status scan.
    # A path that is index-deleted and also back in the worktree (``?? a`` after ``git mv a b``) stays.
    gone = {p for p, flags in status.items() if flags == FileStatus.INDEX_DELETED}
    if head is not None and gone and any(flags & FileStatus.INDEX_NEW for flags in status.values()):
        diff = repo.index.diff_to_tree(head.tree)
        diff.find_similar(flags=DiffFind.FIND_RENAMES)
        for delta in diff.deltas:
            # Index-to-tree diffs run tree → index, so old_file is HEAD's side.
            if delta.status == DeltaStatus.RENAMED and delta.old_file.path in gone:
                del status[delta.old_file.path]
    return sorted(status)


def _normalise(path: str) -> str:
    path = path.replace(os.sep, "/") if os.sep != "/" else path
    path = posixpath.normpath(path)
    return "" if path == "." else path.lstrip("/")


def file_state(ctx: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """How the work context ``ctx`` touches the repository-relative ``path`` (for ``who-has``).

    Returns ``{"state", "additions", "deletions", "last_modified"}`` or ``None`` when ``ctx`` does not touch
    the file. ``state`` is ``"uncommitted"`` when the path (or an untracked directory holding it, listed
    as ``dir/``) is in ``uncommitted_files`` — this wins over ``"committed"``, which means the path is in
    ``file_changes`` or ``changed_files``. The counts and ``last_modified`` come from the path's
    ``file_changes`` entry (the committed part); without one they are 0/0 and ``last_modified`` is the
    context's ``git_updated_at`` for uncommitted files (when the change was observed), else ``None``.
    """
    target = _normalise(path)
    if not target:
        return None
    entry: Mapping[str, Any] | None = None
    for change in ctx.get("file_changes") or ():
        if isinstance(change, Mapping) and change.get("path") == target:
            entry = change
            break

    uncommitted = False
    for item in ctx.get("uncommitted_files") or ():
        if not isinstance(item, str):
            continue
        if item == target or (item.endswith("/") and target.startswith(item)):
            uncommitted = True
            break

    if uncommitted:
        state = "uncommitted"
    elif entry is not None or target in (ctx.get("changed_files") or ()):
        state = "committed"
    else:
        return None

    if entry is not None:
        return {
            "state": state,
            "additions": int(entry.get("additions") or 0),
            "deletions": int(entry.get("deletions") or 0),
            "last_modified": entry.get("last_modified"),
        }
    return {
        "state": state,
        "additions": 0,
        "deletions": 0,
        "last_modified": ctx.get("git_updated_at") if uncommitted else None,
    }
