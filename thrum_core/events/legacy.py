"""Importing the Go tool's data (SPEC §6.8): ``thrum migrate`` and ``thrum init``.

Sources (:func:`find_legacy_sources`):

- the legacy in-repo layout: ``.thrum/events.jsonl``, ``.thrum/messages/*.jsonl``
  and the monolithic ``.thrum/messages.jsonl`` (the fixture layout, also Go
  v0.10.6's local journal);
- an old sync worktree ``.thrum/sync/`` (its ``events.jsonl``,
  ``messages/*.jsonl``, ``messages.jsonl``);
- the Go SQLite projection ``var/messages.db`` (it has a ``schema_version``
  table and no thrum ``meta``), or one a daemon already moved aside as
  ``messages.db.go-v<N>.bak`` before it was imported;
- ``from_dir``: another legacy ``.thrum`` directory (an unpacked fixture).

An ``a-sync`` branch written by the Go tool needs nothing: it is read in place.

:func:`migrate` copies every valid line into the sync dir by the routing rule
(SPEC §6.3): a line with an ``event_id`` verbatim, a line without one with the
§3.2 id inserted and re-serialised canonically.  Events whose ``event_id`` the
sync dir already holds are duplicates and skipped, so a second run imports
nothing.  Read state of a Go database becomes ``message.receipt`` events with
the deterministic §6.8 id (earliest ``read_at`` per message and reader, only
for messages present in the log); the database is then renamed
``messages.db.go-v<N>.bak`` (with its ``-wal``/``-shm``) and a thrum projection
is built.  Sources are never deleted; each is recorded in
``var/migrated.json``.  The whole import runs under ``var/thrum.lock``, so it
never races a daemon.

The calls ``thrum init`` makes::

    from thrum_core.events.legacy import find_legacy_sources, migrate_repository

    sources = find_legacy_sources(paths)          # not yet imported ones
    report = migrate_repository(paths, sources=sources, dry_run=dry_run) if sources else None
    result = None if report is None else report.to_json()
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from thrum_core.canonical import canonical_line, parse_line
from thrum_core.errors import Conflict, ThrumError
from thrum_core.events.log import MAX_LINE_BYTES, AppendLog, iter_lines, list_log_files
from thrum_core.fsutil import atomic_write_json, fsync_dir, read_json
from thrum_core.ids import event_id_of, go_receipt_event_id, shard_name
from thrum_core.timefmt import format_ts, parse_ts_ns

if TYPE_CHECKING:
    from thrum_core.events.types import EventTypeRegistry
    from thrum_core.paths import ThrumPaths

__all__ = [
    "LegacySource",
    "MigrationReport",
    "Progress",
    "SourceReport",
    "find_legacy_sources",
    "go_db_version",
    "import_go_database",
    "migrate",
    "migrate_repository",
    "spec_route",
]

log = logging.getLogger("thrum.migrate")

#: ``progress(phase, done, total)``; phases ``scan``, ``import``, ``receipts``, ``projection``.
Progress = Callable[[str, int, int], None]

#: Flush queued lines to the sync dir once this many bytes are queued.
_FLUSH_BYTES = 8 * 1024 * 1024
#: JSONL file names of a legacy ``.thrum`` dir or old sync worktree (besides ``messages/*.jsonl``).
_TOP_FILES = ("events.jsonl", "messages.jsonl")

# SPEC §6.3 actor field of each ``messages/`` type, used when no plugin registered the type.
_ACTOR_FIELD = {
    "message.create": "agent_id",
    "message.edit": "agent_id",
    "message.delete": "agent_id",
    "message.receipt": "agent_id",
    "agent.update": "agent_id",
    "group.create": "created_by",
    "group.delete": "deleted_by",
    "group.member.add": "added_by",
    "group.member.remove": "removed_by",
    "group.update": "updated_by",
}


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class LegacySource:
    """One file to import.

    ``kind`` is ``jsonl`` (an event log) or ``go_db`` (a Go projection whose
    read state becomes receipts).  ``origin`` says where it was found:
    ``thrum_dir`` (legacy in-repo layout), ``sync_worktree`` (old
    ``.thrum/sync/``), ``go_backup`` (a Go database already moved aside),
    ``from_dir`` (``--from``).  ``version`` is the Go schema version of a
    database.
    """

    kind: str
    path: Path
    origin: str
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``{kind, path, origin, version}``."""
        return {"kind": self.kind, "path": str(self.path), "origin": self.origin, "version": self.version}


