"""Git sync end to end: real clones of one bare remote, a real daemon per clone, the installed CLI.

Each clone is made with ``git clone``, initialised with ``thrum init
--no-daemon`` and its daemon started with ``thrum daemon start --no-local``
(local-only off).  Agents come from ``thrum quickstart``, messages from
``thrum send`` (or, for bulk sends, the daemon's ``message.send`` over its
socket), and sync is driven with ``thrum sync force --wait``.  Every daemon
is stopped (or killed) at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.client import Client
from thrum_core.lifecycle import DaemonLock, pid_alive, read_pid_file
from thrum_core.paths import ThrumPaths, client_socket_path

pytestmark = pytest.mark.slow

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env.update(GIT_ENV)
    env["THRUM_NO_HINTS"] = "1"
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=_env(), check=True, capture_output=True, text=True)
    return done.stdout


def thrum(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``thrum`` executable in ``cwd``."""
    return subprocess.run(
        ["thrum", *args],
        cwd=cwd,
        env=_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def thrum_json(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    done = thrum(*args, "--json", cwd=cwd, env=env, stdin=stdin)
    assert done.returncode == 0, f"thrum {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


class Clone:
    """One clone with its daemon."""

    def __init__(self, root: Path):
        self.root = root
        self.paths = ThrumPaths.for_root(root)
        self.pids: set[int] = set()

    def start(self, *flags: str, env: dict[str, str] | None = None) -> int:
        result = thrum_json("daemon", "start", *flags, cwd=self.root, env=env)
        pid = int(result["pid"])
        self.pids.add(pid)
        return pid

    @property
    def pid(self) -> int:
        info = read_pid_file(self.paths.pid_file)
        assert info is not None
        return info.pid

    def client(self) -> Client:
        return Client(client_socket_path(self.paths, {}), call_timeout=30)

    def rpc(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        with self.client() as client:
            return client.call(method, params, timeout=timeout)

    def force(self) -> dict[str, Any]:
        result: dict[str, Any] = thrum_json("sync", "force", "--wait", cwd=self.root)
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = thrum_json("sync", "status", cwd=self.root)
        return result

    def head(self) -> str:
        return git(self.root, "rev-parse", "refs/heads/a-sync").strip()

    def log_files(self) -> dict[str, bytes]:
        """Every file of the sync worktree (``.git`` excluded) by relative path."""
        out: dict[str, bytes] = {}
        sync_dir = self.paths.sync_dir
        for path in sorted(sync_dir.rglob("*")):
            rel = path.relative_to(sync_dir)
            if rel.parts[0] == ".git" or not path.is_file():
                continue
            out[rel.as_posix()] = path.read_bytes()
        return out

    def messages(self) -> list[dict[str, Any]]:
        """Every message the daemon knows (``message.list``, all pages)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            result = self.rpc("message.list", {"page_size": 100, "page": page, "sort_order": "asc"})
            found.extend(result["messages"])
            if page >= result["total_pages"]:
                return found
            page += 1

    def stop(self) -> None:
        """Stop the daemon (``daemon stop --force``), then SIGKILL every daemon this clone started."""
        try:
            info = read_pid_file(self.paths.pid_file)
            if info is not None:
                self.pids.add(info.pid)
            if DaemonLock.is_locked(self.paths.lock_file):
                thrum("daemon", "stop", "--force", cwd=self.root, timeout=30)
        except Exception:  # never let one clone's teardown leave the others running
            pass
        finally:
            for pid in self.pids:
                if pid_alive(pid) and self.is_our_daemon(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def is_our_daemon(self, pid: int) -> bool:
        """Whether ``pid`` is still this clone's ``daemon run`` (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        roots = {str(self.root).encode(), str(self.root.resolve()).encode()}
        return b"run" in cmdline and bool(roots & set(cmdline))


class Cluster:
    """A bare remote and its clones."""

    def __init__(self, base: Path):
        self.base = base
        self.remote = base / "remote.git"
        git(base, "init", "-q", "--bare", "-b", "main", str(self.remote))
        seed = base / "seed"
        git(base, "init", "-q", "-b", "main", str(seed))
        (seed / "README.md").write_text("# project\n")
        git(seed, "add", "README.md")
        git(seed, "commit", "-q", "-m", "initial")
        git(seed, "push", "-q", str(self.remote), "main")
        self.clones: list[Clone] = []

    def clone(self, name: str, *, daemon: bool = True, local: bool = False, debounce_ms: int = 150) -> Clone:
        root = self.base / name
        git(self.base, "clone", "-q", str(self.remote), str(root))
        init = thrum("init", "--no-daemon", cwd=root)
        assert init.returncode == 0, init.stdout + init.stderr
        config_file = root / ".thrum" / "config.json"
        config = json.loads(config_file.read_text())
        config.setdefault("daemon", {}).update(
            {"sync_debounce_ms": debounce_ms, "sync_interval": 5, "log_level": "debug"}
        )
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        clone = Clone(root)
        self.clones.append(clone)
        if daemon:
            clone.start("--local" if local else "--no-local")
        return clone

    def remote_refs(self) -> dict[str, str]:
        refs = git(self.remote, "for-each-ref", "--format=%(refname) %(objectname)")
        return dict(line.split(" ", 1) for line in refs.splitlines())

    def remote_tip(self) -> str | None:
        return self.remote_refs().get("refs/heads/a-sync")

    def converge(self, *clones: Clone, rounds: int = 8) -> None:
        """Force cycles round-robin until every clone sits on the remote's tip with nothing pending."""
        for _ in range(rounds):
            reports = [c.rpc("sync.force", {"wait": True}, timeout=100) for c in clones]
            tip = self.remote_tip()
            clean = all(r["cycle"]["error"] is None for r in reports) and all(c.head() == tip for c in clones)
            if clean and all(c.rpc("sync.status")["pending_events"] == 0 for c in clones):
                return
        raise AssertionError(f"no convergence: {[c.rpc('sync.status') for c in clones]}")

    def close(self) -> None:
        for clone in self.clones:
            clone.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def quickstart(clone: Clone, name: str, role: str) -> None:
    thrum_json("quickstart", name, "--role", role, "--module", "main", cwd=clone.root)


@pytest.fixture
def pair(cluster: Cluster) -> tuple[Clone, Clone]:
    """Clones ``a`` (agent alice) and ``b`` (agent bob) that know each other."""
    a = cluster.clone("a")
    b = cluster.clone("b")
    quickstart(a, "alice", "implementer")
    quickstart(b, "bob", "reviewer")
    cluster.converge(a, b)
    return a, b


# ------------------------------------------------------------------------------------------- tests


def test_a_message_sent_in_one_clone_reaches_the_other(cluster: Cluster, pair: tuple[Clone, Clone]) -> None:
    a, b = pair
    sent = thrum_json("send", "hello bob, from the other machine", "--to", "@bob", cwd=a.root)
    report = a.force()
    assert report["sync_state"] == "synced" and report["cycle"]["error"] is None
    report = b.force()
    assert report["cycle"]["fetched"] is True and report["cycle"]["error"] is None
    inbox = thrum_json("inbox", cwd=b.root)
    ids = [m["message_id"] for m in inbox["messages"]]
    assert sent["message_id"] in ids
    [message] = [m for m in inbox["messages"] if m["message_id"] == sent["message_id"]]
    assert message["body"]["content"] == "hello bob, from the other machine"
    assert message["author"]["agent_id"] == "alice"
    status = b.status()
    # `thrum inbox` marked the message read: that receipt is a local write, so a
    # debounced cycle may already be running.
    assert status["sync_state"] in ("synced", "pending", "syncing") and status["last_error"] is None
    human = thrum("sync", "status", cwd=b.root)
    assert human.returncode == 0 and "local-only off, from flag" in human.stdout


def test_concurrent_sends_for_50_rounds_converge(cluster: Cluster, pair: tuple[Clone, Clone]) -> None:
    a, b = pair
    expected: set[str] = set()
    errors: list[BaseException] = []

    def send(clone: Clone, caller: str, to: str, text: str) -> None:
        try:
            with clone.client() as client:
                client.call("message.send", {"caller_agent_id": caller, "to": f"@{to}", "content": text})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    for i in range(50):
        threads = [
            threading.Thread(target=send, args=(a, "alice", "bob", f"a-{i}")),
            threading.Thread(target=send, args=(b, "bob", "alice", f"b-{i}")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected.update({f"a-{i}", f"b-{i}"})
        time.sleep(0.03)  # the debounced cycles of both daemons race each other
    assert not errors, errors
    cluster.converge(a, b)

    files_a, files_b = a.log_files(), b.log_files()
    assert files_a == files_b
    for clone in (a, b):
        contents = [m["body"]["content"] for m in clone.messages()]
        assert sorted(contents) == sorted(expected), "a message was lost or duplicated"
    event_ids = [
        json.loads(line)["event_id"]
        for rel, data in files_a.items()
        if rel.endswith(".jsonl")
        for line in data.splitlines()
    ]
    assert len(event_ids) == len(set(event_ids))
    # both daemons raced: the history holds commits of both
    assert a.head() == b.head() == cluster.remote_tip()


def test_unreachable_remote_loses_nothing_and_recovers(cluster: Cluster, pair: tuple[Clone, Clone]) -> None:
    a, b = pair
    away = cluster.remote.with_name("remote.git.away")
    cluster.remote.rename(away)
    try:
        sent = thrum_json("send", "sent while offline", "--to", "@bob", cwd=a.root)
        report = a.force()
        assert report["sync_state"] == "error"
        cycle = report["cycle"]
        assert cycle["error"] and cycle["fetched"] is False and cycle["pushed"] is False
        status = a.status()
        assert status["sync_state"] == "error" and status["last_error"]
        assert status["pending_events"] >= 1
        # committed locally: the message is on the local branch
        assert "sent while offline" in git(a.root, "log", "-p", "-1", "a-sync")
        doctor = thrum("doctor", "--json", cwd=a.root)
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["sync_remote"]["status"] == "fail"
        assert checks["sync_state"]["status"] == "warn"
    finally:
        away.rename(cluster.remote)
    report = a.force()
    assert report["cycle"]["error"] is None and report["cycle"]["pushed"] is True
    assert a.status()["last_error"] is None
    b.force()
    inbox = thrum_json("inbox", cwd=b.root)
    assert sent["message_id"] in [m["message_id"] for m in inbox["messages"]]


def test_local_only_never_changes_the_remote(cluster: Cluster) -> None:
    c = cluster.clone("c", local=True)
    quickstart(c, "carol", "implementer")
    before = cluster.remote_refs()
    thrum_json("send", "note to self", "--to", "@carol", cwd=c.root)
    report = c.force()
    assert report["local_only"] is True and report["sync_state"] == "local-only"
    assert report["cycle"]["fetched"] is False and report["cycle"]["pushed"] is False
    assert report["cycle"]["error"] is None
    status = c.status()
    assert status["local_only"] is True and status["local_only_source"] == "flag"
    human = thrum("sync", "status", cwd=c.root)
    assert "local-only mode (from flag)" in human.stdout
    time.sleep(0.5)  # let the debounced cycle run too
    assert "note to self" in git(c.root, "log", "-p", "a-sync")  # committed locally
    assert cluster.remote_refs() == before
    assert "refs/remotes/origin/a-sync" not in git(c.root, "for-each-ref", "--format=%(refname)")
    doctor = thrum("doctor", "--json", cwd=c.root)
    checks = {x["name"]: x for x in json.loads(doctor.stdout)["checks"]}
    assert checks["sync_remote"]["status"] == "ok" and "local-only" in checks["sync_remote"]["message"]

    # THRUM_LOCAL=1 beats the config (the flag persisted local_only=false)
    thrum("daemon", "stop", cwd=c.root)
    c.start("--no-local")
    assert c.status()["local_only"] is False
    thrum("daemon", "stop", cwd=c.root)
    c.start(env={"THRUM_LOCAL": "1"})
    status = c.status()
    assert status["local_only"] is True and status["local_only_source"] == "env"


def test_sigkill_during_cycles_then_the_next_cycle_converges(
    cluster: Cluster, pair: tuple[Clone, Clone]
) -> None:
    a, b = pair
    expected: set[str] = set()
    n = 0
    caught_syncing = 0
    # None: kill as soon as sync.status says "syncing"; a number: kill that long after the force
    for delay in (None, 0.0, None, 0.005, None, 0.02):
        with a.client() as client:
            for _ in range(40):
                text = f"m-{n}"
                n += 1
                client.call("message.send", {"caller_agent_id": "alice", "to": "@bob", "content": text})
                expected.add(text)
            client.call("sync.force", {})
            if delay is None:
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    if client.call("sync.status")["sync_state"] == "syncing":
                        caught_syncing += 1
                        break
        if delay:
            time.sleep(delay)
        os.kill(a.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while DaemonLock.is_locked(a.paths.lock_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        a.start()
    assert caught_syncing >= 1, "no kill landed during a cycle"
    cluster.converge(a, b)
    assert a.log_files() == b.log_files()
    contents = [m["body"]["content"] for m in b.messages() if m["body"]["content"].startswith("m-")]
    assert sorted(contents) == sorted(expected)
    doctor = json.loads(thrum("doctor", "--json", cwd=a.root).stdout)
    checks = {c["name"]: c for c in doctor["checks"]}
    assert checks["sync_worktree"]["status"] == "ok"
    assert checks["sync_remote"]["status"] == "ok"


def test_context_sync_publishes_to_the_other_clone(cluster: Cluster, pair: tuple[Clone, Clone]) -> None:
    a, b = pair
    thrum_json("context", "save", cwd=a.root, stdin="alice is refactoring the parser\n")
    result = thrum_json("context", "sync", cwd=a.root)
    assert result["agent_name"] == "alice" and result["local_only"] is False and result["error"] is None
    assert result["pushed"] is True and result["commit"] is not None
    assert result["path"] == str(a.paths.sync_dir / "context" / "alice.md")
    message = git(a.root, "log", "--format=%s", "a-sync").splitlines()
    assert "context: sync alice" in message
    b.force()
    shown = thrum_json("context", "show", "--agent", "alice", cwd=b.root)
    assert shown["source"] == "a-sync" and shown["content"] == "alice is refactoring the parser\n"
    missing = thrum("context", "sync", "--json", cwd=b.root)
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == -32001


def test_doctor_reports_sync_health(cluster: Cluster, pair: tuple[Clone, Clone]) -> None:
    a, _b = pair
    doctor = thrum("doctor", "--json", cwd=a.root)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["sync_worktree"]["status"] == "ok"
    assert checks["sync_transport"]["status"] == "ok" and "pygit2" in checks["sync_transport"]["message"]
    assert checks["sync_remote"]["status"] == "ok" and "reachable" in checks["sync_remote"]["message"]
    assert checks["sync_state"]["status"] == "ok"


def test_purged_messages_do_not_come_back_from_the_other_clone(
    cluster: Cluster, pair: tuple[Clone, Clone]
) -> None:
    a, b = pair
    for i in range(3):
        thrum_json("send", f"soon purged {i}", "--to", "@bob", cwd=a.root)
    cluster.converge(a, b)
    assert len([m for m in b.messages() if m["body"]["content"].startswith("soon purged")]) == 3
    # b writes more while a purges: b's next cycle merges local files that still hold the old lines
    thrum_json("send", "sent by b meanwhile", "--to", "@alice", cwd=b.root)
    thrum_json("purge", "--all", "--confirm", cwd=a.root)
    cluster.converge(a, b)
    for clone in (a, b):
        contents = [m["body"]["content"] for m in clone.messages()]
        assert not [c for c in contents if c.startswith("soon purged")], contents
    assert a.log_files() == b.log_files()
    logs = b"".join(data for rel, data in a.log_files().items() if rel.endswith(".jsonl"))
    assert b"soon purged" not in logs and b"purge.executed" in logs


def test_doctor_fix_repairs_a_broken_worktree_while_the_daemon_is_stopped(cluster: Cluster) -> None:
    c = cluster.clone("c", daemon=False)
    sync_dir = c.paths.sync_dir
    (sync_dir / ".git").unlink()
    line = b'{"event_id":"evt_x1","timestamp":"2026-01-01T00:00:00.000000Z","type":"x.unknown","v":1}\n'
    with (sync_dir / "events.jsonl").open("ab") as fh:
        fh.write(line)
    doctor = thrum("doctor", "--json", cwd=c.root)
    checks = {x["name"]: x for x in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 1 and checks["sync_worktree"]["status"] == "fail"
    assert "--fix" in checks["sync_worktree"]["message"]
    fixed = thrum("doctor", "--fix", "--json", cwd=c.root)
    checks = {x["name"]: x for x in json.loads(fixed.stdout)["checks"]}
    assert checks["sync_worktree"]["status"] == "ok" and checks["sync_worktree"]["fixed"] is True
    assert "1 lines recovered" in checks["sync_worktree"]["message"]
    assert (sync_dir / "events.jsonl").read_bytes().endswith(line)
    assert list(sync_dir.parent.glob("a-sync.broken-*"))
    again = thrum("doctor", "--json", cwd=c.root)
    checks = {x["name"]: x for x in json.loads(again.stdout)["checks"]}
    assert checks["sync_worktree"]["status"] == "ok" and checks["sync_worktree"]["fixed"] is False
