"""``thrum init``: set a repository up for thrum (SPEC §15.5).

1. outside a git worktree → exit 1 "not a git repository", nothing created;
2. in a linked worktree whose main worktree has ``.thrum/`` → write
   ``.thrum/redirect`` and ``identities/`` and stop;
3. ``.thrum/`` present without ``--force`` → exit 1;
4. create ``.thrum/{identities,context,var}``, ``config.json`` and the ignore
   entry; 5. every registered sync backend's ``init_repo``; 6. legacy data
   (:mod:`thrum_cli.legacy`); 7. runtime files; 8. start the daemon.

``--dry-run`` lists what would be created and changes nothing (sync backends
and runtimes are not called).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.paths import ThrumPaths
    from thrum_core.plugins.manager import PluginManager

IGNORE_LINE = ".thrum/"
_IGNORE_EQUIVALENTS = {".thrum", ".thrum/", "/.thrum", "/.thrum/", ".thrum/*", "/.thrum/*"}
DEFAULT_AGENT_NAME = "default_agent"
DEFAULT_AGENT_ROLE = "implementer"
DEFAULT_AGENT_MODULE = "main"


@dataclass
class InitOptions:
    """The flags of ``thrum init``."""

    force: bool = False
    stealth: bool = False
    dry_run: bool = False
    no_daemon: bool = False
    runtime: str | None = None
    agent_name: str = DEFAULT_AGENT_NAME
    agent_role: str = DEFAULT_AGENT_ROLE
    agent_module: str = DEFAULT_AGENT_MODULE
    skills: bool = False
    #: ``init`` always records the chosen preset as ``runtime.primary``; ``quickstart`` only when unset.
    set_primary: bool = True


@dataclass
class _Plan:
    """What init did (or, with ``--dry-run``, would do)."""

    dry_run: bool
    created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def mkdir(self, path: Path, mode: int = 0o755) -> None:
        if path.is_dir():
            if mode == 0o700 and not self.dry_run and (path.stat().st_mode & 0o777) != 0o700:
                os.chmod(path, 0o700)
                self.notes.append(f"set mode 0700 on {path}")
            return
        self.created.append(str(path))
        if not self.dry_run:
            from thrum_core.fsutil import ensure_dir

            ensure_dir(path, mode)


# ----------------------------------------------------------------- helpers


def has_remote_sync_branch(common_dir: Path) -> bool:
    """Whether ``refs/remotes/origin/a-sync`` exists (loose or packed)."""
    if (common_dir / "refs" / "remotes" / "origin" / "a-sync").is_file():
        return True
    try:
        packed = (common_dir / "packed-refs").read_text("utf-8", errors="replace")
    except OSError:
        return False
    return any(line.split(" ", 1)[-1].strip() == "refs/remotes/origin/a-sync" for line in packed.splitlines())


def identity_block(paths: ThrumPaths) -> dict[str, Any]:
    """A fresh identity block: ``{daemon_id, repo_name, hostname, repo_path, git_origin_url, init_at}``."""
    from thrum_core.ids import new_daemon_id
    from thrum_core.paths import read_origin_url
    from thrum_core.timefmt import format_ts_seconds

    return {
        "daemon_id": new_daemon_id(),
        "repo_name": paths.main_root.name,
        "hostname": socket.gethostname(),
        "repo_path": str(paths.main_root),
        "git_origin_url": read_origin_url(paths.git_common_dir),
        "init_at": format_ts_seconds(time.time_ns()),
    }


def _ignore_target(worktree: Path, common_dir: Path, stealth: bool) -> Path:
    return common_dir / "info" / "exclude" if stealth else worktree / ".gitignore"


def _has_ignore_line(text: str) -> bool:
    return any(line.strip() in _IGNORE_EQUIVALENTS for line in text.splitlines())


def _add_ignore_line(target: Path, plan: _Plan) -> None:
    try:
        text = target.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    if _has_ignore_line(text):
        return
    plan.created.append(f"{target} ({IGNORE_LINE})")
    if plan.dry_run:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    sep = "" if not text or text.endswith("\n") else "\n"
    with target.open("a", encoding="utf-8") as fh:
        fh.write(f"{sep}{IGNORE_LINE}\n")


def _block(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _local_only_of(raw: dict[str, Any]) -> bool:
    """``daemon.local_only`` of a config file (legacy top-level key read too; unset = true, D2)."""
    value = _block(raw, "daemon").get("local_only", raw.get("local_only", True))
    return value if isinstance(value, bool) else True


def _write_config(paths: ThrumPaths, local_only: bool, plan: _Plan) -> bool:
    """Create ``config.json`` or, with ``--force``, complete its identity block; return ``local_only``."""
    from thrum_cli.configfile import read_config_file
    from thrum_core.errors import ThrumError
    from thrum_core.fsutil import atomic_write_json

    if not paths.config_file.exists():
        plan.created.append(str(paths.config_file))
        if not plan.dry_run:
            config = {
                "daemon": {"local_only": local_only, "single_agent_mode": True},
                "identity": identity_block(paths),
            }
            atomic_write_json(paths.config_file, config, mode=0o600)
        return local_only
    try:
        raw = read_config_file(paths.config_file)
    except ThrumError as exc:
        plan.notes.append(f"kept {paths.config_file} as is: {exc.message} (fix it by hand; see thrum doctor)")
        return local_only
    current = _local_only_of(raw)
    identity = _block(raw, "identity")
    missing = {
        k: v
        for k, v in identity_block(paths).items()
        if k in ("daemon_id", "init_at") and not identity.get(k)
    }
    if missing:
        plan.notes.append(f"added {', '.join(sorted(missing))} to the identity block of {paths.config_file}")
        if not plan.dry_run:
            raw["identity"] = {**identity, **missing}
            atomic_write_json(paths.config_file, raw, mode=0o600)
    return current


def _linked_worktree_setup(worktree: Path, main_thrum: Path, common: Path, dry_run: bool) -> dict[str, Any]:
    """Step 2: point this worktree's ``.thrum`` at the main worktree's (redirect + identities)."""
    from thrum_cli.configfile import read_config_file
    from thrum_core.errors import ThrumError
    from thrum_core.fsutil import atomic_write_bytes

    plan = _Plan(dry_run)
    local = worktree / ".thrum"
    redirect = local / "redirect"
    target = main_thrum.resolve()
    plan.mkdir(local)
    content = f"{target}\n"
    try:
        current = redirect.read_text("utf-8")
    except OSError:
        current = None
    if current is None or current.strip() != str(target):
        plan.created.append(str(redirect))
        if not dry_run:
            atomic_write_bytes(redirect, content.encode("utf-8"), 0o644)
    plan.mkdir(local / "identities", 0o700)
    local_only: bool | None
    try:
        local_only = _local_only_of(read_config_file(target / "config.json"))
    except ThrumError:
        local_only = None
    return {
        "repo_path": str(worktree),
        "thrum_dir": str(target),
        "sync_worktree": str(common / "thrum-sync" / "a-sync"),
        "branch": "a-sync",
        "created": plan.created,
        "redirect": str(redirect),
        "local_only": local_only,
        "migrated": None,
        "runtime": None,
        "daemon": None,
        "dry_run": dry_run,
    }


def _sync_backends(pm: PluginManager) -> list[tuple[str, Any]]:
    from thrum_core.plugins.registry import Registry

    registry: Registry[Any] = pm.collect("thrum_register_sync_backends", Registry("sync backend"))
    return [(entry.name, entry.obj) for entry in registry.entries()]


def _init_sync(pm: PluginManager, paths: ThrumPaths, opts: InitOptions, local_only: bool) -> dict[str, Any]:
    """Call each registered sync backend's ``init_repo``; failures are reported, not raised."""
    results: dict[str, Any] = {}
    options = {"force": opts.force, "local_only": local_only, "dry_run": opts.dry_run}
    for name, backend in _sync_backends(pm):
        if opts.dry_run:
            results[name] = {"skipped": "dry run"}
            continue
        try:
            results[name] = backend.init_repo(paths, options) or {}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def _write_runtime_file(root: Path, rel: str, content: str, policy: str, preset: Any, force: bool) -> str:
    target = root / rel
    exists = target.exists()
    if exists and policy == "merge" and hasattr(preset, "merge"):
        merged = preset.merge(rel, target.read_text("utf-8"), content)
        if merged == target.read_text("utf-8"):
            return "kept"
        target.write_text(merged, "utf-8")
        return "merged"
    if exists and policy != "managed" and not force:
        return "kept"
    if exists and target.read_text("utf-8") == content:
        return "kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, "utf-8")
    return "updated" if exists else "created"


