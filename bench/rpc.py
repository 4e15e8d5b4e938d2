"""Benchmark the daemon's JSON-RPC path over the Unix socket.

Starts ``thrum daemon run`` on a fresh temporary repository (only the
``rpc.health`` and ``transports.unix_socket`` plugins, so the numbers are the
kernel's: framing, dispatch, validation, encoding), or uses a running daemon
with ``--socket PATH``.  Prints; asserts nothing.

Measured:

1. **Latency** — ``health`` round trips from one blocking
   :class:`thrum_core.client.Client` (the CLI's client): ``--warmup`` calls,
   then ``--calls`` timed calls one after another; p50 / p90 / p99 / max.
2. **Throughput, 1 client** — the same client calling ``health`` in a loop
   (one request in flight) for ``--seconds``.
3. **Throughput, 20 clients** — ``--clients`` separate processes, each with
   its own connection, for ``--seconds``:
   a) *sequential*: each sends one request and waits for its reply;
   b) *pipelined*: each keeps ``--window`` requests in flight.
   The client processes use a lean loop (pre-encoded request, count reply
   lines) so that on a small machine they take as little CPU from the daemon
   as possible; (a) is the same traffic pattern as 20 CLIs.

Run: ``python bench/rpc.py [--calls 5000] [--seconds 5] [--clients 20]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from thrum_core.client import Client

HEALTH = b'{"jsonrpc":"2.0","method":"health","id":1}\n'


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def latency(socket_path: str, warmup: int, calls: int) -> dict[str, float]:
    """Round-trip times (µs) of ``health`` from the blocking client."""
    with Client(socket_path) as client:
        for _ in range(warmup):
            client.call("health")
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            client.call("health")
            samples.append((clock() - t0) / 1000)
    samples.sort()
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": samples[-1],
        "mean": statistics.fmean(samples),
    }


def single_client_rate(socket_path: str, seconds: float) -> float:
    """Requests/s of one blocking client calling ``health`` back to back."""
    with Client(socket_path) as client:
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            client.call("health")
            n += 1
        return n / seconds


def _lean_worker(
    socket_path: str, window: int, barrier: mp.synchronize.Barrier, seconds: float, out: mp.Queue
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    sock.sendall(HEALTH)  # warm this connection up
    buf = b""
    while b"\n" not in buf:
        buf += sock.recv(65536)
    barrier.wait()
    done = 0
    inflight = 0
    pending = b""
    end = time.perf_counter() + seconds
    while True:
        now = time.perf_counter()
        if now < end and inflight < window:
            sock.sendall(HEALTH * (window - inflight))
            inflight = window
        if inflight == 0:
            break
        chunk = sock.recv(1 << 18)
        if not chunk:
            break
        pending += chunk
        lines = pending.count(b"\n")
        if lines:
            pending = pending[pending.rfind(b"\n") + 1 :]
            done += lines
            inflight -= lines
    sock.close()
    out.put(done)


def multi_client_rate(socket_path: str, clients: int, window: int, seconds: float) -> float:
    """Total requests/s of ``clients`` processes each keeping ``window`` requests in flight."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_lean_worker, args=(socket_path, window, barrier, seconds, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    return total / max(elapsed, seconds)


def start_daemon(base: Path) -> tuple[object, str]:
    """A daemon subprocess on a fresh repository; returns (process, socket path)."""
    from thrum_core.testing import make_thrum_repo
    from thrum_core.testing.daemon import DaemonProcess

    repo = make_thrum_repo(base)
    proc = DaemonProcess(repo, load_plugins=["rpc.health", "transports.unix_socket"])
    proc.start()
    return proc, str(proc.socket_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", help="use the daemon listening here instead of starting one")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    proc = None
    tmp = None
    socket_path = args.socket
    if socket_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="thrum-bench-")
        proc, socket_path = start_daemon(Path(tmp.name))
    try:
        results: dict[str, object] = {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "latency_us": latency(socket_path, args.warmup, args.calls),
            "calls": args.calls,
            "rate_1_client": single_client_rate(socket_path, args.seconds),
            "rate_n_sequential": multi_client_rate(socket_path, args.clients, 1, args.seconds),
            "rate_n_pipelined": multi_client_rate(socket_path, args.clients, args.window, args.seconds),
            "clients": args.clients,
            "window": args.window,
        }
    finally:
        if proc is not None:
            proc.stop()  # type: ignore[attr-defined]
        if tmp is not None:
            tmp.cleanup()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    lat = results["latency_us"]
    assert isinstance(lat, dict)
    print(f"python {results['python']}, {results['cpus']} CPUs")
    print(f"health latency, 1 blocking client, {args.calls} calls after {args.warmup} warm-up:")
    print(
        f"  p50 {lat['p50']:.0f} µs   p90 {lat['p90']:.0f} µs   p99 {lat['p99']:.0f} µs   "
        f"max {lat['max']:.0f} µs   mean {lat['mean']:.0f} µs"
    )
    print(f"throughput, 1 client (sequential):              {results['rate_1_client']:>9,.0f} req/s")
    seq = results["rate_n_sequential"]
    print(f"throughput, {args.clients} clients (sequential, 1 in flight): {seq:>9,.0f} req/s")
    print(
        f"throughput, {args.clients} clients (pipelined, {args.window} in flight): "
        f"{results['rate_n_pipelined']:>9,.0f} req/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
