"""The JSONL files of the sync dir (SPEC §5.8, §6.3-§6.7).

Everything here is blocking file I/O; the writer runs it in a worker thread.

- :class:`AppendLog` appends one writer batch to several files and makes it
  durable with one ``fdatasync`` per touched file; on any failure every touched
  file is truncated back to its length before the batch (SPEC §6.5).
- :func:`repair_torn` cuts torn tails at start-up (SPEC §6.6).
- :func:`iter_lines` reads complete lines from a byte offset, without a line
  length limit.
- :func:`rewrite_file` rewrites a file without some lines, atomically.
- :func:`list_log_files` names the files readers read: every ``*.jsonl`` at the
  top of the sync dir and in ``messages/`` (SPEC §6.3).
"""

from __future__ import annotations

import _thread
import errno
import hashlib
import os
import queue
import re
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from thrum_core.canonical import parse_line
from thrum_core.fsutil import fsync_dir
from thrum_core.timefmt import format_ts_seconds

__all__ = [
    "MAX_LINE_BYTES",
    "TAIL_WINDOW",
    "AppendLog",
    "PendingAppend",
    "RewriteResult",
    "SyncGroup",
    "SyncPool",
    "TornRepair",
    "check_route",
    "file_tail_sha256",
    "iter_lines",
    "list_log_files",
    "repair_torn",
    "rewrite_file",
]

#: Lines of this many bytes or more are kept but indexed ``invalid`` (SPEC §6.4).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Bytes before a recorded size that must be unchanged for "the file only grew" (SPEC §7.1).
TAIL_WINDOW = 4096

_READ_BUFFER = 1 << 20
_ROUTE_RE = re.compile(r"(?:messages/)?[^/\\\x00.][^/\\\x00]*\.jsonl")
_LOG_FILE_MODE = 0o644


def check_route(path: str) -> str:
    """Return ``path`` if events may be appended to it, else raise ``ValueError``.

    Allowed: ``<name>.jsonl`` at the top of the sync dir or
    ``messages/<name>.jsonl``; names must not start with ``.``.  The legacy
    ``messages.jsonl`` is read but never written.
    """
    if not isinstance(path, str) or not _ROUTE_RE.fullmatch(path) or "\n" in path:
        raise ValueError(f"bad route {path!r}: expected <name>.jsonl or messages/<name>.jsonl")
    if path == "messages.jsonl":
        raise ValueError("messages.jsonl is the legacy log: it is read, never written")
    return path


def list_log_files(sync_dir: Path) -> list[str]:
    """Every readable log file, relative to ``sync_dir``, sorted (SPEC §6.3)."""
    out: list[str] = []
    for rel_dir in ("", "messages"):
        directory = sync_dir / rel_dir if rel_dir else sync_dir
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = entry.name
            if not name.endswith(".jsonl") or name.startswith("."):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            out.append(f"{rel_dir}/{name}" if rel_dir else name)
    out.sort()
    return out


