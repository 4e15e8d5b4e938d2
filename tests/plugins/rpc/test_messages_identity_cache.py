"""The caller/recipient lookup cache of ``message.send`` never serves a stale answer.

``resolve_caller`` and the recipient resolution of ``message.send`` keep
their agent and session lookups while only message events are written; any
other event (a registration, a session start or end, a deletion) or an
exclusive writer job starts the cache over.  These tests drive the real
daemon path over its Unix socket and check each change is seen at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient
from thrum_plugins.rpc._caller import MESSAGE_DATA_TYPES

PLUGINS = (
    "rpc.health",
    "transports.unix_socket",
    "rpc.agents",
    "rpc.sessions",
    "rpc.messages",
    "rpc.groups",
    "notifiers.push",
)
pytestmark = pytest.mark.thrum_builtins(*PLUGINS)

Factory = Callable[[], Awaitable[AsyncClient]]


async def _register(factory: Factory, name: str, role: str = "coder") -> AsyncClient:
    """Register ``name`` and start its session on a connection of its own (which it returns)."""
    client = await factory()
    await client.call("agent.register", {"name": name, "role": role, "module": "m"})
    await client.call("session.start", {"agent_id": name, "caller_agent_id": name})
    return client


async def _send(client: AsyncClient, author: str, to: str, content: str = "hi") -> dict[str, Any]:
    result: dict[str, Any] = await client.call(
        "message.send", {"content": content, "to": to, "caller_agent_id": author}
    )
    return result


async def _send_error(client: AsyncClient, author: str, to: str) -> ThrumError:
    with pytest.raises(ThrumError) as info:
        await _send(client, author, to)
    return info.value


def _created(kernel: Kernel) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(kernel.paths.sync_dir.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line) if line else {}
            if event.get("type") == "message.create":
                out[event["message_id"]] = event
    return out


async def test_sends_keep_the_cache_key_and_other_writes_change_it(
    thrum_kernel: Kernel, rpc_client_factory: Factory
) -> None:
    store = thrum_kernel.store
    assert store is not None
    alice = await _register(rpc_client_factory, "alice")
    await _register(rpc_client_factory, "bob")
    key = store.changes_except(MESSAGE_DATA_TYPES)
    for i in range(3):
        await _send(alice, "alice", "@bob", f"m{i}")
    assert store.changes_except(MESSAGE_DATA_TYPES) == key
    await alice.call("agent.register", {"name": "carol", "role": "r", "module": "m"})
    after_register = store.changes_except(MESSAGE_DATA_TYPES)
    assert after_register != key
    await store.run_exclusive(lambda: None)
    assert store.changes_except(MESSAGE_DATA_TYPES) != after_register


async def test_a_recipient_registered_after_a_failed_send_is_found(rpc_client_factory: Factory) -> None:
    alice = await _register(rpc_client_factory, "alice")
    await _register(rpc_client_factory, "bob")
    await _send(alice, "alice", "@bob")  # fills the cache
    err = await _send_error(alice, "alice", "@erin")
    assert err.code == -32001 and (err.data or {}).get("unknown") == ["@erin"]
    await alice.call("agent.register", {"name": "erin", "role": "tester", "module": "m"})
    sent = await _send(alice, "alice", "@erin")
    assert sent["recipients"] == ["erin"]
    # ... and a role that had no members a moment ago
    err = await _send_error(alice, "alice", "@auditor")
    assert err.code == -32001
    await alice.call("agent.register", {"name": "fred", "role": "auditor", "module": "m"})
    assert (await _send(alice, "alice", "@auditor"))["recipients"] == ["fred"]


async def test_a_caller_registered_after_a_refusal_may_send(rpc_client_factory: Factory) -> None:
    await _register(rpc_client_factory, "alice")
    gina = await rpc_client_factory()
    err = await _send_error(gina, "gina", "@alice")
    assert err.code == -32002 and err.data == {"reason": "not_registered"}
    await gina.call("agent.register", {"name": "gina", "role": "r", "module": "m"})
    err = await _send_error(gina, "gina", "@alice")
    assert err.data == {"reason": "no_session"}
    await gina.call("session.start", {"agent_id": "gina", "caller_agent_id": "gina"})
    assert (await _send(gina, "gina", "@alice"))["recipients"] == ["alice"]


async def test_session_changes_reach_the_next_send(thrum_kernel: Kernel, rpc_client_factory: Factory) -> None:
    alice = await _register(rpc_client_factory, "alice")
    await _register(rpc_client_factory, "bob")
    first = await _send(alice, "alice", "@bob")
    await _send(alice, "alice", "@bob")
    old_session = _created(thrum_kernel)[first["message_id"]]["session_id"]
    assert old_session.startswith("ses_")

    await alice.call("session.end", {"caller_agent_id": "alice"})
    err = await _send_error(alice, "alice", "@bob")
    assert err.data == {"reason": "no_session"}

    started = await alice.call("session.start", {"agent_id": "alice", "caller_agent_id": "alice"})
    again = await _send(alice, "alice", "@bob")
    new_session = _created(thrum_kernel)[again["message_id"]]["session_id"]
    assert new_session == started["session_id"] and new_session != old_session


async def test_a_deleted_agent_can_neither_send_nor_be_addressed(rpc_client_factory: Factory) -> None:
    alice = await _register(rpc_client_factory, "alice")
    hank = await _register(rpc_client_factory, "hank")
    await _send(hank, "hank", "@alice")
    await _send(alice, "alice", "@hank")
    await (await rpc_client_factory()).call("agent.delete", {"name": "hank"})
    err = await _send_error(hank, "hank", "@alice")
    assert err.code == -32002 and err.data == {"reason": "not_registered"}
    err = await _send_error(alice, "alice", "@hank")
    assert err.code == -32001 and (err.data or {}).get("unknown") == ["@hank"]


async def test_an_attached_connection_follows_its_session(rpc_client_factory: Factory) -> None:
    setup = await _register(rpc_client_factory, "alice")
    await setup.call("agent.register", {"name": "ivan", "role": "r", "module": "m"})
    conn = await rpc_client_factory()
    started = await conn.call("session.start", {"agent_id": "ivan", "caller_agent_id": "ivan"})
    # No caller_agent_id: the connection's session names the caller.
    sent = await conn.call("message.send", {"content": "x", "to": "@alice"})
    assert sent["recipients"] == ["alice"]
    who = await conn.call("agent.whoami")
    assert who["agent_id"] == "ivan" and who["session_id"] == started["session_id"]
