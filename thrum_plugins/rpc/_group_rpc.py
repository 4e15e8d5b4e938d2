"""Group method handlers (SPEC §9.8) and their parameter models.

``everyone`` is a virtual built-in group: listed first by ``group.list``, never
stored, not deletable, not editable (-32003 ``builtin``).  Group names share
one namespace with agent ids and roles (SPEC §4): ``group.create`` refuses a
name an agent or a role already uses (-32003 ``name_taken``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Literal

import trio
from pydantic import Field

from thrum_core.errors import Conflict, InvalidParams, NotFound
from thrum_core.ids import new_group_id
from thrum_core.names import strip_at, validate_group_name
from thrum_core.rpc.spec import Params
from thrum_plugins.rpc._group_expand import expand_group, group_nests, live_group, table_exists
from thrum_plugins.rpc._message_common import caller_id, reader

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext

__all__ = [
    "CreateParams",
    "MemberParams",
    "MembersParams",
    "NameParams",
    "create",
    "delete",
    "info",
    "list_",
    "member_add",
    "member_remove",
    "members",
]

EVERYONE = "everyone"
EVERYONE_DESCRIPTION = "Every agent and user (built in)"


class CreateParams(Params):
    """``group.create``."""

    name: str
    description: str | None = Field(None, max_length=500)


class NameParams(Params):
    """``group.delete`` / ``group.info``."""

    name: str


class MembersParams(Params):
    """``group.members``."""

    name: str
    expand: bool = False


class MemberParams(Params):
    """``group.member.add`` / ``group.member.remove``."""

    group: str
    member: str
    member_type: Literal["agent", "role", "group"] = "agent"


def _lock(kernel: Kernel) -> trio.Lock:
    state = kernel.plugin_state("groups")
    lock = state.get("lock")
    if lock is None:
        lock = state["lock"] = trio.Lock()
    assert isinstance(lock, trio.Lock)
    return lock


def _group_name(value: str) -> str:
    name = strip_at(value)
    if name == EVERYONE:
        return name
    try:
        return validate_group_name(name)
    except ValueError as exc:
        raise InvalidParams("name", "invalid", str(exc)) from None


def _require_group(db: sqlite3.Connection, name: str) -> Any:
    row = live_group(db, name) if table_exists(db, "groups") else None
    if row is None:
        raise NotFound("group", name, f"no group named {name!r} (see thrum group list)")
    return row


def _everyone_count(db: sqlite3.Connection) -> int:
    if not table_exists(db, "agents"):
        return 0
    return int(db.execute("SELECT count(*) FROM agents").fetchone()[0])


async def create(p: CreateParams, ctx: CallContext) -> dict[str, Any]:
    """``group.create``: a new group, unless the name is taken by a group, an agent or a role."""
    caller = caller_id(ctx)
    name = _group_name(p.name)
    if name == EVERYONE:
        raise InvalidParams("name", "reserved", "everyone is the built-in group of every agent")
    async with _lock(ctx.kernel):
        db = reader(ctx.kernel)
        if live_group(db, name) is not None:
            raise Conflict("exists", f"group {name!r} already exists")
        if (
            table_exists(db, "agents")
            and db.execute(
                "SELECT 1 FROM agents WHERE agent_id=? OR (kind='agent' AND role=?) LIMIT 1", (name, name)
            ).fetchone()
        ):
            raise Conflict(
                "name_taken", f"{name!r} is already an agent id or a role; pick another group name"
            )
        event: dict[str, Any] = {
            "type": "group.create",
            "group_id": new_group_id(),
            "name": name,
            "created_by": caller,
        }
        if p.description:
            event["description"] = p.description
        stored = (await ctx.kernel.emit([event], ctx=ctx))[0]
    return {
        "group_id": event["group_id"],
        "name": name,
        "description": p.description or None,
        "created_at": stored.obj.get("timestamp"),
        "created_by": caller,
    }


async def delete(p: NameParams, ctx: CallContext) -> dict[str, Any]:
    """``group.delete``: the group goes, messages addressed to it stay."""
    caller = caller_id(ctx)
    name = _group_name(p.name)
    if name == EVERYONE:
        raise Conflict("builtin", "everyone is built in and cannot be deleted")
    row = _require_group(reader(ctx.kernel), name)
    event = {"type": "group.delete", "group_id": row[0], "name": name, "deleted_by": caller}
    stored = (await ctx.kernel.emit([event], ctx=ctx))[0]
    return {"name": name, "group_id": row[0], "deleted": True, "deleted_at": stored.obj.get("timestamp")}


def _check_member(db: sqlite3.Connection, group: str, member: str, member_type: str) -> None:
    if member_type == "agent":
        if (
            not table_exists(db, "agents")
            or db.execute("SELECT 1 FROM agents WHERE agent_id=?", (member,)).fetchone() is None
        ):
            raise NotFound("agent", member, f"no agent {member!r} (see thrum team)")
    elif member_type == "role":
        if member != "*" and (
            not table_exists(db, "agents")
            or db.execute("SELECT 1 FROM agents WHERE kind='agent' AND role=? LIMIT 1", (member,)).fetchone()
            is None
        ):
            raise NotFound("agent", member, f"no agent has the role {member!r}")
    else:
        if member == EVERYONE:
            raise Conflict("builtin", "everyone cannot be a member of another group")
        _require_group(db, member)
        if group_nests(db, member, group):
            raise Conflict("cycle", f"adding group {member!r} to {group!r} would make a cycle")


def _is_member(db: sqlite3.Connection, group_id: str, member: str, member_type: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM group_members WHERE group_id=? AND member_type=? AND member_value=? AND present=1",
            (group_id, member_type, member),
        ).fetchone()
        is not None
    )


async def _change(p: MemberParams, ctx: CallContext, add: bool) -> dict[str, Any]:
    caller = caller_id(ctx)
    group = _group_name(p.group)
    member = strip_at(p.member)
    if not member:
        raise InvalidParams("member", "required", "member must not be empty")
    if group == EVERYONE:
        raise Conflict("builtin", "everyone is built in: its members are every agent and user")
    async with _lock(ctx.kernel):
        db = reader(ctx.kernel)
        row = _require_group(db, group)
        present = _is_member(db, row[0], member, p.member_type)
        key = "added" if add else "removed"
        result = {"group": group, "member": member, "member_type": p.member_type, key: False}
        if add == present:
            return result
        if add:
            _check_member(db, group, member, p.member_type)
        actor = "added_by" if add else "removed_by"
        event = {
            "type": "group.member.add" if add else "group.member.remove",
            "group_id": row[0],
            "member_type": p.member_type,
            "member_value": member,
            actor: caller,
        }
        await ctx.kernel.emit([event], ctx=ctx)
    result[key] = True
    return result


async def member_add(p: MemberParams, ctx: CallContext) -> dict[str, Any]:
    """``group.member.add``: an agent, a role (or ``*``) or a nested group (no cycles)."""
    return await _change(p, ctx, True)


async def member_remove(p: MemberParams, ctx: CallContext) -> dict[str, Any]:
    """``group.member.remove``."""
    return await _change(p, ctx, False)


async def list_(params: None, ctx: CallContext) -> dict[str, Any]:
    """``group.list``: ``everyone`` first, then the groups by name."""
    db = reader(ctx.kernel)
    groups: list[dict[str, Any]] = [
        {
            "group_id": None,
            "name": EVERYONE,
            "description": EVERYONE_DESCRIPTION,
            "member_count": _everyone_count(db),
            "created_at": None,
            "created_by": None,
            "builtin": True,
        }
    ]
    if table_exists(db, "groups"):
        for gid, name, description, created_at, created_by, count in db.execute(
            "SELECT g.group_id, g.name, g.description, g.created_at, g.created_by,"
            " (SELECT count(*) FROM group_members m WHERE m.group_id = g.group_id AND m.present = 1)"
            " FROM groups g WHERE g.deleted_k IS NULL AND g.canonical_id IS NULL ORDER BY g.name, g.create_k"
        ):
            groups.append(
                {
                    "group_id": gid,
                    "name": name,
                    "description": description,
                    "member_count": count,
                    "created_at": created_at,
                    "created_by": created_by,
                    "builtin": False,
                }
            )
    return {"groups": groups}


async def info(p: NameParams, ctx: CallContext) -> dict[str, Any]:
    """``group.info``: the group and its direct members."""
    name = _group_name(p.name)
    db = reader(ctx.kernel)
    if name == EVERYONE:
        return {
            "group_id": None,
            "name": EVERYONE,
            "description": EVERYONE_DESCRIPTION,
            "created_at": None,
            "created_by": None,
            "builtin": True,
            "members": [],
        }
    row = _require_group(db, name)
    members = [
        {"member_type": r[0], "member_value": r[1], "added_at": r[2], "added_by": r[3]}
        for r in db.execute(
            "SELECT member_type, member_value, added_at, added_by FROM group_members"
            " WHERE group_id=? AND present=1 ORDER BY member_type, member_value",
            (row[0],),
        )
    ]
    return {
        "group_id": row[0],
        "name": row[1],
        "description": row[2],
        "created_at": row[3],
        "created_by": row[4],
        "builtin": False,
        "members": members,
    }


async def members(p: MembersParams, ctx: CallContext) -> dict[str, Any]:
    """``group.members``: direct members; with ``expand`` also the agents they resolve to."""
    name = _group_name(p.name)
    db = reader(ctx.kernel)
    result: dict[str, Any] = {"name": name, "members": []}
    if name == EVERYONE:
        if p.expand:
            result["expanded"] = (
                sorted(r[0] for r in db.execute("SELECT agent_id FROM agents"))
                if table_exists(db, "agents")
                else []
            )
        return result
    row = _require_group(db, name)
    result["members"] = [
        {"member_type": r[0], "member_value": r[1]}
        for r in db.execute(
            "SELECT member_type, member_value FROM group_members WHERE group_id=? AND present=1"
            " ORDER BY member_type, member_value",
            (row[0],),
        )
    ]
    if p.expand:
        result["expanded"] = sorted(expand_group(db, name))
    return result
