"""The caller of an RPC request (SPEC §8.6) and its resolution.

``resolve_caller(ctx, auth)`` implements the ``thrum_resolve_caller`` hook
for the ``caller`` and ``session`` auth classes (the ``agents`` plugin
registers it):

- Unix socket: the caller is ``caller_agent_id`` if present, else the agent
  of the session the connection is attached to (§10.1); both present and
  different → -32002 ``caller_mismatch``.
- WebSocket connection bound to a user (``connection.user_id``): the caller
  is that user; a different ``caller_agent_id`` → ``caller_mismatch``.
- The caller must be a live registered agent (``not_registered``);
  ``session`` auth needs an open session (``no_session``).

Every resolved local caller refreshes its presence (§7.4).  Other plugins
read ``ctx.caller`` as a :class:`Caller`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thrum_core.errors import PermissionDenied
from thrum_plugins.rpc._agent_state import presence

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext

__all__ = ["MESSAGE_DATA_TYPES", "Caller", "caller_of", "identity_rows", "resolve_caller", "touch_presence"]

#: Event types whose reducers never touch agents, sessions or groups: writing them keeps
#: :func:`identity_rows` valid (a stream of sends does not empty it).
MESSAGE_DATA_TYPES = frozenset({"message.create", "message.edit", "message.delete", "message.receipt"})
#: Entries kept at most; the cache starts over beyond that.
_CACHE_MAX = 4096


class _IdentityCache:
    __slots__ = ("key", "rows")

    def __init__(self) -> None:
        self.key: Any = None
        self.rows: dict[Any, Any] = {}


def identity_rows(kernel: Kernel) -> dict[Any, Any] | None:
    """A cache of agent and session lookups on the projection, or ``None`` (no store).

    Valid while the store saw no write other than :data:`MESSAGE_DATA_TYPES`
    events: any other event, catch-up or exclusive job (merge, rebuild) gives
    a fresh, empty dict.  Call it *before* the query whose result goes in, so
    a result read just before a change is filed under the old key.
    """
    store = kernel.store
    if store is None:
        return None
    key = store.changes_except(MESSAGE_DATA_TYPES)
    if key is None:
        return None
    state = kernel.plugin_state("identity_cache")
    cache: _IdentityCache | None = state.get("cache")
    if cache is None:
        cache = state["cache"] = _IdentityCache()
    if cache.key != key or len(cache.rows) >= _CACHE_MAX:
        cache.key = key
        cache.rows = {}
    return cache.rows


@dataclass(frozen=True)
class Caller:
    """Who is calling.

    ``session_id`` is the caller's session: the connection's attached session
    when it belongs to the caller and is open, else the caller's most
    recently started open session, else ``None``.  ``source`` is
    ``caller_agent_id``, ``connection`` or ``token`` (SPEC §9.4 whoami).
    """

    agent_id: str
    kind: str
    role: str
    module: str
    session_id: str | None
    source: str
    is_local: bool = True


def _identify(ctx: CallContext) -> tuple[str | None, str, str | None]:
    """``(agent_id, source, attached session id)`` before any database check."""
    conn = ctx.connection
    asserted = ctx.caller_agent_id or None
    user_id = getattr(conn, "user_id", None) if conn is not None else None
    if user_id:
        if asserted is not None and asserted != user_id:
            raise PermissionDenied(
                "caller_mismatch",
                f"caller_agent_id {asserted!r} does not match this connection's user {user_id!r}",
            )
        return user_id, "token", getattr(conn, "session_id", None)
    attached = getattr(conn, "session_id", None) if conn is not None else None
    return asserted, "caller_agent_id" if asserted is not None else "connection", attached


# One statement for the common case: the attached session and the caller's agent (the asserted
# one, else the session's).  Each statement on a read connection opens a read transaction that,
# right after a commit by the writer, starts by dropping the connection's page cache.
_CALLER_SQL = (
    "SELECT s.session_id, s.agent_id, s.ended_at, s.start_k,"
    " a.agent_id, a.kind, a.role, a.module, a.origin_daemon"
    " FROM (SELECT ?1 AS sid, ?2 AS aid) p"
    " LEFT JOIN sessions s ON s.session_id = p.sid"
    " LEFT JOIN agents a ON a.agent_id = coalesce(p.aid, s.agent_id)"
)
_OPEN_SESSION_SQL = (
    "SELECT session_id FROM sessions WHERE ended_at IS NULL AND start_k IS NOT NULL AND agent_id=?"
    " ORDER BY start_k DESC LIMIT 1"
)


def resolve_caller(ctx: CallContext, auth: str) -> Caller:
    """Resolve and authorise the caller of ``ctx`` for ``auth`` (``caller`` or ``session``)."""
    kernel = ctx.kernel
    agent_id, source, attached = _identify(ctx)
    store = kernel.store
    if store is None:
        raise RuntimeError("the event store is not open")
    rows = identity_rows(kernel)
    resolved_key = ("resolved", attached, agent_id, source)
    if rows is not None:
        known: Caller | None = rows.get(resolved_key)
        if known is not None:
            if auth == "session" and known.session_id is None:
                raise _no_session(known.agent_id)
            if known.is_local:
                touch_presence(ctx, known.agent_id, known.session_id)
            return known
    cur = store.reader(fresh_except=MESSAGE_DATA_TYPES).cursor()  # agents and sessions only
    cur.row_factory = None
    row = cur.execute(_CALLER_SQL, (attached or None, agent_id)).fetchone()
    sid, session_agent, ended_at, start_k, found, kind, role, module, origin = row
    attached_found = sid is not None
    if attached_found and source != "token":
        if agent_id is None:
            agent_id = session_agent
        elif session_agent and session_agent != agent_id:
            raise PermissionDenied(
                "caller_mismatch",
                f"caller_agent_id {agent_id!r} does not match the agent {session_agent!r} "
                "of the session this connection is attached to",
            )
    if agent_id is None:
        raise PermissionDenied(
            "no_caller",
            f"{ctx.method} needs a caller: pass caller_agent_id or start a session on this connection",
        )
    if found is None:
        raise PermissionDenied(
            "not_registered",
            f"agent {agent_id!r} is not registered"
            f" (run thrum quickstart --name {agent_id} --role ROLE --module MODULE)",
        )
    session_id: str | None
    if attached_found and ended_at is None and start_k is not None and session_agent == agent_id:
        session_id = sid
    else:
        # The agent's most recently started open session (as ``open_sessions`` orders them).
        open_row = cur.execute(_OPEN_SESSION_SQL, (agent_id,)).fetchone()
        session_id = open_row[0] if open_row is not None else None
    if auth == "session" and session_id is None:
        raise _no_session(agent_id)
    origin = origin or ""
    caller = Caller(
        agent_id=agent_id,
        kind=kind or "agent",
        role=role or "",
        module=module or "",
        session_id=session_id,
        source=source,
        is_local=not origin or origin == kernel.daemon_id,
    )
    if rows is not None:
        rows[resolved_key] = caller
    if caller.is_local:
        touch_presence(ctx, agent_id, session_id)
    return caller


def _no_session(agent_id: str) -> PermissionDenied:
    return PermissionDenied(
        "no_session",
        f"agent {agent_id!r} has no open session (run thrum session start or thrum quickstart)",
    )


def touch_presence(ctx: CallContext, agent_id: str, session_id: str | None = None) -> None:
    """Record activity of a local agent (in memory; persisted by the presence service)."""
    presence(ctx.kernel).touch(agent_id, session_id)


def caller_of(ctx: CallContext) -> Caller:
    """``ctx.caller`` as a :class:`Caller` (for handlers with ``caller``/``session`` auth)."""
    caller = ctx.caller
    if not isinstance(caller, Caller):
        raise PermissionDenied("no_caller", f"{ctx.method} needs a caller")
    return caller
