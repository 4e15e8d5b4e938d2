"""The durable event store: the kernel's data path (SPEC §6, §7).

:class:`EventStore` ties the log files, the projection and the single writer
together::

    store = EventStore(paths, registry, daemon_id, on_applied=observe)
    report = store.open()                 # torn repair, open/create DB, migrations, catch-up
    async with trio.open_nursery() as n:
        await n.start(store.run_writer)
        stored = await store.submit([{"type": "notes.create", ...}])
        rows = store.reader().execute("SELECT ...").fetchall()
        ...
        await store.stop_writer()
    store.close()

Threading: ``open``, ``rebuild``, ``catch_up_now``, ``write_now`` and
``close`` are blocking.  While the writer runs, everything that writes the
sync dir or the projection must go through it: ``submit``, ``run_exclusive``
(merge, restore, purge rewrites; call ``rebuild``/``catch_up_now`` inside
it) and ``catch_up``.  ``reader()``, ``stats()`` and ``tombstone_filter()``
may be used from anywhere.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from thrum_core.errors import InternalError
from thrum_core.events import projection as _projection
from thrum_core.events.checkpoint import Checkpointer
from thrum_core.events.log import AppendLog, TornRepair, list_log_files, repair_torn
from thrum_core.events.projection import (
    IngestStats,
    OpenInfo,
    Projection,
    _OutOfOrder,
    connect_reader,
    decode_line,
)
from thrum_core.events.types import EventTypeRegistry, SortKey, StoredEvent, TombstonePredicate
from thrum_core.events.writer import BatchProcessor, Submission, Writer
from thrum_core.ids import event_id_of
from thrum_core.timefmt import MonotonicClock, parse_ts_ns

__all__ = ["EventStore", "OpenReport", "RebuildReport", "StorePaths", "TombstoneFilter"]

log = logging.getLogger("thrum.events")

T = TypeVar("T")


class StorePaths(Protocol):
    """The paths the store uses (:class:`thrum_core.paths.ThrumPaths` has them)."""

    @property
    def sync_dir(self) -> Path: ...
    @property
    def db_path(self) -> Path: ...
    @property
    def torn_dir(self) -> Path: ...
    @property
    def var_dir(self) -> Path: ...


class TombstoneFilter:
    """ "Is this event tombstoned?" for merges and peer pulls (SPEC §6.7 (3)).

    A snapshot of the tombstones in the projection when it was made.  Events
    of tombstone types are never covered.  ``bool(f)`` is ``False`` when no
    tombstone covers anything (callers may then skip parsing).
    """

    def __init__(self, pred: TombstonePredicate | None, tombstone_types: frozenset[str]):
        self._pred = pred
        self._tombstone_types = tombstone_types

    def __bool__(self) -> bool:
        return self._pred is not None

    def __call__(self, obj: Mapping[str, Any], key: SortKey) -> bool:
        """Whether the event ``obj`` with sort ``key`` is covered."""
        if self._pred is None or obj.get("type") in self._tombstone_types:
            return False
        return bool(self._pred(obj, key))

    def line(self, raw: bytes) -> bool:
        """Whether a raw JSONL line is covered (invalid lines never are)."""
        if self._pred is None:
            return False
        obj, _text = decode_line(raw)
        if obj is None:
            return False
        ts = parse_ts_ns(obj.get("timestamp"))
        if ts is None or type(obj.get("type")) is not str:
            return False
        return self(obj, (ts, event_id_of(obj).encode("utf-8", "surrogatepass")))


@dataclass
class OpenReport:
    """What :meth:`EventStore.open` found and did."""

    created: bool = False
    rebuilt: bool = False
    rebuild_reason: str | None = None
    corrupt_moved_to: str | None = None
    legacy_db: dict[str, Any] | None = None
    torn: list[TornRepair] = field(default_factory=list)
    lines: int = 0
    new: int = 0
    duplicates: int = 0
    invalid: int = 0
    reapplied: int = 0
    tombstone_rewrites: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    epoch: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "rebuilt": self.rebuilt,
            "rebuild_reason": self.rebuild_reason,
            "corrupt_moved_to": self.corrupt_moved_to,
            "legacy_db": self.legacy_db,
            "torn": [t.to_json() for t in self.torn],
            "lines": self.lines,
            "new": self.new,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "reapplied": self.reapplied,
            "tombstone_rewrites": dict(self.tombstone_rewrites),
            "warnings": list(self.warnings),
            "states": dict(self.states),
            "epoch": self.epoch,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RebuildReport:
    """What :meth:`EventStore.rebuild` did."""

    files: int = 0
    lines: int = 0
    events: int = 0
    duplicates: int = 0
    invalid: int = 0
    passes: int = 1
    tombstone_rewrites: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    epoch: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "passes": self.passes,
            "tombstone_rewrites": dict(self.tombstone_rewrites),
            "states": dict(self.states),
            "epoch": self.epoch,
            "seconds": round(self.seconds, 3),
        }


class EventStore:
    """The event log, its SQLite projection and the single writer of both.

    ``on_applied(events)`` is called (in the writer's observer task, after the
    submitters of the batch were answered) with the events a writer batch or a
    live catch-up stored, in apply order: each event once, when it is stored
    ``applied`` or ``ignored`` (unknown type) or when it leaves ``pending``.
    Pending, tombstoned, invalid and duplicate events are not reported.
    Rebuilds and the start-up catch-up report nothing.

    ``on_legacy_db(path, version)`` imports a Go database found at the
    projection's path before it is moved aside (see :meth:`Projection.open`).
    """

    def __init__(
        self,
        paths: StorePaths,
        registry: EventTypeRegistry,
        daemon_id: str,
        *,
        on_applied: Callable[[list[StoredEvent]], None] | None = None,
        on_legacy_db: Callable[[Path, int], None] | None = None,
        clock: MonotonicClock | None = None,
    ):
        self.paths = paths
        self.sync_dir = Path(paths.sync_dir)
        self.registry = registry
        self.daemon_id = daemon_id
        self.on_applied = on_applied
        self.on_legacy_db = on_legacy_db
        self.clock = clock or MonotonicClock()
        self._proj: Projection | None = None
        self._processor: BatchProcessor | None = None
        self._writer: Writer | None = None
        self._checkpointer: Checkpointer | None = None
        self._appender: AppendLog | None = None
        self._in_exclusive = False
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self.open_report: OpenReport | None = None

    # ------------------------------------------------------------------ properties
    @property
    def projection(self) -> Projection:
        """The open projection (raises before :meth:`open`)."""
        if self._proj is None:
            raise RuntimeError("the event store is not open")
        return self._proj

    @property
    def degraded(self) -> bool:
        """Whether durable events could not be projected (SPEC §6.5); cleared by a good catch-up."""
        return self._processor is not None and self._processor.degraded

    @property
    def epoch(self) -> str | None:
        """``meta('epoch')`` of the projection."""
        return self.projection.epoch

    def changes_except(self, types: frozenset[str]) -> tuple[int, int] | None:
        """A key for read caches: :meth:`BatchProcessor.changes_except` of this opening of the store.

        ``None`` before :meth:`open` (cache nothing).
        """
        proc = self._processor
        return None if proc is None else (id(proc), proc.changes_except(types))

    @property
    def writer_running(self) -> bool:
        """Whether the writer task is serving."""
        return self._writer is not None and self._writer.running

    # ------------------------------------------------------------------ open / close
    def open(self) -> OpenReport:
        """Repair torn tails, open (or create) the projection, migrate, catch up (blocking)."""
        started = time.monotonic()
        report = OpenReport()
        self.sync_dir.mkdir(parents=True, exist_ok=True)
        report.torn = repair_torn(self.sync_dir, Path(self.paths.torn_dir))
        for t in report.torn:
            log.warning("repaired torn tail of %s (%s, %d bytes)", t.file, t.action, t.bytes)
        proj, info = Projection.open(
            Path(self.paths.db_path), self.registry, self.daemon_id, on_legacy_db=self.on_legacy_db
        )
        self._proj = proj
        self._appender = AppendLog(self.sync_dir)
        self._processor = BatchProcessor(
            sync_dir=self.sync_dir,
            registry=self.registry,
            projection=proj,
            appender=self._appender,
            daemon_id=self.daemon_id,
            catch_up=self._catch_up_for_writer,
            clock=self.clock,
        )
        self._apply_info(report, info)
        if info.rebuild_reason is not None:
            rb = self._rebuild(None)
            report.rebuilt = True
            report.lines, report.new = rb.lines, rb.events
            report.duplicates, report.invalid = rb.duplicates, rb.invalid
            report.tombstone_rewrites = rb.tombstone_rewrites
        else:
            stats = self._catch_up(live=False, source="catchup")
            report.lines, report.new = stats.lines, stats.new
            report.duplicates, report.invalid = stats.duplicates, stats.invalid
            proj.begin()
            try:
                proj.start_ingest(source="catchup", live=False, collect=False)
                report.reapplied = proj.reapply_new_types()
                proj.end_ingest()
                proj.commit()
            except BaseException:
                proj.rollback()
                raise
            if proj.needs_rewrite or proj.meta("tombstone_rewrite"):
                report.tombstone_rewrites.update(self._rewrite())
        self._observe_clock()
        report.states = proj.state_counts()
        report.epoch = proj.epoch
        report.seconds = time.monotonic() - started
        self.open_report = report
        return report

    @staticmethod
    def _apply_info(report: OpenReport, info: OpenInfo) -> None:
        report.created = info.created
        report.rebuild_reason = info.rebuild_reason
        report.corrupt_moved_to = info.corrupt_moved_to
        report.legacy_db = info.legacy_db
        report.warnings.extend(info.local_migration_warnings)

    def _observe_clock(self) -> None:
        newest = self.projection.newest_own_ts()
        if newest is not None:
            self.clock.observe(newest)

    def close(self) -> None:
        """Record file positions and close everything (the writer must be stopped)."""
        if self.writer_running:
            raise RuntimeError("stop the writer before closing the store")
        if self._processor is not None:
            try:
                self._processor.flush_files()
            except sqlite3.Error:
                log.exception("could not record the log positions at close")
        if self._processor is not None:
            self._processor.close()
        if self._appender is not None:
            self._appender.close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        if self._proj is not None:
            self._proj.close()
            self._proj = None

    # ------------------------------------------------------------------ writer
    async def run_writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: serve submissions until :meth:`stop_writer`."""
        if self._processor is None:
            raise RuntimeError("open the event store before running its writer")
        self._writer = Writer(self._processor, on_applied=self.on_applied)
        checkpointer = self._checkpointer = Checkpointer(self.projection.conn, Path(self.paths.db_path))
        checkpointer.start()
        try:
            await self._writer.run(task_status=task_status)
        finally:
            checkpointer.stop()

    async def stop_writer(self) -> None:
        """Stop accepting submissions, drain the queue and wait for the writer to return."""
        if self._writer is not None:
            await self._writer.aclose()

    async def submit(
        self,
        events: Sequence[Mapping[str, Any]] | None = None,
        *,
        source: str = "local",
        lines: Sequence[bytes] | None = None,
    ) -> list[StoredEvent]:
        """Write events (or verbatim ``lines`` from sync/peers) durably and project them.

        Local events get ``event_id``, ``timestamp``, ``v`` and
        ``origin_daemon`` unless set, and are validated with their type's
        model.  Returns one :class:`StoredEvent` per input, in order (see its
        ``state`` for duplicates and tombstoned inputs).
        """
        if self._writer is None or not self._writer.running:
            raise InternalError("the event writer is not running")
        return await self._writer.submit(events, source=source, lines=lines)

    async def submit_lines(self, lines: Sequence[bytes], *, source: str = "peer") -> list[StoredEvent]:
        """Write lines pulled from a peer or merged from git verbatim (see :meth:`submit`)."""
        return await self.submit(None, source=source, lines=lines)

    def write_now(
        self,
        events: Sequence[Mapping[str, Any]] | None = None,
        *,
        source: str = "import",
        lines: Sequence[bytes] | None = None,
    ) -> list[StoredEvent]:
        """Blocking write for offline tools (``thrum migrate``) while no writer runs."""
        if self.writer_running and not self._in_exclusive:
            raise RuntimeError("the writer is running: use submit()")
        if self._processor is None:
            raise RuntimeError("the event store is not open")
        if (events is None) == (lines is None):
            raise TypeError("give exactly one of events and lines")
        sub = Submission(events, lines, source)
        if sub.count == 0:
            return []
        self._processor.process([sub])
        self._processor.flush_files()
        if sub.error is not None:
            raise sub.error
        assert sub.result is not None
        return sub.result

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run the blocking ``fn`` inside the writer, between batches (merge, restore, purge).

        ``fn`` may change files in the sync dir and call :meth:`catch_up_now`
        or :meth:`rebuild`; events a live catch-up applied are passed to the
        observers after ``fn`` returns.  Without a running writer ``fn`` runs
        in a worker thread.
        """

        def job() -> T:
            self._in_exclusive = True
            try:
                return fn()
            finally:
                self._in_exclusive = False

        if self._writer is not None and self._writer.running:
            return await self._writer.run_exclusive(job)
        if self._processor is None:
            raise RuntimeError("the event store is not open")
        result, events = await trio.to_thread.run_sync(self._processor.run_exclusive, job)
        if events and self.on_applied is not None:
            self.on_applied(events)
        return result

    # ------------------------------------------------------------------ reading
    def reader(self, *, fresh_except: frozenset[str] | None = None) -> sqlite3.Connection:
        """A read-only connection cached per thread (closed by :meth:`close`).

        What was written before the call is visible to it: batches the writer
        holds uncommitted are committed first (:meth:`BatchProcessor.settle`),
        unless ``fresh_except`` names every type they hold (the caller reads
        nothing those types change).
        """
        if self._processor is not None:
            self._processor.settle(fresh_except)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_reader(Path(self.paths.db_path), check_same_thread=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def open_reader(self) -> sqlite3.Connection:
        """A new read-only connection that sees what was written before the call; the caller closes it."""
        if self._processor is not None:
            self._processor.settle()
        return connect_reader(Path(self.paths.db_path))

    def tombstone_filter(self) -> TombstoneFilter:
        """A snapshot "is this tombstoned?" predicate for merges and peer pulls."""
        proj = self.projection
        types = frozenset(name for et in self.registry.tombstone_types() for name in (et.name, *et.aliases))
        if self._in_exclusive or not self.writer_running:
            return TombstoneFilter(proj.build_filter(), types)
        conn = self.open_reader()
        try:
            return TombstoneFilter(proj.build_filter(conn), types)
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        """Counts per state and writer figures, for ``doctor`` and ``health``."""
        proj = self.projection
        states = proj.state_counts()
        proc = self._processor
        return {
            "events": sum(states.values()),
            "states": states,
            "epoch": proj.epoch,
            "degraded": self.degraded,
            "writer_running": self.writer_running,
            "queue_depth": self._writer.queue_depth if self._writer is not None else 0,
            "batches": proc.batches if proc is not None else 0,
            "events_written": proc.events_written if proc is not None else 0,
            "held_commits": proc.held_commits if proc is not None else 0,
        }

    # ------------------------------------------------------------------ catch-up & rebuild
    async def catch_up(self) -> list[StoredEvent]:
        """Apply what other writers (a git merge) added to the files; return the new events.

        Runs inside the writer; the observers see the newly applied events
        (``source = "sync"``) as for any batch.  Use :meth:`catch_up_now`
        inside :meth:`run_exclusive` instead when the merge runs there.
        """
        return await self.run_exclusive(lambda: self.catch_up_now())

    def catch_up_now(self, *, source: str = "sync", live: bool = True) -> list[StoredEvent]:
        """Blocking catch-up (inside :meth:`run_exclusive`, or offline).

        Reads only what grew in each file (SPEC §7.1), applies unknown events
        in sort-key order and, when ``live``, returns those that were applied
        (at most a million; see the class docstring for which are reported).
        """
        self._require_writer_context("catch_up_now")
        stats = self._catch_up(live=live, source=source)
        if live and self._in_exclusive and self._processor is not None:
            self._processor.emitted.extend(stats.events)
        return stats.events

    def _catch_up_for_writer(self, source: str) -> list[StoredEvent]:
        return self._catch_up(live=True, source=source).events

    def _catch_up(self, *, live: bool, source: str) -> IngestStats:
        proj = self.projection
        sources, gone = proj.plan_catch_up(self.sync_dir)
        proj.start_ingest(source=source, live=live, collect=live)
        proj.begin()
        try:
            ends = proj.ingest_files(self.sync_dir, sources, mode="auto")
            for rel, end in ends.items():
                proj.record_file(self.sync_dir, rel, end)
            for rel in gone:
                proj.conn.execute("DELETE FROM projection_files WHERE path=?", (rel,))
            proj.commit()
        except BaseException:
            proj.end_ingest()
            proj.rollback()
            raise
        stats = proj.end_ingest()
        if self._processor is not None:
            self._processor.forget_dirty()
        if proj.needs_rewrite:
            self._rewrite()
        return stats

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> RebuildReport:
        """Drop the projection tables and rebuild them from the log (blocking).

        Local tables are kept; ``meta('epoch')`` changes.  Offline, or inside
        :meth:`run_exclusive` while the writer runs.  ``progress(done, total)``
        is called with bytes of log read so far and in all.
        """
        self._require_writer_context("rebuild")
        return self._rebuild(progress)

    def _rebuild(self, progress: Callable[[int, int], None] | None) -> RebuildReport:
        # A rebuild allocates an object per event and frees it soon after, but
        # makes next to no cyclic garbage: the cyclic collector would run
        # hundreds of times for nothing, each walking everything still alive.
        collecting = gc.isenabled()
        gc.disable()
        try:
            checkpointer = self._checkpointer
            with checkpointer.suspended() if checkpointer is not None else nullcontext():
                return self._rebuild_body(progress)
        finally:
            if collecting:
                gc.enable()

    def _rebuild_body(self, progress: Callable[[int, int], None] | None) -> RebuildReport:
        started = time.monotonic()
        proj = self.projection
        report = RebuildReport()
        files = list_log_files(self.sync_dir)
        report.files = len(files)
        sources = [(rel, 0) for rel in files]
        conn = proj.conn
        cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute("PRAGMA synchronous=OFF")  # an interrupted rebuild is redone anyway
        conn.execute(f"PRAGMA cache_size={-_projection.REBUILD_CACHE_KIB}")  # inserts into large B-trees
        try:
            for mode in ("optimistic", "scan"):
                proj.reset_schema()
                proj.progress = progress
                proj.start_ingest(source="rebuild", live=False, collect=False, rebuilding=True)
                proj.begin()
                try:
                    proj.run_rebuild_hooks("start")
                    ends = proj.ingest_files(
                        self.sync_dir, sources, mode=mode, commit_every=_projection.REBUILD_COMMIT_EVERY
                    )
                    proj.run_rebuild_hooks("finish")
                    for rel, end in ends.items():
                        proj.record_file(self.sync_dir, rel, end)
                    proj.commit()
                except _OutOfOrder as exc:
                    log.info("log file %s is not in sort-key order; rebuilding in two passes", exc)
                    proj.end_ingest()
                    proj.rollback()
                    report.passes = 2
                    continue
                except BaseException:
                    proj.end_ingest()
                    proj.rollback()
                    self._restore_after_failed_rebuild()
                    raise
                finally:
                    proj.progress = None
                break
            stats = proj.end_ingest()
            proj.finish_rebuild()
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={int(cache_size)}")
        # The last transaction (with the owners' finish hooks) can leave a WAL of
        # hundreds of megabytes: copy it into the database now and empty it
        # (waits up to the busy timeout for readers; a busy result is harmless).
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("could not checkpoint the projection after the rebuild: %s", exc)
        proj.load_state(recount=False)  # the rebuild counted every event it indexed
        if self._processor is not None:
            self._processor.forget_dirty()
        if proj.needs_rewrite or proj.meta("tombstone_rewrite"):
            report.tombstone_rewrites = self._rewrite()
        report.lines, report.events = stats.lines, stats.new
        report.duplicates, report.invalid = stats.duplicates, stats.invalid
        report.states = proj.state_counts()
        report.epoch = proj.epoch
        report.seconds = time.monotonic() - started
        return report

    def _restore_after_failed_rebuild(self) -> None:
        """Put back the indexes and triggers a failed rebuild's start hooks dropped (best effort)."""
        proj = self.projection
        try:
            proj.begin()
            try:
                made = proj.restore_schema_objects()
                proj.commit()
            except BaseException:
                proj.rollback()
                raise
        except sqlite3.Error as exc:
            log.warning("could not restore the projection's triggers after a failed rebuild: %s", exc)
            return
        if made:
            log.warning("rebuild failed: restored %s", ", ".join(made))

    def _rewrite(self) -> dict[str, int]:
        removed = self.projection.rewrite_tombstoned(self.sync_dir)
        if self._appender is not None:
            self._appender.invalidate()
        return removed

    def _require_writer_context(self, what: str) -> None:
        if self.writer_running and not self._in_exclusive:
            raise RuntimeError(f"the writer is running: call {what} inside run_exclusive()")
