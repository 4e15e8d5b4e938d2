"""Message and MessageSummary result objects (SPEC §9.2), built in batches from a read connection.

A page is one query in which SQLite's JSON functions write each message's
JSON text (author, body, read state; scopes and refs straight from the rows'
JSON columns), so no Python object is made per field and a list reply carries
the text as it is (:class:`~thrum_core.rpc.dispatcher.RawJSON`).  Two parts
are spliced in from Python: ``audiences``, which tells agent, user and role
mentions apart with one look-up of the agents and roles the page's mention
refs name (computed once per distinct addressing), and ``recipients`` of
``message.get`` and ``message.outbox`` (one more query).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from thrum_core.rpc.dispatcher import RawJSON, encode_json
from thrum_plugins.rpc._group_expand import table_exists

__all__ = ["build_messages", "messages_json", "messages_raw", "preview"]

PREVIEW_CHARS = 100

_encode = encode_json
_decode = json.JSONDecoder().decode

_TRUE_FALSE = "THEN json('true') ELSE json('false') END"


def preview(content: str | None) -> str | None:
    """The first 100 code points of ``content``, plus ``...`` when cut (SPEC §10.2)."""
    if content is None:
        return None
    return content if len(content) <= PREVIEW_CHARS else content[:PREVIEW_CHARS] + "..."


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cursor(db: sqlite3.Connection) -> sqlite3.Cursor:
    cur = db.cursor()
    cur.row_factory = None
    return cur


_sql_cache: dict[tuple[int, bool, bool, bool], str] = {}


def _sql(count: int, has_agents: bool, with_viewer: bool, full: bool) -> str:
    """The page query: ``message_id, head, tail, metadata, addressed, scopes_json, refs_json``.

    ``head`` is the object up to ``body`` and ``tail`` the one from
    ``created_at`` on; ``scopes`` and ``refs`` (the columns' JSON text as it
    is), ``audiences`` and ``recipients`` go between and after them, in the
    order of the SPEC's field list.  With a viewer, ``?1`` is the viewer and
    the ids follow.
    """
    key = (count, has_agents, with_viewer, full)
    sql = _sql_cache.get(key)
    if sql is not None:
        return sql
    if has_agents:
        author = (
            "coalesce(nullif(a.name, ''), m.agent_id), 'role', nullif(a.role, ''),"
            " 'kind', coalesce(nullif(a.kind, ''), 'agent')"
        )
        join = " LEFT JOIN agents a ON a.agent_id = m.agent_id"
    else:
        author = "m.agent_id, 'role', NULL, 'kind', 'agent'"
        join = ""
    if with_viewer:
        is_read = (
            "CASE WHEN m.agent_id = ?1 OR EXISTS (SELECT 1 FROM message_reads r"
            f" WHERE r.message_id = m.message_id AND r.agent_id = ?1) {_TRUE_FALSE}"
        )
    else:
        is_read = "NULL"
    counts = (
        ""
        if full
        else ", 'recipient_count', m.rcpt_count,"
        " 'read_count', (SELECT count(*) FROM message_reads r WHERE r.message_id = m.message_id)"
    )
    metadata = (
        "json_object('deleted_at', m.deleted_at, 'delete_reason', m.delete_reason,"
        " 'edit_count', m.edit_count)"
        if full
        else "NULL"
    )
    marks = ",".join("?" * count)
    sql = (
        "SELECT m.message_id, json_object("
        "'message_id', m.message_id, 'thread_id', m.thread_id, 'reply_to', m.reply_to,"
        " 'agent_id', m.agent_id,"
        f" 'author', json_object('agent_id', m.agent_id, 'session_id', m.session_id, 'name', {author}),"
        f" 'authored_by', m.authored_by, 'disclosed', CASE WHEN m.disclosed {_TRUE_FALSE},"
        " 'body', json_object('format', m.body_format, 'content', m.body_content,"
        " 'structured', m.body_structured)),"
        " json_object('created_at', m.created_at, 'updated_at', m.updated_at,"
        f" 'deleted', CASE WHEN m.deleted {_TRUE_FALSE}, 'is_read', {is_read}{counts}),"
        f" {metadata}, m.addressed, m.scopes_json, m.refs_json"
        f" FROM messages m{join} WHERE m.message_id IN ({marks})"
    )
    if len(_sql_cache) < 64:
        _sql_cache[key] = sql
    return sql


def _classify(db: sqlite3.Connection, values: set[str]) -> tuple[dict[str, str], set[str]]:
    """``({agent_id: kind}, roles)`` for mention values that name agents or roles."""
    if not values or not table_exists(db, "agents"):
        return {}, set()
    cur = _cursor(db)
    listed = sorted(values)
    kinds: dict[str, str] = {}
    roles: set[str] = set()
    for chunk in _chunks(listed):
        marks = ",".join("?" * len(chunk))
        kinds.update(
            cur.execute(f"SELECT agent_id, kind FROM agents WHERE agent_id IN ({marks})", chunk).fetchall()
        )
    rest = [v for v in listed if v not in kinds]
    for chunk in _chunks(rest):
        marks = ",".join("?" * len(chunk))
        roles.update(
            r[0]
            for r in cur.execute(
                f"SELECT DISTINCT role FROM agents WHERE kind='agent' AND role IN ({marks})", chunk
            )
        )
    return kinds, roles


_BROADCAST = ("broadcast", "everyone")


def _audiences(
    addressed: int,
    scopes: list[dict[str, str]],
    refs: list[dict[str, str]],
    kinds: dict[str, str],
    roles: set[str],
) -> list[dict[str, str]]:
    if addressed and not scopes and not refs:
        return []
    out: dict[tuple[str, str], None] = {}
    if not addressed:
        out[_BROADCAST] = None
    mentions: list[str] = []
    for items in (scopes, refs):
        for item in items:
            typ = item["type"]
            if typ == "mention":
                if items is refs:
                    mentions.append(item["value"])
            elif typ == "broadcast":
                out[_BROADCAST] = None
            elif typ == "group":
                value = item["value"]
                out[_BROADCAST if value == "everyone" else ("group", value)] = None
    for value in mentions:
        kind = kinds.get(value)
        if kind is not None:
            out[("user" if kind == "user" else "agent", value)] = None
        elif value in roles:
            out[("role", value)] = None
        else:
            out[("user" if value.startswith("user:") else "agent", value)] = None
    return [{"type": t, "value": v} for t, v in out]


def _recipients(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    cur = _cursor(db)
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for mid, agent_id, read_at in cur.execute(
            "SELECT r.message_id, r.agent_id, d.read_at FROM message_recipients r LEFT JOIN message_reads d"
            f" ON d.message_id = r.message_id AND d.agent_id = r.agent_id WHERE r.message_id IN ({marks})"
            " ORDER BY r.message_id, r.agent_id",
            chunk,
        ):
            out[mid].append({"agent_id": agent_id, "read_at": read_at})
    return out


_AddressKey = tuple[int, "str | None", "str | None"]

#: ``,"scopes":…,"refs":…,"audiences":…,`` by addressing, for addressings without mentions
#: (whose audiences do not depend on the agents table).
_MIDDLES: dict[_AddressKey, str] = {}
_MIDDLES_MAX = 4096


def messages_json(
    db: sqlite3.Connection,
    message_ids: Sequence[str],
    *,
    viewer: str | None,
    full: bool,
    with_recipients: bool = False,
) -> list[str]:
    """The JSON text of each Message (``full``) or MessageSummary of ``message_ids``, in that order.

    ``viewer`` gives ``is_read`` (``None`` → ``null``).  ``with_recipients``
    adds ``recipients`` to summaries (``message.outbox``).  Unknown ids are
    left out.
    """
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    has_agents = table_exists(db, "agents")
    cur = _cursor(db)
    rows: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(ids):
        sql = _sql(len(chunk), has_agents, viewer is not None, full)
        params = (viewer, *chunk) if viewer is not None else chunk
        for row in cur.execute(sql, params):
            rows[row[0]] = row
    ids = [i for i in ids if i in rows]
    # The addressing part of each row (from scopes to audiences), once per distinct addressing.
    middles: dict[_AddressKey, str] = {}
    parsed: dict[_AddressKey, tuple[list[dict[str, str]], list[dict[str, str]]]] = {}
    mention_values: set[str] = set()
    for mid in ids:
        row = rows[mid]
        key = (row[4], row[5], row[6])
        if key in middles or key in parsed:
            continue
        cached = _MIDDLES.get(key)
        if cached is not None:
            middles[key] = cached
            continue
        scopes = _decode(row[5]) if row[5] else []
        refs = _decode(row[6]) if row[6] else []
        parsed[key] = (scopes, refs)
        mention_values.update(r["value"] for r in refs if r["type"] == "mention")
    if parsed:
        kinds, roles = _classify(db, mention_values)
        for key, (scopes, refs) in parsed.items():
            middle = (
                f',"scopes":{key[1] or "[]"},"refs":{key[2] or "[]"},"audiences":'
                f"{_encode(_audiences(key[0], scopes, refs, kinds, roles))},"
            )
            middles[key] = middle
            if not any(r["type"] == "mention" for r in refs):
                # Without mentions the audiences depend on the key alone.
                if len(_MIDDLES) >= _MIDDLES_MAX:
                    _MIDDLES.clear()
                _MIDDLES[key] = middle
    recipients = _recipients(db, ids) if (full or with_recipients) else {}
    out: list[str] = []
    for mid in ids:
        row = rows[mid]
        text = row[1][:-1] + middles[(row[4], row[5], row[6])] + row[2][1:]
        if full:
            text = f'{text[:-1]},"recipients":{_encode(recipients[mid])},"metadata":{row[3]}}}'
        elif with_recipients:
            text = f'{text[:-1]},"recipients":{_encode(recipients[mid])}}}'
        out.append(text)
    return out


def messages_raw(
    db: sqlite3.Connection,
    message_ids: Sequence[str],
    *,
    viewer: str | None,
    full: bool = False,
    with_recipients: bool = False,
) -> RawJSON:
    """:func:`messages_json` as one JSON array, for a reply."""
    texts = messages_json(db, message_ids, viewer=viewer, full=full, with_recipients=with_recipients)
    return RawJSON("[" + ",".join(texts) + "]")


def build_messages(
    db: sqlite3.Connection,
    message_ids: Sequence[str],
    *,
    viewer: str | None,
    full: bool,
    with_recipients: bool = False,
) -> list[dict[str, Any]]:
    """:func:`messages_json` decoded: Message or MessageSummary dicts, in the order of ``message_ids``."""
    texts = messages_json(db, message_ids, viewer=viewer, full=full, with_recipients=with_recipients)
    if not texts:
        return []
    messages: list[dict[str, Any]] = _decode("[" + ",".join(texts) + "]")
    return messages
