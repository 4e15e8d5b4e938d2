"""Inbox visibility (SPEC §7.4) against a brute-force reference, live and after a rebuild.

Random scenarios of agents (late registrations, role changes, users),
nested groups (with a cycle), and messages addressed every way (recipients,
mentions of ids, roles and usernames, groups, broadcasts, legacy unaddressed
lines), with receipts, edits and deletes, are written to a real event store in
a shuffled order, in several batches (as if merged from other clones).  For
every agent, every page of the inbox fast path, the general query path and
their totals/unread counts must equal what a direct reading of SPEC §7.4 over
the events gives — before and after ``rebuild``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from thrum_core.events.store import EventStore
from thrum_core.events.types import EventTypeRegistry
from thrum_core.ids import ulid_str
from thrum_core.testing import make_test_pm
from thrum_core.timefmt import format_ts, parse_ts_ns
from thrum_plugins.rpc._group_expand import expand_group
from thrum_plugins.rpc._message_queries import ListQuery, list_messages
from thrum_plugins.rpc._message_visibility import process_dirty

PLUGINS = ("rpc.agents", "rpc.messages", "rpc.groups")
BASE = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SEC = 1_000_000_000


@dataclass(frozen=True)
class StorePaths:
    root: Path

    @property
    def sync_dir(self) -> Path:
        return self.root / "sync"

    @property
    def db_path(self) -> Path:
        return self.root / "var" / "messages.db"

    @property
    def torn_dir(self) -> Path:
        return self.root / "var" / "torn"

    @property
    def var_dir(self) -> Path:
        return self.root / "var"


def open_store(tmp: Path) -> EventStore:
    store = EventStore(StorePaths(tmp), EventTypeRegistry.from_plugins(make_test_pm(PLUGINS)), "d_TEST")
    store.open()
    return store


class Scenario:
    """Builds events with explicit, increasing timestamps and ids."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.t = 0
        self.n = 0
        self.events: list[dict[str, Any]] = []

    def emit(self, typ: str, **fields: Any) -> dict[str, Any]:
        self.t += self.rng.randint(1, 5) * SEC
        self.n += 1
        ev = {
            "type": typ,
            "timestamp": format_ts(BASE + self.t),
            "event_id": "evt_" + ulid_str((BASE + self.t) // 1_000_000, self.n),
            "v": 1,
            "origin_daemon": "d_OTHER",
            **fields,
        }
        self.events.append(ev)
        return ev


def build_scenario(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    s = Scenario(rng)
    roles = ["coder", "reviewer", "planner"]
    agents = [f"a{i}" for i in range(6)]
    registered: list[str] = []
    groups: list[str] = []
    messages: list[str] = []

    def register(agent: str, role: str | None = None) -> None:
        s.emit("agent.register", agent_id=agent, kind="agent", role=role or rng.choice(roles), module="m")
        if agent not in registered:
            registered.append(agent)

    for agent in agents[:4]:
        register(agent)
    s.emit("agent.register", agent_id="user:leon", kind="user", name="leon", role="user", module="ui")
    registered.append("user:leon")
    for _ in range(60):
        r = rng.random()
        if r < 0.05 and len(registered) < len(agents) + 1:
            register(next(a for a in agents if a not in registered))
        elif r < 0.09:
            register(rng.choice([a for a in registered if a.startswith("a")]))  # role may change
        elif r < 0.13:
            name = f"g{len(groups)}"
            s.emit("group.create", group_id=f"grp_{name}", name=name, created_by="a0")
            groups.append(name)
        elif r < 0.25 and groups:
            kind = rng.choice(["agent", "role", "group", "role"])
            value = {
                "agent": lambda: rng.choice(registered),
                "role": lambda: rng.choice([*roles, "*"]),
                "group": lambda: rng.choice(groups),
            }[kind]()
            typ = "group.member.add" if rng.random() < 0.8 else "group.member.remove"
            actor = "added_by" if typ.endswith("add") else "removed_by"
            s.emit(
                typ,
                group_id=f"grp_{rng.choice(groups)}",
                member_type=kind,
                member_value=value,
                **{actor: "a0"},
            )
        elif r < 0.27 and groups:
            name = rng.choice(groups)
            s.emit("group.delete", group_id=f"grp_{name}", name=name, deleted_by="a0")
        elif r < 0.75:
            author = rng.choice(registered)
            mid = f"msg_{len(messages):04d}"
            messages.append(mid)
            fields: dict[str, Any] = {
                "message_id": mid,
                "agent_id": author,
                "session_id": "ses_x",
                "body": {"format": "markdown", "content": f"m{mid}"},
            }
            how = rng.choice(["direct", "mention", "role", "user", "group", "broadcast", "legacy", "mixed"])
            refs: list[dict[str, str]] = []
            scopes: list[dict[str, str]] = []
            recipients: list[str] = []
            if how in ("direct", "mixed"):
                recipients = sorted(set(rng.sample(registered, rng.randint(1, 2))))
                refs += [{"type": "mention", "value": a} for a in recipients]
            if how == "mention":
                refs.append({"type": "mention", "value": rng.choice(agents)})
            if how in ("role", "mixed"):
                refs.append({"type": "mention", "value": rng.choice(roles)})
            if how == "user":
                refs.append({"type": "mention", "value": "leon"})
            if how in ("group", "mixed") and groups:
                g = rng.choice(groups)
                refs.append({"type": "group", "value": g})
                scopes.append({"type": "group", "value": g})
            if how == "broadcast":
                refs.append({"type": "broadcast", "value": "everyone"})
                scopes.append({"type": "broadcast", "value": "everyone"})
                # as resolved on a clone that knew agents registered later here
                recipients = sorted(a for a in {*registered, *agents, "ghost"} if a != author)
            if how == "legacy" and rng.random() < 0.5:
                scopes.append({"type": "agent", "value": rng.choice(agents)})
            if refs:
                fields["refs"] = refs
            if scopes:
                fields["scopes"] = scopes
            if recipients:
                fields["recipients"] = recipients
            s.emit("message.create", **fields)
        elif r < 0.92 and messages:
            reader = rng.choice(registered)
            mid = rng.choice(messages)
            s.emit(
                "message.receipt",
                message_id=mid,
                agent_id=reader,
                read_at=format_ts(BASE + s.t),
                receipt_type="read",
            )
        elif r < 0.96 and messages:
            mid = rng.choice(messages)
            s.emit("message.delete", message_id=mid, agent_id="a0")
        elif messages:
            mid = rng.choice(messages)
            s.emit(
                "message.edit",
                message_id=mid,
                agent_id="a0",
                body={"format": "markdown", "content": "edited"},
            )
    return s.events


# --------------------------------------------------------------------------- reference


def reference(db: Any, agent: str) -> tuple[list[str], set[str], set[str]]:
    """(all message ids newest first, visible to agent, unread for agent) read straight from SPEC §7.4."""
    a = db.execute("SELECT kind, role, registered_at FROM agents WHERE agent_id=?", (agent,)).fetchone()
    reg = parse_ts_ns(a[1 + 1]) if a else None
    mention_values = {agent}
    if a and a[0] == "agent":
        mention_values.add(a[1])
    if a and a[0] == "user":
        mention_values.add(agent.removeprefix("user:"))
    groups = {
        name
        for (name,) in db.execute("SELECT DISTINCT name FROM groups WHERE deleted_k IS NULL")
        if agent in expand_group(db, name)
    }
    order = [
        r[0] for r in db.execute("SELECT message_id FROM messages ORDER BY created_ns DESC, message_id DESC")
    ]
    visible: set[str] = set()
    unread: set[str] = set()
    for mid, author, created_ns, addressed, deleted in db.execute(
        "SELECT message_id, agent_id, created_ns, addressed, deleted FROM messages"
    ):
        refs = {
            (t, v) for t, v in db.execute("SELECT type, value FROM message_refs WHERE message_id=?", (mid,))
        }
        scopes = {
            (t, v) for t, v in db.execute("SELECT type, value FROM message_scopes WHERE message_id=?", (mid,))
        }
        recipients = {
            r for (r,) in db.execute("SELECT agent_id FROM message_recipients WHERE message_id=?", (mid,))
        }
        vis = author == agent or agent in recipients
        if not vis and reg is not None and created_ns >= reg:
            both = refs | scopes
            vis = (
                any(t == "mention" and v in mention_values for t, v in refs)
                or any(t == "group" and v in groups for t, v in both)
                or any(t == "broadcast" for t, _ in both)
                or ("group", "everyone") in both
                or not addressed
            )
        if vis:
            visible.add(mid)
            read = db.execute(
                "SELECT 1 FROM message_reads WHERE message_id=? AND agent_id=?", (mid, agent)
            ).fetchone()
            if author != agent and not deleted and read is None:
                unread.add(mid)
    return order, visible, unread


def check_agent(db: Any, agent: str) -> None:
    order, visible, unread = reference(db, agent)
    deleted = {r[0] for r in db.execute("SELECT message_id FROM messages WHERE deleted=1")}
    authored = {r[0] for r in db.execute("SELECT message_id FROM messages WHERE agent_id=?", (agent,))}
    for exclude_self in (False, True):
        for only_unread in (False, True):
            want = [
                m
                for m in order
                if m in visible
                and m not in deleted
                and not (exclude_self and m in authored)
                and (not only_unread or m in unread)
            ]
            want_unread = len([m for m in order if m in unread and not (exclude_self and m in authored)])
            for forced_general in (False, True):
                pages: list[str] = []
                page = 1
                while True:
                    q = ListQuery(
                        for_agent=agent,
                        self_id=agent,
                        exclude_self=exclude_self,
                        unread=only_unread,
                        page_size=7,
                        page=page,
                        created_after_ns=0 if forced_general else None,
                    )
                    assert q.fast is not forced_general
                    res = list_messages(db, q)
                    assert res.total == len(want), (agent, exclude_self, only_unread, forced_general)
                    assert res.unread == want_unread, (agent, exclude_self, only_unread, forced_general)
                    pages.extend(res.ids)
                    if len(res.ids) < 7:
                        break
                    page += 1
                assert pages == want, (agent, exclude_self, only_unread, forced_general)


def refresh(store: EventStore) -> None:
    conn = store.projection.conn
    conn.execute("BEGIN IMMEDIATE")
    process_dirty(conn)
    conn.execute("COMMIT")


def agents_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted({e["agent_id"] for e in events if e["type"] == "agent.register"} | {"ghost"})


@pytest.mark.parametrize("seed", range(12))
def test_inbox_matches_reference_live_and_rebuilt(tmp_path: Path, seed: int) -> None:
    events = build_scenario(seed)
    shuffled = list(events)
    random.Random(seed + 1000).shuffle(shuffled)
    store = open_store(tmp_path)
    try:
        cut = len(shuffled) // 3
        for chunk in (shuffled[:cut], shuffled[cut : 2 * cut], shuffled[2 * cut :]):
            store.write_now(chunk, source="sync")
        refresh(store)
        db = store.reader()
        live = {}
        for agent in agents_of(events):
            check_agent(db, agent)
            live[agent] = list_messages(db, ListQuery(for_agent=agent, self_id=agent, page_size=100))
        store.rebuild()
        refresh(store)
        db = store.reader()
        for agent in agents_of(events):
            check_agent(db, agent)
            assert list_messages(db, ListQuery(for_agent=agent, self_id=agent, page_size=100)) == live[agent]
    finally:
        store.close()


def test_dirty_agents_are_processed_by_the_next_message(tmp_path: Path) -> None:
    """A role change marks the agent dirty; the next message.create recomputes its rows."""
    s = Scenario(random.Random(1))
    s.emit("agent.register", agent_id="a", kind="agent", role="coder", module="m")
    s.emit("agent.register", agent_id="b", kind="agent", role="coder", module="m")
    s.emit(
        "message.create",
        message_id="msg_1",
        agent_id="b",
        session_id="s",
        body={"format": "plain", "content": "for reviewers"},
        refs=[{"type": "mention", "value": "reviewer"}],
    )
    store = open_store(tmp_path)
    try:
        store.write_now(s.events, source="sync")
        db = store.reader()
        assert list_messages(db, ListQuery(for_agent="a", self_id="a")).total == 0
        s.events.clear()
        s.emit("agent.register", agent_id="a", kind="agent", role="reviewer", module="m")
        store.write_now(s.events, source="sync")
        assert [r[0] for r in db.execute("SELECT agent_id FROM vis_dirty")] == ["a"]
        s.events.clear()
        s.emit(
            "message.create",
            message_id="msg_2",
            agent_id="b",
            session_id="s",
            body={"format": "plain", "content": "x"},
            recipients=["b"],
            refs=[{"type": "mention", "value": "b"}],
        )
        store.write_now(s.events, source="sync")
        assert db.execute("SELECT agent_id FROM vis_dirty").fetchall() == []
        res = list_messages(db, ListQuery(for_agent="a", self_id="a"))
        assert (res.ids, res.total, res.unread) == (["msg_1"], 1, 1)
    finally:
        store.close()
