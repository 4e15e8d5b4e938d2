"""``thrum migrate``, ``thrum purge``, ``thrum rebuild``: the event store's commands (SPEC §6.8, §9.13, §7.1).

- ``migrate [--dry-run] [--from DIR]`` imports the Go tool's data with the
  daemon stopped (it takes ``var/thrum.lock``), showing a progress bar on
  stderr and a summary of counts.
- ``purge --before X | --all [--confirm]`` asks the daemon: without
  ``--confirm`` a preview of the counts, with it the purge itself.
- ``rebuild`` rebuilds the SQLite projection from the log with the daemon
  stopped (it takes the lock and tells the user to stop a running daemon).

The heavy modules (the event store, the plugin manager) are imported only
when a command runs.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.paths import ThrumPaths

PURGE_DEADLINE_S = 300.0
DAEMON_RUNNING = "the thrum daemon is running; stop it first (thrum daemon stop), then run thrum {cmd} again"

_PHASES = {
    "scan": "reading the sync dir",
    "import": "importing",
    "receipts": "read state",
    "projection": "building the projection",
    "rebuild": "rebuilding",
}
#: Phases whose progress counts items, not bytes.
_COUNTED = frozenset({"receipts"})


class ProgressBar:
    """A one-line progress bar on stderr (redrawn in place on a terminal).

    Not on a terminal, or with ``--quiet``/``--json``, it prints nothing while
    running and one line per finished phase (not with ``--quiet``).
    """

    WIDTH = 30

    def __init__(self, *, enabled: bool, tty: bool):
        self.enabled = enabled
        self.tty = tty
        self._phase: str | None = None
        self._last_draw = 0.0
        self._done_phases: set[str] = set()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if phase != self._phase:
            self._finish_line()
            self._phase = phase
        finished = total > 0 and done >= total
        now = time.monotonic()
        if self.tty and (finished or now - self._last_draw >= 0.05):
            self._last_draw = now
            frac = min(1.0, done / total) if total > 0 else 1.0
            filled = int(self.WIDTH * frac)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            label = _PHASES.get(phase, phase)
            amount = f"{done}/{total}" if phase in _COUNTED else f"{_size(done)}/{_size(total)}"
            sys.stderr.write(f"\r{label:<24} [{bar}] {frac * 100:5.1f}% {amount}")
            sys.stderr.flush()
        if finished and phase not in self._done_phases:
            self._done_phases.add(phase)
            if not self.tty:
                amount = f"{total}" if phase in _COUNTED else _size(total)
                click.echo(f"{_PHASES.get(phase, phase)}: done ({amount})", err=True)

    def _finish_line(self) -> None:
        if self.tty and self._phase is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self._finish_line()
        self._phase = None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _progress_bar() -> ProgressBar:
    from thrum_cli.output import stderr_is_tty
    from thrum_cli.state import get_state

    state = get_state()
    return ProgressBar(enabled=not state.quiet, tty=stderr_is_tty() and not state.json)


def _require_stopped(paths: ThrumPaths, cmd: str) -> None:
    from thrum_core.errors import Conflict
    from thrum_core.lifecycle import DaemonLock

    if DaemonLock.is_locked(paths.lock_file):
        raise Conflict("busy", DAEMON_RUNNING.format(cmd=cmd))


# --------------------------------------------------------------------------- migrate


def _print_migration(result: dict[str, Any]) -> None:
    from pathlib import Path

    verb = "Would import" if result["dry_run"] else "Imported"
    if not result["sources"]:
        click.echo("No legacy data found (nothing to migrate).")
        return
    groups: dict[str, dict[str, int]] = {}
    for src in result["sources"]:
        key = src["source"] if src["kind"] == "go_db" else str(Path(src["source"]).parent) + "/*.jsonl"
        g = groups.setdefault(
            key,
            {
                "files": 0,
                "lines": 0,
                "imported": 0,
                "duplicates": 0,
                "invalid": 0,
                "receipts": 0,
                "db": int(src["kind"] == "go_db"),
            },
        )
        g["files"] += 1
        for k in ("lines", "imported", "duplicates", "invalid", "receipts"):
            g[k] += src[k]
    for key, g in groups.items():
        if g["db"]:
            what = f"{g['receipts']} receipt(s) from {g['lines']} read row(s)"
        else:
            what = f"{g['imported']} of {g['lines']} line(s) in {g['files']} file(s)"
        extra = []
        if g["duplicates"]:
            extra.append(f"{g['duplicates']} already present")
        if g["invalid"]:
            extra.append(f"{g['invalid']} invalid")
        tail = f" ({', '.join(extra)})" if extra else ""
        click.echo(f"  {key}: {what}{tail}")
    click.echo(
        f"{verb} {result['imported']} event(s) ({result['receipts']} receipt(s)) from "
        f"{len(result['sources'])} source(s); {result['duplicates']} duplicate(s), "
        f"{result['invalid']} invalid line(s) skipped."
    )
    for backup in result.get("backups") or []:
        click.echo(f"Go database moved to {backup}")
    for note in result.get("notes") or []:
        click.echo(note)
    projection = result.get("projection")
    if projection:
        stats = projection.get("stats") or {}
        click.echo(
            f"Projection ready: {stats.get('events', '?')} events indexed in {projection.get('ms')} ms."
        )


@click.command("migrate")
@click.option("--dry-run", is_flag=True, help="Count what would be imported; change nothing.")
@click.option(
    "--from",
    "from_dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Import another legacy .thrum directory (e.g. an unpacked fixture).",
)
def migrate_cmd(dry_run: bool, from_dir: str | None) -> None:
    """Import the Go tool's data (legacy .thrum layout, old sync worktree, Go database); daemon stopped."""
    from thrum_cli.output import emit
    from thrum_cli.rpc import resolve_paths
    from thrum_cli.state import get_state
    from thrum_core.events.legacy import migrate_repository

    paths = resolve_paths()
    _require_stopped(paths, "migrate")
    bar = _progress_bar()
    try:
        report = migrate_repository(
            paths, from_dir=from_dir, dry_run=dry_run, progress=bar, environ=get_state().environ
        )
    finally:
        bar.close()
    emit(report.to_json(), _print_migration)


