"""``thrum daemon start|stop|status|restart|logs|run`` (SPEC §14).

``start`` spawns ``python -m thrum_core.daemon run --repo <main root>`` (the
same daemon as ``thrum daemon run``, without click) detached (new session,
stdin ``/dev/null``, stdout/stderr appended to ``var/daemon.log``) and polls
``health`` until the daemon answers.  ``run`` boots the kernel in
this process.  Everything but ``run`` uses only the stdlib client and
lifecycle helpers, so these commands stay fast.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.paths import ThrumPaths

START_TIMEOUT_S = 10.0
# SPEC §14 says "poll every 100 ms"; a shorter interval costs nothing (a failed
# connect to a missing socket is microseconds) and trims up to 100 ms off start.
START_POLL_S = 0.005
STOP_TIMEOUT_S = 15.0
STOP_POLL_S = 0.1
KILL_TIMEOUT_S = 5.0
RESTART_PAUSE_S = 0.5
LOG_TAIL_ON_FAILURE = 20
LOG_BACKUPS = 4
DEFAULT_LOG_LINES = 50


# ---------------------------------------------------------------- helpers


def _paths() -> ThrumPaths:
    from thrum_cli.rpc import resolve_paths

    return resolve_paths()


def probe_health(
    paths: ThrumPaths,
    *,
    dial_timeout: float = 1.0,
    timeout: float = 2.0,
    socket_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any] | None:
    """The daemon's ``health`` result, or ``None`` when nothing answers.

    ``socket_path`` is the socket to dial when the caller has resolved it
    already (default: :func:`thrum_cli.rpc.socket_path_for`).
    """
    from thrum_core.client import Client
    from thrum_core.errors import ThrumError

    if socket_path is None:
        from thrum_cli.rpc import socket_path_for

        socket_path = socket_path_for(paths)
    try:
        with Client(socket_path, dial_timeout=dial_timeout, call_timeout=timeout) as client:
            result = client.call("health")
    except (ThrumError, OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _lock_held(paths: ThrumPaths) -> bool:
    from thrum_core.lifecycle import DaemonLock

    return DaemonLock.is_locked(paths.lock_file)


def _pid_from_file(paths: ThrumPaths) -> int | None:
    from thrum_core.lifecycle import read_pid_file

    info = read_pid_file(paths.pid_file)
    return info.pid if info is not None else None


def read_ws_port(paths: ThrumPaths) -> int | None:
    """The port in ``var/ws.port``, or ``None``."""
    try:
        text = paths.ws_port_file.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def ui_url(ws_port: int | None) -> str | None:
    """``http://localhost:<port>/`` when the WebSocket/UI listener runs."""
    return f"http://localhost:{ws_port}/" if ws_port else None


def persist_local_only(paths: ThrumPaths, value: bool) -> None:
    """Write ``daemon.local_only`` to ``config.json``, keeping every other key (SPEC §5.4)."""
    from thrum_cli.configfile import update_config_file

    update_config_file(paths.config_file, {"daemon.local_only": value})


def _file_lines(path: Path, upto: tuple[int, int] | None = None) -> list[str]:
    """The lines of ``path``; with ``upto=(inode, offset)``, only up to that offset of that file."""
    try:
        with path.open("rb") as fh:
            if upto is not None and os.fstat(fh.fileno()).st_ino == upto[0]:
                data = fh.read(upto[1])
            else:
                data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def log_files(paths: ThrumPaths) -> list[Path]:
    """``daemon.log`` and its rotated backups that exist, oldest first."""
    candidates = [paths.log_file.with_name(f"{paths.log_file.name}.{i}") for i in range(LOG_BACKUPS, 0, -1)]
    candidates.append(paths.log_file)
    return [p for p in candidates if p.is_file()]


# Compiled on first use (``logs --since``), not at import: every ``thrum daemon``
# command imports this module.
_ASCTIME = r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[,.](\d{1,6}))?"


def _line_time_ns(line: str) -> int | None:
    m = re.match(_ASCTIME, line)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac = m.groups()
    # logging's asctime is local time.
    secs = time.mktime((int(y), int(mo), int(d), int(hh), int(mi), int(ss), 0, 0, -1))
    frac_ns = int((frac or "0").ljust(9, "0")[:9])
    return int(secs) * 1_000_000_000 + frac_ns


