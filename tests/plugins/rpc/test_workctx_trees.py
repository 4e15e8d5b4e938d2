"""Per-commit file lists of the work context (``unmerged_commits[].files``) against the git CLI.

Every kind of tree change, merges, odd names, random histories; packed and loose repositories give the same
context; a damaged tree object is reported, not misread.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from thrum_plugins.rpc import _workctx
from thrum_plugins.rpc._workctx import extract_work_context

from .gitcli import Git

pytestmark = pytest.mark.usefixtures("fresh_workctx_caches")


def _git_files(g: Git, sha: str, parents: int) -> list[str]:
    """``git diff-tree -r --name-only`` of a commit (``--root`` for a root, ``-c`` for a merge), -z parsed."""
    args = ["diff-tree", "-r", "--name-only", "--no-commit-id", "-z"]
    if parents == 0:
        args.append("--root")
    elif parents > 1:
        args.append("-c")
    out = g(*args, sha)
    return [p for p in out.split("\0") if p]


def _check_every_commit(g: Git) -> int:
    """Compare ``files`` of every unmerged commit (``main..HEAD``) with git's; returns how many."""
    ctx = extract_work_context(g.path, max_commits=1000)
    assert "error" not in ctx, ctx.get("error")
    shas = g("rev-list", "main..HEAD").split()
    listed = {c["sha"]: c for c in ctx["unmerged_commits"]}
    assert sorted(listed) == sorted(sha[:12] for sha in shas)
    for sha in shas:
        commit = listed[sha[:12]]
        parents = len(g("rev-list", "--parents", "-n", "1", sha).split()) - 1
        expected = _git_files(g, sha, parents)
        if parents > 1:
            assert sorted(commit["files"]) == sorted(expected), commit["message"]
        else:
            assert commit["files"] == expected, commit["message"]
    return len(shas)


def test_every_kind_of_tree_change_matches_git_diff_tree(tmp_path: Path) -> None:
    g = Git(tmp_path / "repo")
    for i in range(40):
        g.write(f"d{i % 4}/f{i:02d}.txt", f"file {i}\n")
    g.write("top.txt", "top\n")
    g.write("a.txt", "sorts before the directory a/\n")
    g.write("a/inner.txt", "inside a/\n")
    g.write("with space/name with space.txt", "spaces\n")
    g.write("run.sh", "#!/bin/sh\n")
    g.write("swap", "a file that becomes a directory\n")
    g.write("deep/x/y/z.txt", "deep\n")
    g.write(b"caf\xe9.txt".decode("utf-8", "surrogateescape"), "not UTF-8\n")
    g("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib")
    (g.path / "vendor" / "lib").mkdir(parents=True)  # as a checkout leaves it: an empty directory
    g.commit("root commit")
    g("checkout", "-q", "-b", "feature")

    g.write("d0/f00.txt", "edited\n")  # one entry edited
    g.commit("edit one")
    g.write("d1/aaa-first.txt", "new first entry\n")  # inserted before every entry
    g.write("d1/zzz-last.txt", "new last entry\n")  # and after
    g.commit("insert at both ends")
    (g.path / "d2" / "f02.txt").unlink()
    (g.path / "d2" / "f38.txt").unlink()
    g.commit("delete first and last")
    for i in range(1, 40, 4):
        g.write(f"d1/f{i:02d}.txt", f"every file edited {i}\n")
    g.commit("edit a whole directory")
    (g.path / "run.sh").chmod(0o755)
    g.commit("mode change only")
    (g.path / "swap").unlink()
    g.write("swap/inside.txt", "now a directory\n")
    g.commit("file becomes directory")
    (g.path / "a.txt").unlink()
    os.symlink("top.txt", g.path / "a.txt")
    g.commit("file becomes symlink")
    g("rm", "-q", "-r", "--cached", "deep")
    subprocess.run(["rm", "-rf", str(g.path / "deep")], check=True)
    g.write("deep", "directory becomes a file\n")
    g.commit("directory becomes file")
    g("update-index", "--cacheinfo", f"160000,{'2' * 40},vendor/lib")
    g.commit("submodule moved")
    g.write("with space/name with space.txt", "edited\n")
    g.write(b"caf\xe9.txt".decode("utf-8", "surrogateescape"), "edited\n")
    g.commit("odd names")
    g.commit("empty commit")
    g("checkout", "-q", "-b", "side", "HEAD~3")
    g.write("d3/side.txt", "side\n")
    g.write("top.txt", "changed on side\n")
    g.commit("side work")
    g("checkout", "-q", "feature")
    g.write("top.txt", "changed on feature\n")
    g.commit("feature edits top")
    g("merge", "-q", "--no-edit", "side", "-X", "ours")
    assert _check_every_commit(g) == 14


def test_random_histories_match_git_diff_tree(tmp_path: Path) -> None:
    """Seeded random edits in a few directories: small and large changes, adds, deletes, moves."""
    rng = random.Random(20261207)
    g = Git(tmp_path / "repo")
    names = [f"{d}/{n}" for d in ("p", "p/q", "r", "s t") for n in ("a", "b.txt", "c.py", "z-last", "0first")]
    for name in names[::2]:
        g.write(name, f"{name}\n")
    g.commit("base")
    g("checkout", "-q", "-b", "feature")
    for step in range(40):
        for _ in range(rng.randint(1, 6)):
            name = rng.choice(names)
            target = g.path / name
            action = rng.random()
            if action < 0.5:
                g.write(name, f"{name} {step} {rng.random()}\n")
            elif action < 0.75 and target.is_file():
                target.unlink()
            elif action < 0.9 and target.is_file():
                target.chmod(target.stat().st_mode ^ 0o100)
            else:
                g.write(f"{name}.{step}", "added\n")
        g.commit(f"step {step}")
    assert _check_every_commit(g) == 40


def test_packed_and_loose_repositories_give_the_same_context(tmp_path: Path) -> None:
    g = Git(tmp_path / "repo")
    for i in range(30):
        g.write(f"pkg{i % 3}/m{i}.py", "".join(f"line {n}\n" for n in range(20)))
    g.commit("base")
    g("checkout", "-q", "-b", "feature")
    for step in range(5):
        g.write(f"pkg{step % 3}/m{step}.py", f"rewritten {step}\n" * 5)
        g.write(f"pkg{step % 3}/new{step}.py", "new\n")
        g.commit(f"step {step}")
    loose = extract_work_context(g.path)
    assert "error" not in loose
    g("gc", "-q", "--aggressive", "--prune=now")
    assert not any((g.path / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))
    _workctx.clear_caches()
    packed = extract_work_context(g.path)
    for key in ("unmerged_commits", "changed_files", "file_changes", "uncommitted_files"):
        assert packed[key] == loose[key]


def test_damaged_tree_object_is_an_error_not_a_wrong_list(tmp_path: Path) -> None:
    g = Git(tmp_path / "repo")
    g.write("dir/a.txt", "a\n")
    g.commit("base")
    g("checkout", "-q", "-b", "feature")
    g.write("dir/b.txt", "b\n")
    g.commit("add b")
    tree = g("rev-parse", "HEAD:dir").strip()
    path = g.path / ".git" / "objects" / tree[:2] / tree[2:]
    path.chmod(0o644)
    path.write_bytes(b"not a zlib stream")
    ctx = extract_work_context(g.path)
    assert "error" in ctx
    assert ctx["unmerged_commits"] == []
