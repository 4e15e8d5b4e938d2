"""Message and MessageSummary result objects (SPEC §9.2), built in batches from a read connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from thrum_plugins.rpc._group_expand import table_exists

__all__ = ["build_messages", "preview"]

PREVIEW_CHARS = 100

_COLUMNS = (
    "message_id, thread_id, reply_to, agent_id, session_id, created_at, updated_at, edit_count, body_format,"
    " body_content, body_structured, deleted, deleted_at, delete_reason, authored_by, disclosed, addressed, star,"
    " rcpt_count, read_count"
)


def preview(content: str | None) -> str | None:
    """The first 100 code points of ``content``, plus ``...`` when cut (SPEC §10.2)."""
    if content is None:
        return None
    return content if len(content) <= PREVIEW_CHARS else content[:PREVIEW_CHARS] + "..."


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in(db: sqlite3.Connection, sql: str, ids: Sequence[str], *extra: Any) -> list[Any]:
    """Run ``sql`` (with ``{marks}`` for the id list) over ``ids`` in chunks."""
    rows: list[Any] = []
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(db.execute(sql.format(marks=marks), (*chunk, *extra)).fetchall())
    return rows


def _agents(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[str | None, str, str, str]]:
    """``{agent_id: (name, role, kind, module)}`` of the registered agents among ``ids``."""
    if not ids or not table_exists(db, "agents"):
        return {}
    return {
        r[0]: (r[1], r[2] or "", r[3] or "agent", r[4] or "")
        for r in _in(
            db, "SELECT agent_id, name, role, kind, module FROM agents WHERE agent_id IN ({marks})", ids
        )
    }


def _roles(db: sqlite3.Connection, values: Sequence[str]) -> set[str]:
    if not values or not table_exists(db, "agents"):
        return set()
    return {
        r[0]
        for r in _in(db, "SELECT DISTINCT role FROM agents WHERE kind='agent' AND role IN ({marks})", values)
    }


def _audiences(
    addressed: int,
    scopes: list[dict[str, str]],
    refs: list[dict[str, str]],
    agents: dict[str, tuple[str | None, str, str, str]],
    roles: set[str],
) -> list[dict[str, str]]:
    out: dict[tuple[str, str], None] = {}
    if not addressed:
        out[("broadcast", "everyone")] = None
    for item in (*scopes, *refs):
        typ, value = item["type"], item["value"]
        if typ == "broadcast" or (typ == "group" and value == "everyone"):
            out[("broadcast", "everyone")] = None
        elif typ == "group":
            out[("group", value)] = None
    for item in refs:
        if item["type"] != "mention":
            continue
        value = item["value"]
        known = agents.get(value)
        if known is not None:
            out[("user" if known[2] == "user" else "agent", value)] = None
        elif value in roles:
            out[("role", value)] = None
        elif value.startswith("user:"):
            out[("user", value)] = None
        else:
            out[("agent", value)] = None
    return [{"type": t, "value": v} for t, v in out]


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
    rows = {r[0]: r for r in _in(db, f"SELECT {_COLUMNS} FROM messages WHERE message_id IN ({{marks}})", ids)}
    ids = [i for i in ids if i in rows]
    scopes: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    refs: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    for mid, kind, typ, value in _scopes_refs(db, ids):
        (scopes if kind == "s" else refs)[mid].append({"type": typ, "value": value})
    mention_values = sorted({r["value"] for rs in refs.values() for r in rs if r["type"] == "mention"})
    authors = sorted({rows[i][3] for i in ids})
    agents = _agents(db, sorted(set(authors) | set(mention_values)))
    roles = _roles(db, [v for v in mention_values if v not in agents])
    read: set[str] = set()
    if viewer is not None:
        read = {
            r[0]
            for r in _in(
                db,
                "SELECT message_id FROM message_reads WHERE message_id IN ({marks}) AND agent_id=?",
                ids,
                viewer,
            )
        }
    recipients: dict[str, list[dict[str, Any]]] = {}
    if full or with_recipients:
        recipients = {i: [] for i in ids}
        for mid, agent_id, read_at in _in(
            db,
            "SELECT r.message_id, r.agent_id, d.read_at FROM message_recipients r LEFT JOIN message_reads d"
            " ON d.message_id = r.message_id AND d.agent_id = r.agent_id WHERE r.message_id IN ({marks})"
            " ORDER BY r.message_id, r.agent_id",
            ids,
        ):
            recipients[mid].append({"agent_id": agent_id, "read_at": read_at})
    out: list[dict[str, Any]] = []
    for mid in ids:
        row = rows[mid]
        author_id = row[3]
        info = agents.get(author_id)
        msg: dict[str, Any] = {
            "message_id": mid,
            "thread_id": row[1],
            "reply_to": row[2],
            "agent_id": author_id,
            "author": {
                "agent_id": author_id,
                "session_id": row[4],
                "name": (info[0] or author_id) if info else author_id,
                "role": (info[1] or None) if info else None,
                "kind": info[2] if info else "agent",
            },
            "authored_by": row[14],
            "disclosed": bool(row[15]),
            "body": {"format": row[8], "content": row[9], "structured": row[10]},
            "scopes": scopes[mid],
            "refs": refs[mid],
            "audiences": _audiences(row[16], scopes[mid], refs[mid], agents, roles),
            "created_at": row[5],
            "updated_at": row[6],
            "deleted": bool(row[11]),
            "is_read": None if viewer is None else (author_id == viewer or mid in read),
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


def _scopes_refs(db: sqlite3.Connection, ids: Sequence[str]) -> list[Any]:
    """``(message_id, "s"|"r", type, value)`` of the messages' scopes and refs, sorted by type and value."""
    rows: list[Any] = []
    for chunk in _chunks(ids, 400):
        marks = ",".join("?" * len(chunk))
        rows.extend(
            db.execute(
                f"SELECT message_id, 's', type, value FROM message_scopes WHERE message_id IN ({marks})"
                f" UNION ALL SELECT message_id, 'r', type, value FROM message_refs WHERE message_id IN ({marks})",
                (*chunk, *chunk),
            ).fetchall()
        )
    return rows
