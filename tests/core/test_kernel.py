"""The kernel: lifecycle hooks, supervised services, transports, and a draining shutdown."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio

from thrum_core.errors import ThrumError
from thrum_core.events.types import EventType
from thrum_core.kernel import Kernel
from thrum_core.markers import hookimpl
from thrum_core.plugins.registry import Registrar
from thrum_core.rpc.spec import CallContext, MethodRegistrar, MethodRegistry, Params
from thrum_core.testing import (
    KERNEL_ESSENTIALS,
    ThrumRepo,
    make_test_pm,
    open_async_client,
    register_test_plugin,
)
from thrum_core.testing.kernel import KernelRunner


class Recorder:
    """A plugin that records lifecycle hooks and serves a few test methods and services."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.flaky_calls = 0
        self.steady_ticks = 0
        self.release = trio.Event()

    @hookimpl
    def thrum_startup(self, kernel: Kernel) -> Any:
        self.events.append("startup-sync")

        async def later() -> None:
            await trio.sleep(0)
            self.events.append("startup-async")

        return later()

    @hookimpl
    def thrum_shutdown(self, kernel: Kernel) -> Any:
        self.events.append(f"shutdown(shutting_down={kernel.shutting_down})")

        async def later() -> None:
            await trio.sleep(0)
            self.events.append("shutdown-async")

        return later()

    @hookimpl
    def thrum_register_event_types(self, register: Any) -> None:
        register(EventType("kt.note"))

    @hookimpl
    def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
        async def slow(params: None, ctx: CallContext) -> str:
            self.events.append("slow-started")
            await self.release.wait()
            return "slow-done"

        async def note(params: None, ctx: CallContext) -> str:
            stored = await ctx.kernel.emit([{"type": "kt.note", "text": "hello"}], ctx=ctx)
            return stored[0].obj["event_id"]

        register("kt.slow", slow, deadline_s=30.0)
        register("kt.note", note)

    @hookimpl
    def thrum_register_services(self, register: Registrar) -> None:
        async def flaky(kernel: Kernel) -> None:
            self.flaky_calls += 1
            if self.flaky_calls == 1:
                raise RuntimeError("flaky service failed on purpose")
            await trio.sleep_forever()

        async def steady(kernel: Kernel) -> None:
            while True:
                self.steady_ticks += 1
                await trio.sleep(0.01)

        register("flaky", flaky)
        register("steady", steady)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def start(runner: KernelRunner, repo: ThrumRepo, recorder: Recorder) -> Kernel:
    pm = make_test_pm(KERNEL_ESSENTIALS)
    register_test_plugin(pm, recorder, "recorder")
    return await runner.start(pm, repo)


async def test_kernel_collects_registrations(
    thrum_kernel_runner: KernelRunner, thrum_repo: ThrumRepo, recorder: Recorder
) -> None:
    kernel = await start(thrum_kernel_runner, thrum_repo, recorder)
    assert kernel.ready
    assert {"health", "kt.slow", "kt.note"} <= set(kernel.methods.names())
    assert kernel.methods.entry("kt.slow").plugin == "recorder"  # type: ignore[union-attr]
    assert kernel.transports.names() == ["unix"]
    assert kernel.services.names() == ["flaky", "steady"]
    assert "kt.note" in kernel.event_types
    assert recorder.events[:2] == ["startup-sync", "startup-async"]


