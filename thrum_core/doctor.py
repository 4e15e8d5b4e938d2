"""``thrum doctor``: the report plugins add checks to, and the core checks (SPEC §15.6).

:class:`DoctorReport` is what the ``thrum_doctor(report)`` hook receives.
:func:`run_doctor` runs the core checks — repository and thrum dir
resolution, redirect, config parse, lock / pid / socket consistency, daemon
health, plugin load failures, ignored ``THRUM_TS_*`` variables — then each
plugin's ``thrum_doctor`` implementation on its own: one that raises becomes a
``fail`` entry naming the plugin.

Importing this module costs nothing beyond the standard library; the config
check imports pydantic only when it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thrum_core.errors import ThrumError

if TYPE_CHECKING:
    from thrum_core.client import Client
    from thrum_core.paths import ThrumPaths
    from thrum_core.plugins.manager import PluginManager

__all__ = ["IGNORED_TS_VARS", "STATUSES", "DoctorCheck", "DoctorReport", "run_doctor"]

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (OK, WARN, FAIL)

IGNORED_TS_VARS = ("THRUM_TS_AUTHKEY", "THRUM_TS_HOSTNAME", "THRUM_TS_STATE_DIR", "THRUM_TS_ENABLED")
"""Accepted and ignored: thrum uses the system ``tailscale`` CLI (SPEC §5.7)."""


@dataclass
class DoctorCheck:
    """One line of the doctor's report."""

    name: str
    status: str
    message: str
    fixed: bool = False
    plugin: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{name, status, message, fixed}`` (SPEC §15.4)."""
        return {"name": self.name, "status": self.status, "message": self.message, "fixed": self.fixed}


class DoctorReport:
    """The checks of one ``thrum doctor`` run.

    Plugins call :meth:`check`.  ``paths`` is the repository layout (``None``
    when it could not be resolved), ``fix`` and ``rebuild`` mirror the
    ``--fix`` / ``--rebuild`` flags, ``daemon`` is a connected
    :class:`~thrum_core.client.Client` when the daemon answers (else
    ``None``), ``plugins`` the plugin manager and ``environ`` the environment.
    """

    def __init__(
        self,
        *,
        paths: ThrumPaths | None = None,
        fix: bool = False,
        rebuild: bool = False,
        daemon: Client | None = None,
        plugins: PluginManager | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.paths = paths
        self.fix = fix
        self.rebuild = rebuild
        self.daemon = daemon
        self.plugins = plugins
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.checks: list[DoctorCheck] = []
        self.plugin: str | None = None
        """The plugin whose ``thrum_doctor`` is running (stamped on its checks)."""

    def check(self, name: str, status: str, message: str, fixed: bool = False) -> DoctorCheck:
        """Record one check; ``status`` is ``ok``, ``warn`` or ``fail``."""
        if status not in STATUSES:
            raise ValueError(
                f"doctor check {name!r}: status must be one of {', '.join(STATUSES)}, not {status!r}"
            )
        entry = DoctorCheck(str(name), status, str(message), bool(fixed), self.plugin)
        self.checks.append(entry)
        return entry

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings are fine)."""
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """``{ok, checks: [{name, status, message, fixed}]}``."""
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}


# ----------------------------------------------------------------- core checks


def _check_repository(report: DoctorReport, cwd: Path | None, repo_flag: str | None) -> ThrumPaths | None:
    from thrum_core.paths import ThrumPaths, find_repo_root

    try:
        root = find_repo_root(Path.cwd() if cwd is None else cwd, repo_flag, report.environ)
    except ThrumError as exc:
        report.check("repository", FAIL, exc.message)
        return None
    report.check("repository", OK, f"repository root {root}")
    try:
        paths = ThrumPaths.for_root(root)
    except ThrumError as exc:
        report.check("redirect", FAIL, exc.message)
        return None
    if not paths.thrum_dir.is_dir():
        report.check("thrum_dir", FAIL, f"{paths.thrum_dir} does not exist: not initialized (run thrum init)")
        return None
    report.check("thrum_dir", OK, f"thrum dir {paths.thrum_dir}")
    if paths.redirected:
        report.check("redirect", OK, f"{paths.local_thrum_dir / 'redirect'} → {paths.thrum_dir}")
    else:
        report.check("redirect", OK, "main worktree (no redirect)")
    return paths


def _check_config(report: DoctorReport, paths: ThrumPaths) -> None:
    try:
        from thrum_core.config import ConfigSchema, load_config

        schema = ConfigSchema()
        if report.plugins is not None:
            report.plugins.call_each("thrum_add_config", lambda _plugin: {"schema": schema})
        load_config(paths.config_file, schema, environ=report.environ)
    except ThrumError as exc:
        report.check("config", FAIL, exc.message)
        return
    if paths.config_file.exists():
        report.check("config", OK, f"{paths.config_file} is valid")
    else:
        report.check(
            "config", WARN, f"{paths.config_file} is missing; defaults apply (thrum init --force writes it)"
        )


