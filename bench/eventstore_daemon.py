"""Benchmark the event store as the daemon uses it: the imported Go fixture and a 1M-event log.

1. **Fixture**: ``thrum migrate`` of the Go fixture (10,321 events + 6,908
   receipts) into a temp repository, then ``EventStore.rebuild()`` of the
   imported log with every installed plugin's reducers (target < 0.5 s).
2. **1M events**: a generated log of ``--events`` events (default 1,000,000:
   agents, sessions, broadcast and addressed messages, edits and receipts,
   spread over ``messages/<agent>.jsonl`` shards in sort order), no database;
   a real daemon subprocess (``thrum daemon run``) starts, rebuilds the
   projection and answers ``health``.  Prints the start-up time and the
   daemon's peak RSS (``VmHWM``, target ≤ 200 MB) and current RSS.

Prints numbers; asserts nothing.  Run: ``python bench/eventstore_daemon.py
[--events N] [--runs N] [--skip-fixture] [--skip-million]``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hostspeed import describe

from thrum_core.canonical import canonical_line
from thrum_core.events.legacy import migrate
from thrum_core.events.store import EventStore
from thrum_core.events.types import EventTypeRegistry
from thrum_core.ids import ulid_str
from thrum_core.plugins.loader import make_plugin_manager
from thrum_core.testing.daemon import DaemonProcess
from thrum_core.testing.go_fixture import unpack_go_fixture
from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo
from thrum_core.timefmt import format_ts

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
DAEMON_ID = "d_01KDVDNA000000000000000000"


def _proc_status(pid: int) -> dict[str, int]:
    """``VmHWM`` / ``VmRSS`` of ``pid`` in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_fixture(runs: int) -> None:
    registry = EventTypeRegistry.from_plugins(make_plugin_manager(clean_environ()))
    with tempfile.TemporaryDirectory(prefix="thrum-bench-") as tmp:
        repo = make_thrum_repo(Path(tmp), with_remote=False)
        unpack_go_fixture(repo.root)
        started = time.perf_counter()
        report = migrate(repo.paths, registry, daemon_id=DAEMON_ID)
        migrate_s = time.perf_counter() - started
        build_ms = report.projection["ms"] if report.projection else "?"
        print(
            f"fixture migrate: {report.imported} events ({report.receipts} receipts) imported and projected "
            f"in {migrate_s:.3f} s (projection build {build_ms} ms)"
        )
        store = EventStore(repo.paths, registry, DAEMON_ID)
        store.open()
        try:
            times = []
            cpus = []
            for _ in range(runs):
                c0 = time.process_time()
                rb = store.rebuild()
                cpus.append(time.process_time() - c0)
                times.append(rb.seconds)
            states = rb.states
        finally:
            store.close()
        print(
            f"fixture rebuild ({rb.events} events, {rb.files} files, states {states}): "
            f"median {statistics.median(times) * 1000:.0f} ms, best {min(times) * 1000:.0f} ms "
            f"over {runs} runs (target < 500 ms); CPU median {statistics.median(cpus) * 1000:.0f} ms"
        )


