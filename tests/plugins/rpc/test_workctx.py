"""Tests of live git work-context extraction (SPEC §9.14) against real repositories built with git."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thrum_plugins.rpc import _workctx
from thrum_plugins.rpc._workctx import extract_work_context, file_state

from .gitcli import T0, Git

pytestmark = pytest.mark.usefixtures("fresh_workctx_caches")

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def ts(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def git(tmp_path: Path) -> Git:
    """A repository on ``main`` with three committed files, then on branch ``feature``."""
    g = Git(tmp_path / "repo")
    g.write("src/app.py", "".join(f"line {n}\n" for n in range(10)))
    g.write("src/util.py", "def util():\n    return 1\n")
    g.write("README.md", "# readme\n")
    g.commit("initial")
    g("checkout", "-q", "-b", "feature")
    return g


def porcelain_paths(g: Git) -> list[str]:
    """Paths from ``git status --porcelain=v1 -z`` (a rename or copy → its new path), once each.

    Porcelain can list a path twice (``D  a`` staged plus ``?? a`` back in the worktree).
    """
    out = g("status", "--porcelain=v1", "-z")
    fields = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields) and fields[i]:
        entry = fields[i]
        paths.append(entry[3:])
        i += 2 if entry[0] in "RC" else 1
    return sorted(set(paths))


def git_numstat(g: Git, base: str) -> dict[str, tuple[int, int]]:
    """``git diff --numstat -z`` of ``base...HEAD`` keyed by the new path (binary = 0/0)."""
    out = g("diff", "--numstat", "-z", "-M", f"{base}...HEAD")
    fields = out.split("\0")
    stats: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(fields) and fields[i]:
        adds, dels, path = fields[i].split("\t")
        if path == "":  # a rename: old and new paths follow
            path = fields[i + 2]
            i += 3
        else:
            i += 1
        stats[path] = (0 if adds == "-" else int(adds), 0 if dels == "-" else int(dels))
    return stats


# --- branch, HEAD and base -------------------------------------------------------------------------------


def test_branch_and_absolute_worktree_path(git: Git) -> None:
    ctx = extract_work_context(git.path)
    assert ctx["branch"] == "feature"
    assert ctx["worktree_path"] == str(git.path)
    assert os.path.isabs(ctx["worktree_path"])
    assert "error" not in ctx
    assert TS_RE.match(ctx["git_updated_at"])


def test_relative_path_is_made_absolute(git: Git, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(git.path.parent)
    ctx = extract_work_context("repo")
    assert ctx["worktree_path"] == str(git.path)
    assert ctx["branch"] == "feature"


def test_detached_head_has_no_branch(git: Git) -> None:
    git.write("src/app.py", "changed\n")
    sha = git.commit("on feature")
    git("checkout", "-q", "--detach", sha)
    ctx = extract_work_context(git.path)
    assert ctx["branch"] is None
    assert [c["sha"] for c in ctx["unmerged_commits"]] == [sha[:12]]
    assert "error" not in ctx


def test_unborn_head_has_no_branch_but_reports_status(tmp_path: Path) -> None:
    g = Git(tmp_path / "fresh")
    g.write("new.txt", "x\n")
    g("add", "new.txt")
    g.write("loose.txt", "y\n")
    ctx = extract_work_context(g.path)
    assert ctx["branch"] is None
    assert ctx["unmerged_commits"] == []
    assert ctx["changed_files"] == []
    assert ctx["uncommitted_files"] == ["loose.txt", "new.txt"]
    assert "error" not in ctx


def _three_commits(git: Git) -> list[str]:
    shas = []
    for n in range(3):
        git.write(f"f{n}.txt", f"{n}\n")
        shas.append(git.commit(f"c{n}"))
    return shas


@pytest.mark.parametrize(
    ("refs", "expected_unmerged"),
    [
        # ref name → which of the three feature commits it points at (-1 = the initial main commit)
        ({"refs/remotes/origin/main": 1, "refs/remotes/origin/master": 0, "refs/heads/master": 0}, 1),
        ({"refs/remotes/origin/master": 0, "refs/heads/main": -1}, 2),
        ({"refs/heads/main": 1, "refs/heads/master": 0}, 1),
        ({"refs/heads/master": 0}, 2),
    ],
)
def test_base_resolution_order(git: Git, refs: dict[str, int], expected_unmerged: int) -> None:
    initial = git("rev-parse", "main").strip()
    shas = _three_commits(git)
    git("update-ref", "-d", "refs/heads/main")
    for name, at in refs.items():
        git("update-ref", name, initial if at < 0 else shas[at])
    ctx = extract_work_context(git.path)
    assert [c["sha"] for c in ctx["unmerged_commits"]] == [s[:12] for s in reversed(shas)][:expected_unmerged]


def test_origin_main_is_preferred_over_local_main(git: Git) -> None:
    shas = _three_commits(git)
    git("update-ref", "refs/remotes/origin/main", shas[1])  # local main is still the initial commit
    ctx = extract_work_context(git.path)
    assert [c["message"] for c in ctx["unmerged_commits"]] == ["c2"]
    assert ctx["changed_files"] == ["f2.txt"]


def test_no_base_leaves_history_fields_empty(tmp_path: Path) -> None:
    g = Git(tmp_path / "trunk", init="trunk")
    g.write("a.txt", "a\n")
    g.commit("one")
    g.write("a.txt", "b\n")
    g.commit("two")
    g.write("a.txt", "dirty\n")
    ctx = extract_work_context(g.path)
    assert ctx["branch"] == "trunk"
    assert ctx["unmerged_commits"] == []
    assert ctx["changed_files"] == []
    assert ctx["file_changes"] == []
    assert ctx["uncommitted_files"] == ["a.txt"]
    assert "error" not in ctx


def test_head_at_base_or_behind_it_has_no_changes(git: Git) -> None:
    ctx = extract_work_context(git.path)  # feature == main
    assert (ctx["unmerged_commits"], ctx["changed_files"], ctx["file_changes"]) == ([], [], [])
    git("checkout", "-q", "main")
    git.write("more.txt", "more\n")
    git.commit("main moves on")
    git("checkout", "-q", "feature")  # feature is now behind main
    ctx = extract_work_context(git.path)
    assert (ctx["unmerged_commits"], ctx["changed_files"], ctx["file_changes"]) == ([], [], [])


def test_unrelated_histories_list_commits_but_no_three_dot_changes(git: Git) -> None:
    git("checkout", "-q", "--orphan", "island")
    git("rm", "-q", "-r", "--cached", ".")
    git.write("island.txt", "alone\n")
    git.commit("island root", "island.txt")
    ctx = extract_work_context(git.path)
    assert [c["message"] for c in ctx["unmerged_commits"]] == ["island root"]
    assert ctx["unmerged_commits"][0]["files"] == ["island.txt"]
    assert ctx["changed_files"] == []
    assert ctx["file_changes"] == []


def test_base_moving_after_branch_point_uses_merge_base(git: Git) -> None:
    git.write("src/app.py", "feature edit\n")
    git.commit("feature edit")
    git("checkout", "-q", "main")
    git.write("README.md", "# changed on main\n")
    git.write("main_only.txt", "m\n")
    git.commit("main edit")
    git("checkout", "-q", "feature")
    ctx = extract_work_context(git.path)
    # Three-dot: what feature changed since it left main, not main's own later changes.
    assert ctx["changed_files"] == ["src/app.py"]
    assert [c["message"] for c in ctx["unmerged_commits"]] == ["feature edit"]


# --- unmerged commits --------------------------------------------------------------------------------------


def test_unmerged_commits_newest_first_with_short_sha_subject_and_files(git: Git) -> None:
    git.write("src/app.py", "x\n")
    git.write("docs/guide.md", "guide\n")
    first = git.commit("First change\n\nA body that is not part of the subject.")
    git("rm", "-q", "src/util.py")
    second = git.commit("Remove util")
    git.write("src/app.py", "y\n")
    third = git.commit("Tweak app")
    ctx = extract_work_context(git.path)
    assert ctx["unmerged_commits"] == [
        {"sha": third[:12], "message": "Tweak app", "files": ["src/app.py"]},
        {"sha": second[:12], "message": "Remove util", "files": ["src/util.py"]},
        {"sha": first[:12], "message": "First change", "files": ["docs/guide.md", "src/app.py"]},
    ]
    assert all(re.fullmatch(r"[0-9a-f]{12}", c["sha"]) for c in ctx["unmerged_commits"])


def test_subject_joins_first_paragraph_lines_like_git(git: Git) -> None:
    git.write("a.txt", "a\n")
    git.commit("wrapped\nsubject line\n\nbody")
    ctx = extract_work_context(git.path)
    expected = git("log", "-1", "--format=%s").strip()
    assert ctx["unmerged_commits"][0]["message"] == expected == "wrapped subject line"


def test_max_commits_is_honoured_and_old_paths_still_dated(git: Git) -> None:
    git.write("early.txt", "only touched by the first feature commit\n")
    git.commit("commit 0", date=T0 + 1000)
    for n in range(1, 60):
        git.write("busy.txt", f"{n}\n")
        git.commit(f"commit {n}", date=T0 + 1000 + n)
    ctx = extract_work_context(git.path)
    commits = ctx["unmerged_commits"]
    assert len(commits) == 50
    assert commits[0]["message"] == "commit 59"
    assert commits[-1]["message"] == "commit 10"
    dates = {c["path"]: c["last_modified"] for c in ctx["file_changes"]}
    # early.txt is only in commit 0, beyond the 50 listed: the walk goes on to date it.
    assert dates == {"busy.txt": ts(T0 + 1059), "early.txt": ts(T0 + 1000)}
    assert len(extract_work_context(git.path, max_commits=5)["unmerged_commits"]) == 5
    assert extract_work_context(git.path, max_commits=0)["unmerged_commits"] == []


def test_merge_commit_lists_only_paths_differing_from_every_parent(git: Git) -> None:
    git.write("src/app.py", "feature\n")
    git.commit("feature work")
    git("checkout", "-q", "-b", "side", "main")
    git.write("side.txt", "side\n")
    git.commit("side work")
    git("checkout", "-q", "feature")
    git("merge", "-q", "--no-ff", "--no-edit", "side")
    clean = extract_work_context(git.path)["unmerged_commits"]
    assert clean[0]["message"].startswith("Merge branch 'side'")
    assert clean[0]["files"] == []  # a clean merge introduces nothing of its own
    assert {c["message"] for c in clean[1:]} == {"feature work", "side work"}

    # An "evil" merge: the merge result changes a file beyond both parents.
    git("checkout", "-q", "-b", "side2", "main")
    git.write("side2.txt", "s2\n")
    git.commit("side2 work")
    git("checkout", "-q", "feature")
    git("merge", "-q", "--no-ff", "--no-commit", "side2")
    git.write("README.md", "# edited during the merge\n")
    git("add", "README.md")
    git("commit", "-q", "--no-edit")
    _workctx.clear_caches()
    evil = extract_work_context(git.path)["unmerged_commits"][0]
    assert evil["files"] == ["README.md"]


# --- changed vs uncommitted -------------------------------------------------------------------------------


def test_changed_files_and_uncommitted_kinds(git: Git) -> None:
    git.write("committed.txt", "c\n")
    git.commit("committed")
    git.write("src/app.py", "modified but not staged\n")
    git.write("staged.txt", "staged\n")
    git("add", "staged.txt")
    git.write("untracked.txt", "u\n")
    git.write("newdir/a.txt", "a\n")
    git.write("newdir/b.txt", "b\n")
    git.write(".gitignore", "*.log\n")
    git.write("debug.log", "ignored\n")
    os.remove(git.path / "README.md")
    git("mv", "src/util.py", "src/helpers.py")
    ctx = extract_work_context(git.path)
    assert ctx["changed_files"] == ["committed.txt"]
    assert ctx["uncommitted_files"] == [
        ".gitignore",
        "README.md",
        "newdir/",
        "src/app.py",
        "src/helpers.py",
        "staged.txt",
        "untracked.txt",
    ]
    assert ctx["uncommitted_files"] == porcelain_paths(git)


def test_staged_rename_with_old_path_recreated_lists_both(git: Git) -> None:
    git("mv", "src/util.py", "src/helpers.py")
    git.write("src/util.py", "something new\n")
    ctx = extract_work_context(git.path)
    assert ctx["uncommitted_files"] == porcelain_paths(git) == ["src/helpers.py", "src/util.py"]


def test_staged_delete_and_unrelated_add_are_not_a_rename(git: Git) -> None:
    git("rm", "-q", "src/util.py")
    git.write("other.bin", bytes(range(256)) * 4)
    git("add", "other.bin")
    ctx = extract_work_context(git.path)
    assert ctx["uncommitted_files"] == porcelain_paths(git) == ["other.bin", "src/util.py"]


# --- numstat and file_changes ---------------------------------------------------------------------------


def test_numstat_status_and_last_modified(git: Git) -> None:
    lines = [f"line {n}\n" for n in range(10)]
    lines[2] = "changed two\n"
    lines[5] = "changed five\n"
    git.write("src/app.py", "".join([*lines, "added a\n", "added b\n"]))
    git.commit("edit app", date=T0 + 5000)
    git.write("docs/new.md", "one\ntwo\nthree\n")
    git("rm", "-q", "README.md")
    git.commit("add docs, drop readme", date=T0 + 6000)
    git("mv", "src/util.py", "src/helpers.py")
    git.commit("rename util", date=T0 + 7000)
    ctx = extract_work_context(git.path)
    changes = {c["path"]: c for c in ctx["file_changes"]}
    assert changes == {
        "src/app.py": {
            "path": "src/app.py",
            "additions": 4,
            "deletions": 2,
            "status": "modified",
            "last_modified": ts(T0 + 5000),
        },
        "docs/new.md": {
            "path": "docs/new.md",
            "additions": 3,
            "deletions": 0,
            "status": "added",
            "last_modified": ts(T0 + 6000),
        },
        "README.md": {
            "path": "README.md",
            "additions": 0,
            "deletions": 1,
            "status": "deleted",
            "last_modified": ts(T0 + 6000),
        },
        "src/helpers.py": {
            "path": "src/helpers.py",
            "additions": 0,
            "deletions": 0,
            "status": "renamed",
            "last_modified": ts(T0 + 7000),
        },
    }
    # Newest first, ties by path.
    assert [c["path"] for c in ctx["file_changes"]] == [
        "src/helpers.py",
        "README.md",
        "docs/new.md",
        "src/app.py",
    ]
    assert ctx["changed_files"] == sorted(changes)
    assert {p: (c["additions"], c["deletions"]) for p, c in changes.items()} == git_numstat(git, "main")
    # Author date, not committer date (the fixture sets them 7 s apart).
    assert ctx["changed_files"] == sorted(git("diff", "--name-only", "main...HEAD").split())


def test_last_modified_is_the_newest_commit_touching_the_path(git: Git) -> None:
    git.write("src/app.py", "v1\n")
    git.commit("v1", date=T0 + 100)
    git.write("other.txt", "o\n")
    git.commit("other", date=T0 + 200)
    git.write("src/app.py", "v2\n")
    git.commit("v2", date=T0 + 300)
    ctx = extract_work_context(git.path)
    dates = {c["path"]: c["last_modified"] for c in ctx["file_changes"]}
    assert dates == {"src/app.py": ts(T0 + 300), "other.txt": ts(T0 + 200)}


def test_binary_file_counts_zero(git: Git) -> None:
    git.write("image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    git.commit("add image")
    ctx = extract_work_context(git.path)
    (change,) = ctx["file_changes"]
    assert change["path"] == "image.png"
    assert (change["additions"], change["deletions"], change["status"]) == (0, 0, "added")
    assert git("diff", "--numstat", "main...HEAD").startswith("-\t-\timage.png")


def test_results_are_stable_across_cached_calls_and_follow_new_commits(git: Git) -> None:
    git.write("src/app.py", "one\n")
    git.commit("first")
    cold = extract_work_context(git.path)
    warm = extract_work_context(git.path)
    for key in ("branch", "unmerged_commits", "changed_files", "file_changes", "uncommitted_files"):
        assert cold[key] == warm[key]
    warm["unmerged_commits"][0]["files"].append("mutated")  # callers own their copy
    assert extract_work_context(git.path)["unmerged_commits"][0]["files"] == ["src/app.py"]

    git.write("src/app.py", "one\ntwo\nthree\n")
    git.commit("second")
    after = extract_work_context(git.path)
    assert [c["message"] for c in after["unmerged_commits"]] == ["second", "first"]
    app = next(c for c in after["file_changes"] if c["path"] == "src/app.py")
    assert (app["additions"], app["deletions"]) == git_numstat(git, "main")["src/app.py"]


# --- worktrees and failures -------------------------------------------------------------------------------


def test_linked_worktree(git: Git, tmp_path: Path) -> None:
    git.write("src/app.py", "on feature\n")
    feature_sha = git.commit("feature work")
    linked = tmp_path / "linked"
    git("worktree", "add", "-q", "-b", "topic", str(linked), "feature")
    lg = Git(linked, init=None)
    lg.write("topic.txt", "t\n")
    topic_sha = lg.commit("topic work")
    lg.write("scratch.txt", "s\n")
    ctx = extract_work_context(linked)
    assert "error" not in ctx
    assert ctx["branch"] == "topic"
    assert ctx["worktree_path"] == str(linked)
    assert [c["sha"] for c in ctx["unmerged_commits"]] == [topic_sha[:12], feature_sha[:12]]
    assert ctx["changed_files"] == ["src/app.py", "topic.txt"]
    assert ctx["uncommitted_files"] == ["scratch.txt"]
    # The main worktree is unaffected.
    main_ctx = extract_work_context(git.path)
    assert main_ctx["branch"] == "feature"
    assert main_ctx["uncommitted_files"] == []


def test_subdirectory_resolves_to_its_repository(git: Git) -> None:
    ctx = extract_work_context(git.path / "src")
    assert ctx["branch"] == "feature"
    assert ctx["worktree_path"] == str(git.path / "src")


@pytest.mark.parametrize("kind", ["missing", "not_a_repo", "file"])
def test_unusable_path_gives_error_and_empty_fields(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nowhere"
    if kind == "not_a_repo":
        target.mkdir()
    elif kind == "file":
        target.write_text("not a directory\n")
    ctx = extract_work_context(target)
    assert isinstance(ctx["error"], str) and ctx["error"]
    assert ctx["worktree_path"] == str(target)
    assert ctx["branch"] is None
    for key in ("unmerged_commits", "uncommitted_files", "changed_files", "file_changes"):
        assert ctx[key] == []
    assert TS_RE.match(ctx["git_updated_at"])


def test_corrupt_object_gives_error_not_exception(git: Git) -> None:
    git.write("src/app.py", "feature\n")
    sha = git.commit("feature work")
    obj = git.path / ".git" / "objects" / sha[:2] / sha[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"garbage, not zlib")
    ctx = extract_work_context(git.path)
    assert "error" in ctx
    assert ctx["unmerged_commits"] == []
    assert ctx["file_changes"] == []


# --- file_state (who-has) ---------------------------------------------------------------------------------


def test_file_state(git: Git) -> None:
    git.write("src/app.py", "committed edit\nsecond line\n")
    git.commit("edit app", date=T0 + 900)
    git.write("src/util.py", "uncommitted edit\n")
    git.write("newdir/inner.txt", "u\n")
    ctx = extract_work_context(git.path)

    assert file_state(ctx, "src/app.py") == {
        "state": "committed",
        "additions": 2,
        "deletions": 10,
        "last_modified": ts(T0 + 900),
    }
    assert file_state(ctx, "./src/app.py") == file_state(ctx, "src/app.py")
    assert file_state(ctx, "src/util.py") == {
        "state": "uncommitted",
        "additions": 0,
        "deletions": 0,
        "last_modified": ctx["git_updated_at"],
    }
    assert file_state(ctx, "newdir/inner.txt")["state"] == "uncommitted"  # type: ignore[index]
    assert file_state(ctx, "README.md") is None
    assert file_state(ctx, "src") is None
    assert file_state(ctx, "") is None

    # Committed and edited again: uncommitted wins, the committed numbers are kept.
    git.write("src/app.py", "dirty again\n")
    ctx = extract_work_context(git.path)
    assert file_state(ctx, "src/app.py") == {
        "state": "uncommitted",
        "additions": 2,
        "deletions": 10,
        "last_modified": ts(T0 + 900),
    }


def test_file_state_on_a_stored_context_without_optional_fields() -> None:
    stored: dict[str, Any] = {"session_id": "ses_1", "changed_files": ["a.py"]}
    assert file_state(stored, "a.py") == {
        "state": "committed",
        "additions": 0,
        "deletions": 0,
        "last_modified": None,
    }
    assert file_state(stored, "b.py") is None
    assert file_state({}, "a.py") is None


# --- agreement with git on random histories ----------------------------------------------------------------

_NAMES = ["a.txt", "b.txt", "dir/c.txt", "dir/sub/d.txt", "e.bin"]
_op = st.tuples(
    st.sampled_from(["write", "append", "delete", "rename", "commit", "stage"]),
    st.sampled_from(_NAMES),
    st.integers(min_value=0, max_value=30),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_op, min_size=1, max_size=14))
def test_agrees_with_git_cli(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, int]]
) -> None:
    g = Git(tmp_path_factory.mktemp("prop") / "repo")
    for name in _NAMES:
        g.write(name, "".join(f"{name} {n}\n" for n in range(12)))
    g.commit("base")
    g("checkout", "-q", "-b", "work")
    for verb, name, n in ops:
        present = [p for p in _NAMES if (g.path / p).is_file()]
        if verb == "write":
            g.write(name, bytes([0, n]) * 40 if name.endswith(".bin") else f"rewritten {n}\n" * (n % 5 + 1))
        elif verb == "append" and name in present:
            with open(g.path / name, "a") as fh:
                fh.write(f"appended {n}\n")
        elif verb == "delete" and name in present:
            os.remove(g.path / name)
        elif verb == "rename" and name in present:
            target = f"moved/{n}-{Path(name).name}"
            if not (g.path / target).exists():
                g("add", "--all")
                (g.path / "moved").mkdir(exist_ok=True)
                g("mv", name, target)
        elif verb == "stage":
            g("add", "--all")
        elif verb == "commit":
            g.commit(f"step {n}")
    _workctx.clear_caches()
    ctx = extract_work_context(g.path)
    assert "error" not in ctx
    assert ctx["uncommitted_files"] == porcelain_paths(g)
    assert ctx["changed_files"] == sorted(g("diff", "--name-only", "-M", "main...HEAD").splitlines())
    numstat = {c["path"]: (c["additions"], c["deletions"]) for c in ctx["file_changes"]}
    assert numstat == git_numstat(g, "main")
    log = g("log", "--format=%h %s", "--abbrev=12", "main..HEAD").splitlines()
    assert [f"{c['sha']} {c['message']}" for c in ctx["unmerged_commits"]] == log
