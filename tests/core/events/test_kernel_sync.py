"""The first fsync of a batch through Linux native AIO (``KernelSync``), and its fallback."""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from events_testtypes import note

from thrum_core.events.log import AppendLog, KernelSync, SyncPool
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths

linux_aio = pytest.mark.skipif(KernelSync.open() is None, reason="no native AIO fsync here")


def _write_fd(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"{}\n")
    return fd


@linux_aio
def test_kernel_sync_reaps_each_fsync_by_its_token(tmp_path: Path) -> None:
    ks = KernelSync.open()
    assert ks is not None
    fds = [_write_fd(tmp_path / f"f{i}") for i in range(3)]
    try:
        tokens = ks.submit(fds)
        assert len(set(tokens)) == 3
        for token in reversed(tokens):  # any order: events of the others are kept
            ks.reap(token)
        # submissions that are never reaped (a failed batch) do not confuse later ones
        for _ in range(KernelSync._SLOTS):
            assert len(ks.submit(fds[:2])) == 2  # room is made by reaping the leftovers
        (later,) = ks.submit(fds[2:])
        ks.reap(later)
        ks.spin_s = 0  # sleep in io_getevents at once instead of polling first
        for token in ks.submit(fds):
            ks.reap(token)
    finally:
        ks.close()
        ks.close()  # idempotent, and waits for what was left in flight
        for fd in fds:
            os.close(fd)
    assert ks.submit(fds) == []  # closed: the caller syncs itself


@linux_aio
def test_kernel_sync_refuses_what_it_cannot_sync(tmp_path: Path) -> None:
    ks = KernelSync.open()
    assert ks is not None
    r, w = os.pipe()
    fd = _write_fd(tmp_path / "f")
    try:
        assert ks.submit([10_000, fd]) == []  # EBADF at submission: the plain fdatasync raises it
        assert len(ks.submit([fd, 10_000])) == 1  # the calls before a bad one are started
        assert ks.submit([w]) == []  # a pipe has no fsync (EINVAL): the context is given up
        assert ks.submit([fd]) == []
    finally:
        for f in (r, w, fd):
            os.close(f)
        ks.close()


def test_append_log_start_sync_runs_the_fsyncs_in_the_kernel(tmp_path: Path) -> None:
    log = AppendLog(tmp_path)
    pool = SyncPool(2)
    aio = sys.platform.startswith("linux") and KernelSync.open() is not None
    try:
        for i in range(3):
            pending = log.write({"a.jsonl": b'{"n":1}\n', "messages/b.jsonl": b'{"n":2}\n'})
            jobs, in_kernel = log.start_sync(pending)
            # a fdatasync per file and an fsync per new directory (the first batch)
            assert len(jobs) == 2 + (2 if i == 0 else 0)
            assert in_kernel == (2 if aio else 0)
            assert pool.start(jobs, keep=max(in_kernel, 1)).wait() is None
        assert (tmp_path / "a.jsonl").read_bytes() == b'{"n":1}\n' * 3
        assert (tmp_path / "messages" / "b.jsonl").read_bytes() == b'{"n":2}\n' * 3
    finally:
        pool.close()
        log.close()
    assert log._kernel is None


def test_sync_group_runs_the_kept_jobs_in_the_waiting_thread() -> None:
    pool = SyncPool(2)
    me = threading.get_ident()
    ran: list[tuple[int, int]] = []

    def job(i: int) -> Callable[[], None]:
        return lambda: ran.append((i, threading.get_ident()))

    try:
        group = pool.start([job(0), job(1), job(2)], keep=2)
        assert group.wait() is None
        assert sorted(ran)[:2] == [(0, me), (1, me)] and sorted(ran)[2][0] == 2

        def bad() -> None:
            raise OSError(errno.EIO, "boom")

        err = pool.start([bad, job(3)], keep=5).wait()  # keep is capped at the jobs given
        assert isinstance(err, OSError) and err.errno == errno.EIO and (3, me) in ran
    finally:
        pool.close()


async def test_the_writer_syncs_itself_without_native_aio(
    store: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio

    monkeypatch.setattr(KernelSync, "open", classmethod(lambda cls: None))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        first = await store.submit([note("one"), note("two", author="bob")])
        (second,) = await store.submit([note("three")])
        await store.stop_writer()
    assert [ev.state for ev in [*first, second]] == ["applied"] * 3
    assert len((paths.sync_dir / "messages" / "alice.jsonl").read_bytes().splitlines()) == 2
