"""agent.register, agent.list, agent.whoami and caller resolution against an in-process kernel."""

from __future__ import annotations

import json
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


def log_lines(kernel: Kernel, rel: str = "events.jsonl") -> list[dict[str, Any]]:
    path = kernel.paths.sync_dir / rel
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_register_new_agent_writes_one_event(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    worktree = str(thrum_kernel.paths.root)
    result = await rpc_client.call(
        "agent.register",
        {
            "name": "furiosa",
            "role": "implementer",
            "module": "auth",
            "display": "Furiosa",
            "worktree": worktree,
        },
    )
    assert result["agent_id"] == "furiosa"
    assert result["status"] == "registered"
    assert result["registered_at"].endswith("Z")
    events = [e for e in log_lines(thrum_kernel) if e["type"] == "agent.register"]
    assert len(events) == 1
    ev = events[0]
    assert ev["agent_id"] == "furiosa" and ev["name"] == "furiosa" and ev["kind"] == "agent"
    assert ev["role"] == "implementer" and ev["module"] == "auth" and ev["worktree"] == worktree
    assert ev["origin_daemon"] == thrum_kernel.daemon_id

    listed = await rpc_client.call("agent.list")
    (agent,) = listed["agents"]
    assert agent["agent_id"] == "furiosa"
    assert agent["is_local"] is True
    assert agent["status"] == "offline"  # no session yet
    assert agent["session_id"] is None
    assert agent["display"] == "Furiosa"


async def test_register_same_fields_is_a_noop_and_display_change_updates(
    rpc_client: AsyncClient, thrum_kernel: Kernel
) -> None:
    params = {"name": "nux", "role": "tester", "module": "core"}
    assert (await rpc_client.call("agent.register", params))["status"] == "registered"
    assert (await rpc_client.call("agent.register", params))["status"] == "registered"
    assert len([e for e in log_lines(thrum_kernel) if e["type"] == "agent.register"]) == 1
    updated = await rpc_client.call("agent.register", {**params, "display": "Nux the tester"})
    assert updated["status"] == "updated"
    assert len([e for e in log_lines(thrum_kernel) if e["type"] == "agent.register"]) == 2
    (agent,) = (await rpc_client.call("agent.list"))["agents"]
    assert agent["display"] == "Nux the tester"


async def test_role_change_conflicts_unless_forced(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await rpc_client.call("agent.register", {"name": "slit", "role": "reviewer", "module": "core"})
    err = await error_of(rpc_client, "agent.register", {"name": "slit", "role": "planner", "module": "core"})
    assert err.code == -32003
    assert err.data is not None
    assert err.data["status"] == "conflict" and err.data["reason"] == "role_changed"
    assert err.data["existing"]["role"] == "reviewer"
    assert len([e for e in log_lines(thrum_kernel) if e["type"] == "agent.register"]) == 1  # nothing written
    forced = await rpc_client.call(
        "agent.register", {"name": "slit", "role": "planner", "module": "core", "re_register": True}
    )
    assert forced["status"] == "updated"
    (agent,) = (await rpc_client.call("agent.list"))["agents"]
    assert agent["role"] == "planner"


async def test_in_use_elsewhere_conflicts(
    rpc_client: AsyncClient, thrum_kernel: Kernel, tmp_path: Any
) -> None:
    first = tmp_path / "wt1"
    second = tmp_path / "wt2"
    first.mkdir()
    second.mkdir()
    await rpc_client.call(
        "agent.register", {"name": "ace", "role": "implementer", "module": "m", "worktree": str(first)}
    )
    await rpc_client.call("session.start", {"agent_id": "ace"})
    err = await error_of(
        rpc_client,
        "agent.register",
        {"name": "ace", "role": "implementer", "module": "m", "worktree": str(second)},
    )
    assert err.code == -32003 and err.data is not None and err.data["reason"] == "in_use_elsewhere"
    ok = await rpc_client.call(
        "agent.register",
        {"name": "ace", "role": "implementer", "module": "m", "worktree": str(second), "force": True},
    )
    assert ok["status"] == "updated"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "Bad-Name", "role": "r", "module": "m"}, "name"),
        ({"name": "../etc", "role": "r", "module": "m"}, "name"),
        ({"name": "everyone", "role": "r", "module": "m"}, "name"),
        ({"name": "system", "role": "r", "module": "m"}, "name"),
        ({"name": "x" * 65, "role": "r", "module": "m"}, "name"),
        ({"name": "ok", "role": "all", "module": "m"}, "role"),
        ({"name": "ok", "role": "-bad", "module": "m"}, "role"),
        ({"name": "ok", "role": "r", "module": "Mod"}, "module"),
        ({"name": "ok", "role": "r", "module": "m", "display": "a\x01b"}, "display"),
        ({"name": "ok", "role": "r", "module": "m", "worktree": "relative/path"}, "worktree"),
        ({"name": "ok", "role": "r", "module": "m", "worktree": "/no/such/worktree/anywhere"}, "worktree"),
        ({"name": "ok", "role": "r"}, "module"),
        ({"name": "ok", "role": "r", "module": "m", "force": "yes"}, "force"),
    ],
)
async def test_invalid_params_write_nothing(
    rpc_client: AsyncClient, thrum_kernel: Kernel, params: dict[str, Any], field: str
) -> None:
    err = await error_of(rpc_client, "agent.register", params)
    assert err.code == -32602
    assert err.data is not None and err.data["field"] == field
    assert log_lines(thrum_kernel) == []


