"""message.* methods against an in-process kernel over its real Unix socket.

Every bad input gets its own error and stores nothing; addressing follows
SPEC §9.6; reads, edits, deletes, receipts and threads behave as specified.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.markers import hookimpl
from thrum_core.testing import AsyncClient

PLUGINS = (
    "rpc.health",
    "transports.unix_socket",
    "rpc.agents",
    "rpc.sessions",
    "rpc.messages",
    "rpc.groups",
    "rpc.subscriptions",
    "notifiers.push",
)
pytestmark = pytest.mark.thrum_builtins(*PLUGINS)

Factory = Callable[[], Awaitable[AsyncClient]]


class Agent:
    """One agent with its own attached connection; calls carry its caller id."""

    def __init__(self, name: str, client: AsyncClient):
        self.name = name
        self.client = client

    async def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        return await self.client.call(method, {"caller_agent_id": self.name, **(params or {})}, **kw)

    async def error(self, method: str, params: dict[str, Any] | None = None) -> ThrumError:
        with pytest.raises(ThrumError) as info:
            await self.call(method, params)
        return info.value

    async def send(self, content: str = "hello", **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("message.send", {"content": content, **params})
        return result

    async def inbox(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("message.list", {"for_agent": self.name, **params})
        return result


async def start_agent(factory: Factory, name: str, role: str = "implementer", module: str = "m") -> Agent:
    client = await factory()
    await client.call("agent.register", {"name": name, "role": role, "module": module})
    await client.call("session.start", {"agent_id": name, "caller_agent_id": name})
    return Agent(name, client)


def stored_events(kernel: Kernel, typ: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(kernel.paths.sync_dir.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return [e for e in out if typ is None or e["type"] == typ]


class Team(dict[str, Agent]):
    """The agents of a test, by name, and their kernel."""

    def __init__(self, kernel: Kernel):
        super().__init__()
        self.kernel = kernel


@pytest.fixture
async def team(thrum_kernel: Kernel, rpc_client_factory: Factory) -> Team:
    agents = Team(thrum_kernel)
    for name, role in (("alice", "coder"), ("bob", "coder"), ("carol", "reviewer"), ("dave", "planner")):
        agents[name] = await start_agent(rpc_client_factory, name, role)
    return agents


# ------------------------------------------------------------------------------------ addressing


async def test_send_to_agent_role_group_and_everyone(team: Team) -> None:
    alice = team["alice"]
    direct = await alice.send("hi", to="@bob")
    assert direct["recipients"] == ["bob"] and direct["resolved_to"] == 1
    assert direct["audiences"] == [{"type": "agent", "value": "bob"}] and direct["warnings"] == []
    assert direct["message_id"].startswith("msg_") and direct["created_at"].endswith("Z")

    role = await alice.send("reviewers", to="@coder")
    assert role["recipients"] == ["bob"]  # alice holds the role too but is the author
    assert role["warnings"] == ["@coder resolved to role coder (2 agents)"]

    await alice.call("group.create", {"name": "ops"})
    await alice.call("group.member.add", {"group": "ops", "member": "carol"})
    await alice.call("group.member.add", {"group": "ops", "member": "planner", "member_type": "role"})
    group = await alice.send("ops", to=["@ops"])
    assert group["recipients"] == ["carol", "dave"]
    assert group["audiences"] == [{"type": "group", "value": "ops"}]
    assert group["warnings"] == ["@ops resolved to a group"]

    everyone = await alice.send("all", broadcast=True)
    assert everyone["recipients"] == ["bob", "carol", "dave"]
    assert everyone["audiences"] == [{"type": "broadcast", "value": "everyone"}]

    mixed = await alice.send("mixed", to="@bob,@carol", mentions=["@dave"])
    assert mixed["recipients"] == ["bob", "carol", "dave"]

    self_sent = await alice.send("note to self", to="@alice")
    assert self_sent["recipients"] == ["alice"]

    events = {e["message_id"]: e for e in stored_events(team.kernel, "message.create")}
    g = events[group["message_id"]]
    assert {"type": "group", "value": "ops"} in g["scopes"] and {"type": "group", "value": "ops"} in g["refs"]
    b = events[everyone["message_id"]]
    assert b["scopes"] == [{"type": "broadcast", "value": "everyone"}]
    assert b["refs"] == [{"type": "broadcast", "value": "everyone"}]
    assert events[direct["message_id"]]["refs"] == [{"type": "mention", "value": "bob"}]


async def test_unknown_recipient_rejects_whole_call_and_stores_nothing(team: Team) -> None:
    alice = team["alice"]
    err = await alice.error("message.send", {"content": "x", "to": ["@bob", "@nobody", "@ghost"]})
    assert err.code == -32001
    assert err.data == {"kind": "recipient", "field": "to", "unknown": ["@nobody", "@ghost"]}
    assert stored_events(team.kernel, "message.create") == []


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"content": "no address"}, -32602, "to"),
        ({"content": "   \n", "to": "@bob"}, -32602, "content"),
        ({"content": "{not json", "format": "json", "to": "@bob"}, -32602, "content"),
        ({"content": "x", "format": "html", "to": "@bob"}, -32602, "format"),
        ({"content": "x", "to": "@bob", "scopes": [{"type": "Bad", "value": "v"}]}, -32602, "scopes.0.type"),
        ({"content": "x", "to": "@bob", "scopes": [{"type": "t", "value": ""}]}, -32602, "scopes.0.value"),
        ({"content": "x", "to": "@bob", "tags": [f"t{i}" for i in range(17)]}, -32602, "tags"),
        (
            {"content": "x", "to": "@bob", "refs": [{"type": "t", "value": str(i)} for i in range(33)]},
            -32602,
            "refs",
        ),
        ({"content": "x", "to": "@bob", "bogus": 1}, -32602, "bogus"),
        ({"content": 5, "to": "@bob"}, -32602, "content"),
        ({"content": "x", "to": "@bob", "broadcast": "yes"}, -32602, "broadcast"),
        ({"content": "x", "reply_to": "msg_missing"}, -32001, None),
        ({"content": "x", "to": "@bob", "thread_id": "thr_missing"}, -32001, None),
        ({"content": "x", "to": "@bob", "acting_as": "bob"}, -32002, None),
    ],
)
async def test_bad_send_input_is_refused_and_nothing_stored(
    team: Team, params: dict[str, Any], code: int, field: str | None
) -> None:
    err = await team["alice"].error("message.send", params)
    assert err.code == code, err
    if field is not None:
        assert err.data is not None and (err.data or {})["field"] == field
    assert stored_events(team.kernel, "message.create") == []


async def test_too_large_body_is_refused(team: Team) -> None:
    limit = team.kernel.config.daemon.max_message_body_bytes
    err = await team["alice"].error("message.send", {"content": "é" * (limit // 2 + 1), "to": "@bob"})
    assert err.code == -32005
    assert err.data == {"field": "content", "limit": limit, "size": (limit // 2 + 1) * 2}
    err = await team["alice"].error(
        "message.send", {"content": "x", "to": "@bob", "structured": {"k": "v" * limit}}
    )
    assert err.code == -32005
    assert stored_events(team.kernel, "message.create") == []


async def test_send_needs_a_session(thrum_kernel: Kernel, rpc_client_factory: Factory) -> None:
    client = await rpc_client_factory()
    await client.call("agent.register", {"name": "nosession", "role": "r", "module": "m"})
    with pytest.raises(ThrumError) as info:
        await client.call(
            "message.send", {"content": "x", "to": "@nosession", "caller_agent_id": "nosession"}
        )
    assert info.value.code == -32002 and info.value.data == {"reason": "no_session"}


async def test_structured_tags_scopes_refs_and_formats(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    sent = await alice.send(
        '{"a": 1}',
        to="@bob",
        format="json",
        structured={"z": 1, "a": [1, 2]},
        tags=["urgent"],
        scopes=[{"type": "task", "value": "T-1"}],
        refs=[{"type": "pr", "value": "42"}, {"type": "mention", "value": "bob"}],
    )
    msg = (await bob.call("message.get", {"message_id": sent["message_id"]}))["message"]
    assert msg["body"] == {"format": "json", "content": '{"a": 1}', "structured": '{"a":[1,2],"z":1}'}
    assert msg["scopes"] == [{"type": "task", "value": "T-1"}]
    assert msg["refs"] == [
        {"type": "mention", "value": "bob"},
        {"type": "pr", "value": "42"},
        {"type": "tag", "value": "urgent"},
    ]
    event = stored_events(team.kernel, "message.create")[0]
    assert event["refs"] == [
        {"type": "mention", "value": "bob"},
        {"type": "tag", "value": "urgent"},
        {"type": "pr", "value": "42"},
    ]  # the daemon's refs first, duplicates dropped
    assert msg["recipients"] == [{"agent_id": "bob", "read_at": None}]
    assert msg["author"] == {
        "agent_id": "alice",
        "session_id": event["session_id"],
        "name": "alice",
        "role": "coder",
        "kind": "agent",
    }
    assert msg["metadata"] == {"deleted_at": None, "delete_reason": None, "edit_count": 0}
    assert msg["is_read"] is False


# Every character class JSON treats specially: quotes, backslashes, control characters, NUL,
# non-ASCII (2, 3 and 4 bytes in UTF-8) and the JavaScript line separators.
AWKWARD = 'say "hi" \\ back\\slash\n\ttab \x00 \x01 \x1f é 日本 😀 \u2028 \u2029 </script>'


async def test_awkward_text_survives_every_read_path(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    structured = {"k": AWKWARD, "n": [1, 2.5, None, True]}
    sent = await alice.send(
        AWKWARD, to="@bob", structured=structured, scopes=[{"type": "task", "value": "T-é"}]
    )
    mid = sent["message_id"]
    got = (await bob.call("message.get", {"message_id": mid}))["message"]
    assert got["body"]["content"] == AWKWARD and json.loads(got["body"]["structured"]) == structured
    assert got["scopes"] == [{"type": "task", "value": "T-é"}]
    listed = (await bob.inbox())["messages"]
    assert [m["message_id"] for m in listed] == [mid] and listed[0]["body"]["content"] == AWKWARD
    outbox = (await alice.call("message.outbox"))["messages"]
    assert outbox[0]["body"]["content"] == AWKWARD
    assert outbox[0]["recipients"] == [{"agent_id": "bob", "read_at": None}]
    waited = await bob.call("message.wait", {"timeout_ms": 200, "after": "-1m"})
    assert waited["messages"][0]["body"]["content"] == AWKWARD
    # the summary is the full message without recipients and metadata, plus the two counts
    summary = {k: v for k, v in got.items() if k not in ("recipients", "metadata")}
    assert listed[0] == {**summary, "recipient_count": 1, "read_count": 0}
    assert list(listed[0]) == [*summary, "recipient_count", "read_count"]  # the SPEC's field order


async def test_list_and_get_in_a_batch_match_single_calls(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    first = (await alice.send("one", to="@bob"))["message_id"]
    await alice.send("two", to="@bob,@carol", tags=["t"])
    params = {"for_agent": "bob", "caller_agent_id": "bob"}
    single_list = await bob.client.call("message.list", params)
    single_get = await bob.client.call("message.get", {"message_id": first, "caller_agent_id": "bob"})
    batch = [
        bob.client.request("message.list", params),
        bob.client.request("message.get", {"message_id": first, "caller_agent_id": "bob"}),
        bob.client.request("message.get", {"message_id": "msg_missing"}),
    ]
    await bob.client.send_value(batch)
    replies = {r["id"]: r for r in await bob.client.read_message(timeout=5)}
    assert replies[batch[0]["id"]]["result"] == single_list
    assert replies[batch[1]["id"]]["result"] == single_get
    assert replies[batch[2]["id"]]["error"]["code"] == -32001


# ------------------------------------------------------------------------------------ inbox


async def test_inbox_visibility_counts_and_pagination(team: Team) -> None:
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    ids = []
    for i in range(7):
        ids.append((await alice.send(f"m{i}", to="@bob"))["message_id"])
    await alice.send("not for bob", to="@carol")
    own = (await bob.send("bob's own", to="@alice"))["message_id"]
    everyone = (await carol.send("all", broadcast=True))["message_id"]

    page1 = await bob.inbox(exclude_self=True, page_size=3)
    assert (page1["total"], page1["unread"], page1["total_pages"], page1["page"]) == (8, 8, 3, 1)
    assert [m["message_id"] for m in page1["messages"]] == [everyone, ids[6], ids[5]]
    assert all(m["is_read"] is False for m in page1["messages"])
    summary = page1["messages"][1]
    assert summary["recipient_count"] == 1 and summary["read_count"] == 0
    assert "recipients" not in summary and "metadata" not in summary
    page3 = await bob.inbox(exclude_self=True, page_size=3, page=3)
    assert [m["message_id"] for m in page3["messages"]] == [ids[1], ids[0]]
    oldest = await bob.inbox(exclude_self=True, page_size=2, sort_order="asc")
    assert [m["message_id"] for m in oldest["messages"]] == [ids[0], ids[1]]

    with_self = await bob.inbox(page_size=100)
    assert with_self["total"] == 9 and own in [m["message_id"] for m in with_self["messages"]]
    assert with_self["unread"] == 8  # own messages are never unread

    everything = await bob.call("message.list", {"page_size": 100})
    assert everything["total"] == 10  # no inbox filter: every message


async def test_list_filters(team: Team) -> None:
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    a = (await alice.send("scoped", to="@bob", scopes=[{"type": "task", "value": "t1"}]))["message_id"]
    b = (await carol.send("ref", to="@bob", refs=[{"type": "pr", "value": "9"}]))["message_id"]
    c = (await alice.send("role mention", to="@coder"))["message_id"]
    d = (await carol.send("thread start", to="@bob"))["message_id"]
    e = (await alice.send("in thread", reply_to=d))["message_id"]

    async def ids(**params: Any) -> list[str]:
        return [m["message_id"] for m in (await bob.inbox(page_size=100, **params))["messages"]]

    assert await ids(scope={"type": "task", "value": "t1"}) == [a]
    assert await ids(ref={"type": "pr", "value": "9"}) == [b]
    assert await ids(author_id="@carol") == [d, b]
    assert set(await ids(mentions=True)) == {a, b, c, d, e}  # mention:bob (e copies d's audience) or :coder
    thread = (await bob.call("message.get", {"message_id": e}))["message"]["thread_id"]
    assert await ids(thread_id=thread) == [e, d]
    created_c = (await bob.call("message.get", {"message_id": c}))["message"]["created_at"]
    assert await ids(created_after=created_c) == [e, d, c]
    assert await ids(created_before=created_c) == [b, a]
    await bob.call("message.markRead", {"message_ids": [a, b]})
    unread = await bob.inbox(unread=True, page_size=100)
    assert [m["message_id"] for m in unread["messages"]] == [e, d, c]
    assert unread["total"] == 3 and unread["unread"] == 3
    err = await bob.error("message.list", {"created_after": "yesterday"})
    assert err.code == -32602 and (err.data or {})["field"] == "created_after"
    err = await bob.error("message.list", {"page_size": 101})
    assert err.code == -32602 and (err.data or {})["field"] == "page_size"
    anon = await _anonymous(team)
    with pytest.raises(ThrumError) as info:
        await anon.call("message.list", {"unread": True})
    assert info.value.code == -32602 and (info.value.data or {})["field"] == "unread"


async def _anonymous(team: Team) -> AsyncClient:
    from thrum_core.testing import open_async_client

    return await open_async_client(team.kernel.status["socket_path"])


async def test_list_mark_read_marks_returned_visible_messages(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    for i in range(3):
        await alice.send(f"m{i}", to="@bob")
    first = await bob.inbox(page_size=2, mark_read=True)
    assert first["unread"] == 3 and [m["is_read"] for m in first["messages"]] == [False, False]
    after = await bob.inbox(page_size=100)
    assert after["unread"] == 1
    assert len(stored_events(team.kernel, "message.receipt")) == 2


async def test_deleted_messages_are_hidden_unless_asked(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    keep = (await alice.send("keep", to="@bob"))["message_id"]
    gone = (await alice.send("gone", to="@bob"))["message_id"]
    deleted = await alice.call("message.delete", {"message_id": gone, "reason": "oops"})
    assert deleted["message_id"] == gone and deleted["deleted_at"].endswith("Z")
    inbox = await bob.inbox()
    assert (
        [m["message_id"] for m in inbox["messages"]] == [keep]
        and inbox["total"] == 1
        and inbox["unread"] == 1
    )
    both = await bob.inbox(include_deleted=True)
    assert [m["message_id"] for m in both["messages"]] == [gone, keep]
    msg = (await bob.call("message.get", {"message_id": gone}))["message"]
    assert msg["deleted"] is True and msg["metadata"]["delete_reason"] == "oops"
    assert msg["body"]["content"] == "gone"  # soft delete keeps the content


# ------------------------------------------------------------------------------------ edit / delete


async def test_edit_keeps_format_counts_versions_and_history(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    mid = (await alice.send("plain text", to="@bob", format="plain"))["message_id"]
    first = await alice.call("message.edit", {"message_id": mid, "content": "edited once"})
    assert first["version"] == 1 and first["updated_at"].endswith("Z")
    second = await alice.call("message.edit", {"message_id": mid, "structured": {"k": 1}})
    assert second["version"] == 2
    msg = (await bob.call("message.get", {"message_id": mid}))["message"]
    assert msg["body"] == {"format": "plain", "content": "edited once", "structured": '{"k":1}'}
    assert msg["metadata"]["edit_count"] == 2 and msg["updated_at"] == second["updated_at"]
    edits = stored_events(team.kernel, "message.edit")
    assert [e["body"]["format"] for e in edits] == ["plain", "plain"]
    assert [e["agent_id"] for e in edits] == ["alice", "alice"]
    db = team.kernel.store.reader()  # type: ignore[union-attr]
    history = [
        tuple(r)
        for r in db.execute("SELECT content FROM message_edits WHERE message_id=? ORDER BY k", (mid,))
    ]
    assert history == [("edited once",), ("edited once",)]


async def test_edit_and_delete_errors(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    mid = (await alice.send("mine", to="@bob"))["message_id"]
    err = await bob.error("message.edit", {"message_id": mid, "content": "hijack"})
    assert err.code == -32002 and err.data == {"reason": "not_author"}
    err = await bob.error("message.delete", {"message_id": mid})
    assert err.code == -32002 and err.data == {"reason": "not_author"}
    err = await alice.error("message.edit", {"message_id": mid})
    assert err.code == -32602
    err = await alice.error("message.edit", {"message_id": mid, "content": " "})
    assert err.code == -32602 and (err.data or {})["field"] == "content"
    err = await alice.error("message.edit", {"message_id": "msg_nope", "content": "x"})
    assert err.code == -32001 and err.data == {"kind": "message", "id": "msg_nope"}
    err = await alice.error("message.delete", {"message_id": mid, "reason": "x" * 501})
    assert err.code == -32602 and (err.data or {})["field"] == "reason"
    await alice.call("message.delete", {"message_id": mid})
    err = await alice.error("message.delete", {"message_id": mid})
    assert err.code == -32003 and err.data == {"reason": "deleted"}
    err = await alice.error("message.edit", {"message_id": mid, "content": "late"})
    assert err.code == -32003 and err.data == {"reason": "deleted"}
    assert len(stored_events(team.kernel, "message.edit")) == 0
    assert len(stored_events(team.kernel, "message.delete")) == 1


# ------------------------------------------------------------------------------------ receipts


async def test_mark_read_once_per_message_only_for_received(team: Team) -> None:
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    to_bob = (await alice.send("for bob", to="@bob"))["message_id"]
    to_carol = (await alice.send("for carol", to="@carol"))["message_id"]
    own = (await bob.send("bob's", to="@alice"))["message_id"]
    both = (await alice.send("both", to="@bob,@carol"))["message_id"]
    await carol.call("message.markRead", {"message_ids": [both]})

    res = await bob.call(
        "message.markRead", {"message_ids": [to_bob, to_carol, own, both, "msg_nope", to_bob]}
    )
    assert res["marked_count"] == 2 and res["skipped_count"] == 2
    assert res["not_found"] == ["msg_nope"]
    assert res["also_read_by"] == {both: ["carol"]}
    assert res["remaining"] == 0
    again = await bob.call("message.markRead", {"message_ids": [to_bob, both]})
    assert again["marked_count"] == 0 and again["skipped_count"] == 2
    receipts = stored_events(team.kernel, "message.receipt")
    assert sorted((r["message_id"], r["agent_id"]) for r in receipts) == sorted(
        [(both, "carol"), (to_bob, "bob"), (both, "bob")]
    )
    for r in receipts:
        assert (
            r["receipt_type"] == "read" and r["read_at"].endswith("Z") and r["session_id"].startswith("ses_")
        )
    msg = (await alice.call("message.get", {"message_id": both}))["message"]
    assert [x["agent_id"] for x in msg["recipients"] if x["read_at"]] == ["bob", "carol"]
    # the summaries count each reader once
    counts = {m["message_id"]: m["read_count"] for m in (await alice.inbox())["messages"]}
    assert (counts[both], counts[to_bob], counts[to_carol], counts[own]) == (2, 1, 0, 0)


async def test_mark_read_all_and_errors(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    for i in range(5):
        await alice.send(f"m{i}", to="@bob")
    await alice.send("everyone", broadcast=True)
    res = await bob.call("message.markRead", {"all": True})
    assert res["marked_count"] == 6 and res["remaining"] == 0
    assert (await bob.inbox())["unread"] == 0
    bad: list[dict[str, Any]] = [
        {},
        {"all": True, "message_ids": ["x"]},
        {"message_ids": []},
        {"message_ids": ["a"], "before": "1d"},
    ]
    for params in bad:
        err = await bob.error("message.markRead", params)
        assert err.code == -32602, params


async def test_get_mark_read(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    mid = (await alice.send("x", to="@bob"))["message_id"]
    got = await bob.call("message.get", {"message_id": mid, "mark_read": True})
    assert got["message"]["message_id"] == mid
    assert (await bob.inbox())["unread"] == 0
    err = await bob.error("message.get", {"message_id": "msg_missing"})
    assert err.code == -32001 and err.data == {"kind": "message", "id": "msg_missing"}


# ------------------------------------------------------------------------------------ replies and threads


async def test_reply_creates_thread_copies_audience_and_parent_joins(team: Team) -> None:
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    parent = await alice.send("question", to="@bob", mentions=["@carol"])
    assert parent["thread_id"] is None
    reply = await bob.send("answer", reply_to=parent["message_id"])
    assert reply["thread_id"].startswith("thr_")
    assert reply["recipients"] == ["alice", "carol"]  # the parent's audience minus the caller
    parent_now = (await alice.call("message.get", {"message_id": parent["message_id"]}))["message"]
    assert parent_now["thread_id"] == reply["thread_id"]  # the parent takes its reply's thread
    reply_msg = (await alice.call("message.get", {"message_id": reply["message_id"]}))["message"]
    assert reply_msg["reply_to"] == parent["message_id"]
    assert {"type": "reply_to", "value": parent["message_id"]} in reply_msg["refs"]
    second = await carol.send("me too", reply_to=reply["message_id"])
    assert second["thread_id"] == reply["thread_id"]
    joined = await carol.send("explicit", to="@alice", thread_id=reply["thread_id"])
    assert joined["thread_id"] == reply["thread_id"]
    thread = await alice.call("message.list", {"thread_id": reply["thread_id"], "sort_order": "asc"})
    assert [m["message_id"] for m in thread["messages"]] == [
        parent["message_id"],
        reply["message_id"],
        second["message_id"],
        joined["message_id"],
    ]
    other = await alice.send("other", to="@bob", reply_to=parent["message_id"])
    assert other["thread_id"] == reply["thread_id"]
    err = await alice.error(
        "message.send", {"content": "x", "reply_to": parent["message_id"], "thread_id": "thr_other"}
    )
    assert err.code == -32602 and (err.data or {})["field"] == "thread_id"


async def test_reply_to_broadcast_is_a_broadcast(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    parent = await alice.send("all hands", broadcast=True)
    reply = await bob.send("ack", reply_to=parent["message_id"])
    assert reply["audiences"] == [{"type": "broadcast", "value": "everyone"}]
    assert reply["recipients"] == ["alice", "carol", "dave"]


# ------------------------------------------------------------------------------------ interceptors


class Veto:
    @hookimpl
    def thrum_intercept_message(self, message: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        content = message["body"]["content"]
        if "secret" in content:
            raise ThrumError("no secrets please", {"reason": "forbidden"}, code=-32002)
        if "shout" in content:
            return {**message, "body": {**message["body"], "content": content.upper()}}
        return None


async def test_interceptor_can_veto_or_rewrite(team: Team, register_plugin: Any) -> None:
    register_plugin(Veto(), "veto")
    alice, bob = team["alice"], team["bob"]
    err = await alice.error("message.send", {"content": "my secret", "to": "@bob"})
    assert err.code == -32002 and err.message == "no secrets please"
    sent = await alice.send("please shout", to="@bob")
    msg = (await bob.call("message.get", {"message_id": sent["message_id"]}))["message"]
    assert msg["body"]["content"] == "PLEASE SHOUT"
    assert len(stored_events(team.kernel, "message.create")) == 1


# ------------------------------------------------------------------------------------ outbox


async def test_outbox_lists_own_messages_with_read_state(team: Team) -> None:
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    a = (await alice.send("to bob", to="@bob"))["message_id"]
    b = (await alice.send("to both", to="@bob,@carol"))["message_id"]
    await carol.send("not alice's", to="@alice")
    await bob.call("message.markRead", {"message_ids": [a, b]})
    out = await alice.call("message.outbox", {})
    assert [m["message_id"] for m in out["messages"]] == [b, a] and out["total"] == 2
    by_id = {m["message_id"]: m for m in out["messages"]}
    assert [(r["agent_id"], r["read_at"] is not None) for r in by_id[b]["recipients"]] == [
        ("bob", True),
        ("carol", False),
    ]
    unread = await alice.call("message.outbox", {"unread": True})
    assert [m["message_id"] for m in unread["messages"]] == [b]
    to_carol = await alice.call("message.outbox", {"to": "@carol"})
    assert [m["message_id"] for m in to_carol["messages"]] == [b]


# ------------------------------------------------------------------------------------ wait


async def second_connection(team: Team, name: str) -> Agent:
    """Another connection acting as ``name`` (one AsyncClient serves one call at a time)."""
    from thrum_core.testing import open_async_client

    return Agent(name, await open_async_client(team.kernel.status["socket_path"]))


async def test_wait_blocks_until_a_matching_message_is_pushed(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    results: list[dict[str, Any]] = []
    bob_waits = await second_connection(team, "bob")

    async def waiter() -> None:
        results.append(await bob_waits.call("message.wait", {"timeout_ms": 10_000}, timeout=15))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.3)
        assert results == []
        await bob.send("my own message does not wake me", to="@alice")
        await alice.send("not for bob", to="@carol")
        await trio.sleep(0.2)
        assert results == []
        started = trio.current_time()
        sent = await alice.send("wake up", to="@bob")
    assert trio.current_time() - started < 2
    assert results[0]["status"] == "received"
    assert [m["message_id"] for m in results[0]["messages"]] == [sent["message_id"]]


async def test_wait_filters_after_and_timeout(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    earlier = (await alice.send("earlier", to="@bob"))["message_id"]
    timed_out = await bob.call("message.wait", {"timeout_ms": 200})
    assert timed_out == {"status": "timeout", "messages": []}
    back = await bob.call("message.wait", {"timeout_ms": 200, "after": "-1m"})
    assert back["status"] == "received" and [m["message_id"] for m in back["messages"]] == [earlier]
    scoped = await alice.send("scoped", to="@carol", scopes=[{"type": "task", "value": "x"}])
    got = await bob.call(
        "message.wait", {"timeout_ms": 200, "after": "-1m", "scope": {"type": "task", "value": "x"}}
    )
    assert [m["message_id"] for m in got["messages"]] == [scoped["message_id"]]
    got = await bob.call("message.wait", {"timeout_ms": 200, "after": "-1m", "all": True, "limit": 1})
    assert [m["message_id"] for m in got["messages"]] == [earlier]
    for params in ({"after": "30s"}, {"timeout_ms": 0}, {"timeout_ms": 3_600_001}, {"limit": 0}):
        err = await bob.error("message.wait", params)
        assert err.code == -32602, params


async def test_wait_mention_filter_and_future_after(team: Team) -> None:
    alice, bob = team["alice"], team["bob"]
    results: list[dict[str, Any]] = []
    bob_waits = await second_connection(team, "bob")

    async def waiter() -> None:
        results.append(
            await bob_waits.call("message.wait", {"timeout_ms": 5000, "mention": "@carol"}, timeout=10)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.3)
        await alice.send("for bob", to="@bob")
        await trio.sleep(0.2)
        assert results == []
        sent = await alice.send("for carol", to="@carol")
    assert [m["message_id"] for m in results[0]["messages"]] == [sent["message_id"]]
    future = await bob.call("message.wait", {"timeout_ms": 300, "after": "+1h", "all": True})
    assert future["status"] == "timeout"
