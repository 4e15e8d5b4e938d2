"""Held projection transactions: inline writer batches share one commit (``writer.HOLD_COMMITS``).

A batch's lines are durable before its submitter is answered; its projection
rows may wait in the writer's open transaction.  Whoever reads through the
store (``reader``, ``open_reader``, an exclusive job) sees them; a connection
of its own (another process) sees them once they are committed.
"""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest
import trio
from events_testtypes import Observed, fail_next_apply, note

from thrum_core.errors import ThrumError
from thrum_core.events import writer as writer_mod
from thrum_core.events.log import KernelSync
from thrum_core.events.projection import Projection
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths


@pytest.fixture(autouse=True)
def _hold_until_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch inline, and no commit by time: only what a test does commits."""
    monkeypatch.setattr(writer_mod, "INLINE_MAX_BATCH_S", 60.0)
    monkeypatch.setattr(writer_mod, "HOLD_IDLE_S", 60.0)
    monkeypatch.setattr(writer_mod, "HOLD_MAX_S", 60.0)


def committed_notes(paths: ThrumPaths) -> list[str]:
    """The notes a connection of its own sees: only committed rows."""
    conn = sqlite3.connect(paths.db_path)
    try:
        return notes(conn)
    finally:
        conn.close()


def notes(conn: sqlite3.Connection) -> list[str]:
    """The notes ``conn`` sees, by id."""
    return [r[0] for r in conn.execute("SELECT note_id FROM p_test_notes ORDER BY note_id")]


async def test_batches_wait_in_one_transaction_until_a_reader_needs_them(
    running: EventStore, paths: ThrumPaths
) -> None:
    for i in range(5):
        await running.submit([note(f"n{i}")])
    assert committed_notes(paths) == []  # five answered batches, no commit yet
    assert running.stats()["held_commits"] == 0
    assert notes(running.reader()) == [f"n{i}" for i in range(5)]  # the reader commits them first
    assert committed_notes(paths) == [f"n{i}" for i in range(5)]
    assert running.stats()["held_commits"] == 1


async def test_a_reader_in_another_thread_sees_what_was_answered(
    running: EventStore, paths: ThrumPaths
) -> None:
    await running.submit([note("a")])
    assert committed_notes(paths) == []
    assert await trio.to_thread.run_sync(lambda: notes(running.reader())) == ["a"]
    own = running.open_reader()
    try:
        assert notes(own) == ["a"]
    finally:
        own.close()


async def test_a_reader_of_other_data_than_the_held_types_reads_without_a_commit(
    running: EventStore, paths: ThrumPaths
) -> None:
    await running.submit([note("a")])
    running.reader(fresh_except=frozenset({"test.note"}))
    assert committed_notes(paths) == []
    await running.submit([note("b"), {"type": "test.order"}])
    running.reader(fresh_except=frozenset({"test.note"}))  # a test.order is held too: commit
    assert committed_notes(paths) == ["a", "b"]


async def test_held_batches_are_committed_once_the_writer_is_idle(
    running: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "HOLD_IDLE_S", 0.01)
    await running.submit([note("a")])
    assert committed_notes(paths) == []
    with trio.fail_after(10):
        while not committed_notes(paths):
            await trio.sleep(0.02)
    assert committed_notes(paths) == ["a"]


async def test_a_held_transaction_is_committed_at_its_event_limit(
    running: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "HOLD_MAX_EVENTS", 3)
    for i in range(4):
        await running.submit([note(f"n{i}")])
    assert committed_notes(paths) == ["n0", "n1", "n2"]  # the fourth opened a new one


async def test_an_exclusive_job_and_a_writer_thread_batch_start_after_a_commit(
    running: EventStore, paths: ThrumPaths
) -> None:
    await running.submit([note("a")])
    assert await running.run_exclusive(lambda: committed_notes(paths)) == ["a"]
    await running.submit([note("b")])
    # More events than an inline batch takes: the writer thread runs it, after a commit.
    await running.submit([note(f"t{i:02d}") for i in range(writer_mod.INLINE_MAX_EVENTS + 1)])
    assert "b" in committed_notes(paths)


async def test_stopping_the_writer_commits_what_it_holds(store: EventStore, paths: ThrumPaths) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await store.submit([note("a")])
        assert committed_notes(paths) == []
        await store.stop_writer()
    assert committed_notes(paths) == ["a"]


async def test_an_fsync_failure_keeps_the_held_batches_before_it(
    running: EventStore, paths: ThrumPaths, observed: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rollback undoes the whole held transaction: the earlier, durable batches
    # are projected again from the log, and their observers are not told twice.
    await running.submit([note("kept")])
    await running.submit([note("kept2", author="bob")])

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing)
        m.setattr(KernelSync, "submit", lambda self, fds: [])
        with pytest.raises(ThrumError):
            await running.submit([note("lost")])
    assert not running.degraded
    assert notes(running.reader()) == ["kept", "kept2"]
    assert running.stats()["events"] == 2
    (ev,) = await running.submit([note("after")])
    assert ev.state == "applied" and ev.seq == 3
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(e.obj["note_id"] for e in observed.events) == ["after", "kept", "kept2"]


async def test_a_projection_failure_after_held_batches_loses_and_repeats_nothing(
    running: EventStore, observed: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    await running.submit([note("kept")])
    fail_next_apply(monkeypatch, RuntimeError("the projection refused the batch"))
    (ev,) = await running.submit([note("second")])
    assert ev.state == "applied" and not running.degraded
    assert notes(running.reader()) == ["kept", "second"]
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(e.obj["note_id"] for e in observed.events) == ["kept", "second"]


async def test_a_failed_commit_of_held_batches_projects_them_again_from_the_log(
    running: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    await running.submit([note("a")])
    await running.submit([note("b", author="bob")])
    real = Projection.commit_held

    def failing(self: Projection) -> None:
        self.rollback()  # what commit_held does when COMMIT fails
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Projection, "commit_held", failing)
    # a reader in another thread: the catch-up runs there, under the hold lock
    assert await trio.to_thread.run_sync(lambda: notes(running.reader())) == ["a", "b"]
    monkeypatch.setattr(Projection, "commit_held", real)
    assert not running.degraded and committed_notes(paths) == ["a", "b"]
    (ev,) = await running.submit([note("c")])
    assert ev.state == "applied" and ev.seq == 3
    assert notes(running.reader()) == ["a", "b", "c"]
