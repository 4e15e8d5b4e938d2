"""``thrum runtime list|show|set-default`` (SPEC §15.4): the AI-tool presets.

``list`` and ``show`` ask the daemon (``runtime.list`` / ``runtime.show``) and compute the same result
locally, from the CLI's own environment, when the daemon is not running. ``set-default`` writes
``runtime.primary`` to ``config.json`` (no daemon needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from thrum_core.markers import hookimpl


def local_registry() -> Any:
    """The registered runtime presets, collected in this process."""
    from thrum_cli.state import get_state
    from thrum_core.plugins.loader import make_plugin_manager
    from thrum_core.plugins.registry import Registry

    pm = make_plugin_manager(get_state().environ)
    registry: Registry[Any] = pm.collect("thrum_register_runtimes", Registry("runtime"))
    return pm, registry


def configured_primary(config_file: Path) -> str | None:
    """``runtime.primary`` from ``config.json`` (``None`` when unset, empty or unreadable)."""
    from thrum_cli.configfile import read_config_file

    try:
        block = read_config_file(config_file).get("runtime")
    except Exception:
        return None
    value = block.get("primary") if isinstance(block, dict) else None
    return value if isinstance(value, str) and value else None


def _call_or_local(method: str, params: dict[str, Any] | None, local: Any) -> Any:
    from thrum_cli import rpc
    from thrum_cli.output import debug
    from thrum_core.errors import METHOD_NOT_FOUND, DaemonNotRunning, NotInitialized, ThrumError

    try:
        return rpc.call(method, params)
    except (DaemonNotRunning, NotInitialized):
        debug(f"daemon not available; computing {method} locally")
    except ThrumError as exc:
        if exc.code != METHOD_NOT_FOUND:
            raise
        debug(f"the daemon has no {method}; computing it locally")
    return local()


def _root_and_config() -> tuple[Path, Path | None]:
    from thrum_cli.rpc import resolve_paths
    from thrum_core.errors import ThrumError

    try:
        paths = resolve_paths()
    except ThrumError:
        return Path.cwd(), None
    return paths.root, paths.config_file


def local_list() -> dict[str, Any]:
    """``runtime.list`` computed in this process."""
    from thrum_cli.state import get_state
    from thrum_plugins.runtimes._select import list_runtimes

    pm, registry = local_registry()
    root, config_file = _root_and_config()
    return list_runtimes(
        registry,
        environ=get_state().environ,
        root=root,
        configured=configured_primary(config_file) if config_file else None,
        hook=pm.hook.thrum_detect_runtime,
    )


def local_show(name: str) -> dict[str, Any]:
    """``runtime.show`` computed in this process."""
    from thrum_cli.state import get_state
    from thrum_core.errors import NotFound
    from thrum_plugins.runtimes._select import describe_runtime, select_runtime

    pm, registry = local_registry()
    preset = registry.get(name)
    if preset is None:
        raise NotFound("runtime", name, known=registry.names())
    root, _ = _root_and_config()
    chosen, _ = select_runtime(
        registry, environ=get_state().environ, root=root, hook=pm.hook.thrum_detect_runtime
    )
    return describe_runtime(name, preset, detected=chosen == name)


def _print_list(result: dict[str, Any]) -> None:
    default = result.get("default")
    for item in result["runtimes"]:
        marks = [m for m, on in (("default", item["name"] == default), ("detected", item["detected"])) if on]
        suffix = f"  ({', '.join(marks)})" if marks else ""
        features = ", ".join(item["features"]) or "-"
        click.echo(f"{item['name']:<10} {item['display']:<22} {features}{suffix}")
    if not default:
        click.echo("No default runtime (set one with: thrum runtime set-default NAME)")


def _print_show(result: dict[str, Any]) -> None:
    click.echo(f"{result['name']}: {result['display']}{'  (detected)' if result['detected'] else ''}")
    if result.get("features"):
        click.echo(f"  features: {', '.join(result['features'])}")
    for template in result.get("templates") or []:
        click.echo(f"  {template['path']}  ({template['policy']})")
    if result.get("env_vars"):
        click.echo(f"  detected by: {', '.join(result['env_vars'])}")
    if result.get("notes"):
        click.echo(f"  note: {result['notes']}")


@click.group("runtime")
def runtime() -> None:
    """AI-tool presets: which files thrum generates for Claude Code, Codex, Cursor, Gemini CLI, ..."""


@runtime.command("list")
def list_cmd() -> None:
    """List the runtime presets, the detected one and the default."""
    from thrum_cli.output import emit

    emit(_call_or_local("runtime.list", None, local_list), _print_list)


@runtime.command("show")
@click.argument("preset_name", metavar="NAME")
def show(preset_name: str) -> None:
    """Show one preset: the files it writes and how it is detected."""
    from thrum_cli.output import emit

    emit(
        _call_or_local("runtime.show", {"name": preset_name}, lambda: local_show(preset_name)),
        _print_show,
    )


@runtime.command("set-default")
@click.argument("preset_name", metavar="NAME")
def set_default(preset_name: str) -> None:
    """Make NAME the default runtime (``runtime.primary`` in config.json)."""
    from thrum_cli.configfile import update_config_file
    from thrum_cli.output import emit
    from thrum_cli.rpc import resolve_paths
    from thrum_core.errors import InvalidParams

    _pm, registry = local_registry()
    if preset_name not in registry:
        known = registry.names()
        raise InvalidParams(
            "NAME", "unknown", f"unknown runtime {preset_name!r} (known: {', '.join(known)})", allowed=known
        )
    update_config_file(resolve_paths().config_file, {"runtime.primary": preset_name})
    emit({"default": preset_name}, lambda r: click.echo(f"Default runtime: {r['default']}"))


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(runtime)
