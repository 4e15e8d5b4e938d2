"""Inbox, list and outbox queries over a read connection (SPEC §7.4, §9.6).

The default inbox view (messages visible to one agent, newest first, with
``exclude_self`` and ``unread`` allowed) is answered from the derived tables
of :mod:`thrum_plugins.rpc._message_schema` without touching every visible
message: totals from ``inbox_counts`` and ``star_hours``, the page by merging
three index-ordered streams.  Every other combination of filters runs one SQL
query that evaluates visibility per candidate row.

Visible to agent A (``reg`` = A's ``registered_at``; an unknown agent has
none): the ``inbox`` rows of A with ``vis = 1`` (authored, recipient, mention
or group), plus broadcasts created at or after ``reg``.  These two sets are
split so that they never overlap: broadcast rows of A count only before
``reg``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from thrum_plugins.rpc._message_schema import HOUR_NS
from thrum_plugins.rpc._message_visibility import NEVER, AgentInfo, agent_info

__all__ = [
    "ListQuery",
    "ListResult",
    "OutboxQuery",
    "inbox_totals",
    "list_messages",
    "outbox",
    "star_live_since",
    "visible_to",
]


@dataclass(frozen=True)
class ListQuery:
    """Validated ``message.list`` filters; ``self_id`` = ``for_agent`` or the caller."""

    for_agent: str | None = None
    self_id: str | None = None
    scope: tuple[str, str] | None = None
    ref: tuple[str, str] | None = None
    thread_id: str | None = None
    author_id: str | None = None
    mentions: bool = False
    unread: bool = False
    exclude_self: bool = False
    include_deleted: bool = False
    created_after_ns: int | None = None
    created_before_ns: int | None = None
    page_size: int = 10
    page: int = 1
    sort_by: str = "created_at"
    sort_order: str = "desc"

    @property
    def fast(self) -> bool:
        """Whether the default-inbox fast path answers this query."""
        return (
            self.for_agent is not None
            and self.scope is None
            and self.ref is None
            and self.thread_id is None
            and self.author_id is None
            and not self.mentions
            and not self.include_deleted
            and self.created_after_ns is None
            and self.created_before_ns is None
            and self.sort_by == "created_at"
        )


@dataclass(frozen=True)
class ListResult:
    """Ids of the page, the number of matches and how many of them are unread for self."""

    ids: list[str]
    total: int
    unread: int


def _registered(info: AgentInfo | None) -> int:
    return NEVER if info is None else info.registered_ns


def star_live_since(db: sqlite3.Connection, reg_ns: int) -> int:
    """Live broadcasts created at or after ``reg_ns`` (a sum over ``star_hours`` plus one partial hour)."""
    if reg_ns >= NEVER:
        return 0
    hour = max(reg_ns, 0) // HOUR_NS
    full = db.execute("SELECT coalesce(sum(n), 0) FROM star_hours WHERE hour > ?", (hour,)).fetchone()[0]
    partial = db.execute(
        "SELECT count(*) FROM messages WHERE star = 1 AND deleted = 0 AND created_ns >= ? AND created_ns < ?",
        (reg_ns, (hour + 1) * HOUR_NS),
    ).fetchone()[0]
    return int(full) + int(partial)


def inbox_totals(
    db: sqlite3.Connection, viewer: str, info: AgentInfo | None, *, exclude_self: bool
) -> tuple[int, int]:
    """``(total, unread)`` of the default inbox of ``viewer`` (live messages), in a few lookups."""
    reg = _registered(info)
    counts: dict[tuple[int, int, int, int, int], int] = {}
    for star, self_, vis, deleted, read, n in db.execute(
        "SELECT star, self, vis, deleted, read, n FROM inbox_counts WHERE viewer=? AND n != 0", (viewer,)
    ):
        counts[(star, self_, vis, deleted, read)] = n
    before: dict[tuple[int, int, int, int], int] = {}
    if reg < NEVER:
        for self_, vis, deleted, read, n in db.execute(
            "SELECT self, vis, deleted, read, count(*) FROM inbox"
            " WHERE viewer=? AND star=1 AND created_ns < ?"
            " GROUP BY 1, 2, 3, 4",
            (viewer, reg),
        ):
            before[(self_, vis, deleted, read)] = n
    else:
        before = {k[1:]: n for k, n in counts.items() if k[0] == 1}

    def c(star: int, self_: int | None = None, vis: int | None = None, read: int | None = None) -> int:
        return sum(
            n
            for (s, sf, v, d, r), n in counts.items()
            if s == star
            and d == 0
            and (self_ is None or sf == self_)
            and (vis is None or v == vis)
            and (read is None or r == read)
        )

    def b(self_: int | None = None, vis: int | None = None, read: int | None = None) -> int:
        return sum(
            n
            for (sf, v, d, r), n in before.items()
            if d == 0
            and (self_ is None or sf == self_)
            and (vis is None or v == vis)
            and (read is None or r == read)
        )

    star_since = star_live_since(db, reg)
    self_after = c(1, self_=1) - b(self_=1)
    read_after = c(1, self_=0, read=1) - b(self_=0, read=1)
    unread = c(0, self_=0, vis=1, read=0) + (star_since - self_after - read_after) + b(self_=0, vis=1, read=0)
    if exclude_self:
        total = c(0, self_=0, vis=1) + (star_since - self_after) + b(self_=0, vis=1)
    else:
        total = c(0, vis=1) + star_since + b(vis=1)
    return total, unread


def _stream(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[tuple[int, str]]:
    cur = db.cursor()
    cur.row_factory = None
    rows: list[tuple[int, str]] = cur.execute(sql, params).fetchall()
    return rows


def _fast_page(db: sqlite3.Connection, q: ListQuery, info: AgentInfo | None) -> list[str]:
    viewer = q.for_agent
    assert viewer is not None
    reg = _registered(info)
    desc = q.sort_order != "asc"
    order = "DESC" if desc else "ASC"
    need = q.page * q.page_size
    # ``self OR rcpt OR dyn`` is ``vis`` spelled out: SQLite reads a virtual column from the
    # table row, the spelled-out form can come from an index that holds the three flags.
    row_filter = " AND (self OR rcpt OR dyn) AND deleted = 0"
    if q.exclude_self or q.unread:
        row_filter += " AND self = 0"
    if q.unread:
        row_filter += " AND read = 0"
    first = _stream(
        db,
        f"SELECT created_ns, message_id FROM inbox WHERE viewer = ? AND star = 0{row_filter}"
        f" ORDER BY created_ns {order}, message_id {order} LIMIT ?",
        (viewer, need),
    )
    # When the first stream fills the page on its own, rows of the others beyond its last
    # instant cannot be on it: bound them (``>=`` keeps ties, the sort below settles them).
    bound, cmp = (-(1 << 63), ">=") if desc else ((1 << 63) - 1, "<=")
    if len(first) >= need:
        bound = first[-1][0]
    streams = [first]
    if reg < NEVER:
        streams.append(
            _stream(
                db,
                "SELECT created_ns, message_id FROM inbox WHERE viewer = ? AND star = 1"
                f" AND created_ns < ? AND created_ns {cmp} ?{row_filter}"
                f" ORDER BY created_ns {order}, message_id {order} LIMIT ?",
                (viewer, reg, bound, need),
            )
        )
        star_filter = ""
        if q.exclude_self or q.unread:
            star_filter += " AND agent_id != ?1"
        if q.unread:
            star_filter += (
                " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.viewer = ?1"
                " AND i.message_id = messages.message_id"
                " AND i.read = 1)"
            )
        # One lower bound only: SQLite ranges the index on one of two, and filters with the other.
        since, until = (max(reg, bound), (1 << 63) - 1) if desc else (reg, bound)
        streams.append(
            _stream(
                db,
                f"SELECT created_ns, message_id FROM messages INDEXED BY messages_star"
                f" WHERE star = 1 AND deleted = 0 AND created_ns >= ?2 AND created_ns <= ?4{star_filter}"
                f" ORDER BY created_ns {order}, message_id {order} LIMIT ?3",
                (viewer, since, need, until),
            )
        )
    else:
        streams.append(
            _stream(
                db,
                f"SELECT created_ns, message_id FROM inbox WHERE viewer = ? AND star = 1"
                f" AND created_ns {cmp} ?{row_filter}"
                f" ORDER BY created_ns {order}, message_id {order} LIMIT ?",
                (viewer, bound, need),
            )
        )
    # Each stream is sorted and at most ``need`` long: sorting their concatenation in C is
    # cheaper than merging them lazily in Python.
    rows = [row for stream in streams for row in stream]
    rows.sort(reverse=desc)
    start = (q.page - 1) * q.page_size
    return [mid for _ns, mid in rows[start : start + q.page_size]]


def visible_to(alias: str = "m") -> str:
    """SQL condition "message ``alias`` is visible to ``:viewer`` registered at ``:reg``"."""
    return (
        f"(({alias}.star = 1 AND {alias}.created_ns >= :reg) OR EXISTS (SELECT 1 FROM inbox vi"
        f" WHERE vi.viewer = :viewer AND vi.message_id = {alias}.message_id AND vi.vis = 1))"
    )


def _unread_for(alias: str = "m") -> str:
    return (
        f"({alias}.agent_id != :self AND {alias}.deleted = 0 AND NOT EXISTS (SELECT 1 FROM message_reads rd"
        f" WHERE rd.message_id = {alias}.message_id AND rd.agent_id = :self)"
        f" AND (({alias}.star = 1 AND {alias}.created_ns >= :self_reg) OR EXISTS (SELECT 1 FROM inbox si"
        f" WHERE si.viewer = :self AND si.message_id = {alias}.message_id AND si.vis = 1)))"
    )


def _general(db: sqlite3.Connection, q: ListQuery, self_info: AgentInfo | None) -> ListResult:
    where: list[str] = []
    params: dict[str, object] = {
        "self": q.self_id or "",
        "self_reg": _registered(self_info),
    }
    if q.for_agent is not None:
        params["viewer"] = q.for_agent
        params["reg"] = (
            _registered(agent_info(db, q.for_agent)) if q.for_agent != q.self_id else params["self_reg"]
        )
        where.append(visible_to("m"))
    if not q.include_deleted:
        where.append("m.deleted = 0")
    if q.scope is not None:
        where.append(
            "m.message_id IN (SELECT message_id FROM message_scopes"
            " WHERE type = :scope_type AND value = :scope_value)"
        )
        params["scope_type"], params["scope_value"] = q.scope
    if q.ref is not None:
        where.append(
            "m.message_id IN (SELECT message_id FROM message_refs"
            " WHERE type = :ref_type AND value = :ref_value)"
        )
        params["ref_type"], params["ref_value"] = q.ref
    if q.thread_id is not None:
        where.append("m.thread_id = :thread_id")
        params["thread_id"] = q.thread_id
    if q.author_id is not None:
        where.append("m.agent_id = :author_id")
        params["author_id"] = q.author_id
    if q.mentions:
        values = [q.self_id or ""]
        if self_info is not None and self_info.kind == "agent" and self_info.role:
            values.append(self_info.role)
        elif self_info is not None and self_info.kind == "user" and self_info.agent_id.startswith("user:"):
            values.append(self_info.agent_id[5:])
        names = []
        for i, v in enumerate(values):
            params[f"mention{i}"] = v
            names.append(f":mention{i}")
        where.append(
            "EXISTS (SELECT 1 FROM message_refs mr WHERE mr.message_id = m.message_id AND mr.type = 'mention'"
            f" AND mr.value IN ({', '.join(names)}))"
        )
    if q.exclude_self:
        where.append("m.agent_id != :self")
    if q.created_after_ns is not None:
        where.append("m.created_ns >= :after")
        params["after"] = q.created_after_ns
    if q.created_before_ns is not None:
        where.append("m.created_ns < :before")
        params["before"] = q.created_before_ns
    base = " AND ".join(where) or "1"
    has_self = q.self_id is not None
    unread_cond = _unread_for("m") if has_self else "0"
    row = db.execute(
        f"SELECT count(*), coalesce(sum({unread_cond}), 0) FROM messages m WHERE {base}", params
    ).fetchone()
    total, unread = int(row[0]), int(row[1])
    page_where = base + (f" AND {unread_cond}" if q.unread else "")
    if q.unread:
        total = unread
    order = "DESC" if q.sort_order != "asc" else "ASC"
    key = "coalesce(m.updated_ns, m.created_ns)" if q.sort_by == "updated_at" else "m.created_ns"
    params["limit"] = q.page_size
    params["offset"] = (q.page - 1) * q.page_size
    ids = [
        r[0]
        for r in db.execute(
            f"SELECT m.message_id FROM messages m WHERE {page_where}"
            f" ORDER BY {key} {order}, m.message_id {order} LIMIT :limit OFFSET :offset",
            params,
        )
    ]
    return ListResult(ids, total, unread)


def list_messages(db: sqlite3.Connection, q: ListQuery) -> ListResult:
    """Answer ``message.list`` (ids of the page, total and unread)."""
    self_info = agent_info(db, q.self_id) if q.self_id is not None else None
    if q.fast:
        assert q.for_agent is not None
        info = self_info if q.for_agent == q.self_id else agent_info(db, q.for_agent)
        total, unread = inbox_totals(db, q.for_agent, info, exclude_self=q.exclude_self)
        ids = _fast_page(db, q, info)
        return ListResult(ids, unread if q.unread else total, unread)
    return _general(db, q, self_info)


@dataclass(frozen=True)
class OutboxQuery:
    """Validated ``message.outbox`` filters."""

    author: str
    to: str | None = None
    unread: bool = False
    include_deleted: bool = False
    page_size: int = 10
    page: int = 1


def outbox(db: sqlite3.Connection, q: OutboxQuery) -> tuple[list[str], int]:
    """Ids of the caller's messages (newest first) for the page, and how many match."""
    where = ["m.agent_id = :author"]
    params: dict[str, object] = {"author": q.author}
    if not q.include_deleted:
        where.append("m.deleted = 0")
    if q.to is not None:
        params["to"] = q.to
        cond = (
            "EXISTS (SELECT 1 FROM message_recipients r"
            " WHERE r.message_id = m.message_id AND r.agent_id = :to)"
            " OR EXISTS (SELECT 1 FROM message_refs f WHERE f.message_id = m.message_id"
            " AND f.type IN ('mention', 'group') AND f.value = :to)"
            " OR EXISTS (SELECT 1 FROM message_scopes s WHERE s.message_id = m.message_id"
            " AND s.type = 'group' AND s.value = :to)"
        )
        if q.to == "everyone":
            cond += " OR m.star = 1"
        where.append(f"({cond})")
    if q.unread:
        where.append(
            "EXISTS (SELECT 1 FROM message_recipients r WHERE r.message_id = m.message_id AND NOT EXISTS"
            " (SELECT 1 FROM message_reads d WHERE d.message_id = r.message_id AND d.agent_id = r.agent_id))"
        )
    base = " AND ".join(where)
    total = int(db.execute(f"SELECT count(*) FROM messages m WHERE {base}", params).fetchone()[0])
    params["limit"] = q.page_size
    params["offset"] = (q.page - 1) * q.page_size
    ids = [
        r[0]
        for r in db.execute(
            f"SELECT m.message_id FROM messages m WHERE {base}"
            " ORDER BY m.created_ns DESC, m.message_id DESC LIMIT :limit OFFSET :offset",
            params,
        )
    ]
    return ids, total
