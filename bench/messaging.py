"""Messaging benchmarks: prints numbers, asserts nothing.

    python bench/messaging.py                 # everything (the 1M store takes a while)
    python bench/messaging.py --size 200000   # a smaller generated store
    python bench/messaging.py --skip-big      # sends, push latency and the Go fixture only

Every measurement runs against a real daemon started with the installed
``thrum`` CLI in a temporary git repository, over its real Unix socket.

1. durable ``message.send``/s: one client sending one message at a time, one
   client pipelining 64 requests on its connection, and 10 concurrent clients
   (each its own connection and agent); errors are counted.
2. ``message.list`` (inbox of one agent, page of 100, ``exclude_self``) p50/p99
   on the Go fixture imported with ``thrum migrate --from`` (10,000 messages),
   and on a generated store of ``--size`` messages (default 1,000,000) whose
   JSONL log is written directly with canonical lines and projected by
   ``thrum rebuild``.
3. push latency: from the start of ``message.send`` (and from its reply) to
   the ``notification.message`` on a subscribed connection, p50/p99.

Each line also gives the daemon's CPU time per operation (all its threads, read
from /proc), which is steadier than wall time on a busy machine.  Lists are
measured after the daemon's start-up sync cycle and a few warm-up calls.

Targets (issue 5): ≥ 3,000 sends/s sequential, ≥ 6,000/s with 10 clients; list
p50 ≤ 2 ms at 10k and ≤ 5 ms at 1M; push p50 ≤ 2 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostspeed import describe

from thrum_core.canonical import canonical_line
from thrum_core.client import Client
from thrum_core.ids import ulid_str
from thrum_core.paths import ThrumPaths, client_socket_path
from thrum_core.testing.go_fixture import GO_FIXTURE as FIXTURE
from thrum_core.testing.go_fixture import unpack_go_fixture
from thrum_core.timefmt import format_ts

#: The ``thrum`` executable of the running interpreter's environment.
THRUM = str(Path(sys.executable).parent / "thrum")
BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
WARM_UP = 10  # list calls before a measurement (the first reads the pages from disk)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("THRUM_")}
    out.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    return out


def thrum(repo: Path, *args: str, timeout: float = 3600) -> str:
    done = subprocess.run(
        [THRUM, *args], cwd=repo, env=env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"thrum {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def new_repo(base: Path, name: str) -> Path:
    root = base / name
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env())
    thrum(root, "init", "--no-daemon")
    return root


def start_daemon(repo: Path, ready_within: float = 300) -> None:
    """``thrum daemon start``, then wait for ``health``: a big projection takes more than 10 s to open."""
    try:
        thrum(repo, "daemon", "start")
        return
    except RuntimeError as exc:
        if "did not answer" not in str(exc):
            raise
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        try:
            with client(repo, timeout=5) as c:
                c.call("health")
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("the daemon did not become ready")


def wait_settled(repo: Path, within: float = 600) -> None:
    """Wait until the daemon's start-up sync cycle is over (committing a big log takes a while).

    Lists measured meanwhile would measure that cycle's competition for the CPU, not the list.
    """
    deadline = time.monotonic() + within
    calm = 0
    while time.monotonic() < deadline and calm < 2:
        with client(repo) as c:
            state = c.call("health")["sync_state"]
        calm = calm + 1 if state not in ("syncing", "pending") else 0
        time.sleep(0.5)


def query_only(repo: Path, agent: str, rounds: int, **filters: Any) -> tuple[float, float]:
    """p50/p99 of the same list query run in this process on a read connection (no socket).

    The page is built as the daemon builds it: JSON text made by SQLite.
    """
    from thrum_core.events.projection import connect_reader
    from thrum_plugins.rpc._message_queries import ListQuery, list_messages
    from thrum_plugins.rpc._message_results import messages_raw

    db = connect_reader(ThrumPaths.for_root(repo).db_path)
    query = ListQuery(for_agent=agent, self_id=agent, exclude_self=True, page_size=100, **filters)
    latencies = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            result = list_messages(db, query)
            messages_raw(db, result.ids, viewer=agent)
            latencies.append(time.perf_counter() - t)
    finally:
        db.close()
    return pct(latencies, 0.5), pct(latencies, 0.99)


def daemon_pid(repo: Path) -> int:
    with client(repo) as c:
        return int(c.call("health")["pid"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far; 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_note(pid: int, since: float, count: int) -> str:
    """``daemon CPU x ms/op`` for ``count`` operations since ``since`` (a :func:`cpu_seconds` value)."""
    used = cpu_seconds(pid) - since
    return f"daemon CPU {used / count * 1000:.3f} ms/op" if used > 0 else "daemon CPU n/a"


def client(repo: Path, timeout: float = 60) -> Client:
    return Client(client_socket_path(ThrumPaths.for_root(repo), {}), call_timeout=timeout)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# --------------------------------------------------------------------------- sends


def register(repo: Path, names: list[str], role: str = "bench") -> None:
    with client(repo) as c:
        for name in names:
            c.call("agent.register", {"name": name, "role": role, "module": "m"})


def open_agent(repo: Path, name: str) -> Client:
    c = client(repo)
    c.call("session.start", {"agent_id": name, "caller_agent_id": name})
    return c


def send_sequential(repo: Path, name: str, count: int) -> tuple[float, int]:
    errors = 0
    with open_agent(repo, name) as c:
        started = time.perf_counter()
        for i in range(count):
            try:
                c.call("message.send", {"content": f"seq {i}", "to": "@sink", "caller_agent_id": name})
            except Exception:
                errors += 1
        elapsed = time.perf_counter() - started
    return count / elapsed, errors


def send_pipelined(repo: Path, name: str, count: int, window: int = 64) -> tuple[float, int]:
    errors = 0
    with open_agent(repo, name) as c:
        started = time.perf_counter()
        inflight: list[Any] = []
        for i in range(count):
            inflight.append(
                c.send("message.send", {"content": f"pipe {i}", "to": "@sink", "caller_agent_id": name})
            )
            if len(inflight) >= window:
                errors += "error" in c.wait_response(inflight.pop(0), timeout=60)
        for rid in inflight:
            errors += "error" in c.wait_response(rid, timeout=60)
        elapsed = time.perf_counter() - started
    return count / elapsed, errors


def send_concurrent(repo: Path, names: list[str], per_client: int) -> tuple[float, int]:
    errors: list[int] = []
    barrier = threading.Barrier(len(names) + 1)

    def run(name: str) -> None:
        with open_agent(repo, name) as c:
            barrier.wait()
            bad = 0
            for i in range(per_client):
                try:
                    c.call("message.send", {"content": f"{name} {i}", "to": "@sink", "caller_agent_id": name})
                except Exception:
                    bad += 1
            errors.append(bad)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return len(names) * per_client / elapsed, sum(errors)


def bench_sends(base: Path, count: int) -> None:
    repo = new_repo(base, "sends")
    start_daemon(repo)
    try:
        senders = [f"sender{i}" for i in range(10)]
        register(repo, [*senders, "sink", "solo", "piper"])
        pid = daemon_pid(repo)
        cpu = cpu_seconds(pid)
        rate, errors = send_sequential(repo, "solo", count)
        print(
            f"message.send, 1 client, sequential:      {rate:8.0f} msgs/s  ({errors} errors)"
            f"  {cpu_note(pid, cpu, count)}"
        )
        cpu = cpu_seconds(pid)
        rate, errors = send_pipelined(repo, "piper", count)
        print(
            f"message.send, 1 client, 64 in flight:    {rate:8.0f} msgs/s  ({errors} errors)"
            f"  {cpu_note(pid, cpu, count)}"
        )
        cpu = cpu_seconds(pid)
        per_client = max(1, count // 5)
        rate, errors = send_concurrent(repo, senders, per_client)
        print(
            f"message.send, 10 concurrent clients:     {rate:8.0f} msgs/s  ({errors} errors)"
            f"  {cpu_note(pid, cpu, per_client * len(senders))}"
        )
        bench_push(repo)
    finally:
        thrum(repo, "daemon", "stop")


# --------------------------------------------------------------------------- push


def bench_push(repo: Path, count: int = 300) -> None:
    register(repo, ["listener", "speaker"])
    listener = open_agent(repo, "listener")
    listener.call("subscribe", {"all": True, "caller_agent_id": "listener"})
    speaker = open_agent(repo, "speaker")
    from_send: list[float] = []
    from_reply: list[float] = []
    try:
        for i in range(count):
            t0 = time.perf_counter()
            speaker.call(
                "message.send", {"content": f"ping {i}", "to": "@listener", "caller_agent_id": "speaker"}
            )
            t1 = time.perf_counter()
            note = listener.next_notification(timeout=10)
            t2 = time.perf_counter()
            if note is None or note.get("method") != "notification.message":
                continue
            # the push may already be in the listener's socket buffer when the reply comes back
            from_send.append(t2 - t0)
            from_reply.append(t2 - t1)
    finally:
        listener.close()
        speaker.close()
    print(
        f"push latency, send start → notification:  p50 {ms(pct(from_send, 0.5))}"
        f"  p99 {ms(pct(from_send, 0.99))}"
        f"  ({len(from_send)} pushes)"
    )
    print(
        f"push latency, send reply → notification:  p50 {ms(pct(from_reply, 0.5))}"
        f"  p99 {ms(pct(from_reply, 0.99))}"
    )


# --------------------------------------------------------------------------- list


def time_list(repo: Path, agent: str, rounds: int, **extra: Any) -> tuple[float, float, dict[str, Any]]:
    """p50, p99 and one result of ``message.list``; the daemon's CPU per call goes in ``result["cpu"]``."""
    latencies: list[float] = []
    params = {"for_agent": agent, "exclude_self": True, "page_size": 100, "caller_agent_id": agent, **extra}
    pid = daemon_pid(repo)
    with client(repo) as c:
        for _ in range(WARM_UP):
            result = c.call("message.list", params)
        cpu = cpu_seconds(pid)
        for _ in range(rounds):
            t = time.perf_counter()
            c.call("message.list", params)
            latencies.append(time.perf_counter() - t)
    result["cpu"] = cpu_note(pid, cpu, rounds)
    return pct(latencies, 0.5), pct(latencies, 0.99), result


