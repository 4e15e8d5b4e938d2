"""The single writer: group commit of events to the log and the projection (SPEC §6.5).

:class:`Writer` is the trio side: handlers ``await writer.submit(events)``;
the queued submissions (up to 256 events; a batch stops growing once it holds
4 MiB) go to a worker thread as one batch, and the submitters are answered
when the batch is durable *and* projected.  While the thread fsyncs, new
submissions queue up and form the next batch — that is what makes group
commit work.  A submitter that finds the writer idle runs the batch itself
(see :class:`Writer`), so a lone client pays one trio round trip per append.
A small batch of local events runs in the trio thread itself while batches
are fast (``INLINE_BATCHES``): the thread hand-over cost more than the batch.
Observers (``on_applied``) run in a separate task after the submitters are
answered, so they never delay a reply.

:class:`BatchProcessor` is the blocking side, run in the worker thread: fill
in the envelope (``event_id``, ``timestamp``, ``v``, ``origin_daemon``),
validate local events with their type's model, serialise canonically, skip
events already stored, append, ``fdatasync`` once per touched file, apply the
batch to SQLite in one transaction while the disk works, commit once every
``fdatasync`` succeeded (or, for an inline batch, hold the transaction open
for the next ones: see :data:`HOLD_COMMITS`), and rewrite the files when a
tombstone was applied.
The ``fdatasync`` calls run in the kernel, concurrently, through Linux native
AIO (:class:`~thrum_core.events.log.KernelSync`); where that is missing the
first runs in this thread before the commit and the others on
:class:`~thrum_core.events.log.SyncPool` threads.

Failure semantics (SPEC §6.5): an append or fsync failure truncates every
touched file back and fails the batch with -32603, nothing projected; a
projection failure after the lines are durable re-runs catch-up once, and if
that fails too the callers get -32603 with ``data: {durable: true,
event_ids}`` and the store reports ``degraded`` (later batches keep trying
catch-up until it succeeds).  A submission that fails validation is refused
alone with -32602.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from thrum_core.canonical import canonical_json
from thrum_core.errors import InternalError, InvalidParams, ThrumError
from thrum_core.events.log import AppendLog, PendingAppend, SyncGroup, SyncPool
from thrum_core.events.projection import Projection, decode_line, ts_ns
from thrum_core.events.types import DEFAULT_ROUTE, SOURCES, EventTypeRegistry, StoredEvent
from thrum_core.ids import event_id_of, new_event_id
from thrum_core.timefmt import MonotonicClock, format_ts

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "BatchProcessor", "Submission", "Writer"]

log = logging.getLogger("thrum.events.writer")

MAX_BATCH_EVENTS = 256
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Threads running the fsyncs of a batch (one per touched file, concurrently).
SYNC_THREADS = 8
#: How many scheduling rounds a new leader waits for the submitters of the last
#: batch to come back and queue up behind it (see :class:`Writer`).
LEADER_YIELDS = 3
#: Leave the first fsync of a batch to the thread that processes it (``True``:
#: started in the kernel through native AIO right after the write and reaped
#: before the commit, or run there before the commit where AIO is missing) or
#: hand it to a pool thread (``False``).  The pool thread overlapped it with the
#: projection too, but a thread hand-over (GIL and futex round trips) cost more
#: than that gained here: 1,450-1,530 sequential appends/s against ~2,000.
INLINE_SYNC = True
#: Run a small batch of local events in the trio thread itself instead of the
#: writer thread (see :meth:`Writer._inline_ok`).  The hand-over to the thread
#: and back (a futex wake, the GIL changing hands twice, a pipe wake-up through
#: epoll: cross-CPU wake-ups that cost VM exits here) was the largest per-batch
#: cost: ``bench/eventstore.py`` sequential went from ~1,480 to ~2,000
#: appends/s and from ~450 to ~330 µs CPU per append.  The price is that the event loop does not
#: run while such a batch is written, fsynced and projected, so it is done
#: only while batches are fast (see ``INLINE_MAX_BATCH_S``).
INLINE_BATCHES = True
#: Most events in a batch run inline; bigger batches go to the writer thread,
#: and so does the batch after one: when batches are big (requests pipelined
#: on a connection, many busy clients) the hand-over is shared by many events,
#: and the event loop keeps serving requests while the thread fsyncs.
INLINE_MAX_EVENTS = 16
#: Most scheduling rounds an inline batch waits for submitters to queue up.
INLINE_GATHER_ROUNDS = 16
#: A batch taking longer than this (a slow disk, a busy lock, a checkpoint)
#: sends the next batch to the writer thread; a fast one brings inline back.
INLINE_MAX_BATCH_S = 0.004
#: ``projection_files`` is brought up to date at most this often by the writer.
FILES_FLUSH_INTERVAL_S = 2.0
#: Inline batches leave the projection's transaction open (held) for the next
#: ones, and it is committed once for all of them: when a reader needs it (see
#: :meth:`BatchProcessor.settle`), before a batch or job of the writer thread,
#: after ``HOLD_IDLE_S`` without a batch, or once it is ``HOLD_MAX_S`` old or
#: holds ``HOLD_MAX_EVENTS``.  A commit writes every page the batch changed to
#: the WAL; consecutive batches change mostly the same pages, so one commit for
#: many took 20-25% off the daemon's CPU per sequential ``message.send``
#: (``bench/messaging.py``: 1,260 to 1,610 sends/s here).
HOLD_COMMITS = True
HOLD_IDLE_S = 0.002
HOLD_MAX_S = 0.05
HOLD_MAX_EVENTS = 1024

T = TypeVar("T")


class _TsFormatter:
    """``format_ts`` with the seconds part cached (consecutive events share it)."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        sec, rem = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._prefix = format_ts(sec * 1_000_000_000)[:19]
            self._sec = sec
        return f"{self._prefix}.{rem // 1000:06d}Z"


