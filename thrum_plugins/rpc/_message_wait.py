"""``message.wait``: long-poll until a matching message is projected (SPEC §9.6).

Waiting blocks on a push, never on polling: a :class:`WaitRegistry` holds the
pending calls and the ``thrum_event_applied`` observer hands every live
``message.create`` (written locally, merged from git or pulled from a peer) to
it; a call whose filter matches is woken at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from thrum_core.errors import InvalidParams
from thrum_core.names import strip_at
from thrum_core.timefmt import now_ns, parse_point_in_time
from thrum_plugins.rpc._message_common import caller_id, ensure_fresh, reader
from thrum_plugins.rpc._message_params import WaitParams
from thrum_plugins.rpc._message_queries import visible_to
from thrum_plugins.rpc._message_results import messages_raw
from thrum_plugins.rpc._message_visibility import NEVER, agent_info

if TYPE_CHECKING:
    from thrum_core.events.types import StoredEvent
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext

__all__ = ["LIVE_SOURCES", "WaitRegistry", "wait", "wait_registry"]

LIVE_SOURCES = frozenset({"local", "sync", "peer"})
STATE_KEY = "messages.wait"


@dataclass(eq=False)
class Waiter:
    """One pending ``message.wait`` call."""

    agent_id: str
    scope: tuple[str, str] | None
    mention: str | None
    all: bool
    wake: trio.Event = field(default_factory=trio.Event)
    matched: list[str] = field(default_factory=list)

    @property
    def filtered(self) -> bool:
        return self.scope is not None or self.mention is not None or self.all


class WaitRegistry:
    """The pending waits of one kernel."""

    def __init__(self) -> None:
        self.waiters: set[Waiter] = set()

    def add(self, waiter: Waiter) -> None:
        self.waiters.add(waiter)

    def remove(self, waiter: Waiter) -> None:
        self.waiters.discard(waiter)

    def on_event(self, event: StoredEvent, kernel: Kernel) -> None:
        """Wake the waiters a newly projected ``message.create`` matches."""
        if not self.waiters or event.type != "message.create" or event.state != "applied":
            return
        if event.source not in LIVE_SOURCES:
            return
        obj = event.obj
        message_id = obj.get("message_id")
        author = obj.get("agent_id")
        if not isinstance(message_id, str):
            return
        for waiter in list(self.waiters):
            if waiter.agent_id == author:
                continue
            if _matches(waiter, obj, message_id, kernel):
                waiter.matched.append(message_id)
                waiter.wake.set()


def _pairs(value: Any) -> set[tuple[Any, Any]]:
    if not isinstance(value, list):
        return set()
    return {(i.get("type"), i.get("value")) for i in value if isinstance(i, dict)}


def _matches(waiter: Waiter, obj: dict[str, Any], message_id: str, kernel: Kernel) -> bool:
    if waiter.filtered:
        if waiter.all:
            return True
        if waiter.scope is not None and waiter.scope in _pairs(obj.get("scopes")):
            return True
        return waiter.mention is not None and ("mention", waiter.mention) in _pairs(obj.get("refs"))
    recipients = obj.get("recipients")
    if isinstance(recipients, list) and waiter.agent_id in recipients:
        return True  # the common case, decided without a query
    if kernel.store is None:
        return False
    db = kernel.store.reader()
    return _visible(db, message_id, waiter.agent_id)


def _visible(db: sqlite3.Connection, message_id: str, agent_id: str) -> bool:
    info = agent_info(db, agent_id)
    params = {"id": message_id, "viewer": agent_id, "reg": NEVER if info is None else info.registered_ns}
    sql = f"SELECT 1 FROM messages m WHERE m.message_id = :id AND {visible_to('m')}"
    return db.execute(sql, params).fetchone() is not None


def wait_registry(kernel: Kernel) -> WaitRegistry:
    """The kernel's :class:`WaitRegistry` (created on first use)."""
    state = kernel.plugin_state(STATE_KEY)
    registry = state.get("registry")
    if registry is None:
        registry = state["registry"] = WaitRegistry()
    assert isinstance(registry, WaitRegistry)
    return registry


def _existing(db: sqlite3.Connection, waiter: Waiter, after_ns: int, limit: int) -> list[str]:
    params: dict[str, Any] = {"after": after_ns, "me": waiter.agent_id, "limit": limit}
    if waiter.filtered:
        conds = []
        if waiter.all:
            conds.append("1")
        if waiter.scope is not None:
            params["st"], params["sv"] = waiter.scope
            conds.append(
                "EXISTS (SELECT 1 FROM message_scopes s WHERE s.message_id = m.message_id"
                " AND s.type = :st AND s.value = :sv)"
            )
        if waiter.mention is not None:
            params["mention"] = waiter.mention
            conds.append(
                "EXISTS (SELECT 1 FROM message_refs r WHERE r.message_id = m.message_id"
                " AND r.type = 'mention' AND r.value = :mention)"
            )
        cond = "(" + " OR ".join(conds) + ")"
    else:
        info = agent_info(db, waiter.agent_id)
        params["viewer"] = waiter.agent_id
        params["reg"] = NEVER if info is None else info.registered_ns
        cond = visible_to("m")
    return [
        r[0]
        for r in db.execute(
            "SELECT m.message_id FROM messages m WHERE m.created_ns >= :after AND m.deleted = 0"
            f" AND m.agent_id != :me AND {cond} ORDER BY m.created_ns, m.message_id LIMIT :limit",
            params,
        )
    ]


def _still_matching(db: sqlite3.Connection, ids: list[str], min_created: int | None, limit: int) -> list[str]:
    out: list[str] = []
    for mid in dict.fromkeys(ids):
        row = db.execute("SELECT deleted, created_ns FROM messages WHERE message_id=?", (mid,)).fetchone()
        if row is None or row[0]:
            continue
        if min_created is not None and row[1] < min_created:
            continue
        out.append(mid)
    return out[:limit]


async def wait(p: WaitParams, ctx: CallContext) -> dict[str, Any]:
    """``message.wait``: already-projected matches at once, else the first new match, else timeout."""
    me = caller_id(ctx)
    now = now_ns()
    after_ns = now
    if p.after is not None:
        try:
            after_ns = parse_point_in_time(p.after, now=now, mode="after")
        except ValueError as exc:
            raise InvalidParams("after", "invalid", str(exc)) from None
    kernel = ctx.kernel
    registry = wait_registry(kernel)
    waiter = Waiter(
        me, p.scope.pair() if p.scope else None, strip_at(p.mention) if p.mention else None, p.all
    )
    registry.add(waiter)
    try:
        await ensure_fresh(kernel, [me])
        db = reader(kernel)
        ids = _existing(db, waiter, after_ns, p.limit)
        min_created = after_ns if after_ns > now else None
        with trio.move_on_after(p.timeout_ms / 1000):
            while not ids:
                await waiter.wake.wait()
                found, waiter.matched = waiter.matched, []
                waiter.wake = trio.Event()
                ids = _still_matching(reader(kernel), found, min_created, p.limit)
        if not ids:
            return {"status": "timeout", "messages": []}
        return {"status": "received", "messages": messages_raw(reader(kernel), ids, viewer=me)}
    finally:
        registry.remove(waiter)
