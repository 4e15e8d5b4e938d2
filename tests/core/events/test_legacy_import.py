"""Importing the Go tool's data (SPEC §6.8) with the real fixture, real files, real SQLite and git.

The fixture (``/work/shared/fixtures/go-thrum-legacy-fixture.tar.gz``) is the
legacy in-repo layout: ``.thrum/events.jsonl`` (``session.start``/``.end``
names), ``.thrum/messages/*.jsonl`` and the Go ``var/messages.db``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.canonical import canonical_line, parse_line
from thrum_core.errors import Conflict
from thrum_core.events.legacy import (
    LegacySource,
    find_legacy_sources,
    go_db_version,
    migrate,
    spec_route,
)
from thrum_core.events.log import iter_lines, list_log_files
from thrum_core.events.types import EventTypeRegistry
from thrum_core.ids import event_id_of, go_receipt_event_id
from thrum_core.lifecycle import DaemonLock
from thrum_core.plugins.loader import make_plugin_manager
from thrum_core.testing.daemon import DaemonProcess
from thrum_core.testing.go_fixture import GO_FIXTURE as FIXTURE
from thrum_core.testing.go_fixture import unpack_go_fixture
from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo
from thrum_core.testing.repo import run_git as git
from thrum_core.timefmt import parse_ts_ns

LIFECYCLE_LINES = 321
MESSAGE_LINES = 10_000
GO_READS = 6_908

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="the Go fixture is not available")


# --------------------------------------------------------------------------- helpers


def add_sync_worktree(repo: ThrumRepo) -> Path:
    """Check out an orphan ``a-sync`` branch at the sync dir, as the Go tool and ``thrum init`` do."""
    sync = repo.paths.sync_dir
    sync.parent.mkdir(parents=True, exist_ok=True)
    git(repo.root, "worktree", "add", "-q", "--detach", str(sync))
    git(sync, "checkout", "-q", "--orphan", "a-sync")
    git(sync, "rm", "-rfq", ".")
    return sync


def unpack(target: Path) -> Path:
    """Unpack the fixture into ``target`` (which then holds ``.thrum/``)."""
    return unpack_go_fixture(target) / ".thrum"


@pytest.fixture(scope="module")
def registry() -> EventTypeRegistry:
    """The event types of every installed, enabled plugin (what the daemon uses)."""
    return EventTypeRegistry.from_plugins(make_plugin_manager(clean_environ()))


@pytest.fixture
def repo(tmp_path: Path) -> ThrumRepo:
    """A git repository whose ``.thrum/`` holds the Go fixture (legacy layout)."""
    r = make_thrum_repo(tmp_path, with_remote=False)
    unpack(r.root)
    return r


def obj_of(line: bytes) -> dict[str, Any]:
    """The parsed line (which must be a JSON object)."""
    obj = parse_line(line)
    assert obj is not None
    return obj


def sync_lines(sync_dir: Path) -> dict[str, list[bytes]]:
    return {rel: [line for _o, line in iter_lines(sync_dir / rel)] for rel in list_log_files(sync_dir)}


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (to prove sources are untouched)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".git"
    }


def legacy_lines(thrum_dir: Path) -> list[bytes]:
    files = [thrum_dir / "events.jsonl", *sorted((thrum_dir / "messages").glob("*.jsonl"))]
    return [line for f in files for line in f.read_bytes().splitlines() if line.strip()]


def query(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def has_table(db: Path, table: str) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
            is not None
        )
    finally:
        conn.close()


# --------------------------------------------------------------------------- discovery


def test_find_legacy_sources_in_the_fixture(repo: ThrumRepo) -> None:
    sources = find_legacy_sources(repo.paths)
    kinds = Counter(s.kind for s in sources)
    assert kinds == {"jsonl": 51, "go_db": 1}
    assert sources[0].path == repo.thrum_dir / "events.jsonl"
    assert sources[-1] == LegacySource("go_db", repo.paths.db_path, "thrum_dir", 13)
    assert go_db_version(repo.paths.db_path) == 13
    # Opening the Go database to look at it leaves nothing behind.
    assert sorted(p.name for p in repo.paths.var_dir.iterdir()) == ["messages.db"]


def test_nothing_to_find_in_a_fresh_repository(tmp_path: Path) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    assert find_legacy_sources(r.paths) == []


# --------------------------------------------------------------------------- the import


@pytest.fixture
def migrated(repo: ThrumRepo, registry: EventTypeRegistry) -> Iterator[tuple[ThrumRepo, Any, dict[str, str]]]:
    before = tree_digest(repo.thrum_dir)
    report = migrate(repo.paths, registry)
    yield repo, report, before


def test_migrate_copies_every_line_verbatim_by_the_routing_rule(
    migrated: tuple[ThrumRepo, Any, dict[str, str]],
) -> None:
    repo, report, _before = migrated
    assert report.imported == LIFECYCLE_LINES + MESSAGE_LINES + GO_READS
    assert (report.duplicates, report.invalid, report.receipts) == (0, 0, GO_READS)
    lines = sync_lines(repo.paths.sync_dir)
    stored = Counter(line for ls in lines.values() for line in ls)
    source = legacy_lines(repo.thrum_dir)
    assert len(source) == LIFECYCLE_LINES + MESSAGE_LINES
    assert [line for line in source if stored[line] != 1] == []  # verbatim, exactly once
    # Routing (SPEC §6.3): lifecycle events in events.jsonl, messages per author, groups per actor.
    for rel, ls in lines.items():
        for line in ls:
            obj = parse_line(line)
            assert obj is not None
            typ = obj["type"]
            if typ in ("agent.register", "session.start", "session.end"):
                assert rel == "events.jsonl"
            elif typ.startswith("message."):
                assert rel == f"messages/{obj['agent_id']}.jsonl"
            elif typ == "group.create":
                assert rel == f"messages/{obj['created_by']}.jsonl"
            elif typ == "group.member.add":
                assert rel == f"messages/{obj['added_by']}.jsonl"


def test_migrate_turns_go_reads_into_deterministic_receipts(
    migrated: tuple[ThrumRepo, Any, dict[str, str]],
) -> None:
    repo, _report, _before = migrated
    backup = repo.paths.var_dir / "messages.db.go-v13.bak"
    go = sqlite3.connect(f"file:{backup}?mode=ro&immutable=1", uri=True)
    try:
        reads = go.execute(
            "SELECT message_id, agent_id, MIN(read_at), session_id FROM message_reads "
            "GROUP BY message_id, agent_id"
        ).fetchall()
    finally:
        go.close()
    assert len(reads) == GO_READS
    receipts = {}
    for ls in sync_lines(repo.paths.sync_dir).values():
        for line in ls:
            obj = parse_line(line)
            if obj is not None and obj["type"] == "message.receipt":
                receipts[(obj["message_id"], obj["agent_id"])] = (obj, line)
    assert len(receipts) == GO_READS
    for mid, aid, read_at, sid in reads:
        obj, line = receipts[(mid, aid)]
        ns = parse_ts_ns(read_at)
        assert ns is not None
        assert obj["event_id"] == go_receipt_event_id(mid, aid, ns // 1_000_000)
        assert obj["read_at"] == obj["timestamp"] == read_at[:19] + ".000000Z"
        assert (obj["receipt_type"], obj["session_id"], obj["v"]) == ("read", sid, 1)
        assert line + b"\n" == canonical_line(obj)


def test_migrate_moves_the_go_database_aside_and_records_the_import(
    migrated: tuple[ThrumRepo, Any, dict[str, str]],
) -> None:
    repo, report, before = migrated
    backup = repo.paths.var_dir / "messages.db.go-v13.bak"
    assert report.backups == [str(backup)]
    assert hashlib.sha256(backup.read_bytes()).hexdigest() == before["var/messages.db"]
    # A thrum projection replaced it.
    assert query(repo.paths.db_path, "SELECT value FROM meta WHERE key='thrum_schema'") == "1"
    assert (
        query(repo.paths.db_path, "SELECT COUNT(*) FROM events") == LIFECYCLE_LINES + MESSAGE_LINES + GO_READS
    )
    # Sources are never deleted or changed (only the Go database was renamed).
    after = tree_digest(repo.thrum_dir)
    moved = {k: v for k, v in before.items() if k != "var/messages.db"}
    assert {k: after[k] for k in moved} == moved
    records = json.loads(repo.paths.migrated_file.read_text())
    assert len(records) == 52
    assert set(records[0]) == {
        "at",
        "source",
        "sha256",
        "lines",
        "imported",
        "duplicates",
        "invalid",
        "receipts",
    }
    assert sum(r["imported"] for r in records) == report.imported
    db_record = records[-1]
    assert (db_record["source"], db_record["receipts"]) == (str(repo.paths.db_path), GO_READS)
    # Nothing new is left to import.
    assert find_legacy_sources(repo.paths) == []


def test_a_second_run_imports_nothing(
    migrated: tuple[ThrumRepo, Any, dict[str, str]], registry: EventTypeRegistry
) -> None:
    repo, first, _before = migrated
    files = tree_digest(repo.paths.sync_dir)
    again = migrate(repo.paths, registry)
    assert again.imported == 0
    assert again.duplicates == first.imported  # the .bak database is read again: receipts dedup by id
    assert tree_digest(repo.paths.sync_dir) == files
    assert len(json.loads(repo.paths.migrated_file.read_text())) == 104


FIXTURE_COUNTS = {
    "agents": ("SELECT COUNT(*) FROM agents", 50),
    "messages": ("SELECT COUNT(*) FROM messages", 10_000),
    "sessions": ("SELECT COUNT(*) FROM sessions", 100),
    "open_sessions": ("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL", 27),
    "groups": ("SELECT COUNT(*) FROM groups", 20),
    "group_members": ("SELECT COUNT(*) FROM group_members WHERE present = 1", 78),
    "message_reads": ("SELECT COUNT(*) FROM message_reads", GO_READS),
}
GO_COUNTS = {
    "agents": "SELECT COUNT(*) FROM agents",
    "messages": "SELECT COUNT(*) FROM messages",
    "sessions": "SELECT COUNT(*) FROM sessions",
    "open_sessions": "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL OR ended_at = ''",
    "groups": "SELECT COUNT(*) FROM groups",
    "group_members": "SELECT COUNT(*) FROM group_members",
    "message_reads": "SELECT COUNT(*) FROM message_reads",
}


@pytest.mark.parametrize("name", sorted(FIXTURE_COUNTS))
def test_projection_of_the_imported_fixture_matches_the_go_database(
    migrated: tuple[ThrumRepo, Any, dict[str, str]], name: str
) -> None:
    repo, _report, _before = migrated
    sql, expected = FIXTURE_COUNTS[name]
    go = repo.paths.var_dir / "messages.db.go-v13.bak"
    assert query(go, GO_COUNTS[name]) == expected  # the Go tool's own answer
    table = sql.split(" FROM ")[1].split()[0]
    assert has_table(repo.paths.db_path, table), f"no {table!r} table: is its plugin installed?"
    assert query(repo.paths.db_path, sql) == expected


def test_every_imported_event_is_applied(migrated: tuple[ThrumRepo, Any, dict[str, str]]) -> None:
    repo, _report, _before = migrated
    conn = sqlite3.connect(f"file:{repo.paths.db_path}?mode=ro", uri=True)
    try:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall())
        ignored = dict(conn.execute("SELECT type, COUNT(*) FROM events WHERE state='ignored' GROUP BY type"))
    finally:
        conn.close()
    assert ignored == {}, f"event types no installed plugin handles: {ignored}"
    assert states == {"applied": LIFECYCLE_LINES + MESSAGE_LINES + GO_READS}


# --------------------------------------------------------------------------- options and edge cases


def test_dry_run_counts_and_changes_nothing(repo: ThrumRepo, registry: EventTypeRegistry) -> None:
    before = tree_digest(repo.thrum_dir)
    report = migrate(repo.paths, registry, dry_run=True)
    assert (report.imported, report.receipts, report.dry_run) == (
        LIFECYCLE_LINES + MESSAGE_LINES + GO_READS,
        GO_READS,
        True,
    )
    assert list_log_files(repo.paths.sync_dir) == []
    after = tree_digest(repo.thrum_dir)
    assert after.pop("var/thrum.lock") == hashlib.sha256(b"").hexdigest()  # the lock it took
    assert after == before  # no migrated.json, Go database in place
    assert report.to_json()["dry_run"] is True


def test_from_dir_imports_another_legacy_directory_without_touching_it(
    tmp_path: Path, registry: EventTypeRegistry
) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    other = tmp_path / "unpacked"
    unpack(other)
    before = tree_digest(other)
    report = migrate(r.paths, registry, from_dir=other)  # DIR holding .thrum/
    assert (report.imported, report.receipts) == (LIFECYCLE_LINES + MESSAGE_LINES + GO_READS, GO_READS)
    assert tree_digest(other) == before  # its Go database is not renamed, nothing is created next to it
    assert report.backups == []
    again = migrate(r.paths, registry, from_dir=other / ".thrum")  # or the .thrum dir itself
    assert again.imported == 0


def test_lines_without_event_id_get_the_computed_id_and_canonical_form(
    tmp_path: Path, registry: EventTypeRegistry
) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    start = (
        b'{"type": "agent.session.start", "timestamp": "2026-01-01T17:00:00Z", "session_id": "ses_000000", '
        b'"agent_id": "coordinator_0000", "sequence": 7}'
    )
    alias = b'{"type":"session.end","timestamp":"2026-01-01T18:00:00Z","session_id":"ses_000000"}\r'
    msg = (
        '{"type":"message.create","timestamp":"2026-01-01T00:00:30Z","message_id":"msg_00000001",'
        '"agent_id":"agent:implementer:1B9K33T6RK","body":{"content":"H\u00e9llo","format":"markdown"},"v":1}'
    ).encode()
    other = (
        b'{"type":"group.create","timestamp":"2026-01-01T00:00:00Z","group_id":"grp_1","name":"x",'
        b'"created_by":"coordinator_0000"}'
    )
    bad = [b"not json", b'{"no_type":1}', b'{"type":"x.y","timestamp":"yesterday"}', b"[1,2]"]
    legacy = r.thrum_dir / "messages.jsonl"  # the monolithic legacy log
    legacy.write_bytes(b"\n".join([start, *bad, alias, msg, other]))  # last line without newline
    report = migrate(r.paths, registry)
    [src] = report.sources
    assert (src.lines, src.imported, src.invalid, src.duplicates) == (8, 4, 4, 0)
    lines = sync_lines(r.paths.sync_dir)
    events = [parse_line(x) for x in lines["events.jsonl"]]
    assert [e["event_id"] for e in events if e] == [
        "evt_01KDX80ZM06DH6CEB5C9GP8SHK",  # SPEC §3.4 vector
        event_id_of(parse_line(alias) or {}),
    ]
    for raw in lines["events.jsonl"]:
        obj = parse_line(raw)
        assert raw + b"\n" == canonical_line(obj)  # re-serialised canonically
    assert events[0] is not None and events[0]["sequence"] == 7  # kept as is
    [msg_line] = lines["messages/implementer_1B9K33T6RK.jsonl"]
    assert obj_of(msg_line)["event_id"] == "evt_01KDVDP79G6MTK4CSQ64T36EB2"  # SPEC §3.4 vector
    assert "Héllo".encode() in msg_line
    [grp] = lines["messages/coordinator_0000.jsonl"]
    assert obj_of(grp)["event_id"].startswith("evt_h")
    assert migrate(r.paths, registry).imported == 0


def test_receipts_only_for_messages_in_the_log_and_earliest_read(tmp_path: Path) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    (r.thrum_dir / "messages").mkdir()
    (r.thrum_dir / "messages" / "alice.jsonl").write_text(
        '{"agent_id":"alice","body":{"content":"hi","format":"markdown"},"event_id":"evt_1",'
        '"message_id":"msg_1","session_id":"ses_a","timestamp":"2026-01-01T00:00:00Z","type":"message.create","v":1}\n'
    )
    db = sqlite3.connect(r.paths.db_path)
    db.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT);
        INSERT INTO schema_version VALUES (14, '');
        CREATE TABLE message_reads (message_id TEXT, session_id TEXT, agent_id TEXT, read_at TEXT);
        INSERT INTO message_reads VALUES ('msg_1', 'ses_b2', 'bob', '2026-01-01T00:05:00+01:00');
        INSERT INTO message_reads VALUES ('msg_1', 'ses_b1', 'bob', '2026-01-01T00:10:00Z');
        INSERT INTO message_reads VALUES ('msg_gone', 'ses_b1', 'bob', '2026-01-01T00:10:00Z');
        CREATE TABLE message_deliveries (message_id TEXT, agent_id TEXT, read_at TEXT);
        INSERT INTO message_deliveries VALUES ('msg_1', 'carol', '2026-01-01T00:20:00.5Z');
        INSERT INTO message_deliveries VALUES ('msg_1', 'dave', NULL);
        """
    )
    db.commit()
    db.close()
    report = migrate(r.paths, None, build_projection=False)
    assert report.receipts == 2
    lines = sync_lines(r.paths.sync_dir)
    bob = obj_of(lines["messages/bob.jsonl"][0])
    assert bob["read_at"] == "2025-12-31T23:05:00.000000Z"  # the earlier instant, not the earlier text
    assert bob["session_id"] == "ses_b2"
    carol = obj_of(lines["messages/carol.jsonl"][0])
    assert carol["read_at"] == "2026-01-01T00:20:00.500000Z" and "session_id" not in carol
    assert carol["event_id"] == go_receipt_event_id("msg_1", "carol", 1767226800500)
    assert (r.paths.var_dir / "messages.db.go-v14.bak").exists()
    assert not r.paths.db_path.exists()


