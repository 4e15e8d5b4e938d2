"""``thrum team``, ``thrum overview``, ``thrum who-has FILE`` and ``thrum ping AGENT`` (SPEC §15.4)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import (
    ago,
    file_state,
    identity_flags,
    is_method_missing,
    open_session,
    repo_relative,
    short_ts,
    work_counts,
)

__all__ = ["overview", "ping", "team", "who_has"]


def _member_line(m: dict[str, Any]) -> str:
    mark = "●" if m["status"] == "active" else "○"
    where = m.get("branch") or "-"
    inbox = f"{m['inbox_unread']}/{m['inbox_total']} unread"
    line = f"{mark} {m['agent_id']:<20} {m['role']:<14} {m['module']:<12} {where:<20} {inbox}"
    if m["status"] != "active":
        line += f"  seen {ago(m['last_seen_at'])}"
    elif m.get("agent_status"):
        line += f"  [{m['agent_status']}]"
    return line


def print_team(result: dict[str, Any]) -> None:
    """Human rendering of ``{members: [TeamMember]}``."""
    members = result["members"]
    if not members:
        click.echo("Nobody is active. (thrum team --all lists offline agents too)")
        return
    for m in members:
        click.echo(_member_line(m))
        detail = m.get("intent") or m.get("current_task")
        if detail:
            click.echo(f"    {detail}")
        changes = len(m.get("uncommitted_files") or [])
        if m.get("unmerged_commits") or changes:
            click.echo(f"    {work_counts(m['unmerged_commits'], changes)}")


@click.command("team")
@identity_flags("name", "module")
@click.option("--all", "include_all", is_flag=True, help="Include offline agents.")
@click.option("--role", help="Only this role.")
def team(include_all: bool, role: str | None) -> None:
    """Who is working, on which branch, on what, with how many unread messages."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("team.list", {"all": include_all or None, "role": role})
    emit(result, print_team)


# ---------------------------------------------------------------------------------------- overview


def _print_overview(result: dict[str, Any]) -> None:
    health = result["health"]
    agent = result["agent"]
    click.echo(
        f"Repository {health['identity']['repo_name']} ({health['repo_id']}) — daemon {health['status']}"
    )
    if agent:
        click.echo(f"You: {agent['agent_id']} ({agent['role']}/{agent['module']})")
    session = result["session"]
    if session:
        click.echo(f"Session {session['session_id']} since {short_ts(session['started_at'])}")
    ctx = result["work_context"]
    if ctx:
        if ctx.get("intent"):
            click.echo(f"Intent: {ctx['intent']}")
        click.echo(
            f"Branch {ctx.get('branch') or '-'}: "
            + work_counts(len(ctx.get("unmerged_commits") or []), len(ctx.get("uncommitted_files") or []))
        )
    inbox = result["inbox"]
    click.echo(f"Inbox: {inbox['unread']} unread of {inbox['total']}")
    sync = result["sync"]
    click.echo(f"Sync: {sync.get('sync_state')}" + (" (local only)" if sync.get("local_only") else ""))
    click.echo("")
    click.echo("Team:")
    print_team({"members": result["team"]})


