"""``thrum quickstart``, ``thrum agent …``, ``thrum whoami`` and ``thrum status`` (SPEC §15.4)."""

from __future__ import annotations

import os
import socket
from typing import Any

import click

from thrum_core.markers import hookimpl
from thrum_plugins.cli._agent_common import (
    Session,
    ago,
    bad_flag,
    confirm,
    identity_flags,
    open_session,
    repo_id,
    short_ts,
    worktree_root,
)
from thrum_plugins.cli.sessions import end, heartbeat, set_intent, set_task, start, start_session

__all__ = ["agent", "quickstart", "status", "whoami"]


# ------------------------------------------------------------------------------------------ helpers


def _role_module(role: str | None, module: str | None) -> tuple[str | None, str | None]:
    """Flags > root ``--role``/``--module`` > ``THRUM_ROLE``/``THRUM_MODULE``."""
    from thrum_cli.state import get_state

    state = get_state()
    return (
        role or state.role or state.environ.get("THRUM_ROLE") or None,
        module or state.module or state.environ.get("THRUM_MODULE") or None,
    )


def write_identity(
    s: Session,
    result: dict[str, Any],
    *,
    role: str,
    module: str,
    display: str | None,
    pid: int | None,
    named: bool,
    runtime: str | None = None,
    preferred_runtime: str | None = None,
) -> str:
    """Write ``identities/<agent_id>.json`` for a registration; return its path.

    ``runtime`` (the preset in use) and ``preferred_runtime`` (the one asked for with ``--runtime``)
    are written when known; an existing value is kept otherwise (SPEC §5.5).
    """
    from thrum_cli.identity import write_identity_file

    agent: dict[str, Any] = {"kind": "agent", "role": role, "module": module, "display": display or ""}
    if named:
        agent["name"] = result["agent_id"]
    updates: dict[str, Any] = {"repo_id": repo_id(s.paths), "worktree": worktree_root(s.paths)}
    branch = _current_branch(s.paths)
    if branch:
        updates["branch"] = branch
    if pid:
        updates["agent_pid"] = pid
    if preferred_runtime:
        updates["preferred_runtime"] = preferred_runtime
    if runtime:
        updates["runtime"] = runtime
    return str(write_identity_file(s.paths.identities_dir, result["agent_id"], agent=agent, updates=updates))


def _current_branch(paths: Any) -> str | None:
    """The checked-out branch of the worktree (reads ``HEAD``; no git process)."""
    from thrum_core.paths import find_git_worktree_root

    root = find_git_worktree_root(paths.root)
    if root is None:
        return None
    git = root / ".git"
    try:
        if git.is_file():
            gitdir = git.read_text("utf-8").strip().removeprefix("gitdir:").strip()
            head = (root / gitdir / "HEAD") if not os.path.isabs(gitdir) else (type(root)(gitdir) / "HEAD")
        else:
            head = git / "HEAD"
        text = head.read_text("utf-8").strip()
    except OSError:
        return None
    return text.removeprefix("ref: refs/heads/") if text.startswith("ref: refs/heads/") else None


def _validate_name(name: str | None, flag: str) -> str | None:
    from thrum_core.names import validate_agent_name

    if name is None:
        return None
    name = name.removeprefix("@")
    try:
        return validate_agent_name(name)
    except ValueError as exc:
        raise bad_flag(flag, str(exc)) from None


def _register(
    s: Session,
    *,
    name: str | None,
    role: str,
    module: str,
    display: str | None,
    pid: int | None,
    force: bool,
    re_register: bool,
) -> dict[str, Any]:
    params = {
        "name": name,
        "role": role,
        "module": module,
        "display": display,
        "worktree": worktree_root(s.paths),
        "hostname": socket.gethostname(),
        "agent_pid": pid,
        "force": force or None,
        "re_register": re_register or None,
    }
    result: dict[str, Any] = s.call("agent.register", params, as_caller=False)
    return result


def _same_worktree_conflict(exc: Any, s: Session) -> bool:
    """A conflict about an agent last registered from this very worktree (a restart, not a clash)."""
    data = exc.data or {}
    existing = data.get("existing") or {}
    if exc.code != -32003 or data.get("status") != "conflict":
        return False
    worktree = existing.get("worktree")
    if not isinstance(worktree, str) or not worktree:
        return False
    return os.path.realpath(worktree) == os.path.realpath(worktree_root(s.paths))


