"""Handlers that write: ``message.send``, ``.edit``, ``.delete``, ``.markRead`` (SPEC §9.6)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thrum_core.errors import Conflict, InvalidParams, NotFound, PermissionDenied, ThrumError
from thrum_core.ids import new_message_id, new_thread_id
from thrum_core.names import MAX_REFS, MAX_SCOPES
from thrum_core.timefmt import format_ts, now_ns, parse_point_in_time
from thrum_plugins.notifiers.push import announce_written, notify_threads
from thrum_plugins.rpc._caller import MESSAGE_DATA_TYPES, identity_rows
from thrum_plugins.rpc._message_common import caller_id, ensure_fresh, reader
from thrum_plugins.rpc._message_params import DeleteParams, EditParams, MarkReadParams
from thrum_plugins.rpc._message_queries import ListQuery, inbox_totals, list_messages, visible_to
from thrum_plugins.rpc._message_send import SendParams, check_body, parent_audience, resolve_addresses
from thrum_plugins.rpc._message_visibility import NEVER, agent_info

if TYPE_CHECKING:
    import sqlite3

    from thrum_core.rpc.spec import CallContext

__all__ = ["delete", "edit", "mark_read", "mark_read_ids", "send"]

log = logging.getLogger("thrum.messages")

MARK_ALL_LIMIT = 10_000
_RECIPIENT_REQUIRED = "recipient required: use to (@name, @role, @group, @everyone) or broadcast"


def _intercept(event: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
    """Run ``thrum_intercept_message`` implementations in turn; a ThrumError vetoes."""
    for impl in ctx.kernel.pm.hook.thrum_intercept_message.get_hookimpls():
        try:
            result = impl.function(
                **{k: v for k, v in {"message": event, "ctx": ctx}.items() if k in impl.argnames}
            )
        except ThrumError:
            raise
        except Exception:
            log.exception("message interceptor %s failed; ignoring it", impl.plugin_name)
            continue
        if isinstance(result, dict):
            event = result
    return event


def _addresses(p: SendParams) -> list[str]:
    to = [p.to] if isinstance(p.to, str) else list(p.to or [])
    out = [a for item in to for a in item.split(",") if a.strip()] + list(p.mentions or [])
    if p.broadcast:
        out.append("everyone")
    return out


def _thread(db: sqlite3.Connection, p: SendParams, parent: Any) -> str | None:
    if parent is not None:
        thread_id: str | None = parent["thread_id"]
        if p.thread_id is not None and thread_id is not None and p.thread_id != thread_id:
            raise InvalidParams(
                "thread_id",
                "mismatch",
                f"thread_id {p.thread_id} is not the thread of {parent['message_id']}",
            )
        if thread_id is None and p.thread_id is not None:
            _require_thread(db, p.thread_id)
            return p.thread_id
        return thread_id or new_thread_id()
    if p.thread_id is not None:
        _require_thread(db, p.thread_id)
    return p.thread_id


def _require_thread(db: sqlite3.Connection, thread_id: str) -> None:
    if db.execute("SELECT 1 FROM messages WHERE thread_id=? LIMIT 1", (thread_id,)).fetchone() is None:
        raise NotFound("thread", thread_id)


async def send(p: SendParams, ctx: CallContext) -> dict[str, Any]:
    """``message.send``: resolve addresses, build and emit one ``message.create``."""
    kernel = ctx.kernel
    caller = ctx.caller
    author = caller_id(ctx)
    structured = check_body(p.content, p.format, p.structured, kernel.config.daemon.max_message_body_bytes)
    cache = identity_rows(kernel)  # before the queries whose results it keeps
    # Only a reply or a thread reads message data; the rest (agents, groups,
    # sessions) is not changed by message events the writer may still hold.
    reads_messages = p.reply_to is not None or p.thread_id is not None
    db = reader(kernel, fresh_except=None if reads_messages else MESSAGE_DATA_TYPES)
    authored_by: str | None = None
    if p.acting_as is not None:
        if ctx.transport != "ws" or getattr(caller, "kind", "agent") != "user":
            raise PermissionDenied("forbidden", "acting_as is only for users of the web UI")
        info = agent_info(db, p.acting_as)
        if info is None or info.kind != "agent":
            raise NotFound("agent", p.acting_as)
        authored_by, author = author, p.acting_as
    parent = None
    if p.reply_to is not None:
        parent = db.execute(
            "SELECT message_id, thread_id, agent_id, star FROM messages WHERE message_id=?", (p.reply_to,)
        ).fetchone()
        if parent is None:
            raise NotFound("message", p.reply_to)
    addresses = _addresses(p)
    if not addresses:
        if parent is None:
            raise InvalidParams("to", _RECIPIENT_REQUIRED, _RECIPIENT_REQUIRED)
        addresses = parent_audience(db, parent, author)
        if not addresses:
            raise InvalidParams("to", _RECIPIENT_REQUIRED, "the message replied to has no one else to answer")
    resolved = resolve_addresses(db, addresses, author, cache)
    thread_id = _thread(db, p, parent)
    if parent is not None:
        resolved.add_ref("reply_to", parent["message_id"])
    for tag in p.tags or ():
        resolved.add_ref("tag", tag)
    for s in p.scopes or ():
        resolved.add_scope(s.type, s.value)
    for r in p.refs or ():
        resolved.add_ref(r.type, r.value)
    if len(resolved.scopes) > MAX_SCOPES:
        raise InvalidParams("scopes", "too_many", f"a message holds at most {MAX_SCOPES} scopes")
    if len(resolved.refs) > MAX_REFS:
        raise InvalidParams("refs", "too_many", f"a message holds at most {MAX_REFS} refs (mentions count)")
    recipients = sorted(resolved.recipients)
    body: dict[str, Any] = {"format": p.format, "content": p.content}
    if structured is not None:
        body["structured"] = structured
    event: dict[str, Any] = {
        "type": "message.create",
        "message_id": new_message_id(),
        "agent_id": author,
        "session_id": getattr(caller, "session_id", None) or "",
        "body": body,
    }
    if thread_id is not None:
        event["thread_id"] = thread_id
    if resolved.scopes:
        event["scopes"] = [{"type": t, "value": v} for t, v in resolved.scopes]
    if resolved.refs:
        event["refs"] = [{"type": t, "value": v} for t, v in resolved.refs]
    if recipients:
        event["recipients"] = recipients
    if authored_by is not None:
        event["authored_by"] = authored_by
        event["disclosed"] = p.disclose
    event = _intercept(event, ctx)
    stored = (await kernel.emit([event], ctx=ctx))[0]
    announce_written(kernel, [stored], fresh_creates=True)  # a new message id
    obj = stored.obj
    final_recipients = obj.get("recipients") or []
    return {
        "message_id": obj.get("message_id"),
        "thread_id": obj.get("thread_id"),
        "created_at": obj.get("timestamp"),
        "resolved_to": len(final_recipients),
        "recipients": final_recipients,
        "audiences": resolved.audiences,
        "warnings": resolved.warnings,
    }


def _own_message(db: sqlite3.Connection, message_id: str, caller: str) -> Any:
    row = db.execute(
        "SELECT message_id, agent_id, authored_by, deleted, body_format, body_content, body_structured,"
        " edit_count"
        " FROM messages WHERE message_id=?",
        (message_id,),
    ).fetchone()
    if row is None:
        raise NotFound("message", message_id)
    if caller not in (row["agent_id"], row["authored_by"]):
        raise PermissionDenied("not_author", f"only the author of {message_id} may change it")
    if row["deleted"]:
        raise Conflict("deleted", f"message {message_id} is deleted")
    return row


async def edit(p: EditParams, ctx: CallContext) -> dict[str, Any]:
    """``message.edit``: the author replaces the content; the original format is kept."""
    kernel = ctx.kernel
    caller = caller_id(ctx)
    if p.content is None and p.structured is None:
        raise InvalidParams("content", "required", "give content, structured or both")
    db = reader(kernel)
    row = _own_message(db, p.message_id, caller)
    fmt = row["body_format"] or "markdown"
    content = p.content if p.content is not None else row["body_content"]
    limit = kernel.config.daemon.max_message_body_bytes
    if p.structured is not None:
        structured = check_body(content, fmt, p.structured, limit)
    else:
        check_body(content, fmt, None, limit - len((row["body_structured"] or "").encode()))
        structured = row["body_structured"]
    body: dict[str, Any] = {"format": fmt, "content": content}
    if structured:
        body["structured"] = structured
    event = {"type": "message.edit", "message_id": p.message_id, "agent_id": caller, "body": body}
    stored = (await kernel.emit([event], ctx=ctx))[0]
    announce_written(kernel, [stored])
    # A reader taken after the write sees it (EventStore.reader).
    version = (
        reader(kernel)
        .execute("SELECT edit_count FROM messages WHERE message_id=?", (p.message_id,))
        .fetchone()
    )
    return {
        "message_id": p.message_id,
        "updated_at": stored.obj.get("timestamp"),
        "version": int(version[0]) if version else int(row["edit_count"]) + 1,
    }


async def delete(p: DeleteParams, ctx: CallContext) -> dict[str, Any]:
    """``message.delete``: soft delete by the author (content kept, hidden from lists)."""
    caller = caller_id(ctx)
    _own_message(reader(ctx.kernel), p.message_id, caller)
    event: dict[str, Any] = {"type": "message.delete", "message_id": p.message_id, "agent_id": caller}
    if p.reason:
        event["reason"] = p.reason
    stored = (await ctx.kernel.emit([event], ctx=ctx))[0]
    return {"message_id": p.message_id, "deleted_at": stored.obj.get("timestamp")}


def _visible_ids(db: sqlite3.Connection, ids: list[str], reader_id: str) -> set[str]:
    info = agent_info(db, reader_id)
    reg = NEVER if info is None else info.registered_ns
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        params: dict[str, Any] = {"viewer": reader_id, "reg": reg}
        names = []
        for i, mid in enumerate(chunk):
            params[f"id{i}"] = mid
            names.append(f":id{i}")
        out.update(
            r[0]
            for r in db.execute(
                f"SELECT m.message_id FROM messages m WHERE m.message_id IN ({','.join(names)})"
                f" AND {visible_to('m')}",
                params,
            )
        )
    return out


async def mark_read_ids(ctx: CallContext, reader_id: str, ids: list[str]) -> dict[str, Any]:
    """Emit one receipt per visible, unread message of ``ids`` not authored by ``reader_id``."""
    kernel = ctx.kernel
    await ensure_fresh(kernel, [reader_id])
    db = reader(kernel)
    ids = list(dict.fromkeys(ids))
    authors: dict[str, str] = {}
    threads: dict[str, str | None] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for mid, author, thread in db.execute(
            f"SELECT message_id, agent_id, thread_id FROM messages WHERE message_id IN ({marks})", chunk
        ):
            authors[mid] = author
            threads[mid] = thread
    not_found = [i for i in ids if i not in authors]
    found = [i for i in ids if i in authors]
    visible = _visible_ids(db, [i for i in found if authors[i] != reader_id], reader_id)
    already: set[str] = set()
    for start in range(0, len(found), 500):
        chunk = found[start : start + 500]
        marks = ",".join("?" * len(chunk))
        already.update(
            r[0]
            for r in db.execute(
                f"SELECT message_id FROM message_reads WHERE agent_id=? AND message_id IN ({marks})",
                (reader_id, *chunk),
            )
        )
    to_mark = [i for i in found if i in visible and i not in already]
    session_id = getattr(ctx.caller, "session_id", None)
    if to_mark:
        read_at = format_ts(now_ns() // 1000 * 1000)
        events = []
        for mid in to_mark:
            ev: dict[str, Any] = {
                "type": "message.receipt",
                "message_id": mid,
                "agent_id": reader_id,
                "read_at": read_at,
                "receipt_type": "read",
            }
            if session_id:
                ev["session_id"] = session_id
            events.append(ev)
        await kernel.emit(events, ctx=ctx)
        db = reader(kernel)  # one that sees the receipts just written (EventStore.reader)
    also: dict[str, list[str]] = {}
    for start in range(0, len(to_mark), 500):
        chunk = to_mark[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for mid, agent in db.execute(
            f"SELECT message_id, agent_id FROM message_reads WHERE message_id IN ({marks}) AND agent_id != ?"
            " ORDER BY message_id, agent_id",
            (*chunk, reader_id),
        ):
            also.setdefault(mid, []).append(agent)
    _, remaining = inbox_totals(db, reader_id, agent_info(db, reader_id), exclude_self=True)
    thread_ids = sorted({t for mid in to_mark if (t := threads.get(mid))})
    if thread_ids:
        notify_threads(kernel, thread_ids)
    return {
        "marked_count": len(to_mark),
        "skipped_count": len(found) - len(to_mark),
        "not_found": not_found,
        "also_read_by": also,
        "remaining": remaining,
    }


async def mark_read(p: MarkReadParams, ctx: CallContext) -> dict[str, Any]:
    """``message.markRead``: receipts for a list of messages or for every unread one."""
    caller = caller_id(ctx)
    if (p.message_ids is None) == (not p.all):
        raise InvalidParams("message_ids", "exactly_one", "give exactly one of message_ids and all")
    if p.before is not None and not p.all:
        raise InvalidParams("before", "needs_all", "before is only allowed with all")
    if p.message_ids is not None:
        return await mark_read_ids(ctx, caller, p.message_ids)
    before_ns = None
    if p.before is not None:
        try:
            before_ns = parse_point_in_time(p.before, now=now_ns(), mode="before")
        except ValueError as exc:
            raise InvalidParams("before", "invalid", str(exc)) from None
    await ensure_fresh(ctx.kernel, [caller])
    db = reader(ctx.kernel)
    query = ListQuery(
        for_agent=caller,
        self_id=caller,
        unread=True,
        exclude_self=True,
        created_before_ns=before_ns,
        page_size=MARK_ALL_LIMIT,
        sort_order="asc",
    )
    ids = list_messages(db, query).ids
    return await mark_read_ids(ctx, caller, ids)
