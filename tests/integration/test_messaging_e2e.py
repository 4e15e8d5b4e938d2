"""Messaging end to end: a real daemon started by the installed ``thrum`` CLI, real sockets, real SQLite.

- 10 concurrent senders x 100 messages → exactly 1,000 stored, 0 errors;
- SIGKILL while 10 clients send → after a restart every acknowledged message
  is in the log and in SQLite exactly once;
- a reader and a writer at full speed do not block each other;
- ``thrum wait`` in one process is woken by ``thrum send`` in another.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.canonical import parse_line
from thrum_core.client import Client
from thrum_core.errors import ThrumError
from thrum_core.events.log import iter_lines, list_log_files
from thrum_core.paths import ThrumPaths, client_socket_path

pytestmark = pytest.mark.slow

SENDERS = 10
PER_SENDER = 100


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    out.update(GIT_CONFIG_NOSYSTEM="1", HOME=out.get("HOME", "/tmp"))
    return out


def thrum(
    *args: str, cwd: Path, extra_env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["thrum", *args],
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_daemon(repo: Path) -> int:
    started = thrum("daemon", "start", "--json", cwd=repo)
    assert started.returncode == 0, started.stdout + started.stderr
    return int(json.loads(started.stdout)["pid"])


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env())
    init = thrum("init", "--no-daemon", cwd=root)
    assert init.returncode == 0, init.stderr
    yield root
    thrum("daemon", "stop", "--force", cwd=root)


def client(repo: Path) -> Client:
    paths = ThrumPaths.for_root(repo)
    return Client(client_socket_path(paths, {}), call_timeout=30)


def register(repo: Path, names: list[str]) -> None:
    with client(repo) as c:
        for name in names:
            c.call("agent.register", {"name": name, "role": "sender", "module": "m"})


class Sender(threading.Thread):
    """Sends ``count`` messages as ``name`` on its own connection; records what was acknowledged."""

    def __init__(self, repo: Path, name: str, to: str, count: int):
        super().__init__(daemon=True)
        self.repo, self.name_, self.to, self.count = repo, name, to, count
        self.acked: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with client(self.repo) as c:
                c.call("session.start", {"agent_id": self.name_, "caller_agent_id": self.name_})
                for i in range(self.count):
                    r = c.call(
                        "message.send",
                        {"content": f"{self.name_} #{i}", "to": self.to, "caller_agent_id": self.name_},
                    )
                    self.acked.append(r["message_id"])
        except (ThrumError, OSError) as exc:
            self.errors.append(exc)


def log_message_ids(repo: Path) -> Counter[str]:
    sync = ThrumPaths.for_root(repo).sync_dir
    ids: Counter[str] = Counter()
    for rel in list_log_files(sync):
        for _off, line in iter_lines(sync / rel):
            obj = parse_line(line)
            if obj is not None and obj.get("type") == "message.create":
                ids[str(obj["message_id"])] += 1
    return ids


def db_message_ids(repo: Path) -> Counter[str]:
    db = ThrumPaths.for_root(repo).db_path
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return Counter(r[0] for r in conn.execute("SELECT message_id FROM messages"))
    finally:
        conn.close()


def test_ten_concurrent_senders_store_exactly_one_thousand(repo: Path) -> None:
    start_daemon(repo)
    names = [f"sender{i}" for i in range(SENDERS)]
    register(repo, [*names, "sink"])
    senders = [Sender(repo, n, "@sink", PER_SENDER) for n in names]
    for s in senders:
        s.start()
    for s in senders:
        s.join(240)
    assert [e for s in senders for e in s.errors] == []
    acked = [m for s in senders for m in s.acked]
    assert len(acked) == len(set(acked)) == SENDERS * PER_SENDER
    with client(repo) as c:
        inbox = c.call("message.list", {"for_agent": "sink", "caller_agent_id": "sink", "page_size": 100})
    assert inbox["total"] == inbox["unread"] == 1000
    logs = log_message_ids(repo)
    assert set(logs) == set(acked) and set(logs.values()) == {1}
    assert db_message_ids(repo) == logs
    per_sender = {n: sum(1 for m in inbox["messages"] if m["agent_id"] == n) for n in names}
    assert sum(per_sender.values()) == 100  # the first page holds 100 of them


def test_sigkill_mid_way_keeps_every_acknowledged_message_once(repo: Path) -> None:
    pid = start_daemon(repo)
    names = [f"sender{i}" for i in range(SENDERS)]
    register(repo, [*names, "sink"])
    senders = [Sender(repo, n, "@sink", PER_SENDER) for n in names]
    for s in senders:
        s.start()
    deadline = time.monotonic() + 120
    while sum(len(s.acked) for s in senders) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    kill(pid)
    for s in senders:
        s.join(60)
    acked = {m for s in senders for m in s.acked}
    assert 300 <= len(acked) < SENDERS * PER_SENDER
    start_daemon(repo)  # repairs torn tails, catches up
    logs = log_message_ids(repo)
    assert acked <= set(logs)
    assert [m for m, n in logs.items() if n != 1] == []
    with client(repo) as c:
        listed = c.call("message.list", {"for_agent": "sink", "caller_agent_id": "sink", "page_size": 1})
        assert listed["total"] == len(logs)
        for mid in sorted(acked)[:50]:
            assert c.call("message.get", {"message_id": mid})["message"]["message_id"] == mid
    assert db_message_ids(repo) == logs


def test_reader_and_writer_at_full_speed_do_not_block_each_other(repo: Path) -> None:
    start_daemon(repo)
    register(repo, ["writer", "reader"])
    stop = threading.Event()
    read_latencies: list[float] = []
    write_latencies: list[float] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with client(repo) as c:
                c.call("session.start", {"agent_id": "writer", "caller_agent_id": "writer"})
                while not stop.is_set():
                    t = time.perf_counter()
                    c.call("message.send", {"content": "tick", "to": "@reader", "caller_agent_id": "writer"})
                    write_latencies.append(time.perf_counter() - t)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            with client(repo) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    c.call(
                        "message.list", {"for_agent": "reader", "caller_agent_id": "reader", "page_size": 100}
                    )
                    read_latencies.append(time.perf_counter() - t)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(write_latencies) > 50 and len(read_latencies) > 50
    read_latencies.sort()
    write_latencies.sort()
    assert read_latencies[int(len(read_latencies) * 0.99)] < 0.5, read_latencies[-5:]
    assert write_latencies[int(len(write_latencies) * 0.99)] < 0.5, write_latencies[-5:]
    with client(repo) as c:
        total = c.call("message.list", {"for_agent": "reader", "caller_agent_id": "reader"})["total"]
    assert total == len(write_latencies)


def test_what_was_answered_or_announced_is_read_back_on_any_connection(repo: Path) -> None:
    """Read-your-writes while the writer holds batches uncommitted (``writer.HOLD_COMMITS``).

    Each sender reads its message back on a second connection the moment
    ``message.send`` answers, and a subscriber reads every message it is told
    of the moment the notification arrives.
    """
    start_daemon(repo)
    names = [f"rw{i}" for i in range(4)]
    register(repo, [*names, "sink", "listener"])
    errors: list[BaseException] = []
    announced: list[str] = []
    listening = threading.Event()
    done = threading.Event()

    def listen() -> None:
        try:
            with client(repo) as c:
                c.call("session.start", {"agent_id": "listener", "caller_agent_id": "listener"})
                c.call("subscribe", {"all": True, "caller_agent_id": "listener"})
                listening.set()
                while not (done.is_set() and len(announced) == len(names) * 40):
                    note = c.next_notification(timeout=1)
                    if note is None:
                        continue
                    mid = note["params"]["message_id"]
                    got = c.call("message.get", {"message_id": mid, "caller_agent_id": "listener"})
                    assert got["message"]["body"]["content"] == note["params"]["preview"]
                    announced.append(mid)
        except BaseException as exc:
            errors.append(exc)
            listening.set()

    def send(name: str) -> None:
        try:
            with client(repo) as mine, client(repo) as other:
                mine.call("session.start", {"agent_id": name, "caller_agent_id": name})
                for i in range(40):
                    sent = mine.call(
                        "message.send", {"content": f"{name} {i}", "to": "@sink", "caller_agent_id": name}
                    )
                    got = other.call(
                        "message.get", {"message_id": sent["message_id"], "caller_agent_id": "sink"}
                    )
                    assert got["message"]["body"]["content"] == f"{name} {i}"
                    mine_listed = other.call(
                        "message.list",
                        {"for_agent": "sink", "caller_agent_id": "sink", "author_id": name, "page_size": 1},
                    )
                    assert mine_listed["total"] == i + 1
        except BaseException as exc:
            errors.append(exc)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(30)
    senders = [threading.Thread(target=send, args=(n,), daemon=True) for n in names]
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    done.set()
    listener.join(60)
    assert errors == []
    assert len(announced) == len(set(announced)) == len(names) * 40


def test_cli_wait_is_woken_by_a_send_from_another_process(repo: Path) -> None:
    start_daemon(repo)
    for name in ("waiter", "talker"):
        q = thrum("quickstart", name, "--role", "dev", "--module", "m", "--no-init", cwd=repo)
        assert q.returncode == 0, q.stdout + q.stderr
    waiting = subprocess.Popen(
        ["thrum", "wait", "--timeout", "30s", "--json"],
        cwd=repo,
        env={**env(), "THRUM_NAME": "waiter"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert waiting.poll() is None
    sent = thrum(
        "send", "are you there?", "--to", "@waiter", "--json", cwd=repo, extra_env={"THRUM_NAME": "talker"}
    )
    assert sent.returncode == 0, sent.stderr
    started = time.monotonic()
    out, err = waiting.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert waiting.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    assert result["status"] == "received"
    assert [m["message_id"] for m in result["messages"]] == [json.loads(sent.stdout)["message_id"]]
    timeout = thrum("wait", "--timeout", "300ms", "--json", cwd=repo, extra_env={"THRUM_NAME": "waiter"})
    assert timeout.returncode == 1 and json.loads(timeout.stdout) == {"status": "timeout"}
    own = thrum("send", "talking to myself", "--to", "@talker", cwd=repo, extra_env={"THRUM_NAME": "talker"})
    assert own.returncode == 0
    mine = thrum("wait", "--timeout", "300ms", "--all", cwd=repo, extra_env={"THRUM_NAME": "talker"})
    assert mine.returncode == 1  # never the caller's own messages
