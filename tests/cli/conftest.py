"""Fixtures for CLI tests: temp git repositories and an in-process CLI runner."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from thrum_cli.main import cli
from thrum_cli.state import CliState, set_state

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout."""
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return done.stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh git repository (no commits) at ``tmp_path/repo``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


@pytest.fixture
def committed_repo(git_repo: Path) -> Path:
    """A git repository with one commit (needed for ``git worktree add``)."""
    (git_repo / "README").write_text("hello\n")
    git(git_repo, "add", "README")
    git(git_repo, "commit", "-q", "-m", "initial")
    return git_repo


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("THRUM_"):
            monkeypatch.delenv(name)
    yield
    set_state(CliState())


Invoke = Callable[..., Result]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``run_cli(*args, cwd=None, env=None)``: run the root group in-process."""

    def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)

    return invoke
