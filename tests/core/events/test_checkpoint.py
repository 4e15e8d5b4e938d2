"""WAL checkpoints from the checkpoint thread while the writer runs (``thrum_core.events.checkpoint``)."""

from __future__ import annotations

import sqlite3

import pytest
import trio
from events_testtypes import note

from thrum_core.events import checkpoint as checkpoint_mod
from thrum_core.events.checkpoint import AUTOCHECKPOINT_PAGES, RESTART_PAGES
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths


def _autocheckpoint(store: EventStore) -> int:
    return int(store.projection.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def _wal_frames(paths: ThrumPaths) -> int:
    """Frames in the WAL now (a checkpoint from a connection of our own, which copies what it can)."""
    conn = sqlite3.connect(paths.db_path, isolation_level=None)
    try:
        _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return int(frames)


async def test_the_thread_checkpoints_instead_of_the_commits(running: EventStore, paths: ThrumPaths) -> None:
    assert _autocheckpoint(running) == RESTART_PAGES  # rarely does a commit pay for a checkpoint
    checkpointer = running._checkpointer
    assert checkpointer is not None and checkpointer.running
    for i in range(600):  # several thousand WAL frames: more than SQLite's own threshold
        await running.submit([note(f"n{i}", text="x" * 2000)])
        if i % 100 == 99:
            await trio.sleep(0.12)  # the thread's turn (it checkpoints every 50 ms)
    assert checkpointer.checkpoints > 0
    # The WAL was copied and restarted along the way: it never holds the whole run.
    assert _wal_frames(paths) < AUTOCHECKPOINT_PAGES
    assert running.reader().execute("SELECT COUNT(*) FROM p_test_notes").fetchone()[0] == 600


async def test_a_rebuild_gets_sqlites_checkpoints_back_for_its_duration(running: EventStore) -> None:
    await running.submit([note("n1")])
    during: list[int] = []

    def rebuild() -> None:
        original = running._rebuild_body

        def body(progress: object) -> object:
            during.append(_autocheckpoint(running))
            return original(progress)  # type: ignore[arg-type]

        running._rebuild_body = body  # type: ignore[method-assign,assignment]
        try:
            running.rebuild()
        finally:
            del running._rebuild_body

    await running.run_exclusive(rebuild)
    assert during == [AUTOCHECKPOINT_PAGES]
    assert _autocheckpoint(running) == RESTART_PAGES
    (ev,) = await running.submit([note("n2")])
    assert ev.state == "applied"


async def test_stopping_the_writer_gives_the_connection_its_checkpoints_back(store: EventStore) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        assert _autocheckpoint(store) == RESTART_PAGES
        await store.stop_writer()
    assert _autocheckpoint(store) == AUTOCHECKPOINT_PAGES
    assert store._checkpointer is not None and not store._checkpointer.running


async def test_a_writer_that_never_pauses_still_restarts_the_wal(
    store: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each transaction begins right after the last commit, before the thread can copy
    # that commit's frames: only the commit crossing RESTART_PAGES lets the WAL restart.
    monkeypatch.setattr(checkpoint_mod, "RESTART_PAGES", 32)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        assert _autocheckpoint(store) == 32
        async with trio.open_nursery() as writers:
            for w in range(4):
                writers.start_soon(_write_many, store, w)
        frames = _wal_frames(paths)
        await store.stop_writer()
    # Without the restarts the WAL holds a frame or more per note (3,200 frames); with them a few
    # commits' worth (a restart is put off by a commit when the thread checkpoints at that moment).
    assert frames < 1000, frames


async def _write_many(store: EventStore, w: int) -> None:
    for i in range(400):
        await store.submit([note(f"w{w}-{i}", text="x" * 3000)])
