"""The daemon's work-context helper processes: started by the first extraction, gone when the daemon is.

A real daemon subprocess (all built-in plugins) in a real repository; its children are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from thrum_core.testing.daemon import DaemonProcess, wait_for
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

HELPER_MODULE = "thrum_plugins.rpc._workctx_worker"


def _helpers_of(pid: int) -> list[int]:
    """Pids of the work-context helpers whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and HELPER_MODULE.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _working_agent(daemon: DaemonProcess, root: Path) -> None:
    """An agent with a session in ``root`` on a feature branch, and two heartbeats (two extractions)."""
    subprocess.run(["git", "checkout", "-q", "-b", "feature"], cwd=root, check=True)
    (root / "work.py").write_text("print('work')\n")
    subprocess.run(["git", "add", "work.py"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "work"],
        cwd=root,
        check=True,
    )
    with daemon.client() as c:
        agent = {"name": "frost", "role": "implementer", "module": "m", "worktree": str(root)}
        c.call("agent.register", agent)
        c.call("session.start", {"agent_id": "frost", "caller_agent_id": "frost"})
        for _ in range(2):
            beat = c.call("session.heartbeat", {"caller_agent_id": "frost"})
            assert beat["branch"] == "feature" and beat["unmerged_commits"] == 1


@pytest.fixture
def repo(tmp_path: Path) -> ThrumRepo:
    return make_thrum_repo(tmp_path, with_remote=False)


def test_helpers_start_on_first_use_and_stop_with_the_daemon(repo: ThrumRepo) -> None:
    daemon = DaemonProcess(repo).start()
    try:
        assert _helpers_of(daemon.pid) == []  # nothing extracted yet: no helper
        _working_agent(daemon, repo.root)
        assert wait_for(lambda: len(_helpers_of(daemon.pid)) == 2, timeout=20)
        helpers = _helpers_of(daemon.pid)
        with daemon.client() as c:
            (ctx,) = c.call("agent.listContext", {"file": "work.py"})["contexts"]
        assert ctx["changed_files"] == ["work.py"]
    finally:
        daemon.stop()
    assert wait_for(lambda: not any(_alive(pid) for pid in helpers), timeout=20)


def test_helpers_exit_when_the_daemon_is_killed(repo: ThrumRepo) -> None:
    daemon = DaemonProcess(repo).start()
    try:
        _working_agent(daemon, repo.root)
        assert wait_for(lambda: len(_helpers_of(daemon.pid)) == 2, timeout=20)
        helpers = _helpers_of(daemon.pid)
        os.kill(daemon.pid, signal.SIGKILL)
        assert wait_for(lambda: not any(_alive(pid) for pid in helpers), timeout=20)
    finally:
        daemon.stop()
