"""group.* methods and group events against an in-process kernel (SPEC §4, §7.3, §7.4, §9.8)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient

pytestmark = pytest.mark.thrum_builtins(
    "rpc.health", "transports.unix_socket", "rpc.agents", "rpc.sessions", "rpc.messages", "rpc.groups"
)

Factory = Callable[[], Awaitable[AsyncClient]]


@pytest.fixture
async def admin(thrum_kernel: Kernel, rpc_client_factory: Factory) -> AsyncClient:
    client = await rpc_client_factory()
    for name, role in (("alice", "coder"), ("bob", "coder"), ("carol", "reviewer"), ("dave", "planner")):
        await client.call("agent.register", {"name": name, "role": role, "module": "m"})
    return client


async def call(client: AsyncClient, method: str, **params: Any) -> Any:
    return await client.call(method, {"caller_agent_id": "alice", **params})


async def error(client: AsyncClient, method: str, **params: Any) -> ThrumError:
    with pytest.raises(ThrumError) as info:
        await call(client, method, **params)
    return info.value


def group_events(kernel: Kernel) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(kernel.paths.sync_dir.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return [e for e in out if e["type"].startswith("group.")]


async def test_create_list_info_delete(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    created = await call(admin, "group.create", name="backend", description="server people")
    assert created["group_id"].startswith("grp_") and created["name"] == "backend"
    assert created["description"] == "server people" and created["created_by"] == "alice"
    await call(admin, "group.create", name="alpha")
    listed = (await admin.call("group.list"))["groups"]
    assert [g["name"] for g in listed] == ["everyone", "alpha", "backend"]
    assert listed[0] == {
        "group_id": None,
        "name": "everyone",
        "description": listed[0]["description"],
        "member_count": 4,
        "created_at": None,
        "created_by": None,
        "builtin": True,
    }
    assert listed[2]["member_count"] == 0 and listed[2]["builtin"] is False
    info = await admin.call("group.info", {"name": "backend"})
    assert info["group_id"] == created["group_id"] and info["members"] == [] and info["builtin"] is False
    deleted = await call(admin, "group.delete", name="backend")
    assert deleted["deleted"] is True and deleted["group_id"] == created["group_id"]
    assert [g["name"] for g in (await admin.call("group.list"))["groups"]] == ["everyone", "alpha"]
    again = await call(admin, "group.create", name="backend")  # the name is free again
    assert again["group_id"] != created["group_id"]
    events = group_events(thrum_kernel)
    assert [e["type"] for e in events] == ["group.create", "group.create", "group.delete", "group.create"]
    assert events[2]["name"] == "backend" and events[2]["deleted_by"] == "alice"
    route = {p.name for p in (thrum_kernel.paths.sync_dir / "messages").glob("*.jsonl")}
    assert route == {"alice.jsonl"}


async def test_create_errors_and_namespace(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    await call(admin, "group.create", name="team")
    cases = {
        "team": (-32003, "exists"),
        "alice": (-32003, "name_taken"),  # an agent id
        "coder": (-32003, "name_taken"),  # a role
    }
    for name, (code, reason) in cases.items():
        err = await error(admin, "group.create", name=name)
        assert (err.code, (err.data or {})["reason"]) == (code, reason), name
    for bad in ("Team", "-x", "a b", "everyone", "system", "", "x" * 65):
        err = await error(admin, "group.create", name=bad)
        assert err.code == -32602, bad
    err = await error(admin, "group.create", name="ok", description="d" * 501)
    assert err.code == -32602 and (err.data or {})["field"] == "description"
    err = await error(admin, "group.delete", name="everyone")
    assert err.code == -32003 and (err.data or {})["reason"] == "builtin"
    err = await error(admin, "group.delete", name="nope")
    assert err.code == -32001 and (err.data or {})["kind"] == "group"
    with pytest.raises(ThrumError) as info:
        await admin.call("group.create", {"name": "anon"})
    assert info.value.code == -32002
    assert len(group_events(thrum_kernel)) == 1


async def test_members_add_remove_and_expand(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    await call(admin, "group.create", name="outer")
    await call(admin, "group.create", name="inner")
    add = await call(admin, "group.member.add", group="outer", member="@dave")
    assert add == {"group": "outer", "member": "dave", "member_type": "agent", "added": True}
    again = await call(admin, "group.member.add", group="outer", member="dave")
    assert again["added"] is False
    await call(admin, "group.member.add", group="outer", member="inner", member_type="group")
    await call(admin, "group.member.add", group="inner", member="coder", member_type="role")
    members = await admin.call("group.members", {"name": "outer", "expand": True})
    assert members == {
        "name": "outer",
        "members": [
            {"member_type": "agent", "member_value": "dave"},
            {"member_type": "group", "member_value": "inner"},
        ],
        "expanded": ["alice", "bob", "dave"],
    }
    assert "expanded" not in await admin.call("group.members", {"name": "outer"})
    info = await admin.call("group.info", {"name": "outer"})
    assert [(m["member_type"], m["member_value"], m["added_by"]) for m in info["members"]] == [
        ("agent", "dave", "alice"),
        ("group", "inner", "alice"),
    ]
    removed = await call(admin, "group.member.remove", group="outer", member="dave")
    assert removed == {"group": "outer", "member": "dave", "member_type": "agent", "removed": True}
    assert (await call(admin, "group.member.remove", group="outer", member="dave"))["removed"] is False
    await call(admin, "group.member.add", group="inner", member="*", member_type="role")
    everyone = await admin.call("group.members", {"name": "everyone", "expand": True})
    assert everyone["expanded"] == ["alice", "bob", "carol", "dave"]
    expanded = (await admin.call("group.members", {"name": "outer", "expand": True}))["expanded"]
    assert expanded == ["alice", "bob", "carol", "dave"]
    n_events = len(group_events(thrum_kernel))
    assert n_events == 2 + 4 + 1  # no event for "already a member" / "not a member"


async def test_member_errors_cycles_and_builtin(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    for name in ("a", "b", "c"):
        await call(admin, "group.create", name=name)
    await call(admin, "group.member.add", group="a", member="b", member_type="group")
    await call(admin, "group.member.add", group="b", member="c", member_type="group")
    before = len(group_events(thrum_kernel))
    for params, code, key in (
        ({"group": "c", "member": "a", "member_type": "group"}, -32003, "cycle"),
        ({"group": "a", "member": "a", "member_type": "group"}, -32003, "cycle"),
        ({"group": "a", "member": "nobody"}, -32001, "agent"),
        ({"group": "a", "member": "nope", "member_type": "role"}, -32001, "agent"),
        ({"group": "a", "member": "zzz", "member_type": "group"}, -32001, "group"),
        ({"group": "zzz", "member": "bob"}, -32001, "group"),
        ({"group": "everyone", "member": "bob"}, -32003, "builtin"),
        ({"group": "a", "member": "everyone", "member_type": "group"}, -32003, "builtin"),
        ({"group": "a", "member": "bob", "member_type": "team"}, -32602, None),
    ):
        err = await error(admin, "group.member.add", **params)
        assert err.code == code, params
        if key is not None:
            assert key in ((err.data or {}).get("reason"), (err.data or {}).get("kind")), params
    assert len(group_events(thrum_kernel)) == before


async def test_nested_expansion_stops_on_cycles_and_depth(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    """Cycles coming from other clones (events written directly) do not hang; depth is capped at 10."""
    names = [f"g{i}" for i in range(13)]
    events: list[dict[str, Any]] = [
        {"type": "group.create", "group_id": f"grp_{n}", "name": n, "created_by": "alice"} for n in names
    ]
    for parent, child in itertools.pairwise(names):
        events.append(
            {
                "type": "group.member.add",
                "group_id": f"grp_{parent}",
                "member_type": "group",
                "member_value": child,
                "added_by": "alice",
            }
        )
    events.append(
        {
            "type": "group.member.add",
            "group_id": "grp_g2",
            "member_type": "group",
            "member_value": "g0",
            "added_by": "alice",
        }
    )  # a cycle g0 → g1 → g2 → g0
    for n, agent in (("g5", "bob"), ("g10", "carol"), ("g12", "dave")):
        events.append(
            {
                "type": "group.member.add",
                "group_id": f"grp_{n}",
                "member_type": "agent",
                "member_value": agent,
                "added_by": "alice",
            }
        )
    await thrum_kernel.emit(events)
    expanded = (await admin.call("group.members", {"name": "g0", "expand": True}))["expanded"]
    assert expanded == ["bob", "carol"]  # g12 is 12 levels down: beyond the depth limit


async def test_concurrent_same_name_creates_merge(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    """Two clones create "ops" at once: the earlier create is canonical and members of both apply to it."""
    later = {
        "type": "group.create",
        "group_id": "grp_LATER",
        "name": "ops",
        "created_by": "bob",
        "timestamp": "2026-01-01T00:00:02.000000Z",
        "event_id": "evt_later",
    }
    member_of_later = {
        "type": "group.member.add",
        "group_id": "grp_LATER",
        "member_type": "agent",
        "member_value": "carol",
        "added_by": "bob",
        "timestamp": "2026-01-01T00:00:03.000000Z",
        "event_id": "evt_m1",
    }
    earlier = {
        "type": "group.create",
        "group_id": "grp_EARLY",
        "name": "ops",
        "created_by": "alice",
        "timestamp": "2026-01-01T00:00:01.000000Z",
        "event_id": "evt_early",
    }
    member_of_earlier = {
        "type": "group.member.add",
        "group_id": "grp_EARLY",
        "member_type": "agent",
        "member_value": "dave",
        "added_by": "alice",
        "timestamp": "2026-01-01T00:00:04.000000Z",
        "event_id": "evt_m2",
    }
    await thrum_kernel.emit([later, member_of_later], source="sync")
    await thrum_kernel.emit([earlier, member_of_earlier], source="sync")
    groups = [g for g in (await admin.call("group.list"))["groups"] if g["name"] == "ops"]
    assert len(groups) == 1 and groups[0]["group_id"] == "grp_EARLY"
    expanded = (await admin.call("group.members", {"name": "ops", "expand": True}))["expanded"]
    assert expanded == ["carol", "dave"]
    await call(admin, "group.delete", name="ops")
    assert [g["name"] for g in (await admin.call("group.list"))["groups"]] == ["everyone"]


async def test_member_before_group_waits_pending(admin: AsyncClient, thrum_kernel: Kernel) -> None:
    member = {
        "type": "group.member.add",
        "group_id": "grp_LATE",
        "member_type": "agent",
        "member_value": "bob",
        "added_by": "alice",
        "timestamp": "2026-01-01T00:00:05.000000Z",
        "event_id": "evt_member",
    }
    create = {
        "type": "group.create",
        "group_id": "grp_LATE",
        "name": "late",
        "created_by": "alice",
        "timestamp": "2026-01-01T00:00:01.000000Z",
        "event_id": "evt_create",
    }
    stored = await thrum_kernel.emit([member], source="sync")
    assert stored[0].state == "pending"
    await thrum_kernel.emit([create], source="sync")
    assert (await admin.call("group.members", {"name": "late", "expand": True}))["expanded"] == ["bob"]


async def test_group_visibility_follows_membership(
    admin: AsyncClient, thrum_kernel: Kernel, rpc_client_factory: Factory
) -> None:
    """A new member sees earlier group messages (created after it registered); a removed one does not."""
    alice = await rpc_client_factory()
    await alice.call("session.start", {"agent_id": "alice", "caller_agent_id": "alice"})
    await call(admin, "group.create", name="squad")
    await call(admin, "group.member.add", group="squad", member="bob")
    sent = await alice.call(
        "message.send", {"content": "squad news", "to": "@squad", "caller_agent_id": "alice"}
    )
    assert sent["recipients"] == ["bob"]

    async def inbox(agent: str) -> list[str]:
        res = await admin.call("message.list", {"for_agent": agent, "caller_agent_id": agent})
        return [m["message_id"] for m in res["messages"]]

    assert await inbox("carol") == []
    await call(admin, "group.member.add", group="squad", member="carol")
    assert await inbox("carol") == [sent["message_id"]]
    await call(admin, "group.member.remove", group="squad", member="bob")
    assert await inbox("bob") == [sent["message_id"]]  # still a recipient
    await call(admin, "group.member.remove", group="squad", member="carol")
    assert await inbox("carol") == []
