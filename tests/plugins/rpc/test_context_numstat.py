"""Work-context numstat and repository reuse (SPEC §9.14), checked against the git CLI on generated repos.

``file_changes`` counts come from blobs diffed as buffers unless a gitattributes file could apply (then
libgit2's own per-path patch is used); both paths must give what ``git diff --numstat`` gives.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from thrum_plugins.rpc import _workctx
from thrum_plugins.rpc._workctx import extract_work_context

from .gitcli import Git

pytestmark = pytest.mark.usefixtures("fresh_workctx_caches")


def _text(i: int, rev: int = 0, lines: int = 30) -> str:
    rows = [f"file {i} line {n}" for n in range(lines)]
    if rev:
        rows[(rev * 7) % lines] = f"file {i} edited in {rev}"
        rows.insert((rev * 3) % lines, f"inserted by {rev}")
        del rows[(rev * 11) % len(rows)]
    return "\n".join(rows) + "\n"


def generated_repo(root: Path) -> Git:
    """``main`` with 60 files, then a ``feature`` branch whose commits cover every kind of change.

    Edits, insertions and deletions at several places, added and deleted files, a rename with and one
    without edits, binary files (NUL bytes, one of them changed), empty files, files without a final
    newline, a mode change, a symlink, a file replaced by a directory and submodule entries (changed
    and added).
    """
    g = Git(root)
    for i in range(60):
        g.write(f"pkg{i % 6}/mod{i:02d}.py", _text(i))
    g.write("data/blob.bin", bytes(range(256)) * 4)
    g.write("data/empty.txt", "")
    g.write("notes/no-newline.txt", "first\nsecond\nthird")
    g.write("tools/run.sh", "#!/bin/sh\necho run\n")
    g.write("becomes_dir", "a file for now\n")
    g.write("gone/old.py", _text(99))
    g.write("moved/src.py", _text(98, lines=40))
    g.write("renamed/plain.py", _text(97, lines=40))
    g("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib")  # a submodule entry
    (g.path / "vendor" / "lib").mkdir(parents=True)  # as a checkout leaves it: an empty directory
    g.commit("base")
    g("checkout", "-q", "-b", "feature")
    for rev in range(1, 9):
        for k in range(4):
            i = (rev * 13 + k * 7) % 60
            g.write(f"pkg{i % 6}/mod{i:02d}.py", _text(i, rev))
        g.write(f"pkg{rev % 6}/new{rev}.py", _text(100 + rev, lines=5 + rev))
        g.commit(f"feature step {rev}")
    (g.path / "gone" / "old.py").unlink()
    g("mv", "moved/src.py", "moved/dst.py")
    g.write("moved/dst.py", _text(98, 3, lines=40))
    g("mv", "renamed/plain.py", "renamed/plain2.py")
    g.write("data/blob.bin", bytes(range(256)) * 4 + b"\0more")
    g.write("data/empty.txt", "now\nhas\nlines\n")
    g.write("data/new-empty.txt", "")
    g.write("notes/no-newline.txt", "first\nsecond changed\nthird\nfourth")
    (g.path / "tools" / "run.sh").chmod(0o755)
    os.symlink("pkg0/mod00.py", g.path / "link.py")
    (g.path / "becomes_dir").unlink()
    g.write("becomes_dir/inner.txt", "now a directory\n")
    g("update-index", "--cacheinfo", f"160000,{'2' * 40},vendor/lib")
    g("update-index", "--add", "--cacheinfo", f"160000,{'3' * 40},vendor/new")
    (g.path / "vendor" / "new").mkdir()
    g.commit("kinds of change")
    return g


def _numstat(ctx: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {c["path"]: (c["additions"], c["deletions"]) for c in ctx["file_changes"]}


def _check_against_git(g: Git) -> dict[str, Any]:
    ctx = extract_work_context(g.path)
    assert "error" not in ctx, ctx.get("error")
    assert _numstat(ctx) == g.numstat()
    assert {c["path"]: c["status"] for c in ctx["file_changes"]} == g.name_status()
    assert ctx["changed_files"] == sorted(g.numstat())
    return ctx


def test_numstat_matches_git_on_a_generated_repository(tmp_path: Path) -> None:
    g = generated_repo(tmp_path / "repo")
    cold = _check_against_git(g)
    assert len(cold["file_changes"]) > 30
    assert _numstat(cold)["data/blob.bin"] == (0, 0)
    assert _numstat(cold)["notes/no-newline.txt"] == g.numstat()["notes/no-newline.txt"] != (0, 0)
    assert (_numstat(cold)["vendor/lib"], _numstat(cold)["vendor/new"]) == ((1, 1), (1, 0))
    warm = extract_work_context(g.path)
    for key in ("unmerged_commits", "changed_files", "file_changes", "uncommitted_files"):
        assert warm[key] == cold[key]


@pytest.mark.parametrize("where", ["worktree", "nested", "info", "config"])
def test_numstat_honours_gitattributes(tmp_path: Path, where: str) -> None:
    """An attributes file that makes text files binary (``-diff``, ``binary``) is applied as git applies it.

    (A ``.gitattributes`` only in the index is left out: ``git diff A...B`` applies it only when
    something made it read the index — a submodule entry does — while libgit2 always does.)
    """
    g = generated_repo(tmp_path / "repo")
    rules = "*.py -diff\n*.txt binary\n"
    if where == "worktree":
        g.write(".gitattributes", rules)
    elif where == "nested":
        g.write("pkg1/.gitattributes", "*.py -diff\n")
    elif where == "info":
        (g.path / ".git" / "info").mkdir(exist_ok=True)
        (g.path / ".git" / "info" / "attributes").write_text(rules)
    else:
        attrs = tmp_path / "attributes"
        attrs.write_text(rules)
        g("config", "core.attributesFile", str(attrs))
    ctx = _check_against_git(g)
    zeroed = [p for p, counts in _numstat(ctx).items() if counts == (0, 0)]
    assert any(p.startswith("pkg1/") and p.endswith(".py") for p in zeroed)


def test_concurrent_extractions_share_nothing_unsafely(tmp_path: Path) -> None:
    """Threads extracting the same worktree at once (the daemon's ``live`` listContext) agree."""
    g = generated_repo(tmp_path / "repo")
    expected = extract_work_context(g.path)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(3):
                results.append(extract_work_context(g.path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _workctx.clear_caches()
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 12
    for ctx in results:
        assert "error" not in ctx
        for key in ("unmerged_commits", "changed_files", "file_changes", "uncommitted_files"):
            assert ctx[key] == expected[key]


def test_a_repository_recreated_at_the_same_path_is_reopened(tmp_path: Path) -> None:
    first = Git(tmp_path / "repo")
    first.write("a.txt", "a\n")
    first.commit("base")
    first("checkout", "-q", "-b", "feature")
    first.write("a.txt", "a\nb\n")
    first.commit("first repo")
    assert extract_work_context(first.path)["unmerged_commits"][0]["message"] == "first repo"

    shutil.rmtree(first.path)
    second = Git(tmp_path / "repo")
    second.write("z.txt", "z\n")
    second.commit("base")
    second("checkout", "-q", "-b", "other")
    second.write("z.txt", "z\ny\n")
    second.commit("second repo")
    ctx = extract_work_context(second.path)
    assert "error" not in ctx
    assert ctx["branch"] == "other"
    assert [c["message"] for c in ctx["unmerged_commits"]] == ["second repo"]
    assert _numstat(ctx) == {"z.txt": (1, 0)}
