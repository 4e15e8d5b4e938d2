"""Helpers shared by the message, group and subscription handlers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from thrum_core.errors import InvalidParams, PermissionDenied, ThrumError
from thrum_core.timefmt import parse_ts_ns
from thrum_plugins.rpc._message_visibility import process_dirty

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext

__all__ = [
    "caller_id",
    "ensure_fresh",
    "optional_caller",
    "parse_ts_param",
    "reader",
    "snapshot",
    "write_local",
]

T = TypeVar("T")


def reader(kernel: Kernel, *, fresh_except: frozenset[str] | None = None) -> sqlite3.Connection:
    """The read-only projection connection of the current thread (see ``EventStore.reader``)."""
    if kernel.store is None:
        raise ThrumError("the event store is not open")
    return kernel.store.reader(fresh_except=fresh_except)


@contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the reads of the ``with`` block as one read transaction on the (shared) reader ``db``.

    One snapshot for all of them (a total and its page agree), and one read
    lock instead of one per statement.  The block must not await: other
    requests of this thread use the same connection.
    """
    if db.in_transaction:
        yield db
        return
    db.execute("BEGIN")
    try:
        yield db
    finally:
        db.execute("COMMIT")


def caller_id(ctx: CallContext) -> str:
    """The resolved caller's agent id (methods with ``caller``/``session`` auth)."""
    caller = ctx.caller
    agent_id = getattr(caller, "agent_id", None)
    if not isinstance(agent_id, str) or not agent_id:
        raise PermissionDenied("no_caller", "this method needs a caller: pass caller_agent_id")
    return agent_id


def optional_caller(ctx: CallContext) -> Any:
    """The caller of an ``open`` method when one is given (``None`` otherwise)."""
    if ctx.caller is not None:
        return ctx.caller
    conn = ctx.connection
    if ctx.caller_agent_id is None and (conn is None or getattr(conn, "session_id", None) is None):
        return None
    try:
        caller = ctx.kernel.pm.hook.thrum_resolve_caller(ctx=ctx, auth="caller")
    except PermissionDenied as exc:
        if (exc.data or {}).get("reason") == "caller_mismatch":
            raise
        return None
    ctx.caller = caller
    return caller


def parse_ts_param(field: str, value: str | None) -> int | None:
    """An RFC 3339 parameter as integer ns (-32602 when it does not parse)."""
    if value is None:
        return None
    ns = parse_ts_ns(value)
    if ns is None:
        raise InvalidParams(
            field, "invalid timestamp", f"{field} must be an RFC 3339 timestamp, got {value!r}"
        )
    return ns


async def write_local(kernel: Kernel, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(conn)`` on the writer's connection, in one transaction, between writer batches."""
    store = kernel.store
    if store is None:
        raise ThrumError("the event store is not open")

    def job() -> T:
        conn = store.projection.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return await store.run_exclusive(job)


async def ensure_fresh(kernel: Kernel, agent_ids: Iterable[str | None]) -> None:
    """Recompute stale inbox rows (``vis_dirty``) of these agents before reading them."""
    db = reader(kernel)
    ids = [a for a in agent_ids if a]
    if not ids:
        return
    marks = ",".join("?" * len(ids))
    if db.execute(f"SELECT 1 FROM vis_dirty WHERE agent_id IN ({marks}) LIMIT 1", ids).fetchone() is None:
        return
    await write_local(kernel, process_dirty)
