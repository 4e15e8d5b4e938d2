"""``thrum plugins``: which plugins are loaded, failed or disabled, and their hooks."""

from __future__ import annotations

from typing import Any

import click

from thrum_core.markers import hookimpl


def _print_table(result: dict[str, Any]) -> None:
    rows = [
        (p["name"], p["status"], p["dist"] or "-", p["version"] or "-", str(len(p["hooks"])))
        for p in result["plugins"]
    ]
    header = ("NAME", "STATUS", "DIST", "VERSION", "HOOKS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for p in result["plugins"]:
        if p["error"]:
            click.echo(f"\n{p['name']}: {p['error']}", err=True)


@click.command("plugins")
def plugins() -> None:
    """List plugins with their status (loaded, failed, disabled) and hooks."""
    from thrum_cli.output import emit
    from thrum_cli.state import get_state
    from thrum_core.plugins.loader import make_plugin_manager

    pm = make_plugin_manager(get_state().environ)
    emit({"plugins": [record.to_json() for record in pm.plugin_records()]}, _print_table)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(plugins)
