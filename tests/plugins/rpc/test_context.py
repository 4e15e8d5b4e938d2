"""context.* methods and team.list against an in-process kernel."""

from __future__ import annotations

from typing import Any

import pytest

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


async def agent(client: AsyncClient, name: str, role: str = "implementer", *, session: bool = True) -> None:
    """Register ``name`` and start its session on a connection of its own (sessions attach connections)."""
    await client.call("agent.register", {"name": name, "role": role, "module": "m"})
    if session:
        own = await open_async_client(client.socket_path)
        try:
            await own.call("session.start", {"agent_id": name})
        finally:
            await own.aclose()


async def test_save_show_clear(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "max")
    me = {"caller_agent_id": "max"}
    saved = await rpc_client.call("context.save", {**me, "content": "# Notes\nhalfway through — ünïcode\n"})
    assert saved["agent_name"] == "max" and saved["bytes"] == len(
        "# Notes\nhalfway through — ünïcode\n".encode()
    )
    path = thrum_kernel.paths.context_dir / "max.md"
    assert path.read_text() == "# Notes\nhalfway through — ünïcode\n"
    preamble = thrum_kernel.paths.context_dir / "max.preamble.md"
    assert preamble.exists() and "max" in preamble.read_text()  # default preamble created

    shown = await rpc_client.call("context.show", me)
    assert shown["content"].startswith("# Notes") and shown["source"] == "local"
    assert shown["preamble"] == preamble.read_text() and shown["updated_at"]
    other = await rpc_client.call("context.show", {"agent_name": "max", "no_preamble": True})
    assert other["preamble"] is None and other["content"] == shown["content"]

    assert (await rpc_client.call("context.clear", me)) == {"agent_name": "max", "cleared": True}
    assert (await rpc_client.call("context.clear", me)) == {"agent_name": "max", "cleared": False}
    shown = await rpc_client.call("context.show", me)
    assert shown["content"] is None and shown["source"] is None and shown["bytes"] == 0


async def test_show_falls_back_to_a_sync(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "immortan", session=False)
    synced = thrum_kernel.paths.sync_dir / "context"
    synced.mkdir(parents=True, exist_ok=True)
    (synced / "immortan.md").write_text("from another clone\n")
    shown = await rpc_client.call("context.show", {"agent_name": "immortan"})
    assert shown["source"] == "a-sync" and shown["content"] == "from another clone\n"


async def test_context_errors(rpc_client: AsyncClient, thrum_kernel: Kernel, rpc_client_factory: Any) -> None:
    await agent(rpc_client, "rictus")
    me = {"caller_agent_id": "rictus"}
    huge = "x" * (1024 * 1024 + 1)
    err = await error_of(rpc_client, "context.save", {**me, "content": huge})
    assert err.code == -32005
    assert err.data == {"field": "content", "limit": 1048576, "size": 1048577}
    assert "1 MiB" in err.message
    assert not (thrum_kernel.paths.context_dir / "rictus.md").exists()  # nothing half-written
    err = await error_of(rpc_client, "context.show", {"agent_name": "nobody"})
    assert err.code == -32001 and err.data is not None and err.data["kind"] == "agent"
    err = await error_of(rpc_client, "context.show", {"agent_name": "../../etc/passwd"})
    assert err.code == -32001
    fresh = await rpc_client_factory()  # not attached to a session: no caller
    err = await error_of(fresh, "context.show")
    assert err.code == -32002
    err = await error_of(rpc_client, "context.preamble.save", {**me})
    assert err.code == -32602
    err = await error_of(rpc_client, "context.preamble.save", {**me, "init": True, "content": "x"})
    assert err.code == -32602


