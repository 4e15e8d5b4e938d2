"""The helper process of :mod:`thrum_plugins.rpc._workctx_pool`: runs work-context halves on request.

Started as ``python -m thrum_plugins.rpc._workctx_worker READ_FD WRITE_FD``; it talks to the daemon over
those two pipe ends with :class:`multiprocessing.connection.Connection` frames. It first sends
``("ready", pid)``, then answers each ``(op, args)`` request with ``(True, value)`` or ``(False, reason)``.
It exits when the daemon closes its end (also when the daemon dies).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from thrum_plugins.rpc import _workctx

#: What the daemon may ask for.
OPERATIONS: dict[str, Callable[..., Any]] = {
    "history": _workctx.history_half,
    "changes": _workctx.changes_half,
    "dates": lambda path, undated, skip: _workctx.date_paths(path, undated, skip),
    "clear": _workctx.clear_caches,
}


def serve(inbox: Connection, outbox: Connection) -> None:
    """Answer requests until the other end closes."""
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            op, args = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            outbox.send((True, OPERATIONS[op](*args)))
        except Exception as exc:
            outbox.send((False, f"{type(exc).__name__}: {exc}"))


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` holds the read and the write file descriptor."""
    read_fd, write_fd = int(argv[0]), int(argv[1])
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    try:
        serve(inbox, outbox)
    except (BrokenPipeError, EOFError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
