"""Crash and fault tests of the event store with a real daemon subprocess (SPEC §6.5, §6.6, §7.1).

- SIGKILL while 10 clients write 100 events each: after a restart every
  acknowledged event is in the logs and in SQLite exactly once.
- A torn last line, a corrupted middle line, a deleted database and a
  truncated ``-wal`` file: the daemon starts, nothing complete is lost, and
  ``thrum doctor`` reports what was skipped.

The writes go through the ``test.note`` RPC of ``store_note_plugin`` (next to
this file), loaded by the daemon as a real entry point; the same crash test
runs with ``message.send`` when the messaging and agents plugins are installed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.canonical import parse_line
from thrum_core.errors import ThrumError
from thrum_core.events.log import iter_lines, list_log_files
from thrum_core.testing.daemon import DaemonProcess
from thrum_core.testing.plugins import builtin_specs
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo

pytestmark = pytest.mark.slow

PLUGIN_DIR = Path(__file__).parent
BASE_PLUGINS = ["rpc.health", "transports.unix_socket", "rpc.purge", "rpc.store_doctor"]
CLIENTS = 10
PER_CLIENT = 100
KILL_AFTER = 300


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def repo(tmp_path: Path) -> ThrumRepo:
    return make_thrum_repo(tmp_path, with_remote=False)


@pytest.fixture
def daemons(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., DaemonProcess]]:
    """``start(repo, plugins=None)``: a started daemon with the test plugin; all stopped at teardown."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)
    )
    started: list[DaemonProcess] = []

    def start(repo: ThrumRepo, plugins: list[str] | None = None) -> DaemonProcess:
        d = DaemonProcess(
            repo,
            extra_entry_points={"testnote": "store_note_plugin"},
            load_plugins=BASE_PLUGINS if plugins is None else plugins,
        )
        started.append(d)
        return d.start()

    yield start
    for d in started:
        if d.alive():
            d.stop()


def log_counts(sync_dir: Path, type_: str, key: str) -> Counter[str]:
    """How many lines of ``type_`` each ``key`` value has in the log files."""
    counts: Counter[str] = Counter()
    for rel in list_log_files(sync_dir):
        for _off, line in iter_lines(sync_dir / rel):
            obj = parse_line(line)
            if obj is not None and obj.get("type") == type_:
                counts[str(obj.get(key))] += 1
    return counts


