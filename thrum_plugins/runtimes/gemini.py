"""Runtime preset ``gemini``: Gemini CLI.

Gemini CLI sets ``GEMINI_CLI=1`` for the commands its shell tool runs. Files: the thrum block in
``GEMINI.md`` (its context file), the MCP server in ``.gemini/settings.json`` and, with ``--skills``,
``.gemini/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="gemini",
    display="Gemini CLI",
    env_vars=("GEMINI_CLI",),
    markers=(".gemini",),
    instructions_file="GEMINI.md",
    mcp_file=".gemini/settings.json",
    skills_dir=".gemini/skills",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
