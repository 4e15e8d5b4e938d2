"""subscribe / unsubscribe / subscriptions.list and push notifications (SPEC §9.7, §10)."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from thrum_core.errors import ThrumError
from thrum_core.events import writer as writer_mod
from thrum_core.kernel import Kernel
from thrum_core.testing import AsyncClient

pytestmark = pytest.mark.thrum_builtins(
    "rpc.health",
    "transports.unix_socket",
    "rpc.agents",
    "rpc.sessions",
    "rpc.messages",
    "rpc.groups",
    "rpc.subscriptions",
    "notifiers.push",
)

Factory = Callable[[], Awaitable[AsyncClient]]


class Peer:
    """An agent's connection, attached to its session by ``session.start``."""

    def __init__(self, name: str, client: AsyncClient, session_id: str):
        self.name = name
        self.client = client
        self.session_id = session_id

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.client.call(method, {"caller_agent_id": self.name, **(params or {})})

    async def error(self, method: str, params: dict[str, Any] | None = None) -> ThrumError:
        with pytest.raises(ThrumError) as info:
            await self.call(method, params)
        return info.value

    async def no_notification(self, wait: float = 0.3) -> None:
        with pytest.raises(trio.TooSlowError):
            await self.client.next_notification(timeout=wait)


async def join(factory: Factory, name: str, role: str) -> Peer:
    client = await factory()
    await client.call("agent.register", {"name": name, "role": role, "module": "m"})
    started = await client.call("session.start", {"agent_id": name, "caller_agent_id": name})
    return Peer(name, client, started["session_id"])


@pytest.fixture
async def peers(thrum_kernel: Kernel, rpc_client_factory: Factory) -> dict[str, Peer]:
    return {
        name: await join(rpc_client_factory, name, role)
        for name, role in (("alice", "coder"), ("bob", "coder"), ("carol", "reviewer"))
    }


async def test_subscribe_rules_list_and_unsubscribe(
    peers: dict[str, Peer], rpc_client_factory: Factory
) -> None:
    bob, carol = peers["bob"], peers["carol"]
    first = await bob.call("subscribe", {"scope": {"type": "task", "value": "t1"}})
    assert first["created"] is True and first["session_id"] == bob.session_id
    assert isinstance(first["subscription_id"], int) and first["created_at"].endswith("Z")
    same = await bob.call("subscribe", {"scope": {"type": "task", "value": "t1"}})
    assert same["subscription_id"] == first["subscription_id"] and same["created"] is False
    mention = await bob.call("subscribe", {"mention_role": "@reviewer"})
    everything = await bob.call("subscribe", {"all": True, "ephemeral": True})
    listed = await bob.call("subscriptions.list")
    assert listed["session_id"] == bob.session_id
    assert [
        (s["id"], s["scope_type"], s["scope_value"], s["mention_role"], s["all"], s["ephemeral"])
        for s in listed["subscriptions"]
    ] == [
        (first["subscription_id"], "task", "t1", None, False, False),
        (mention["subscription_id"], None, None, "reviewer", False, False),
        (everything["subscription_id"], None, None, None, True, True),
    ]
    for params in (
        {},
        {"all": True, "mention_role": "x"},
        {"scope": {"type": "t", "value": "v"}, "all": True},
        {"scope": {"type": "BAD", "value": "v"}},
        {"mention_role": "@"},
    ):
        err = await bob.error("subscribe", params)
        assert err.code == -32602, params
    assert (await carol.call("unsubscribe", {"subscription_id": first["subscription_id"]})) == {
        "removed": False
    }
    assert (await bob.call("unsubscribe", {"subscription_id": first["subscription_id"]})) == {"removed": True}
    assert (await bob.call("unsubscribe", {"subscription_id": first["subscription_id"]})) == {
        "removed": False
    }
    assert len((await bob.call("subscriptions.list"))["subscriptions"]) == 2
    lonely = await rpc_client_factory()
    await lonely.call("agent.register", {"name": "nosession", "role": "r", "module": "m"})
    with pytest.raises(ThrumError) as info:
        await lonely.call("subscribe", {"all": True, "caller_agent_id": "nosession"})
    assert info.value.code == -32002 and info.value.data == {"reason": "no_session"}


