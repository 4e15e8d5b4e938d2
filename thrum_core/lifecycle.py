"""Daemon lifecycle primitives: the lock, the pid file, liveness probes, cleanup.

Standard library only: ``thrum daemon start|stop|status`` import this module
from the CLI.  The rules are SPEC §5.3 and §14:

* ``var/thrum.lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` for the daemon's
  whole life; the kernel drops it when the process dies, even after SIGKILL,
  so "lock held" is the only reliable answer to "is a daemon running?".  The
  file itself is never deleted (deleting it would let a second daemon lock a
  fresh inode while the first still holds the old one).
* ``var/thrum.pid`` is informational (pid, socket path, start time, version);
  it may be stale whenever the lock is free.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thrum_core.errors import ThrumError
from thrum_core.records import Record

if TYPE_CHECKING:
    from types import TracebackType

    from thrum_core.paths import ThrumPaths

__all__ = [
    "DaemonLock",
    "LockHeld",
    "PidInfo",
    "cleanup_stale",
    "ensure_var_dir",
    "pid_alive",
    "read_pid_file",
    "socket_answers",
    "write_pid_file",
]


class LockHeld(ThrumError):
    """Another process holds the daemon lock: a daemon is already running."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(f"daemon already running (lock held: {os.fspath(path)})", {"lock": os.fspath(path)})


class DaemonLock:
    """The exclusive ``flock`` on ``var/thrum.lock`` that marks a running daemon.

    ``acquire()`` creates the file when missing (never deletes it) and takes
    ``LOCK_EX | LOCK_NB`` on a private, close-on-exec descriptor, so child
    processes (git, hooks) do not inherit the lock.  As a context manager it
    raises :class:`LockHeld` when another process holds the lock.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def acquire(self, *, wait: float = 0.05) -> bool:
        """Try to take the lock; return ``True`` on success, ``False`` if held elsewhere.

        ``wait`` (seconds) retries for a short while: :meth:`is_locked` probes
        take a shared lock for a few microseconds, and a daemon starting at
        that instant must not conclude that another daemon is running.
        """
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.005)
                continue
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        """Release the lock (no-op when not held).  The lock file stays."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DaemonLock:
        if not self.acquire():
            raise LockHeld(self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @staticmethod
    def is_locked(path: str | os.PathLike[str]) -> bool:
        """Return whether some process (this one included) holds an exclusive lock on ``path``.

        The probe opens its own descriptor read-only and tries ``LOCK_SH |
        LOCK_NB``: refused means a holder exists.  ``flock`` locks belong to the
        open file description, so the probe never releases or weakens the
        holder's lock; when it succeeds it drops its shared lock at once.  A
        missing file means "not locked" and is not created.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)


class PidInfo(Record):
    """Content of ``var/thrum.pid`` (SPEC §5.3).

    A legacy file holding only a decimal PID gives ``PidInfo(pid)`` with the
    other fields ``None``.  A :class:`~thrum_core.records.Record` rather than a
    ``NamedTuple``, whose class creation costs every CLI command start-up time.
    """

    _FIELDS = ("pid", "repo_path", "started_at", "socket_path", "version")
    __slots__ = _FIELDS

    pid: int
    repo_path: str | None
    started_at: str | None
    socket_path: str | None
    version: str | None

    def __init__(
        self,
        pid: int,
        repo_path: str | None = None,
        started_at: str | None = None,
        socket_path: str | None = None,
        version: str | None = None,
    ) -> None:
        self._set(
            pid=pid, repo_path=repo_path, started_at=started_at, socket_path=socket_path, version=version
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object written to the pid file, in the SPEC's field order."""
        return {
            "pid": self.pid,
            "repo_path": self.repo_path,
            "started_at": self.started_at,
            "socket_path": self.socket_path,
            "version": self.version,
        }


def write_pid_file(path: str | os.PathLike[str], info: PidInfo) -> None:
    """Write ``info`` to ``path`` atomically (any existing pid file is replaced)."""
    from thrum_core.fsutil import atomic_write_json

    atomic_write_json(path, info.to_json(), mode=0o644)


def _valid_pid(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def read_pid_file(path: str | os.PathLike[str]) -> PidInfo | None:
    """Read a pid file: the JSON form or a legacy bare decimal PID.

    Returns ``None`` when the file is missing, unreadable, or holds anything
    else (garbage, a non-positive pid, a JSON value without an integer ``pid``).
    String fields of the wrong type are read as ``None``.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # A byte-order mark is tolerated; stripped by hand, since the "utf-8-sig"
    # codec is a module of its own that every CLI command would import.
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if text.isascii() and text.isdigit() and len(text) <= 20:
        pid = _valid_pid(int(text))
        return PidInfo(pid) if pid is not None else None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    pid = _valid_pid(obj.get("pid"))
    if pid is None:
        return None

    def _str(key: str) -> str | None:
        v = obj.get(key)
        return v if isinstance(v, str) else None

    return PidInfo(
        pid=pid,
        repo_path=_str("repo_path"),
        started_at=_str("started_at"),
        socket_path=_str("socket_path"),
        version=_str("version"),
    )


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid exists and is not a zombie.

    A process owned by another user counts as alive.  On Linux a zombie (dead
    but not yet reaped, e.g. a daemon that crashed while the CLI that spawned
    it is still polling) counts as dead.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
        except OSError:
            return True
        # Format: "pid (comm) S ..."; comm may contain spaces and parentheses.
        state = stat_line[stat_line.rfind(")") + 1 :].split()
        if state and state[0] in ("Z", "X"):
            return False
    return True


def socket_answers(path: str | os.PathLike[str], timeout: float = 0.5) -> bool:
    """Return whether something accepts a connection on the Unix socket ``path``.

    Nothing is sent: the connection is closed as soon as it is established.
    """
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
    except (OSError, ValueError):
        return False
    else:
        return True
    finally:
        sock.close()


def ensure_var_dir(paths: ThrumPaths) -> Path:
    """Create the effective ``var/`` directory with mode 0700 (tightened if it exists)."""
    from thrum_core.fsutil import ensure_dir

    var = ensure_dir(paths.var_dir, 0o700)
    if stat.S_IMODE(var.stat().st_mode) != 0o700:
        os.chmod(var, 0o700)
    return var


def _unlink_socket(path: Path) -> bool:
    """Remove ``path`` if it is a socket (never a regular file someone pointed us at)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def cleanup_stale(paths: ThrumPaths) -> bool:
    """Remove a dead daemon's leftovers; return ``False`` if a daemon is running.

    When no process holds ``var/thrum.lock`` the pid file, ``ws.port`` and the
    socket (the default path and the ``socket_path`` recorded in the pid file,
    only if they are sockets) are stale and removed; returns ``True``.  The
    lock is held while cleaning, so a daemon cannot start half-way through;
    one that tries at that instant retries briefly (:meth:`DaemonLock.acquire`).
    """
    if not paths.var_dir.is_dir():
        return True
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire(wait=0):
        return False
    try:
        info = read_pid_file(paths.pid_file)
        sockets = {paths.default_socket_path}
        if info is not None and info.socket_path and os.path.isabs(info.socket_path):
            sockets.add(Path(info.socket_path))
        for sock_path in sockets:
            _unlink_socket(sock_path)
        for stale in (paths.pid_file, paths.ws_port_file):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
    finally:
        lock.release()
    return True