# ------------------------------------------------------------------------------------- quickstart


def _print_quickstart(result: dict[str, Any]) -> None:
    agent = result["agent"]
    session = result["session"]
    click.echo(f"You are {agent['agent_id']} — {agent['status']}")
    if session:
        click.echo(f"Session {session['session_id']} started at {short_ts(session['started_at'])}")
        for old in session.get("ended_sessions") or []:
            click.echo(f"  ended previous session {old['session_id']} ({old['reason']})")
    if result.get("intent"):
        click.echo(f"Intent: {result['intent']}")
    click.echo(f"Identity file: {result['identity_file']}")
    runtime = result.get("runtime")
    if isinstance(runtime, dict) and runtime.get("runtimes"):
        how = f" ({runtime['source']})" if runtime.get("source") else ""
        click.echo(f"Runtime: {', '.join(runtime['runtimes'])}{how}")
        for f in runtime.get("files") or []:
            click.echo(f"  {f['path']} ({f['action']})")


@click.command("quickstart")
@click.argument("agent_name", metavar="[NAME]", required=False)
@click.option("--name", help="Agent name (a-z, 0-9, _).")
@click.option("--role", help="Role, e.g. implementer, reviewer.")
@click.option("--module", help="Module or area you work on.")
@click.option("--display", help="Display name.")
@click.option("--intent", help="What you are about to do.")
@click.option("--runtime", help="AI tool preset for generated files (default: detected).")
@click.option("--preamble-file", type=click.Path(dir_okay=False), help="Save this file as your preamble.")
@click.option("--dry-run", is_flag=True, help="Show what would be done.")
@click.option("--force", is_flag=True, help="Take the name over even if it is registered elsewhere.")
@click.option("--no-init", is_flag=True, help="Do not generate runtime files.")
def quickstart(
    agent_name: str | None,
    name: str | None,
    role: str | None,
    module: str | None,
    display: str | None,
    intent: str | None,
    runtime: str | None,
    preamble_file: str | None,
    dry_run: bool,
    force: bool,
    no_init: bool,
) -> None:
    """Register, write your identity file, start a session and set your intent — in one step."""
    from thrum_cli.identity import runtime_ancestor_pid
    from thrum_cli.output import emit
    from thrum_cli.rpc import resolve_paths
    from thrum_cli.state import get_state
    from thrum_core.errors import ThrumError

    state = get_state()
    chosen = _validate_name(
        agent_name or name or state.name or state.environ.get("THRUM_NAME") or None, "--name"
    )
    role, module = _role_module(role, module)
    if not role:
        raise bad_flag("--role", "quickstart needs --role (or THRUM_ROLE)")
    if not module:
        raise bad_flag("--module", "quickstart needs --module (or THRUM_MODULE)")
    display = display or state.environ.get("THRUM_DISPLAY") or None
    preamble = None
    if preamble_file is not None:
        from thrum_plugins.cli._agent_common import read_text_arg

        preamble = read_text_arg(preamble_file, "--preamble-file")
    paths = resolve_paths()
    if dry_run:
        plan = {
            "agent": {"agent_id": chosen, "status": "would register"},
            "session": None,
            "intent": intent,
            "identity_file": str(paths.identities_dir / f"{chosen or '<generated>'}.json"),
            "runtime": runtime,
            "dry_run": True,
        }
        emit(plan, _print_quickstart)
        return
    pid = runtime_ancestor_pid()
    # Connect first: without a daemon nothing (not even runtime files) is written.
    with open_session(identity=False, paths=paths) as s:
        if runtime is not None:
            _check_runtime_name(runtime)
        try:
            registered = _register(
                s,
                name=chosen,
                role=role,
                module=module,
                display=display,
                pid=pid,
                force=force,
                re_register=False,
            )
        except ThrumError as exc:
            if not _same_worktree_conflict(exc, s):
                raise
            registered = _register(
                s,
                name=chosen,
                role=role,
                module=module,
                display=display,
                pid=pid,
                force=force,
                re_register=True,
            )
        agent_id = registered["agent_id"]
        # Files only once the registration stands (a refused name writes nothing).
        runtime_result = None if no_init else _runtime_files(paths, runtime, agent_id, role, module)
        in_use = runtime if runtime not in (None, "all") else None
        if runtime_result and len(runtime_result["runtimes"]) == 1:
            in_use = runtime_result["runtimes"][0]
        identity_file = write_identity(
            s,
            registered,
            role=role,
            module=module,
            display=display,
            pid=pid,
            named=chosen is not None,
            runtime=in_use,
            preferred_runtime=runtime if runtime != "all" else None,
        )
        s.identity = _identity_for(agent_id)
        session = start_session(s, agent_id)
        intent_result = None
        if intent is not None:
            intent_result = s.call("session.setIntent", {"intent": intent})
            from thrum_cli.identity import write_identity_file

            write_identity_file(paths.identities_dir, agent_id, updates={"intent": intent or None})
        if preamble is not None:
            s.call("context.preamble.save", {"content": preamble})
    result = {
        "agent": registered,
        "session": session,
        "intent": intent_result["intent"] if intent_result else None,
        "identity_file": identity_file,
        "runtime": runtime_result,
    }
    emit(result, _print_quickstart)


