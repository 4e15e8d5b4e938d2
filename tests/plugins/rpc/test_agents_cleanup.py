"""agent.delete, agent.cleanup, the agent.cleanup tombstone, and rebuild equivalence of the agent tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thrum_cli.identity import read_identity_file, write_identity_file
from thrum_core.canonical import canonical_line
from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient, open_async_client

pytestmark = pytest.mark.thrum_builtins(
    "rpc.health", "transports.unix_socket", "rpc.agents", "rpc.sessions", "rpc.team", "rpc.context"
)


async def error_of(client: AsyncClient, method: str, params: dict[str, Any] | None = None) -> ThrumError:
    with pytest.raises(ThrumError) as info:
        await client.call(method, params)
    return info.value


def all_lines(kernel: Kernel) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(kernel.paths.sync_dir.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


async def start_session(client: AsyncClient, name: str) -> dict[str, Any]:
    own = await open_async_client(client.socket_path)
    try:
        result: dict[str, Any] = await own.call("session.start", {"agent_id": name})
        return result
    finally:
        await own.aclose()


def make_worktree(base: Path, name: str, agent_id: str, repo_id: str) -> Path:
    worktree = base / name
    worktree.mkdir()
    write_identity_file(
        worktree / ".thrum" / "identities",
        agent_id,
        agent={"kind": "agent", "name": agent_id, "role": "implementer", "module": "m"},
        updates={"repo_id": repo_id, "worktree": str(worktree)},
    )
    return worktree


async def snapshot(client: AsyncClient) -> dict[str, Any]:
    agents = (await client.call("agent.list"))["agents"]
    for a in agents:
        a.pop("last_seen_at")
        a.pop("status")
    sessions = (await client.call("session.list", {"limit": 1000}))["sessions"]
    for s in sessions:
        s.pop("last_seen_at")
    contexts = (await client.call("agent.listContext", {"include_ended": True}))["contexts"]
    return {"agents": agents, "sessions": sessions, "contexts": contexts}


async def test_delete_removes_everything(
    rpc_client: AsyncClient, thrum_kernel: Kernel, tmp_path: Path
) -> None:
    worktree = make_worktree(tmp_path, "wt", "doof", thrum_kernel.repo_id)
    identity = worktree / ".thrum" / "identities" / "doof.json"
    await rpc_client.call(
        "agent.register", {"name": "doof", "role": "implementer", "module": "m", "worktree": str(worktree)}
    )
    await rpc_client.call("agent.register", {"name": "keeper", "role": "reviewer", "module": "m"})
    await start_session(rpc_client, "doof")
    await rpc_client.call("session.setIntent", {"caller_agent_id": "doof", "intent": "playing guitar"})
    await rpc_client.call("context.save", {"caller_agent_id": "doof", "content": "notes"})
    shard = thrum_kernel.paths.sync_dir / "messages" / "doof.jsonl"
    assert shard.exists() and identity.exists()

    result = await rpc_client.call("agent.delete", {"name": "doof"})
    assert result["agent_id"] == "doof" and result["deleted"] is True
    assert result["identity_file_removed"] is True and not identity.exists()
    assert result["context_files_removed"] == 2  # context and the default preamble
    assert result["lines_removed"] >= 3  # register, session start, agent.update

    lines = all_lines(thrum_kernel)
    assert [e["type"] for e in lines if e.get("agent_id") == "doof"] == ["agent.cleanup"]
    cleanup = next(e for e in lines if e["type"] == "agent.cleanup")
    assert cleanup["method"] == "manual" and cleanup["reason"] == "manual deletion"
    assert not shard.exists()  # a file left empty is removed
    assert [a["agent_id"] for a in (await rpc_client.call("agent.list"))["agents"]] == ["keeper"]
    assert (await rpc_client.call("session.list"))["sessions"] == []
    assert (await rpc_client.call("agent.listContext", {"include_ended": True}))["contexts"] == []

    err = await error_of(rpc_client, "agent.delete", {"name": "doof"})
    assert err.code == -32001

    # A later registration of the same name is a new agent, untouched by the tombstone.
    again = await rpc_client.call("agent.register", {"name": "doof", "role": "tester", "module": "m"})
    assert again["status"] == "registered"
    assert [a["agent_id"] for a in (await rpc_client.call("agent.list"))["agents"]] == ["doof", "keeper"]


async def test_tombstone_filters_old_events_arriving_later(
    rpc_client: AsyncClient, thrum_kernel: Kernel
) -> None:
    await rpc_client.call("agent.register", {"name": "corpus", "role": "planner", "module": "m"})
    await rpc_client.call("agent.delete", {"name": "corpus"})
    store = thrum_kernel.store
    assert store is not None
    old = {
        "type": "agent.register",
        "agent_id": "corpus",
        "name": "corpus",
        "kind": "agent",
        "role": "planner",
        "module": "m",
        "timestamp": "2020-01-01T00:00:00.000000Z",
        "event_id": "evt_01E0000000000000000000000A",
        "v": 1,
        "origin_daemon": "d_other",
    }
    go_end = {  # a Go session.end line without agent_id, for a session of the deleted agent
        "type": "session.start",
        "agent_id": "corpus",
        "session_id": "ses_gone",
        "timestamp": "2020-01-01T00:00:01Z",
        "event_id": "evt_00000001",
        "v": 1,
    }
    (stored_old, stored_start) = await store.submit_lines(
        [canonical_line(old), canonical_line(go_end)], source="sync"
    )
    assert stored_old.state == "tombstoned" and stored_start.state == "tombstoned"
    assert (await rpc_client.call("agent.list"))["agents"] == []


async def test_cleanup_reasons_dry_run_and_force(
    rpc_client: AsyncClient, thrum_kernel: Kernel, tmp_path: Path
) -> None:
    alive = make_worktree(tmp_path, "alive", "alive", thrum_kernel.repo_id)
    await rpc_client.call(
        "agent.register", {"name": "alive", "role": "implementer", "module": "m", "worktree": str(alive)}
    )
    gone = make_worktree(tmp_path, "gone", "gone", thrum_kernel.repo_id)
    await rpc_client.call(
        "agent.register", {"name": "gone", "role": "implementer", "module": "m", "worktree": str(gone)}
    )
    for path in sorted(gone.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    gone.rmdir()
    no_identity = tmp_path / "noid"
    no_identity.mkdir()
    await rpc_client.call(
        "agent.register", {"name": "noid", "role": "implementer", "module": "m", "worktree": str(no_identity)}
    )
    await thrum_kernel.emit(
        [
            {
                "type": "agent.register",
                "agent_id": "ancient",
                "name": "ancient",
                "kind": "agent",
                "role": "tester",
                "module": "m",
                "timestamp": "2020-01-01T00:00:00.000000Z",
            }
        ]
    )

    err = await error_of(rpc_client, "agent.cleanup", {"dry_run": True, "force": True})
    assert err.code == -32602
    err = await error_of(rpc_client, "agent.cleanup", {"threshold": 0})
    assert err.code == -32602

    report = await rpc_client.call("agent.cleanup", {"dry_run": True})
    reasons = {o["agent_id"]: o["reasons"] for o in report["orphans"]}
    assert reasons == {"gone": ["worktree_missing"], "noid": ["identity_missing"], "ancient": ["stale"]}
    ancient = next(o for o in report["orphans"] if o["agent_id"] == "ancient")
    assert ancient["days_since_last_seen"] > 30 and ancient["message_count"] == 0
    assert report["deleted"] == [] and report["dry_run"] is True
    assert len((await rpc_client.call("agent.list"))["agents"]) == 4

    forced = await rpc_client.call("agent.cleanup", {"force": True})
    assert sorted(forced["deleted"]) == ["ancient", "gone", "noid"] and forced["dry_run"] is False
    assert [a["agent_id"] for a in (await rpc_client.call("agent.list"))["agents"]] == ["alive"]
    methods = {
        e["agent_id"]: e.get("method") for e in all_lines(thrum_kernel) if e["type"] == "agent.cleanup"
    }
    assert methods == {"ancient": "automated", "gone": "automated", "noid": "automated"}


async def test_set_status_writes_identity_file(
    rpc_client: AsyncClient, thrum_kernel: Kernel, tmp_path: Path
) -> None:
    worktree = make_worktree(tmp_path, "wt", "fifi", thrum_kernel.repo_id)
    await rpc_client.call(
        "agent.register", {"name": "fifi", "role": "implementer", "module": "m", "worktree": str(worktree)}
    )
    await rpc_client.call("agent.set-status", {"caller_agent_id": "fifi", "status": "working"})
    ident = read_identity_file(worktree / ".thrum" / "identities" / "fifi.json")
    assert ident is not None and ident.agent_status == "working" and ident.agent_status_updated_at
    db = thrum_kernel.store.reader()  # type: ignore[union-attr]
    assert db.execute("SELECT agent_status FROM presence WHERE agent_id='fifi'").fetchone()[0] == "working"


async def test_rebuild_gives_the_same_answers(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    for name, role in (("ann", "implementer"), ("bob", "reviewer"), ("cat", "tester")):
        await rpc_client.call(
            "agent.register", {"name": name, "role": role, "module": "m", "display": name.upper()}
        )
    await start_session(rpc_client, "ann")
    await start_session(rpc_client, "ann")  # supersedes the first
    await start_session(rpc_client, "bob")
    await rpc_client.call("session.setIntent", {"caller_agent_id": "bob", "intent": "reviewing"})
    await rpc_client.call("session.setTask", {"caller_agent_id": "bob", "current_task": "pr 7"})
    await rpc_client.call("session.end", {"caller_agent_id": "bob"})
    await rpc_client.call(
        "agent.register", {"name": "cat", "role": "tester", "module": "m", "display": "Cat"}
    )
    await rpc_client.call("agent.delete", {"name": "cat"})
    # Out-of-order arrival: a session's end before its start, from another daemon.
    store = thrum_kernel.store
    assert store is not None
    end = {
        "type": "agent.session.end",
        "session_id": "ses_X",
        "agent_id": "ann",
        "reason": "normal",
        "timestamp": "2021-01-01T01:00:00.000000Z",
        "event_id": "evt_01EV0000000000000000000002",
        "v": 1,
        "origin_daemon": "d_peer",
    }
    start = {
        "type": "agent.session.start",
        "session_id": "ses_X",
        "agent_id": "ann",
        "timestamp": "2021-01-01T00:00:00.000000Z",
        "event_id": "evt_01EV0000000000000000000001",
        "v": 1,
        "origin_daemon": "d_peer",
    }
    await store.submit_lines([canonical_line(end)], source="sync")
    await store.submit_lines([canonical_line(start)], source="sync")

    before = await snapshot(rpc_client)
    assert any(s["session_id"] == "ses_X" and s["started_at"] and s["ended_at"] for s in before["sessions"])
    await store.run_exclusive(store.rebuild)
    after = await snapshot(rpc_client)
    assert after == before


@pytest.mark.thrum_builtins(
    "rpc.health",
    "transports.unix_socket",
    "rpc.agents",
    "rpc.sessions",
    "rpc.team",
    "rpc.context",
    "rpc.messages",
    "rpc.groups",
)
async def test_delete_with_messages_receipts_and_groups(
    rpc_client: AsyncClient, thrum_kernel: Kernel
) -> None:
    for name in ("xavier", "yolanda"):
        await rpc_client.call("agent.register", {"name": name, "role": f"role_{name}", "module": "m"})
        await start_session(rpc_client, name)
    x, y = {"caller_agent_id": "xavier"}, {"caller_agent_id": "yolanda"}
    from_x = await rpc_client.call("message.send", {**x, "content": "from x", "to": "@yolanda"})
    to_x = await rpc_client.call("message.send", {**y, "content": "to x", "to": "@xavier"})
    await rpc_client.call("message.markRead", {**y, "message_ids": [from_x["message_id"]]})
    await rpc_client.call("message.markRead", {**x, "message_ids": [to_x["message_id"]]})
    await rpc_client.call("group.create", {**y, "name": "crew"})
    await rpc_client.call("group.member.add", {**y, "group": "crew", "member": "xavier"})
    await rpc_client.call("group.member.add", {**y, "group": "crew", "member": "yolanda"})

    await rpc_client.call("agent.delete", {"name": "xavier"})

    inbox = await rpc_client.call("message.list", {"for_agent": "yolanda"})
    assert [m["message_id"] for m in inbox["messages"]] == [to_x["message_id"]]  # messages to X stay
    kept = (await rpc_client.call("message.get", {"message_id": to_x["message_id"]}))["message"]
    assert all(r["read_at"] is None for r in kept["recipients"])  # X's receipt is gone
    err = await error_of(rpc_client, "message.get", {"message_id": from_x["message_id"]})
    assert err.code == -32001
    members = (await rpc_client.call("group.members", {"name": "crew"}))["members"]
    assert members == [{"member_type": "agent", "member_value": "yolanda"}]
    lines = all_lines(thrum_kernel)
    assert not [e for e in lines if e.get("message_id") == from_x["message_id"]]
    assert not [e for e in lines if e["type"] == "message.receipt" and e["agent_id"] == "xavier"]

    store = thrum_kernel.store
    assert store is not None
    before = (await rpc_client.call("message.list", {"for_agent": "yolanda"}))["messages"]
    await store.run_exclusive(store.rebuild)
    assert (await rpc_client.call("message.list", {"for_agent": "yolanda"}))["messages"] == before
    assert (await rpc_client.call("group.members", {"name": "crew"}))["members"] == members
