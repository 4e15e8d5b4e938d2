"""Fixtures shared by the RPC plugin tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from thrum_plugins.rpc import _workctx


@pytest.fixture
def fresh_workctx_caches() -> Iterator[None]:
    """Empty the work-context caches (commit files, numstats, open repositories) before and after a test."""
    _workctx.clear_caches()
    yield
    _workctx.clear_caches()
