"""Agents across worktrees, end to end: the installed ``thrum`` CLI, a real daemon, real git worktrees.

Two agents work in the main worktree and in a linked worktree (sharing the daemon through
``.thrum/redirect``); their live git work contexts drive ``team`` and ``who-has``; deleting and
cleaning up agents removes their identity files and their lines from the a-sync log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.testing.repo import TEST_GIT_ENV
from thrum_core.testing.repo import run_git as git


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env.update(TEST_GIT_ENV)
    env.update(extra or {})
    return env


def thrum(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=env_for(env), capture_output=True, text=True, timeout=60, check=False
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    done = thrum(*args, "--json", cwd=cwd, env=env)
    assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def log_lines(repo: Path) -> list[dict[str, Any]]:
    common = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    sync = common / "thrum-sync" / "a-sync"
    out: list[dict[str, Any]] = []
    for path in sorted(sync.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


@pytest.fixture
def main_repo(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "main"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "src").mkdir()
    (repo / "src" / "auth.py").write_text("def login():\n    return False\n")
    (repo / "README.md").write_text("# project\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    assert thrum("init", "--no-daemon", cwd=repo).returncode == 0
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore .thrum")
    started = thrum("daemon", "start", "--json", cwd=repo)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads(started.stdout)["pid"]
    try:
        yield repo
    finally:
        thrum("daemon", "stop", cwd=repo)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def add_worktree(repo: Path, path: Path, branch: str) -> Path:
    git(repo, "worktree", "add", "-q", str(path), "-b", branch)
    init = ok("init", "--no-daemon", cwd=path)
    assert init["redirect"] is not None
    return path


@pytest.mark.slow
def test_two_worktrees_team_who_has_delete_cleanup(main_repo: Path, tmp_path: Path) -> None:
    feature = add_worktree(main_repo, tmp_path / "feature", "feature-auth")
    ok(
        "quickstart",
        "--name",
        "alice",
        "--role",
        "implementer",
        "--module",
        "docs",
        "--intent",
        "docs pass",
        "--no-init",
        cwd=main_repo,
    )
    ok(
        "quickstart",
        "--name",
        "bob",
        "--role",
        "implementer",
        "--module",
        "auth",
        "--intent",
        "real login",
        "--no-init",
        cwd=feature,
    )
    # Each worktree holds its own identity file; each resolves its own agent with no flags.
    assert ok("whoami", cwd=main_repo)["agent_id"] == "alice"
    assert ok("whoami", cwd=feature)["agent_id"] == "bob"

    (feature / "src" / "auth.py").write_text(
        "def login():\n    return check_password()\n\n\ndef check_password():\n    return True\n"
    )
    git(feature, "commit", "-q", "-am", "implement login")
    (main_repo / "README.md").write_text("# project\n\nMore docs.\n")
    ok("session", "heartbeat", cwd=feature)

    auth = ok("who-has", "src/auth.py", cwd=main_repo)
    (holder,) = auth["agents"]
    assert (
        holder["agent_id"] == "bob" and holder["state"] == "committed" and holder["branch"] == "feature-auth"
    )
    assert holder["additions"] == 5 and holder["deletions"] == 1 and holder["last_modified"]
    readme = ok("who-has", "README.md", cwd=feature)
    assert [(a["agent_id"], a["state"]) for a in readme["agents"]] == [("alice", "uncommitted")]

    members = {m["agent_id"]: m for m in ok("team", cwd=main_repo)["members"]}
    assert members["bob"]["branch"] == "feature-auth" and members["bob"]["unmerged_commits"] == 1
    assert members["alice"]["branch"] == "main" and members["alice"]["uncommitted_files"] == ["README.md"]
    assert members["bob"]["intent"] == "real login"

    # Deleting bob from the main worktree removes his identity file in the linked worktree.
    deleted = ok("agent", "delete", "bob", "--force", cwd=main_repo)
    assert deleted["identity_file_removed"] is True
    assert not (feature / ".thrum" / "identities" / "bob.json").exists()
    lines = log_lines(main_repo)
    assert [e["type"] for e in lines if e.get("agent_id") == "bob"] == ["agent.cleanup"]
    assert [m["agent_id"] for m in ok("team", "--all", cwd=main_repo)["members"]] == ["alice"]

    # A worktree that disappears makes its agent an orphan.
    scratch = add_worktree(main_repo, tmp_path / "scratch", "scratch")
    ok("quickstart", "--name", "carol", "--role", "tester", "--module", "qa", "--no-init", cwd=scratch)
    shutil.rmtree(scratch)
    git(main_repo, "worktree", "prune")
    report = ok("agent", "cleanup", "--dry-run", cwd=main_repo)
    carol = next(o for o in report["orphans"] if o["agent_id"] == "carol")
    assert "worktree_missing" in carol["reasons"] and carol["worktree"] == str(scratch.resolve())
    assert "alice" not in {o["agent_id"] for o in report["orphans"]}
    forced = ok("agent", "cleanup", "--force", cwd=main_repo)
    assert "carol" in forced["deleted"]
    assert [a["agent_id"] for a in ok("agent", "list", cwd=main_repo)["agents"]] == ["alice"]


@pytest.mark.slow
def test_restart_recovers_sessions(main_repo: Path) -> None:
    first = ok(
        "quickstart",
        "--name",
        "dana",
        "--role",
        "planner",
        "--module",
        "m",
        "--intent",
        "plan",
        "--no-init",
        cwd=main_repo,
    )
    assert thrum("daemon", "stop", cwd=main_repo).returncode == 0
    assert thrum("daemon", "start", cwd=main_repo).returncode == 0
    # The session survives the restart (it is in the log); the intent too (D7).
    me = ok("agent", "whoami", cwd=main_repo)
    assert me["session_id"] == first["session"]["session_id"] and me["intent"] == "plan"
    # A new quickstart after a restart supersedes the still-recent session.
    again = ok(
        "quickstart", "--name", "dana", "--role", "planner", "--module", "m", "--no-init", cwd=main_repo
    )
    assert again["session"]["ended_sessions"] == [
        {"session_id": first["session"]["session_id"], "reason": "superseded"}
    ]
    ended = [e for e in log_lines(main_repo) if e["type"] == "agent.session.end"]
    assert ended[-1]["reason"] == "superseded" and ended[-1]["agent_id"] == "dana"
