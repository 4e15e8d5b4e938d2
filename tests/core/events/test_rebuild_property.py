"""Property: whatever the live writer projected, a rebuild from the log projects the same."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
from events_testtypes import DAEMON, dump_tables, make_paths, make_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thrum_core.canonical import canonical_line
from thrum_core.events import projection
from thrum_core.events.store import EventStore
from thrum_core.timefmt import format_ts

BASE = 1_767_225_600_000_000_000  # 2026-01-01
AUTHORS = ["alice", "bob", "user:carol"]

ts_offset = st.integers(min_value=0, max_value=10_000).map(lambda s: format_ts(BASE + s * 1_000_000_000))

op = st.one_of(
    st.tuples(st.just("note"), st.integers(0, 7), st.sampled_from(AUTHORS), ts_offset),
    st.tuples(st.just("edit"), st.integers(0, 7), st.text(max_size=5), ts_offset),
    st.tuples(st.just("purge"), ts_offset),
    st.tuples(st.just("replay"), st.integers(0, 1000)),
)


def to_event(o: tuple[Any, ...], created: set[int]) -> dict[str, Any] | None:
    kind = o[0]
    if kind == "note":
        if o[1] in created:  # one create per note id
            return None
        created.add(o[1])
        return {"type": "test.note", "note_id": f"n{o[1]}", "author": o[2], "text": "t", "timestamp": o[3]}
    if kind == "edit":
        return {
            "type": "test.note.edit",
            "note_id": f"n{o[1]}",
            "author": "alice",
            "text": o[2],
            "timestamp": o[3],
        }
    if kind == "purge":
        return {"type": "test.purge", "cutoff": o[1]}
    return None


def snapshot(store: EventStore) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    rows = store.reader().execute("SELECT event_id, state FROM events WHERE state != 'tombstoned'").fetchall()
    return dump_tables(store.reader()), sorted((r[0], r[1]) for r in rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=8), stream=st.booleans())
def test_rebuild_equals_live(batches: list[list[tuple[Any, ...]]], stream: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_paths(Path(tmp))
        store = EventStore(paths, make_registry(), DAEMON)
        store.open()
        created: set[int] = set()
        written: list[bytes] = []

        async def live() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run_writer)
                for batch in batches:
                    events = [e for e in (to_event(o, created) for o in batch) if e is not None]
                    replays = [written[o[1] % len(written)] for o in batch if o[0] == "replay" and written]
                    if events:
                        written.extend(canonical_line(e.obj) for e in await store.submit(events))
                    if replays:  # the same lines again, as a peer would send them
                        await store.submit_lines(replays, source="peer")
                await store.stop_writer()

        trio.run(live)
        live_view = snapshot(store)
        saved = projection.IN_MEMORY_BYTES
        projection.IN_MEMORY_BYTES = 0 if stream else saved
        try:
            store.rebuild()
        finally:
            projection.IN_MEMORY_BYTES = saved
        assert snapshot(store) == live_view
        store.close()
        # and a store opened on the same files, without the database, agrees too
        for suffix in ("", "-wal", "-shm"):
            Path(str(paths.db_path) + suffix).unlink(missing_ok=True)
        again = EventStore(paths, make_registry(), DAEMON)
        again.open()
        assert snapshot(again) == live_view
        again.close()
