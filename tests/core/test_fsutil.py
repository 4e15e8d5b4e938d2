"""Tests for thrum_core.fsutil: atomic, durable writes and small JSON helpers."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from thrum_core.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    dumps_pretty_json,
    ensure_dir,
    fsync_dir,
    read_json,
)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run with umask 022 so exact-mode assertions are meaningful (and 077 would not hide bugs)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_bytes_creates_and_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer content\x00\xff")
    assert target.read_bytes() == b"second, longer content\x00\xff"
    assert sorted(os.listdir(tmp_path)) == ["file.bin"]


def test_atomic_write_bytes_applies_exact_mode(tmp_path: Path, loose_umask: None) -> None:
    private = tmp_path / "private.json"
    atomic_write_bytes(private, b"{}", mode=0o600)
    assert _mode(private) == 0o600
    public = tmp_path / "public.txt"
    atomic_write_bytes(public, b"x")
    assert _mode(public) == 0o644
    # Rewriting with another mode changes it: the new inode carries the new mode.
    atomic_write_bytes(public, b"y", mode=0o600)
    assert _mode(public) == 0o600


def test_atomic_write_bytes_replaces_inode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    before = target.stat().st_ino
    with target.open("rb") as reader:
        atomic_write_bytes(target, b"new")
        # A reader that opened the old file still sees the old, complete content.
        assert reader.read() == b"old"
    assert target.stat().st_ino != before
    assert target.read_bytes() == b"new"


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path: Path) -> None:
    # Renaming a file over a non-empty directory fails after the temp file was written.
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "child").write_text("keep")
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert sorted(os.listdir(tmp_path)) == ["occupied"]
    assert (target / "child").read_text() == "keep"


def test_atomic_write_json_format(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    obj = {"zeta": 1, "alpha": {"b": [1, 2], "a": None}, "name": "héllo ✓"}
    atomic_write_json(target, obj, mode=0o600)
    text = target.read_text("utf-8")
    assert text == (
        "{\n"
        '  "zeta": 1,\n'
        '  "alpha": {\n'
        '    "b": [\n'
        "      1,\n"
        "      2\n"
        "    ],\n"
        '    "a": null\n'
        "  },\n"
        '  "name": "héllo ✓"\n'
        "}\n"
    )
    assert text == dumps_pretty_json(obj)
    assert list(json.loads(text)) == ["zeta", "alpha", "name"]
    assert _mode(target) == 0o600


def test_atomic_write_json_rejects_nan_and_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": float("nan")})
    assert read_json(target) == {"ok": True}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_read_json(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json") is None
    p = tmp_path / "a.json"
    atomic_write_json(p, [1, {"k": "v"}])
    assert read_json(p) == [1, {"k": "v"}]
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"x": 1}')
    assert read_json(bom) == {"x": 1}
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"{not json")
    with pytest.raises(ValueError):
        read_json(garbage)


def test_ensure_dir(tmp_path: Path, loose_umask: None) -> None:
    leaf = tmp_path / "a" / "b" / "var"
    assert ensure_dir(leaf, 0o700) == leaf
    assert leaf.is_dir()
    assert _mode(leaf) == 0o700
    # An existing directory is left alone (mode unchanged, no error).
    os.chmod(leaf, 0o750)
    ensure_dir(leaf, 0o700)
    assert _mode(leaf) == 0o750
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError):
        ensure_dir(f)


def test_fsync_dir_on_real_directory(tmp_path: Path) -> None:
    (tmp_path / "entry").write_text("x")
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "nope")
