"""The hook contract is documented: in ``hookspecs.py`` docstrings and in ``docs/hooks.md``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thrum_core import hookspecs
from thrum_core.plugins.manager import PluginManager

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def hookspec_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Every hookspec, in source order."""
    found = [
        (name, fn)
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, "thrum_spec")
    ]
    return sorted(found, key=lambda item: item[1].__code__.co_firstlineno)


HOOKS = hookspec_functions()
HOOK_IDS = [name for name, _ in HOOKS]


def doc_sections() -> dict[str, str]:
    """``## heading`` → its body, from docs/hooks.md."""
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_there_are_hookspecs() -> None:
    assert len(HOOKS) >= 15
    assert all(name.startswith("thrum_") for name, _ in HOOKS)


def test_every_thrum_function_in_hookspecs_is_a_spec() -> None:
    plain = [n for n, f in vars(hookspecs).items() if inspect.isfunction(f) and n.startswith("thrum_")]
    assert sorted(plain) == sorted(HOOK_IDS)


def test_pluggy_sees_exactly_these_hooks() -> None:
    manager = PluginManager({})
    names = {name for name in dir(manager.pm.hook) if name.startswith("thrum_")}
    assert names == set(HOOK_IDS)


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=HOOK_IDS)
def test_hookspec_docstring_is_complete(name: str, fn: Callable[..., Any]) -> None:
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    for param in inspect.signature(fn).parameters:
        assert re.search(rf":param {param}:", doc), f"{name}: docstring does not describe parameter {param!r}"
    assert re.search(r"^:return:", doc, flags=re.MULTILINE), f"{name}: docstring has no :return: contract"
    assert re.search(r"^\.\. versionadded:: \d+\.\d+", doc, flags=re.MULTILINE), f"{name}: no versionadded"


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=HOOK_IDS)
def test_hookspec_is_typed(name: str, fn: Callable[..., Any]) -> None:
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}: {param.name} is not annotated"


def test_docs_have_one_heading_per_hook_and_no_other() -> None:
    headings = list(doc_sections())
    assert len(headings) == len(set(headings)), "a hook is documented twice"
    assert set(headings) - set(HOOK_IDS) == set(), "docs/hooks.md documents hooks that do not exist"
    assert set(HOOK_IDS) - set(headings) == set(), "docs/hooks.md misses hooks"
    assert headings == HOOK_IDS, "docs/hooks.md lists the hooks in hookspecs.py order"


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=HOOK_IDS)
def test_docs_section_describes_the_hook(name: str, fn: Callable[..., Any]) -> None:
    body = doc_sections()[name]
    for param in inspect.signature(fn).parameters:
        assert f"`{param}`" in body, f"docs/hooks.md: {name} does not describe {param!r}"
    assert "Returns" in body, f"docs/hooks.md: {name} has no return contract"
    match = re.search(r"versionadded:: (\S+)", inspect.getdoc(fn) or "")
    assert match is not None
    assert f"since {match.group(1)}" in body, f"docs/hooks.md: {name} does not say since when it exists"
    opts = fn.thrum_spec  # type: ignore[attr-defined]
    if opts["firstresult"]:
        assert "firstresult" in body
    if opts["historic"]:
        assert "historic" in body