def _single_agent_mode(paths: ThrumPaths) -> bool:
    """``daemon.single_agent_mode`` from ``config.json`` (``init`` writes true; D13)."""
    from thrum_cli.configfile import read_config_file

    try:
        daemon = read_config_file(paths.config_file).get("daemon")
    except Exception:
        return True
    value = daemon.get("single_agent_mode") if isinstance(daemon, dict) else None
    return value if isinstance(value, bool) else True


def _init_runtime(pm: PluginManager, paths: ThrumPaths, opts: InitOptions) -> dict[str, Any] | None:
    """Step 7: generate the files of the chosen runtime presets; ``None`` when there are none.

    The preset is ``--runtime`` (a name, ``all`` or ``cli-only``), else the one the environment,
    ``runtime.primary`` or the repository's markers point at
    (:func:`thrum_plugins.runtimes._select.select_runtime`). ``runtime.primary`` is set when a single
    preset was chosen (by ``quickstart`` only while none is configured).
    """
    from thrum_cli.configfile import update_config_file
    from thrum_core.errors import InvalidParams
    from thrum_core.plugins.registry import Registry
    from thrum_plugins.cli.runtime import configured_primary
    from thrum_plugins.runtimes._select import select_runtime

    registry: Registry[Any] = pm.collect("thrum_register_runtimes", Registry("runtime"))
    if not len(registry):
        return None
    environ = dict(os.environ)
    configured = configured_primary(paths.config_file)
    source: str | None = "flag"
    if opts.runtime == "all":
        names = [n for n in registry.names() if n != "cli-only"]
    else:
        if opts.runtime is not None and opts.runtime not in registry:
            raise InvalidParams(
                "--runtime",
                "unknown",
                f"unknown runtime {opts.runtime!r} (known: {', '.join(['all', *registry.names()])})",
                allowed=["all", *registry.names()],
            )
        chosen, source = select_runtime(
            registry,
            environ=environ,
            root=paths.root,
            explicit=opts.runtime,
            configured=configured,
            hook=pm.hook.thrum_detect_runtime,
        )
        if chosen is None:
            return None
        names = [chosen]
    context = {
        "agent_name": opts.agent_name,
        "agent_role": opts.agent_role,
        "agent_module": opts.agent_module,
        "repo_path": str(paths.main_root),
        "repo_name": paths.main_root.name,
        "skills_only": opts.skills,
        "single_agent_mode": _single_agent_mode(paths),
        "force": opts.force,
    }
    files: list[dict[str, str]] = []
    for name in names:
        preset = registry.get(name)
        if preset is None:
            continue
        for rel, content, policy in preset.files(context):
            action = (
                "would write"
                if opts.dry_run
                else _write_runtime_file(paths.root, rel, content, policy, preset, opts.force)
            )
            files.append({"runtime": name, "path": rel, "policy": policy, "action": action})
    primary = names[0] if len(names) == 1 else None
    if primary and not opts.dry_run and (opts.set_primary or not configured):
        update_config_file(paths.config_file, {"runtime.primary": primary})
    return {"name": opts.runtime or primary, "runtimes": names, "source": source, "files": files}


