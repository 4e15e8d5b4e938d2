"""Handlers that read: ``message.get``, ``message.list``, ``message.outbox`` (SPEC §9.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thrum_core.errors import InvalidParams, NotFound, PermissionDenied
from thrum_core.names import strip_at
from thrum_core.rpc.dispatcher import RawJSON
from thrum_plugins.rpc._message_common import (
    caller_id,
    ensure_fresh,
    optional_caller,
    parse_ts_param,
    reader,
    snapshot,
)
from thrum_plugins.rpc._message_params import GetParams, ListParams, OutboxParams
from thrum_plugins.rpc._message_queries import ListQuery, OutboxQuery, list_messages, outbox
from thrum_plugins.rpc._message_results import messages_json, messages_raw
from thrum_plugins.rpc._message_write import mark_read_ids

if TYPE_CHECKING:
    from thrum_core.rpc.spec import CallContext

__all__ = ["get", "list_", "outbox_"]


def _pages(total: int, page_size: int) -> int:
    return (total + page_size - 1) // page_size


async def get(p: GetParams, ctx: CallContext) -> dict[str, Any]:
    """``message.get``: one Message (deleted ones too); ``mark_read`` marks it for the caller."""
    caller = optional_caller(ctx)
    viewer = getattr(caller, "agent_id", None)
    with snapshot(reader(ctx.kernel)) as db:
        messages = messages_json(db, [p.message_id], viewer=viewer, full=True)
    if not messages:
        raise NotFound("message", p.message_id)
    if p.mark_read:
        if viewer is None:
            raise PermissionDenied("no_caller", "mark_read needs a caller: pass caller_agent_id")
        await mark_read_ids(ctx, viewer, [p.message_id])
    return {"message": RawJSON(messages[0])}


async def list_(p: ListParams, ctx: CallContext) -> dict[str, Any]:
    """``message.list``: the filtered, paginated list with total and unread counts."""
    caller = optional_caller(ctx)
    caller_agent = getattr(caller, "agent_id", None)
    self_id = p.for_agent or caller_agent
    if self_id is None:
        for flag in ("mentions", "unread", "exclude_self"):
            if getattr(p, flag):
                raise InvalidParams(flag, "needs_self", f"{flag} needs for_agent or a caller")
    if p.mark_read and caller_agent is None:
        raise PermissionDenied("no_caller", "mark_read needs a caller: pass caller_agent_id")
    query = ListQuery(
        for_agent=p.for_agent,
        self_id=self_id,
        scope=p.scope.pair() if p.scope else None,
        ref=p.ref.pair() if p.ref else None,
        thread_id=p.thread_id,
        author_id=strip_at(p.author_id) if p.author_id else None,
        mentions=p.mentions,
        unread=p.unread,
        exclude_self=p.exclude_self,
        include_deleted=p.include_deleted,
        created_after_ns=parse_ts_param("created_after", p.created_after),
        created_before_ns=parse_ts_param("created_before", p.created_before),
        page_size=p.page_size,
        page=p.page,
        sort_by=p.sort_by,
        sort_order=p.sort_order,
    )
    await ensure_fresh(ctx.kernel, [p.for_agent, self_id])
    with snapshot(reader(ctx.kernel)) as db:
        result = list_messages(db, query)
        messages = messages_raw(db, result.ids, viewer=self_id)
    if p.mark_read and caller_agent is not None and result.ids:
        await mark_read_ids(ctx, caller_agent, result.ids)
    return {
        "messages": messages,
        "total": result.total,
        "unread": result.unread,
        "page": p.page,
        "page_size": p.page_size,
        "total_pages": _pages(result.total, p.page_size),
    }


async def outbox_(p: OutboxParams, ctx: CallContext) -> dict[str, Any]:
    """``message.outbox``: the caller's messages, newest first, with each recipient's read state."""
    author = caller_id(ctx)
    query = OutboxQuery(
        author=author,
        to=strip_at(p.to) if p.to else None,
        unread=p.unread,
        include_deleted=p.include_deleted,
        page_size=p.page_size,
        page=p.page,
    )
    with snapshot(reader(ctx.kernel)) as db:
        ids, total = outbox(db, query)
        messages = messages_raw(db, ids, viewer=author, with_recipients=True)
    return {
        "messages": messages,
        "total": total,
        "page": p.page,
        "page_size": p.page_size,
        "total_pages": _pages(total, p.page_size),
    }