def iter_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset, line)`` for every complete line from ``offset``.

    ``line`` is the exact bytes without the ``\\n``.  An unterminated fragment
    at the end of the file is not yielded (it is a torn write, SPEC §6.6).
    There is no line length limit.  A missing file yields nothing.
    """
    try:
        f = open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below, generator
    except FileNotFoundError:
        return
    with f:
        if offset:
            f.seek(offset)
        pos = offset
        for raw in f:
            n = len(raw)
            if raw[-1] != 0x0A:  # torn tail
                return
            yield pos, raw[:-1]
            pos += n


def file_tail_sha256(path: Path, size: int) -> str | None:
    """sha256 hex of the :data:`TAIL_WINDOW` bytes before ``size`` (``None`` if the file is shorter)."""
    start = max(0, size - TAIL_WINDOW)
    try:
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return None
    if len(data) != size - start:
        return None
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Appending


@dataclass(slots=True)
class _Open:
    fd: int
    ino: tuple[int, int]
    path: str


class KernelSync:
    """``fdatasync`` run by the kernel in the background: Linux native AIO (``IOCB_CMD_FDSYNC``).

    :meth:`submit` queues the ``fdatasync`` of files and returns at once (the
    kernel runs them on workers of its own, concurrently); :meth:`reap` waits
    for one and raises its error.  In between, the calling thread is free:
    the writer applies the batch to SQLite while the disk works, without a
    Python thread hand-over (which cost more than the overlap gained on the
    2-CPU VM this was measured on).  :meth:`reap` polls for a moment before
    it sleeps (see :meth:`_collect`).  Linux >= 4.18; :meth:`open` returns
    ``None`` where native AIO is missing, and :meth:`submit` starts nothing
    where its fsync command is (the caller then syncs itself).

    The calls go through ``syscall(2)`` with :mod:`ctypes`, which releases the
    GIL while :meth:`reap` blocks.  One thread at a time; in a forked child
    it starts nothing (the context belongs to the parent).
    """

    _SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}  # setup, destroy, getevents, submit
    _FDSYNC = 3  # IOCB_CMD_FDSYNC
    _SLOTS = 32  # fsyncs in flight at once (the kernel reserves 2 * max(32, 4 * CPUs) events)
    #: How long :meth:`reap` polls (yielding the CPU) before it sleeps in the kernel.
    spin_s = 0.001

    def __init__(self, syscall: Any, numbers: tuple[int, int, int, int], ctx: Any, types: Any) -> None:
        self._syscall = syscall
        # syscall(2) is variadic: pass every integer as a C long
        self._nr_destroy, self._nr_getevents, self._nr_submit = (types.c_long(n) for n in numbers[1:])
        self._one = types.c_long(1)
        self._ctx = ctx
        self._types = types
        self._pid = os.getpid()
        self._iocbs = (types.iocb * self._SLOTS)()
        for cb in self._iocbs:
            cb.aio_lio_opcode = self._FDSYNC
        self._iocb_ptrs = (types.iocb_p * self._SLOTS)(*(types.pointer(cb) for cb in self._iocbs))
        self._events = (types.io_event * self._SLOTS)()
        self._nevents = types.c_long(self._SLOTS)
        self._no_wait = types.byref(types.timespec(0, 0))
        self._next = 0
        #: tokens submitted and not reaped yet (a batch that failed half-way)
        self._unreaped: set[int] = set()
        self._done: dict[int, int] = {}
        # A context left open (a store never closed) is freed with the object.
        self._finalizer = weakref.finalize(self, _destroy_aio, syscall, self._nr_destroy, ctx, self._pid)

    @classmethod
    def open(cls) -> KernelSync | None:
        """A new AIO context, or ``None`` when this system cannot fsync through native AIO."""
        if not sys.platform.startswith("linux"):
            return None
        import platform

        numbers = cls._SYSCALLS.get(platform.machine())
        if numbers is None:
            return None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            syscall = libc.syscall
        except (ImportError, OSError, AttributeError):
            return None
        syscall.restype = ctypes.c_long
        types = _aio_types(ctypes)
        ctx = ctypes.c_ulong(0)
        if syscall(ctypes.c_long(numbers[0]), ctypes.c_long(cls._SLOTS), ctypes.byref(ctx)) != 0:
            return None  # ENOSYS, or aio-max-nr reached: sync in the thread
        return cls(syscall, numbers, ctx, types)

    def submit(self, fds: Sequence[int]) -> list[int]:
        """Start ``fdatasync`` of each of ``fds``; tokens for :meth:`reap`, one per started call.

        They are started in order and may be fewer than ``fds`` (none where
        AIO cannot sync, too many in flight): the caller syncs the others
        itself.
        """
        if self._ctx is None or os.getpid() != self._pid:
            return []
        room = self._SLOTS - len(self._unreaped)
        if room < len(fds) and self._unreaped:
            try:
                self._collect(self._unreaped.copy())  # make room: reap what failed batches left
            except OSError:
                return []
            room = self._SLOTS
        n = min(room, len(fds))
        if n <= 0:
            return []
        first = self._next + 1
        self._next += n
        iocbs, ptrs = self._iocbs, self._iocb_ptrs
        for i in range(n):
            iocbs[i].aio_fildes = fds[i]
            iocbs[i].aio_data = first + i
        while True:
            done = self._syscall(self._nr_submit, self._ctx, self._types.c_long(n), ptrs)
            if done >= 0:
                tokens = list(range(first, first + done))
                self._unreaped.update(tokens)
                return tokens
            err = self._types.get_errno()
            if err == errno.EINTR:
                continue
            if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                self.close()  # no fsync through AIO here (Linux < 4.18): stop trying
            return []

    def reap(self, token: int) -> None:
        """Wait for the ``fdatasync`` of ``token``; raise its error as :class:`OSError`."""
        res = self._collect({token})
        if res < 0:
            raise OSError(-res, f"fdatasync: {os.strerror(-res)}")

    def _collect(self, tokens: set[int]) -> int:
        """Reap events until every one of ``tokens`` completed; the result of the last one.

        For up to :attr:`spin_s` it polls, yielding the CPU in between, before
        it blocks: the kernel worker that runs the fsync is bound to this CPU,
        and a thread that sleeps until it is done leaves the CPU idle, which a
        virtual machine pays for with an expensive wake-up (~60-100 µs per
        fsync where this was measured, a third of the fsync).
        """
        res = 0
        deadline = 0.0
        for token in tokens:
            while token not in self._done:
                timeout = None
                if self.spin_s > 0:
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + self.spin_s
                    if now < deadline:
                        timeout = self._no_wait
                n = self._syscall(
                    self._nr_getevents, self._ctx, self._one, self._nevents, self._events, timeout
                )
                if n == 0 and timeout is not None:
                    os.sched_yield()
                    continue
                if n < 0:
                    err = self._types.get_errno()
                    if err == errno.EINTR:
                        continue
                    raise OSError(err, f"io_getevents: {os.strerror(err)}")
                for ev in self._events[:n]:
                    self._unreaped.discard(ev.data)
                    self._done[ev.data] = ev.res
            res = self._done.pop(token)
        return res

    def close(self) -> None:
        """Wait for what is in flight and free the context."""
        if self._ctx is None:
            return
        try:
            if self._unreaped and os.getpid() == self._pid:
                self._collect(self._unreaped.copy())
        except OSError:
            pass
        finally:
            self._ctx = None
            self._finalizer()


def _destroy_aio(syscall: Any, nr_destroy: Any, ctx: Any, pid: int) -> None:
    """``io_destroy`` (it waits for the context's requests in flight); not in a forked child."""
    if os.getpid() == pid:
        syscall(nr_destroy, ctx)


def _aio_types(ctypes: Any) -> Any:
    """The ``struct iocb`` and ``struct io_event`` of ``<linux/aio_abi.h>`` (little-endian 64-bit)."""

    class iocb(ctypes.Structure):
        _fields_ = [
            ("aio_data", ctypes.c_uint64),
            ("aio_key", ctypes.c_uint32),
            ("aio_rw_flags", ctypes.c_int32),
            ("aio_lio_opcode", ctypes.c_uint16),
            ("aio_reqprio", ctypes.c_int16),
            ("aio_fildes", ctypes.c_uint32),
            ("aio_buf", ctypes.c_uint64),
            ("aio_nbytes", ctypes.c_uint64),
            ("aio_offset", ctypes.c_int64),
            ("aio_reserved2", ctypes.c_uint64),
            ("aio_flags", ctypes.c_uint32),
            ("aio_resfd", ctypes.c_uint32),
        ]

    class io_event(ctypes.Structure):
        _fields_ = [
            ("data", ctypes.c_uint64),
            ("obj", ctypes.c_uint64),
            ("res", ctypes.c_int64),
            ("res2", ctypes.c_int64),
        ]

    class timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    return SimpleNamespace(
        iocb=iocb,
        iocb_p=ctypes.POINTER(iocb),
        io_event=io_event,
        pointer=ctypes.pointer,
        get_errno=ctypes.get_errno,
        c_long=ctypes.c_long,
        timespec=timespec,
        byref=ctypes.byref,
    )


@dataclass
class PendingAppend:
    """A batch written by :meth:`AppendLog.write` and not yet synced."""

    touched: list[tuple[str, int, int, bool]] = field(default_factory=list)  # rel, fd, size before, created
    new_dirs: set[Path] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)


