"""Live git work-context extraction for a worktree on this host (SPEC §9.14), with pygit2.

Daemon-side only: used by the heartbeat, ``agent.listContext{live: true}`` and ``who-has``. No git
subprocess is started; everything is read through libgit2.

Cost model (what the code is shaped around):

* one ``repo.status()`` call — the only working-tree scan (stats every indexed file, reads every
  non-ignored directory); untracked directories are reported as ``dir/`` (``--untracked-files=normal``,
  as ``git status --porcelain`` does) so a large untracked tree is never recursed. The index is never
  written back (``git status`` refreshes it opportunistically; a daemon must not take another
  process's ``index.lock``, as with ``GIT_OPTIONAL_LOCKS=0``);
* one tree-to-tree diff ``merge-base..HEAD`` (paths only), then a numstat per changed file from the two
  blobs read once each through the object database and diffed as buffers (xdiff, no context lines).
  libgit2's own per-delta patch reads every blob twice (its size, then its content) and resolves the
  gitattributes diff driver of each path (two ``realpath`` walks per file); that path is kept only when
  an attributes file could apply or for submodule entries, so the counts stay those of
  ``git diff --numstat``;
* one commit walk ``base..HEAD`` with a tree-to-tree diff per commit (paths only) that yields both
  ``unmerged_commits`` and each path's ``last_modified`` — no blame, no per-file log. Each diff costs a
  fixed ~0.15 ms of libgit2 set-up.

Reading a loose object is most of the cost (``access``, ``stat``, ``open``, ``read``, inflate). libgit2 also
hashes every object it reads to check its id ("strict hash verification": SHA-1 with collision detection,
about a quarter of a cold extraction); git itself does not on ordinary reads (``git diff``, ``git log``;
``fsck`` and transfers check), and a damaged object still fails to inflate or parse, so this module turns
that check off for the process when it is imported.

Both costly inputs are content-addressed, so they are memoised across calls in bounded LRU caches: a
commit's file list by commit id, a numstat by ``(old blob, new blob, path)``. The ``Repository`` of a
worktree is kept open between calls as well (its object cache then holds the commits and trees the walk
reads). A repeated heartbeat costs the status scan, the walk and one tree diff; after a new commit only
that commit and the blobs it changed are read.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pygit2
from pygit2.enums import ConfigLevel, DeltaStatus, DiffFind, FileMode, FileStatus, ObjectType, SortMode

__all__ = ["BASE_REFS", "clear_caches", "extract_work_context", "file_state"]

_TREE_CACHE_LIMIT = 1 << 20

# Process-wide (libgit2 has no per-repository switch). It matters: re-hashing every object read is about
# 3 ms (~12 %) of a cold extraction on the bench repository, whose ~670 objects read are all loose. Safe:
# it only skips re-checking that an object read from the local object database hashes to its name, which
# git itself does not do on ordinary reads either (fsck and ``cat-file --verify`` do); a damaged object
# still fails to inflate or to parse. Writing objects and indexing fetched packs compute ids as before.
pygit2.settings.enable_strict_hash_verification(False)
# libgit2 keeps parsed trees in a repository's object cache only up to 4 KiB (about 100 entries). The tree
# diffs expand every subtree of both sides, so a larger directory (200 files: 8 KiB) was read and inflated
# again for every commit of the walk: the cold extraction of the bench repository with 5 directories of 200
# files took 46 ms instead of 33 ms. Trees up to 1 MiB (~25,000 entries) are cached now; the cache stays
# bounded by libgit2's total (``cache_max_size``, 256 MiB per repository by default). Process-wide too.
pygit2.settings.cache_object_limit(ObjectType.TREE, _TREE_CACHE_LIMIT)

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

# By ``DiffDelta.status_char()`` (a plain string: ``DiffDelta.status`` builds an enum on every access).
_STATUS_NAMES: dict[str, str] = {
    "A": "added",
    "D": "deleted",
    "M": "modified",
    "R": "renamed",
    "C": "added",
    "T": "modified",
}
_BLOB = 3  # git's object type number of a blob (``odb.read`` returns it first)


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

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

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

# git (``buffer_is_binary``) and libgit2 look for a NUL byte in this many leading bytes.
_BINARY_PROBE = 8000
_REGULAR = frozenset({FileMode.BLOB, FileMode.BLOB_EXECUTABLE})


class _OpenRepo:
    """A worktree's ``Repository`` kept open between calls, with the lock of whoever is using it.

    libgit2 objects must not be used by two threads at once: a caller that finds the lock taken opens a
    private ``Repository`` for its call instead of waiting.
    """

    __slots__ = ("gitdir_ino", "lock", "repo")

    def __init__(self, repo: pygit2.Repository, gitdir_ino: int) -> None:
        self.repo = repo
        self.gitdir_ino = gitdir_ino
        self.lock = threading.Lock()


# worktree path → its open repository; a few entries (one per local worktree an agent works in).
_REPOS = _LRU(32)


def clear_caches() -> None:
    """Forget the memoised commit file lists, numstats and open repositories (for benchmarks and tests)."""
    _COMMIT_FILES.clear()
    _NUMSTAT.clear()
    _REPOS.clear()


def _acquire_repo(path: str) -> tuple[pygit2.Repository, threading.Lock | None]:
    """The ``Repository`` for ``path`` and the lock to release after use (``None``: a private one).

    A kept repository is reused only while its git directory is the same directory (same inode): a
    worktree removed and created again at the same path gets a fresh ``Repository``.
    """
    kept: _OpenRepo | None = _REPOS.get(path)
    if kept is not None and kept.lock.acquire(blocking=False):
        try:
            valid = os.stat(kept.repo.path).st_ino == kept.gitdir_ino
        except OSError:
            valid = False
        if valid:
            return kept.repo, kept.lock
        kept.lock.release()
        kept = None
    repo = pygit2.Repository(path)
    if kept is not None:  # in use by another thread: this call gets its own
        return repo, None
    fresh = _OpenRepo(repo, os.stat(repo.path).st_ino)
    fresh.lock.acquire()
    _REPOS.put(path, fresh)
    return repo, fresh.lock


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
    max_commits = max(0, max_commits)
    history = history_half(path, max_commits)
    changes = changes_half(path)
    return combine(path, history, changes, lambda undated: date_paths(path, undated, max_commits))


# The extraction in two halves that share nothing but the repository, so that they can run at the same time
# in two processes (see :mod:`thrum_plugins.rpc._workctx_pool`): the commit walk, and the numstat with the
# status scan. Each half reports the HEAD it saw; :func:`combine` merges them. Their results are plain
# JSON-compatible values (lists, dicts, strings, ints).


def _with_repo(path: str, work: Callable[[pygit2.Repository, dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``work(repo, out)`` on the kept repository of ``path``; ``out`` gets ``errors`` and ``head``."""
    out: dict[str, Any] = {"head": None, "errors": []}
    try:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such directory: {path}")
        repo, lock = _acquire_repo(path)
    except Exception as exc:
        out["errors"].append(_describe(exc))
        out["failed"] = True
        return out
    try:
        work(repo, out)
    finally:
        if lock is not None:
            if out["errors"]:
                _REPOS.discard(path)  # the next call starts from a fresh open
            lock.release()
    return out