def read_log_tail(
    paths: ThrumPaths, n: int, since_ns: int | None = None, *, upto: tuple[int, int] | None = None
) -> list[str]:
    """The last ``n`` lines (0 = all) of the daemon log and its rotated files.

    With ``since_ns``, lines logged before that instant are dropped; a line
    without a timestamp (a traceback, raw stderr) follows the line before it.
    ``upto=(inode, offset)`` reads ``daemon.log`` only up to that offset
    (``logs -f`` continues from there).
    """

    def lines_of(path: Path) -> list[str]:
        return _file_lines(path, upto if path == paths.log_file else None)

    lines: list[str] = []
    if since_ns is None and n > 0:
        # Newest file first, stop once there are enough lines.
        for path in reversed(log_files(paths)):
            lines = lines_of(path) + lines
            if len(lines) >= n:
                break
        return lines[-n:]
    keep = since_ns is None
    for path in log_files(paths):
        for line in lines_of(path):
            ts = _line_time_ns(line)
            if since_ns is not None and ts is not None:
                keep = ts >= since_ns
            if keep:
                lines.append(line)
    return lines[-n:] if n > 0 else lines


def _log_position(path: Path) -> tuple[int, int] | None:
    """``(inode, size)`` of ``path`` now, or ``None`` when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


def _follow(path: Path, start: tuple[int, int] | None, poll_s: float = 0.2) -> Iterator[str]:
    """Yield lines appended to ``path`` after ``start`` (``(inode, offset)``), across rotations."""

    def reopen(offset: int) -> tuple[Any, int | None]:
        try:
            fh = path.open("r", encoding="utf-8", errors="replace")
        except OSError:
            return None, None
        ino = os.fstat(fh.fileno()).st_ino
        if start is not None and ino == start[0]:
            fh.seek(offset)
        return fh, ino

    fh, ino = reopen(start[1] if start is not None else 0)
    try:
        while True:
            if fh is None:
                time.sleep(poll_s)
                fh, ino = reopen(0)
                continue
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
                continue
            try:
                st = path.stat()
                rotated = st.st_ino != ino or st.st_size < fh.tell()
            except OSError:
                rotated = True
            if rotated:
                fh.close()
                start = None
                fh, ino = reopen(0)
                continue
            time.sleep(poll_s)
    finally:
        if fh is not None:
            fh.close()


def spawn_detached(cmd: list[str], log_file: Path, env: Mapping[str, str]) -> int:
    """Start ``cmd`` in a new session, stdin ``/dev/null``, stdout/stderr appended to ``log_file``.

    Returns the pid; the child is never waited on (it outlives this process).
    ``posix_spawn`` is used rather than :class:`subprocess.Popen`, which would
    warn about a child still running when its object is collected.
    """
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            return os.posix_spawn(
                cmd[0],
                cmd,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, fd, 1),
                    (os.POSIX_SPAWN_DUP2, fd, 2),
                ],
                setsid=True,
            )
        except (AttributeError, NotImplementedError):  # no posix_spawn / POSIX_SPAWN_SETSID here
            import subprocess

            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=dict(env), start_new_session=True
            )
            proc.returncode = 0  # never waited on by design; silences Popen's ResourceWarning
            return proc.pid
    finally:
        os.close(fd)


def _exit_status(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it has exited (reaping it), else ``None``."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if _pid_alive(pid) else -1
    if waited == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _pid_alive(pid: int) -> bool:
    from thrum_core.lifecycle import pid_alive

    return pid_alive(pid)


def _child_command(paths: ThrumPaths, local: bool | None) -> list[str]:
    cmd = [sys.executable, "-m", "thrum_core.daemon", "run", "--repo", str(paths.main_root)]
    if local is not None:
        cmd.append("--local" if local else "--no-local")
    return cmd


def _not_answering(pid: int | None, paths: ThrumPaths) -> Exception:
    from thrum_core.errors import Conflict

    who = f"PID {pid}" if pid else "another process"
    return Conflict(
        "busy",
        f"a daemon ({who}) holds {paths.lock_file} but does not answer; "
        "see thrum daemon logs, or stop it with: thrum daemon stop --force",
        pid=pid,
    )


def _already_running(pid: int | None, health: Mapping[str, Any]) -> Exception:
    from thrum_core.errors import Conflict

    return Conflict("exists", f"already running (PID {pid})", pid=pid, ws_port=health.get("ws_port"))


def check_not_running(paths: ThrumPaths) -> None:
    """Raise when a daemon of this repository runs; remove a dead one's leftovers.

    A live daemon (lock held, socket answers ``health``) → "already running
    (PID n)".  A lock holder that is still booting gets up to 10 s to answer.
    """
    from thrum_core.lifecycle import cleanup_stale

    deadline = time.monotonic() + START_TIMEOUT_S
    while _lock_held(paths):
        health = probe_health(paths, dial_timeout=0.5)
        if health is not None:
            raise _already_running(health.get("pid") or _pid_from_file(paths), health)
        if time.monotonic() >= deadline:
            raise _not_answering(_pid_from_file(paths), paths)
        time.sleep(0.1)
    if not cleanup_stale(paths):
        # Somebody took the lock between the probe and the cleanup.
        health = probe_health(paths)
        if health is not None:
            raise _already_running(health.get("pid") or _pid_from_file(paths), health)
        raise _not_answering(_pid_from_file(paths), paths)


def start_daemon(
    paths: ThrumPaths,
    *,
    local: bool | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> dict[str, Any]:
    """Spawn a detached daemon and wait until it answers ``health`` (SPEC §14).

    Returns ``{started, already_running, pid, ws_port, socket_path, log_path}``.
    Raises :class:`ThrumError` when one already runs, or when the new one
    exits or does not answer within ``timeout`` (with the log tail).
    """
    from thrum_cli.rpc import socket_path_for
    from thrum_core.errors import ThrumError
    from thrum_core.lifecycle import ensure_var_dir

    check_not_running(paths)
    if local is not None:
        persist_local_only(paths, local)
    ensure_var_dir(paths)
    env = dict(os.environ)
    env.update(env_extra or {})
    pid = spawn_detached(_child_command(paths, local), paths.log_file, env)
    deadline = time.monotonic() + timeout
    while True:
        health = probe_health(paths, dial_timeout=0.5)
        if health is not None:
            break
        status = _exit_status(pid)
        if status is not None:
            tail = read_log_tail(paths, LOG_TAIL_ON_FAILURE)
            raise ThrumError(
                f"the daemon exited during start-up (status {status}); last lines of {paths.log_file}:\n"
                + "\n".join(tail),
                {"reason": "exited", "status": status, "log_path": str(paths.log_file), "log_tail": tail},
            )
        if time.monotonic() >= deadline:
            tail = read_log_tail(paths, LOG_TAIL_ON_FAILURE)
            raise ThrumError(
                f"the daemon (PID {pid}) did not answer within {timeout:g} s; "
                f"last lines of {paths.log_file}:\n" + "\n".join(tail),
                {"reason": "timeout", "pid": pid, "log_path": str(paths.log_file), "log_tail": tail},
            )
        time.sleep(START_POLL_S)
    ws_port = health.get("ws_port") or read_ws_port(paths)
    return {
        "started": True,
        "already_running": False,
        "pid": health.get("pid") or pid,
        "ws_port": ws_port,
        "socket_path": str(socket_path_for(paths)),
        "log_path": str(paths.log_file),
    }


def stop_daemon(paths: ThrumPaths, *, force: bool = False) -> dict[str, Any]:
    """SIGTERM the daemon and wait for its lock to be released; SIGKILL after 15 s with ``force``.

    Raises :class:`DaemonNotRunning` when no daemon holds the lock (stale
    files are removed first).
    """
    import signal

    from thrum_core.errors import DaemonNotRunning, ThrumError
    from thrum_core.lifecycle import cleanup_stale, pid_alive

    if not _lock_held(paths):
        cleanup_stale(paths)
        raise DaemonNotRunning()
    pid = _pid_from_file(paths)
    if pid is None:
        health = probe_health(paths)
        pid = health.get("pid") if health else None
    if not isinstance(pid, int) or not pid_alive(pid):
        raise ThrumError(
            f"a process holds {paths.lock_file} but its PID is unknown; stop it by hand",
            {"reason": "unknown_pid"},
        )
    _signal(pid, signal.SIGTERM)
    if _wait_unlocked(paths, STOP_TIMEOUT_S):
        return {"stopped": True, "pid": pid, "forced": False}
    if not force:
        raise ThrumError(
            f"the daemon (PID {pid}) did not stop within {STOP_TIMEOUT_S:g} s; "
            "use thrum daemon stop --force to kill it",
            {"reason": "timeout", "pid": pid},
        )
    _signal(pid, signal.SIGKILL)
    if not _wait_unlocked(paths, KILL_TIMEOUT_S):
        raise ThrumError(f"the daemon (PID {pid}) survived SIGKILL", {"reason": "kill_failed", "pid": pid})
    cleanup_stale(paths)
    return {"stopped": True, "pid": pid, "forced": True}


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_unlocked(paths: ThrumPaths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _lock_held(paths):
        if time.monotonic() >= deadline:
            return False
        time.sleep(STOP_POLL_S)
    return True


def daemon_status(paths: ThrumPaths) -> dict[str, Any]:
    """The status object of SPEC §14.

    ``{running, pid, repo_path, started_at, uptime_ms, version, sync_state,
    ws_port, socket_path, identity}``; everything but ``repo_path`` and
    ``socket_path`` is ``null`` when the daemon does not answer.
    """
    from thrum_cli.rpc import socket_path_for
    from thrum_core.lifecycle import read_pid_file

    socket_path = str(socket_path_for(paths))
    # The socket's existence is checked first: a stat is cheaper than the lock
    # probe (which imports fcntl), and a live daemon always has its socket.
    health = (
        probe_health(paths, socket_path=socket_path)
        if os.path.exists(socket_path) or _lock_held(paths)
        else None
    )
    if health is None:
        return {
            "running": False,
            "pid": None,
            "repo_path": str(paths.main_root),
            "started_at": None,
            "uptime_ms": None,
            "version": None,
            "sync_state": None,
            "ws_port": None,
            "socket_path": socket_path,
            "identity": None,
        }
    pid, started_at = health.get("pid"), health.get("started_at")
    if not (pid and started_at):  # an older daemon: the pid file tells
        info = read_pid_file(paths.pid_file)
        pid = pid or (info.pid if info else None)
        started_at = started_at or (info.started_at if info else None)
    return {
        "running": True,
        "pid": pid,
        "repo_path": str(paths.main_root),
        "started_at": started_at,
        "uptime_ms": health.get("uptime_ms"),
        "version": health.get("version"),
        "sync_state": health.get("sync_state"),
        "ws_port": health.get("ws_port"),
        "socket_path": socket_path,
        "identity": health.get("identity"),
    }


def _format_uptime(ms: int | None) -> str:
    if not ms:
        return "0s"
    secs = ms // 1000
    days, secs = divmod(secs, 86400)
    hours, secs = divmod(secs, 3600)
    mins, secs = divmod(secs, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (mins, "m")) if v]
    parts.append(f"{secs}s")
    return " ".join(parts)


# ---------------------------------------------------------------- commands


@click.group("daemon")
def daemon() -> None:
    """Start, stop and inspect the repository's daemon."""


