"""Plugin managers for tests: no entry points, built-ins only when named."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from thrum_core.plugins.loader import PluginSpec, discover, load_spec
from thrum_core.plugins.manager import FAILED, PluginManager, PluginRecord

KERNEL_ESSENTIALS: tuple[str, ...] = ("rpc.health", "transports.unix_socket")
"""The built-in plugins a kernel needs to be reachable: the Unix socket and ``health``."""


def builtin_specs() -> dict[str, PluginSpec]:
    """The ``thrum`` entry points of the ``thrum`` distribution itself, by name."""
    return {spec.name: spec for spec in discover() if spec.builtin}


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) without any ``THRUM_*`` variable.

    A developer's own ``THRUM_NAME`` or ``THRUM_SOCKET`` must not leak into a
    test's kernel or CLI.
    """
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("THRUM_")}


def make_test_pm(
    builtins: Iterable[str] | str = (),
    *,
    environ: Mapping[str, str] | None = None,
) -> PluginManager:
    """A :class:`PluginManager` that loads no entry point except the named built-ins.

    ``builtins`` lists built-in plugin names (``"rpc.health"``), or is
    ``"all"``.  A built-in is loaded exactly as the entry-point loader would
    load it; a name that is not an installed entry point is imported as
    ``thrum_plugins.<name>``.  Raises :class:`LookupError` for a name that
    is neither.
    """
    manager = PluginManager(clean_environ() if environ is None else environ)
    specs = builtin_specs()
    names = sorted(specs) if builtins == "all" else list(builtins)
    for name in names:
        spec = specs.get(name)
        if spec is None:
            module = f"thrum_plugins.{name}"
            if importlib.util.find_spec(module) is None:
                raise LookupError(f"no built-in thrum plugin named {name!r}")
            spec = PluginSpec(name=name, value=module, dist="thrum", version=None)
        load_spec(manager, spec)
        record = manager.records.get(name)
        if record is not None and record.status == FAILED:
            raise RuntimeError(f"built-in plugin {name!r} failed to load: {record.error}")
    return manager


def register_test_plugin(
    manager: PluginManager,
    plugin: object,
    name: str | None = None,
    *,
    allow_failure: bool = False,
) -> PluginRecord:
    """Register ``plugin`` (a module or any object with ``thrum_*`` hookimpls).

    ``name`` defaults to the module's ``__name__``.  Unless ``allow_failure``,
    a registration the manager records as failed raises :class:`RuntimeError`
    so a broken plugin under test fails loudly.
    """
    if name is None:
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"
    record = manager.register(plugin, name)
    if record.status == FAILED and not allow_failure:
        raise RuntimeError(f"plugin {name!r} failed to register: {record.error}")
    return record


def write_entry_point_dist(
    site_dir: Path,
    dist_name: str,
    entry_points: Mapping[str, str],
    *,
    version: str = "0.0.1",
    group: str = "thrum",
) -> Path:
    """Write a minimal ``<dist>.dist-info`` advertising ``entry_points`` into ``site_dir``.

    With ``site_dir`` on ``sys.path`` (or ``PYTHONPATH`` of a subprocess)
    :mod:`importlib.metadata` sees a real installed distribution, so the
    entry-point loader is exercised for real without installing anything.
    Returns the ``.dist-info`` directory.
    """
    normalized = dist_name.replace("-", "_")
    info = Path(site_dir) / f"{normalized}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"[{group}]"] + [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info
