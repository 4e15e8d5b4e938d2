"""Runtime preset ``codex``: OpenAI Codex CLI.

Codex puts ``CODEX_THREAD_ID`` in the environment of the commands its shell tool runs, and
``CODEX_SANDBOX`` / ``CODEX_SANDBOX_NETWORK_DISABLED`` when they run sandboxed. Files: the thrum block
in ``AGENTS.md`` and, with ``--skills``, ``.agents/skills/thrum/SKILL.md`` (Codex's repository skills).
Codex keeps MCP servers in the user's ``~/.codex/config.toml``: ``codex mcp add thrum -- thrum mcp serve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="codex",
    display="OpenAI Codex",
    env_vars=("CODEX_THREAD_ID", "CODEX_SANDBOX", "CODEX_SANDBOX_NETWORK_DISABLED"),
    markers=(".codex",),
    instructions_file="AGENTS.md",
    skills_dir=".agents/skills",
    notes="MCP: codex mcp add thrum -- thrum mcp serve",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
