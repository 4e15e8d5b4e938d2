"""The ``thrum`` root group: lazy command loading, global flags, error reporting.

``get_command`` looks the name up in :mod:`thrum_cli.index`, imports only that
module and calls its ``thrum_register_commands`` on a collecting group (no
pluggy).  An unknown name, ``thrum --help`` and completion load the full
plugin manager so third-party commands appear.  The global flags (SPEC §15.1)
may come before or after the command: ``--repo``, ``--json``, ``-q`` and
``-v`` are pre-scanned out of argv (:mod:`thrum_cli.state`); ``--name``,
``--role`` and ``--module`` are root options and are also added, hidden, to
the command being run (and to the subcommands of a group) unless it defines an
option of that name itself (``team --role`` filters, ``quickstart --name``
names the new agent).  Errors are printed per SPEC §15.3
(:mod:`thrum_cli.output`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import click

from thrum_cli import index, output
from thrum_cli.state import CliState, PrescanError, get_state, prescan, set_state
from thrum_core.errors import INTERNAL_ERROR, INVALID_PARAMS, ThrumError

__all__ = ["ThrumGroup", "accept_identity_flags", "cli", "exit_now", "main", "preset_help_option"]

PROG_NAME = "thrum"
COMPLETE_VAR = "_THRUM_COMPLETE"


class CollectingGroup(click.Group):
    """The group a ``thrum_register_commands`` implementation adds its commands to."""

    def __init__(self) -> None:
        super().__init__(name=PROG_NAME)


class ThrumGroup(click.Group):
    """A click group whose commands come from plugins, loaded on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._origin: dict[str, str] = {}
        self._loaded_modules: set[str] = set()
        self._loaded_all = False
        self.conflicts: list[str] = []

    # -- loading -----------------------------------------------------------------
    def _adopt(self, commands: MutableMapping[str, click.Command], origin: str) -> None:
        for name, command in commands.items():
            existing = self._origin.get(name)
            if name in self.commands and existing != origin:
                self.conflicts.append(
                    f"command {name!r} is registered twice: by {existing!r} and by {origin!r}; "
                    "keeping the first"
                )
                output.debug(self.conflicts[-1])
                continue
            if name not in self.commands:
                self.commands[name] = command
                self._origin[name] = origin

    def load_module(self, module_name: str) -> None:
        """Import one command plugin module and add what it registers."""
        if module_name in self._loaded_modules:
            return
        self._loaded_modules.add(module_name)
        module = importlib.import_module(module_name)
        collector = CollectingGroup()
        module.thrum_register_commands(collector)
        self._adopt(collector.commands, module_name)

    def load_all(self) -> None:
        """Load every enabled plugin and add the commands each registers (failures isolated)."""
        if self._loaded_all:
            return
        self._loaded_all = True
        from thrum_core.plugins.loader import make_plugin_manager

        pm = make_plugin_manager(get_state().environ)
        collectors: dict[str, CollectingGroup] = {}

        def kwargs_for(plugin: str) -> dict[str, Any]:
            collectors[plugin] = CollectingGroup()
            return {"cli": collectors[plugin]}

        pm.call_each("thrum_register_commands", kwargs_for)
        for plugin_name in sorted(collectors, key=lambda n: (n not in index.PLUGIN_NAMES.values(), n)):
            record = pm.records.get(plugin_name)
            if record is not None and record.status != "loaded":
                continue
            origin = (record.module if record is not None else None) or plugin_name
            self._adopt(collectors[plugin_name].commands, origin)

    # -- click API -----------------------------------------------------------------
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None:
            module_name = index.COMMANDS.get(cmd_name)
            if module_name is not None and index.plugin_enabled(module_name, get_state().environ):
                self.load_module(module_name)
                command = self.commands.get(cmd_name)
            if command is None:
                self.load_all()
                command = self.commands.get(cmd_name)
        if command is not None:
            accept_identity_flags(command, ctx.help_option_names)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_all()
        return sorted(self.commands)

    # -- running -----------------------------------------------------------------
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI: pre-scan global flags, invoke, report errors, exit."""
        argv = list(sys.argv[1:] if args is None else args)
        prog_name = prog_name or PROG_NAME
        complete_var = complete_var or COMPLETE_VAR
        if os.environ.get(complete_var):
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        code = self.run(argv, prog_name, **extra)
        if standalone_mode:
            sys.stdout.flush()
            sys.exit(code)
        return code

    def run(self, argv: list[str], prog_name: str, **extra: Any) -> int:
        """Parse and run one command line; return the exit status."""
        try:
            state, rest = prescan(argv)
        except PrescanError as exc:
            set_state(CliState(json="--json" in argv))
            output.print_error(
                ThrumError(str(exc), {"field": exc.flag, "reason": "missing"}, code=INVALID_PARAMS)
            )
            return 1
        set_state(state)
        preset_help_option(self)
        if state.verbose:
            import logging

            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="debug: %(name)s: %(message)s")
        try:
            rv = super().main(rest, prog_name, COMPLETE_VAR, standalone_mode=False, obj=state, **extra)
        except ThrumError as exc:
            output.print_error(exc)
            return get_state().error_exit_code
        except click.exceptions.NoArgsIsHelpError as exc:
            if state.json:
                output.print_error(
                    ThrumError("a command is required", {"field": "command"}, code=INVALID_PARAMS)
                )
                return 1
            click.echo(exc.ctx.get_help())
            return 0
        except click.UsageError as exc:
            command = exc.ctx.command if exc.ctx is not None else None
            code = int(getattr(command, "error_exit_code", 1))
            if state.json:
                output.print_error(output.usage_error_to_thrum(exc))
            else:
                exc.show()
            return code
        except click.ClickException as exc:
            if state.json:
                output.print_error(ThrumError(exc.format_message()))
            else:
                exc.show()
            return 1
        except click.Abort:
            if state.json:
                output.print_error(ThrumError("aborted"))
            else:
                click.echo("Aborted!", err=True)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
            except OSError:
                pass
            return 1
        except Exception as exc:
            if state.verbose:
                import traceback

                traceback.print_exc()
            output.print_error(
                ThrumError(
                    f"internal error: {type(exc).__name__}: {exc}", {"reason": "bug"}, code=INTERNAL_ERROR
                )
            )
            if not state.verbose:
                output.hint("run again with -v for the traceback")
            return 1
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
        return 0


def _set_identity_flags(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    state = get_state()
    if value is not None and param.name in ("role", "module", "name"):
        setattr(state, param.name, value)
    return value


#: The identity flags every command accepts after its name (SPEC §15.1), with their parameter names.
#: The names are private so that they never collide with a command's own argument called ``name``.
_IDENTITY_FLAGS = {
    "--name": "thrum_global_name",
    "--role": "thrum_global_role",
    "--module": "thrum_global_module",
}
_IDENTITY_PARAMS = {param: flag[2:] for flag, param in _IDENTITY_FLAGS.items()}
_FLAGS_ADDED = "_thrum_identity_flags"
#: The root's help option names (its ``context_settings``); subcommands inherit them.
HELP_OPTION_NAMES = ("-h", "--help")
#: click's own help text for the help option.
_HELP_TEXT = "Show this message and exit."

# Option objects keep no per-command state (the context carries the values), so
# one hidden option per identity flag, and one help option per set of names, is
# shared by every command: building click options is a large part of a
# command's run time.
_shared_options: dict[tuple[str, ...], click.Option] = {}


def _set_global_identity(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name in _IDENTITY_PARAMS:
        setattr(get_state(), _IDENTITY_PARAMS[param.name], value)
    return value


def _identity_option(flag: str) -> click.Option:
    key = (flag, _IDENTITY_FLAGS[flag])
    option = _shared_options.get(key)
    if option is None:
        option = _shared_options[key] = click.Option(
            list(key), expose_value=False, hidden=True, callback=_set_global_identity
        )
    return option


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # What click's own help option does.
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


def preset_help_option(command: click.Command, inherited: Sequence[str] = HELP_OPTION_NAMES) -> Sequence[str]:
    """Give ``command`` its ``--help`` option now, without gettext; return the help names it passes on.

    click builds a command's help option on first use, translating its help
    text through :mod:`gettext`, whose first lookup imports :mod:`locale` (about
    a millisecond, for a text no catalog translates).  The option built here
    is the same (same names, computed as click does from the names the command
    inherits minus those its parameters take; same text; same behaviour), and
    click's own checks (``add_help_option``) still apply when it is used.  With
    a click that does not cache the option (``_help_option``) nothing is done.
    """
    names = tuple(command.context_settings.get("help_option_names", inherited))
    if not command.add_help_option or getattr(command, "_help_option", False) is not None:
        return names
    taken = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    free = tuple(name for name in dict.fromkeys(names) if name not in taken)
    if free:
        option = _shared_options.get(free)
        if option is None:
            option = _shared_options[free] = click.Option(
                [*free, "thrum_help"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                help=_HELP_TEXT,
                callback=_show_help,
            )
        command._help_option = option
    return names


def accept_identity_flags(command: click.Command, help_names: Sequence[str] = HELP_OPTION_NAMES) -> None:
    """Let ``--name``/``--role``/``--module`` follow ``command`` (and, for a group, its subcommands).

    A flag the command defines itself keeps the command's meaning. Hidden options are added once per
    command object; they set the same global state as the root options.  The help option is
    prepared too (:func:`preset_help_option`; ``help_names`` are the names the command inherits).
    """
    if getattr(command, _FLAGS_ADDED, False):
        return
    setattr(command, _FLAGS_ADDED, True)
    taken = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for flag in _IDENTITY_FLAGS:
        if flag not in taken:
            command.params.append(_identity_option(flag))
    names = preset_help_option(command, help_names)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_identity_flags(sub, names)


def _global_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Pre-scanned out of argv in practice; kept as options so --help documents them.
    state = get_state()
    if param.name == "repo" and value is not None:
        state.repo = value
    elif param.name in ("json_output", "quiet", "verbose") and value:
        setattr(state, "json" if param.name == "json_output" else param.name, True)
    return value


@click.group(
    cls=ThrumGroup,
    name=PROG_NAME,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Global flags --repo, --json, -q, -v, --name, --role and --module may also follow the command.",
)
@click.option(
    "--repo", metavar="PATH", expose_value=False, callback=_global_flag, help="Repository to act on."
)
@click.option(
    "--json", "json_output", is_flag=True, expose_value=False, callback=_global_flag, help="Print JSON."
)
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_global_flag, help="No hints.")
@click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, callback=_global_flag, help="Debug to stderr."
)
@click.option("--role", expose_value=False, callback=_set_identity_flags, help="Override the agent role.")
@click.option("--module", expose_value=False, callback=_set_identity_flags, help="Override the agent module.")
@click.option("--name", expose_value=False, callback=_set_identity_flags, help="Act as this agent.")
def cli() -> None:
    """thrum: let AI coding agents on one repository message each other."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``thrum``).

    Called without ``argv`` (the ``thrum`` executable, ``python -m thrum_cli``)
    it is the process's entry, and a finished built-in command ends the
    process at once (:func:`exit_now`).  Callers that pass ``argv`` (tests,
    wrappers) get the usual :class:`SystemExit`.
    """
    if argv is not None:
        cli.main(args=argv, prog_name=PROG_NAME)
        return
    try:
        cli.main(prog_name=PROG_NAME)
    except SystemExit as exc:
        exit_now(exc.code)
        raise


def exit_now(code: object) -> None:
    """End the process with status ``code`` without tearing the interpreter down, when that is safe.

    Python's shutdown (joining threads, ``atexit`` callbacks, collecting and
    freeing every object and module) takes a one-RPC command about as long as
    all of thrum's own work; the command's output is complete by then, so the
    process flushes stdout and stderr and leaves with :func:`os._exit`.  It
    does so only when nothing depends on the teardown: no ``atexit`` callback
    is registered (``logging``, ``weakref.finalize``, coverage and the like
    register one), no other thread runs, no third-party command was loaded
    (plugin code may leave files for the garbage collector to close), Python
    was not asked to go interactive (``-i``), and the status is an integer.
    Otherwise, or if flushing fails, it returns and the caller exits normally.
    """
    import atexit

    if code is None:
        code = 0
    if not isinstance(code, int) or isinstance(code, bool) or sys.flags.inspect:
        return
    if cli._loaded_all or getattr(atexit, "_ncallbacks", lambda: 1)() != 0:
        return
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # closed, broken or replaced streams: Python's own shutdown reports it
        return
    os._exit(code & 0xFF)