@click.command("overview")
@identity_flags()
def overview() -> None:
    """Everything at a glance: you, your session and work, the team, your inbox, sync."""
    from thrum_cli.identity import resolve_caller
    from thrum_cli.output import emit
    from thrum_cli.rpc import resolve_paths
    from thrum_core.errors import ThrumError

    paths = resolve_paths()
    try:
        identity = resolve_caller(paths)
    except ThrumError as exc:
        if exc.code != -32002:
            raise
        identity = None
    with open_session(identity=False, paths=paths) as s:
        s.identity = identity
        health = s.call("health", as_caller=False)
        agent = session = work_context = None
        inbox = {"total": 0, "unread": 0}
        if identity is not None:
            try:
                agent = s.call("agent.whoami")
            except ThrumError as exc:
                if exc.code != -32002:
                    raise
        if agent is not None:
            if agent.get("session_id"):
                session = {
                    "session_id": agent["session_id"],
                    "started_at": agent.get("session_start"),
                    "intent": agent.get("intent"),
                }
                contexts = s.call("agent.listContext", {"agent_id": agent["agent_id"]})["contexts"]
                work_context = next((c for c in contexts if c["session_id"] == agent["session_id"]), None)
            try:
                page = s.call(
                    "message.list", {"for_agent": agent["agent_id"], "exclude_self": True, "page_size": 1}
                )
                inbox = {"total": int(page.get("total", 0)), "unread": int(page.get("unread", 0))}
            except ThrumError as exc:
                if not is_method_missing(exc):
                    raise
        members = s.call("team.list", as_caller=False)["members"]
        try:
            sync = s.call("sync.status", as_caller=False)
        except ThrumError as exc:
            if not is_method_missing(exc):
                raise
            sync = {"sync_state": health.get("sync_state"), "local_only": health.get("local_only")}
    result = {
        "health": health,
        "agent": agent,
        "session": session,
        "work_context": work_context,
        "team": members,
        "inbox": inbox,
        "sync": sync,
        "websocket_port": health.get("ws_port"),
    }
    emit(result, _print_overview)


# ---------------------------------------------------------------------------------------- who-has


def _print_who_has(result: dict[str, Any]) -> None:
    agents = result["agents"]
    if not agents:
        click.echo(f"Nobody is changing {result['file']}.")
        return
    for a in agents:
        counts = f"+{a['additions']} -{a['deletions']}" if a["state"] == "committed" else ""
        click.echo(
            f"{a['agent_id']:<20} {a['state']:<12} {a.get('branch') or '-':<20} {counts:<10}"
            f" {ago(a['last_modified'])}"
        )


@click.command("who-has")
@identity_flags()
@click.argument("file")
def who_has(file: str) -> None:
    """Which agents are changing FILE (committed on their branch or uncommitted)."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        path = repo_relative(s.paths, file)
        contexts = s.call("agent.listContext", {"file": path, "live": True}, deadline_s=30)["contexts"]
    agents: list[dict[str, Any]] = []
    for ctx in contexts:
        state = file_state(ctx, path)
        if state is None:
            continue
        agents.append(
            {
                "agent_id": ctx["agent_id"],
                "session_id": ctx["session_id"],
                "branch": ctx.get("branch"),
                **state,
            }
        )
    emit({"file": path, "agents": agents}, _print_who_has)


# -------------------------------------------------------------------------------------------- ping


@click.command("ping")
@identity_flags()
@click.argument("target", metavar="AGENT")
def ping(target: str) -> None:
    """Is an agent (by name, or else by role) around, and what is it doing? Exits 1 if unknown."""
    from thrum_cli.output import emit, exit_with

    wanted = target.removeprefix("@")
    with open_session(identity=False) as s:
        agents = s.call("agent.list")["agents"]
        match = next((a for a in agents if a["agent_id"] == wanted), None)
        if match is None:
            holders = [a for a in agents if a["role"] == wanted]
            holders.sort(key=lambda a: (a["status"] != "active", a["agent_id"]))
            match = holders[0] if holders else None
        ctx: dict[str, Any] = {}
        if match is not None and match.get("session_id"):
            contexts = s.call("agent.listContext", {"agent_id": match["agent_id"]})["contexts"]
            ctx = next((c for c in contexts if c["session_id"] == match["session_id"]), {})
    result = {
        "agent_id": match["agent_id"] if match else wanted,
        "found": match is not None,
        "status": match["status"] if match else None,
        "last_seen_at": match["last_seen_at"] if match else None,
        "intent": ctx.get("intent"),
        "current_task": ctx.get("current_task"),
        "branch": ctx.get("branch"),
    }

    def human(r: dict[str, Any]) -> None:
        if not r["found"]:
            click.echo(f"{target}: no such agent or role")
            return
        click.echo(f"{r['agent_id']} is {r['status']} (seen {ago(r['last_seen_at'])})")
        for key in ("intent", "current_task", "branch"):
            if r[key]:
                click.echo(f"  {key.replace('_', ' ')}: {r[key]}")

    emit(result, human)
    if not result["found"]:
        exit_with(1)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    for command in (team, overview, who_has, ping):
        cli.add_command(command)
