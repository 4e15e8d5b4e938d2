"""``thrum init`` with registered sync backends and runtime presets (SPEC §15.5 steps 5 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import thrum


def test_init_calls_sync_backends_and_runtimes(plugin_site: Path, git_repo: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site)}
    done = thrum(
        "init", "--no-daemon", "--runtime", "fake", "--agent-name", "alice", "--json", cwd=git_repo, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    common = git_repo.resolve() / ".git"
    assert doc["sync_backends"]["fakesync"]["created_branch"] is True
    assert doc["sync_worktree"] == str(common / "thrum-sync" / "a-sync")
    options = (common / "fakesync-init").read_text()
    assert "('local_only', True)" in options and "('dry_run', False)" in options
    runtime = doc["runtime"]
    assert runtime["name"] == "fake"
    assert [(f["path"], f["action"]) for f in runtime["files"]] == [
        ("FAKE.md", "created"),
        ("fake/settings.json", "created"),
    ]
    assert (git_repo / "FAKE.md").read_text() == "agent alice (implementer)\n"
    config = json.loads((git_repo / ".thrum" / "config.json").read_text())
    assert config["runtime"] == {"primary": "fake"}


def test_runtime_file_policies(plugin_site: Path, git_repo: Path) -> None:
    """Existing user files are kept, managed ones rewritten; ``--force`` overwrites both (§15.5 step 7)."""
    env = {"PYTHONPATH": str(plugin_site)}
    (git_repo / "fake").mkdir()
    (git_repo / "fake" / "settings.json").write_text('{"user": true}\n')
    (git_repo / "FAKE.md").write_text("edited\n")
    done = thrum("init", "--no-daemon", "--runtime", "fake", "--json", cwd=git_repo, env=env)
    actions = {f["path"]: f["action"] for f in json.loads(done.stdout)["runtime"]["files"]}
    assert actions == {"FAKE.md": "updated", "fake/settings.json": "kept"}
    assert (git_repo / "fake" / "settings.json").read_text() == '{"user": true}\n'
    forced = thrum("init", "--no-daemon", "--force", "--runtime", "fake", "--json", cwd=git_repo, env=env)
    actions = {f["path"]: f["action"] for f in json.loads(forced.stdout)["runtime"]["files"]}
    assert actions == {"FAKE.md": "kept", "fake/settings.json": "updated"}
    assert (git_repo / "fake" / "settings.json").read_text() == "{}\n"


def test_runtime_is_detected(plugin_site: Path, git_repo: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "FAKE_RUNTIME": "1"}
    doc = json.loads(thrum("init", "--no-daemon", "--json", cwd=git_repo, env=env).stdout)
    assert doc["runtime"]["name"] == "fake"


def test_no_runtime_detected_means_null(plugin_site: Path, git_repo: Path) -> None:
    doc = json.loads(
        thrum("init", "--no-daemon", "--json", cwd=git_repo, env={"PYTHONPATH": str(plugin_site)}).stdout
    )
    assert doc["runtime"] is None


def test_unknown_runtime(plugin_site: Path, git_repo: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site)}
    done = thrum("init", "--no-daemon", "--runtime", "nope", "--json", cwd=git_repo, env=env)
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == -32602 and error["data"]["field"] == "--runtime"
    assert "fake" in error["data"]["allowed"]


def test_dry_run_calls_no_plugin(plugin_site: Path, git_repo: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site)}
    done = thrum("init", "--dry-run", "--runtime", "fake", "--json", cwd=git_repo, env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["sync_backends"]["fakesync"] == {"skipped": "dry run"}
    assert all(result == {"skipped": "dry run"} for result in doc["sync_backends"].values())
    assert {f["action"] for f in doc["runtime"]["files"]} == {"would write"}
    assert not (git_repo / ".git" / "fakesync-init").exists()
    assert not (git_repo / "FAKE.md").exists()
    assert not (git_repo / ".thrum").exists()
