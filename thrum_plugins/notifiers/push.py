"""Push notifications to subscribed sessions (SPEC §10.2 to §10.4).

:class:`PushNotifier` is registered through ``thrum_register_notifiers`` so any
transport's connections (Unix socket now, WebSocket later) receive pushes:
it only calls ``conn.notify(method, params)``, which queues and never blocks
(a connection whose queue is full is closed by its transport).

- ``notification.message`` — for each ``message.create`` / ``message.edit``
  projected live (written here, merged from git or pulled from a peer; never
  during rebuild or start-up catch-up), once per session that has an attached
  connection, a matching subscription and is not the author's.  Deleted
  messages are never announced.
- ``notification.thread.updated`` — after a ``message.create`` with a thread is
  projected and after ``message.markRead`` marks messages of a thread, to each
  attached session with a subscription whose agent authored or can see a
  message of that thread.

Observers run after the writer has answered the submitter, so a subscriber
would hear of a message only after its sender's reply.  ``message.send``
calls :func:`announce_written` before it replies instead; whichever of the
two comes first for a locally written event announces it, the other skips it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.events.types import StoredEvent
    from thrum_core.interfaces import Connection
    from thrum_core.kernel import Kernel
    from thrum_core.plugins.registry import Registrar
    from thrum_plugins.rpc._subscription_store import Subscription, SubscriptionIndex

__all__ = ["PushNotifier", "announce_written", "notify_threads"]

log = logging.getLogger("thrum.push")

LIVE_SOURCES = frozenset({"local", "sync", "peer"})
ANNOUNCED = ("message.create", "message.edit")
#: Locally written events remembered as announced (by the handler or the observer) until the
#: other one comes; only a few are ever waiting, the bound is for events nobody announces early.
CLAIMS_MAX = 1024

_decode = json.JSONDecoder().decode
_index_of: Callable[[Kernel], SubscriptionIndex] | None = None


def _attached(kernel: Kernel, session_ids: Iterable[str]) -> dict[str, list[Connection]]:
    wanted = set(session_ids)
    out: dict[str, list[Connection]] = {}
    for conn in list(kernel.connections.values()):
        sid = getattr(conn, "session_id", None)
        if sid in wanted and not getattr(conn, "closed", False):
            out.setdefault(sid, []).append(conn)
    return out


def _agent_roles(
    db: sqlite3.Connection, agent_ids: Iterable[str]
) -> dict[str, tuple[str | None, str | None, str | None]]:
    """``{agent_id: (name, role, module)}`` for registered agents (kind agent keeps its role)."""
    ids = sorted(set(agent_ids))
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    cur = db.cursor()
    cur.row_factory = None
    try:
        rows = cur.execute(
            f"SELECT agent_id, name, role, module, kind FROM agents WHERE agent_id IN ({marks})", ids
        ).fetchall()
    except sqlite3.OperationalError:
        from thrum_plugins.rpc._group_expand import table_exists

        if table_exists(db, "agents"):
            raise
        return {}  # no agents plugin
    return {r[0]: (r[1], r[2] if r[4] == "agent" else None, r[3]) for r in rows}


def _subscription_index(kernel: Kernel) -> SubscriptionIndex:
    # Imported on first use (not when the plugin loads): this runs for every projected message.
    global _index_of
    if _index_of is None:
        from thrum_plugins.rpc._subscription_store import subscription_index

        _index_of = subscription_index
    return _index_of(kernel)


def _mention_match(sub: Subscription, mentions: set[str], agent_id: str, role: str | None) -> bool:
    """SPEC §10.2: a ``mention`` ref whose value is ``v``, the agent's id or its role."""
    targets = {sub.mention_role, agent_id} | ({role} if role else set())
    return bool(mentions & targets)


def _first_match(
    subs: list[Subscription],
    scopes: set[tuple[str, str]],
    mentions: set[str],
    agent_id: str,
    role: str | None,
) -> tuple[int, str] | None:
    for sub in subs:
        if sub.all:
            return sub.id, "all"
        if sub.scope_type is not None and (sub.scope_type, sub.scope_value or "") in scopes:
            return sub.id, "scope"
        if sub.mention_role is not None and _mention_match(sub, mentions, agent_id, role):
            return sub.id, "mention"
    return None


