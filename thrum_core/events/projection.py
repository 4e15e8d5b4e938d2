"""The SQLite projection: lifecycle, core tables, applying events (SPEC §7).

The projection is a cache of the log.  :class:`Projection` owns the single
write connection; the writer uses it from one worker thread at a time.  It

- opens the database following SPEC §7.1 (missing → build; ``quick_check`` not
  ``ok`` → moved aside and built; newer schema → refused; a Go database →
  handed to the caller or moved aside; an interrupted rebuild → built again);
- runs migrations: *local* steps are upgraded in place, and any change to the
  *projection* steps rebuilds (see :mod:`thrum_core.events.types`);
- indexes every line in ``events`` and applies events through the registered
  reducers: idempotent by ``event_id``, tombstoned events skipped, pending
  events re-applied in sort-key order once their key is provided;
- catches up from the files (reading only what grew) and rebuilds from
  scratch, both in sort-key order without holding the log in memory.

Ordering (SPEC §7.1, §7.3): rebuild and catch-up apply the events they read
in sort-key order.  Small inputs are read, sorted and applied in memory.
Large inputs are streamed: each file's *in-order subsequence* (every line
whose key is not smaller than the largest key before it in the same file)
is already sorted, so the files are merged (in blocks, see
:func:`merge_sorted_blocks`, or with ``heapq.merge`` when there are many);
the few lines that break a file's order are
*spilled* (their keys and offsets; to a temporary SQLite file when there are
many), sorted, and merged in as one more stream.  Finding the spilled lines
needs a first pass over the keys; a rebuild first assumes the files are
sorted and only does that pass (restarting) if one is not, so a log written
by one daemon or by the git merge is parsed once.

Speed (a rebuild of a million events is a start-up path): lines are read and
parsed by one inlined loop (:meth:`Projection._file_rows`), the ``events``
rows of a chunk go in with a few multi-row ``INSERT`` statements, and the
apply loop does little besides building the :class:`StoredEvent` and calling
the reducer.  During a rebuild the write connection runs with
``synchronous=OFF`` and a larger page cache (an interrupted rebuild leaves
``meta('rebuild_in_progress')`` set and is redone at the next open).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import secrets
import sqlite3
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from thrum_core.canonical import parse_text
from thrum_core.errors import ThrumError
from thrum_core.events.lineparse import (
    DIGIT_RUNS,
    LONG_DIGITS,
    MAX_FAST_DEPTH,
    SHALLOW_LINE,
    fast_object,
)
from thrum_core.events.lineparse import dumps as fast_dumps
from thrum_core.events.lineparse import loads as fast_loads
from thrum_core.events.log import (
    MAX_LINE_BYTES,
    file_tail_sha256,
    iter_lines,
    list_log_files,
    rewrite_file,
)
from thrum_core.events.types import (
    ApplyContext,
    EventType,
    EventTypeRegistry,
    InvalidEvent,
    Pending,
    SortKey,
    StoredEvent,
    TombstonePredicate,
    make_stored_event,
)
from thrum_core.ids import event_id_of
from thrum_core.timefmt import format_ts, parse_ts_ns

__all__ = [
    "CORE_SCHEMA_VERSION",
    "NewerDatabaseError",
    "OpenInfo",
    "Projection",
    "connect",
    "connect_reader",
    "db_ts",
    "decode_line",
    "ts_ns",
]

log = logging.getLogger("thrum.events")

#: ``meta('thrum_schema')`` this code writes and reads.
CORE_SCHEMA_VERSION = 1

#: Inputs up to this many bytes are read, sorted and applied in memory.
IN_MEMORY_BYTES = 8 * 1024 * 1024
#: Spilled out-of-order lines are kept in a list up to this many, then in SQLite.
SPILL_IN_MEMORY = 50_000
#: Events applied together (their ``events`` rows are inserted first).
APPLY_CHUNK = 256
#: Rows per block when merging the files of a streamed ingest...
MERGE_BLOCK = 128
#: ...and rows buffered by all the files together, at most (every buffered row
#: holds a parsed event: a log sharded over hundreds of agents would otherwise
#: keep tens of megabytes of them).
MERGE_ROWS = 2048
#: The smallest block, however many files there are.
MERGE_BLOCK_MIN = 8
#: More streams than this are merged row by row (``heapq.merge``, O(log n) per
#: row) instead of in blocks: with hundreds of small blocks the block merge
#: bisects every buffer for the few rows each round emits (5 µs a row at 200
#: agent shards against 0.8 µs).
HEAP_MERGE_STREAMS = 32
#: ``meta`` key of this daemon's newest own event: ``"<daemon_id>:<seq>:<ts_ns>"``,
#: the newest ``ts_ns`` of an event with ``origin_daemon`` = ``daemon_id`` among
#: the ``events`` rows up to ``seq`` (see :meth:`Projection.newest_own_ts`).
OWN_CLOCK_META = "own_clock"
#: ``PRAGMA journal_size_limit`` of the write connection, in bytes.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: Rebuilds commit every this many events (keeps the WAL small).
REBUILD_COMMIT_EVERY = 20_000
#: SQLite page cache of the write connection during a rebuild, in KiB (the
#: default is 2 MiB; inserting into large B-trees misses it at every level).
REBUILD_CACHE_KIB = 32 * 1024

# ``order`` of :meth:`Projection._file_rows`.
_ANY, _SKIP, _STRICT = 0, 1, 2
#: Read buffer of the log readers.  A streamed ingest keeps every file open at
#: once (a repository may have hundreds of shards): 64 KiB reads as fast as
#: 1 MiB and does not cost a fresh megabyte (and its page faults) per file.
_READ_BUFFER = 1 << 16

CORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT,
    ts_ns,
    origin_daemon TEXT NOT NULL DEFAULT '',
    file TEXT,
    state TEXT NOT NULL,
    waits_for TEXT,
    line TEXT
);
CREATE INDEX IF NOT EXISTS events_pending ON events(waits_for, ts_ns, event_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_ignored ON events(type) WHERE state = 'ignored';
CREATE TABLE IF NOT EXISTS projection_files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    tail_sha256 TEXT
);
"""
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
_CORE_TABLES = ("events", "projection_files")
#: ``PRAGMA secure_delete`` values as it reports them → as it is set.
_SECURE_DELETE = {0: "OFF", 1: "ON", 2: "FAST"}

#: Largest instant SQLite stores as an INTEGER (2262-04-11).  Later instants,
#: which the timestamp parser accepts up to year 5138, are stored in
#: ``events.ts_ns`` as 20-digit text: the column has no type affinity, and
#: SQLite orders every INTEGER before every TEXT, so ``ORDER BY ts_ns`` stays
#: the instant order.
SQLITE_INT_MAX = 2**63 - 1


# Instants of exactly 19 digits (2001-09-09 to 2286-11-20): their 20-digit sort
# key prefix is "0" + str(ns), twice as fast to build as a zero-padded format.
_K19_MIN, _K19_MAX = 10**18, 10**19 - 1


def db_ts(ts_ns: int) -> int | str:
    """``ts_ns`` as stored in ``events.ts_ns`` (see :data:`SQLITE_INT_MAX`)."""
    return ts_ns if ts_ns <= SQLITE_INT_MAX else f"{ts_ns:020d}"


_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events(event_id, type, ts_ns, origin_daemon, file, state, line) "
    "VALUES (?,?,?,?,?,?,?)"
)
_SET_TOMBSTONED = "UPDATE events SET state='tombstoned', waits_for=NULL, line=NULL WHERE seq=?"
_MARK_TOMBSTONED = "UPDATE events SET state='tombstoned', waits_for=NULL, line=NULL WHERE event_id=?"
_INSERT_INVALID = (
    "INSERT OR IGNORE INTO events(event_id, type, ts_ns, origin_daemon, file, state, line) "
    "VALUES (?,?,NULL,'',?,'invalid',?)"
)


