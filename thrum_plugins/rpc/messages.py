"""Messages: ``message.send/get/list/outbox/edit/delete/markRead/wait`` and the ``message.*`` events.

The handlers live in private modules (``_message_write``, ``_message_read``,
``_message_wait``); the event types, reducers and projection tables in
``_message_events`` and ``_message_schema``.  This module only registers them
and wakes ``message.wait`` calls when messages are projected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.events.types import AppliedEvent, EventTypeRegistrar
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import MethodRegistrar

WAIT_SLACK_S = 5.0


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    from thrum_plugins.rpc._message_events import register_message_event_types

    register_message_event_types(register)


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    from thrum_plugins.rpc import _message_read as read
    from thrum_plugins.rpc import _message_wait as waiting
    from thrum_plugins.rpc import _message_write as write
    from thrum_plugins.rpc._message_params import (
        DeleteParams,
        EditParams,
        GetParams,
        ListParams,
        MarkReadParams,
        OutboxParams,
        WaitParams,
    )
    from thrum_plugins.rpc._message_send import SendParams

    register("message.send", write.send, params=SendParams, auth="session")
    register("message.get", read.get, params=GetParams, auth="open")
    register("message.list", read.list_, params=ListParams, auth="open")
    register("message.outbox", read.outbox_, params=OutboxParams, auth="caller")
    register("message.edit", write.edit, params=EditParams, auth="caller")
    register("message.delete", write.delete, params=DeleteParams, auth="caller")
    register(
        "message.markRead",
        write.mark_read,
        params=MarkReadParams,
        auth="caller",
        deadline_s=lambda p: 60.0 if p.all else 10.0,
    )
    register(
        "message.wait",
        waiting.wait,
        params=WaitParams,
        auth="caller",
        deadline_s=lambda p: p.timeout_ms / 1000 + WAIT_SLACK_S,
    )


@hookimpl
def thrum_event_applied(event: AppliedEvent, kernel: Kernel) -> None:
    from thrum_plugins.rpc._message_wait import wait_registry

    wait_registry(kernel).on_event(event, kernel)
