"""Invoke a ``thrum`` CLI built from a given plugin manager, with click's CliRunner."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.testing import CliRunner, Result

from thrum_core.plugins.manager import PluginManager

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel


def build_cli(pm: PluginManager) -> click.Group:
    """The ``thrum`` root group holding exactly the commands ``pm``'s plugins register.

    It has the real root group's global flags and error reporting
    (:class:`thrum_cli.main.ThrumGroup`) but never consults the built-in
    command index or the installed entry points.  Without :mod:`thrum_cli`
    it is a bare ``click.Group`` named ``thrum``.
    """
    cli: click.Group
    try:
        from thrum_cli.main import ThrumGroup
        from thrum_cli.main import cli as root
    except ImportError:
        cli = click.Group("thrum")
    else:

        class PluginManagerGroup(ThrumGroup):
            """Commands come from one plugin manager only."""

            def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
                return self.commands.get(cmd_name)

            def list_commands(self, ctx: click.Context) -> list[str]:
                return sorted(self.commands)

        cli = PluginManagerGroup(
            name=root.name,
            params=list(root.params),
            callback=root.callback,
            help=root.help,
            epilog=root.epilog,
            no_args_is_help=root.no_args_is_help,
            context_settings=dict(root.context_settings),
        )
    pm.call_each("thrum_register_commands", lambda _plugin: {"cli": cli})
    return cli


class ThrumCliRunner:
    """A :class:`click.testing.CliRunner` over :func:`build_cli` of a plugin manager.

    ``env`` is applied to every invocation (``THRUM_*`` variables of the
    developer's shell are masked).  :meth:`use_kernel` points the CLI at an
    in-process kernel.  A command that talks to an in-process kernel must be
    run with :meth:`ainvoke` (in a worker thread), because the blocking client
    would otherwise stop the kernel sharing the test's thread.
    """

    def __init__(self, pm: PluginManager, env: Mapping[str, str] | None = None):
        self.pm = pm
        self.runner = CliRunner()
        self.env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("THRUM_")}
        self.env.update(env or {})
        self._cli: click.Group | None = None

    @property
    def cli(self) -> click.Group:
        """The root group (built on first use)."""
        if self._cli is None:
            self._cli = build_cli(self.pm)
        return self._cli

    def use_kernel(self, kernel: Kernel) -> None:
        """Make commands reach ``kernel``: ``THRUM_SOCKET`` and ``THRUM_HOME`` point at it."""
        self.env["THRUM_SOCKET"] = str(kernel.status["socket_path"])
        self.env["THRUM_HOME"] = str(kernel.paths.root)

    def use_repo(self, root: Path) -> None:
        """Run commands as if inside the repository at ``root`` (``THRUM_HOME``)."""
        self.env["THRUM_HOME"] = str(root)

    def invoke(self, args: Sequence[str] | str, **kwargs: Any) -> Result:
        """Run the CLI with ``args`` and return click's :class:`Result` (exceptions caught)."""
        env = {**self.env, **kwargs.pop("env", {})}
        argv = args.split() if isinstance(args, str) else list(args)
        return self.runner.invoke(self.cli, argv, env=env, **kwargs)

    async def ainvoke(self, args: Sequence[str] | str, **kwargs: Any) -> Result:
        """:meth:`invoke` in a trio worker thread, for commands that call an in-process kernel."""
        import trio

        # Build the CLI on this thread: plugin registration hooks are not thread-safe.
        _ = self.cli
        return await trio.to_thread.run_sync(lambda: self.invoke(args, **kwargs))
