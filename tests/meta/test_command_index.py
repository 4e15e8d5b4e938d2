"""The CLI's static command index equals what the built-in plugins register through pluggy.

``thrum_cli.index`` lets ``thrum <command>`` import one plugin module instead
of loading every entry point; if the two drifted apart, a command would
disappear from the fast path (or load the wrong module).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click

from thrum_cli import index
from thrum_core.plugins.loader import discover, make_plugin_manager


def registered_builtin_commands() -> dict[str, str]:
    """``{command name: module}`` registered by the ``thrum`` distribution's plugins via pluggy."""
    pm = make_plugin_manager(environ={})
    groups: dict[str, click.Group] = {}

    def kwargs_for(plugin: str) -> dict[str, click.Group]:
        groups[plugin] = click.Group("thrum")
        return {"cli": groups[plugin]}

    pm.call_each("thrum_register_commands", kwargs_for)
    found: dict[str, str] = {}
    for plugin, group in groups.items():
        record = pm.records[plugin]
        assert record.status == "loaded", (plugin, record.error)
        if record.dist != "thrum":
            continue
        for name in group.commands:
            assert name not in found, f"command {name!r} registered by {found[name]} and {record.module}"
            assert record.module is not None
            found[name] = record.module
    return found


def test_index_equals_registered_commands() -> None:
    assert registered_builtin_commands() == index.COMMANDS


def test_plugin_names_are_the_entry_points() -> None:
    entry_points = {spec.name: spec.value for spec in discover() if spec.builtin}
    assert set(index.PLUGIN_NAMES) == set(index.COMMANDS.values())
    for module, name in index.PLUGIN_NAMES.items():
        assert entry_points.get(name) == module


def test_lazy_command_loads_only_its_module() -> None:
    code = (
        "import sys, click\n"
        "from thrum_cli.main import cli\n"
        "ctx = click.Context(cli)\n"
        "assert cli.get_command(ctx, 'daemon') is not None\n"
        "print(sorted(m for m in sys.modules if m.startswith('thrum_plugins.cli.')))\n"
        "print('pluggy' in sys.modules, 'importlib.metadata' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == ["['thrum_plugins.cli.daemon']", "False False"]


def test_unknown_name_loads_everything() -> None:
    code = (
        "import json, sys, click\n"
        "from thrum_cli.main import cli\n"
        "ctx = click.Context(cli)\n"
        "assert cli.get_command(ctx, 'no-such-command') is None\n"
        "print(sorted(cli.commands) == sorted(cli.list_commands(ctx)), 'pluggy' in sys.modules)\n"
        "print(json.dumps(sorted(cli.commands)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    first, second = done.stdout.splitlines()
    assert first == "True True"
    assert set(index.COMMANDS) <= set(json.loads(second))
