"""The daemon's start path (``python -m thrum_core.daemon run``, what ``thrum daemon start`` spawns).

At ``ready`` the daemon serves every RPC method, yet has not imported click,
the CLI or its command plugins, nor pygit2 when the sync worktree is healthy;
pygit2 comes after, for the first sync cycle.  A real daemon in a subprocess;
a logging filter in that process records ``sys.modules`` when the kernel logs
``ready``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.client import Client
from thrum_core.daemon import USAGE, main, parse_args
from thrum_core.lifecycle import pid_alive

PROBE = """
import json, logging, sys

class ReadyProbe(logging.Filter):
    def filter(self, record):
        if record.name == "thrum.kernel" and record.getMessage().startswith("ready"):
            with open(sys.argv[1], "w") as fh:
                json.dump(sorted(sys.modules), fh)
        return True

logging.getLogger("thrum.kernel").addFilter(ReadyProbe())
from thrum_core.daemon import main
sys.exit(main(sys.argv[2:]))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


def _wait(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")


def _call(repo: Path, method: str) -> Any:
    with Client(repo / ".thrum" / "var" / "thrum.sock", dial_timeout=1, call_timeout=10) as client:
        return client.call(method)


def _answers(repo: Path) -> bool:
    try:
        return _call(repo, "health")["status"] == "ok"
    except Exception:
        return False


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An initialised repository (healthy sync worktree), no daemon."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=_env())
    done = subprocess.run(
        ["thrum", "init", "--no-daemon"], cwd=root, env=_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return root


class Daemon:
    """A daemon started through the probe; ``modules`` is ``sys.modules`` at ``ready``."""

    def __init__(self, repo: Path, out: Path):
        self.repo = repo
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, str(out), "run", "--repo", str(repo)],
            cwd=repo,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def modules_at_ready(self) -> set[str]:
        _wait(lambda: self.out.exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.proc.communicate()[1]
        return set(json.loads(_wait(lambda: self.out.read_text())))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def start(repo: Path) -> Daemon:
        daemon = Daemon(repo, tmp_path / f"modules-{len(started)}.json")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def _heavy(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_ready_without_click_cli_or_pygit2_then_sync_runs(
    repo: Path, daemons: Callable[[Path], Daemon]
) -> None:
    daemon = daemons(repo)
    modules = daemon.modules_at_ready()
    assert _heavy(modules, ("click", "thrum_cli", "thrum_plugins.cli", "pygit2")) == []
    # The probe did see the daemon's modules.
    assert {"trio", "thrum_plugins.rpc.health", "thrum_plugins.sync.git"} <= modules
    assert _wait(lambda: _answers(repo))
    # Every method is served, and the sync loop (pygit2) runs its start-up cycle after ready.
    status = _wait(lambda: (s := _call(repo, "sync.status"))["last_sync_at"] and s)
    assert status["running"] is True and status["last_error"] is None
    assert status["sync_state"] == "local-only"
    assert daemon.stop() == 0


def test_a_broken_worktree_is_still_repaired_before_ready(
    repo: Path, daemons: Callable[[Path], Daemon]
) -> None:
    sync_dir = repo / ".git" / "thrum-sync" / "a-sync"
    (sync_dir / ".git").unlink()  # no longer a worktree: moved aside and re-added at start
    daemon = daemons(repo)
    modules = daemon.modules_at_ready()
    assert "pygit2" in modules  # the engine did the repair, before ready
    assert (sync_dir / ".git").is_file()
    assert list(sync_dir.parent.glob("a-sync.broken-*"))
    assert _call(repo, "sync.status")["last_error"] is None
    assert daemon.stop() == 0


def test_thrum_daemon_start_spawns_the_click_free_entry(repo: Path) -> None:
    done = subprocess.run(
        ["thrum", "daemon", "start", "--json"], cwd=repo, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pid = json.loads(done.stdout)["pid"]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:5] == [b"-m", b"thrum_core.daemon", b"run", b"--repo"]
        assert cmdline[5] == str(repo.resolve()).encode()
        assert _answers(repo)
    finally:
        subprocess.run(["thrum", "daemon", "stop", "--force"], cwd=repo, env=_env(), capture_output=True)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_parse_args() -> None:
    assert parse_args(["run", "--repo", "/r"]) == (Path("/r"), None, False)
    assert parse_args(["run", "--repo=/r", "--no-local", "--foreground"]) == (Path("/r"), False, True)
    assert parse_args(["run", "--local", "--repo", "/r"]) == (Path("/r"), True, False)
    for bad in ([], ["start", "--repo", "/r"], ["run"], ["run", "--repo"], ["run", "--repo", "/r", "-x"]):
        with pytest.raises(ValueError, match="usage"):
            parse_args(bad)


def test_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bogus"]) == 2
    assert USAGE in capsys.readouterr().err


def test_main_outside_a_repository_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    inside = subprocess.run(["git", "-C", str(outside), "rev-parse"], capture_output=True, check=False)
    if inside.returncode == 0:
        pytest.skip("the temp directory is inside a git repository")
    assert main(["run", "--repo", str(outside)]) == 1
    assert "not inside a git repository" in capsys.readouterr().err
