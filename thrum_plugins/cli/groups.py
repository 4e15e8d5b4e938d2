"""``thrum group create|delete|add|remove|list|info|members`` (SPEC §15.4)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import bad_flag, identity_flags, open_session

__all__ = ["group"]


@click.group("group")
def group() -> None:
    """Groups of agents, roles and other groups (@everyone is built in)."""


@group.command("create")
@identity_flags()
@click.argument("group_name", metavar="NAME")
@click.option("--description", help="What the group is for (at most 500 characters).")
def create(group_name: str, description: str | None) -> None:
    """Create a group."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("group.create", {"name": group_name.removeprefix("@"), "description": description})
    emit(result, lambda r: click.echo(f"Created group {r['name']} ({r['group_id']})"))


@group.command("delete")
@identity_flags()
@click.argument("group_name", metavar="NAME")
def delete(group_name: str) -> None:
    """Delete a group (messages sent to it stay)."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("group.delete", {"name": group_name.removeprefix("@")})
    emit(result, lambda r: click.echo(f"Deleted group {r['name']}"))


def _member(member: str | None, role: str | None, group_name: str | None) -> tuple[str, str]:
    given = [(v, t) for v, t in ((member, "agent"), (role, "role"), (group_name, "group")) if v]
    if len(given) != 1:
        raise bad_flag("MEMBER", "give one member: @AGENT, --role ROLE or --group NAME")
    value, kind = given[0]
    return value.removeprefix("@"), kind


def _change(verb: str, group_name: str, member: str | None, role: str | None, nested: str | None) -> None:
    from thrum_cli.output import emit

    value, kind = _member(member, role, nested)
    method = "group.member.add" if verb == "add" else "group.member.remove"
    with open_session() as s:
        result = s.call(method, {"group": group_name.removeprefix("@"), "member": value, "member_type": kind})
    done = result.get("added" if verb == "add" else "removed")

    def human(r: dict[str, Any]) -> None:
        what = f"{r['member_type']} {r['member']}"
        if verb == "add":
            click.echo(f"Added {what} to {r['group']}" if done else f"{what} is already in {r['group']}")
        else:
            click.echo(f"Removed {what} from {r['group']}" if done else f"{what} is not in {r['group']}")

    emit(result, human)


@group.command("add")
@identity_flags("name", "module")
@click.argument("group_name", metavar="GROUP")
@click.argument("member", metavar="[@MEMBER]", required=False)
@click.option("--role", "role", metavar="ROLE", help="Add every agent with this role (* = every agent).")
@click.option("--group", "nested", metavar="NAME", help="Add another group.")
def add(group_name: str, member: str | None, role: str | None, nested: str | None) -> None:
    """Add an agent, a role or a group to a group."""
    _change("add", group_name, member, role, nested)


@group.command("remove")
@identity_flags("name", "module")
@click.argument("group_name", metavar="GROUP")
@click.argument("member", metavar="[@MEMBER]", required=False)
@click.option("--role", "role", metavar="ROLE", help="Remove this role.")
@click.option("--group", "nested", metavar="NAME", help="Remove this nested group.")
def remove(group_name: str, member: str | None, role: str | None, nested: str | None) -> None:
    """Remove a member from a group."""
    _change("remove", group_name, member, role, nested)


def _print_groups(r: dict[str, Any]) -> None:
    for g in r.get("groups") or []:
        tag = " (built in)" if g.get("builtin") else ""
        desc = f"  {g['description']}" if g.get("description") else ""
        click.echo(f"{g['name']:<24} {g['member_count']:>4} member(s){tag}{desc}")


@group.command("list")
def list_() -> None:
    """List the groups (@everyone first)."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("group.list")
    emit(result, _print_groups)


def _print_info(r: dict[str, Any]) -> None:
    click.echo(f"{r['name']}" + (" (built in)" if r.get("builtin") else f" ({r['group_id']})"))
    if r.get("description"):
        click.echo(f"  {r['description']}")
    if r.get("created_by"):
        click.echo(f"  created by {r['created_by']} at {r['created_at']}")
    for m in r.get("members") or []:
        click.echo(f"  - {m['member_type']}: {m['member_value']}")


@group.command("info")
@click.argument("name")
def info(name: str) -> None:
    """Show a group and its members."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("group.info", {"name": name.removeprefix("@")})
    emit(result, _print_info)


def _print_members(r: dict[str, Any]) -> None:
    for m in r.get("members") or []:
        click.echo(f"{m['member_type']}: {m['member_value']}")
    if "expanded" in r:
        click.echo("agents: " + (", ".join(r["expanded"]) or "(none)"))


@group.command("members")
@click.argument("name")
@click.option("--expand", is_flag=True, help="Also resolve roles and nested groups to agents.")
def members(name: str, expand: bool) -> None:
    """List a group's members."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("group.members", {"name": name.removeprefix("@"), "expand": expand or None})
    emit(result, _print_members)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(group)