class PushNotifier:
    """Sends ``notification.message`` and ``notification.thread.updated`` to attached sessions."""

    name = "push"

    def __init__(self) -> None:
        self._claims: dict[str, None] = {}

    def _claim(self, event_id: str) -> bool:
        """True for the first of the writing handler and the observer to ask about an event."""
        claims = self._claims
        if event_id in claims:
            del claims[event_id]
            return False
        claims[event_id] = None
        if len(claims) > CLAIMS_MAX:
            del claims[next(iter(claims))]
        return True

    def event_applied(self, event: StoredEvent, kernel: Kernel, *, fresh: bool = False) -> None:
        """Announce a live ``message.create`` / ``message.edit`` (never blocks).

        ``fresh``: the event is a ``message.create`` its handler has just written
        with a new message id, so the row it stored holds what the event holds
        and is not read back (which would commit the writer's held batches,
        see ``EventStore.reader``).
        """
        if event.source not in LIVE_SOURCES or event.state != "applied":
            return
        if event.type not in ANNOUNCED or kernel.store is None:
            return
        message_id = event.obj.get("message_id")
        if not isinstance(message_id, str):
            return
        index = _subscription_index(kernel)
        if not index:
            return
        if event.source == "local" and not self._claim(event.event_id):
            return  # announced already (see announce_written)
        row = None
        if fresh and event.type == "message.create":
            from thrum_plugins.rpc._caller import MESSAGE_DATA_TYPES
            from thrum_plugins.rpc._message_events import new_message_columns

            author, thread_id, content, scopes_json, refs_json = new_message_columns(event.obj)
            row = (author, thread_id, content, 0, scopes_json, refs_json)
            db = kernel.store.reader(fresh_except=MESSAGE_DATA_TYPES)  # reads agents only
        else:
            db = kernel.store.reader()
        self._announce(kernel, db, index.by_session, message_id, event, row)
        if event.type == "message.create":
            thread_id = event.obj.get("thread_id")
            if isinstance(thread_id, str) and thread_id:
                notify_threads(kernel, [thread_id])

    def _announce(
        self,
        kernel: Kernel,
        db: sqlite3.Connection,
        by_session: dict[str, list[Subscription]],
        message_id: str,
        event: StoredEvent,
        row: tuple[Any, ...] | None = None,
    ) -> None:
        """Notify matching sessions of ``message_id``; ``row``: its columns as stored (else read)."""
        from thrum_plugins.rpc._message_results import preview

        attached = _attached(kernel, by_session)
        if not attached:
            return
        if row is None:
            cur = db.cursor()
            cur.row_factory = None
            row = cur.execute(
                "SELECT agent_id, thread_id, body_content, deleted, scopes_json, refs_json FROM messages"
                " WHERE message_id=?",
                (message_id,),
            ).fetchone()
        if row is None or row[3]:
            return
        author, thread_id, content = row[0], row[1], row[2]
        # The columns hold the message_scopes / message_refs rows as JSON, sorted by type and value.
        scope_rows = [(i["type"], i["value"]) for i in _decode(row[4])] if row[4] else []
        scopes = set(scope_rows)
        mentions = {i["value"] for i in _decode(row[5]) if i["type"] == "mention"} if row[5] else set()
        agents = {s.session_id: s.agent_id for sid in attached for s in by_session.get(sid, ())[:1]}
        info = _agent_roles(db, [author, *agents.values()])
        author_info = info.get(author)
        params_base = {
            "message_id": message_id,
            "thread_id": thread_id,
            "kind": "created" if event.type == "message.create" else "edited",
            "author": {
                "agent_id": author,
                "name": (author_info[0] or author) if author_info else author,
                "role": author_info[1] if author_info else None,
                "module": author_info[2] if author_info else None,
            },
            "preview": preview(content),
            "scopes": [{"type": t, "value": v} for t, v in scope_rows],
            "timestamp": event.obj.get("timestamp"),
        }
        for session_id, conns in attached.items():
            agent_id = agents.get(session_id, "")
            if agent_id == author:
                continue
            role = info.get(agent_id, (None, None, None))[1]
            match = _first_match(by_session.get(session_id, []), scopes, mentions, agent_id, role)
            if match is None:
                continue
            params = dict(params_base)
            params["matched_subscription"] = {"subscription_id": match[0], "match_type": match[1]}
            for conn in conns:
                conn.notify("notification.message", params)


