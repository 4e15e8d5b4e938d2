"""Small, durable file-system helpers (standard library only).

Every JSON file thrum writes outside the event log (config, identities, the pid
file, peers, manifests) goes through :func:`atomic_write_json`: a temp file in
the same directory, fsync, rename over the target, fsync of the directory
(SPEC §2.2).  A reader therefore sees either the old file or the new one, never
a torn mix, even after a crash.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "dumps_pretty_json",
    "ensure_dir",
    "fsync_dir",
    "read_json",
]

# fsync on a directory descriptor is refused by a few file systems; durability
# of the rename is then best effort, which is all those file systems offer.
_FSYNC_DIR_IGNORED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM}


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (creations, renames, unlinks) to stable storage."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if exc.errno in _FSYNC_DIR_IGNORED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_IGNORED:
            raise
    finally:
        os.close(fd)


def _create_temp(directory: Path, name: str) -> tuple[int, str]:
    """Create a fresh ``.<name>.<random>.tmp`` file (0600, O_EXCL) next to the target.

    Hand-rolled rather than :func:`tempfile.mkstemp` because importing
    :mod:`tempfile` pulls in ``shutil``, ``random``, ``bz2`` and ``lzma``, which
    the CLI's start-up budget cannot afford.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp_name = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp_name, flags, 0o600), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The bytes go to a temp file in the same directory, which is given exactly
    ``mode`` (the umask does not apply), fsynced and renamed over ``path``;
    then the directory is fsynced.  On any failure the temp file is removed
    and the previous content of ``path`` is untouched.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp_name = _create_temp(directory, target.name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def dumps_pretty_json(obj: Any) -> str:
    """Serialise ``obj`` the way thrum writes its JSON files.

    Two-space indent, keys in the order given, non-ASCII written raw, NaN and
    infinities refused, and a trailing newline.
    """
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> None:
    """Write ``obj`` as pretty JSON (see :func:`dumps_pretty_json`) atomically."""
    atomic_write_bytes(path, dumps_pretty_json(obj).encode("utf-8"), mode)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """Return the parsed content of a JSON file, or ``None`` when it does not exist.

    A UTF-8 byte-order mark is tolerated (hand-edited files).  Malformed JSON
    raises :class:`json.JSONDecodeError` (a :class:`ValueError`) and undecodable
    bytes :class:`UnicodeDecodeError` (also a :class:`ValueError`): the caller
    decides whether that is fatal.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    # Stripped by hand: the "utf-8-sig" codec is a module of its own.
    return json.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))


def ensure_dir(path: str | os.PathLike[str], mode: int = 0o755) -> Path:
    """Create ``path`` (and missing parents) if needed and return it.

    A directory created here gets exactly ``mode`` (the umask does not apply);
    missing parents get the default mode.  An existing directory is left as it
    is.  An existing non-directory raises :class:`FileExistsError`.
    """
    p = Path(path)
    if p.is_dir():
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        p.mkdir(mode=mode)
    except FileExistsError:
        # Lost a race with another creator, or the path is not a directory.
        if not p.is_dir():
            raise
        return p
    os.chmod(p, mode)
    return p