async def test_preamble(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "capable")
    me = {"caller_agent_id": "capable"}
    assert (await rpc_client.call("context.preamble.show", me))["content"] is None
    await rpc_client.call("context.preamble.save", {**me, "init": True})
    shown = await rpc_client.call("context.preamble.show", me)
    assert shown["is_default"] is True and "thrum inbox" in shown["content"]
    await rpc_client.call("context.preamble.save", {**me, "content": "custom header\n"})
    shown = await rpc_client.call("context.preamble.show", me)
    assert shown == {"agent_name": "capable", "content": "custom header\n", "is_default": False}
    # A legacy <name>_preamble.md is read when the new file is absent.
    (thrum_kernel.paths.context_dir / "capable.preamble.md").unlink()
    (thrum_kernel.paths.context_dir / "capable_preamble.md").write_text("legacy\n")
    assert (await rpc_client.call("context.preamble.show", me))["content"] == "legacy\n"


async def test_prime_sections(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "toecutter")
    await agent(rpc_client, "goose", role="reviewer")
    await rpc_client.call("session.setIntent", {"caller_agent_id": "toecutter", "intent": "ship it"})
    await rpc_client.call("context.save", {"caller_agent_id": "toecutter", "content": "remember this"})
    prime = await rpc_client.call("context.prime", {"caller_agent_id": "toecutter"})
    assert prime["agent"]["agent_id"] == "toecutter" and prime["agent"]["intent"] == "ship it"
    assert prime["session"]["status"] == "active" and prime["session"]["intent"] == "ship it"
    assert prime["work_context"]["intent"] == "ship it"
    assert {m["agent_id"] for m in prime["team"]} == {"toecutter", "goose"}
    assert prime["context"]["content"] == "remember this"
    assert prime["sync"]["local_only"] is True
    assert prime["claude_md"] == {"present": False, "thrum_block": False}
    assert prime["single_agent_mode"] in (True, False)
    # The messaging plugin is not loaded here: its section is null with an error, the rest still works.
    assert prime["inbox"] is None and "inbox" in prime["errors"]
    assert set(prime["errors"]) == {"inbox"}


async def test_team_list(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "first")
    await agent(rpc_client, "second", role="reviewer")
    await agent(rpc_client, "idle", session=False)
    await rpc_client.call("session.setTask", {"caller_agent_id": "second", "current_task": "review #12"})
    members = (await rpc_client.call("team.list"))["members"]
    assert [m["agent_id"] for m in members] == ["second", "first"]  # newest session first
    second = members[0]
    assert second["current_task"] == "review #12" and second["session_start"]
    assert second["inbox_total"] == 0 and second["inbox_unread"] == 0
    assert isinstance(second["unmerged_commits"], int)
    everyone = (await rpc_client.call("team.list", {"all": True}))["members"]
    assert [m["agent_id"] for m in everyone][-1] == "idle" and everyone[-1]["status"] == "offline"
    assert [m["agent_id"] for m in (await rpc_client.call("team.list", {"role": "reviewer"}))["members"]] == [
        "second"
    ]


async def test_team_uses_inbox_counts_provider(rpc_client: AsyncClient, thrum_kernel: Kernel) -> None:
    await agent(rpc_client, "counted")
    thrum_kernel.plugin_state("agents")["inbox_counts"] = lambda db, ids: {i: (7, 3) for i in ids}
    (member,) = (await rpc_client.call("team.list"))["members"]
    assert (member["inbox_total"], member["inbox_unread"]) == (7, 3)


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
async def test_team_and_prime_with_the_messaging_plugin(rpc_client: AsyncClient) -> None:
    await agent(rpc_client, "sender")
    await agent(rpc_client, "reader", role="reviewer")
    for text in ("first", "second"):
        await rpc_client.call("message.send", {"caller_agent_id": "sender", "content": text, "to": "@reader"})
    members = {m["agent_id"]: m for m in (await rpc_client.call("team.list"))["members"]}
    assert (members["reader"]["inbox_total"], members["reader"]["inbox_unread"]) == (2, 2)
    assert (members["sender"]["inbox_total"], members["sender"]["inbox_unread"]) == (0, 0)
    prime = await rpc_client.call("context.prime", {"caller_agent_id": "reader"})
    assert prime["errors"] == {}
    assert prime["inbox"]["total"] == 2 and prime["inbox"]["unread"] == 2
    assert [m["body"]["content"] for m in prime["inbox"]["messages"]] == ["first", "second"]  # oldest first