def _print_started(result: dict[str, Any]) -> None:
    click.echo(f"thrum daemon started (PID {result['pid']})")
    url = ui_url(result.get("ws_port"))
    if url:
        click.echo(f"Web UI: {url}")


@daemon.command("start")
@click.option("--local/--no-local", default=None, help="Local-only mode (no git remote); persisted.")
@click.option("--foreground", is_flag=True, help="Run in this process, logging to stderr too.")
def start(local: bool | None, foreground: bool) -> None:
    """Start the daemon in the background and wait until it answers."""
    from thrum_cli.output import emit

    paths = _paths()
    if foreground:
        check_not_running(paths)
        if local is not None:
            persist_local_only(paths, local)
        _run_in_process(paths, local, foreground=True)
        return
    emit(start_daemon(paths, local=local), _print_started)


@daemon.command("run")
@click.option("--local/--no-local", default=None, help="Local-only mode for this run.")
@click.option("--foreground", is_flag=True, help="Also log to stderr.")
def run(local: bool | None, foreground: bool) -> None:
    """Run the daemon in this process (what ``start`` spawns)."""
    # ``start`` spawns the same daemon without click: ``python -m thrum_core.daemon run``.
    _run_in_process(_paths(), local, foreground=foreground)


def _run_in_process(paths: ThrumPaths, local: bool | None, *, foreground: bool) -> None:
    from thrum_cli.output import exit_with
    from thrum_core.daemon import run_daemon

    flags = {"daemon.local_only": local} if local is not None else None
    code = run_daemon(paths.main_root, flags=flags, foreground=foreground)
    if code:
        exit_with(code)


