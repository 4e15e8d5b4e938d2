"""Output and error shapes (SPEC §15.3) and global flag placement (§15.1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from thrum_cli import rpc
from thrum_cli.state import CliState, PrescanError, prescan, set_state
from thrum_core.errors import DaemonNotRunning

Invoke = Callable[..., Result]

DAEMON_DOWN = "thrum daemon is not running — start it with: thrum daemon start"


def _init(run_cli: Invoke, repo: Path) -> None:
    result = run_cli("init", "--no-daemon", cwd=repo)
    assert result.exit_code == 0, result.output


def test_json_output_is_one_document(run_cli: Invoke) -> None:
    result = run_cli("version", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"version", "python", "platform", "repo_url", "docs_url"}
    assert result.stdout.startswith('{\n  "')  # 2-space indent
    assert result.stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "daemon", "status"],
        ["daemon", "--json", "status"],
        ["daemon", "status", "--json"],
        ["-q", "daemon", "status", "--json"],
        ["daemon", "status", "--json", "-q", "-v"],
    ],
)
def test_global_json_flag_before_or_after(run_cli: Invoke, git_repo: Path, args: list[str]) -> None:
    _init(run_cli, git_repo)
    result = run_cli(*args, cwd=git_repo)
    assert result.exit_code == 1  # not running
    doc = json.loads(result.stdout)
    assert doc["running"] is False
    assert doc["repo_path"] == str(git_repo.resolve())


@pytest.mark.parametrize("where", ["before", "after", "equals"])
def test_repo_flag_before_or_after(run_cli: Invoke, git_repo: Path, tmp_path: Path, where: str) -> None:
    _init(run_cli, git_repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = {
        "before": ["--repo", str(git_repo), "daemon", "status", "--json"],
        "after": ["daemon", "status", "--repo", str(git_repo), "--json"],
        "equals": ["daemon", "status", f"--repo={git_repo}", "--json"],
    }[where]
    result = run_cli(*args, cwd=elsewhere)
    assert json.loads(result.stdout)["repo_path"] == str(git_repo.resolve())


def test_prescan_stops_at_double_dash() -> None:
    state, rest = prescan(["send", "-q", "--to", "@x", "--", "--json", "-v"])
    assert state.quiet is True
    assert state.json is False and state.verbose is False
    assert rest == ["send", "--to", "@x", "--", "--json", "-v"]


def test_prescan_repo_without_value_is_an_error(run_cli: Invoke) -> None:
    with pytest.raises(PrescanError):
        prescan(["daemon", "status", "--repo"])
    result = run_cli("daemon", "status", "--json", "--repo")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["data"]["field"] == "--repo"


def test_error_without_json_goes_to_stderr(run_cli: Invoke, tmp_path: Path) -> None:
    result = run_cli("daemon", "status", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")


def test_not_initialized_error_shape(run_cli: Invoke, tmp_path: Path) -> None:
    result = run_cli("--json", "daemon", "status", cwd=tmp_path)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"}
    assert doc["error"]["code"] == -32011
    assert isinstance(doc["error"]["message"], str)
    assert result.stderr == ""


def test_daemon_not_running_error_shape(run_cli: Invoke, git_repo: Path) -> None:
    _init(run_cli, git_repo)
    result = run_cli("daemon", "stop", "--json", cwd=git_repo)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {"code": -32010, "message": DAEMON_DOWN}}
    human = run_cli("daemon", "stop", cwd=git_repo)
    assert human.exit_code == 1
    assert human.stderr.strip() == f"Error: {DAEMON_DOWN}"


def test_rpc_call_reports_daemon_not_running(
    run_cli: Invoke, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _init(run_cli, git_repo)
    monkeypatch.chdir(git_repo)
    set_state(CliState())
    with pytest.raises(DaemonNotRunning) as info:
        rpc.call("health")
    assert info.value.code == -32010
    assert info.value.message == DAEMON_DOWN


def test_usage_error_with_json(run_cli: Invoke, git_repo: Path) -> None:
    _init(run_cli, git_repo)
    result = run_cli("daemon", "logs", "-n", "abc", "--json", cwd=git_repo)
    assert result.exit_code == 1
    err = json.loads(result.stdout)["error"]
    assert err["code"] == -32602
    assert err["data"]["field"] == "--lines"
    unknown = run_cli("daemon", "logs", "--bogus", "--json", cwd=git_repo)
    assert json.loads(unknown.stdout)["error"]["data"]["field"] == "--bogus"


def test_unknown_command(run_cli: Invoke) -> None:
    result = run_cli("no-such-command", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == -32602
    human = run_cli("no-such-command")
    assert human.exit_code == 1
    assert "no-such-command" in human.stderr


def test_hints_follow_quiet_and_thrum_no_hints(run_cli: Invoke, git_repo: Path) -> None:
    _init(run_cli, git_repo)
    hint = "start it with: thrum daemon start"
    assert hint in run_cli("daemon", "status", cwd=git_repo).stderr
    assert hint not in run_cli("daemon", "status", "-q", cwd=git_repo).stderr
    assert hint not in run_cli("daemon", "status", cwd=git_repo, env={"THRUM_NO_HINTS": "1"}).stderr
    assert hint in run_cli("daemon", "status", cwd=git_repo, env={"THRUM_NO_HINTS": "0"}).stderr


def test_bare_thrum_prints_help(run_cli: Invoke) -> None:
    result = run_cli()
    assert result.exit_code == 0
    for name in ("init", "daemon", "doctor", "plugins", "config", "version", "completion"):
        assert name in result.stdout


def test_identity_root_options_are_recorded(run_cli: Invoke) -> None:
    from thrum_cli.state import get_state

    result = run_cli("--name", "alice", "--role", "planner", "--module", "core", "version")
    assert result.exit_code == 0
    state = get_state()
    assert (state.name, state.role, state.module) == ("alice", "planner", "core")


def test_work_counts_are_in_words_with_singulars() -> None:
    from thrum_plugins.cli._agent_common import work_counts

    assert work_counts(0, 1) == "0 unmerged commits, 1 uncommitted file"
    assert work_counts(1, 0) == "1 unmerged commit, 0 uncommitted files"
    assert work_counts(2, 3) == "2 unmerged commits, 3 uncommitted files"
