"""Daemon lifecycle through the installed ``thrum`` executable (SPEC §14).

Every test works in its own temp git repository and drives ``thrum`` as a
subprocess; every daemon a test starts is stopped (or killed) by the
``daemons`` fixture's finalizer.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thrum_core.lifecycle import DaemonLock, pid_alive, read_pid_file
from thrum_core.testing.daemon import wait_for

DAEMON_DOWN = "thrum daemon is not running — start it with: thrum daemon start"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env.update(extra or {})
    return env


def thrum(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``thrum`` executable in ``cwd``."""
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )


class Daemons:
    """Repositories whose daemons must not outlive the test."""

    def __init__(self) -> None:
        self.repos: list[Path] = []
        self.pids: set[int] = set()

    def add(self, repo: Path) -> Path:
        self.repos.append(repo)
        return repo

    def cleanup(self) -> None:
        for repo in self.repos:
            lock = repo / ".thrum" / "var" / "thrum.lock"
            if not DaemonLock.is_locked(lock):
                continue
            thrum("daemon", "stop", "--force", cwd=repo, timeout=30)
            info = read_pid_file(repo / ".thrum" / "var" / "thrum.pid")
            if info is not None:
                self.pids.add(info.pid)
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    registry = Daemons()
    try:
        yield registry
    finally:
        registry.cleanup()


