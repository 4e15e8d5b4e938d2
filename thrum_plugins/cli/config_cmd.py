"""``thrum config show``: the effective configuration (from the daemon, else computed locally)."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl


def local_config_show() -> dict[str, Any]:
    """``config.show`` computed in this process: config.json + environment + defaults.

    The schema includes the sections plugins contribute through
    ``thrum_add_config``, as in the daemon.
    """
    from thrum_cli.rpc import resolve_paths
    from thrum_cli.state import get_state
    from thrum_core.config import ConfigSchema, load_config
    from thrum_core.plugins.loader import make_plugin_manager
    from thrum_plugins.rpc.config_show import config_show_result

    state = get_state()
    paths = resolve_paths()
    schema = ConfigSchema()
    pm = make_plugin_manager(state.environ)
    pm.call_each("thrum_add_config", lambda _plugin: {"schema": schema})
    return config_show_result(load_config(paths.config_file, schema, environ=state.environ))


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), child, out)
    else:
        out.append((prefix, value))


def _print_config(result: dict[str, Any]) -> None:
    import json

    click.echo(f"# {result['path']}")
    rows: list[tuple[str, Any]] = []
    _flatten("", result["config"], rows)
    sources = result.get("sources", {})
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        source = sources.get(key, "file")
        click.echo(f"{key:<{width}} = {json.dumps(value, ensure_ascii=False)}  ({source})")


@click.group("config")
def config() -> None:
    """Show the configuration."""


@config.command("show")
def show() -> None:
    """Print the effective configuration with each value's source (default, file, env, flag)."""
    from thrum_cli import rpc
    from thrum_cli.output import debug, emit
    from thrum_core.errors import METHOD_NOT_FOUND, DaemonNotRunning, ThrumError

    try:
        result = rpc.call("config.show")
    except DaemonNotRunning:
        debug("daemon not running; computing the configuration locally")
        result = local_config_show()
    except ThrumError as exc:
        if exc.code != METHOD_NOT_FOUND:
            raise
        debug("the daemon has no config.show; computing the configuration locally")
        result = local_config_show()
    emit(result, _print_config)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(config)
