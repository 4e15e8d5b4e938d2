"""Tests of the pygit2 sync engine (SPEC §11) against real repositories and bare remotes."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from thrum_core.canonical import canonical_line, parse_line
from thrum_core.ids import event_id_of
from thrum_core.timefmt import format_ts, parse_ts_ns, sort_key
from thrum_plugins.sync import _git_impl as g

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def git(cwd: Path, *args: str) -> str:
    """Run the git CLI in ``cwd`` (test setup and inspection only)."""
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout


def event(n: int, typ: str = "message.create", **extra: Any) -> dict[str, Any]:
    """An event with a distinct id and timestamp (``n`` seconds after T0)."""
    obj: dict[str, Any] = {
        "type": typ,
        "timestamp": format_ts(T0 + n * 1_000_000_000),
        "event_id": f"evt_{n:026d}",
        "v": 1,
        "origin_daemon": "d_test",
        "message_id": f"msg_{n}",
        "agent_id": "furiosa",
        "body": {"format": "markdown", "content": f"message {n}"},
    }
    obj.update(extra)
    return obj


def lines(*objs: dict[str, Any]) -> bytes:
    return b"".join(canonical_line(o) for o in objs)


def split(data: bytes | None) -> list[bytes]:
    assert data is not None
    return [ln for ln in data.split(b"\n") if ln]


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user repository with a commit, a staged change, an unstaged change and an untracked file."""
    repo = tmp_path / "user"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    (repo / "src.txt").write_text("v1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "src.txt").write_text("v2 staged\n")
    git(repo, "add", "src.txt")
    (repo / "README.md").write_text("hello, unstaged\n")
    (repo / "untracked.txt").write_text("u\n")
    return repo


@pytest.fixture
def remote_and_clones(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote and two clones of it (the remote has one commit on main)."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "f.txt").write_text("x\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "main")
    a = tmp_path / "a"
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(bare), str(a))
    git(tmp_path, "clone", "-q", str(bare), str(b))
    return bare, a, b


def snapshot(repo: Path) -> tuple[str, str, str, dict[str, bytes]]:
    """HEAD, index status and file contents of a user checkout."""
    head = git(repo, "rev-parse", "HEAD")
    status = git(repo, "status", "--porcelain=v1", "--untracked-files=all")
    index = git(repo, "ls-files", "--stage")
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return head, status, index, files


def sync_files(sync_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(sync_dir).as_posix(): p.read_bytes()
        for p in sorted(sync_dir.rglob("*"))
        if p.is_file() and p.name != ".git"
    }


def cycle(repo: Path, remote: str = "origin", retries: int = 3) -> dict[str, Any]:
    """One sync cycle as SPEC §11.3 steps 2-6 describe it (the daemon adds locking and projection)."""
    sync_dir = g.default_sync_dir(repo)
    attempts = 0
    while True:
        attempts += 1
        tip = g.fetch(repo, remote).tip
        report = g.merge_worktree(repo, sync_dir, tip)
        committed = g.commit_worktree(repo, sync_dir, tip)
        pushed = g.push(repo, remote)
        if pushed.status != "rejected" or attempts > retries:
            return {"report": report, "commit": committed, "push": pushed, "attempts": attempts}


def branch_tip(repo: Path, ref: str = g.SYNC_REF) -> pygit2.Oid:
    return pygit2.Repository(str(repo)).references[ref].target  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Branch


def test_ensure_branch_creates_orphan_without_touching_the_checkout(user_repo: Path) -> None:
    before = snapshot(user_repo)
    assert g.ensure_branch(user_repo) == "created"
    assert snapshot(user_repo) == before

    repo = pygit2.Repository(str(user_repo))
    commit = repo[branch_tip(user_repo)].peel(pygit2.Commit)
    assert commit.parents == []
    assert str(commit.tree_id) == g.EMPTY_TREE
    assert commit.message == "Initialize Thrum sync\n"
    assert (commit.author.name, commit.author.email) == ("Thrum", "thrum@local")
    assert (commit.committer.name, commit.committer.email) == ("Thrum", "thrum@local")
    assert repo.head.name == "refs/heads/main"

    # Idempotent: the same branch is kept.
    tip = branch_tip(user_repo)
    assert g.ensure_branch(user_repo) == "existing"
    assert branch_tip(user_repo) == tip


