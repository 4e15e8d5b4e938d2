"""Fixtures for the event store tests: a throw-away repository and an open store."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

# The suite runs with --import-mode=importlib, which does not put test
# directories on sys.path; the shared test event types live next to this file.
sys.path.insert(0, str(Path(__file__).parent))

from events_testtypes import DAEMON, FAIL, Observed, make_paths, make_registry

from thrum_core.events.store import EventStore
from thrum_core.paths import ThrumPaths


@pytest.fixture(autouse=True)
def _reset_fail() -> Iterator[None]:
    FAIL["on"] = False
    yield
    FAIL["on"] = False


@pytest.fixture
def paths(tmp_path: Path) -> ThrumPaths:
    return make_paths(tmp_path / "repo")


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
def store(paths: ThrumPaths, observed: Observed) -> Iterator[EventStore]:
    s = EventStore(paths, make_registry(), DAEMON, on_applied=observed)
    s.open()
    yield s
    if not s.writer_running:
        s.close()


@pytest.fixture
async def running(store: EventStore) -> AsyncIterator[EventStore]:
    """The store with its writer running in a nursery."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        yield store
        await store.stop_writer()
