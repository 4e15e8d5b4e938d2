"""The git sync service: the per-daemon state machine around the pygit2 engine (SPEC §11).

:class:`GitSyncService` is created once per kernel (``service_for(kernel)``)
and lives in ``kernel.plugin_state("sync.git")``.  It does three things:

* **Start-up** (:meth:`GitSyncService.prepare`, before the store opens): make
  sure the sync branch and worktree exist and are healthy (§11.1); a broken
  worktree is moved aside and re-added by the engine, and the JSONL lines of
  the moved copy are appended to the fresh worktree's files (deduplicated by
  ``event_id``) so that the store's catch-up projects them.  Stale git lock
  files left by a daemon killed in the middle of a cycle are removed.
* **Scheduling** (:meth:`GitSyncService.run`, a kernel service, §11.2): a cycle
  at start, every ``daemon.sync_interval`` seconds (0: no timer), after local
  writes (trailing debounce of ``daemon.sync_debounce_ms``, at most 5 times that
  after the first write) and on ``sync.force`` / ``context.sync``.  One cycle at
  a time; a trigger during a cycle queues exactly one more.
* **The cycle** (§11.3): ``flock(var/sync.lock)`` (held → skipped, state
  ``pending``) → fetch (not in local-only mode, not without the remote; a
  failure is state ``error`` but the local commit still happens) → merge,
  catch-up and commit in one job inside the writer
  (:meth:`EventStore.run_exclusive`: no half-appended line is merged or staged;
  observers run for the events the merge brought) → push; rejected → back to
  fetch, at most 3 retries.  Network calls run in worker threads that are
  abandoned on cancellation; local git work runs in the writer's thread.

Shutdown: a cycle cancelled during a network call still commits its local
state (shielded, ≤ 10 s) when the writer is still accepting work, and makes no
new network call.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from thrum_core.canonical import parse_line
from thrum_core.events.log import list_log_files
from thrum_core.fsutil import atomic_write_bytes
from thrum_core.ids import event_id_of
from thrum_core.paths import read_origin_url
from thrum_core.timefmt import format_ts, parse_ts_ns
from thrum_plugins.sync._git_files import NETWORK_TIMEOUT_S, SYNC_BRANCH, SYNC_REF, healthy_sync_tip

if TYPE_CHECKING:
    from thrum_core.events.store import EventStore
    from thrum_core.kernel import Kernel
    from thrum_core.paths import ThrumPaths
    from thrum_plugins.sync import _git_impl as engine

#: The pygit2 engine; every function imports it where it needs it, so that a
#: daemon whose worktree is healthy answers ``health`` before pygit2 is loaded.
ENGINE_MODULE = "thrum_plugins.sync._git_impl"

__all__ = [
    "MAX_PUSH_RETRIES",
    "SHUTDOWN_LOCAL_STEPS_S",
    "STATE_KEY",
    "CycleReport",
    "GitSyncService",
    "import_recovered",
    "init_repo",
    "local_only_source",
    "remove_stale_locks",
    "service_for",
]

log = logging.getLogger("thrum.sync")

#: ``kernel.plugin_state`` key of the git sync plugin.
STATE_KEY = "sync.git"
#: A rejected push goes back to fetch at most this many times (§11.3 step 6).
MAX_PUSH_RETRIES = 3
#: At shutdown a cycle may finish its local steps for this long (§14).
SHUTDOWN_LOCAL_STEPS_S = 10.0
#: The first write of a burst starts a cycle no later than this many debounce periods after it.
DEBOUNCE_MAX_FACTOR = 5

_SOURCE_NAMES = {"file": "config", "flag": "flag", "env": "env", "default": "default"}


def local_only_source(kernel: Kernel) -> str:
    """Where ``daemon.local_only`` came from: ``flag`` | ``env`` | ``config`` | ``default`` (§9.10)."""
    return _SOURCE_NAMES.get(kernel.config.sources.get("daemon.local_only", "default"), "default")


def _now_ts() -> str:
    return format_ts(time.time_ns())


# ---------------------------------------------------------------------------
# Recovery helpers (blocking; used by prepare, init and doctor --fix)


def _line_key(line: bytes) -> str | bytes:
    """The identity of a JSONL line: its ``event_id`` (§3.2 when absent), else its bytes."""
    obj = parse_line(line)
    if obj is None:
        return line
    return event_id_of(obj)


def import_recovered(sync_dir: Path, moved_to: Path | None, files: list[Path]) -> int:
    """Append the lines of a moved-aside worktree's JSONL files that the sync dir lacks.

    Deduplicated by ``event_id`` across every log file of ``sync_dir`` (lines
    that are not JSON objects by their bytes).  Each line goes to the file of
    the same relative path; a torn last line (no ``\\n`` and not a JSON object)
    is left in the moved copy.  Files are rewritten atomically.  Returns the
    number of lines imported.
    """
    if moved_to is None or not files:
        return 0
    known: set[str | bytes] = set()
    for rel in list_log_files(sync_dir):
        with contextlib.suppress(OSError):
            for line in (sync_dir / rel).read_bytes().split(b"\n"):
                if line:
                    known.add(_line_key(line))
    imported = 0
    for src in files:
        try:
            rel = src.relative_to(moved_to).as_posix()
            data = src.read_bytes()
        except (ValueError, OSError) as exc:
            log.warning("cannot import recovered file %s: %s", src, exc)
            continue
        lines = data.split(b"\n")
        if not data.endswith(b"\n") and lines and parse_line(lines[-1]) is None:
            lines.pop()  # a torn tail: stays in the moved copy
        new: list[bytes] = []
        for line in lines:
            if not line:
                continue
            key = _line_key(line)
            if key in known:
                continue
            known.add(key)
            new.append(line)
        if not new:
            continue
        target = sync_dir / rel
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            current = b""
        if current and not current.endswith(b"\n"):
            current += b"\n"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, current + b"\n".join(new) + b"\n", 0o644)
        imported += len(new)
    return imported


def remove_stale_locks(common_dir: Path, sync_dir: Path, remote: str | None) -> list[str]:
    """Remove git lock files a killed daemon may have left on the refs and index it owns.

    Only for locks of objects that thrum alone writes: the sync worktree's
    index, ``refs/heads/a-sync`` and ``refs/remotes/<remote>/a-sync``.  Call it
    only while holding the daemon lock (no other thrum process runs).
    """
    candidates = [common_dir / "refs" / "heads" / f"{SYNC_BRANCH}.lock"]
    if remote:
        candidates.append(common_dir / "refs" / "remotes" / remote / f"{SYNC_BRANCH}.lock")
    dotgit = sync_dir / ".git"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = dotgit.read_text("utf-8").strip()
        if text.startswith("gitdir:"):
            gitdir = (sync_dir / text[len("gitdir:") :].strip()).resolve()
            candidates.append(gitdir / "index.lock")
    removed: list[str] = []
    for path in candidates:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove stale git lock %s: %s", path, exc)
            continue
        removed.append(str(path))
        log.warning("removed stale git lock %s (left by an interrupted sync)", path)
    return removed


def _drop_empty_placeholder(repo_path: Path, sync_dir: Path) -> None:
    """Remove an empty, unregistered ``sync_dir`` (the kernel creates it before ``prepare``).

    An empty directory holds nothing to recover, so it is not moved aside as a
    broken worktree; the engine then adds the worktree there.
    """
    from thrum_plugins.sync import _git_impl as engine

    try:
        empty = sync_dir.is_dir() and not sync_dir.is_symlink() and not any(sync_dir.iterdir())
        if empty and engine.check_worktree(repo_path, sync_dir) is not None:
            sync_dir.rmdir()
    except OSError:
        pass


def init_repo(paths: ThrumPaths, remote: str | None) -> dict[str, Any]:
    """``thrum init`` step 5: branch and worktree (§11.1), from any worktree of the repository.

    ``remote`` is ``None`` in local-only mode (remote refs are not read).
    Returns ``{sync_worktree, branch, branch_source, worktree, initialized,
    recovered, moved_to}``.
    """
    from thrum_plugins.sync import _git_impl as engine

    repo_path = paths.root
    sync_dir = paths.sync_dir
    branch_source = engine.ensure_branch(repo_path, remote)
    _drop_empty_placeholder(repo_path, sync_dir)
    status = engine.ensure_worktree(repo_path, sync_dir, remote)
    recovered = import_recovered(sync_dir, status.moved_to, status.recovered_files)
    return {
        "sync_worktree": str(status.path),
        "branch": SYNC_BRANCH,
        "branch_source": branch_source,
        "worktree": status.state,
        "initialized": status.initialized,
        "recovered": recovered,
        "moved_to": str(status.moved_to) if status.moved_to else None,
    }


# ---------------------------------------------------------------------------
# Cycle report


@dataclass
class CycleReport:
    """What one cycle did: the ``cycle`` object of ``sync.force {wait: true}`` (§9.10)."""

    fetched: bool = False
    new_events: int = 0
    files_merged: int = 0
    commit: str | None = None
    pushed: bool = False
    attempts: int = 0
    error: str | None = None
    #: the remote's a-sync equals the local branch after the cycle (everything is published)
    in_sync: bool = False
    skipped: str | None = None
    started_at: str | None = None
    seconds: float = 0.0
    #: seconds per step (fetch, merge, project, commit, push; summed over attempts)
    timings: dict[str, float] = field(default_factory=dict)

    def add_time(self, step: str, seconds: float) -> None:
        """Add ``seconds`` to the time spent in ``step``."""
        self.timings[step] = self.timings.get(step, 0.0) + seconds

    def to_json(self) -> dict[str, Any]:
        """``{fetched, new_events, files_merged, commit, pushed, attempts, error}``."""
        return {
            "fetched": self.fetched,
            "new_events": self.new_events,
            "files_merged": self.files_merged,
            "commit": self.commit,
            "pushed": self.pushed,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(eq=False)
class CycleWaiter:
    """A ``sync.force {wait}`` (or ``context.sync``) waiting for the cycle it started."""

    done: trio.Event = field(default_factory=trio.Event)
    report: CycleReport | None = None


@dataclass
class _LocalResult:
    merge: engine.MergeReport | None
    new_events: int
    commit: engine.CommitResult | None
    merge_error: str | None = None
    commit_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# The service


def service_for(kernel: Kernel) -> GitSyncService:
    """The git sync service of ``kernel`` (created on first use)."""
    state = kernel.plugin_state(STATE_KEY)
    svc = state.get("service")
    if svc is None:
        svc = GitSyncService(kernel)
        state["service"] = svc
    return svc


class GitSyncService:
    """Scheduling, cycles and status of git sync for one kernel."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.paths = kernel.paths
        cfg = kernel.config.daemon
        self.local_only: bool = bool(cfg.local_only)
        self.local_only_source = local_only_source(kernel)
        self.remote_name: str = cfg.sync_remote
        self.interval_s: int = int(cfg.sync_interval)
        self.debounce_s: float = max(int(cfg.sync_debounce_ms), 0) / 1000.0
        self.repo_path: Path = self.paths.main_root
        self.sync_dir: Path = self.paths.sync_dir
        self.network_timeout_s: float = NETWORK_TIMEOUT_S

        self.running = False
        self.worktree_error: str | None = None
        self.prepared: dict[str, Any] | None = None
        self.last_sync_at: str | None = None
        self.last_attempt_at: str | None = None
        self.last_error: str | None = None
        self.head: str | None = None
        self.pending_events = 0
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self.syncing = False

        self._forced = False
        self._first_write: float | None = None
        self._last_write: float | None = None
        self._next_timer: float | None = None
        self._wake = trio.Event()
        self._cycle_lock = trio.Lock()
        self._waiters: list[CycleWaiter] = []
        self._state = "stopped"
        self._publish("stopped")

    # -- state -------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The current ``sync_state`` (§9.10)."""
        return self._state

    def _publish(self, state: str) -> None:
        self._state = state
        self.kernel.status["sync_state"] = state

    def _settled_state(self) -> str:
        """The state between cycles when the last one succeeded."""
        if self.local_only:
            return "local-only"
        return "pending" if self.pending_events > 0 else "synced"

    @property
    def store(self) -> EventStore:
        store = self.kernel.store
        if store is None:
            raise RuntimeError("the event store is not open")
        return store

    # -- start-up (blocking, before the store opens) -------------------------------
    def prepare(self) -> dict[str, Any]:
        """Check and repair the branch and the worktree; import lines of a broken copy (§11.1).

        When plain files show a healthy, initialised worktree
        (:func:`~thrum_plugins.sync._git_files.healthy_sync_tip`) there is
        nothing to repair and pygit2 is not loaded here.
        """
        remote = None if self.local_only else self.remote_name
        result: dict[str, Any] = {"state": None, "recovered": 0, "moved_to": None, "stale_locks": []}
        try:
            result["stale_locks"] = remove_stale_locks(self.paths.git_common_dir, self.sync_dir, remote)
            tip = healthy_sync_tip(self.paths.git_common_dir, self.sync_dir)
            if tip is not None:
                result["state"] = "ok"
                self.worktree_error = None
                self.head = tip
                self.prepared = result
                return result
            from thrum_plugins.sync import _git_impl as engine

            _drop_empty_placeholder(self.repo_path, self.sync_dir)
            status = engine.ensure_worktree(self.repo_path, self.sync_dir, remote)
            result["state"] = status.state
            if status.state == "repaired":
                log.warning(
                    "sync worktree was unhealthy (%s): moved to %s and re-added",
                    status.reason,
                    status.moved_to,
                )
            result["moved_to"] = str(status.moved_to) if status.moved_to else None
            result["recovered"] = import_recovered(self.sync_dir, status.moved_to, status.recovered_files)
            if result["recovered"]:
                log.info("imported %d lines from %s", result["recovered"], status.moved_to)
            self.worktree_error = None
            self.head = self._read_head()
        except Exception as exc:  # a broken repository must not stop the daemon
            self.worktree_error = str(exc) or type(exc).__name__
            result["error"] = self.worktree_error
            log.error("git sync disabled: the sync worktree could not be prepared: %s", self.worktree_error)
        self.prepared = result
        return result

    def _read_head(self) -> str | None:
        try:
            import pygit2

            repo = pygit2.Repository(str(self.repo_path))
            ref = repo.references.get(SYNC_REF)
            return None if ref is None else str(ref.resolve().target)
        except Exception:
            return None

    # -- triggers (called on the trio thread) ----------------------------------------
    def note_local_write(self) -> None:
        """A writer batch with events authored here was applied (§11.2 debounce)."""
        self.pending_events += 1
        if not self.running:
            return
        now = trio.current_time()
        first = self._first_write is None
        if first:
            self._first_write = now
        self._last_write = now
        if self._state in ("synced", "idle"):
            self._publish("pending")
        if first:
            # Later writes of the burst only move the deadline later: the loop,
            # woken at the earlier one, reads the new one and waits again.
            self._wake.set()

    def trigger(self) -> CycleWaiter:
        """Ask for a cycle now (``sync.force``); the waiter is done when that cycle ends."""
        waiter = CycleWaiter()
        if not self.running:
            waiter.report = CycleReport(error=self.stopped_reason())
            waiter.done.set()
            return waiter
        self._waiters.append(waiter)
        self._forced = True
        self._wake.set()
        return waiter

    def stopped_reason(self) -> str:
        """Why no cycle can run."""
        if self.worktree_error:
            return f"git sync is stopped: {self.worktree_error}"
        return "git sync is not running"

    def _debounce_deadline(self) -> float | None:
        if self._last_write is None or self._first_write is None:
            return None
        return min(
            self._last_write + self.debounce_s, self._first_write + DEBOUNCE_MAX_FACTOR * self.debounce_s
        )

    def next_deadline(self) -> float | None:
        """The trio clock time of the next scheduled cycle (``None``: none scheduled)."""
        if self._forced:
            return trio.current_time()
        times = [t for t in (self._debounce_deadline(), self._next_timer) if t is not None]
        return min(times) if times else None

    async def _wait_for_trigger(self) -> str:
        while True:
            now = trio.current_time()
            if self._forced:
                return "force"
            debounce = self._debounce_deadline()
            if debounce is not None and debounce <= now:
                return "write"
            if self._next_timer is not None and self._next_timer <= now:
                return "timer"
            deadlines = [t for t in (debounce, self._next_timer) if t is not None]
            self._wake = trio.Event()
            with trio.move_on_at(min(deadlines) if deadlines else math.inf):
                await self._wake.wait()

    # -- the loop --------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sync loop (a kernel service): a first cycle once the daemon serves, then per trigger."""
        if self.prepared is None:
            await trio.to_thread.run_sync(self._check_only)
        if self.worktree_error is not None:
            self._publish("stopped")
            task_status.started()
            log.warning("git sync is not running: %s", self.worktree_error)
            return
        self.running = True
        self._publish("local-only" if self.local_only else "idle")
        self._forced = True  # the start-up cycle
        task_status.started()
        try:
            # The engine (pygit2, ~100 ms to import) loads after ``ready`` and in a
            # worker thread: on the trio thread it would hold up every request.
            await self.kernel.wait_ready()
            await trio.to_thread.run_sync(importlib.import_module, ENGINE_MODULE)
            while True:
                reason = await self._wait_for_trigger()
                await self.run_cycle(reason)
        finally:
            self.running = False
            self._publish("stopped")
            for waiter in self._waiters:
                waiter.report = CycleReport(error="the daemon is shutting down")
                waiter.done.set()
            self._waiters = []

    def _check_only(self) -> None:
        """Health check when ``prepare`` did not run (the store was opened elsewhere)."""
        from thrum_plugins.sync import _git_impl as engine

        try:
            reason = engine.check_worktree(self.repo_path, self.sync_dir)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
        self.worktree_error = None if reason is None else f"sync worktree {self.sync_dir}: {reason}"
        self.head = self._read_head()

    async def run_cycle(self, reason: str = "force") -> CycleReport:
        """Run one cycle now (waiting for a running one) and hand its report to the waiters."""
        now = trio.current_time()
        self._forced = False
        self._first_write = self._last_write = None
        if self.interval_s > 0:
            self._next_timer = now + self.interval_s
        waiters, self._waiters = self._waiters, []
        report = CycleReport()
        try:
            report = await self._cycle(reason)
        finally:
            self.last_report = report
            for waiter in waiters:
                waiter.report = report
                waiter.done.set()
        return report

    # -- one cycle ---------------------------------------------------------------------
    def _try_flock(self) -> int | None:
        path = self.paths.sync_lock_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _has_remote(self) -> bool:
        return read_origin_url(self.paths.git_common_dir, self.remote_name) is not None

    def _fetch(self) -> engine.FetchResult | None:
        """Step 2 in a worker thread: ``None`` when there is no remote to fetch from."""
        if not self._has_remote():
            return None
        from thrum_plugins.sync import _git_impl as engine

        return engine.fetch(self.repo_path, self.remote_name, timeout_s=self.network_timeout_s)

    def _tombstone_hook(
        self, remote_tombstones: list[dict[str, Any]]
    ) -> Callable[[dict[str, Any]], bool] | None:
        """The merge output filter: the tombstones already projected (§6.7 (3)).

        Tombstones that arrive with this merge are projected by the catch-up
        that follows, which rewrites the files they cover before the commit.
        """
        del remote_tombstones
        covered = self.store.tombstone_filter()
        if not covered:
            return None

        def predicate(obj: dict[str, Any]) -> bool:
            ts = parse_ts_ns(obj.get("timestamp"))
            if ts is None or type(obj.get("type")) is not str:
                return False
            return covered(obj, (ts, event_id_of(obj).encode("utf-8", "surrogatepass")))

        return predicate

    def _local_steps(self, tip: Any, message: str | None = None) -> _LocalResult:
        """Steps 3 to 5 inside the writer: merge ``tip``, project the new events, commit."""
        from thrum_plugins.sync import _git_impl as engine

        result = _LocalResult(None, 0, None)
        commit_tip = tip
        clock = time.perf_counter
        if tip is not None:
            try:
                t = clock()
                merge = engine.merge_worktree(
                    self.repo_path, self.sync_dir, tip, tombstones=self._tombstone_hook
                )
                result.merge = merge
                result.timings["merge"] = clock() - t
                if merge.changed or merge.deleted:
                    t = clock()
                    result.new_events = len(self.store.catch_up_now(source="sync"))
                    result.timings["project"] = clock() - t
            except Exception as exc:
                # Never commit on top of a remote tip whose files were not merged.
                result.merge_error = f"merge failed: {exc}"
                commit_tip = None
                log.exception("git sync merge failed")
        try:
            t = clock()
            result.commit = engine.commit_worktree(self.repo_path, self.sync_dir, commit_tip, message)
            result.timings["commit"] = clock() - t
        except Exception as exc:
            result.commit_error = f"commit failed: {exc}"
            log.exception("git sync commit failed")
        return result

    async def _local(self, tip: Any, message: str | None = None) -> _LocalResult:
        return await self.store.run_exclusive(lambda: self._local_steps(tip, message))

    async def _finish_local_on_shutdown(self) -> None:
        """A cycle cancelled by shutdown still commits what is on disk (no network call, <= 10 s).

        The kernel stops the writer right after cancelling the services: while
        it drains, exclusive jobs are refused; once it has stopped nothing else
        writes the sync dir and :meth:`EventStore.run_exclusive` runs the job
        in a worker thread.
        """
        from thrum_core.errors import InternalError

        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_LOCAL_STEPS_S):
            while True:
                try:
                    local = await self._local(None)
                except InternalError:
                    if self.kernel.store is None:
                        return
                    await trio.sleep(0.01)  # the writer is draining
                    continue
                except Exception as exc:
                    log.info("local sync steps skipped at shutdown: %s", exc)
                    return
                if local.commit is not None:
                    self.head = str(local.commit.head)
                    if local.commit.commit is not None:
                        log.info("committed local events at shutdown (%s)", local.commit.commit)
                return

    async def _cycle(self, reason: str) -> CycleReport:
        report = CycleReport(started_at=_now_ts())
        started = time.monotonic()
        async with self._cycle_lock:
            fd = self._try_flock()
            if fd is None:
                report.skipped = report.error = "skipped: var/sync.lock is held by another process"
                self.last_attempt_at = _now_ts()
                self._publish("pending")
                return report
            self.syncing = True
            self._publish("syncing")
            pending_before = self.pending_events
            try:
                await self._cycle_steps(report)
            except trio.Cancelled:
                raise
            except Exception as exc:  # a bug or an unexpected git failure: report, keep the loop alive
                log.exception("git sync cycle failed")
                report.error = report.error or f"{type(exc).__name__}: {exc}"
            finally:
                self.syncing = False
                os.close(fd)
                report.seconds = time.monotonic() - started
                self.cycles += 1
                self.last_attempt_at = _now_ts()
        if report.error is None:
            self.last_sync_at = self.last_attempt_at
            self.last_error = None
            self.pending_events = max(self.pending_events - pending_before, 0)
            self._publish(self._settled_state())
        else:
            self.last_error = report.error
            self._publish("error")
        log.debug(
            "sync cycle (%s): %s in %.3f s (%s)",
            reason,
            report.to_json(),
            report.seconds,
            ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in report.timings.items()),
        )
        return report

    async def _cycle_steps(self, report: CycleReport) -> None:
        network = not self.local_only
        error: str | None = None
        while True:
            report.attempts += 1
            tip: Any = None
            fetched = False
            has_remote = False
            if network:
                t = time.perf_counter()
                try:
                    res = await trio.to_thread.run_sync(self._fetch, abandon_on_cancel=True)
                except trio.Cancelled:
                    await self._finish_local_on_shutdown()
                    raise
                except Exception as exc:  # SyncGitError, or a broken repository configuration
                    error = str(exc) or type(exc).__name__
                    log.warning("git sync fetch failed: %s", error)
                else:
                    has_remote = res is not None
                    fetched = has_remote
                    tip = res.tip if res is not None else None
                    report.fetched = report.fetched or fetched
                report.add_time("fetch", time.perf_counter() - t)
            t = time.perf_counter()
            local = await self._local(tip if fetched else None)
            report.add_time("local", time.perf_counter() - t)
            for step, seconds in local.timings.items():
                report.add_time(step, seconds)
            if local.merge is not None:
                report.files_merged += local.merge.files_merged
            report.new_events += local.new_events
            if local.commit is not None:
                self.head = str(local.commit.head)
                if local.commit.commit is not None:
                    report.commit = str(local.commit.commit)
            local_error = local.merge_error or local.commit_error
            if local_error is not None:
                error = local_error
                break
            if error is not None or not fetched:
                report.in_sync = not network or not has_remote
                break
            if self.kernel.shutting_down:
                break
            if local.commit is not None and tip is not None and local.commit.head == tip:
                report.in_sync = True  # nothing to push
                break
            t = time.perf_counter()
            pushed = await trio.to_thread.run_sync(self._push, abandon_on_cancel=True)
            report.add_time("push", time.perf_counter() - t)
            if pushed.status == "ok":
                report.pushed = True
                report.in_sync = True
                break
            if pushed.status == "rejected":
                log.info("git sync push rejected (%s); fetching again", pushed.message)
                if report.attempts > MAX_PUSH_RETRIES:
                    error = f"push rejected after {MAX_PUSH_RETRIES} retries"
                    break
                continue
            error = pushed.message or "push failed"
            log.warning("git sync push failed: %s", error)
            break
        report.error = error

    def _push(self) -> engine.PushResult:
        from thrum_plugins.sync import _git_impl as engine

        return engine.push(self.repo_path, self.remote_name, timeout_s=self.network_timeout_s)

    # -- context.sync ------------------------------------------------------------------------
    async def publish_context(self, name: str, source: Path) -> dict[str, Any]:
        """``context.sync``: copy ``source`` into ``<sync dir>/context/<name>.md``, commit, push (§9.9)."""
        target = self.sync_dir / "context" / f"{name}.md"
        result: dict[str, Any] = {
            "agent_name": name,
            "path": str(target),
            "commit": None,
            "pushed": False,
            "local_only": self.local_only,
            "error": None,
        }
        if not self.running:
            result["error"] = self.stopped_reason()
            return result
        message = f"context: sync {name}"

        def copy_and_commit() -> _LocalResult:
            data = source.read_bytes()
            try:
                same = target.read_bytes() == data
            except FileNotFoundError:
                same = False
            if not same:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data, 0o644)
            return self._local_steps(None, message)

        async with self._cycle_lock:
            fd = self._try_flock()
            if fd is None:
                result["error"] = "var/sync.lock is held by another process"
                return result
            try:
                local = await self.store.run_exclusive(copy_and_commit)
            finally:
                os.close(fd)
        if local.commit_error is not None:
            result["error"] = local.commit_error
            return result
        if local.commit is not None:
            self.head = str(local.commit.head)
            if local.commit.commit is not None:
                result["commit"] = str(local.commit.commit)
        if self.local_only:
            return result
        waiter = self.trigger()
        await waiter.done.wait()
        report = waiter.report or CycleReport(error="no cycle ran")
        result["pushed"] = report.error is None and report.in_sync and report.fetched
        result["error"] = report.error
        return result

    # -- status -----------------------------------------------------------------------------
    def transport(self) -> dict[str, Any]:
        """Which transport the network operations used (the engine's ``TRANSPORT_STATUS``)."""
        # Read only if the engine is loaded: importing it here would block the trio thread.
        ts = getattr(sys.modules.get(ENGINE_MODULE), "TRANSPORT_STATUS", None)
        if ts is None:  # not loaded yet: nothing went over the network
            return {
                "last_via": None,
                "fallback_used": False,
                "fallback_count": 0,
                "last_fallback_reason": None,
                "last_fallback_at": None,
            }
        return {
            "last_via": ts.last_via,
            "fallback_used": ts.fallback_used,
            "fallback_count": ts.fallback_count,
            "last_fallback_reason": ts.last_fallback_reason,
            "last_fallback_at": format_ts(int(ts.last_fallback_at * 1e9)) if ts.last_fallback_at else None,
        }

    def status(self) -> dict[str, Any]:
        """The ``sync.status`` result (§9.10) plus ``transport``."""
        next_at: str | None = None
        if self.running:
            deadline = self.next_deadline()
            if deadline is not None:
                delay = max(deadline - trio.current_time(), 0.0)
                next_at = format_ts(time.time_ns() + int(delay * 1e9))
        remote = None
        with contextlib.suppress(OSError):
            if self._has_remote():
                remote = self.remote_name
        return {
            "running": self.running,
            "sync_state": self._state,
            "local_only": self.local_only,
            "local_only_source": self.local_only_source,
            "remote": remote,
            "branch": SYNC_BRANCH,
            "worktree": str(self.sync_dir),
            "interval_s": self.interval_s,
            "last_sync_at": self.last_sync_at,
            "last_attempt_at": self.last_attempt_at,
            "next_sync_at": next_at,
            "last_error": self.last_error or (self.worktree_error if not self.running else None),
            "pending_events": self.pending_events,
            "head": self.head,
            "transport": self.transport(),
        }
