"""The git sync engine: branch, worktree, deterministic merge, commit, fetch and push (SPEC §11).

A plain, synchronous, testable engine over pygit2.  It knows nothing about trio,
the kernel or the projection: the daemon's sync plugin calls these functions
from a worker thread, inside its writer where the SPEC requires it (merge and
commit, §6.5), and projects the files the merge reports as changed.

Overview of one cycle (SPEC §11.3) in terms of this module::

    ensure_branch(repo, remote)            # once, §11.1
    ensure_worktree(repo, sync_dir, remote)  # once at start-up, §11.1 health check
    tip = fetch(repo, remote).tip          # step 2
    report = merge_worktree(repo, sync_dir, tip, tombstones=...)  # step 3 (in the writer)
    commit_worktree(repo, sync_dir, tip)   # step 5 (in the writer)
    push(repo, remote)                     # step 6; "rejected" -> back to fetch

**Never the user's checkout.**  Every function works on refs and objects of the
repository and on the sync worktree only.  ``repo_path`` may be the main
worktree, a linked worktree or a sub-directory of either: branches, objects and
the worktree list are shared through the git common directory.

**No hooks, no signing, no prompts.**  Commits are created with
:meth:`pygit2.Repository.create_commit`, which runs no hooks and never signs.
Network operations never prompt: credentials come from the SSH agent or key
files without passphrase, with a capped number of attempts; the ``git`` CLI
fallback runs with ``GIT_TERMINAL_PROMPT=0``, SSH ``BatchMode=yes``, no stdin
and ``core.hooksPath=/dev/null``.

**Timeouts.**  Local operations (file remotes included) run inline; they are
bounded by the local file system.  Network operations are bounded three ways:
libgit2's connect and read time-outs (``server_connect_timeout`` /
``server_timeout``, process-wide settings), every pygit2 callback (credentials,
certificate check, transfer progress, push progress) aborting the operation once
the deadline has passed, and the call itself running in a helper thread that is
abandoned at the deadline (a stalled libssh2 read cannot be interrupted from
Python; the abandoned thread ends when libgit2's read time-out fires and then
only updates a remote-tracking ref).  The CLI fallback gets the time that is
left and its whole process group is killed when it runs out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pygit2
from pygit2.enums import CredentialType, FetchPrune, FileMode, ObjectType

from thrum_core.canonical import parse_line
from thrum_core.fsutil import atomic_write_bytes
from thrum_core.ids import event_id_of
from thrum_core.timefmt import TS_MAX_NS, format_ts_seconds, parse_ts_ns

# Shared with the pygit2-free start-up check; re-exported here for the engine's users.
from thrum_plugins.sync._git_files import NETWORK_TIMEOUT_S, SYNC_BRANCH, SYNC_REF

__all__ = [
    "EMPTY_TREE",
    "INIT_BRANCH_MESSAGE",
    "INIT_DATA_MESSAGE",
    "NETWORK_TIMEOUT_S",
    "SYNC_BRANCH",
    "SYNC_REF",
    "TOMBSTONE_TYPES",
    "TRANSPORT_STATUS",
    "WORKTREE_NAME",
    "CommitResult",
    "FetchResult",
    "MergeReport",
    "MergeResult",
    "PushResult",
    "SyncGitError",
    "ThrumRemoteCallbacks",
    "TombstoneHook",
    "TombstonePredicate",
    "TransportStatus",
    "WorktreeStatus",
    "check_worktree",
    "commit_worktree",
    "common_dir",
    "default_sync_dir",
    "ensure_branch",
    "ensure_worktree",
    "fetch",
    "filter_jsonl",
    "is_jsonl_path",
    "merge_jsonl",
    "merge_worktree",
    "push",
    "sync_message",
]

#: The id of git's empty tree (the tree of the orphan root commit, §11.1).
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#: Name of the worktree entry under ``<common dir>/worktrees/``.
WORKTREE_NAME = "thrum-a-sync"
INIT_BRANCH_MESSAGE = "Initialize Thrum sync"
INIT_DATA_MESSAGE = "Initialize Thrum sync data"
SIGNATURE_NAME = "Thrum"
SIGNATURE_EMAIL = "thrum@local"
#: Event types that are tombstones (§6.7); new ones arriving from the remote make
#: the merge filter every JSONL file, not only the ones it changed.
TOMBSTONE_TYPES = frozenset({"purge.executed", "agent.cleanup"})
#: How many times libgit2 may ask for credentials before the attempt is abandoned
#: (libgit2 otherwise keeps asking as long as the callback answers).
MAX_CREDENTIAL_ATTEMPTS = 6
#: Private key files tried after the SSH agent, in this order.
SSH_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")

FILE_MODE_BLOB = int(FileMode.BLOB)
FILE_MODE_EXEC = int(FileMode.BLOB_EXECUTABLE)


class SyncGitError(Exception):
    """A git operation of the sync engine failed; the message is meant for ``last_error``."""


def _signature() -> pygit2.Signature:
    return pygit2.Signature(SIGNATURE_NAME, SIGNATURE_EMAIL)


def sync_message(now_ns: int | None = None) -> str:
    """Return the commit message of a sync commit: ``sync: <UTC seconds>`` (§11.3)."""
    return "sync: " + format_ts_seconds(time.time_ns() if now_ns is None else now_ns)


def _open(path: Path | str) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        raise SyncGitError(f"not a git repository: {path}: {exc}") from exc


def _open_worktree(sync_dir: Path | str) -> pygit2.Repository:
    """Open the sync worktree itself, never a repository found above it."""
    try:
        return pygit2.Repository(str(sync_dir), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except pygit2.GitError as exc:
        raise SyncGitError(f"cannot open the sync worktree {sync_dir}: {exc}") from exc


def common_dir(repo_path: Path | str) -> Path:
    """Return the git common directory of the repository containing ``repo_path``.

    For a linked worktree this is the main repository's ``.git``, not the
    worktree's private ``.git/worktrees/<name>``.
    """
    repo = _open(repo_path)
    gitdir = Path(repo.path)
    marker = gitdir / "commondir"
    if marker.is_file():
        ref = marker.read_text(encoding="utf-8").strip()
        return (gitdir / ref).resolve()
    return gitdir.resolve()


def default_sync_dir(repo_path: Path | str) -> Path:
    """Return ``<git common dir>/thrum-sync/a-sync`` (§5.8)."""
    return common_dir(repo_path) / "thrum-sync" / SYNC_BRANCH


def _branch_tip(repo: pygit2.Repository) -> pygit2.Oid | None:
    ref = repo.references.get(SYNC_REF)
    if ref is None:
        return None
    return ref.resolve().target  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Branch (§11.1)


def ensure_branch(
    repo_path: Path | str, remote: str | None = "origin"
) -> Literal["existing", "remote", "created"]:
    """Make sure ``refs/heads/a-sync`` exists and say how (§11.1).

    - ``"existing"``: the branch was already there;
    - ``"remote"``: created at ``refs/remotes/<remote>/a-sync``, with its upstream
      set to that branch (skipped when ``remote`` is ``None``, local-only mode);
    - ``"created"``: an orphan root commit of the empty tree with the message
      ``Initialize Thrum sync``.

    Only a ref, a commit object and (for ``"remote"``) the branch's upstream
    config are written: HEAD, index and files of every checkout are untouched.
    """
    repo = _open(repo_path)
    if repo.references.get(SYNC_REF) is not None:
        return "existing"
    if remote is not None:
        tracking = repo.references.get(f"refs/remotes/{remote}/{SYNC_BRANCH}")
        if tracking is not None:
            commit = repo[tracking.resolve().target].peel(pygit2.Commit)
            try:
                branch = repo.branches.local.create(SYNC_BRANCH, commit)
            except pygit2.AlreadyExistsError:
                return "existing"
            branch.upstream = repo.branches.remote[f"{remote}/{SYNC_BRANCH}"]
            return "remote"
    tree = repo.TreeBuilder().write()
    sig = _signature()
    oid = repo.create_commit(None, sig, sig, INIT_BRANCH_MESSAGE + "\n", tree, [])
    try:
        repo.references.create(SYNC_REF, oid)
    except pygit2.AlreadyExistsError:
        # Another process created it between our check and now: theirs wins.
        return "existing"
    return "created"


# ---------------------------------------------------------------------------
# Worktree (§11.1, §5.8)


@dataclass
class WorktreeStatus:
    """Outcome of :func:`ensure_worktree`.

    ``state`` is ``"ok"`` (healthy, untouched), ``"created"`` (there was no
    directory) or ``"repaired"`` (the directory was unhealthy: it was moved to
    ``moved_to`` and the worktree re-added).  ``recovered_files`` lists the JSONL
    files of the moved copy (top level and ``messages/``) whose lines the caller
    must import (deduplicated by ``event_id``).  ``reason`` says why a repair was
    needed; ``initialized`` is true when the empty ``events.jsonl`` was committed.
    """

    path: Path
    state: Literal["ok", "created", "repaired"]
    reason: str | None = None
    moved_to: Path | None = None
    recovered_files: list[Path] = field(default_factory=list)
    initialized: bool = False


def _worktree_entries(repo: pygit2.Repository) -> list[tuple[str, Path]]:
    """Every registered worktree as ``(name, path)``; entries that cannot be read are skipped."""
    out: list[tuple[str, Path]] = []
    for name in repo.list_worktrees():
        try:
            wt = repo.lookup_worktree(name)
        except (pygit2.GitError, KeyError):
            continue
        out.append((name, Path(wt.path)))
    return out


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def check_worktree(repo_path: Path | str, sync_dir: Path | str) -> str | None:
    """Return ``None`` when ``sync_dir`` is a healthy sync worktree, else the reason (§11.1).

    Healthy: the directory is registered as a worktree of this repository, holds
    a ``.git`` file that leads back to that registration, and its HEAD is
    ``refs/heads/a-sync``.
    """
    sync_dir = Path(sync_dir)
    repo = _open(repo_path)
    if not sync_dir.exists() and not sync_dir.is_symlink():
        return "missing"
    if sync_dir.is_symlink() or not sync_dir.is_dir():
        return "not a directory"
    names = [name for name, path in _worktree_entries(repo) if _same_path(path, sync_dir)]
    if not names:
        return "not a registered worktree of this repository"
    dotgit = sync_dir / ".git"
    if dotgit.is_symlink() or not dotgit.is_file():
        return "no .git file"
    try:
        wrepo = _open_worktree(sync_dir)
    except SyncGitError as exc:
        return str(exc)
    admin = common_dir(repo_path) / "worktrees"
    if not any(_same_path(Path(wrepo.path), admin / name) for name in names):
        return ".git file points elsewhere"
    try:
        head = wrepo.lookup_reference("HEAD")
    except (pygit2.GitError, KeyError):
        return "unreadable HEAD"
    if head.type != pygit2.enums.ReferenceType.SYMBOLIC or head.target != SYNC_REF:
        return f"HEAD is not {SYNC_REF}"
    return None


def _recovered_jsonl(root: Path) -> list[Path]:
    """JSONL files of a moved-aside copy that readers would read (top level and ``messages/``)."""
    found: list[Path] = []
    for directory in (root, root / "messages"):
        if not directory.is_dir() or directory.is_symlink():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.name.endswith(".jsonl") and entry.is_file() and not entry.is_symlink():
                found.append(entry)
    return found


def _free_path(base: Path) -> Path:
    candidate, n = base, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


def _prune_stale_entries(repo: pygit2.Repository, sync_dir: Path, admin_root: Path) -> None:
    """Drop worktree registrations that would block re-adding ``sync_dir``.

    Pruning removes only the administrative files under ``<common dir>/worktrees``
    (never a working directory): our own registration (whose directory has just
    been moved away) and stale ones whose directory is gone and that still hold
    the sync branch checked out.
    """
    for name in repo.list_worktrees():
        try:
            wt = repo.lookup_worktree(name)
        except (pygit2.GitError, KeyError):
            continue
        path = Path(wt.path)
        ours = _same_path(path, sync_dir) or path == sync_dir
        gone = not (path / ".git").exists()
        if not gone and not ours:
            continue
        head_file = admin_root / name / "HEAD"
        try:
            on_sync = head_file.read_text(encoding="utf-8").strip() == f"ref: {SYNC_REF}"
        except OSError:
            on_sync = False
        if ours or on_sync:
            # A locked entry refuses; adding then fails with a clear message.
            with contextlib.suppress(pygit2.GitError):
                wt.prune(True)


def _new_worktree_name(repo: pygit2.Repository, admin_root: Path) -> str:
    taken = set(repo.list_worktrees())
    name, n = WORKTREE_NAME, 1
    while name in taken or (admin_root / name).exists():
        n += 1
        name = f"{WORKTREE_NAME}-{n}"
    return name


def _add_worktree(repo: pygit2.Repository, sync_dir: Path, admin_root: Path) -> None:
    sync_dir.parent.mkdir(parents=True, exist_ok=True)
    admin_root.mkdir(parents=True, exist_ok=True)
    name = _new_worktree_name(repo, admin_root)
    ref = repo.lookup_reference(SYNC_REF)
    try:
        repo.add_worktree(name, str(sync_dir), ref)
    except (pygit2.GitError, OSError) as exc:
        # libgit2 leaves an empty administrative directory behind on some failures.
        with contextlib.suppress(OSError):
            (admin_root / name).rmdir()
        raise SyncGitError(f"cannot add the sync worktree at {sync_dir}: {exc}") from exc


def _worktree_has_files(sync_dir: Path) -> bool:
    return any(entry.name != ".git" for entry in sync_dir.iterdir())


def _initialize_data(sync_dir: Path) -> bool:
    """Write and commit the empty ``events.jsonl`` when the branch and the directory have no files."""
    wrepo = _open_worktree(sync_dir)
    tip = _branch_tip(wrepo)
    if tip is None:
        return False
    commit = wrepo[tip].peel(pygit2.Commit)
    if len(commit.tree) or _worktree_has_files(sync_dir):
        return False
    atomic_write_bytes(sync_dir / "events.jsonl", b"")
    index = wrepo.index
    index.read(True)
    index.add("events.jsonl")
    index.write()
    tree = index.write_tree()
    sig = _signature()
    oid = wrepo.create_commit(None, sig, sig, INIT_DATA_MESSAGE + "\n", tree, [tip])
    wrepo.lookup_reference(SYNC_REF).set_target(oid, INIT_DATA_MESSAGE)
    return True


def ensure_worktree(
    repo_path: Path | str,
    sync_dir: Path | str | None = None,
    remote: str | None = "origin",
    *,
    now_ns: int | None = None,
) -> WorktreeStatus:
    """Create, validate or repair the sync worktree (§11.1, §5.8).

    ``sync_dir`` defaults to :func:`default_sync_dir`.  The branch is ensured
    first (:func:`ensure_branch` with ``remote``; ``None`` in local-only mode).
    A missing directory is added as a worktree on ``refs/heads/a-sync``.  An
    unhealthy one (see :func:`check_worktree`) is moved to
    ``thrum-sync/a-sync.broken-<UTC seconds>``, its registration pruned and the
    worktree re-added; its JSONL files are returned for import.  Nothing is
    deleted.  When the branch has no files, an empty ``events.jsonl`` is
    committed as ``Initialize Thrum sync data``.

    Raises :class:`SyncGitError` when the worktree cannot be added (for example
    the branch is checked out in another live worktree).
    """
    sync_dir = Path(default_sync_dir(repo_path) if sync_dir is None else sync_dir)
    sync_dir = Path(os.path.abspath(sync_dir))
    ensure_branch(repo_path, remote)
    repo = _open(repo_path)
    admin_root = common_dir(repo_path) / "worktrees"
    reason = check_worktree(repo_path, sync_dir)
    if reason is None:
        return WorktreeStatus(sync_dir, "ok", initialized=_initialize_data(sync_dir))

    moved_to: Path | None = None
    recovered: list[Path] = []
    if sync_dir.exists() or sync_dir.is_symlink():
        stamp = format_ts_seconds(time.time_ns() if now_ns is None else now_ns)
        moved_to = _free_path(sync_dir.with_name(f"{sync_dir.name}.broken-{stamp}"))
        os.rename(sync_dir, moved_to)
        if moved_to.is_dir() and not moved_to.is_symlink():
            recovered = _recovered_jsonl(moved_to)
    _prune_stale_entries(repo, sync_dir, admin_root)
    _add_worktree(repo, sync_dir, admin_root)
    initialized = _initialize_data(sync_dir)
    if moved_to is None and reason == "missing":
        return WorktreeStatus(sync_dir, "created", initialized=initialized)
    return WorktreeStatus(
        sync_dir,
        "repaired",
        reason=reason,
        moved_to=moved_to,
        recovered_files=recovered,
        initialized=initialized,
    )


# ---------------------------------------------------------------------------
# JSONL merge (§11.4)

# A line's identity: its event_id (str) for JSON objects, its bytes for other
# lines.  str and bytes never compare equal, so the two kinds cannot collide.
_Key = str | bytes
TombstonePredicate = Callable[[dict[str, Any]], bool]
#: Called once per merge with the tombstone events that arrived from the remote;
#: returns the predicate that filters the merged files (``None``: no filtering).
TombstoneHook = Callable[[list[dict[str, Any]]], TombstonePredicate | None]


@dataclass
class MergeResult:
    """Outcome of :func:`merge_jsonl`.

    ``data`` is the merged file (``None``: the file is deleted).  ``conflicts``
    counts lines dropped because another line with the same key but different
    bytes won (reported by ``doctor``); ``from_remote`` counts the lines the remote
    contributed that the local file did not have (by key in a union, by bytes
    when the remote file is taken whole); ``tombstoned`` counts lines removed by the
    tombstone filter; ``kept_local`` is true when the local bytes were kept as
    they are (before filtering); ``remote_tombstones`` holds the tombstone events
    (§6.7) among the lines that came from the remote.
    """

    data: bytes | None
    conflicts: int = 0
    from_remote: int = 0
    tombstoned: int = 0
    kept_local: bool = False
    remote_tombstones: list[dict[str, Any]] = field(default_factory=list)


def _split(data: bytes) -> list[bytes]:
    """Lines of a JSONL file without their ``\\n``; empty lines are dropped."""
    return [line for line in data.split(b"\n") if line]


# Seconds part (``YYYY-MM-DDTHH:MM:SS``) → instant; bounded, cleared when full.
_SECONDS_CACHE: dict[str, int | None] = {}
_SECONDS_CACHE_MAX = 1 << 16


def _ts_ns(ts: object) -> int | None:
    """:func:`parse_ts_ns` with a fast path for thrum's own ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    Such a timestamp's instant is the instant of its seconds part plus the
    fraction, and valid exactly when the seconds part is and the sum stays in
    range; the seconds part repeats across neighbouring events, so it is cached.
    """
    if type(ts) is str and len(ts) == 27 and ts[19] == "." and ts[26] == "Z":
        frac = ts[20:26]
        if frac.isascii() and frac.isdigit():
            head = ts[:19]
            try:
                base = _SECONDS_CACHE[head]
            except KeyError:
                base = parse_ts_ns(head + "Z")
                if len(_SECONDS_CACHE) >= _SECONDS_CACHE_MAX:
                    _SECONDS_CACHE.clear()
                _SECONDS_CACHE[head] = base
            if base is None:
                return None
            ns = base + int(frac) * 1000
            return ns if ns <= TS_MAX_NS else None
    return parse_ts_ns(ts)


def _key_and_sort(line: bytes) -> tuple[_Key, bytes, bool]:
    """The merge key (§11.4), the sort key and whether the line is a tombstone event.

    The sort key is ``timefmt.sort_key`` (§2.3) encoded as one ``bytes`` value
    with the same order: ``<20-digit instant_ns>|<event_id>`` for events with a
    parseable timestamp, ``!<line>`` for the others (``!`` sorts before every
    digit, so they come first, ordered by their bytes).  Plain bytes instead of
    tuples keep a 100,000-line merge free of garbage-collector work.
    """
    obj = parse_line(line)
    if obj is None:
        return line, b"!" + line, False
    eid = obj.get("event_id")
    if type(eid) is not str or not eid:
        eid = event_id_of(obj)
    tomb = obj.get("type") in TOMBSTONE_TYPES
    ns = _ts_ns(obj.get("timestamp"))
    if ns is None:
        return eid, b"!" + line, tomb
    return eid, b"%020d|" % ns + eid.encode("utf-8", "surrogatepass"), tomb


# JSON may spell any character as \uXXXX, so a line that contains an escape is
# parsed even when the tombstone type names do not appear literally.
_TOMBSTONE_HINT = re.compile(b"|".join([*(re.escape(t.encode()) for t in sorted(TOMBSTONE_TYPES)), rb"\\u"]))


def _tombstone_objects(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in lines:
        if _TOMBSTONE_HINT.search(line) is None:
            continue
        obj = parse_line(line)
        if obj is not None and obj.get("type") in TOMBSTONE_TYPES:
            found.append(obj)
    return found


def filter_jsonl(data: bytes, is_tombstoned: TombstonePredicate) -> tuple[bytes | None, int]:
    """Remove tombstoned lines from a JSONL file (§6.7).

    Returns ``(data, removed)``.  Lines that are not JSON objects are never
    tombstoned; the order and bytes of the other lines are kept.  A file that
    loses lines and is left empty becomes ``None`` (removed); an already empty
    file stays empty.
    """
    lines = _split(data)
    kept: list[bytes] = []
    removed = 0
    for line in lines:
        obj = parse_line(line)
        if obj is not None and is_tombstoned(obj):
            removed += 1
        else:
            kept.append(line)
    if not removed:
        return data, 0
    if not kept:
        return None, removed
    return b"\n".join(kept) + b"\n", removed


def _finish(result: MergeResult, is_tombstoned: TombstonePredicate | None) -> MergeResult:
    if is_tombstoned is not None and result.data is not None:
        result.data, result.tombstoned = filter_jsonl(result.data, is_tombstoned)
    return result


def merge_jsonl(
    local: bytes | None,
    remote: bytes | None,
    base: bytes | None = None,
    *,
    is_tombstoned: TombstonePredicate | None = None,
) -> MergeResult:
    """Merge one JSONL file deterministically (§11.4); pure.

    ``None`` means the file does not exist on that side (or has no merge base).

    - One side only: deleted when the base holds exactly that side's bytes (the
      other side deleted it), else that side's bytes.
    - Both sides: when only one side changed the file since the base, that
      side's bytes (see below); when every key of the remote file is already in
      the local file, the local bytes are kept; otherwise the union keyed by
      ``event_id`` (§3.2 for lines without one; other lines by their bytes), one
      line per key (the smallest bytes when they differ), in sort-key order
      (§2.3), each line verbatim plus ``\\n``.
    - The output is filtered with ``is_tombstoned`` (see :func:`filter_jsonl`).

    The "one side changed" step is the usual three-way shortcut, added to the
    SPEC's rule for convergence: without it, a clone whose unchanged file holds
    the same events in another order (a line appended behind a later one from
    another clone's clock) keeps its order, commits it over the remote's sorted
    union, and the two clones revert each other's order on every cycle.
    """
    if local is None and remote is None:
        return MergeResult(None)
    if local is None or remote is None:
        if remote is not None:
            if base is not None and remote == base:
                return MergeResult(None)
            lines = _split(remote)
            res = MergeResult(remote, from_remote=len(lines), remote_tombstones=_tombstone_objects(lines))
            return _finish(res, is_tombstoned)
        assert local is not None
        if base is not None and local == base:
            return MergeResult(None)
        return _finish(MergeResult(local, kept_local=True), is_tombstoned)

    if local == remote or remote == base:
        return _finish(MergeResult(local, kept_local=True), is_tombstoned)
    local_lines = _split(local)
    remote_lines = _split(remote)
    local_set = set(local_lines)
    # Remote lines present byte-for-byte locally have their key locally too.
    novel = [line for line in dict.fromkeys(remote_lines) if line not in local_set]
    if local == base:
        res = MergeResult(remote, from_remote=len(novel), remote_tombstones=_tombstone_objects(novel))
        return _finish(res, is_tombstoned)
    if not novel:
        return _finish(MergeResult(local, kept_local=True), is_tombstoned)

    best: dict[_Key, bytes] = {}  # key -> winning line
    order: dict[bytes, bytes] = {}  # line -> sort key; each distinct line is parsed once
    conflicts = 0
    for line in dict.fromkeys(local_lines):
        key, order[line], _tomb = _key_and_sort(line)
        prev = best.get(key)
        if prev is None:
            best[key] = line
        else:
            conflicts += 1
            if line < prev:
                best[key] = line
    new_keys: list[_Key] = []
    tomb_keys: set[_Key] = set()
    for line in novel:
        key, order[line], tomb = _key_and_sort(line)
        prev = best.get(key)
        if prev is None:
            best[key] = line
            new_keys.append(key)
        else:
            conflicts += 1
            if line < prev:
                best[key] = line
        if tomb:
            tomb_keys.add(key)
    if not new_keys:
        # Every remote key is already local: keep the local file (conflicting
        # remote variants are still counted for doctor).
        return _finish(MergeResult(local, conflicts=conflicts, kept_local=True), is_tombstoned)
    # Sort keys are distinct across keys (they embed the event_id or the line).
    out = sorted(best.values(), key=order.__getitem__)
    tombstones = [best[k] for k in new_keys if k in tomb_keys]
    res = MergeResult(
        b"\n".join(out) + b"\n",
        conflicts=conflicts,
        from_remote=len(new_keys),
        remote_tombstones=_tombstone_objects(tombstones),
    )
    return _finish(res, is_tombstoned)


# ---------------------------------------------------------------------------
# Worktree merge (§11.4)


@dataclass
class MergeReport:
    """Outcome of :func:`merge_worktree`.

    ``changed`` lists the sync-dir relative paths (``/`` separated) that were
    written, ``deleted`` those removed; the caller re-projects the JSONL ones.
    ``new_lines`` counts JSONL lines now present that the local files did not
    have; ``conflicts`` and ``tombstoned`` sum the per-file counts of
    :class:`MergeResult`; ``remote_tombstones`` counts tombstone events that came
    from the remote.  ``up_to_date`` is true when the remote tip was already part
    of the local branch (nothing to merge).
    """

    remote_tip: pygit2.Oid | None = None
    base: pygit2.Oid | None = None
    up_to_date: bool = False
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    new_lines: int = 0
    conflicts: int = 0
    tombstoned: int = 0
    remote_tombstones: int = 0

    @property
    def files_merged(self) -> int:
        """Number of files the merge wrote or removed."""
        return len(self.changed) + len(self.deleted)


def is_jsonl_path(rel: str) -> bool:
    """True for the JSONL files of the log: ``*.jsonl`` at the top level and in ``messages/`` (§6.3)."""
    if not rel.endswith(".jsonl"):
        return False
    parts = rel.split("/")
    return len(parts) == 1 or (len(parts) == 2 and parts[0] == "messages")


def _is_temp_leftover(name: str) -> bool:
    # Left by an atomic write interrupted by a crash (fsutil.atomic_write_bytes).
    return name.startswith(".") and name.endswith(".tmp")


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return all(p not in ("", ".", "..") and p.lower() != ".git" and "\\" not in p for p in parts)


def _worktree_files(sync_dir: Path) -> dict[str, Path]:
    """Regular files of the sync worktree by relative path (no ``.git``, no symlinks, no temp leftovers)."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(sync_dir):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d.lower() != ".git" and not (here / d).is_symlink())
        for name in filenames:
            if name.lower() == ".git" or _is_temp_leftover(name):
                continue
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            files[path.relative_to(sync_dir).as_posix()] = path
    return files


def _tree_blobs(repo: pygit2.Repository, tree: pygit2.Tree | None) -> dict[str, tuple[pygit2.Oid, int]]:
    """Regular-file blobs of a tree by path (symlinks and submodules are skipped)."""
    out: dict[str, tuple[pygit2.Oid, int]] = {}
    if tree is None:
        return out
    stack: list[tuple[str, pygit2.Tree]] = [("", tree)]
    while stack:
        prefix, current = stack.pop()
        for entry in current:
            name = entry.name
            if name is None:
                continue
            path = prefix + name
            if entry.type == ObjectType.TREE:
                stack.append((path + "/", repo[entry.id].peel(pygit2.Tree)))
            elif entry.type == ObjectType.BLOB and entry.filemode in (FILE_MODE_BLOB, FILE_MODE_EXEC):
                out[path] = (entry.id, int(entry.filemode))
    return out


def _blob_data(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    return repo[oid].peel(pygit2.Blob).data


def _write_file(sync_dir: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    target = sync_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(sync_dir)
    if os.path.commonpath([root, os.path.realpath(target.parent)]) != root:
        raise SyncGitError(f"refusing to write outside the sync worktree: {rel}")
    atomic_write_bytes(target, data, mode)


def _merge_other(
    rel: str,
    local: Path | None,
    local_oid: pygit2.Oid | None,
    remote: tuple[pygit2.Oid, int] | None,
    base: tuple[pygit2.Oid, int] | None,
    remote_time: int,
) -> Literal["keep", "take", "delete"]:
    """Decide a non-JSONL file (§11.4): the side that changed; both changed → the newer."""
    r_oid = remote[0] if remote else None
    b_oid = base[0] if base else None
    if local_oid == r_oid or r_oid == b_oid:
        return "keep"
    if local_oid == b_oid:
        return "take" if r_oid is not None else "delete"
    # Changed on both sides.
    if local is None:
        return "take"
    if r_oid is None:
        return "keep"
    local_s = local.stat().st_mtime_ns // 1_000_000_000
    return "keep" if local_s > remote_time else "take"


def _descends(repo: pygit2.Repository, tip: pygit2.Oid, other: pygit2.Oid) -> bool:
    """True when ``other`` is ``tip`` or one of its ancestors."""
    return tip == other or repo.descendant_of(tip, other)


def merge_worktree(
    repo_path: Path | str,
    sync_dir: Path | str,
    remote_tip: pygit2.Oid | str | None,
    *,
    tombstones: TombstoneHook | None = None,
) -> MergeReport:
    """Merge the remote tip into the sync worktree's files (§11.4, cycle step 3).

    Local side: the files in ``sync_dir`` (committed or not).  Remote side: the
    tree of ``remote_tip``.  Base: the tree of merge-base(local branch tip,
    remote tip), when there is one (unrelated histories merge with no base).
    JSONL files go through :func:`merge_jsonl`; other files take the side that
    changed, or the newer one (local mtime versus the remote commit time, remote
    on a tie) when both did.  Changed files are written atomically.

    ``tombstones``, when given, is called once with the tombstone events
    (``purge.executed``, ``agent.cleanup``) that came from the remote and returns
    the predicate for the outputs (``None``: no filtering): it is applied to
    every JSONL file the merge changed and, when remote tombstones arrived, to
    every JSONL file.  Must run inside the writer (no concurrent appends).
    Nothing is committed: see :func:`commit_worktree`.
    """
    sync_dir = Path(sync_dir)
    report = MergeReport()
    if remote_tip is None:
        report.up_to_date = True
        return report
    repo = _open(repo_path)
    try:
        r_commit = repo[remote_tip].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise SyncGitError(f"remote tip {remote_tip} is not a commit in this repository") from exc
    report.remote_tip = r_commit.id
    l_tip = _branch_tip(repo)
    if l_tip is not None and _descends(repo, l_tip, r_commit.id):
        report.up_to_date = True
        return report
    base_commit: pygit2.Commit | None = None
    if l_tip is not None:
        base_oid = repo.merge_base(l_tip, r_commit.id)
        if base_oid is not None:
            base_commit = repo[base_oid].peel(pygit2.Commit)
            report.base = base_oid
    remote_files = _tree_blobs(repo, r_commit.tree)
    base_files = _tree_blobs(repo, base_commit.tree if base_commit else None)
    local_files = _worktree_files(sync_dir)

    outputs: dict[str, tuple[bytes | None, int]] = {}
    local_cache: dict[str, bytes] = {}
    remote_tombstones: list[dict[str, Any]] = []

    def local_bytes(rel: str) -> bytes | None:
        if rel not in local_files:
            return None
        if rel not in local_cache:
            local_cache[rel] = local_files[rel].read_bytes()
        return local_cache[rel]

    for rel in sorted(set(local_files) | set(remote_files)):
        if not _safe_rel(rel):
            continue
        remote = remote_files.get(rel)
        base = base_files.get(rel)
        local_data = local_bytes(rel) if (remote is not None or base is not None) else None
        if remote is None and base is None:
            continue  # local only and never shared: nothing to merge
        if is_jsonl_path(rel):
            if local_data is not None and remote is not None and pygit2.hash(local_data) == remote[0]:
                continue
            r_data = _blob_data(repo, remote[0]) if remote is not None else None
            b_data = _blob_data(repo, base[0]) if base is not None else None
            res = merge_jsonl(local_data, r_data, b_data)
            report.conflicts += res.conflicts
            remote_tombstones.extend(res.remote_tombstones)
            if res.data != local_data:
                outputs[rel] = (res.data, FILE_MODE_BLOB)
        else:
            local_oid = pygit2.hash(local_data) if local_data is not None else None
            decision = _merge_other(rel, local_files.get(rel), local_oid, remote, base, r_commit.commit_time)
            if decision == "take" and remote is not None:
                outputs[rel] = (_blob_data(repo, remote[0]), remote[1])
            elif decision == "delete" and local_data is not None:
                outputs[rel] = (None, FILE_MODE_BLOB)

    report.remote_tombstones = len(remote_tombstones)
    if tombstones is not None:
        predicate = tombstones(remote_tombstones)
        if predicate is not None:
            if remote_tombstones:
                targets = {rel for rel in local_files if is_jsonl_path(rel) and _safe_rel(rel)}
                targets |= {rel for rel in outputs if is_jsonl_path(rel)}
            else:
                targets = {rel for rel in outputs if is_jsonl_path(rel)}
            for rel in sorted(targets):
                current = outputs[rel][0] if rel in outputs else local_bytes(rel)
                if current is None:
                    continue
                filtered, removed = filter_jsonl(current, predicate)
                if removed:
                    report.tombstoned += removed
                    outputs[rel] = (filtered, FILE_MODE_BLOB)

    for rel in sorted(outputs):
        data, mode = outputs[rel]
        before = local_bytes(rel)
        if data == before:
            continue
        if data is None:
            (sync_dir / rel).unlink()
            report.deleted.append(rel)
            continue
        _write_file(sync_dir, rel, data, 0o755 if mode == FILE_MODE_EXEC else 0o644)
        report.changed.append(rel)
        if is_jsonl_path(rel):
            old = set(_split(before)) if before is not None else set()
            report.new_lines += sum(1 for line in set(_split(data)) if line not in old)
    return report


# ---------------------------------------------------------------------------
# Commit (§11.3 step 5)


@dataclass
class CommitResult:
    """Outcome of :func:`commit_worktree`.

    ``commit`` is the new commit (``None`` when the staged tree equalled the
    parent's); ``head`` the branch tip afterwards; ``parent`` the parent chosen
    (§11.3: the remote tip when it is not an ancestor of the local tip, else the
    local tip); ``moved`` whether ``refs/heads/a-sync`` changed.
    """

    commit: pygit2.Oid | None
    head: pygit2.Oid
    parent: pygit2.Oid
    moved: bool


def _stage_all(wrepo: pygit2.Repository, sync_dir: Path) -> pygit2.Oid:
    """Stage the whole worktree (additions, changes, deletions) and return the tree id."""
    index = wrepo.index
    index.read(True)
    index.add_all()
    for entry in list(index):
        path = entry.path
        name = path.rsplit("/", 1)[-1]
        if _is_temp_leftover(name) or not os.path.lexists(sync_dir / path):
            index.remove(path)
    index.write()
    return index.write_tree()


def commit_worktree(
    repo_path: Path | str,
    sync_dir: Path | str,
    remote_tip: pygit2.Oid | str | None,
    message: str | None = None,
) -> CommitResult:
    """Stage the whole sync worktree and commit it on top of the right parent (§11.3 step 5).

    Tree T = the staged worktree.  Parent P = ``remote_tip`` when it exists and
    is not an ancestor of the local tip L, else L.  When T equals P's tree no
    commit is made (the branch moves to P when P is the remote tip); otherwise a
    commit (author and committer ``Thrum <thrum@local>``, message ``message`` or
    ``sync: <UTC seconds>``) becomes the tip of ``refs/heads/a-sync``, which the
    worktree's HEAD follows.  No hooks run, nothing is signed.  Must run inside
    the writer (no half-appended line is staged).
    """
    sync_dir = Path(sync_dir)
    del repo_path  # the worktree's repository shares refs and objects with it
    wrepo = _open_worktree(sync_dir)
    head = wrepo.lookup_reference("HEAD")
    if head.type != pygit2.enums.ReferenceType.SYMBOLIC or head.target != SYNC_REF:
        raise SyncGitError(f"the sync worktree is not on {SYNC_REF}")
    local_tip = _branch_tip(wrepo)
    if local_tip is None:
        raise SyncGitError(f"{SYNC_REF} does not exist")
    parent = local_tip
    if remote_tip is not None:
        r_oid = wrepo[remote_tip].peel(pygit2.Commit).id
        if not _descends(wrepo, local_tip, r_oid):
            parent = r_oid
    tree = _stage_all(wrepo, sync_dir)
    parent_commit = wrepo[parent].peel(pygit2.Commit)
    ref = wrepo.lookup_reference(SYNC_REF)
    if tree == parent_commit.tree_id:
        moved = parent != local_tip
        if moved:
            ref.set_target(parent, "thrum sync: fast-forward to remote")
        return CommitResult(None, parent, parent, moved)
    sig = _signature()
    text = message if message is not None else sync_message()
    if not text.endswith("\n"):
        text += "\n"
    oid = wrepo.create_commit(None, sig, sig, text, tree, [parent])
    ref.set_target(oid, "thrum sync: commit")
    return CommitResult(oid, oid, parent, True)


# ---------------------------------------------------------------------------
# Transport: fetch and push (§11.3 steps 2 and 6)


@dataclass
class TransportStatus:
    """Which transport the last network operations used, for ``doctor`` and ``sync.status``.

    ``fallback_used`` becomes true the first time pygit2 could not do a network
    operation and the ``git`` CLI was used instead; ``last_fallback_reason`` keeps
    pygit2's error from that time.
    """

    fallback_used: bool = False
    fallback_count: int = 0
    last_fallback_reason: str | None = None
    last_fallback_at: float | None = None
    last_via: Literal["pygit2", "cli"] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, via: Literal["pygit2", "cli"], reason: str | None = None) -> None:
        """Note one network operation done through ``via`` (and why, for the CLI)."""
        with self._lock:
            self.last_via = via
            if via == "cli":
                self.fallback_used = True
                self.fallback_count += 1
                self.last_fallback_reason = reason
                self.last_fallback_at = time.time()


#: Process-wide record of the transports used (read by the daemon's doctor check).
TRANSPORT_STATUS = TransportStatus()


class _DeadlineExceeded(Exception):
    pass


class _CredentialsExhausted(Exception):
    pass


class ThrumRemoteCallbacks(pygit2.RemoteCallbacks):
    """Remote callbacks that never prompt, cap credential attempts and honour a deadline.

    - SSH: the agent (when ``SSH_AUTH_SOCK`` is set), then each key file of
      ``ssh_dir`` (``~/.ssh`` by default) named in :data:`SSH_KEY_NAMES`, without a
      passphrase.  At most ``max_attempts`` credentials are handed out.
    - HTTPS user/password: none (libgit2 does not use git's credential helpers);
      the caller falls back to the ``git`` CLI.
    - Host keys: accepted only when libgit2 found them valid: for SSH that is a
      match in ``~/.ssh/known_hosts`` (unknown and changed hosts are refused,
      unlike pygit2's default, which accepts any SSH host key); for HTTPS the TLS
      verification.
    - Every callback raises once ``deadline`` (a ``time.monotonic()`` value) has
      passed, which aborts the operation.
    """

    def __init__(
        self,
        deadline: float,
        *,
        max_attempts: int = MAX_CREDENTIAL_ATTEMPTS,
        ssh_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.ssh_dir = ssh_dir if ssh_dir is not None else Path.home() / ".ssh"
        self.environ = os.environ if environ is None else environ
        self.attempts = 0
        self.rejected: dict[str, str] = {}
        self.untrusted_host: str | None = None
        self._ssh_candidates: Iterator[pygit2.Keypair | pygit2.KeypairFromAgent] | None = None

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise _DeadlineExceeded("timed out")

    def _candidates(self, username: str) -> Iterator[pygit2.Keypair | pygit2.KeypairFromAgent]:
        if self.environ.get("SSH_AUTH_SOCK"):
            yield pygit2.KeypairFromAgent(username)
        for name in SSH_KEY_NAMES:
            private = self.ssh_dir / name
            if not private.is_file():
                continue
            public = private.with_name(name + ".pub")
            yield pygit2.Keypair(username, str(public) if public.is_file() else None, str(private), "")

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.Keypair | pygit2.KeypairFromAgent:
        """Hand out the next credential, or abort when none is left or the cap is reached."""
        self._check_deadline()
        self.attempts += 1
        if self.attempts > self.max_attempts:
            raise _CredentialsExhausted(f"authentication failed for {url} after {self.max_attempts} attempts")
        username = username_from_url or "git"
        if allowed_types & CredentialType.USERNAME:
            return pygit2.Username(username)
        if allowed_types & CredentialType.SSH_KEY:
            if self._ssh_candidates is None:
                self._ssh_candidates = self._candidates(username)
            cred = next(self._ssh_candidates, None)
            if cred is not None:
                return cred
            raise _CredentialsExhausted(f"no SSH agent identity or key file accepted by {url}")
        raise _CredentialsExhausted(f"no credentials available for {url} without prompting")

    def certificate_check(self, certificate: None, valid: bool, host: bytes | str) -> bool:
        """Accept the host only when libgit2 validated it (known_hosts for SSH, TLS for HTTPS)."""
        self._check_deadline()
        if not valid:
            self.untrusted_host = host.decode("utf-8", "replace") if isinstance(host, bytes) else str(host)
        return bool(valid)

    def transfer_progress(self, stats: Any) -> None:
        """Abort a fetch that runs past the deadline."""
        self._check_deadline()

    def sideband_progress(self, string: str) -> None:
        """Abort when the deadline has passed while the server is talking."""
        self._check_deadline()

    def push_transfer_progress(self, objects_pushed: int, total_objects: int, bytes_pushed: int) -> None:
        """Abort a push that runs past the deadline."""
        self._check_deadline()

    def push_update_reference(self, refname: str, message: str | None) -> None:
        """Record the remote's refusal of a reference update."""
        if message:
            self.rejected[refname] = message


@dataclass
class FetchResult:
    """Outcome of :func:`fetch`: the remote tip (``None``: the remote has no ``a-sync``) and the transport."""

    tip: pygit2.Oid | None
    via: Literal["pygit2", "cli"]
    fallback_reason: str | None = None


@dataclass
class PushResult:
    """Outcome of :func:`push`.

    ``status``: ``"ok"``; ``"rejected"`` (non-fast-forward, fetch first, stale
    info: fetch, merge, commit and try again); ``"error"`` (unreachable,
    authentication, hook refusal…; ``message`` says what).
    """

    status: Literal["ok", "rejected", "error"]
    message: str | None = None
    via: Literal["pygit2", "cli"] = "pygit2"
    fallback_reason: str | None = None
    pushed: pygit2.Oid | None = None


_SCP_LIKE = re.compile(r"^[^/:]+:")


def _is_local_url(url: str) -> bool:
    """True for file remotes: ``file://`` URLs and plain paths (git's rules for scp-like syntax)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    return _SCP_LIKE.match(url) is None


def _remote_url(repo: pygit2.Repository, remote: str) -> str:
    try:
        r = repo.remotes[remote]
    except (KeyError, ValueError) as exc:
        raise SyncGitError(f"no remote named {remote!r}") from exc
    url = r.url
    if not url:
        raise SyncGitError(f"remote {remote!r} has no URL")
    return url


def _check_local_remote(repo: pygit2.Repository, url: str) -> None:
    """Explain a missing file remote (libgit2 would only say "unsupported URL protocol")."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if not os.path.isabs(path) and repo.workdir:
        path = os.path.join(repo.workdir, path)
    if not os.path.exists(path):
        raise SyncGitError(f"remote repository not found: {url}")


def _tracking_ref(remote: str) -> str:
    return f"refs/remotes/{remote}/{SYNC_BRANCH}"


def _tracking_tip(repo: pygit2.Repository, remote: str) -> pygit2.Oid | None:
    ref = repo.references.get(_tracking_ref(remote))
    return None if ref is None else ref.resolve().target  # type: ignore[return-value]


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _call_with_deadline(fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run ``fn`` in a helper thread; give up waiting after ``timeout_s`` (see the module docstring)."""
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name="thrum-git-network", daemon=True)
    thread.start()
    thread.join(max(timeout_s, 0.0))
    if thread.is_alive():
        raise _DeadlineExceeded("timed out")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _apply_libgit2_timeouts(timeout_s: float) -> None:
    ms = max(int(timeout_s * 1000), 1000)
    pygit2.settings.server_connect_timeout = min(ms, 30_000)
    pygit2.settings.server_timeout = ms


# -- git CLI fallback ---------------------------------------------------------

_GIT_ENV_DROP = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_PREFIX",
)


def _cli_env(repo_path: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C", GIT_PAGER="cat", PAGER="cat")
    env["GIT_SSH_COMMAND"] = _ssh_command(repo_path, env)
    return env


def _ssh_command(repo_path: Path | str, env: Mapping[str, str]) -> str:
    """The user's SSH command (environment, then ``core.sshCommand``) with ``BatchMode=yes`` added."""
    base = env.get("GIT_SSH_COMMAND")
    if not base:
        try:
            base = _open(repo_path).config["core.sshCommand"]
        except (KeyError, SyncGitError, pygit2.GitError):
            base = None
    return f"{base or 'ssh'} -o BatchMode=yes"


def _run_git(repo_path: Path | str, args: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Run ``git`` non-interactively, killing its process group at the deadline."""
    cmd = ["git", "-C", str(repo_path), "-c", "core.hooksPath=/dev/null", *args]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_cli_env(repo_path),
            start_new_session=True,
        )
    except OSError as exc:
        raise SyncGitError(f"cannot run git: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise _DeadlineExceeded("timed out") from None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _cli_fetch(repo_path: Path | str, remote: str, timeout_s: float) -> bool:
    """``git fetch`` of the sync branch; False when the remote has no such branch."""
    spec = f"+{SYNC_REF}:{_tracking_ref(remote)}"
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", remote, spec]
    rc, _out, err = _run_git(repo_path, args, timeout_s)
    if rc == 0:
        return True
    if "couldn't find remote ref" in err.lower():
        return False
    raise SyncGitError(err.strip() or f"git fetch exited with {rc}")


_REJECT_WORDS = ("non-fast-forward", "fetch first", "stale info", "non-fastforward", "not present locally")


_PushStatus = Literal["ok", "rejected", "error"]


def _cli_push(repo_path: Path | str, remote: str, timeout_s: float) -> tuple[_PushStatus, str | None]:
    args = ["push", "--porcelain", "--no-verify", remote, f"{SYNC_REF}:{SYNC_REF}"]
    rc, out, err = _run_git(repo_path, args, timeout_s)
    if rc == 0:
        return "ok", None
    for line in out.splitlines():
        if line.startswith("!"):
            detail = line.split("\t")[-1]
            if "[rejected]" in detail or any(w in detail for w in _REJECT_WORDS):
                return "rejected", detail
            return "error", detail
    message = err.strip() or out.strip() or f"git push exited with {rc}"
    if any(w in message for w in _REJECT_WORDS):
        return "rejected", message
    return "error", message


# -- public fetch / push ------------------------------------------------------


def fetch(
    repo_path: Path | str,
    remote: str = "origin",
    *,
    timeout_s: float = NETWORK_TIMEOUT_S,
    ssh_dir: Path | None = None,
) -> FetchResult:
    """Fetch ``+refs/heads/a-sync:refs/remotes/<remote>/a-sync`` and return the remote tip (§11.3 step 2).

    File remotes go through pygit2 only.  For network remotes pygit2 is tried
    first; when it fails (unsupported transport, authentication, host key not
    verifiable by libssh2…) the ``git`` CLI is used with the time left and the
    fallback is recorded in :data:`TRANSPORT_STATUS`.  Raises
    :class:`SyncGitError` on failure or when ``timeout_s`` runs out.
    """
    deadline = time.monotonic() + timeout_s
    repo = _open(repo_path)
    url = _remote_url(repo, remote)
    spec = f"+{SYNC_REF}:{_tracking_ref(remote)}"
    local = _is_local_url(url)
    if local:
        _check_local_remote(repo, url)

    def via_pygit2() -> None:
        r = _open(repo_path).remotes[remote]
        # PRUNE drops a stale tracking ref when the remote no longer has the branch
        # (only refs matching this refspec are considered).
        r.fetch(
            [spec],
            callbacks=ThrumRemoteCallbacks(deadline, ssh_dir=ssh_dir),
            prune=FetchPrune.PRUNE,
            proxy=None if local else True,
        )

    try:
        if local:
            via_pygit2()
        else:
            _apply_libgit2_timeouts(timeout_s)
            _call_with_deadline(via_pygit2, deadline - time.monotonic())
    except _DeadlineExceeded:
        raise SyncGitError(f"fetch from {remote} timed out after {timeout_s:g} s") from None
    except (pygit2.GitError, _CredentialsExhausted, OSError, KeyError, ValueError) as exc:
        if local:
            raise SyncGitError(f"fetch from {remote} failed: {_error_text(exc)}") from exc
        reason = _error_text(exc)
    else:
        TRANSPORT_STATUS.record("pygit2")
        return FetchResult(_tracking_tip(_open(repo_path), remote), "pygit2")
    TRANSPORT_STATUS.record("cli", reason)
    try:
        found = _cli_fetch(repo_path, remote, deadline - time.monotonic())
    except _DeadlineExceeded:
        raise SyncGitError(f"fetch from {remote} timed out after {timeout_s:g} s") from None
    repo = _open(repo_path)
    if not found:
        stale = repo.references.get(_tracking_ref(remote))
        if stale is not None:
            stale.delete()
        return FetchResult(None, "cli", reason)
    return FetchResult(_tracking_tip(repo, remote), "cli", reason)


def _classify_push_error(message: str) -> Literal["rejected", "error"]:
    low = message.lower()
    return "rejected" if any(w in low for w in _REJECT_WORDS) else "error"


def push(
    repo_path: Path | str,
    remote: str = "origin",
    *,
    timeout_s: float = NETWORK_TIMEOUT_S,
    ssh_dir: Path | None = None,
) -> PushResult:
    """Push ``refs/heads/a-sync`` to ``<remote>``'s ``a-sync`` (§11.3 step 6); never raises.

    ``rejected`` (non-fast-forward, fetch first, stale info) means: fetch, merge,
    commit and push again.  Any other failure is ``error`` with a message; the
    local commits are untouched.  Transport choice as in :func:`fetch`.  On
    success ``refs/remotes/<remote>/a-sync`` is set to the pushed commit.
    """
    deadline = time.monotonic() + timeout_s
    try:
        repo = _open(repo_path)
        url = _remote_url(repo, remote)
        tip = _branch_tip(repo)
        local = _is_local_url(url)
        if local:
            _check_local_remote(repo, url)
    except SyncGitError as exc:
        return PushResult("error", str(exc))
    if tip is None:
        return PushResult("error", f"{SYNC_REF} does not exist")
    cbs = ThrumRemoteCallbacks(deadline, ssh_dir=ssh_dir)

    def via_pygit2() -> None:
        r = _open(repo_path).remotes[remote]
        r.push([f"{SYNC_REF}:{SYNC_REF}"], callbacks=cbs, proxy=None if local else True)

    reason: str | None = None
    try:
        if local:
            via_pygit2()
        else:
            _apply_libgit2_timeouts(timeout_s)
            _call_with_deadline(via_pygit2, deadline - time.monotonic())
    except _DeadlineExceeded:
        return PushResult("error", f"push to {remote} timed out after {timeout_s:g} s")
    except (pygit2.GitError, _CredentialsExhausted, OSError, KeyError, ValueError) as exc:
        reason = _error_text(exc)
        if local or _classify_push_error(reason) == "rejected":
            TRANSPORT_STATUS.record("pygit2")
            return PushResult(_classify_push_error(reason), reason)
    if reason is None:
        TRANSPORT_STATUS.record("pygit2")
        if cbs.rejected:
            refused = "; ".join(f"{ref}: {msg}" for ref, msg in sorted(cbs.rejected.items()))
            return PushResult(_classify_push_error(refused), refused)
        _set_tracking(repo_path, remote, tip)
        return PushResult("ok", pushed=tip)

    TRANSPORT_STATUS.record("cli", reason)
    try:
        status, message = _cli_push(repo_path, remote, deadline - time.monotonic())
    except _DeadlineExceeded:
        return PushResult("error", f"push to {remote} timed out after {timeout_s:g} s", "cli", reason)
    except SyncGitError as exc:
        return PushResult("error", str(exc), "cli", reason)
    if status == "ok":
        _set_tracking(repo_path, remote, tip)
        return PushResult("ok", via="cli", fallback_reason=reason, pushed=tip)
    return PushResult(status, message, "cli", reason)


def _set_tracking(repo_path: Path | str, remote: str, tip: pygit2.Oid) -> None:
    with contextlib.suppress(pygit2.GitError, SyncGitError):
        _open(repo_path).references.create(_tracking_ref(remote), tip, force=True)
