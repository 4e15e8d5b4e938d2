"""``thrum session start|end|list|heartbeat|set-intent|set-task`` (SPEC §15.4).

The same commands are reachable as ``thrum agent start|end|heartbeat|set-intent|set-task``.
"""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import (
    ago,
    identity_flags,
    open_session,
    parse_scopes,
    short_ts,
    worktree_root,
)

__all__ = ["end", "heartbeat", "session", "set_intent", "set_task", "start", "start_session"]


def _remember_session(paths: Any, agent_id: str, session_id: str | None) -> None:
    """Record the session in the identity file, when this worktree has one for the agent (informational)."""
    from thrum_cli.identity import find_identity_file, write_identity_file

    if find_identity_file(paths.identities_dir, agent_id) is not None:
        write_identity_file(paths.identities_dir, agent_id, updates={"session_id": session_id})


def start_session(s: Any, agent_id: str) -> dict[str, Any]:
    """``session.start`` for ``agent_id`` with this worktree, then note it in the identity file."""
    result: dict[str, Any] = s.call(
        "session.start", {"agent_id": agent_id, "worktree": worktree_root(s.paths)}
    )
    _remember_session(s.paths, agent_id, result["session_id"])
    return result


def _print_started(result: dict[str, Any]) -> None:
    click.echo(
        f"Session {result['session_id']} started for {result['agent_id']} at {short_ts(result['started_at'])}"
    )
    for old in result.get("ended_sessions") or []:
        click.echo(f"  ended previous session {old['session_id']} ({old['reason']})")


@click.command("start")
@identity_flags()
def start() -> None:
    """Start a session for your agent (ends any session it still has open)."""
    from thrum_cli.output import emit

    with open_session() as s:
        assert s.identity is not None
        result = start_session(s, s.identity.agent_id)
    emit(result, _print_started)


@click.command("end")
@identity_flags()
@click.option("--reason", type=click.Choice(["normal", "crash"]), default="normal", show_default=True)
@click.option("--session-id", help="End this session instead of your current one.")
def end(reason: str, session_id: str | None) -> None:
    """End your session."""
    from thrum_cli.output import emit

    with open_session() as s:
        assert s.identity is not None
        result = s.call("session.end", {"session_id": session_id, "reason": reason})
        _remember_session(s.paths, s.identity.agent_id, None)

    def human(r: dict[str, Any]) -> None:
        click.echo(f"Session {r['session_id']} ended after {r['duration_ms'] // 1000} s")

    emit(result, human)


def _print_sessions(result: dict[str, Any]) -> None:
    sessions = result["sessions"]
    if not sessions:
        click.echo("No sessions.")
        return
    for ses in sessions:
        state = (
            "active"
            if ses["status"] == "active"
            else f"ended {short_ts(ses['ended_at'])} ({ses['end_reason'] or '-'})"
        )
        intent = f" — {ses['intent']}" if ses.get("intent") else ""
        click.echo(
            f"{ses['session_id']}  {ses['agent_id']:<20} started {short_ts(ses['started_at'])}"
            f"  {state}{intent}"
        )


@click.command("list")
@identity_flags()
@click.option("--active", is_flag=True, help="Only open sessions.")
@click.option("--agent", "agent_id", metavar="ID", help="Only this agent's sessions.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def list_(active: bool, agent_id: str | None, limit: int) -> None:
    """List sessions, newest first."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("session.list", {"active": active or None, "agent_id": agent_id, "limit": limit})
    emit(result, _print_sessions)


@click.command("heartbeat")
@identity_flags()
@click.option("--add-scope", multiple=True, metavar="T:V")
@click.option("--remove-scope", multiple=True, metavar="T:V")
@click.option("--add-ref", multiple=True, metavar="T:V")
@click.option("--remove-ref", multiple=True, metavar="T:V")
def heartbeat(
    add_scope: tuple[str, ...],
    remove_scope: tuple[str, ...],
    add_ref: tuple[str, ...],
    remove_ref: tuple[str, ...],
) -> None:
    """Say you are alive and refresh your git work context."""
    from thrum_cli.output import emit

    params = {
        "add_scopes": parse_scopes(add_scope, "--add-scope"),
        "remove_scopes": parse_scopes(remove_scope, "--remove-scope"),
        "add_refs": parse_scopes(add_ref, "--add-ref", "ref"),
        "remove_refs": parse_scopes(remove_ref, "--remove-ref", "ref"),
    }
    with open_session() as s:
        result = s.call("session.heartbeat", params, deadline_s=30)

    def human(r: dict[str, Any]) -> None:
        branch = r["branch"] or "(no branch)"
        click.echo(
            f"Heartbeat for {r['session_id']}: {branch}, {r['unmerged_commits']} unmerged commits, "
            f"{r['changed_files']} changed, {r['uncommitted_files']} uncommitted"
            f" (git {ago(r['git_updated_at'])})"
        )

    emit(result, human)


@click.command("set-intent")
@identity_flags()
@click.argument("text")
def set_intent(text: str) -> None:
    """Say what you are working on ("" clears it)."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("session.setIntent", {"intent": text})
    emit(result, lambda r: click.echo(f"Intent: {r['intent'] or '(cleared)'}"))


@click.command("set-task")
@identity_flags()
@click.argument("task")
def set_task(task: str) -> None:
    """Set your current task, one line ("" clears it)."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("session.setTask", {"current_task": task})
    emit(result, lambda r: click.echo(f"Task: {r['current_task'] or '(cleared)'}"))


@click.group("session")
def session() -> None:
    """Start, end and inspect sessions."""


for _command in (start, end, list_, heartbeat, set_intent, set_task):
    session.add_command(_command)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(session)
