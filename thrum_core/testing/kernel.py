"""Run kernels inside a trio nursery for the length of a test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from thrum_core.kernel import Kernel
from thrum_core.plugins.manager import PluginManager
from thrum_core.testing.plugins import clean_environ
from thrum_core.testing.repo import ThrumRepo


def short_socket_dir() -> Path:
    """A fresh 0700 directory under the system temp dir, short enough for ``sun_path``."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    return Path(tempfile.mkdtemp(prefix="thrum-t-", dir=base))


@dataclass
class _Running:
    kernel: Kernel
    stop: trio.Event
    done: trio.Event
    socket_dir: Path


class KernelRunner:
    """Starts kernels as tasks of ``nursery`` and stops them (gracefully) on :meth:`aclose`."""

    def __init__(self, nursery: trio.Nursery):
        self._nursery = nursery
        self._running: list[_Running] = []

    async def start(
        self,
        pm: PluginManager,
        repo: ThrumRepo,
        *,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
    ) -> Kernel:
        """Build a kernel for ``repo`` from ``pm`` and run it until the test ends.

        The socket is bound at ``socket_path`` (default: ``s.sock`` in a fresh
        short temp directory); ``kernel.status["socket_path"]`` holds it.
        Returns once the kernel is ready (its transports accept connections).
        """
        env = clean_environ() if environ is None else dict(environ)
        kernel = Kernel(repo.paths, pm, environ=env, flags=flags)
        socket_dir = short_socket_dir()
        path = Path(socket_path) if socket_path is not None else socket_dir / "s.sock"
        kernel.status["socket_path"] = str(path)
        kernel.status["pid"] = os.getpid()
        running = _Running(kernel, trio.Event(), trio.Event(), socket_dir)

        async def run(*, task_status: trio.TaskStatus[Kernel] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await kernel.run(shutdown_trigger=running.stop.wait, task_status=task_status)
            finally:
                running.done.set()

        await self._nursery.start(run)
        self._running.append(running)
        return kernel

    async def stop(self, kernel: Kernel) -> None:
        """Trigger ``kernel``'s graceful shutdown and wait until ``run`` returns."""
        for running in self._running:
            if running.kernel is kernel:
                running.stop.set()
                await running.done.wait()
                shutil.rmtree(running.socket_dir, ignore_errors=True)
                self._running.remove(running)
                return
        raise ValueError("this kernel was not started by this runner")

    async def aclose(self) -> None:
        """Stop every kernel still running, newest first."""
        for running in reversed(list(self._running)):
            await self.stop(running.kernel)