def go_db_version(path: Path) -> int | None:
    """The Go schema version of the SQLite file at ``path``, or ``None`` if it is not a Go database.

    A Go database has a ``schema_version`` table and no thrum ``meta`` table.
    Opened read-only; an unreadable or corrupt file is not a Go database.
    """
    if not path.is_file():
        return None
    try:
        conn = _open_go_db(path)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables or "meta" in tables:
            return None
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    except (sqlite3.Error, TypeError, ValueError):
        return None
    finally:
        conn.close()


def _open_go_db(path: Path) -> sqlite3.Connection:
    """Open a Go database read-only without leaving ``-wal``/``-shm`` files next to it.

    Without a ``-wal`` file nothing is pending, so the file is opened
    ``immutable`` (SQLite creates nothing); with one, plain read-only mode
    reads the pending pages too.
    """
    wal = path.with_name(path.name + "-wal")
    flags = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"file:{quote(str(path))}?{flags}", uri=True, timeout=5.0)


def _jsonl_files(directory: Path) -> list[Path]:
    """``events.jsonl``, ``messages.jsonl`` and ``messages/*.jsonl`` of a legacy dir, sorted."""
    found = [directory / name for name in _TOP_FILES if (directory / name).is_file()]
    messages = directory / "messages"
    if messages.is_dir():
        found.extend(
            p for p in sorted(messages.glob("*.jsonl")) if p.is_file() and not p.name.startswith(".")
        )
    return found


def _resolve_from_dir(from_dir: Path) -> Path:
    """The legacy ``.thrum`` dir ``from_dir`` names (``DIR`` itself, or ``DIR/.thrum``)."""
    directory = Path(from_dir).expanduser().resolve()
    if not directory.is_dir():
        raise ThrumError(
            f"--from {from_dir}: no such directory", {"field": "--from", "reason": "missing"}, code=-32602
        )
    if not _jsonl_files(directory) and (directory / ".thrum").is_dir():
        return directory / ".thrum"
    return directory


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _recorded(paths: ThrumPaths) -> set[str]:
    """sha256 of every source already recorded in ``var/migrated.json``."""
    try:
        data = read_json(paths.migrated_file)
    except ValueError:
        return set()
    out: set[str] = set()
    if isinstance(data, list):
        for rec in data:
            if isinstance(rec, dict) and isinstance(rec.get("sha256"), str):
                out.add(rec["sha256"])
    return out


def find_legacy_sources(
    paths: ThrumPaths, *, from_dir: Path | str | None = None, include_imported: bool = False
) -> list[LegacySource]:
    """Legacy Go data to import for the repository of ``paths`` (SPEC §6.8).

    Without ``from_dir``: the legacy files of the effective thrum dir, its old
    ``sync/`` worktree, a Go ``var/messages.db`` and Go databases already moved
    aside (``var/messages.db.go-v*.bak``).  With ``from_dir``: the files of
    that legacy ``.thrum`` directory (``DIR`` or ``DIR/.thrum``) instead.

    Unless ``include_imported``, a source whose content (sha256) is already
    recorded in ``var/migrated.json`` is left out (a Go database renamed after
    its import keeps its content), so an empty list means "nothing new to
    import".  Order: JSONL files first, databases last
    (receipts need the imported messages).
    """
    sources: list[LegacySource] = []
    if from_dir is not None:
        directory = _resolve_from_dir(Path(from_dir))
        sources.extend(LegacySource("jsonl", p, "from_dir") for p in _jsonl_files(directory))
        db = directory / "var" / "messages.db"
        version = go_db_version(db)
        if version is not None:
            sources.append(LegacySource("go_db", db, "from_dir", version))
    else:
        sources.extend(LegacySource("jsonl", p, "thrum_dir") for p in _jsonl_files(paths.thrum_dir))
        sync = paths.thrum_dir / "sync"
        if sync.is_dir():
            sources.extend(LegacySource("jsonl", p, "sync_worktree") for p in _jsonl_files(sync))
        version = go_db_version(paths.db_path)
        if version is not None:
            sources.append(LegacySource("go_db", paths.db_path, "thrum_dir", version))
        if paths.var_dir.is_dir():
            for bak in sorted(paths.var_dir.glob(f"{paths.db_path.name}.go-v*.bak*")):
                if bak.name.endswith(("-wal", "-shm")):
                    continue
                version = go_db_version(bak)
                if version is not None:
                    sources.append(LegacySource("go_db", bak, "go_backup", version))
    if include_imported or not sources:
        return sources
    done = _recorded(paths)
    return [s for s in sources if _file_sha256(s.path) not in done]


