"""How fast this host is at the moment, printed beside benchmark results.

The virtual machine thrum is measured on runs the same code up to about 50%
slower at some hours than at others, with the same load inside it (the host
is busy, not the guest).  A result means little without the speed of the
moment it was taken at, so the benchmarks print two references next to it:

- :func:`cpu_reference_ms`: a fixed piece of work shaped like a rebuild
  (canonical lines parsed with orjson, rows inserted into SQLite through an
  index).  It fits in the CPU caches, so it shows how fast the CPU runs, not
  the memory and page-cache effects a rebuild of a large log also depends
  on: compare results only between runs whose references are close, and
  even then alternate the variants being compared.
- :func:`raw_fdatasync_rate`: ``fdatasync`` calls per second on small
  appends, the floor of every durable write.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path

import orjson

#: Lines parsed and rows inserted by one round of :func:`cpu_reference_ms`.
REFERENCE_ROWS = 50_000


def _reference_round(lines: list[bytes]) -> float:
    started = time.perf_counter()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, author TEXT, ts INTEGER, body TEXT)")
    db.execute("CREATE INDEX t_author ON t(author, ts)")
    rows = []
    for line in lines:
        obj = orjson.loads(line)
        rows.append((obj["message_id"], obj["agent_id"], obj["ts"], obj["body"]["content"]))
    db.executemany("INSERT INTO t VALUES (?,?,?,?)", rows)
    db.commit()
    db.close()
    return (time.perf_counter() - started) * 1000


def cpu_reference_ms(rounds: int = 5) -> float:
    """Median milliseconds of :data:`REFERENCE_ROWS` lines parsed and inserted (lower is faster)."""
    lines = [
        orjson.dumps(
            {
                "agent_id": f"agent{i % 200:03d}",
                "body": {"content": f"message {i} " * 8, "format": "markdown"},
                "message_id": f"msg_{i:026d}",
                "ts": 1_767_225_600_000_000_000 + i * 1000,
                "type": "message.create",
            },
            option=orjson.OPT_SORT_KEYS,
        )
        for i in range(REFERENCE_ROWS)
    ]
    return statistics.median(_reference_round(lines) for _ in range(rounds))


def raw_fdatasync_rate(directory: Path, seconds: float = 1.0) -> float:
    """fdatasync/s of 200-byte appends to one file in ``directory``."""
    path = directory / "raw-fdatasync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, b"x" * 199 + b"\n")
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return n / (time.perf_counter() - t0)


def describe(directory: Path) -> str:
    """One line: load average, CPU reference and raw fdatasync rate of this host now."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"host now: load average {load}; CPU reference {cpu_reference_ms():.0f} ms "
        f"(lower is faster); raw fdatasync {raw_fdatasync_rate(directory):,.0f}/s"
    )
