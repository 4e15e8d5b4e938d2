"""The agent, session, team and context commands through the installed ``thrum`` executable.

Each module-scoped repository gets a real daemon (``thrum daemon start``), stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import TEST_GIT_ENV
from thrum_core.testing.repo import run_git as git
from thrum_plugins.cli._agent_common import work_counts


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = clean_environ()
    env.update(TEST_GIT_ENV)
    env.update(extra or {})
    return env


def thrum(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["thrum", *args],
        cwd=cwd,
        env=env_for(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    done = thrum(*args, "--json", cwd=cwd, env=env, stdin=stdin)
    assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def fails(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> dict[str, Any]:
    done = thrum(*args, "--json", cwd=cwd, env=env, stdin=stdin)
    assert done.returncode != 0, f"thrum {' '.join(args)} should fail: {done.stdout}"
    error: dict[str, Any] = json.loads(done.stdout)["error"]
    return error


def make_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    assert thrum("init", "--no-daemon", cwd=repo).returncode == 0
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with a running daemon for the whole module."""
    root = make_repo(tmp_path_factory.mktemp("agentcli"))
    started = thrum("daemon", "start", "--json", cwd=root)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads(started.stdout)["pid"]
    try:
        yield root
    finally:
        thrum("daemon", "stop", cwd=root)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def as_agent(name: str) -> dict[str, str]:
    return {"THRUM_NAME": name}


# ------------------------------------------------------------------------------------------ quickstart


def test_quickstart_registers_writes_identity_and_starts_session(repo: Path) -> None:
    doc = ok(
        "quickstart",
        "--name",
        "furiosa",
        "--role",
        "implementer",
        "--module",
        "auth",
        "--intent",
        "fix login",
        "--no-init",
        cwd=repo,
        env=as_agent("furiosa"),
    )
    assert set(doc) == {"agent", "session", "intent", "identity_file", "runtime"}
    assert doc["agent"]["agent_id"] == "furiosa" and doc["agent"]["status"] == "registered"
    assert doc["session"]["session_id"].startswith("ses_") and doc["intent"] == "fix login"
    path = Path(doc["identity_file"])
    assert path == repo.resolve() / ".thrum" / "identities" / "furiosa.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert (
        data["version"] == 5 and data["agent"]["name"] == "furiosa" and data["agent"]["role"] == "implementer"
    )
    assert data["worktree"] == str(repo.resolve()) and data["repo_id"].startswith("r_")
    assert data["session_id"] == doc["session"]["session_id"] and data["intent"] == "fix login"

    team = ok("team", cwd=repo)["members"]
    me = next(m for m in team if m["agent_id"] == "furiosa")
    assert me["intent"] == "fix login" and me["status"] == "active" and me["branch"] == "main"

    # Same name, same worktree, different role (a restart): retried with re_register.
    again = ok(
        "quickstart",
        "furiosa",
        "--role",
        "reviewer",
        "--module",
        "auth",
        "--no-init",
        cwd=repo,
        env=as_agent("furiosa"),
    )
    assert again["agent"]["status"] == "updated"
    assert again["session"]["ended_sessions"][0]["session_id"] == doc["session"]["session_id"]
    agents = ok("agent", "list", cwd=repo)["agents"]
    assert next(a for a in agents if a["agent_id"] == "furiosa")["role"] == "reviewer"


def test_quickstart_needs_role_and_valid_name(repo: Path) -> None:
    err = fails("quickstart", "--name", "x1", "--module", "m", cwd=repo)
    assert err["code"] == -32602 and err["data"]["field"] == "--role"
    err = fails("quickstart", "--name", "Bad Name", "--role", "r", "--module", "m", cwd=repo)
    assert err["code"] == -32602 and err["data"]["field"] == "--name"
    err = fails("quickstart", "--name", "everyone", "--role", "r", "--module", "m", cwd=repo)
    assert err["code"] == -32602 and "reserved" in err["message"]
    assert not (repo / ".thrum" / "identities" / "everyone.json").exists()
    plan = ok("quickstart", "--name", "dry", "--role", "r", "--module", "m", "--dry-run", cwd=repo)
    assert plan["dry_run"] is True and not Path(plan["identity_file"]).exists()


