"""``thrum send`` (and the other messaging commands) stay light (ARCHITECTURE.md principle 4).

Each command runs in a subprocess against a real daemon through a wrapper that
prints ``sys.modules`` at exit.  Only click, the standard library and thrum's
stdlib-only modules may be loaded: never trio, pydantic, pygit2, pluggy,
httpx, ulid or importlib.metadata, and none of the daemon-side messaging
modules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FORBIDDEN = (
    "trio",
    "pydantic",
    "pygit2",
    "pluggy",
    "httpx",
    "ulid",
    "importlib.metadata",
    "importlib_metadata",
    "sqlite3",
    "thrum_plugins.rpc",
    "thrum_plugins.notifiers",
    "thrum_core.events",
    "thrum_core.kernel",
)
MARKER = "@@MODULES@@"
WRAPPER = f"""
import json, sys
from thrum_cli.main import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print({MARKER!r} + json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def _env(name: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", HOME=env.get("HOME", "/tmp"))
    if name:
        env["THRUM_NAME"] = name
    return env


def _thrum(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with a running daemon and two agents, ``ann`` and ``ben``."""
    root = tmp_path_factory.mktemp("sendcost")
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=_env())
    assert _thrum("init", "--no-daemon", cwd=root).returncode == 0
    start = _thrum("daemon", "start", "--json", cwd=root)
    assert start.returncode == 0, start.stdout + start.stderr
    pid = json.loads(start.stdout)["pid"]
    for name in ("ann", "ben"):
        q = _thrum("quickstart", name, "--role", "dev", "--module", "m", "--no-init", cwd=root)
        assert q.returncode == 0, q.stdout + q.stderr
    try:
        yield root
    finally:
        _thrum("daemon", "stop", "--force", cwd=root)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.05)


def modules_after(args: list[str], cwd: Path, name: str) -> tuple[int, str, list[str]]:
    """Run ``thrum *args`` as ``name`` through the wrapper; return status, output and loaded modules."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=cwd,
        env=_env(name),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out, _, modules = done.stdout.rpartition(MARKER)
    assert modules, done.stdout + done.stderr
    return done.returncode, out, json.loads(modules)


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_send_imports_nothing_heavy(repo: Path) -> None:
    code, out, modules = modules_after(["send", "light as a feather", "--to", "@ben", "--json"], repo, "ann")
    assert code == 0, out
    assert json.loads(out)["recipients"] == ["ben"]  # it really sent
    assert heavy(modules) == []
    assert "thrum_core.client" in modules and "thrum_plugins.cli.messages" in modules


@pytest.mark.parametrize(
    "args",
    [
        ["inbox", "--json"],
        ["wait", "--timeout", "100ms", "--json"],
        ["group", "list", "--json"],
        ["subscriptions", "--json"],
    ],
)
def test_other_messaging_commands_import_nothing_heavy(repo: Path, args: list[str]) -> None:
    code, out, modules = modules_after(args, repo, "ben")
    assert code in (0, 1), out
    assert heavy(modules) == []


def test_the_probe_would_notice(repo: Path) -> None:
    """Sanity check: loading every plugin (``thrum plugins``) does import pluggy and importlib.metadata."""
    code, _out, modules = modules_after(["plugins", "--json"], repo, "ann")
    assert code == 0
    assert "pluggy" in heavy(modules)
