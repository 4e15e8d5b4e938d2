"""Configuration: ``config.json`` + environment + flags, plugin sections, preserving writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from thrum_core.config import (
    ConfigSchema,
    DaemonConfig,
    load_config,
    parse_env_value,
    read_config_file,
    update_config_file,
)
from thrum_core.errors import ThrumError
from thrum_core.markers import hookimpl
from thrum_core.plugins.manager import PluginManager


class PeersSection(BaseModel):
    """A plugin section with an environment override."""

    model_config = ConfigDict(extra="allow")

    auto_connect: bool = True
    pairing_code_length: int = Field(16, ge=8, le=32, json_schema_extra={"env": "THRUM_TEST_PAIRING_LEN"})


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_missing_file_gives_all_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "config.json", environ={})
    assert cfg.daemon == DaemonConfig.model_validate({})
    d = cfg.daemon
    assert (d.local_only, d.sync_interval, d.sync_debounce_ms, d.sync_remote) == (True, 60, 1000, "origin")
    assert (d.ws_port, d.peer_port, d.single_agent_mode, d.log_level) == ("auto", "auto", False, "info")
    assert (d.max_message_body_bytes, d.request_timeout_ms, d.presence_timeout) == (1048576, 10000, 900)
    assert set(cfg.sources.values()) == {"default"}
    assert cfg.raw == {}


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.json", {"daemon": {"local_only": True, "ws_port": 9000, "sync_interval": 30}}
    )
    cfg = load_config(
        path, environ={"THRUM_LOCAL": "false", "THRUM_WS_PORT": "9100"}, flags={"daemon.local_only": True}
    )
    assert cfg.daemon.local_only is True
    assert cfg.sources["daemon.local_only"] == "flag"
    assert cfg.daemon.ws_port == 9100
    assert cfg.sources["daemon.ws_port"] == "env"
    assert cfg.daemon.sync_interval == 30
    assert cfg.sources["daemon.sync_interval"] == "file"
    assert cfg.sources["daemon.sync_remote"] == "default"


def test_flag_none_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"daemon": {"local_only": False}})
    cfg = load_config(path, environ={}, flags={"daemon.local_only": None})
    assert cfg.daemon.local_only is False
    assert cfg.sources["daemon.local_only"] == "file"


def test_blank_environment_value_is_ignored(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "config.json", environ={"THRUM_WS_PORT": "  "})
    assert cfg.daemon.ws_port == "auto"
    assert cfg.sources["daemon.ws_port"] == "default"


def test_env_auto_stays_a_string(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "config.json", environ={"THRUM_WS_PORT": "auto"})
    assert cfg.daemon.ws_port == "auto"
    assert cfg.sources["daemon.ws_port"] == "env"


def test_bad_environment_boolean_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ThrumError, match="THRUM_LOCAL"):
        load_config(tmp_path / "config.json", environ={"THRUM_LOCAL": "maybe"})


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("1", False, True),
        ("TRUE", False, True),
        (" yes ", False, True),
        ("on", False, True),
        ("0", True, False),
        ("False", True, False),
        ("no", True, False),
        ("off", True, False),
        ("42", 0, 42),
        (" 7 ", 3, 7),
        ("9000", "auto", 9000),
        ("auto", "auto", "auto"),
    ],
)
def test_parse_env_value(raw: str, default: object, expected: object) -> None:
    assert parse_env_value(raw, default) == expected


def test_parse_env_value_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_env_value("2", True)
    with pytest.raises(ValueError):
        parse_env_value("ten", 10)


def test_legacy_top_level_local_only(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"local_only": False})
    assert load_config(path, environ={}).daemon.local_only is False
    path = write(tmp_path / "config.json", {"local_only": False, "daemon": {"local_only": True}})
    assert load_config(path, environ={}).daemon.local_only is True


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"sync_interval": 3}, "daemon.sync_interval"),
        ({"max_message_body_bytes": 10}, "daemon.max_message_body_bytes"),
        ({"log_level": "loud"}, "daemon.log_level"),
        ({"request_timeout_ms": 5}, "daemon.request_timeout_ms"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, block: dict[str, object], field: str) -> None:
    path = write(tmp_path / "config.json", {"daemon": block})
    with pytest.raises(ThrumError) as info:
        load_config(path, environ={})
    assert info.value.data == {"field": field}
    assert field in info.value.message


def test_sync_interval_zero_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"daemon": {"sync_interval": 0}})
    assert load_config(path, environ={}).daemon.sync_interval == 0


def test_broken_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ThrumError, match="is not valid JSON"):
        read_config_file(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ThrumError, match="must hold a JSON object"):
        load_config(path, environ={})


def test_unknown_blocks_and_keys_are_preserved(tmp_path: Path) -> None:
    data = {
        "daemon": {"local_only": False, "future_knob": 3},
        "telegram": {"token": "x"},
        "project_name": "p",
    }
    path = write(tmp_path / "config.json", data)
    cfg = load_config(path, environ={})
    effective = cfg.effective()
    assert effective["telegram"] == {"token": "x"}
    assert effective["project_name"] == "p"
    assert effective["daemon"]["future_knob"] == 3
    assert effective["daemon"]["sync_remote"] == "origin"
    assert cfg.get("daemon.local_only") is False
    assert cfg.get("telegram.token") == "x"
    assert cfg.get("daemon") is cfg.daemon


def test_update_config_file_preserves_everything_else(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"daemon": {"sync_interval": 30}, "telegram": {"a": 1}})
    update_config_file(path, {"daemon.local_only": False, "runtime.primary": "claude"})
    data = json.loads(path.read_text())
    assert data == {
        "daemon": {"sync_interval": 30, "local_only": False},
        "telegram": {"a": 1},
        "runtime": {"primary": "claude"},
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A non-dict in the way is replaced by a block.
    update_config_file(path, {"telegram.a.b": 2})
    assert json.loads(path.read_text())["telegram"] == {"a": {"b": 2}}


def test_update_config_file_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert update_config_file(path, {"daemon.ws_port": 0}) == {"daemon": {"ws_port": 0}}
    assert load_config(path, environ={}).daemon.ws_port == 0


def test_plugin_sections_via_the_historic_hook(tmp_path: Path) -> None:
    class PeersPlugin:
        @hookimpl
        def thrum_add_config(self, schema: ConfigSchema) -> None:
            schema.add_section("peers", PeersSection, owner="peers")

    manager = PluginManager({})
    manager.register(PeersPlugin(), "peers")
    schema = ConfigSchema()
    manager.call_each("thrum_add_config", lambda _plugin: {"schema": schema})
    assert schema.owners["peers"] == "peers"

    path = write(tmp_path / "config.json", {"peers": {"auto_connect": False, "extra": 1}})
    cfg = load_config(path, schema, environ={"THRUM_TEST_PAIRING_LEN": "20"})
    peers = cfg.section("peers")
    assert isinstance(peers, PeersSection)
    assert (peers.auto_connect, peers.pairing_code_length) == (False, 20)
    assert cfg.sources["peers.pairing_code_length"] == "env"
    assert cfg.sources["peers.auto_connect"] == "file"
    assert cfg.get("peers.pairing_code_length") == 20

    path = write(tmp_path / "config.json", {"peers": {"pairing_code_length": 4}})
    with pytest.raises(ThrumError) as info:
        load_config(path, schema, environ={})
    assert info.value.data == {"field": "peers.pairing_code_length"}


def test_a_section_key_is_claimed_once() -> None:
    schema = ConfigSchema()
    schema.add_section("peers", PeersSection, owner="a")
    with pytest.raises(ThrumError, match=r"claimed twice.*'a'.*'b'"):
        schema.add_section("peers", PeersSection, owner="b")
    with pytest.raises(ThrumError, match="'thrum_core'"):
        schema.add_section("daemon", PeersSection, owner="c")


def test_non_object_block_is_treated_as_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"daemon": "oops"})
    cfg = load_config(path, environ={})
    assert cfg.daemon == DaemonConfig.model_validate({})