def query(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the projection."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def write_notes(d: DaemonProcess, prefix: str, count: int) -> list[str]:
    """Write ``count`` notes through the daemon; return their note ids."""
    ids = []
    with d.client() as c:
        for n in range(count):
            nid = f"{prefix}-{n}"
            c.call("test.note", {"note_id": nid, "client": prefix, "n": n})
            ids.append(nid)
    return ids


def committed_note_rows(repo: ThrumRepo, expected: set[str], within: float = 10.0) -> Counter[str]:
    """The notes in SQLite, as a connection of this process sees them.

    A running daemon may hold its last batches uncommitted for a few
    milliseconds (``writer.HOLD_IDLE_S``): wait until ``expected`` shows.
    """
    deadline = time.monotonic() + within
    while True:
        rows = Counter(r[0] for r in query(repo.paths.db_path, "SELECT note_id FROM p_testnote_notes"))
        if expected <= set(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def assert_notes_once(repo: ThrumRepo, expected: set[str]) -> Counter[str]:
    """Every expected note is in the logs and in SQLite exactly once; nothing is doubled."""
    logs = log_counts(repo.paths.sync_dir, "test.note", "note_id")
    assert {n for n in expected if logs[n] != 1} == set()
    assert [n for n, c in logs.items() if c != 1] == []
    rows = committed_note_rows(repo, expected)
    assert {n for n in expected if rows[n] != 1} == set()
    assert set(rows) == set(logs)
    events = query(
        repo.paths.db_path, "SELECT state, COUNT(*) FROM events WHERE type='test.note' GROUP BY state"
    )
    assert dict(events) == {"applied": len(logs)}
    return logs


def doctor(repo: ThrumRepo) -> dict[str, dict[str, Any]]:
    """``thrum --json doctor`` (the installed CLI) as ``{check name: check}``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    done = subprocess.run(
        ["thrum", "--repo", str(repo.root), "--json", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    result = json.loads(done.stdout)
    return {c["name"]: c for c in result["checks"]}


def hammer(
    d: DaemonProcess, call: Callable[[Any, int, int], str], *, kill_after: int
) -> tuple[dict[str, str], int]:
    """10 clients x 100 calls; SIGKILL the daemon after ``kill_after`` acknowledgements.

    ``call(client, i, n)`` makes one call and returns the acknowledged key.
    Returns ``(acked key → client tag, calls that failed)``.
    """
    acked: dict[str, str] = {}
    failed = 0
    lock = threading.Lock()

    def run(i: int) -> None:
        nonlocal failed
        try:
            c = d.client()
        except (ThrumError, OSError):
            with lock:
                failed += PER_CLIENT
            return
        with c:
            for n in range(PER_CLIENT):
                try:
                    key = call(c, i, n)
                except (ThrumError, OSError, ValueError):
                    with lock:
                        failed += 1
                    return
                with lock:
                    acked[key] = f"c{i}"

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= kill_after:
                break
        time.sleep(0.002)
    os.kill(d.pid, signal.SIGKILL)
    assert d.proc is not None
    d.proc.wait(10)
    for t in threads:
        t.join(30)
    return acked, failed


# --------------------------------------------------------------------------- SIGKILL under load


def test_sigkill_during_concurrent_writes_keeps_every_acknowledged_event_once(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)

    def call(c: Any, i: int, n: int) -> str:
        nid = f"c{i}-{n}"
        result = c.call("test.note", {"note_id": nid, "client": f"client_{i}", "n": n})
        assert result["state"] == "applied"
        return nid

    acked, _failed = hammer(d, call, kill_after=KILL_AFTER)
    assert KILL_AFTER <= len(acked) < CLIENTS * PER_CLIENT  # killed mid-way
    daemons(repo)  # restart: torn-tail repair + catch-up
    logs = assert_notes_once(repo, set(acked))
    # Lines written but not acknowledged (killed between fsync and reply) are allowed, never doubled.
    assert set(acked) <= set(logs)
    assert len(logs) <= CLIENTS * PER_CLIENT


def _messaging_installed() -> bool:
    names = {spec.value.split(":")[0] for spec in builtin_specs().values()}
    return any(n.endswith(".messages") for n in names) and any(n.endswith(".agents") for n in names)


@pytest.mark.skipif(not _messaging_installed(), reason="message.send is not installed yet")
def test_sigkill_during_concurrent_message_send(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    plugins = sorted(builtin_specs())
    d = daemons(repo, plugins)
    with d.client() as c:
        for i in range(CLIENTS):
            c.call("agent.register", {"name": f"writer_{i}", "role": "tester", "module": "crash"})
            c.call("session.start", {"agent_id": f"writer_{i}", "caller_agent_id": f"writer_{i}"})

    def call(c: Any, i: int, n: int) -> str:
        result = c.call(
            "message.send",
            {"content": f"note {i}-{n}", "to": ["@everyone"], "caller_agent_id": f"writer_{i}"},
        )
        return str(result["message_id"])

    acked, _failed = hammer(d, call, kill_after=KILL_AFTER)
    assert len(acked) >= KILL_AFTER
    daemons(repo, plugins)
    logs = log_counts(repo.paths.sync_dir, "message.create", "message_id")
    assert {m for m in acked if logs[m] != 1} == set()
    assert [m for m, c in logs.items() if c != 1] == []
    rows = Counter(r[0] for r in query(repo.paths.db_path, "SELECT message_id FROM messages"))
    assert {m for m in acked if rows[m] != 1} == set()
    assert set(rows) == set(logs)


# --------------------------------------------------------------------------- faults at rest


def test_torn_last_line_is_cut_kept_in_var_torn_and_reported(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)
    ids = write_notes(d, "torn", 20)
    d.stop()
    target = repo.paths.sync_dir / "messages" / "torn.jsonl"
    fragment = b'{"type":"test.note","note_id":"half-writ'
    with target.open("ab") as f:
        f.write(fragment)
    daemons(repo)
    assert target.read_bytes().endswith(b"\n")
    assert fragment not in target.read_bytes()
    saved = list(repo.paths.torn_dir.glob("messages__torn.jsonl.*.partial"))
    assert len(saved) == 1 and saved[0].read_bytes() == fragment
    assert_notes_once(repo, set(ids))
    checks = doctor(repo)
    assert checks["torn_fragments"]["status"] == "warn"
    assert saved[0].name in checks["torn_fragments"]["message"]
    assert checks["torn_tail"]["status"] == "ok"


def test_complete_last_line_without_newline_is_kept(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)
    ids = write_notes(d, "nonl", 3)
    d.stop()
    target = repo.paths.sync_dir / "messages" / "nonl.jsonl"
    line = (
        b'{"client":"nonl","event_id":"evt_01KDVDP79G04HMASW9NF6YY093","n":3,"note_id":"nonl-3",'
        b'"timestamp":"2026-01-01T00:00:30.000000Z","type":"test.note","v":1}'
    )
    with target.open("ab") as f:
        f.write(line)
    daemons(repo)
    assert target.read_bytes().endswith(line + b"\n")
    assert_notes_once(repo, {*ids, "nonl-3"})
    assert not repo.paths.torn_dir.exists() or not list(repo.paths.torn_dir.iterdir())


def test_corrupted_middle_line_is_kept_skipped_and_reported(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)
    ids = write_notes(d, "mid", 10)
    d.stop()
    target = repo.paths.sync_dir / "messages" / "mid.jsonl"
    lines = target.read_bytes().split(b"\n")
    garbage = b'{"type":"test.note","note_id":\x00 garbage'
    lines.insert(5, garbage)
    target.write_bytes(b"\n".join(lines))
    daemons(repo)
    assert garbage in target.read_bytes()  # kept verbatim where it was
    assert_notes_once(repo, set(ids))
    invalid = query(repo.paths.db_path, "SELECT file FROM events WHERE state='invalid'")
    assert invalid == [("messages/mid.jsonl",)]
    checks = doctor(repo)
    assert checks["invalid_lines"]["status"] == "warn"
    assert "messages/mid.jsonl:6" in checks["invalid_lines"]["message"]


def test_deleted_database_is_rebuilt_from_the_log(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)
    ids = write_notes(d, "gone", 50)
    d.stop()
    for suffix in ("", "-wal", "-shm"):
        path = repo.paths.db_path.with_name(repo.paths.db_path.name + suffix)
        if path.exists():
            path.unlink()
    d2 = daemons(repo)
    assert_notes_once(repo, set(ids))
    # the daemon's log says why its start took long
    daemon_log = repo.paths.log_file.read_text()
    assert re.search(r"projection rebuilt in [0-9.]+ s \(created\): \d+ events", daemon_log)
    more = write_notes(d2, "after", 5)
    assert_notes_once(repo, {*ids, *more})


def test_truncated_wal_loses_nothing(repo: ThrumRepo, daemons: Callable[..., DaemonProcess]) -> None:
    d = daemons(repo)
    ids = write_notes(d, "wal", 200)
    wal = repo.paths.db_path.with_name(repo.paths.db_path.name + "-wal")
    os.kill(d.pid, signal.SIGKILL)  # no checkpoint: the last transactions live only in the -wal
    assert d.proc is not None
    d.proc.wait(10)
    size = wal.stat().st_size
    assert size > 0
    with wal.open("r+b") as f:
        f.truncate(size // 2 + 7)  # cut in the middle of a frame
    daemons(repo)
    assert_notes_once(repo, set(ids))
    checks = doctor(repo)
    assert checks["projection"]["status"] == "ok", checks["projection"]
    assert checks["pending_events"]["status"] == "ok"


def test_doctor_fix_repairs_a_torn_tail_with_the_daemon_stopped(
    repo: ThrumRepo, daemons: Callable[..., DaemonProcess]
) -> None:
    d = daemons(repo)
    write_notes(d, "fix", 3)
    d.stop()
    target = repo.paths.sync_dir / "messages" / "fix.jsonl"
    with target.open("ab") as f:
        f.write(b'{"type":"test.no')
    checks = doctor(repo)
    assert checks["torn_tail"]["status"] == "warn"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    done = subprocess.run(
        ["thrum", "--repo", str(repo.root), "--json", "doctor", "--fix"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    fixed = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert fixed["torn_tail"]["fixed"] is True
    assert target.read_bytes().endswith(b"\n")
    assert len(list(repo.paths.torn_dir.glob("*.partial"))) == 1
