"""Reading and updating ``config.json`` without pydantic (SPEC §5.4).

The CLI writes a few keys (``daemon.local_only`` from ``daemon start
--local``, ``runtime.primary``) on paths that must stay fast, so this module
does what :func:`thrum_core.config.update_config_file` does with the standard
library only: unknown keys and blocks are preserved, the file is written
atomically with mode 0600.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thrum_core.errors import ThrumError
from thrum_core.fsutil import atomic_write_json

__all__ = ["read_config_file", "update_config_file"]


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` (empty when missing); a clear error when it is broken."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ThrumError(
            f"{path} is not valid JSON: {exc}", {"reason": "config_parse", "path": str(path)}
        ) from None
    if not isinstance(data, dict):
        raise ThrumError(f"{path} must hold a JSON object", {"reason": "config_parse", "path": str(path)})
    return data


def update_config_file(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``daemon.local_only``) in ``config.json``, keeping everything else."""
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