async def test_notification_message_scope_mention_and_all(peers: dict[str, Peer]) -> None:
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    scope_sub = await bob.call("subscribe", {"scope": {"type": "task", "value": "t1"}})
    await carol.call("subscribe", {"mention_role": "reviewer"})
    sent = await alice.call(
        "message.send",
        {"content": "x" * 150, "to": "@carol", "scopes": [{"type": "task", "value": "t1"}]},
    )
    note = await bob.client.next_notification(timeout=5)
    assert note["method"] == "notification.message"
    params = note["params"]
    assert params == {
        "message_id": sent["message_id"],
        "thread_id": None,
        "kind": "created",
        "author": {"agent_id": "alice", "name": "alice", "role": "coder", "module": "m"},
        "preview": "x" * 100 + "...",
        "scopes": [{"type": "task", "value": "t1"}],
        "matched_subscription": {"subscription_id": scope_sub["subscription_id"], "match_type": "scope"},
        "timestamp": sent["created_at"],
    }
    carol_note = await carol.client.next_notification(timeout=5)
    assert carol_note["params"]["matched_subscription"]["match_type"] == "mention"  # mentions carol's own id

    all_sub = await bob.call("subscribe", {"all": True})
    await alice.call("message.send", {"content": "for the reviewers", "to": "@reviewer"})
    note = await bob.client.next_notification(timeout=5)
    # several subscriptions of a session match: one notification, the lowest id reported
    assert note["params"]["matched_subscription"] == {
        "subscription_id": all_sub["subscription_id"],
        "match_type": "all",
    }
    await bob.no_notification()
    assert (await carol.client.next_notification(timeout=5))["params"]["kind"] == "created"

    await alice.call("subscribe", {"all": True})
    await alice.call("message.send", {"content": "mine", "to": "@bob"})
    await alice.no_notification()  # never for the author's own messages


async def test_edits_are_announced_deleted_messages_never(
    peers: dict[str, Peer], thrum_kernel: Kernel
) -> None:
    alice, bob = peers["alice"], peers["bob"]
    await bob.call("subscribe", {"all": True})
    sent = await alice.call("message.send", {"content": "draft", "to": "@carol"})
    assert (await bob.client.next_notification(timeout=5))["params"]["kind"] == "created"
    await alice.call("message.edit", {"message_id": sent["message_id"], "content": "final"})
    edited = await bob.client.next_notification(timeout=5)
    assert edited["params"]["kind"] == "edited" and edited["params"]["preview"] == "final"
    create = {
        "type": "message.create",
        "message_id": "msg_synced",
        "agent_id": "alice",
        "session_id": "s",
        "body": {"format": "markdown", "content": "gone already"},
        "recipients": ["bob"],
        "timestamp": "2026-01-01T00:00:01.000000Z",
        "event_id": "evt_c",
    }
    delete = {
        "type": "message.delete",
        "message_id": "msg_synced",
        "agent_id": "alice",
        "timestamp": "2026-01-01T00:00:02.000000Z",
        "event_id": "evt_d",
    }
    await thrum_kernel.emit([create, delete], source="sync")
    await bob.no_notification()
    imported = dict(create, message_id="msg_imported", event_id="evt_i")
    await thrum_kernel.emit([imported], source="import")  # not projected live: no push
    await bob.no_notification()
    synced = dict(create, message_id="msg_from_git", event_id="evt_g")
    await thrum_kernel.emit([synced], source="sync")
    assert (await bob.client.next_notification(timeout=5))["params"]["message_id"] == "msg_from_git"


