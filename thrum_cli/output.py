"""CLI output and error reporting (SPEC §15.3).

Human output goes to stdout, warnings and hints to stderr (hints are
suppressed by ``--quiet`` or ``THRUM_NO_HINTS``).  With ``--json`` a command
prints exactly one JSON document (2-space indent) on stdout, and an error is
printed as ``{"error": {"code", "message", "data"?}}`` on stdout; without it an
error is ``Error: <message>`` on stderr.  Errors exit 1 unless the command says
otherwise (``wait`` exits 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from thrum_cli.state import get_state, hints_enabled
from thrum_core.errors import INVALID_PARAMS, ThrumError

__all__ = [
    "debug",
    "dumps",
    "echo",
    "emit",
    "error_object",
    "exit_with",
    "hint",
    "print_error",
    "usage_error_to_thrum",
    "warn",
]


def dumps(obj: Any) -> str:
    """The JSON text the CLI prints: 2-space indent, non-ASCII kept."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def echo(text: str = "", *, err: bool = False) -> None:
    """Print a line of human output (stdout, or stderr with ``err``)."""
    click.echo(text, err=err)


def warn(text: str) -> None:
    """Print a warning on stderr (not suppressed by ``--quiet``)."""
    click.echo(f"Warning: {text}", err=True)


def hint(text: str) -> None:
    """Print a hint on stderr unless hints are turned off."""
    if hints_enabled():
        click.echo(text, err=True)


def debug(text: str) -> None:
    """Print a debug line on stderr with ``-v/--verbose``."""
    if get_state().verbose:
        click.echo(f"debug: {text}", err=True)


def _render_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def render_human(result: Any) -> None:
    """A generic human rendering: ``key: value`` lines for an object, one line per item for a list."""
    if isinstance(result, dict):
        width = max((len(str(k)) for k in result), default=0)
        for key, value in result.items():
            echo(f"{str(key) + ':':<{width + 1}} {_render_value(value)}")
    elif isinstance(result, list):
        for item in result:
            echo(_render_value(item))
    elif result is not None:
        echo(_render_value(result))


def emit(result: Any, human: Callable[[Any], None] | None = None) -> None:
    """Print a command's result: one JSON document with ``--json``, else ``human(result)``."""
    if get_state().json:
        click.echo(dumps(result))
    elif human is not None:
        human(result)
    else:
        render_human(result)


def error_object(exc: ThrumError) -> dict[str, Any]:
    """The ``{"error": {...}}`` document for ``exc``."""
    return {"error": exc.to_error_object()}


def print_error(exc: ThrumError) -> None:
    """Report ``exc`` as SPEC §15.3 says, according to ``--json``."""
    if get_state().json:
        click.echo(dumps(error_object(exc)))
    else:
        click.echo(f"Error: {exc.message}", err=True)


def exit_with(code: int) -> NoReturn:
    """Stop the command with exit status ``code`` (output already printed)."""
    raise click.exceptions.Exit(code)


def _param_field(param: click.Parameter | None) -> str | None:
    if param is None:
        return None
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
    if isinstance(param, click.Option) and opts:
        return opts[0]
    return param.name


def usage_error_to_thrum(exc: click.UsageError) -> ThrumError:
    """A click usage error as -32602 with ``data.field`` = the flag or argument (SPEC §15.3)."""
    field: str | None = None
    if isinstance(exc, (click.NoSuchOption, click.BadOptionUsage)):
        field = exc.option_name
    elif isinstance(exc, click.BadParameter):
        field = _param_field(exc.param)
    data: dict[str, Any] = {"field": field or "args", "reason": "usage"}
    return ThrumError(exc.format_message(), data, code=INVALID_PARAMS)


def stderr_is_tty() -> bool:
    """Whether stderr is a terminal (confirmation prompts need one)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
