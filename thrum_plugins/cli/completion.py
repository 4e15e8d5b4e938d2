"""``thrum completion SHELL``: print the shell completion script (bash, zsh, fish)."""

from __future__ import annotations

import click

from thrum_core.markers import hookimpl

SUPPORTED = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice([*SUPPORTED, "powershell"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(thrum completion bash)"     (e.g. in ~/.bashrc)
    zsh:  eval "$(thrum completion zsh)"      (e.g. in ~/.zshrc)
    fish: thrum completion fish > ~/.config/fish/completions/thrum.fish
    """
    from click.shell_completion import get_completion_class

    from thrum_cli.main import COMPLETE_VAR, PROG_NAME, cli
    from thrum_core.errors import ThrumError

    if shell not in SUPPORTED:
        raise ThrumError(
            f"{shell} completion is not supported yet (supported: {', '.join(SUPPORTED)})",
            {"field": "shell", "reason": "unsupported", "allowed": list(SUPPORTED)},
            code=-32602,
        )
    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - click ships all three
        raise ThrumError(f"click has no {shell} completion")
    script = completion_class(cli, {}, PROG_NAME, COMPLETE_VAR).source()
    click.echo(script, nl=not script.endswith("\n"))


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(completion)
