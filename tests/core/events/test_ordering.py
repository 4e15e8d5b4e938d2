"""Rebuild and catch-up apply what they read in sort-key order, in memory or streamed."""

from __future__ import annotations

import random

import pytest
from events_testtypes import DAEMON, make_registry

from thrum_core.canonical import canonical_line, parse_line
from thrum_core.events import projection
from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths
from thrum_core.timefmt import format_ts

FILES = ["events.jsonl", "messages/a.jsonl", "messages/b.jsonl"]


def order_event(i: int, ns: int) -> bytes:
    return canonical_line({"type": "test.order", "timestamp": format_ts(ns), "event_id": f"evt_{i:06d}"})


def write_logs(paths: ThrumPaths, n: int, *, sorted_files: bool, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    base = 1_767_225_600_000_000_000
    lines = [order_event(i, base + rng.randrange(0, 10**12) // 1000 * 1000) for i in range(n)]
    per_file: dict[str, list[bytes]] = {f: [] for f in FILES}
    for line in lines:
        per_file[rng.choice(FILES)].append(line)
    (paths.sync_dir / "messages").mkdir(parents=True, exist_ok=True)
    for rel, ls in per_file.items():
        if sorted_files:
            ls.sort(key=lambda b: (parse_line(b)["timestamp"], parse_line(b)["event_id"]))  # type: ignore[index]
        (paths.sync_dir / rel).write_bytes(b"".join(ls))
    return lines


def applied_keys(store: EventStore) -> list[str]:
    return [r[0] for r in store.reader().execute("SELECT k FROM p_test_order ORDER BY n")]


@pytest.fixture(params=["memory", "stream", "stream+spill-to-sqlite"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param != "memory":
        monkeypatch.setattr(projection, "IN_MEMORY_BYTES", 0)
    if request.param == "stream+spill-to-sqlite":
        monkeypatch.setattr(projection, "SPILL_IN_MEMORY", 5)
    monkeypatch.setattr(projection, "REBUILD_COMMIT_EVERY", 37)
    return str(request.param)


@pytest.mark.parametrize("sorted_files", [True, False])
def test_rebuild_applies_in_sort_key_order(paths: ThrumPaths, mode: str, sorted_files: bool) -> None:
    write_logs(paths, 300, sorted_files=sorted_files)
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    keys = applied_keys(store)
    assert len(keys) == 300 and keys == sorted(keys)
    assert store.stats()["states"]["applied"] == 300
    rb = store.rebuild()
    assert rb.passes == (1 if sorted_files else 2)
    assert applied_keys(store) == keys
    assert report.rebuilt
    store.close()


def test_catch_up_applies_new_lines_in_sort_key_order(paths: ThrumPaths, mode: str) -> None:
    store = EventStore(paths, make_registry(), DAEMON)
    store.open()
    store.close()
    write_logs(paths, 200, sorted_files=False)
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    assert not report.rebuilt and report.new == 200
    keys = applied_keys(store)
    assert keys == sorted(keys) and len(keys) == 200
    # append more, unsorted, to every file: only the tails are read
    rng = random.Random(3)
    more = [
        order_event(1000 + i, 1_767_225_600_000_000_000 + rng.randrange(10**15) // 1000 * 1000)
        for i in range(60)
    ]
    for i, line in enumerate(more):
        with open(paths.sync_dir / FILES[i % 3], "ab") as f:
            f.write(line)
    new = store.catch_up_now(live=True)
    assert len(new) == 60
    tail = applied_keys(store)[200:]
    assert tail == sorted(tail) == sorted(e.k for e in new)
    assert store.catch_up_now() == []
    store.close()


def test_duplicate_event_ids_across_files_are_one_event(paths: ThrumPaths, mode: str) -> None:
    lines = write_logs(paths, 50, sorted_files=True)
    with open(paths.sync_dir / "messages" / "c.jsonl", "wb") as f:
        f.write(b"".join(lines[:10]))
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    assert report.new == 50 and report.duplicates == 10
    assert len(applied_keys(store)) == 50
    store.close()
