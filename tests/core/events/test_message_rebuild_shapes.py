"""A rebuild projects unusual ``message.create`` shapes exactly as the live path did.

The rebuild's common-case reducer (``_create_in_rebuild``) has its own field
handling (single-item shortcuts for scopes, refs and recipients, an inline
body, a cache of addressings); these events exercise every branch of it and
its fall-backs against the general path that the live writer uses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from message_tables import BASE, MESSAGE_TABLES, SEC, dump_tables, live_and_rebuilt

from thrum_core.ids import ulid_str
from thrum_core.timefmt import format_ts

#: Fields of ``message.create`` events besides the envelope, ``message_id`` and ``agent_id``.
SHAPES: list[dict[str, Any]] = [
    {"body": {"format": "markdown", "content": "plain"}, "session_id": "s1"},
    {"body": "not an object"},
    {},
    {"body": {"content": "no format"}, "session_id": 7},
    {"body": {"format": "", "content": 5}},
    {"body": {"format": "json", "content": "x", "structured": {"b": 1, "a": [1, 2]}}},
    {"body": {"format": "json", "content": "x", "structured": "raw"}},
    {"body": {"format": "json", "content": "x", "structured": ""}},
    {"recipients": ["a1"]},
    {"recipients": ["a2", "a1", "a2", "", 3]},
    {"recipients": [""]},
    {"recipients": [5]},
    {"recipients": "a1"},
    {"recipients": []},
    {"scopes": [{"type": "broadcast", "value": "everyone"}]},
    {"scopes": [{"type": "group", "value": "g1"}, {"type": "group", "value": "g1"}]},
    {"scopes": [{"type": "group", "value": ""}]},
    {"scopes": ["not an object"]},
    {"scopes": {"type": "broadcast", "value": "everyone"}},
    {"refs": [{"type": "mention", "value": "a3"}]},
    {"refs": [{"type": "mention", "value": "nobody"}], "recipients": ["a1"]},
    {"refs": [{"type": "mention", "value": "a1"}], "recipients": ["a1"]},
    {"refs": [{"type": "group", "value": "everyone"}]},
    {"refs": [{"type": "mention", "value": 3}]},
    {"authored_by": "user:carol", "disclosed": True},
    {"authored_by": "", "disclosed": "yes"},
    {"thread_id": ""},
    {"thread_id": "thr_own"},
]


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the messaging tables, and the event states (counts of 0 left out)."""
    out = dump_tables(conn, MESSAGE_TABLES)
    out["events"] = sorted(tuple(r) for r in conn.execute("SELECT event_id, state, waits_for FROM events"))
    return out


def build_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    t = 0

    def emit(typ: str, *, whole_second: bool = False, **fields: Any) -> None:
        nonlocal t
        t += 7 * SEC + 123_456_000
        ts = format_ts(BASE + t)
        events.append(
            {
                "type": typ,
                "timestamp": ts[:19] + "Z" if whole_second else ts,
                "event_id": "evt_" + ulid_str((BASE + t) // 1_000_000, len(events)),
                "v": 1,
                "origin_daemon": "d_OTHER",
                **fields,
            }
        )

    for a in ("a1", "a2", "a3"):
        emit("agent.register", agent_id=a, kind="agent", role=f"r{a}", module="m", name=a)
    emit("group.create", group_id="grp_1", name="g1", created_by="a1")
    emit("group.member.add", group_id="grp_1", member_type="agent", member_value="a2", added_by="a1")
    for i, shape in enumerate(SHAPES * 2):  # the second round hits the addressing cache
        emit("message.create", whole_second=i % 3 == 0, message_id=f"msg_{i:03d}", agent_id="a1", **shape)
    # a reply before its parent, and a parent without a thread after it
    emit("message.create", message_id="msg_r1", agent_id="a2", refs=[{"type": "reply_to", "value": "msg_p"}])
    emit(
        "message.create",
        message_id="msg_r2",
        agent_id="a2",
        thread_id="thr_x",
        refs=[{"type": "reply_to", "value": "msg_p"}],
    )
    emit("message.create", message_id="msg_p", agent_id="a3", body={"format": "markdown", "content": "p"})
    # a second create of a message id (the earliest wins), and invalid creates
    emit("message.create", message_id="msg_000", agent_id="a2", body={"format": "markdown", "content": "dup"})
    emit("message.create", agent_id="a1", body={"format": "markdown", "content": "no id"})
    emit("message.create", message_id="msg_bad", agent_id=5)
    emit("message.create", message_id="", agent_id="a1")
    # reads and an edit of some of them, a read before its message
    emit("message.receipt", message_id="msg_late", agent_id="a2", read_at=format_ts(BASE))
    emit("message.create", message_id="msg_late", agent_id="a1", recipients=["a2"])
    for i in (0, 8, 14, 19):
        emit("message.receipt", message_id=f"msg_{i:03d}", agent_id="a3", read_at=format_ts(BASE + t))
    edited = {"format": "markdown", "content": "edited"}
    emit("message.edit", message_id="msg_008", agent_id="a1", body=edited)
    return events


def test_message_create_shapes_rebuilt_equal_live(tmp_path: Path) -> None:
    live, rebuilt = live_and_rebuilt(tmp_path / "repo", build_events(), 11, dump)
    states = {state for _eid, state, _w in live["events"]}
    assert "invalid" in states and len(live["messages"]) >= len(SHAPES) * 2
    for table in live:
        assert rebuilt[table] == live[table], table
