"""Runtime preset ``opencode``: OpenCode.

OpenCode sets ``OPENCODE=1`` in its own environment, which the commands it runs inherit. Files: the
thrum block in ``AGENTS.md`` (its rules file), the MCP server in ``opencode.json`` (``mcp.thrum``, a
local command) and, with ``--skills``, ``.opencode/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="opencode",
    display="OpenCode",
    env_vars=("OPENCODE",),
    markers=(".opencode", "opencode.json", "opencode.jsonc"),
    instructions_file="AGENTS.md",
    mcp_file="opencode.json",
    mcp_style="opencode",
    skills_dir=".opencode/skills",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
