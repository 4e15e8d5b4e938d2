"""Work-context extraction in two helper processes, both halves at the same time.

pygit2 holds the GIL while libgit2 works, so an extraction in a daemon thread stalls the event loop for
as long as it runs, and two extractions cannot overlap. A cold extraction (the first one on a worktree:
nothing cached) of the bench repository takes about 24 ms, half of it in the commit walk and half in the
numstat and status scan (see :mod:`thrum_plugins.rpc._workctx`). Here each half runs in a long-lived
helper process of its own (:mod:`thrum_plugins.rpc._workctx_worker`): the halves overlap, the daemon's
GIL stays free, and each helper keeps its half's caches warm between heartbeats.

Fallbacks keep it an optimisation only: until both helpers are ready, after a helper died or timed out
(it is killed and started again on a later call), or if helpers cannot be started at all, the extraction
runs in the calling thread as before. Two halves that saw different HEADs (a commit landed in between) are
asked again once, then the extraction runs in the calling thread.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from thrum_plugins.rpc import _workctx

__all__ = ["HelperError", "WorkContextPool", "close_shared_pool", "shared_pool"]

log = logging.getLogger("thrum.workctx")

#: Longest wait for a half's answer; a helper that takes longer is killed (and restarted on a later call).
REQUEST_TIMEOUT_S = 30.0
#: Longest wait for a helper to exit after its pipe was closed, before it is killed.
EXIT_TIMEOUT_S = 2.0
#: After this many helper start failures in a row the pool gives up (every call runs in-process).
MAX_START_FAILURES = 3
#: The helper's command line (the read and the write descriptor are appended).
HELPER_ARGV: tuple[str, ...] = (sys.executable, "-m", "thrum_plugins.rpc._workctx_worker")


class HelperError(RuntimeError):
    """A helper process died, timed out or could not be started."""


class _Helper:
    """One helper process, one request at a time (callers hold :attr:`lock`)."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self._argv = list(argv)
        self.lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbox: Connection | None = None  # the helper's answers
        self._outbox: Connection | None = None  # our requests
        self._ready = False
        self.start_failures = 0

    def start(self) -> bool:
        """Spawn the helper process unless it runs; ``False`` when it cannot be started (counted, logged).

        Returns at once: the helper reports ready (see :meth:`ready`) once it has imported pygit2.
        """
        if self._proc is not None:
            return True
        if self.start_failures >= MAX_START_FAILURES:
            return False
        to_helper_r, to_helper_w = os.pipe()
        from_helper_r, from_helper_w = os.pipe()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen(
                [*self._argv, str(to_helper_r), str(from_helper_w)],
                pass_fds=(to_helper_r, from_helper_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the daemon's terminal is the daemon's to handle
            )
        except OSError as exc:
            os.close(to_helper_w)
            os.close(from_helper_r)
            self.start_failures += 1
            log.warning("could not start work-context helper %s: %s", self.name, exc)
            return False
        finally:
            os.close(to_helper_r)  # the helper's ends: it has its own copies
            os.close(from_helper_w)
        self._outbox = Connection(to_helper_w, readable=False)
        self._inbox = Connection(from_helper_r, writable=False)
        return True

    def ready(self, wait: float = 0.0) -> bool:
        """Whether the helper finished starting (waits up to ``wait`` seconds for it)."""
        if self._ready:
            return True
        if self._inbox is None:
            return False
        try:
            if not self._inbox.poll(wait):
                if self._proc is not None and self._proc.poll() is not None:
                    self.start_failures += 1
                    self.stop()
                return False
            message = self._inbox.recv()
        except (EOFError, OSError):
            self.start_failures += 1
            self.stop()
            return False
        self._ready = isinstance(message, tuple) and message[:1] == ("ready",)
        if self._ready:
            self.start_failures = 0
        else:
            self.stop()
        return self._ready

    def send(self, op: str, *args: Any) -> None:
        """Send one request (the helper must be ready)."""
        assert self._outbox is not None
        try:
            self._outbox.send((op, args))
        except OSError as exc:
            self.stop()
            raise HelperError(f"work-context helper {self.name} is gone: {exc}") from exc

    def receive(self, deadline: float) -> Any:
        """The answer to the request sent last; raises :class:`HelperError` (and stops the helper)."""
        assert self._inbox is not None
        try:
            if not self._inbox.poll(max(0.0, deadline - time.monotonic())):
                self.stop(kill=True)
                raise HelperError(f"work-context helper {self.name} did not answer in time")
            ok, value = self._inbox.recv()
        except (EOFError, OSError) as exc:
            self.stop()
            raise HelperError(f"work-context helper {self.name} is gone: {exc}") from exc
        if not ok:
            raise HelperError(f"work-context helper {self.name} failed: {value}")
        return value

    def stop(self, *, kill: bool = False) -> None:
        """Close the pipes (the helper exits on end of file) and reap it, killing it if it lingers.

        ``kill``: kill it at once (it did not answer in time, so it would not notice the end of file).
        """
        proc, self._proc = self._proc, None
        for conn in (self._outbox, self._inbox):
            if conn is not None:
                conn.close()
        self._outbox = self._inbox = None
        self._ready = False
        if proc is None:
            return
        if kill:
            proc.kill()
        try:
            proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(EXIT_TIMEOUT_S)


class WorkContextPool:
    """Extracts work contexts with the two halves in two helper processes (see the module docstring)."""

    def __init__(self, helper_argv: Sequence[str] = HELPER_ARGV) -> None:
        """``helper_argv``: the helper's command; the two pipe descriptors are appended to it."""
        self._history = _Helper("history", helper_argv)
        self._changes = _Helper("changes", helper_argv)
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether helpers are (or may still be) used; ``False`` after :meth:`close` or repeated failures."""
        failures = max(self._history.start_failures, self._changes.start_failures)
        return not self._closed and failures < MAX_START_FAILURES

    def start(self) -> None:
        """Spawn both helpers now (they get ready in the background)."""
        if not self.usable:
            return
        for helper in (self._history, self._changes):
            with helper.lock:
                helper.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until both helpers are ready (for benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        self.start()
        for helper in (self._history, self._changes):
            with helper.lock:
                if not helper.ready(max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def extract(self, worktree: str | os.PathLike[str], *, max_commits: int = 50) -> dict[str, Any]:
        """:func:`~thrum_plugins.rpc._workctx.extract_work_context` of ``worktree``, halves in parallel."""
        path = os.path.abspath(os.fspath(worktree))
        max_commits = max(0, max_commits)
        if self.usable:
            with self._history.lock, self._changes.lock:
                try:
                    result = self._extract_locked(path, max_commits)
                except HelperError as exc:
                    log.warning("%s; extracting in the daemon", exc)
                    result = None
            if result is not None:
                return result
        return _workctx.extract_work_context(path, max_commits=max_commits)

    def _extract_locked(self, path: str, max_commits: int) -> dict[str, Any] | None:
        helpers = (self._history, self._changes)
        started = [helper.start() for helper in helpers]  # both, before either is waited for
        if not (all(started) and all(helper.ready() for helper in helpers)):
            return None  # still starting (or cannot start): this call runs in the daemon
        for _attempt in range(2):
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            self._history.send("history", path, max_commits)
            self._changes.send("changes", path)
            try:
                history = self._history.receive(deadline)
            finally:
                # Always collect the other answer, so the next request gets its own.
                changes = self._changes.receive(deadline)
            if history.get("head") == changes.get("head"):
                return _workctx.combine(
                    path, history, changes, lambda undated: self._dates(path, undated, max_commits)
                )
        return None  # HEAD moved twice while we looked

    def _dates(self, path: str, undated: set[str], skip: int) -> dict[str, int]:
        self._history.send("dates", path, sorted(undated), skip)
        dates: dict[str, int] = self._history.receive(time.monotonic() + REQUEST_TIMEOUT_S)
        return dates

    def clear_caches(self) -> None:
        """Empty the caches of both helpers and of this process (for benchmarks and tests)."""
        _workctx.clear_caches()
        for helper in (self._history, self._changes):
            with helper.lock:
                if helper.ready():
                    helper.send("clear")
                    helper.receive(time.monotonic() + REQUEST_TIMEOUT_S)

    def close(self) -> None:
        """Stop both helpers; later calls extract in the calling thread."""
        self._closed = True
        for helper in (self._history, self._changes):
            with helper.lock:
                helper.stop()


_shared: WorkContextPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkContextPool:
    """The daemon's pool (one per process), made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WorkContextPool()
        return _shared


def close_shared_pool() -> None:
    """Stop the daemon's pool, if one was made (at daemon shutdown); the next use makes a new one."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()