def _identity_for(agent_id: str) -> Any:
    from thrum_cli.identity import Identity

    return Identity(
        agent_id=agent_id,
        name=agent_id,
        kind="agent",
        role=None,
        module=None,
        display=None,
        repo_id=None,
        worktree=None,
        source="flag",
    )


def _runtime_files(paths: Any, runtime: str | None, name: str | None, role: str, module: str) -> Any:
    """Generate the runtime preset's files through the runtime plugins (as ``init`` does), if any exist.

    The preset is ``--runtime``, else the detected one (environment, ``runtime.primary``, repository
    markers); ``runtime.primary`` is only set when none is configured yet.
    """
    try:
        from thrum_cli.state import get_state
        from thrum_core.plugins.loader import make_plugin_manager
        from thrum_plugins.cli.init import InitOptions, _init_runtime
    except ImportError:
        return None
    opts = InitOptions(
        runtime=runtime,
        agent_name=name or "default_agent",
        agent_role=role,
        agent_module=module,
        set_primary=False,
    )
    return _init_runtime(make_plugin_manager(get_state().environ), paths, opts)


def _check_runtime_name(runtime: str) -> None:
    """Refuse an unknown ``--runtime`` (-32602 with the known names) before anything is written."""
    from thrum_core.errors import InvalidParams
    from thrum_plugins.cli.runtime import local_registry

    _pm, registry = local_registry()
    known = ["all", *registry.names()]
    if runtime not in known:
        raise InvalidParams(
            "--runtime", "unknown", f"unknown runtime {runtime!r} (known: {', '.join(known)})", allowed=known
        )


# ------------------------------------------------------------------------------------------ agent


def _print_registered(result: dict[str, Any]) -> None:
    click.echo(f"{result['agent_id']}: {result['status']} (since {short_ts(result['registered_at'])})")
    click.echo(f"Identity file: {result['identity_file']}")


@click.command("register")
@click.option("--name", help="Agent name (a-z, 0-9, _); omitted: an id derived from role and module.")
@click.option("--role", help="Role (default: --role before the command, THRUM_ROLE).")
@click.option("--module", help="Module (default: --module before the command, THRUM_MODULE).")
@click.option("--display", help="Display name.")
@click.option("--force", is_flag=True, help="Take the name over even if it is registered elsewhere.")
@click.option("--re-register", is_flag=True, help="Register again from here (e.g. after a crash).")
def register(
    name: str | None,
    role: str | None,
    module: str | None,
    display: str | None,
    force: bool,
    re_register: bool,
) -> None:
    """Register an agent and write its identity file."""
    from thrum_cli.identity import runtime_ancestor_pid
    from thrum_cli.output import emit
    from thrum_cli.state import get_state

    state = get_state()
    chosen = _validate_name(name or state.name or state.environ.get("THRUM_NAME") or None, "--name")
    role, module = _role_module(role, module)
    if not role or not module:
        raise bad_flag("--role" if not role else "--module", "agent register needs --role and --module")
    display = display or state.environ.get("THRUM_DISPLAY") or None
    pid = runtime_ancestor_pid()
    with open_session(identity=False) as s:
        result = _register(
            s,
            name=chosen,
            role=role,
            module=module,
            display=display,
            pid=pid,
            force=force,
            re_register=re_register,
        )
        result["identity_file"] = write_identity(
            s, result, role=role, module=module, display=display, pid=pid, named=chosen is not None
        )
    emit(result, _print_registered)


