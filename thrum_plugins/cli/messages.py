"""``thrum send``, ``reply``, ``inbox``, ``sent`` and ``thrum message get|edit|delete|read`` (SPEC §15.4).

Standard library, click and thrum's stdlib-only modules only: ``thrum send``
is the command agents run most, so it imports nothing heavy (a meta-test
checks ``sys.modules`` after it).
"""

from __future__ import annotations

import json
from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import (
    bad_flag,
    confirm,
    identity_flags,
    open_session,
    parse_scopes,
    read_text_arg,
    short_ts,
)

__all__ = ["inbox", "message", "reply", "send", "sent"]

PREVIEW_WIDTH = 72


def _content(text: str | None, stdin: bool, body_file: str | None) -> str:
    """The message text: ``TEXT``, ``-``/``--stdin`` (stdin) or ``--body-file``."""
    given = sum(
        1 for x in (text is not None and text != "-", stdin or text == "-", body_file is not None) if x
    )
    if given > 1:
        raise bad_flag("--stdin", "give the text once: as an argument, with --stdin or with --body-file")
    if body_file is not None:
        return read_text_arg(body_file, "--body-file")
    if stdin or text == "-":
        return read_text_arg(None, "--stdin")
    if text is None:
        raise bad_flag("MESSAGE", "no message text: pass it as an argument, with --stdin or with --body-file")
    return text


