"""The event store's fast paths agree with the plain ones (and sequences stay exact)."""

from __future__ import annotations

import heapq
import json
import random
from typing import Any

import pytest
import trio
from events_testtypes import DAEMON, make_registry
from hypothesis import given
from hypothesis import strategies as st

from thrum_core.canonical import canonical_line
from thrum_core.events.log import SyncPool
from thrum_core.events.projection import StreamRow, merge_sorted_blocks
from thrum_core.events.store import EventStore
from thrum_core.events.writer import Writer
from thrum_core.ids import UlidGenerator, ulid_str
from thrum_core.paths import ThrumPaths
from thrum_core.timefmt import format_ts, parse_ts_ns

T0 = 1_767_225_600_000_000_000


def _row(ts: int, eid: str, stream: int, off: int) -> StreamRow:
    return (ts, eid, stream, off, {"type": "x"}, b"", "", f"f{stream}")


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["evt_a", "evt_b", "evt_c"])), max_size=40),
        max_size=6,
    ),
    st.integers(1, 7),
)
def test_merge_sorted_blocks_equals_heapq_merge(streams: list[list[tuple[int, str]]], block: int) -> None:
    rows = [[_row(ts, e, i, off) for off, (ts, e) in enumerate(sorted(ks))] for i, ks in enumerate(streams)]

    def blocks(rs: list[StreamRow]) -> Any:
        for start in range(0, len(rs), block):
            yield rs[start : start + block]

    merged = [r for b in merge_sorted_blocks([blocks(rs) for rs in rows]) for r in b]
    assert merged == list(heapq.merge(*rows))


def _order_line(i: int, ns: int) -> bytes:
    return canonical_line({"type": "test.order", "timestamp": format_ts(ns), "event_id": f"evt_{i:06d}"})


def _timestamp(line: bytes) -> str:
    return str(json.loads(line)["timestamp"])


def test_seq_is_exact_after_ignored_rows(paths: ThrumPaths) -> None:
    # INSERT OR IGNORE skips rows (an invalid line seen twice, a duplicate within
    # a batch): the returned seqs must still be the stored ones.
    store = EventStore(paths, make_registry(), DAEMON)
    store.open()
    proj = store.projection
    proj.start_ingest(source="sync", live=True, collect=False)
    proj.begin()
    bad = b'{"no type": 1}'
    assert proj.index_invalid(bad, bad.decode(), {"no type": 1}, "events.jsonl")
    assert not proj.index_invalid(bad, bad.decode(), {"no type": 1}, "events.jsonl")

    def rec(i: int) -> Any:
        line = _order_line(i, T0 + i * 1000).rstrip(b"\n")
        obj = json.loads(line)
        return (T0 + i * 1000, obj["event_id"], obj, line, line.decode(), "events.jsonl", "sync")

    (a,) = proj.apply_many([rec(1)])
    a2, b, a3 = proj.apply_many([rec(2), rec(3), rec(2)])  # the trailing duplicate is ignored
    (c,) = proj.apply_many([rec(4)])
    proj.commit()
    proj.end_ingest()
    assert a3 is None
    stored = dict(proj.conn.execute("SELECT event_id, seq FROM events").fetchall())
    for ev in (a, a2, b, c):
        assert ev is not None and ev.seq == stored[ev.event_id]
    store.close()


