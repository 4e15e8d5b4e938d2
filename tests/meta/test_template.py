"""``plugin_template/`` is a working plugin: its own tests pass, and its layout is installable.

The template's tests run in a subprocess (its own rootdir and pytest
configuration) with its ``src/`` on ``PYTHONPATH``; its ``conftest.py``
registers the plugin by object, so nothing is installed.  ``tox -e template``
does the real ``pip install``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "plugin_template"


def test_template_tests_pass() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEMPLATE / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"],
        cwd=TEMPLATE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
    assert "skipped" not in proc.stdout


def test_template_declares_its_entry_point() -> None:
    data = tomllib.loads((TEMPLATE / "pyproject.toml").read_text(encoding="utf-8"))
    eps = data["project"]["entry-points"]["thrum"]
    assert eps == {"example": "thrum_example.plugin"}
    assert (TEMPLATE / "src" / "thrum_example" / "plugin.py").is_file()
    assert any(dep.startswith("thrum") for dep in data["project"]["dependencies"])


def test_template_readme_has_the_rename_checklist() -> None:
    readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    assert "## Rename checklist" in readme
    for needle in ("pyproject.toml", "entry point", "example.hello", "p_<yourname>_"):
        assert needle in readme


@pytest.mark.parametrize("module", ["thrum_example.plugin"])
def test_template_plugin_module_does_not_import_pydantic(module: str) -> None:
    # The CLI imports plugin modules to list commands: they must stay light.
    code = f"import sys; import {module}; print('pydantic' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(TEMPLATE / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
