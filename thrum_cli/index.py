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
    "agent": "thrum_plugins.cli.agents",
    "completion": "thrum_plugins.cli.completion",
    "config": "thrum_plugins.cli.config_cmd",
    "context": "thrum_plugins.cli.context",
    "daemon": "thrum_plugins.cli.daemon",
    "doctor": "thrum_plugins.cli.doctor",
    "group": "thrum_plugins.cli.groups",
    "inbox": "thrum_plugins.cli.messages",
    "init": "thrum_plugins.cli.init",
    "message": "thrum_plugins.cli.messages",
    "migrate": "thrum_plugins.cli.store",
    "overview": "thrum_plugins.cli.team",
    "ping": "thrum_plugins.cli.team",
    "plugins": "thrum_plugins.cli.plugins_cmd",
    "prime": "thrum_plugins.cli.context",
    "purge": "thrum_plugins.cli.store",
    "quickstart": "thrum_plugins.cli.agents",
    "rebuild": "thrum_plugins.cli.store",
    "reply": "thrum_plugins.cli.messages",
    "runtime": "thrum_plugins.cli.runtime",
    "send": "thrum_plugins.cli.messages",
    "sent": "thrum_plugins.cli.messages",
    "session": "thrum_plugins.cli.sessions",
    "status": "thrum_plugins.cli.agents",
    "subscribe": "thrum_plugins.cli.subscriptions",
    "subscriptions": "thrum_plugins.cli.subscriptions",
    "sync": "thrum_plugins.cli.sync",
    "team": "thrum_plugins.cli.team",
    "unsubscribe": "thrum_plugins.cli.subscriptions",
    "version": "thrum_plugins.cli.version",
    "wait": "thrum_plugins.cli.wait",
    "who-has": "thrum_plugins.cli.team",
    "whoami": "thrum_plugins.cli.agents",
}

#: plugin module → its entry-point name (for THRUM_DISABLE_PLUGINS / THRUM_LOAD_PLUGINS).
PLUGIN_NAMES: dict[str, str] = {
    "thrum_plugins.cli.agents": "cli.agents",
    "thrum_plugins.cli.completion": "cli.completion",
    "thrum_plugins.cli.config_cmd": "cli.config_cmd",
    "thrum_plugins.cli.context": "cli.context",
    "thrum_plugins.cli.daemon": "cli.daemon",
    "thrum_plugins.cli.doctor": "cli.doctor",
    "thrum_plugins.cli.groups": "cli.groups",
    "thrum_plugins.cli.init": "cli.init",
    "thrum_plugins.cli.messages": "cli.messages",
    "thrum_plugins.cli.plugins_cmd": "cli.plugins_cmd",
    "thrum_plugins.cli.runtime": "cli.runtime",
    "thrum_plugins.cli.sessions": "cli.sessions",
    "thrum_plugins.cli.store": "cli.store",
    "thrum_plugins.cli.subscriptions": "cli.subscriptions",
    "thrum_plugins.cli.sync": "cli.sync",
    "thrum_plugins.cli.team": "cli.team",
    "thrum_plugins.cli.version": "cli.version",
    "thrum_plugins.cli.wait": "cli.wait",
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
