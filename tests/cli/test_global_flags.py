"""Global flags before or after the command (SPEC §15.1), through the installed ``thrum`` executable.

The repository has two identity files (``alice`` and ``bob``), so a command that needs an identity must
be told who it acts as: ``--name`` after the command must work exactly as before it, for every command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.testing.repo import run_git as git

from .conftest import thrum


class Repo:
    """A repository with a running daemon and the identity files of ``alice`` (lead) and ``bob`` (dev)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return thrum(*args, cwd=self.root, env=env)

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        done = self.run(*args, env=env)
        assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("globalflags") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    r = Repo(root)
    assert r.run("init", "--no-daemon").returncode == 0
    started = r.run("daemon", "start", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads(started.stdout)["pid"]
    for name, role in (("alice", "lead"), ("bob", "dev")):
        q = r.run("quickstart", name, "--role", role, "--module", "core", "--no-init")
        assert q.returncode == 0, q.stdout + q.stderr
    assert sorted(p.name for p in (root / ".thrum" / "identities").iterdir()) == ["alice.json", "bob.json"]
    try:
        yield r
    finally:
        r.run("daemon", "stop", "--force")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_without_a_name_two_identities_are_ambiguous(repo: Repo) -> None:
    done = repo.run("inbox", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == -32002
    assert "alice" in error["message"] and "bob" in error["message"]


def test_send_and_inbox_with_name_after_the_command(repo: Repo) -> None:
    sent = repo.json("send", "hi from alice", "--to", "@bob", "--name", "alice", "--json")
    assert sent["recipients"] == ["bob"]
    inbox = repo.json("inbox", "--name", "bob", "--json")
    mine = [m for m in inbox["messages"] if m["message_id"] == sent["message_id"]]
    assert mine and mine[0]["author"]["agent_id"] == "alice"
    # The same flags before the command, and mixed with the other global flags on both sides.
    before = repo.json("--name", "bob", "send", "hi from bob", "--to", "@alice", "--json")
    after = repo.json("--json", "inbox", "-q", "--name", "alice", "--unread")
    assert before["message_id"] in {m["message_id"] for m in after["messages"]}


def test_reply_wait_and_message_commands_take_the_name_after(repo: Repo) -> None:
    sent = repo.json("send", "question", "--to", "@bob", "--name", "alice", "--json")
    reply = repo.json("reply", sent["message_id"], "answer", "--name", "bob", "--json")
    assert reply["recipients"] == ["alice"]
    got = repo.json("message", "get", reply["message_id"], "--name", "alice", "--json")
    assert got["message"]["author"]["agent_id"] == "bob"
    waited = repo.run("wait", "--timeout", "1s", "--name", "alice", "--json")
    assert waited.returncode in (0, 1), waited.stdout + waited.stderr
    assert json.loads(waited.stdout)["status"] in ("received", "timeout")


def test_session_commands_and_groups_accept_the_name_after(repo: Repo) -> None:
    listed = repo.json("session", "list", "--active", "--name", "alice", "--json")
    assert {"alice", "bob"} <= {s["agent_id"] for s in listed["sessions"]}
    beat = repo.json("session", "heartbeat", "--name", "bob", "--json")
    assert beat["session_id"]
    # After the group name, before the subcommand.
    intent = repo.json("session", "--name", "bob", "set-intent", "fixing the parser", "--json")
    assert intent["intent"] == "fixing the parser"
    # A command whose argument is also called "name" does not mix the two up.
    created = repo.json("group", "create", "reviewers", "--name", "alice", "--json")
    assert created["name"] == "reviewers" and created["created_by"] == "alice"


def test_env_name_wins_over_the_flag(repo: Repo) -> None:
    """SPEC §15.2: ``THRUM_NAME`` > ``--name``, wherever the flag is."""
    who = repo.json("whoami", "--name", "alice", "--json", env={"THRUM_NAME": "bob"})
    assert (who["agent_id"], who["source"]) == ("bob", "env")
    flagged = repo.json("whoami", "--name", "alice", "--json")
    assert (flagged["agent_id"], flagged["source"]) == ("alice", "flag")


def test_role_and_module_after_the_command_override_the_identity(repo: Repo) -> None:
    who = repo.json("whoami", "--name", "alice", "--role", "reviewer", "--module", "docs", "--json")
    assert (who["role"], who["module"]) == ("reviewer", "docs")
    env_only = repo.json("whoami", "--name", "alice", "--json", env={"THRUM_ROLE": "planner"})
    assert env_only["role"] == "planner"
    flag_wins = repo.json(
        "whoami", "--role", "reviewer", "--name", "alice", "--json", env={"THRUM_ROLE": "x"}
    )
    assert flag_wins["role"] == "reviewer"


def test_a_command_keeps_its_own_flag_of_the_same_name(repo: Repo) -> None:
    """``team --role`` filters; the global ``--role`` goes before the command then."""
    devs = repo.json("team", "--role", "dev", "--json")
    assert [m["agent_id"] for m in devs["members"]] == ["bob"]
    everyone = repo.json("--role", "dev", "team", "--json")
    assert {m["agent_id"] for m in everyone["members"]} == {"alice", "bob"}


def test_commands_without_an_identity_accept_the_flags(repo: Repo) -> None:
    for args in (
        ("daemon", "status"),
        ("group", "list"),
        ("sync", "status"),
        ("version",),
        ("config", "show"),
    ):
        done = repo.run(*args, "--name", "alice", "--role", "r", "--module", "m", "--json")
        assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
        json.loads(done.stdout)


def test_a_flag_after_double_dash_is_text(repo: Repo) -> None:
    sent = repo.json("send", "--to", "@bob", "--name", "alice", "--json", "--", "--name")
    got = repo.json("message", "get", sent["message_id"], "--name", "bob", "--json")
    assert got["message"]["body"]["content"] == "--name"


def test_missing_value_is_a_usage_error(repo: Repo) -> None:
    done = repo.run("inbox", "--json", "--name")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == -32602


def test_help_lists_the_global_flags_once(repo: Repo) -> None:
    done = repo.run("--help")
    assert done.returncode == 0
    assert "--name, --role and --module may also follow the command" in " ".join(done.stdout.split())
    sub = repo.run("daemon", "status", "--help")
    assert sub.returncode == 0 and "--name" not in sub.stdout  # hidden where the command has no use for it


def test_help_options_work_at_every_level(repo: Repo) -> None:
    """The help options thrum prepares (no gettext) behave as click's own: -h and --help, everywhere."""
    for args in (("-h",), ("daemon", "-h"), ("daemon", "status", "--help"), ("send", "-h")):
        done = repo.run(*args)
        assert done.returncode == 0, args
        assert "  -h, --help" in done.stdout and "Show this message and exit." in done.stdout, args
        assert done.stdout.startswith("Usage: thrum"), args
    bad = repo.run("daemon", "status", "--bogus")
    assert bad.returncode == 1
    assert "Try 'thrum daemon status --help' for help." in bad.stderr


def test_exit_status_and_output_survive_the_fast_exit(repo: Repo, tmp_path: Path) -> None:
    """The ``thrum`` executable leaves through ``os._exit``: output complete, status kept."""
    status = repo.run("daemon", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    outside = thrum("daemon", "status", "--json", cwd=tmp_path)
    assert outside.returncode == 1 and json.loads(outside.stdout)["error"]["code"] == -32011


def test_atexit_callbacks_still_run(repo: Repo) -> None:
    """With an ``atexit`` callback registered the process exits the normal way, running it."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('callback ran'))\n"
        "from thrum_cli.main import main\n"
        "sys.argv = ['thrum', 'daemon', 'status', '--json']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo.root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.rpartition("}")[0] + "}")["running"] is True
    assert done.stdout.rstrip().endswith("callback ran")