def local_whoami(identity: Any) -> dict[str, Any]:
    """The ``whoami`` document from the identity alone (no daemon)."""
    return {
        "agent_id": identity.agent_id,
        "name": identity.name or identity.agent_id,
        "kind": identity.kind,
        "role": identity.role,
        "module": identity.module,
        "display": identity.display,
        "repo_id": identity.repo_id,
        "worktree": identity.worktree,
        "identity_file": str(identity.identity_file) if identity.identity_file else None,
        "source": identity.source,
        "session_id": identity.session_id,
    }


def _print_whoami(result: dict[str, Any]) -> None:
    click.echo(f"{result['agent_id']} ({result.get('role') or '?'}/{result.get('module') or '?'})")
    if result.get("display"):
        click.echo(f"  display:  {result['display']}")
    click.echo(f"  source:   {result.get('source')}")
    if result.get("identity_file"):
        click.echo(f"  identity: {result['identity_file']}")
    if result.get("session_id"):
        click.echo(f"  session:  {result['session_id']}")
    if result.get("intent"):
        click.echo(f"  intent:   {result['intent']}")


def _emit_field(result: dict[str, Any], field: str | None) -> bool:
    if field is None:
        return False
    if field not in result:
        raise bad_flag("--field", f"unknown field {field!r} (one of: {', '.join(result)})")
    from thrum_cli.output import emit

    value = result[field]
    emit({field: value}, lambda _r: click.echo("" if value is None else str(value)))
    return True


@click.command("whoami")
@identity_flags()
@click.option("--field", help="Print only this field.")
def whoami(field: str | None) -> None:
    """Who you are, from your identity file (works without the daemon)."""
    from thrum_cli.identity import resolve_caller
    from thrum_cli.output import emit

    result = local_whoami(resolve_caller())
    if not _emit_field(result, field):
        emit(result, _print_whoami)


@click.command("whoami")
@identity_flags()
@click.option("--field", help="Print only this field.")
def agent_whoami(field: str | None) -> None:
    """Who you are, with your session when the daemon runs."""
    from thrum_cli.identity import resolve_caller
    from thrum_cli.output import emit
    from thrum_cli.rpc import connect, resolve_paths
    from thrum_core.errors import DaemonNotRunning, ThrumError

    paths = resolve_paths()
    identity = resolve_caller(paths)
    result = local_whoami(identity)
    try:
        with connect(paths) as client:
            remote = client.call("agent.whoami", {"caller_agent_id": identity.agent_id}, timeout=12)
        result.update({k: v for k, v in remote.items() if k != "source"})
    except DaemonNotRunning:
        from thrum_cli.output import hint

        hint("the daemon is not running: showing the identity file only")
    except ThrumError as exc:
        if exc.code != -32002:
            raise
        from thrum_cli.output import warn

        warn(exc.message)
    if not _emit_field(result, field):
        emit(result, _print_whoami)


def _print_agents(result: dict[str, Any]) -> None:
    agents = result["agents"]
    if not agents:
        click.echo("No agents registered.")
        return
    contexts = {c["agent_id"]: c for c in result.get("contexts") or []}
    for a in agents:
        mark = "●" if a["status"] == "active" else "○"
        line = f"{mark} {a['agent_id']:<20} {a['role']:<14} {a['module']:<12} {a['status']:<8}"
        line += f" seen {ago(a['last_seen_at'])}"
        if a.get("agent_status"):
            line += f" [{a['agent_status']}]"
        click.echo(line)
        ctx = contexts.get(a["agent_id"])
        if ctx:
            detail = ctx.get("intent") or ctx.get("current_task")
            branch = ctx.get("branch") or "-"
            click.echo(
                f"    branch {branch}, {len(ctx.get('changed_files') or [])} changed, "
                f"{len(ctx.get('uncommitted_files') or [])} uncommitted" + (f" — {detail}" if detail else "")
            )