async def test_namespace_name_vs_role(rpc_client: AsyncClient) -> None:
    await rpc_client.call("agent.register", {"name": "max", "role": "coordinator", "module": "m"})
    err = await error_of(
        rpc_client, "agent.register", {"name": "coordinator", "role": "tester", "module": "m"}
    )
    assert err.code == -32003 and err.data is not None and err.data["reason"] == "name_taken"
    err = await error_of(rpc_client, "agent.register", {"name": "other", "role": "max", "module": "m"})
    assert err.code == -32003 and err.data is not None and err.data["reason"] == "name_taken"


async def test_unnamed_agent_gets_the_derived_id(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    from thrum_core.ids import unnamed_agent_id

    result = await rpc_client.call("agent.register", {"role": "coordinator", "module": "main"})
    assert result["agent_id"] == unnamed_agent_id(thrum_kernel.repo_id, "coordinator", "main")


async def test_list_filters(rpc_client: AsyncClient) -> None:
    for name, role, module in (
        ("a1", "implementer", "auth"),
        ("a2", "implementer", "db"),
        ("a3", "tester", "db"),
    ):
        await rpc_client.call("agent.register", {"name": name, "role": role, "module": module})
    await rpc_client.call("session.start", {"agent_id": "a2"})

    async def ids(**params: Any) -> list[str]:
        return [a["agent_id"] for a in (await rpc_client.call("agent.list", params))["agents"]]

    assert await ids() == ["a1", "a2", "a3"]
    assert await ids(role="implementer") == ["a1", "a2"]
    assert await ids(module="db") == ["a2", "a3"]
    assert await ids(status="active") == ["a2"]
    assert await ids(status="offline") == ["a1", "a3"]
    assert await ids(kind="user") == []
    err = await error_of(rpc_client, "agent.list", {"status": "busy"})
    assert err.code == -32602


async def test_whoami_and_caller_resolution(rpc_client: AsyncClient, rpc_client_factory: Any) -> None:
    await rpc_client.call("agent.register", {"name": "toast", "role": "planner", "module": "m"})
    await rpc_client.call("agent.register", {"name": "cap", "role": "tester", "module": "m"})

    err = await error_of(rpc_client, "agent.whoami")
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "no_caller"
    err = await error_of(rpc_client, "agent.whoami", {"caller_agent_id": "ghost"})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "not_registered"

    me = await rpc_client.call("agent.whoami", {"caller_agent_id": "toast"})
    assert me["agent_id"] == "toast" and me["source"] == "caller_agent_id" and me["session_id"] is None

    started = await rpc_client.call("session.start", {"agent_id": "toast"})
    # The connection is now attached: no caller_agent_id needed.
    me = await rpc_client.call("agent.whoami")
    assert me["source"] == "connection" and me["session_id"] == started["session_id"]
    assert me["session_start"] == started["started_at"]
    err = await error_of(rpc_client, "agent.whoami", {"caller_agent_id": "cap"})
    assert err.code == -32002 and err.data is not None and err.data["reason"] == "caller_mismatch"

    other = await rpc_client_factory()
    me = await other.call("agent.whoami", {"caller_agent_id": "toast"})
    assert me["session_id"] == started["session_id"]  # its most recent open session


async def test_set_status(rpc_client: AsyncClient) -> None:
    await rpc_client.call("agent.register", {"name": "dag", "role": "planner", "module": "m"})
    result = await rpc_client.call("agent.set-status", {"status": "blocked", "caller_agent_id": "dag"})
    assert result["agent"] == "dag" and result["status"] == "blocked"
    (agent,) = (await rpc_client.call("agent.list"))["agents"]
    assert agent["agent_status"] == "blocked"
    err = await error_of(rpc_client, "agent.set-status", {"status": "sleeping", "caller_agent_id": "dag"})
    assert err.code == -32602
