"""Shared pytest set-up: thrum's own fixtures (``thrum_core.testing``)."""

pytest_plugins = ["thrum_core.testing"]