def pending_bytes(peer: Peer) -> bytes:
    """What the daemon has written to ``peer``'s socket and the client has not read yet."""
    with socket.fromfd(peer.client.stream.socket.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        try:
            return raw.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""


async def test_subscriber_is_told_before_the_sender_gets_its_reply_and_only_once(
    peers: dict[str, Peer],
) -> None:
    alice, bob = peers["alice"], peers["bob"]
    await bob.call("subscribe", {"all": True})
    for i in range(5):
        sent = await alice.call("message.send", {"content": f"m{i}", "to": "@carol"})
        # message.send announces its message before it replies (the observer comes later and skips it)
        assert sent["message_id"].encode() in pending_bytes(bob)
        note = await bob.client.next_notification(timeout=5)
        assert note["params"]["message_id"] == sent["message_id"]
    edited = await alice.call("message.edit", {"message_id": sent["message_id"], "content": "m4 again"})
    assert b'"kind":"edited"' in pending_bytes(bob) and edited["version"] == 1
    assert (await bob.client.next_notification(timeout=5))["params"]["preview"] == "m4 again"
    await bob.no_notification()


async def test_announcing_a_new_message_leaves_the_writers_batch_held(
    peers: dict[str, Peer], thrum_kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The announcement is built from the event (new_message_columns), not read back from
    # the projection, which would commit the batch the writer holds (EventStore.reader).
    monkeypatch.setattr(writer_mod, "INLINE_MAX_BATCH_S", 60.0)
    monkeypatch.setattr(writer_mod, "HOLD_IDLE_S", 60.0)
    monkeypatch.setattr(writer_mod, "HOLD_MAX_S", 60.0)
    alice, bob = peers["alice"], peers["bob"]
    await bob.call("subscribe", {"all": True, "ephemeral": True})
    assert thrum_kernel.store is not None
    db_path = thrum_kernel.store.paths.db_path
    sent = await alice.call(
        "message.send", {"content": "held", "to": "@carol", "scopes": [{"type": "t", "value": "v"}]}
    )
    note = await bob.client.next_notification(timeout=5)
    assert note["params"]["message_id"] == sent["message_id"]
    assert note["params"]["preview"] == "held" and note["params"]["scopes"] == [{"type": "t", "value": "v"}]
    own = sqlite3.connect(db_path)
    try:
        row = own.execute("SELECT 1 FROM messages WHERE message_id=?", (sent["message_id"],)).fetchone()
    finally:
        own.close()
    assert row is None  # still held: only the writer's connection sees it
    got = await alice.call("message.get", {"message_id": sent["message_id"]})
    assert got["message"]["message_id"] == sent["message_id"]  # a reader sees it (committed first)


async def test_every_attached_connection_receives_and_unattached_do_not(
    peers: dict[str, Peer], rpc_client_factory: Factory
) -> None:
    alice, bob = peers["alice"], peers["bob"]
    await bob.call("subscribe", {"all": True})
    second = Peer("bob", await rpc_client_factory(), bob.session_id)
    again = await second.call("subscribe", {"all": True})  # attaches this connection to bob's session
    assert again["created"] is False
    bystander = Peer("bob", await rpc_client_factory(), bob.session_id)
    await bystander.call("subscriptions.list")  # caller bob, but this connection is not attached
    sent = await alice.call("message.send", {"content": "hello", "to": "@bob"})
    for peer in (bob, second):
        assert (await peer.client.next_notification(timeout=5))["params"]["message_id"] == sent["message_id"]
    await bystander.no_notification()


async def test_ephemeral_subscription_dies_with_its_connection(
    peers: dict[str, Peer], rpc_client_factory: Factory, thrum_kernel: Kernel
) -> None:
    alice, bob = peers["alice"], peers["bob"]
    temp = Peer("bob", await rpc_client_factory(), bob.session_id)
    sub = await temp.call("subscribe", {"all": True, "ephemeral": True})
    keep = await bob.call("subscribe", {"scope": {"type": "a", "value": "b"}})
    await temp.client.aclose()
    ids: list[int] = []
    with trio.fail_after(5):
        while True:
            ids = [s["id"] for s in (await bob.call("subscriptions.list"))["subscriptions"]]
            rows = [r[0] for r in thrum_kernel.store.reader().execute("SELECT id FROM subscriptions")]  # type: ignore[union-attr]
            if sub["subscription_id"] not in ids and sub["subscription_id"] not in rows:
                break
            await trio.sleep(0.05)
    assert ids == [keep["subscription_id"]]
    await alice.call("message.send", {"content": "x", "to": "@carol"})
    await bob.no_notification()


async def test_session_end_removes_subscriptions(peers: dict[str, Peer], thrum_kernel: Kernel) -> None:
    bob = peers["bob"]
    await bob.call("subscribe", {"all": True})
    await bob.call("session.end")
    assert thrum_kernel.store is not None
    with trio.fail_after(5):
        while (
            thrum_kernel.store.reader()
            .execute("SELECT count(*) FROM subscriptions WHERE session_id=?", (bob.session_id,))
            .fetchone()[0]
        ):
            await trio.sleep(0.05)
    from thrum_plugins.rpc._subscription_store import subscription_index

    assert subscription_index(thrum_kernel).for_session(bob.session_id) == []


async def test_thread_updated_after_create_and_mark_read(peers: dict[str, Peer]) -> None:
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    await bob.call("subscribe", {"scope": {"type": "none", "value": "x"}})
    await carol.call("subscribe", {"scope": {"type": "none", "value": "x"}})
    parent = await alice.call("message.send", {"content": "question", "to": "@bob"})
    reply = await alice.call("message.send", {"content": "more detail", "reply_to": parent["message_id"]})
    note = await bob.client.next_notification(timeout=5)
    assert note["method"] == "notification.thread.updated"
    assert note["params"] == {
        "thread_id": reply["thread_id"],
        "message_count": 2,
        "unread_count": 2,
        "last_activity": reply["created_at"],
        "last_sender": "alice",
        "preview": "more detail",
        "timestamp": reply["created_at"],
    }
    await carol.no_notification()  # carol neither wrote nor can see a message of the thread
    await bob.call("message.markRead", {"message_ids": [parent["message_id"]]})
    note = await bob.client.next_notification(timeout=5)
    assert note["method"] == "notification.thread.updated" and note["params"]["unread_count"] == 1


async def test_full_outbound_queue_closes_the_slow_connection(
    peers: dict[str, Peer], thrum_kernel: Kernel
) -> None:
    """The writer never waits on a client: a connection that does not read is closed at 256 queued pushes."""
    bob = peers["bob"]
    await bob.call("subscribe", {"all": True})
    events = [
        {
            "type": "message.create",
            "message_id": f"msg_flood_{i:04d}",
            "agent_id": "alice",
            "session_id": "s",
            "body": {"format": "plain", "content": "y" * 100},
            "recipients": ["bob"],
            "timestamp": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z",
            "event_id": f"evt_flood_{i:04d}",
        }
        for i in range(1500)
    ]
    with trio.fail_after(30):
        await thrum_kernel.emit(events, source="sync")
        while any(
            getattr(c, "session_id", None) == bob.session_id for c in thrum_kernel.connections.values()
        ):
            await trio.sleep(0.05)
    received = 0
    with trio.fail_after(10):
        try:
            while True:
                await bob.client.next_notification(timeout=5)
                received += 1
        except ThrumError:  # the daemon closed the connection
            pass
    assert 0 < received < 1500
    assert (await peers["alice"].call("health"))["status"] == "ok"
