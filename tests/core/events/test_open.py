"""Opening the store: torn tails, damaged or missing databases, migrations, catch-up."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import trio
from events_testtypes import DAEMON, dump_tables, edit, make_registry, note

from thrum_core.canonical import canonical_line
from thrum_core.events.projection import OWN_CLOCK_META, NewerDatabaseError
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths


async def fill(paths: ThrumPaths, events: list[dict], **kw) -> dict:
    """Write ``events`` through a running writer; return the projection tables."""
    store = EventStore(paths, make_registry(**kw), DAEMON)
    store.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        for ev in events:
            await store.submit([ev])
        await store.stop_writer()
    tables = dump_tables(store.reader())
    store.close()
    return tables


def reopen(paths: ThrumPaths, **kw) -> EventStore:
    store = EventStore(paths, make_registry(**kw), DAEMON)
    store.open()
    return store


def remove_db(paths: ThrumPaths) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(paths.db_path) + suffix).unlink(missing_ok=True)


EVENTS = [note("n1"), note("n2", author="bob"), edit("n1", text="v2"), note("n3")]


async def test_reopen_catches_up_nothing_new(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    store = reopen(paths)
    report = store.open_report
    assert report is not None and not report.rebuilt and report.new == 0
    assert dump_tables(store.reader()) == tables
    store.close()


async def test_deleted_database_is_rebuilt(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    epoch = reopen_epoch(paths)
    remove_db(paths)
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.created and report.rebuilt and report.new == 4
    assert dump_tables(store.reader()) == tables
    assert store.epoch != epoch and len(store.epoch or "") == 32
    store.close()


def reopen_epoch(paths: ThrumPaths) -> str | None:
    store = reopen(paths)
    epoch = store.epoch
    store.close()
    return epoch


async def test_corrupt_database_is_moved_aside_and_rebuilt(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    remove_db(paths)
    paths.db_path.write_bytes(b"this is not a database" * 500)
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.rebuilt and report.corrupt_moved_to
    moved = Path(report.corrupt_moved_to)
    assert moved.name.startswith("messages.db.corrupt-") and moved.read_bytes().startswith(b"this is not")
    assert dump_tables(store.reader()) == tables
    store.close()


async def test_truncated_wal_is_recovered_from_the_log(paths: ThrumPaths, tmp_path: Path) -> None:
    tables = await fill(paths, EVENTS[:1])
    store = reopen(paths)
    store.projection.conn.execute("PRAGMA wal_autocheckpoint=0")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        for ev in EVENTS[1:]:
            await store.submit([ev])
        # "crash": copy the database and its WAL while the writer has them open
        snap = tmp_path / "snap"
        snap.mkdir()
        for suffix in ("", "-wal"):
            shutil.copy(str(paths.db_path) + suffix, snap / f"db{suffix}")
        await store.stop_writer()
    tables = dump_tables(store.reader())
    store.close()
    wal = snap / "db-wal"
    assert wal.stat().st_size > 4096
    remove_db(paths)
    shutil.copy(snap / "db", paths.db_path)
    data = wal.read_bytes()
    Path(str(paths.db_path) + "-wal").write_bytes(data[: len(data) // 2 + 100])  # torn mid-frame
    store = reopen(paths)
    report = store.open_report
    assert report is not None and not report.rebuilt and report.new > 0
    assert dump_tables(store.reader()) == tables
    assert store.stats()["events"] == 4
    store.close()


async def test_torn_last_line_is_moved_to_var_torn(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    log = paths.sync_dir / "messages" / "alice.jsonl"
    good = log.read_bytes()
    with open(log, "ab") as f:
        f.write(b'{"type":"test.note","note_id":"half')
    store = reopen(paths)
    report = store.open_report
    assert report is not None and [(t.file, t.action) for t in report.torn] == [
        ("messages/alice.jsonl", "moved")
    ]
    assert log.read_bytes() == good
    (saved,) = list(paths.torn_dir.iterdir())
    assert saved.name.startswith("messages__alice.jsonl.") and saved.name.endswith(".partial")
    assert saved.read_bytes() == b'{"type":"test.note","note_id":"half'
    assert dump_tables(store.reader()) == tables
    store.close()


async def test_complete_last_line_without_newline_is_kept(paths: ThrumPaths) -> None:
    await fill(paths, EVENTS)
    log = paths.sync_dir / "messages" / "alice.jsonl"
    extra = canonical_line(note("n4", event_id="evt_n4", timestamp="2026-01-02T00:00:00Z")).rstrip(b"\n")
    with open(log, "ab") as f:
        f.write(extra)
    store = reopen(paths)
    report = store.open_report
    assert report is not None and [t.action for t in report.torn] == ["newline"] and report.new == 1
    assert log.read_bytes().endswith(extra + b"\n")
    assert "n4" in [r[0] for r in dump_tables(store.reader())["p_test_notes"]]
    assert not paths.torn_dir.exists()
    store.close()


@pytest.mark.parametrize("path", ["catch-up", "rebuild"])
async def test_corrupt_middle_line_is_indexed_invalid(paths: ThrumPaths, path: str) -> None:
    await fill(paths, EVENTS)
    log = paths.sync_dir / "messages" / "alice.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    extra = canonical_line(note("n5", event_id="evt_n5", timestamp="2026-01-03T00:00:00Z"))
    bad = [
        b"{not json at all\n",
        b'{"type":"test.note","timestamp":"yesterday"}\n',
        b'["an","array"]\n',
        # no event_id, and a number that overflows to infinity: no canonical form to hash
        b'{"note_id":"n9","timestamp":"2026-01-02T12:00:00Z","type":"test.note","weight":1e400}\n',
    ]
    if path == "rebuild":
        log.write_bytes(lines[0] + b"".join(bad) + b"".join(lines[1:]) + extra)
        remove_db(paths)
    else:
        with open(log, "ab") as f:
            f.write(b"".join(bad) + extra)
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.invalid == len(bad)
    assert store.stats()["states"]["invalid"] == len(bad)
    assert sorted(r[0] for r in dump_tables(store.reader())["p_test_notes"]) == ["n1", "n2", "n3", "n5"]
    invalid = store.reader().execute("SELECT event_id, line FROM events WHERE state='invalid'").fetchall()
    assert sorted(r["line"] for r in invalid) == sorted(b.rstrip(b"\n").decode() for b in bad)
    assert log.read_bytes().count(b"{not json at all") == 1  # kept where it was
    store.close()


async def test_five_megabyte_line_round_trips(paths: ThrumPaths) -> None:
    text = "x" * (5 * 1024 * 1024) + "é"
    tables = await fill(paths, [note("big", text=text), note("small")])
    assert tables["p_test_notes"][0][2] == text
    remove_db(paths)
    store = reopen(paths)
    assert dump_tables(store.reader()) == tables
    store.close()


async def test_line_of_16_mib_is_kept_but_invalid(paths: ThrumPaths) -> None:
    await fill(paths, [note("n1")])
    huge = canonical_line(
        note("huge", text="y" * (16 * 1024 * 1024), event_id="evt_h", timestamp="2026-01-01T00:00:00Z")
    )
    with open(paths.sync_dir / "messages" / "alice.jsonl", "ab") as f:
        f.write(huge)
    store = reopen(paths)
    assert store.stats()["states"]["invalid"] == 1
    assert [r[0] for r in dump_tables(store.reader())["p_test_notes"]] == ["n1"]
    store.close()


async def test_go_database_is_reported_and_moved_aside(paths: ThrumPaths) -> None:
    await fill(paths, EVENTS)
    remove_db(paths)
    go = sqlite3.connect(paths.db_path)
    go.executescript(
        "CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (13), (14);"
        "CREATE TABLE message_deliveries (message_id TEXT, agent_id TEXT, read_at TEXT);"
    )
    go.close()
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.legacy_db is not None and report.legacy_db["version"] == 14
    moved = Path(report.legacy_db["moved_to"])
    assert moved.name == "messages.db.go-v14.bak"
    assert sqlite3.connect(moved).execute("SELECT MAX(version) FROM schema_version").fetchone() == (14,)
    assert report.rebuilt and store.stats()["events"] == 4
    store.close()


async def test_go_database_handler_is_called(paths: ThrumPaths) -> None:
    go = sqlite3.connect(paths.db_path)
    go.executescript("CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (7);")
    go.close()
    seen = []

    def handler(path: Path, version: int) -> None:
        seen.append(version)
        path.rename(path.with_name("imported.bak"))

    store = EventStore(paths, make_registry(), DAEMON, on_legacy_db=handler)
    report = store.open()
    assert seen == [7] and (paths.var_dir / "imported.bak").exists()
    assert report.legacy_db == {"version": 7, "path": str(paths.db_path)}
    store.close()


async def test_newer_database_is_refused(paths: ThrumPaths) -> None:
    await fill(paths, EVENTS[:1])
    conn = sqlite3.connect(paths.db_path)
    conn.execute("UPDATE meta SET value='2' WHERE key='thrum_schema'")
    conn.commit()
    conn.close()
    with pytest.raises(NewerDatabaseError, match="newer thrum"):
        EventStore(paths, make_registry(), DAEMON).open()


async def test_local_tables_survive_rebuild_and_epoch_changes(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    store = reopen(paths)
    store.projection.conn.execute("INSERT INTO p_test_local VALUES ('sub', 'kept')")
    epoch = store.epoch
    progress: list[tuple[int, int]] = []
    report = store.rebuild(lambda done, total: progress.append((done, total)))
    assert report.events == 4 and report.epoch != epoch
    assert progress and progress[-1][0] == progress[-1][1] > 0
    assert store.reader().execute("SELECT value FROM p_test_local").fetchall()[0][0] == "kept"
    assert dump_tables(store.reader()) == tables
    assert store.projection.meta("local_schema:testplug") == "1"
    assert store.projection.meta("schema:testplug") == "1"
    store.close()


async def test_changed_projection_migrations_rebuild(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    store = reopen(paths)
    store.projection.conn.execute("INSERT INTO p_test_local VALUES ('sub', 'kept')")
    store.close()
    store = reopen(paths, extra_steps=["CREATE TABLE p_test_extra (x INTEGER)"])
    report = store.open_report
    assert report is not None and report.rebuild_reason == "projection migrations changed"
    assert store.reader().execute("SELECT COUNT(*) FROM p_test_extra").fetchone()[0] == 0
    assert store.reader().execute("SELECT COUNT(*) FROM p_test_local").fetchone()[0] == 1
    assert dump_tables(store.reader()) == tables
    store.close()
    # going back drops the extra table again
    store = reopen(paths)
    assert (
        store.reader().execute("SELECT name FROM sqlite_master WHERE name='p_test_extra'").fetchone() is None
    )
    store.close()


async def test_newly_registered_type_applies_its_ignored_events(paths: ThrumPaths) -> None:
    await fill(paths, [note("n1")], with_edit=False)
    store = EventStore(paths, make_registry(with_edit=False), DAEMON)
    store.open()
    line = canonical_line(edit("n1", text="late", event_id="evt_e", timestamp="2027-01-01T00:00:00Z"))
    (ev,) = store.write_now(lines=[line], source="sync")
    assert ev.state == "ignored"
    store.close()
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.reapplied == 1
    assert dump_tables(store.reader())["p_test_notes"][0][2] == "late"
    assert store.stats()["states"] == {
        "applied": 2,
        "pending": 0,
        "ignored": 0,
        "invalid": 0,
        "tombstoned": 0,
    }
    assert json.loads(store.projection.meta("event_types") or "[]") == make_registry().all_names()
    store.close()


async def test_clock_continues_after_the_newest_own_event(paths: ThrumPaths) -> None:
    future = "2200-01-01T00:00:00.000000Z"
    await fill(paths, [note("n1", timestamp=future)])
    store = reopen(paths)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        (ev,) = await store.submit([note("n2")])
        await store.stop_writer()
    assert ev.obj["timestamp"] == "2200-01-01T00:00:00.000001Z"
    store.close()


FUTURE = "2200-01-01T00:00:00.000000Z"
FUTURE_NS = 7258118400000000000


def own_clock_mark(store: EventStore) -> str | None:
    return store.projection.meta(OWN_CLOCK_META)


async def test_rebuild_marks_the_newest_own_event_for_the_clock(paths: ThrumPaths) -> None:
    await fill(paths, [note("n1"), note("n2", timestamp=FUTURE), note("n3")])
    store = reopen(paths)
    store.rebuild()
    # The rebuild saw every line, so its mark covers every row: the next start scans none.
    assert own_clock_mark(store) == f"{DAEMON}:3:{FUTURE_NS}"
    store.close()
    remove_db(paths)
    store = reopen(paths)
    assert store.open_report is not None and store.open_report.rebuilt
    assert own_clock_mark(store) == f"{DAEMON}:3:{FUTURE_NS}" and store.clock.last_ns == FUTURE_NS
    store.close()


async def test_start_scans_only_the_rows_after_the_own_clock_mark(paths: ThrumPaths) -> None:
    await fill(paths, [note("n1", timestamp=FUTURE)])
    foreign = note("n2", event_id="evt_n2", origin_daemon="d_other", timestamp="2026-01-02T00:00:00Z")
    with (paths.sync_dir / "messages" / "alice.jsonl").open("ab") as f:
        f.write(canonical_line(foreign))
    store = reopen(paths)  # catches up row 2, written by another daemon
    assert own_clock_mark(store) == f"{DAEMON}:2:{FUTURE_NS}" and store.clock.last_ns == FUTURE_NS
    # A mark that says "nothing of ours up to row 1": only row 2 is read, and it is not ours.
    store.projection.begin()
    store.projection.set_meta(OWN_CLOCK_META, f"{DAEMON}:1:0")
    store.projection.commit()
    store.close()
    store = reopen(paths)
    assert store.clock.last_ns < FUTURE_NS and own_clock_mark(store) == f"{DAEMON}:2:0"
    # A mark beyond the last row belongs to other rows, and another daemon's mark says
    # nothing of ours: in both cases every row is read.
    for other in (f"{DAEMON}:9:0", "d_someone_else:2:0"):
        store.projection.begin()
        store.projection.set_meta(OWN_CLOCK_META, other)
        store.projection.commit()
        store.close()
        store = reopen(paths)
        assert store.clock.last_ns == FUTURE_NS and own_clock_mark(store) == f"{DAEMON}:2:{FUTURE_NS}"
    store.close()


async def test_instants_beyond_sqlite_integers_are_stored_and_ordered(paths: ThrumPaths) -> None:
    far = [
        {"type": "test.order", "timestamp": ts, "event_id": f"evt_{i}"}
        for i, ts in enumerate(["3000-01-01T00:00:00Z", "2100-01-01T00:00:00Z", "4000-01-01T00:00:00Z"])
    ]
    await fill(paths, far)
    store = reopen(paths)
    rows = store.reader().execute("SELECT event_id, ts_ns, state FROM events ORDER BY ts_ns").fetchall()
    assert [tuple(r) for r in rows] == [
        ("evt_1", 4102444800000000000, "applied"),
        ("evt_0", "32503680000000000000", "applied"),
        ("evt_2", "64060588800000000000", "applied"),
    ]
    remove_db(paths)
    store.close()
    store = reopen(paths)
    ks = [r[0] for r in store.reader().execute("SELECT k FROM p_test_order ORDER BY n")]
    assert ks == sorted(ks) and len(ks) == 3
    store.close()


async def test_older_schema_with_other_tables_is_rebuilt(paths: ThrumPaths) -> None:
    tables = await fill(paths, EVENTS)
    conn = sqlite3.connect(paths.db_path)
    conn.executescript(
        "UPDATE meta SET value='0' WHERE key='thrum_schema';"
        "DROP TABLE events; CREATE TABLE events (id INTEGER PRIMARY KEY, blob TEXT);"
        "INSERT INTO p_test_local VALUES ('k', 'v');"
    )
    conn.close()
    store = reopen(paths)
    report = store.open_report
    assert report is not None and report.rebuild_reason == "schema 0 is older than 1"
    assert dump_tables(store.reader()) == tables
    assert store.reader().execute("SELECT value FROM p_test_local").fetchone()[0] == "v"
    store.close()


def _registry_with_hooks(log: list[str]):
    """The test types plus a plugin that counts notes in bulk during rebuilds."""
    from thrum_core.events.types import ApplyContext, EventType, StoredEvent

    reg = make_registry()
    register = reg.bound("counter")
    register.migrations("counter", ["CREATE TABLE p_count (author TEXT PRIMARY KEY, n INTEGER)"])

    def reduce_tally(ctx: ApplyContext, ev: StoredEvent) -> None:
        log.append(f"tally rebuilding={ctx.rebuilding}")
        if not ctx.rebuilding:  # the finish hook counts everything at once
            ctx.db.execute(
                "INSERT INTO p_count VALUES (?, 1) ON CONFLICT(author) DO UPDATE SET n = n + 1",
                (ev.obj["author"],),
            )
        return None

    def start(db: sqlite3.Connection) -> None:
        log.append(f"start count={db.execute('SELECT count(*) FROM p_count').fetchone()[0]}")

    def finish(db: sqlite3.Connection) -> None:
        tallies = db.execute("SELECT count(*) FROM events WHERE type='test.tally'").fetchone()[0]
        log.append(f"finish tallies={tallies}")
        db.execute("DELETE FROM p_count")
        db.execute(
            "INSERT INTO p_count SELECT json_extract(line, '$.author'), count(*) FROM events"
            " WHERE type='test.tally' GROUP BY 1"
        )

    register(EventType("test.tally", reduce_tally))
    register.rebuild_hooks("counter", start=start, finish=finish)
    return reg


async def test_rebuild_hooks_run_around_a_rebuild_only(paths: ThrumPaths) -> None:
    log: list[str] = []
    store = EventStore(paths, _registry_with_hooks(log), DAEMON)
    store.open()  # a new database: built (from an empty log) with the hooks
    assert log == ["start count=0", "finish tallies=0"]
    log.clear()
    tallies = [{"type": "test.tally", "author": a} for a in ("ann", "bob", "ann")]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await store.submit(tallies)
        await store.stop_writer()
    assert log == ["tally rebuilding=False"] * 3
    live = store.reader().execute("SELECT author, n FROM p_count ORDER BY author").fetchall()
    assert [tuple(r) for r in live] == [("ann", 2), ("bob", 1)]
    log.clear()
    store.rebuild()
    assert log == ["start count=0", *["tally rebuilding=True"] * 3, "finish tallies=3"]
    rebuilt = store.reader().execute("SELECT author, n FROM p_count ORDER BY author").fetchall()
    assert [tuple(r) for r in rebuilt] == [tuple(r) for r in live]
    log.clear()
    store.close()
    again = EventStore(paths, _registry_with_hooks(log), DAEMON)
    assert not again.open().rebuilt
    assert log == []  # reopening catches up: no hooks
    again.close()


def _registry_dropping_schema_objects():
    """The test types plus a plugin whose rebuild hooks drop a trigger and an index, then recreate them."""
    reg = make_registry()
    register = reg.bound("trig")
    index = "CREATE INDEX p_trig_author ON p_trig(author)"
    trigger = "CREATE TRIGGER p_trig_ins AFTER INSERT ON p_trig BEGIN SELECT 1; END"
    register.migrations("trig", [f"CREATE TABLE p_trig (author TEXT); {index}; {trigger};"])

    def start(db: sqlite3.Connection) -> None:
        db.execute("DROP TRIGGER IF EXISTS p_trig_ins")
        db.execute("DROP INDEX IF EXISTS p_trig_author")

    def finish(db: sqlite3.Connection) -> None:
        db.execute(index)
        db.execute(trigger)

    register.rebuild_hooks("trig", start=start, finish=finish)
    return reg


def _schema_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


async def test_failed_rebuild_restores_what_its_start_hooks_dropped(
    paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thrum_core.events import projection

    store = EventStore(paths, _registry_dropping_schema_objects(), DAEMON)
    store.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        for i in range(5):
            await store.submit([note(f"n{i}")])
        await store.stop_writer()
    assert {"p_trig_ins", "p_trig_author"} <= _schema_names(store.reader())
    # Apply one event per chunk and commit after each: the drops are committed
    # before the progress callback fails the rebuild.
    monkeypatch.setattr(projection, "APPLY_CHUNK", 1)
    monkeypatch.setattr(projection, "REBUILD_COMMIT_EVERY", 1)
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        store.rebuild(progress)
    assert {"p_trig_ins", "p_trig_author"} <= _schema_names(store.reader())
    store.close()
    again = EventStore(paths, _registry_dropping_schema_objects(), DAEMON)
    assert again.open().rebuilt  # the interrupted rebuild is done again
    assert {"p_trig_ins", "p_trig_author"} <= _schema_names(again.reader())
    assert again.reader().execute("SELECT count(*) FROM p_test_notes").fetchone()[0] == 5
    again.close()
