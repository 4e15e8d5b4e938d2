"""The Go tool's on-disk data (``go-thrum-legacy-fixture.tar.gz``) for tests and benchmarks."""

from __future__ import annotations

import tarfile
from pathlib import Path

__all__ = ["GO_FIXTURE", "unpack_go_fixture"]

#: The archive: a legacy ``.thrum/`` (event logs, identities, the Go database).
GO_FIXTURE = Path("/work/shared/fixtures/go-thrum-legacy-fixture.tar.gz")


def unpack_go_fixture(target: Path) -> Path:
    """Unpack :data:`GO_FIXTURE` into ``target`` (created if needed); return ``target``.

    With tarfile's ``data`` filter where the interpreter has it (3.11.4 and
    later); older 3.11 releases unpack the archive as it is, which is safe
    for this archive of the project's own.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(GO_FIXTURE) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(target)
    return target