def _head(repo: pygit2.Repository, out: dict[str, Any]) -> pygit2.Commit | None:
    try:
        if repo.head_is_unborn:
            return None
        head = repo.head.peel(pygit2.Commit)
        out["head"] = str(head.id)
        if not repo.head_is_detached:
            out["branch"] = repo.head.shorthand
        return head
    except Exception as exc:
        out["errors"].append(f"head: {_describe(exc)}")
        return None


def history_half(path: str, max_commits: int = 50) -> dict[str, Any]:
    """The commit walk ``base..HEAD``: ``branch``, ``head`` and ``commits`` (``[sha, subject, time, files]``).

    At most ``max_commits`` commits, newest first; ``more`` tells whether the walk stopped early.
    """

    def work(repo: pygit2.Repository, out: dict[str, Any]) -> None:
        out["branch"] = None
        head = _head(repo, out)
        out["commits"] = []
        out["more"] = False
        if head is None:
            return
        out["head_time"] = head.author.time
        try:
            base = _find_base(repo)
            if base is None or base == head.id:
                return
            commits = out["commits"]
            for walked, commit in enumerate(_unmerged(repo, head, base)):
                if walked >= max_commits:
                    out["more"] = True
                    break
                files = _commit_files(repo, commit)
                commits.append([str(commit.id)[:12], _subject(commit.message), commit.author.time, files])
        except Exception as exc:
            out["commits"] = []
            out["more"] = False
            out["errors"].append(f"history: {_describe(exc)}")

    return _with_repo(path, work)