# --------------------------------------------------------------------------- purge


def _print_purge(result: dict[str, Any]) -> None:
    counts = (
        f"{result['messages']} message(s), {result['sessions']} session(s) "
        f"({result['events']} event line(s) in {result['files_rewritten']} file(s))"
    )
    if result["dry_run"]:
        click.echo(f"Would purge {counts} before {result['cutoff']}.")
        click.echo("Run again with --confirm to purge. Agents and groups are kept.")
    else:
        click.echo(f"Purged {counts} before {result['cutoff']}. Agents and groups are kept.")


@click.command("purge")
@click.option(
    "--before", "before", default=None, metavar="X", help="Cut-off: 2d, 24h, YYYY-MM-DD or RFC 3339."
)
@click.option("--all", "all_", is_flag=True, help="Purge everything up to now.")
@click.option("--confirm", is_flag=True, help="Really purge (without it: a preview of the counts).")
def purge_cmd(before: str | None, all_: bool, confirm: bool) -> None:
    """Remove old messages and ended sessions (agents and groups stay); preview unless --confirm."""
    from thrum_cli import rpc
    from thrum_cli.output import emit
    from thrum_core.errors import INVALID_PARAMS, ThrumError

    if (before is None) == (not all_):
        raise ThrumError(
            "give exactly one of --before X and --all",
            {"field": "--before" if before is not None or not all_ else "--all", "reason": "exactly_one"},
            code=INVALID_PARAMS,
        )
    params: dict[str, Any] = {"dry_run": not confirm}
    if all_:
        params["all"] = True
    else:
        params["before"] = before
    result = rpc.call("purge", params, deadline_s=PURGE_DEADLINE_S + 2)
    emit(result, _print_purge)


# --------------------------------------------------------------------------- rebuild


def _print_rebuild(result: dict[str, Any]) -> None:
    rb = result["rebuild"]
    states = ", ".join(f"{k} {v}" for k, v in sorted((rb.get("states") or {}).items()) if v) or "no events"
    click.echo(
        f"Rebuilt {result['db_path']} from {rb['files']} log file(s): {rb['lines']} line(s), "
        f"{rb['events']} event(s) in {rb['seconds']:.2f} s ({states})."
    )
    torn = (result.get("open") or {}).get("torn") or []
    for t in torn:
        click.echo(f"Repaired the torn tail of {t['file']} ({t['action']}, {t['bytes']} bytes)")


@click.command("rebuild")
def rebuild_cmd() -> None:
    """Rebuild the SQLite projection from the log (with the daemon stopped)."""
    from thrum_cli.output import emit
    from thrum_cli.rpc import resolve_paths
    from thrum_cli.state import get_state
    from thrum_core.errors import Conflict
    from thrum_core.events.log import list_log_files
    from thrum_core.events.store import EventStore
    from thrum_core.events.types import EventTypeRegistry
    from thrum_core.lifecycle import DaemonLock, ensure_var_dir
    from thrum_core.plugins.loader import make_plugin_manager

    paths = resolve_paths()
    ensure_var_dir(paths)
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        raise Conflict("busy", DAEMON_RUNNING.format(cmd="rebuild"))
    bar = _progress_bar()
    try:
        registry = EventTypeRegistry.from_plugins(make_plugin_manager(get_state().environ))
        store = EventStore(paths, registry, _daemon_id(paths))
        try:
            opened = store.open()
            rb: dict[str, Any]
            if opened.rebuilt:  # a missing, corrupt or outdated database was rebuilt by open()
                rb = {
                    "files": len(list_log_files(paths.sync_dir)),
                    "lines": opened.lines,
                    "events": opened.new,
                    "duplicates": opened.duplicates,
                    "invalid": opened.invalid,
                    "states": opened.states,
                    "epoch": opened.epoch,
                    "seconds": round(opened.seconds, 3),
                }
            else:
                rb = store.rebuild(lambda done, total: bar("rebuild", done, total)).to_json()
        finally:
            store.close()
    finally:
        bar.close()
        lock.release()
    emit({"db_path": str(paths.db_path), "open": opened.to_json(), "rebuild": rb}, _print_rebuild)


def _daemon_id(paths: ThrumPaths) -> str:
    from thrum_core.fsutil import read_json

    try:
        data = read_json(paths.config_file)
    except ValueError:
        return ""
    identity = data.get("identity") if isinstance(data, dict) else None
    value = identity.get("daemon_id") if isinstance(identity, dict) else None
    return value if isinstance(value, str) else ""


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(migrate_cmd)
    cli.add_command(purge_cmd)
    cli.add_command(rebuild_cmd)
