"""Benchmark of the event store: durable appends, group commit, rebuild, memory.

Prints numbers (wall time and the process's CPU time per event, which is what
to compare on a loaded machine); asserts nothing.  The CPU time leaves out the
kernel's own threads: where the writer syncs through native AIO
(``thrum_core.events.log.KernelSync``) the ``fdatasync`` work (~70 µs per call
on the VM this was tuned on) runs on a kernel worker and is not counted, so
compare CPU per event only between runs that both use it (or both do not).
Run from the repository root::

    python bench/eventstore.py [--events 1000000] [--seconds 3] [--dir DIR]

- durable appends/s (every call returns after fdatasync, its rows projected
  and visible to the store's readers; the writer may commit several such
  batches to SQLite at once) for one sequential writer, and for 10
  concurrent writers (trio tasks calling ``submit``) writing to one file and
  to ten shard files;
- rebuild events/s of a generated log of ``--events`` canonical lines of a
  simple registered type whose reducer inserts one row per event, and the
  peak RSS of the process that did the rebuild (run in a fresh subprocess so
  generating the log does not count).

Targets (the brief): >= 3,000 appends/s sequential, >= 6,000/s with 10
concurrent writers, rebuild >= 50,000 events/s, RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio
from hostspeed import describe

from thrum_core.canonical import canonical_json
from thrum_core.events.store import EventStore
from thrum_core.events.types import ApplyContext, EventType, EventTypeRegistry, Pending, StoredEvent
from thrum_core.ids import new_event_id
from thrum_core.timefmt import format_ts

DAEMON = "d_01KDVDNA000000000000000000"


class Paths:
    """The four paths the store needs, under one directory."""

    def __init__(self, root: Path):
        self.sync_dir = root / "sync"
        self.var_dir = root / "var"
        self.db_path = self.var_dir / "messages.db"
        self.torn_dir = self.var_dir / "torn"
        self.sync_dir.mkdir(parents=True, exist_ok=True)
        self.var_dir.mkdir(parents=True, exist_ok=True)


def reduce_item(ctx: ApplyContext, ev: StoredEvent) -> Pending | None:
    ctx.db.execute(
        "INSERT OR IGNORE INTO p_bench_items(item_id, author, n, k) VALUES (?,?,?,?)",
        (ev.obj["item_id"], ev.obj["author"], ev.obj["n"], ev.k),
    )
    return None


def route(obj: Mapping[str, Any]) -> str:
    return f"messages/{obj['author']}.jsonl"


def registry(*, sharded: bool) -> EventTypeRegistry:
    reg = EventTypeRegistry()
    register = reg.bound("bench")
    register.migrations(
        "bench", ["CREATE TABLE p_bench_items (item_id TEXT PRIMARY KEY, author TEXT, n INTEGER, k TEXT)"]
    )
    register(EventType("bench.item", reduce_item, route=route if sharded else "events.jsonl"))
    return reg


def item(author: str, n: int) -> dict[str, Any]:
    return {"type": "bench.item", "item_id": f"{author}-{n}", "author": author, "n": n, "text": "hello " * 8}


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def appends(root: Path, writers: int, seconds: float, sharded: bool) -> tuple[float, int, int, float]:
    """Durable appends/s with ``writers`` concurrent tasks; also batches, events and CPU s."""
    store = EventStore(Paths(root), registry(sharded=sharded), DAEMON)
    store.open()
    count = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        for _ in range(20):  # warm up
            await store.submit([item("warm", count)])
            count += 1
        b0 = store.stats()["batches"]
        done = 0
        deadline = time.perf_counter() + seconds

        async def writer(w: int) -> None:
            nonlocal done
            n = 0
            while time.perf_counter() < deadline:
                await store.submit([item(f"w{w}", n)])
                n += 1
                done += 1

        t0, c0 = time.perf_counter(), cpu_seconds()
        async with trio.open_nursery() as inner:
            for w in range(writers):
                inner.start_soon(writer, w)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        batches = store.stats()["batches"] - b0
        await store.stop_writer()
    store.close()
    return done / elapsed, batches, done, cpu


def generate(root: Path, n: int, files: int) -> int:
    """Write ``n`` canonical ``bench.item`` lines spread over ``files`` shards, in time order."""
    paths = Paths(root)
    (paths.sync_dir / "messages").mkdir(exist_ok=True)
    outs = [open(paths.sync_dir / "messages" / f"a{i}.jsonl", "wb") for i in range(files)]  # noqa: SIM115
    base = 1_767_225_600_000_000_000
    total = 0
    try:
        for i in range(n):
            author = f"a{i % files}"
            obj = item(author, i)
            obj.update(
                event_id=new_event_id(), timestamp=format_ts(base + i * 1000), v=1, origin_daemon=DAEMON
            )
            line = (canonical_json(obj) + "\n").encode()
            outs[i % files].write(line)
            total += len(line)
    finally:
        for f in outs:
            f.close()
    return total


def rebuild_child(root: Path) -> None:
    """Run in a fresh process: open (builds the projection) and rebuild again; print JSON."""
    store = EventStore(Paths(root), registry(sharded=True), DAEMON)
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = store.open()
    t_open, c_open = time.perf_counter() - t0, cpu_seconds() - c0
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), cpu_seconds()
    rb = store.rebuild()
    t_rebuild, c_rebuild = time.perf_counter() - t0, cpu_seconds() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = store.reader().execute("SELECT COUNT(*) FROM p_bench_items").fetchone()[0]
    store.close()
    t0 = time.perf_counter()
    again = EventStore(Paths(root), registry(sharded=True), DAEMON)
    again.open()  # an existing database: quick_check, then a catch-up that finds nothing
    t_reopen = time.perf_counter() - t0
    again.close()
    print(
        json.dumps(
            {
                "events": rb.events,
                "rows": rows,
                "open_s": t_open,
                "open_cpu_s": c_open,
                "open_events": report.new,
                "rebuild_s": t_rebuild,
                "rebuild_cpu_s": c_rebuild,
                "passes": rb.passes,
                "rss_kb_after_open": rss_open,
                "rss_kb": rss,
                "reopen_s": t_reopen,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the rebuild log")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each append run")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--rebuild-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rebuild_child is not None:
        rebuild_child(args.rebuild_child)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        print(f"python {sys.version.split()[0]}, work dir {work}, {os.cpu_count()} CPUs")
        print(describe(work))
        for label, writers, sharded in (
            ("sequential, 1 writer", 1, False),
            ("10 concurrent writers, one file", 10, False),
            ("10 concurrent writers, 10 shard files", 10, True),
        ):
            run_dir = work / label.replace(" ", "_").replace(",", "")
            rate, batches, done, cpu = trio.run(appends, run_dir, writers, args.seconds, sharded)
            print(
                f"durable appends/s  {label:<40} {rate:>9,.0f}/s  "
                f"({done:,} events in {batches:,} batches, {done / max(batches, 1):.1f}/batch, "
                f"CPU {cpu / max(done, 1) * 1e6:,.0f} µs/event)"
            )
        log_dir = work / "rebuild"
        t0 = time.perf_counter()
        nbytes = generate(log_dir, args.events, files=8)
        took = time.perf_counter() - t0
        print(f"generated {args.events:,} events ({nbytes / 2**20:,.0f} MiB, 8 files) in {took:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--rebuild-child", str(log_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"build at open       {res['open_events']:,} events in {res['open_s']:.1f} s = "
            f"{res['open_events'] / res['open_s']:,.0f} events/s "
            f"(CPU {res['open_cpu_s'] / max(res['open_events'], 1) * 1e6:.1f} µs/event)"
        )
        print(
            f"rebuild             {res['events']:,} events in {res['rebuild_s']:.1f} s = "
            f"{res['events'] / res['rebuild_s']:,.0f} events/s ({res['passes']} pass, {res['rows']:,} rows; "
            f"CPU {res['rebuild_cpu_s'] / max(res['events'], 1) * 1e6:.1f} µs/event)"
        )
        print(
            f"peak RSS            {res['rss_kb'] / 1024:,.0f} MB after rebuild "
            f"({res['rss_kb_after_open'] / 1024:,.0f} MB after the build at open)"
        )
        print(f"reopen              {res['reopen_s']:.2f} s (quick_check and an empty catch-up)")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average {load}")


if __name__ == "__main__":
    main()
