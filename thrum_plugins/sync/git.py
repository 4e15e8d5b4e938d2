"""Git sync (SPEC §11): the ``git`` sync backend, the sync loop service, the local-write
trigger and the ``doctor`` checks.

Thin on purpose: every hook implementation hands over to
:mod:`thrum_plugins.sync._git_service` (trio + the state machine) and
:mod:`thrum_plugins.sync._git_impl` (pygit2), imported on first use, so loading
the plugin costs nothing.  The ``sync.*`` and ``context.sync`` RPC methods live
in :mod:`thrum_plugins.rpc.sync`, the CLI in :mod:`thrum_plugins.cli.sync`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.doctor import DoctorReport
    from thrum_core.events.types import AppliedEvent
    from thrum_core.kernel import Kernel
    from thrum_core.paths import ThrumPaths
    from thrum_core.plugins.registry import Registrar

__all__ = ["BACKEND_NAME", "SERVICE_NAME", "GitSyncBackend"]

BACKEND_NAME = "git"
SERVICE_NAME = "sync.git"
#: ``kernel.plugin_state`` key (same as ``_git_service.STATE_KEY``; repeated to stay import-free).
_STATE_KEY = "sync.git"


def _configured_remote(paths: ThrumPaths) -> str:
    """``daemon.sync_remote`` from ``config.json`` (default ``origin``)."""
    from thrum_core.config import read_config_file

    try:
        daemon = read_config_file(paths.config_file).get("daemon")
    except Exception:
        return "origin"
    remote = daemon.get("sync_remote") if isinstance(daemon, dict) else None
    return remote if isinstance(remote, str) and remote else "origin"


class GitSyncBackend:
    """The ``git`` :class:`~thrum_core.interfaces.SyncBackend` (one per plugin manager)."""

    name = BACKEND_NAME

    def __init__(self) -> None:
        self._kernel: Kernel | None = None

    def init_repo(self, paths: ThrumPaths, options: Mapping[str, Any]) -> dict[str, Any]:
        """``thrum init`` step 5: create or adopt the ``a-sync`` branch and add its worktree."""
        if options.get("dry_run"):
            return {"skipped": "dry run"}
        from thrum_plugins.sync._git_service import init_repo

        remote = None if options.get("local_only") else _configured_remote(paths)
        return init_repo(paths, remote)

    def prepare(self, kernel: Kernel) -> None:
        """Daemon start, before the store opens: check and repair the worktree (§11.1)."""
        from thrum_plugins.sync._git_service import service_for

        self._kernel = kernel
        service_for(kernel).prepare()

    async def run(self, kernel: Kernel, *, task_status: Any = None) -> None:
        """The sync loop; returns at once when the worktree could not be prepared."""
        from thrum_plugins.sync._git_service import service_for

        self._kernel = kernel
        if task_status is None:
            await service_for(kernel).run()
        else:
            await service_for(kernel).run(task_status=task_status)

    def status(self) -> dict[str, Any]:
        """The ``sync.status`` result for the kernel this backend serves."""
        kernel = self._kernel
        svc = kernel.plugin_state(_STATE_KEY).get("service") if kernel is not None else None
        if svc is None:
            return {"running": False, "sync_state": "stopped"}
        return svc.status()


async def _run_sync_service(kernel: Kernel) -> None:
    backend = kernel.sync_backends.get(BACKEND_NAME)
    if not isinstance(backend, GitSyncBackend):
        backend = GitSyncBackend()
    await backend.run(kernel)


@hookimpl
def thrum_register_sync_backends(register: Registrar) -> None:
    register(BACKEND_NAME, GitSyncBackend())


@hookimpl
def thrum_register_services(register: Registrar) -> None:
    register(SERVICE_NAME, _run_sync_service)


@hookimpl
def thrum_event_applied(event: AppliedEvent, kernel: Kernel) -> None:
    """Local writes start the debounced cycle (§11.2); synced and peer events do not."""
    if event.source != "local" or event.state == "duplicate":
        return
    svc = kernel.plugin_state(_STATE_KEY).get("service")
    if svc is not None:
        svc.note_local_write()


@hookimpl
def thrum_doctor(report: DoctorReport) -> None:
    """Sync worktree health, transport (CLI fallback) and remote reachability (§15.6)."""
    from thrum_plugins.sync._git_doctor import doctor_checks

    doctor_checks(report)
