"""``thrum context save|show|load|clear|preamble|prime|sync`` and ``thrum prime`` (SPEC §15.4)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import (
    bad_flag,
    identity_flags,
    is_method_missing,
    open_session,
    read_text_arg,
    short_ts,
    work_counts,
)

__all__ = ["MAX_CONTEXT_BYTES", "context", "prime"]

#: Saved context is limited to 1 MiB (SPEC §5.6); checked here too so nothing is sent.
MAX_CONTEXT_BYTES = 1024 * 1024


def _too_large(size: int, field: str) -> Exception:
    from thrum_core.errors import PayloadTooLarge

    return PayloadTooLarge(
        field,
        MAX_CONTEXT_BYTES,
        size,
        f"{field} is {size} bytes; saved context is limited to 1 MiB ({MAX_CONTEXT_BYTES} bytes)",
    )


@click.command("save")
@identity_flags()
@click.option("--file", "file", metavar="PATH", help="Read the context from PATH (default: stdin).")
@click.option("--agent", "agent_name", metavar="NAME", help="Save for another agent (default: you).")
def save(file: str | None, agent_name: str | None) -> None:
    """Save your working context (≤ 1 MiB) for your next session or other agents."""
    from thrum_cli.output import emit

    content = read_text_arg(file, "--file")
    size = len(content.encode("utf-8"))
    if size > MAX_CONTEXT_BYTES:
        raise _too_large(size, "--file" if file else "content")
    with open_session() as s:
        result = s.call("context.save", {"agent_name": agent_name, "content": content})
    emit(result, lambda r: click.echo(f"Saved {r['bytes']} bytes of context for {r['agent_name']}"))


def _print_show(raw: bool) -> Any:
    def human(r: dict[str, Any]) -> None:
        if raw:
            if r.get("preamble") is not None:
                click.echo("--- preamble ---")
                click.echo(r["preamble"].rstrip("\n"))
            click.echo("--- context ---")
            if r.get("content") is not None:
                click.echo(r["content"].rstrip("\n"))
            return
        if r.get("content") is None:
            click.echo(f"No saved context for {r['agent_name']}.")
        else:
            click.echo(
                f"# Context of {r['agent_name']} ({r['source']}, {short_ts(r['updated_at'])},"
                f" {r['bytes']} bytes)"
            )
        if r.get("preamble"):
            click.echo("")
            click.echo(r["preamble"].rstrip("\n"))
        if r.get("content") is not None:
            click.echo("")
            click.echo(r["content"].rstrip("\n"))

    return human


@click.command("show")
@identity_flags()
@click.option("--agent", "agent_name", metavar="NAME", help="Another agent's context (default: yours).")
@click.option("--raw", is_flag=True, help="Preamble and context between markers, no header.")
@click.option("--no-preamble", is_flag=True, help="Leave the preamble out.")
def show(agent_name: str | None, raw: bool, no_preamble: bool) -> None:
    """Show a saved context."""
    from thrum_cli.output import emit

    with open_session(identity=agent_name is None) as s:
        result = s.call("context.show", {"agent_name": agent_name, "no_preamble": no_preamble or None})
    emit(result, _print_show(raw))


@click.command("clear")
@identity_flags()
@click.option("--agent", "agent_name", metavar="NAME", help="Another agent (default: you).")
def clear(agent_name: str | None) -> None:
    """Delete a saved context."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("context.clear", {"agent_name": agent_name})
    emit(
        result,
        lambda r: click.echo(f"{'Cleared' if r['cleared'] else 'No saved'} context for {r['agent_name']}"),
    )


@click.command("preamble")
@identity_flags()
@click.option("--init", "init", is_flag=True, help="Write the default preamble.")
@click.option("--file", "file", metavar="PATH", help="Save PATH as the preamble.")
@click.option("--agent", "agent_name", metavar="NAME", help="Another agent (default: you).")
def preamble(init: bool, file: str | None, agent_name: str | None) -> None:
    """Show your preamble, or save it with --init or --file."""
    from thrum_cli.output import emit

    if init and file:
        raise bad_flag("--file", "give --init or --file, not both")
    if init or file:
        content = None if init else read_text_arg(file, "--file")
        if content is not None and len(content.encode("utf-8")) > MAX_CONTEXT_BYTES:
            raise _too_large(len(content.encode("utf-8")), "--file")
        with open_session() as s:
            result = s.call(
                "context.preamble.save", {"agent_name": agent_name, "content": content, "init": init or None}
            )
        emit(result, lambda r: click.echo(f"Saved preamble for {r['agent_name']} ({r['bytes']} bytes)"))
        return
    with open_session(identity=agent_name is None) as s:
        result = s.call("context.preamble.show", {"agent_name": agent_name})

    def human(r: dict[str, Any]) -> None:
        if r["content"] is None:
            click.echo(f"No preamble for {r['agent_name']} (create one with thrum context preamble --init).")
        else:
            click.echo(r["content"].rstrip("\n"))

    emit(result, human)


