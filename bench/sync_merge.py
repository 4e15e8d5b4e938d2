"""Benchmark the deterministic JSONL union merge of git sync (SPEC §11.4).

Two divergent logs of 100,000 events each (``--events``) share half of their
events (``--overlap``): realistic canonical ``message.create`` lines with
ULID-based ``event_id``/``message_id`` values, increasing microsecond timestamps,
sharded authors, recipients and markdown bodies of varying length.  Each side
lists its events in sort order, as thrum writes them.  Prints the seconds of
``merge_jsonl`` (best and median of ``--runs``), the per-line cost, and checks
that the output holds the union in sort-key order and that swapping the sides
gives the same bytes.  The target is at most 3 s.

Run: ``python bench/sync_merge.py [--events N] [--overlap F] [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from thrum_core.canonical import canonical_line
from thrum_core.ids import ulid_str
from thrum_core.timefmt import format_ts
from thrum_plugins.sync._git_impl import merge_jsonl

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
AGENTS = ["furiosa", "maximus", "nux", "capable", "toast", "dag", "cheedo", "angharad"]
WORDS = [
    "the",
    "sync",
    "merge",
    "keeps",
    "every",
    "line",
    "verbatim",
    "and",
    "orders",
    "events",
    "by",
    "instant",
    "then",
    "id",
]


def make_event(i: int, rng: random.Random) -> bytes:
    """One canonical ``message.create`` line for event number ``i`` (later ``i`` = later instant)."""
    ns = T0_NS + i * 37_000_000 + rng.randrange(1_000) * 1_000
    ms = ns // 1_000_000
    author = AGENTS[i % len(AGENTS)]
    body = " ".join(rng.choices(WORDS, k=rng.randrange(5, 60)))
    obj = {
        "type": "message.create",
        "timestamp": format_ts(ns),
        "event_id": "evt_" + ulid_str(ms, int.from_bytes(os.urandom(10), "big")),
        "v": 1,
        "origin_daemon": "d_" + ulid_str(ms - 1000, i),
        "message_id": "msg_" + ulid_str(ms, int.from_bytes(os.urandom(10), "big")),
        "agent_id": author,
        "session_id": "ses_" + ulid_str(ms - 5000, i % 97),
        "body": {"format": "markdown", "content": f"#{i}: {body}"},
        "recipients": sorted({AGENTS[(i + 1) % len(AGENTS)], AGENTS[(i + 3) % len(AGENTS)]}),
        "scopes": [{"type": "group", "value": "backend"}] if i % 5 == 0 else [],
    }
    if not obj["scopes"]:
        del obj["scopes"]
    return canonical_line(obj)


def build(n_events: int, overlap: float, seed: int = 7) -> tuple[bytes, bytes, int]:
    """Return (local, remote, expected union size)."""
    rng = random.Random(seed)
    shared = int(n_events * overlap)
    unique = n_events - shared
    total = shared + 2 * unique
    events = [make_event(i, rng) for i in range(total)]
    # Interleave: every event is shared, local-only or remote-only in a fixed pattern.
    owner = ["both"] * shared + ["local"] * unique + ["remote"] * unique
    rng.shuffle(owner)
    local = b"".join(e for e, o in zip(events, owner, strict=True) if o in ("both", "local"))
    remote = b"".join(e for e, o in zip(events, owner, strict=True) if o in ("both", "remote"))
    return local, remote, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per side")
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of events on both sides")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    t = time.perf_counter()
    local, remote, total = build(args.events, args.overlap)
    print(
        f"generated {args.events:,} + {args.events:,} events ({len(local) / 1e6:.1f} MB + "
        f"{len(remote) / 1e6:.1f} MB, {total:,} distinct) in {time.perf_counter() - t:.1f} s"
    )

    times = []
    result = None
    for _ in range(args.runs):
        t = time.perf_counter()
        result = merge_jsonl(local, remote, None)
        times.append(time.perf_counter() - t)
    assert result is not None and result.data is not None
    out = result.data.split(b"\n")[:-1]
    assert len(out) == total, (len(out), total)
    assert result.from_remote == total - args.events and result.conflicts == 0
    swapped = merge_jsonl(remote, local, None)
    assert swapped.data == result.data, "merge is not symmetric"

    best, median = min(times), statistics.median(times)
    print(f"merge_jsonl: best {best:.3f} s, median {median:.3f} s over {args.runs} runs")
    print(f"  {best / (2 * args.events) * 1e6:.2f} us per input line; output {len(out):,} lines")
    print(f"  target <= 3 s: {'OK' if best <= 3.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
