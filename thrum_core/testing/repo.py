"""Temporary git repositories with ``.thrum/`` initialised minimally.

Built with pygit2 (a thrum dependency), so no ``git`` executable and no user
git configuration is needed.  Usable outside pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from thrum_core.paths import ThrumPaths

DEFAULT_BRANCH = "main"
SIGNATURE_NAME = "thrum tests"
SIGNATURE_EMAIL = "tests@thrum.invalid"
#: Environment for git subprocesses of tests: a committer identity, and no system config.
TEST_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run_git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (with :data:`TEST_GIT_ENV` and ``HOME=cwd``) and return its stdout."""
    env = {**os.environ, **TEST_GIT_ENV, "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class ThrumRepo:
    """A working repository, its bare ``origin`` and thrum's paths for it."""

    root: Path
    remote: Path
    paths: ThrumPaths

    @property
    def thrum_dir(self) -> Path:
        """The repository's ``.thrum`` directory."""
        return self.paths.thrum_dir

    def write_config(self, config: dict[str, object]) -> None:
        """Replace ``.thrum/config.json`` (mode 0600)."""
        path = self.paths.config_file
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.chmod(path, 0o600)


def make_thrum_repo(
    base: Path,
    *,
    name: str = "repo",
    config: dict[str, object] | None = None,
    with_remote: bool = True,
) -> ThrumRepo:
    """Create ``base/<name>`` (a git repository with one commit on ``main``).

    ``.thrum/`` holds ``var/`` (0700), ``identities/``, ``context/`` and a
    ``config.json`` (``config`` or ``{"daemon": {"local_only": true}}``);
    ``.thrum/`` is listed in ``.gitignore``.  With ``with_remote`` a bare
    repository ``base/<name>-origin.git`` is added as ``origin`` and ``main``
    is pushed to it.
    """
    import pygit2

    root = Path(base) / name
    root.mkdir(parents=True)
    repo = pygit2.init_repository(str(root), initial_head=DEFAULT_BRANCH)
    (root / ".gitignore").write_text(".thrum/\n", encoding="utf-8")
    (root / "README.md").write_text(f"# {name}\n", encoding="utf-8")
    index = repo.index
    index.add(".gitignore")
    index.add("README.md")
    index.write()
    tree = index.write_tree()
    sig = pygit2.Signature(SIGNATURE_NAME, SIGNATURE_EMAIL)
    repo.create_commit(f"refs/heads/{DEFAULT_BRANCH}", sig, sig, "initial commit", tree, [])

    remote_path = Path(base) / f"{name}-origin.git"
    if with_remote:
        pygit2.init_repository(str(remote_path), bare=True, initial_head=DEFAULT_BRANCH)
        remote = repo.remotes.create("origin", str(remote_path.resolve()))
        remote.push([f"refs/heads/{DEFAULT_BRANCH}:refs/heads/{DEFAULT_BRANCH}"])

    thrum_dir = root / ".thrum"
    for sub in ("identities", "context"):
        (thrum_dir / sub).mkdir(parents=True, exist_ok=True)
    var = thrum_dir / "var"
    var.mkdir(mode=0o700)
    os.chmod(var, 0o700)
    paths = ThrumPaths.for_root(root)
    result = ThrumRepo(root=paths.root, remote=remote_path.resolve(), paths=paths)
    result.write_config(config if config is not None else {"daemon": {"local_only": True}})
    return result
