"""Runtime preset ``amp``: Sourcegraph Amp.

Amp puts ``AMP_CURRENT_THREAD_ID`` in the environment of the commands it runs. Files: the thrum block
in ``AGENTS.md`` and, with ``--skills``, ``.agents/skills/thrum/SKILL.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(
    name="amp",
    display="Sourcegraph Amp",
    env_vars=("AMP_CURRENT_THREAD_ID",),
    instructions_file="AGENTS.md",
    skills_dir=".agents/skills",
)


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