# --------------------------------------------------------------------------- report


@dataclass
class SourceReport:
    """What the import did with one source (a ``var/migrated.json`` record)."""

    source: str
    kind: str
    origin: str
    sha256: str
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    invalid: int = 0
    receipts: int = 0
    at: str = ""

    def record(self) -> dict[str, Any]:
        """The ``var/migrated.json`` record (SPEC §6.8).

        ``{at, source, sha256, lines, imported, duplicates, invalid, receipts}``.
        """
        return {
            "at": self.at,
            "source": self.source,
            "sha256": self.sha256,
            "lines": self.lines,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "receipts": self.receipts,
        }

    def to_json(self) -> dict[str, Any]:
        """The record plus ``kind`` and ``origin``."""
        return {**self.record(), "kind": self.kind, "origin": self.origin}


@dataclass
class MigrationReport:
    """The result of :func:`migrate`.

    ``imported`` counts lines copied into the sync dir (receipts included),
    ``receipts`` the receipts among them.  ``backups`` names the Go databases
    moved aside, ``projection`` what building the projection did, ``notes``
    anything else worth telling the user (worktree removal, untracked files).
    """

    sources: list[SourceReport] = field(default_factory=list)
    dry_run: bool = False
    backups: list[str] = field(default_factory=list)
    projection: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def imported(self) -> int:
        return sum(s.imported for s in self.sources)

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources)

    @property
    def invalid(self) -> int:
        return sum(s.invalid for s in self.sources)

    @property
    def receipts(self) -> int:
        return sum(s.receipts for s in self.sources)

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        """``{sources, imported, duplicates, invalid, receipts, dry_run, ...}`` (SPEC §15.4 ``migrate``)."""
        return {
            "sources": [s.to_json() for s in self.sources],
            "imported": self.imported,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "receipts": self.receipts,
            "dry_run": self.dry_run,
            "lines": self.lines,
            "files": dict(sorted(self.files.items())),
            "backups": list(self.backups),
            "projection": self.projection,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- routing


def spec_route(obj: Mapping[str, Any]) -> str:
    """The SPEC §6.3 file for ``obj`` when no plugin registered its type.

    ``message.*`` (author / reader), ``agent.update`` and ``group.*`` (acting
    id) go to ``messages/<shard>.jsonl``; everything else to ``events.jsonl``.
    """
    typ = obj.get("type")
    field_name = _ACTOR_FIELD.get(typ) if isinstance(typ, str) else None
    if field_name is None:
        return "events.jsonl"
    actor = obj.get(field_name)
    return f"messages/{shard_name(actor if isinstance(actor, str) else '')}.jsonl"


def _router(registry: EventTypeRegistry | None) -> Callable[[Mapping[str, Any]], str]:
    def route(obj: Mapping[str, Any]) -> str:
        if registry is not None and registry.get(obj["type"]) is not None:
            try:
                return registry.route(obj)
            except Exception as exc:  # a plugin's route function failed: fall back to the SPEC rule
                log.warning("route of %s failed (%s); using the SPEC routing", obj.get("type"), exc)
        return spec_route(obj)

    return route


# --------------------------------------------------------------------------- the sync dir index


@dataclass
class _Known:
    """Event ids the sync dir holds (plus what this run queued), and known message ids."""

    event_ids: set[str] = field(default_factory=set)
    message_ids: set[str] = field(default_factory=set)


def _index_sync_dir(sync_dir: Path, progress: Progress | None) -> _Known:
    known = _Known()
    files = list_log_files(sync_dir)
    total = sum(_size(sync_dir / rel) for rel in files)
    done = 0
    for rel in files:
        for _off, line in iter_lines(sync_dir / rel):
            done += len(line) + 1
            obj = parse_line(line)
            if obj is None or not isinstance(obj.get("type"), str):
                continue
            known.event_ids.add(event_id_of(obj))
            _note_message(known, obj)
            if progress is not None and (done >> 20) != ((done - len(line) - 1) >> 20):
                progress("scan", done, total)
    if progress is not None:
        progress("scan", total, total)
    return known


def _note_message(known: _Known, obj: Mapping[str, Any]) -> None:
    if obj.get("type") == "message.create":
        mid = obj.get("message_id")
        if isinstance(mid, str) and mid:
            known.message_ids.add(mid)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------- writing


class _Batch:
    """Lines for the sync dir, kept until :meth:`write` (nothing is written on a dry run).

    Each file's new lines are written in sort-key order (SPEC §2.3), so a
    file that started empty stays sorted and a rebuild reads it in one pass.
    Appends are durable, in chunks of at most :data:`_FLUSH_BYTES`.
    """

    def __init__(self, sync_dir: Path, dry_run: bool):
        self.sync_dir = sync_dir
        self.dry_run = dry_run
        self.queued: dict[str, list[tuple[int, str, bytes]]] = {}
        self.files: dict[str, int] = {}

    def add(self, rel: str, line: bytes, ts_ns: int, event_id: str) -> None:
        self.queued.setdefault(rel, []).append((ts_ns, event_id, line))
        self.files[rel] = self.files.get(rel, 0) + 1

    def write(self) -> None:
        queued, self.queued = self.queued, {}
        if self.dry_run or not queued:
            return
        self.sync_dir.mkdir(parents=True, exist_ok=True)
        log = AppendLog(self.sync_dir)
        try:
            chunk: dict[str, bytearray] = {}
            size = 0
            for rel in sorted(queued):
                entries = queued[rel]
                entries.sort(key=lambda e: (e[0], e[1].encode("utf-8", "surrogatepass")))
                for _ts, _eid, line in entries:
                    buf = chunk.get(rel)
                    if buf is None:
                        buf = chunk[rel] = bytearray()
                    buf += line
                    buf += b"\n"
                    size += len(line) + 1
                    if size >= _FLUSH_BYTES:
                        log.append({r: bytes(b) for r, b in chunk.items()})
                        chunk, size = {}, 0
            if chunk:
                log.append({r: bytes(b) for r, b in chunk.items()})
        finally:
            log.close()


def _iter_raw_lines(path: Path) -> Iterator[bytes]:
    """Every line of ``path`` without its ``\\n``; a last line without one is yielded too."""
    with open(path, "rb", buffering=1 << 20) as f:
        for raw in f:
            yield raw[:-1] if raw.endswith(b"\n") else raw


def _import_jsonl(
    source: LegacySource,
    rep: SourceReport,
    known: _Known,
    batch: _Batch,
    route: Callable[[Mapping[str, Any]], str],
    tick: Callable[[int], None],
) -> None:
    for line in _iter_raw_lines(source.path):
        tick(len(line) + 1)
        if not line.strip():
            continue
        rep.lines += 1
        if len(line) >= MAX_LINE_BYTES:
            rep.invalid += 1
            continue
        obj = parse_line(line)
        typ = obj.get("type") if obj is not None else None
        ts_ns = parse_ts_ns(obj.get("timestamp")) if obj is not None else None
        if obj is None or not isinstance(typ, str) or not typ or ts_ns is None:
            rep.invalid += 1
            continue
        eid = obj.get("event_id")
        if isinstance(eid, str) and eid:
            out = line
        else:
            eid = event_id_of(obj)
            try:
                out = canonical_line({**obj, "event_id": eid})[:-1]
            except (ValueError, TypeError):
                rep.invalid += 1
                continue
        if eid in known.event_ids:
            rep.duplicates += 1
            continue
        try:
            rel = route(obj)
        except ValueError:
            rep.invalid += 1
            continue
        known.event_ids.add(eid)
        _note_message(known, obj)
        batch.add(rel, out, ts_ns, eid)
        rep.imported += 1


# --------------------------------------------------------------------------- Go database


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _go_reads(db_path: Path, version: int) -> Iterator[tuple[str, str, str, str]]:
    """``(message_id, agent_id, read_at, session_id)`` rows of a Go database's read state.

    ``message_reads`` always; ``message_deliveries`` rows with a ``read_at``
    from schema 14 on.  Columns are looked up, so an unexpected layout yields
    nothing rather than failing.
    """
    conn = _open_go_db(db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        candidates = ["message_reads"]
        if version >= 14:
            candidates.append("message_deliveries")
        for table in candidates:
            if table not in tables:
                continue
            cols = _columns(conn, table)
            reader = next(
                (c for c in ("agent_id", "recipient_agent_id", "recipient_id", "reader_id") if c in cols),
                None,
            )
            if reader is None or "message_id" not in cols or "read_at" not in cols:
                continue
            session = "session_id" if "session_id" in cols else "''"
            query = (
                f'SELECT message_id, "{reader}", read_at, {session} FROM "{table}" '
                f"WHERE read_at IS NOT NULL AND read_at != ''"
            )
            for mid, aid, read_at, sid in conn.execute(query):
                if isinstance(mid, str) and isinstance(aid, str) and isinstance(read_at, str) and mid and aid:
                    yield mid, aid, read_at, sid if isinstance(sid, str) else ""
    finally:
        conn.close()


def _receipt_events(
    db_path: Path, version: int, message_ids: set[str], daemon_id: str, rep: SourceReport
) -> list[tuple[str, dict[str, Any]]]:
    """``(event_id, receipt)`` for the earliest read per (message, reader) of known messages."""
    earliest: dict[tuple[str, str], tuple[int, str]] = {}
    for mid, aid, read_at, sid in _go_reads(db_path, version):
        rep.lines += 1
        ns = parse_ts_ns(read_at)
        if ns is None:
            rep.invalid += 1
            continue
        key = (mid, aid)
        prev = earliest.get(key)
        if prev is None or ns < prev[0]:
            earliest[key] = (ns, sid)
    out: list[tuple[str, dict[str, Any]]] = []
    for (mid, aid), (ns, sid) in sorted(earliest.items(), key=lambda kv: (kv[1][0], kv[0])):
        if mid not in message_ids:
            continue
        read_at = format_ts(ns)
        eid = go_receipt_event_id(mid, aid, ns // 1_000_000)
        event: dict[str, Any] = {
            "type": "message.receipt",
            "timestamp": read_at,
            "event_id": eid,
            "v": 1,
            "origin_daemon": daemon_id,
            "message_id": mid,
            "agent_id": aid,
            "read_at": read_at,
            "receipt_type": "read",
        }
        if sid:
            event["session_id"] = sid
        out.append((eid, event))
    return out


def _import_go_db(
    source: LegacySource,
    rep: SourceReport,
    known: _Known,
    batch: _Batch,
    route: Callable[[Mapping[str, Any]], str],
    daemon_id: str,
) -> None:
    for eid, event in _receipt_events(source.path, source.version or 0, known.message_ids, daemon_id, rep):
        if eid in known.event_ids:
            rep.duplicates += 1
            continue
        known.event_ids.add(eid)
        ts_ns = parse_ts_ns(event["timestamp"])
        assert ts_ns is not None
        batch.add(route(event), canonical_line(event)[:-1], ts_ns, eid)
        rep.imported += 1
        rep.receipts += 1


def _move_go_db(db_path: Path, version: int) -> Path:
    """Rename a Go database (and its ``-wal``/``-shm``) to ``messages.db.go-v<N>.bak``; return the target."""
    base = db_path.with_name(f"{db_path.name}.go-v{version}.bak")
    target, n = base, 1
    while target.exists():
        target = base.with_name(f"{base.name}.{n}")
        n += 1
    for suffix in ("-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    os.replace(db_path, target)
    fsync_dir(db_path.parent)
    return target


# --------------------------------------------------------------------------- git housekeeping


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def _remove_old_worktree(paths: ThrumPaths, report: MigrationReport) -> None:
    """``git worktree remove`` the old ``.thrum/sync/`` worktree (SPEC §6.8), if it is one."""
    sync = (paths.thrum_dir / "sync").resolve()
    if not sync.is_dir():
        return
    try:
        listed = _git(paths.main_root, "worktree", "list", "--porcelain")
    except (OSError, subprocess.SubprocessError) as exc:
        report.notes.append(f"could not list git worktrees: {exc}")
        return
    worktrees = {
        Path(line[len("worktree ") :]).resolve()
        for line in listed.stdout.splitlines()
        if line.startswith("worktree ")
    }
    if sync not in worktrees:
        return
    done = _git(paths.main_root, "worktree", "remove", str(sync))
    if done.returncode == 0:
        report.notes.append(f"removed the old sync worktree {sync}")
    else:
        report.notes.append(
            f"could not remove the old sync worktree {sync}: {done.stderr.strip() or done.stdout.strip()} "
            f"(its events are imported; remove it with: git worktree remove --force {sync})"
        )


def _untrack_legacy_files(paths: ThrumPaths, report: MigrationReport) -> None:
    """``git rm --cached`` legacy files tracked on the main branch; add ``.thrum/`` to ``.gitignore``."""
    root = paths.main_root
    rel = os.path.relpath(paths.thrum_dir, root)
    if rel.startswith(".."):
        return
    try:
        tracked = _git(root, "ls-files", "-z", "--", rel)
    except (OSError, subprocess.SubprocessError):
        return
    if tracked.returncode != 0 or not tracked.stdout.strip("\0"):
        return
    done = _git(root, "rm", "-r", "-q", "--cached", "--", rel)
    if done.returncode != 0:
        report.notes.append(f"could not untrack {rel}/: {done.stderr.strip()}")
        return
    count = len([p for p in tracked.stdout.split("\0") if p])
    report.notes.append(f"untracked {count} file(s) under {rel}/ (git rm --cached; the files stay on disk)")
    gitignore = root / ".gitignore"
    entry = f"{rel}/"
    try:
        text = gitignore.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    if entry not in {line.strip() for line in text.splitlines()} and rel not in {
        line.strip() for line in text.splitlines()
    }:
        if text and not text.endswith("\n"):
            text += "\n"
        gitignore.write_text(text + entry + "\n", "utf-8")
        report.notes.append(f"added {entry} to .gitignore")


# --------------------------------------------------------------------------- the import


def _daemon_id_of(paths: ThrumPaths) -> str:
    try:
        data = read_json(paths.config_file)
    except ValueError:
        return ""
    if isinstance(data, dict):
        identity = data.get("identity")
        if isinstance(identity, dict) and isinstance(identity.get("daemon_id"), str):
            return identity["daemon_id"]
    return ""


def _append_migrated(paths: ThrumPaths, records: Iterable[dict[str, Any]]) -> None:
    try:
        existing = read_json(paths.migrated_file)
    except ValueError:
        # Keep a broken file for the user rather than overwrite it.
        broken = paths.migrated_file.with_name(f"{paths.migrated_file.name}.broken-{int(time.time())}")
        os.replace(paths.migrated_file, broken)
        existing = None
    data = existing if isinstance(existing, list) else []
    data.extend(records)
    atomic_write_json(paths.migrated_file, data, 0o600)


def migrate(
    paths: ThrumPaths,
    registry: EventTypeRegistry | None,
    *,
    sources: list[LegacySource] | None = None,
    from_dir: Path | str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    daemon_id: str | None = None,
    build_projection: bool = True,
    housekeeping: bool = True,
) -> MigrationReport:
    """Import legacy Go data into the sync dir of ``paths`` (SPEC §6.8).

    :param registry: the event types (routing, and reducers for the projection
        built at the end); types it does not know are routed by
        :func:`spec_route`.  ``None`` routes everything by the SPEC.
    :param sources: what to import (default: :func:`find_legacy_sources` with
        ``include_imported=True``, so a second run reports duplicates).
    :param from_dir: import another legacy ``.thrum`` directory instead.
    :param dry_run: count everything, write nothing.
    :param progress: ``progress(phase, done, total)`` callbacks.
    :param daemon_id: ``origin_daemon`` of generated receipts (default: the
        config's ``identity.daemon_id``).
    :param build_projection: build/catch up ``var/messages.db`` afterwards.
    :param housekeeping: remove the old ``.thrum/sync`` worktree and untrack
        legacy files tracked by git.

    Takes ``var/thrum.lock`` for the whole run; raises :class:`Conflict`
    (``busy``) when a daemon holds it.  A dry run creates nothing (not even
    ``var/``) and writes nothing.
    """
    from thrum_core.lifecycle import DaemonLock, ensure_var_dir

    started = time.monotonic()
    if not dry_run:
        ensure_var_dir(paths)
    # A dry run in a repository without var/ (thrum init --dry-run) creates nothing: no daemon can run there.
    lock = DaemonLock(paths.lock_file)
    if paths.var_dir.is_dir() and not lock.acquire():
        raise Conflict(
            "busy",
            "the thrum daemon is running; stop it first (thrum daemon stop), then run thrum migrate again",
        )
    try:
        if sources is None:
            sources = find_legacy_sources(paths, from_dir=from_dir, include_imported=True)
        report = MigrationReport(dry_run=dry_run)
        if daemon_id is None:
            daemon_id = _daemon_id_of(paths)
        route = _router(registry)
        known = _index_sync_dir(paths.sync_dir, progress)
        total = sum(_size(s.path) for s in sources if s.kind == "jsonl")
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None and (done >> 20) != ((done - n) >> 20):
                progress("import", done, total)

        batch = _Batch(paths.sync_dir, dry_run)
        stamp = format_ts(time.time_ns())
        moved: list[tuple[LegacySource, Path]] = []
        for source in sources:
            rep = SourceReport(
                source=str(source.path),
                kind=source.kind,
                origin=source.origin,
                sha256=_file_sha256(source.path),
                at=stamp,
            )
            report.sources.append(rep)
            if source.kind == "jsonl":
                _import_jsonl(source, rep, known, batch, route, tick)
            elif source.kind == "go_db":
                if progress is not None:
                    progress("import", done, total)
                _import_go_db(source, rep, known, batch, route, daemon_id)
                if progress is not None:
                    progress("receipts", rep.receipts, rep.receipts)
                if source.path == paths.db_path:
                    moved.append((source, paths.db_path))
            else:
                raise ValueError(f"unknown legacy source kind {source.kind!r}")
        batch.write()
        if progress is not None:
            progress("import", total, total)
        report.files = dict(batch.files)
        if not dry_run:
            for source, db_path in moved:
                target = _move_go_db(db_path, source.version or 0)
                report.backups.append(str(target))
            if housekeeping and from_dir is None:
                _remove_old_worktree(paths, report)
                _untrack_legacy_files(paths, report)
            if report.sources:
                _append_migrated(paths, (r.record() for r in report.sources))
            if build_projection and registry is not None:
                report.projection = _build_projection(paths, registry, daemon_id, progress)
        report.seconds = time.monotonic() - started
        return report
    finally:
        lock.release()


def _build_projection(
    paths: ThrumPaths, registry: EventTypeRegistry, daemon_id: str, progress: Progress | None
) -> dict[str, Any]:
    """Open the projection (creating or catching up) with the lock already held."""
    from thrum_core.events.store import EventStore

    started = time.monotonic()
    store = EventStore(paths, registry, daemon_id or "")
    try:
        opened = store.open()
        stats = store.stats()
    finally:
        store.close()
    return {
        "ms": round((time.monotonic() - started) * 1000, 1),
        "open": opened.to_json() if hasattr(opened, "to_json") else None,
        "stats": stats,
    }


def import_go_database(
    paths: ThrumPaths, registry: EventTypeRegistry | None, db_path: Path, version: int, *, daemon_id: str = ""
) -> SourceReport:
    """Turn a Go database's read state into receipts in the sync dir (no lock, no rename).

    For the event store's ``on_legacy_db`` hook: it runs at daemon start with
    the lock held, before the projection is built; the caller moves the file
    aside afterwards.  The record is appended to ``var/migrated.json``.
    """
    known = _index_sync_dir(paths.sync_dir, None)
    source = LegacySource("go_db", db_path, "thrum_dir", version)
    rep = SourceReport(
        str(db_path), "go_db", "thrum_dir", _file_sha256(db_path), at=format_ts(time.time_ns())
    )
    batch = _Batch(paths.sync_dir, False)
    _import_go_db(source, rep, known, batch, _router(registry), daemon_id)
    batch.write()
    _append_migrated(paths, [rep.record()])
    return rep


# --------------------------------------------------------------------------- convenience


def migrate_repository(
    paths: ThrumPaths,
    *,
    sources: list[LegacySource] | None = None,
    from_dir: Path | str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> MigrationReport:
    """:func:`migrate` with the event types of the installed, enabled plugins.

    What ``thrum migrate`` and ``thrum init`` call.
    """
    from thrum_core.events.types import EventTypeRegistry
    from thrum_core.plugins.loader import make_plugin_manager

    registry = EventTypeRegistry.from_plugins(make_plugin_manager(environ))
    return migrate(paths, registry, sources=sources, from_dir=from_dir, dry_run=dry_run, progress=progress)