def test_old_sync_worktree_is_imported_then_removed(tmp_path: Path, registry: EventTypeRegistry) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    sync = r.thrum_dir / "sync"
    git(r.root, "worktree", "add", "-q", "--detach", str(sync))
    git(sync, "checkout", "-q", "--orphan", "a-sync-go")
    git(sync, "rm", "-rfq", ".")
    line = (
        b'{"agent_id":"zed","event_id":"evt_00000001","kind":"agent","module":"m","role":"r",'
        b'"timestamp":"2026-01-01T00:00:00Z","type":"agent.register","v":1}'
    )
    (sync / "events.jsonl").write_bytes(line + b"\n")
    (sync / "state").mkdir()
    (sync / "state" / "x.json").write_text("{}")
    git(sync, "add", "-A")
    git(sync, "commit", "-q", "-m", "go sync")
    report = migrate(r.paths, registry)
    assert report.imported == 1
    assert sync_lines(r.paths.sync_dir)["events.jsonl"] == [line]
    assert not sync.exists()
    assert str(sync) not in git(r.root, "worktree", "list", "--porcelain")
    assert any("removed the old sync worktree" in n for n in report.notes)
    assert git(r.root, "show", "a-sync-go:events.jsonl").encode() == line + b"\n"  # still on its branch


