"""The writer runs small local batches in the trio thread: same guarantees, still group commit."""

from __future__ import annotations

import json

import pytest
import trio
from events_testtypes import note

from thrum_core.canonical import canonical_line
from thrum_core.events import writer as writer_mod
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths


@pytest.fixture(autouse=True)
def _fast_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch counts as fast: whether one runs inline must not depend on the machine's load."""
    monkeypatch.setattr(writer_mod, "INLINE_MAX_BATCH_S", 3600.0)


def _writer(store: EventStore) -> writer_mod.Writer:
    w = store._writer
    assert w is not None
    w._inline = True
    return w


def _log_ids(paths: ThrumPaths, rel: str) -> list[str]:
    return [json.loads(line)["note_id"] for line in (paths.sync_dir / rel).read_bytes().splitlines()]


async def test_sequential_appends_run_inline_and_are_durable_and_projected(
    running: EventStore, paths: ThrumPaths
) -> None:
    w = _writer(running)
    before_batches, before_inline = w.batches, w.inline_batches
    for i in range(5):
        (ev,) = await running.submit([note(f"n{i}")])
        # Answered only once the line is in the log and the projection has it (read-your-writes).
        assert ev.state == "applied"
        assert _log_ids(paths, "messages/alice.jsonl")[-1] == f"n{i}"
        row = running.reader().execute("SELECT state FROM events WHERE event_id=?", (ev.event_id,)).fetchone()
        assert row is not None and row["state"] == "applied"
    assert w.batches - before_batches == 5
    assert w.inline_batches - before_inline == 5


async def test_concurrent_submitters_share_inline_batches(running: EventStore, paths: ThrumPaths) -> None:
    w = _writer(running)
    before = w.batches

    async def client(k: int) -> None:
        for i in range(20):
            (ev,) = await running.submit([note(f"c{k}-{i}", author=f"a{k}")])
            assert ev.state == "applied"

    async with trio.open_nursery() as nursery:
        for k in range(8):
            nursery.start_soon(client, k)
    assert w.batches - before < 80  # 160 events: about 8 per batch
    (count,) = running.reader().execute("SELECT count(*) FROM p_test_notes").fetchone()
    assert count == 160
    for k in range(8):
        assert _log_ids(paths, f"messages/a{k}.jsonl") == [f"c{k}-{i}" for i in range(20)]


async def test_tombstones_and_verbatim_lines_go_to_the_writer_thread(running: EventStore) -> None:
    w = _writer(running)
    await running.submit([note("n1")])
    inline = w.inline_batches
    await running.submit([{"type": "test.purge", "cutoff": "2020-01-01T00:00:00Z"}])
    line = canonical_line(
        note(
            "peer1",
            event_id="evt_peer1",
            origin_daemon="d_P",
            author="bob",
            timestamp="2030-01-01T00:00:00.000000Z",
        )
    )
    (res,) = await running.submit_lines([line], source="peer")
    assert res.state == "applied"
    assert w.inline_batches == inline


async def test_a_slow_batch_sends_the_next_to_the_writer_thread(
    running: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _writer(running)
    await running.submit([note("n1")])
    assert w._inline
    monkeypatch.setattr(writer_mod, "INLINE_MAX_BATCH_S", -1.0)  # every batch counts as slow
    await running.submit([note("n2")])
    assert not w._inline
    inline = w.inline_batches
    await running.submit([note("n3")])
    assert w.inline_batches == inline
    monkeypatch.setattr(writer_mod, "INLINE_MAX_BATCH_S", 3600.0)  # now every batch counts as fast
    await running.submit([note("n4")])  # a fast batch (in the thread) brings inline back
    assert w._inline
    (ev,) = await running.submit([note("n5")])
    assert ev.state == "applied"
    assert w.inline_batches == inline + 1
