"""Helpers shared by the agent, session, team and context commands.

Standard library, click and thrum's stdlib-only modules only: these commands
make one or a few RPCs and must stay light (ARCHITECTURE.md principle 4).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

from thrum_cli.rpc import connect, resolve_paths
from thrum_core.errors import INVALID_PARAMS, METHOD_NOT_FOUND, ThrumError

if TYPE_CHECKING:
    from thrum_cli.identity import Identity
    from thrum_core.client import Client
    from thrum_core.paths import ThrumPaths

__all__ = [
    "SLACK_S",
    "Session",
    "bad_flag",
    "file_state",
    "identity_flags",
    "is_method_missing",
    "open_session",
    "parse_scopes",
    "repo_id",
    "short_ts",
    "work_counts",
    "worktree_root",
]

#: Seconds the CLI waits beyond a method's deadline (SPEC §8.5).
SLACK_S = 2.0


def bad_flag(flag: str, message: str) -> ThrumError:
    """A -32602 error about a command-line flag or argument (SPEC §15.3)."""
    return ThrumError(message, {"field": flag, "reason": "invalid"}, code=INVALID_PARAMS)


def is_method_missing(exc: ThrumError) -> bool:
    """Whether ``exc`` says the daemon has no such method (its plugin is not installed)."""
    return exc.code == METHOD_NOT_FOUND


def worktree_root(paths: ThrumPaths) -> str:
    """The worktree root the CLI reports as ``worktree`` (SPEC §15.2)."""
    return str(paths.root)


def repo_id(paths: ThrumPaths) -> str:
    """This repository's id, computed as the daemon does (SPEC §3.1)."""
    from thrum_core.ids import repo_id_for
    from thrum_core.paths import read_origin_url

    return repo_id_for(read_origin_url(paths.git_common_dir), str(paths.main_root))


class Session:
    """One connection to the daemon for a whole command, plus the caller's identity.

    ``call`` adds ``caller_agent_id`` when an identity is known and waits the
    method's deadline plus :data:`SLACK_S`.
    """

    def __init__(self, paths: ThrumPaths, client: Client, identity: Identity | None):
        self.paths = paths
        self.client = client
        self.identity = identity

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        deadline_s: float = 10.0,
        as_caller: bool = True,
    ) -> Any:
        """Call ``method``; drop ``None`` params; send the caller id unless ``as_caller`` is false."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        if as_caller and self.identity is not None:
            clean.setdefault("caller_agent_id", self.identity.agent_id)
        return self.client.call(method, clean, timeout=deadline_s + SLACK_S)


@contextlib.contextmanager
def open_session(*, identity: bool = True, paths: ThrumPaths | None = None) -> Iterator[Session]:
    """Resolve the repository (and, with ``identity``, the caller) then connect once."""
    paths = paths or resolve_paths()
    who = None
    if identity:
        from thrum_cli.identity import resolve_caller

        who = resolve_caller(paths)
    with connect(paths) as client:
        yield Session(paths, client, who)


def parse_scopes(values: tuple[str, ...], flag: str, kind: str = "scope") -> list[dict[str, str]] | None:
    """``type:value`` flags as ``[{type, value}]`` (``None`` when none were given)."""
    from thrum_core.names import parse_type_value

    out: list[dict[str, str]] = []
    for text in values:
        try:
            typ, value = parse_type_value(text, kind=kind)
        except ValueError as exc:
            raise bad_flag(flag, str(exc)) from None
        out.append({"type": typ, "value": value})
    return out or None


def read_text_arg(path: str | None, flag: str) -> str:
    """The content of ``path`` (``-`` or ``None`` = stdin)."""
    if path is None or path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise bad_flag(flag, f"cannot read {path}: {exc}") from None


def repo_relative(paths: ThrumPaths, file: str) -> str:
    """``file`` relative to the worktree root when it lies inside it, else as given (``/`` separators)."""
    absolute = os.path.abspath(file)
    root = str(paths.root)
    if absolute == root or not absolute.startswith(root.rstrip(os.sep) + os.sep):
        return file.replace(os.sep, "/").removeprefix("./")
    return os.path.relpath(absolute, root).replace(os.sep, "/")


def file_state(ctx: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """How a WorkContext touches ``path``: ``{state, additions, deletions, last_modified}`` or ``None``.

    ``uncommitted`` (the path, or an untracked directory ``dir/`` holding it,
    is in ``uncommitted_files``) wins over ``committed`` (in ``changed_files``
    or ``file_changes``).  Counts come from the ``file_changes`` entry.
    """
    entry = next(
        (c for c in ctx.get("file_changes") or () if isinstance(c, Mapping) and c.get("path") == path), None
    )
    uncommitted = any(
        isinstance(item, str) and (item == path or (item.endswith("/") and path.startswith(item)))
        for item in ctx.get("uncommitted_files") or ()
    )
    if uncommitted:
        state = "uncommitted"
    elif entry is not None or path in (ctx.get("changed_files") or ()):
        state = "committed"
    else:
        return None
    return {
        "state": state,
        "additions": int(entry.get("additions") or 0) if entry else 0,
        "deletions": int(entry.get("deletions") or 0) if entry else 0,
        "last_modified": entry.get("last_modified")
        if entry
        else (ctx.get("git_updated_at") if uncommitted else None),
    }


def _set_identity_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from thrum_cli.state import get_state

    if value is not None and param.name in ("name", "role", "module"):
        setattr(get_state(), param.name, value)
    return value


_FLAG_HELP = {
    "name": "Act as this agent.",
    "role": "Override the agent role.",
    "module": "Override the agent module.",
}


def identity_flags(*names: str) -> Any:
    """Accept the global ``--name``/``--role``/``--module`` after the command too (SPEC §15.1).

    ``names`` limits the flags added (a command whose own ``--role`` is a filter passes ``"name"``).
    """

    def decorate(fn: Any) -> Any:
        for name in reversed(names or ("name", "role", "module")):
            fn = click.option(
                f"--{name}", name, expose_value=False, callback=_set_identity_flag, help=_FLAG_HELP[name]
            )(fn)
        return fn

    return decorate


def short_ts(ts: str | None) -> str:
    """``2026-01-01T12:34:56.123456Z`` → ``2026-01-01 12:34:56`` (``-`` for none)."""
    if not ts:
        return "-"
    return ts.replace("T", " ")[:19]


def work_counts(unmerged: int, uncommitted: int) -> str:
    """``1 unmerged commit, 3 uncommitted files``: a work context's size in words."""
    commits = "commit" if unmerged == 1 else "commits"
    files = "file" if uncommitted == 1 else "files"
    return f"{unmerged} unmerged {commits}, {uncommitted} uncommitted {files}"


def ago(ts: str | None) -> str:
    """A short "how long ago" for a timestamp (``-`` for none)."""
    if not ts:
        return "-"
    from thrum_core.timefmt import now_ns, parse_ts_ns

    ns = parse_ts_ns(ts)
    if ns is None:
        return ts
    seconds = max(0, (now_ns() - ns) // 1_000_000_000)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def confirm(question: str, flag: str) -> None:
    """Ask on a TTY; elsewhere require ``flag`` (SPEC §15.3)."""
    from thrum_cli.output import stderr_is_tty

    if not (stderr_is_tty() and sys.stdin.isatty()):
        raise bad_flag(flag, f"refusing without confirmation: pass {flag}")
    if not click.confirm(question, err=True):
        raise click.Abort()