def _start_daemon(paths: ThrumPaths) -> tuple[dict[str, Any], bool]:
    """Step 8; returns ``(daemon result, ok)`` — a failed start is reported, init itself stands."""
    from thrum_core.errors import ThrumError
    from thrum_plugins.cli.daemon import probe_health, read_ws_port, start_daemon

    health = probe_health(paths)
    if health is not None:
        return {
            "started": False,
            "already_running": True,
            "pid": health.get("pid"),
            "ws_port": health.get("ws_port") or read_ws_port(paths),
            "socket_path": None,
            "log_path": str(paths.log_file),
        }, True
    try:
        return start_daemon(paths), True
    except ThrumError as exc:
        return {"started": False, "already_running": False, "error": exc.to_error_object()}, False


# ----------------------------------------------------------------- init


def run_init(opts: InitOptions, repo: str | None = None) -> tuple[dict[str, Any], int]:
    """Initialise the repository at ``repo`` (default: the cwd); return ``(result, exit status)``."""
    from thrum_cli.legacy import migrate_legacy_data
    from thrum_core.errors import Conflict, NotInitialized
    from thrum_core.paths import ThrumPaths, find_git_worktree_root, git_common_dir, main_worktree_root

    start = Path(repo).expanduser() if repo else Path.cwd()
    if repo and not start.is_dir():
        raise NotInitialized(f"--repo {repo}: no such directory")
    worktree = find_git_worktree_root(start)
    if worktree is None:
        raise NotInitialized(f"not a git repository: {start.resolve()} (run git init first)")
    common = git_common_dir(worktree)
    main_root = main_worktree_root(common)
    local_thrum = worktree / ".thrum"
    main_thrum = main_root / ".thrum"

    linked = main_root != worktree
    if linked and main_thrum.is_dir() and (not local_thrum.exists() or (local_thrum / "redirect").exists()):
        return _linked_worktree_setup(worktree, main_thrum, common, opts.dry_run), 0
    if local_thrum.exists() and not opts.force:
        raise Conflict("exists", "already initialized (use --force to repair)", path=str(local_thrum))

    paths = ThrumPaths.for_root(worktree)
    plan = _Plan(opts.dry_run)
    plan.mkdir(paths.local_thrum_dir)
    plan.mkdir(paths.identities_dir, 0o700)
    plan.mkdir(paths.context_dir)
    plan.mkdir(paths.var_dir, 0o700)
    local_only = _write_config(paths, not has_remote_sync_branch(common), plan)
    _add_ignore_line(_ignore_target(worktree, common, opts.stealth), plan)

    from thrum_core.plugins.loader import make_plugin_manager

    pm = make_plugin_manager()
    sync = _init_sync(pm, paths, opts, local_only)
    sync_worktree = next((r["sync_worktree"] for r in sync.values() if r.get("sync_worktree")), None)
    branch = next((r["branch"] for r in sync.values() if r.get("branch")), None)
    migrated = migrate_legacy_data(paths, dry_run=opts.dry_run)
    runtime = _init_runtime(pm, paths, opts)

    daemon: dict[str, Any] | None = None
    status = 0
    if not opts.no_daemon and not opts.dry_run:
        daemon, ok = _start_daemon(paths)
        status = 0 if ok else 1
    result = {
        "repo_path": str(paths.main_root),
        "thrum_dir": str(paths.thrum_dir),
        "sync_worktree": sync_worktree or str(paths.sync_dir),
        "branch": branch or "a-sync",
        "created": plan.created,
        "redirect": None,
        "local_only": local_only,
        "migrated": migrated,
        "runtime": runtime,
        "daemon": daemon,
        "dry_run": opts.dry_run,
        "sync_backends": sync,
        "notes": plan.notes,
    }
    return result, status


