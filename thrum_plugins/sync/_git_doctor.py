"""``thrum doctor`` checks of the git sync plugin (SPEC §15.6).

- ``sync_worktree``: the sync worktree is registered, holds a ``.git`` file and
  is on ``refs/heads/a-sync``; ``--fix`` repairs it (moved aside, re-added,
  its JSONL lines imported) when no daemon is running (a running daemon
  repairs it itself at its next start).
- ``sync_transport``: which transport fetch and push used, and whether (and
  why) the ``git`` CLI fallback was needed — from the running daemon's
  ``sync.status``.
- ``sync_remote``: the remote answers and whether it has ``a-sync`` (only a
  listing of its refs: nothing is fetched, no ref is written); skipped in
  local-only mode.
- ``sync_state``: the daemon's last cycle, when it failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thrum_core.errors import ThrumError

if TYPE_CHECKING:
    from thrum_core.doctor import DoctorReport
    from thrum_core.paths import ThrumPaths

__all__ = ["REMOTE_PROBE_TIMEOUT_S", "doctor_checks", "probe_remote"]

#: Bound of the remote reachability probe.
REMOTE_PROBE_TIMEOUT_S = 15.0


def _daemon_status(report: DoctorReport) -> dict[str, Any] | None:
    if report.daemon is None:
        return None
    try:
        status = report.daemon.call("sync.status", timeout=10.0)
    except (ThrumError, OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _local_only(
    report: DoctorReport, paths: ThrumPaths, status: dict[str, Any] | None
) -> tuple[bool, str, str]:
    """``(local_only, source, remote name)`` — the daemon's view when it runs, else the config's."""
    if status is not None and "local_only" in status:
        remote = status.get("remote") or _config_remote(report, paths)
        return bool(status["local_only"]), str(status.get("local_only_source") or "config"), remote
    from thrum_core.config import load_config

    try:
        config = load_config(paths.config_file, environ=report.environ)
    except ThrumError:
        return True, "default", "origin"
    source = config.sources.get("daemon.local_only", "default")
    return bool(config.daemon.local_only), {"file": "config"}.get(source, source), config.daemon.sync_remote


def _config_remote(report: DoctorReport, paths: ThrumPaths) -> str:
    from thrum_core.config import load_config

    try:
        return load_config(paths.config_file, environ=report.environ).daemon.sync_remote
    except ThrumError:
        return "origin"


def probe_remote(repo_path: Path, remote: str, timeout_s: float = REMOTE_PROBE_TIMEOUT_S) -> str | None:
    """List the remote's refs; return the ``a-sync`` tip (hex) or ``None``; raise ``SyncGitError``.

    pygit2 first; for network remotes the ``git`` CLI (``ls-remote``, never
    prompting) when pygit2 cannot do it, as the engine does for fetch and push.
    """
    import pygit2

    from thrum_plugins.sync import _git_impl as engine

    deadline = time.monotonic() + timeout_s
    repo = pygit2.Repository(str(repo_path))
    url = engine._remote_url(repo, remote)
    local = engine._is_local_url(url)
    if local:
        engine._check_local_remote(repo, url)

    def via_pygit2() -> list[Any]:
        r = pygit2.Repository(str(repo_path)).remotes[remote]
        return list(
            r.list_heads(callbacks=engine.ThrumRemoteCallbacks(deadline), proxy=None if local else True)
        )

    try:
        heads = via_pygit2() if local else engine._call_with_deadline(via_pygit2, deadline - time.monotonic())
    except engine._DeadlineExceeded:
        raise engine.SyncGitError(f"{remote} did not answer within {timeout_s:g} s") from None
    except (pygit2.GitError, OSError, KeyError, ValueError, engine._CredentialsExhausted) as exc:
        if local:
            raise engine.SyncGitError(f"cannot list {remote}: {engine._error_text(exc)}") from exc
        try:
            rc, out, err = engine._run_git(
                repo_path, ["ls-remote", remote, engine.SYNC_REF], deadline - time.monotonic()
            )
        except engine._DeadlineExceeded:
            raise engine.SyncGitError(f"{remote} did not answer within {timeout_s:g} s") from None
        if rc != 0:
            raise engine.SyncGitError(err.strip() or f"git ls-remote exited with {rc}") from exc
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.strip() == engine.SYNC_REF:
                return sha.strip()
        return None
    for head in heads:
        if getattr(head, "name", None) == engine.SYNC_REF:
            return str(head.oid)
    return None


def _check_worktree(report: DoctorReport, paths: ThrumPaths, daemon_running: bool) -> None:
    from thrum_plugins.sync import _git_impl as engine

    try:
        reason = engine.check_worktree(paths.root, paths.sync_dir)
    except Exception as exc:
        report.check("sync_worktree", "fail", f"cannot check the sync worktree: {exc}")
        return
    if reason is None:
        report.check("sync_worktree", "ok", f"{paths.sync_dir} is a worktree on {engine.SYNC_REF}")
        return
    problem = f"sync worktree {paths.sync_dir}: {reason}"
    if not report.fix:
        report.check("sync_worktree", "fail", f"{problem} (thrum doctor --fix repairs it)")
        return
    if daemon_running:
        report.check(
            "sync_worktree",
            "fail",
            f"{problem}; not repaired while the daemon runs: restart it (thrum daemon restart) — "
            "it repairs the worktree at start",
        )
        return
    from thrum_core.lifecycle import DaemonLock
    from thrum_plugins.sync._git_service import init_repo

    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        report.check("sync_worktree", "fail", f"{problem}; not repaired: a daemon started meanwhile")
        return
    try:
        local_only, _source, remote = _local_only(report, paths, None)
        done = init_repo(paths, None if local_only else remote)
    except Exception as exc:
        report.check("sync_worktree", "fail", f"{problem}; repair failed: {exc}")
        return
    finally:
        lock.release()
    moved = f", old copy kept at {done['moved_to']}" if done.get("moved_to") else ""
    report.check(
        "sync_worktree",
        "ok",
        f"repaired {paths.sync_dir} ({reason}){moved}; {done['recovered']} lines recovered",
        fixed=True,
    )


def _check_transport(report: DoctorReport, status: dict[str, Any] | None) -> None:
    transport = status.get("transport") if status is not None else None
    if not isinstance(transport, dict):
        report.check("sync_transport", "ok", "no network sync has run in this session (daemon not running)")
        return
    if transport.get("fallback_used"):
        report.check(
            "sync_transport",
            "warn",
            f"the git CLI fallback was used {transport.get('fallback_count')} times "
            f"(last at {transport.get('last_fallback_at')}): pygit2 failed with: "
            f"{transport.get('last_fallback_reason')}",
        )
        return
    via = transport.get("last_via")
    report.check(
        "sync_transport", "ok", f"fetch and push use {via}" if via else "no fetch or push has run yet"
    )


def _check_remote(report: DoctorReport, paths: ThrumPaths, status: dict[str, Any] | None) -> None:
    from thrum_core.paths import read_origin_url

    local_only, source, remote = _local_only(report, paths, status)
    if local_only:
        report.check("sync_remote", "ok", f"local-only mode (from {source}): the remote is never contacted")
        return
    url = read_origin_url(paths.git_common_dir, remote, environ=report.environ)
    if url is None:
        report.check("sync_remote", "warn", f"no remote named {remote!r}: events are committed locally only")
        return
    try:
        tip = probe_remote(paths.root, remote)
    except Exception as exc:
        report.check("sync_remote", "fail", f"remote {remote} ({url}) is not reachable: {exc}")
        return
    if tip is None:
        report.check("sync_remote", "ok", f"remote {remote} is reachable; it has no a-sync branch yet")
    else:
        report.check("sync_remote", "ok", f"remote {remote} is reachable; a-sync at {tip[:12]}")


def doctor_checks(report: DoctorReport) -> None:
    """Run the git sync checks (see the module docstring)."""
    paths = report.paths
    if paths is None or not paths.thrum_dir.is_dir():
        return
    status = _daemon_status(report)
    _check_worktree(report, paths, report.daemon is not None)
    _check_transport(report, status)
    _check_remote(report, paths, status)
    if status is not None and status.get("sync_state") == "error":
        report.check("sync_state", "warn", f"the last sync cycle failed: {status.get('last_error')}")
    elif status is not None:
        report.check("sync_state", "ok", f"sync state {status.get('sync_state')}")