#: ``(ts_ns, event_id, obj, line, text, file, source)`` of one event to apply.
Record = tuple[int, str, dict[str, Any], bytes, Any, str, str]

#: What the ingest streams produce and :meth:`Projection._apply` takes:
#: ``(ts_ns, event_id, stream, offset, obj, line, text, file)``.  ``(stream,
#: offset)`` is unique, so rows sort (and merge) by sort key without ever
#: comparing the objects.
StreamRow = tuple[int, str, int, int, dict[str, Any], bytes, Any, str]

#: ``events`` rows per multi-row ``INSERT`` (7 values each: below SQLite's
#: historical limit of 999 bound parameters).  One statement of many rows
#: costs much less per row than ``executemany`` (about 5 against 8 µs).
INSERT_ROWS = 128
_INSERT_EVENTS_SQL: dict[int, str] = {}


class NewerDatabaseError(ThrumError):
    """The projection was written by a newer thrum (SPEC §7.1)."""


def decode_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a line like :func:`thrum_core.canonical.parse_line`, also returning its text.

    Returns ``(object or None, UTF-8 text or None)``; the text is the whole
    line (a trailing ``\\r`` included) and is ``None`` for invalid UTF-8.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, None
    fast = fast_object(line)
    if fast is not None:  # what the standard library gives (see lineparse)
        return fast, text
    return parse_text(text), text


#: :func:`thrum_core.timefmt.parse_ts_ns`, which has the fast path for what thrum
#: (and the Go tool) write; kept under this name for the store's callers.
ts_ns = parse_ts_ns

# "YYYY-MM-DDTHH:MM:SS" → ns of recently read timestamps in thrum's format
# (``...SS.ffffffZ``) or the Go tool's (``...SSZ``): events written together
# share their second, and the log reader then adds the microseconds itself.
# Bounded: emptied when full.
_SECOND_NS: dict[str, int] = {}
_SECOND_NS_MAX = 4096


def _remember_second(text: str, ns: int) -> None:
    """Cache the second of ``text`` (``...SS.ffffffZ`` or ``...SSZ``, parsed as ``ns``)."""
    if len(text) == 20:
        if text[19] == "Z" and text[10] == "T":
            if len(_SECOND_NS) >= _SECOND_NS_MAX:
                _SECOND_NS.clear()
            _SECOND_NS[text[:19]] = ns
        return
    if text[26] != "Z" or text[19] != "." or text[10] != "T":
        return
    frac = text[20:26]
    if not (frac.isdigit() and frac.isascii()):
        return
    if len(_SECOND_NS) >= _SECOND_NS_MAX:
        _SECOND_NS.clear()
    _SECOND_NS[text[:19]] = ns - int(frac) * 1000


# SQLite result codes that mean the database or the disk failed, as opposed to
# a reducer's bad statement (SQLITE_ERROR, SQLITE_CONSTRAINT, SQLITE_MISMATCH...).
_STORAGE_ERRORS = frozenset(
    {
        "SQLITE_IOERR",
        "SQLITE_FULL",
        "SQLITE_CORRUPT",
        "SQLITE_NOTADB",
        "SQLITE_NOMEM",
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_CANTOPEN",
        "SQLITE_READONLY",
        "SQLITE_PROTOCOL",
        "SQLITE_INTERRUPT",
        "SQLITE_ABORT",
        "SQLITE_PERM",
    }
)


