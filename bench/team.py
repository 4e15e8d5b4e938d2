"""Benchmark ``thrum team`` for 50 agents, end to end through the installed CLI.

In a temp git repository with a running daemon: 50 agents are registered and
each gets a session, an intent and a task through RPC (one connection per
agent, as real agents would).  Then ``thrum team --json`` runs ``--runs``
times (after a warm-up); the median wall time is printed with the CPU time,
the daemon-side ``team.list`` time over the socket, and ``python -c "import
click"`` for reference.  Target: median ≤ 150 ms.  Asserts only that every
run lists 50 members.

Run: ``python bench/team.py [--runs N] [--agents N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from thrum_core.client import Client
from thrum_core.lifecycle import read_pid_file

BIN = Path(sys.executable).parent
THRUM = str(BIN / "thrum")
PYCACHE = Path(tempfile.gettempdir()) / "thrum-bench-pycache"
TARGET_MS = 150.0


def _env() -> dict[str, str]:
    # Bytecode cached as for an installed package (see bench/cli.py).
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("THRUM_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def timed(cmd: Sequence[str], cwd: Path, runs: int) -> tuple[list[float], list[float], str]:
    """Wall and CPU seconds of ``runs`` runs (after a warm-up), and the last output."""
    out = run(cmd, cwd).stdout
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = run(cmd, cwd).stdout
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu, out


def populate(socket_path: str, repo: Path, count: int) -> None:
    """Register ``count`` agents, each with a session, an intent and a task."""
    roles = ("implementer", "reviewer", "tester", "planner", "coordinator")
    with Client(socket_path) as admin:
        for i in range(count):
            name = f"agent_{i:03d}"
            admin.call(
                "agent.register",
                {"name": name, "role": roles[i % len(roles)], "module": f"mod{i % 7}", "worktree": str(repo)},
            )
    for i in range(count):
        name = f"agent_{i:03d}"
        with Client(socket_path) as own:
            own.call("session.start", {"agent_id": name})
            own.call("session.setIntent", {"intent": f"working on feature {i}"})
            own.call("session.setTask", {"current_task": f"task {i}"})


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of thrum team (default 30, at least 20)")
    parser.add_argument("--agents", type=int, default=50, help="agents to register (default 50)")
    args = parser.parse_args(argv)
    runs = max(20, args.runs)

    with tempfile.TemporaryDirectory(prefix="thrum-bench-team-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        run(["git", "init", "-q", str(repo)], repo)
        run([THRUM, "init", "--no-daemon"], repo)
        try:
            run([THRUM, "daemon", "start", "--json"], repo)
            info = read_pid_file(repo / ".thrum" / "var" / "thrum.pid")
            socket_path = (
                info.socket_path if info and info.socket_path else str(repo / ".thrum/var/thrum.sock")
            )
            t0 = time.perf_counter()
            populate(socket_path, repo, args.agents)
            setup_s = time.perf_counter() - t0

            with Client(socket_path) as client:
                rpc = []
                for _ in range(runs):
                    t1 = time.perf_counter()
                    members = client.call("team.list")["members"]
                    rpc.append(time.perf_counter() - t1)
            assert len(members) == args.agents, len(members)

            wall, cpu, out = timed([THRUM, "team", "--json"], repo, runs)
            assert len(json.loads(out)["members"]) == args.agents
            human_wall, human_cpu, _ = timed([THRUM, "team"], repo, runs)
            click_wall, click_cpu, _ = timed([sys.executable, "-c", "import click"], repo, runs)
            bare_wall, bare_cpu, _ = timed([sys.executable, "-c", "pass"], repo, runs)

            med = statistics.median
            print(f"{args.agents} agents with sessions registered in {setup_s:.2f} s; {runs} runs each")
            print(f"team.list over the socket        median {ms(med(rpc))}  (max {ms(max(rpc))})")
            print(
                f"thrum team --json (end to end)   median {ms(med(wall))}  cpu {ms(med(cpu))}  "
                f"(min {ms(min(wall))}, max {ms(max(wall))})  target <= {TARGET_MS:.0f} ms"
            )
            print(f"thrum team (human output)        median {ms(med(human_wall))}  cpu {ms(med(human_cpu))}")
            print(f'python -c "import click"         median {ms(med(click_wall))}  cpu {ms(med(click_cpu))}')
            print(f"python -c pass                   median {ms(med(bare_wall))}  cpu {ms(med(bare_cpu))}")
            print(f"load average                     {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            verdict = "OK" if med(wall) * 1000 <= TARGET_MS else "OVER TARGET"
            print(f"result: {verdict}")
        finally:
            subprocess.run([THRUM, "daemon", "stop", "--force"], cwd=repo, env=_env(), capture_output=True)


if __name__ == "__main__":
    main()