@dataclass(slots=True)
class _Item:
    """One event of a batch, ready to append."""

    obj: dict[str, Any]
    line: bytes
    text: str
    eid: str
    ts: int
    file: str
    source: str
    fresh: bool
    write: bool = True
    state: str = "applied"
    stored: StoredEvent | None = None


@dataclass(eq=False)
class Submission:
    """One ``submit`` call: its events (or verbatim lines) and, later, its outcome."""

    events: Sequence[Mapping[str, Any]] | None
    lines: Sequence[bytes] | None
    source: str
    done: trio.Event = field(default_factory=trio.Event)
    result: list[StoredEvent] | None = None
    error: BaseException | None = None
    items: list[_Item] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.lines) if self.lines is not None else len(self.events or ())


@dataclass(eq=False)
class _Exclusive:
    fn: Callable[[], Any]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


def _no_default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not plain JSON")


# The C encoder that json.JSONEncoder builds afresh on every encode() call, built
# once: ``canonical_json``'s settings (sorted keys, compact separators, raw
# non-ASCII, no NaN), without the circular-reference bookkeeping.
_C_ENCODE: Callable[[Any, int], Any] | None = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)
)


def _canonical_text(obj: dict[str, Any]) -> str:
    """:func:`canonical_json` of an event, 1.5 µs faster for plain JSON values.

    Anything the fast encoder does not take as is (a non-dict mapping, a
    value that is not JSON, NaN, a cycle, U+2028/U+2029) goes to
    ``canonical_json``, which gives the reference result or error.
    """
    if _C_ENCODE is not None:
        try:
            text: str = "".join(_C_ENCODE(obj, 0))
        except (TypeError, ValueError, RecursionError):
            return canonical_json(obj)
        if "\u2028" not in text and "\u2029" not in text:
            return text
    return canonical_json(obj)


def _append_error(exc: BaseException) -> InternalError:
    return InternalError(f"could not write the event log: {exc}", {"durable": False})