def is_storage_error(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means the database or disk failed (not a bad statement)."""
    name = getattr(exc, "sqlite_errorname", None)
    if not name:
        return False
    return "_".join(name.split("_")[:2]) in _STORAGE_ERRORS


def invalid_line_id(line: bytes) -> str:
    """The ``events.event_id`` of an invalid line (never a real event id)."""
    return "invalid:" + hashlib.sha256(line).hexdigest()[:32]


def _own_clock_mark(value: str | None, daemon_id: str) -> tuple[int, int]:
    """``(seq, ts_ns)`` of ``daemon_id``'s :data:`OWN_CLOCK_META` value.

    ``(0, 0)`` when there is none, it is unreadable or it is another daemon's.
    """
    parts = (value or "").rsplit(":", 2)
    if len(parts) != 3 or parts[0] != daemon_id:
        return 0, 0
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return 0, 0


def connect(path: Path) -> sqlite3.Connection:
    """Open the write connection (WAL, ``synchronous=NORMAL``, foreign keys, 5 s busy timeout).

    ``journal_size_limit``: a rebuild's last transaction may leave a WAL of
    hundreds of megabytes; it is cut back to this size once checkpointed.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def connect_reader(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open a read-only (``query_only``) connection; WAL readers never block the writer."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread, timeout=5.0)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def _utc_seconds() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _move_aside(db_path: Path, target: Path) -> Path:
    """Rename the database and its ``-wal``/``-shm`` to ``target`` (unique)."""
    n = 1
    base = target
    while target.exists():
        target = base.with_name(f"{base.name}.{n}")
        n += 1
    os.replace(db_path, target)
    for suffix in ("-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


def _remove_sidecars(db_path: Path) -> None:
    # A -wal without its database could be replayed into a new empty file.
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            os.unlink(db_path.with_name(db_path.name + suffix))
        except FileNotFoundError:
            pass


def _inspect(db_path: Path) -> tuple[str, int | None]:
    """Classify an existing database: ``thrum``/``go``/``blank``/``corrupt``, and its schema number."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=5.0)
    except sqlite3.Error:
        return "corrupt", None
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if not rows or rows[0][0] != "ok":
            return "corrupt", None
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key='thrum_schema'").fetchone()
            try:
                return "thrum", int(row[0]) if row else None
            except (TypeError, ValueError):
                return "thrum", None
        if "schema_version" in tables:
            try:
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
            except (sqlite3.Error, TypeError, ValueError):
                version = 0
            return "go", version
        return "blank", None
    except sqlite3.DatabaseError:
        return "corrupt", None
    finally:
        conn.close()


@dataclass
class OpenInfo:
    """What :meth:`Projection.open` found and did."""

    created: bool = False
    rebuild_reason: str | None = None
    corrupt_moved_to: str | None = None
    legacy_db: dict[str, Any] | None = None
    local_migration_warnings: list[str] = field(default_factory=list)


@dataclass
class IngestStats:
    """Counters of one ingest (rebuild, catch-up or writer batch)."""

    lines: int = 0
    new: int = 0
    duplicates: int = 0
    invalid: int = 0
    events: list[StoredEvent] = field(default_factory=list)
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "new": self.new,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
        }


def _blocks(rows: Iterator[StreamRow], size: int) -> Iterator[list[StreamRow]]:
    """``rows`` in lists of ``size`` (the last one shorter)."""
    while True:
        block = list(islice(rows, size))
        if not block:
            return
        yield block


def merge_sorted_blocks(streams: list[Iterator[list[StreamRow]]]) -> Iterator[list[StreamRow]]:
    """Merge streams of sorted rows, given in blocks, into sorted blocks.

    Like ``heapq.merge`` of the rows, but the per-row work is done by C code
    (``bisect`` and ``list.sort``): of the buffered blocks, every row up to
    the smallest *last* row of any buffer (the frontier) can be emitted, since
    all later rows of every stream are greater.  Rows compare by ``(ts,
    event_id, stream, offset)``, which is unique, so the objects they carry
    are never compared.
    """
    bufs: list[list[StreamRow]] = []
    los: list[int] = []  # where each buffer's unemitted rows start
    its: list[Iterator[list[StreamRow]]] = []
    for it in streams:
        first = next(it, None)
        if first:
            bufs.append(first)
            los.append(0)
            its.append(it)
    while len(bufs) > 1:
        frontier = min(b[-1] for b in bufs)
        out: list[StreamRow] = []
        k = 0
        while k < len(bufs):
            b, lo = bufs[k], los[k]
            cut = bisect_right(b, frontier, lo)
            if cut == len(b):
                out += b[lo:] if lo else b
                nxt = next(its[k], None)
                if nxt:
                    bufs[k], los[k] = nxt, 0
                else:
                    del bufs[k], los[k], its[k]
                    continue
            elif cut > lo:
                out += b[lo:cut]
                los[k] = cut
            k += 1
        out.sort()
        yield out
    if bufs:
        yield bufs[0][los[0] :]
        yield from its[0]


class _OutOfOrder(Exception):
    """A file was not sorted during an optimistic rebuild pass."""


class _Ctx(ApplyContext):
    """The :class:`ApplyContext` the projection hands to reducers."""

    def __init__(self, proj: Projection):
        self._proj = proj
        self.db = proj.conn
        self.live = False
        self.rebuilding = False
        self.memo = {}
        self.daemon_id = proj.daemon_id

    def provide(self, key: str) -> None:
        # Only a key some event waits on is worth resolving (_resolve skips the
        # others): a rebuild's every message.create provides one.
        proj = self._proj
        if key in proj._pending_keys:
            proj._provided.append(key)

    def tombstones_changed(self) -> None:
        self._proj._filter_stale = True

    def is_tombstoned(self, obj: Mapping[str, Any], key: SortKey) -> bool:
        f = self._proj.current_filter()
        return f is not None and bool(f(obj, key))


class _Spill:
    """Keys and offsets of out-of-order lines, sorted on demand."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, str, int, int, int]] = []
        self._db: sqlite3.Connection | None = None
        self.count = 0

    def add(self, ts: int, eid: str, file_idx: int, off: int, length: int) -> None:
        self.count += 1
        self._rows.append((ts, eid, file_idx, off, length))
        if len(self._rows) >= SPILL_IN_MEMORY:
            self._flush()

    def _flush(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("", isolation_level=None)  # private temporary file
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("CREATE TABLE s (ts INTEGER, eid TEXT, f INTEGER, off INTEGER, len INTEGER)")
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO s VALUES (?,?,?,?,?)", self._rows)
        self._db.execute("COMMIT")
        self._rows = []

    def sorted(self) -> Iterator[tuple[int, str, int, int, int]]:
        if self._db is None:
            self._rows.sort()
            yield from self._rows
            return
        if self._rows:
            self._flush()
        cur = self._db.execute("SELECT ts, eid, f, off, len FROM s ORDER BY ts, eid, f, off")
        while True:
            chunk = cur.fetchmany(2000)
            if not chunk:
                break
            yield from chunk

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._rows = []


class Projection:
    """The projection database and the machinery that applies events to it.

    Not thread-safe: use it from one thread at a time (the writer's).
    """

    def __init__(self, db_path: Path, conn: sqlite3.Connection, registry: EventTypeRegistry, daemon_id: str):
        self.db_path = db_path
        self.conn = conn
        self.registry = registry
        self.daemon_id = daemon_id
        self._types: dict[str, EventType] = registry.name_map()
        self._cur = conn.cursor()
        self._cur.row_factory = None
        self._ctx = _Ctx(self)
        self._provided: deque[str] = deque()
        self._pending_keys: set[str] = set()
        self._filter: TombstonePredicate | None = None
        self._filter_stale = True
        self._source = "local"
        self._collect: list[StoredEvent] | None = None
        self._collect_limit = 0
        self._collect_truncated = False
        self._stats = IngestStats()
        self.needs_rewrite = False
        self.counts: dict[str, int] = {}
        self._seq: int | None = None
        self._held = False  # see commit(hold=True)
        #: The newest ``ts_ns`` of an own event (``origin_daemon`` = ours) that
        #: an ingest since the last :meth:`reset_schema` indexed (0: none).
        self.own_ts_max = 0
        #: ``progress(bytes done, bytes in all)`` during :meth:`ingest_files`
        self.progress: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        db_path: Path,
        registry: EventTypeRegistry,
        daemon_id: str,
        *,
        on_legacy_db: Callable[[Path, int], None] | None = None,
    ) -> tuple[Projection, OpenInfo]:
        """Open (creating, moving aside or refusing as SPEC §7.1 says) and migrate.

        The returned :class:`OpenInfo` has ``rebuild_reason`` set when the
        caller must rebuild from the log before catching up (a new, blank or
        replaced database, an interrupted rebuild, changed projection
        migrations, an older schema).  A Go database (``schema_version`` table,
        no thrum ``meta``) is passed to ``on_legacy_db(path, version)``, which
        imports it and must move it away; without a handler it is renamed to
        ``messages.db.go-v<N>.bak`` next to it.  A newer ``thrum_schema``
        raises :class:`NewerDatabaseError`.
        """
        info = OpenInfo()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if db_path.exists():
            kind, schema = _inspect(db_path)
            if kind == "corrupt":
                moved = _move_aside(db_path, db_path.with_name(f"{db_path.name}.corrupt-{_utc_seconds()}"))
                info.corrupt_moved_to = str(moved)
                log.warning("projection %s failed quick_check; moved to %s and rebuilding", db_path, moved)
            elif kind == "go":
                version = schema or 0
                info.legacy_db = {"version": version, "path": str(db_path)}
                if on_legacy_db is not None:
                    on_legacy_db(db_path, version)
                if db_path.exists():
                    moved = _move_aside(db_path, db_path.with_name(f"{db_path.name}.go-v{version}.bak"))
                    info.legacy_db["moved_to"] = str(moved)
                    log.warning(
                        "Go database %s moved to %s; run thrum migrate to import its read state",
                        db_path,
                        moved,
                    )
            elif kind == "thrum":
                if schema is not None and schema > CORE_SCHEMA_VERSION:
                    raise NewerDatabaseError(
                        f"database written by a newer thrum (schema {schema}, this thrum reads "
                        f"{CORE_SCHEMA_VERSION}): {db_path}",
                        {"path": str(db_path), "schema": schema},
                    )
                if schema is None:
                    info.rebuild_reason = "no thrum_schema in meta"
                elif schema < CORE_SCHEMA_VERSION:
                    info.rebuild_reason = f"schema {schema} is older than {CORE_SCHEMA_VERSION}"
            else:
                info.rebuild_reason = "blank database"
        if not db_path.exists():
            _remove_sidecars(db_path)
            info.created = True
            info.rebuild_reason = "created"
        conn = connect(db_path)
        proj = cls(db_path, conn, registry, daemon_id)
        # A database about to be rebuilt may hold tables of another shape:
        # only ``meta`` is needed until the rebuild recreates the rest.
        conn.executescript(CORE_SCHEMA if info.rebuild_reason is None else _META_SCHEMA)
        if info.rebuild_reason is None:
            if proj.meta("rebuild_in_progress"):
                info.rebuild_reason = "interrupted rebuild"
            elif proj.meta("projection_fingerprint") != proj.fingerprint():
                info.rebuild_reason = "projection migrations changed"
        info.local_migration_warnings = proj.run_local_migrations()
        if info.rebuild_reason is None:
            proj.load_state()
        return proj, info

    def close(self) -> None:
        """Commit a held transaction and close the write connection."""
        try:
            self.commit_held()
        except sqlite3.Error:
            log.exception("could not commit the projection's held transaction at close")
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    # ------------------------------------------------------------------ meta & schema
    def meta(self, key: str) -> str | None:
        """The ``meta`` value for ``key`` (``None`` when unset)."""
        row = self._cur.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or, with ``None``, delete) a ``meta`` value."""
        if value is None:
            self._cur.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self._cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def fingerprint(self) -> str:
        """Hash of the core schema version and every projection migration."""
        data = [
            CORE_SCHEMA_VERSION,
            [[m.owner, list(m.steps)] for m in self.registry.migrations(local=False)],
            hashlib.sha256(CORE_SCHEMA.encode()).hexdigest(),
        ]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def _type_names(self) -> list[str]:
        return self.registry.all_names()

    def run_local_migrations(self) -> list[str]:
        """Apply new steps of every owner's local migrations; return warnings."""
        warnings: list[str] = []
        for m in self.registry.migrations(local=True):
            key = f"local_schema:{m.owner}"
            done = int(self.meta(key) or 0)
            if done > len(m.steps):
                warnings.append(
                    f"local tables of {m.owner!r} are at step {done}, newer than this plugin's {len(m.steps)}"
                )
                continue
            for i in range(done, len(m.steps)):
                self._run_script(
                    m.steps[i], {key: str(i + 1)}, what=f"local migration {i + 1} of {m.owner!r}"
                )
        return warnings

    def _run_script(self, script: str, meta: Mapping[str, str], *, what: str) -> None:
        try:
            self.conn.executescript("BEGIN;\n" + script + "\n;")
            for k, v in meta.items():
                self.set_meta(k, v)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise ThrumError(f"{what} failed: {exc}") from exc

    def projection_objects(self) -> list[tuple[str, str]]:
        """``(type, name)`` of every schema object the projection migrations create.

        Found by running the core schema, the local and then the projection
        migrations on an in-memory database.
        """
        mem = sqlite3.connect(":memory:", isolation_level=None)
        try:
            mem.executescript(CORE_SCHEMA)
            for m in self.registry.migrations(local=True):
                for step in m.steps:
                    try:
                        mem.executescript(step)
                    except sqlite3.Error:
                        break
            query = "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            before = set(mem.execute(query).fetchall())
            for m in self.registry.migrations(local=False):
                for i, step in enumerate(m.steps):
                    try:
                        mem.executescript(step)
                    except sqlite3.Error as exc:
                        raise ThrumError(
                            f"projection migration {i + 1} of {m.owner!r} failed: {exc}"
                        ) from exc
            after = set(mem.execute(query).fetchall())
        finally:
            mem.close()
        return sorted(after - before)

    def restore_schema_objects(self) -> list[str]:
        """Create the indexes and triggers of the migrations that are missing; return their names.

        A rebuild's start hooks may drop some (to fill tables in bulk) and
        commits along the way: when the rebuild then fails, this puts them
        back so the live path keeps its derived rows (the projection stays
        flagged ``rebuild_in_progress`` and is rebuilt at the next open).
        """
        mem = sqlite3.connect(":memory:", isolation_level=None)
        try:
            mem.executescript(CORE_SCHEMA)
            for m in [*self.registry.migrations(local=True), *self.registry.migrations(local=False)]:
                for step in m.steps:
                    try:
                        mem.executescript(step)
                    except sqlite3.Error:
                        break
            wanted = mem.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
                " WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name"
            ).fetchall()
        finally:
            mem.close()
        rows = self._cur.execute("SELECT type, name FROM sqlite_master").fetchall()
        have = {(r[0], r[1]) for r in rows}
        tables = {r[1] for r in rows if r[0] == "table"}
        made: list[str] = []
        for kind, name, table, sql in wanted:
            if (kind, name) not in have and table in tables:
                self.conn.execute(sql)
                made.append(name)
        return made

    def reset_schema(self) -> str:
        """Drop the projection tables and create them again, empty; return the new epoch.

        Local tables and ``local_schema:*`` meta rows are kept.  Leaves
        ``meta('rebuild_in_progress')`` set; :meth:`finish_rebuild` clears it.
        """
        objects = self.projection_objects()
        # Also drop what the previous build created: a step removed since then
        # (plugin downgraded or uninstalled) must not leave stale tables behind.
        try:
            previous = {(str(k), str(n)) for k, n in json.loads(self.meta("projection_objects") or "[]")}
        except (ValueError, TypeError):
            previous = set()
        order = {"trigger": 0, "view": 1, "index": 2, "table": 3}
        drops = [
            f'DROP {kind.upper()} IF EXISTS "{name}";'
            for kind, name in sorted(set(objects) | previous, key=lambda o: (order.get(o[0], 9), o[1]))
            if kind in order and name not in _CORE_TABLES and name != "meta"
        ]
        drops += [f"DROP TABLE IF EXISTS {t};" for t in _CORE_TABLES]
        steps = [step for m in self.registry.migrations(local=False) for step in m.steps]
        self.conn.execute("PRAGMA foreign_keys=OFF")
        # This SQLite may be built with SECURE_DELETE: dropping would then write
        # zeros over every page of the old tables (10x the time of the drop).
        # Their rows are all rebuilt from the log (purged rows were deleted, and
        # zeroed, when the purge was applied), so nothing private is left behind.
        secure_delete = self.conn.execute("PRAGMA secure_delete").fetchone()[0]
        self.conn.execute("PRAGMA secure_delete=FAST")
        try:
            self.conn.executescript(
                "BEGIN;\n"
                + "\n".join(drops)
                + "\nDELETE FROM meta WHERE key NOT LIKE 'local\\_schema:%' ESCAPE '\\';\n"
                + CORE_SCHEMA
                + "\n".join(f"{s}\n;" for s in steps)
            )
            epoch = secrets.token_hex(16)
            self.set_meta("thrum_schema", str(CORE_SCHEMA_VERSION))
            self.set_meta("epoch", epoch)
            self.set_meta("projection_fingerprint", self.fingerprint())
            self.set_meta("event_types", json.dumps(self._type_names()))
            self.set_meta("projection_objects", json.dumps(objects))
            self.set_meta("rebuild_in_progress", "1")
            for m in self.registry.migrations(local=False):
                self.set_meta(f"schema:{m.owner}", str(len(m.steps)))
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        finally:
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute(f"PRAGMA secure_delete={_SECURE_DELETE.get(secure_delete, 'ON')}")
        self._pending_keys = set()
        self._filter_stale = True
        self.counts = {}
        self.needs_rewrite = False
        self._seq = None
        self.own_ts_max = 0
        self._ctx.memo.clear()
        return epoch

    def run_rebuild_hooks(self, stage: str) -> None:
        """Run every owner's rebuild hook ``stage`` (``start`` or ``finish``), inside the transaction."""
        for hooks in self.registry.rebuild_hooks():
            fn = hooks.start if stage == "start" else hooks.finish
            if fn is None:
                continue
            try:
                fn(self.conn)
            except sqlite3.Error as exc:
                raise ThrumError(f"rebuild {stage} hook of {hooks.owner!r} failed: {exc}") from exc
        self._ctx.memo.clear()

    def finish_rebuild(self) -> None:
        """Record the build time and clear the in-progress flag."""
        self.begin()
        self.set_meta("built_at", format_ts(time.time_ns()))
        self.set_meta("rebuild_in_progress", None)
        # The rebuild indexed every line: no row needs scanning for own events.
        self._set_own_clock(self._last_seq(), self.own_ts_max)
        self.commit()

    def newest_own_ts(self) -> int | None:
        """The ``ts_ns`` of this daemon's newest indexed event (``None``: it has none); outside a transaction.

        Reads the mark in :data:`OWN_CLOCK_META` and scans only the ``events``
        rows indexed after it (a long history written by other daemons is not
        read whole at every start), then moves the mark to the last row.
        """
        since, newest = _own_clock_mark(self.meta(OWN_CLOCK_META), self.daemon_id)
        last = self._last_seq()
        if since > last:  # a mark of other rows (another database's)
            since, newest = 0, 0
        newest = max(newest, self.own_ts_max)
        if last > since:
            row = self._cur.execute(
                "SELECT ts_ns FROM events WHERE seq > ? AND origin_daemon=? AND state != 'invalid'"
                " ORDER BY seq DESC LIMIT 1",
                (since, self.daemon_id),
            ).fetchone()
            if row is not None and row[0] is not None:
                newest = max(newest, int(row[0]))
            self.begin()
            self._set_own_clock(last, newest)
            self.commit()
        return newest or None

    def _set_own_clock(self, seq: int, ts_ns: int) -> None:
        """Write the :data:`OWN_CLOCK_META` mark (read back by :func:`_own_clock_mark`)."""
        self.set_meta(OWN_CLOCK_META, f"{self.daemon_id}:{seq}:{ts_ns}")

    def load_state(self, *, recount: bool = True) -> None:
        """Load pending keys and state counts (after open or rebuild).

        ``recount=False`` keeps the running counters (exact after a rebuild
        that counted every event it indexed), sparing a scan of ``events``.
        """
        self._pending_keys = {
            r[0] for r in self._cur.execute("SELECT DISTINCT waits_for FROM events WHERE state='pending'")
        }
        if recount:
            self.recount()
        self._filter_stale = True

    def recount(self) -> None:
        """Recompute the per-state counts from ``events``."""
        self.counts = {
            r[0]: r[1] for r in self._cur.execute("SELECT state, COUNT(*) FROM events GROUP BY state")
        }

    @property
    def epoch(self) -> str | None:
        """``meta('epoch')``: changes on creation and every rebuild."""
        return self.meta("epoch")

    # ------------------------------------------------------------------ transactions
    @property
    def held(self) -> bool:
        """Whether writer batches wait, uncommitted, in an open transaction (see :meth:`commit`)."""
        return self._held

    def begin(self) -> None:
        """Start a write transaction (committing a held one first)."""
        if self._held:
            self.commit_held()
        self.conn.execute("BEGIN IMMEDIATE")

    def begin_batch(self) -> None:
        """Start the transaction of one writer batch, or go on with the held one (see :meth:`commit`)."""
        if not self._held:
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self, *, hold: bool = False) -> None:
        """Commit the write transaction; with ``hold``, leave it open for later batches.

        A held transaction is committed by the next :meth:`begin`, by
        :meth:`commit_held` or by a ``commit()`` without ``hold``; until then
        only this connection sees its changes, and :meth:`rollback` undoes
        all of it.  The writer holds only what is already durable in the log,
        so losing a held transaction loses nothing: a catch-up projects those
        lines again.
        """
        if self.needs_rewrite:
            self.set_meta("tombstone_rewrite", "1")
        if hold:
            self._held = True
            return
        self.conn.execute("COMMIT")
        self._held = False

    def commit_held(self) -> None:
        """Commit a held transaction (nothing when none is held); on failure roll it back and raise."""
        if not self._held:
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._held = False

    def rollback(self) -> None:
        """Roll back the write transaction, held batches included (and forget state it may have changed)."""
        self._seq = None
        self._held = False
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self._provided.clear()
            self.needs_rewrite = False
            try:
                self.load_state()
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ tombstones
    def build_filter(self, conn: sqlite3.Connection | None = None) -> TombstonePredicate | None:
        """Compose the predicates of every registered tombstone rule (``None`` if none applies)."""
        conn = conn or self.conn
        preds: list[TombstonePredicate] = []
        seen: set[int] = set()
        for et in self.registry.tombstone_types():
            rule = et.tombstone
            if rule is None or id(rule) in seen:
                continue
            seen.add(id(rule))
            try:
                pred = rule.build_filter(conn)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    continue
                raise
            if pred is not None:
                preds.append(pred)
        if not preds:
            return None
        if len(preds) == 1:
            return preds[0]

        def any_pred(obj: Mapping[str, Any], key: SortKey) -> bool:
            return any(p(obj, key) for p in preds)

        return any_pred

    def current_filter(self) -> TombstonePredicate | None:
        """The composite tombstone predicate for the current projection state."""
        if self._filter_stale:
            self._filter = self.build_filter()
            self._filter_stale = False
        return self._filter

    def is_tombstone_type(self, type_name: str) -> bool:
        """Whether ``type_name`` (or an alias) is a registered tombstone type."""
        et = self._types.get(type_name)
        return et is not None and et.tombstone is not None

    # ------------------------------------------------------------------ applying
    def start_ingest(
        self,
        *,
        source: str,
        live: bool,
        collect: bool,
        collect_limit: int = 1_000_000,
        rebuilding: bool = False,
    ) -> None:
        """Reset the counters and say how the next events arrive.

        ``rebuilding``: a full rebuild into empty tables (see :class:`ApplyContext`).
        """
        self._source = source
        self._ctx.live = live
        self._ctx.rebuilding = rebuilding
        self._ctx.memo.clear()
        self._collect = [] if collect else None
        self._collect_limit = collect_limit
        self._collect_truncated = False
        self._stats = IngestStats()

    def end_ingest(self) -> IngestStats:
        """Return the counters (and collected events) since :meth:`start_ingest`."""
        stats = self._stats
        if self._collect is not None:
            stats.events = self._collect
        stats.truncated = self._collect_truncated
        self._collect = None
        self._ctx.rebuilding = False
        self._stats = IngestStats()
        return stats

    def _emit(self, ev: StoredEvent) -> None:
        # Observers see an event once: when it is stored applied or ignored
        # (unknown type), or when it leaves pending.  Pending, tombstoned and
        # invalid events have no effect and are not reported.
        c = self._collect
        if c is not None and (ev.state == "applied" or ev.state == "ignored"):
            if len(c) < self._collect_limit:
                c.append(ev)
            else:
                self._collect_truncated = True

    def apply_event(
        self, obj: dict[str, Any], line: bytes, text: str | bytes, eid: str, ts_ns: int, file: str
    ) -> StoredEvent | None:
        """Index and apply one valid event; ``None`` when its ``event_id`` is already stored.

        Must run inside a transaction (:meth:`begin`).  ``text`` is the line
        as stored in ``events.line``.
        """
        return self.apply_many([(ts_ns, eid, obj, line, text, file, self._source)])[0]

    def apply_many(self, recs: list[Record]) -> list[StoredEvent | None]:
        """Index and apply valid events, in the order given (sort-key order).

        ``recs`` are ``(ts_ns, event_id, obj, line, text, file, source)``.
        Returns, per record, the stored event or ``None`` for a duplicate
        ``event_id``.  The ``events`` rows of the whole list are inserted with
        a few multi-row ``INSERT``s, then the reducers run one by one; a
        reducer never sees the ``events`` rows of later records as anything
        but ``applied``, so pending resolution is unaffected.  Must run inside
        a transaction.
        """
        return self._apply(
            [
                (ts, eid, i, 0, obj, line, text, file)
                for i, (ts, eid, obj, line, text, file, _s) in enumerate(recs)
            ],
            [r[6] for r in recs],
        )

    def _insert_events(self, params: list[Any], count: int) -> None:
        """Insert ``count`` ``events`` rows (7 values each, flat in ``params``), in order."""
        cur = self._cur
        sql = _INSERT_EVENTS_SQL
        for start in range(0, count, INSERT_ROWS):
            n = min(INSERT_ROWS, count - start)
            stmt = sql.get(n)
            if stmt is None:
                stmt = sql[n] = _INSERT_EVENT + ",(?,?,?,?,?,?,?)" * (n - 1)
            cur.execute(stmt, params[start * 7 : (start + n) * 7])

    def apply_rows(self, rows: Sequence[StreamRow], source: str | list[str]) -> list[StoredEvent | None]:
        """:meth:`apply_many` on stream rows; ``source`` is one for all rows or one per row."""
        return self._apply(rows, source)

    def _apply(self, rows: Sequence[StreamRow], source: str | list[str]) -> list[StoredEvent | None]:
        """:meth:`apply_rows` (the hot loop of every ingest)."""
        types = self._types
        filt = self.current_filter() if self._filter_stale else self._filter
        params: list[Any] = []
        metas: list[tuple[EventType | None, str, str, str]] = []
        add_meta = metas.append
        own = self.daemon_id
        own_ts_max = self.own_ts_max
        for ts_ns, eid, _i, _o, obj, _line, text, file in rows:
            typ = obj["type"]
            et = types.get(typ)
            origin = obj.get("origin_daemon", "")
            if type(origin) is not str:
                origin = ""
            elif origin == own and ts_ns > own_ts_max:
                own_ts_max = ts_ns
            if et is None:
                state = "ignored"
                name = typ
            else:
                name = et.name
                if (
                    et.tombstone is None
                    and filt is not None
                    and filt(obj, (ts_ns, eid.encode("utf-8", "surrogatepass")))
                ):
                    state = "tombstoned"
                    text = None
                else:
                    state = "applied"
            params += (
                eid,
                typ,
                ts_ns if ts_ns <= SQLITE_INT_MAX else f"{ts_ns:020d}",
                origin,
                file,
                state,
                text,
            )
            add_meta((et, name, origin, state))
        self.own_ts_max = own_ts_max
        count = len(metas)
        prev_seq = self._last_seq()
        before = self.conn.total_changes
        self._insert_events(params, count)
        inserted = self.conn.total_changes - before
        seqs: Iterable[int | None]
        if inserted == count:
            # Rows get consecutive numbers after the largest one (rows are never deleted).
            seqs = range(prev_seq + 1, prev_seq + 1 + inserted)
            self._seq = prev_seq + inserted
        else:  # some event_ids were already stored: find which rows went in
            got = self._cur.execute(
                "SELECT seq, event_id FROM events WHERE seq > ? ORDER BY seq", (prev_seq,)
            ).fetchall()
            self._seq = prev_seq + inserted
            seq_list: list[int | None] = []
            j = 0
            for k in range(count):
                if j < len(got) and got[j][1] == params[k * 7]:
                    seq_list.append(got[j][0])
                    j += 1
                else:
                    seq_list.append(None)
            seqs = seq_list
        stats = self._stats
        stats.new += inserted
        stats.duplicates += count - inserted
        counts = self.counts
        collect = self._collect
        provided = self._provided
        ctx = self._ctx
        one_source = source if type(source) is str else None
        n_applied = 0
        out: list[StoredEvent | None] = []
        for i, (rec, (et, name, origin, state), seq) in enumerate(zip(rows, metas, seqs, strict=True)):
            if seq is None:
                out.append(None)
                continue
            ts_ns, eid, _i, _o, obj, line, _text, file = rec
            ev = make_stored_event(
                obj,
                line,
                eid,
                name,
                ts_ns,
                f"0{ts_ns}|{eid}" if _K19_MIN <= ts_ns <= _K19_MAX else f"{ts_ns:020d}|{eid}",
                file,
                origin,
                one_source if one_source is not None else source[i],
                seq,
                state,
            )
            if state == "applied":
                assert et is not None
                if (self._filter_stale or self._filter is not filt) and et.tombstone is None:
                    # a reducer earlier in this list changed the tombstones
                    f = self.current_filter()
                    if f is not None and f(obj, ev.sort_key):
                        self._cur.execute(_SET_TOMBSTONED, (seq,))
                        ev = replace(ev, state="tombstoned")
                        state = "tombstoned"
                        self.needs_rewrite = True
                reducer = et.reducer
                if state == "applied" and reducer is not None:
                    try:
                        res = reducer(ctx, ev)
                    except Exception as exc:
                        ev = self._reducer_failed(ev, exc)
                    else:
                        if isinstance(res, Pending):
                            ev = self._set_pending(ev, res.key)
                        elif et.tombstone is not None:
                            self._filter_stale = True
                            self.needs_rewrite = True
                    state = ev.state
            elif state == "tombstoned":
                self.needs_rewrite = True
            if state == "applied":
                n_applied += 1
            else:
                counts[state] = counts.get(state, 0) + 1
            if collect is not None:
                self._emit(ev)
            out.append(ev)
            if provided:
                self._resolve()
        if n_applied:
            counts["applied"] = counts.get("applied", 0) + n_applied
        return out

    def _last_seq(self) -> int:
        """The largest ``events.seq`` (cached between statements; rows are never deleted)."""
        if self._seq is None:
            row = self._cur.execute("SELECT max(seq) FROM events").fetchone()
            self._seq = row[0] if row is not None and row[0] is not None else 0
        return self._seq

    def index_invalid(self, line: bytes, text: str | None, obj: Mapping[str, Any] | None, file: str) -> bool:
        """Index an invalid line; ``False`` when the same line is already indexed."""
        typ = obj.get("type") if obj is not None else None
        self._cur.execute(
            _INSERT_INVALID,
            (
                invalid_line_id(line),
                typ if type(typ) is str else None,
                file,
                text if text is not None else line,
            ),
        )
        if self._cur.rowcount == 1:
            self._seq = self._cur.lastrowid
            self.counts["invalid"] = self.counts.get("invalid", 0) + 1
            self._stats.invalid += 1
            return True
        return False

    def _reduce(self, et: EventType, ev: StoredEvent) -> StoredEvent:
        """Run ``et``'s reducer for ``ev`` (already indexed ``applied``); return the final event."""
        reducer = et.reducer
        if reducer is None:
            return ev
        try:
            res = reducer(self._ctx, ev)
        except Exception as exc:
            return self._reducer_failed(ev, exc)
        if isinstance(res, Pending):
            return self._set_pending(ev, res.key)
        if et.tombstone is not None:
            self._filter_stale = True
            self.needs_rewrite = True
        return ev

    def _reducer_failed(self, ev: StoredEvent, exc: Exception) -> StoredEvent:
        """Index ``ev`` invalid after its reducer raised ``exc`` (storage errors propagate)."""
        if isinstance(exc, InvalidEvent):
            log.warning("event %s (%s) is invalid: %s", ev.event_id, ev.type, exc)
            return self._set_state(ev, "invalid")
        if isinstance(exc, sqlite3.Error) and is_storage_error(exc):
            raise exc  # the database itself failed: the batch fails (SPEC §6.5)
        log.error("reducer of %s failed for event %s; indexed invalid", ev.type, ev.event_id, exc_info=exc)
        return self._set_state(ev, "invalid")

    def _set_pending(self, ev: StoredEvent, key: str) -> StoredEvent:
        self._cur.execute("UPDATE events SET state='pending', waits_for=? WHERE seq=?", (key, ev.seq))
        self._pending_keys.add(key)
        return replace(ev, state="pending")

    def _set_state(self, ev: StoredEvent, state: str) -> StoredEvent:
        self._cur.execute("UPDATE events SET state=?, waits_for=NULL WHERE seq=?", (state, ev.seq))
        return replace(ev, state=state)

    def _resolve(self) -> None:
        """Re-apply events pending on provided keys, in sort-key order (cascading)."""
        provided = self._provided
        while provided:
            key = provided.popleft()
            if key not in self._pending_keys:
                continue
            self._pending_keys.discard(key)
            rows = self._cur.execute(
                "SELECT seq, event_id, line, file, ts_ns, origin_daemon FROM events "
                "WHERE state='pending' AND waits_for=? ORDER BY ts_ns, event_id",
                (key,),
            ).fetchall()
            self._reapply(rows, from_state="pending")

    def _reapply(self, rows: Iterable[tuple[Any, ...]], *, from_state: str) -> int:
        """Apply again stored rows (pending, or ignored of a newly registered type)."""
        n = 0
        counts = self.counts
        for seq, eid, text, file, db_ts_ns, origin in rows:
            ts_ns = int(db_ts_ns)
            raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text or b"")
            obj, _ = decode_line(raw)
            counts[from_state] = counts.get(from_state, 1) - 1
            et = self._types.get(obj.get("type")) if obj is not None else None  # type: ignore[arg-type]
            if obj is None or et is None:
                state = "invalid" if obj is None else "ignored"
                self._cur.execute("UPDATE events SET state=?, waits_for=NULL WHERE seq=?", (state, seq))
                counts[state] = counts.get(state, 0) + 1
                continue
            ev = make_stored_event(
                obj,
                raw,
                eid,
                et.name,
                ts_ns,
                f"{ts_ns:020d}|{eid}",
                file,
                origin,
                self._source,
                seq,
                "applied",
            )
            f = self.current_filter() if et.tombstone is None else None
            if f is not None and f(obj, ev.sort_key):
                self._cur.execute(
                    "UPDATE events SET state='tombstoned', waits_for=NULL, line=NULL WHERE seq=?", (seq,)
                )
                self.needs_rewrite = True
                counts["tombstoned"] = counts.get("tombstoned", 0) + 1
                continue
            self._cur.execute("UPDATE events SET state='applied', waits_for=NULL WHERE seq=?", (seq,))
            ev = self._reduce(et, ev)
            counts[ev.state] = counts.get(ev.state, 0) + 1
            if ev.state == "applied":
                self._emit(ev)
                n += 1
        return n

    def reapply_new_types(self) -> int:
        """Apply ``ignored`` events whose type became registered since the last open."""
        stored = self.meta("event_types")
        names = self._type_names()
        try:
            before = set(json.loads(stored)) if stored else set()
        except ValueError:
            before = set()
        new = sorted(set(names) - before)
        n = 0
        if new:
            marks = ",".join("?" * len(new))
            rows = self._cur.execute(
                f"SELECT seq, event_id, line, file, ts_ns, origin_daemon FROM events "
                f"WHERE state='ignored' AND type IN ({marks}) ORDER BY ts_ns, event_id",
                new,
            ).fetchall()
            n = self._reapply(rows, from_state="ignored")
            self._resolve()
        if stored != json.dumps(names):
            self.set_meta("event_types", json.dumps(names))
        return n

    # ------------------------------------------------------------------ reading files
    @staticmethod
    def parse(line: bytes) -> tuple[dict[str, Any] | None, str | None, str | None, int]:
        """Classify a line: ``(obj, text, event_id, ts_ns)``; ``event_id`` is ``None`` when invalid."""
        if len(line) >= MAX_LINE_BYTES:
            return None, None, None, -1
        obj, text = decode_line(line)
        if obj is None:
            return None, text, None, -1
        typ = obj.get("type")
        if type(typ) is not str or not typ:
            return obj, text, None, -1
        ts = ts_ns(obj.get("timestamp"))
        if ts is None:
            return obj, text, None, -1
        eid = obj.get("event_id")
        if type(eid) is not str or not eid:
            eid = event_id_of(obj)
        return obj, text, eid, ts

    def ingest_files(
        self,
        sync_dir: Path,
        sources: list[tuple[str, int]],
        *,
        mode: str = "auto",
        commit_every: int | None = None,
    ) -> dict[str, int]:
        """Index and apply every line of ``sources`` (``(file, offset)``) in sort-key order.

        Runs inside the current transaction; with ``commit_every`` it commits
        (and begins again) every that many new events.  ``mode``: ``memory``,
        ``optimistic`` (streams assuming sorted files; raises
        :class:`_OutOfOrder` when one is not), ``scan`` (two passes) or
        ``auto`` (``memory`` for small inputs, else ``scan``).  Returns the
        end offset of the last complete line read per file.
        """
        total = 0
        for rel, off in sources:
            try:
                total += max(0, (sync_dir / rel).stat().st_size - off)
            except FileNotFoundError:
                pass
        if mode == "auto":
            mode = "memory" if total <= IN_MEMORY_BYTES else "scan"
        if mode == "memory":
            ends = self._ingest_memory(sync_dir, sources)
        else:
            ends = self._ingest_stream(
                sync_dir, sources, total, optimistic=(mode == "optimistic"), commit_every=commit_every
            )
        if self.progress is not None:
            self.progress(total, total)
        return ends

    def _ingest_memory(self, sync_dir: Path, sources: list[tuple[str, int]]) -> dict[str, int]:
        rows: list[StreamRow] = []
        ends: dict[str, int] = {}
        for idx, (rel, offset) in enumerate(sources):
            rows.extend(self._file_rows(sync_dir, idx, rel, offset, ends, order=_ANY))
        rows.sort()  # (ts, event_id, file index, offset) is unique: objects are never compared
        source = self._source
        for start in range(0, len(rows), APPLY_CHUNK):
            self._apply(rows[start : start + APPLY_CHUNK], source)
        return ends

    def _ingest_stream(
        self,
        sync_dir: Path,
        sources: list[tuple[str, int]],
        total: int,
        *,
        optimistic: bool,
        commit_every: int | None,
    ) -> dict[str, int]:
        spill = _Spill()
        ends: dict[str, int] = {}
        try:
            if not optimistic:
                # Pass 1: find the lines that break each file's order.
                scratch: dict[str, int] = {}
                for idx, (rel, offset) in enumerate(sources):
                    mts, meid = -1, ""
                    for ts, eid, _i, off, _obj, line, _t, _r in self._file_rows(
                        sync_dir, idx, rel, offset, scratch, order=_ANY, scan_only=True
                    ):
                        if ts > mts or (ts == mts and eid >= meid):
                            mts, meid = ts, eid
                        else:
                            spill.add(ts, eid, idx, off, len(line))
            order = _STRICT if optimistic else _SKIP
            streams: list[Iterator[StreamRow]] = [
                self._file_rows(sync_dir, idx, rel, offset, ends, order=order)
                for idx, (rel, offset) in enumerate(sources)
            ]
            if spill.count:
                streams.append(self._spill_stream(sync_dir, sources, spill))
            apply = self._apply
            progress = self.progress
            source = self._source
            since_commit = 0
            done = 0
            size = min(MERGE_BLOCK, max(MERGE_BLOCK_MIN, MERGE_ROWS // max(1, len(streams))))
            # Merged blocks are small when there are many files: gather them
            # into chunks of APPLY_CHUNK rows, so every chunk's ``events`` rows
            # go in with the same few multi-row INSERT statements.
            pending: list[StreamRow] = []
            blocks: Iterator[list[StreamRow]]
            if len(streams) > HEAP_MERGE_STREAMS:
                merged = heapq.merge(*streams)
                blocks = iter(lambda: list(islice(merged, APPLY_CHUNK)), [])
            else:
                blocks = merge_sorted_blocks([_blocks(st, size) for st in streams])
            while True:
                block = next(blocks, None)
                if block is not None:
                    pending += block
                    if len(pending) < APPLY_CHUNK:
                        continue
                elif not pending:
                    break
                # the whole chunks gathered so far (everything at the end)
                cut = len(pending) if block is None else len(pending) - len(pending) % APPLY_CHUNK
                ready, pending = pending[:cut], pending[cut:]
                for start in range(0, cut, APPLY_CHUNK):
                    chunk = ready[start : start + APPLY_CHUNK]
                    apply(chunk, source)
                    if progress is not None:
                        done += sum(len(r[5]) + 1 for r in chunk)
                        progress(done, total)
                    since_commit += len(chunk)
                    if commit_every is not None and since_commit >= commit_every:
                        self.commit()
                        self.begin()
                        since_commit = 0
        finally:
            spill.close()
        return ends

    def _file_rows(
        self,
        sync_dir: Path,
        idx: int,
        rel: str,
        offset: int,
        ends: dict[str, int],
        *,
        order: int,
        scan_only: bool = False,
    ) -> Iterator[StreamRow]:
        """Yield the valid lines of one file, from ``offset``, as stream rows.

        Invalid lines are indexed as they are met (not with ``scan_only``,
        which also leaves the line counter alone).  ``order``: ``_ANY`` yields
        every valid line; ``_SKIP`` only the file's in-order subsequence (the
        other lines were spilled by a first pass); ``_STRICT`` raises
        :class:`_OutOfOrder` at the first line out of order.  Sets
        ``ends[rel]`` to the end of the last complete line once exhausted.

        This is :func:`iter_lines` plus :meth:`parse`, inlined: the common
        line (canonical JSON of an object with a type, a timestamp in thrum's
        own format and an event id) costs one ``decode``, an ``orjson`` parse
        checked by printing it back (see :mod:`thrum_core.events.lineparse`)
        and a few dict look-ups; anything else goes through :meth:`parse`.
        """
        loads = fast_loads
        dumps = fast_dumps
        digit_runs = DIGIT_RUNS
        long_digits = LONG_DIGITS
        max_depth = MAX_FAST_DEPTH
        shallow = SHALLOW_LINE + 1  # n counts the newline
        parse_ts = ts_ns
        seconds = _SECOND_NS
        slow = self.parse
        index_invalid = None if scan_only else self.index_invalid
        mts, meid = -1, ""
        pos = offset
        nlines = 0
        try:
            f = open(sync_dir / rel, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            ends[rel] = offset
            return
        try:
            with f:
                if offset:
                    f.seek(offset)
                for raw in f:
                    n = len(raw)
                    if raw[-1] != 0x0A:  # torn tail: not a line (SPEC §6.6)
                        break
                    off = pos
                    pos += n
                    line = raw[:-1]
                    if n == 1 or line.isspace():
                        continue
                    nlines += 1
                    obj: Any = None
                    text: str | None = None
                    if n <= MAX_LINE_BYTES:
                        # lineparse.fast_object, inlined: orjson where it surely
                        # gives the standard library's object, else the slow path.
                        try:
                            text = line.decode("utf-8")
                            if n <= shallow or line.count(b"[") + line.count(b"{") <= max_depth:
                                obj = loads(line)
                                if type(obj) is not dict or (
                                    dumps(obj) != line and long_digits in line.translate(digit_runs)
                                ):
                                    obj = None
                        except (ValueError, TypeError):
                            # invalid UTF-8, orjson.JSONDecodeError; orjson.JSONEncodeError
                            # (too deep for orjson.dumps): leave it to the slow path
                            obj = None
                    if obj is not None:
                        typ = obj.get("type")
                        tsv = obj.get("timestamp")
                        if type(typ) is not str or not typ:
                            ts = None
                        elif (
                            type(tsv) is str
                            and len(tsv) == 27
                            and tsv[26] == "Z"
                            and tsv[19] == "."
                            and (base := seconds.get(tsv[:19])) is not None
                            and (frac := tsv[20:26]).isdigit()
                            and frac.isascii()
                        ):
                            # thrum's own format, in a second seen before (parse_ts gives the same)
                            ts = base + int(frac) * 1000
                        elif (
                            type(tsv) is str
                            and len(tsv) == 20
                            and tsv[19] == "Z"
                            and (base := seconds.get(tsv[:19])) is not None
                        ):
                            ts = base  # the Go tool's whole seconds, in a second seen before
                        else:
                            ts = parse_ts(tsv)
                            if ts is not None and type(tsv) is str and (len(tsv) == 27 or len(tsv) == 20):
                                _remember_second(tsv, ts)
                        if ts is None:
                            if index_invalid is not None:
                                index_invalid(line, text, obj, rel)
                            continue
                        eid = obj.get("event_id")
                        if type(eid) is not str or not eid:
                            eid = event_id_of(obj)
                    else:
                        obj, text, eid_, ts = slow(line)
                        if eid_ is None or obj is None or text is None:
                            if index_invalid is not None:
                                index_invalid(line, text, obj, rel)
                            continue
                        eid = eid_
                    if order:
                        if ts > mts or (ts == mts and eid >= meid):
                            mts, meid = ts, eid
                        elif order == _STRICT:
                            raise _OutOfOrder(rel)
                        else:
                            continue  # spilled by pass 1: comes from the spill stream
                    yield (ts, eid, idx, off, obj, line, text, rel)
        finally:
            if not scan_only:
                self._stats.lines += nlines
        ends[rel] = pos

    def _spill_stream(
        self, sync_dir: Path, sources: list[tuple[str, int]], spill: _Spill
    ) -> Iterator[StreamRow]:
        fds: dict[int, int] = {}
        stream_idx = len(sources)
        try:
            for ts, eid, fidx, off, length in spill.sorted():
                fd = fds.get(fidx)
                if fd is None:
                    fd = fds[fidx] = os.open(sync_dir / sources[fidx][0], os.O_RDONLY | os.O_CLOEXEC)
                line = os.pread(fd, length, off)
                obj, text, _eid, _ts = self.parse(line)
                if obj is None or text is None:  # the file changed under us; skip
                    continue
                yield (ts, eid, stream_idx, off, obj, line, text, sources[fidx][0])
        finally:
            for fd in fds.values():
                os.close(fd)

    # ------------------------------------------------------------------ projection_files
    def file_records(self) -> dict[str, tuple[int, int, str | None]]:
        """``projection_files`` as ``{path: (size, mtime_ns, tail_sha256)}``."""
        return {
            r[0]: (r[1], r[2], r[3])
            for r in self._cur.execute("SELECT path, size, mtime_ns, tail_sha256 FROM projection_files")
        }

    def record_file(self, sync_dir: Path, rel: str, size: int) -> None:
        """Remember that ``rel`` is projected up to ``size`` bytes (inside a transaction)."""
        path = sync_dir / rel
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            self._cur.execute("DELETE FROM projection_files WHERE path=?", (rel,))
            return
        tail = file_tail_sha256(path, size)
        self._cur.execute(
            "INSERT OR REPLACE INTO projection_files(path, size, mtime_ns, tail_sha256) VALUES (?,?,?,?)",
            (rel, size, mtime, tail),
        )

    def plan_catch_up(self, sync_dir: Path) -> tuple[list[tuple[str, int]], list[str]]:
        """Which files to read from where (SPEC §7.1), and recorded files that are gone."""
        records = self.file_records()
        files = list_log_files(sync_dir)
        sources: list[tuple[str, int]] = []
        for rel in files:
            rec = records.get(rel)
            if rec is None:
                sources.append((rel, 0))
                continue
            size, _mtime, tail = rec
            try:
                now = (sync_dir / rel).stat().st_size
            except FileNotFoundError:
                continue
            if now >= size and tail is not None and file_tail_sha256(sync_dir / rel, size) == tail:
                if now > size:
                    sources.append((rel, size))
            else:
                sources.append((rel, 0))
        gone = sorted(set(records) - set(files))
        return sources, gone

    # ------------------------------------------------------------------ tombstone rewrites
    def rewrite_tombstoned(self, sync_dir: Path) -> dict[str, int]:
        """Rewrite every log file without the lines the tombstones cover (SPEC §6.7).

        Marks their ``events`` rows ``tombstoned`` (their line is cleared) and
        records the rewritten files.  Returns ``{file: lines removed}``.
        """
        pred = self.build_filter()
        removed_by_file: dict[str, int] = {}
        if pred is not None:
            types = self._types
            for rel in list_log_files(sync_dir):
                # A read-only pass finds the covered lines; only files holding
                # some are rewritten (matching the exact bytes, no second parse).
                covered: set[bytes] = set()
                eids: list[str] = []
                for _off, line in iter_lines(sync_dir / rel):
                    obj, _text, eid, ts = self.parse(line)
                    if obj is None or eid is None:
                        continue
                    et = types.get(obj["type"])
                    if et is not None and et.tombstone is not None:
                        continue
                    if pred(obj, (ts, eid.encode("utf-8", "surrogatepass"))):
                        covered.add(line)
                        eids.append(eid)
                if not covered:
                    continue
                # Rows first, then the file: after a crash in between, the
                # still-set meta flag redoes the (idempotent) file rewrite.
                self.begin()
                try:
                    self._cur.executemany(_MARK_TOMBSTONED, [(e,) for e in eids])
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.rollback()
                    raise
                result = rewrite_file(sync_dir / rel, covered.__contains__)
                if not result.removed:
                    continue
                removed_by_file[rel] = result.removed
                self.begin()
                try:
                    if result.deleted_file:
                        self._cur.execute("DELETE FROM projection_files WHERE path=?", (rel,))
                    else:
                        self.record_file(sync_dir, rel, result.size)
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.rollback()
                    raise
        self.begin()
        self.set_meta("tombstone_rewrite", None)
        self.conn.execute("COMMIT")
        self.needs_rewrite = False
        if removed_by_file:
            self.recount()
        return removed_by_file

    # ------------------------------------------------------------------ stats
    def state_counts(self, *, exact: bool = False) -> dict[str, int]:
        """Events per state (from the running counters, or recounted with ``exact``)."""
        if exact:
            self.recount()
        return {s: self.counts.get(s, 0) for s in ("applied", "pending", "ignored", "invalid", "tombstoned")}
