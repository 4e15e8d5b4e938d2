"""pytest fixtures for thrum and for third-party plugin authors.

Enable them in a ``conftest.py``::

    pytest_plugins = ["thrum_core.testing"]

Fixtures (see ``docs/writing-plugins.md``):

``thrum_builtins``
    The built-in plugins ``thrum_pm`` loads: ``("rpc.health",
    "transports.unix_socket")`` unless a test is marked
    ``@pytest.mark.thrum_builtins("rpc.health", ...)`` (or ``"all"``), or the
    fixture is overridden.
``thrum_extra_plugins``
    ``{name: plugin}`` registered into ``thrum_pm`` when it is created
    (default empty; override it in a ``conftest.py`` to test your plugin).
``thrum_pm``
    A fresh :class:`~thrum_core.plugins.manager.PluginManager` that loads no
    entry point, only ``thrum_builtins`` and ``thrum_extra_plugins``.
``register_plugin``
    ``register_plugin(plugin, name=None)`` registers into ``thrum_pm`` and
    unregisters at teardown.
``thrum_repo``
    A temporary git repository (one commit on ``main``, a bare ``origin``)
    with ``.thrum/`` initialised minimally: a :class:`ThrumRepo`.
``thrum_kernel_runner``
    A :class:`KernelRunner` whose kernels run in the test's nursery (trio
    tests only) and are shut down gracefully at teardown.
``thrum_kernel``
    A running in-process :class:`~thrum_core.kernel.Kernel` for
    ``thrum_repo`` built from ``thrum_pm``, on a temp Unix socket.
``rpc_client`` / ``rpc_client_factory``
    An :class:`AsyncClient` connected to ``thrum_kernel`` (and a factory for
    more connections).  Use the blocking :class:`thrum_core.client.Client`
    only against a daemon in another process.
``cli_runner``
    A :class:`ThrumCliRunner`: click's ``CliRunner`` over a ``thrum`` group
    holding the commands ``thrum_pm``'s plugins register.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thrum_core.plugins.manager import PluginManager, PluginRecord
from thrum_core.testing.cli import ThrumCliRunner, build_cli
from thrum_core.testing.client import AsyncClient, open_async_client
from thrum_core.testing.plugins import (
    KERNEL_ESSENTIALS,
    builtin_specs,
    clean_environ,
    make_test_pm,
    register_test_plugin,
    write_entry_point_dist,
)
from thrum_core.testing.repo import ThrumRepo, make_thrum_repo

if TYPE_CHECKING:
    import trio

    from thrum_core.kernel import Kernel
    from thrum_core.testing.kernel import KernelRunner

__all__ = [
    "KERNEL_ESSENTIALS",
    "AsyncClient",
    "ThrumCliRunner",
    "ThrumRepo",
    "build_cli",
    "builtin_specs",
    "clean_environ",
    "make_test_pm",
    "make_thrum_repo",
    "open_async_client",
    "register_test_plugin",
    "write_entry_point_dist",
]

RegisterPlugin = Callable[..., PluginRecord]


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``thrum_builtins`` marker."""
    config.addinivalue_line(
        "markers",
        "thrum_builtins(*names): built-in thrum plugins thrum_pm loads (names or 'all')",
    )


@pytest.fixture
def thrum_builtins(request: pytest.FixtureRequest) -> Sequence[str] | str:
    """Names of the built-in plugins ``thrum_pm`` loads (see the module doc)."""
    marker = request.node.get_closest_marker("thrum_builtins")
    if marker is not None:
        if marker.args == ("all",):
            return "all"
        return tuple(marker.args)
    return KERNEL_ESSENTIALS


@pytest.fixture
def thrum_extra_plugins() -> Mapping[str, object]:
    """Extra plugins (``{name: module or object}``) registered into ``thrum_pm``; override it."""
    return {}


@pytest.fixture
def thrum_pm(thrum_builtins: Sequence[str] | str, thrum_extra_plugins: Mapping[str, object]) -> PluginManager:
    """A plugin manager without entry points: the chosen built-ins and extra plugins only."""
    manager = make_test_pm(thrum_builtins)
    for name, plugin in thrum_extra_plugins.items():
        register_test_plugin(manager, plugin, name)
    return manager


@pytest.fixture
def register_plugin(thrum_pm: PluginManager) -> Iterator[RegisterPlugin]:
    """``register_plugin(plugin, name=None, allow_failure=False)`` into ``thrum_pm``; undone at teardown."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None, *, allow_failure: bool = False) -> PluginRecord:
        record = register_test_plugin(thrum_pm, plugin, name, allow_failure=allow_failure)
        names.append(record.name)
        return record

    yield register
    for name in reversed(names):
        thrum_pm.unregister(name)


@pytest.fixture
def thrum_repo(tmp_path: Path) -> ThrumRepo:
    """A temp git repository with ``.thrum/`` initialised and a bare ``origin``."""
    return make_thrum_repo(tmp_path)


@pytest.fixture
async def thrum_kernel_runner(nursery: trio.Nursery) -> AsyncIterator[KernelRunner]:
    """Start kernels with ``await thrum_kernel_runner.start(pm, repo)``; stopped at teardown."""
    from thrum_core.testing.kernel import KernelRunner

    runner = KernelRunner(nursery)
    try:
        yield runner
    finally:
        await runner.aclose()


@pytest.fixture
async def thrum_kernel(
    thrum_kernel_runner: KernelRunner, thrum_pm: PluginManager, thrum_repo: ThrumRepo
) -> Kernel:
    """A ready in-process kernel for ``thrum_repo`` built from ``thrum_pm``."""
    return await thrum_kernel_runner.start(thrum_pm, thrum_repo)


@pytest.fixture
async def rpc_client_factory(thrum_kernel: Kernel) -> AsyncIterator[Callable[[], Awaitable[AsyncClient]]]:
    """``await rpc_client_factory()`` opens another connection to ``thrum_kernel``."""
    clients: list[AsyncClient] = []

    async def connect() -> AsyncClient:
        client = await open_async_client(thrum_kernel.status["socket_path"])
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def rpc_client(rpc_client_factory: Callable[[], Awaitable[AsyncClient]]) -> AsyncClient:
    """An async JSON-RPC client connected to ``thrum_kernel``."""
    return await rpc_client_factory()


@pytest.fixture
def cli_runner(thrum_pm: PluginManager) -> ThrumCliRunner:
    """A click runner over a CLI built from ``thrum_pm`` (``.use_kernel(k)`` to reach a kernel)."""
    return ThrumCliRunner(thrum_pm)
