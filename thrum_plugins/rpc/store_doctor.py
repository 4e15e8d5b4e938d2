"""``thrum doctor`` checks of the event log and its projection (SPEC §6.4, §6.6, §7.1, §15.6).

Checks, all read-only unless ``--fix`` / ``--rebuild``:

- ``event_log``: lines and files of the sync dir;
- ``invalid_lines``: lines kept verbatim but never projected (not a JSON
  object, no ``type``, bad ``timestamp``, 16 MiB or longer);
- ``torn_tail``: a file whose last byte is not ``\\n`` (the daemon repairs it at
  start; ``--fix`` does it now when the daemon is stopped);
- ``torn_fragments``: fragments cut from torn lines kept in ``var/torn/``;
- ``duplicate_event_ids``: one ``event_id`` in lines with different bytes;
- ``projection``: the SQLite projection against the log (events missing from
  it, rows whose line is gone), pending events;
- ``--rebuild``: rebuild the projection (with the daemon stopped: it takes
  ``var/thrum.lock``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.doctor import DoctorReport
    from thrum_core.paths import ThrumPaths

__all__ = ["LogScan", "ProjectionCheck", "check_projection", "scan_log"]

#: How many examples a check message names.
EXAMPLES = 3


@dataclass
class LogScan:
    """What :func:`scan_log` found in the sync dir."""

    files: int = 0
    lines: int = 0
    invalid: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line number, reason)
    torn: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes after the last \n)
    event_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    conflicting: dict[str, set[str]] = field(default_factory=dict)  # event_id → files with different bytes


def _classify(line: bytes) -> tuple[str | None, str | None]:
    """``(event_id, None)`` for a valid event line, ``(None, reason)`` for an invalid one."""
    from thrum_core.canonical import parse_line
    from thrum_core.events.log import MAX_LINE_BYTES
    from thrum_core.ids import event_id_of
    from thrum_core.timefmt import parse_ts_ns

    if len(line) >= MAX_LINE_BYTES:
        return None, "longer than 16 MiB"
    obj = parse_line(line)
    if obj is None:
        return None, "not a JSON object"
    typ = obj.get("type")
    if type(typ) is not str or not typ:
        return None, "no type"
    if parse_ts_ns(obj.get("timestamp")) is None:
        return None, "no valid timestamp"
    return event_id_of(obj), None


def scan_log(sync_dir: Path) -> LogScan:
    """Read every log file of ``sync_dir`` and classify its lines."""
    from thrum_core.events.log import iter_lines, list_log_files

    scan = LogScan()
    digests: dict[str, tuple[bytes, str]] = {}
    for rel in list_log_files(sync_dir):
        path = sync_dir / rel
        scan.files += 1
        end = 0
        number = 0
        for off, line in iter_lines(path):
            number += 1
            end = off + len(line) + 1
            if not line.strip():
                continue
            scan.lines += 1
            eid, reason = _classify(line)
            if eid is None:
                scan.invalid.append((rel, number, reason or "invalid"))
                continue
            digest = hashlib.sha256(line.rstrip(b"\r")).digest()
            seen = digests.get(eid)
            if seen is None:
                digests[eid] = (digest, rel)
                scan.event_ids.add(eid)
            else:
                scan.duplicates += 1
                if seen[0] != digest:
                    scan.conflicting.setdefault(eid, {seen[1]}).add(rel)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size > end:
            scan.torn.append((rel, size - end))
    return scan


@dataclass
class ProjectionCheck:
    """The projection compared with a :class:`LogScan`."""

    exists: bool = False
    kind: str = "missing"  # missing | thrum | go | unreadable
    rows: int = 0
    states: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # valid log events not in ``events``
    stale: int = 0  # rows (applied/pending/ignored) whose event is no longer in the log
    error: str | None = None


def check_projection(db_path: Path, scan: LogScan) -> ProjectionCheck:
    """Compare ``events`` of the projection at ``db_path`` with the log (read-only)."""
    result = ProjectionCheck()
    if not db_path.exists():
        return result
    result.exists = True
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        result.kind, result.error = "unreadable", str(exc)
        return result
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            result.kind = "go" if "schema_version" in tables else "unreadable"
            if result.kind == "unreadable":
                result.error = "no meta table"
            return result
        result.kind = "thrum"
        if "events" not in tables:
            result.missing = len(scan.event_ids)
            return result
        result.states = {
            r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state")
        }
        result.rows = sum(result.states.values())
        stored: set[str] = set()
        for eid, state in conn.execute("SELECT event_id, state FROM events WHERE state != 'invalid'"):
            stored.add(eid)
            if state != "tombstoned" and eid not in scan.event_ids:
                result.stale += 1
        result.missing = len(scan.event_ids - stored)
    except sqlite3.Error as exc:
        result.kind, result.error = "unreadable", str(exc)
    finally:
        conn.close()
    return result


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def _fix_torn(report: DoctorReport, paths: ThrumPaths, scan: LogScan) -> None:
    from thrum_core.events.log import repair_torn
    from thrum_core.lifecycle import DaemonLock

    files = [f"{rel} ({n} bytes)" for rel, n in scan.torn]
    if not report.fix:
        report.check(
            "torn_tail",
            "warn",
            f"unterminated last line in {_examples(files)}; repaired at the next daemon start "
            "(or now with thrum doctor --fix while the daemon is stopped)",
        )
        return
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        report.check(
            "torn_tail",
            "warn",
            f"unterminated last line in {_examples(files)}, but the daemon is running "
            "(a write may be in progress); stop it and run thrum doctor --fix again",
        )
        return
    try:
        repairs = repair_torn(paths.sync_dir, paths.torn_dir)
    finally:
        lock.release()
    done = [
        f"{r.file} ({'newline added' if r.action == 'newline' else 'fragment moved to ' + str(r.saved_to)})"
        for r in repairs
    ]
    report.check("torn_tail", "ok", f"repaired {_examples(done)}", fixed=True)


def _rebuild(report: DoctorReport, paths: ThrumPaths) -> None:
    from thrum_core.events.store import EventStore
    from thrum_core.events.types import EventTypeRegistry
    from thrum_core.lifecycle import DaemonLock

    if report.daemon is not None or DaemonLock.is_locked(paths.lock_file):
        report.check(
            "rebuild",
            "fail",
            "the daemon is running; stop it (thrum daemon stop), then run thrum doctor --rebuild",
        )
        return
    if report.plugins is None:
        report.check("rebuild", "fail", "no plugin manager: cannot know the event types to rebuild with")
        return
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        report.check("rebuild", "fail", "the daemon started meanwhile; stop it and try again")
        return
    try:
        store = EventStore(paths, EventTypeRegistry.from_plugins(report.plugins), _daemon_id(paths))
        try:
            opened = store.open()
            rebuilt = None if opened.rebuilt else store.rebuild()
        finally:
            store.close()
    finally:
        lock.release()
    seconds = opened.seconds if rebuilt is None else rebuilt.seconds
    events = opened.new if rebuilt is None else rebuilt.events
    report.check(
        "rebuild", "ok", f"projection rebuilt from the log: {events} events in {seconds:.2f} s", fixed=True
    )


def _daemon_id(paths: ThrumPaths) -> str:
    from thrum_core.fsutil import read_json

    try:
        data = read_json(paths.config_file)
    except ValueError:
        return ""
    identity = data.get("identity") if isinstance(data, dict) else None
    value = identity.get("daemon_id") if isinstance(identity, dict) else None
    return value if isinstance(value, str) else ""


def _projection_checks(report: DoctorReport, paths: ThrumPaths, scan: LogScan) -> None:
    proj = check_projection(paths.db_path, scan)
    if not proj.exists:
        report.check(
            "projection", "warn", f"{paths.db_path} does not exist; it is built at the next daemon start"
        )
        return
    if proj.kind == "go":
        report.check(
            "projection",
            "warn",
            f"{paths.db_path} is a Go database; import it with thrum migrate (with the daemon stopped)",
        )
        return
    if proj.kind != "thrum":
        report.check(
            "projection",
            "fail",
            f"{paths.db_path} cannot be read ({proj.error}); it is rebuilt at the next daemon start "
            "or with thrum doctor --rebuild",
        )
        return
    states = ", ".join(f"{k} {v}" for k, v in sorted(proj.states.items()) if v) or "empty"
    problems = []
    if proj.missing:
        problems.append(f"{proj.missing} log event(s) not projected yet (caught up at the next daemon start)")
    if proj.stale:
        problems.append(f"{proj.stale} projected event(s) no longer in the log (thrum doctor --rebuild)")
    if problems:
        report.check(
            "projection",
            "warn",
            f"{len(scan.event_ids)} events in the log, rows: {states}; " + "; ".join(problems),
        )
    else:
        report.check("projection", "ok", f"{len(scan.event_ids)} events in the log, rows: {states}")
    pending = proj.states.get("pending", 0)
    if pending:
        report.check(
            "pending_events",
            "warn",
            f"{pending} event(s) wait for a parent that is not in the log (e.g. an edit or receipt "
            "of an unknown message)",
        )
    else:
        report.check("pending_events", "ok", "no event waits for a missing parent")


@hookimpl
def thrum_doctor(report: DoctorReport) -> None:
    paths = report.paths
    if paths is None:
        return
    scan = scan_log(paths.sync_dir)
    if scan.files:
        report.check("event_log", "ok", f"{scan.lines} lines in {scan.files} file(s) under {paths.sync_dir}")
    else:
        report.check("event_log", "ok", f"no log files yet under {paths.sync_dir}")
    if scan.invalid:
        where = [f"{rel}:{n} ({reason})" for rel, n, reason in scan.invalid]
        report.check(
            "invalid_lines",
            "warn",
            f"{len(scan.invalid)} line(s) kept but never projected: {_examples(where)}",
        )
    else:
        report.check("invalid_lines", "ok", "every line is a valid event")
    if scan.torn:
        _fix_torn(report, paths, scan)
    else:
        report.check("torn_tail", "ok", "every log file ends with a complete line")
    fragments = sorted(p.name for p in paths.torn_dir.glob("*.partial")) if paths.torn_dir.is_dir() else []
    if fragments:
        report.check(
            "torn_fragments",
            "warn",
            f"{len(fragments)} fragment(s) cut from torn lines are kept in {paths.torn_dir}: "
            f"{_examples(fragments)} (inspect, then delete them)",
        )
    else:
        report.check("torn_fragments", "ok", "no torn fragments")
    if scan.conflicting:
        where = [f"{eid} ({', '.join(sorted(files))})" for eid, files in sorted(scan.conflicting.items())]
        report.check(
            "duplicate_event_ids",
            "warn",
            f"{len(scan.conflicting)} event_id(s) appear in lines with different bytes (only one is "
            f"projected): {_examples(where)}",
        )
    else:
        extra = f" ({scan.duplicates} identical repeat(s))" if scan.duplicates else ""
        report.check("duplicate_event_ids", "ok", f"no event_id with different lines{extra}")
    if report.rebuild:
        _rebuild(report, paths)
    _projection_checks(report, paths, scan)