def generate(sync_dir: Path, n_events: int, seed: int = 42) -> dict[str, int]:
    """Write ``n_events`` events into ``sync_dir`` in sort-key order per file; return counts per type."""
    rng = random.Random(seed)
    n_agents = 200
    agents = [f"agent_{i:03d}" for i in range(n_agents)]
    files: dict[str, list[bytes]] = {}
    counts: dict[str, int] = {}
    ns = T0
    seq = 0

    def emit(rel: str, obj: dict[str, object]) -> None:
        nonlocal ns, seq
        ns += 1_000_000  # 1 ms apart: every file stays in sort order
        seq += 1
        obj["timestamp"] = format_ts(ns)
        obj["event_id"] = "evt_" + ulid_str(ns // 1_000_000, seq)
        obj["v"] = 1
        obj["origin_daemon"] = DAEMON_ID
        files.setdefault(rel, []).append(canonical_line(obj))
        counts[str(obj["type"])] = counts.get(str(obj["type"]), 0) + 1

    for a in agents:
        emit(
            "events.jsonl",
            {
                "type": "agent.register",
                "agent_id": a,
                "kind": "agent",
                "role": f"role{len(a) % 7}",
                "module": "bench",
                "name": a,
            },
        )
    sessions = {}
    for a in agents:
        sid = f"ses_{a}"
        sessions[a] = sid
        emit("events.jsonl", {"type": "agent.session.start", "session_id": sid, "agent_id": a})
    messages: list[tuple[str, str]] = []
    total = n_events
    i = 0
    while seq < total:
        i += 1
        author = agents[rng.randrange(n_agents)]
        r = rng.random()
        if r < 0.62 or not messages:
            mid = f"msg_{i:08d}"
            obj: dict[str, object] = {
                "type": "message.create",
                "message_id": mid,
                "agent_id": author,
                "session_id": sessions[author],
                "body": {
                    "format": "markdown",
                    "content": f"message {i} " + "lorem ipsum " * rng.randrange(1, 12),
                },
            }
            if rng.random() < 0.6:
                obj["scopes"] = [{"type": "broadcast", "value": "everyone"}]
                obj["refs"] = [{"type": "broadcast", "value": "everyone"}]
            else:
                to = agents[rng.randrange(n_agents)]
                obj["recipients"] = [to]
                obj["refs"] = [{"type": "mention", "value": to}]
            emit(f"messages/{author}.jsonl", obj)
            messages.append((mid, author))
        elif r < 0.95:
            mid, _ = messages[rng.randrange(max(0, len(messages) - 5000), len(messages))]
            emit(
                f"messages/{author}.jsonl",
                {
                    "type": "message.receipt",
                    "message_id": mid,
                    "agent_id": author,
                    "read_at": format_ts(ns + 1_000_000),
                    "receipt_type": "read",
                    "session_id": sessions[author],
                },
            )
        elif r < 0.99:
            mid, who = messages[rng.randrange(max(0, len(messages) - 5000), len(messages))]
            emit(
                f"messages/{who}.jsonl",
                {
                    "type": "message.edit",
                    "message_id": mid,
                    "agent_id": who,
                    "body": {"format": "markdown", "content": f"edited {i}"},
                },
            )
        else:
            sid = f"ses_{author}_{i}"
            emit(
                "events.jsonl",
                {
                    "type": "agent.session.end",
                    "session_id": sessions[author],
                    "agent_id": author,
                    "reason": "normal",
                },
            )
            sessions[author] = sid
            emit("events.jsonl", {"type": "agent.session.start", "session_id": sid, "agent_id": author})
    for rel, lines in files.items():
        path = sync_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.writelines(lines)
    return counts


def _git(cwd: Path, *args: str) -> None:
    env = {
        **clean_environ(),
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def add_sync_worktree(repo: ThrumRepo) -> None:
    """Check out the orphan ``a-sync`` branch at the sync dir, as ``thrum init`` leaves it."""
    sync = repo.paths.sync_dir
    sync.parent.mkdir(parents=True, exist_ok=True)
    _git(repo.root, "worktree", "add", "-q", "--detach", str(sync))
    _git(sync, "checkout", "-q", "--orphan", "a-sync")
    _git(sync, "rm", "-rfq", ".")


def bench_million(n_events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="thrum-bench-") as tmp:
        repo = make_thrum_repo(Path(tmp), with_remote=False)
        add_sync_worktree(repo)
        started = time.perf_counter()
        counts = generate(repo.paths.sync_dir, n_events)
        size = sum(p.stat().st_size for p in repo.paths.sync_dir.rglob("*.jsonl"))
        print(
            f"generated {sum(counts.values())} events ({size / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - started:.1f} s: {dict(sorted(counts.items()))}"
        )
        daemon = DaemonProcess(repo)
        started = time.perf_counter()
        daemon.start(timeout=3600)
        ready_s = time.perf_counter() - started
        try:
            mem = _proc_status(daemon.pid)
            cpu_s = _proc_cpu_s(daemon.pid)
            with daemon.client() as c:
                health = c.call("health")
        finally:
            daemon.stop()
        db_mb = sum(p.stat().st_size for p in repo.paths.var_dir.glob("messages.db*") if p.is_file()) / 2**20
        daemon_log = repo.paths.log_file.read_text(errors="replace")
        logged = re.search(r"projection rebuilt in ([0-9.]+) s", daemon_log)
        print(
            f"daemon start with rebuild of {sum(counts.values())} events: ready in {ready_s:.1f} s "
            f"(daemon CPU {cpu_s:.1f} s = {cpu_s / max(1, sum(counts.values())) * 1e6:.0f} µs/event); "
            f"peak RSS (VmHWM) {mem.get('VmHWM', 0) / 1024:.0f} MB, RSS {mem.get('VmRSS', 0) / 1024:.0f} MB "
            f"(target <= 200 MB); database {db_mb:.0f} MB; health {health.get('status')}"
        )
        if logged:
            print(f"  of which the rebuild (EventStore.open, from the daemon's log): {logged.group(1)} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-fixture", action="store_true")
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    os.environ.pop("THRUM_LOAD_PLUGINS", None)
    print(describe(Path(tempfile.gettempdir())))
    if not args.skip_fixture:
        bench_fixture(args.runs)
    if not args.skip_million:
        bench_million(args.events)


if __name__ == "__main__":
    main()