class BatchProcessor:
    """The blocking half of the writer (one worker thread at a time)."""

    def __init__(
        self,
        *,
        sync_dir: Path,
        registry: EventTypeRegistry,
        projection: Projection,
        appender: AppendLog,
        daemon_id: str,
        catch_up: Callable[[str], list[StoredEvent]],
        clock: MonotonicClock | None = None,
    ):
        self.sync_dir = sync_dir
        self.registry = registry
        self.projection = projection
        self.appender = appender
        self.daemon_id = daemon_id
        self.clock = clock or MonotonicClock()
        self._catch_up = catch_up
        self._fmt = _TsFormatter()
        self._dirty: dict[str, int] = {}
        self._sync_pool = SyncPool(SYNC_THREADS)
        self._last_flush = time.monotonic()
        self.degraded = False
        self.batches = 0
        self.events_written = 0
        #: events applied by live catch-ups inside an exclusive job, for observers
        self.emitted: list[StoredEvent] = []
        # Change counters for read caches (see :meth:`changes_except`): events written per
        # type, and writes of unknown reach (exclusive jobs, catch-ups).
        self._type_changes: dict[str, int] = {}
        self._other_changes = 0
        # Held batches (see ``process(hold=True)`` and :meth:`settle`): the lock is taken
        # by a holding batch and by a settle, the owner is the thread running that batch.
        self._hold_lock = threading.Lock()
        self._hold_owner: int | None = None
        self._held_types: set[str] = set()
        self._held_ids: set[str] = set()
        self._held_since = 0.0
        self._settling = False
        #: projection commits of held batches (one commit for many batches)
        self.held_commits = 0

    # ------------------------------------------------------------------ preparing
    def _prepare(self, sub: Submission) -> list[_Item]:
        if sub.lines is not None:
            return [self._prepare_line(raw, sub.source, i) for i, raw in enumerate(sub.lines)]
        return [self._prepare_event(ev, sub.source, i) for i, ev in enumerate(sub.events or ())]

    def _prepare_event(self, ev: Mapping[str, Any], source: str, i: int) -> _Item:
        if type(ev) is not dict and not isinstance(ev, Mapping):
            raise InvalidParams(f"events[{i}]", "not_an_object", f"event {i} is not an object")
        obj = dict(ev)
        typ = obj.get("type")
        if type(typ) is not str or not typ:
            raise InvalidParams(f"events[{i}].type", "missing", f"event {i} has no type")
        et = self.registry.get(typ)
        local = source == "local"
        if et is None and local:
            raise InvalidParams(f"events[{i}].type", "unknown_type", f"event type {typ!r} is not registered")
        fresh = False
        eid = obj.get("event_id")
        if eid is None or eid == "":
            if local:
                eid = obj["event_id"] = new_event_id()
                fresh = True
            else:
                eid = obj["event_id"] = event_id_of(obj)
        elif type(eid) is not str:
            raise InvalidParams(
                f"events[{i}].event_id", "not_a_string", f"event {i}: event_id must be a string"
            )
        ts_val = obj.get("timestamp")
        if ts_val is None and local:
            ts = self.clock.next_ns()
            obj["timestamp"] = self._fmt(ts)
        else:
            parsed = ts_ns(ts_val)
            if parsed is None:
                raise InvalidParams(
                    f"events[{i}].timestamp", "invalid", f"event {i}: bad timestamp {ts_val!r}"
                )
            ts = parsed
        if local:
            obj.pop("sequence", None)  # SPEC §6.1: never written
            obj.pop("signature", None)
            if "v" not in obj:
                obj["v"] = 1
            if "origin_daemon" not in obj:
                obj["origin_daemon"] = self.daemon_id
            if et is not None and et.model is not None:
                self._validate(et.model, obj, f"events[{i}]")
        try:
            text = _canonical_text(obj)
            line = text.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidParams(
                f"events[{i}]", "not_serialisable", f"event {i} cannot be written as JSON: {exc}"
            ) from None
        try:
            file = self.registry.route(obj)
        except Exception as exc:
            if local:
                raise InvalidParams(
                    f"events[{i}]", "unroutable", f"event {i} cannot be routed: {exc}"
                ) from None
            file = DEFAULT_ROUTE
        return _Item(obj, line, text, eid, ts, file, source, fresh)

    @staticmethod
    def _validate(model: Any, obj: dict[str, Any], field_: str) -> None:
        try:
            model.model_validate(obj)
        except Exception as exc:
            from pydantic import ValidationError  # here: an import statement per event costs ~1 µs

            if not isinstance(exc, ValidationError):
                raise
            errors = exc.errors()
            err: dict[str, Any] = dict(errors[0]) if errors else {}
            loc = ".".join(str(p) for p in err.get("loc", ()))
            raise InvalidParams(
                f"{field_}.{loc}" if loc else field_,
                str(err.get("type", "invalid")),
                f"invalid event: {loc or 'event'}: {err.get('msg', exc)}",
            ) from None

    def _prepare_line(self, raw: bytes, source: str, i: int) -> _Item:
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        obj, text = decode_line(raw)
        typ = obj.get("type") if obj is not None else None
        ts = ts_ns(obj.get("timestamp")) if obj is not None else None
        if obj is None or text is None or type(typ) is not str or not typ or ts is None:
            # Not an event we can store (peers never serve invalid lines).
            return _Item(obj or {}, raw, text or "", "", -1, "", source, False, write=False, state="invalid")
        if b"\n" in raw:  # JSON whitespace may hold a newline; such a line cannot be kept verbatim
            text = canonical_json(obj)
            raw = text.encode("utf-8")
        eid = event_id_of(obj)
        try:
            file = self.registry.route(obj)
        except Exception:
            file = DEFAULT_ROUTE
        return _Item(obj, raw, text, eid, ts, file, source, False)

    def _dedupe(self, items: list[_Item]) -> None:
        """Skip events already stored (or twice in the batch) and non-local ones under a tombstone."""
        check = list({it.eid for it in items if it.write and not it.fresh})
        if not check:
            return  # only local events with ids made here (unique, never tombstoned)
        known: set[str] = set()
        cur = self.projection.conn.cursor()
        cur.row_factory = None
        for start in range(0, len(check), 500):
            chunk = check[start : start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                r[0] for r in cur.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
            )
        seen: set[str] = set()
        pred = None
        if any(it.source != "local" for it in items):
            pred = self.projection.current_filter()
        for it in items:
            if not it.write:
                continue
            if it.eid in known or it.eid in seen:
                it.write, it.state = False, "duplicate"
                continue
            seen.add(it.eid)
            if (
                pred is not None
                and it.source != "local"
                and not self.projection.is_tombstone_type(it.obj["type"])
                and pred(it.obj, (it.ts, it.eid.encode("utf-8", "surrogatepass")))
            ):
                it.write, it.state = False, "tombstoned"

    # ------------------------------------------------------------------ processing
    def process(
        self, subs: list[Submission], *, hold: bool = False
    ) -> tuple[list[StoredEvent], list[Submission]]:
        """Write and project ``subs``; return (events for observers, submissions deferred).

        Each submission ends with ``result`` or ``error`` set, except the
        deferred ones (the batch reached 4 MiB), which go back to the queue.
        With ``hold`` the projection's transaction stays open after the batch
        (its lines are durable, its submitters may be answered): later held
        batches join it, and :meth:`settle` commits it, which every reader
        of the projection does first (see :meth:`EventStore.reader`).
        """
        if not hold:
            return self._process(subs, False)
        with self._hold_lock:
            self._hold_owner = threading.get_ident()
            try:
                return self._process(subs, True)
            finally:
                self._hold_owner = None

    def _process(self, subs: list[Submission], hold: bool) -> tuple[list[StoredEvent], list[Submission]]:
        taken: list[Submission] = []
        deferred: list[Submission] = []
        nbytes = 0
        for i, sub in enumerate(subs):
            if taken and nbytes >= MAX_BATCH_BYTES:
                deferred = subs[i:]
                break
            try:
                sub.items = self._prepare(sub)
            except ThrumError as exc:
                sub.error = exc
                continue
            taken.append(sub)
            nbytes += sum(len(it.line) + 1 for it in sub.items)
        items = [it for sub in taken for it in sub.items]
        if not items:
            for sub in taken:
                sub.result = []
            return [], deferred
        self._dedupe(items)
        to_write = [it for it in items if it.write]
        observed: list[StoredEvent] = []
        if to_write:
            parts: dict[str, list[bytes]] = {}
            for it in to_write:
                parts.setdefault(it.file, []).append(it.line)
            writes = {rel: b"\n".join(lines) + b"\n" for rel, lines in parts.items()}
            try:
                pending = self.appender.write(writes)
            except Exception as exc:
                log.error("append to the event log failed: %s", exc)
                for sub in taken:
                    sub.error = _append_error(exc)
                return [], deferred
            # The files' fdatasyncs run in the kernel (native AIO, see
            # AppendLog.start_sync; else the first here, at the wait, and the
            # others on pool threads) while this thread projects the batch
            # (uncommitted): the commit waits for all of them (SPEC §6.5).
            jobs, in_kernel = self.appender.start_sync(pending)
            syncs = self._sync_pool.start(jobs, keep=max(in_kernel, 1) if INLINE_SYNC else in_kernel)
            self.batches += 1
            self.events_written += len(to_write)
            try:
                observed = self._project(to_write, pending, syncs, hold)
            except ThrumError as exc:
                for sub in taken:
                    sub.error = exc
                return [], deferred
            finally:
                self._count_changes(to_write)
        for sub in taken:
            sub.result = [self._result(it) for it in sub.items]
        return observed, deferred

    def _count_changes(self, items: list[_Item]) -> None:
        # After the commit (or rollback): a cache filled before it keeps the old count.
        # A new type goes into a copy: readers iterate the dict on other threads.
        counts = self._type_changes
        for it in items:
            typ = it.obj.get("type")
            key = typ if type(typ) is str else ""
            if key in counts:
                counts[key] += 1
            else:
                counts = {**counts, key: 1}
        self._type_changes = counts

    def changes_except(self, types: frozenset[str]) -> int:
        """A counter that grows whenever the projection may have changed other than by ``types``.

        It counts the events of other types written so far, catch-ups and
        exclusive jobs.  A read cache of data that events of ``types`` never
        touch stays valid while this value is unchanged: it grows only after
        such a change is committed and before its submitter is answered, so
        read the counter *before* reading the data it guards.
        """
        n = self._other_changes
        for typ, count in self._type_changes.items():
            if typ not in types:
                n += count
        return n

    def _wait_durable(self, pending: PendingAppend, syncs: SyncGroup) -> None:
        """Wait for the batch's fsyncs; on failure truncate the files back and raise -32603."""
        error = syncs.wait()
        if error is not None:
            log.error("fsync of the event log failed: %s", error)
            self.appender.roll_back(pending)
            raise _append_error(error)

    def _project(
        self, items: list[_Item], pending: PendingAppend, syncs: SyncGroup, hold: bool
    ) -> list[StoredEvent]:
        proj = self.projection
        sizes = pending.sizes
        first_error: BaseException | None = None
        applied = False
        # Events of earlier held batches: a rollback undoes them too (see _recover_held).
        held_ids = self._held_ids if hold and proj.held else None
        if not self.degraded:
            proj.start_ingest(source=items[0].source, live=True, collect=True)
            try:
                if hold:
                    proj.begin_batch()
                else:
                    proj.begin()
                ordered = sorted(items, key=lambda it: (it.ts, it.eid))
                source = ordered[0].source
                sources: str | list[str] = source
                if any(it.source != source for it in ordered):
                    sources = [it.source for it in ordered]
                rows = [(t.ts, t.eid, i, 0, t.obj, t.line, t.text, t.file) for i, t in enumerate(ordered)]
                stored = proj.apply_rows(rows, sources)
                for it, ev in zip(ordered, stored, strict=True):
                    it.stored = ev
                    if ev is None:
                        it.state = "duplicate"
                self._dirty.update(sizes)
                if time.monotonic() - self._last_flush >= FILES_FLUSH_INTERVAL_S:
                    self._flush_files()
                applied = True
                # Everything up to the commit is done while the fsyncs run.
                stats = proj.end_ingest()
                # An event left pending may have been resolved later in the same batch.
                final = {ev.event_id: ev for ev in stats.events}
                for it in items:
                    if it.stored is not None and it.stored.state == "pending":
                        it.stored = final.get(it.eid, it.stored)
                try:
                    self._wait_durable(pending, syncs)
                except ThrumError:
                    proj.rollback()
                    self._dirty.clear()
                    if held_ids is not None:
                        self._recover_held(items[0].source)
                    raise
                if hold and not proj.needs_rewrite:
                    self._hold(items)
                else:
                    proj.commit()
                self._after_commit()
                return stats.events
            except Exception as exc:
                if applied and isinstance(exc, ThrumError):
                    raise  # the fsync failed: the files were cut back and nothing was projected
                # Projecting failed before the fsync was collected: the lines are still made
                # durable below, and a catch-up from the log projects them (or reports them
                # durable), so a caller never retries an event that is already in the log.
                log.exception("projecting a writer batch failed; catching up from the log")
                first_error = exc
                proj.end_ingest()
                proj.rollback()
        if not applied:
            self._wait_durable(pending, syncs)
        self._dirty.update(sizes)
        try:
            events = self._catch_up(items[0].source)
        except Exception as exc:
            self._other_changes += 1
            log.exception("catch-up after a projection failure failed; the store is degraded")
            self.degraded = True
            reason = exc if first_error is None else first_error
            raise InternalError(
                f"events are durable but could not be projected: {reason}",
                {"durable": True, "event_ids": [it.eid for it in items]},
            ) from exc
        self._other_changes += 1
        self.degraded = False
        self._dirty.clear()
        if held_ids:  # projected again after the rollback; their observers have been told
            events = [ev for ev in events if ev.event_id not in held_ids]
        by_id = {ev.event_id: ev for ev in events}
        cur = proj.conn.cursor()
        cur.row_factory = None
        for it in items:
            ev = by_id.get(it.eid)
            if ev is None:
                row = cur.execute(
                    "SELECT seq, state, file FROM events WHERE event_id=?", (it.eid,)
                ).fetchone()
                et = self.registry.get(it.obj["type"])
                ev = StoredEvent(
                    it.obj,
                    it.line,
                    it.eid,
                    et.name if et is not None else it.obj["type"],
                    it.ts,
                    f"{it.ts:020d}|{it.eid}",
                    row[2] if row else it.file,
                    it.obj.get("origin_daemon", "") if type(it.obj.get("origin_daemon", "")) is str else "",
                    it.source,
                    row[0] if row else None,
                    row[1] if row else "pending",
                )
            it.stored = ev
        self._after_commit()
        return events

    def _hold(self, items: list[_Item]) -> None:
        """End the batch of ``items`` with its transaction held open (see :meth:`process`)."""
        proj = self.projection
        if not proj.held:  # the first batch of a new held transaction
            self._held_types = set()
            self._held_ids = set()
            self._held_since = time.monotonic()
        proj.commit(hold=True)
        types, ids = self._held_types, self._held_ids
        for it in items:
            typ = it.obj.get("type")
            types.add(typ if type(typ) is str else "")
            ids.add(it.eid)

    def _recover_held(self, source: str) -> bool:
        """Project again from the log the held batches a rollback undid; ``False`` (degraded) if that failed.

        Their lines are durable and their observers were told, so the events
        the catch-up returns are dropped.
        """
        self._other_changes += 1
        try:
            self._catch_up(source)
        except Exception:
            log.exception("catching up held batches after a rollback failed; the store is degraded")
            self.degraded = True
            return False
        return True

    def held_for(self) -> tuple[float, int] | None:
        """``(seconds, events)`` the projection's held transaction has been open and holds; ``None``: none."""
        if not self.projection.held:
            return None
        return time.monotonic() - self._held_since, len(self._held_ids)

    def settle(self, fresh_except: frozenset[str] | None = None) -> None:
        """Commit the held batches, so that every connection sees them (nothing when none are held).

        With ``fresh_except``, only when they hold an event of another type:
        a reader that does not look at what those types change may read the
        committed state without the cost of a commit.  Inside a held batch
        (a hook of its own thread reading) this does nothing.  Safe from any
        thread; waits for a held batch in progress.  When the commit fails the
        batches are projected again from the log; -32603 when that fails too
        (the store is then degraded: the next batch catches up).
        """
        proj = self.projection
        if self._hold_owner == threading.get_ident():
            return
        # A settle in progress on another thread may be catching up after a failed
        # commit (held is already false then): wait for it before using the connection.
        if not proj.held and not self._settling:
            return
        if fresh_except is not None and proj.held and self._held_types <= fresh_except:
            return
        with self._hold_lock:
            if not proj.held:
                return
            self._settling = True
            try:
                proj.commit_held()
            except Exception as exc:
                log.exception("committing the held projection batches failed; catching up from the log")
                if not self._recover_held("local"):
                    raise InternalError(
                        f"events are durable but could not be projected: {exc}", {"durable": True}
                    ) from exc
            finally:
                self._settling = False
            self.held_commits += 1

    def _after_commit(self) -> None:
        proj = self.projection
        if proj.needs_rewrite:
            try:
                proj.rewrite_tombstoned(self.sync_dir)
            except Exception:
                log.exception("rewriting the log after a tombstone failed; will retry")
            finally:
                self.appender.invalidate()

    def _result(self, it: _Item) -> StoredEvent:
        if it.stored is not None:
            return it.stored
        et = self.registry.get(it.obj.get("type", "")) if it.obj else None
        origin = it.obj.get("origin_daemon", "") if it.obj else ""
        return StoredEvent(
            it.obj,
            it.line,
            it.eid,
            et.name if et is not None else str(it.obj.get("type", "")),
            it.ts,
            f"{it.ts:020d}|{it.eid}" if it.ts >= 0 else "",
            it.file,
            origin if type(origin) is str else "",
            it.source,
            None,
            it.state,
        )

    def _flush_files(self) -> None:
        for rel, size in self._dirty.items():
            self.projection.record_file(self.sync_dir, rel, size)
        self._dirty.clear()
        self._last_flush = time.monotonic()

    def flush_files(self) -> None:
        """Record the appended files' sizes in ``projection_files`` (own transaction)."""
        if not self._dirty or self.degraded:
            return
        proj = self.projection
        proj.begin()
        try:
            self._flush_files()
            proj.commit()
        except BaseException:
            proj.rollback()
            raise

    def forget_dirty(self) -> None:
        """Drop unrecorded sizes (a catch-up or rebuild recorded the files itself)."""
        self._dirty.clear()

    def close(self) -> None:
        """Stop the fsync threads."""
        self._sync_pool.close()

    def run_exclusive(self, fn: Callable[[], T]) -> tuple[T, list[StoredEvent]]:
        """Run ``fn`` between batches; return its result and events for observers."""
        self.flush_files()
        self.appender.invalidate()
        try:
            result = fn()
        finally:
            self._other_changes += 1
            self.appender.invalidate()
            events, self.emitted = self.emitted, []
        return result, events


