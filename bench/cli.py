"""Benchmark the CLI's per-command cost and the daemon's start time.

In a temp git repository with a running daemon:

* the median wall time of a one-RPC command (``thrum daemon status --json``,
  which dials the socket and calls ``health``) over ``--runs`` runs, against
  ``python -c "import click"`` in the same venv; target ratio ≤ 1.2;
* the same for the commands agents run most, ``thrum send`` and ``thrum
  inbox`` (as an unnamed agent, whose id the CLI computes), for information;
* "daemon start → healthy": the wall time of ``thrum daemon start`` (spawn,
  boot, first ``health`` answer), median over ``--starts`` start/stop cycles;
  target ≤ 0.5 s;
* with ``--profile``, the slowest imports of the one-RPC command
  (``python -X importtime``), and of the daemon up to ``ready`` with its CPU
  time by then (the process ``thrum daemon start`` spawns, run in the
  foreground with a probe that notes ``sys.modules`` when ``ready`` is logged).

Bytecode is cached (in a temp dir) as it is for an installed package;
medians of CPU time (user + sys) are printed too, since wall time on a busy
machine is noisy.

Prints the numbers; asserts nothing.  Run: ``python bench/cli.py [--runs N]``.
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
from typing import Any

BIN = Path(sys.executable).parent
THRUM = str(BIN / "thrum")
ONE_RPC = ["daemon", "status", "--json"]
AGENT_COMMANDS = {
    "send": ["send", "bench message", "--to", "@bench", "--json"],
    "inbox": ["inbox", "--json"],
}


PYCACHE = Path(tempfile.gettempdir()) / "thrum-bench-pycache"


def _env() -> dict[str, str]:
    # Measure what an installed thrum costs: bytecode cached (pip compiles it on
    # install).  PYTHONDONTWRITEBYTECODE would make every run recompile thrum's
    # sources (click's are precompiled in site-packages), so it is dropped and
    # the cache goes to a temp dir instead of the source tree.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("THRUM_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def run(cmd: Sequence[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def timed(cmd: Sequence[str], cwd: Path, runs: int, *, check: bool = True) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys) times in seconds of ``runs`` runs of ``cmd`` (after a warm-up run)."""
    run(cmd, cwd, check=check)
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        run(cmd, cwd, check=check)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def _import_rows(stderr: str) -> list[tuple[int, int, str]]:
    """``(cumulative µs, self µs, indented name)`` of each ``-X importtime`` line."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    return rows


def _print_rows(rows: list[tuple[int, int, str]], top: int) -> None:
    for cumulative, self_time, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative:8d} {self_time:8d}  {name}")
    print(f"  modules imported: {len(rows)}")


def profile(cwd: Path, top: int = 15) -> None:
    """Print the ``top`` imports with the largest cumulative time for the one-RPC command."""
    code = "import sys; from thrum_cli.main import main; main(sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *ONE_RPC],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(f"\nslowest imports of `thrum {' '.join(ONE_RPC)}` (cumulative / self, µs):")
    _print_rows(_import_rows(done.stderr), top)


# Runs the daemon as ``thrum daemon start`` spawns it; when the kernel logs
# ``ready`` it writes its CPU time and ``sys.modules`` to argv[1] and stops.
READY_PROBE = """
import json, logging, os, sys, time

class Probe(logging.Filter):
    def filter(self, record):
        if record.name == "thrum.kernel" and record.getMessage().startswith("ready"):
            with open(sys.argv[1], "w") as fh:
                json.dump({"cpu_s": time.process_time(), "modules": sorted(sys.modules)}, fh)
            os.kill(os.getpid(), 15)
        return True

