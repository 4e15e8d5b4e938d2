"""Message event types and their reducers (SPEC §6.2, §7.3).

``message.create`` / ``.edit`` / ``.delete`` / ``.receipt`` go to
``messages/<shard(agent_id)>.jsonl`` (the author, editor or reader).  An edit,
delete or receipt of a message not projected yet waits (``pending`` on
``message:<id>``) until its ``message.create`` provides it.

Reducers tolerate what other tools wrote: a missing ``body.format`` is
markdown, ``structured`` may be a string or an object, a receipt without
``read_at`` uses its ``timestamp``, ``receipt_type: "seen"`` is stored and
ignored.

A full rebuild (``ctx.rebuilding``) takes shortcuts that give the same rows:
a new message is inserted without probing for a stored one (a conflict falls
back to the general path), its scopes, refs, recipients and audience rows are
queued and written with one ``executemany`` per table
(:func:`~thrum_plugins.rpc._message_schema.bulk_rows`), and the secondary
indexes no reducer reads are dropped at the start and created at the end
(:data:`~thrum_plugins.rpc._message_schema.REBUILD_DEFERRED_INDEXES`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from json.encoder import encode_basestring as _encode_str  # what canonical_json uses for str
from typing import Any

from pydantic import BaseModel, ConfigDict

from thrum_core.canonical import canonical_json
from thrum_core.events.types import (
    ApplyContext,
    EventType,
    EventTypeRegistrar,
    InvalidEvent,
    Pending,
    StoredEvent,
)
from thrum_core.ids import shard_name
from thrum_core.timefmt import format_parsed_ts, format_ts, parse_ts_ns
from thrum_plugins.rpc._message_schema import (
    BULK_FLUSH_ROWS,
    KNOWN_MESSAGES_MAX,
    MESSAGE_MIGRATION_OWNER,
    MESSAGE_STEPS,
    bulk_rows,
    discard_bulk_rows,
    drop_deferred_indexes,
    flush_bulk_rows,
    rebuilt_messages,
    restore_deferred_indexes,
    restore_late_indexes,
    restore_refs_index,
)
from thrum_plugins.rpc._message_visibility import (
    Audience,
    audience_of,
    insert_viewers,
    message_viewers,
    process_dirty,
    rebuild_finish,
    rebuild_start,
)

__all__ = ["pending_key", "register_message_event_types"]


def pending_key(message_id: str) -> str:
    """The pending key edits, deletes and receipts of ``message_id`` wait on."""
    return f"message:{message_id}"


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    timestamp: str
    event_id: str
    v: int
    origin_daemon: str


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: str
    content: str
    structured: str | None = None


class _TypeValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    value: str


class MessageCreateEvent(_Envelope):
    """A locally written ``message.create``."""

    message_id: str
    agent_id: str
    session_id: str
    body: _Body
    thread_id: str | None = None
    scopes: list[_TypeValue] | None = None
    refs: list[_TypeValue] | None = None
    recipients: list[str] | None = None
    authored_by: str | None = None
    disclosed: bool | None = None


class MessageEditEvent(_Envelope):
    """A locally written ``message.edit``."""

    message_id: str
    agent_id: str
    body: _Body


class MessageDeleteEvent(_Envelope):
    """A locally written ``message.delete``."""

    message_id: str
    agent_id: str
    reason: str | None = None


class MessageReceiptEvent(_Envelope):
    """A locally written ``message.receipt`` (D3)."""

    message_id: str
    agent_id: str
    read_at: str
    receipt_type: str
    session_id: str | None = None


def route_by_agent(obj: Mapping[str, Any]) -> str:
    """``messages/<shard(agent_id)>.jsonl`` (SPEC §6.3)."""
    actor = obj.get("agent_id")
    return f"messages/{shard_name(actor if isinstance(actor, str) else '')}.jsonl"


def _event_ts(ev: StoredEvent) -> str:
    """``format_ts(ev.ts_ns)``: the event's own ``timestamp`` when it is already in that form."""
    ts = ev.obj.get("timestamp")
    return format_parsed_ts(ts, ev.ts_ns) if type(ts) is str else format_ts(ev.ts_ns)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _require(ev: StoredEvent, key: str) -> str:
    value = ev.obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{ev.type} without {key}")
    return value


