"""``runtime.list`` and ``runtime.show`` (SPEC §9.3), and the ``runtime`` config section (§5.4).

The presets are the daemon's runtime registry (``thrum_register_runtimes``). ``detected`` uses the
daemon's view: its environment (the tool it was started from, if any) and the markers in the main
worktree; ``thrum runtime list`` computes the same result in the CLI, with the caller's environment,
when the daemon is not running.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import CallContext, Params

if TYPE_CHECKING:
    from thrum_core.config import ConfigSchema
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import MethodRegistrar


class ShowParams(Params):
    """``runtime.show`` params."""

    name: str


def configured_primary(kernel: Kernel) -> str | None:
    """``runtime.primary`` of the daemon's configuration (``None`` when empty)."""
    try:
        value = kernel.config.get("runtime.primary")
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


def _detect_hook(kernel: Kernel) -> Any:
    return getattr(kernel.pm.hook, "thrum_detect_runtime", None)


async def runtime_list(params: None, ctx: CallContext) -> dict[str, Any]:
    """Every registered preset, which one the signals point at, and the configured default."""
    from thrum_plugins.runtimes._select import list_runtimes

    kernel = ctx.kernel
    return list_runtimes(
        kernel.runtimes,
        environ=os.environ,
        root=kernel.paths.main_root,
        configured=configured_primary(kernel),
        hook=_detect_hook(kernel),
    )


async def runtime_show(params: ShowParams, ctx: CallContext) -> dict[str, Any]:
    """One preset with its templates; -32001 ``runtime`` for an unknown name."""
    from thrum_core.errors import NotFound
    from thrum_plugins.runtimes._select import describe_runtime, select_runtime

    kernel = ctx.kernel
    preset = kernel.runtimes.get(params.name)
    if preset is None:
        raise NotFound("runtime", params.name, known=kernel.runtimes.names())
    chosen, _ = select_runtime(
        kernel.runtimes, environ=os.environ, root=kernel.paths.main_root, hook=_detect_hook(kernel)
    )
    return describe_runtime(params.name, preset, detected=chosen == params.name)


@hookimpl
def thrum_add_config(schema: ConfigSchema) -> None:
    from pydantic import BaseModel, ConfigDict

    class RuntimeConfig(BaseModel):
        """The ``runtime`` block: ``primary`` is the default runtime preset (``""`` = none)."""

        model_config = ConfigDict(extra="allow")

        primary: str = ""

    schema.add_section("runtime", RuntimeConfig, owner="runtimes.rpc")


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    both = {"unix", "ws"}
    register("runtime.list", runtime_list, auth="open", transports=both)
    register("runtime.show", runtime_show, params=ShowParams, auth="open", transports=both)
