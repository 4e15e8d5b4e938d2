"""``thrum purge``, ``thrum rebuild`` and ``thrum migrate`` through the installed executable.

Each test uses a temp git repository; events with old timestamps are written
into the sync dir (as a git merge would) before a real daemon starts and
catches up.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thrum_core.canonical import canonical_line, parse_line
from thrum_core.events.legacy import spec_route
from thrum_core.events.log import iter_lines, list_log_files
from thrum_core.ids import event_id_of
from thrum_core.testing.daemon import DaemonProcess
from thrum_core.testing.go_fixture import GO_FIXTURE as FIXTURE
from thrum_core.testing.go_fixture import unpack_go_fixture
from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo
from thrum_core.timefmt import format_ts

DAY = 86_400 * 10**9

pytestmark = pytest.mark.slow


def thrum(repo: ThrumRepo, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``thrum`` for ``repo``."""
    env = clean_environ()
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return subprocess.run(
        ["thrum", "--repo", str(repo.root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def git(cwd: Path, *args: str) -> None:
    env = clean_environ()
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(cwd),
        GIT_AUTHOR_NAME="T",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="T",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> ThrumRepo:
    """A repository with its ``a-sync`` worktree checked out at the sync dir (as ``thrum init`` leaves it)."""
    r = make_thrum_repo(tmp_path, with_remote=False)
    sync = r.paths.sync_dir
    sync.parent.mkdir(parents=True)
    git(r.root, "worktree", "add", "-q", "--detach", str(sync))
    git(sync, "checkout", "-q", "--orphan", "a-sync")
    git(sync, "rm", "-rfq", ".")
    return r


class _Daemon(DaemonProcess):
    def start(self, timeout: float = 300.0) -> DaemonProcess:  # a rebuild on a busy machine takes a while
        return super().start(timeout)


@pytest.fixture
def daemon(repo: ThrumRepo) -> Iterator[DaemonProcess]:
    d = _Daemon(repo)
    yield d
    d.stop()


def seed(repo: ThrumRepo, now: int) -> None:
    """Old and recent messages and sessions written straight into the sync dir."""
    old, recent = now - 10 * DAY, now - 3_600 * 10**9
    events: list[dict[str, Any]] = [
        {
            "type": "agent.register",
            "timestamp": format_ts(old),
            "agent_id": "alice",
            "kind": "agent",
            "role": "writer",
            "module": "cli",
        },
        {
            "type": "agent.session.start",
            "timestamp": format_ts(old + 1000),
            "session_id": "ses_old",
            "agent_id": "alice",
        },
        {
            "type": "agent.session.end",
            "timestamp": format_ts(old + 2000),
            "session_id": "ses_old",
            "agent_id": "alice",
            "reason": "normal",
        },
        {
            "type": "agent.session.start",
            "timestamp": format_ts(old + 3000),
            "session_id": "ses_open",
            "agent_id": "alice",
        },
        {
            "type": "message.create",
            "timestamp": format_ts(old + 4000),
            "message_id": "msg_old",
            "agent_id": "alice",
            "session_id": "ses_old",
            "body": {"format": "markdown", "content": "old"},
            "scopes": [{"type": "broadcast", "value": "everyone"}],
            "refs": [{"type": "broadcast", "value": "everyone"}],
        },
        {
            "type": "message.create",
            "timestamp": format_ts(recent),
            "message_id": "msg_new",
            "agent_id": "alice",
            "session_id": "ses_open",
            "body": {"format": "markdown", "content": "new"},
            "scopes": [{"type": "broadcast", "value": "everyone"}],
            "refs": [{"type": "broadcast", "value": "everyone"}],
        },
    ]
    sync = repo.paths.sync_dir
    for ev in events:
        ev["event_id"] = event_id_of(ev)
        ev["v"] = 1
        path = sync / spec_route(ev)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(canonical_line(ev))


def log_ids(repo: ThrumRepo) -> set[str]:
    out = set()
    sync = repo.paths.sync_dir
    for rel in list_log_files(sync):
        for _o, line in iter_lines(sync / rel):
            obj = parse_line(line) or {}
            for key in ("message_id", "session_id"):
                if isinstance(obj.get(key), str):
                    out.add(obj[key])
    return out


def scalar(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


# --------------------------------------------------------------------------- purge


def test_purge_preview_then_confirm(repo: ThrumRepo, daemon: DaemonProcess) -> None:
    seed(repo, time.time_ns())
    daemon.start()
    preview = thrum(repo, "--json", "purge", "--before", "2d")
    assert preview.returncode == 0, preview.stderr
    result = as_json(preview)
    assert result["dry_run"] is True
    assert (result["messages"], result["sessions"], result["events"]) == (1, 1, 3)
    assert {"msg_old", "ses_old"} <= log_ids(repo)
    human = thrum(repo, "purge", "--before", "2d")
    assert "Would purge 1 message(s), 1 session(s)" in human.stdout
    assert "--confirm" in human.stdout
    done = thrum(repo, "--json", "purge", "--before", "2d", "--confirm")
    assert done.returncode == 0, done.stderr
    assert as_json(done)["dry_run"] is False
    assert log_ids(repo) & {"msg_old", "ses_old"} == set()
    assert {"msg_new", "ses_open"} <= log_ids(repo)
    with daemon.client() as c:
        assert c.call("purge", {"before": "2d"})["messages"] == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [((), "--before"), (("--before", "1d", "--all"), "--before")],
)
def test_purge_needs_exactly_one_of_before_and_all(
    repo: ThrumRepo, args: tuple[str, ...], field: str
) -> None:
    done = thrum(repo, "--json", "purge", *args)
    assert done.returncode == 1
    err = as_json(done)["error"]
    assert (err["code"], err["data"]["field"]) == (-32602, field)


def test_purge_future_cutoff_is_refused(repo: ThrumRepo, daemon: DaemonProcess) -> None:
    daemon.start()
    done = thrum(repo, "--json", "purge", "--before", "2099-01-01", "--confirm")
    assert done.returncode == 1
    err = as_json(done)["error"]
    assert (err["code"], err["data"]["field"], err["data"]["reason"]) == (-32602, "before", "future")
    human = thrum(repo, "purge", "--before", "2099-01-01")
    assert human.returncode == 1 and "in the future" in human.stderr


def test_purge_without_a_daemon(repo: ThrumRepo) -> None:
    done = thrum(repo, "--json", "purge", "--all")
    assert done.returncode == 1
    assert as_json(done)["error"]["code"] == -32010


# --------------------------------------------------------------------------- rebuild


def test_rebuild_refuses_while_the_daemon_runs_then_rebuilds(repo: ThrumRepo, daemon: DaemonProcess) -> None:
    seed(repo, time.time_ns())
    daemon.start()
    epoch = scalar(repo.paths.db_path, "SELECT value FROM meta WHERE key='epoch'")
    busy = thrum(repo, "rebuild")
    assert busy.returncode == 1
    assert "thrum daemon stop" in busy.stderr
    daemon.stop()
    done = thrum(repo, "--json", "rebuild")
    assert done.returncode == 0, done.stderr
    result = as_json(done)
    assert result["rebuild"]["events"] == 6
    assert result["rebuild"]["states"]["applied"] == 6
    assert "rebuilding: done" in done.stderr  # the progress bar's last word (not a terminal)
    assert scalar(repo.paths.db_path, "SELECT value FROM meta WHERE key='epoch'") != epoch
    assert scalar(repo.paths.db_path, "SELECT COUNT(*) FROM messages") == 2
    human = thrum(repo, "rebuild")
    assert "Rebuilt" in human.stdout and "6 event(s)" in human.stdout


def test_rebuild_of_a_missing_database(repo: ThrumRepo) -> None:
    seed(repo, time.time_ns())
    done = thrum(repo, "--json", "rebuild")
    assert done.returncode == 0, done.stderr
    assert as_json(done)["open"]["created"] is True
    assert as_json(done)["rebuild"]["events"] == 6
    assert scalar(repo.paths.db_path, "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL") == 1


# --------------------------------------------------------------------------- migrate


@pytest.mark.skipif(not FIXTURE.exists(), reason="the Go fixture is not available")
def test_migrate_from_an_unpacked_fixture_then_the_daemon_serves_it(
    repo: ThrumRepo, daemon: DaemonProcess, tmp_path: Path
) -> None:
    other = unpack_go_fixture(tmp_path / "unpacked")
    daemon.start()
    busy = thrum(repo, "--json", "migrate", "--from", str(other))
    assert busy.returncode == 1
    assert as_json(busy)["error"]["data"]["reason"] == "busy"
    daemon.stop()
    done = thrum(repo, "--json", "migrate", "--from", str(other))
    assert done.returncode == 0, done.stderr
    result = as_json(done)
    assert (result["imported"], result["receipts"], result["duplicates"]) == (17229, 6908, 0)
    again = thrum(repo, "migrate", "--from", str(other))
    assert "Imported 0 event(s)" in again.stdout and "17229 duplicate(s)" in again.stdout
    daemon.start()
    with daemon.client() as c:
        assert c.call("health")["status"] == "ok"
    assert scalar(repo.paths.db_path, "SELECT COUNT(*) FROM events") == 17229
    assert scalar(repo.paths.db_path, "SELECT COUNT(*) FROM message_reads") == 6908


def test_migrate_with_nothing_to_import(repo: ThrumRepo) -> None:
    done = thrum(repo, "migrate")
    assert done.returncode == 0, done.stderr
    assert "No legacy data found" in done.stdout


def test_doctor_rebuild_needs_the_daemon_stopped(repo: ThrumRepo, daemon: DaemonProcess) -> None:
    seed(repo, time.time_ns())
    daemon.start()
    running = thrum(repo, "--json", "doctor", "--rebuild")
    checks = {c["name"]: c for c in as_json(running)["checks"]}
    assert checks["rebuild"]["status"] == "fail" and "thrum daemon stop" in checks["rebuild"]["message"]
    assert running.returncode == 1
    daemon.stop()
    epoch = scalar(repo.paths.db_path, "SELECT value FROM meta WHERE key='epoch'")
    done = thrum(repo, "--json", "doctor", "--rebuild")
    checks = {c["name"]: c for c in as_json(done)["checks"]}
    assert checks["rebuild"] == {
        "name": "rebuild",
        "status": "ok",
        "message": checks["rebuild"]["message"],
        "fixed": True,
    }
    assert "6 events" in checks["rebuild"]["message"]
    assert checks["projection"]["status"] == "ok"
    assert scalar(repo.paths.db_path, "SELECT value FROM meta WHERE key='epoch'") != epoch
