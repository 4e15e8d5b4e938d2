"""Shared pytest set-up: thrum's own fixtures (``thrum_core.testing``).

Tests create git commits (directly and through subprocesses); a fresh machine
may have no git identity configured, so give every process one.  A suite run
from inside an AI coding tool must not let ``thrum`` detect that tool (and,
say, write its runtime files into test repositories): the tools' detection
variables are removed from the environment of the whole run.
"""

import importlib
import os
import sys

# The tests run the installed `thrum` executable: use the one installed next to
# the interpreter running pytest, even when that environment is not activated
# (`.venv/bin/python -m pytest`).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

for _key, _value in {
    "GIT_AUTHOR_NAME": "thrum tests",
    "GIT_AUTHOR_EMAIL": "tests@thrum.invalid",
    "GIT_COMMITTER_NAME": "thrum tests",
    "GIT_COMMITTER_EMAIL": "tests@thrum.invalid",
}.items():
    os.environ.setdefault(_key, _value)

for _module in ("amp", "auggie", "claude", "cli_only", "codex", "cursor", "gemini", "opencode"):
    _preset = importlib.import_module(f"thrum_plugins.runtimes.{_module}").PRESET
    for _key in (*_preset.env_vars, *_preset.ide_env_vars):
        os.environ.pop(_key, None)

pytest_plugins = ["thrum_core.testing"]
