"""Tests for thrum_core.lifecycle: the daemon lock, pid file, liveness probes, cleanup.

Locks are exercised across real processes (``python -c``), sockets are real
Unix sockets, and the repository is a real ``git init`` in a temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thrum_core.lifecycle import (
    DaemonLock,
    LockHeld,
    PidInfo,
    cleanup_stale,
    ensure_var_dir,
    pid_alive,
    read_pid_file,
    socket_answers,
    write_pid_file,
)
from thrum_core.paths import ThrumPaths

HOLDER = """
import sys, time
from thrum_core.lifecycle import DaemonLock
lock = DaemonLock(sys.argv[1])
print("locked" if lock.acquire(wait=0) else "busy", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
"""


def _spawn_holder(lock_path: Path, seconds: float = 60) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, so Unix socket paths stay under the 108-byte limit."""
    d = Path(tempfile.mkdtemp(prefix="thl", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def repo(short_dir: Path) -> Path:
    root = short_dir / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".thrum").mkdir()
    return root


# ----------------------------------------------------------------------- lock


def test_lock_acquire_release_and_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "thrum.lock"
    first = DaemonLock(path)
    assert first.acquire()
    assert first.held
    assert path.exists()
    # A second open file description conflicts even within the same process.
    second = DaemonLock(path)
    assert not second.acquire(wait=0)
    assert DaemonLock.is_locked(path)
    first.release()
    first.release()  # idempotent
    assert not DaemonLock.is_locked(path)
    assert path.exists(), "the lock file is never deleted"
    with second:
        assert second.held
        with pytest.raises(LockHeld) as info, DaemonLock(path):
            pass
        assert "already running" in str(info.value)
    assert not second.held
    assert not DaemonLock.is_locked(path)


def test_is_locked_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "thrum.lock"
    assert not DaemonLock.is_locked(path)
    assert not DaemonLock.is_locked(tmp_path / "thrum.lock")
    assert not (tmp_path / "thrum.lock").exists()


def test_lock_excludes_other_process_and_is_freed_by_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "thrum.lock"
    proc, status = _spawn_holder(path)
    try:
        assert status == "locked"
        mine = DaemonLock(path)
        assert not mine.acquire(wait=0)
        assert not mine.acquire(wait=0.1)
        # Probing many times must not weaken the holder's lock.
        for _ in range(50):
            assert DaemonLock.is_locked(path)
        assert not mine.acquire(wait=0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not DaemonLock.is_locked(path)
        assert mine.acquire(wait=0)
        mine.release()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_lock_held_here_excludes_child_process(tmp_path: Path) -> None:
    path = tmp_path / "thrum.lock"
    with DaemonLock(path):
        proc, status = _spawn_holder(path, seconds=0)
        proc.wait(timeout=10)
        assert status == "busy"
    proc, status = _spawn_holder(path, seconds=0)
    proc.wait(timeout=10)
    assert status == "locked"


def test_lock_not_inherited_by_exec_children(tmp_path: Path) -> None:
    path = tmp_path / "thrum.lock"
    lock = DaemonLock(path)
    assert lock.acquire()
    # close_fds=False: only the close-on-exec flag keeps the descriptor from the child.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], close_fds=False)
    try:
        lock.release()
        # If the child had inherited the descriptor, the lock would survive the release.
        assert not DaemonLock.is_locked(path)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


# ------------------------------------------------------------------- pid file


def test_pid_file_round_trip_and_field_order(tmp_path: Path) -> None:
    path = tmp_path / "thrum.pid"
    info = PidInfo(
        pid=4242,
        repo_path="/home/u/repo",
        started_at="2026-01-01T00:00:30.000000Z",
        socket_path="/home/u/repo/.thrum/var/thrum.sock",
        version="0.1.0",
    )
    write_pid_file(path, info)
    assert read_pid_file(path) == info
    text = path.read_text()
    assert text.endswith("}\n")
    keys = [line.split('"')[1] for line in text.splitlines()[1:-1]]
    assert keys == ["pid", "repo_path", "started_at", "socket_path", "version"]
    assert os.listdir(tmp_path) == ["thrum.pid"]


def test_pid_file_legacy_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "thrum.pid"
    assert read_pid_file(path) is None
    path.write_text("12345\n")
    assert read_pid_file(path) == PidInfo(12345)
    path.write_text("  777  ")
    assert read_pid_file(path) == PidInfo(777)
    for garbage in (
        "",
        "abc",
        "0",
        "-5",
        "12 34",
        "9" * 5000,
        "[1, 2]",
        '{"pid": "123"}',
        '{"pid": true}',
        '{"pid": 0}',
        '{"repo_path": "/x"}',
        "{broken",
    ):
        path.write_text(garbage)
        assert read_pid_file(path) is None, garbage
    path.write_bytes(b"\xff\xfe\x00")
    assert read_pid_file(path) is None
    # Wrong-typed optional fields are dropped, the pid is kept; unknown keys ignored.
    path.write_text('{"pid": 9, "socket_path": 5, "version": "1", "extra": 1}')
    assert read_pid_file(path) == PidInfo(9, version="1")


# ------------------------------------------------------------------ liveness


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    # The pid is reaped; it could in theory be reused, but not within this instant.
    assert not pid_alive(child.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombie detection reads /proc")
def test_pid_alive_treats_zombie_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Not reaped yet: os.kill(pid, 0) still succeeds, but the process is dead.
        os.kill(child.pid, 0)
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_socket_answers(short_dir: Path) -> None:
    path = short_dir / "s.sock"
    assert not socket_answers(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        assert socket_answers(path)
    finally:
        server.close()
    # The socket file is left behind but nobody listens: a dead daemon's socket.
    assert path.exists()
    assert not socket_answers(path)
    regular = short_dir / "regular"
    regular.write_text("x")
    assert not socket_answers(regular)
    assert not socket_answers(short_dir / ("x" * 200))


# -------------------------------------------------------- var dir and cleanup


def test_ensure_var_dir_is_private(repo: Path) -> None:
    paths = ThrumPaths.for_root(repo)
    old = os.umask(0o022)
    try:
        var = ensure_var_dir(paths)
    finally:
        os.umask(old)
    assert var == paths.var_dir
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    os.chmod(var, 0o755)
    ensure_var_dir(paths)
    assert stat.S_IMODE(var.stat().st_mode) == 0o700


def _dead_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_cleanup_stale_removes_leftovers_when_lock_free(repo: Path, short_dir: Path) -> None:
    paths = ThrumPaths.for_root(repo)
    ensure_var_dir(paths)
    elsewhere = short_dir / "fallback.sock"
    _dead_socket(paths.default_socket_path)
    _dead_socket(elsewhere)
    write_pid_file(paths.pid_file, PidInfo(999999, socket_path=str(elsewhere)))
    paths.ws_port_file.write_text("9999\n")
    paths.lock_file.touch()

    assert cleanup_stale(paths)
    assert not paths.pid_file.exists()
    assert not paths.default_socket_path.exists()
    assert not elsewhere.exists()
    assert not paths.ws_port_file.exists()
    assert paths.lock_file.exists()
    assert not DaemonLock.is_locked(paths.lock_file)
    # Nothing left to clean is fine too.
    assert cleanup_stale(paths)


def test_cleanup_stale_never_removes_a_regular_file_named_as_socket(repo: Path, short_dir: Path) -> None:
    paths = ThrumPaths.for_root(repo)
    ensure_var_dir(paths)
    precious = short_dir / "precious.txt"
    precious.write_text("data")
    write_pid_file(paths.pid_file, PidInfo(999999, socket_path=str(precious)))
    assert cleanup_stale(paths)
    assert precious.read_text() == "data"
    assert not paths.pid_file.exists()


def test_cleanup_stale_leaves_a_running_daemon_alone(repo: Path) -> None:
    paths = ThrumPaths.for_root(repo)
    ensure_var_dir(paths)
    proc, status = _spawn_holder(paths.lock_file)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert status == "locked"
        server.bind(str(paths.default_socket_path))
        server.listen(1)
        write_pid_file(paths.pid_file, PidInfo(proc.pid))
        assert not cleanup_stale(paths)
        assert read_pid_file(paths.pid_file) == PidInfo(proc.pid)
        assert socket_answers(paths.default_socket_path)
        assert DaemonLock.is_locked(paths.lock_file)
        proc.kill()
        proc.wait(timeout=10)
        server.close()
        assert cleanup_stale(paths)
        assert not paths.pid_file.exists()
        assert not paths.default_socket_path.exists()
    finally:
        server.close()
        proc.kill()
        proc.wait(timeout=10)


def test_cleanup_stale_without_var_dir(repo: Path) -> None:
    paths = ThrumPaths.for_root(repo)
    assert cleanup_stale(paths)
    assert not paths.var_dir.exists()
