"""Message and MessageSummary result objects (SPEC §9.2), built in batches from a read connection.

A page is read with one query (the message rows with their author and the
viewer's read state; scopes and refs come from the rows' JSON columns), plus
one look-up of the agents and roles that mention refs name, to tell agent,
user and role audiences apart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from thrum_plugins.rpc._group_expand import table_exists

__all__ = ["build_messages", "preview"]

PREVIEW_CHARS = 100

_COLUMNS = (
    "m.message_id, m.thread_id, m.reply_to, m.agent_id, m.session_id, m.created_at, m.updated_at,"
    " m.edit_count, m.body_format, m.body_content, m.body_structured, m.deleted, m.deleted_at,"
    " m.delete_reason, m.authored_by, m.disclosed, m.addressed, m.star, m.rcpt_count, m.read_count,"
    " m.scopes_json, m.refs_json"
)
_EMPTY: list[dict[str, str]] = []


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


def _rows(db: sqlite3.Connection, ids: Sequence[str], viewer: str | None) -> dict[str, tuple[Any, ...]]:
    has_agents = table_exists(db, "agents")
    author = ", a.name, a.role, a.kind" if has_agents else ", NULL, NULL, NULL"
    join = " LEFT JOIN agents a ON a.agent_id = m.agent_id" if has_agents else ""
    read = (
        ", EXISTS (SELECT 1 FROM message_reads r WHERE r.message_id = m.message_id AND r.agent_id = ?)"
        if viewer is not None
        else ", 0"
    )
    cur = _cursor(db)
    out: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        params = (viewer, *chunk) if viewer is not None else tuple(chunk)
        for row in cur.execute(
            f"SELECT {_COLUMNS}{author}{read} FROM messages m{join} WHERE m.message_id IN ({marks})", params
        ):
            out[row[0]] = row
    return out


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


def build_messages(
    db: sqlite3.Connection,
    message_ids: Sequence[str],
    *,
    viewer: str | None,
    full: bool,
    with_recipients: bool = False,
) -> list[dict[str, Any]]:
    """Message (``full``) or MessageSummary objects for ``message_ids``, in that order.

    ``viewer`` gives ``is_read`` (``None`` → ``null``).  ``with_recipients``
    adds ``recipients`` to summaries (``message.outbox``).  Unknown ids are
    left out.
    """
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    rows = _rows(db, ids, viewer)
    ids = [i for i in ids if i in rows]
    loads = json.loads
    parsed: dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]] = {}
    mention_values: set[str] = set()
    for mid in ids:
        row = rows[mid]
        scopes = loads(row[20]) if row[20] else _EMPTY
        refs = loads(row[21]) if row[21] else _EMPTY
        parsed[mid] = (scopes, refs)
        mention_values.update(r["value"] for r in refs if r["type"] == "mention")
    kinds, roles = _classify(db, mention_values)
    recipients = _recipients(db, ids) if (full or with_recipients) else {}
    out: list[dict[str, Any]] = []
    for mid in ids:
        row = rows[mid]
        scopes, refs = parsed[mid]
        author_id = row[3]
        msg: dict[str, Any] = {
            "message_id": mid,
            "thread_id": row[1],
            "reply_to": row[2],
            "agent_id": author_id,
            "author": {
                "agent_id": author_id,
                "session_id": row[4],
                "name": row[22] or author_id,
                "role": row[23] or None,
                "kind": row[24] or "agent",
            },
            "authored_by": row[14],
            "disclosed": bool(row[15]),
            "body": {"format": row[8], "content": row[9], "structured": row[10]},
            "scopes": scopes if scopes is not _EMPTY else [],
            "refs": refs if refs is not _EMPTY else [],
            "audiences": _audiences(row[16], scopes, refs, kinds, roles),
            "created_at": row[5],
            "updated_at": row[6],
            "deleted": bool(row[11]),
            "is_read": None if viewer is None else (author_id == viewer or bool(row[25])),
        }
        if full:
            msg["recipients"] = recipients[mid]
            msg["metadata"] = {"deleted_at": row[12], "delete_reason": row[13], "edit_count": row[7]}
        else:
            msg["recipient_count"] = row[18]
            msg["read_count"] = row[19]
            if with_recipients:
                msg["recipients"] = recipients[mid]
        out.append(msg)
    return out
