"""Tests for the example plugin, on thrum's own fixtures (``thrum_core.testing``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from thrum_example.plugin import DETECT_VARIABLE, ExampleRuntime

from thrum_core.errors import ThrumError
from thrum_core.kernel import Kernel
from thrum_core.plugins.manager import PluginManager
from thrum_core.plugins.registry import Registry
from thrum_core.testing import AsyncClient, ThrumCliRunner, ThrumRepo


def test_plugin_registers_every_hook(thrum_pm: PluginManager) -> None:
    record = thrum_pm.records["example"]
    assert record.status == "loaded"
    assert record.hooks == [
        "thrum_detect_runtime",
        "thrum_register_commands",
        "thrum_register_rpc_methods",
        "thrum_register_runtimes",
    ]
    assert thrum_pm.check_pending()["example"] == "ok"


def test_runtime_preset(thrum_pm: PluginManager, tmp_path: Path) -> None:
    runtimes = thrum_pm.collect("thrum_register_runtimes", Registry("runtime"))
    preset = runtimes.get("example")
    assert isinstance(preset, ExampleRuntime)
    [(path, content, policy)] = preset.files({"agent_name": "ada"})
    assert (path, policy) == (".example-tool/thrum.md", "skip-if-exists")
    assert "`ada`" in content
    hook = thrum_pm.hook.thrum_detect_runtime
    assert hook(environ={DETECT_VARIABLE: "1"}, cwd=tmp_path) == "example"
    assert hook(environ={}, cwd=tmp_path) is None


async def test_hello_over_the_socket(thrum_kernel: Kernel, rpc_client: AsyncClient) -> None:
    result = await rpc_client.call("example.hello", {"name": "Ada"})
    assert result == {"greeting": "Hello, Ada!", "daemon_id": thrum_kernel.daemon_id}
    assert (await rpc_client.call("example.hello"))["greeting"] == "Hello, world!"
    assert (await rpc_client.call("example.hello", {"shout": True}))["greeting"] == "HELLO, WORLD!"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"name": ""}, "name"), ({"name": 7}, "name"), ({"shout": "yes"}, "shout"), ({"nme": "typo"}, "nme")],
)
async def test_hello_rejects_bad_params(
    rpc_client: AsyncClient, params: dict[str, object], field: str
) -> None:
    with pytest.raises(ThrumError) as info:
        await rpc_client.call("example.hello", params)
    assert info.value.code == -32602
    assert info.value.data is not None and info.value.data["field"] == field


async def test_cli_command_calls_the_daemon(thrum_kernel: Kernel, cli_runner: ThrumCliRunner) -> None:
    cli_runner.use_kernel(thrum_kernel)
    result = await cli_runner.ainvoke(["example-hello", "--name", "Ada"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Hello, Ada!"
    result = await cli_runner.ainvoke(["example-hello", "--shout", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["greeting"] == "HELLO, WORLD!"


def test_cli_without_a_daemon(thrum_repo: ThrumRepo, cli_runner: ThrumCliRunner) -> None:
    cli_runner.use_repo(thrum_repo.root)
    result = cli_runner.invoke(["example-hello"])
    assert result.exit_code == 1
    assert "daemon is not running" in result.stderr
