"""Method specs, the call context and the method registrar."""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from thrum_core.errors import PluginError
from thrum_core.plugins.registry import Entry, Registry

if TYPE_CHECKING:
    import trio

    from thrum_core.interfaces import Connection
    from thrum_core.kernel import Kernel

AuthClass = Literal["open", "caller", "session", "admin"]
AUTH_CLASSES = ("open", "caller", "session", "admin")
ALL_TRANSPORTS = frozenset({"unix", "ws"})

Handler = Callable[[Any, "CallContext"], Awaitable[Any]]


class Params(BaseModel):
    """Base class for RPC parameter models.

    Strict (no coercion: ``"10"`` is not an int) and closed (unknown keys are
    -32602).  ``caller_agent_id`` and ``x_*`` keys are taken out by the
    dispatcher before validation, and a JSON ``null`` means "absent".

    Validators are built on first use (``defer_build``), not when the plugin
    module is imported: the daemon starts without building a validator for
    each of its methods; the kernel builds them once it serves
    (:meth:`MethodRegistry.unbuilt_params`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


@dataclass
class MethodSpec:
    """One registered JSON-RPC method (SPEC §9.1 columns)."""

    name: str
    handler: Handler
    params: type[BaseModel] | None = None
    auth: AuthClass = "open"
    transports: frozenset[str] = ALL_TRANSPORTS
    deadline_s: float | Callable[[Any], float] = 10.0
    plugin: str = ""

    def deadline_for(self, params: Any, default: float) -> float:
        """Seconds allowed for a call with these (validated) params."""
        if callable(self.deadline_s):
            return float(self.deadline_s(params))
        return float(self.deadline_s) if self.deadline_s else default


_connection_ids = itertools.count(1)


def next_connection_id(prefix: str) -> str:
    """A process-unique id for a new connection (``unix-1``, ``ws-2``, ...)."""
    return f"{prefix}-{next(_connection_ids)}"


@dataclass
class CallContext:
    """Everything a handler knows about the call it is serving."""

    kernel: Kernel
    method: str
    transport: str
    request_id: Any = None
    connection: Connection | None = None
    caller_agent_id: str | None = None
    caller: Any = None
    cancel_scope: trio.CancelScope | None = None
    submitted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def mark_submitted(self) -> None:
        """Called when the handler hands events to the writer.

        From then on the call runs to completion even past its deadline, so
        an acknowledged write is never reported as failed (SPEC §8.5).
        """
        self.submitted = True
        if self.cancel_scope is not None:
            self.cancel_scope.deadline = math.inf
            self.cancel_scope.shield = True


class MethodRegistrar:
    """``register(name, handler, *, params, auth, transports, deadline_s)``."""

    def __init__(self, registry: Registry[MethodSpec], plugin: str):
        self.registry = registry
        self.plugin = plugin

    def __call__(
        self,
        name: str,
        handler: Handler,
        *,
        params: type[BaseModel] | None = None,
        auth: AuthClass = "open",
        transports: Iterable[str] = ALL_TRANSPORTS,
        deadline_s: float | Callable[[Any], float] = 10.0,
    ) -> Entry[MethodSpec]:
        if auth not in AUTH_CLASSES:
            raise PluginError(f"method {name!r} of plugin {self.plugin!r}: unknown auth class {auth!r}")
        if not callable(handler):
            raise PluginError(f"method {name!r} of plugin {self.plugin!r}: handler is not callable")
        spec = MethodSpec(
            name=name,
            handler=handler,
            params=params,
            auth=auth,
            transports=frozenset(transports),
            deadline_s=deadline_s,
            plugin=self.plugin,
        )
        return self.registry.add(name, spec, self.plugin)


class MethodRegistry(Registry[MethodSpec]):
    """The daemon's method table."""

    def __init__(self) -> None:
        super().__init__("RPC method")

    def bound(self, plugin: str) -> MethodRegistrar:  # type: ignore[override]
        return MethodRegistrar(self, plugin)

    def unbuilt_params(self) -> list[type[BaseModel]]:
        """The parameter models whose validators are not built yet (deferred), once each."""
        models: dict[int, type[BaseModel]] = {}
        for entry in self.entries():
            model = entry.obj.params
            if model is not None and not model.__pydantic_complete__:
                models.setdefault(id(model), model)
        return list(models.values())
