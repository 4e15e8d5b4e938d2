"""Identity files (SPEC §5.5) and CLI identity resolution (SPEC §15.2), with real files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from thrum_cli.identity import (
    Identity,
    find_identity_file,
    list_identity_files,
    read_identity_file,
    resolve_identity,
    write_identity_file,
)
from thrum_core.errors import ThrumError
from thrum_core.ids import unnamed_agent_id
from thrum_core.testing.go_fixture import GO_FIXTURE as FIXTURE
from thrum_core.testing.go_fixture import unpack_go_fixture


def write_raw(directory: Path, name: str, obj: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(obj, indent=2))
    return path


def test_reads_go_capitalised_keys_and_legacy_fields(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        "tester_0049.json",
        {
            "version": 2,
            "repo_id": "test-resilience",
            "agent": {
                "Kind": "human",
                "Name": "tester_0049",
                "Role": "tester",
                "Module": "daemon",
                "Display": "T",
            },
            "worktree": "test",
            "claude_pid": 4242,
            "agent_status_updated_at": "0001-01-01T00:00:00Z",
            "confirmed_by": "",
            "updated_at": "2026-01-01T00:00:00Z",
        },
    )
    ident = read_identity_file(path)
    assert ident is not None
    assert (ident.agent_id, ident.kind, ident.role, ident.module, ident.display) == (
        "tester_0049",
        "user",
        "tester",
        "daemon",
        "T",
    )
    assert ident.agent_pid == 4242 and ident.agent_status_updated_at is None and ident.version == 2


@pytest.mark.skipif(not FIXTURE.exists(), reason="Go fixture not available")
def test_reads_every_fixture_identity(tmp_path: Path) -> None:
    unpack_go_fixture(tmp_path)
    files = list_identity_files(tmp_path / ".thrum" / "identities")
    assert len(files) == 50
    assert all(f.repo_id == "test-resilience" and f.role and f.module for f in files)


def test_unnamed_identity_uses_the_derived_id(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        "x.json",
        {
            "version": 5,
            "repo_id": "r_ABC",
            "agent": {"kind": "agent", "role": "coordinator", "module": "main"},
        },
    )
    ident = read_identity_file(path)
    assert ident is not None and ident.name is None
    assert ident.agent_id == unnamed_agent_id("r_ABC", "coordinator", "main")


def test_write_lowercases_preserves_unknown_keys_and_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "identities"
    write_raw(
        directory,
        "furiosa.json",
        {
            "version": 3,
            "repo_id": "r_X",
            "agent": {
                "Kind": "agent",
                "Name": "furiosa",
                "Role": "implementer",
                "Module": "auth",
                "Extra": 1,
            },
            "worktree": "/w",
            "claude_pid": 99,
            "custom_block": {"keep": True},
        },
    )
    path = write_identity_file(
        directory, "furiosa", agent={"display": "Furiosa"}, updates={"session_id": "ses_1"}
    )
    data = json.loads(path.read_text())
    assert data["version"] == 5
    assert data["agent"] == {
        "kind": "agent",
        "name": "furiosa",
        "role": "implementer",
        "module": "auth",
        "display": "Furiosa",
        "extra": 1,
    }
    assert data["custom_block"] == {"keep": True} and data["agent_pid"] == 99 and "claude_pid" not in data
    assert data["session_id"] == "ses_1" and data["updated_at"].endswith("Z")
    assert list(data)[:3] == ["version", "repo_id", "agent"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().endswith("}\n")
    assert [p.name for p in directory.iterdir()] == ["furiosa.json"]  # no temp files left


@pytest.mark.parametrize("bad", ["../evil", "a/b", ".hidden", "", "x\x00y", "a\nb"])
def test_write_refuses_unsafe_ids_before_writing(tmp_path: Path, bad: str) -> None:
    directory = tmp_path / "identities"
    with pytest.raises(ValueError):
        write_identity_file(directory, bad, agent={"name": bad})
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []


def test_deleted_and_broken_files_are_ignored(tmp_path: Path) -> None:
    write_raw(
        tmp_path, "gone.deleted.json", {"version": 5, "agent": {"name": "gone", "role": "r", "module": "m"}}
    )
    (tmp_path / "broken.json").write_text("{not json")
    write_raw(tmp_path, "new.json", {"version": 9, "agent": {"name": "new", "role": "r", "module": "m"}})
    assert list_identity_files(tmp_path) == []


def ident_dir(tmp_path: Path, *names: str, pids: dict[str, int] | None = None) -> Path:
    directory = tmp_path / "identities"
    for name in names:
        updates: dict[str, object] = {"repo_id": "r_X", "worktree": str(tmp_path)}
        if pids and name in pids:
            updates["agent_pid"] = pids[name]
        write_identity_file(
            directory,
            name,
            agent={"kind": "agent", "name": name, "role": "implementer", "module": "m"},
            updates=updates,
        )
    return directory


def test_resolution_order(tmp_path: Path) -> None:
    directory = ident_dir(tmp_path, "solo")
    assert resolve_identity(directory, environ={}).agent_id == "solo"
    assert resolve_identity(directory, environ={}).source == "identity_file"
    assert resolve_identity(directory, name_flag="flagged", environ={}).source == "flag"
    env = resolve_identity(directory, name_flag="flagged", environ={"THRUM_NAME": "envname"})
    assert (env.agent_id, env.source) == ("envname", "env")
    # One file wins over THRUM_AGENT_ID (the lowest priority, D12).
    assert resolve_identity(directory, environ={"THRUM_AGENT_ID": "fallback"}).agent_id == "solo"
    # Overrides: flags > THRUM_ROLE/THRUM_MODULE/THRUM_DISPLAY > file.
    over = resolve_identity(
        directory,
        environ={"THRUM_ROLE": "envrole", "THRUM_MODULE": "envmod", "THRUM_DISPLAY": "D"},
        role_flag="flagrole",
    )
    assert (over.role, over.module, over.display) == ("flagrole", "envmod", "D")
    named = resolve_identity(directory, name_flag="solo", environ={})
    assert named.file is not None and named.role == "implementer"  # the file of the named agent is used


def test_several_identities_need_a_choice(tmp_path: Path) -> None:
    directory = ident_dir(tmp_path, "alpha", "beta")
    with pytest.raises(ThrumError) as info:
        resolve_identity(directory, environ={})
    assert info.value.code == -32002
    assert info.value.data == {"reason": "no_caller", "candidates": ["alpha", "beta"]}
    assert "THRUM_NAME" in info.value.message and "alpha" in info.value.message
    assert resolve_identity(directory, environ={"THRUM_AGENT_ID": "beta"}).source == "agent_id_env"


def test_no_identity_at_all(tmp_path: Path) -> None:
    with pytest.raises(ThrumError) as info:
        resolve_identity(tmp_path / "identities", environ={})
    assert info.value.code == -32002 and "quickstart" in info.value.message


def test_invalid_name_sources(tmp_path: Path) -> None:
    with pytest.raises(ThrumError) as info:
        resolve_identity(tmp_path, environ={"THRUM_NAME": "../../x"})
    assert (
        info.value.code == -32602 and info.value.data is not None and info.value.data["field"] == "THRUM_NAME"
    )


def test_agent_pid_ancestor_is_chosen(tmp_path: Path) -> None:
    directory = ident_dir(tmp_path, "mine", "theirs", pids={"mine": os.getpid(), "theirs": 1})
    # A child process resolves: its ancestor (this test process) owns "mine".
    code = (
        "import sys, json; from thrum_cli.identity import resolve_identity; "
        f"print(resolve_identity({str(directory)!r}, environ={{}}).agent_id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mine"


def test_find_identity_file_by_agent_name(tmp_path: Path) -> None:
    directory = tmp_path / "ids"
    write_raw(
        directory,
        "oddly_named.json",
        {"version": 2, "agent": {"Name": "realname", "Role": "r", "Module": "m"}},
    )
    found = find_identity_file(directory, "realname")
    assert found is not None and found.path.name == "oddly_named.json"
    shutil.rmtree(directory)
    assert find_identity_file(directory, "realname") is None


def test_identity_records_are_immutable_values(tmp_path: Path) -> None:
    """``IdentityFile`` and ``Identity`` behave as frozen records: equal by value, no assignment."""
    path = write_raw(
        tmp_path,
        "ann.json",
        {
            "version": 5,
            "repo_id": "r_X",
            "agent": {"kind": "agent", "name": "ann", "role": "dev", "module": "m"},
        },
    )
    first, second = read_identity_file(path), read_identity_file(path)
    assert first is not None and first == second
    assert first.raw["repo_id"] == "r_X" and "raw=" not in repr(first)
    with pytest.raises(AttributeError):
        first.name = "ben"
    ident = resolve_identity(tmp_path, environ={})
    assert ident.agent_id == "ann" and ident.file == first and ident.identity_file == path
    without_file = Identity("x", "x", "agent", None, None, None, None, None, "flag")
    assert hash(without_file) == hash(Identity("x", "x", "agent", None, None, None, None, None, "flag"))