def bench_fixture(base: Path, rounds: int) -> None:
    if not FIXTURE.exists():
        print(f"message.list on the Go fixture: skipped ({FIXTURE} not found)")
        return
    repo = new_repo(base, "fixture")
    unpacked = unpack_go_fixture(base / "fixture-src")
    started = time.perf_counter()
    thrum(repo, "migrate", "--from", str(unpacked / ".thrum"))
    log(f"fixture imported in {time.perf_counter() - started:.1f} s")
    start_daemon(repo)
    try:
        wait_settled(repo)
        p50, p99, result = time_list(repo, "coordinator_0000", rounds)
        print(
            f"message.list, Go fixture ({result['total']} in the inbox, {result['unread']} unread), page 100:"
            f"  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}"
        )
        p50, p99 = query_only(repo, "coordinator_0000", rounds)
        print(f"  same query in-process (no socket):  p50 {ms(p50)}  p99 {ms(p99)}")
        p50, p99, result = time_list(repo, "coordinator_0000", rounds, page_size=10)
        print(f"message.list, Go fixture, page 10:  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}")
    finally:
        thrum(repo, "daemon", "stop")


def generate_store(sync_dir: Path, size: int, agents: int = 100, seed: int = 5) -> str:
    """Write a log of ``size`` messages by ``agents`` agents; return the agent whose inbox is measured."""
    rng = random.Random(seed)
    names = [f"agent{i:03d}" for i in range(agents)]
    roles = ["coder", "reviewer", "planner", "tester", "writer"]
    role_of = {n: roles[i % len(roles)] for i, n in enumerate(names)}
    members: dict[str, list[str]] = {r: [n for n in names if role_of[n] == r] for r in roles}
    groups = {f"team{g}": names[g * 10 : g * 10 + 10] for g in range(5)}
    counter = 0

    def envelope(typ: str, ts: int, **fields: Any) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        return {
            "type": typ,
            "timestamp": format_ts(ts),
            "event_id": "evt_" + ulid_str(ts // 1_000_000, counter),
            "v": 1,
            "origin_daemon": "d_BENCH",
            **fields,
        }

    (sync_dir / "messages").mkdir(parents=True, exist_ok=True)
    with open(sync_dir / "events.jsonl", "wb") as f:
        for i, name in enumerate(names):
            f.write(
                canonical_line(
                    envelope(
                        "agent.register",
                        BASE_NS + i * 1000,
                        agent_id=name,
                        kind="agent",
                        role=role_of[name],
                        module="m",
                    )
                )
            )
    files = {n: open(sync_dir / "messages" / f"{n}.jsonl", "wb") for n in names}  # noqa: SIM115
    try:
        gap = 8_000_000_000  # 8 s between messages: 1M messages span about 3 months
        t = BASE_NS + 10 * 1_000_000_000
        for g, (group, group_members) in enumerate(groups.items()):
            t += 1000
            gid = f"grp_bench{g}"
            files[names[0]].write(
                canonical_line(envelope("group.create", t, group_id=gid, name=group, created_by=names[0]))
            )
            for m in group_members:
                t += 1000
                files[names[0]].write(
                    canonical_line(
                        envelope(
                            "group.member.add",
                            t,
                            group_id=gid,
                            member_type="agent",
                            member_value=m,
                            added_by=names[0],
                        )
                    )
                )
        for i in range(size):
            t += gap
            author = rng.choice(names)
            fields: dict[str, Any] = {
                "message_id": f"msg_bench{i:08d}",
                "agent_id": author,
                "session_id": "ses_b",
                "body": {"format": "markdown", "content": f"message {i} from {author}"},
            }
            r = rng.random()
            if r < 0.02:
                fields["scopes"] = fields["refs"] = [{"type": "broadcast", "value": "everyone"}]
                fields["recipients"] = [n for n in names if n != author]
            elif r < 0.05:
                group = rng.choice(list(groups))
                fields["scopes"] = fields["refs"] = [{"type": "group", "value": group}]
                fields["recipients"] = [n for n in groups[group] if n != author]
            elif r < 0.10:
                role = rng.choice(roles)
                fields["refs"] = [{"type": "mention", "value": role}]
                fields["recipients"] = [n for n in members[role] if n != author]
            else:
                to = sorted({rng.choice(names) for _ in range(rng.choice((1, 1, 2)))} - {author}) or [
                    names[-1]
                ]
                fields["refs"] = [{"type": "mention", "value": n} for n in to]
                fields["recipients"] = to
            if rng.random() < 0.1:
                fields.setdefault("scopes", [])
                fields["scopes"] = [*fields["scopes"], {"type": "task", "value": f"T-{rng.randrange(500)}"}]
            files[author].write(canonical_line(envelope("message.create", t, **fields)))
            if "agent000" in fields.get("recipients", ()) and rng.random() < 0.6:
                files["agent000"].write(
                    canonical_line(
                        envelope(
                            "message.receipt",
                            t + 1000,
                            message_id=fields["message_id"],
                            agent_id="agent000",
                            read_at=format_ts(t + 1000),
                            receipt_type="read",
                        )
                    )
                )
            if i and i % 100_000 == 0:
                log(f"  generated {i} messages")
    finally:
        for f in files.values():
            f.close()
    return "agent000"


def bench_big(base: Path, size: int, rounds: int) -> None:
    repo = new_repo(base, "big")
    sync_dir = ThrumPaths.for_root(repo).sync_dir
    started = time.perf_counter()
    agent = generate_store(sync_dir, size)
    log(f"generated {size} messages in {time.perf_counter() - started:.1f} s; rebuilding the projection ...")
    started = time.perf_counter()
    thrum(repo, "rebuild")
    rebuilt = time.perf_counter() - started
    print(f"rebuild of the generated {size}-message log:  {rebuilt:.1f} s  ({size / rebuilt:.0f} messages/s)")
    start_daemon(repo)
    try:
        wait_settled(repo)
        p50, p99, result = time_list(repo, agent, rounds)
        print(
            f"message.list, {size} messages ({result['total']} in the inbox,"
            f" {result['unread']} unread), page 100:"
            f"  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}"
        )
        p50, p99 = query_only(repo, agent, rounds)
        print(f"  same query in-process (no socket):  p50 {ms(p50)}  p99 {ms(p99)}")
        p50, p99, result = time_list(repo, agent, rounds, page_size=10)
        print(f"message.list, {size} messages, page 10:  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}")
        p50, p99, result = time_list(repo, agent, rounds, unread=True)
        print(
            f"message.list, {size} messages, unread only ({result['total']}), page 100:"
            f"  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}"
        )
        p50, p99, result = time_list(
            repo, agent, max(10, rounds // 10), scope={"type": "task", "value": "T-7"}
        )
        print(
            f"message.list, {size} messages, scope filter ({result['total']}), page 100:"
            f"  p50 {ms(p50)}  p99 {ms(p99)}  {result['cpu']}"
        )
    finally:
        thrum(repo, "daemon", "stop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2000, help="messages per send measurement")
    parser.add_argument("--rounds", type=int, default=300, help="message.list calls per measurement")
    parser.add_argument("--size", type=int, default=1_000_000, help="messages in the generated store")
    parser.add_argument("--skip-big", action="store_true", help="skip the generated store")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="thrum-bench-"))
    log(f"working in {base}")
    print(describe(base))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("sends and push", lambda: bench_sends(base, args.sends)),
        ("Go fixture", lambda: bench_fixture(base, args.rounds)),
    ]
    if not args.skip_big:
        steps.append(("generated store", lambda: bench_big(base, args.size, args.rounds)))
    try:
        for name, step in steps:
            log(f"== {name}")
            step()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
