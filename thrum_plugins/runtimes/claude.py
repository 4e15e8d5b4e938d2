"""Runtime preset ``claude``: Claude Code.

Claude Code sets ``CLAUDECODE=1`` in every process it runs (its Bash tool, hooks, status line);
``CLAUDE_CODE_ENTRYPOINT`` names how it was started. Files: the thrum block in ``CLAUDE.md``, the MCP
server in ``.mcp.json`` (project scope), a ``SessionStart`` hook in ``.claude/settings.json`` that runs
``thrum prime``, and with ``--skills`` the skill ``.claude/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="claude",
    display="Claude Code",
    env_vars=("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"),
    markers=(".claude",),
    instructions_file="CLAUDE.md",
    mcp_file=".mcp.json",
    session_hook_file=".claude/settings.json",
    skills_dir=".claude/skills",
    notes="the SessionStart hook prints `thrum prime` into each new session",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
