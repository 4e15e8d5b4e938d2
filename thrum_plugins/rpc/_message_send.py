"""``message.send``: parameters, address resolution and the ``message.create`` event (SPEC §9.6).

Resolution order for each address (leading ``@`` stripped): ``everyone`` → an
agent or user id → a group → a role → ``user:<x>``.  Any address that resolves
to nothing rejects the whole call (-32001 ``recipient`` with the ``unknown``
list) before anything is written.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from thrum_core.canonical import structured_text
from thrum_core.errors import InvalidParams, NotFound, PayloadTooLarge
from thrum_core.names import MAX_REFS, MAX_SCOPES, strip_at, validate_ref_value
from thrum_core.rpc.spec import Params
from thrum_plugins.rpc._group_expand import expand_group, live_group, table_exists
from thrum_plugins.rpc._message_params import TypeValue

__all__ = ["Resolved", "SendParams", "body_size", "check_body", "resolve_addresses"]


class SendParams(Params):
    """``message.send`` parameters."""

    content: str
    format: Literal["markdown", "plain", "json"] = "markdown"
    structured: dict[str, Any] | None = None
    to: str | list[str] | None = None
    broadcast: bool = False
    mentions: list[str] | None = None
    scopes: list[TypeValue] | None = Field(default=None, max_length=MAX_SCOPES)
    refs: list[TypeValue] | None = Field(default=None, max_length=MAX_REFS)
    tags: list[str] | None = Field(default=None, max_length=16)
    reply_to: str | None = None
    thread_id: str | None = None
    acting_as: str | None = None
    disclose: bool = False

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        for tag in value or ():
            validate_ref_value(tag)
        return value


def body_size(content: str, structured: str | None) -> int:
    """Bytes counted against ``daemon.max_message_body_bytes``."""
    return len(content.encode("utf-8")) + (len(structured.encode("utf-8")) if structured else 0)


def check_body(content: str, fmt: str, structured: dict[str, Any] | None, limit: int) -> str | None:
    """Validate a body (not blank, JSON parses for ``json``, size); return ``structured`` as text."""
    if not content.strip():
        raise InvalidParams("content", "blank", "content must not be blank")
    if fmt == "json":
        try:
            json.loads(content)
        except ValueError as exc:
            raise InvalidParams(
                "content", "invalid_json", f"format is json but content is not valid JSON: {exc}"
            ) from None
    text = structured_text(structured) if structured is not None else None
    size = body_size(content, text)
    if size > limit:
        raise PayloadTooLarge("content", limit, size)
    return text


@dataclass
class Resolved:
    """The outcome of address resolution."""

    scopes: list[tuple[str, str]] = field(default_factory=list)
    refs: list[tuple[str, str]] = field(default_factory=list)
    recipients: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    audiences: list[dict[str, str]] = field(default_factory=list)
    self_addressed: bool = False

    def add_audience(self, typ: str, value: str) -> None:
        item = {"type": typ, "value": value}
        if item not in self.audiences:
            self.audiences.append(item)

    def add_scope(self, typ: str, value: str) -> None:
        if (typ, value) not in self.scopes:
            self.scopes.append((typ, value))

    def add_ref(self, typ: str, value: str) -> None:
        if (typ, value) not in self.refs:
            self.refs.append((typ, value))


def _live_agent(
    db: sqlite3.Connection, agent_id: str, cache: dict[Any, Any] | None = None
) -> tuple[str, str] | None:
    """``(kind, role)`` of a registered agent; ``cache`` is an :func:`identity_rows` dict."""
    key = ("agent", agent_id)
    if cache is not None and key in cache:
        found: tuple[str, str] | None = cache[key]
        return found
    cur = db.cursor()
    cur.row_factory = None
    row = cur.execute("SELECT kind, role FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
    found = None if row is None else (row[0] or "agent", row[1] or "")
    if cache is not None:
        cache[key] = found
    return found


def _everyone(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT agent_id FROM agents")}


def _role_agents(db: sqlite3.Connection, role: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT agent_id FROM agents WHERE kind='agent' AND role=?", (role,))}


def resolve_addresses(
    db: sqlite3.Connection, addresses: list[str], author: str, cache: dict[Any, Any] | None = None
) -> Resolved:
    """Resolve addresses to scopes, refs and recipients (SPEC §9.6 steps 3 and 4).

    ``cache``: an :func:`~thrum_plugins.rpc._caller.identity_rows` dict for agent lookups.
    """
    try:
        # Optimistic: the agents and groups tables exist (a missing one raises), which saves
        # a schema check per table on every send.
        return _resolve(db, addresses, author, has_agents=True, has_groups=True, cache=cache)
    except sqlite3.OperationalError:
        has_agents, has_groups = table_exists(db, "agents"), table_exists(db, "groups")
        if has_agents and has_groups:
            raise
        return _resolve(db, addresses, author, has_agents=has_agents, has_groups=has_groups)


def _resolve(
    db: sqlite3.Connection,
    addresses: list[str],
    author: str,
    *,
    has_agents: bool,
    has_groups: bool,
    cache: dict[Any, Any] | None = None,
) -> Resolved:
    out = Resolved()
    for raw in addresses:
        name = strip_at(raw.strip())
        if not name:
            out.unknown.append(raw)
            continue
        if name == "everyone":
            out.add_scope("broadcast", "everyone")
            out.add_ref("broadcast", "everyone")
            out.add_audience("broadcast", "everyone")
            if has_agents:
                out.recipients |= _everyone(db) - {author}
            continue
        agent = _live_agent(db, name, cache) if has_agents else None
        if agent is not None:
            out.add_ref("mention", name)
            out.add_audience("user" if agent[0] == "user" else "agent", name)
            out.recipients.add(name)
            if name == author:
                out.self_addressed = True
            continue
        if has_groups and live_group(db, name) is not None:
            out.add_scope("group", name)
            out.add_ref("group", name)
            out.add_audience("group", name)
            out.recipients |= expand_group(db, name) - {author}
            out.warnings.append(f"@{name} resolved to a group")
            continue
        members = _role_agents(db, name) if has_agents else set()
        if members:
            out.add_ref("mention", name)
            out.add_audience("role", name)
            out.recipients |= members - {author}
            out.warnings.append(f"@{name} resolved to role {name} ({len(members)} agents)")
            continue
        if has_agents and not name.startswith("user:") and _live_agent(db, f"user:{name}", cache) is not None:
            out.add_ref("mention", f"user:{name}")
            out.add_audience("user", f"user:{name}")
            out.recipients.add(f"user:{name}")
            continue
        out.unknown.append(f"@{name}")
    if out.unknown:
        listed = ", ".join(out.unknown)
        raise NotFound(
            "recipient",
            message=f"unknown recipient{'s' if len(out.unknown) > 1 else ''}: {listed}"
            " (use @agent, @role, @group or @everyone; see thrum team and thrum group list)",
            field="to",
            unknown=out.unknown,
        )
    if not out.self_addressed:
        out.recipients.discard(author)
    return out


def parent_audience(db: sqlite3.Connection, parent: Any, caller: str) -> list[str]:
    """Addresses that reach the audience of ``parent`` (a ``messages`` row), minus ``caller`` (D11)."""
    addresses: list[str] = []
    if parent["star"]:
        return ["everyone"]
    if parent["agent_id"] != caller:
        addresses.append(parent["agent_id"])
    for typ, value in db.execute(
        "SELECT type, value FROM message_refs WHERE message_id=? AND type IN ('mention', 'group')"
        " ORDER BY type, value",
        (parent["message_id"],),
    ):
        if value == caller:
            continue
        if typ == "group" and not (table_exists(db, "groups") and live_group(db, value) is not None):
            continue
        if typ == "mention" and not _mention_resolves(db, value):
            continue
        addresses.append(value)
    return list(dict.fromkeys(addresses))


def _mention_resolves(db: sqlite3.Connection, value: str) -> bool:
    if not table_exists(db, "agents"):
        return False
    if _live_agent(db, value) is not None:
        return True
    return bool(_role_agents(db, value))
