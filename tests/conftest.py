"""Shared pytest set-up: thrum's own fixtures (``thrum_core.testing``).

Tests create git commits (directly and through subprocesses); a fresh machine
may have no git identity configured, so give every process one.
"""

import os

for _key, _value in {
    "GIT_AUTHOR_NAME": "thrum tests",
    "GIT_AUTHOR_EMAIL": "tests@thrum.invalid",
    "GIT_COMMITTER_NAME": "thrum tests",
    "GIT_COMMITTER_EMAIL": "tests@thrum.invalid",
}.items():
    os.environ.setdefault(_key, _value)

pytest_plugins = ["thrum_core.testing"]
