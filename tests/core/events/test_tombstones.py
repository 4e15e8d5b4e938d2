"""Tombstones: apply-time skipping, log rewrites, the filter for merges and pulls."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from events_testtypes import DAEMON, dump_tables, edit, make_registry, note

from thrum_core.canonical import canonical_line
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths

OLD = "2020-06-01T00:00:00.000000Z"
NEW = "2030-06-01T00:00:00.000000Z"


def types_in(paths: ThrumPaths, rel: str) -> list[tuple[str, str]]:
    p = paths.sync_dir / rel
    if not p.exists():
        return []
    return [(o["type"], o.get("note_id", "")) for o in map(json.loads, p.read_bytes().splitlines())]


async def test_purge_rewrites_the_log_and_keeps_the_tombstone(running: EventStore, paths: ThrumPaths) -> None:
    await running.submit([note("old1", timestamp=OLD), note("old2", author="bob", timestamp=OLD)])
    await running.submit([edit("old1", timestamp="2020-06-02T00:00:00Z"), note("new1", timestamp=NEW)])
    await running.submit([edit("new1", text="v2", timestamp="2030-06-02T00:00:00Z")])
    events_before = (paths.sync_dir / "events.jsonl").exists()
    (purge,) = await running.submit([{"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z"}])
    assert purge.state == "applied" and purge.file == "events.jsonl" and not events_before
    # the covered lines are gone from the files; bob's file became empty and was removed
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "new1"), ("test.note.edit", "new1")]
    assert not (paths.sync_dir / "messages" / "bob.jsonl").exists()
    assert types_in(paths, "events.jsonl") == [("test.purge", "")]
    # their rows are tombstoned (and their text dropped); the projection lost them
    rows = running.reader().execute("SELECT state, line FROM events ORDER BY seq").fetchall()
    assert [r["state"] for r in rows] == ["tombstoned"] * 3 + ["applied"] * 3
    assert all(r["line"] is None for r in rows[:3])
    tables = dump_tables(running.reader())
    assert [r[0] for r in tables["p_test_notes"]] == ["new1"]
    assert [r[1] for r in tables["p_test_note_edits"]] == ["new1"]
    assert running.stats()["states"]["tombstoned"] == 3
    # a rebuild from the rewritten log answers the same
    await running.run_exclusive(running.rebuild)
    assert dump_tables(running.reader()) == tables


async def test_tombstoned_events_from_peers_are_not_written(running: EventStore, paths: ThrumPaths) -> None:
    await running.submit([{"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z"}])
    stale = canonical_line(note("ghost", event_id="evt_ghost", timestamp=OLD, origin_daemon="d_P"))
    fresh = canonical_line(note("alive", event_id="evt_alive", timestamp=NEW, origin_daemon="d_P"))
    res = await running.submit_lines([stale, fresh], source="peer")
    assert [(r.state, r.seq is None) for r in res] == [("tombstoned", True), ("applied", False)]
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "alive")]
    # the filter handed to merges and pulls agrees
    f = running.tombstone_filter()
    assert f and f.line(stale.rstrip(b"\n")) and not f.line(fresh.rstrip(b"\n"))
    assert not f.line(canonical_line({"type": "test.purge", "cutoff": NEW, "timestamp": OLD}))
    assert not f.line(b"garbage")


async def test_merged_lines_under_a_tombstone_are_skipped_and_rewritten(
    running: EventStore, paths: ThrumPaths
) -> None:
    await running.submit([note("keep", timestamp=NEW)])
    await running.submit([{"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z"}])
    stale = canonical_line(note("ghost", event_id="evt_ghost", timestamp=OLD, origin_daemon="d_P"))

    def merge() -> list:
        with open(paths.sync_dir / "messages" / "alice.jsonl", "ab") as f:
            f.write(stale)
        return running.catch_up_now()

    new = await running.run_exclusive(merge)
    assert new == []  # nothing was applied: the merged line is covered
    state = running.reader().execute("SELECT state FROM events WHERE event_id='evt_ghost'").fetchone()[0]
    assert state == "tombstoned"
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "keep")]
    assert [r[0] for r in dump_tables(running.reader())["p_test_notes"]] == ["keep"]


async def test_purge_arriving_by_merge_rewrites_too(running: EventStore, paths: ThrumPaths) -> None:
    await running.submit([note("old", timestamp=OLD), note("new", timestamp=NEW)])
    purge = canonical_line(
        {"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z", "event_id": "evt_p", "timestamp": NEW}
    )

    def merge() -> list:
        with open(paths.sync_dir / "events.jsonl", "ab") as f:
            f.write(purge)
        return running.catch_up_now()

    await running.run_exclusive(merge)
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "new")]
    assert [r[0] for r in dump_tables(running.reader())["p_test_notes"]] == ["new"]


async def test_interrupted_rewrite_is_finished_at_open(paths: ThrumPaths) -> None:
    store = EventStore(paths, make_registry(), DAEMON)
    store.open()
    store.write_now([note("old", timestamp=OLD, event_id="evt_old")], source="import")
    # a purge is applied but the process dies before the files are rewritten
    proj = store.projection
    proj.rewrite_tombstoned = lambda sync_dir: {}  # type: ignore[method-assign]
    store.write_now(
        [{"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z", "timestamp": NEW}], source="import"
    )
    assert proj.meta("tombstone_rewrite") == "1"
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "old")]
    store.close()
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    assert report.tombstone_rewrites == {"messages/alice.jsonl": 1}
    assert not (paths.sync_dir / "messages" / "alice.jsonl").exists()
    assert store.projection.meta("tombstone_rewrite") is None
    store.close()


async def test_rebuild_with_tombstoned_lines_still_in_the_files(paths: ThrumPaths, tmp_path: Path) -> None:
    # a log copied from somewhere that never rewrote: the purge must still win
    sync = paths.sync_dir
    (sync / "messages").mkdir(parents=True, exist_ok=True)
    (sync / "messages" / "alice.jsonl").write_bytes(
        canonical_line(note("old", event_id="evt_old", timestamp=OLD))
        + canonical_line(edit("old", event_id="evt_e", timestamp=NEW))
        + canonical_line(note("new", event_id="evt_new", timestamp=NEW))
    )
    (sync / "events.jsonl").write_bytes(
        canonical_line(
            {"type": "test.purge", "cutoff": "2025-01-01T00:00:00Z", "event_id": "evt_p", "timestamp": NEW}
        )
    )
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    assert report.rebuilt and report.tombstone_rewrites == {"messages/alice.jsonl": 2}
    assert [r[0] for r in dump_tables(store.reader())["p_test_notes"]] == ["new"]
    assert types_in(paths, "messages/alice.jsonl") == [("test.note", "new")]
    store.close()


async def test_tombstone_filter_without_tombstones_is_falsy(store: EventStore) -> None:
    f = store.tombstone_filter()
    assert not f and not f.line(canonical_line(note("x", timestamp=OLD)))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        assert not store.tombstone_filter()
        await store.stop_writer()