def test_rebuild_with_duplicates_across_small_merge_blocks(
    paths: ThrumPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thrum_core.events import projection

    monkeypatch.setattr(projection, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(projection, "MERGE_BLOCK", 3)
    monkeypatch.setattr(projection, "APPLY_CHUNK", 2)
    rng = random.Random(5)
    lines = [_order_line(i, T0 + rng.randrange(10**9) * 1000) for i in range(60)]
    (paths.sync_dir / "messages").mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[bytes]] = {
        "events.jsonl": lines[:40],
        "messages/a.jsonl": lines[20:],
        "messages/b.jsonl": lines,
    }
    for rel, part in parts.items():
        ordered = sorted(part, key=_timestamp)
        (paths.sync_dir / rel).write_bytes(b"".join(ordered))
    store = EventStore(paths, make_registry(), DAEMON)
    report = store.open()
    assert (report.new, report.duplicates) == (60, 80)
    keys = [r[0] for r in store.reader().execute("SELECT k FROM p_test_order ORDER BY n")]
    assert len(keys) == 60 and keys == sorted(keys)
    seqs = store.reader().execute("SELECT seq FROM events ORDER BY ts_ns, event_id").fetchall()
    assert [s[0] for s in seqs] == sorted(s[0] for s in seqs)
    store.close()


def test_ulid_generator_text_matches_ulid_str() -> None:
    clock = iter([5_000_000 * k for k in (1, 1, 1, 2, 2, 1, 3)])
    draws = iter([1023, 2**80 - 2, 7, 2**70 - 1])
    gen = UlidGenerator(time_ns=lambda: next(clock), random_bits=lambda: next(draws))
    gen2 = UlidGenerator(time_ns=lambda: 0, random_bits=lambda: 0)
    expected = [(5, 1023), (5, 1024), (5, 1025), (10, 2**80 - 2), (10, 2**80 - 1), (10, 2**80)]
    got = []
    for ms, entropy in expected[:5]:
        got.append(gen.new())
        assert got[-1] == ulid_str(ms, entropy)
    assert gen2.new() == ulid_str(0, 0)


def test_sync_pool_runs_every_job_and_reports_the_first_error() -> None:
    pool = SyncPool(3)
    done: list[int] = []

    def ok(i: int) -> Any:
        return lambda: done.append(i)

    def bad() -> None:
        raise OSError("boom")

    assert pool.start([ok(i) for i in range(7)]).wait() is None
    assert sorted(done) == list(range(7))
    err = pool.start([ok(10), bad, ok(11)]).wait()
    assert isinstance(err, OSError) and {10, 11} <= set(done)
    assert pool.start([]).wait() is None
    pool.close()


def test_sync_pool_can_run_every_job_off_the_calling_thread() -> None:
    import threading

    pool = SyncPool(2)
    caller = threading.get_ident()
    ran_on: list[int] = []
    gate = threading.Event()

    def job() -> None:
        gate.wait(5)  # the caller gets control back before the job finishes
        ran_on.append(threading.get_ident())

    group = pool.start([job, job, job], keep=0)
    assert ran_on == []
    gate.set()
    assert group.wait() is None
    assert len(ran_on) == 3 and caller not in ran_on
    pool.close()


class _CountingProcessor:
    """Stands in for the BatchProcessor: records batch sizes, answers at once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def process(self, subs: list[Any]) -> tuple[list[Any], list[Any]]:
        self.sizes.append(len(subs))
        for sub in subs:
            sub.result = []
        return [], []

    def run_exclusive(self, fn: Any) -> tuple[Any, list[Any]]:
        return fn(), []


async def test_concurrent_submitters_keep_sharing_batches() -> None:
    proc = _CountingProcessor()
    writer = Writer(proc)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)

        async def client() -> None:
            for _ in range(30):
                await writer.submit([{"type": "x"}])

        async with trio.open_nursery() as inner:
            for _ in range(8):
                inner.start_soon(client)
        assert await writer.run_exclusive(lambda: 42) == 42
        await writer.aclose()
    assert sum(proc.sizes) == 240
    assert len(proc.sizes) < 60, proc.sizes  # leaders wait for the others: about 8 per batch


async def test_sequential_submitter_leads_its_own_batches() -> None:
    proc = _CountingProcessor()
    writer = Writer(proc)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for _ in range(5):
            await writer.submit([{"type": "x"}])
        await writer.aclose()
    assert proc.sizes == [1] * 5


@given(
    ns=st.integers(0, 10**20 - 1),
    digits=st.integers(0, 9),
    pos=st.integers(0, 29),
    ch=st.sampled_from(list("0123456789:.-TtZz +x\u0663")),
)
def test_parse_ts_fast_path_matches_the_regex(ns: int, digits: int, pos: int, ch: str) -> None:
    from thrum_core import timefmt

    try:
        text = timefmt.format_ts(ns)
    except ValueError:
        return
    base, frac = text[:19], text[20:26] + f"{ns % 1000:03d}"
    for t in (base + "Z", f"{base}.{frac[:digits]}Z" if digits else base + "Z", text):
        mutated = t[:pos] + ch + t[pos + 1 :]
        for s in (t, mutated):
            assert timefmt.parse_ts_ns(s) == timefmt._parse_ts_ns(s), s


@given(ns=st.integers(-(10**12), 10**20))
def test_format_ts_matches_the_arithmetic(ns: int) -> None:
    from thrum_core import timefmt

    try:
        y, mo, d, hh, mi, ss, frac = timefmt._split_ns(ns)
    except ValueError:
        with pytest.raises(ValueError):
            timefmt.format_ts(ns)
        return
    assert timefmt.format_ts(ns) == f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}.{frac // 1000:06d}Z"
    assert timefmt.format_ts_seconds(ns) == f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}Z"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\u2028", "\u2029", "\x00", "é"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=5))
def test_writer_canonical_text_matches_canonical_json(obj: dict[str, Any]) -> None:
    from thrum_core.canonical import canonical_json
    from thrum_core.events.writer import _canonical_text

    try:
        expected = canonical_json(obj)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            _canonical_text(obj)
        return
    assert _canonical_text(obj) == expected


def test_rebuild_reads_every_timestamp_form_as_the_parser_does(paths: ThrumPaths) -> None:
    # The log reader caches the second of thrum's (``...SS.ffffffZ``) and the Go
    # tool's (``...SSZ``) timestamps and reuses it for later lines of the same
    # second, in either form: every stored instant must be what the parser gives.
    stamps = [
        "2026-01-02T21:56:00Z",
        "2026-01-02T21:56:00Z",
        "2026-01-02T21:56:00.000001Z",
        "2026-01-02T21:56:00.500000Z",
        "2026-01-02T21:56:00Z",
        "2026-01-02T21:56:01Z",
        "2026-01-02T21:56:01.250000Z",
        "2026-01-02T21:56:01Z",
        "2026-01-02t21:56:02Z",
        "2026-01-02T21:56:02Z",
        "2026-01-02T21:56:03+00:00",
        "2026-01-02T21:56:03Z",
        "2026-01-02T21:56:03.1Z",
        "2026-01-02T21:56:60Z",  # not a valid second: an invalid line
        "2026-01-02T21:56:04Z",
    ]
    lines = [
        canonical_line({"type": "test.order", "timestamp": ts, "event_id": f"evt_{i:06d}"})
        for i, ts in enumerate(stamps)
    ]
    paths.sync_dir.mkdir(parents=True, exist_ok=True)
    (paths.sync_dir / "events.jsonl").write_bytes(b"".join(lines))
    store = EventStore(paths, make_registry(), DAEMON)
    store.open()
    try:
        for _ in range(2):  # the second rebuild finds every second cached
            store.rebuild()
            got = dict(store.reader().execute("SELECT event_id, ts_ns FROM events").fetchall())
            for i, ts in enumerate(stamps):
                assert got.get(f"evt_{i:06d}") == parse_ts_ns(ts), ts  # None: indexed as invalid
    finally:
        store.close()
