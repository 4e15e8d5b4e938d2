"""A rebuild derives the inbox and its counts exactly as the live path left them.

The rebuild's finish hook fills ``inbox`` with one sorted statement (author,
recipient and reader rows together), counts the rows per viewer without a
sort.  These events give every kind of
row that statement has to get right: recipients of a broadcast who registered
after it, before it, or never; readers of broadcasts, of messages addressed to
them, of messages they see through a mention or a group, and of messages they
do not see at all; reads of deleted messages; ``seen`` receipts; and a reply
applied before its parent (the general path restores the reply index the
rebuild deferred).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from message_tables import BASE, MESSAGE_TABLES, SEC, dump_tables, live_and_rebuilt

from thrum_core.ids import ulid_str
from thrum_core.timefmt import format_ts
from thrum_plugins.rpc._message_schema import MESSAGE_STEPS
from thrum_plugins.rpc._message_visibility import _COUNT_INBOX, _count_inbox

TABLES = (*MESSAGE_TABLES, "agents")


def build_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    t = 0

    def emit(typ: str, **fields: Any) -> None:
        nonlocal t
        t += 5 * SEC
        events.append(
            {
                "type": typ,
                "timestamp": format_ts(BASE + t),
                "event_id": "evt_" + ulid_str((BASE + t) // 1_000_000, len(events)),
                "v": 1,
                "origin_daemon": "d_OTHER",
                **fields,
            }
        )

    def create(mid: str, author: str, **fields: Any) -> None:
        body = {"format": "markdown", "content": mid}
        emit("message.create", message_id=mid, agent_id=author, session_id="s", body=body, **fields)

    def read(mid: str, reader: str, receipt_type: str = "read") -> None:
        emit(
            "message.receipt",
            message_id=mid,
            agent_id=reader,
            read_at=format_ts(BASE + t),
            receipt_type=receipt_type,
        )

    everyone = [{"type": "broadcast", "value": "everyone"}]
    for a in ("a1", "a2", "a3", "a4"):
        emit("agent.register", agent_id=a, kind="agent", role=f"r{a}", module="m", name=a)
    emit("group.create", group_id="grp_1", name="g1", created_by="a1")
    emit("group.member.add", group_id="grp_1", member_type="agent", member_value="a2", added_by="a1")
    # a broadcast addressed to an agent registered before it (a2), one registering later (a5), one never (a9)
    create("msg_b1", "a1", scopes=everyone, refs=everyone, recipients=["a2", "a5", "a9"])
    # a reply applied before its parent (the general path looks replies up)
    create("msg_r1", "a3", refs=[{"type": "reply_to", "value": "msg_p1"}], recipients=["a1"])
    create("msg_p1", "a1", recipients=["a3"])
    emit("agent.register", agent_id="a5", kind="agent", role="ra5", module="m", name="a5")
    create("msg_b2", "a2", scopes=everyone, recipients=["a5"])  # a5 registered: no recipient row
    create("msg_b3", "a2")  # unaddressed: a broadcast
    create("msg_d1", "a1", recipients=["a2"], refs=[{"type": "mention", "value": "a3"}])
    create("msg_d2", "a1", refs=[{"type": "mention", "value": "ra4"}])  # a4 by role
    create("msg_g1", "a3", scopes=[{"type": "group", "value": "g1"}])
    create("msg_x1", "a4", recipients=["a9"])  # to an unknown agent
    for mid in ("msg_b1", "msg_b2", "msg_b3"):
        for reader in ("a1", "a2", "a3", "a5", "a9"):
            read(mid, reader)
    for mid in ("msg_d1", "msg_d2", "msg_g1", "msg_x1", "msg_r1", "msg_p1"):
        for reader in ("a1", "a2", "a3", "a4", "a9"):
            read(mid, reader)
    read("msg_b3", "a4", "seen")
    read("msg_b2", "a2")  # a second read: the earliest stays
    emit("message.delete", message_id="msg_b2", agent_id="a2", reason="x")
    emit("message.delete", message_id="msg_d1", agent_id="a1")
    read("msg_b2", "a4")  # a read of a deleted broadcast
    read("msg_d1", "a3")
    create("msg_b4", "a5", scopes=everyone, recipients=["a1", "a6"])
    read("msg_b4", "a6")
    return events


def test_inbox_and_counts_rebuilt_equal_live(tmp_path: Path) -> None:
    (live, live_schema), (rebuilt, rebuilt_schema) = live_and_rebuilt(
        tmp_path / "repo", build_events(), 9, lambda conn: (dump_tables(conn, TABLES), schema(conn))
    )
    # the scenario has every kind of row it is meant to have
    inbox = {(r[0], r[1]): r for r in live["inbox"]}
    assert inbox[("a5", "msg_b1")][5] == 1 and inbox[("a9", "msg_b1")][5] == 1  # rcpt of a broadcast
    assert ("a2", "msg_b1") in inbox and inbox[("a2", "msg_b1")][5] == 0  # a reader row only
    assert ("a4", "msg_d1") not in inbox  # a read of a message a4 does not see
    assert inbox[("a4", "msg_d2")][6] == 1 and inbox[("a2", "msg_g1")][6] == 1  # dyn rows
    assert inbox[("a4", "msg_b2")][7] == 1  # a reader row of a deleted broadcast
    assert sum(1 for r in live["message_reads"] if r[0] == "msg_b1") > 1  # several readers
    for table in live:
        assert rebuilt[table] == live[table], table
    assert rebuilt_schema == live_schema


def schema(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Indexes and triggers of the projection (a rebuild drops some and must create them again)."""
    return sorted(
        tuple(r)
        for r in conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')")
    )


def test_count_inbox_with_flags_other_than_0_and_1() -> None:
    """Counting without a sort gives the ``GROUP BY`` rows, also for flags no writer leaves."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(MESSAGE_STEPS[0])
    rows = [
        ("v1", "m1", 1, 0, 1, 0, 0, 0, 0),
        ("v1", "m2", 2, 1, 0, 0, 0, 0, 1),
        ("v1", "m3", 3, 1, 0, 0, 0, 1, 1),
        ("v2", "m1", 1, 0, 0, 1, 0, 0, 0),
        ("v2", "m2", 2, 1, 0, 0, 1, 0, 1),
        ("v2", "m4", 4, 1, 0, 0, 1, 0, 1),
    ]
    insert = (
        "INSERT INTO inbox(viewer, message_id, created_ns, star, self, rcpt, dyn, deleted, read)"
        " VALUES (?,?,?,?,?,?,?,?,?)"
    )
    for name in ("inbox_count_ins", "inbox_count_upd", "inbox_count_del"):
        db.execute(f"DROP TRIGGER {name}")

    def counted() -> list[tuple[Any, ...]]:
        db.execute("DELETE FROM inbox_counts")
        _count_inbox(db)
        got = db.execute("SELECT * FROM inbox_counts ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
        db.execute("DELETE FROM inbox_counts")
        db.execute(_COUNT_INBOX)
        assert got == db.execute("SELECT * FROM inbox_counts ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
        return got

    db.executemany(insert, rows)
    assert len(counted()) == 5
    db.executemany(insert, [("v3", "m1", 1, 2, 0, 0, 0, 0, 0), ("v3", "m2", 1, 0, 0, 0, 0, 0, 0)])
    assert len(counted()) == 7
