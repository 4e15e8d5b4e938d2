"""``thrum config show`` computed locally when the daemon is down (SPEC §9.3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from thrum_plugins.rpc.config_show import REDACTED, is_secret_key, redact

Invoke = Callable[..., Result]


def _init(run_cli: Invoke, repo: Path) -> Path:
    assert run_cli("init", "--no-daemon", cwd=repo).exit_code == 0
    return repo / ".thrum" / "config.json"


def test_sources_default_file_env(run_cli: Invoke, git_repo: Path) -> None:
    config_file = _init(run_cli, git_repo)
    result = run_cli("config", "show", "--json", cwd=git_repo, env={"THRUM_WS_PORT": "0"})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"path", "config", "sources"}
    assert doc["path"] == str(config_file.resolve())
    assert doc["sources"]["daemon.local_only"] == "file"
    assert doc["sources"]["daemon.single_agent_mode"] == "file"
    assert doc["sources"]["daemon.sync_interval"] == "default"
    assert doc["sources"]["daemon.ws_port"] == "env"
    daemon = doc["config"]["daemon"]
    assert daemon["ws_port"] == 0
    assert daemon["sync_interval"] == 60
    assert daemon["local_only"] is True
    assert doc["config"]["identity"]["repo_path"] == str(git_repo.resolve())


def test_thrum_local_env_overrides_file(run_cli: Invoke, git_repo: Path) -> None:
    _init(run_cli, git_repo)
    doc = json.loads(run_cli("config", "show", "--json", cwd=git_repo, env={"THRUM_LOCAL": "off"}).stdout)
    assert doc["config"]["daemon"]["local_only"] is False
    assert doc["sources"]["daemon.local_only"] == "env"


def test_secrets_are_redacted(run_cli: Invoke, git_repo: Path) -> None:
    config_file = _init(run_cli, git_repo)
    config = json.loads(config_file.read_text())
    config["telegram"] = {"bot_token": "123:abc", "chat": "x", "password": "", "nested": [{"secret": "s"}]}
    config_file.write_text(json.dumps(config))
    result = run_cli("config", "show", "--json", cwd=git_repo)
    telegram = json.loads(result.stdout)["config"]["telegram"]
    assert telegram == {"bot_token": REDACTED, "chat": "x", "password": "", "nested": [{"secret": REDACTED}]}
    human = run_cli("config", "show", cwd=git_repo)
    assert "123:abc" not in human.stdout
    assert "daemon.sync_interval" in human.stdout and "(default)" in human.stdout


def test_redaction_rules() -> None:
    for key in ("token", "bot_token", "TS_AUTHKEY", "client_secret", "password", "apiToken", "token_file"):
        assert is_secret_key(key)
    for key in ("ws_port", "name", "tokenizer", "max_tokens_hint"):
        assert not is_secret_key(key)
    assert redact({"a": {"token": None}}) == {"a": {"token": None}}


def test_broken_config_is_an_error(run_cli: Invoke, git_repo: Path) -> None:
    config_file = _init(run_cli, git_repo)
    config_file.write_text("{not json")
    result = run_cli("config", "show", "--json", cwd=git_repo)
    assert result.exit_code == 1
    assert "not valid JSON" in json.loads(result.stdout)["error"]["message"]


def test_config_show_needs_init(run_cli: Invoke, git_repo: Path) -> None:
    result = run_cli("config", "show", "--json", cwd=git_repo)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == -32011