def test_conflict_from_another_worktree(repo: Path, tmp_path: Path) -> None:
    ok(
        "quickstart",
        "--name",
        "slit",
        "--role",
        "implementer",
        "--module",
        "m",
        "--no-init",
        cwd=repo,
        env=as_agent("slit"),
    )
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(linked), "-b", "feature-slit")
    init = ok("init", "--no-daemon", cwd=linked)
    assert init["redirect"] == str(linked.resolve() / ".thrum" / "redirect")
    assert (linked / ".thrum" / "redirect").read_text().strip() == str(repo.resolve() / ".thrum")
    err = fails(
        "quickstart", "--name", "slit", "--role", "implementer", "--module", "m", "--no-init", cwd=linked
    )
    assert err["code"] == -32003 and err["data"]["status"] == "conflict"
    assert err["data"]["reason"] == "in_use_elsewhere" and err["data"]["existing"]["agent_id"] == "slit"
    assert not (linked / ".thrum" / "identities" / "slit.json").exists()
    taken = ok(
        "quickstart",
        "--name",
        "slit",
        "--role",
        "implementer",
        "--module",
        "m",
        "--no-init",
        "--force",
        cwd=linked,
    )
    assert taken["agent"]["status"] == "updated"
    # The linked worktree shares the main daemon through its redirect.
    who = ok("agent", "whoami", cwd=linked)
    assert who["agent_id"] == "slit" and who["session_id"] == taken["session"]["session_id"]
    assert who["branch"] == "feature-slit"


# -------------------------------------------------------------------------------------------- whoami


def test_whoami_resolution(repo: Path) -> None:
    ok("agent", "register", "--name", "nux", "--role", "tester", "--module", "core", cwd=repo)
    # Several identity files now: an explicit choice is needed.
    err = fails("whoami", cwd=repo)
    assert err["code"] == -32002 and "nux" in err["data"]["candidates"]
    assert ok("whoami", cwd=repo, env=as_agent("nux"))["agent_id"] == "nux"
    doc = ok("whoami", "--name", "nux", cwd=repo)  # --name after the command (SPEC §15.1)
    assert doc["source"] == "flag" and doc["role"] == "tester" and doc["identity_file"].endswith("nux.json")
    assert ok("--name", "nux", "whoami", cwd=repo)["agent_id"] == "nux"
    assert ok("whoami", "--field", "role", cwd=repo, env=as_agent("nux")) == {"role": "tester"}
    plain = thrum("whoami", "--field", "module", cwd=repo, env=as_agent("nux"))
    assert plain.stdout.strip() == "core"
    assert ok("whoami", cwd=repo, env={"THRUM_AGENT_ID": "nux", "THRUM_NAME": ""})["source"] == "agent_id_env"


def test_register_errors_write_nothing(repo: Path) -> None:
    before = sorted(p.name for p in (repo / ".thrum" / "identities").iterdir())
    err = fails("agent", "register", "--name", "../escape", "--role", "r", "--module", "m", cwd=repo)
    assert err["code"] == -32602
    err = fails("agent", "register", "--name", "ok_name", "--role", "system", "--module", "m", cwd=repo)
    assert err["code"] == -32602 and err["data"]["field"] == "role"
    assert sorted(p.name for p in (repo / ".thrum" / "identities").iterdir()) == before
    assert not (repo.parent / "escape.json").exists()


# ------------------------------------------------------------------------------------------ sessions


def test_session_commands_and_aliases(repo: Path) -> None:
    me = as_agent("ace")
    ok("agent", "register", "--name", "ace", "--role", "implementer", "--module", "m", cwd=repo)
    started = ok("session", "start", cwd=repo, env=me)
    assert started["agent_id"] == "ace"
    assert ok("agent", "set-intent", "refactor", cwd=repo, env=me)["intent"] == "refactor"
    assert ok("session", "set-task", "step 1", cwd=repo, env=me)["current_task"] == "step 1"
    beat = ok("agent", "heartbeat", "--add-scope", "module:auth", cwd=repo, env=me)
    assert beat["session_id"] == started["session_id"] and beat["branch"] == "main"
    err = fails("session", "heartbeat", "--add-scope", "noval", cwd=repo, env=me)
    assert err["code"] == -32602 and err["data"]["field"] == "--add-scope"
    listed = ok("session", "list", "--agent", "ace", "--active", cwd=repo)["sessions"]
    assert [s["session_id"] for s in listed] == [started["session_id"]] and listed[0]["intent"] == "refactor"
    human = thrum("session", "list", "--agent", "ace", cwd=repo)
    assert started["session_id"] in human.stdout and "refactor" in human.stdout
    ended = ok("session", "end", cwd=repo, env=me)
    assert ended["session_id"] == started["session_id"]
    err = fails("agent", "end", "--session-id", started["session_id"], cwd=repo, env=me)
    assert err["code"] == -32003 and err["data"]["reason"] == "already_ended"
    err = fails("session", "start", cwd=repo, env=as_agent("stranger"))
    assert err["code"] == -32002 and err["data"]["reason"] == "not_registered"


# ------------------------------------------------------------------------------ team, who-has, ping


