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
from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import TEST_GIT_ENV, run_git


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh git repository (no commits) at ``tmp_path/repo``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q", "-b", "main")
    return repo


@pytest.fixture
def committed_repo(git_repo: Path) -> Path:
    """A git repository with one commit (needed for ``git worktree add``)."""
    (git_repo / "README").write_text("hello\n")
    run_git(git_repo, "add", "README")
    run_git(git_repo, "commit", "-q", "-m", "initial")
    return git_repo


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("THRUM_"):
            monkeypatch.delenv(name)
    yield
    set_state(CliState())


Invoke = Callable[..., Result]

FAKE_PLUGIN = '''
import os
import click
from thrum_core.markers import hookimpl


@click.command("hello")
def hello():
    """Say hello (a third-party command)."""
    click.echo("hello from fakeplug")


@hookimpl
def thrum_register_commands(cli):
    cli.add_command(hello)


@hookimpl
def thrum_doctor(report):
    report.check("fake_check", "ok", "fakeplug looked at " + str(report.paths.root))
    if os.environ.get("FAKE_DOCTOR_RAISE"):
        raise RuntimeError("fake doctor exploded")


class FakeRuntime:
    name = "fake"
    display = "Fake Runtime"

    def detect(self, environ, cwd):
        return environ.get("FAKE_RUNTIME") == "1"

    def files(self, context):
        return [
            ("FAKE.md", "agent " + context["agent_name"] + " (" + context["agent_role"] + ")\\n", "managed"),
            ("fake/settings.json", "{}\\n", "skip-if-exists"),
        ]


class FakeSync:
    name = "fakesync"

    def init_repo(self, paths, options):
        (paths.git_common_dir / "fakesync-init").write_text(repr(sorted(options.items())))
        return {"sync_worktree": str(paths.sync_dir), "branch": "a-sync", "created_branch": True}


@hookimpl
def thrum_register_runtimes(register):
    register("fake", FakeRuntime())


@hookimpl
def thrum_register_sync_backends(register):
    register("fakesync", FakeSync())
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A directory holding distribution ``fakeplug`` with plugins ``fake`` and ``broken``.

    Put it on ``PYTHONPATH`` of a ``thrum`` subprocess: ``fake`` adds a
    command, a doctor check, a runtime and a sync backend; ``broken`` fails to
    import.
    """
    site = tmp_path / "site"
    dist = site / "fakeplug-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[thrum]\nfake = fakeplug\nbroken = brokenplug\n")
    (site / "fakeplug.py").write_text(FAKE_PLUGIN)
    (site / "brokenplug.py").write_text("raise ImportError('brokenplug cannot be imported')\n")
    return site


def thrum(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``thrum`` executable (``THRUM_*`` and runtime variables cleared, ``env`` added)."""
    full_env = clean_environ()
    full_env.update(TEST_GIT_ENV)
    full_env.update(env or {})
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``run_cli(*args, cwd=None, env=None)``: run the root group in-process."""

    def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)

    return invoke