def test_legacy_files_tracked_on_the_main_branch_are_untracked(
    tmp_path: Path, registry: EventTypeRegistry
) -> None:
    r = make_thrum_repo(tmp_path, with_remote=False)
    (r.root / ".gitignore").write_text("")
    line = b'{"agent_id":"zed","event_id":"evt_1","timestamp":"2026-01-01T00:00:00Z","type":"agent.register"}'
    (r.thrum_dir / "events.jsonl").write_bytes(line + b"\n")
    git(r.root, "add", "-f", ".thrum/events.jsonl")
    git(r.root, "commit", "-q", "-m", "go tracked its files")
    report = migrate(r.paths, registry)
    assert report.imported == 1
    assert git(r.root, "ls-files", ".thrum") == ""
    assert (r.thrum_dir / "events.jsonl").read_bytes() == line + b"\n"  # stays on disk
    assert ".thrum/" in (r.root / ".gitignore").read_text().splitlines()


def test_migrate_refuses_while_the_daemon_lock_is_held(repo: ThrumRepo, registry: EventTypeRegistry) -> None:
    with DaemonLock(repo.paths.lock_file), pytest.raises(Conflict) as info:
        migrate(repo.paths, registry)
    assert info.value.data == {"reason": "busy"}
    assert "thrum daemon stop" in info.value.message
    assert list_log_files(repo.paths.sync_dir) == []


