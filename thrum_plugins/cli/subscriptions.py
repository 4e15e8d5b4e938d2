"""``thrum subscribe``, ``unsubscribe`` and ``subscriptions`` (SPEC §15.4)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import bad_flag, identity_flags, open_session, parse_scopes

__all__ = ["subscribe", "subscriptions", "unsubscribe"]


def _describe(sub: dict[str, Any]) -> str:
    if sub.get("all"):
        return "all messages"
    if sub.get("scope_type"):
        return f"scope {sub['scope_type']}:{sub['scope_value']}"
    return f"mentions of @{sub.get('mention_role')}"


@click.command("subscribe")
@identity_flags()
@click.option("--scope", metavar="T:V", help="Messages with this scope.")
@click.option("--mention", metavar="@X", help="Messages that mention this role or agent.")
@click.option("--all", "all_", is_flag=True, help="Every message.")
def subscribe(scope: str | None, mention: str | None, all_: bool) -> None:
    """Subscribe your session to push notifications."""
    from thrum_cli.output import emit

    if sum(1 for x in (scope, mention, all_) if x) != 1:
        raise bad_flag("--scope", "give exactly one of --scope, --mention and --all")
    scopes = parse_scopes((scope,) if scope else (), "--scope")
    params: dict[str, Any] = {
        "scope": scopes[0] if scopes else None,
        "mention_role": mention.removeprefix("@") if mention else None,
        "all": True if all_ else None,
    }
    with open_session() as s:
        result = s.call("subscribe", params)

    def human(r: dict[str, Any]) -> None:
        state = "Subscribed" if r.get("created") else "Already subscribed"
        click.echo(f"{state}: subscription {r['subscription_id']} in session {r['session_id']}")

    emit(result, human)


@click.command("unsubscribe")
@identity_flags()
@click.argument("subscription_id", metavar="ID", type=int)
def unsubscribe(subscription_id: int) -> None:
    """Remove one of your session's subscriptions."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("unsubscribe", {"subscription_id": subscription_id})
    emit(
        result, lambda r: click.echo("Removed" if r["removed"] else f"No subscription {subscription_id} here")
    )


def _print_subs(r: dict[str, Any]) -> None:
    subs = r.get("subscriptions") or []
    if not subs:
        click.echo(f"No subscriptions in session {r['session_id']}.")
    for sub in subs:
        eph = " (ephemeral)" if sub.get("ephemeral") else ""
        click.echo(f"{sub['id']:>5}  {_describe(sub)}{eph}  since {sub['created_at']}")


@click.command("subscriptions")
@identity_flags()
def subscriptions() -> None:
    """List your session's subscriptions."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("subscriptions.list")
    emit(result, _print_subs)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    for command in (subscribe, unsubscribe, subscriptions):
        cli.add_command(command)