def test_team_who_has_and_ping(repo: Path) -> None:
    me = as_agent("toast")
    ok(
        "quickstart",
        "--name",
        "toast",
        "--role",
        "planner",
        "--module",
        "docs",
        "--intent",
        "plan v2",
        "--no-init",
        cwd=repo,
        env=me,
    )
    (repo / "plan.md").write_text("draft\n")
    has = ok("who-has", "plan.md", cwd=repo)
    assert has["file"] == "plan.md"
    mine = [a for a in has["agents"] if a["agent_id"] == "toast"]
    assert mine and mine[0]["state"] == "uncommitted"
    sub = repo / "docs"
    sub.mkdir(exist_ok=True)
    assert ok("who-has", "../plan.md", cwd=sub)["file"] == "plan.md"  # relative to the cwd
    assert ok("who-has", "nothing.txt", cwd=repo)["agents"] == []

    team = thrum("team", cwd=repo)
    assert team.returncode == 0 and "toast" in team.stdout and "plan v2" in team.stdout
    # an agent registered without a session is offline
    ok("agent", "register", "--name", "idle_one", "--role", "idler", "--module", "docs", cwd=repo)
    everyone = ok("team", "--all", cwd=repo)["members"]
    assert any(m["status"] == "offline" for m in everyone)
    assert all(m["role"] == "planner" for m in ok("team", "--role", "planner", cwd=repo)["members"])

    pong = ok("ping", "@toast", cwd=repo)
    assert pong == {
        "agent_id": "toast",
        "found": True,
        "status": "active",
        "last_seen_at": pong["last_seen_at"],
        "intent": "plan v2",
        "current_task": None,
        "branch": "main",
    }
    assert ok("ping", "planner", cwd=repo)["agent_id"] == "toast"  # by role
    missing = thrum("ping", "ghost", "--json", cwd=repo)
    assert missing.returncode == 1 and json.loads(missing.stdout)["found"] is False

    agents = ok("agent", "list", "--context", "--role", "planner", cwd=repo)
    assert [a["agent_id"] for a in agents["agents"]] == ["toast"]
    assert [c["agent_id"] for c in agents["contexts"]] == ["toast"]
    ctx = ok("agent", "context", "@toast", cwd=repo)["contexts"]
    assert ctx and ctx[0]["intent"] == "plan v2"
    assert ok("agent", "context", "--file", "plan.md", cwd=repo)["contexts"][0]["agent_id"] == "toast"

    status = ok("status", cwd=repo, env=me)
    assert status["agent"]["agent_id"] == "toast" and status["daemon"]["running"] is True
    assert status["session"]["intent"] == "plan v2"
    view = ok("overview", cwd=repo, env=me)
    assert set(view) == {
        "health",
        "agent",
        "session",
        "work_context",
        "team",
        "inbox",
        "sync",
        "websocket_port",
    }
    assert view["agent"]["agent_id"] == "toast" and view["work_context"]["intent"] == "plan v2"
    unmerged = len(view["work_context"]["unmerged_commits"])
    uncommitted = len(view["work_context"]["uncommitted_files"])
    human = thrum("overview", cwd=repo, env=me)
    assert human.returncode == 0 and "Intent: plan v2" in human.stdout
    assert f"Branch main: {work_counts(unmerged, uncommitted)}" in human.stdout.splitlines()
    assert ok("agent", "set-status", "blocked", cwd=repo, env=me)["status"] == "blocked"
    assert ok("agent", "whoami", cwd=repo, env=me)["intent"] == "plan v2"


# ------------------------------------------------------------------------------------------- context


def test_context_commands(repo: Path, tmp_path: Path) -> None:
    me = as_agent("cap")
    ok("quickstart", "--name", "cap", "--role", "reviewer", "--module", "m", "--no-init", cwd=repo, env=me)
    saved = ok("context", "save", cwd=repo, env=me, stdin="working on the parser\n")
    assert saved["agent_name"] == "cap" and saved["bytes"] == 22
    notes = tmp_path / "notes.md"
    notes.write_text("from a file\n")
    ok("context", "save", "--file", str(notes), cwd=repo, env=me)
    shown = ok("context", "show", cwd=repo, env=me)
    assert shown["content"] == "from a file\n" and shown["preamble"]
    raw = thrum("context", "load", "--raw", cwd=repo, env=me)
    assert raw.stdout.startswith("--- preamble ---\n") and "--- context ---\nfrom a file" in raw.stdout
    other = ok("context", "show", "--agent", "cap", "--no-preamble", cwd=repo)
    assert other["preamble"] is None

    huge = tmp_path / "huge.md"
    huge.write_bytes(b"x" * (1024 * 1024 + 10))
    err = fails("context", "save", "--file", str(huge), cwd=repo, env=me)
    assert err["code"] == -32005 and err["data"]["limit"] == 1048576 and "1 MiB" in err["message"]
    assert ok("context", "show", cwd=repo, env=me)["content"] == "from a file\n"  # unchanged

    assert ok("context", "preamble", "--init", cwd=repo, env=me)["agent_name"] == "cap"
    assert ok("context", "preamble", cwd=repo, env=me)["is_default"] is True
    err = fails("context", "preamble", "--init", "--file", str(notes), cwd=repo, env=me)
    assert err["code"] == -32602

    prime = ok("prime", cwd=repo, env=me)
    assert prime["agent"]["agent_id"] == "cap" and prime["context"]["content"] == "from a file\n"
    assert "errors" in prime and prime["session"]["status"] == "active"
    human = thrum("context", "prime", cwd=repo, env=me)
    assert human.returncode == 0 and "You are cap" in human.stdout

    sync = thrum("context", "sync", "--json", cwd=repo, env=me)
    if sync.returncode != 0:  # the git sync plugin provides context.sync; without it, a clear error
        assert "context.sync" in json.loads(sync.stdout)["error"]["message"]

    assert ok("context", "clear", cwd=repo, env=me) == {"agent_name": "cap", "cleared": True}
    err = fails("context", "show", "--agent", "nobody", cwd=repo)
    assert err["code"] == -32001


