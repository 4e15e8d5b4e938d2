"""Messaging tables after a rebuild equal what the live path projected, row for row.

The rebuild fast paths of ``message.create`` (no probe of the stored message,
a bitmap of replied-to ids, queued child rows, deferred indexes) and the one
statement read receipt must give exactly the live rows, including for the
cases they fall back on: a reply applied before its parent, a second create of
one message id, receipts before their message, an earlier read arriving later,
``seen`` receipts, edits, deletes and an agent cleanup in the middle of the log
(of an agent that wrote nothing: a cleanup tombstones the events it covers in
a rebuild, which the live path applied and the log rewrite then drops).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from message_tables import BASE, MESSAGE_TABLES, SEC, dump_tables, live_and_rebuilt

from thrum_core.ids import ulid_str
from thrum_core.timefmt import format_ts

TABLES = (*MESSAGE_TABLES, "agents", "sessions")


def scenario(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    t = 0

    def emit(typ: str, **fields: Any) -> dict[str, Any]:
        nonlocal t
        t += rng.randint(1, 90) * SEC
        ev = {
            "type": typ,
            "timestamp": format_ts(BASE + t),
            "event_id": "evt_" + ulid_str((BASE + t) // 1_000_000, len(events)),
            "v": 1,
            "origin_daemon": "d_OTHER",
            **fields,
        }
        events.append(ev)
        return ev

    agents = [f"a{i}" for i in range(5)]
    for a in agents[:4]:
        emit("agent.register", agent_id=a, kind="agent", role=f"r{a}", module="m", name=a)
    messages: list[str] = []
    for i in range(120):
        r = rng.random()
        author = rng.choice(agents[:4])
        if r < 0.45 or not messages:
            mid = f"msg_{i:04d}"
            if rng.random() < 0.1 and messages:
                mid = rng.choice(messages)  # a second create of the same id
            fields: dict[str, Any] = {
                "message_id": mid,
                "agent_id": author,
                "session_id": "ses_1",
                "body": {"format": "markdown", "content": f"m{i}"},
            }
            refs: list[dict[str, str]] = []
            if rng.random() < 0.4:
                # often a parent that is created later (a reply applied first)
                parent = f"msg_{rng.randrange(0, 140):04d}"
                refs.append({"type": "reply_to", "value": parent})
                if rng.random() < 0.5:
                    fields["thread_id"] = f"thr_{parent}"
            how = rng.choice(["broadcast", "direct", "mention", "group", "none"])
            if how == "broadcast":
                refs.append({"type": "broadcast", "value": "everyone"})
                fields["scopes"] = [{"type": "broadcast", "value": "everyone"}]
            elif how == "direct":
                fields["recipients"] = sorted(set(rng.sample(agents, 2)))
                refs += [{"type": "mention", "value": a} for a in fields["recipients"]]
            elif how == "mention":
                refs.append({"type": "mention", "value": rng.choice(agents)})
            elif how == "group":
                fields["scopes"] = [{"type": "group", "value": "g1"}]
            if refs:
                fields["refs"] = refs
            emit("message.create", **fields)
            messages.append(mid)
        elif r < 0.8:
            target = rng.choice(messages) if rng.random() < 0.85 else f"msg_{rng.randrange(0, 140):04d}"
            emit(
                "message.receipt",
                message_id=target,
                agent_id=author,
                read_at=format_ts(BASE + t - rng.randint(0, 3000) * SEC),
                receipt_type="read" if rng.random() < 0.9 else "seen",
            )
        elif r < 0.9:
            emit(
                "message.edit",
                message_id=rng.choice(messages),
                agent_id=author,
                body={"format": "markdown", "content": f"e{i}"},
            )
        elif r < 0.97:
            emit("message.delete", message_id=rng.choice(messages), agent_id=author, reason="x")
        else:
            # a cleanup mid-log (flushes the queued rows, restores the indexes) of
            # an agent that wrote nothing: the tombstone covers none of the events
            emit("agent.cleanup", agent_id=agents[4])
    return events


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of :data:`TABLES`, sorted; counts of 0 (which the live path leaves behind) left out."""
    return dump_tables(conn, TABLES)


@pytest.mark.parametrize("seed", range(6))
def test_message_tables_rebuilt_equal_live(tmp_path: Path, seed: int) -> None:
    events = scenario(seed)
    if not any(e["type"] == "agent.cleanup" for e in events):
        events.insert(60, {**events[60], "type": "agent.cleanup", "agent_id": "a4", "event_id": "evt_ZZZZ"})
    # live: in sort order, in a few batches, as the writer applies them
    ordered = sorted(events, key=lambda e: (e["timestamp"], e["event_id"]))
    (live, _), (rebuilt, names) = live_and_rebuilt(
        tmp_path / "repo",
        ordered,
        17,
        lambda conn: (
            dump(conn),
            {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")},
        ),
    )
    assert live["messages"], "the scenario projects messages"
    for table in live:
        assert rebuilt[table] == live[table], table
    assert {"messages_author", "messages_created", "message_reads_agent"} <= names
