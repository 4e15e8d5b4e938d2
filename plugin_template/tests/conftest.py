"""Use thrum's test fixtures and put this plugin into every test's plugin manager."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

pytest_plugins = ["thrum_core.testing"]


@pytest.fixture
def thrum_extra_plugins() -> Mapping[str, object]:
    """Register the plugin under test (by object, so no installation is needed)."""
    from thrum_example import plugin

    return {"example": plugin}
