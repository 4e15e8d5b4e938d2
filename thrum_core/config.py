"""Configuration: ``.thrum/config.json`` with sections contributed by plugins.

Precedence for every value: CLI flag > environment > ``config.json`` > default
(SPEC §5.4).  Each section is a pydantic model; a field may name an
environment variable with ``Field(json_schema_extra={"env": "THRUM_X"})``.
Unknown keys and blocks in the file are preserved on every write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thrum_core.errors import ThrumError
from thrum_core.fsutil import atomic_write_json

Source = Literal["default", "file", "env", "flag"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class DaemonConfig(BaseModel):
    """The ``daemon`` block (SPEC §5.4)."""

    model_config = ConfigDict(extra="allow")

    local_only: bool = Field(True, json_schema_extra={"env": "THRUM_LOCAL"})
    sync_interval: int = 60
    sync_debounce_ms: int = 1000
    sync_remote: str = "origin"
    ws_port: Literal["auto"] | int = Field("auto", json_schema_extra={"env": "THRUM_WS_PORT"})
    peer_port: Literal["auto"] | int = Field("auto", json_schema_extra={"env": "THRUM_TS_PORT"})
    single_agent_mode: bool = False
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    max_message_body_bytes: int = Field(1048576, ge=1024, le=3 * 1048576)
    request_timeout_ms: int = Field(10000, ge=100)
    presence_timeout: int = Field(900, ge=1)

    @field_validator("sync_interval")
    @classmethod
    def _interval(cls, v: int) -> int:
        if v != 0 and v < 5:
            raise ValueError("sync_interval is 0 (no timer) or at least 5 seconds")
        return v


class ConfigSchema:
    """The set of config sections; plugins add theirs via ``thrum_add_config``."""

    def __init__(self) -> None:
        self.sections: dict[str, type[BaseModel]] = {"daemon": DaemonConfig}
        self.owners: dict[str, str] = {"daemon": "thrum_core"}

    def add_section(self, key: str, model: type[BaseModel], owner: str = "") -> None:
        """Add a top-level section; a key may be claimed once."""
        if key in self.sections:
            raise ThrumError(f"config section {key!r} is claimed twice ({self.owners[key]!r} and {owner!r})")
        self.sections[key] = model
        self.owners[key] = owner


def parse_env_value(raw: str, annotation_default: Any) -> Any:
    """Convert an environment string to the type of the field's default."""
    text = raw.strip()
    if isinstance(annotation_default, bool):
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a boolean (1/0/true/false/yes/no/on/off), got {raw!r}")
    if isinstance(annotation_default, int):
        return int(text)
    if text.isdigit():
        return int(text)
    return text


@dataclass
class Config:
    """The effective configuration and where each value came from."""

    path: Path
    raw: dict[str, Any]
    sections: dict[str, BaseModel]
    sources: dict[str, Source] = field(default_factory=dict)

    @property
    def daemon(self) -> DaemonConfig:
        return self.sections["daemon"]  # type: ignore[return-value]

    def section(self, key: str) -> Any:
        return self.sections[key]

    def get(self, dotted: str) -> Any:
        key, _, rest = dotted.partition(".")
        value: Any = self.sections.get(key, self.raw.get(key))
        for part in filter(None, rest.split(".")):
            value = getattr(value, part) if isinstance(value, BaseModel) else value[part]
        return value

    def effective(self) -> dict[str, Any]:
        """Every section with defaults filled in, plus preserved unknown blocks."""
        out = {k: v for k, v in self.raw.items() if k not in self.sections}
        for key, model in self.sections.items():
            out[key] = model.model_dump(mode="json")
        return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` (empty when missing); a clear error when broken."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ThrumError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ThrumError(f"{path} must hold a JSON object")
    return data


def load_config(
    path: Path,
    schema: ConfigSchema | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Load ``config.json`` and apply env and flag overrides."""
    import os

    schema = schema or ConfigSchema()
    env = os.environ if environ is None else environ
    flags = dict(flags or {})
    raw = read_config_file(path)
    sources: dict[str, Source] = {}
    sections: dict[str, BaseModel] = {}
    for key, model in schema.sections.items():
        block = raw.get(key)
        data: dict[str, Any] = dict(block) if isinstance(block, dict) else {}
        if key == "daemon" and "local_only" not in data and "local_only" in raw:
            data["local_only"] = raw["local_only"]  # legacy top-level key
        for name, info in model.model_fields.items():
            dotted = f"{key}.{name}"
            sources[dotted] = "file" if name in data else "default"
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            env_name = extra.get("env")
            if isinstance(env_name, str) and env.get(env_name, "").strip():
                try:
                    data[name] = parse_env_value(env[env_name], info.default)
                except ValueError as exc:
                    raise ThrumError(f"environment variable {env_name}: {exc}") from None
                sources[dotted] = "env"
            if dotted in flags and flags[dotted] is not None:
                data[name] = flags[dotted]
                sources[dotted] = "flag"
        try:
            sections[key] = model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in (key, *first.get("loc", ())))
            raise ThrumError(f"invalid configuration {where}: {first.get('msg')}", {"field": where}) from None
    return Config(path=path, raw=raw, sections=sections, sources=sources)


def update_config_file(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys in ``config.json``, preserving everything else (mode 0600)."""
    raw = read_config_file(path)
    for dotted, value in updates.items():
        node = raw
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    atomic_write_json(path, raw, mode=0o600)
    return raw
