"""The pygit2-free start-up check of the sync worktree (``_git_files.healthy_sync_tip``).

It may only ever say "healthy" when the engine's own check agrees and there is
nothing to set up; every unusual or broken layout must leave the decision to
the engine.  Real repositories, worktrees made by libgit2 (``init_repo``) and
by the git CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from thrum_core.paths import ThrumPaths
from thrum_core.testing import make_thrum_repo
from thrum_core.testing.repo import ThrumRepo
from thrum_plugins.sync import _git_impl as engine
from thrum_plugins.sync._git_files import SYNC_REF, healthy_sync_tip, read_ref
from thrum_plugins.sync._git_service import init_repo


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def branch_tip(repo: ThrumRepo) -> str:
    return str(pygit2.Repository(str(repo.root)).references[SYNC_REF].resolve().target)


def quick(repo: ThrumRepo) -> str | None:
    return healthy_sync_tip(repo.paths.git_common_dir, repo.paths.sync_dir)


def admin_dir(repo: ThrumRepo) -> Path:
    text = (repo.paths.sync_dir / ".git").read_text("utf-8").strip()
    return Path(text.removeprefix("gitdir:").strip())


@pytest.fixture
def repo(tmp_path: Path) -> ThrumRepo:
    """A repository whose sync branch and worktree ``init_repo`` set up (healthy)."""
    made = make_thrum_repo(tmp_path, with_remote=False)
    init_repo(made.paths, None)
    return made


def test_a_healthy_worktree_gives_the_branch_tip(repo: ThrumRepo) -> None:
    assert engine.check_worktree(repo.root, repo.paths.sync_dir) is None
    assert quick(repo) == branch_tip(repo)


def test_packed_refs_are_read(repo: ThrumRepo) -> None:
    git(repo.root, "pack-refs", "--all")
    assert not (repo.paths.git_common_dir / SYNC_REF).exists()
    assert read_ref(repo.paths.git_common_dir, SYNC_REF) == branch_tip(repo)
    assert quick(repo) == branch_tip(repo)
    assert read_ref(repo.paths.git_common_dir, "refs/heads/no-such-branch") is None


def test_from_a_linked_worktree_of_the_repository(repo: ThrumRepo, tmp_path: Path) -> None:
    linked = tmp_path / "feature"
    git(repo.root, "worktree", "add", "-q", "-b", "feature", str(linked))
    paths = ThrumPaths.for_root(linked)
    assert healthy_sync_tip(paths.git_common_dir, paths.sync_dir) == branch_tip(repo)


def test_a_worktree_added_by_the_git_cli(tmp_path: Path) -> None:
    made = make_thrum_repo(tmp_path, with_remote=False)
    engine.ensure_branch(made.root, None)
    git(made.root, "worktree", "add", "-q", str(made.paths.sync_dir), "a-sync")
    (made.paths.sync_dir / "events.jsonl").write_bytes(b"")
    assert engine.check_worktree(made.root, made.paths.sync_dir) is None
    assert quick(made) == branch_tip(made)


def test_no_branch_no_worktree(tmp_path: Path) -> None:
    made = make_thrum_repo(tmp_path, with_remote=False)
    assert quick(made) is None
    engine.ensure_branch(made.root, None)
    assert quick(made) is None  # the branch alone: the worktree must still be added


def _break_missing(repo: ThrumRepo) -> None:
    shutil.rmtree(repo.paths.sync_dir)


def _break_symlink(repo: ThrumRepo) -> None:
    real = repo.paths.sync_dir.with_name("real")
    repo.paths.sync_dir.rename(real)
    repo.paths.sync_dir.symlink_to(real)


def _break_no_data(repo: ThrumRepo) -> None:
    (repo.paths.sync_dir / "events.jsonl").unlink()


def _break_head(repo: ThrumRepo) -> None:
    (admin_dir(repo) / "HEAD").write_text("ref: refs/heads/main\n")


def _break_dotgit_elsewhere(repo: ThrumRepo) -> None:
    other = repo.paths.git_common_dir / "worktrees" / "other"
    shutil.copytree(admin_dir(repo), other)
    (other / "gitdir").write_text(str(repo.root / "elsewhere" / ".git") + "\n")
    (repo.paths.sync_dir / ".git").write_text(f"gitdir: {other}\n")


def _break_backlink(repo: ThrumRepo) -> None:
    (admin_dir(repo) / "gitdir").write_text(str(repo.root / "moved" / ".git") + "\n")


def _break_dotgit_dir(repo: ThrumRepo) -> None:
    (repo.paths.sync_dir / ".git").unlink()
    (repo.paths.sync_dir / ".git").mkdir()


def _break_no_commondir(repo: ThrumRepo) -> None:
    (admin_dir(repo) / "commondir").unlink()


def _break_branch(repo: ThrumRepo) -> None:
    (repo.paths.git_common_dir / SYNC_REF).unlink()


def _relative_dotgit(repo: ThrumRepo) -> None:
    relative = os.path.relpath(admin_dir(repo), repo.paths.sync_dir)
    (repo.paths.sync_dir / ".git").write_text(f"gitdir: {relative}\n")


@pytest.mark.parametrize(
    "damage",
    [
        _break_missing,
        _break_symlink,
        _break_no_data,
        _break_head,
        _break_dotgit_elsewhere,
        _break_backlink,
        _break_dotgit_dir,
        _break_no_commondir,
        _break_branch,
        _relative_dotgit,
    ],
)
def test_anything_unusual_is_left_to_the_engine(repo: ThrumRepo, damage: object) -> None:
    damage(repo)  # type: ignore[operator]
    assert quick(repo) is None


@pytest.mark.parametrize("damage", [_break_head, _break_dotgit_elsewhere, _break_backlink, _break_dotgit_dir])
def test_what_the_engine_calls_unhealthy_is_never_healthy_here(repo: ThrumRepo, damage: object) -> None:
    damage(repo)  # type: ignore[operator]
    assert engine.check_worktree(repo.root, repo.paths.sync_dir) is not None
    assert quick(repo) is None
