"""``thrum completion SHELL`` and the completion it enables."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from click.testing import Result

Invoke = Callable[..., Result]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(run_cli: Invoke, shell: str) -> None:
    result = run_cli("completion", shell)
    assert result.exit_code == 0
    assert "_THRUM_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_powershell_is_not_supported_yet(run_cli: Invoke) -> None:
    result = run_cli("completion", "powershell")
    assert result.exit_code == 1
    assert "not supported yet" in result.stderr


def test_unknown_shell_is_a_usage_error(run_cli: Invoke) -> None:
    assert run_cli("completion", "tcsh").exit_code == 1


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_THRUM_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run(["thrum"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


def test_the_real_executable_completes_commands() -> None:
    assert "daemon" in _complete("thrum dae", 1)
    assert set(_complete("thrum daemon st", 2)) == {"start", "status", "stop"}