class AppendLog:
    """Durable batch appends to the log files of one sync dir (SPEC §6.5).

    Keeps the files it appended to open between batches; before each batch it
    checks (``stat`` against ``fstat``) that the path still names the same
    file, so a file replaced by a rewrite or merge is reopened.  Call
    :meth:`invalidate` after anything rewrote files, and :meth:`close` at the
    end.  Not thread-safe: the writer uses it from one thread at a time.
    """

    def __init__(self, sync_dir: Path):
        self.sync_dir = Path(sync_dir)
        self._open: dict[str, _Open] = {}
        self._kernel: KernelSync | None = None
        self._kernel_tried = False

    def append(self, writes: Mapping[str, bytes]) -> dict[str, int]:
        """Append ``writes`` (relative path → bytes ending in ``\\n``) durably.

        Files are written in the mapping's order, then each is
        ``fdatasync``-ed once; a created file gets mode 0644 and its directory
        is fsynced.  Returns each file's new size.  On any failure every
        touched file is truncated back to its size before the batch and
        fsynced (a file this batch created is removed), and the error is
        raised.
        """
        pending = self.write(writes)
        try:
            self.sync(pending)
        except BaseException:
            self.roll_back(pending)
            raise
        return pending.sizes

    def write(self, writes: Mapping[str, bytes]) -> PendingAppend:
        """First half of :meth:`append`: write without syncing.

        The caller must then :meth:`sync` (or :meth:`roll_back`) the returned
        batch.  A failure while writing rolls back and raises.
        """
        pending = PendingAppend()
        try:
            for rel, data in writes.items():
                fd, size, created = self._fd_for(rel, pending.new_dirs)
                pending.touched.append((rel, fd, size, created))
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                pending.sizes[rel] = size + len(data)
        except BaseException:
            self.roll_back(pending)
            raise
        return pending

    @staticmethod
    def sync_jobs(pending: PendingAppend) -> list[Callable[[], None]]:
        """The fsyncs that make ``pending`` durable, as independent calls.

        One ``fdatasync`` per touched file (data and size; a file's name is
        made durable by the fsync of its directory), plus one fsync per
        directory that gained an entry.  They may run concurrently: the
        file system folds concurrent syncs into fewer journal commits.
        """
        jobs: list[Callable[[], None]] = [
            partial(os.fdatasync, fd) for _rel, fd, _size, _created in pending.touched
        ]
        jobs += [
            partial(fsync_dir, d) for d in sorted(pending.new_dirs, key=lambda p: len(p.parts), reverse=True)
        ]
        return jobs

    def start_sync(self, pending: PendingAppend) -> tuple[list[Callable[[], None]], int]:
        """:meth:`sync_jobs`, with the files' ``fdatasync`` already running in the kernel.

        Returns the jobs and how many of the first ones only wait for an
        ``fdatasync`` started through native AIO (see :class:`KernelSync`):
        the caller may work while the disk does, then runs those jobs itself
        (``SyncPool.start(jobs, keep=...)``; they must not go to another
        thread).  The other jobs are the plain calls (all of them where
        native AIO is missing).  Every returned job must be run, even when
        the batch is given up.
        """
        jobs = self.sync_jobs(pending)
        if not pending.touched:
            return jobs, 0
        kernel = self._kernel
        if kernel is None and not self._kernel_tried:
            self._kernel_tried = True
            kernel = self._kernel = KernelSync.open()
        if kernel is None:
            return jobs, 0
        tokens = kernel.submit([fd for _rel, fd, _size, _created in pending.touched])
        for i, token in enumerate(tokens):
            jobs[i] = partial(kernel.reap, token)
        return jobs, len(tokens)

    def sync(self, pending: PendingAppend) -> None:
        """Make a written batch durable, one call after the other (see :meth:`sync_jobs`)."""
        for job in self.sync_jobs(pending):
            job()

    def roll_back(self, pending: PendingAppend) -> None:
        """Truncate every file of a batch back to its size before it (SPEC §6.5)."""
        self._roll_back(pending.touched)

    def _fd_for(self, rel: str, new_dirs: set[Path]) -> tuple[int, int, bool]:
        cached = self._open.get(rel)
        if cached is not None:
            # One syscall on a plain string: is the path still our file, and how long is
            # it?  (The same inode: its size is the size of the file behind our fd.)
            try:
                st = os.stat(cached.path)
                if (st.st_dev, st.st_ino) == cached.ino:
                    return cached.fd, st.st_size, False
            except FileNotFoundError:
                pass
            self._drop(rel)
        path = self.sync_dir / rel
        parent = path.parent
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            new_dirs.add(parent.parent)
        created = False
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _LOG_FILE_MODE
            )
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{path} is not a regular file")
            if created:
                os.fchmod(fd, _LOG_FILE_MODE)
                new_dirs.add(parent)
        except BaseException:
            os.close(fd)
            raise
        self._open[rel] = _Open(fd, (st.st_dev, st.st_ino), str(path))
        return fd, st.st_size, created

    def _roll_back(self, touched: list[tuple[str, int, int, bool]]) -> None:
        for rel, fd, size, created in touched:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError:
                pass
            if created:
                self._drop(rel)
                try:
                    os.unlink(self.sync_dir / rel)
                    fsync_dir((self.sync_dir / rel).parent)
                except OSError:
                    pass
        # After a failure nothing is trusted: reopen next time.
        self.invalidate()

    def _drop(self, rel: str) -> None:
        entry = self._open.pop(rel, None)
        if entry is not None:
            try:
                os.close(entry.fd)
            except OSError:
                pass

    def invalidate(self) -> None:
        """Close every cached file (call after files were rewritten or replaced)."""
        for rel in list(self._open):
            self._drop(rel)

    def close(self) -> None:
        """Close every cached file (and the AIO context, after its fsyncs ended)."""
        kernel, self._kernel = self._kernel, None
        self._kernel_tried = False
        if kernel is not None:
            kernel.close()
        self.invalidate()


