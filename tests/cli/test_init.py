"""``thrum init`` (SPEC §15.5), run in-process with ``--no-daemon``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from thrum_core.testing.repo import run_git as git

Invoke = Callable[..., Result]

INIT_KEYS = {
    "repo_path",
    "thrum_dir",
    "sync_worktree",
    "branch",
    "created",
    "redirect",
    "local_only",
    "migrated",
    "runtime",
    "daemon",
    "dry_run",
}


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` (``.git`` included) with its mode and content."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_outside_git_creates_nothing(run_cli: Invoke, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli("init", "--no-daemon", cwd=plain)
    assert result.exit_code == 1
    assert "not a git repository" in result.stderr
    assert list(plain.iterdir()) == []
    as_json = run_cli("init", "--json", cwd=plain)
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"]["message"].startswith("not a git repository")
    assert list(plain.iterdir()) == []


def test_init_layout(run_cli: Invoke, git_repo: Path) -> None:
    result = run_cli("init", "--no-daemon", "--json", cwd=git_repo)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) >= INIT_KEYS
    root = git_repo.resolve()
    thrum = root / ".thrum"
    assert doc["repo_path"] == str(root)
    assert doc["thrum_dir"] == str(thrum)
    assert doc["redirect"] is None and doc["daemon"] is None and doc["dry_run"] is False
    assert doc["migrated"] is None and doc["runtime"] is None
    assert doc["local_only"] is True
    assert doc["branch"] == "a-sync"
    for sub in ("identities", "context", "var"):
        assert (thrum / sub).is_dir()
        assert str(thrum / sub) in doc["created"]
    assert _mode(thrum / "var") == 0o700
    config_file = thrum / "config.json"
    assert _mode(config_file) == 0o600
    config = json.loads(config_file.read_text())
    assert config["daemon"] == {"local_only": True, "single_agent_mode": True}
    identity = config["identity"]
    assert list(identity) == ["daemon_id", "repo_name", "hostname", "repo_path", "git_origin_url", "init_at"]
    assert identity["daemon_id"].startswith("d_") and len(identity["daemon_id"]) == 28
    assert identity["repo_path"] == str(root)
    assert len(identity["init_at"]) == 20 and identity["init_at"].endswith("Z")  # seconds form
    assert (root / ".gitignore").read_text() == ".thrum/\n"


def test_init_twice_without_force_fails(run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    again = run_cli("init", "--no-daemon", "--json", cwd=git_repo)
    assert again.exit_code == 1
    err = json.loads(again.stdout)["error"]
    assert err["message"] == "already initialized (use --force to repair)"


def test_force_repairs_and_keeps_config(run_cli: Invoke, git_repo: Path) -> None:
    (git_repo / ".gitignore").write_text("node_modules/")  # no trailing newline
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    thrum = git_repo / ".thrum"
    config_file = thrum / "config.json"
    config = json.loads(config_file.read_text())
    config["daemon"]["local_only"] = False
    config["project_name"] = "kept"
    config_file.write_text(json.dumps(config))
    (thrum / "context").rmdir()

    result = run_cli("init", "--no-daemon", "--force", "--json", cwd=git_repo)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["created"] == [str(thrum.resolve() / "context")]
    assert doc["local_only"] is False
    after = json.loads(config_file.read_text())
    assert after == config
    assert (git_repo / ".gitignore").read_text() == "node_modules/\n.thrum/\n"


def test_stealth_uses_info_exclude(run_cli: Invoke, git_repo: Path) -> None:
    result = run_cli("init", "--no-daemon", "--stealth", cwd=git_repo)
    assert result.exit_code == 0, result.output
    assert not (git_repo / ".gitignore").exists()
    exclude = (git_repo / ".git" / "info" / "exclude").read_text()
    assert exclude.splitlines().count(".thrum/") == 1
    assert git(git_repo, "status", "--porcelain") == ""  # .thrum/ really ignored
    run_cli("init", "--no-daemon", "--stealth", "--force", cwd=git_repo)
    assert (git_repo / ".git" / "info" / "exclude").read_text() == exclude


def test_dry_run_changes_nothing(run_cli: Invoke, git_repo: Path) -> None:
    before = _tree(git_repo)
    result = run_cli("init", "--dry-run", "--json", cwd=git_repo)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True
    assert doc["daemon"] is None
    thrum = git_repo.resolve() / ".thrum"
    assert str(thrum / "config.json") in doc["created"]
    assert str(thrum / "var") in doc["created"]
    assert any(item.startswith(str(git_repo.resolve() / ".gitignore")) for item in doc["created"])
    assert _tree(git_repo) == before
    human = run_cli("init", "--dry-run", cwd=git_repo)
    assert "would create .thrum/config.json" in human.stdout
    assert _tree(git_repo) == before


def test_local_only_false_when_origin_a_sync_exists(run_cli: Invoke, committed_repo: Path) -> None:
    git(committed_repo, "update-ref", "refs/remotes/origin/a-sync", "HEAD")
    result = run_cli("init", "--no-daemon", "--json", cwd=committed_repo)
    assert json.loads(result.stdout)["local_only"] is False
    config = json.loads((committed_repo / ".thrum" / "config.json").read_text())
    assert config["daemon"]["local_only"] is False


def test_local_only_false_with_packed_ref(run_cli: Invoke, committed_repo: Path) -> None:
    git(committed_repo, "update-ref", "refs/remotes/origin/a-sync", "HEAD")
    git(committed_repo, "pack-refs", "--all")
    assert not (committed_repo / ".git" / "refs" / "remotes" / "origin" / "a-sync").exists()
    result = run_cli("init", "--no-daemon", "--json", cwd=committed_repo)
    assert json.loads(result.stdout)["local_only"] is False


def test_linked_worktree_gets_a_redirect(run_cli: Invoke, committed_repo: Path, tmp_path: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=committed_repo).exit_code == 0
    feature = tmp_path / "feature"
    git(committed_repo, "worktree", "add", "-q", "-b", "feature", str(feature))
    result = run_cli("init", "--json", cwd=feature)  # no --no-daemon: step 2 never starts one
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    main_thrum = committed_repo.resolve() / ".thrum"
    redirect = feature.resolve() / ".thrum" / "redirect"
    assert doc["redirect"] == str(redirect)
    assert doc["thrum_dir"] == str(main_thrum)
    assert doc["daemon"] is None
    assert redirect.read_text() == f"{main_thrum}\n"
    assert (feature / ".thrum" / "identities").is_dir()
    assert not (feature / ".thrum" / "config.json").exists()
    assert not (feature / ".thrum" / "var").exists()
    again = run_cli("init", "--json", cwd=feature)
    assert again.exit_code == 0
    assert json.loads(again.stdout)["created"] == []


def test_linked_worktree_without_main_thrum_initialises_itself(
    run_cli: Invoke, committed_repo: Path, tmp_path: Path
) -> None:
    feature = tmp_path / "feature"
    git(committed_repo, "worktree", "add", "-q", "-b", "feature", str(feature))
    result = run_cli("init", "--no-daemon", "--json", cwd=feature)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["redirect"] is None
    assert (feature / ".thrum" / "config.json").is_file()


def test_init_from_a_subdirectory_uses_the_worktree_root(run_cli: Invoke, git_repo: Path) -> None:
    sub = git_repo / "src" / "pkg"
    sub.mkdir(parents=True)
    result = run_cli("init", "--no-daemon", "--json", cwd=sub)
    assert json.loads(result.stdout)["repo_path"] == str(git_repo.resolve())
    assert (git_repo / ".thrum").is_dir()
    assert not (sub / ".thrum").exists()


def test_legacy_data_is_imported_by_init(run_cli: Invoke, git_repo: Path) -> None:
    legacy = git_repo / ".thrum"
    legacy.mkdir()
    line = (
        '{"agent_id":"furiosa","body":{"content":"hi","format":"markdown"},"message_id":"msg_00000001",'
        '"session_id":"ses_1","timestamp":"2026-01-01T00:00:30Z","type":"message.create","v":1}'
    )
    (legacy / "messages.jsonl").write_text(line + "\n")
    result = run_cli("init", "--no-daemon", "--force", "--json", cwd=git_repo)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    migrated = doc["migrated"]
    assert migrated["imported"] == 1
    synced = Path(doc["sync_worktree"]).glob("**/*.jsonl")
    assert any("msg_00000001" in p.read_text() for p in synced)
    again = run_cli("init", "--no-daemon", "--force", "--json", cwd=git_repo)
    assert json.loads(again.stdout)["migrated"] is None