def test_spec_route_without_plugins() -> None:
    assert spec_route({"type": "message.create", "agent_id": "agent:impl:X"}) == "messages/impl_X.jsonl"
    assert spec_route({"type": "group.member.remove", "removed_by": "bob"}) == "messages/bob.jsonl"
    assert spec_route({"type": "message.receipt"}) == "messages/_unresolved.jsonl"
    assert spec_route({"type": "agent.register", "agent_id": "bob"}) == "events.jsonl"
    assert spec_route({"type": "whatever.else"}) == "events.jsonl"


# --------------------------------------------------------------------------- a Go-written a-sync branch


def test_daemon_reads_a_go_written_a_sync_layout_in_place(tmp_path: Path) -> None:
    """Nothing to migrate: the daemon projects the Go a-sync files as they are."""
    r = make_thrum_repo(tmp_path, with_remote=False)
    legacy = unpack(tmp_path / "unpacked")
    sync = add_sync_worktree(r)
    shutil.copy(legacy / "events.jsonl", sync / "events.jsonl")
    shutil.copytree(legacy / "messages", sync / "messages")
    # The monolithic messages.jsonl of older Go versions, lines without event_id.
    (sync / "messages.jsonl").write_bytes(
        b'{"type":"message.create","timestamp":"2026-01-02T00:00:00Z","message_id":"msg_mono_1",'
        b'"agent_id":"coordinator_0000","session_id":"ses_000000","body":{"format":"markdown","content":"old"}}\n'
    )
    for junk in ("state", "messages-v2", "receipts"):  # Go v0.10.6 snapshots: kept, not read
        (sync / junk).mkdir()
        (sync / junk / "x.json").write_text('{"type":"message.create"}\n')
    git(sync, "add", "-A")
    git(sync, "commit", "-q", "-m", "sync: written by the Go tool")
    before = tree_digest(sync)
    d = DaemonProcess(r).start(timeout=300)  # the first start builds the projection
    try:
        with d.client() as c:
            assert c.call("health")["status"] in ("ok", "degraded")
    finally:
        d.stop()
    assert tree_digest(sync) == before  # read in place, nothing rewritten
    db = r.paths.db_path
    assert query(db, "SELECT COUNT(*) FROM events") == LIFECYCLE_LINES + MESSAGE_LINES + 1
    assert query(db, "SELECT COUNT(*) FROM events WHERE state='invalid'") == 0
    mono = event_id_of(parse_line((sync / "messages.jsonl").read_bytes()) or {})
    assert query(db, f"SELECT file FROM events WHERE event_id='{mono}'") == "messages.jsonl"
    if has_table(db, "agents"):
        assert query(db, "SELECT COUNT(*) FROM agents") == 50
        assert query(db, "SELECT COUNT(*) FROM sessions") == 100
        assert query(db, "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL") == 27
    if has_table(db, "messages"):
        assert query(db, "SELECT COUNT(*) FROM messages") == MESSAGE_LINES + 1
    if has_table(db, "groups"):
        assert query(db, "SELECT COUNT(*) FROM groups") == 20