_Job = tuple[Callable[[Any], Any], Any]


class _WorkerThread:
    """One long-lived thread running the writer's blocking work, one call at a time.

    Cheaper than ``trio.to_thread.run_sync`` per call (no limiter, no thread
    hand-over), which matters when every append waits for a round trip.  The
    thread answers through a pipe the calling task waits on with
    ``wait_readable``: trio's I/O manager wakes that task directly, one
    scheduling round sooner (and with less work) than ``run_sync_soon``.  A
    call cannot be cancelled: like a shielded ``to_thread`` call, the task
    waits until the work is done.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._result: outcome.Outcome[Any] | None = None
        self._rfd = self._wfd = -1
        self._calling = False

    def start(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._thread = threading.Thread(target=self._main, name="thrum-writer", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, arg = job
            self._result = outcome.capture(fn, arg)
            os.write(self._wfd, b"\0")

    async def call(self, fn: Callable[[Any], T], arg: Any) -> T:
        if self._thread is None:
            raise InternalError("the event writer stopped")
        if self._calling:
            raise RuntimeError("the writer thread runs one call at a time")
        self._calling = True
        try:
            self._jobs.put((fn, arg))
            with trio.CancelScope(shield=True):
                while True:
                    await trio.lowlevel.wait_readable(self._rfd)
                    try:
                        if os.read(self._rfd, 16):
                            break
                    except BlockingIOError:  # pragma: no cover - spurious wake-up
                        continue
            result, self._result = self._result, None
        finally:
            self._calling = False
        assert result is not None
        return result.unwrap()

    async def stop(self) -> None:
        self._jobs.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            await trio.to_thread.run_sync(thread.join)
            for fd in (self._rfd, self._wfd):
                os.close(fd)
            self._rfd = self._wfd = -1


class Writer:
    """The trio side of the single writer.

    ``await run(task_status=...)`` serves until :meth:`aclose` (drains the
    queue, then returns).  ``submit`` and ``run_exclusive`` may be called from
    any task; a call that reached the queue runs to completion even when the
    caller is cancelled (SPEC §8.5).

    **Leader hand-off.**  A submitter that finds the writer idle processes the
    queue itself (it *leads*) until its own submission is answered, instead of
    waking the run task and waiting for it: one trio round trip per durable
    append instead of three.  While a batch is in flight, later submissions
    queue up and wait; whoever leads stops after its own submission and hands
    what is left to the run task, so group commit works as before and one
    submitter never carries the others' batches.
    """

    def __init__(
        self,
        processor: BatchProcessor,
        *,
        on_applied: Callable[[list[StoredEvent]], None] | None = None,
        max_events: int = MAX_BATCH_EVENTS,
    ):
        self.processor = processor
        self.on_applied = on_applied
        self.max_events = max_events
        self._queue: collections.deque[Submission | _Exclusive] = collections.deque()
        self._wake = trio.Event()
        self._accepting = False
        self._running = False
        self._busy = False  # a task is running the queue head (a batch or an exclusive job)
        self._answered = 0  # jobs answered whose submitter has not returned yet
        self._send: trio.MemorySendChannel[list[StoredEvent]] | None = None
        self._stopped = trio.Event()
        self._worker = _WorkerThread()
        self._inline = INLINE_BATCHES
        self._last_batch_end = 0.0
        self.batches = 0
        #: batches run in the trio thread (the others ran in the writer thread)
        self.inline_batches = 0

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is serving."""
        return self._running

    @property
    def queue_depth(self) -> int:
        """Submissions and exclusive jobs waiting."""
        return len(self._queue)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve submissions until :meth:`aclose`; observers run in a child task."""
        if self._running or self._stopped.is_set():
            raise RuntimeError("a Writer runs once")
        self._running = True
        self._accepting = True
        send, recv = trio.open_memory_channel[list[StoredEvent]](math.inf)
        self._send = send
        self._worker.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._observe, recv)
                task_status.started()
                async with send:
                    await self._loop()
        finally:
            self._running = False
            self._accepting = False
            self._send = None
            self._settle()
            err = InternalError("the event writer stopped")
            while self._queue:
                job = self._queue.popleft()
                job.error = err
                job.done.set()
                self._answered += 1
            with trio.CancelScope(shield=True):
                await self._worker.stop()
            self._stopped.set()

    async def _observe(self, recv: trio.MemoryReceiveChannel[list[StoredEvent]]) -> None:
        async with recv:
            async for events in recv:
                if self.on_applied is None:
                    continue
                try:
                    self.on_applied(events)
                except Exception:
                    log.exception("an event observer failed")

    async def _loop(self) -> None:
        while True:
            if self._queue and not self._busy:
                await self._drain(None)
                continue
            if not self._queue and not self._busy and not self._accepting:
                return
            self._wake = trio.Event()
            if self._held() is None:
                await self._wake.wait()
                continue
            # Batches are held: commit them once no batch came for HOLD_IDLE_S.
            idle_for = time.monotonic() - self._last_batch_end
            with trio.move_on_after(max(HOLD_IDLE_S - idle_for, 0.0)):
                await self._wake.wait()
            if (
                not self._wake.is_set()
                and not self._busy
                and time.monotonic() - self._last_batch_end >= HOLD_IDLE_S
            ):
                self._settle()

    def _held(self) -> tuple[float, int] | None:
        held_for = getattr(self.processor, "held_for", None)
        return None if held_for is None else held_for()

    def _settle(self) -> None:
        """Commit held batches (see :data:`HOLD_COMMITS`); a failure is the next batch's to repair."""
        settle = getattr(self.processor, "settle", None)
        if settle is None:
            return
        try:
            settle()
        except ThrumError:
            pass  # logged by settle; the store is degraded until a batch catches up

    async def _drain(self, until: Submission | _Exclusive | None) -> None:
        """Run the queue head by head; a leader (``until`` set) stops once its own job is answered."""
        self._busy = True
        try:
            while self._queue and self._running:
                await self._step()
                if until is not None and until.done.is_set():
                    break
        finally:
            self._busy = False
            if self._queue or not self._accepting:
                self._wake.set()  # the run task takes over (or notices the end)

    async def _step(self) -> None:
        """Run the queue head: one exclusive job, or one batch of submissions."""
        queue = self._queue
        head = queue[0]
        if isinstance(head, _Exclusive):
            queue.popleft()
            events: list[StoredEvent] = []
            self._settle()
            try:
                head.result, events = await self._worker.call(self.processor.run_exclusive, head.fn)
            except Exception as exc:
                head.error = exc
            head.done.set()
            self._answered += 1
            self._observed(events)
            return
        if self._inline and INLINE_BATCHES:
            # Other submitters that are ready to run get to queue up behind this
            # one first (the writer thread's round trip gave them that time):
            # one scheduling round, more while the queue keeps growing (requests
            # pipelined on one connection reach the writer one round apart).
            seen = -1
            for _ in range(INLINE_GATHER_ROUNDS):
                if len(queue) == seen or len(queue) > INLINE_MAX_EVENTS:
                    break
                seen = len(queue)
                await trio.lowlevel.cancel_shielded_checkpoint()
        batch: list[Submission] = []
        n = 0
        while queue and isinstance(queue[0], Submission):
            sub = queue[0]
            assert isinstance(sub, Submission)
            if batch and n + sub.count > self.max_events:
                break
            queue.popleft()
            batch.append(sub)
            n += sub.count
        deferred: list[Submission] = []
        started = time.perf_counter()
        try:
            if self._inline_ok(batch, n):
                self.inline_batches += 1
                if HOLD_COMMITS:
                    was_held = self._held() is not None
                    events, deferred = self.processor.process(batch, hold=True)
                    held = self._held()
                    if held is not None and (held[0] >= HOLD_MAX_S or held[1] >= HOLD_MAX_EVENTS):
                        self._settle()
                    elif held is not None and not was_held:
                        self._wake.set()  # the run task commits them once the writer is idle
                else:
                    events, deferred = self.processor.process(batch)
            else:
                self._settle()
                events, deferred = await self._worker.call(self.processor.process, batch)
        except Exception as exc:  # a bug: never leave a submitter hanging
            log.exception("the writer failed on a batch")
            events = []
            for sub in batch:
                if sub.result is None and sub.error is None:
                    sub.error = InternalError(f"the event writer failed: {exc}")
        if INLINE_BATCHES:
            self._inline = n <= INLINE_MAX_EVENTS and time.perf_counter() - started <= INLINE_MAX_BATCH_S
        self._last_batch_end = time.monotonic()
        self.batches += 1
        queue.extendleft(reversed(deferred))
        for sub in batch:
            if sub.result is not None or sub.error is not None:
                sub.done.set()
                self._answered += 1
        self._observed(events)

    def _inline_ok(self, batch: list[Submission], n: int) -> bool:
        """Whether ``batch`` runs in the trio thread (blocking it) rather than the writer thread.

        Only while recent batches were fast, and only for a few local events
        none of which is a tombstone (applying one rewrites log files);
        verbatim lines (sync, import) always go to the thread.
        """
        if not (self._inline and INLINE_BATCHES) or n > INLINE_MAX_EVENTS:
            return False
        projection = getattr(self.processor, "projection", None)
        is_tombstone = getattr(projection, "is_tombstone_type", None)
        if is_tombstone is None:
            return False
        for sub in batch:
            if sub.lines is not None or sub.source != "local" or sub.events is None:
                return False
            for ev in sub.events:
                typ = ev.get("type") if isinstance(ev, Mapping) else None
                if type(typ) is not str or is_tombstone(typ):
                    return False
        return True

    def _observed(self, events: list[StoredEvent]) -> None:
        if events and self.on_applied is not None and self._send is not None:
            self._send.send_nowait(events)

    async def submit(
        self,
        events: Sequence[Mapping[str, Any]] | None = None,
        *,
        source: str = "local",
        lines: Sequence[bytes] | None = None,
    ) -> list[StoredEvent]:
        """Write ``events`` (or verbatim ``lines``) durably and project them.

        Returns one :class:`StoredEvent` per input, in order.  Raises
        :class:`ThrumError` (-32602 for an invalid event, -32603 when the log
        could not be written or the writer is not running).
        """
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        if (events is None) == (lines is None):
            raise TypeError("give exactly one of events and lines")
        if not self._accepting:
            raise InternalError("the event writer is not running")
        sub = Submission(events, lines, source)
        if sub.count == 0:
            return []
        await self._enqueue(sub)
        if sub.error is not None:
            raise sub.error
        assert sub.result is not None
        return sub.result

    async def _enqueue(self, job: Submission | _Exclusive) -> None:
        """Queue ``job`` and wait until it is answered, leading when the writer is idle."""
        self._queue.append(job)
        # Only ``job.done.wait()`` can raise Cancelled, so only it is shielded (a
        # cancel scope costs ~5 µs per append): the leader's other awaits are
        # cancel-shielded checkpoints and ``_WorkerThread.call``, shielded itself.
        try:
            if not self._busy and self._answered:
                # Submitters answered by the last batch have not all returned
                # yet, and they often submit again at once (a busy client):
                # claim the queue and let them queue up behind this job first,
                # so that they share its fsync.
                self._busy = True
                try:
                    for _ in range(LEADER_YIELDS):
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        if not self._answered:
                            break
                finally:
                    self._busy = False
            if not self._busy:
                await self._drain(job)
            # else: whoever runs the queue answers it (a leader hands over to the run task)
            if not job.done.is_set():
                with trio.CancelScope(shield=True):
                    await job.done.wait()
        finally:
            if self._answered > 0:
                self._answered -= 1

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run the blocking ``fn`` in the writer's thread between batches and return its result."""
        if not self._accepting:
            raise InternalError("the event writer is not running")
        job = _Exclusive(fn)
        await self._enqueue(job)
        if job.error is not None:
            raise job.error
        return job.result

    async def aclose(self) -> None:
        """Stop accepting, let the queue drain, and wait for :meth:`run` to return."""
        self._accepting = False
        self._wake.set()
        if self._running:
            await self._stopped.wait()
