"""session.* methods against an in-process kernel: lifecycle, ownership, intent/task events, heartbeat."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient

pytestmark = pytest.mark.thrum_builtins(
    "rpc.health", "transports.unix_socket", "rpc.agents", "rpc.sessions", "rpc.team", "rpc.context"
)


async def error_of(client: AsyncClient, method: str, params: dict[str, Any] | None = None) -> ThrumError:
    with pytest.raises(ThrumError) as info:
        await client.call(method, params)
    return info.value


def events_of(kernel: Kernel) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(kernel.paths.sync_dir.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def git(cwd: Path, *args: str) -> None:
    env = {
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


async def register(client: AsyncClient, name: str, **extra: Any) -> None:
    await client.call("agent.register", {"name": name, "role": "implementer", "module": "m", **extra})


async def test_start_end_lifecycle(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await register(rpc_client, "ripley")
    started = await rpc_client.call("session.start", {"agent_id": "ripley"})
    assert started["session_id"].startswith("ses_") and started["ended_sessions"] == []
    assert rpc_client is not None
    listed = (await rpc_client.call("session.list", {"agent_id": "ripley"}))["sessions"]
    assert [s["session_id"] for s in listed] == [started["session_id"]]
    assert listed[0]["status"] == "active" and listed[0]["ended_at"] is None

    ended = await rpc_client.call("session.end", {"caller_agent_id": "ripley"})
    assert ended["session_id"] == started["session_id"] and ended["duration_ms"] >= 0
    (session,) = (await rpc_client.call("session.list", {"agent_id": "ripley"}))["sessions"]
    assert session["status"] == "ended" and session["end_reason"] == "normal"
    types = [e["type"] for e in events_of(thrum_kernel)]
    assert types.count("agent.session.start") == 1 and types.count("agent.session.end") == 1
    end = next(e for e in events_of(thrum_kernel) if e["type"] == "agent.session.end")
    assert end["agent_id"] == "ripley" and end["reason"] == "normal"

    # Ending again: the explicit id is already ended; without one there is no open session.
    err = await error_of(
        rpc_client, "session.end", {"caller_agent_id": "ripley", "session_id": started["session_id"]}
    )
    assert err.code == -32003 and err.data is not None and err.data["reason"] == "already_ended"
    err = await error_of(rpc_client, "session.end", {"caller_agent_id": "ripley"})
    assert err.code == -32001


async def test_new_start_supersedes_open_session(rpc_client: AsyncClient, rpc_client_factory: Any) -> None:
    await register(rpc_client, "hicks")
    first = await rpc_client.call("session.start", {"agent_id": "hicks"})
    other = await rpc_client_factory()
    second = await other.call("session.start", {"agent_id": "hicks"})
    assert second["ended_sessions"] == [{"session_id": first["session_id"], "reason": "superseded"}]
    active = (await other.call("session.list", {"active": True}))["sessions"]
    assert [s["session_id"] for s in active] == [second["session_id"]]
    # The first connection was detached from the superseded session.
    err = await error_of(rpc_client, "agent.whoami")
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "no_caller"


async def test_stale_open_session_is_crash_recovered(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await register(rpc_client, "bishop")
    # A session started long ago by another daemon run: emit it with an old timestamp.
    await thrum_kernel.emit(
        [
            {
                "type": "agent.session.start",
                "session_id": "ses_OLD",
                "agent_id": "bishop",
                "timestamp": "2020-01-01T00:00:00.000000Z",
            }
        ]
    )
    started = await rpc_client.call("session.start", {"agent_id": "bishop"})
    assert started["ended_sessions"] == [{"session_id": "ses_OLD", "reason": "crash_recovered"}]


async def test_session_calls_for_unknown_agents_and_other_owners(rpc_client: AsyncClient) -> None:
    err = await error_of(rpc_client, "session.start", {"agent_id": "nobody"})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "not_registered"
    err = await error_of(rpc_client, "session.start")
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "no_caller"
    err = await error_of(rpc_client, "session.start", {"agent_id": "a", "caller_agent_id": "b"})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "caller_mismatch"
    err = await error_of(
        rpc_client, "session.start", {"agent_id": "vasquez_gone", "worktree": "/no/such/dir"}
    )
    assert err.code == -32602 and err.data is not None and err.data["field"] == "worktree"
    err = await error_of(rpc_client, "session.heartbeat", {"caller_agent_id": "nobody"})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "not_registered"

    await register(rpc_client, "vasquez")
    await register(rpc_client, "drake")
    theirs = await rpc_client.call("session.start", {"agent_id": "vasquez"})
    err = await error_of(
        rpc_client, "session.end", {"caller_agent_id": "drake", "session_id": theirs["session_id"]}
    )
    # The connection is attached to vasquez's session: a different caller is a mismatch.
    assert err.code == -32002
    err = await error_of(
        rpc_client,
        "session.setIntent",
        {"caller_agent_id": "vasquez", "session_id": "ses_NOPE", "intent": "x"},
    )
    assert err.code == -32001


async def test_not_owner(rpc_client_factory: Any) -> None:
    a = await rpc_client_factory()
    b = await rpc_client_factory()
    await register(a, "apone")
    await register(a, "gorman")
    theirs = await a.call("session.start", {"agent_id": "apone"})
    await b.call("session.start", {"agent_id": "gorman"})
    err = await error_of(b, "session.end", {"session_id": theirs["session_id"]})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "not_owner"


async def test_intent_and_task_emit_agent_update(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await register(rpc_client, "newt")
    started = await rpc_client.call("session.start", {"agent_id": "newt"})
    intent = await rpc_client.call("session.setIntent", {"intent": "fix the login flow"})
    assert intent["session_id"] == started["session_id"] and intent["intent"] == "fix the login flow"
    task = await rpc_client.call("session.setTask", {"current_task": "write tests"})
    assert task["current_task"] == "write tests"
    updates = [e for e in events_of(thrum_kernel) if e["type"] == "agent.update"]
    assert len(updates) == 2
    last = updates[-1]["work_contexts"][0]
    assert last["session_id"] == started["session_id"]
    assert last["intent"] == "fix the login flow" and last["current_task"] == "write tests"
    shard = thrum_kernel.paths.sync_dir / "messages" / "newt.jsonl"
    assert shard.exists()  # routed to the agent's shard (SPEC §6.3)

    (ctx,) = (await rpc_client.call("agent.listContext", {"agent_id": "newt"}))["contexts"]
    assert ctx["intent"] == "fix the login flow" and ctx["current_task"] == "write tests"

    err = await error_of(rpc_client, "session.setTask", {"current_task": "two\nlines"})
    assert err.code == -32602
    err = await error_of(rpc_client, "session.setIntent", {"intent": "x" * 1001})
    assert err.code == -32602

    await rpc_client.call("session.end")
    err = await error_of(
        rpc_client,
        "session.setIntent",
        {"caller_agent_id": "newt", "session_id": started["session_id"], "intent": "late"},
    )
    assert err.code == -32003 and err.data is not None and err.data["reason"] == "already_ended"
    # Contexts of ended sessions are filtered at query time.
    assert (await rpc_client.call("agent.listContext", {"agent_id": "newt"}))["contexts"] == []
    ended = (await rpc_client.call("agent.listContext", {"agent_id": "newt", "include_ended": True}))[
        "contexts"
    ]
    assert len(ended) == 1


async def test_heartbeat_extracts_git_context(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    root = thrum_kernel.paths.root
    git(root, "checkout", "-q", "-b", "feature")
    (root / "new.py").write_text("print('hi')\n")
    git(root, "add", "new.py")
    git(root, "commit", "-q", "-m", "add new.py")
    (root / "README.md").write_text("changed\n")
    await register(rpc_client, "frost", worktree=str(root))
    await rpc_client.call(
        "session.start", {"agent_id": "frost", "scopes": [{"type": "module", "value": "auth"}]}
    )
    beat = await rpc_client.call("session.heartbeat", {"add_refs": [{"type": "issue", "value": "42"}]})
    assert beat["branch"] == "feature"
    assert beat["unmerged_commits"] == 1 and beat["changed_files"] == 1 and beat["uncommitted_files"] >= 1
    assert beat["git_updated_at"] is not None
    (ctx,) = (await rpc_client.call("agent.listContext", {"file": "new.py"}))["contexts"]
    assert ctx["agent_id"] == "frost" and ctx["changed_files"] == ["new.py"]
    assert ctx["unmerged_commits"][0]["message"] == "add new.py"
    assert "README.md" in ctx["uncommitted_files"]
    assert (await rpc_client.call("agent.listContext", {"file": "other.py"}))["contexts"] == []
    assert (await rpc_client.call("agent.listContext", {"branch": "main"}))["contexts"] == []

    db = thrum_kernel.store.reader()  # type: ignore[union-attr]
    assert [tuple(r) for r in db.execute("SELECT type, value FROM session_scopes")] == [("module", "auth")]
    assert [tuple(r) for r in db.execute("SELECT type, value FROM session_refs")] == [("issue", "42")]
    await rpc_client.call("session.heartbeat", {"remove_scopes": [{"type": "module", "value": "auth"}]})
    assert db.execute("SELECT COUNT(*) FROM session_scopes").fetchone()[0] == 0
    # Heartbeats never emit events.
    assert not [e for e in events_of(thrum_kernel) if e["type"] == "agent.update"]

    # session.end carries the final work context as agent.update.
    await rpc_client.call("session.end")
    (update,) = [e for e in events_of(thrum_kernel) if e["type"] == "agent.update"]
    assert update["work_contexts"][0]["branch"] == "feature"


async def test_live_list_context_and_missing_worktree(
    rpc_client: AsyncClient, thrum_kernel: Kernel, tmp_path: Path
) -> None:
    root = thrum_kernel.paths.root
    await register(rpc_client, "hudson", worktree=str(root))
    await rpc_client.call("session.start", {"agent_id": "hudson"})
    (root / "live.txt").write_text("x\n")
    live = (await rpc_client.call("agent.listContext", {"live": True, "file": "live.txt"}))["contexts"]
    assert [c["agent_id"] for c in live] == ["hudson"]

    gone = tmp_path / "gone"
    gone.mkdir()
    await register(rpc_client, "dietrich", worktree=str(gone))
    await rpc_client.call("session.start", {"agent_id": "dietrich"})
    gone.rmdir()
    beat = await rpc_client.call("session.heartbeat", {"caller_agent_id": "dietrich"})
    assert beat["session_id"] and beat["branch"] is None and beat["unmerged_commits"] == 0
    live = (await rpc_client.call("agent.listContext", {"live": True}))["contexts"]
    assert {c["agent_id"] for c in live} == {"hudson", "dietrich"}


async def test_session_list_limit_and_validation(rpc_client: AsyncClient) -> None:
    await register(rpc_client, "spunk")
    for _ in range(3):
        await rpc_client.call("session.start", {"agent_id": "spunk"})
    assert len((await rpc_client.call("session.list", {"limit": 2}))["sessions"]) == 2
    assert len((await rpc_client.call("session.list", {"active": True}))["sessions"]) == 1
    err = await error_of(rpc_client, "session.list", {"limit": 0})
    assert err.code == -32602
    err = await error_of(
        rpc_client,
        "session.heartbeat",
        {"caller_agent_id": "spunk", "add_scopes": [{"type": "Bad", "value": "x"}]},
    )
    assert err.code == -32602 and err.data is not None and err.data["field"] == "add_scopes.0.type"


async def test_concurrent_starts_leave_one_open_session(
    rpc_client: AsyncClient, rpc_client_factory: Any
) -> None:
    import trio

    await register(rpc_client, "twin")
    clients = [await rpc_client_factory() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.call, "session.start", {"agent_id": "twin"})
    active = (await rpc_client.call("session.list", {"agent_id": "twin", "active": True}))["sessions"]
    assert len(active) == 1
    assert len((await rpc_client.call("session.list", {"agent_id": "twin"}))["sessions"]) == 5
