"""Entry-point loading: sorted, filtered before import, failures isolated."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from thrum_core.plugins.manager import PluginManager

ENTRY_POINT_GROUP = "thrum"
BUILTIN_DIST = "thrum"
#: Entry-point name prefix of the built-in command plugins (``thrum_register_commands`` only).
COMMAND_PLUGIN_PREFIX = "cli."


@dataclass(frozen=True)
class PluginSpec:
    """One ``thrum`` entry point: plugin name, module path and distribution."""

    name: str
    value: str
    dist: str | None
    version: str | None

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST


def is_builtin_command_plugin(spec: PluginSpec) -> bool:
    """Whether ``spec`` is one of thrum's own command plugins (``cli.*``).

    They implement only ``thrum_register_commands`` (a meta-test keeps it
    so), which a daemon never calls: the daemon does not import them.
    """
    return spec.builtin and spec.name.startswith(COMMAND_PLUGIN_PREFIX)


def discover(group: str = ENTRY_POINT_GROUP) -> list[PluginSpec]:
    """Every entry point of ``group``: built-ins first, then by name."""
    from importlib.metadata import entry_points

    # Reading a distribution's name and version parses its METADATA file; do
    # it once per distribution, not twice per entry point.
    dist_info: dict[int, tuple[str | None, str | None]] = {}

    def name_version(dist: Any) -> tuple[str | None, str | None]:
        if dist is None:
            return None, None
        known = dist_info.get(id(dist))
        if known is None:
            metadata = dist.metadata
            known = dist_info[id(dist)] = (metadata["Name"], metadata["Version"])
        return known

    specs = []
    for ep in entry_points(group=group):
        dist_name, version = name_version(getattr(ep, "dist", None))
        specs.append(PluginSpec(name=ep.name, value=ep.value, dist=dist_name, version=version))
    # The same name may be advertised twice (e.g. an editable install next to a
    # wheel); keep the first after sorting so loading stays deterministic.
    specs.sort(key=lambda s: (not s.builtin, s.name, s.dist or ""))
    seen: set[str] = set()
    unique = []
    for spec in specs:
        if spec.name not in seen:
            seen.add(spec.name)
            unique.append(spec)
    return unique


def _split(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


def is_enabled(spec: PluginSpec, environ: Mapping[str, str]) -> bool:
    """Apply ``THRUM_LOAD_PLUGINS`` (allow-list) and ``THRUM_DISABLE_PLUGINS``.

    Both match a plugin's entry-point name or its distribution name.
    ``THRUM_LOAD_PLUGINS=`` (set but empty) loads no entry-point plugin.
    """
    names = {spec.name, spec.dist or ""}
    if "THRUM_LOAD_PLUGINS" in environ and not (names & _split(environ["THRUM_LOAD_PLUGINS"])):
        return False
    return not names & _split(environ.get("THRUM_DISABLE_PLUGINS", ""))


def load_spec(manager: PluginManager, spec: PluginSpec) -> None:
    """Import one entry point and register it; record any failure."""
    module_name, _, attr = spec.value.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except Exception as exc:
        manager.records.pop(spec.name, None)
        manager.register_failed_import(spec.name, spec.dist, spec.version, exc)
        return
    manager.register(obj, spec.name, dist=spec.dist, version=spec.version)


def load_entry_points(
    manager: PluginManager,
    group: str = ENTRY_POINT_GROUP,
    *,
    skip: Callable[[PluginSpec], bool] | None = None,
) -> PluginManager:
    """Load every enabled entry point of ``group`` into ``manager``.

    ``skip(spec)`` true leaves that entry point out entirely (not imported,
    not recorded): :func:`is_builtin_command_plugin` in the daemon.
    """
    for spec in discover(group):
        if manager.pm.get_plugin(spec.name) is not None:
            continue
        if skip is not None and skip(spec):
            continue
        if not is_enabled(spec, manager.environ):
            manager.record_disabled(spec.name, spec.dist, spec.version)
            continue
        load_spec(manager, spec)
    manager.check_pending()
    return manager


def make_plugin_manager(
    environ: Mapping[str, str] | None = None,
    *,
    entry_points: bool = True,
    skip: Callable[[PluginSpec], bool] | None = None,
) -> PluginManager:
    """A plugin manager with every enabled entry-point plugin (but those ``skip`` names) loaded."""
    manager = PluginManager(environ)
    if entry_points:
        load_entry_points(manager, skip=skip)
    return manager