logging.getLogger("thrum.kernel").addFilter(Probe())
from thrum_core.daemon import main
sys.exit(main(sys.argv[2:]))
"""


def _daemon_until_ready(repo: Path, *, importtime: bool) -> tuple[dict[str, Any] | None, str]:
    """Run the probe once: ``({cpu_s, modules} at ready or None, stderr)``."""
    out = repo.parent / "ready.json"
    out.unlink(missing_ok=True)
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run(
        [sys.executable, *flags, "-c", READY_PROBE, str(out), "run", "--repo", str(repo)],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (json.loads(out.read_text()) if out.exists() else None), done.stderr


def profile_daemon(repo: Path, top: int = 15, runs: int = 5) -> None:
    """Print the daemon's CPU time at ``ready`` (median of ``runs``) and its slowest imports until then."""
    cpu = []
    for _ in range(runs):
        ready, stderr = _daemon_until_ready(repo, importtime=False)
        if ready is None:
            print(f"\nthe daemon did not get ready:\n{stderr[-2000:]}")
            return
        cpu.append(ready["cpu_s"])
    ready, stderr = _daemon_until_ready(repo, importtime=True)
    assert ready is not None, stderr
    before = set(ready["modules"])
    rows = [row for row in _import_rows(stderr) if row[2].strip() in before]
    med = statistics.median(cpu)
    print(f"\ndaemon CPU time at ready: median {ms(med)} (min {ms(min(cpu))}, {runs} runs)")
    print("slowest imports of the daemon before ready (cumulative / self, µs):")
    _print_rows(rows, top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per command (default 30)")
    parser.add_argument("--starts", type=int, default=5, help="daemon start/stop cycles (default 5)")
    parser.add_argument("--profile", action="store_true", help="print the slowest imports")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="thrum-bench-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        run(["git", "init", "-q", str(repo)], repo)
        run([THRUM, "init", "--no-daemon"], repo)
        try:
            starts = []
            for _ in range(args.starts):
                t0 = time.perf_counter()
                run([THRUM, "daemon", "start", "--json"], repo)
                starts.append(time.perf_counter() - t0)
                run([THRUM, "daemon", "stop"], repo)
            started = json.loads(run([THRUM, "daemon", "start", "--json"], repo).stdout)
            run([THRUM, "quickstart", "--role", "bench", "--module", "cli", "--no-init"], repo)

            cli_times, cli_cpu = timed([THRUM, *ONE_RPC], repo, args.runs)
            click_times, click_cpu = timed([sys.executable, "-c", "import click"], repo, args.runs)
            bare_times, bare_cpu = timed([sys.executable, "-c", "pass"], repo, args.runs)
            agent_times = {
                name: timed([THRUM, *cmd], repo, args.runs) for name, cmd in AGENT_COMMANDS.items()
            }
            status = json.loads(run([THRUM, *ONE_RPC], repo).stdout)
            assert status["running"], status

            cli_med = statistics.median(cli_times)
            click_med = statistics.median(click_times)
            med = statistics.median
            print(f"daemon pid {started['pid']}, repo {repo}")
            print(f"runs per command: {args.runs}            wall time              cpu time")
            print(f"python -c pass                 median {ms(med(bare_times))}   median {ms(med(bare_cpu))}")
            print(f'python -c "import click"       median {ms(click_med)}   median {ms(med(click_cpu))}')
            print(
                f"thrum {' '.join(ONE_RPC):<24} median {ms(cli_med)}   median {ms(med(cli_cpu))}  "
                f"(wall min {ms(min(cli_times))}, max {ms(max(cli_times))})"
            )
            print(
                f"ratio thrum / import click     {cli_med / click_med:7.2f}x (wall)  "
                f"{med(cli_cpu) / med(click_cpu):5.2f}x (cpu)   target <= 1.2x"
            )
            for name, (wall, cpu) in agent_times.items():
                print(
                    f"thrum {name:<24} median {ms(med(wall))}   median {ms(med(cpu))}  "
                    f"(ratio {med(wall) / click_med:.2f}x wall, {med(cpu) / med(click_cpu):.2f}x cpu)"
                )
            print(
                f"daemon start -> healthy        median {ms(statistics.median(starts))}  "
                f"(min {ms(min(starts))}, max {ms(max(starts))}, {len(starts)} starts; target <= 500 ms)"
            )
            if args.profile:
                profile(repo)
                run([THRUM, "daemon", "stop"], repo)
                profile_daemon(repo)
        finally:
            run([THRUM, "daemon", "stop", "--force"], repo, check=False)


if __name__ == "__main__":
    main()
