"""A repository driven through the git CLI: the reference the work-context tests compare against."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


class Git:
    """A repository driven through the git CLI, isolated from the user's and the system's git config.

    ``init``: the first branch of a new repository made at ``path``; ``None`` to drive an existing
    worktree (a linked one). Every :meth:`commit` is a minute after the previous one; the committer date is
    7 s after the author date (which carries a +02:00 offset), so a test can tell which one was used.
    """

    def __init__(self, path: Path, *, init: str | None = "main") -> None:
        self.path = path
        self.clock = T0
        if init is not None:
            path.mkdir(parents=True)
            self("init", "-q", "-b", init)

    def __call__(self, *args: str, date: int | None = None, cwd: Path | None = None) -> str:
        when = self.clock if date is None else date
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Tester",
            "GIT_AUTHOR_EMAIL": "tester@example.invalid",
            "GIT_COMMITTER_NAME": "Tester",
            "GIT_COMMITTER_EMAIL": "tester@example.invalid",
            "GIT_AUTHOR_DATE": f"@{when} +0200",
            "GIT_COMMITTER_DATE": f"@{when + 7} +0000",
        }
        done = subprocess.run(["git", *args], cwd=cwd or self.path, env=env, capture_output=True, check=True)
        return done.stdout.decode("utf-8", "surrogateescape")

    def write(self, rel: str, data: str | bytes) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)

    def commit(self, message: str, *paths: str, date: int | None = None) -> str:
        """Stage ``paths`` (everything when none) and commit; returns the full sha."""
        self.clock += 60
        self("add", "--all", *(paths or ["."]))
        self("commit", "-q", "--allow-empty", "-m", message, date=date)
        return self("rev-parse", "HEAD").strip()

    def numstat(self) -> dict[str, tuple[int, int]]:
        """``git diff --numstat -z -M main...HEAD`` keyed by the new path (binary ``-`` = 0)."""
        fields = self("diff", "--numstat", "-z", "-M", "main...HEAD").split("\0")
        out: dict[str, tuple[int, int]] = {}
        i = 0
        while i < len(fields) and fields[i]:
            adds, dels, path = fields[i].split("\t")
            if path == "":  # rename: old and new path follow
                path, i = fields[i + 2], i + 3
            else:
                i += 1
            out[path] = (0 if adds == "-" else int(adds), 0 if dels == "-" else int(dels))
        return out

    def name_status(self) -> dict[str, str]:
        names = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "T": "modified"}
        fields = self("diff", "--name-status", "-z", "-M", "main...HEAD").split("\0")
        out: dict[str, str] = {}
        i = 0
        while i < len(fields) and fields[i]:
            code = fields[i]
            if code[0] in "RC":
                out[fields[i + 2]] = names[code[0]]
                i += 3
            else:
                out[fields[i + 1]] = names[code[0]]
                i += 2
        return out
