"""Registrars: the objects registration hooks receive.

A registrar is bound to the plugin whose hook implementation is running, so
every entry is stamped with its owner; a second registration of the same name
is refused with an error that names both plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from thrum_core.errors import PluginError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered object and the plugin that registered it."""

    name: str
    obj: T
    plugin: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named objects of one kind (transports, sync backends, runtimes, ...).

    ``validate`` (optional) is called with each new entry and may raise
    :class:`PluginError` to refuse it.
    """

    def __init__(self, kind: str, validate: Callable[[Entry[T]], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._validate = validate

    def add(self, name: str, obj: T, plugin: str, **meta: Any) -> Entry[T]:
        """Add ``obj`` under ``name`` for ``plugin``; refuse duplicates."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name")
        existing = self._entries.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {existing.plugin!r} "
                f"and by plugin {plugin!r}"
            )
        entry = Entry(name, obj, plugin, dict(meta))
        if self._validate is not None:
            self._validate(entry)
        self._entries[name] = entry
        return entry

    def remove_plugin(self, plugin: str) -> None:
        """Forget every entry registered by ``plugin``."""
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]

    def bound(self, plugin: str) -> Registrar:
        """A callable registrar that stamps ``plugin`` on each entry."""
        return Registrar(self, plugin)

    def get(self, name: str) -> T | None:
        entry = self._entries.get(name)
        return entry.obj if entry else None

    def entry(self, name: str) -> Entry[T] | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class Registrar:
    """What a registration hook receives: ``register(name, obj, **meta)``."""

    def __init__(self, registry: Registry[Any], plugin: str):
        self.registry = registry
        self.plugin = plugin

    def __call__(self, name: str, obj: Any, **meta: Any) -> Entry[Any]:
        return self.registry.add(name, obj, self.plugin, **meta)