def test_ensure_branch_adopts_the_remote_branch(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, b = remote_and_clones
    g.ensure_worktree(a)
    assert g.push(a).status == "ok"
    git(b, "fetch", "-q", "origin")

    assert g.ensure_branch(b) == "remote"
    assert branch_tip(b) == branch_tip(a)
    assert git(b, "config", "branch.a-sync.remote").strip() == "origin"
    assert git(b, "config", "branch.a-sync.merge").strip() == "refs/heads/a-sync"


def test_ensure_branch_local_only_ignores_remote_refs(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, b = remote_and_clones
    g.ensure_worktree(a)
    assert g.push(a).status == "ok"
    git(b, "fetch", "-q", "origin")

    assert g.ensure_branch(b, remote=None) == "created"
    assert branch_tip(b) != branch_tip(a)


def test_linked_worktree_shares_branch_and_sync_dir(user_repo: Path, tmp_path: Path) -> None:
    git(user_repo, "commit", "-q", "-m", "staged work")
    linked = tmp_path / "feature"
    git(user_repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    before = snapshot(linked)

    assert g.common_dir(linked) == (user_repo / ".git").resolve()
    status = g.ensure_worktree(linked)
    assert status.state == "created"
    assert status.path == (user_repo / ".git" / "thrum-sync" / "a-sync").resolve()
    assert snapshot(linked) == before

    listing = git(user_repo, "worktree", "list", "--porcelain")
    assert f"worktree {status.path}\n" in listing
    assert "branch refs/heads/a-sync" in listing
    # The main checkout sees the same branch.
    assert g.ensure_branch(user_repo) == "existing"
    assert g.check_worktree(user_repo, status.path) is None


# ---------------------------------------------------------------------------
# Worktree


def test_ensure_worktree_creates_and_initializes(user_repo: Path) -> None:
    before = snapshot(user_repo)
    status = g.ensure_worktree(user_repo)
    sync_dir = status.path
    assert (status.state, status.initialized) == ("created", True)
    assert (sync_dir / ".git").is_file()
    assert (sync_dir / "events.jsonl").read_bytes() == b""
    assert snapshot(user_repo) == before

    repo = pygit2.Repository(str(user_repo))
    tip = repo[branch_tip(user_repo)].peel(pygit2.Commit)
    assert tip.message == "Initialize Thrum sync data\n"
    assert [e.name for e in tip.tree] == ["events.jsonl"]
    assert tip.parents[0].message == "Initialize Thrum sync\n"
    wt = pygit2.Repository(str(sync_dir))
    assert wt.head.name == g.SYNC_REF
    assert "thrum-a-sync" in repo.list_worktrees()

    # Healthy on the next start: nothing changes.
    again = g.ensure_worktree(user_repo)
    assert (again.state, again.initialized) == ("ok", False)
    assert branch_tip(user_repo) == tip.id


def test_repair_after_git_file_deleted(user_repo: Path) -> None:
    sync_dir = g.ensure_worktree(user_repo).path
    shard = sync_dir / "messages" / "furiosa.jsonl"
    shard.parent.mkdir()
    shard.write_bytes(lines(event(1)))
    (sync_dir / "events.jsonl").write_bytes(lines(event(2, "agent.register")))
    (sync_dir / "context").mkdir()
    (sync_dir / "context" / "furiosa.md").write_text("ctx\n")
    g.commit_worktree(user_repo, sync_dir, None)
    (sync_dir / "events.jsonl").write_bytes(lines(event(2, "agent.register"), event(3, "agent.register")))
    (sync_dir / ".git").unlink()
    assert g.check_worktree(user_repo, sync_dir) == "no .git file"

    status = g.ensure_worktree(user_repo, now_ns=T0)
    assert status.state == "repaired"
    assert status.reason == "no .git file"
    assert status.moved_to == sync_dir.with_name("a-sync.broken-2026-01-01T00:00:00Z")
    # Nothing was deleted: the moved copy keeps every file, uncommitted lines included.
    moved = status.moved_to
    assert (moved / "events.jsonl").read_bytes() == lines(
        event(2, "agent.register"), event(3, "agent.register")
    )
    assert (moved / "messages" / "furiosa.jsonl").read_bytes() == lines(event(1))
    assert (moved / "context" / "furiosa.md").read_text() == "ctx\n"
    assert status.recovered_files == [moved / "events.jsonl", moved / "messages" / "furiosa.jsonl"]
    # The new worktree is healthy and holds the committed state of the branch.
    assert g.check_worktree(user_repo, sync_dir) is None
    assert (sync_dir / "messages" / "furiosa.jsonl").read_bytes() == lines(event(1))
    assert (sync_dir / "events.jsonl").read_bytes() == lines(event(2, "agent.register"))
    assert f"worktree {sync_dir}\n" in git(user_repo, "worktree", "list", "--porcelain")

    # A second repair in the same second does not overwrite the first copy.
    (sync_dir / ".git").unlink()
    second = g.ensure_worktree(user_repo, now_ns=T0)
    assert second.moved_to is not None and second.moved_to != moved
    assert moved.is_dir() and second.moved_to.is_dir()


def test_repair_of_directory_on_another_branch(user_repo: Path) -> None:
    sync_dir = g.ensure_worktree(user_repo).path
    wt = pygit2.Repository(str(sync_dir))
    head_file = Path(wt.path) / "HEAD"
    head_file.write_text(str(branch_tip(user_repo)) + "\n")  # detached
    assert g.check_worktree(user_repo, sync_dir) == f"HEAD is not {g.SYNC_REF}"
    status = g.ensure_worktree(user_repo)
    assert status.state == "repaired"
    assert g.check_worktree(user_repo, sync_dir) is None


def test_repair_of_unregistered_directory(user_repo: Path) -> None:
    sync_dir = g.default_sync_dir(user_repo)
    sync_dir.mkdir(parents=True)
    (sync_dir / "events.jsonl").write_bytes(lines(event(5)))
    status = g.ensure_worktree(user_repo)
    assert status.state == "repaired"
    assert status.reason == "not a registered worktree of this repository"
    assert status.moved_to is not None
    assert status.recovered_files == [status.moved_to / "events.jsonl"]
    assert g.check_worktree(user_repo, sync_dir) is None


# ---------------------------------------------------------------------------
# merge_jsonl


def test_merge_disjoint_is_sorted_union() -> None:
    res = g.merge_jsonl(lines(event(1), event(3)), lines(event(2), event(4)), None)
    assert res.data == lines(event(1), event(2), event(3), event(4))
    assert (res.from_remote, res.conflicts, res.kept_local) == (2, 0, False)


def test_merge_overlapping() -> None:
    res = g.merge_jsonl(lines(event(1), event(2), event(3)), lines(event(2), event(3), event(4)), None)
    assert res.data == lines(event(1), event(2), event(3), event(4))
    assert res.from_remote == 1


def test_merge_identical_and_subset_keep_local_bytes() -> None:
    local = lines(event(3), event(1), event(2))  # not in sort order: kept as is
    assert g.merge_jsonl(local, local, None).data == local
    res = g.merge_jsonl(local, lines(event(1), event(2)), None)
    assert res.data == local
    assert res.kept_local and res.from_remote == 0


def test_merge_conflicting_bytes_takes_smallest() -> None:
    a = event(1)
    b = dict(event(1), body={"format": "markdown", "content": "another text"})
    la, lb = canonical_line(a), canonical_line(b)
    small, big = sorted([la, lb])
    res = g.merge_jsonl(lines(event(2)) + la, lb + lines(event(3)), None)
    assert res.data == small + lines(event(2), event(3))
    assert res.conflicts == 1
    assert big not in res.data
    # Both orders of the inputs give the same bytes.
    swapped = g.merge_jsonl(lb + lines(event(3)), lines(event(2)) + la, None)
    assert swapped.data == res.data


def test_merge_conflict_inside_one_file_takes_smallest() -> None:
    a = canonical_line(event(1))
    b = canonical_line(dict(event(1), body={"format": "plain", "content": "zzz"}))
    small = min(a, b)
    for local in (a + b, b + a):
        res = g.merge_jsonl(local, lines(event(2)), None)
        assert res.data == small + lines(event(2))
        assert res.conflicts == 1
        res2 = g.merge_jsonl(lines(event(2)), local, None)
        assert res2.data == res.data


def test_merge_conflict_is_ordered_by_the_winning_line() -> None:
    late = event(1, timestamp=format_ts(T0 + 10 * 1_000_000_000))
    res = g.merge_jsonl(lines(event(1)), lines(late, event(5)), None)
    winner = min(canonical_line(event(1)), canonical_line(late))
    assert split(res.data)[0 if winner == canonical_line(event(1)) else 1] == winner.rstrip(b"\n")
    assert len(split(res.data)) == 2


def test_merge_deletion_on_one_side() -> None:
    base = lines(event(1))
    # Remote deleted the file; local unchanged since the base → deleted.
    assert g.merge_jsonl(base, None, base).data is None
    # Local deleted it; remote unchanged → stays deleted.
    assert g.merge_jsonl(None, base, base).data is None
    # Deleted on one side but changed on the other → the changed side wins.
    changed = lines(event(1), event(2))
    assert g.merge_jsonl(changed, None, base).data == changed
    res = g.merge_jsonl(None, changed, base)
    assert res.data == changed and res.from_remote == 2
    # New on one side (no base) → taken.
    assert g.merge_jsonl(None, base, None).data == base
    assert g.merge_jsonl(base, None, None).data == base


def test_merge_takes_the_only_changed_side() -> None:
    base = lines(event(1), event(3))
    reordered = lines(event(1), event(3), event(2))  # appended behind a later event
    # Local unchanged since the base: the remote's bytes, order included.
    res = g.merge_jsonl(base, reordered, base)
    assert res.data == reordered and res.from_remote == 1
    # Remote unchanged since the base: the local bytes.
    assert g.merge_jsonl(reordered, base, base).data == reordered
    # Both changed: the rules of the SPEC (here a sorted union).
    both = g.merge_jsonl(lines(event(1), event(3), event(4)), reordered, base)
    assert both.data == lines(event(1), event(2), event(3), event(4))


def test_merge_filters_tombstoned_lines() -> None:
    def dead(obj: dict[str, Any]) -> bool:
        return obj.get("agent_id") == "nux"

    local = lines(event(1), event(2, agent_id="nux"))
    remote = lines(event(3, agent_id="nux"), event(4))
    res = g.merge_jsonl(local, remote, None, is_tombstoned=dead)
    assert res.data == lines(event(1), event(4))
    assert res.tombstoned == 2
    # Kept-local output is filtered too, and a file left empty is removed.
    only_dead = lines(event(2, agent_id="nux"))
    gone = g.merge_jsonl(only_dead, only_dead, None, is_tombstoned=dead)
    assert gone.data is None and gone.tombstoned == 1
    # An empty file stays an empty file.
    assert g.merge_jsonl(b"", b"", None, is_tombstoned=dead).data == b""


def test_merge_collects_remote_tombstones() -> None:
    purge = event(9, "purge.executed", cutoff=format_ts(T0))
    res = g.merge_jsonl(lines(event(1)), lines(event(1), purge), None)
    assert res.remote_tombstones == [purge]
    # Already-local tombstones are not "from the remote".
    res2 = g.merge_jsonl(lines(purge, event(1)), lines(purge, event(2)), None)
    assert res2.remote_tombstones == []
    # A tombstone spelled with an escape is still recognised.
    escaped = canonical_line(purge).replace(b"purge.executed", b"purge\\u002eexecuted")
    res3 = g.merge_jsonl(lines(event(1)), escaped, None)
    assert res3.remote_tombstones == [purge]


def test_merge_keys_lines_without_event_id() -> None:
    with_id = event(1)
    without = {k: v for k, v in with_id.items() if k != "event_id"}
    computed = event_id_of(without)
    assert computed.startswith("evt_") and not computed.startswith("evt_h")
    # The same message.create with and without its computed id is one event.
    same = dict(without, event_id=computed)
    res = g.merge_jsonl(canonical_line(without), canonical_line(same), None)
    assert len(split(res.data)) == 1 and res.conflicts == 1
    # Other types without an id are keyed by a content hash: spacing does not matter.
    other = {"type": "lease.acquire", "timestamp": format_ts(T0), "x": 1}
    spaced = b'{"type": "lease.acquire", "timestamp": "' + format_ts(T0).encode() + b'", "x": 1}\n'
    res2 = g.merge_jsonl(canonical_line(other), spaced, None)
    assert len(split(res2.data)) == 1
    assert res2.data == min(canonical_line(other), spaced)
    different = dict(other, x=2)
    res3 = g.merge_jsonl(canonical_line(other), canonical_line(different), None)
    assert len(split(res3.data)) == 2


def test_merge_keeps_non_object_lines() -> None:
    junk = b"this is not json"
    arr = b"[1,2,3]"
    torn_ts = b'{"type":"message.create","timestamp":"yesterday","event_id":"evt_x"}'
    local = lines(event(2)) + junk + b"\n"
    remote = arr + b"\n" + junk + b"\n" + torn_ts + b"\n" + lines(event(1))
    res = g.merge_jsonl(local, remote, None)
    out = split(res.data)
    # Unsortable lines come first, ordered by their bytes; then events by instant.
    assert out == [*sorted([arr, junk, torn_ts]), *split(lines(event(1), event(2)))]
    assert res.from_remote == 3


def test_merge_is_deterministic_in_both_orders() -> None:
    shared = [event(i) for i in range(0, 40, 3)]
    only_a = [event(i) for i in range(1, 40, 3)]
    only_b = [event(i) for i in range(2, 40, 3)]
    clash_a = dict(event(100), body={"format": "plain", "content": "a"})
    clash_b = dict(event(100), body={"format": "plain", "content": "b"})
    a = lines(*reversed(shared), *only_a, clash_a) + b"garbage\n"
    b = lines(*only_b, clash_b, *shared) + b"\n\n"
    ab = g.merge_jsonl(a, b, None)
    ba = g.merge_jsonl(b, a, None)
    assert ab.data == ba.data
    assert ab.conflicts == ba.conflicts == 1
    assert len(split(ab.data)) == len(shared) + len(only_a) + len(only_b) + 2


def test_merge_keeps_crlf_lines_verbatim() -> None:
    crlf = canonical_line(event(7)).rstrip(b"\n") + b"\r\n"
    res = g.merge_jsonl(lines(event(1)), crlf, None)
    assert res.data == lines(event(1)) + crlf


# ---------------------------------------------------------------------------
# Two clones through a bare remote


def test_two_clones_diverge_and_converge(remote_and_clones: tuple[Path, Path, Path]) -> None:
    bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    first = cycle(a)
    assert first["push"].status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path
    assert g.ensure_branch(b) == "existing"

    # Each clone appends different events to the same and to its own shard.
    (sa / "events.jsonl").write_bytes(lines(event(1, "agent.register"), event(3, "agent.register")))
    (sb / "events.jsonl").write_bytes(lines(event(2, "agent.register")))
    (sa / "messages").mkdir()
    (sa / "messages" / "a.jsonl").write_bytes(lines(event(10)))
    (sb / "messages").mkdir()
    (sb / "messages" / "b.jsonl").write_bytes(lines(event(11), event(12)))

    ra = cycle(a)
    assert ra["push"].status == "ok" and ra["attempts"] == 1
    tip_after_a = branch_tip(bare)
    rb = cycle(b)
    assert rb["push"].status == "ok" and rb["attempts"] == 1
    assert rb["report"].changed == ["events.jsonl", "messages/a.jsonl"]
    assert rb["report"].new_lines == 3
    tip_after_b = branch_tip(bare)
    # B committed on top of A's push: the remote history fast-forwarded.
    bare_repo = pygit2.Repository(str(bare))
    assert bare_repo.descendant_of(tip_after_b, tip_after_a)
    assert bare_repo[tip_after_b].peel(pygit2.Commit).parent_ids == [tip_after_a]

    ra2 = cycle(a)
    assert ra2["push"].status == "ok"
    assert ra2["commit"].commit is None and ra2["commit"].moved  # moved onto B's commit
    assert sync_files(sa) == sync_files(sb)
    assert (sa / "events.jsonl").read_bytes() == lines(
        event(1, "agent.register"), event(2, "agent.register"), event(3, "agent.register")
    )
    assert branch_tip(a) == branch_tip(b) == branch_tip(bare)
    # A quiet cycle changes nothing.
    quiet = cycle(b)
    assert quiet["report"].up_to_date and quiet["commit"].commit is None
    assert branch_tip(bare) == tip_after_b


def test_clones_converge_on_out_of_order_appends(remote_and_clones: tuple[Path, Path, Path]) -> None:
    bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    (sa / "events.jsonl").write_bytes(lines(event(1), event(3)))
    assert cycle(a)["push"].status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path
    # B's clock is behind: its new event sorts before one it already has.
    (sb / "events.jsonl").write_bytes(lines(event(1), event(3), event(2)))
    assert cycle(b)["push"].status == "ok"
    for _ in range(2):
        cycle(a)
        cycle(b)
    tip = branch_tip(bare)
    assert sync_files(sa) == sync_files(sb)
    # Settled: further cycles on both clones make no commits.
    for repo in (a, b, a, b):
        result = cycle(repo)
        assert result["commit"].commit is None, result
    assert branch_tip(bare) == tip == branch_tip(a) == branch_tip(b)


def test_push_rejected_then_retry_succeeds(remote_and_clones: tuple[Path, Path, Path]) -> None:
    bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    assert cycle(a)["push"].status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path

    (sa / "events.jsonl").write_bytes(lines(event(1)))
    (sb / "events.jsonl").write_bytes(lines(event(2)))
    assert g.commit_worktree(a, sa, None).commit is not None
    assert g.commit_worktree(b, sb, None).commit is not None
    assert g.push(a).status == "ok"
    rejected = g.push(b)
    assert rejected.status == "rejected", rejected
    local_commit = branch_tip(b)

    # Back to fetch → merge → commit → push.
    tip = g.fetch(b).tip
    assert tip == branch_tip(bare)
    report = g.merge_worktree(b, sb, tip)
    assert report.changed == ["events.jsonl"] and report.base is not None
    committed = g.commit_worktree(b, sb, tip)
    assert committed.parent == tip and committed.commit is not None
    assert g.push(b).status == "ok"
    assert branch_tip(bare) == committed.commit
    assert (sb / "events.jsonl").read_bytes() == lines(event(1), event(2))
    # B's earlier commit is not in the pushed history, but its content is.
    assert not pygit2.Repository(str(b)).descendant_of(committed.commit, local_commit)


def test_unrelated_histories_merge(remote_and_clones: tuple[Path, Path, Path]) -> None:
    bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    # B initialised on its own before any fetch.  (Two orphan roots made in the
    # same second are the same commit, so give B's root a different author.)
    rb = pygit2.Repository(str(b))
    sig = pygit2.Signature("Someone", "else@example.com")
    root = rb.create_commit(None, sig, sig, "Initialize Thrum sync\n", rb.TreeBuilder().write(), [])
    rb.references.create(g.SYNC_REF, root)
    sb = g.ensure_worktree(b).path
    (sa / "events.jsonl").write_bytes(lines(event(1)))
    (sb / "events.jsonl").write_bytes(lines(event(2)))
    assert cycle(a)["push"].status == "ok"
    result = cycle(b)
    assert result["push"].status == "ok"
    assert result["report"].base is None
    assert (sb / "events.jsonl").read_bytes() == lines(event(1), event(2))
    assert cycle(a)["push"].status == "ok"
    assert sync_files(sa) == sync_files(sb)
    assert branch_tip(a) == branch_tip(bare)


def test_unreachable_remote_keeps_local_commits(
    remote_and_clones: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _bare, a, _b = remote_and_clones
    sa = g.ensure_worktree(a).path
    git(a, "remote", "add", "gone", str(tmp_path / "does-not-exist.git"))
    (sa / "events.jsonl").write_bytes(lines(event(1)))
    with pytest.raises(g.SyncGitError, match="not found"):
        g.fetch(a, "gone")
    committed = g.commit_worktree(a, sa, None)
    assert committed.commit is not None
    result = g.push(a, "gone")
    assert result.status == "error" and result.message
    assert branch_tip(a) == committed.commit
    assert g.push(a, "no-such-remote").status == "error"


def test_fetch_without_remote_branch(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, _b = remote_and_clones
    result = g.fetch(a)
    assert result.tip is None and result.via == "pygit2"


# ---------------------------------------------------------------------------
# merge_worktree: other files and tombstones


def _commit_all(repo: Path, sync_dir: Path) -> pygit2.Oid:
    res = g.commit_worktree(repo, sync_dir, None)
    assert res.commit is not None
    return res.commit


def test_other_files_follow_the_changed_side(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    (sa / "context").mkdir()
    for name in ("only_remote", "both", "both_local_newer", "deleted_remote", "only_local"):
        (sa / "context" / f"{name}.md").write_text("base\n")
    _commit_all(a, sa)
    assert g.push(a).status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path

    (sa / "context" / "only_remote.md").write_text("remote edit\n")
    (sa / "context" / "both.md").write_text("remote both\n")
    (sa / "context" / "both_local_newer.md").write_text("remote older\n")
    (sa / "context" / "deleted_remote.md").unlink()
    (sa / "state.bin").write_bytes(b"\x00\x01")
    _commit_all(a, sa)
    assert g.push(a).status == "ok"

    (sb / "context" / "both.md").write_text("local both\n")
    old = time.time() - 3600
    os.utime(sb / "context" / "both.md", (old, old))
    (sb / "context" / "both_local_newer.md").write_text("local newer\n")
    future = time.time() + 3600
    os.utime(sb / "context" / "both_local_newer.md", (future, future))
    (sb / "context" / "only_local.md").write_text("local edit\n")

    tip = g.fetch(b).tip
    report = g.merge_worktree(b, sb, tip)
    ctx = sb / "context"
    assert (ctx / "only_remote.md").read_text() == "remote edit\n"
    assert (ctx / "both.md").read_text() == "remote both\n"
    assert (ctx / "both_local_newer.md").read_text() == "local newer\n"
    assert not (ctx / "deleted_remote.md").exists()
    assert (ctx / "only_local.md").read_text() == "local edit\n"
    assert (sb / "state.bin").read_bytes() == b"\x00\x01"
    assert report.deleted == ["context/deleted_remote.md"]
    assert sorted(report.changed) == ["context/both.md", "context/only_remote.md", "state.bin"]


def test_remote_tombstone_filters_every_file(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    (sa / "messages").mkdir()
    (sa / "messages" / "nux.jsonl").write_bytes(lines(event(1, agent_id="nux")))
    _commit_all(a, sa)
    assert g.push(a).status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path

    # A deletes agent nux (its writer rewrote the files); B wrote more as nux meanwhile.
    cleanup = event(50, "agent.cleanup", agent_id="nux")
    (sa / "events.jsonl").write_bytes(lines(cleanup))
    (sa / "messages" / "nux.jsonl").unlink()
    _commit_all(a, sa)
    assert g.push(a).status == "ok"
    (sb / "messages" / "b.jsonl").write_bytes(lines(event(2, agent_id="nux"), event(3, agent_id="max")))

    seen: list[list[dict[str, Any]]] = []

    def hook(new: list[dict[str, Any]]) -> g.TombstonePredicate | None:
        seen.append(new)
        dead = {t["agent_id"] for t in new if t["type"] == "agent.cleanup"}
        return lambda obj: obj.get("agent_id") in dead and obj.get("type") != "agent.cleanup"

    report = g.merge_worktree(b, sb, g.fetch(b).tip, tombstones=hook)
    assert seen == [[cleanup]]
    assert report.remote_tombstones == 1
    assert (sb / "events.jsonl").read_bytes() == lines(cleanup)
    assert not (sb / "messages" / "nux.jsonl").exists()
    assert (sb / "messages" / "b.jsonl").read_bytes() == lines(event(3, agent_id="max"))
    assert report.tombstoned == 1
    assert "messages/nux.jsonl" in report.deleted


# ---------------------------------------------------------------------------
# commit_worktree


def test_commit_only_when_the_tree_changes(user_repo: Path) -> None:
    sync_dir = g.ensure_worktree(user_repo).path
    tip = branch_tip(user_repo)
    nothing = g.commit_worktree(user_repo, sync_dir, None)
    assert (nothing.commit, nothing.head, nothing.moved) == (None, tip, False)

    (sync_dir / "events.jsonl").write_bytes(lines(event(1)))
    (sync_dir / ".events.jsonl.abc.tmp").write_bytes(b"crash leftover")
    res = g.commit_worktree(user_repo, sync_dir, None, message=g.sync_message(T0))
    assert res.commit is not None and res.parent == tip
    repo = pygit2.Repository(str(user_repo))
    commit = repo[res.commit].peel(pygit2.Commit)
    assert commit.message == "sync: 2026-01-01T00:00:00Z\n"
    assert [e.name for e in commit.tree] == ["events.jsonl"]
    assert pygit2.Repository(str(sync_dir)).head.target == res.commit
    # The worktree index matches the commit: git sees a clean tree.
    assert git(sync_dir, "status", "--porcelain", "--untracked-files=no") == ""

    (sync_dir / "events.jsonl").unlink()
    gone = g.commit_worktree(user_repo, sync_dir, None)
    assert gone.commit is not None
    assert len(repo[gone.commit].peel(pygit2.Commit).tree) == 0


def test_commit_moves_to_remote_when_trees_match(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, b = remote_and_clones
    sa = g.ensure_worktree(a).path
    assert g.push(a).status == "ok"
    git(b, "fetch", "-q", "origin")
    sb = g.ensure_worktree(b).path
    (sa / "events.jsonl").write_bytes(lines(event(1)))
    _commit_all(a, sa)
    assert g.push(a).status == "ok"
    tip = g.fetch(b).tip
    assert tip is not None
    g.merge_worktree(b, sb, tip)
    res = g.commit_worktree(b, sb, tip)
    assert (res.commit, res.head, res.parent, res.moved) == (None, tip, tip, True)
    assert branch_tip(b) == tip


# ---------------------------------------------------------------------------
# Network transport: callbacks and the git CLI fallback


def test_callbacks_refuse_unverified_hosts_and_cap_attempts(tmp_path: Path) -> None:
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    (ssh_dir / "id_ed25519").write_text("not really a key\n")
    (ssh_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA test\n")
    (ssh_dir / "id_rsa").write_text("not really a key\n")
    cb = g.ThrumRemoteCallbacks(time.monotonic() + 60, ssh_dir=ssh_dir, max_attempts=4, environ={})

    assert cb.certificate_check(None, False, b"evil.example") is False
    assert cb.untrusted_host == "evil.example"
    assert cb.certificate_check(None, True, b"github.com") is True

    url = "ssh://git@example.com/x.git"
    user = cb.credentials(url, None, pygit2.enums.CredentialType.USERNAME)
    assert isinstance(user, pygit2.Username)
    first = cb.credentials(url, "git", pygit2.enums.CredentialType.SSH_KEY)
    second = cb.credentials(url, "git", pygit2.enums.CredentialType.SSH_KEY)
    assert isinstance(first, pygit2.Keypair) and isinstance(second, pygit2.Keypair)
    assert str(first.credential_tuple[2]).endswith("id_ed25519")
    assert str(second.credential_tuple[2]).endswith("id_rsa")
    with pytest.raises(g._CredentialsExhausted):
        cb.credentials(url, "git", pygit2.enums.CredentialType.SSH_KEY)  # no key left
    with pytest.raises(g._CredentialsExhausted):
        cb.credentials(url, "git", pygit2.enums.CredentialType.SSH_KEY)  # cap reached
    with pytest.raises(g._CredentialsExhausted):
        g.ThrumRemoteCallbacks(time.monotonic() + 60, environ={}).credentials(
            "https://example.com/x.git", None, pygit2.enums.CredentialType.USERPASS_PLAINTEXT
        )
    late = g.ThrumRemoteCallbacks(time.monotonic() - 1, environ={})
    with pytest.raises(g._DeadlineExceeded):
        late.transfer_progress(None)


def test_agent_is_tried_first(tmp_path: Path) -> None:
    cb = g.ThrumRemoteCallbacks(time.monotonic() + 60, ssh_dir=tmp_path, environ={"SSH_AUTH_SOCK": "/x"})
    cred = cb.credentials("ssh://h/x", "git", pygit2.enums.CredentialType.SSH_KEY)
    assert isinstance(cred, pygit2.KeypairFromAgent)


def _fake_ssh(tmp_path: Path, body: str) -> Path:
    """An ``ssh`` stand-in running the remote command (git's last argument to ssh) locally."""
    # Named "ssh" so that git passes OpenSSH-style options (the port) to it.
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "ssh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_cli_fallback_for_network_remote(
    remote_and_clones: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, a, b = remote_and_clones
    log = tmp_path / "ssh.log"
    script = _fake_ssh(tmp_path, f'echo "$@" >> {log}\nfor last; do :; done\nexec sh -c "$last"\n')
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    # Port 1 refuses connections: libgit2's own SSH fails fast, the CLI goes through fake-ssh.
    url = f"ssh://git@127.0.0.1:1{bare}"
    git(a, "remote", "add", "net", url)
    git(b, "remote", "add", "net", url)
    # The remote has no a-sync yet: a stale tracking ref is dropped.
    git(b, "update-ref", "refs/remotes/net/a-sync", "HEAD")
    missing = g.fetch(b, "net", timeout_s=30)
    assert (missing.tip, missing.via) == (None, "cli")
    assert pygit2.Repository(str(b)).references.get("refs/remotes/net/a-sync") is None
    sa = g.ensure_worktree(a, remote="net").path
    (sa / "events.jsonl").write_bytes(lines(event(1)))
    _commit_all(a, sa)

    pushed = g.push(a, "net", timeout_s=30)
    assert pushed.status == "ok", pushed
    assert pushed.via == "cli" and pushed.fallback_reason
    assert g.TRANSPORT_STATUS.fallback_used and g.TRANSPORT_STATUS.last_via == "cli"
    assert branch_tip(bare) == branch_tip(a)
    assert "BatchMode=yes" in log.read_text()

    fetched = g.fetch(b, "net", timeout_s=30)
    assert fetched.via == "cli" and fetched.tip == branch_tip(a)
    assert branch_tip(b, "refs/remotes/net/a-sync") == branch_tip(a)

    # A rejected push through the CLI is reported as such.
    sb = g.ensure_worktree(b, remote=None).path
    (sb / "events.jsonl").write_bytes(lines(event(2)))
    _commit_all(b, sb)
    assert g.push(b, "net", timeout_s=30).status == "rejected"


def test_cli_fallback_is_bounded_by_the_timeout(
    remote_and_clones: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, a, _b = remote_and_clones
    script = _fake_ssh(tmp_path, "sleep 60\n")
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    git(a, "remote", "add", "net", f"ssh://git@127.0.0.1:1{bare}")
    g.ensure_worktree(a, remote=None)
    start = time.monotonic()
    with pytest.raises(g.SyncGitError, match="timed out"):
        g.fetch(a, "net", timeout_s=2)
    result = g.push(a, "net", timeout_s=2)
    assert result.status == "error" and "timed out" in (result.message or "")
    assert time.monotonic() - start < 15


def test_is_local_url() -> None:
    assert g._is_local_url("/srv/git/x.git")
    assert g._is_local_url("file:///srv/git/x.git")
    assert g._is_local_url("../x.git")
    assert not g._is_local_url("git@github.com:acme/x.git")
    assert not g._is_local_url("ssh://git@github.com/acme/x.git")
    assert not g._is_local_url("https://github.com/acme/x.git")


def test_jsonl_paths() -> None:
    assert g.is_jsonl_path("events.jsonl")
    assert g.is_jsonl_path("messages/furiosa.jsonl")
    assert g.is_jsonl_path("messages.jsonl")
    assert not g.is_jsonl_path("messages-v2/x.jsonl")
    assert not g.is_jsonl_path("messages/sub/x.jsonl")
    assert not g.is_jsonl_path("context/a.md")


# ---------------------------------------------------------------------------
# The merge's fast paths agree with the shared readers


def test_fast_timestamp_agrees_with_parse_ts_ns() -> None:
    rng = random.Random(5)
    samples = [
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:00.123456Z",
        "2024-02-29T23:59:59.999999Z",
        "2025-02-29T00:00:00.000000Z",
        "2026-01-01T23:59:60.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-01-01t00:00:00.000000Z",
        "2026-01-01T00:00:00.000000z",
        "2026-01-01 00:00:00.000000Z",
        "2026-01-01T00:00:00.00000\u0661Z",
        "1969-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00.000000Z",
        "5138-11-16T09:46:39.999999Z",
        "5138-11-16T09:46:40.000000Z",
        "9999-12-31T23:59:59.999999Z",
        "0000-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.1234567Z",
        "2026-01-01T01:00:00.000000+01:00",
        "",
    ]
    samples += [format_ts(rng.randrange(0, 10**20)) for _ in range(2000)]
    for ts in samples:
        assert g._ts_ns(ts) == parse_ts_ns(ts), ts
    for obj in (None, 12, b"2026-01-01T00:00:00.000000Z"):
        assert g._ts_ns(obj) == parse_ts_ns(obj)


def test_merge_order_is_the_spec_sort_key() -> None:
    rng = random.Random(11)
    raws: list[bytes] = []
    for n in range(400):
        kind = rng.randrange(6)
        obj = event(rng.randrange(50), event_id=f"evt_{rng.randrange(10**6):06d}")
        if kind == 0:
            obj["timestamp"] = "garbage"
        elif kind == 1:
            del obj["event_id"]
        elif kind == 2:
            obj["timestamp"] = format_ts(T0 + rng.randrange(3) * 1000)
        elif kind == 4:
            # Instants of fewer digits (1970) must still sort numerically.
            obj["timestamp"] = format_ts(rng.choice([0, 5, 10**9, 10**12, 10**15]))
        raws.append(canonical_line(obj).rstrip(b"\n") if kind != 3 else b"junk %d" % n)
    expected = sorted(set(raws), key=lambda ln: (sort_key(parse_line(ln), ln), ln))
    # One line per key: keep only the smallest line of each key, as the merge does.
    keys: dict[Any, bytes] = {}
    for ln in raws:
        parsed = parse_line(ln)
        k: Any = ln if parsed is None else event_id_of(parsed)
        keys[k] = min(keys.get(k, ln), ln)
    winners = set(keys.values())
    expected = [ln for ln in expected if ln in winners]
    half = len(raws) // 2
    res = g.merge_jsonl(b"\n".join(raws[:half]) + b"\n", b"\n".join(raws[half:]) + b"\n", None)
    assert split(res.data) == expected


def test_fetch_drops_a_stale_tracking_ref(remote_and_clones: tuple[Path, Path, Path]) -> None:
    _bare, a, _b = remote_and_clones
    git(a, "update-ref", "refs/remotes/origin/a-sync", "HEAD")
    assert g.fetch(a).tip is None
    assert pygit2.Repository(str(a)).references.get("refs/remotes/origin/a-sync") is None
    assert pygit2.Repository(str(a)).references.get("refs/remotes/origin/main") is not None
