"""Groups: ``group.create/delete/member.add/member.remove/list/info/members`` and the ``group.*`` events.

Handlers are in ``_group_rpc``; event types, tables and reducers in
``_group_events``; expansion in ``_group_expand``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.events.types import EventTypeRegistrar
    from thrum_core.rpc.spec import MethodRegistrar


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    from thrum_plugins.rpc._group_events import register_group_event_types

    register_group_event_types(register)


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    from thrum_plugins.rpc import _group_rpc as rpc

    register("group.create", rpc.create, params=rpc.CreateParams, auth="caller")
    register("group.delete", rpc.delete, params=rpc.NameParams, auth="caller")
    register("group.member.add", rpc.member_add, params=rpc.MemberParams, auth="caller")
    register("group.member.remove", rpc.member_remove, params=rpc.MemberParams, auth="caller")
    register("group.list", rpc.list_, auth="open")
    register("group.info", rpc.info, params=rpc.NameParams, auth="open")
    register("group.members", rpc.members, params=rpc.MembersParams, auth="open")
