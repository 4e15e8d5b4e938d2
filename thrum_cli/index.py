"""The static command index: built-in command name → the plugin module that registers it.

Running ``thrum daemon status`` imports ``thrum_plugins.cli.daemon`` and
nothing else of the plugin machinery: no entry-point scan
(``importlib.metadata``), no pluggy.  Only an unknown name, ``thrum --help``
and completion load every plugin.  ``tests/meta/test_command_index.py``
checks that this table equals what the plugins register through pluggy, so a
new built-in command plugin must add its commands here.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["COMMANDS", "PLUGIN_NAMES", "plugin_enabled"]

#: command name → module whose ``thrum_register_commands`` adds it.
COMMANDS: dict[str, str] = {
    "completion": "thrum_plugins.cli.completion",
    "config": "thrum_plugins.cli.config_cmd",
    "daemon": "thrum_plugins.cli.daemon",
    "doctor": "thrum_plugins.cli.doctor",
    "init": "thrum_plugins.cli.init",
    "plugins": "thrum_plugins.cli.plugins_cmd",
    "version": "thrum_plugins.cli.version",
}

#: plugin module → its entry-point name (for THRUM_DISABLE_PLUGINS / THRUM_LOAD_PLUGINS).
PLUGIN_NAMES: dict[str, str] = {
    "thrum_plugins.cli.completion": "cli.completion",
    "thrum_plugins.cli.config_cmd": "cli.config",
    "thrum_plugins.cli.daemon": "cli.daemon",
    "thrum_plugins.cli.doctor": "cli.doctor",
    "thrum_plugins.cli.init": "cli.init",
    "thrum_plugins.cli.plugins_cmd": "cli.plugins",
    "thrum_plugins.cli.version": "cli.version",
}

BUILTIN_DIST = "thrum"


def _split(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


def plugin_enabled(module: str, environ: Mapping[str, str]) -> bool:
    """Apply the plugin escape hatches to an indexed module, as the loader does.

    ``THRUM_LOAD_PLUGINS`` (allow-list) and ``THRUM_DISABLE_PLUGINS`` name
    entry points or distributions; an indexed module is the entry point
    :data:`PLUGIN_NAMES` gives, of the ``thrum`` distribution.
    """
    names = {PLUGIN_NAMES.get(module, module), BUILTIN_DIST}
    if "THRUM_LOAD_PLUGINS" in environ and not (names & _split(environ["THRUM_LOAD_PLUGINS"])):
        return False
    return not names & _split(environ.get("THRUM_DISABLE_PLUGINS", ""))