@daemon.command("stop")
@click.option("--force", is_flag=True, help="SIGKILL the daemon if it has not stopped after 15 s.")
def stop(force: bool) -> None:
    """Stop the daemon (SIGTERM, then wait up to 15 s)."""
    from thrum_cli.output import emit

    result = stop_daemon(_paths(), force=force)
    emit(
        {"stopped": result["stopped"], "pid": result["pid"]},
        lambda r: click.echo(
            f"thrum daemon stopped (PID {r['pid']}){' — killed' if result['forced'] else ''}"
        ),
    )


@daemon.command("restart")
def restart() -> None:
    """Stop the daemon (if it runs) and start it again on the same WebSocket port."""
    from thrum_cli.output import emit
    from thrum_core.errors import DaemonNotRunning

    paths = _paths()
    ws_port = read_ws_port(paths)
    try:
        stop_daemon(paths)
    except DaemonNotRunning:
        pass
    else:
        time.sleep(RESTART_PAUSE_S)
    env_extra = {"THRUM_WS_PORT": str(ws_port)} if ws_port else None
    emit(start_daemon(paths, env_extra=env_extra), _print_started)


def _print_status(status: dict[str, Any]) -> None:
    if not status["running"]:
        click.echo("thrum daemon is not running")
        click.echo(f"  repo:    {status['repo_path']}")
        from thrum_cli.output import hint

        hint("start it with: thrum daemon start")
        return
    click.echo(f"thrum daemon is running (PID {status['pid']})")
    click.echo(f"  repo:    {status['repo_path']}")
    click.echo(f"  started: {status['started_at']} (up {_format_uptime(status['uptime_ms'])})")
    click.echo(f"  version: {status['version']}")
    click.echo(f"  sync:    {status['sync_state']}")
    click.echo(f"  socket:  {status['socket_path']}")
    url = ui_url(status.get("ws_port"))
    if url:
        click.echo(f"  web UI:  {url}")