# ------------------------------------------------------------------------------------ delete, cleanup


def test_delete_and_cleanup(repo: Path) -> None:
    ok("agent", "register", "--name", "doomed", "--role", "tester", "--module", "m", cwd=repo)
    assert (repo / ".thrum" / "identities" / "doomed.json").exists()
    err = fails("agent", "delete", "doomed", cwd=repo)  # no TTY: --force is required
    assert err["code"] == -32602 and err["data"]["field"] == "--force"
    deleted = ok("agent", "delete", "doomed", "--force", cwd=repo)
    assert deleted["deleted"] is True and deleted["identity_file_removed"] is True
    assert not (repo / ".thrum" / "identities" / "doomed.json").exists()
    err = fails("agent", "delete", "doomed", "--force", cwd=repo)
    assert err["code"] == -32001
    err = fails("agent", "cleanup", "--dry-run", "--force", cwd=repo)
    assert err["code"] == -32602
    report = ok("agent", "cleanup", "--dry-run", cwd=repo)
    assert report["dry_run"] is True and report["deleted"] == []


# --------------------------------------------------------------------------------- without a daemon


def test_without_daemon(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    from thrum_cli.identity import write_identity_file

    write_identity_file(
        root / ".thrum" / "identities",
        "offline_one",
        agent={"kind": "agent", "name": "offline_one", "role": "r", "module": "m"},
    )
    assert ok("whoami", cwd=root)["agent_id"] == "offline_one"  # identity file only
    status = ok("status", cwd=root)
    assert status["daemon"]["running"] is False and status["agent"]["agent_id"] == "offline_one"
    err = fails("team", cwd=root)
    assert err["code"] == -32010 and "thrum daemon start" in err["message"]
    err = fails("quickstart", "--name", "later", "--role", "r", "--module", "m", cwd=root)
    assert err["code"] == -32010
    assert not (root / ".thrum" / "identities" / "later.json").exists()
    human = thrum("team", cwd=root)
    assert human.returncode == 1 and human.stderr.startswith("Error: thrum daemon is not running")


# ------------------------------------------------------------------------------------- import cost

HEAVY = ("trio", "pydantic", "pygit2", "pluggy", "httpx", "importlib.metadata")
WRAPPER = """
import json, sys
from thrum_cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print("@@MODULES@@" + json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["whoami"],
        ["status"],
        ["team"],
        ["ping", "toast"],
        ["session", "list"],
        ["agent", "list"],
        ["context", "show"],
    ],
)
def test_one_rpc_commands_stay_light(repo: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args, "--json"],
        cwd=repo,
        env=env_for(as_agent("toast")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    _out, _, modules = done.stdout.rpartition("@@MODULES@@")
    loaded = json.loads(modules)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], (args, heavy)


def test_daemon_restart_keeps_agents(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    assert thrum("daemon", "start", cwd=root).returncode == 0
    try:
        ok(
            "quickstart",
            "--name",
            "solid",
            "--role",
            "r",
            "--module",
            "m",
            "--intent",
            "persist",
            "--no-init",
            cwd=root,
        )
        assert thrum("daemon", "stop", cwd=root).returncode == 0
        time.sleep(0.1)
        (root / ".thrum" / "var" / "messages.db").unlink()  # the projection is a cache
        assert thrum("daemon", "start", cwd=root).returncode == 0
        member = ok("team", cwd=root)["members"][0]
        assert member["agent_id"] == "solid" and member["intent"] == "persist"
    finally:
        thrum("daemon", "stop", cwd=root)