def changes_half(path: str) -> dict[str, Any]:
    """The numstat of ``base...HEAD`` (``changes``: path → undated entry) and the status (``uncommitted``)."""

    def work(repo: pygit2.Repository, out: dict[str, Any]) -> None:
        head = _head(repo, out)
        out["changes"] = {}
        out["uncommitted"] = []
        if head is not None:
            try:
                base = _find_base(repo)
                if base is not None and base != head.id:
                    # ``git diff base...HEAD``: the merge base against HEAD. Unrelated histories have no merge
                    # base, and git refuses the three-dot diff then: changes stay empty.
                    merge_base = repo.merge_base(base, head.id)
                    if merge_base is not None and merge_base != head.id:
                        diff = repo[merge_base].peel(pygit2.Tree).diff_to_tree(head.tree, context_lines=0)
                        diff.find_similar(flags=DiffFind.FIND_RENAMES)
                        _fill_numstat(repo, diff, out["changes"])
            except Exception as exc:
                out["changes"] = {}
                out["errors"].append(f"history: {_describe(exc)}")
        if not repo.is_bare:
            try:
                out["uncommitted"] = _uncommitted(repo, head)
            except Exception as exc:
                out["errors"].append(f"status: {_describe(exc)}")

    return _with_repo(path, work)


def date_paths(path: str, undated: Iterable[str], skip: int) -> dict[str, int]:
    """Author times for ``undated`` paths from the commits after the first ``skip`` of ``base..HEAD``.

    Continues :func:`history_half`'s walk (up to the date-walk limit) for paths no listed commit touched:
    each path gets the time of the newest commit that changes it.
    """
    wanted = set(undated)
    found: dict[str, int] = {}

    def work(repo: pygit2.Repository, out: dict[str, Any]) -> None:
        head = _head(repo, out)
        base = _find_base(repo) if head is not None else None
        if head is None or base is None:
            return
        for walked, commit in enumerate(_unmerged(repo, head, base)):
            if walked >= _DATE_WALK_LIMIT or not wanted:
                break
            if walked < skip:
                continue
            for file_path in _commit_files(repo, commit):
                if file_path in wanted:
                    found[file_path] = commit.author.time
                    wanted.discard(file_path)

    _with_repo(path, work)
    return found


