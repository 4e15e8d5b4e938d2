"""Runtime preset ``cursor``: Cursor (editor agent and the ``cursor-agent`` CLI).

The Cursor agent CLI sets ``CURSOR_AGENT=1``; the editor's integrated terminal carries
``CURSOR_TRACE_ID`` (a weaker signal: a person may be typing there). Files: the project rule
``.cursor/rules/thrum.mdc`` (always applied), the MCP server in ``.cursor/mcp.json`` and, with
``--skills``, ``.cursor/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="cursor",
    display="Cursor",
    env_vars=("CURSOR_AGENT",),
    ide_env_vars=("CURSOR_TRACE_ID",),
    markers=(".cursor", ".cursorrules"),
    rule_file=".cursor/rules/thrum.mdc",
    mcp_file=".cursor/mcp.json",
    skills_dir=".cursor/skills",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
