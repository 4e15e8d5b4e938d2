"""Entry-point loading: sorted, filtered before import, failures isolated."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from thrum_core.plugins.manager import PluginManager

ENTRY_POINT_GROUP = "thrum"
BUILTIN_DIST = "thrum"


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


def discover(group: str = ENTRY_POINT_GROUP) -> list[PluginSpec]:
    """Every entry point of ``group``: built-ins first, then by name."""
    from importlib.metadata import entry_points

    specs = []
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        specs.append(
            PluginSpec(
                name=ep.name,
                value=ep.value,
                dist=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
        )
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


def load_entry_points(manager: PluginManager, group: str = ENTRY_POINT_GROUP) -> PluginManager:
    """Load every enabled entry point of ``group`` into ``manager``."""
    for spec in discover(group):
        if manager.pm.get_plugin(spec.name) is not None:
            continue
        if not is_enabled(spec, manager.environ):
            manager.record_disabled(spec.name, spec.dist, spec.version)
            continue
        load_spec(manager, spec)
    manager.check_pending()
    return manager


def make_plugin_manager(
    environ: Mapping[str, str] | None = None, *, entry_points: bool = True
) -> PluginManager:
    """A plugin manager with every enabled entry-point plugin loaded."""
    manager = PluginManager(environ)
    if entry_points:
        load_entry_points(manager)
    return manager
