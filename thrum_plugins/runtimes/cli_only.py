"""Runtime preset ``cli-only``: no AI tool integration, only the ``thrum`` command line.

Never detected, writes no file; chosen with ``--runtime cli-only`` to record that choice (and to keep
``init`` from generating files for a detected tool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl
from thrum_plugins.runtimes._preset import Preset

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar

PRESET = Preset(name="cli-only", display="Command line only", extra_features=("cli",))


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    register(PRESET.name, PRESET)
