"""The messaging commands of the installed ``thrum`` CLI, run as subprocesses against a real daemon.

send, reply, inbox, sent, message get|edit|delete|read, group *, subscribe,
unsubscribe, subscriptions and wait: human output, ``--json`` documents,
errors and exit codes (SPEC §15.3, §15.4).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.testing.plugins import clean_environ


def _env(name: str | None = None) -> dict[str, str]:
    env = clean_environ()
    env.update(GIT_CONFIG_NOSYSTEM="1", HOME=env.get("HOME", "/tmp"))
    if name is not None:
        env["THRUM_NAME"] = name
    return env


class Repo:
    """A repository with a running daemon and three agents (alice, bob, carol)."""

    def __init__(self, root: Path):
        self.root = root

    def run(
        self, *args: str, name: str | None = "alice", stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["thrum", *args],
            cwd=self.root,
            env=_env(name),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *args: str, name: str | None = "alice", stdin: str | None = None) -> Any:
        done = self.run(*args, "--json", name=name, stdin=stdin)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def error(self, *args: str, name: str | None = "alice", code: int = 1) -> dict[str, Any]:
        done = self.run(*args, "--json", name=name)
        assert done.returncode == code, done.stdout + done.stderr
        err: dict[str, Any] = json.loads(done.stdout)["error"]
        return err


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("msgcli") / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=_env())
    r = Repo(root)
    assert r.run("init", "--no-daemon", name=None).returncode == 0
    started = r.run("daemon", "start", "--json", name=None)
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    for name, role in (("alice", "lead"), ("bob", "dev"), ("carol", "dev")):
        q = r.run("quickstart", name, "--role", role, "--module", "m", "--no-init", name=None)
        assert q.returncode == 0, q.stdout + q.stderr
    try:
        yield r
    finally:
        r.run("daemon", "stop", "--force", name=None)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_send_human_and_json(repo: Repo) -> None:
    done = repo.run("send", "hello bob", "--to", "@bob")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"Sent msg_\w+ to bob \(1 recipient\)\n", done.stdout)
    role = repo.run("send", "devs", "--to", "@dev")
    assert "to bob, carol (2 recipients)" in role.stdout
    assert "@dev resolved to role dev (2 agents)" in role.stderr
    quiet = repo.run("send", "devs again", "--to", "@dev", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    result = repo.json(
        "send",
        "--to",
        "@bob,@carol",
        "--scope",
        "task:t1",
        "--ref",
        "pr:7",
        "--tag",
        "x",
        "--format",
        "plain",
        "--structured",
        '{"k": 1}',
        "with flags",
    )
    assert set(result) == {
        "message_id",
        "thread_id",
        "created_at",
        "resolved_to",
        "recipients",
        "audiences",
        "warnings",
    }
    assert result["recipients"] == ["bob", "carol"] and result["resolved_to"] == 2
    piped = repo.json("send", "-", "--to", "@bob", stdin="from stdin\n")
    got = repo.json("message", "get", piped["message_id"], name="bob")
    assert got["message"]["body"]["content"] == "from stdin\n"
    broadcast = repo.json("send", "to all", "--broadcast")
    assert broadcast["audiences"] == [{"type": "broadcast", "value": "everyone"}]
    mention_only = repo.json("send", "fyi", "--mention", "@carol")
    assert mention_only["recipients"] == ["carol"]


def test_send_errors(repo: Repo) -> None:
    err = repo.error("send", "nobody listens")
    assert err["code"] == -32602 and err["data"]["field"] == "--to"
    err = repo.error("send", "x", "--to", "@ghost,@bob")
    assert err["code"] == -32001 and err["data"]["unknown"] == ["@ghost"]
    err = repo.error("send", "x", "--to", "@bob", "--scope", "nocolon")
    assert err["code"] == -32602 and err["data"]["field"] == "--scope"
    err = repo.error("send", "x", "--to", "@bob", "--structured", "[1]")
    assert err["code"] == -32602 and err["data"]["field"] == "--structured"
    err = repo.error("send", "--to", "@bob", "--format", "json", "{broken")
    assert err["code"] == -32602 and err["data"]["field"] == "content"
    text = repo.run("send", "x", "--to", "@ghost")
    assert (
        text.returncode == 1
        and text.stdout == ""
        and text.stderr.startswith("Error: unknown recipient: @ghost")
    )
    no_daemon_name = repo.run("send", "x", "--to", "@bob", name="stranger")
    assert no_daemon_name.returncode == 1


def test_inbox_marks_shown_messages_read_and_shows_counts(repo: Repo) -> None:
    for i in range(3):
        repo.json("send", f"note {i} for carol", "--to", "@carol", name="bob")
    first = repo.run("inbox", "--limit", "2", name="carol")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("● ") and "bob" in lines[0] and "note 2 for carol" in lines[0]
    assert re.fullmatch(r"Showing 1–2 of \d+ \(\d+ unread\)", lines[-1])  # noqa: RUF001
    total, unread = map(int, re.findall(r"\d+", lines[-1])[2:4])
    again = repo.json("inbox", "--limit", "2", name="carol")
    assert again["total"] == total and again["unread"] == unread - 2
    assert [m["is_read"] for m in again["messages"]] == [True, True]
    unread_only = repo.json("inbox", "--unread", "--page-size", "100", name="carol")
    assert unread_only["total"] == unread - 2
    still = repo.json("inbox", "--unread", "--page-size", "100", name="carol")
    assert still["total"] == unread - 2  # --unread does not mark anything read
    from_bob = repo.json("inbox", "--from", "@bob", "--page-size", "100", "--oldest", name="carol")
    assert {m["agent_id"] for m in from_bob["messages"]} == {"bob"}
    times = [m["created_at"] for m in from_bob["messages"]]
    assert times == sorted(times)
    everything = repo.json("inbox", "--all", "--page-size", "1", name="carol")
    assert everything["total"] >= total
    empty = repo.run("inbox", "--scope", "none:here", name="carol")
    assert empty.stdout.splitlines() == ["No messages.", "Showing 0–0 of 0 (0 unread)"]  # noqa: RUF001


def test_reply_sent_get_edit_delete_read(repo: Repo) -> None:
    question = repo.json("send", "what time is it?", "--to", "@bob", name="carol")
    reply = repo.json("reply", question["message_id"], "noon", name="bob")
    assert reply["thread_id"].startswith("thr_") and reply["recipients"] == ["carol"]
    parent = repo.json("message", "get", question["message_id"], name="carol")["message"]
    assert parent["thread_id"] == reply["thread_id"]
    assert [r["read_at"] is not None for r in parent["recipients"]] == [True]  # reply marked the parent read
    sent = repo.run("sent", "--limit", "5", name="carol")
    assert question["message_id"] in sent.stdout and "read 1/1" in sent.stdout
    assert re.search(r"Showing 1–\d+ of \d+$", sent.stdout.strip())  # noqa: RUF001
    shown = repo.run("sent", "show", question["message_id"], name="carol")
    assert "what time is it?" in shown.stdout and "Read by: bob ✓" in shown.stdout
    outbox = repo.json("sent", "--to", "@bob", name="carol")
    assert question["message_id"] in [m["message_id"] for m in outbox["messages"]]
    edited = repo.json("message", "edit", reply["message_id"], "half past noon", name="bob")
    assert edited["version"] == 1
    err = repo.error("message", "edit", reply["message_id"], "hijack", name="carol")
    assert err["code"] == -32002 and err["data"]["reason"] == "not_author"
    refuse = repo.error("message", "delete", reply["message_id"], name="bob")
    assert refuse["data"]["field"] == "--force"
    deleted = repo.json("message", "delete", reply["message_id"], "--force", "--reason", "wrong", name="bob")
    assert deleted["message_id"] == reply["message_id"]
    late = repo.error("message", "edit", reply["message_id"], "again", name="bob")
    assert late["code"] == -32003
    m1 = repo.json("send", "one", "--to", "@alice", name="bob")["message_id"]
    m2 = repo.json("send", "two", "--to", "@alice", name="bob")["message_id"]
    read = repo.json("message", "read", m1, m2, "msg_nope", name="alice")
    assert read["marked_count"] == 2 and read["not_found"] == ["msg_nope"]
    repo.json("send", "three", "--to", "@alice", name="bob")
    all_read = repo.run("message", "read", "--all", name="alice")
    assert all_read.returncode == 0 and "unread left" in all_read.stdout
    assert repo.error("message", "read", name="alice")["data"]["field"] == "--all"


def test_groups(repo: Repo) -> None:
    created = repo.json("group", "create", "crew", "--description", "the crew")
    assert created["name"] == "crew" and created["description"] == "the crew"
    assert repo.run("group", "add", "crew", "@bob").stdout.strip() == "Added agent bob to crew"
    assert repo.json("group", "add", "crew", "--role", "dev")["added"] is True
    assert repo.json("group", "add", "crew", "@bob")["added"] is False
    listed = repo.run("group", "list", name=None)
    assert listed.stdout.splitlines()[0].startswith("everyone") and "crew" in listed.stdout
    members = repo.json("group", "members", "crew", "--expand", name=None)
    assert members["expanded"] == ["bob", "carol"]
    info = repo.json("group", "info", "crew", name=None)
    assert [(m["member_type"], m["member_value"]) for m in info["members"]] == [
        ("agent", "bob"),
        ("role", "dev"),
    ]
    sent = repo.json("send", "crew news", "--to", "@crew")
    assert sent["recipients"] == ["bob", "carol"] and sent["warnings"] == ["@crew resolved to a group"]
    assert repo.json("group", "remove", "crew", "--role", "dev")["removed"] is True
    assert repo.error("group", "add", "crew")["data"]["field"] == "MEMBER"
    assert repo.error("group", "create", "bob")["data"]["reason"] == "name_taken"
    assert repo.error("group", "delete", "everyone")["data"]["reason"] == "builtin"
    assert repo.json("group", "delete", "crew")["deleted"] is True
    assert repo.error("group", "info", "crew", name=None)["code"] == -32001


def test_subscriptions(repo: Repo) -> None:
    sub = repo.json("subscribe", "--scope", "task:cli", name="bob")
    assert sub["created"] is True
    again = repo.run("subscribe", "--scope", "task:cli", name="bob")
    assert again.stdout.startswith("Already subscribed: subscription")
    listed = repo.json("subscriptions", name="bob")
    assert [s["id"] for s in listed["subscriptions"]] == [sub["subscription_id"]]
    assert (
        repo.run("subscriptions", name="bob")
        .stdout.strip()
        .endswith(listed["subscriptions"][0]["created_at"])
    )
    assert repo.error("subscribe", "--all", "--mention", "@x", name="bob")["data"]["field"] == "--scope"
    assert repo.json("unsubscribe", str(sub["subscription_id"]), name="bob") == {"removed": True}
    assert repo.run("unsubscribe", str(sub["subscription_id"]), name="bob").stdout.startswith(
        "No subscription"
    )


def test_wait_exit_codes(repo: Repo) -> None:
    timeout = repo.run("wait", "--timeout", "200ms", name="carol")
    assert timeout.returncode == 1 and timeout.stdout == "No message before the timeout.\n"
    assert json.loads(repo.run("wait", "--timeout", "200ms", "--json", name="carol").stdout) == {
        "status": "timeout"
    }
    sent = repo.json("send", "catch up", "--to", "@carol", "--scope", "task:w", name="bob")
    back = repo.run("wait", "--timeout", "2s", "--after=-1m", "--scope", "task:w", "--json", name="carol")
    assert back.returncode == 0
    assert [m["message_id"] for m in json.loads(back.stdout)["messages"]] == [sent["message_id"]]
    bad = repo.run("wait", "--timeout", "soon", "--json", name="carol")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["data"]["field"] == "--timeout"
    bad_after = repo.run("wait", "--timeout", "1s", "--after", "5m", "--json", name="carol")
    assert bad_after.returncode == 2 and json.loads(bad_after.stdout)["error"]["code"] == -32602
    unknown_flag = repo.run("wait", "--bogus", name="carol")
    assert unknown_flag.returncode == 2
