"""``thrum plugins`` and ``thrum doctor``, including third-party plugins that misbehave.

The third-party plugins (``plugin_site`` in conftest) are a real distribution
put on ``PYTHONPATH`` of the installed ``thrum`` executable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from .conftest import thrum

Invoke = Callable[..., Result]


def test_plugins_lists_builtins(run_cli: Invoke) -> None:
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    for name in ("cli.daemon", "cli.init", "rpc.health", "rpc.config_show"):
        assert plugins[name]["status"] == "loaded"
        assert plugins[name]["dist"] == "thrum"
        assert set(plugins[name]) == {"name", "dist", "version", "status", "hooks", "error"}
    assert plugins["cli.daemon"]["hooks"] == ["thrum_register_commands"]
    assert plugins["rpc.config_show"]["hooks"] == ["thrum_register_rpc_methods"]
    human = run_cli("plugins")
    assert "cli.daemon" in human.stdout and "loaded" in human.stdout


def test_third_party_plugins(plugin_site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site)}
    listed = thrum("plugins", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["fake"]["status"] == "loaded"
    assert plugins["fake"]["dist"] == "fakeplug" and plugins["fake"]["version"] == "1.0"
    assert plugins["fake"]["hooks"] == [
        "thrum_doctor",
        "thrum_register_commands",
        "thrum_register_runtimes",
        "thrum_register_sync_backends",
    ]
    assert plugins["broken"]["status"] == "failed"
    assert "brokenplug cannot be imported" in plugins["broken"]["error"]

    hello = thrum("hello", cwd=tmp_path, env=env)
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout == "hello from fakeplug\n"
    assert "hello" in thrum("--help", cwd=tmp_path, env=env).stdout
    version = thrum("version", "--json", cwd=tmp_path, env=env)
    assert version.returncode == 0 and json.loads(version.stdout)["version"]


def test_disable_plugins(plugin_site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "THRUM_DISABLE_PLUGINS": "fake,cli.version"}
    plugins = {
        p["name"]: p for p in json.loads(thrum("plugins", "--json", cwd=tmp_path, env=env).stdout)["plugins"]
    }
    assert plugins["fake"]["status"] == "disabled"
    assert plugins["cli.version"]["status"] == "disabled"
    assert thrum("hello", cwd=tmp_path, env=env).returncode == 1
    assert thrum("version", cwd=tmp_path, env=env).returncode == 1
    assert thrum("daemon", "--help", cwd=tmp_path, env=env).returncode == 0


def test_doctor_not_initialized(run_cli: Invoke, git_repo: Path) -> None:
    result = run_cli("doctor", "--json", cwd=git_repo)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["repository"]["status"] == "fail"
    assert set(checks["repository"]) == {"name", "status", "message", "fixed"}


def test_doctor_initialized_without_daemon(run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    result = run_cli("doctor", "--json", cwd=git_repo)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    checks = {c["name"]: c for c in doc["checks"]}
    for name in ("repository", "thrum_dir", "redirect", "config", "daemon_files", "plugins", "environment"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["daemon"]["status"] == "warn"
    assert "not running" in checks["daemon"]["message"]


def test_doctor_broken_config_fails(run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    (git_repo / ".thrum" / "config.json").write_text('{"daemon": {"sync_interval": 2}}')
    doc = json.loads(run_cli("doctor", "--json", cwd=git_repo).stdout)
    config = next(c for c in doc["checks"] if c["name"] == "config")
    assert config["status"] == "fail" and "sync_interval" in config["message"]
    assert doc["ok"] is False


def test_doctor_fixes_stale_files(run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    pid_file = git_repo / ".thrum" / "var" / "thrum.pid"
    pid_file.write_text('{"pid": 999999999}\n')
    checks = {c["name"]: c for c in json.loads(run_cli("doctor", "--json", cwd=git_repo).stdout)["checks"]}
    assert checks["daemon_files"]["status"] == "warn"
    assert pid_file.exists()
    fixed = {
        c["name"]: c for c in json.loads(run_cli("doctor", "--fix", "--json", cwd=git_repo).stdout)["checks"]
    }
    assert fixed["daemon_files"]["fixed"] is True
    assert not pid_file.exists()


def test_doctor_notes_ignored_tailscale_variables(run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    result = run_cli("doctor", "--json", cwd=git_repo, env={"THRUM_TS_AUTHKEY": "x", "THRUM_TS_PORT": "1"})
    env_check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "environment")
    assert env_check["status"] == "warn"
    assert "THRUM_TS_AUTHKEY" in env_check["message"] and "THRUM_TS_PORT" not in env_check["message"]
    assert result.exit_code == 0


def test_doctor_isolates_plugin_checks(plugin_site: Path, run_cli: Invoke, git_repo: Path) -> None:
    assert run_cli("init", "--no-daemon", cwd=git_repo).exit_code == 0
    env = {"PYTHONPATH": str(plugin_site)}
    result = thrum("doctor", "--json", cwd=git_repo, env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["fake_check"]["status"] == "ok"
    assert str(git_repo.resolve()) in checks["fake_check"]["message"]
    assert checks["plugin broken"]["status"] == "fail"  # load failure
    assert result.returncode == 1

    raising = thrum("doctor", "--json", cwd=git_repo, env={**env, "FAKE_DOCTOR_RAISE": "1"})
    checks = {c["name"]: c for c in json.loads(raising.stdout)["checks"]}
    assert checks["plugin fake"]["status"] == "fail"
    assert "fake doctor exploded" in checks["plugin fake"]["message"]
    assert checks["daemon"]["status"] == "warn"  # core checks still ran
    human = thrum("doctor", cwd=git_repo, env={**env, "FAKE_DOCTOR_RAISE": "1"})
    assert human.returncode == 1
    assert "FAIL" in human.stdout and "fake doctor exploded" in human.stdout
