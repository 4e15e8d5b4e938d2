"""Protocols that plugin objects implement: transports, connections, sync
backends, runtimes, backup targets and notifiers.

They are structural (``typing.Protocol``): a plugin needs no base class, only
the attributes and methods below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import trio

    from thrum_core.kernel import Kernel
    from thrum_core.paths import ThrumPaths


@runtime_checkable
class Connection(Protocol):
    """A client connection that can receive pushed notifications.

    ``notify`` must never block: it queues the notification and returns
    ``False`` when the connection is closed or its outbound queue is full (in
    which case the connection is closed as a slow consumer, SPEC §8.2).
    """

    id: str
    transport: str
    session_id: str | None
    user_id: str | None

    def notify(self, method: str, params: dict[str, Any]) -> bool: ...

    def close(self) -> None: ...

    def add_close_callback(self, callback: Any) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """A listener serving JSON-RPC (Unix socket, WebSocket, ...)."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None:
        """Bind, call ``task_status.started(address)``, then serve until cancelled."""
        ...


@runtime_checkable
class SyncBackend(Protocol):
    """Moves event logs between clones (git, tailscale peers, ...)."""

    name: str

    def init_repo(self, paths: ThrumPaths, options: Mapping[str, Any]) -> dict[str, Any]:
        """Prepare the repository during ``thrum init`` (e.g. create the sync branch)."""
        ...

    def prepare(self, kernel: Kernel) -> None:
        """Check and repair local state at daemon start, before catch-up."""
        ...

    async def run(self, kernel: Kernel, *, task_status: trio.TaskStatus[Any] = ...) -> None:
        """The backend's loop; cancelled at shutdown."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON status for ``sync.status``/``health``."""
        ...


@runtime_checkable
class Runtime(Protocol):
    """An AI-tool preset: what files ``init``/``quickstart`` generate for it."""

    name: str
    display: str

    def detect(self, environ: Mapping[str, str], cwd: Path) -> bool: ...

    def files(self, context: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """``(relative path, content, policy)`` with policy ``managed`` | ``skip-if-exists`` | ``merge``."""
        ...


@runtime_checkable
class BackupTarget(Protocol):
    """Receives a finished backup (``current/`` and its manifest)."""

    type: str

    def store(self, current_dir: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Notifier(Protocol):
    """Delivers notifications for applied events (push, webhook, ...).

    ``event_applied`` runs on the daemon's event loop after each durable,
    projected event and must not block.
    """

    name: str

    def event_applied(self, event: Any, kernel: Kernel) -> None: ...
