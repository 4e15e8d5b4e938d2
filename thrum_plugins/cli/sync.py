"""``thrum sync status`` and ``thrum sync force [--wait]`` (SPEC §15.4, §9.10).

Only click, the standard library and thrum's stdlib-only modules are imported
(one RPC per command).  ``thrum context sync`` lives in the context command
group and calls the ``context.sync`` method of the git sync plugin.
"""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl

__all__ = ["FORCE_WAIT_DEADLINE_S", "sync"]

#: Server deadline of ``sync.force {wait: true}`` (the CLI adds its slack on top).
FORCE_WAIT_DEADLINE_S = 90.0
CLI_SLACK_S = 2.0


def _short(value: str | None) -> str:
    return value[:12] if value else "-"


def _print_status(r: dict[str, Any]) -> None:
    state = r.get("sync_state")
    if r.get("local_only"):
        click.echo(
            f"Sync: {state} — local-only mode (from {r.get('local_only_source')}): "
            "events are committed locally, never fetched or pushed"
        )
    else:
        click.echo(f"Sync: {state} (local-only off, from {r.get('local_only_source')})")
    if not r.get("running"):
        click.echo("The sync loop is not running.")
    click.echo(f"Remote:       {r.get('remote') or '-'}   branch {r.get('branch')}")
    click.echo(f"Worktree:     {r.get('worktree')}")
    interval = r.get("interval_s")
    click.echo(f"Interval:     {f'{interval} s' if interval else 'no timer (triggers and force only)'}")
    click.echo(f"Last sync:    {r.get('last_sync_at') or 'never'}")
    click.echo(f"Last attempt: {r.get('last_attempt_at') or 'never'}")
    click.echo(f"Next sync:    {r.get('next_sync_at') or '-'}")
    click.echo(f"Pending:      {r.get('pending_events', 0)} local events   head {_short(r.get('head'))}")
    if r.get("last_error"):
        click.echo(f"Last error:   {r['last_error']}")
    transport = r.get("transport")
    if isinstance(transport, dict) and transport.get("fallback_used"):
        click.echo(f"Transport:    git CLI fallback ({transport.get('last_fallback_reason')})")


def _print_force(r: dict[str, Any]) -> None:
    if not r.get("triggered"):
        click.echo(f"No cycle started: sync is {r.get('sync_state')}.")
        return
    cycle = r.get("cycle")
    if cycle is None:
        click.echo(f"Sync cycle started (state {r.get('sync_state')}).")
        return
    parts = []
    if r.get("local_only"):
        parts.append("local-only: no fetch or push")
    elif cycle.get("fetched"):
        parts.append("fetched")
    parts.append(f"{cycle.get('new_events', 0)} new events")
    parts.append(f"{cycle.get('files_merged', 0)} files merged")
    parts.append(f"commit {_short(cycle.get('commit'))}")
    if cycle.get("pushed"):
        parts.append("pushed")
    if (cycle.get("attempts") or 0) > 1:
        parts.append(f"{cycle['attempts']} attempts")
    click.echo(f"Sync {r.get('sync_state')}: " + ", ".join(parts))
    if cycle.get("error"):
        click.echo(f"Error: {cycle['error']}", err=True)


@click.group("sync")
def sync() -> None:
    """Git sync of the message log (branch a-sync)."""


@sync.command("status")
def status() -> None:
    """Show the sync state, schedule, last results and local-only mode."""
    from thrum_cli.output import emit
    from thrum_cli.rpc import call

    emit(call("sync.status", {}), _print_status)


@sync.command("force")
@click.option("--wait", is_flag=True, help="Wait for the cycle and print its report.")
def force(wait: bool) -> None:
    """Start a sync cycle now."""
    from thrum_cli.output import emit
    from thrum_cli.rpc import call

    deadline = FORCE_WAIT_DEADLINE_S + CLI_SLACK_S if wait else 10.0 + CLI_SLACK_S
    emit(call("sync.force", {"wait": True} if wait else {}, deadline_s=deadline), _print_force)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(sync)