async def test_failing_service_is_logged_restarted_and_isolated(
    thrum_kernel_runner: KernelRunner,
    thrum_repo: ThrumRepo,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="thrum.kernel")
    kernel = await start(thrum_kernel_runner, thrum_repo, recorder)
    with trio.fail_after(5):
        while recorder.flaky_calls < 2:  # restarted after its 1 s back-off
            await trio.sleep(0.05)
    failures = [r for r in caplog.records if "service flaky failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "on purpose" in str(failures[0].exc_info[1])
    ticks = recorder.steady_ticks
    await trio.sleep(0.1)
    assert recorder.steady_ticks > ticks, "the other service kept running"
    async with await open_async_client(kernel.status["socket_path"]) as client:
        assert (await client.call("health"))["status"] == "ok"


async def test_emit_writes_durably_and_projects(
    thrum_kernel_runner: KernelRunner, thrum_repo: ThrumRepo, recorder: Recorder
) -> None:
    kernel = await start(thrum_kernel_runner, thrum_repo, recorder)
    async with await open_async_client(kernel.status["socket_path"]) as client:
        event_id = await client.call("kt.note")
    assert event_id.startswith("evt_")
    lines = [
        json.loads(line)
        for path in thrum_repo.paths.sync_dir.rglob("*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert any(obj.get("event_id") == event_id and obj.get("text") == "hello" for obj in lines)


async def test_shutdown_trigger_drains(
    thrum_kernel_runner: KernelRunner, thrum_repo: ThrumRepo, recorder: Recorder
) -> None:
    kernel = await start(thrum_kernel_runner, thrum_repo, recorder)
    path = kernel.status["socket_path"]
    client = await open_async_client(path)
    rid = await client.send("kt.slow")
    with trio.fail_after(5):
        while "slow-started" not in recorder.events:
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(thrum_kernel_runner.stop, kernel)
        with trio.fail_after(5):
            while not kernel.shutting_down:
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        # No new connections once shutdown began...
        with pytest.raises(OSError):
            await open_async_client(path)
        # ...but the in-flight request still completes and is answered.
        recorder.release.set()
        reply = await client.wait_response(rid)
        assert reply["result"] == "slow-done"
    await client.aclose()
    assert not kernel.ready
    assert recorder.events[-2:] == ["shutdown(shutting_down=True)", "shutdown-async"]
    assert recorder.flaky_calls >= 1


async def test_shutdown_grace_is_bounded(
    thrum_kernel_runner: KernelRunner,
    thrum_repo: ThrumRepo,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import thrum_core.kernel as kernel_module

    monkeypatch.setattr(kernel_module, "SHUTDOWN_INFLIGHT_GRACE_S", 0.2)
    kernel = await start(thrum_kernel_runner, thrum_repo, recorder)
    client = await open_async_client(kernel.status["socket_path"])
    await client.send("kt.slow")  # never released
    with trio.fail_after(5):
        while "slow-started" not in recorder.events:
            await trio.sleep(0.01)
    with trio.fail_after(5):
        await thrum_kernel_runner.stop(kernel)
    with pytest.raises((ThrumError, trio.BrokenResourceError, trio.TooSlowError)):
        reply = await client.read_message(timeout=2)
        if reply is None:
            raise ThrumError("closed")
    await client.aclose()


async def test_two_kernels_side_by_side(thrum_kernel_runner: KernelRunner, tmp_path: Any) -> None:
    from thrum_core.testing import make_thrum_repo

    kernels = []
    for name in ("a", "b"):
        repo = make_thrum_repo(tmp_path, name=name)
        kernels.append(await thrum_kernel_runner.start(make_test_pm(KERNEL_ESSENTIALS), repo))
    ids = set()
    for kernel in kernels:
        async with await open_async_client(kernel.status["socket_path"]) as client:
            ids.add((await client.call("health"))["repo_id"])
    assert len(ids) == 2


class EchoParams(Params):
    """Parameters of ``kt.echo`` (validators built on first use, like every ``Params``)."""

    text: str
    times: int = 1


class Echo:
    """A plugin with one parameterised method and a service that waits for ``ready``."""

    def __init__(self, params: type[EchoParams]) -> None:
        self.params = params
        self.saw_ready: bool | None = None

    @hookimpl
    def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
        async def echo(params: EchoParams, ctx: CallContext) -> str:
            return params.text * params.times

        register("kt.echo", echo, params=self.params)

    @hookimpl
    def thrum_register_services(self, register: Registrar) -> None:
        async def after_ready(kernel: Kernel) -> None:
            await kernel.wait_ready()
            self.saw_ready = kernel.ready

        register("after-ready", after_ready)


async def test_param_validators_are_built_after_ready(
    thrum_kernel_runner: KernelRunner, thrum_repo: ThrumRepo
) -> None:
    class FreshParams(EchoParams):
        """A subclass of its own, so that no other test has built its validator."""

    assert not FreshParams.__pydantic_complete__  # defer_build: nothing built at class creation
    echo = Echo(FreshParams)
    pm = make_test_pm(KERNEL_ESSENTIALS)
    register_test_plugin(pm, echo, "echo")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    with trio.fail_after(5):
        while kernel.methods.unbuilt_params() or echo.saw_ready is None:
            await trio.sleep(0.01)
    assert echo.saw_ready is True
    assert FreshParams.__pydantic_complete__  # built by the kernel, not by a call
    async with await open_async_client(kernel.status["socket_path"]) as client:
        assert await client.call("kt.echo", {"text": "ab", "times": 2}) == "abab"
        with pytest.raises(ThrumError) as info:
            await client.call("kt.echo", {"text": "ab", "times": "2"})  # strict: no coercion
        assert info.value.code == -32602


def test_deferred_validators_build_on_first_use() -> None:
    class FirstUse(Params):
        name: str

    assert not FirstUse.__pydantic_complete__
    assert FirstUse.model_validate({"name": "x"}).name == "x"
    assert FirstUse.__pydantic_complete__
    registry = MethodRegistry()

    async def handler(params: Any, ctx: CallContext) -> None:
        return None

    class Unused(Params):
        n: int

    registry.bound("p")("m.first", handler, params=FirstUse)
    registry.bound("p")("m.unused", handler, params=Unused)
    registry.bound("p")("m.again", handler, params=Unused)
    registry.bound("p")("m.none", handler)
    assert registry.unbuilt_params() == [Unused]
