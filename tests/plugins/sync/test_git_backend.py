"""The git sync backend and its loop (SPEC §11) in an in-process kernel.

Real repositories and bare remotes in ``tmp_path``; the kernel runs the real
``sync.git`` and ``rpc.sync`` plugins over a real Unix socket.  "Another clone"
is a second real repository driven with the pygit2 engine directly.  A tiny
test plugin contributes the event type ``test.syncnote`` so that events can be
written without the messaging plugins.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pygit2
import pytest
import trio

from thrum_core.canonical import canonical_line
from thrum_core.events.types import EventType, EventTypeRegistrar, StoredEvent
from thrum_core.kernel import Kernel
from thrum_core.markers import hookimpl
from thrum_core.paths import ThrumPaths
from thrum_core.plugins.manager import PluginManager
from thrum_core.testing import make_test_pm, make_thrum_repo, open_async_client, register_test_plugin
from thrum_core.testing.kernel import KernelRunner
from thrum_core.testing.repo import ThrumRepo
from thrum_core.timefmt import format_ts
from thrum_plugins.sync import _git_impl as engine
from thrum_plugins.sync._git_service import (
    GitSyncService,
    import_recovered,
    init_repo,
    remove_stale_locks,
    service_for,
)

NOTE = "test.syncnote"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
STATUS_KEYS = {
    "running",
    "sync_state",
    "local_only",
    "local_only_source",
    "remote",
    "branch",
    "worktree",
    "interval_s",
    "last_sync_at",
    "last_attempt_at",
    "next_sync_at",
    "last_error",
    "pending_events",
    "head",
}
CYCLE_KEYS = {"fetched", "new_events", "files_merged", "commit", "pushed", "attempts", "error"}


def git(cwd: Path, *args: str) -> str:
    """Run the git CLI (setup and inspection only)."""
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def remote_refs(bare: Path) -> dict[str, str]:
    """Every ref of a (bare) repository with its target."""
    repo = pygit2.Repository(str(bare))
    return {name: str(repo.references[name].resolve().target) for name in repo.references}


def remote_tip(bare: Path) -> str | None:
    return remote_refs(bare).get(engine.SYNC_REF)


class NotePlugin:
    """``test.syncnote`` events (no reducer) in ``messages/<client>.jsonl``; records observed events."""

    def __init__(self) -> None:
        self.seen: list[StoredEvent] = []

    @hookimpl
    def thrum_register_event_types(self, register: EventTypeRegistrar) -> None:
        register(EventType(NOTE, None, route=lambda obj: f"messages/{obj.get('client') or 'x'}.jsonl"))

    @hookimpl
    def thrum_event_applied(self, event: StoredEvent, kernel: Kernel) -> None:
        self.seen.append(event)


def note_line(n: int, client: str = "peer") -> bytes:
    """A canonical ``test.syncnote`` line as another clone would have written it."""
    return canonical_line(
        {
            "type": NOTE,
            "timestamp": format_ts(1_767_225_600_000_000_000 + n * 1_000_000),
            "event_id": f"evt_peer{n:022d}",
            "v": 1,
            "origin_daemon": "d_peer",
            "client": client,
            "n": n,
        }
    )


class World:
    """A repository ``a`` (with its bare ``origin``) and helpers to run kernels for it."""

    def __init__(self, tmp: Path, runner: KernelRunner):
        self.tmp = tmp
        self.runner = runner
        self.repo: ThrumRepo = make_thrum_repo(tmp, name="a")
        self.notes = NotePlugin()

    def config(self, **daemon: Any) -> None:
        block: dict[str, Any] = {"local_only": False, "sync_interval": 0, "sync_debounce_ms": 100}
        block.update(daemon)
        self.repo.write_config({"daemon": block})

    def pm(self) -> PluginManager:
        manager = make_test_pm(("rpc.health", "transports.unix_socket", "sync.git", "rpc.sync"))
        self.notes = NotePlugin()
        register_test_plugin(manager, self.notes, "test_notes")
        return manager

    async def start(self, **kw: Any) -> Kernel:
        """Start a kernel and wait until its start-up cycle is over."""
        kernel = await self.runner.start(self.pm(), self.repo, **kw)
        svc = service_for(kernel)
        with trio.fail_after(10):
            while svc.running and (svc.cycles < 1 or svc.syncing):
                await trio.sleep(0.01)
        return kernel

    def other_clone(self, name: str = "b") -> ThrumPaths:
        """A second clone of the same remote, prepared with ``init_repo`` (no daemon)."""
        other = make_thrum_repo(self.tmp, name=name, with_remote=False)
        pygit2.Repository(str(other.root)).remotes.create("origin", str(self.repo.remote))
        engine.fetch(other.root, "origin")
        init_repo(other.paths, "origin")
        return other.paths


async def call(kernel: Kernel, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    async with await open_async_client(kernel.status["socket_path"]) as client:
        return await client.call(method, params, timeout=timeout)


async def emit_notes(kernel: Kernel, count: int, client: str = "a", start: int = 0) -> list[StoredEvent]:
    return await kernel.emit([{"type": NOTE, "client": client, "n": start + i} for i in range(count)])


def projected(kernel: Kernel, event_id: str) -> bool:
    assert kernel.store is not None
    db = kernel.store.open_reader()
    row = db.execute("SELECT state FROM events WHERE event_id=?", (event_id,)).fetchone()
    db.close()
    return row is not None and row[0] == "applied"


@pytest.fixture
def world(tmp_path: Path, thrum_kernel_runner: KernelRunner) -> World:
    return World(tmp_path, thrum_kernel_runner)


# ----------------------------------------------------------------------------- init


def test_init_repo_creates_branch_and_worktree_without_touching_the_checkout(tmp_path: Path) -> None:
    repo = make_thrum_repo(tmp_path)
    head_before = git(repo.root, "rev-parse", "HEAD")
    status_before = git(repo.root, "status", "--porcelain", "--ignored")
    result = init_repo(repo.paths, None)
    assert result["branch"] == "a-sync" and result["branch_source"] == "created"
    assert result["worktree"] == "created" and result["initialized"] is True
    assert Path(result["sync_worktree"]) == repo.paths.sync_dir
    assert (repo.paths.sync_dir / "events.jsonl").read_bytes() == b""
    assert str(repo.paths.sync_dir) in git(repo.root, "worktree", "list")
    assert git(repo.root, "rev-parse", "HEAD") == head_before
    assert git(repo.root, "status", "--porcelain", "--ignored") == status_before
    log = git(repo.root, "log", "--format=%s|%an <%ae>", "a-sync").splitlines()
    assert log == [
        "Initialize Thrum sync data|Thrum <thrum@local>",
        "Initialize Thrum sync|Thrum <thrum@local>",
    ]
    again = init_repo(repo.paths, None)
    assert again["branch_source"] == "existing" and again["worktree"] == "ok"
    assert again["initialized"] is False


def test_init_repo_from_a_linked_worktree(tmp_path: Path) -> None:
    repo = make_thrum_repo(tmp_path)
    linked = tmp_path / "feature"
    git(repo.root, "worktree", "add", "-q", "-b", "feature", str(linked))
    paths = ThrumPaths.for_root(linked)
    assert paths.sync_dir == repo.paths.sync_dir  # in the git common dir
    result = init_repo(paths, None)
    assert result["worktree"] == "created"
    assert engine.check_worktree(repo.root, repo.paths.sync_dir) is None
    assert git(linked, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"


def test_init_repo_adopts_the_remote_branch(tmp_path: Path) -> None:
    first = make_thrum_repo(tmp_path, name="a")
    init_repo(first.paths, "origin")
    (first.paths.sync_dir / "events.jsonl").write_bytes(note_line(1))
    engine.commit_worktree(first.root, first.paths.sync_dir, None, "seed")
    assert engine.push(first.root, "origin").status == "ok"

    second = make_thrum_repo(tmp_path, name="b", with_remote=False)
    pygit2.Repository(str(second.root)).remotes.create("origin", str(first.remote))
    engine.fetch(second.root, "origin")
    result = init_repo(second.paths, "origin")
    assert result["branch_source"] == "remote" and result["initialized"] is False
    assert (second.paths.sync_dir / "events.jsonl").read_bytes() == note_line(1)
    assert git(second.root, "rev-parse", "--abbrev-ref", "a-sync@{upstream}").strip() == "origin/a-sync"


def test_import_recovered_dedups_by_event_id(tmp_path: Path) -> None:
    sync_dir = tmp_path / "sync"
    moved = tmp_path / "moved"
    (sync_dir / "messages").mkdir(parents=True)
    (moved / "messages").mkdir(parents=True)
    (sync_dir / "messages" / "peer.jsonl").write_bytes(note_line(1) + note_line(2))
    # the same event 2 in another file counts as known; 3 is new; a torn tail is left behind
    (moved / "messages" / "peer.jsonl").write_bytes(note_line(1) + note_line(3) + b'{"type":"te')
    (moved / "events.jsonl").write_bytes(note_line(2) + b"not json\n")
    files = [moved / "events.jsonl", moved / "messages" / "peer.jsonl"]
    assert import_recovered(sync_dir, moved, files) == 2
    assert (sync_dir / "messages" / "peer.jsonl").read_bytes() == note_line(1) + note_line(2) + note_line(3)
    assert (sync_dir / "events.jsonl").read_bytes() == b"not json\n"
    assert import_recovered(sync_dir, moved, files) == 0


def test_remove_stale_locks(tmp_path: Path) -> None:
    repo = make_thrum_repo(tmp_path)
    init_repo(repo.paths, "origin")
    common = repo.paths.git_common_dir
    gitdir = Path(git(repo.paths.sync_dir, "rev-parse", "--absolute-git-dir").strip())
    locks = [
        common / "refs" / "heads" / "a-sync.lock",
        common / "refs" / "remotes" / "origin" / "a-sync.lock",
        gitdir / "index.lock",
    ]
    for lock in locks:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
    removed = remove_stale_locks(common, repo.paths.sync_dir, "origin")
    assert sorted(removed) == sorted(str(p) for p in locks)
    assert not any(p.exists() for p in locks)


# ----------------------------------------------------------------------------- daemon start


async def test_start_creates_the_worktree_and_pushes_once(world: World) -> None:
    world.config()
    kernel = await world.start()
    status = await call(kernel, "sync.status")
    with trio.fail_after(10):
        while status["last_sync_at"] is None:
            await trio.sleep(0.02)
            status = await call(kernel, "sync.status")
    assert set(status) >= STATUS_KEYS
    assert status["running"] is True and status["sync_state"] == "synced"
    assert status["local_only"] is False and status["local_only_source"] == "config"
    assert status["remote"] == "origin" and status["branch"] == "a-sync"
    assert status["worktree"] == str(world.repo.paths.sync_dir)
    assert status["interval_s"] == 0 and status["next_sync_at"] is None
    assert status["last_error"] is None and status["pending_events"] == 0
    assert status["head"] == remote_tip(world.repo.remote)
    assert kernel.status["sync_state"] == "synced"
    assert (await call(kernel, "health"))["sync_state"] == "synced"
    assert not list(world.repo.paths.sync_dir.parent.glob("a-sync.broken-*"))


async def test_force_wait_reports_the_cycle(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    stored = await emit_notes(kernel, 3)
    assert (await call(kernel, "sync.status"))["pending_events"] == 3
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["triggered"] is True and result["sync_state"] == "synced" and result["local_only"] is False
    cycle = result["cycle"]
    assert set(cycle) == CYCLE_KEYS
    assert cycle["fetched"] is True and cycle["pushed"] is True and cycle["error"] is None
    assert cycle["attempts"] == 1 and cycle["commit"] is not None
    assert remote_tip(world.repo.remote) == cycle["commit"]
    assert result["last_sync_at"] is not None
    status = await call(kernel, "sync.status")
    assert status["pending_events"] == 0 and status["head"] == cycle["commit"]
    message = git(world.repo.root, "log", "-1", "--format=%s", "a-sync").strip()
    assert message.startswith("sync: ") and message.endswith("Z") and len(message) == len("sync: ") + 20
    committed = git(world.repo.root, "show", "a-sync:messages/a.jsonl")
    assert [json.loads(line)["event_id"] for line in committed.splitlines()] == [e.event_id for e in stored]
    # nothing new: no commit, no push
    quiet = (await call(kernel, "sync.force", {"wait": True}))["cycle"]
    assert quiet == {**quiet, "commit": None, "pushed": False, "new_events": 0, "error": None}
    # without wait: returns at once, no cycle report
    fast = await call(kernel, "sync.force")
    assert fast["triggered"] is True and "cycle" not in fast


async def test_local_write_starts_a_debounced_cycle(world: World) -> None:
    world.config(sync_debounce_ms=200)
    kernel = await world.start()
    with trio.fail_after(10):
        while (await call(kernel, "sync.status"))["last_sync_at"] is None:
            await trio.sleep(0.02)
    before = remote_tip(world.repo.remote)
    await emit_notes(kernel, 1)
    assert (await call(kernel, "sync.status"))["sync_state"] == "pending"
    with trio.fail_after(10):
        while remote_tip(world.repo.remote) == before:
            await trio.sleep(0.02)
    # a steady stream of writes still syncs within 5 x the debounce of the first one
    pushed = remote_tip(world.repo.remote)
    t0 = trio.current_time()
    changed_at = None
    n = 10
    while trio.current_time() - t0 < 2.5:
        await emit_notes(kernel, 1, start=n)
        n += 1
        if changed_at is None and remote_tip(world.repo.remote) != pushed:
            changed_at = trio.current_time() - t0
        await trio.sleep(0.1)
    assert changed_at is not None and changed_at < 2.0, changed_at


async def test_a_trigger_during_a_cycle_queues_exactly_one_more(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    svc = service_for(kernel)
    with trio.fail_after(10):
        while svc.cycles < 1:
            await trio.sleep(0.01)
    before = svc.cycles
    await emit_notes(kernel, 50)
    first = svc.trigger()
    with trio.fail_after(10):
        while not svc.syncing:
            await trio.sleep(0)
    later = [svc.trigger() for _ in range(5)]
    with trio.fail_after(20):
        await first.done.wait()
        for waiter in later:
            await waiter.done.wait()
    assert first.report is not None and first.report.error is None
    assert len({id(w.report) for w in later}) == 1 and later[0].report is not first.report
    await trio.sleep(0.3)
    assert svc.cycles == before + 2


async def test_sync_lock_held_skips_the_cycle(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    fd = os.open(world.repo.paths.sync_lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await emit_notes(kernel, 1)
        result = await call(kernel, "sync.force", {"wait": True})
        assert result["sync_state"] == "pending"
        assert "sync.lock" in result["cycle"]["error"] and result["cycle"]["fetched"] is False
    finally:
        os.close(fd)
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["sync_state"] == "synced" and result["cycle"]["pushed"] is True


async def test_remote_events_are_merged_projected_and_observed(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    other = world.other_clone()
    (other.sync_dir / "messages").mkdir(exist_ok=True)
    (other.sync_dir / "messages" / "peer.jsonl").write_bytes(b"".join(note_line(i) for i in range(20)))
    tip = engine.fetch(other.root, "origin").tip
    engine.merge_worktree(other.root, other.sync_dir, tip)
    engine.commit_worktree(other.root, other.sync_dir, tip)
    assert engine.push(other.root, "origin").status == "ok"
    mine = await emit_notes(kernel, 2)

    result = await call(kernel, "sync.force", {"wait": True})
    cycle = result["cycle"]
    assert cycle["new_events"] == 20 and cycle["files_merged"] == 1 and cycle["pushed"] is True
    synced = [e for e in world.notes.seen if e.source == "sync"]
    assert sorted(e.obj["n"] for e in synced) == list(range(20))
    assert all(projected(kernel, f"evt_peer{i:022d}") for i in range(20))
    # the other clone gets ours: both sides hold the same files
    tip = engine.fetch(other.root, "origin").tip
    engine.merge_worktree(other.root, other.sync_dir, tip)
    engine.commit_worktree(other.root, other.sync_dir, tip)
    ours = (other.sync_dir / "messages" / "a.jsonl").read_bytes()
    assert [json.loads(line)["event_id"] for line in ours.splitlines()] == [e.event_id for e in mine]
    for rel in ("messages/a.jsonl", "messages/peer.jsonl", "events.jsonl"):
        assert (other.sync_dir / rel).read_bytes() == (world.repo.paths.sync_dir / rel).read_bytes()


async def test_unreachable_remote_commits_locally_and_recovers(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    remote = world.repo.remote
    away = remote.with_name(remote.name + ".away")
    remote.rename(away)
    try:
        stored = await emit_notes(kernel, 2)
        result = await call(kernel, "sync.force", {"wait": True})
        cycle = result["cycle"]
        assert result["sync_state"] == "error" and cycle["error"] and cycle["fetched"] is False
        assert cycle["commit"] is not None and cycle["pushed"] is False  # committed locally
        status = await call(kernel, "sync.status")
        assert status["sync_state"] == "error" and "not found" in status["last_error"]
        assert status["head"] == cycle["commit"] and status["pending_events"] == 2
    finally:
        away.rename(remote)
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["sync_state"] == "synced" and result["cycle"]["pushed"] is True
    assert (await call(kernel, "sync.status"))["last_error"] is None
    pushed = git(remote, "show", "a-sync:messages/a.jsonl")
    assert {json.loads(line)["event_id"] for line in pushed.splitlines()} == {e.event_id for e in stored}


async def test_rejected_push_retries_three_times_then_errors(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    # fetch from a frozen mirror while pushes go to the real remote, which then moves on:
    # every push is a non-fast-forward
    mirror = world.tmp / "mirror.git"
    git(world.tmp, "clone", "-q", "--bare", str(world.repo.remote), str(mirror))
    other = world.other_clone()
    (other.sync_dir / "events.jsonl").write_bytes(note_line(7))
    tip = engine.fetch(other.root, "origin").tip
    engine.commit_worktree(other.root, other.sync_dir, tip)
    assert engine.push(other.root, "origin").status == "ok"
    git(world.repo.root, "remote", "set-url", "origin", str(mirror))
    git(world.repo.root, "remote", "set-url", "--push", "origin", str(world.repo.remote))
    await emit_notes(kernel, 1)
    result = await call(kernel, "sync.force", {"wait": True})
    cycle = result["cycle"]
    assert cycle["error"] == "push rejected after 3 retries" and cycle["attempts"] == 4
    assert result["sync_state"] == "error"
    git(world.repo.root, "remote", "set-url", "origin", str(world.repo.remote))
    git(world.repo.root, "config", "--unset", "remote.origin.pushurl")
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["cycle"]["pushed"] is True and result["cycle"]["new_events"] == 1
    assert projected(kernel, "evt_peer0000000000000000000007")


async def test_local_only_never_touches_the_remote(world: World) -> None:
    world.config(local_only=True)
    before = remote_refs(world.repo.remote)
    kernel = await world.start()
    await emit_notes(kernel, 3)
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["local_only"] is True and result["sync_state"] == "local-only"
    cycle = result["cycle"]
    assert cycle["fetched"] is False and cycle["pushed"] is False and cycle["commit"] is not None
    status = await call(kernel, "sync.status")
    assert status["sync_state"] == "local-only" and status["local_only_source"] == "config"
    await trio.sleep(0.3)  # the debounced cycle too
    assert remote_refs(world.repo.remote) == before
    assert pygit2.Repository(str(world.repo.root)).references.get("refs/remotes/origin/a-sync") is None


@pytest.mark.parametrize(
    ("config_value", "environ", "flags", "expected"),
    [
        (False, {"THRUM_LOCAL": "1"}, None, (True, "env")),
        (True, {"THRUM_LOCAL": "off"}, None, (False, "env")),
        (False, {"THRUM_LOCAL": "1"}, {"daemon.local_only": False}, (False, "flag")),
        (None, {}, None, (True, "default")),
    ],
)
async def test_local_only_precedence(
    world: World,
    config_value: bool | None,
    environ: dict[str, str],
    flags: dict[str, Any] | None,
    expected: tuple[bool, str],
) -> None:
    block: dict[str, Any] = {"sync_interval": 0}
    if config_value is not None:
        block["local_only"] = config_value
    world.repo.write_config({"daemon": block})
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")} | environ
    kernel = await world.start(environ=env, flags=flags)
    status = await call(kernel, "sync.status")
    assert (status["local_only"], status["local_only_source"]) == expected


async def test_start_repairs_a_broken_worktree_and_projects_recovered_lines(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    kept = await emit_notes(kernel, 2)
    await world.runner.stop(kernel)
    sync_dir = world.repo.paths.sync_dir
    # unregistered copy holding uncommitted lines: not a worktree any more
    (sync_dir / ".git").unlink()
    with (sync_dir / "messages" / "peer.jsonl").open("ab") as fh:
        fh.write(note_line(1) + note_line(2))

    kernel = await world.start()
    broken = list(sync_dir.parent.glob("a-sync.broken-*"))
    assert len(broken) == 1 and (broken[0] / "messages" / "peer.jsonl").is_file()
    assert engine.check_worktree(world.repo.root, sync_dir) is None
    assert all(projected(kernel, f"evt_peer{i:022d}") for i in (1, 2))
    assert all(projected(kernel, e.event_id) for e in kept)
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["cycle"]["error"] is None and result["sync_state"] == "synced"
    assert remote_tip(world.repo.remote) == result["cycle"]["commit"] or result["cycle"]["commit"] is None
    files = git(world.repo.remote, "ls-tree", "-r", "--name-only", "a-sync").split()
    assert "messages/peer.jsonl" in files and "messages/a.jsonl" in files


async def test_start_recovers_from_stale_git_locks(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    kernel = await world.start()
    await call(kernel, "sync.force", {"wait": True})
    await world.runner.stop(kernel)
    gitdir = Path(git(world.repo.paths.sync_dir, "rev-parse", "--absolute-git-dir").strip())
    (gitdir / "index.lock").write_text("")
    (world.repo.paths.git_common_dir / "refs" / "heads" / "a-sync.lock").write_text("")
    kernel = await world.start()
    await emit_notes(kernel, 1)
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["cycle"]["error"] is None and result["cycle"]["pushed"] is True


async def test_unusable_worktree_stops_sync_but_not_the_daemon(world: World) -> None:
    world.config()
    # the user checked a-sync out elsewhere: the sync worktree cannot be added
    engine.ensure_branch(world.repo.root, None)
    git(world.repo.root, "worktree", "add", "-q", str(world.tmp / "elsewhere"), "a-sync")
    kernel = await world.start()
    status = await call(kernel, "sync.status")
    assert status["running"] is False and status["sync_state"] == "stopped" and status["last_error"]
    result = await call(kernel, "sync.force", {"wait": True})
    assert result["triggered"] is False and result["cycle"]["error"]
    assert (await call(kernel, "health"))["sync_state"] == "stopped"


def test_service_defaults_come_from_the_config(tmp_path: Path) -> None:
    repo = make_thrum_repo(tmp_path)
    repo.write_config({"daemon": {"sync_interval": 30, "sync_debounce_ms": 250, "sync_remote": "upstream"}})
    kernel = Kernel(repo.paths, make_test_pm(("sync.git",)), environ={})
    svc = GitSyncService(kernel)
    assert (svc.interval_s, svc.debounce_s, svc.remote_name) == (30, 0.25, "upstream")
    assert svc.local_only is True and svc.local_only_source == "default"


async def test_shutdown_during_a_hanging_fetch_is_prompt_and_commits_locally(world: World) -> None:
    world.config(sync_debounce_ms=60_000)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted: list[trio.socket.SocketType] = []

    async def accept_and_stay_silent() -> None:
        while True:
            conn, _ = await listener.accept()
            accepted.append(conn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_stay_silent)
        git(world.repo.root, "remote", "set-url", "origin", f"git://127.0.0.1:{port}/silent.git")
        kernel = await world.runner.start(world.pm(), world.repo)
        svc = service_for(kernel)
        with trio.fail_after(10):
            while not (svc.syncing and accepted):
                await trio.sleep(0.01)
        [stored] = await emit_notes(kernel, 1)
        started = trio.current_time()
        with trio.fail_after(15):
            await world.runner.stop(kernel)
        assert trio.current_time() - started < 8
        assert svc.state == "stopped" and not svc.running
        # the cancelled cycle still committed its local state (no network call)
        committed = git(world.repo.root, "show", "a-sync:messages/a.jsonl")
        assert stored.event_id in committed
        nursery.cancel_scope.cancel()
    listener.close()
    for conn in accepted:
        conn.close()