def _check_lifecycle_files(report: DoctorReport, paths: ThrumPaths) -> None:
    from thrum_core.lifecycle import DaemonLock, cleanup_stale, pid_alive, read_pid_file
    from thrum_core.paths import client_socket_path

    locked = DaemonLock.is_locked(paths.lock_file)
    info = read_pid_file(paths.pid_file)
    sock = client_socket_path(paths, report.environ)
    sock_exists = sock.exists() or sock.is_symlink()
    if locked:
        problems = []
        if info is None:
            problems.append(f"{paths.pid_file} is missing or unreadable")
        elif not pid_alive(info.pid):
            problems.append(f"{paths.pid_file} names PID {info.pid}, which is not running")
        elif info.repo_path and Path(info.repo_path) != paths.main_root:
            problems.append(f"{paths.pid_file} names repository {info.repo_path}, not {paths.main_root}")
        if not sock_exists:
            problems.append(f"socket {sock} is missing")
        if problems:
            report.check("daemon_files", WARN, "a daemon holds the lock but " + "; ".join(problems))
        else:
            assert info is not None
            report.check("daemon_files", OK, f"lock held by PID {info.pid}; pid file and socket present")
        return
    stale = [str(p) for p in (paths.pid_file, paths.ws_port_file) if p.exists()]
    if sock_exists:
        stale.append(str(sock))
    if not stale:
        report.check("daemon_files", OK, "no daemon running and no stale files")
        return
    if report.fix and cleanup_stale(paths):
        report.check(
            "daemon_files", OK, f"removed stale files of a dead daemon: {', '.join(stale)}", fixed=True
        )
        return
    report.check(
        "daemon_files",
        WARN,
        f"stale files of a dead daemon: {', '.join(stale)} (thrum doctor --fix removes them)",
    )


def _check_daemon(report: DoctorReport, paths: ThrumPaths) -> None:
    from thrum_core.client import Client
    from thrum_core.paths import client_socket_path

    try:
        client = Client(client_socket_path(paths, report.environ), dial_timeout=2.0, call_timeout=5.0)
    except ThrumError:
        report.check("daemon", WARN, "the daemon is not running (start it with: thrum daemon start)")
        return
    try:
        health = client.call("health")
    except (ThrumError, OSError, ValueError) as exc:
        client.close()
        message = exc.message if isinstance(exc, ThrumError) else str(exc)
        report.check("daemon", FAIL, f"the daemon accepts connections but health failed: {message}")
        return
    report.daemon = client
    pid = health.get("pid")
    summary = f"PID {pid}, version {health.get('version')}, up {int(health.get('uptime_ms') or 0) // 1000} s"
    if health.get("status") == "ok":
        report.check("daemon", OK, f"running ({summary}, sync {health.get('sync_state')})")
    else:
        report.check("daemon", WARN, f"running but {health.get('status')} ({summary})")


def _check_plugins(report: DoctorReport) -> None:
    if report.plugins is None:
        return
    records = report.plugins.plugin_records()
    failed = [r for r in records if r.status == "failed"]
    loaded = sum(1 for r in records if r.status == "loaded")
    disabled = [r.name for r in records if r.status == "disabled"]
    for record in failed:
        report.check(f"plugin {record.name}", FAIL, f"failed to load: {record.error}")
    if not failed:
        extra = f"; disabled: {', '.join(disabled)}" if disabled else ""
        report.check("plugins", OK, f"{loaded} plugins loaded{extra}")


def _check_env(report: DoctorReport) -> None:
    present = [name for name in IGNORED_TS_VARS if name in report.environ]
    if present:
        report.check(
            "environment",
            WARN,
            f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} ignored: "
            "thrum uses the system tailscale CLI",
        )
    else:
        report.check("environment", OK, "no ignored THRUM_TS_* variables")


def _run_plugin_checks(report: DoctorReport) -> None:
    if report.plugins is None:
        return
    caller = report.plugins.hook.thrum_doctor
    for impl in caller.get_hookimpls():
        report.plugin = impl.plugin_name
        try:
            impl.function(report=report)
        except Exception as exc:
            report.check(
                f"plugin {impl.plugin_name}", FAIL, f"its doctor check raised {type(exc).__name__}: {exc}"
            )
        finally:
            report.plugin = None


def run_doctor(
    *,
    cwd: Path | None = None,
    repo_flag: str | None = None,
    fix: bool = False,
    rebuild: bool = False,
    plugins: PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Run every check and return the report (the caller closes ``report.daemon``).

    Plugin checks run only when the repository resolved, since they all need
    ``report.paths``.
    """
    report = DoctorReport(fix=fix, rebuild=rebuild, plugins=plugins, environ=environ)
    paths = _check_repository(report, cwd, repo_flag)
    report.paths = paths
    if paths is not None:
        _check_config(report, paths)
        _check_lifecycle_files(report, paths)
        _check_daemon(report, paths)
    _check_plugins(report)
    _check_env(report)
    if paths is not None:
        _run_plugin_checks(report)
    return report