def _print_prime(r: dict[str, Any]) -> None:
    agent = r.get("agent")
    if agent:
        click.echo(f"# You are {agent['agent_id']} ({agent['role']}/{agent['module']})")
        if agent.get("intent"):
            click.echo(f"Intent: {agent['intent']}")
    ctx = r.get("context") or {}
    if ctx.get("preamble"):
        click.echo("")
        click.echo(ctx["preamble"].rstrip("\n"))
    if ctx.get("content"):
        click.echo("\n## Saved context\n")
        click.echo(ctx["content"].rstrip("\n"))
    work = r.get("work_context")
    if work:
        click.echo(
            f"\n## Work\nBranch {work.get('branch') or '-'}, "
            + work_counts(len(work.get("unmerged_commits") or []), len(work.get("uncommitted_files") or []))
        )
    team = r.get("team") or []
    if team:
        click.echo("\n## Team")
        for m in team:
            detail = m.get("intent") or m.get("current_task") or ""
            click.echo(f"- {m['agent_id']} ({m['role']}) {m.get('branch') or ''} {detail}".rstrip())
    inbox = r.get("inbox")
    if inbox:
        click.echo(f"\n## Inbox: {inbox['unread']} unread of {inbox['total']}")
        for msg in inbox.get("messages") or []:
            author = msg.get("agent_id") or "?"
            body = ((msg.get("body") or {}).get("content") or "").splitlines()
            click.echo(f"- [{msg.get('message_id')}] {author}: {body[0] if body else ''}")
    sync = r.get("sync")
    if sync:
        click.echo(f"\nSync: {sync.get('sync_state')}" + (" (local only)" if sync.get("local_only") else ""))
    for section, message in (r.get("errors") or {}).items():
        click.echo(f"({section} unavailable: {message})", err=True)


def _builtin_preset(name: str) -> Any:
    """The built-in runtime preset called ``name`` (imported directly: no plugin scan), or ``None``."""
    import importlib
    import re

    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name):
        return None
    try:
        module = importlib.import_module(f"thrum_plugins.runtimes.{name.replace('-', '_')}")
    except ImportError:
        return None
    return getattr(module, "PRESET", None)


def _instructions_hint(s: Any, result: dict[str, Any]) -> str | None:
    """A tip when the caller's runtime instructions file lacks the thrum block (``None``: nothing to say).

    The runtime is the one recorded in the caller's identity file (``quickstart`` writes it); Claude
    Code, and an unknown runtime, are judged by the daemon's ``claude_md`` section.
    """
    ident = getattr(s.identity, "file", None)
    runtime = ident.raw.get("runtime") if ident is not None else None
    preset = _builtin_preset(runtime) if isinstance(runtime, str) and runtime != "claude" else None
    if preset is None:
        claude = result.get("claude_md") or {}
        if claude.get("thrum_block"):
            return None
        return "tip: add thrum instructions to CLAUDE.md with: thrum setup claude-md --apply"
    target = getattr(preset, "instructions_file", None) or getattr(preset, "rule_file", None)
    if not target:
        return None
    from thrum_plugins.runtimes._preset import BLOCK_BEGIN

    try:
        text = (s.paths.root / target).read_text("utf-8", errors="replace")
    except OSError:
        text = ""
    if BLOCK_BEGIN in text:
        return None
    command = f"thrum init --force --no-daemon --runtime {preset.name}"
    return f"tip: add thrum instructions to {target} with: {command}"


def _prime() -> None:
    from thrum_cli.output import emit, hint

    with open_session() as s:
        result = s.call("context.prime")
    emit(result, _print_prime)
    tip = _instructions_hint(s, result)
    if tip:
        hint(tip)


@click.command("prime")
@identity_flags()
def prime() -> None:
    """Everything you need to start working: identity, context, team, inbox."""
    _prime()


@click.command("prime")
@identity_flags()
def context_prime() -> None:
    """Everything you need to start working: identity, context, team, inbox."""
    _prime()


@click.command("sync")
@identity_flags()
@click.option("--agent", "agent_name", metavar="NAME", help="Another agent (default: you).")
def sync(agent_name: str | None) -> None:
    """Publish your saved context to the a-sync branch for other clones."""
    from thrum_cli.output import emit
    from thrum_core.errors import ThrumError

    with open_session() as s:
        try:
            result = s.call("context.sync", {"agent_name": agent_name}, deadline_s=90)
        except ThrumError as exc:
            if is_method_missing(exc):
                raise ThrumError(
                    "context sync needs the git sync plugin, and this daemon has no context.sync method",
                    {"method": "context.sync"},
                    code=exc.code,
                ) from None
            raise

    def human(r: dict[str, Any]) -> None:
        click.echo(
            f"Published context of {r['agent_name']} to {r['path']}"
            + (" and pushed" if r.get("pushed") else "")
        )

    emit(result, human)


@click.group("context")
def context() -> None:
    """Save, show and share working context."""


for _command in (save, show, clear, preamble, context_prime, sync):
    context.add_command(_command)
context.add_command(show, "load")


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(context)
    cli.add_command(prime)
