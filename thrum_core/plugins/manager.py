"""The plugin manager facade: pluggy plus load records and bound registrars."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from thrum_core import hookspecs
from thrum_core.errors import PluginError
from thrum_core.plugins.registry import Registry

log = logging.getLogger("thrum.plugins")

LOADED = "loaded"
FAILED = "failed"
DISABLED = "disabled"


@dataclass
class PluginRecord:
    """What ``thrum plugins`` reports about one plugin."""

    name: str
    dist: str | None = None
    version: str | None = None
    status: str = LOADED
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    module: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dist": self.dist,
            "version": self.version,
            "status": self.status,
            "hooks": sorted(self.hooks),
            "error": self.error,
        }


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


class PluginManager:
    """pluggy's manager with thrum's rules: records, isolation, registrars.

    A plugin that fails to import, register or run a registration hook is
    recorded as ``failed`` and reported; it never stops thrum unless
    ``THRUM_STRICT_PLUGINS=1`` is set.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        self.pm = pluggy.PluginManager("thrum")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.strict = _truthy(self.environ.get("THRUM_STRICT_PLUGINS"))
        self._trace: Any = None
        if _truthy(self.environ.get("THRUM_TRACE_PLUGINS")):
            self.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.pm.enable_tracing()
            # call_each/notify call implementations one by one, bypassing
            # pluggy's tracer, so they write their own trace lines.
            self._trace = self.pm.trace.root.get("hook")

    @property
    def hook(self) -> Any:
        """pluggy's hook relay (``pm.hook.thrum_doctor(report=...)``)."""
        return self.pm.hook

    # -- registration -----------------------------------------------------
    def register(
        self,
        plugin: object,
        name: str,
        *,
        dist: str | None = None,
        version: str | None = None,
    ) -> PluginRecord:
        """Register a plugin object (usually a module) under ``name``."""
        record = PluginRecord(name=name, dist=dist, version=version, module=getattr(plugin, "__name__", None))
        self.records[name] = record
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self.fail(name, exc)
            return record
        record.hooks = sorted(impl_name for impl_name in self._hook_names(name))
        return record

    def unregister(self, name: str) -> None:
        """Remove a plugin and its record."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.records.pop(name, None)

    def register_failed_import(
        self, name: str, dist: str | None, version: str | None, exc: BaseException
    ) -> None:
        """Record a plugin whose module could not be imported."""
        self.records[name] = PluginRecord(name=name, dist=dist, version=version)
        self.fail(name, exc, stage="import")

    def record_disabled(self, name: str, dist: str | None, version: str | None) -> None:
        self.records[name] = PluginRecord(name=name, dist=dist, version=version, status=DISABLED)

    def fail(self, name: str, exc: BaseException, *, stage: str = "register") -> None:
        """Record that plugin ``name`` failed; unregister it; raise if strict."""
        record = self.records.setdefault(name, PluginRecord(name=name))
        record.status = FAILED
        record.error = f"{stage}: {type(exc).__name__}: {exc}"
        log.warning("plugin %s failed (%s)", name, record.error)
        log.debug("".join(traceback.format_exception(exc)))
        if self.pm.get_plugin(name) is not None:
            try:
                self.pm.unregister(name=name)
            except Exception:  # pragma: no cover - defensive
                pass
        if self.strict:
            raise PluginError(f"plugin {name!r} failed: {record.error}") from exc

    def _hook_names(self, plugin_name: str) -> list[str]:
        plugin = self.pm.get_plugin(plugin_name)
        if plugin is None:
            return []
        return [caller.name for caller in self.pm.get_hookcallers(plugin) or []]

    # -- calling hooks ----------------------------------------------------
    def call_each(self, hook_name: str, make_kwargs: Callable[[str], dict[str, Any]]) -> None:
        """Call every implementation of ``hook_name`` separately.

        ``make_kwargs(plugin_name)`` builds the keyword arguments (typically a
        registrar bound to that plugin).  A failing implementation marks its
        plugin failed and the others still run.
        """
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            plugin_name = impl.plugin_name
            kwargs = make_kwargs(plugin_name)
            if self._trace is not None:
                self._trace(
                    f"{hook_name} -> {plugin_name}", {k: v for k, v in kwargs.items() if k in impl.argnames}
                )
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as exc:
                self.fail(plugin_name, exc, stage=hook_name)
                for registry in kwargs.values():
                    remove = getattr(getattr(registry, "registry", None), "remove_plugin", None)
                    if remove is not None:
                        remove(plugin_name)

    def collect(self, hook_name: str, registry: Registry[Any]) -> Registry[Any]:
        """Fill ``registry`` by calling ``hook_name`` with a registrar per plugin."""
        self.call_each(hook_name, lambda plugin: {"register": registry.bound(plugin)})
        return registry

    def notify(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call an observer hook implementation by implementation, isolating failures.

        Returns the non-``None`` results.  Unlike :meth:`fail`, an observer
        raising does not unregister its plugin: it is logged and the next
        implementation runs.
        """
        results: list[Any] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if self._trace is not None:
                self._trace(
                    f"{hook_name} -> {impl.plugin_name}",
                    {k: v for k, v in kwargs.items() if k in impl.argnames},
                )
            try:
                res = impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception:
                log.exception("plugin %s: %s failed", impl.plugin_name, hook_name)
                if self.strict:
                    raise
                continue
            if res is not None:
                results.append(res)
        return results

    def notifier(self, hook_name: str, name: str, **kwargs: Any) -> Callable[[Any], None] | None:
        """A function doing :meth:`notify` with ``name=value, **kwargs`` for each ``value`` it gets.

        The implementations are looked up once, when the function is made
        (use it for one burst of calls, e.g. the events of one batch), and
        the result is ``None`` when the hook has none.  Results are dropped.
        """
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        if not impls:
            return None
        calls = [(impl, [k for k in (name, *kwargs) if k in impl.argnames]) for impl in impls]
        trace = self._trace
        strict = self.strict

        def notify(value: Any) -> None:
            args = {name: value, **kwargs}
            for impl, names in calls:
                if trace is not None:
                    trace(f"{hook_name} -> {impl.plugin_name}", {k: args[k] for k in names})
                try:
                    impl.function(**{k: args[k] for k in names})
                except Exception:
                    log.exception("plugin %s: %s failed", impl.plugin_name, hook_name)
                    if strict:
                        raise

        return notify

    def check_pending(self) -> dict[str, str]:
        """Per-plugin verdict: ``ok`` or why some hook implementation has no spec.

        pluggy's own ``check_pending`` raises on the first problem; this one
        reports each plugin and marks offenders failed.
        """
        verdicts: dict[str, str] = {}
        for name, plugin in list(self.pm.list_name_plugin()):
            if plugin is None:
                continue
            problems = []
            for attr in dir(plugin):
                if not attr.startswith("thrum_"):
                    continue
                opts = self.pm.parse_hookimpl_opts(plugin, attr)
                if opts is None or opts.get("optionalhook"):
                    continue
                hook_name = opts.get("specname") or attr
                hc = getattr(self.pm.hook, hook_name, None)
                if hc is None or hc.spec is None:
                    problems.append(f"unknown hook {hook_name!r}")
            verdicts[name] = "ok" if not problems else "; ".join(problems)
            if problems:
                self.fail(name, PluginError(verdicts[name]), stage="check_pending")
        return verdicts

    def plugin_records(self) -> list[PluginRecord]:
        return [self.records[n] for n in sorted(self.records)]
