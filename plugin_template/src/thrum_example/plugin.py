"""The ``example`` thrum plugin.

It contributes, through thrum's hooks:

* a runtime preset ``example`` (``thrum_register_runtimes``) and a detector for
  it (``thrum_detect_runtime``);
* an RPC method ``example.hello`` with a typed params model
  (``thrum_register_rpc_methods``);
* a CLI command ``thrum example-hello`` that calls that method
  (``thrum_register_commands``).

Keep this module light: the CLI imports it to build its command list, so
heavy libraries (pydantic, the handlers) live in ``_rpc.py`` and are imported
inside the hook that needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.plugins.registry import Registrar
    from thrum_core.rpc.spec import MethodRegistrar

RUNTIME_NAME = "example"
DETECT_VARIABLE = "EXAMPLE_TOOL_SESSION"


class ExampleRuntime:
    """A runtime preset: how thrum recognises "Example Tool" and what files it writes for it."""

    name = RUNTIME_NAME
    display = "Example Tool"

    def detect(self, environ: Mapping[str, str], cwd: Path) -> bool:
        """Example Tool sets ``EXAMPLE_TOOL_SESSION`` in the processes it starts."""
        return bool(environ.get(DETECT_VARIABLE))

    def files(self, context: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """One instructions file, written once (the user may edit it afterwards)."""
        agent = context.get("agent_name", "default_agent")
        body = (
            "# thrum\n\n"
            f"You are `{agent}`. Check your inbox with `thrum inbox` and reply with `thrum reply`.\n"
        )
        return [(".example-tool/thrum.md", body, "skip-if-exists")]


@click.command("example-hello")
@click.option("--name", "who", default="world", show_default=True, help="Who to greet.")
@click.option("--shout", is_flag=True, help="Greet loudly.")
def example_hello(who: str, shout: bool) -> None:
    """Ask the daemon's example plugin to say hello."""
    from thrum_cli.output import emit
    from thrum_cli.rpc import call

    result = call("example.hello", {"name": who, "shout": shout})
    emit(result, lambda r: click.echo(r["greeting"]))


@hookimpl
def thrum_register_runtimes(register: Registrar) -> None:
    """Register the ``example`` runtime preset."""
    register(RUNTIME_NAME, ExampleRuntime())


@hookimpl
def thrum_detect_runtime(environ: Mapping[str, str], cwd: Path) -> str | None:
    """Claim the session when Example Tool started it; otherwise let other plugins answer."""
    return RUNTIME_NAME if ExampleRuntime().detect(environ, cwd) else None


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    """Register ``example.hello`` (namespaced ``<plugin>.<verb>``, SPEC §17)."""
    from thrum_example._rpc import HelloParams, hello

    register(
        "example.hello", hello, params=HelloParams, auth="open", transports={"unix", "ws"}, deadline_s=5.0
    )


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    """Add ``thrum example-hello``."""
    cli.add_command(example_hello)
