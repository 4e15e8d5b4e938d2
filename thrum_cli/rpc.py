"""One RPC per CLI command: resolve the repository, dial the daemon, call.

Standard library plus thrum's stdlib-only modules (SPEC §15.3): one
connection per command, dial timeout 5 s, and the method's deadline plus 2 s
of slack to wait for the reply.  A missing or refusing socket is reported as
-32010 "thrum daemon is not running — start it with: thrum daemon start"; a
repository without ``.thrum/`` as -32011.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from thrum_cli.state import get_state
from thrum_core.client import Client
from thrum_core.errors import NotInitialized
from thrum_core.paths import ThrumPaths, client_socket_path

__all__ = ["DIAL_TIMEOUT_S", "call", "connect", "resolve_paths"]

DIAL_TIMEOUT_S = 5.0


def resolve_paths(*, require_init: bool = True) -> ThrumPaths:
    """The repository layout for this invocation (``--repo``, the cwd, ``$THRUM_HOME``).

    With ``require_init`` a root whose thrum dir does not exist (``--repo``
    pointing at an uninitialised worktree) raises :class:`NotInitialized`.
    """
    state = get_state()
    paths = ThrumPaths.discover(repo_flag=state.repo, environ=state.environ)
    if require_init and not paths.thrum_dir.is_dir():
        raise NotInitialized(f"{paths.root} is not initialized (run thrum init)")
    return paths


def socket_path_for(paths: ThrumPaths) -> Path:
    """The socket a client of ``paths`` dials (``THRUM_SOCKET``, the pid file, the default)."""
    return client_socket_path(paths, get_state().environ)


def connect(paths: ThrumPaths | None = None, *, dial_timeout: float = DIAL_TIMEOUT_S) -> Client:
    """Open one connection to the daemon of this invocation's repository."""
    paths = paths or resolve_paths()
    return Client(socket_path_for(paths), dial_timeout=dial_timeout)


def call(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    deadline_s: float = 10.0,
    paths: ThrumPaths | None = None,
) -> Any:
    """Call ``method`` on the daemon and return its result (raises :class:`ThrumError`)."""
    state = get_state()
    started = time.monotonic()
    with connect(paths) as client:
        result = client.call(method, params, timeout=deadline_s)
    if state.verbose:
        import click

        click.echo(f"debug: {method} answered in {(time.monotonic() - started) * 1000:.1f} ms", err=True)
    return result
