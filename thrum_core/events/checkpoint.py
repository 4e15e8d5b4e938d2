"""Checkpoints of the projection's WAL, off the writer's path (a thread with its own connection).

SQLite's automatic checkpoint runs inside the COMMIT that crosses ``wal_autocheckpoint`` pages (1,000 by
default): that commit copies the WAL into the database and fsyncs both, a few milliseconds that land on
one durable append in about every 125. While the writer task runs, :class:`Checkpointer` raises that
threshold on the writer's connection to :data:`RESTART_PAGES` and runs ``PRAGMA wal_checkpoint(PASSIVE)``
every :data:`INTERVAL_S` from a thread of its own. A passive checkpoint never blocks the writer or a
reader (it copies what no reader still needs), and the sqlite3 module releases the GIL while it runs, so
it overlaps with the writer on another CPU. ``bench/eventstore.py``'s sequential durable appends went from
about 2,200-2,450 to 2,750-2,800 per second with it.

The thread copies the frames, but SQLite starts the WAL file over from its beginning only when a write
transaction begins with every frame copied, which a writer that never pauses never sees: its next
transaction begins right after its last commit.  The automatic checkpoint at :data:`RESTART_PAGES` is
for that case: the commit that crosses it copies the few frames the thread has not, and the next
transaction restarts the WAL.  A burst of 30,000 ``message.send`` from 10 clients grew the WAL to
565 MB without it (88 MB with the writer's held transactions); with it the WAL stays under 20 MB, and
the send rates did not change.

When the thread stops, the writer's connection gets its default automatic checkpoint back (a rebuild,
``thrum migrate`` and a store without a running writer rely on it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["AUTOCHECKPOINT_PAGES", "INTERVAL_S", "RESTART_PAGES", "Checkpointer"]

log = logging.getLogger("thrum.events.checkpoint")

#: How often the thread checkpoints (a passive checkpoint with nothing to copy costs microseconds).
INTERVAL_S = 0.05
#: SQLite's default ``wal_autocheckpoint``, given back to the writer's connection at :meth:`stop`.
AUTOCHECKPOINT_PAGES = 1000
#: The writer connection's ``wal_autocheckpoint`` while the thread runs (16 MiB of 4 KiB pages).
RESTART_PAGES = 4096
_BUSY_TIMEOUT_MS = 5000


class Checkpointer:
    """Runs passive WAL checkpoints of ``db_path`` from a thread while the writer runs."""

    def __init__(
        self, writer_conn: sqlite3.Connection, db_path: Path, interval_s: float = INTERVAL_S
    ) -> None:
        self._writer_conn = writer_conn
        self._db_path = db_path
        self._interval = interval_s
        self._stop = threading.Event()
        self._paused = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def start(self) -> None:
        """Raise the writer's automatic checkpoint to :data:`RESTART_PAGES`, start the thread.

        Call it from the writer's thread.
        """
        if self._thread is not None:
            return
        conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._writer_conn.execute(f"PRAGMA wal_autocheckpoint={RESTART_PAGES}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(conn,), name="thrum-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and give the writer's connection its automatic checkpoint back."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._writer_conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """SQLite's automatic checkpoint instead of the thread, for a while (a rebuild: big commits).

        Call from the thread that uses the writer's connection; waits for a checkpoint in progress.
        """
        with self._lock:
            self._paused += 1
            if self._thread is not None:
                self._writer_conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1
                if self._thread is not None and not self._paused:
                    self._writer_conn.execute(f"PRAGMA wal_autocheckpoint={RESTART_PAGES}")

    @property
    def running(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self._interval):
                with self._lock:
                    if self._paused:
                        continue
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpoints += 1
                    except sqlite3.Error as exc:  # e.g. the database was replaced: try again later
                        log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()