@click.command("list")
@identity_flags("name")
@click.option("--role", help="Only agents with this role.")
@click.option("--module", help="Only agents of this module.")
@click.option("--context", "with_context", is_flag=True, help="Add each agent's work context.")
def list_(role: str | None, module: str | None, with_context: bool) -> None:
    """List registered agents."""
    from thrum_cli.output import emit

    with open_session(identity=False) as s:
        result = s.call("agent.list", {"role": role, "module": module})
        if with_context:
            result["contexts"] = s.call("agent.listContext", {"role": role})["contexts"]
    emit(result, _print_agents)


def print_contexts(result: dict[str, Any]) -> None:
    """Human rendering of ``{contexts: [WorkContext]}``."""
    contexts = result["contexts"]
    if not contexts:
        click.echo("No work contexts.")
        return
    for c in contexts:
        click.echo(
            f"{c['agent_id']} ({c['session_id']}) on {c.get('branch') or '-'}"
            f" — git {ago(c.get('git_updated_at'))}"
        )
        if c.get("intent"):
            click.echo(f"  intent: {c['intent']}")
        if c.get("current_task"):
            click.echo(f"  task:   {c['current_task']}")
        for commit in (c.get("unmerged_commits") or [])[:5]:
            click.echo(f"  {commit.get('sha')} {commit.get('message')}")
        for path in (c.get("uncommitted_files") or [])[:10]:
            click.echo(f"  M {path}")


@click.command("context")
@identity_flags("name", "module")
@click.argument("target", metavar="[@AGENT]", required=False)
@click.option("--agent", "role", metavar="ROLE", help="Only agents with this role.")
@click.option("--branch", help="Only work on this branch.")
@click.option("--file", "file", help="Only agents touching this file.")
def context_cmd(target: str | None, role: str | None, branch: str | None, file: str | None) -> None:
    """Show what agents are working on (their git work context)."""
    from thrum_cli.output import emit
    from thrum_plugins.cli._agent_common import repo_relative

    with open_session(identity=False) as s:
        params = {
            "agent_id": target.removeprefix("@") if target else None,
            "role": role,
            "branch": branch,
            "file": repo_relative(s.paths, file) if file else None,
        }
        result = s.call("agent.listContext", params)
    emit(result, print_contexts)


@click.command("delete")
@identity_flags()
@click.argument("name")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, force: bool) -> None:
    """Delete an agent: its registration, sessions, messages, identity file and context."""
    from thrum_cli.output import emit

    name = name.removeprefix("@")
    if not force:
        confirm(f"Delete agent {name} and everything it wrote?", "--force")
    with open_session(identity=False) as s:
        result = s.call("agent.delete", {"name": name}, deadline_s=30)

    def human(r: dict[str, Any]) -> None:
        click.echo(
            f"Deleted {r['agent_id']}: {r['lines_removed']} log lines removed, identity file "
            f"{'removed' if r['identity_file_removed'] else 'not found'}, "
            f"{r['context_files_removed']} context files removed"
        )

    emit(result, human)


def _print_cleanup(result: dict[str, Any]) -> None:
    orphans = result["orphans"]
    if not orphans:
        click.echo("No orphaned agents.")
        return
    for o in orphans:
        seen = f"{o['days_since_last_seen']} days ago" if o["days_since_last_seen"] is not None else "never"
        click.echo(
            f"{o['agent_id']:<20} {', '.join(o['reasons']):<40} last seen {seen},"
            f" {o['message_count']} messages"
        )
    if result["deleted"]:
        click.echo(f"Deleted: {', '.join(result['deleted'])}")
    elif result["dry_run"]:
        click.echo("Nothing deleted (use --force to delete them).")


@click.command("cleanup")
@identity_flags()
@click.option("--dry-run", is_flag=True, help="Only list orphaned agents.")
@click.option("--force", is_flag=True, help="Delete every orphaned agent without asking.")
@click.option(
    "--threshold", type=click.IntRange(1, 3650), default=30, show_default=True, help="Days without activity."
)
def cleanup(dry_run: bool, force: bool, threshold: int) -> None:
    """Find agents whose worktree or identity is gone, or that were idle for too long."""
    from thrum_cli.output import emit, stderr_is_tty

    if dry_run and force:
        raise bad_flag("--force", "--dry-run and --force cannot be used together")
    with open_session(identity=False) as s:
        result = s.call(
            "agent.cleanup",
            {"dry_run": dry_run or None, "force": force or None, "threshold": threshold},
            deadline_s=60,
        )
        from thrum_cli.state import get_state

        interactive = not (dry_run or force or get_state().json) and stderr_is_tty()
        if interactive and result["orphans"]:
            _print_cleanup(result)
            for orphan in result["orphans"]:
                if click.confirm(f"Delete {orphan['agent_id']}?", err=True):
                    s.call("agent.delete", {"name": orphan["agent_id"]}, deadline_s=30)
                    result["deleted"].append(orphan["agent_id"])
            result["dry_run"] = False
    emit(result, _print_cleanup)


