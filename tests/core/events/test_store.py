"""The writer path of the event store: emit, group commit, dedup, pending, failures."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
from pathlib import Path

import pytest
import trio
from events_testtypes import (
    DAEMON,
    FAIL,
    Observed,
    dump_tables,
    edit,
    fail_next_apply,
    make_paths,
    make_registry,
    note,
)

from thrum_core.canonical import canonical_line
from thrum_core.errors import INTERNAL_ERROR, INVALID_PARAMS, ThrumError
from thrum_core.events.log import KernelSync
from thrum_core.events.store import EventStore
from thrum_core.events.types import EventType, EventTypeRegistry
from thrum_core.events.writer import _TsFormatter
from thrum_core.paths import ThrumPaths
from thrum_core.timefmt import format_ts, parse_ts_ns

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def file_lines(paths: ThrumPaths, rel: str) -> list[bytes]:
    p = paths.sync_dir / rel
    return p.read_bytes().splitlines() if p.exists() else []


def row(store: EventStore, event_id: str) -> tuple:
    return tuple(
        store.reader()
        .execute(
            "SELECT type, state, file, origin_daemon, waits_for, line FROM events WHERE event_id=?",
            (event_id,),
        )
        .fetchone()
    )


async def test_emit_writes_a_durable_canonical_line_and_projects_it(
    running: EventStore, paths: ThrumPaths, observed: Observed
) -> None:
    (ev,) = await running.submit([note("n1", author="bob", text="Héllo <b>&\u2028")])
    # envelope filled in
    assert re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", ev.event_id)
    assert TS_RE.match(ev.obj["timestamp"]) and ev.obj["v"] == 1 and ev.obj["origin_daemon"] == DAEMON
    assert ev.ts_ns == parse_ts_ns(ev.obj["timestamp"])
    assert ev.k == f"{ev.ts_ns:020d}|{ev.event_id}"
    assert (ev.state, ev.source, ev.file, ev.seq) == ("applied", "local", "messages/bob.jsonl", 1)
    # the line is on disk, canonical, before the call returned
    assert ev.line + b"\n" == canonical_line(ev.obj)
    assert b"\\u2028" in ev.line and "Héllo <b>&".encode() in ev.line
    assert file_lines(paths, "messages/bob.jsonl") == [ev.line]
    # and projected
    assert row(running, ev.event_id) == (
        "test.note",
        "applied",
        "messages/bob.jsonl",
        DAEMON,
        None,
        ev.line.decode(),
    )
    assert dump_tables(running.reader())["p_test_notes"][0][:3] == ("n1", "bob", "Héllo <b>&\u2028")
    await trio.testing.wait_all_tasks_blocked()
    assert [e.event_id for e in observed.events] == [ev.event_id]


async def test_canonical_line_matches_the_spec_vector(paths: ThrumPaths) -> None:
    reg = EventTypeRegistry()
    reg.bound("m")(EventType("message.create", None))
    store = EventStore(paths, reg, DAEMON)
    store.open()
    event = {
        "type": "message.create",
        "timestamp": "2026-01-01T00:00:30.000000Z",
        "event_id": "evt_01KDVDP79G04HMASW9NF6YY093",
        "v": 1,
        "origin_daemon": "d_01KDVDNA000000000000000000",
        "message_id": "msg_01KDVDP79G04HMASW9NF6YY094",
        "agent_id": "furiosa",
        "session_id": "ses_01KDVDNA000000000000000001",
        "body": {"format": "markdown", "content": "Héllo <b>&\u2028"},
        "recipients": ["maximus"],
        "refs": [{"type": "mention", "value": "maximus"}],
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await store.submit([event])
        await store.stop_writer()
    store.close()
    expected = (
        '{"agent_id":"furiosa","body":{"content":"Héllo <b>&\\u2028","format":"markdown"},'
        '"event_id":"evt_01KDVDP79G04HMASW9NF6YY093","message_id":"msg_01KDVDP79G04HMASW9NF6YY094",'
        '"origin_daemon":"d_01KDVDNA000000000000000000","recipients":["maximus"],'
        '"refs":[{"type":"mention","value":"maximus"}],"session_id":"ses_01KDVDNA000000000000000001",'
        '"timestamp":"2026-01-01T00:00:30.000000Z","type":"message.create","v":1}\n'
    )
    assert (paths.sync_dir / "events.jsonl").read_bytes() == expected.encode()


async def test_concurrent_submissions_share_fsyncs(running: EventStore, paths: ThrumPaths) -> None:
    results: list = []

    async def one(i: int) -> None:
        for j in range(4):
            (ev,) = await running.submit([note(f"n{i}-{j}", author="alice")])
            results.append(ev)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert len(results) == 200
    assert len({e.event_id for e in results}) == 200
    batches = running.stats()["batches"]
    assert batches < 200, batches  # group commit: far fewer fsync rounds than submissions
    # in file order, timestamps strictly increase
    lines = file_lines(paths, "messages/alice.jsonl")
    stamps = [parse_ts_ns(json.loads(line)["timestamp"]) or 0 for line in lines]
    assert len(stamps) == 200 and all(a < b for a, b in itertools.pairwise(stamps))
    assert running.stats()["states"]["applied"] == 200
    assert len(dump_tables(running.reader())["p_test_notes"]) == 200
    seqs = dict(running.reader().execute("SELECT event_id, seq FROM events").fetchall())
    assert {e.event_id: e.seq for e in results} == seqs


async def test_one_invalid_submission_does_not_fail_the_batch(running: EventStore) -> None:
    outcomes: dict[str, object] = {}

    async def good() -> None:
        outcomes["good"] = await running.submit([note("ok")])

    async def bad() -> None:
        try:
            await running.submit(
                [{"type": "test.note", "note_id": "x", "author": "a"}]
            )  # no text: model fails
        except ThrumError as exc:
            outcomes["bad"] = exc

    async def unknown() -> None:
        try:
            await running.submit([{"type": "nobody.registered"}])
        except ThrumError as exc:
            outcomes["unknown"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(good)
        nursery.start_soon(bad)
        nursery.start_soon(unknown)
    bad_exc = outcomes["bad"]
    assert isinstance(bad_exc, ThrumError) and bad_exc.code == INVALID_PARAMS
    assert bad_exc.data and bad_exc.data["field"] == "events[0].text"
    assert isinstance(outcomes["unknown"], ThrumError) and outcomes["unknown"].code == INVALID_PARAMS
    assert outcomes["good"][0].state == "applied"  # type: ignore[index]
    assert running.stats()["events"] == 1


async def test_pending_child_is_applied_when_the_parent_arrives(tmp_path: Path) -> None:
    n1 = note("n1", text="first", event_id="evt_01KDVDNA000000000000000001", timestamp="2026-01-01T00:00:00Z")
    e1 = edit(
        "n1", text="second", event_id="evt_01KDVDNA000000000000000002", timestamp="2026-01-01T00:00:01Z"
    )
    tables: list[dict] = []
    for order in ([n1, e1], [e1, n1]):
        obs = Observed()
        store = EventStore(make_paths(tmp_path / str(len(tables))), make_registry(), DAEMON, on_applied=obs)
        store.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            first = await store.submit([order[0]])
            if order[0] is e1:
                assert first[0].state == "pending"
                assert row(store, e1["event_id"])[1::3] == ("pending", "note:n1")
            await store.submit([order[1]])
            await store.stop_writer()
        assert row(store, e1["event_id"])[1] == "applied"
        assert [(e.event_id, e.state) for e in obs.events if e.event_id == e1["event_id"]][-1][1] == "applied"
        tables.append(dump_tables(store.reader()))
        store.close()
    assert tables[0] == tables[1]
    assert tables[0]["p_test_notes"][0][2] == "second"


async def test_same_event_twice_is_one_row(running: EventStore, paths: ThrumPaths) -> None:
    (ev,) = await running.submit([note("n1")])
    # the same line arrives again from a peer, and as part of a merge into another file
    (dup,) = await running.submit_lines([ev.line], source="peer")
    assert (dup.state, dup.seq) == ("duplicate", None)
    assert file_lines(paths, "messages/alice.jsonl") == [ev.line]

    def merge() -> list:
        with open(paths.sync_dir / "events.jsonl", "ab") as f:
            f.write(ev.line + b"\n")
        return running.catch_up_now()

    assert await running.run_exclusive(merge) == []
    assert await running.catch_up() == []
    assert running.reader().execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert len(dump_tables(running.reader())["p_test_notes"]) == 1


async def test_peer_lines_are_written_verbatim_and_unknown_types_kept(
    running: EventStore, paths: ThrumPaths, observed: Observed
) -> None:
    line = (
        b'{"type": "other.thing",  "timestamp": "2026-01-01T00:00:00Z", '
        b'"event_id": "evt_x", "origin_daemon": "d_P"}'
    )
    child = json.dumps(
        edit("n9", event_id="evt_c", timestamp="2026-01-01T00:00:02Z", origin_daemon="d_P")
    ).encode()
    res = await running.submit_lines([line, child, b"not json"], source="peer")
    assert [r.state for r in res] == ["ignored", "pending", "invalid"]
    assert res[0].file == "events.jsonl" and res[0].origin_daemon == "d_P" and res[0].source == "peer"
    assert file_lines(paths, "events.jsonl") == [line]  # verbatim, spacing kept
    assert file_lines(paths, "messages/alice.jsonl") == [child]
    assert res[2].seq is None  # not written
    await trio.testing.wait_all_tasks_blocked()
    # observers see the stored unknown event, not the pending or invalid ones
    assert [(e.event_id, e.state) for e in observed.events] == [("evt_x", "ignored")]
    (parent,) = await running.submit([note("n9", timestamp="2026-01-01T00:00:01Z")])
    assert parent.state == "applied"
    assert row(running, "evt_c")[1] == "applied"
    await trio.testing.wait_all_tasks_blocked()
    assert [(e.event_id, e.state, e.source) for e in observed.events][-2:] == [
        (parent.event_id, "applied", "local"),
        ("evt_c", "applied", "local"),
    ]


async def test_external_append_is_caught_up_and_observed(
    running: EventStore, paths: ThrumPaths, observed: Observed
) -> None:
    other = note(
        "far", author="carol", event_id="evt_far", timestamp="2026-01-01T00:00:00Z", origin_daemon="d_Q"
    )

    def merge() -> None:
        (paths.sync_dir / "messages").mkdir(exist_ok=True)
        with open(paths.sync_dir / "messages" / "carol.jsonl", "ab") as f:
            f.write(canonical_line(other))

    await running.run_exclusive(merge)
    new = await running.catch_up()
    assert [(e.event_id, e.source, e.state, e.file) for e in new] == [
        ("evt_far", "sync", "applied", "messages/carol.jsonl")
    ]
    await trio.testing.wait_all_tasks_blocked()
    assert observed.events[-1].event_id == "evt_far"
    # appending after the merge still works (the append cache noticed the new file)
    (mine,) = await running.submit([note("mine", author="carol")])
    assert file_lines(paths, "messages/carol.jsonl")[-1] == mine.line


async def test_append_failure_errors_the_batch_and_leaves_sqlite_alone(
    running: EventStore, paths: ThrumPaths
) -> None:
    await running.submit([note("before", author="alice")])
    before_alice = (paths.sync_dir / "messages" / "alice.jsonl").read_bytes()
    before_rows = dump_tables(running.reader())
    (paths.sync_dir / "messages" / "bob.jsonl").mkdir()  # a directory where bob's log should be
    with pytest.raises(ThrumError) as info:
        await running.submit([note("a2", author="alice"), note("b1", author="bob")])
    assert info.value.code == INTERNAL_ERROR
    assert info.value.data == {"durable": False}
    assert (paths.sync_dir / "messages" / "alice.jsonl").read_bytes() == before_alice
    assert dump_tables(running.reader()) == before_rows
    assert running.stats()["events"] == 1
    (paths.sync_dir / "messages" / "bob.jsonl").rmdir()
    res = await running.submit([note("a3", author="alice"), note("b2", author="bob")])
    assert [r.state for r in res] == ["applied", "applied"]


@pytest.mark.parametrize(
    "path",
    [
        "plain",
        pytest.param(
            "kernel",
            marks=pytest.mark.skipif(KernelSync.open() is None, reason="no native AIO fsync here"),
        ),
    ],
)
async def test_fsync_failure_rolls_back_the_files_and_the_projection(
    running: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # An I/O error from fdatasync cannot be provoked on a healthy disk; inject
    # it at the OS call ("plain": native AIO refuses), or replace the result of
    # the real fdatasync that ran in the kernel when it is reaped ("kernel").
    # The batch is projected (uncommitted) while the fsync runs, so this also
    # checks that the projection is rolled back.
    await running.submit([note("before")])
    before = (paths.sync_dir / "messages" / "alice.jsonl").read_bytes()
    tables = dump_tables(running.reader())
    reaped: list[int] = []
    real_sync, real_reap = os.fdatasync, KernelSync.reap
    if path == "plain":

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        monkeypatch.setattr(KernelSync, "submit", lambda self, fds: [])
    else:

        def failing_reap(self: KernelSync, token: int) -> None:
            real_reap(self, token)
            reaped.append(token)
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(KernelSync, "reap", failing_reap)
    with pytest.raises(ThrumError) as info:
        await running.submit([note("lost"), note("lost2", author="bob")])
    monkeypatch.setattr(os, "fdatasync", real_sync)
    monkeypatch.setattr(KernelSync, "reap", real_reap)
    if path == "kernel":
        assert reaped, "the batch's fsync did not go through native AIO"
    assert info.value.code == INTERNAL_ERROR and info.value.data == {"durable": False}
    assert (paths.sync_dir / "messages" / "alice.jsonl").read_bytes() == before
    assert not (paths.sync_dir / "messages" / "bob.jsonl").exists()
    assert dump_tables(running.reader()) == tables
    assert running.stats()["events"] == 1 and not running.degraded
    (ev,) = await running.submit([note("after")])
    assert ev.state == "applied" and ev.seq == 2


async def test_projection_failure_is_degraded_then_recovers(running: EventStore, paths: ThrumPaths) -> None:
    conn = running.projection.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the database is "full"
    with pytest.raises(ThrumError) as info:
        await running.submit([note("n1", text="x" * 100_000)])
    assert info.value.code == INTERNAL_ERROR
    assert info.value.data is not None and info.value.data["durable"] is True
    (eid,) = info.value.data["event_ids"]
    assert running.degraded and running.stats()["degraded"]
    assert len(file_lines(paths, "messages/alice.jsonl")) == 1  # durable
    conn.execute("PRAGMA max_page_count = 1073741823")
    (ev,) = await running.submit([note("n2")])
    assert ev.state == "applied" and not running.degraded
    assert row(running, eid)[1] == "applied"  # the earlier event was caught up
    assert [r[0] for r in dump_tables(running.reader())["p_test_notes"]] == ["n1", "n2"]


async def test_a_thrum_error_while_projecting_is_caught_up_not_reported_lost(
    running: EventStore, paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines of a batch whose projection raised are durable: caught up, the caller answered."""
    fail_next_apply(monkeypatch, ThrumError("the projection refused the batch"))
    (ev,) = await running.submit([note("n1")])
    assert ev.state == "applied" and not running.degraded
    assert len(file_lines(paths, "messages/alice.jsonl")) == 1  # once: nothing to retry
    assert not running.projection.conn.in_transaction
    (ev2,) = await running.submit([note("n2")])
    assert ev2.state == "applied"
    assert [r[0] for r in dump_tables(running.reader())["p_test_notes"]] == ["n1", "n2"]


