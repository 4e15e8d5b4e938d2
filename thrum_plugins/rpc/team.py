"""``team.list`` (SPEC §9.4): who is working, on what, with how many unread messages.

Inbox counts: a callable stored as ``kernel.plugin_state("agents")["inbox_counts"]``
taking ``(db, agent_ids)`` and returning ``{agent_id: (total, unread)}`` wins;
otherwise the messaging plugin's inbox totals are used when it is loaded;
without it the counts are 0.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import Params
from thrum_plugins.rpc._agent_queries import team_members, view_for
from thrum_plugins.rpc._agent_state import plugin_state, reader

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

log = logging.getLogger("thrum.team")

InboxCounts = Callable[[sqlite3.Connection, Sequence[str]], Mapping[str, tuple[int, int]]]

__all__ = ["INBOX_COUNTS_KEY", "TeamParams", "inbox_counts", "team_list"]

INBOX_COUNTS_KEY = "inbox_counts"


class TeamParams(Params):
    """``team.list`` params."""

    all: bool = False
    role: str | None = None


async def inbox_counts(kernel: Kernel, agent_ids: Sequence[str]) -> Mapping[str, tuple[int, int]]:
    """``{agent_id: (total, unread)}`` of each agent's inbox (own messages excluded), or ``{}``.

    A provider in ``plugin_state(kernel)["inbox_counts"]`` wins; otherwise,
    when the messaging plugin is loaded, its inbox totals are read directly.
    """
    if not agent_ids:
        return {}
    provider = plugin_state(kernel).get(INBOX_COUNTS_KEY)
    try:
        if provider is not None:
            return dict(provider(reader(kernel), agent_ids))
        if kernel.methods.get("message.list") is None:
            return {}
        try:
            from thrum_plugins.rpc._message_common import ensure_fresh
            from thrum_plugins.rpc._message_queries import inbox_totals
            from thrum_plugins.rpc._message_visibility import agent_info
        except ImportError:
            return {}
        await ensure_fresh(kernel, agent_ids)
        db = reader(kernel)
        return {a: inbox_totals(db, a, agent_info(db, a), exclude_self=True) for a in agent_ids}
    except Exception:
        log.exception("inbox counts failed")
        return {}


async def members(
    kernel: Kernel, *, include_offline: bool = False, role: str | None = None
) -> list[dict[str, Any]]:
    """TeamMembers of ``kernel``'s projection (also used by ``context.prime``)."""
    found = team_members(reader(kernel), view_for(kernel), include_offline=include_offline, role=role)
    counts = await inbox_counts(kernel, [m["agent_id"] for m in found])
    for member in found:
        total, unread = counts.get(member["agent_id"], (0, 0))
        member["inbox_total"], member["inbox_unread"] = int(total), int(unread)
    return found


async def team_list(params: TeamParams, ctx: CallContext) -> dict[str, Any]:
    """Active members newest session first, then (``all``) offline members most recently seen first."""
    role = params.role.removeprefix("@") if params.role else None
    return {"members": await members(ctx.kernel, include_offline=params.all, role=role)}


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("team.list", team_list, params=TeamParams, auth="open", transports={"unix", "ws"})
