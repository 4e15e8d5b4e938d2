"""A command that makes one RPC stays light (ARCHITECTURE.md principle 4).

Real commands run in a subprocess against a real daemon; at exit the wrapper
prints ``sys.modules``.  None of the heavy libraries may have been imported:
the CLI's hot path is click, the stdlib client and thrum's stdlib-only modules.
The one-RPC commands agents run most (``daemon status``, ``send``, ``inbox``)
also avoid a few standard-library modules that each cost them a millisecond or
more (:data:`AVOIDED`).
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
    "rich",
    "importlib.metadata",
    "importlib_metadata",
)
#: Standard-library modules the hot one-RPC commands do without (each costs them ~1 ms or more):
#: ``socket`` (and ``selectors``, which it imports; the client uses ``_socket``), ``locale``
#: (imported by gettext when click builds a help option), ``dataclasses``, ``hashlib``/OpenSSL
#: (an unnamed agent's id uses the built-in SHA-256) and the ``utf-8-sig`` codec module.
AVOIDED = ("socket", "selectors", "locale", "dataclasses", "hashlib", "_hashlib", "encodings.utf_8_sig")
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", HOME=env.get("HOME", "/tmp"))
    return env


def _thrum(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["thrum", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def running_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp git repository with a running daemon (stopped, or killed, at the end)."""
    repo = tmp_path_factory.mktemp("importcost")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=_env())
    init = _thrum("init", "--no-daemon", cwd=repo)
    assert init.returncode == 0, init.stderr
    start = _thrum("daemon", "start", "--json", cwd=repo)
    assert start.returncode == 0, start.stdout + start.stderr
    pid = json.loads(start.stdout)["pid"]
    # An unnamed agent (its id is computed from role and module): the only identity file.
    quick = _thrum("quickstart", "--role", "tester", "--module", "core", "--no-init", "--json", cwd=repo)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    try:
        yield repo
    finally:
        _thrum("daemon", "stop", "--force", cwd=repo)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.05)


def modules_after(args: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``thrum *args`` through the wrapper; return exit status, output and loaded modules."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out, _, modules = done.stdout.rpartition(MARKER)
    assert modules, done.stdout + done.stderr
    return done.returncode, out, json.loads(modules)


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_daemon_status_imports_nothing_heavy(running_repo: Path) -> None:
    code, out, modules = modules_after(["daemon", "status", "--json"], running_repo)
    assert code == 0, out
    status = json.loads(out)
    assert status["running"] is True and isinstance(status["pid"], int)
    assert heavy(modules) == []
    assert "thrum_core.client" in modules  # it really talked to the daemon


@pytest.mark.parametrize(
    "args",
    [["daemon", "status", "--json"], ["send", "hello", "--to", "@tester", "--json"], ["inbox", "--json"]],
)
def test_hot_one_rpc_commands_avoid_costly_stdlib_modules(running_repo: Path, args: list[str]) -> None:
    code, out, modules = modules_after(args, running_repo)
    assert code == 0, out
    assert isinstance(json.loads(out), dict)
    assert heavy(modules) == []
    assert [m for m in AVOIDED if m in modules] == []


def test_config_show_via_daemon_imports_nothing_heavy(running_repo: Path) -> None:
    code, out, modules = modules_after(["config", "show", "--json"], running_repo)
    assert code == 0, out
    assert set(json.loads(out)) == {"path", "config", "sources"}
    assert heavy(modules) == []


def test_version_imports_nothing_heavy(running_repo: Path) -> None:
    code, _out, modules = modules_after(["version", "--json"], running_repo)
    assert code == 0
    assert heavy(modules) == []


def test_the_wrapper_would_notice(running_repo: Path) -> None:
    """Sanity check of the probe: ``thrum plugins`` does load pluggy and importlib.metadata."""
    code, _, modules = modules_after(["plugins", "--json"], running_repo)
    assert code == 0
    assert "pluggy" in heavy(modules) and "importlib.metadata" in heavy(modules)


def test_builtin_command_plugins_only_add_commands() -> None:
    """The daemon does not import thrum's ``cli.*`` plugins: they must implement nothing else."""
    from thrum_core.plugins.loader import discover, is_builtin_command_plugin, make_plugin_manager

    skipped = {spec.name for spec in discover() if is_builtin_command_plugin(spec)}
    assert "cli.daemon" in skipped
    manager = make_plugin_manager({})
    for name in sorted(skipped):
        record = manager.records[name]
        assert record.status == "loaded", (name, record.error)
        assert record.hooks == ["thrum_register_commands"], name