async def test_a_failing_reducer_marks_its_event_invalid_only(running: EventStore) -> None:
    FAIL["on"] = True  # the note reducer runs a statement on a missing table
    (bad,) = await running.submit([note("n1")])
    FAIL["on"] = False
    (good,) = await running.submit([note("n2")])
    assert (bad.state, good.state) == ("invalid", "applied")
    assert not running.degraded
    assert [r[0] for r in dump_tables(running.reader())["p_test_notes"]] == ["n2"]


async def test_shutdown_drains_the_queue(store: EventStore) -> None:
    done: list = []

    async def one(i: int) -> None:
        done.extend(await store.submit([note(f"n{i}")]))

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        for i in range(20):
            nursery.start_soon(one, i)
        await trio.testing.wait_all_tasks_blocked()
        await store.stop_writer()
    assert len(done) == 20 and all(e.state == "applied" for e in done)
    with pytest.raises(ThrumError):
        await store.submit([note("late")])


async def test_submitter_cancelled_after_queueing_still_completes(running: EventStore) -> None:
    with trio.move_on_after(0):  # already expired when the call starts waiting
        await running.submit([note("n1")])
    await trio.testing.wait_all_tasks_blocked()
    assert running.stats()["states"]["applied"] == 1


def test_write_now_works_offline(store: EventStore, paths: ThrumPaths) -> None:
    lines = [canonical_line(note("imp", event_id="evt_imp", timestamp="2025-01-01T00:00:00Z"))]
    (ev,) = store.write_now(lines=lines, source="import")
    assert ev.state == "applied" and ev.source == "import"
    assert store.write_now(lines=lines)[0].state == "duplicate"
    assert file_lines(paths, "messages/alice.jsonl") == [lines[0].rstrip(b"\n")]


def test_ts_formatter_matches_format_ts() -> None:
    fmt = _TsFormatter()
    for ns in (0, 1767225630_123456_789, 1767225630_999999_999, 1767225631_000000_000, 4102444799_999999_000):
        assert fmt(ns) == format_ts(ns)
