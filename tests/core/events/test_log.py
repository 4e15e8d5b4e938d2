"""The JSONL file layer: durable appends, torn tails, long lines, rewrites."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from thrum_core.events.log import (
    AppendLog,
    check_route,
    iter_lines,
    list_log_files,
    repair_torn,
    rewrite_file,
)


def test_append_creates_files_0644_and_returns_sizes(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the mode must not depend on the umask
    try:
        log = AppendLog(tmp_path)
        sizes = log.append({"events.jsonl": b'{"a":1}\n', "messages/bob.jsonl": b'{"b":2}\n{"c":3}\n'})
    finally:
        os.umask(old)
    assert sizes == {"events.jsonl": 8, "messages/bob.jsonl": 16}
    assert stat.S_IMODE((tmp_path / "events.jsonl").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "messages" / "bob.jsonl").stat().st_mode) == 0o644
    assert log.append({"events.jsonl": b'{"d":4}\n'}) == {"events.jsonl": 16}
    assert (tmp_path / "events.jsonl").read_bytes() == b'{"a":1}\n{"d":4}\n'
    log.close()


def test_append_reopens_a_replaced_file(tmp_path: Path) -> None:
    log = AppendLog(tmp_path)
    log.append({"events.jsonl": b"1\n"})
    replacement = tmp_path / "new.tmp"
    replacement.write_bytes(b"x\n")
    os.replace(replacement, tmp_path / "events.jsonl")  # what a rewrite or merge does
    log.append({"events.jsonl": b"2\n"})
    assert (tmp_path / "events.jsonl").read_bytes() == b"x\n2\n"
    log.close()


def test_append_failure_truncates_every_touched_file_back(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(b'{"old":1}\n')
    (tmp_path / "messages" / "bob.jsonl").mkdir(parents=True)  # a directory where the file should be
    log = AppendLog(tmp_path)
    with pytest.raises(OSError):
        log.append(
            {
                "events.jsonl": b'{"new":1}\n',
                "messages/carol.jsonl": b'{"new":2}\n',
                "messages/bob.jsonl": b'{"new":3}\n',
            }
        )
    assert (tmp_path / "events.jsonl").read_bytes() == b'{"old":1}\n'
    assert not (tmp_path / "messages" / "carol.jsonl").exists()  # created by the batch: removed
    # and the log still works afterwards
    assert log.append({"events.jsonl": b'{"next":1}\n'}) == {"events.jsonl": 10 + 11}
    log.close()


def test_iter_lines_offsets_and_torn_tail(tmp_path: Path) -> None:
    p = tmp_path / "f.jsonl"
    p.write_bytes(b'{"a":1}\n\n{"b":2}\r\n{"tor')
    assert list(iter_lines(p)) == [(0, b'{"a":1}'), (8, b""), (9, b'{"b":2}\r')]
    assert list(iter_lines(p, 9)) == [(9, b'{"b":2}\r')]
    assert list(iter_lines(tmp_path / "missing.jsonl")) == []


def test_iter_lines_has_no_length_limit(tmp_path: Path) -> None:
    big = b'{"x":"' + b"y" * (20 * 1024 * 1024) + b'"}'
    p = tmp_path / "f.jsonl"
    p.write_bytes(b"{}\n" + big + b"\n{}\n")
    lines = list(iter_lines(p))
    assert [len(line) for _, line in lines] == [2, len(big), 2]
    assert lines[1][1] == big and lines[2][0] == 3 + len(big) + 1


def test_repair_torn_complete_line_gets_newline(tmp_path: Path) -> None:
    sync, torn = tmp_path / "sync", tmp_path / "torn"
    sync.mkdir()
    (sync / "events.jsonl").write_bytes(b'{"a":1}\n{"b":2}')
    repairs = repair_torn(sync, torn)
    assert [(r.file, r.action) for r in repairs] == [("events.jsonl", "newline")]
    assert (sync / "events.jsonl").read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert not torn.exists()


def test_repair_torn_fragment_is_moved_aside(tmp_path: Path) -> None:
    sync, torn = tmp_path / "sync", tmp_path / "torn"
    (sync / "messages").mkdir(parents=True)
    (sync / "messages" / "bob.jsonl").write_bytes(b'{"a":1}\nnot json\n{"b":2}\n{"c":')
    (sync / "events.jsonl").write_bytes(b'{"ok":1}\n')
    repairs = repair_torn(sync, torn, now_ns=1767225630_000_000_000)
    assert len(repairs) == 1 and repairs[0].action == "moved"
    # complete lines, even the unparseable middle one, are kept
    assert (sync / "messages" / "bob.jsonl").read_bytes() == b'{"a":1}\nnot json\n{"b":2}\n'
    saved = torn / "messages__bob.jsonl.2026-01-01T00:00:30Z.partial"
    assert repairs[0].saved_to == str(saved)
    assert saved.read_bytes() == b'{"c":'
    # a second repair in the same second does not overwrite the first fragment
    (sync / "messages" / "bob.jsonl").write_bytes(b'{"a":1}\n{"d')
    repair_torn(sync, torn, now_ns=1767225630_000_000_000)
    assert (torn / "messages__bob.jsonl.2026-01-01T00:00:30Z-1.partial").read_bytes() == b'{"d'


def test_repair_torn_file_without_any_newline(tmp_path: Path) -> None:
    sync, torn = tmp_path / "sync", tmp_path / "torn"
    sync.mkdir()
    (sync / "events.jsonl").write_bytes(b'{"half')
    repair_torn(sync, torn)
    assert (sync / "events.jsonl").read_bytes() == b""


def test_rewrite_file_drops_lines_atomically(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_bytes(b"keep1\ndrop\nkeep2\n")
    res = rewrite_file(p, lambda line: line == b"drop")
    assert (res.removed, res.kept, res.deleted_file) == (1, 2, False)
    assert p.read_bytes() == b"keep1\nkeep2\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in tmp_path.iterdir()] == ["events.jsonl"]  # no temp file left
    ino = p.stat().st_ino
    assert rewrite_file(p, lambda line: False).removed == 0
    assert p.stat().st_ino == ino  # untouched when nothing is dropped
    res = rewrite_file(p, lambda line: True)
    assert res.deleted_file and not p.exists()


def test_list_log_files_reads_top_level_and_messages(tmp_path: Path) -> None:
    (tmp_path / "messages" / "sub").mkdir(parents=True)
    for rel in (
        "events.jsonl",
        "messages.jsonl",
        "messages/a.jsonl",
        "messages/sub/x.jsonl",
        "notes.md",
        ".hidden.jsonl",
        "state/x.jsonl",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "dir.jsonl").mkdir()
    assert list_log_files(tmp_path) == ["events.jsonl", "messages.jsonl", "messages/a.jsonl"]


def test_check_route() -> None:
    assert check_route("events.jsonl") == "events.jsonl"
    assert check_route("messages/user_leon.jsonl") == "messages/user_leon.jsonl"
    for bad in ("messages.jsonl", "../x.jsonl", "messages/../x.jsonl", "x/y.jsonl", "/abs.jsonl"):
        with pytest.raises(ValueError):
            check_route(bad)