def combine(
    path: str,
    history: Mapping[str, Any],
    changes: Mapping[str, Any],
    more_dates: Callable[[set[str]], Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The work context (see :func:`extract_work_context`) from its two halves, which saw the same HEAD.

    ``more_dates(undated)`` continues the walk for changed paths no listed commit touched (only called when
    the walk stopped early).
    """
    result = _empty(path)
    errors: list[str] = []
    if history.get("failed") or changes.get("failed"):
        result["error"] = "; ".join(dict.fromkeys([*history["errors"], *changes["errors"]]))
        return result
    result["branch"] = history.get("branch")
    head_errors = [e for e in history["errors"] if e.startswith("head: ")]
    errors += head_errors
    history_errors = [e for e in (*history["errors"], *changes["errors"]) if e.startswith("history: ")]
    if history_errors:
        errors.append(history_errors[0])
    elif history.get("head") is not None:
        _fill_from_halves(result, history, changes, more_dates)
    result["uncommitted_files"] = list(changes.get("uncommitted") or [])
    errors += [e for e in changes["errors"] if e.startswith("status: ")]
    if errors:
        result["error"] = "; ".join(errors)
    return result


def _fill_from_halves(
    out: dict[str, Any],
    history: Mapping[str, Any],
    changes_half_result: Mapping[str, Any],
    more_dates: Callable[[set[str]], Mapping[str, int]] | None,
) -> None:
    """Fill ``unmerged_commits``, ``changed_files`` and ``file_changes`` of ``out``."""
    changes: dict[str, dict[str, Any]] = {p: dict(e) for p, e in changes_half_result["changes"].items()}
    commits = history["commits"]
    undated = set(changes)
    for _sha, _subject_line, author_time, files in commits:
        if not undated:
            break
        stamp: str | None = None
        for file_path in files:
            if file_path in undated:
                stamp = stamp or _ts(author_time)
                changes[file_path]["last_modified"] = stamp
                undated.discard(file_path)
    if undated and history.get("more") and more_dates is not None:
        for file_path, author_time in more_dates(set(undated)).items():
            if file_path in undated:
                changes[file_path]["last_modified"] = _ts(author_time)
                undated.discard(file_path)
    if undated:
        # Only reachable through an evil merge the combined diff missed, or the walk limit: fall back to
        # the newest commit's date rather than leave the timestamp out.
        newest = commits[0][2] if commits else history.get("head_time", 0)
        fallback = _ts(newest)
        for file_path in undated:
            changes[file_path]["last_modified"] = fallback

    out["unmerged_commits"] = [
        {"sha": sha, "message": subject, "files": files} for sha, subject, _t, files in commits
    ]
    out["changed_files"] = sorted(changes)
    # Newest first, then by path. Timestamps share one fixed-width format, so text order is time order.
    file_changes = sorted(changes.values(), key=lambda c: c["path"])
    file_changes.sort(key=lambda c: c["last_modified"], reverse=True)
    out["file_changes"] = file_changes


def _unmerged(repo: pygit2.Repository, head: pygit2.Commit, base: pygit2.Oid) -> pygit2.Walker:
    """The commits of ``base..HEAD``, newest first (``git log base..HEAD``)."""
    walker = repo.walk(head.id, SortMode.TOPOLOGICAL | SortMode.TIME)
    walker.hide(base)
    return walker


def _find_base(repo: pygit2.Repository) -> pygit2.Oid | None:
    for name in BASE_REFS:
        ref = repo.references.get(name)
        if ref is not None:
            return ref.peel(pygit2.Commit).id
    return None


def _fill_numstat(repo: pygit2.Repository, diff: pygit2.Diff, changes: dict[str, dict[str, Any]]) -> None:
    """One ``file_changes`` entry per delta of ``diff`` into ``changes`` (numstat, binary = 0/0)."""
    pending: list[tuple[int, pygit2.DiffDelta, str, dict[str, Any], tuple[Any, Any, str]]] = []
    for position, delta in enumerate(diff.deltas):
        status = delta.status_char()
        old, new = delta.old_file, delta.new_file
        file_path = old.path if status == "D" else new.path
        key = (old.id, new.id, file_path)
        stats = _NUMSTAT.get(key)
        entry = {
            "path": file_path,
            "additions": stats[0] if stats else 0,
            "deletions": stats[1] if stats else 0,
            "status": _STATUS_NAMES.get(status, "modified"),
            "last_modified": None,
        }
        changes[file_path] = entry
        if stats is None:
            pending.append((position, delta, status, entry, key))
    if not pending:
        return
    paths = {p for _, d, _, _, _ in pending for p in (d.old_file.path, d.new_file.path)}
    attributes = _attributes_may_apply(repo, paths)
    read = repo.odb.read
    for position, delta, status, entry, key in pending:
        old, new = delta.old_file, delta.new_file
        stats = None
        # git takes the diff driver from the attributes for regular files only (symlinks are text).
        if not (attributes and _REGULAR.intersection((old.mode, new.mode))):
            # Each blob read once; binary and line counting as git does it. A submodule entry names a
            # commit (usually not in this repository): libgit2's patch below renders it.
            try:
                before = (_BLOB, b"") if status == "A" else read(old.id)
                after = (_BLOB, b"") if status == "D" else read(new.id)
            except KeyError:
                before = after = (0, b"")
            if before[0] == _BLOB and after[0] == _BLOB:
                stats = _buffer_numstat(before[1], after[1])
        if stats is None:
            # libgit2's own patch: it applies the path's diff driver (``binary``, ``-diff``) from the
            # gitattributes, and renders submodule entries as ``Subproject commit`` lines.
            patch = diff[position]
            if patch is None or patch.delta.is_binary:
                stats = (0, 0)
            else:
                _, additions, deletions = patch.line_stats
                stats = (additions, deletions)
        _NUMSTAT.put(key, stats)
        entry["additions"], entry["deletions"] = stats


def _line_count(data: bytes) -> int:
    """Lines of ``data`` as a diff counts them (a last line without a newline counts)."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _buffer_numstat(before: bytes, after: bytes) -> tuple[int, int]:
    """``(additions, deletions)`` between two blob contents, as ``git diff --numstat`` counts them.

    Binary — a NUL byte in the first 8000 bytes of either side, git's and libgit2's rule without
    attributes — counts 0/0. A one-sided change counts the lines of the present side; otherwise libgit2's
    xdiff compares the buffers (no context lines, so the counts are those of the minimal hunks).
    """
    if b"\0" in before[:_BINARY_PROBE] or b"\0" in after[:_BINARY_PROBE]:
        return (0, 0)
    if not before:
        return (_line_count(after), 0)
    if not after:
        return (0, _line_count(before))
    if before == after:
        return (0, 0)
    _, additions, deletions = pygit2.Patch.create_from(
        before, after, context_lines=0, interhunk_lines=0
    ).line_stats
    return (additions, deletions)


def _attributes_may_apply(repo: pygit2.Repository, paths: Iterable[str]) -> bool:
    """Whether a gitattributes file could set the diff driver of a path in the diff.

    The files libgit2 consults for a diff: the system ``gitattributes``, ``core.attributesFile`` or else
    ``$XDG_CONFIG_HOME/git/attributes`` (both looked at), ``info/attributes`` of the git directory and of
    the common one, and ``.gitattributes`` in the worktree (or, if absent there, in the index) in the root
    and every directory holding a path of the diff. A few ``stat`` calls; any doubt counts as "may apply".
    """
    try:
        candidates: list[str] = []
        system = pygit2.settings.search_path[ConfigLevel.SYSTEM]
        candidates += [os.path.join(d, "gitattributes") for d in system.split(os.pathsep) if d]
        config = repo.config  # pygit2's Config has no get()
        configured = config["core.attributesFile"] if "core.attributesFile" in config else None  # noqa: SIM401
        if configured:
            candidates.append(os.path.expanduser(str(configured)))
        xdg = pygit2.settings.search_path[ConfigLevel.XDG]
        candidates += [os.path.join(d, "attributes") for d in xdg.split(os.pathsep) if d]
        gitdir = repo.path
        candidates.append(os.path.join(gitdir, "info", "attributes"))
        common = os.path.join(gitdir, "commondir")
        if os.path.isfile(common):
            with open(common, encoding="utf-8") as fh:
                candidates.append(os.path.join(gitdir, fh.read().strip(), "info", "attributes"))
        if any(os.path.exists(c) for c in candidates):
            return True
        if repo.is_bare or repo.workdir is None:
            return True
        directories = {""}
        for rel in paths:
            parent = posixpath.dirname(rel)
            while parent and parent not in directories:
                directories.add(parent)
                parent = posixpath.dirname(parent)
        index = repo.index
        index.read(False)  # reloads only when the file changed since the last read
        for directory in directories:
            rel = posixpath.join(directory, ".gitattributes") if directory else ".gitattributes"
            if os.path.lexists(os.path.join(repo.workdir, rel)) or rel in index:
                return True
    except Exception:
        return True
    return False


def _subject(message: str) -> str:
    """The subject line of a commit message (git's ``%s``: the first paragraph joined on one line)."""
    paragraph = message.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _tree_paths(diff: pygit2.Diff) -> list[str]:
    # Without rename detection every delta has the same old and new path (as ``git diff-tree -r``). A
    # change of file type (a file replaced by a symlink) is a deletion plus an addition of the same path
    # in libgit2's diff; git lists the path once.
    return list(dict.fromkeys(delta.new_file.path for delta in diff.deltas))


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