def test_migrate_cli_progress_summary_and_json(repo: ThrumRepo) -> None:
    """The installed ``thrum migrate`` (JSON shape, human summary)."""
    env = {**clean_environ(), "GIT_CONFIG_NOSYSTEM": "1"}
    dry = subprocess.run(
        ["thrum", "--repo", str(repo.root), "--json", "migrate", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result = json.loads(dry.stdout)
    assert {"sources", "imported", "duplicates", "invalid", "receipts", "dry_run"} <= set(result)
    assert (result["imported"], result["receipts"], result["dry_run"]) == (17229, GO_READS, True)
    assert "importing: done" in dry.stderr
    done = subprocess.run(
        ["thrum", "--repo", str(repo.root), "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert "Imported 17229 event(s) (6908 receipt(s)) from 52 source(s)" in done.stdout
    assert "messages.db.go-v13.bak" in done.stdout
    assert os.path.exists(repo.paths.var_dir / "messages.db.go-v13.bak")


def test_dry_run_without_var_creates_nothing(tmp_path: Path, registry: EventTypeRegistry) -> None:
    """``thrum init --dry-run`` may call migrate before ``var/`` exists."""
    r = make_thrum_repo(tmp_path, with_remote=False)
    shutil.rmtree(r.paths.var_dir)
    legacy = unpack(tmp_path / "unpacked")
    shutil.copy(legacy / "events.jsonl", r.thrum_dir / "events.jsonl")
    report = migrate(r.paths, registry, dry_run=True)
    assert (report.imported, report.dry_run) == (LIFECYCLE_LINES, True)
    assert not r.paths.var_dir.exists()
    assert not r.paths.sync_dir.exists()
