"""A tiny test plugin for the store crash tests: the ``test.note`` event type and RPC.

Loaded into a real daemon subprocess as a real entry point of a throw-away
distribution (:class:`thrum_core.testing.daemon.DaemonProcess`
``extra_entry_points``), with this directory on ``PYTHONPATH``.

- event ``test.note`` ``{note_id, client, n}``: routed to
  ``messages/<client>.jsonl``; its reducer inserts a row into
  ``p_testnote_notes`` (primary key ``note_id``), so a note applied twice
  would violate the key;
- RPC ``test.note`` ``{note_id, client, n}`` → ``{event_id, seq}`` once the
  event is durable and projected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thrum_core.events.types import ApplyContext, EventType, EventTypeRegistrar, Pending, StoredEvent
from thrum_core.ids import shard_name
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import CallContext, MethodRegistrar, Params

NOTE_TYPE = "test.note"
TABLE = "p_testnote_notes"


class NoteParams(Params):
    """``test.note`` params."""

    note_id: str
    client: str
    n: int


def route(obj: Mapping[str, Any]) -> str:
    """``messages/<client>.jsonl``."""
    return f"messages/{shard_name(str(obj.get('client') or ''))}.jsonl"


def reduce_note(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    """Insert the note (a second insert of the same note would fail the primary key)."""
    ctx.db.execute(
        f"INSERT INTO {TABLE}(note_id, client, n, event_id) VALUES (?,?,?,?)",
        (ev.obj.get("note_id"), ev.obj.get("client"), ev.obj.get("n"), ev.event_id),
    )
    return None


async def note(params: NoteParams, ctx: CallContext) -> dict[str, Any]:
    """Emit one ``test.note`` and answer once it is durable."""
    [stored] = await ctx.kernel.emit(
        [{"type": NOTE_TYPE, "note_id": params.note_id, "client": params.client, "n": params.n}], ctx=ctx
    )
    return {"event_id": stored.event_id, "seq": stored.seq, "state": stored.state}


@hookimpl
def thrum_register_event_types(register: EventTypeRegistrar) -> None:
    register.migrations(
        "testnote",
        [f"CREATE TABLE {TABLE} (note_id TEXT PRIMARY KEY, client TEXT, n INTEGER, event_id TEXT UNIQUE)"],
    )
    register(EventType(NOTE_TYPE, reduce_note, route=route))


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("test.note", note, params=NoteParams, auth="open", transports={"unix"})
