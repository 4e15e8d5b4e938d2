"""``new_message_columns``: the columns of a new message, from its event alone.

The push notifier announces a message its handler has just written from the
event, without reading the row back (which would commit the writer's held
batches).  For that the event must give exactly what the reducer stored,
for every shape an event can have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from message_tables import open_store

from thrum_plugins.rpc._message_events import new_message_columns

SHAPES: list[dict[str, Any]] = [
    {"body": {"format": "markdown", "content": "plain"}, "recipients": ["bob"]},
    {
        "body": {"format": "plain", "content": "scoped"},
        "scopes": [
            {"type": "task", "value": "t2"},
            {"type": "file", "value": "a.py"},
            {"type": "task", "value": "t2"},  # twice
            {"type": "task", "value": ""},  # not a pair
            {"type": 3, "value": "x"},
            "junk",
        ],
        "refs": [
            {"type": "mention", "value": "carol"},
            {"type": "mention", "value": "bob"},
            {"type": "group", "value": "devs"},
        ],
    },
    {"body": {"format": "json", "content": "", "structured": {"k": [1, 2]}}, "thread_id": "thr_1"},
    {
        "body": {"content": "line\u2028separator \u00e9 \U0001f600"},
        "scopes": [{"type": "t", "value": "\u2029"}],
    },
    {"body": "not an object", "thread_id": ""},
    {"refs": [{"type": "reply_to", "value": "msg_unknown_parent"}], "thread_id": 7},
    {"scopes": "not a list", "refs": None},
]


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_the_event_gives_the_columns_the_reducer_stores(tmp_path: Path, shape: int) -> None:
    obj: dict[str, Any] = {
        "type": "message.create",
        "message_id": f"msg_shape{shape}",
        "agent_id": "alice",
        "session_id": "ses_1",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        **SHAPES[shape],
    }
    store = open_store(tmp_path)
    try:
        # as merged from git: no model check, so the odd shapes get to the reducer too
        (ev,) = store.write_now([obj], source="sync")
        assert ev.state == "applied"
        stored = (
            store.reader()
            .execute(
                "SELECT agent_id, thread_id, body_content, scopes_json, refs_json FROM messages"
                " WHERE message_id=?",
                (obj["message_id"],),
            )
            .fetchone()
        )
    finally:
        store.close()
    assert tuple(stored) == new_message_columns(ev.obj)
