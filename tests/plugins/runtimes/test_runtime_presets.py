"""Runtime presets (SPEC §9.3, §15.5 step 7): detection, generated files, ``runtime.*`` and the CLI.

Everything runs the installed ``thrum`` executable with a real environment: an AI tool is "present"
exactly when a variable it really sets (``CLAUDECODE``, ``CODEX_THREAD_ID``, ``CURSOR_AGENT``,
``GEMINI_CLI``, ``OPENCODE``) is in the process environment.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.interfaces import Runtime
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient
from thrum_core.testing.repo import TEST_GIT_ENV

BUILTINS = ("amp", "auggie", "claude", "cli_only", "codex", "cursor", "gemini", "opencode")
PRESETS = {
    m.PRESET.name: m.PRESET
    for m in (importlib.import_module(f"thrum_plugins.runtimes.{b}") for b in BUILTINS)
}
RUNTIME_VARS = {v for p in PRESETS.values() for v in (*p.env_vars, *p.ide_env_vars)}


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``thrum`` with ``THRUM_*`` and every runtime variable cleared, then ``env`` added."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_") and k not in RUNTIME_VARS}
    full.update(TEST_GIT_ENV)
    full.update(env or {})
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60, check=False
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    done = run(*args, "--json", cwd=cwd, env=env)
    assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def error(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run(*args, "--json", cwd=cwd, env=env)
    assert done.returncode == 1, f"thrum {' '.join(args)} should fail: {done.stdout}{done.stderr}"
    err: dict[str, Any] = json.loads(done.stdout)["error"]
    return err


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(
        ["git", "init", "-q", "-b", "main", str(root)], check=True, env={**os.environ, **TEST_GIT_ENV}
    )
    return root


def primary(root: Path) -> str | None:
    config = json.loads((root / ".thrum" / "config.json").read_text())
    value = (config.get("runtime") or {}).get("primary")
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------------------------------- presets


def test_builtin_presets_follow_the_runtime_protocol() -> None:
    assert set(PRESETS) == {"amp", "auggie", "claude", "cli-only", "codex", "cursor", "gemini", "opencode"}
    for preset in PRESETS.values():
        assert isinstance(preset, Runtime)
        assert not preset.detect({}, Path("/nonexistent"))
    assert PRESETS["cli-only"].files({"agent_name": "a"}) == []


@pytest.mark.parametrize(
    ("name", "variable", "value"),
    [
        ("claude", "CLAUDECODE", "1"),
        ("codex", "CODEX_THREAD_ID", "0199a7c2-5b1e-7f00-9c1a-3d2e4f5a6b7c"),
        ("cursor", "CURSOR_AGENT", "1"),
        ("gemini", "GEMINI_CLI", "1"),
        ("opencode", "OPENCODE", "1"),
    ],
)
def test_init_detects_the_tool_from_its_environment(repo: Path, name: str, variable: str, value: str) -> None:
    doc = ok(
        "init",
        "--no-daemon",
        "--agent-name",
        "max",
        "--agent-role",
        "reviewer",
        cwd=repo,
        env={variable: value},
    )
    runtime = doc["runtime"]
    assert (runtime["name"], runtime["source"], runtime["runtimes"]) == (name, "env", [name])
    preset = PRESETS[name]
    assert [f["path"] for f in runtime["files"]] == [path for path, _ in preset.templates()]
    assert {f["action"] for f in runtime["files"]} == {"created"}
    assert primary(repo) == name
    for f in runtime["files"]:
        text = (repo / f["path"]).read_text()
        if f["path"].endswith(".json"):
            json.loads(text)
        else:
            assert "<!-- BEGIN THRUM -->" in text and "`max` (role `reviewer`" in text


def test_mcp_and_hook_files_have_each_tools_format(repo: Path) -> None:
    ok("init", "--no-daemon", "--runtime", "all", cwd=repo)
    server = {"command": "thrum", "args": ["mcp", "serve"]}
    assert json.loads((repo / ".mcp.json").read_text())["mcpServers"]["thrum"] == server
    assert json.loads((repo / ".cursor" / "mcp.json").read_text())["mcpServers"]["thrum"] == server
    assert json.loads((repo / ".gemini" / "settings.json").read_text())["mcpServers"]["thrum"] == server
    opencode = json.loads((repo / "opencode.json").read_text())["mcp"]["thrum"]
    assert opencode == {"type": "local", "command": ["thrum", "mcp", "serve"], "enabled": True}
    hooks = json.loads((repo / ".claude" / "settings.json").read_text())["hooks"]["SessionStart"]
    assert hooks == [{"hooks": [{"type": "command", "command": "thrum prime"}]}]
    rule = (repo / ".cursor" / "rules" / "thrum.mdc").read_text()
    assert rule.startswith("---\ndescription:") and "alwaysApply: true" in rule
    agents_md = (repo / "AGENTS.md").read_text()
    assert agents_md.count("<!-- BEGIN THRUM -->") == 1  # codex, opencode, auggie and amp share one block
    assert primary(repo) is None  # several presets: no single default


def test_skills_only(repo: Path) -> None:
    doc = ok("init", "--no-daemon", "--runtime", "codex", "--skills", cwd=repo)
    assert [f["path"] for f in doc["runtime"]["files"]] == [".agents/skills/thrum/SKILL.md"]
    skill = (repo / ".agents" / "skills" / "thrum" / "SKILL.md").read_text()
    assert skill.startswith("---\nname: thrum\ndescription: ") and not (repo / "AGENTS.md").exists()


def test_choice_precedence(repo: Path) -> None:
    """Flag > tool environment > ``runtime.primary`` > editor terminal > repository markers."""
    (repo / ".gemini").mkdir()  # a marker
    doc = ok("init", "--no-daemon", "--dry-run", cwd=repo)
    assert (doc["runtime"]["name"], doc["runtime"]["source"]) == ("gemini", "repo")
    doc = ok("init", "--no-daemon", "--dry-run", cwd=repo, env={"CURSOR_TRACE_ID": "abc"})
    assert (doc["runtime"]["name"], doc["runtime"]["source"]) == ("cursor", "ide")
    ok("init", "--no-daemon", "--runtime", "codex", cwd=repo)
    assert primary(repo) == "codex"
    again = ok("init", "--no-daemon", "--force", cwd=repo, env={"CURSOR_TRACE_ID": "abc"})
    assert (again["runtime"]["name"], again["runtime"]["source"]) == ("codex", "config")
    env = ok("init", "--no-daemon", "--force", cwd=repo, env={"CLAUDECODE": "1", "CURSOR_TRACE_ID": "abc"})
    assert (env["runtime"]["name"], env["runtime"]["source"]) == ("claude", "env")
    flag = ok("init", "--no-daemon", "--force", "--runtime", "opencode", cwd=repo, env={"CLAUDECODE": "1"})
    assert (flag["runtime"]["name"], flag["runtime"]["source"]) == ("opencode", "flag")
    # A variable explicitly switched off is no signal.
    off = ok("init", "--no-daemon", "--force", "--dry-run", cwd=repo, env={"CLAUDECODE": "0"})
    assert off["runtime"]["name"] == "opencode" and off["runtime"]["source"] == "config"


def test_user_files_are_merged_not_replaced(repo: Path) -> None:
    (repo / "CLAUDE.md").write_text("# Project rules\n\nUse tabs.\n")
    (repo / ".mcp.json").write_text(json.dumps({"mcpServers": {"db": {"command": "db-mcp"}}, "x": 1}))
    (repo / ".claude").mkdir()
    (repo / ".claude" / "settings.json").write_text("{ not json")
    doc = ok("init", "--no-daemon", "--runtime", "claude", cwd=repo)
    actions = {f["path"]: f["action"] for f in doc["runtime"]["files"]}
    assert actions == {"CLAUDE.md": "merged", ".mcp.json": "merged", ".claude/settings.json": "kept"}
    claude_md = (repo / "CLAUDE.md").read_text()
    assert claude_md.startswith("# Project rules\n\nUse tabs.\n\n<!-- BEGIN THRUM -->")
    mcp = json.loads((repo / ".mcp.json").read_text())
    assert mcp["x"] == 1 and set(mcp["mcpServers"]) == {"db", "thrum"}
    assert (repo / ".claude" / "settings.json").read_text() == "{ not json"  # not ours to repair

    # Running again changes nothing; an edited block is replaced in place, the user's text stays.
    again = ok("init", "--no-daemon", "--force", "--runtime", "claude", cwd=repo)
    assert {f["path"]: f["action"] for f in again["runtime"]["files"]}["CLAUDE.md"] == "kept"
    (repo / "CLAUDE.md").write_text(
        claude_md.replace("## Coordination with thrum", "## stale") + "\nFooter.\n"
    )
    ok("init", "--no-daemon", "--force", "--runtime", "claude", cwd=repo)
    text = (repo / "CLAUDE.md").read_text()
    assert "## stale" not in text and text.count("<!-- BEGIN THRUM -->") == 1 and text.endswith("\nFooter.\n")


def test_unknown_runtime_is_refused_before_anything_is_written(repo: Path) -> None:
    err = error("init", "--no-daemon", "--runtime", "vim", cwd=repo)
    assert err["code"] == -32602 and err["data"]["field"] == "--runtime"
    assert {"claude", "codex", "cursor", "gemini", "opencode", "all"} <= set(err["data"]["allowed"])


# ------------------------------------------------------------------------------ daemon-backed commands


@pytest.fixture
def daemon_repo(repo: Path) -> Iterator[Path]:
    assert run("init", "--no-daemon", cwd=repo).returncode == 0
    started = run("daemon", "start", "--json", cwd=repo)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads(started.stdout)["pid"]
    try:
        yield repo
    finally:
        run("daemon", "stop", "--force", cwd=repo)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def identity(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / ".thrum" / "identities" / f"{name}.json").read_text())
    return data


def test_quickstart_records_the_runtime_and_writes_its_files(daemon_repo: Path) -> None:
    root = daemon_repo
    doc = ok("quickstart", "ana", "--role", "dev", "--module", "api", cwd=root, env={"GEMINI_CLI": "1"})
    assert doc["runtime"]["runtimes"] == ["gemini"] and doc["runtime"]["source"] == "env"
    assert "`ana` (role `dev`, module `api`)" in (root / "GEMINI.md").read_text()
    data = identity(root, "ana")
    assert data["runtime"] == "gemini" and "preferred_runtime" not in data
    assert primary(root) == "gemini"  # none was configured yet

    explicit = ok("quickstart", "bo", "--role", "dev", "--module", "api", "--runtime", "codex", cwd=root)
    assert explicit["runtime"]["runtimes"] == ["codex"]
    assert (identity(root, "bo")["runtime"], identity(root, "bo")["preferred_runtime"]) == ("codex", "codex")
    assert primary(root) == "gemini"  # quickstart does not move an existing default

    no_init = ok(
        "quickstart", "cy", "--role", "dev", "--module", "api", "--runtime", "cursor", "--no-init", cwd=root
    )
    assert no_init["runtime"] is None and not (root / ".cursor").exists()
    assert identity(root, "cy")["runtime"] == "cursor"

    err = error("quickstart", "dee", "--role", "dev", "--module", "api", "--runtime", "vim", cwd=root)
    assert err["code"] == -32602 and err["data"]["field"] == "--runtime"
    assert not (root / ".thrum" / "identities" / "dee.json").exists()
    names = {a["agent_id"] for a in ok("agent", "list", cwd=root)["agents"]}
    assert "dee" not in names


def test_a_refused_registration_writes_no_runtime_file(daemon_repo: Path) -> None:
    err = error(
        "quickstart", "everyone", "--role", "dev", "--module", "api", cwd=daemon_repo, env={"CLAUDECODE": "1"}
    )
    assert err["code"] == -32602
    assert not (daemon_repo / "CLAUDE.md").exists() and not (daemon_repo / ".mcp.json").exists()


def test_the_generated_session_hook_runs_prime(daemon_repo: Path) -> None:
    root = daemon_repo
    ok("quickstart", "eve", "--role", "dev", "--module", "api", cwd=root, env={"CLAUDECODE": "1"})
    hook = json.loads((root / ".claude" / "settings.json").read_text())["hooks"]["SessionStart"][0]["hooks"][
        0
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_") and k not in RUNTIME_VARS}
    done = subprocess.run(
        hook["command"],
        shell=True,
        cwd=root,
        env={**env, **TEST_GIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# You are eve (dev/api)")
    assert "tip:" not in done.stderr  # CLAUDE.md has the thrum block


def test_prime_points_at_the_runtime_instructions_file(daemon_repo: Path) -> None:
    root = daemon_repo
    ok("quickstart", "fay", "--role", "dev", "--module", "api", "--runtime", "codex", "--no-init", cwd=root)
    done = run("prime", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "add thrum instructions to AGENTS.md" in done.stderr and "--runtime codex" in done.stderr
    ok("init", "--force", "--no-daemon", "--runtime", "codex", cwd=root)
    assert "tip:" not in run("prime", cwd=root).stderr


def test_runtime_commands_with_and_without_the_daemon(daemon_repo: Path) -> None:
    root = daemon_repo
    listed = ok("runtime", "list", cwd=root)
    assert set(listed) == {"default", "runtimes"} and listed["default"] is None
    assert [r["name"] for r in listed["runtimes"]] == sorted(PRESETS)
    for item in listed["runtimes"]:
        assert set(item) == {"name", "display", "detected", "files", "features"}
    claude = next(r for r in listed["runtimes"] if r["name"] == "claude")
    assert claude["files"] == ["CLAUDE.md", ".mcp.json", ".claude/settings.json"]
    assert claude["features"] == ["instructions", "mcp", "hooks", "skills"]

    shown = ok("runtime", "show", "opencode", cwd=root)
    assert shown["templates"] == [
        {"path": "AGENTS.md", "policy": "merge"},
        {"path": "opencode.json", "policy": "merge"},
    ]
    err = error("runtime", "show", "vim", cwd=root)
    assert err["code"] == -32001 and err["data"]["kind"] == "runtime"

    assert ok("runtime", "set-default", "cursor", cwd=root) == {"default": "cursor"}
    assert primary(root) == "cursor"
    bad = error("runtime", "set-default", "vim", cwd=root)
    assert bad["code"] == -32602 and "cursor" in bad["data"]["allowed"]

    # The daemon reads its configuration at start: restart it, then compare with the local computation.
    assert run("daemon", "restart", cwd=root).returncode == 0
    assert ok("runtime", "list", cwd=root)["default"] == "cursor"
    assert run("daemon", "stop", cwd=root).returncode == 0
    local = ok("runtime", "list", cwd=root, env={"OPENCODE": "1"})
    assert local["default"] == "cursor"
    assert [r["name"] for r in local["runtimes"] if r["detected"]] == ["opencode"]
    assert ok("runtime", "show", "claude", cwd=root)["name"] == "claude"


# ------------------------------------------------------------------------------------ RPC in-process


@pytest.mark.thrum_builtins(
    "rpc.health", "transports.unix_socket", "runtimes.rpc", "runtimes.claude", "runtimes.cli_only"
)
async def test_runtime_rpc_methods(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    listed = await rpc_client.call("runtime.list")
    assert listed["default"] is None
    assert [r["name"] for r in listed["runtimes"]] == ["claude", "cli-only"]
    shown = await rpc_client.call("runtime.show", {"name": "claude"})
    assert shown["templates"][0] == {"path": "CLAUDE.md", "policy": "merge"}
    from thrum_core.errors import ThrumError

    with pytest.raises(ThrumError) as info:
        await rpc_client.call("runtime.show", {"name": "codex"})
    assert info.value.code == -32001 and info.value.data["kind"] == "runtime"
    with pytest.raises(ThrumError) as bad:
        await rpc_client.call("runtime.show", {})
    assert bad.value.code == -32602
    assert thrum_kernel.config.get("runtime.primary") == ""
