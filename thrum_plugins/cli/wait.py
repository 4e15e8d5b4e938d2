"""``thrum wait``: block until a matching message arrives (SPEC §15.4).

Exit status: 0 a message arrived, 1 timeout, 2 error.  The daemon pushes the
answer (``message.wait`` long-poll); nothing is polled.
"""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import bad_flag, identity_flags, open_session, parse_scopes, short_ts

__all__ = ["wait"]

WAIT_SLACK_S = 5.0


def _timeout_ms(text: str) -> int:
    from thrum_core.timefmt import parse_duration_ns

    try:
        ns = parse_duration_ns(text)
    except ValueError as exc:
        raise bad_flag("--timeout", str(exc)) from None
    ms = ns // 1_000_000
    if ms < 1 or ms > 3_600_000 or text.startswith(("-", "+")):
        raise bad_flag("--timeout", "--timeout must be between 1ms and 1h, e.g. 30s or 5m")
    return ms


def _print(r: dict[str, Any]) -> None:
    if r["status"] != "received":
        click.echo("No message before the timeout.")
        return
    for m in r.get("messages") or []:
        click.echo(f"{short_ts(m.get('created_at'))}  {m['agent_id']}  {m['message_id']}")
        click.echo(f"  {(m.get('body') or {}).get('content', '')}")


@click.command("wait")
@identity_flags()
@click.option(
    "--timeout", "timeout", default="30s", show_default=True, metavar="DUR", help="How long to wait."
)
@click.option("--scope", metavar="T:V", help="Only messages with this scope.")
@click.option("--mention", metavar="@X", help="Only messages mentioning this agent or role.")
@click.option("--all", "all_", is_flag=True, help="Any message at all.")
@click.option("--after", metavar="±DUR", help="Also return messages since this point (-30s = 30 s ago).")
def wait(timeout: str, scope: str | None, mention: str | None, all_: bool, after: str | None) -> int:
    """Wait for a message; exit 0 when one arrives, 1 on timeout, 2 on error."""
    from thrum_cli.output import emit
    from thrum_cli.state import get_state

    get_state().error_exit_code = 2
    timeout_ms = _timeout_ms(timeout)
    scopes = parse_scopes((scope,) if scope else (), "--scope")
    params: dict[str, Any] = {
        "timeout_ms": timeout_ms,
        "scope": scopes[0] if scopes else None,
        "mention": mention.removeprefix("@") if mention else None,
        "all": True if all_ else None,
        "after": after,
    }
    with open_session() as s:
        result = s.call("message.wait", params, deadline_s=timeout_ms / 1000 + WAIT_SLACK_S)
    if result["status"] == "received":
        emit({"status": "received", "messages": result["messages"]}, _print)
        return 0
    emit({"status": "timeout"}, _print)
    return 1


wait.error_exit_code = 2  # type: ignore[attr-defined]  # usage errors exit 2 too (SPEC §15.3)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(wait)
