"""Benchmark ``extract_work_context`` on a generated repository.

The repository: 1,000 files across 20 folders (``--folders``) committed on ``main``; a ``feature`` branch
(checked out) with 50 commits each editing three files and adding one; 20 modified working-tree files plus
two untracked files. Prints the median and p95 milliseconds per call — warm (the steady state of a repeated
heartbeat: the module's commit/numstat caches filled) and cold (caches cleared before every call, as for the
first call on a worktree; the generated repository holds only loose objects, so cold is timed again after
``git gc`` packed them, as a clone's history is) — the result's sizes and an uncached per-phase breakdown.
Asserts nothing.

Also timed: the same calls through the two work-context helper processes (the daemon's path: the
two halves at once).

Run: ``python bench/workctx.py [--runs N] [--folders N]`` (``--folders 5``: 200 files per directory, trees
larger than libgit2's default 4 KiB object-cache limit).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2

from thrum_plugins.rpc import _workctx
from thrum_plugins.rpc._workctx import extract_work_context
from thrum_plugins.rpc._workctx_pool import WorkContextPool

N_FILES = 1000
N_FOLDERS = 20
N_COMMITS = 50
N_DIRTY = 20
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _content(i: int, rev: int = 0) -> str:
    lines = [f"file {i} line {n} {'x' * (n % 40)}" for n in range(40)]
    if rev:
        lines[rev % 40] = f"file {i} edited in revision {rev}"
        lines.append(f"appended by revision {rev}")
    return "\n".join(lines) + "\n"


def _commit(repo: pygit2.Repository, index: pygit2.Index, message: str, when: int) -> pygit2.Oid:
    sig = pygit2.Signature("Bench", "bench@example.invalid", when, 0)
    tree = index.write_tree()
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return repo.create_commit("HEAD", sig, sig, message, tree, parents)


def build_repo(root: Path, folders: int = N_FOLDERS) -> Path:
    """Create the benchmark repository under ``root`` (files spread over ``folders``); return its worktree."""
    work = root / "repo"
    repo = pygit2.init_repository(str(work), initial_head="main")
    paths = [f"pkg{i % folders:02d}/mod{i:04d}.py" for i in range(N_FILES)]
    for i, rel in enumerate(paths):
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_content(i))
    index = repo.index
    index.add_all()
    index.write()
    _commit(repo, index, "initial import", T0)

    repo.branches.local.create("feature", repo.head.peel(pygit2.Commit))
    repo.set_head("refs/heads/feature")
    for c in range(1, N_COMMITS + 1):
        for k in range(3):
            i = (c * 37 + k * 101) % N_FILES
            (work / paths[i]).write_text(_content(i, c))
            index.add(paths[i])
        new = f"pkg{c % folders:02d}/new{c:03d}.py"
        (work / new).write_text(_content(10_000 + c))
        index.add(new)
        index.write()
        _commit(repo, index, f"feature step {c}\n\nBody of commit {c}.", T0 + 60 * c)

    # Age every file and refresh the index so its stat cache is clean (no racily-clean entries), as in a
    # worktree whose files were not all written in the last second.
    old = time.time() - 3600
    for dirpath, dirnames, filenames in os.walk(work):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (old, old))
    # ``add_all`` keeps the old stat data of unchanged entries; ``add`` re-stats each path.
    index.read(force=True)
    for rel in [entry.path for entry in index]:
        index.add(rel)
    index.write()

    for d in range(N_DIRTY):
        i = (d * 53 + 7) % N_FILES
        with open(work / paths[i], "a") as fh:
            fh.write(f"uncommitted edit {d}\n")
    (work / "scratch.txt").write_text("untracked\n")
    (work / "pkg00" / "notes.md").write_text("untracked\n")
    return work


def _time(
    fn: Callable[[], Any], runs: int, before: Callable[[], None] | None = None, cpu: list[float] | None = None
) -> list[float]:
    """Wall milliseconds of ``runs`` calls (after two warm-up calls); CPU milliseconds go to ``cpu``."""
    fn()
    fn()
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        t = time.perf_counter()
        c = time.process_time()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1000)
    return samples


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _phases(work: Path, runs: int) -> dict[str, list[float]]:
    """Time the parts of one uncached extraction separately (each on a freshly opened repository)."""

    def fresh() -> tuple[pygit2.Repository, pygit2.Commit, pygit2.Oid]:
        _workctx.clear_caches()
        repo = pygit2.Repository(str(work))
        return repo, repo.head.peel(pygit2.Commit), repo.references["refs/heads/main"].peel(pygit2.Commit).id

    def numstat() -> None:
        repo, head, base = fresh()
        mb = repo.merge_base(base, head.id)
        diff = repo[mb].peel(pygit2.Tree).diff_to_tree(head.tree, context_lines=0)
        diff.find_similar(flags=pygit2.enums.DiffFind.FIND_RENAMES)
        _workctx._fill_numstat(repo, diff, {})

    def walk() -> None:
        repo, head, base = fresh()
        walker = repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
        walker.hide(base)
        for commit in walker:
            _workctx._compute_commit_files(repo, commit)

    def status() -> None:
        repo, head, _ = fresh()
        _workctx._uncommitted(repo, head)

    return {
        "open repository": _time(lambda: pygit2.Repository(str(work)), runs),
        "status (1 scan)": _time(status, runs),
        "merge-base + numstat": _time(numstat, runs),
        "commit walk + diffs": _time(walk, runs),
    }


def _packed_cold(work: Path, runs: int, cpu: list[float]) -> list[float]:
    """Cold timings after ``git gc`` packed every object (a clone's history is packed); empty without git."""
    git = shutil.which("git")
    if git is None:
        return []
    subprocess.run([git, "gc", "-q"], cwd=work, check=True)
    return _time(lambda: extract_work_context(work), runs, before=_workctx.clear_caches, cpu=cpu)


def _helper_cpu_ms(pool: WorkContextPool) -> float:
    """CPU milliseconds the pool's helper processes used so far (from /proc; 0 where there is none)."""
    total = 0.0
    for helper in (pool._history, pool._changes):
        proc = helper._proc
        if proc is None:
            continue
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    return total


def _pool_timings(work: Path, runs: int) -> dict[str, tuple[list[float], float]]:
    """Warm and cold wall ms through the helper processes, with the CPU ms per call of all processes."""
    pool = WorkContextPool()
    try:
        if not pool.wait_ready(60):
            return {}
        out: dict[str, tuple[list[float], float]] = {}
        for label, before in (("warm", None), ("cold", pool.clear_caches)):
            cpu: list[float] = []
            helpers0 = _helper_cpu_ms(pool)
            samples = _time(lambda: pool.extract(work), runs, before=before, cpu=cpu)
            # The helpers' CPU includes the two warm-up calls and the cache clearing: an upper bound.
            helper_ms = (_helper_cpu_ms(pool) - helpers0) / (runs + 2)
            out[label] = (samples, statistics.median(cpu) + helper_ms)
        return out
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    """Build the repository, time the extraction and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs after two warm-up calls (>= 30)")
    parser.add_argument(
        "--folders", type=int, default=N_FOLDERS, help="directories the files are spread over"
    )
    args = parser.parse_args(argv)
    runs = max(30, args.runs)
    folders = max(1, args.folders)

    with tempfile.TemporaryDirectory(prefix="thrum-bench-workctx-") as tmp:
        t = time.perf_counter()
        work = build_repo(Path(tmp), folders)
        build_s = time.perf_counter() - t
        _workctx.clear_caches()
        t = time.perf_counter()
        extract_work_context(work)
        first_ms = (time.perf_counter() - t) * 1000
        warm_cpu: list[float] = []
        cold_cpu: list[float] = []
        warm = _time(lambda: extract_work_context(work), runs, cpu=warm_cpu)
        cold = _time(lambda: extract_work_context(work), runs, before=_workctx.clear_caches, cpu=cold_cpu)
        result = extract_work_context(work)
        phases = _phases(work, runs)
        pooled = _pool_timings(work, runs)
        packed_cpu: list[float] = []
        packed = _packed_cold(work, runs, packed_cpu)
        pooled_packed = _pool_timings(work, runs) if packed else {}

    print(f"pygit2 {pygit2.__version__} / libgit2 {pygit2.LIBGIT2_VERSION}, Python {sys.version.split()[0]}")
    print(
        f"repository: {N_FILES} files in {folders} directories, {N_COMMITS} unmerged commits, "
        f"{N_DIRTY} modified + 2 untracked"
    )
    print(f"built in {build_s:.1f} s")
    print(f"extract_work_context, first call in this process: {first_ms:.2f} ms")
    for label, samples, cpu in (("warm", warm, warm_cpu), ("cold", cold, cold_cpu)):
        print(
            f"extract_work_context {label}: {runs} runs, median {statistics.median(samples):.2f} ms, "
            f"p95 {_p95(samples):.2f} ms, min {min(samples):.2f} ms; "
            f"CPU median {statistics.median(cpu):.2f} ms, min {min(cpu):.2f} ms"
        )
    if packed:
        print(
            f"extract_work_context cold, packed (after git gc): median {statistics.median(packed):.2f} ms, "
            f"p95 {_p95(packed):.2f} ms; CPU median {statistics.median(packed_cpu):.2f} ms"
        )
    else:
        print("extract_work_context cold, packed: skipped (no git executable)")
    for where, timings in (("", pooled), (", packed", pooled_packed)):
        for label, (samples, cpu_ms) in timings.items():
            print(
                f"through the helper processes{where} {label}: median {statistics.median(samples):.2f} ms, "
                f"p95 {_p95(samples):.2f} ms; CPU per call (daemon + helpers) ~{cpu_ms:.2f} ms"
            )
    print(
        "result: "
        f"branch={result['branch']!r} unmerged_commits={len(result['unmerged_commits'])} "
        f"changed_files={len(result['changed_files'])} file_changes={len(result['file_changes'])} "
        f"uncommitted_files={len(result['uncommitted_files'])} error={result.get('error')!r}"
    )
    print("uncached phases (median ms):")
    for name, values in phases.items():
        print(f"  {name:<22} {statistics.median(values):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
