"""The plugin contract: every ``thrum_*`` hook.

Hooks describe; objects do.  A hook is a synchronous registration or
notification.  Async work lives in the objects a hook registers (transport
``serve()``, sync backend ``sync()``, RPC handlers, services) and the kernel
runs them in its nurseries.

Registration hooks receive a *registrar*.  The plugin manager calls each
plugin's implementation with a registrar bound to that plugin, so every
registration is stamped with its owner and a duplicate name is refused with an
error that names both plugins.

``docs/hooks.md`` lists every hook below; ``tests/meta/test_hookspecs.py``
keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from thrum_core.config import ConfigSchema
    from thrum_core.doctor import DoctorReport
    from thrum_core.events.types import AppliedEvent, EventTypeRegistrar
    from thrum_core.kernel import Kernel
    from thrum_core.plugins.registry import Registrar
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

hookspec = pluggy.HookspecMarker("thrum")


@hookspec
def thrum_add_config(schema: ConfigSchema) -> None:
    """Contribute a configuration section.

    :param schema: call ``schema.add_section(key, Model)`` with a top-level
        ``config.json`` key the plugin owns and a pydantic model whose field
        defaults are the section's defaults.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    """Register the JSON-RPC methods of a feature.

    :param register: ``register(name, handler, *, params=Model, auth="open",
        transports=("unix", "ws"), deadline_s=10.0, result=None)``.
        ``handler`` is ``async def handler(params, ctx: CallContext)`` and
        returns a JSON-serialisable result or raises
        :class:`thrum_core.errors.ThrumError`.  ``auth`` is one of ``open``,
        ``caller``, ``session``, ``admin`` (SPEC §8.6).
    :return: nothing.

    Third-party methods are namespaced ``<plugin>.<verb>`` (SPEC §17).

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    """Register event types with their model, reducer and projection tables.

    :param register: ``register(EventType(...))`` and
        ``register.migrations(owner, [sql, ...])``.  A reducer is a pure,
        deterministic function of the projection and the event; it must be
        idempotent and order-independent (SPEC §7.3) because it also runs
        during rebuild.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_event_applied(event: AppliedEvent, kernel: Kernel) -> None:
    """Observe an event after it is durable and projected.

    Called once per event, in log order, after the writer batch that held it
    is committed and its submitters answered.  Used for push notifications,
    indexing and sync triggers.  Must not block: queue work instead.  An
    exception is logged and isolated.

    :param event: the stored event (``event.obj``, ``event.source`` = ``local``
        | ``sync`` | ``peer``).
    :param kernel: the running kernel.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_intercept_message(message: dict[str, Any], ctx: CallContext) -> dict[str, Any] | None:
    """Inspect, veto or rewrite an outgoing message before it is stored.

    :param message: the ``message.create`` event about to be emitted.
    :param ctx: the call context of the sending request.
    :return: ``None`` to leave it unchanged, or a replacement dict.  Raise a
        :class:`thrum_core.errors.ThrumError` to refuse the message with a
        reason.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_transports(register: Registrar) -> None:
    """Register client transports (Unix socket, WebSocket, ...).

    :param register: ``register(name, factory)``; ``factory(kernel)`` returns an
        object with ``async serve(task_status)`` (see
        :class:`thrum_core.interfaces.Transport`).
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_sync_backends(register: Registrar) -> None:
    """Register sync backends (git, tailscale, local peer, ...).

    :param register: ``register(name, backend)`` where ``backend`` follows
        :class:`thrum_core.interfaces.SyncBackend`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_runtimes(register: Registrar) -> None:
    """Register AI-tool runtime presets (Claude Code, Codex, Cursor, ...).

    :param register: ``register(name, preset)`` where ``preset`` follows
        :class:`thrum_core.interfaces.Runtime`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def thrum_detect_runtime(environ: Mapping[str, str], cwd: Path) -> str | None:
    """Say which AI tool is running thrum.

    :param environ: the process environment.
    :param cwd: the working directory.
    :return: a registered runtime name, or ``None`` when this plugin cannot
        tell.  The first non-``None`` answer wins.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_backup_targets(register: Registrar) -> None:
    """Register places a finished backup is copied to.

    :param register: ``register(type_name, target)`` where ``target`` follows
        :class:`thrum_core.interfaces.BackupTarget`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_notifiers(register: Registrar) -> None:
    """Register notifiers (where notifications go).

    :param register: ``register(name, notifier)`` where ``notifier`` follows
        :class:`thrum_core.interfaces.Notifier`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_services(register: Registrar) -> None:
    """Register long-lived daemon tasks (sync loop, backup schedule, ...).

    :param register: ``register(name, service)`` where ``service(kernel)``
        is an async callable.  The kernel runs each service in
        its own supervised scope: a service that raises is logged and isolated
        and never stops the daemon.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``thrum`` CLI.

    :param cli: the root click group; call ``cli.add_command(...)``.
    :return: nothing.

    Built-in command plugins also appear in the CLI's static command index so
    that a single command can be loaded without loading every plugin.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_startup(kernel: Kernel) -> Any:
    """Run once when the daemon has opened its projection, before it serves.

    :param kernel: the kernel being started.
    :return: ``None`` or an awaitable, which the kernel awaits.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_shutdown(kernel: Kernel) -> Any:
    """Run once when the daemon stops (after transports stop accepting).

    :param kernel: the kernel being stopped.
    :return: ``None`` or an awaitable, awaited with a bounded deadline.

    .. versionadded:: 0.1
    """


@hookspec
def thrum_doctor(report: DoctorReport) -> None:
    """Add health checks to ``thrum doctor``.

    :param report: call ``report.check(name, status, message, fixed=False)``;
        ``report.paths``, ``report.fix`` and ``report.daemon`` (a client or
        ``None``) describe the situation.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def thrum_resolve_caller(ctx: CallContext, auth: str) -> Any:
    """Resolve and authorise the caller of an RPC request.

    The kernel knows nothing about agents; the plugin that owns identities
    implements this for the ``caller`` and ``session`` auth classes (SPEC §8.6).

    :param ctx: the call context (``ctx.caller_agent_id``, ``ctx.connection``).
    :param auth: ``caller`` or ``session``.
    :return: an object describing the caller (stored as ``ctx.caller``), or
        ``None`` when this plugin does not handle it.  Raise
        :class:`thrum_core.errors.PermissionDenied` to refuse.

    .. versionadded:: 0.1
    """