def _split_addresses(values: tuple[str, ...]) -> list[str]:
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def _one_line(text: str, width: int = PREVIEW_WIDTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_sent(r: dict[str, Any]) -> None:
    from thrum_cli.output import hint

    recipients = r.get("recipients") or []
    who = ", ".join(recipients[:8]) + (f" and {len(recipients) - 8} more" if len(recipients) > 8 else "")
    count = f"{len(recipients)} recipient{'s' if len(recipients) != 1 else ''}"
    click.echo(f"Sent {r['message_id']} to {who or 'nobody'} ({count})")
    if r.get("thread_id"):
        click.echo(f"Thread: {r['thread_id']}")
    for warning in r.get("warnings") or []:
        hint(f"note: {warning}")


@click.command("send")
@identity_flags()
@click.argument("text", metavar="[MESSAGE|-]", required=False)
@click.option(
    "--to", "to", multiple=True, metavar="@X", help="Recipient: @agent, @role, @group or @everyone."
)
@click.option("-b", "--broadcast", is_flag=True, help="Send to every agent (@everyone).")
@click.option("--everyone", is_flag=True, help="Same as --broadcast.")
@click.option("--mention", multiple=True, metavar="@X", help="Mention (and address) an agent or role.")
@click.option("--scope", multiple=True, metavar="T:V", help="Add a scope (repeatable).")
@click.option("--ref", multiple=True, metavar="T:V", help="Add a ref (repeatable).")
@click.option("--tag", multiple=True, metavar="TAG", help="Add a tag (repeatable).")
@click.option("--thread", "thread_id", metavar="ID", help="Post in this thread.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "plain", "json"]), default="markdown")
@click.option("--structured", metavar="JSON", help="A JSON object sent with the message.")
@click.option("--stdin", is_flag=True, help="Read the message from stdin.")
@click.option("--body-file", metavar="P", help="Read the message from a file.")
def send(
    text: str | None,
    to: tuple[str, ...],
    broadcast: bool,
    everyone: bool,
    mention: tuple[str, ...],
    scope: tuple[str, ...],
    ref: tuple[str, ...],
    tag: tuple[str, ...],
    thread_id: str | None,
    fmt: str,
    structured: str | None,
    stdin: bool,
    body_file: str | None,
) -> None:
    """Send a message (to agents, roles, groups or everyone)."""
    from thrum_cli.output import emit

    addresses = _split_addresses(to)
    mentions = _split_addresses(mention)
    if not addresses and not mentions and not (broadcast or everyone):
        raise bad_flag(
            "--to", "no recipient: use --to @name|@role|@group|@everyone, --mention or --broadcast"
        )
    content = _content(text, stdin, body_file)
    params: dict[str, Any] = {
        "content": content,
        "format": fmt,
        "to": addresses or None,
        "mentions": mentions or None,
        "broadcast": True if (broadcast or everyone) else None,
        "scopes": parse_scopes(scope, "--scope"),
        "refs": parse_scopes(ref, "--ref", kind="ref"),
        "tags": list(tag) or None,
        "thread_id": thread_id,
    }
    if structured is not None:
        try:
            params["structured"] = json.loads(structured)
        except ValueError as exc:
            raise bad_flag("--structured", f"--structured is not valid JSON: {exc}") from None
        if not isinstance(params["structured"], dict):
            raise bad_flag("--structured", "--structured must be a JSON object")
    with open_session() as s:
        result = s.call("message.send", params)
    emit(result, _print_sent)


@click.command("reply")
@identity_flags()
@click.argument("message_id", metavar="MSG_ID")
@click.argument("text", metavar="[TEXT|-]", required=False)
@click.option("--format", "fmt", type=click.Choice(["markdown", "plain", "json"]), default="markdown")
@click.option("--stdin", is_flag=True, help="Read the reply from stdin.")
@click.option("--body-file", metavar="P", help="Read the reply from a file.")
def reply(message_id: str, text: str | None, fmt: str, stdin: bool, body_file: str | None) -> None:
    """Reply to a message: joins (or starts) its thread, reaches its audience, marks it read."""
    from thrum_cli.output import emit

    content = _content(text, stdin, body_file)
    with open_session() as s:
        result = s.call("message.send", {"content": content, "format": fmt, "reply_to": message_id})
        s.call("message.markRead", {"message_ids": [message_id]})
    emit(result, _print_sent)


def _row(m: dict[str, Any], *, mark: bool) -> str:
    marker = "●" if mark and m.get("is_read") is False else " "
    author = m.get("agent_id") or "?"
    scopes = " ".join(
        f"[{s['type']}:{s['value']}]" for s in m.get("scopes") or [] if s["type"] != "broadcast"
    )
    when = short_ts(m.get("created_at"))[:16]
    text = _one_line(((scopes + " ") if scopes else "") + (m.get("body") or {}).get("content", ""))
    deleted = " (deleted)" if m.get("deleted") else ""
    return f"{marker} {when}  {author:<16} {text}{deleted}  {m['message_id']}"


def _showing(r: dict[str, Any], noun: str = "") -> str:
    n = len(r.get("messages") or [])
    first = (r["page"] - 1) * r["page_size"] + 1 if n else 0
    last = first + n - 1 if n else 0
    unread = f" ({r['unread']} unread)" if "unread" in r else ""
    return f"Showing {first}–{last} of {r['total']}{noun}{unread}"  # noqa: RUF001 - the SPEC's wording


def _print_list(r: dict[str, Any]) -> None:
    messages = r.get("messages") or []
    if not messages:
        click.echo("No messages.")
    for m in messages:
        click.echo(_row(m, mark=True))
    click.echo(_showing(r))


@click.command("inbox")
@identity_flags()
@click.option("--scope", metavar="T:V", help="Only messages with this scope.")
@click.option("--mentions", is_flag=True, help="Only messages that mention you or your role.")
@click.option("--unread", is_flag=True, help="Only unread messages (and do not mark them read).")
@click.option("-a", "--all", "all_", is_flag=True, help="Every message, not only those addressed to you.")
@click.option("--from", "author", metavar="@X", help="Only messages from this agent.")
@click.option(
    "--page-size", "--limit", "page_size", type=click.IntRange(1, 100), default=10, show_default=True
)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--oldest", is_flag=True, help="Oldest first.")
def inbox(
    scope: str | None,
    mentions: bool,
    unread: bool,
    all_: bool,
    author: str | None,
    page_size: int,
    page: int,
    oldest: bool,
) -> None:
    """Your messages, newest first; the ones shown are marked read (not with --unread)."""
    from thrum_cli.output import emit

    scopes = parse_scopes((scope,) if scope else (), "--scope")
    with open_session() as s:
        assert s.identity is not None
        me = s.identity.agent_id
        params: dict[str, Any] = {
            "for_agent": None if all_ else me,
            "exclude_self": True,
            "scope": scopes[0] if scopes else None,
            "mentions": mentions or None,
            "unread": unread or None,
            "author_id": author.removeprefix("@") if author else None,
            "page_size": page_size,
            "page": page,
            "sort_order": "asc" if oldest else None,
        }
        result = s.call("message.list", params)
        if not unread:
            to_mark = [m["message_id"] for m in result["messages"] if m.get("is_read") is False]
            if to_mark:
                s.call("message.markRead", {"message_ids": to_mark})
    emit(result, _print_list)


def _print_outbox(r: dict[str, Any]) -> None:
    messages = r.get("messages") or []
    if not messages:
        click.echo("No sent messages.")
    for m in messages:
        recipients = m.get("recipients") or []
        read = sum(1 for x in recipients if x.get("read_at"))
        click.echo(_row(m, mark=False) + f"  read {read}/{len(recipients)}")
    click.echo(_showing(r))


def _print_message(r: dict[str, Any]) -> None:
    m = r["message"]
    click.echo(f"Message {m['message_id']}" + ("  (deleted)" if m.get("deleted") else ""))
    click.echo(f"From:    {m['agent_id']}" + (f" (by {m['authored_by']})" if m.get("authored_by") else ""))
    click.echo(
        f"Sent:    {short_ts(m.get('created_at'))}"
        + (f"  edited {short_ts(m['updated_at'])}" if m.get("updated_at") else "")
    )
    audiences = ", ".join(f"@{a['value']}" for a in m.get("audiences") or [])
    if audiences:
        click.echo(f"To:      {audiences}")
    if m.get("thread_id"):
        click.echo(
            f"Thread:  {m['thread_id']}" + (f" (reply to {m['reply_to']})" if m.get("reply_to") else "")
        )
    if m.get("scopes"):
        click.echo("Scopes:  " + " ".join(f"{s['type']}:{s['value']}" for s in m["scopes"]))
    recipients = m.get("recipients") or []
    if recipients:
        states = ", ".join(f"{x['agent_id']}{' ✓' if x.get('read_at') else ''}" for x in recipients)
        click.echo(f"Read by: {states}")
    click.echo("")
    click.echo((m.get("body") or {}).get("content", ""))
    if (m.get("body") or {}).get("structured"):
        click.echo(f"\nstructured: {m['body']['structured']}")


@click.group("sent", invoke_without_command=True)
@identity_flags()
@click.option("--to", "to", metavar="@X", help="Only messages to this address.")
@click.option("--unread", is_flag=True, help="Only messages some recipient has not read.")
@click.option(
    "--page-size", "--limit", "page_size", type=click.IntRange(1, 100), default=10, show_default=True
)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.pass_context
def sent(ctx: click.Context, to: str | None, unread: bool, page_size: int, page: int) -> None:
    """Messages you sent, with who has read them."""
    if ctx.invoked_subcommand is not None:
        return
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call(
            "message.outbox", {"to": to, "unread": unread or None, "page_size": page_size, "page": page}
        )
    emit(result, _print_outbox)


@sent.command("show")
@identity_flags()
@click.argument("message_id", metavar="ID")
def sent_show(message_id: str) -> None:
    """Show one message you sent, with each recipient's read state."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("message.get", {"message_id": message_id})
    emit(result, _print_message)


@click.group("message")
def message() -> None:
    """Read, edit, delete and mark messages."""


@message.command("get")
@identity_flags()
@click.argument("message_id", metavar="ID")
def get(message_id: str) -> None:
    """Show a message (and mark it read)."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("message.get", {"message_id": message_id, "mark_read": True})
    emit(result, _print_message)


@message.command("edit")
@identity_flags()
@click.argument("message_id", metavar="ID")
@click.argument("text", metavar="[TEXT|-]", required=False)
@click.option("--stdin", is_flag=True, help="Read the new text from stdin.")
@click.option("--body-file", metavar="P", help="Read the new text from a file.")
def edit(message_id: str, text: str | None, stdin: bool, body_file: str | None) -> None:
    """Replace the text of a message you sent (its format is kept)."""
    from thrum_cli.output import emit

    content = _content(text, stdin, body_file)
    with open_session() as s:
        result = s.call("message.edit", {"message_id": message_id, "content": content})
    emit(result, lambda r: click.echo(f"Edited {r['message_id']} (version {r['version']})"))


@message.command("delete")
@identity_flags()
@click.argument("message_id", metavar="ID")
@click.option("--force", is_flag=True, help="Delete without asking.")
@click.option("--reason", help="Why (at most 500 characters).")
def delete(message_id: str, force: bool, reason: str | None) -> None:
    """Delete a message you sent (it disappears from inboxes)."""
    from thrum_cli.output import emit

    if not force:
        confirm(f"Delete {message_id}?", "--force")
    with open_session() as s:
        result = s.call("message.delete", {"message_id": message_id, "reason": reason})
    emit(result, lambda r: click.echo(f"Deleted {r['message_id']}"))


def _print_marked(r: dict[str, Any]) -> None:
    click.echo(
        f"Marked {r['marked_count']} read ({r['skipped_count']} skipped); {r['remaining']} unread left"
    )
    if r.get("not_found"):
        click.echo("Not found: " + ", ".join(r["not_found"]))


@message.command("read")
@identity_flags()
@click.argument("message_ids", metavar="[ID...]", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Mark every unread message read.")
def read(message_ids: tuple[str, ...], all_: bool) -> None:
    """Mark messages read."""
    from thrum_cli.output import emit

    if bool(message_ids) == all_:
        raise bad_flag("--all", "give message ids or --all (not both)")
    params: dict[str, Any] = {"all": True} if all_ else {"message_ids": list(message_ids)}
    with open_session() as s:
        result = s.call("message.markRead", params, deadline_s=60.0 if all_ else 10.0)
    emit(result, _print_marked)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    for command in (send, reply, inbox, sent, message):
        cli.add_command(command)
