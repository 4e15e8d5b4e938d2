"""Runtime preset ``auggie``: Augment's CLI agent.

Augment sets ``AUGMENT_AGENT`` for the commands its agent runs. Files: the thrum block in
``AGENTS.md`` and, with ``--skills``, ``.augment/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="auggie",
    display="Augment (Auggie)",
    env_vars=("AUGMENT_AGENT",),
    markers=(".augment",),
    instructions_file="AGENTS.md",
    skills_dir=".augment/skills",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
