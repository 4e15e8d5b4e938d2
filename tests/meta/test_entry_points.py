"""The ``thrum`` entry points are exactly the plugin modules under ``thrum_plugins/``.

A plugin module is a non-private module (no path part starting with ``_``)
that defines a module-level function decorated with ``hookimpl``.  Each one
must be registered as ``"<path below thrum_plugins>" = "thrum_plugins.<path>"``
in ``pyproject.toml``; every entry point must import and provide a hook
implementation; and the installed metadata must match ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "thrum_plugins"


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def defines_hookimpl(path: Path) -> bool:
    """Whether the module at ``path`` has a top-level function decorated with ``hookimpl``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            _decorator_name(d) == "hookimpl" for d in node.decorator_list
        ):
            return True
    return False


def plugin_modules() -> dict[str, str]:
    """``{entry-point name: module}`` for every plugin module found on disk."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if not parts:
                continue
        if any(p.startswith("_") for p in parts):
            continue
        if defines_hookimpl(path):
            found[".".join(parts)] = "thrum_plugins." + ".".join(parts)
    return found


def pyproject_entry_points() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    table: dict[str, str] = data["project"]["entry-points"]["thrum"]
    return dict(table)


def installed_entry_points() -> dict[str, str]:
    return {
        ep.name: ep.value
        for ep in entry_points(group="thrum")
        if ep.dist is not None and ep.dist.metadata["Name"] == "thrum"
    }


def test_every_plugin_module_is_registered_and_nothing_else() -> None:
    on_disk = plugin_modules()
    declared = pyproject_entry_points()
    missing = {n: m for n, m in on_disk.items() if n not in declared}
    extra = {n: m for n, m in declared.items() if n not in on_disk}
    assert not missing, f"plugin modules without an entry point in pyproject.toml: {missing}"
    assert not extra, f"entry points that are not plugin modules under thrum_plugins/: {extra}"
    assert declared == on_disk, "entry point name must be the module path below thrum_plugins"


def test_installed_metadata_matches_pyproject() -> None:
    assert installed_entry_points() == pyproject_entry_points(), (
        "the installed thrum entry points are stale: run pip install -e . --no-deps"
    )


@pytest.mark.parametrize("name", sorted(pyproject_entry_points()))
def test_entry_point_imports_and_implements_a_hook(name: str) -> None:
    value = pyproject_entry_points()[name]
    module_name, _, attr = value.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    hooks = [a for a in dir(obj) if a.startswith("thrum_") and hasattr(getattr(obj, a), "thrum_impl")]
    assert hooks, f"{value} implements no thrum hook"


def test_detector_sees_hookimpl_forms(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from thrum_core import markers\n@markers.hookimpl(tryfirst=True)\ndef thrum_startup(kernel): pass\n"
    )
    assert defines_hookimpl(src)
    src.write_text("def thrum_startup(kernel): pass\nclass C:\n    @hookimpl\n    def f(self): pass\n")
    assert not defines_hookimpl(src)
