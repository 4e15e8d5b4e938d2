"""Subscriptions: ``subscribe``, ``unsubscribe``, ``subscriptions.list`` (SPEC §9.7, §10.1).

A subscription belongs to the caller's session; ``subscribe`` attaches the
calling connection to that session, so every attached connection receives
the session's pushes (see :mod:`thrum_plugins.notifiers.push`).  Ephemeral
subscriptions disappear with their connection, all of them when the session
ends (``agent.session.end`` observed through ``thrum_event_applied``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from thrum_core.errors import InvalidParams, PermissionDenied
from thrum_core.markers import hookimpl
from thrum_core.names import strip_at
from thrum_core.rpc.spec import Params
from thrum_core.timefmt import format_ts, now_ns
from thrum_plugins.rpc._message_params import TypeValue

if TYPE_CHECKING:
    from thrum_core.events.types import AppliedEvent, EventTypeRegistrar
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

LIVE_SOURCES = frozenset({"local", "sync", "peer"})


class SubscribeParams(Params):
    """``subscribe``."""

    scope: TypeValue | None = None
    mention_role: str | None = Field(None, min_length=1, max_length=257)
    all: bool = False
    ephemeral: bool = False


class UnsubscribeParams(Params):
    """``unsubscribe``."""

    subscription_id: int


def _session(ctx: CallContext) -> tuple[str, str]:
    caller = ctx.caller
    session_id = getattr(caller, "session_id", None)
    agent_id = getattr(caller, "agent_id", None)
    if not session_id or not agent_id:
        raise PermissionDenied("no_session", "start a session first (thrum session start)")
    return agent_id, session_id


def _attach(ctx: CallContext, session_id: str) -> None:
    conn = ctx.connection
    if conn is not None:
        conn.session_id = session_id


async def subscribe(p: SubscribeParams, ctx: CallContext) -> dict[str, Any]:
    """Add a subscription to the caller's session (or return the same one)."""
    from thrum_plugins.rpc._message_common import write_local
    from thrum_plugins.rpc._subscription_store import Subscription, forget_in_background, subscription_index

    agent_id, session_id = _session(ctx)
    given = [
        name for name, on in (("scope", p.scope), ("mention_role", p.mention_role), ("all", p.all)) if on
    ]
    if len(given) != 1:
        raise InvalidParams(
            given[1] if len(given) > 1 else "scope",
            "exactly_one",
            "give exactly one of scope, mention_role and all",
        )
    mention = strip_at(p.mention_role) if p.mention_role else None
    if p.mention_role is not None and not mention:
        raise InvalidParams("mention_role", "required", "mention_role must name a role or an agent")
    scope = p.scope.pair() if p.scope else (None, None)
    kernel = ctx.kernel
    index = subscription_index(kernel)
    _attach(ctx, session_id)
    existing = index.find(session_id, (scope[0], scope[1], mention, p.all))
    if existing is not None:
        return {
            "subscription_id": existing.id,
            "session_id": session_id,
            "created_at": existing.created_at,
            "created": False,
        }
    conn = ctx.connection
    connection_id = conn.id if (p.ephemeral and conn is not None) else None
    created_at = format_ts(now_ns() // 1000 * 1000)

    def insert(db: Any) -> int:
        cur = db.execute(
            "INSERT INTO subscriptions(session_id, connection_id, scope_type, scope_value, mention_role,"
            ' "all",'
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (session_id, connection_id, scope[0], scope[1], mention, 1 if p.all else 0, created_at),
        )
        return int(cur.lastrowid or 0)

    sub_id = await write_local(kernel, insert)
    index.add(
        Subscription(
            sub_id, session_id, agent_id, connection_id, scope[0], scope[1], mention, p.all, created_at
        )
    )
    if connection_id is not None and conn is not None and connection_id not in index.watched_connections:
        index.watched_connections.add(connection_id)

        def closed(c: Any) -> None:
            index.watched_connections.discard(connection_id)
            forget_in_background(kernel, index.remove_connection(connection_id))

        conn.add_close_callback(closed)
    return {"subscription_id": sub_id, "session_id": session_id, "created_at": created_at, "created": True}


async def unsubscribe(p: UnsubscribeParams, ctx: CallContext) -> dict[str, Any]:
    """Remove one of the caller's session's subscriptions."""
    from thrum_plugins.rpc._message_common import write_local
    from thrum_plugins.rpc._subscription_store import delete_rows, subscription_index

    _agent, session_id = _session(ctx)
    index = subscription_index(ctx.kernel)
    sub = index.get(p.subscription_id)
    if sub is None or sub.session_id != session_id:
        return {"removed": False}
    index.remove([sub.id])
    await write_local(ctx.kernel, lambda db: delete_rows(db, [sub.id]))
    return {"removed": True}


async def list_subscriptions(params: None, ctx: CallContext) -> dict[str, Any]:
    """The caller's session's subscriptions."""
    from thrum_plugins.rpc._subscription_store import subscription_index

    _agent, session_id = _session(ctx)
    subs = subscription_index(ctx.kernel).for_session(session_id)
    return {"session_id": session_id, "subscriptions": [s.to_json() for s in subs]}


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    from thrum_plugins.rpc._subscription_store import LOCAL_OWNER, LOCAL_STEPS

    register.migrations(LOCAL_OWNER, LOCAL_STEPS, local=True)


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("subscribe", subscribe, params=SubscribeParams, auth="session")
    register("unsubscribe", unsubscribe, params=UnsubscribeParams, auth="session")
    register("subscriptions.list", list_subscriptions, auth="session")


async def _prune(kernel: Kernel) -> None:
    """At start: drop ephemeral subscriptions (their connections are gone) and those of ended sessions."""
    from thrum_plugins.rpc._group_expand import table_exists
    from thrum_plugins.rpc._message_common import write_local
    from thrum_plugins.rpc._subscription_store import subscription_index

    def prune(db: Any) -> None:
        db.execute("DELETE FROM subscriptions WHERE connection_id IS NOT NULL")
        if table_exists(db, "sessions"):
            db.execute(
                "DELETE FROM subscriptions WHERE session_id IN"
                " (SELECT session_id FROM sessions WHERE ended_at IS NOT NULL)"
            )

    await write_local(kernel, prune)
    index = subscription_index(kernel)
    if kernel.store is not None:
        index.load(kernel.store.reader())


@hookimpl
def thrum_startup(kernel: Kernel) -> Any:
    return _prune(kernel)


@hookimpl
def thrum_event_applied(event: AppliedEvent, kernel: Kernel) -> None:
    if event.type != "agent.session.end" or event.source not in LIVE_SOURCES or event.state != "applied":
        return
    session_id = event.obj.get("session_id")
    if not isinstance(session_id, str):
        return
    from thrum_plugins.rpc._subscription_store import forget_in_background, subscription_index

    forget_in_background(kernel, subscription_index(kernel).remove_session(session_id))
