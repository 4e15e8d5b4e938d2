"""The kernel: plugin registries, the event store and the trio nursery tree.

``Kernel.run`` follows hypercorn's shape: ``run(*, shutdown_trigger,
task_status)``.  Its nursery tree is::

    root
    ├── writer          (the single writer of the event store)
    ├── services        (one supervised scope per registered service)
    └── transports      (one task per listener; connections below them)

Shutdown stops the listeners, gives in-flight requests up to 5 s, cancels the
services, drains the writer and runs ``thrum_shutdown`` hooks.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from thrum_core import __version__
from thrum_core.config import Config, ConfigSchema, load_config
from thrum_core.events.store import EventStore
from thrum_core.events.types import EventTypeRegistry, StoredEvent
from thrum_core.interfaces import Connection
from thrum_core.paths import ThrumPaths
from thrum_core.plugins.manager import PluginManager
from thrum_core.plugins.registry import Registry
from thrum_core.rpc.dispatcher import Dispatcher
from thrum_core.rpc.spec import CallContext, MethodRegistry

log = logging.getLogger("thrum.kernel")

SHUTDOWN_INFLIGHT_GRACE_S = 5.0
SHUTDOWN_HOOK_DEADLINE_S = 10.0
SHUTDOWN_SERVICES_GRACE_S = 10.0
SERVICE_RESTART_MAX_BACKOFF_S = 60.0

Service = Callable[..., Awaitable[None]]


class Kernel:
    """The running daemon's core: registries, store, dispatcher, connections.

    Plugins reach everything through this object: ``kernel.emit`` to write
    events, ``kernel.store.reader()`` to query, ``kernel.connections`` to push,
    ``kernel.status`` to publish state (``sync_state``, ``ws_port``, ...).
    """

    def __init__(
        self,
        paths: ThrumPaths,
        pm: PluginManager,
        *,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
        config: Config | None = None,
        daemon_id: str | None = None,
        repo_id: str | None = None,
    ):
        self.paths = paths
        self.pm = pm
        self.environ = dict(os.environ if environ is None else environ)
        self.version = __version__

        self.config_schema = ConfigSchema()
        self.pm.call_each("thrum_add_config", lambda _plugin: {"schema": self.config_schema})
        self.config = config or load_config(
            paths.config_file, self.config_schema, environ=self.environ, flags=flags
        )

        self.identity: dict[str, Any] = dict(self.config.raw.get("identity") or {})
        self.daemon_id: str = daemon_id or self.identity.get("daemon_id") or _new_daemon_id()
        self.repo_id: str = repo_id or _compute_repo_id(paths)

        self.methods = MethodRegistry()
        self.pm.collect("thrum_register_rpc_methods", self.methods)
        self.transports: Registry[Any] = self.pm.collect("thrum_register_transports", Registry("transport"))
        self.sync_backends: Registry[Any] = self.pm.collect(
            "thrum_register_sync_backends", Registry("sync backend")
        )
        self.runtimes: Registry[Any] = self.pm.collect("thrum_register_runtimes", Registry("runtime"))
        self.backup_targets: Registry[Any] = self.pm.collect(
            "thrum_register_backup_targets", Registry("backup target")
        )
        self.notifiers: Registry[Any] = self.pm.collect("thrum_register_notifiers", Registry("notifier"))
        self.services: Registry[Service] = self.pm.collect("thrum_register_services", Registry("service"))
        self.event_types = EventTypeRegistry.from_plugins(self.pm)

        self.dispatcher = Dispatcher(
            self, self.methods, default_deadline_s=self.config.daemon.request_timeout_ms / 1000
        )
        self.connections: dict[str, Connection] = {}
        self.status: dict[str, Any] = {"sync_state": "stopped", "ws_port": None, "peers": 0}
        self.state: dict[str, dict[str, Any]] = {}
        self.store: EventStore | None = None
        self.open_report: Any = None
        self.started_monotonic: float | None = None
        self.started_at: str | None = None
        self.ready = False
        self.shutting_down = False
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self._transport_objects: list[Any] = []
        self._identity_block: dict[str, Any] | None = None
        self._services_done = trio.Event()
        self._ready_event = trio.Event()
        self._services_scope: trio.CancelScope | None = None
        self._transports_scope: trio.CancelScope | None = None

    # -- plugin helpers --------------------------------------------------------
    def plugin_state(self, name: str) -> dict[str, Any]:
        """A private, per-plugin dict for runtime state."""
        return self.state.setdefault(name, {})

    def register_connection(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def unregister_connection(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)

    def connections_for_session(self, session_id: str) -> list[Connection]:
        return [c for c in self.connections.values() if c.session_id == session_id]

    # -- data path ----------------------------------------------------------------
    async def emit(
        self, events: Sequence[dict[str, Any]], *, ctx: CallContext | None = None, source: str = "local"
    ) -> list[StoredEvent]:
        """Write events durably and project them; return them as stored.

        Once called from a request, the request runs to completion even past
        its deadline (SPEC §8.5).
        """
        if self.store is None:
            raise RuntimeError("the event store is not open")
        if ctx is not None:
            ctx.mark_submitted()
        return await self.store.submit(list(events), source=source)

    def _on_applied(self, events: list[StoredEvent]) -> None:
        """Run observers for a committed writer batch (never delays replies)."""
        notifiers = self.notifiers.entries() if len(self.notifiers) else ()
        observe = self.pm.notifier("thrum_event_applied", "event", kernel=self)
        if observe is None and not notifiers:
            return
        for event in events:
            if observe is not None:
                observe(event)
            for entry in notifiers:
                try:
                    entry.obj.event_applied(event, self)
                except Exception:
                    log.exception("notifier %s failed", entry.name)

    # -- lifecycle ---------------------------------------------------------------
    async def wait_ready(self) -> None:
        """Return once the daemon serves (its transports listen).

        For a service's start-up work that need not delay ``ready``: loading a
        heavy library, a first sync cycle.
        """
        await self._ready_event.wait()

    def open_store(self) -> EventStore:
        """Prepare sync backends, repair torn lines, open the projection, catch up."""
        for entry in self.sync_backends.entries():
            prepare = getattr(entry.obj, "prepare", None)
            if prepare is None:
                continue
            try:
                prepare(self)
            except Exception:
                log.exception("sync backend %s failed to prepare", entry.name)
        # Without a sync backend (or if it failed) the store still needs its directory.
        self.paths.sync_dir.mkdir(parents=True, exist_ok=True)
        store = EventStore(self.paths, self.event_types, self.daemon_id, on_applied=self._on_applied)
        report = self.open_report = store.open()
        if report.rebuilt:
            log.info(
                "projection rebuilt in %.1f s (%s): %d events from %d lines",
                report.seconds,
                report.rebuild_reason,
                report.new,
                report.lines,
            )
        else:
            log.info("projection opened in %.1f s: %d new events caught up", report.seconds, report.new)
        self.store = store
        return store

    async def run(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
        task_status: trio.TaskStatus[Kernel] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``shutdown_trigger`` returns (or the task is cancelled)."""
        self.trio_token = trio.lowlevel.current_trio_token()
        self.started_monotonic = time.monotonic()
        from thrum_core.timefmt import format_ts

        self.started_at = format_ts(time.time_ns())
        store: EventStore = (
            self.store if self.store is not None else await trio.to_thread.run_sync(self.open_store)
        )
        await self._run_hooks("thrum_startup", None)
        try:
            async with trio.open_nursery() as root:
                await root.start(store.run_writer)
                self._services_scope = trio.CancelScope()
                root.start_soon(self._run_services, self._services_scope)
                self._transports_scope = trio.CancelScope()
                await root.start(self._run_transports, self._transports_scope)
                self.ready = True
                self._ready_event.set()
                log.info("ready (pid %s, socket %s)", os.getpid(), self.status.get("socket_path"))
                task_status.started(self)
                root.start_soon(self._build_deferred_params)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                await self._shutdown(store)
        finally:
            self.ready = False

    async def _build_deferred_params(self) -> None:
        """Build the parameter validators that ``Params`` leaves for first use, one per tick.

        Started once the daemon serves, so that start-up does not wait for
        them; a request arriving meanwhile waits for at most one model.
        """
        for model in self.methods.unbuilt_params():
            await trio.sleep(0)
            if self.shutting_down:
                return
            try:
                model.model_rebuild(raise_errors=False)
            except Exception:  # it is built (and fails visibly) on first use instead
                log.debug("building the validator of %s failed", model.__name__, exc_info=True)

    async def _shutdown(self, store: EventStore) -> None:
        log.info("shutting down")
        self.shutting_down = True
        for transport in self._transport_objects:
            stop = getattr(transport, "stop_accepting", None)
            if stop is not None:
                stop()
        with trio.move_on_after(SHUTDOWN_INFLIGHT_GRACE_S):
            await self.dispatcher.wait_idle()
        if self._transports_scope is not None:
            self._transports_scope.cancel()
        if self._services_scope is not None:
            self._services_scope.cancel()
        # A cancelled service (a sync cycle) may still hand its local steps to
        # the writer; give it a bounded moment before the writer drains.
        with trio.move_on_after(SHUTDOWN_SERVICES_GRACE_S):
            await self._services_done.wait()
        await store.stop_writer()
        await self._run_hooks("thrum_shutdown", SHUTDOWN_HOOK_DEADLINE_S)

    async def _run_hooks(self, hook_name: str, deadline: float | None) -> None:
        for result in self.pm.notify(hook_name, kernel=self):
            if inspect.isawaitable(result):
                try:
                    if deadline is None:
                        await result
                    else:
                        with trio.move_on_after(deadline):
                            await result
                except Exception:
                    log.exception("%s hook failed", hook_name)

    async def _run_transports(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for entry in self.transports.entries():
                    try:
                        transport = entry.obj(self)
                    except Exception:
                        log.exception("transport %s could not be created", entry.name)
                        continue
                    if transport is None:
                        continue
                    self._transport_objects.append(transport)
                    try:
                        await nursery.start(transport.serve)
                    except Exception:
                        log.exception("transport %s failed to start", entry.name)
                        if entry.name == "unix":
                            raise
                task_status.started()

    async def _run_services(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    for entry in self.services.entries():
                        nursery.start_soon(self._supervise, entry.name, entry.obj)
        finally:
            self._services_done.set()

    async def _supervise(self, name: str, service: Service) -> None:
        """Run a service; log and restart it (with backoff) when it fails."""
        backoff = 1.0
        while True:
            started = time.monotonic()
            try:
                await service(self)
                log.info("service %s finished", name)
                return
            except Exception:
                log.exception("service %s failed; restarting in %.0f s", name, backoff)
            if time.monotonic() - started > 5 * SERVICE_RESTART_MAX_BACKOFF_S:
                backoff = 1.0
            await trio.sleep(backoff)
            backoff = min(backoff * 2, SERVICE_RESTART_MAX_BACKOFF_S)

    # -- introspection -------------------------------------------------------------
    def uptime_ms(self) -> int:
        if self.started_monotonic is None:
            return 0
        return int((time.monotonic() - self.started_monotonic) * 1000)

    def identity_block(self) -> dict[str, Any]:
        """``{daemon_id, repo_name, hostname, repo_path, git_origin_url, init_at}`` (computed once)."""
        if self._identity_block is None:
            self._identity_block = self._compute_identity_block()
        return self._identity_block

    def _compute_identity_block(self) -> dict[str, Any]:
        from thrum_core.paths import read_origin_url

        return {
            "daemon_id": self.daemon_id,
            "repo_name": self.paths.main_root.name,
            "hostname": socket.gethostname(),
            "repo_path": str(self.paths.main_root),
            "git_origin_url": read_origin_url(self.paths.git_common_dir),
            "init_at": self.identity.get("init_at"),
        }


def _new_daemon_id() -> str:
    from thrum_core.ids import new_daemon_id

    return new_daemon_id()


def _compute_repo_id(paths: ThrumPaths) -> str:
    from thrum_core.ids import repo_id_for
    from thrum_core.paths import read_origin_url

    return repo_id_for(read_origin_url(paths.git_common_dir), str(paths.main_root))