class SyncGroup:
    """The fsyncs of one batch, running on a :class:`SyncPool`; :meth:`wait` for them.

    A group may hold jobs of its own (``own``) that the thread calling
    :meth:`wait` runs itself before waiting for the others.
    """

    __slots__ = ("_done", "_left", "_lock", "_own", "error")

    def __init__(self, count: int, own: Sequence[Callable[[], None]] = ()) -> None:
        self._left = count
        self._own = own
        self._lock = _thread.allocate_lock()
        self._done = _thread.allocate_lock()
        self.error: BaseException | None = None
        if count:
            self._done.acquire()

    def _finished(self, error: BaseException | None) -> None:
        with self._lock:
            if error is not None and self.error is None:
                self.error = error
            self._left -= 1
            last = self._left == 0
        if last:
            self._done.release()

    def wait(self) -> BaseException | None:
        """Run the group's own jobs, block until every job finished; return the first error.

        ``None`` means every job succeeded.
        """
        own, self._own = self._own, ()
        for job in own:
            try:
                job()
            except BaseException as exc:
                self._finished(exc)
            else:
                self._finished(None)
        with self._done:
            pass
        return self.error


class SyncPool:
    """A few long-lived threads that run blocking calls (the fsyncs of a batch) concurrently.

    Lighter than a ``ThreadPoolExecutor`` per call (no future, no condition
    variables, no idle-semaphore dance), which counts when every durable
    append waits for a round trip.  Concurrent ``fdatasync`` calls on
    different files let the file system fold them into fewer journal commits
    (ten files synced one after the other cost ten commits).
    """

    def __init__(self, max_threads: int, name: str = "thrum-fsync") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], SyncGroup] | None] = queue.SimpleQueue()
        self._max = max_threads
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = _thread.allocate_lock()

    def start(self, jobs: Sequence[Callable[[], None]], *, keep: int = 1) -> SyncGroup:
        """Start ``jobs`` and return their group.

        The first ``keep`` jobs are kept for the thread that calls
        :meth:`SyncGroup.wait`, which runs them itself (the others are handed
        to the pool threads, each on its own thread when there are enough): a
        caller then pays no thread hand-over for a single job, and may do its
        own work before it waits.  With ``keep=0`` every job goes to the pool.
        """
        n = min(keep, len(jobs))
        group = SyncGroup(len(jobs), jobs[:n])
        rest = jobs[n:]
        if rest:
            want = min(len(rest), self._max)
            if len(self._threads) < want:
                self._grow(want)
            for job in rest:
                self._jobs.put((job, group))
        return group

    def _grow(self, n: int) -> None:
        with self._lock:
            while len(self._threads) < n:
                t = threading.Thread(
                    target=self._main, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                t.start()
                self._threads.append(t)

    def _main(self) -> None:
        get = self._jobs.get
        while True:
            item = get()
            if item is None:
                return
            job, group = item
            try:
                job()
            except BaseException as exc:
                group._finished(exc)
            else:
                group._finished(None)

    def close(self) -> None:
        """Stop the threads once the queued jobs ran."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for t in threads:
            t.join()


# ---------------------------------------------------------------------------
# Torn tails


@dataclass(frozen=True)
class TornRepair:
    """What :func:`repair_torn` did to one file."""

    file: str
    action: str  # "newline" (complete line, \n appended) | "moved" (fragment cut)
    bytes: int
    saved_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "action": self.action, "bytes": self.bytes, "saved_to": self.saved_to}


def _last_newline(f: Any, size: int) -> int:
    """Offset of the last ``\\n`` in the open file, or -1."""
    pos = size
    chunk = 1 << 16
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        data = f.read(pos - start)
        i = data.rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
        chunk = min(chunk * 4, 1 << 24)
    return -1


def repair_torn(sync_dir: Path, torn_dir: Path, *, now_ns: int | None = None) -> list[TornRepair]:
    """Repair every log file whose last byte is not ``\\n`` (SPEC §6.6).

    The bytes after the last ``\\n`` are kept with an appended ``\\n`` when they
    parse as a complete JSON object; otherwise they are copied to
    ``torn_dir/<path with / → __>.<UTC seconds>.partial`` (fsynced) and the
    file is truncated just after its last ``\\n`` (fsynced).  A complete line
    is never removed.
    """
    repairs: list[TornRepair] = []
    stamp = format_ts_seconds(time.time_ns() if now_ns is None else now_ns)
    for rel in list_log_files(sync_dir):
        path = sync_dir / rel
        with open(path, "r+b", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                continue
            f.seek(size - 1)
            if f.read(1) == b"\n":
                continue
            cut = _last_newline(f, size) + 1
            f.seek(cut)
            fragment = f.read(size - cut)
            if parse_line(fragment) is not None:
                f.seek(size)
                f.write(b"\n")
                os.fsync(f.fileno())
                repairs.append(TornRepair(rel, "newline", len(fragment)))
                continue
            torn_dir.mkdir(parents=True, exist_ok=True)
            base = f"{rel.replace('/', '__')}.{stamp}"
            target = torn_dir / f"{base}.partial"
            n = 1
            while target.exists():
                target = torn_dir / f"{base}-{n}.partial"
                n += 1
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(fragment)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(torn_dir)
            os.ftruncate(f.fileno(), cut)
            os.fsync(f.fileno())
            repairs.append(TornRepair(rel, "moved", len(fragment), str(target)))
    return repairs


# ---------------------------------------------------------------------------
# Rewrites


@dataclass(frozen=True)
class RewriteResult:
    """What :func:`rewrite_file` did."""

    removed: int
    kept: int
    deleted_file: bool
    size: int


def rewrite_file(path: Path, drop: Callable[[bytes], bool]) -> RewriteResult:
    """Rewrite ``path`` without the complete lines for which ``drop(line)`` is true.

    Streams into a temp file in the same directory (mode 0644); when a line
    was dropped the temp file is fsynced and renamed over ``path`` and the
    directory fsynced, otherwise it is discarded and ``path`` is untouched.  A
    file left without lines is removed instead.  An unterminated tail is kept
    as it is.  ``drop`` is called once per complete line, in file order.
    """
    removed = kept = 0
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=_READ_BUFFER) as out:
            os.fchmod(out.fileno(), _LOG_FILE_MODE)
            end = 0
            for off, line in iter_lines(path):
                end = off + len(line) + 1
                if drop(line):
                    removed += 1
                    continue
                out.write(line)
                out.write(b"\n")
                kept += 1
            if removed:
                with open(path, "rb") as src:  # keep an unterminated tail verbatim
                    src.seek(end)
                    tail = src.read()
                if tail:
                    out.write(tail)
                    kept += 1
                out.flush()
                os.fsync(out.fileno())
            size = out.tell()
        if removed == 0:
            os.unlink(tmp_name)
            return RewriteResult(0, kept, False, path.stat().st_size if path.exists() else 0)
        if kept == 0:
            os.unlink(tmp_name)
            os.unlink(path)
        else:
            os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
    return RewriteResult(removed, kept, kept == 0, size if kept else 0)
