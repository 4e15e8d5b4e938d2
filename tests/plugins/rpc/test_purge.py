"""``purge.executed`` and the admin RPC ``purge`` (SPEC §6.7 (a)(b), §9.13) on a real kernel.

Events with explicit timestamps go through the real writer into real files
and SQLite; the RPC is called over the kernel's Unix socket.  The feature
tables come from ``purge_standin`` (next to this file); the last test uses the
real agents/sessions/messaging plugins when they are installed.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from thrum_core.canonical import parse_line
from thrum_core.errors import INVALID_PARAMS, ThrumError
from thrum_core.events.log import iter_lines, list_log_files
from thrum_core.kernel import Kernel
from thrum_core.testing.client import AsyncClient
from thrum_core.timefmt import format_ts, parse_ts_ns
from thrum_plugins.rpc import purge as purge_plugin

sys.path.insert(0, str(Path(__file__).parent))
import purge_standin

DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9
PURGE_BUILTINS = ("rpc.health", "transports.unix_socket", "rpc.purge")

pytestmark = pytest.mark.thrum_builtins(*PURGE_BUILTINS)


@pytest.fixture
def thrum_extra_plugins() -> Mapping[str, object]:
    return {"standin": purge_standin}


# --------------------------------------------------------------------------- helpers


def ts(ns: int) -> str:
    return format_ts(ns)


def scenario(now: int) -> list[dict[str, Any]]:
    """Agents, a group, messages and sessions before and after ``now - 2 days``."""
    old, older, recent = now - 10 * DAY, now - 5 * DAY, now - HOUR
    return [
        {"type": "agent.register", "timestamp": ts(old), "agent_id": "alice", "role": "r", "module": "m"},
        {
            "type": "agent.register",
            "timestamp": ts(old + 1000),
            "agent_id": "bob",
            "role": "r",
            "module": "m",
        },
        {
            "type": "group.create",
            "timestamp": ts(old + 2000),
            "group_id": "grp_1",
            "name": "team",
            "created_by": "alice",
        },
        # (a) messages
        {
            "type": "message.create",
            "timestamp": ts(old + 3000),
            "message_id": "m_old1",
            "agent_id": "alice",
            "session_id": "s_open",
            "body": {"format": "markdown", "content": "old one"},
        },
        {
            "type": "message.create",
            "timestamp": ts(older),
            "message_id": "m_old2",
            "agent_id": "bob",
            "session_id": "s_old",
            "body": {"format": "markdown", "content": "old two"},
        },
        {
            "type": "message.create",
            "timestamp": ts(recent),
            "message_id": "m_new",
            "agent_id": "alice",
            "session_id": "s_open",
            "body": {"format": "markdown", "content": "new"},
        },
        {
            "type": "message.edit",
            "timestamp": ts(recent + 1000),
            "message_id": "m_old1",
            "agent_id": "alice",
            "body": {"format": "markdown", "content": "edited after the cutoff"},
        },
        {
            "type": "message.receipt",
            "timestamp": ts(recent + 2000),
            "message_id": "m_old2",
            "agent_id": "alice",
            "read_at": ts(recent + 2000),
            "receipt_type": "read",
        },
        {
            "type": "message.receipt",
            "timestamp": ts(recent + 3000),
            "message_id": "m_new",
            "agent_id": "bob",
            "read_at": ts(recent + 3000),
            "receipt_type": "read",
        },
        {
            "type": "message.edit",
            "timestamp": ts(recent + 4000),
            "message_id": "m_new",
            "agent_id": "alice",
            "body": {"format": "markdown", "content": "new, edited"},
        },
        # (b) sessions
        {
            "type": "agent.session.start",
            "timestamp": ts(old + 4000),
            "session_id": "s_old",
            "agent_id": "bob",
        },
        {
            "type": "agent.update",
            "timestamp": ts(old + 5000),
            "agent_id": "bob",
            "work_contexts": [{"session_id": "s_old", "current_task": "gone"}],
        },
        {
            "type": "agent.session.end",
            "timestamp": ts(older + 1000),
            "session_id": "s_old",
            "agent_id": "bob",
        },
        {"type": "session.start", "timestamp": ts(old + 6000), "session_id": "s_alias", "agent_id": "alice"},
        {"type": "session.end", "timestamp": ts(older + 2000), "session_id": "s_alias"},
        {
            "type": "agent.session.start",
            "timestamp": ts(old + 7000),
            "session_id": "s_recent",
            "agent_id": "bob",
        },
        {
            "type": "agent.session.end",
            "timestamp": ts(recent + 5000),
            "session_id": "s_recent",
            "agent_id": "bob",
        },
        {
            "type": "agent.session.start",
            "timestamp": ts(old + 8000),
            "session_id": "s_open",
            "agent_id": "alice",
        },
        {
            "type": "agent.update",
            "timestamp": ts(old + 9000),
            "agent_id": "alice",
            "work_contexts": [{"session_id": "s_open", "current_task": "still here"}],
        },
    ]


PURGED_IDS = {"m_old1", "m_old2", "s_old", "s_alias"}


def log_lines(kernel: Kernel) -> dict[str, list[dict[str, Any]]]:
    sync = kernel.paths.sync_dir
    out = {}
    for rel in list_log_files(sync):
        out[rel] = [obj for _o, line in iter_lines(sync / rel) if (obj := parse_line(line)) is not None]
    return out


def ids_in_log(kernel: Kernel) -> set[str]:
    found = set()
    for objs in log_lines(kernel).values():
        for obj in objs:
            for key in ("message_id", "session_id"):
                if isinstance(obj.get(key), str):
                    found.add(obj[key])
            for wc in obj.get("work_contexts") or []:
                found.add(wc["session_id"])
    return found


def rows(kernel: Kernel, sql: str) -> list[tuple[Any, ...]]:
    assert kernel.store is not None
    conn = kernel.store.open_reader()
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def dump(kernel: Kernel) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: rows(kernel, f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in (
            "agents",
            "sessions",
            "agent_work_contexts",
            "messages",
            "message_edits",
            "message_reads",
            "groups",
        )
    }


async def seeded(kernel: Kernel) -> int:
    now = time.time_ns()
    stored = await kernel.emit(scenario(now))
    assert {s.state for s in stored} == {"applied"}
    return now


# --------------------------------------------------------------------------- tests


async def test_preview_counts_and_changes_nothing(thrum_kernel: Kernel, rpc_client: AsyncClient) -> None:
    now = await seeded(thrum_kernel)
    before_files = log_lines(thrum_kernel)
    before_rows = dump(thrum_kernel)
    result = await rpc_client.call("purge", {"before": "2d"})
    assert result.pop("cutoff")[:13] == ts(now - 2 * DAY)[:13]
    assert result == {"dry_run": True, "messages": 2, "sessions": 2, "events": 9, "files_rewritten": 3}
    assert log_lines(thrum_kernel) == before_files
    assert dump(thrum_kernel) == before_rows


async def test_purge_removes_old_messages_and_ended_sessions_only(
    thrum_kernel: Kernel, rpc_client: AsyncClient
) -> None:
    now = await seeded(thrum_kernel)
    cutoff = ts(now - 2 * DAY)
    result = await rpc_client.call("purge", {"before": cutoff, "dry_run": False})
    assert result == {
        "cutoff": cutoff,
        "dry_run": False,
        "messages": 2,
        "sessions": 2,
        "events": 9,
        "files_rewritten": 3,
    }
    # The logs were rewritten without the tombstoned lines; the tombstone itself stays.
    lines = log_lines(thrum_kernel)
    assert ids_in_log(thrum_kernel) & PURGED_IDS == set()
    purges = [o for o in lines["events.jsonl"] if o["type"] == "purge.executed"]
    assert [p["cutoff"] for p in purges] == [cutoff]
    kept_types = sorted(o["type"] for objs in lines.values() for o in objs)
    assert kept_types.count("agent.register") == 2 and kept_types.count("group.create") == 1
    # Rows: agents, groups, open sessions and their contexts, recent messages stay.
    assert [r[0] for r in rows(thrum_kernel, "SELECT agent_id FROM agents ORDER BY 1")] == ["alice", "bob"]
    assert rows(thrum_kernel, "SELECT group_id FROM groups") == [("grp_1",)]
    assert rows(thrum_kernel, "SELECT message_id, edit_count FROM messages") == [("m_new", 1)]
    assert rows(thrum_kernel, "SELECT message_id FROM message_edits") == [("m_new",)]
    assert rows(thrum_kernel, "SELECT message_id, agent_id FROM message_reads") == [("m_new", "bob")]
    assert rows(thrum_kernel, "SELECT session_id, ended_at IS NULL FROM sessions ORDER BY 1") == [
        ("s_open", 1),
        ("s_recent", 0),
    ]
    assert rows(thrum_kernel, "SELECT session_id, current_task FROM agent_work_contexts") == [
        ("s_open", "still here")
    ]
    assert rows(thrum_kernel, "SELECT value FROM meta WHERE key='purge_cutoff'") == [(cutoff,)]
    states = dict(rows(thrum_kernel, "SELECT state, COUNT(*) FROM events GROUP BY state"))
    assert states["tombstoned"] == 9
    # A second preview finds nothing left.
    again = await rpc_client.call("purge", {"before": cutoff})
    assert (again["messages"], again["sessions"], again["events"]) == (0, 0, 0)


async def test_late_events_of_purged_messages_and_sessions_are_tombstoned(
    thrum_kernel: Kernel, rpc_client: AsyncClient
) -> None:
    now = await seeded(thrum_kernel)
    await rpc_client.call("purge", {"before": "2d", "dry_run": False})
    late: list[dict[str, Any]] = [
        # A receipt and an edit of a purged message arriving from another clone, after the purge.
        {
            "type": "message.receipt",
            "timestamp": ts(now - 60 * 10**9),
            "event_id": "evt_late_receipt",
            "message_id": "m_old1",
            "agent_id": "bob",
            "read_at": ts(now - 60 * 10**9),
            "receipt_type": "read",
        },
        {
            "type": "message.edit",
            "timestamp": ts(now - 59 * 10**9),
            "event_id": "evt_late_edit",
            "message_id": "m_old2",
            "agent_id": "bob",
            "body": {"format": "markdown", "content": "x"},
        },
        # The old create itself (a clone that never saw the purge).
        {
            "type": "message.create",
            "timestamp": ts(now - 9 * DAY),
            "event_id": "evt_late_create",
            "message_id": "m_ancient",
            "agent_id": "bob",
            "session_id": "s_x",
            "body": {"format": "markdown", "content": "ancient"},
        },
        {
            "type": "agent.session.start",
            "timestamp": ts(now - 9 * DAY),
            "event_id": "evt_late_start",
            "session_id": "s_old",
            "agent_id": "bob",
        },
        # A new message of the same clone is kept.
        {
            "type": "message.create",
            "timestamp": ts(now - 30 * 10**9),
            "event_id": "evt_late_new",
            "message_id": "m_fresh",
            "agent_id": "bob",
            "session_id": "s_x",
            "body": {"format": "markdown", "content": "fresh"},
        },
    ]
    stored = await thrum_kernel.emit(late, source="sync")
    assert [s.state for s in stored] == ["tombstoned"] * 4 + ["applied"]
    assert ids_in_log(thrum_kernel) & (PURGED_IDS | {"m_ancient"}) == set()
    assert rows(thrum_kernel, "SELECT message_id FROM messages ORDER BY 1") == [("m_fresh",), ("m_new",)]


async def test_rebuild_after_purge_gives_the_same_rows(thrum_kernel: Kernel, rpc_client: AsyncClient) -> None:
    await seeded(thrum_kernel)
    await rpc_client.call("purge", {"before": "2d", "dry_run": False})
    before = dump(thrum_kernel)
    store = thrum_kernel.store
    assert store is not None
    await store.run_exclusive(store.rebuild)
    assert dump(thrum_kernel) == before
    assert rows(thrum_kernel, "SELECT COUNT(*) FROM events WHERE state='tombstoned'") == [(0,)]


async def test_the_greatest_cutoff_wins(thrum_kernel: Kernel, rpc_client: AsyncClient) -> None:
    now = await seeded(thrum_kernel)
    late_cutoff = ts(now - 3 * DAY)
    await rpc_client.call("purge", {"before": late_cutoff, "dry_run": False})
    earlier = await rpc_client.call("purge", {"before": "8d", "dry_run": False})
    assert (earlier["messages"], earlier["sessions"], earlier["events"]) == (0, 0, 0)
    assert rows(thrum_kernel, "SELECT value FROM meta WHERE key='purge_cutoff'") == [(late_cutoff,)]
    purges = [o["cutoff"] for o in log_lines(thrum_kernel)["events.jsonl"] if o["type"] == "purge.executed"]
    assert len(purges) == 2  # tombstones are kept forever


async def test_all_purges_everything_but_agents_groups_and_open_sessions(
    thrum_kernel: Kernel, rpc_client: AsyncClient
) -> None:
    await seeded(thrum_kernel)
    result = await rpc_client.call("purge", {"all": True, "dry_run": False})
    assert (result["messages"], result["sessions"]) == (3, 3)
    assert parse_ts_ns(result["cutoff"]) is not None
    assert rows(thrum_kernel, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert rows(thrum_kernel, "SELECT session_id FROM sessions") == [("s_open",)]
    assert rows(thrum_kernel, "SELECT session_id FROM agent_work_contexts") == [("s_open",)]
    assert len(rows(thrum_kernel, "SELECT * FROM agents")) == 2


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"before": "2099-01-01"}, "before", "future"),
        ({"before": "+1h"}, "before", "future"),
        ({"before": "yesterday"}, "before", "invalid"),
        ({"before": "2d", "all": True}, "before", "exactly_one"),
        ({}, "all", "exactly_one"),
    ],
)
async def test_bad_cutoffs_are_invalid_params(
    thrum_kernel: Kernel, rpc_client: AsyncClient, params: dict[str, Any], field: str, reason: str
) -> None:
    await seeded(thrum_kernel)
    before = log_lines(thrum_kernel)
    with pytest.raises(ThrumError) as info:
        await rpc_client.call("purge", {**params, "dry_run": False})
    assert info.value.code == INVALID_PARAMS
    assert (info.value.data or {}).get("field") == field
    assert (info.value.data or {}).get("reason") == reason
    assert log_lines(thrum_kernel) == before


def test_predicate_never_covers_agents_groups_or_unknown_types() -> None:
    cutoff = 10**18
    pred = purge_plugin.purge_predicate(cutoff, {"m1"}, {"s1"})
    key = (1, b"evt")
    assert pred({"type": "message.create", "message_id": "x"}, key)
    assert pred({"type": "message.receipt", "message_id": "m1"}, (cutoff + 1, b"e"))
    assert not pred({"type": "message.receipt", "message_id": "m2"}, (cutoff + 1, b"e"))
    assert pred({"type": "session.end", "session_id": "zzz"}, key)
    assert pred({"type": "agent.session.start", "session_id": "s1"}, (cutoff + 1, b"e"))
    assert not pred({"type": "agent.session.start", "session_id": "s2"}, key)  # open session
    assert pred({"type": "agent.update", "work_contexts": [{"session_id": "s1"}]}, key)
    assert not pred(
        {"type": "agent.update", "work_contexts": [{"session_id": "s1"}, {"session_id": "s2"}]}, key
    )
    for typ in (
        "agent.register",
        "agent.cleanup",
        "group.create",
        "group.member.add",
        "purge.executed",
        "x.y",
    ):
        assert not pred({"type": typ, "message_id": "m1", "session_id": "s1"}, key)


def test_filter_is_none_before_any_purge(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    assert purge_plugin.build_purge_filter(db) is None


async def test_purge_with_the_real_feature_plugins(thrum_kernel_runner: Any, thrum_repo: Any) -> None:
    """The same scenario with the installed agents/sessions/messaging/groups plugins."""
    from thrum_core.plugins.loader import make_plugin_manager
    from thrum_core.testing.client import open_async_client
    from thrum_core.testing.plugins import clean_environ

    pm = make_plugin_manager(clean_environ())
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    names = set(kernel.event_types.all_names())
    if not {"message.create", "message.receipt", "agent.session.start", "group.create"} <= names:
        pytest.skip("the agents/sessions, messaging and groups plugins are not all installed yet")
    now = time.time_ns()
    stored = await kernel.emit(scenario(now), source="sync")
    assert {s.state for s in stored} == {"applied"}, [(s.type, s.state) for s in stored]
    client = await open_async_client(kernel.status["socket_path"])
    try:
        preview = await client.call("purge", {"before": "2d"})
        assert (preview["messages"], preview["sessions"], preview["events"]) == (2, 2, 9)
        await client.call("purge", {"before": "2d", "dry_run": False})
    finally:
        await client.aclose()
    assert ids_in_log(kernel) & PURGED_IDS == set()
    assert rows(kernel, "SELECT message_id FROM messages") == [("m_new",)]
    assert rows(kernel, "SELECT message_id, agent_id FROM message_reads") == [("m_new", "bob")]
    assert sorted(r[0] for r in rows(kernel, "SELECT session_id FROM sessions")) == ["s_open", "s_recent"]
    assert rows(kernel, "SELECT session_id FROM agent_work_contexts") == [("s_open",)]
    assert sorted(r[0] for r in rows(kernel, "SELECT agent_id FROM agents")) == ["alice", "bob"]
    assert len(rows(kernel, "SELECT * FROM groups")) == 1