def _rel(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _print_result(result: dict[str, Any]) -> None:
    from thrum_cli.output import hint, warn

    root = result["repo_path"]
    dry = result["dry_run"]
    if result["redirect"]:
        verb = "Would link" if dry else "Linked"
        click.echo(f"{verb} this worktree to {result['thrum_dir']} ({_rel(result['redirect'], root)})")
    else:
        click.echo(f"{'Would initialize' if dry else 'Initialized'} thrum in {root}")
    label = "would create" if dry else "created"
    for item in result["created"]:
        click.echo(f"  {label} {_rel(item, root)}")
    if not result["created"]:
        click.echo("  nothing to create")
    for note in result.get("notes", []):
        click.echo(f"  {note}")
    if result["local_only"] is not None:
        click.echo(f"  local-only mode: {'on' if result['local_only'] else 'off'}")
    for name, outcome in (result.get("sync_backends") or {}).items():
        if "error" in outcome:
            warn(f"sync backend {name} failed: {outcome['error']}")
        else:
            click.echo(f"  sync backend {name}: {', '.join(f'{k}={v}' for k, v in outcome.items()) or 'ok'}")
    migrated = result["migrated"]
    if migrated and migrated.get("pending"):
        warn(f"legacy data found ({', '.join(migrated['sources'])}); import it with: thrum migrate")
    runtime = result["runtime"]
    if runtime:
        for f in runtime["files"]:
            click.echo(f"  {f['runtime']}: {f['path']} ({f['action']})")
    daemon = result["daemon"]
    if daemon:
        if daemon.get("error"):
            warn(f"the daemon did not start: {daemon['error']['message']}")
        elif daemon.get("already_running"):
            click.echo(f"thrum daemon already running (PID {daemon['pid']})")
        else:
            click.echo(f"thrum daemon started (PID {daemon['pid']})")
            if daemon.get("ws_port"):
                click.echo(f"Web UI: http://localhost:{daemon['ws_port']}/")
    if not dry and not result["redirect"]:
        hint("next: thrum quickstart --role implementer --module main")


@click.command("init")
@click.option("--force", is_flag=True, help="Repair an existing .thrum/ (keeps data, config and identity).")
@click.option("--stealth", is_flag=True, help="Ignore .thrum/ in .git/info/exclude instead of .gitignore.")
@click.option("--dry-run", is_flag=True, help="List what would be created; change nothing.")
@click.option("--no-daemon", is_flag=True, help="Do not start the daemon.")
@click.option("--runtime", metavar="R", help="Runtime preset (claude, codex, ..., all, cli-only).")
@click.option(
    "--agent-name", default=DEFAULT_AGENT_NAME, show_default=True, help="Agent name for runtime files."
)
@click.option(
    "--agent-role", default=DEFAULT_AGENT_ROLE, show_default=True, help="Agent role for runtime files."
)
@click.option("--agent-module", default=DEFAULT_AGENT_MODULE, show_default=True, help="Agent module.")
@click.option("--skills", is_flag=True, help="Install only the thrum skill files of the runtime.")
def init(**flags: Any) -> None:
    """Set this repository up for thrum and start its daemon."""
    from thrum_cli.output import emit, exit_with
    from thrum_cli.state import get_state

    result, status = run_init(InitOptions(**flags), get_state().repo)
    emit(result, _print_result)
    if status:
        exit_with(status)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(init)