def _notifier(kernel: Kernel) -> PushNotifier | None:
    state = kernel.plugin_state("push")
    if "notifier" not in state:
        state["notifier"] = next(
            (e.obj for e in kernel.notifiers.entries() if isinstance(e.obj, PushNotifier)), None
        )
    notifier: PushNotifier | None = state["notifier"]
    return notifier


def announce_written(kernel: Kernel, events: Sequence[StoredEvent], *, fresh_creates: bool = False) -> None:
    """Announce events a handler has just written, before it replies.

    ``fresh_creates``: its ``message.create`` events have new message ids
    (see :meth:`PushNotifier.event_applied`).

    The observer path (:meth:`PushNotifier.event_applied`) runs after the
    writer answered the handler, possibly after the handler's reply is out;
    announcing here first means a subscriber hears of a message no later than
    its sender does.  The observer skips what was announced here.
    """
    notifier = _notifier(kernel)
    if notifier is None:
        return
    for event in events:
        try:
            notifier.event_applied(event, kernel, fresh=fresh_creates)
        except Exception:
            log.exception("push notification failed")


def _thread_state(db: sqlite3.Connection, thread_id: str) -> list[Any]:
    return db.execute(
        "SELECT message_id, agent_id, created_at, body_content FROM messages"
        " WHERE thread_id=? AND deleted=0 ORDER BY created_ns, message_id",
        (thread_id,),
    ).fetchall()


def notify_threads(kernel: Kernel, thread_ids: Iterable[str]) -> None:
    """Send ``notification.thread.updated`` for each thread to the sessions that take part in it."""
    if kernel.store is None:
        return
    from thrum_plugins.rpc._message_queries import visible_to
    from thrum_plugins.rpc._message_results import preview
    from thrum_plugins.rpc._message_visibility import NEVER, agent_info
    from thrum_plugins.rpc._subscription_store import subscription_index

    index = subscription_index(kernel)
    if not index:
        return
    attached = _attached(kernel, index.by_session)
    if not attached:
        return
    db = kernel.store.reader()
    try:
        for thread_id in dict.fromkeys(thread_ids):
            rows = _thread_state(db, thread_id)
            if not rows:
                continue
            ids = [r[0] for r in rows]
            last = rows[-1]
            marks = ",".join(f":m{i}" for i in range(len(ids)))
            for session_id, conns in attached.items():
                subs = index.by_session.get(session_id)
                if not subs:
                    continue
                agent_id = subs[0].agent_id
                info = agent_info(db, agent_id)
                params: dict[str, Any] = {f"m{i}": mid for i, mid in enumerate(ids)}
                params.update(viewer=agent_id, reg=NEVER if info is None else info.registered_ns)
                seen = [
                    r[0]
                    for r in db.execute(
                        f"SELECT m.message_id FROM messages m WHERE m.message_id IN ({marks})"
                        f" AND (m.agent_id = :viewer OR {visible_to('m')})",
                        params,
                    )
                ]
                if not seen:
                    continue
                read_marks = ",".join("?" * len(seen))
                read = {
                    r[0]
                    for r in db.execute(
                        "SELECT message_id FROM message_reads WHERE agent_id=?"
                        f" AND message_id IN ({read_marks})",
                        (agent_id, *seen),
                    )
                }
                authors = {r[0]: r[1] for r in rows}
                unread = sum(1 for mid in seen if authors[mid] != agent_id and mid not in read)
                payload = {
                    "thread_id": thread_id,
                    "message_count": len(rows),
                    "unread_count": unread,
                    "last_activity": last[2],
                    "last_sender": last[1],
                    "preview": preview(last[3]),
                    "timestamp": last[2],
                }
                for conn in conns:
                    conn.notify("notification.thread.updated", payload)
    except sqlite3.Error:
        log.exception("thread notification failed")


@hookimpl
def thrum_register_notifiers(register: Registrar) -> None:
    register("push", PushNotifier())