@pytest.fixture
def repo(tmp_path: Path, daemons: Daemons) -> Path:
    """An initialised temp git repository (no daemon running yet)."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=_env())
    done = thrum("init", "--no-daemon", cwd=root)
    assert done.returncode == 0, done.stderr
    return daemons.add(root)


def start(repo: Path, daemons: Daemons, *args: str) -> dict[str, object]:
    done = thrum("daemon", "start", "--json", *args, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result["pid"], int)
    daemons.pids.add(result["pid"])
    return result


def var(repo: Path) -> Path:
    return repo / ".thrum" / "var"


def test_start_status_kill_restart_stop(repo: Path, daemons: Daemons) -> None:
    started = start(repo, daemons)
    pid = started["pid"]
    assert started["started"] is True and started["already_running"] is False
    assert started["log_path"] == str(var(repo).resolve() / "daemon.log")
    assert isinstance(pid, int) and pid_alive(pid)

    status = thrum("daemon", "status", "--json", cwd=repo)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert set(doc) == {
        "running", "pid", "repo_path", "started_at", "uptime_ms", "version",
        "sync_state", "ws_port", "socket_path", "identity",
    }  # fmt: skip
    assert doc["running"] is True and doc["pid"] == pid
    assert doc["repo_path"] == str(repo.resolve())
    assert isinstance(doc["uptime_ms"], int) and doc["version"]
    config = json.loads((repo / ".thrum" / "config.json").read_text())
    assert doc["identity"]["daemon_id"] == config["identity"]["daemon_id"]
    assert doc["socket_path"] == started["socket_path"]
    human = thrum("daemon", "status", cwd=repo)
    assert human.returncode == 0 and f"running (PID {pid})" in human.stdout

    again = thrum("daemon", "start", cwd=repo)
    assert again.returncode == 1
    assert f"already running (PID {pid})" in again.stderr
    again_json = thrum("daemon", "start", "--json", cwd=repo)
    assert again_json.returncode == 1
    assert json.loads(again_json.stdout)["error"]["message"] == f"already running (PID {pid})"

    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not DaemonLock.is_locked(var(repo) / "thrum.lock"))
    assert (var(repo) / "thrum.pid").exists()  # stale leftovers of the killed daemon
    down = thrum("daemon", "status", "--json", cwd=repo)
    assert down.returncode == 1
    assert json.loads(down.stdout)["running"] is False

    restarted = start(repo, daemons)
    assert restarted["pid"] != pid
    assert read_pid_file(var(repo) / "thrum.pid").pid == restarted["pid"]  # type: ignore[union-attr]

    stopped = thrum("daemon", "stop", "--json", cwd=repo)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {"stopped": True, "pid": restarted["pid"]}
    assert not (var(repo) / "thrum.pid").exists()
    assert not (var(repo) / "thrum.sock").exists()
    assert (var(repo) / "thrum.lock").exists()  # never deleted
    assert wait_for(lambda: not pid_alive(restarted["pid"]))  # type: ignore[arg-type]

    final = thrum("daemon", "status", cwd=repo)
    assert final.returncode == 1 and "not running" in final.stdout
    not_running = thrum("daemon", "stop", cwd=repo)
    assert not_running.returncode == 1
    assert "not running" in not_running.stderr


def test_json_error_when_daemon_not_running(repo: Path) -> None:
    done = thrum("daemon", "stop", "--json", cwd=repo)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"error": {"code": -32010, "message": DAEMON_DOWN}}
    assert done.stderr == ""


def test_not_initialised(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=_env())
    done = thrum("daemon", "start", "--json", cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == -32011
    assert not (tmp_path / ".thrum").exists()


def test_broken_config_fails_with_log_tail(repo: Path, daemons: Daemons) -> None:
    (repo / ".thrum" / "config.json").write_text('{"daemon": {"sync_interval": 2}}\n')
    began = time.monotonic()
    done = thrum("daemon", "start", cwd=repo)
    assert done.returncode == 1
    assert time.monotonic() - began < 9  # the exit is noticed, not waited out
    assert "last lines of" in done.stderr
    assert "sync_interval" in done.stderr
    as_json = thrum("daemon", "start", "--json", cwd=repo)
    error = json.loads(as_json.stdout)["error"]
    assert error["data"]["reason"] == "exited"
    assert any("sync_interval" in line for line in error["data"]["log_tail"])
    assert not DaemonLock.is_locked(var(repo) / "thrum.lock")


def test_local_flags_persist(repo: Path, daemons: Daemons) -> None:
    start(repo, daemons, "--no-local")
    config = json.loads((repo / ".thrum" / "config.json").read_text())
    assert config["daemon"]["local_only"] is False
    assert config["identity"]["daemon_id"]  # the rest of the file is kept
    shown = json.loads(thrum("config", "show", "--json", cwd=repo).stdout)
    assert shown["config"]["daemon"]["local_only"] is False
    assert thrum("daemon", "stop", cwd=repo).returncode == 0
    start(repo, daemons, "--local")
    config = json.loads((repo / ".thrum" / "config.json").read_text())
    assert config["daemon"]["local_only"] is True


def test_config_show_comes_from_the_daemon(repo: Path, daemons: Daemons) -> None:
    start(repo, daemons)
    # THRUM_WS_PORT in the CLI's environment only: a locally computed answer
    # would say "env"; the daemon (started without it) says "default".
    via_daemon = json.loads(thrum("config", "show", "--json", cwd=repo, env={"THRUM_WS_PORT": "0"}).stdout)
    assert via_daemon["sources"]["daemon.ws_port"] == "default"
    assert thrum("daemon", "stop", cwd=repo).returncode == 0
    local = json.loads(thrum("config", "show", "--json", cwd=repo, env={"THRUM_WS_PORT": "0"}).stdout)
    assert local["sources"]["daemon.ws_port"] == "env"
    assert set(local) == set(via_daemon) == {"path", "config", "sources"}


def test_restart(repo: Path, daemons: Daemons) -> None:
    first = start(repo, daemons)
    done = thrum("daemon", "restart", "--json", cwd=repo)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    daemons.pids.add(second["pid"])
    assert second["started"] is True and second["pid"] != first["pid"]
    assert json.loads(thrum("daemon", "status", "--json", cwd=repo).stdout)["pid"] == second["pid"]
    assert thrum("daemon", "stop", cwd=repo).returncode == 0
    # restart of a stopped daemon just starts it
    third = thrum("daemon", "restart", "--json", cwd=repo)
    assert third.returncode == 0, third.stderr
    daemons.pids.add(json.loads(third.stdout)["pid"])


def test_foreground_start_and_sigterm(repo: Path, daemons: Daemons) -> None:
    proc = subprocess.Popen(
        ["thrum", "daemon", "start", "--foreground"],
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemons.pids.add(proc.pid)
    try:
        assert wait_for(lambda: thrum("daemon", "status", cwd=repo).returncode == 0, timeout=15)
        status = json.loads(thrum("daemon", "status", "--json", cwd=repo).stdout)
        assert status["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "ready" in err  # --foreground also logs to stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (var(repo) / "thrum.pid").exists()


def test_daemon_logs(repo: Path, daemons: Daemons) -> None:
    start(repo, daemons)
    assert thrum("daemon", "stop", cwd=repo).returncode == 0
    log = var(repo) / "daemon.log"
    rotated = var(repo) / "daemon.log.1"
    rotated.write_text("2000-01-01 00:00:00,000 INFO old: from the rotated file\n")
    lines = log.read_text().splitlines()
    assert any("ready" in line for line in lines)

    last3 = json.loads(thrum("daemon", "logs", "-n", "3", "--json", cwd=repo).stdout)["lines"]
    assert last3 == lines[-3:]
    every = json.loads(thrum("daemon", "logs", "-n", "0", "--json", cwd=repo).stdout)["lines"]
    assert every == ["2000-01-01 00:00:00,000 INFO old: from the rotated file", *lines]
    default = json.loads(thrum("daemon", "logs", "--json", cwd=repo).stdout)["lines"]
    assert default == every[-50:]
    human = thrum("daemon", "logs", "-n", "2", cwd=repo)
    assert human.stdout.splitlines() == lines[-2:]

    recent = json.loads(thrum("daemon", "logs", "-n", "0", "--since", "1h", "--json", cwd=repo).stdout)[
        "lines"
    ]
    assert recent == lines
    since_2000 = json.loads(
        thrum("daemon", "logs", "-n", "0", "--since", "1999-12-31", "--json", cwd=repo).stdout
    )
    assert since_2000["lines"] == every
    bad = thrum("daemon", "logs", "--since", "yesterday", "--json", cwd=repo)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["data"]["field"] == "--since"


def test_daemon_logs_follow(repo: Path) -> None:
    log = var(repo) / "daemon.log"
    log.write_text("first line\n")
    proc = subprocess.Popen(
        ["thrum", "daemon", "logs", "-f", "-n", "1"], cwd=repo, env=_env(), stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=20) == "first line\n"
        with log.open("a") as fh:
            fh.write("appended later\n")
        assert lines.get(timeout=20) == "appended later\n"
        log.rename(log.with_name("daemon.log.1"))  # rotation: the follower reopens the new file
        log.write_text("after rotation\n")
        assert lines.get(timeout=20) == "after rotation\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_doctor(repo: Path, daemons: Daemons, tmp_path: Path) -> None:
    start(repo, daemons)
    done = thrum("doctor", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["daemon"]["status"] == "ok"
    assert checks["daemon_files"]["status"] == "ok"
    assert all(c["status"] != "fail" for c in doc["checks"])

    bare = tmp_path / "bare"
    bare.mkdir()
    subprocess.run(["git", "init", "-q", str(bare)], check=True, env=_env())
    failed = thrum("doctor", "--json", cwd=bare)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["ok"] is False


def test_init_starts_the_daemon(tmp_path: Path, daemons: Daemons) -> None:
    root = daemons.add(tmp_path / "fresh")
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=_env())
    done = thrum("init", "--json", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    daemon = json.loads(done.stdout)["daemon"]
    daemons.pids.add(daemon["pid"])
    assert daemon["started"] is True
    assert thrum("daemon", "status", cwd=root).returncode == 0
