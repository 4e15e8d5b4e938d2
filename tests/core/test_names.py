"""Tests for thrum_core.names (SPEC §4)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thrum_core.names import (
    RESERVED_NAMES,
    is_safe_path_component,
    parse_type_value,
    safe_child,
    strip_at,
    validate_agent_id,
    validate_agent_name,
    validate_display_name,
    validate_group_name,
    validate_intent,
    validate_module,
    validate_ref_type,
    validate_ref_value,
    validate_role,
    validate_scope_type,
    validate_scope_value,
    validate_task,
    validate_username,
)


def test_reserved_names() -> None:
    assert frozenset({"daemon", "system", "thrum", "all", "broadcast", "everyone"}) == RESERVED_NAMES


# --- agent names --------------------------------------------------------------


@pytest.mark.parametrize("name", ["furiosa", "a", "0", "_", "agent_1", "x" * 64, "coordinator_1qj0mxzsz6"])
def test_agent_name_valid(name: str) -> None:
    assert validate_agent_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "too long"),
        ("Furiosa", "lowercase"),
        ("with-dash", "lowercase"),
        ("with:colon", "lowercase"),
        ("agent:implementer:1B9K33T6RK", "lowercase"),
        ("a b", "lowercase"),
        ("café", "lowercase"),
        ("a\n", "lowercase"),
        ("furiosa\n", "lowercase"),
        ("../x", "lowercase"),
        ("@furiosa", "lowercase"),
        ("daemon", "reserved"),
        ("everyone", "reserved"),
        ("broadcast", "reserved"),
    ],
)
def test_agent_name_invalid(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_agent_name(name)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_every_reserved_name_is_refused_for_agents_roles_and_groups(name: str) -> None:
    for validate in (validate_agent_name, validate_role, validate_group_name):
        with pytest.raises(ValueError, match="reserved"):
            validate(name)
    assert validate_module(name) == name  # modules are not addresses


@pytest.mark.parametrize("value", [None, 5, b"abc"])
def test_validators_refuse_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        validate_agent_name(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a string"):
        validate_display_name(value)  # type: ignore[arg-type]


# --- imported agent ids -------------------------------------------------------


@pytest.mark.parametrize(
    "agent_id",
    ["furiosa", "agent:implementer:1B9K33T6RK", "user:leon", "Mixed-Case:x", "daemon", "x" * 256, "é 🙂"],
)
def test_imported_agent_id_valid(agent_id: str) -> None:
    assert validate_agent_id(agent_id) == agent_id


@pytest.mark.parametrize("agent_id", ["", "x" * 257, "a/b", "a\\b", "a\x00b", "a\nb", "a\rb"])
def test_imported_agent_id_invalid(agent_id: str) -> None:
    with pytest.raises(ValueError):
        validate_agent_id(agent_id)


@given(st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True).filter(lambda s: s not in RESERVED_NAMES))
def test_every_registrable_name_is_a_valid_agent_id(name: str) -> None:
    assert validate_agent_name(name) == validate_agent_id(name) == name


# --- roles, modules, groups, usernames -----------------------------------------


@pytest.mark.parametrize("value", ["coordinator", "a", "0x", "front-end", "a_b", "a" + "-" * 63])
def test_role_module_group_valid(value: str) -> None:
    assert validate_role(value) == value
    assert validate_module(value) == value
    assert validate_group_name(value) == value


@pytest.mark.parametrize("value", ["", "-a", "_a", "A", "a.b", "a b", "a:b", "a" * 65, "*"])
def test_role_module_group_invalid(value: str) -> None:
    for validate in (validate_role, validate_module, validate_group_name):
        with pytest.raises(ValueError):
            validate(value)


def test_role_wildcard_only_when_allowed() -> None:
    assert validate_role("*", allow_wildcard=True) == "*"
    with pytest.raises(ValueError):
        validate_role("*")
    with pytest.raises(ValueError, match="reserved"):
        validate_role("all", allow_wildcard=True)


@pytest.mark.parametrize("value", ["leon", "l", "9lives", "a-b_c", "x" * 32])
def test_username_valid(value: str) -> None:
    assert validate_username(value) == value


@pytest.mark.parametrize("value", ["", "x" * 33, "-leon", "Leon", "user:leon", "le on"])
def test_username_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        validate_username(value)


# --- scopes and refs ----------------------------------------------------------

TYPE_VALIDATORS: list[Callable[[str], str]] = [validate_scope_type, validate_ref_type]
VALUE_VALIDATORS: list[Callable[[str], str]] = [validate_scope_value, validate_ref_value]


@pytest.mark.parametrize("validate", TYPE_VALIDATORS)
def test_scope_ref_type(validate: Callable[[str], str]) -> None:
    for ok in ["mention", "reply_to", "a", "x-y", "a" * 32]:
        assert validate(ok) == ok
    for bad in ["", "1a", "_a", "Mention", "a" * 33, "a:b", "a b"]:
        with pytest.raises(ValueError):
            validate(bad)


@pytest.mark.parametrize("validate", VALUE_VALIDATORS)
def test_scope_ref_value(validate: Callable[[str], str]) -> None:
    for ok in ["x", "user:leon", "Any Text/with:stuff é", "a" * 256, "\u2028"]:
        assert validate(ok) == ok
    for bad in ["", "a" * 257, "a\nb", "\t", "a\x00", "\x7f", "\x85", "\x9f"]:
        with pytest.raises(ValueError):
            validate(bad)


def test_parse_type_value() -> None:
    assert parse_type_value("mention:maximus") == ("mention", "maximus")
    assert parse_type_value("tag:a:b:c", kind="ref") == ("tag", "a:b:c")
    with pytest.raises(ValueError, match="type:value"):
        parse_type_value("mention")
    with pytest.raises(ValueError, match="scope type"):
        parse_type_value("Bad:x")
    with pytest.raises(ValueError, match="ref value"):
        parse_type_value("tag:", kind="ref")


# --- display name, intent, task -----------------------------------------------


def test_display_name() -> None:
    assert validate_display_name("") == ""
    assert validate_display_name("Furiosa the Coordinator 🙂") == "Furiosa the Coordinator 🙂"
    assert validate_display_name("é" * 128) == "é" * 128
    with pytest.raises(ValueError, match="too long"):
        validate_display_name("x" * 129)
    with pytest.raises(ValueError, match="control"):
        validate_display_name("a\tb")


def test_intent() -> None:
    assert validate_intent("") == ""
    assert validate_intent("line one\nline two") == "line one\nline two"
    assert validate_intent("x" * 1000) == "x" * 1000
    with pytest.raises(ValueError, match="too long"):
        validate_intent("x" * 1001)


def test_task() -> None:
    assert validate_task("fix the login bug") == "fix the login bug"
    assert validate_task("x" * 200) == "x" * 200
    with pytest.raises(ValueError, match="too long"):
        validate_task("x" * 201)
    for bad in ["a\nb", "a\rb"]:
        with pytest.raises(ValueError, match="single line"):
            validate_task(bad)


# --- addresses ----------------------------------------------------------------


def test_strip_at() -> None:
    assert strip_at("@furiosa") == "furiosa"
    assert strip_at("furiosa") == "furiosa"
    assert strip_at("@@x") == "@x"
    assert strip_at("@") == ""
    assert strip_at("@user:leon") == "user:leon"


# --- paths --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["furiosa", "furiosa.json", "a..b", "agent:x", "é", "-x", "x."])
def test_safe_path_component_accepts(name: str) -> None:
    assert is_safe_path_component(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "/abs", "a\\b", "a\x00b", "../x"])
def test_safe_path_component_refuses(name: str) -> None:
    assert not is_safe_path_component(name)


def test_safe_path_component_refuses_non_strings() -> None:
    assert not is_safe_path_component(None)  # type: ignore[arg-type]
    assert not is_safe_path_component(b"x")  # type: ignore[arg-type]


@given(st.text())
def test_safe_path_component_never_escapes(name: str) -> None:
    if is_safe_path_component(name):
        assert os.path.basename(name) == name
        assert name not in (".", "..")
        assert os.path.normpath(os.path.join("/base", name)).startswith("/base/")


def test_safe_child_returns_path_inside(tmp_path: Path) -> None:
    assert safe_child(tmp_path, "furiosa.json") == tmp_path / "furiosa.json"
    (tmp_path / "sub").mkdir()
    assert safe_child(tmp_path, "sub") == tmp_path / "sub"


@pytest.mark.parametrize("name", ["..", "../x", ".x", "a/b", "", "x\x00"])
def test_safe_child_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        safe_child(tmp_path, name)


def test_safe_child_refuses_symlink_escape(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (base / "evil.json").symlink_to(outside)
    (base / "self").symlink_to(base)
    (base / "inner_target").write_text("ok")
    (base / "inner_link").symlink_to(base / "inner_target")
    with pytest.raises(ValueError, match="outside"):
        safe_child(base, "evil.json")
    with pytest.raises(ValueError, match="outside"):
        safe_child(base, "self")
    assert safe_child(base, "inner_link") == base / "inner_link"


def test_safe_child_through_symlinked_base(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert safe_child(link, "x.json") == link / "x.json"