@daemon.command("status")
def status() -> None:
    """Show whether the daemon runs (exit 0) or not (exit 1)."""
    from thrum_cli.output import emit, exit_with

    result = daemon_status(_paths())
    emit(result, _print_status)
    if not result["running"]:
        exit_with(1)


def _print_lines(result: dict[str, Any]) -> None:
    for line in result["lines"]:
        click.echo(line)


@daemon.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=DEFAULT_LOG_LINES,
    show_default=True,
    help="Number of lines (0 = all).",
)
@click.option(
    "--since", metavar="TIME", help="Only lines since a date, timestamp or duration (10m = 10 min ago)."
)
def logs(follow: bool, count: int, since: str | None) -> None:
    """Print the end of the daemon log (rotated files included)."""
    from thrum_cli.output import emit
    from thrum_cli.state import get_state
    from thrum_core.errors import InvalidParams
    from thrum_core.timefmt import parse_point_in_time

    paths = _paths()
    since_ns = None
    if since is not None:
        try:
            since_ns = parse_point_in_time(since, now=time.time_ns(), mode="before")
        except ValueError as exc:
            raise InvalidParams("--since", "invalid", str(exc)) from None
    if follow and get_state().json:
        raise InvalidParams("--follow", "conflict", "--follow cannot be combined with --json")
    # Taken before reading the tail so that no line written meanwhile is lost.
    position = _log_position(paths.log_file) if follow else None
    lines = read_log_tail(paths, count, since_ns, upto=position)
    emit({"lines": lines}, _print_lines)
    if follow:
        try:
            for line in _follow(paths.log_file, position):
                click.echo(line)
        except KeyboardInterrupt:
            pass


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(daemon)
