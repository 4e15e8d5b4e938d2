"""``thrum doctor [--fix] [--rebuild]``: check the repository, the daemon and the plugins (SPEC §15.6)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def _print_report(result: dict[str, Any]) -> None:
    width = max((len(c["name"]) for c in result["checks"]), default=0)
    for check in result["checks"]:
        mark = _MARK.get(check["status"], check["status"])
        fixed = " (fixed)" if check["fixed"] else ""
        click.echo(f"{mark}  {check['name']:<{width}}  {check['message']}{fixed}")
    failed = sum(1 for c in result["checks"] if c["status"] == "fail")
    warned = sum(1 for c in result["checks"] if c["status"] == "warn")
    if failed:
        click.echo(f"\n{failed} check(s) failed, {warned} warning(s)")
    else:
        click.echo(f"\nall checks passed ({warned} warning(s))" if warned else "\nall checks passed")


@click.command("doctor")
@click.option("--fix", is_flag=True, help="Repair what can be repaired (stale files, worktree, torn lines).")
@click.option("--rebuild", is_flag=True, help="Rebuild the SQLite projection from the logs.")
def doctor(fix: bool, rebuild: bool) -> None:
    """Check the repository, the daemon and the plugins; exit 1 if a check fails."""
    from thrum_cli.output import emit, exit_with
    from thrum_cli.state import get_state
    from thrum_core.doctor import run_doctor
    from thrum_core.plugins.loader import make_plugin_manager

    state = get_state()
    report = run_doctor(
        repo_flag=state.repo,
        fix=fix,
        rebuild=rebuild,
        plugins=make_plugin_manager(state.environ),
        environ=state.environ,
    )
    try:
        result = report.to_json()
    finally:
        if report.daemon is not None:
            report.daemon.close()
    emit(result, _print_report)
    if not result["ok"]:
        exit_with(1)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(doctor)