def _pairs(value: Any) -> list[tuple[str, str]]:
    out: dict[tuple[str, str], None] = {}
    if isinstance(value, list):
        for item in value:
            if type(item) is dict or isinstance(item, Mapping):
                t, v = item.get("type"), item.get("value")
                if isinstance(t, str) and isinstance(v, str) and t and v:
                    out[(t, v)] = None
    return list(out)


def new_message_columns(obj: Mapping[str, Any]) -> tuple[str | None, str | None, str, str | None, str | None]:
    """``(agent_id, thread_id, body_content, scopes_json, refs_json)`` that :func:`reduce_create` stores.

    Exactly the stored values for a message whose id is new (no earlier
    create, no earlier reply naming it); the event can then stand in for
    its row.
    """
    return (
        _text(obj.get("agent_id")),
        _text(obj.get("thread_id")),
        body_fields(obj.get("body"))[1],
        _pairs_json(_pairs(obj.get("scopes"))),
        _pairs_json(_pairs(obj.get("refs"))),
    )


def _structured(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        try:
            return canonical_json(value)
        except (TypeError, ValueError):
            return None
    return None


def body_fields(body: Any) -> tuple[str, str, str | None]:
    """``(format, content, structured)`` of an event ``body`` with defaults."""
    if type(body) is not dict and not isinstance(body, Mapping):
        return "markdown", "", None
    fmt = body.get("format")
    content = body.get("content")
    structured = body.get("structured")
    return (
        fmt if isinstance(fmt, str) and fmt else "markdown",
        content if isinstance(content, str) else "",
        None if structured is None else _structured(structured),
    )


def _thread_from_replies(db: sqlite3.Connection, message_id: str) -> tuple[str, str] | None:
    row = db.execute(
        "SELECT m.thread_id, m.create_k FROM message_refs r JOIN messages m ON m.message_id = r.message_id"
        " WHERE r.type='reply_to' AND r.value=? AND m.thread_id IS NOT NULL ORDER BY m.create_k LIMIT 1",
        (message_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _pairs_json(pairs: list[tuple[str, str]]) -> str | None:
    """``canonical_json([{"type": t, "value": v}, ...])`` of the sorted pairs, built directly."""
    if not pairs:
        return None
    enc = _encode_str
    text = "[" + ",".join(f'{{"type":{enc(t)},"value":{enc(v)}}}' for t, v in sorted(pairs)) + "]"
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text


def _give_parent_thread(db: sqlite3.Connection, parent: str, thread_id: str, k: str) -> None:
    """A parent created without a thread takes the thread of its reply with the smallest K."""
    db.execute(
        "UPDATE messages SET thread_id=?, thread_k=? WHERE message_id=?"
        " AND (thread_id IS NULL OR (thread_k IS NOT NULL AND thread_k > ?))",
        (thread_id, k, parent, k),
    )


def _clear_addressing(db: sqlite3.Connection, message_id: str) -> None:
    db.execute("DELETE FROM message_scopes WHERE message_id=?", (message_id,))
    db.execute("DELETE FROM message_refs WHERE message_id=?", (message_id,))
    db.execute("DELETE FROM message_recipients WHERE message_id=?", (message_id,))
    db.execute("DELETE FROM message_audience WHERE message_id=?", (message_id,))
    db.execute("UPDATE inbox SET self=0, rcpt=0, dyn=0 WHERE message_id=?", (message_id,))
    db.execute("DELETE FROM inbox WHERE message_id=? AND NOT (star=1 AND read=1)", (message_id,))


_PROBE = (
    "SELECT m.create_k, m.deleted,"
    " EXISTS (SELECT 1 FROM message_refs WHERE type='reply_to' AND value=?1)"
    " FROM (SELECT 1) LEFT JOIN messages m ON m.message_id=?1"
)
_INSERT_RECIPIENT = "INSERT OR IGNORE INTO message_recipients(message_id, agent_id) VALUES (?,?)"
_INSERT_SCOPE = "INSERT OR IGNORE INTO message_scopes(message_id, type, value) VALUES (?,?,?)"
_INSERT_REF = "INSERT OR IGNORE INTO message_refs(message_id, type, value) VALUES (?,?,?)"
_INSERT_MESSAGE = (
    "INSERT INTO messages(message_id, thread_id, reply_to, agent_id, session_id, created_at, created_ns,"
    " create_k, body_format, body_content, body_structured, authored_by, disclosed, addressed,"
    " origin_daemon, star, thread_k, scopes_json, refs_json, rcpt_count)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
#: The rebuild's insert of a new message.  Binding ``None`` costs the sqlite3
#: module an adapter look-up that fails (about 0.3 µs against 0.05 µs for an
#: int): the nullable text columns are bound as ``0`` (``null=0`` of
#: :func:`_create_values`) and turned into NULL here.  Their values are
#: non-empty strings or NULL, and a string never equals the integer 0.
_INSERT_MESSAGE_NEW = (
    "INSERT INTO messages(message_id, thread_id, reply_to, agent_id, session_id, created_at, created_ns,"
    " create_k, body_format, body_content, body_structured, authored_by, disclosed, addressed,"
    " origin_daemon, star, thread_k, scopes_json, refs_json, rcpt_count)"
    " VALUES (?,NULLIF(?,0),NULLIF(?,0),?,?,?,?,?,?,?,NULLIF(?,0),NULLIF(?,0),?,?,?,?,NULLIF(?,0),"
    "NULLIF(?,0),NULLIF(?,0),?) ON CONFLICT(message_id) DO NOTHING"
)
_INSERT_AUDIENCE = "INSERT OR IGNORE INTO message_audience(key, created_ns, message_id) VALUES (?,?,?)"


#: ``ctx.memo`` key of the rebuild's "may a reply name this message" bitmap.
_REPLIED_MEMO = "messages.replied_bits"
#: ``ctx.memo`` key of the number of rows queued since the last flush.
_QUEUED_MEMO = "messages.queued_rows"
#: Bits of that bitmap (1 MiB): a set bit means "look it up"; never a wrong answer.
_REPLIED_BITS = 1 << 23


def _replied_bits(memo: dict[str, Any]) -> bytearray:
    bits = memo.get(_REPLIED_MEMO)
    if bits is None:
        bits = memo[_REPLIED_MEMO] = bytearray(_REPLIED_BITS >> 3)
    return bits


def _note_replies(bits: bytearray, refs: list[tuple[str, str]]) -> None:
    """Set the bits of every ``reply_to`` value of ``refs``."""
    for t, v in refs:
        if t == "reply_to":
            h = hash(v) & (_REPLIED_BITS - 1)
            bits[h >> 3] |= 1 << (h & 7)


#: ``ctx.memo`` key of the rebuild's ``(replied bitmap, bulk_rows, rebuilt_messages)``
#: of the write connection (looked up once per rebuild, not once per event).
_REBUILD_STATE_MEMO = "messages.rebuild_state"
#: ``(scopes, refs, recipients)`` → ``(audience, scopes_json, refs_json)`` of the
#: rebuild's new messages: most messages of a log share a few addressings.
_ADDRESSING: dict[
    tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[str, ...]],
    tuple[Audience, str | int, str | int],
] = {}
#: Entries of :data:`_ADDRESSING`, at most (it is emptied when full).
_ADDRESSING_MAX = 4096


_RebuildState = tuple[bytearray, dict[str, list[tuple[Any, ...]]], set[str]]


def _rebuild_state(memo: dict[str, Any], db: sqlite3.Connection) -> _RebuildState:
    """The rebuild's replied bitmap, :func:`bulk_rows` and :func:`rebuilt_messages`, kept in ``memo``.

    The queue and the set keep their objects for the whole rebuild (only the
    start hook discards them, and the memo is cleared after it).
    """
    state: _RebuildState = (_replied_bits(memo), bulk_rows(db), rebuilt_messages(db))
    memo[_REBUILD_STATE_MEMO] = state
    return state


def _one_pair(value: Any) -> list[tuple[str, str]]:
    """:func:`_pairs` of ``value``, with a shortcut for the common list of one object."""
    if type(value) is list and len(value) == 1:
        item = value[0]
        if type(item) is dict:
            t, v = item.get("type"), item.get("value")
            if type(t) is str and type(v) is str and t and v:
                return [(t, v)]
    return _pairs(value) if value is not None else []


def _queued(queue: dict[str, list[Any]], sql: str) -> list[Any]:
    """The rows queued for ``sql`` (a new list the first time; cheaper than ``setdefault``'s)."""
    rows = queue.get(sql)
    if rows is None:
        rows = queue[sql] = []
    return rows


def _count_queued(memo: dict[str, Any], db: sqlite3.Connection, added: int) -> None:
    """Count ``added`` newly queued rows; write all queued rows once :data:`BULK_FLUSH_ROWS` have gathered."""
    n = memo.get(_QUEUED_MEMO, 0) + added
    if n >= BULK_FLUSH_ROWS:
        flush_bulk_rows(db)
        n = 0
    memo[_QUEUED_MEMO] = n


def _create_in_rebuild(ctx: ApplyContext, ev: StoredEvent) -> bool:
    """The rebuild's common ``message.create``: insert a new message, queue its other rows.

    Returns ``False``, having written nothing, when the general path of
    :func:`reduce_create` must handle the event: a required field is missing,
    a reply seen earlier may name the message (the ``reply_to`` bitmap), or
    the message is already stored (the insert did nothing).  Gives the rows
    the general path gives.
    """
    o = ev.obj
    message_id = o.get("message_id")
    author = o.get("agent_id")
    if type(message_id) is not str or not message_id or type(author) is not str or not author:
        return False
    thread_id = o.get("thread_id")
    if type(thread_id) is not str or not thread_id:
        thread_id = None
    memo = ctx.memo
    state = memo.get(_REBUILD_STATE_MEMO)
    db = ctx.db
    if state is None:
        state = _rebuild_state(memo, db)
    bits, queue, known = state
    h = hash(message_id) & (_REPLIED_BITS - 1)
    if thread_id is None and bits[h >> 3] & (1 << (h & 7)):
        return False  # a reply seen earlier may name it: the general path derives its thread
    body = o.get("body")
    if type(body) is dict and body.get("structured") is None:
        fmt = body.get("format")
        content = body.get("content")
        fmt = fmt if isinstance(fmt, str) and fmt else "markdown"
        content = content if isinstance(content, str) else ""
        structured = None
    else:
        fmt, content, structured = body_fields(body)
    scopes = _one_pair(o.get("scopes"))
    refs = _one_pair(o.get("refs"))
    raw_recipients = o.get("recipients")
    if type(raw_recipients) is list and len(raw_recipients) == 1:
        r0 = raw_recipients[0]
        recipients = [r0] if isinstance(r0, str) and r0 else []
    elif isinstance(raw_recipients, list):
        recipients = sorted({r for r in raw_recipients if isinstance(r, str) and r})
    else:
        recipients = []
    key = (tuple(scopes), tuple(refs), tuple(recipients))
    addressing = _ADDRESSING.get(key)
    if addressing is None:
        if len(_ADDRESSING) >= _ADDRESSING_MAX:
            _ADDRESSING.clear()
        addressing = _ADDRESSING[key] = (
            audience_of(scopes, refs, recipients),
            _pairs_json(scopes) or 0,
            _pairs_json(refs) or 0,
        )
    audience, scopes_json, refs_json = addressing
    reply_to = next((v for t, v in refs if t == "reply_to"), None) if refs else None
    ts = o.get("timestamp")
    created_ns = ev.ts_ns
    session_id = o.get("session_id")
    authored_by = o.get("authored_by")
    params = (
        message_id,
        thread_id or 0,
        reply_to or 0,
        author,
        session_id if type(session_id) is str else (_text(session_id) or ""),
        format_parsed_ts(ts, created_ns) if type(ts) is str else format_ts(created_ns),
        created_ns,
        ev.k,
        fmt,
        content,
        structured or 0,
        (authored_by if type(authored_by) is str else _text(authored_by)) or 0,
        1 if o.get("disclosed") is True else 0,
        1 if audience.addressed else 0,
        ev.origin_daemon,
        1 if audience.star else 0,
        0,  # thread_k: the thread is the event's own
        scopes_json,
        refs_json,
        len(recipients),
    )
    if db.execute(_INSERT_MESSAGE_NEW, params).rowcount != 1:
        return False  # already stored: the general path keeps the earliest create
    # A new message in a rebuild: its rows of the tables no reducer reads are
    # queued and written in bulk (see bulk_rows).
    if len(known) >= KNOWN_MESSAGES_MAX:
        known.clear()
    known.add(message_id)
    n = 0
    if recipients:
        _queued(queue, _INSERT_RECIPIENT).extend([(message_id, r) for r in recipients])
        n += len(recipients)
    if scopes:
        _queued(queue, _INSERT_SCOPE).extend([(message_id, t, v) for t, v in scopes])
        n += len(scopes)
    if refs:
        _queued(queue, _INSERT_REF).extend([(message_id, t, v) for t, v in refs])
        n += len(refs)
    if not audience.star and audience.keys:
        _queued(queue, _INSERT_AUDIENCE).extend([(k, created_ns, message_id) for k in audience.keys])
        n += len(audience.keys)
    _count_queued(memo, db, n)
    if reply_to is not None:
        _note_replies(bits, refs)
        if thread_id is not None:
            _give_parent_thread(db, reply_to, thread_id, ev.k)
    ctx.provide(f"message:{message_id}")
    return True


def reduce_create(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Insert the message with its scopes, refs, recipients and inbox rows (SPEC §7.3).

    During a full rebuild (``ctx.rebuilding``) the common case is
    :func:`_create_in_rebuild`: it skips the probe of the stored message (the
    row is inserted with ``ON CONFLICT DO NOTHING``; a conflict falls back to
    the general path), and whether an earlier reply names the message is
    answered by a bitmap of the ``reply_to`` values seen in this rebuild (a
    set bit means "look it up").
    """
    if ctx.rebuilding and _create_in_rebuild(ctx, ev):
        return None
    o = ev.obj
    message_id = _require(ev, "message_id")
    author = _require(ev, "agent_id")
    db = ctx.db
    bulk = ctx.rebuilding  # the inbox is derived by rebuild_finish
    body = body_fields(o.get("body"))
    scopes = _pairs(o.get("scopes"))
    refs = _pairs(o.get("refs"))
    raw_recipients = o.get("recipients")
    recipients = (
        sorted({r for r in raw_recipients if isinstance(r, str) and r})
        if isinstance(raw_recipients, list)
        else []
    )
    audience = audience_of(scopes, refs, recipients)
    reply_to = next((v for t, v in refs if t == "reply_to"), None) if refs else None
    thread_id = _text(o.get("thread_id"))
    created_ns = ev.ts_ns
    star = 1 if audience.star else 0
    bits = _replied_bits(ctx.memo) if bulk else None
    if bulk:
        flush_bulk_rows(db)  # the probe reads message_refs, and an update rewrites the rows
        restore_refs_index(db)  # the probe looks replies up by it
    else:
        process_dirty(db, ctx.memo)
    # One statement: the message as stored (if any) and whether a reply names it
    # (replies that arrive before their parent are rare).
    create_k, deleted, replied = db.execute(_PROBE, (message_id,)).fetchone()
    if create_k is not None and create_k <= ev.k:
        return None  # a later duplicate create: the earliest wins
    existing = create_k is not None
    thread_k: str | None = None
    if thread_id is None and replied:
        derived = _thread_from_replies(db, message_id)
        if derived is not None:
            thread_id, thread_k = derived
    values = _create_values(o, ev, author, body, audience, reply_to, thread_id, thread_k)
    values += (_pairs_json(scopes), _pairs_json(refs))
    if existing:
        _clear_addressing(db, message_id)
    if not existing:
        db.execute(_INSERT_MESSAGE, (message_id, *values, len(recipients)))
    else:
        db.execute(
            "UPDATE messages SET thread_id=?, reply_to=?, agent_id=?, session_id=?, created_at=?,"
            " created_ns=?,"
            " create_k=?, body_format=?,"
            " body_content=CASE WHEN edit_k IS NULL THEN ? ELSE body_content END,"
            " body_structured=CASE WHEN edit_k IS NULL THEN ? ELSE body_structured END,"
            " authored_by=?, disclosed=?, addressed=?, origin_daemon=?, star=?, thread_k=?, scopes_json=?,"
            " refs_json=? WHERE message_id=?",
            (*values, message_id),
        )
        db.execute("UPDATE inbox SET created_ns=?, star=? WHERE message_id=?", (created_ns, star, message_id))
    if len(recipients) == 1:
        db.execute(_INSERT_RECIPIENT, (message_id, recipients[0]))
    elif recipients:
        db.executemany(_INSERT_RECIPIENT, [(message_id, r) for r in recipients])
    for sql, pairs in ((_INSERT_SCOPE, scopes), (_INSERT_REF, refs)):
        if len(pairs) == 1:
            db.execute(sql, (message_id, *pairs[0]))
        elif pairs:
            db.executemany(sql, [(message_id, t, v) for t, v in pairs])
    if bits is not None and reply_to is not None:
        _note_replies(bits, refs)
    if not audience.star and audience.keys:
        db.executemany(_INSERT_AUDIENCE, [(key, created_ns, message_id) for key in audience.keys])
    if not bulk:
        viewers = message_viewers(
            db, author=author, recipients=recipients, audience=audience, created_ns=created_ns
        )
        insert_viewers(db, message_id, created_ns, audience.star, deleted or 0, viewers, with_reads=existing)
    if reply_to is not None and thread_id is not None:
        _give_parent_thread(db, reply_to, thread_id, ev.k)
    ctx.provide(pending_key(message_id))
    return None


def _create_values(
    o: Mapping[str, Any],
    ev: StoredEvent,
    author: str,
    body: tuple[str, str, str | None],
    audience: Any,
    reply_to: str | None,
    thread_id: str | None,
    thread_k: str | None,
    null: Any = None,
) -> tuple[Any, ...]:
    """The ``messages`` columns of a create from ``thread_id`` to ``thread_k`` (then the JSON columns).

    ``null`` stands for NULL in the nullable text columns (see :data:`_INSERT_MESSAGE_NEW`).
    """
    fmt, content, structured = body
    return (
        thread_id or null,
        reply_to or null,
        author,
        _text(o.get("session_id")) or "",
        _event_ts(ev),
        ev.ts_ns,
        ev.k,
        fmt,
        content,
        structured or null,
        _text(o.get("authored_by")) or null,
        1 if o.get("disclosed") is True else 0,
        1 if audience.addressed else 0,
        ev.origin_daemon,
        1 if audience.star else 0,
        thread_k or null,
    )


def reduce_edit(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Record the edit; the newest edit's body is the message's content (SPEC §7.3)."""
    message_id = _require(ev, "message_id")
    db = ctx.db
    row = db.execute("SELECT edit_k FROM messages WHERE message_id=?", (message_id,)).fetchone()
    if row is None:
        return ctx.pending(pending_key(message_id))
    _fmt, content, structured = body_fields(ev.obj.get("body"))
    at = format_ts(ev.ts_ns)
    db.execute(
        "INSERT OR IGNORE INTO message_edits(event_id, message_id, edited_at, edited_by, content,"
        " structured, k)"
        " VALUES (?,?,?,?,?,?,?)",
        (ev.event_id, message_id, at, _text(ev.obj.get("agent_id")), content, structured, ev.k),
    )
    count = db.execute("SELECT count(*) FROM message_edits WHERE message_id=?", (message_id,)).fetchone()[0]
    if row[0] is None or ev.k > row[0]:
        db.execute(
            "UPDATE messages SET body_content=?, body_structured=?, updated_at=?, updated_ns=?, edit_k=?,"
            " edit_count=? WHERE message_id=?",
            (content, structured, at, ev.ts_ns, ev.k, count, message_id),
        )
    else:
        db.execute("UPDATE messages SET edit_count=? WHERE message_id=?", (count, message_id))
    return None


def reduce_delete(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Soft-delete; ``deleted_at``/``delete_reason`` come from the earliest delete (SPEC §7.3)."""
    message_id = _require(ev, "message_id")
    db = ctx.db
    row = db.execute("SELECT delete_k FROM messages WHERE message_id=?", (message_id,)).fetchone()
    if row is None:
        return ctx.pending(pending_key(message_id))
    if row[0] is not None and row[0] <= ev.k:
        return None
    db.execute(
        "UPDATE messages SET deleted=1, deleted_at=?, delete_reason=?, delete_k=? WHERE message_id=?",
        (format_ts(ev.ts_ns), _text(ev.obj.get("reason")), ev.k, message_id),
    )
    return None


_INSERT_READ = "INSERT INTO message_reads(message_id, agent_id, read_at, read_ns, session_id, event_id)"
#: A second read of a message by the same agent keeps the earliest.
_KEEP_EARLIEST_READ = (
    " ON CONFLICT(message_id, agent_id) DO UPDATE SET"
    " read_at=excluded.read_at, read_ns=excluded.read_ns, session_id=excluded.session_id,"
    " event_id=excluded.event_id WHERE excluded.read_ns < message_reads.read_ns"
)
_UPSERT_READ = (
    _INSERT_READ
    + " SELECT ?1,?2,?3,?4,?5,?6 WHERE EXISTS (SELECT 1 FROM messages WHERE message_id=?1)"
    + _KEEP_EARLIEST_READ
)
#: :data:`_UPSERT_READ` of a message known to be stored (:func:`rebuilt_messages`).
_UPSERT_READ_STORED = _INSERT_READ + " VALUES (?1,?2,?3,?4,?5,?6)" + _KEEP_EARLIEST_READ


def reduce_receipt(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Insert the read, or keep the earliest ``read_at`` (SPEC §7.3, D3).

    A read receipt is one statement when its message is stored (insert or
    update of the earlier read); only when it changed nothing is the message
    looked up, to tell "not projected yet" (pending) from "an earlier read".
    During a rebuild, the statement of a read of a message the rebuild
    inserted (:func:`rebuilt_messages`) is queued with the bulk rows and run
    with theirs, in order (nothing else writes ``message_reads`` meanwhile),
    without looking the message up (:data:`_UPSERT_READ_STORED`).
    """
    o = ev.obj
    message_id = _require(ev, "message_id")
    reader = _require(ev, "agent_id")
    receipt_type = o.get("receipt_type")
    db = ctx.db
    if receipt_type is None or receipt_type == "read":
        read_at = o.get("read_at")
        read_ns = parse_ts_ns(read_at)
        if read_ns is None or type(read_at) is not str:
            read_ns, text = ev.ts_ns, _event_ts(ev)
        else:
            text = format_parsed_ts(read_at, read_ns)
        params = (message_id, reader, text, read_ns, _text(o.get("session_id")), ev.event_id)
        if ctx.rebuilding:
            memo = ctx.memo
            state = memo.get(_REBUILD_STATE_MEMO)
            if state is None:
                state = _rebuild_state(memo, db)
            if message_id in state[2]:
                _queued(state[1], _UPSERT_READ_STORED).append(params)
                _count_queued(memo, db, 1)
                return None
            flush_bulk_rows(db)  # the reads queued so far go first
        if db.execute(_UPSERT_READ, params).rowcount == 1:
            return None
    if db.execute("SELECT 1 FROM messages WHERE message_id=?", (message_id,)).fetchone() is None:
        return ctx.pending(pending_key(message_id))
    return None  # an earlier read stays; "seen" receipts are stored in the log and ignored


def _rebuild_start(db: sqlite3.Connection) -> None:
    """Start of a full rebuild: drop the deferred indexes and the triggers the finish hook makes up for."""
    discard_bulk_rows(db)
    drop_deferred_indexes(db)
    rebuild_start(db)


def _rebuild_finish(db: sqlite3.Connection) -> None:
    """End of a full rebuild: write the queued rows, derive the inbox, create the deferred indexes.

    Deriving the inbox reads none of the deferred indexes, and goes faster
    before they fill the page cache with new pages (its sort spills less);
    the indexes of ``inbox`` are created last, once it is filled.
    """
    flush_bulk_rows(db)
    rebuild_finish(db)
    restore_deferred_indexes(db)
    restore_late_indexes(db)


def register_message_event_types(register: EventTypeRegistrar) -> None:
    """Register the message tables and event types (from ``thrum_register_event_types``)."""
    register.migrations(MESSAGE_MIGRATION_OWNER, MESSAGE_STEPS)
    register.rebuild_hooks(MESSAGE_MIGRATION_OWNER, start=_rebuild_start, finish=_rebuild_finish)
    register(EventType("message.create", reduce_create, route=route_by_agent, model=MessageCreateEvent))
    register(EventType("message.edit", reduce_edit, route=route_by_agent, model=MessageEditEvent))
    register(EventType("message.delete", reduce_delete, route=route_by_agent, model=MessageDeleteEvent))
    register(EventType("message.receipt", reduce_receipt, route=route_by_agent, model=MessageReceiptEvent))
