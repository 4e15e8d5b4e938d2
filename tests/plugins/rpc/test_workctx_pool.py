"""The work-context helper processes: same answers as the in-process extraction, and every way they fail.

Real helper processes (``python -m thrum_plugins.rpc._workctx_worker``) over real pipes, on repositories
built with the git CLI.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_plugins.rpc import _workctx, _workctx_pool
from thrum_plugins.rpc._workctx import extract_work_context
from thrum_plugins.rpc._workctx_pool import WorkContextPool

from .gitcli import Git

pytestmark = pytest.mark.usefixtures("fresh_workctx_caches")

READY_S = 30.0


@pytest.fixture
def pool() -> Iterator[WorkContextPool]:
    made = WorkContextPool()
    yield made
    made.close()


def _repo(tmp_path: Path, commits: int = 6) -> Git:
    """A feature branch ``commits`` ahead of main, with a merge, a rename, dirty and untracked files."""
    g = Git(tmp_path / "repo")
    for i in range(12):
        g.write(f"pkg{i % 3}/m{i}.py", "".join(f"line {n}\n" for n in range(10)))
    g.write("old-name.txt", "to be renamed\n" * 20)
    g.commit("base")
    g("checkout", "-q", "-b", "feature")
    for step in range(commits):
        g.write(f"pkg{step % 3}/m{step}.py", f"rewritten {step}\n" * 3)
        g.write(f"pkg{step % 3}/new{step}.py", "new\n")
        g.commit(f"step {step}")
    g("mv", "old-name.txt", "new-name.txt")
    g.commit("rename")
    g("checkout", "-q", "-b", "side", "HEAD~2")
    g.write("side.txt", "side\n")
    g.commit("side work")
    g("checkout", "-q", "feature")
    g("merge", "-q", "--no-edit", "side")
    g.write("pkg0/m0.py", "dirty\n")
    g.write("untracked.txt", "untracked\n")
    return g


def _comparable(ctx: dict[str, Any]) -> dict[str, Any]:
    out = dict(ctx)
    out.pop("git_updated_at")
    return out


@pytest.mark.parametrize("max_commits", [50, 2, 0])
def test_helpers_answer_exactly_as_the_in_process_extraction(
    tmp_path: Path, pool: WorkContextPool, max_commits: int
) -> None:
    g = _repo(tmp_path)
    assert pool.wait_ready(READY_S)
    via_helpers = pool.extract(g.path, max_commits=max_commits)
    # The helpers did the work: this process read no commit.
    assert len(_workctx._COMMIT_FILES) == 0
    in_process = extract_work_context(g.path, max_commits=max_commits)
    assert "error" not in in_process
    assert in_process["file_changes"] and in_process["uncommitted_files"]
    assert _comparable(via_helpers) == _comparable(in_process)
    # Warm helpers (their caches filled) still agree.
    assert _comparable(pool.extract(g.path, max_commits=max_commits)) == _comparable(in_process)


def test_errors_come_back_as_from_the_in_process_extraction(tmp_path: Path, pool: WorkContextPool) -> None:
    assert pool.wait_ready(READY_S)
    missing = tmp_path / "gone"
    assert _comparable(pool.extract(missing)) == _comparable(extract_work_context(missing))
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    ctx = pool.extract(not_a_repo)
    assert ctx["error"] and ctx["unmerged_commits"] == [] and ctx["uncommitted_files"] == []
    assert _comparable(ctx) == _comparable(extract_work_context(not_a_repo))


def test_before_the_helpers_are_ready_the_caller_extracts(tmp_path: Path, pool: WorkContextPool) -> None:
    g = _repo(tmp_path, commits=2)
    ctx = pool.extract(g.path)  # the first call starts the helpers and does not wait for them
    assert "error" not in ctx and ctx["unmerged_commits"]
    assert len(_workctx._COMMIT_FILES) > 0  # it ran here
    assert pool.wait_ready(READY_S)


def test_a_killed_helper_is_replaced_and_no_call_is_lost(tmp_path: Path, pool: WorkContextPool) -> None:
    g = _repo(tmp_path, commits=3)
    expected = _comparable(extract_work_context(g.path))
    assert pool.wait_ready(READY_S)
    victim = pool._history._proc
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert _comparable(pool.extract(g.path)) == expected  # answered in-process
    assert pool.wait_ready(READY_S)  # a new helper
    replacement = pool._history._proc
    assert replacement is not None and replacement.pid != victim.pid
    _workctx.clear_caches()
    assert _comparable(pool.extract(g.path)) == expected
    assert len(_workctx._COMMIT_FILES) == 0  # the new helper answered


def test_a_helper_that_cannot_start_is_given_up_after_a_few_tries(tmp_path: Path) -> None:
    g = _repo(tmp_path, commits=2)
    expected = _comparable(extract_work_context(g.path))
    broken = WorkContextPool(helper_argv=(sys.executable, "-c", "raise SystemExit(3)"))
    try:
        for _ in range(_workctx_pool.MAX_START_FAILURES + 2):
            assert not broken.wait_ready(READY_S)
            assert _comparable(broken.extract(g.path)) == expected
        assert not broken.usable
    finally:
        broken.close()


_STUCK_HELPER = """
import os, sys, time
from multiprocessing.connection import Connection
inbox = Connection(int(sys.argv[1]), writable=False)
outbox = Connection(int(sys.argv[2]), readable=False)
outbox.send(("ready", os.getpid()))
inbox.recv()
time.sleep(600)
"""


def test_a_helper_that_does_not_answer_is_killed_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = _repo(tmp_path, commits=2)
    expected = _comparable(extract_work_context(g.path))
    monkeypatch.setattr(_workctx_pool, "REQUEST_TIMEOUT_S", 0.5)
    stuck = WorkContextPool(helper_argv=(sys.executable, "-c", _STUCK_HELPER))
    try:
        assert stuck.wait_ready(READY_S)
        procs = [stuck._history._proc, stuck._changes._proc]
        assert _comparable(stuck.extract(g.path)) == expected  # answered in-process after the timeout
        for proc in procs:
            assert proc is not None and proc.poll() is not None  # killed, not left behind
    finally:
        stuck.close()


def test_close_stops_the_helpers_and_later_calls_still_answer(tmp_path: Path, pool: WorkContextPool) -> None:
    g = _repo(tmp_path, commits=2)
    assert pool.wait_ready(READY_S)
    procs = [pool._history._proc, pool._changes._proc]
    pool.close()
    for proc in procs:
        assert proc is not None and proc.poll() is not None
    ctx = pool.extract(g.path)
    assert "error" not in ctx and ctx["unmerged_commits"]