@click.command("set-status")
@identity_flags()
@click.argument("status", type=click.Choice(["working", "idle", "blocked"]))
@click.option("--agent", "agent_name", metavar="NAME", help="Another agent (default: you).")
def set_status(status: str, agent_name: str | None) -> None:
    """Say whether you are working, idle or blocked."""
    from thrum_cli.output import emit

    with open_session() as s:
        result = s.call("agent.set-status", {"agent": agent_name, "status": status})
    emit(result, lambda r: click.echo(f"{r['agent']} is {r['status']}"))


@click.group("agent")
def agent() -> None:
    """Register, list and manage agents."""


for _command in (register, agent_whoami, list_, context_cmd, delete, cleanup, set_status):
    agent.add_command(_command)
for _alias, _command in (
    ("start", start),
    ("end", end),
    ("set-intent", set_intent),
    ("set-task", set_task),
    ("heartbeat", heartbeat),
):
    agent.add_command(_command, _alias)


# ----------------------------------------------------------------------------------------- status


def _print_status(result: dict[str, Any]) -> None:
    daemon = result["daemon"]
    agent_doc = result["agent"]
    if agent_doc:
        click.echo(
            f"Agent:   {agent_doc['agent_id']}"
            f" ({agent_doc.get('role') or '?'}/{agent_doc.get('module') or '?'})"
        )
    else:
        click.echo("Agent:   (no identity — run thrum quickstart)")
    session = result["session"]
    if session:
        click.echo(f"Session: {session['session_id']} since {short_ts(session.get('started_at'))}")
        if session.get("intent"):
            click.echo(f"Intent:  {session['intent']}")
    else:
        click.echo("Session: none")
    if daemon["running"]:
        click.echo(
            f"Daemon:  running (pid {daemon['pid']}, sync {daemon['sync_state']},"
            f" ws port {daemon['ws_port'] or '-'})"
        )
    else:
        click.echo("Daemon:  not running (start it with: thrum daemon start)")


@click.command("status")
@identity_flags()
def status() -> None:
    """Your identity, your session and the daemon's state."""
    from thrum_cli.identity import resolve_caller
    from thrum_cli.output import emit
    from thrum_cli.rpc import connect, resolve_paths
    from thrum_core.errors import DaemonNotRunning, ThrumError

    paths = resolve_paths()
    try:
        identity = resolve_caller(paths)
    except ThrumError as exc:
        if exc.code != -32002:
            raise
        identity = None
    agent_doc = local_whoami(identity) if identity is not None else None
    daemon: dict[str, Any] = {"running": False, "pid": None, "ws_port": None, "sync_state": None}
    session = None
    try:
        with connect(paths) as client:
            health = client.call("health", timeout=12)
            daemon = {
                "running": True,
                "pid": health.get("pid"),
                "ws_port": health.get("ws_port"),
                "sync_state": health.get("sync_state"),
            }
            if identity is not None:
                try:
                    me = client.call("agent.whoami", {"caller_agent_id": identity.agent_id}, timeout=12)
                except ThrumError as exc:
                    if exc.code != -32002:
                        raise
                    me = None
                if me is not None and agent_doc is not None:
                    agent_doc.update({k: me[k] for k in ("role", "module", "display", "kind") if me.get(k)})
                    if me.get("session_id"):
                        session = {
                            "session_id": me["session_id"],
                            "started_at": me.get("session_start"),
                            "intent": me.get("intent"),
                            "current_task": me.get("current_task"),
                            "branch": me.get("branch"),
                        }
    except DaemonNotRunning:
        pass
    emit({"agent": agent_doc, "session": session, "daemon": daemon}, _print_status)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    for command in (quickstart, agent, whoami, status):
        cli.add_command(command)
