"""Plugin machinery: the entry-point loader, the manager's rules, registrars and the marker.

Entry points are real: each test writes ``*.dist-info`` directories and plugin
modules into a temp site directory put on ``sys.path``, so
:mod:`importlib.metadata` discovers them exactly as installed distributions.
"""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest

from thrum_core.errors import PluginError
from thrum_core.markers import hookimpl
from thrum_core.plugins.loader import (
    BUILTIN_DIST,
    discover,
    is_builtin_command_plugin,
    is_enabled,
    load_entry_points,
    make_plugin_manager,
)
from thrum_core.plugins.manager import DISABLED, FAILED, LOADED, PluginManager
from thrum_core.plugins.registry import Registry
from thrum_core.rpc.spec import MethodRegistry
from thrum_core.testing import write_entry_point_dist

# Plugin module sources, keyed by module name.
MODULES = {
    "tp_alpha": """
        from thrum_core.markers import hookimpl

        async def hello(params, ctx):
            return "alpha"

        @hookimpl
        def thrum_register_rpc_methods(register):
            register("alpha.hello", hello)
    """,
    "tp_beta": """
        from thrum_core.markers import hookimpl

        @hookimpl
        def thrum_register_runtimes(register):
            register("beta-tool", object())
    """,
    "tp_broken_import": """
        raise ImportError("tp_broken_import needs a library that is not installed")
    """,
    "tp_broken_hook": """
        from thrum_core.markers import hookimpl

        async def one(params, ctx):
            return 1

        @hookimpl
        def thrum_register_rpc_methods(register):
            register("broken.one", one)
            raise RuntimeError("registration exploded half-way")
    """,
    "tp_dup": """
        from thrum_core.markers import hookimpl

        async def hello(params, ctx):
            return "dup"

        @hookimpl
        def thrum_register_rpc_methods(register):
            register("alpha.hello", hello)
    """,
    "tp_unknown_hook": """
        from thrum_core.markers import hookimpl

        @hookimpl
        def thrum_no_such_hook(register):
            pass
    """,
    "tp_optional_hook": """
        from thrum_core.markers import hookimpl

        @hookimpl(optionalhook=True)
        def thrum_future_hook(register):
            pass

        @hookimpl
        def thrum_register_runtimes(register):
            register("optional-tool", object())
    """,
    "tp_bad_args": """
        from thrum_core.markers import hookimpl

        @hookimpl
        def thrum_register_runtimes(register, not_a_spec_argument):
            pass
    """,
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp site directory on ``sys.path`` holding the plugin modules above."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    for name, source in MODULES.items():
        (site_dir / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(site_dir))
    yield site_dir
    for name in MODULES:
        sys.modules.pop(name, None)


def dist(site_dir: Path, name: str, eps: dict[str, str]) -> None:
    write_entry_point_dist(site_dir, name, eps)


def ours(names: Callable[[], list[str]] | list[str]) -> list[str]:
    """Drop thrum's own built-ins from a list of plugin names."""
    items = names() if callable(names) else names
    builtin = {s.name for s in discover() if s.builtin}
    return [n for n in items if n not in builtin]


# -- discovery and order ------------------------------------------------------------


def test_entry_points_are_sorted_with_builtins_first(site: Path) -> None:
    dist(site, "zeta-plugins", {"tp-zeta": "tp_beta", "tp-alpha2": "tp_alpha"})
    dist(site, "aardvark", {"tp-mid": "tp_alpha"})
    specs = discover()
    builtins = [s for s in specs if s.builtin]
    assert builtins, "thrum's own entry points must be installed (pip install -e .)"
    assert all(s.dist == BUILTIN_DIST for s in builtins)
    # Built-ins form a prefix, each part sorted by name.
    assert specs[: len(builtins)] == builtins
    assert [s.name for s in builtins] == sorted(s.name for s in builtins)
    third = [s.name for s in specs[len(builtins) :]]
    assert third == sorted(third)
    assert {"tp-zeta", "tp-alpha2", "tp-mid"} <= set(third)
    zeta = next(s for s in specs if s.name == "tp-zeta")
    assert (zeta.dist, zeta.version, zeta.value, zeta.builtin) == ("zeta-plugins", "0.0.1", "tp_beta", False)


def test_load_order_follows_sorted_entry_points(site: Path) -> None:
    dist(site, "zeta-plugins", {"tp-zeta": "tp_beta"})
    dist(site, "aardvark", {"tp-alpha": "tp_alpha"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-zeta,tp-alpha,rpc.health"})
    loaded = [name for name, _ in manager.pm.list_name_plugin()]
    assert loaded == ["rpc.health", "tp-alpha", "tp-zeta"]
    assert manager.records["tp-alpha"].status == LOADED
    assert manager.records["tp-alpha"].hooks == ["thrum_register_rpc_methods"]
    assert manager.records["tp-zeta"].dist == "zeta-plugins"


def test_duplicate_entry_point_name_is_loaded_once(site: Path) -> None:
    dist(site, "first-dist", {"tp-same": "tp_alpha"})
    dist(site, "second-dist", {"tp-same": "tp_beta"})
    names = [s.name for s in discover()]
    assert names.count("tp-same") == 1
    spec = next(s for s in discover() if s.name == "tp-same")
    assert spec.dist == "first-dist"  # deterministic: sorted by distribution name


def test_skip_leaves_entry_points_out_unimported_and_unrecorded(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-broken": "tp_broken_import"})
    manager = make_plugin_manager(
        {"THRUM_LOAD_PLUGINS": "tp-alpha,tp-broken"}, skip=lambda spec: spec.name == "tp-broken"
    )
    assert "tp-broken" not in manager.records
    assert "tp_broken_import" not in sys.modules
    assert manager.records["tp-alpha"].status == LOADED


def test_the_daemon_skips_only_thrums_own_command_plugins(site: Path) -> None:
    dist(site, "tp-dist", {"cli.tp": "tp_alpha"})
    specs = {s.name: s for s in discover()}
    assert is_builtin_command_plugin(specs["cli.daemon"])
    assert not is_builtin_command_plugin(specs["rpc.health"])
    # A third party's plugin may implement daemon hooks whatever its name.
    assert not is_builtin_command_plugin(specs["cli.tp"])
    manager = make_plugin_manager(skip=is_builtin_command_plugin)
    assert "cli.tp" in manager.records and "rpc.health" in manager.records
    assert not [name for name in manager.records if specs[name].builtin and name.startswith("cli.")]


def test_discover_reads_name_and_version_of_each_distribution(site: Path) -> None:
    dist(site, "tp-many", {"tp-one": "tp_alpha", "tp-two": "tp_beta"})
    specs = {s.name: s for s in discover()}
    assert (specs["tp-one"].dist, specs["tp-one"].version) == ("tp-many", "0.0.1")
    assert (specs["tp-two"].dist, specs["tp-two"].version) == ("tp-many", "0.0.1")
    from importlib.metadata import version

    assert specs["rpc.health"].version == version(BUILTIN_DIST)


# -- escape hatches -------------------------------------------------------------------


def test_disable_plugins_filters_before_import(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-broken": "tp_broken_import"})
    manager = make_plugin_manager({"THRUM_DISABLE_PLUGINS": " tp-broken , rpc.health,transports.unix_socket"})
    assert manager.records["tp-broken"].status == DISABLED
    assert "tp_broken_import" not in sys.modules, "a disabled plugin must not even be imported"
    assert manager.records["tp-alpha"].status == LOADED
    assert manager.records["rpc.health"].status == DISABLED


def test_disable_plugins_by_distribution_name(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-beta": "tp_beta"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-dist", "THRUM_DISABLE_PLUGINS": "tp-dist"})
    assert manager.records["tp-alpha"].status == DISABLED
    assert manager.records["tp-beta"].status == DISABLED


def test_load_plugins_is_an_allow_list(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-broken": "tp_broken_import"})
    dist(site, "beta-dist", {"tp-beta": "tp_beta"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha,beta-dist"})
    assert manager.records["tp-alpha"].status == LOADED
    assert manager.records["tp-beta"].status == LOADED  # matched by distribution name
    assert manager.records["tp-broken"].status == DISABLED
    assert manager.records["rpc.health"].status == DISABLED
    assert "tp_broken_import" not in sys.modules


def test_load_plugins_set_but_empty_loads_nothing(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": ""})
    assert manager.pm.list_name_plugin() == []
    assert manager.records, "every skipped entry point is still reported"
    assert {r.status for r in manager.records.values()} == {DISABLED}
    assert "tp_alpha" not in sys.modules


def test_is_enabled_matches_name_or_distribution(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha"})
    spec = next(s for s in discover() if s.name == "tp-alpha")
    assert is_enabled(spec, {})
    assert is_enabled(spec, {"THRUM_LOAD_PLUGINS": "tp-dist"})
    assert not is_enabled(spec, {"THRUM_LOAD_PLUGINS": "other"})
    assert not is_enabled(spec, {"THRUM_DISABLE_PLUGINS": "tp-alpha"})
    assert is_enabled(spec, {"THRUM_DISABLE_PLUGINS": ""})


def test_strict_plugins_raises_on_import_failure(site: Path) -> None:
    dist(site, "tp-dist", {"tp-broken": "tp_broken_import"})
    with pytest.raises(PluginError, match=r"tp-broken.*ImportError"):
        make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-broken", "THRUM_STRICT_PLUGINS": "1"})


def test_strict_plugins_raises_on_registration_hook_failure(site: Path) -> None:
    dist(site, "tp-dist", {"tp-broken-hook": "tp_broken_hook"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-broken-hook", "THRUM_STRICT_PLUGINS": "yes"})
    with pytest.raises(PluginError, match="registration exploded"):
        manager.collect("thrum_register_rpc_methods", MethodRegistry())


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_strict_plugins_falsy_values_do_not_raise(site: Path, value: str) -> None:
    dist(site, "tp-dist", {"tp-broken": "tp_broken_import"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-broken", "THRUM_STRICT_PLUGINS": value})
    assert manager.records["tp-broken"].status == FAILED


def test_trace_plugins_writes_hook_calls_to_stderr(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha", "THRUM_TRACE_PLUGINS": "1"})
    manager.hook.thrum_detect_runtime(environ={}, cwd=Path("."))
    err = capsys.readouterr().err
    assert "thrum_detect_runtime [hook]" in err
    assert "finish thrum_detect_runtime" in err


def test_no_trace_without_the_variable(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": ""})
    manager.hook.thrum_detect_runtime(environ={}, cwd=Path("."))
    assert "thrum_detect_runtime" not in capsys.readouterr().err


def test_trace_plugins_covers_registration_hooks(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha", "THRUM_TRACE_PLUGINS": "1"})
    manager.collect("thrum_register_rpc_methods", MethodRegistry())
    assert "thrum_register_rpc_methods" in capsys.readouterr().err


# -- isolation ---------------------------------------------------------------------------


def test_import_failure_is_recorded_and_others_load(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-broken": "tp_broken_import"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha,tp-broken"})
    broken = manager.records["tp-broken"]
    assert broken.status == FAILED
    assert broken.error is not None
    assert broken.error.startswith("import: ImportError")
    assert "not installed" in broken.error
    assert broken.dist == "tp-dist"
    assert manager.pm.get_plugin("tp-broken") is None
    assert manager.records["tp-alpha"].status == LOADED
    methods = manager.collect("thrum_register_rpc_methods", MethodRegistry())
    assert "alpha.hello" in methods
    assert [r.name for r in manager.plugin_records()] == sorted(manager.records)
    assert manager.records["tp-broken"].to_json()["status"] == "failed"


def test_attribute_entry_point_that_does_not_exist_is_an_import_failure(site: Path) -> None:
    dist(site, "tp-dist", {"tp-attr": "tp_alpha:nope"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-attr"})
    record = manager.records["tp-attr"]
    assert record.status == FAILED
    assert record.error is not None and "AttributeError" in record.error


def test_registration_hook_failure_is_isolated(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-broken-hook": "tp_broken_hook"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha,tp-broken-hook"})
    assert manager.records["tp-broken-hook"].status == LOADED
    methods = manager.collect("thrum_register_rpc_methods", MethodRegistry())
    record = manager.records["tp-broken-hook"]
    assert record.status == FAILED
    assert record.error == "thrum_register_rpc_methods: RuntimeError: registration exploded half-way"
    assert "broken.one" not in methods, "a failing plugin's partial registrations are removed"
    assert "alpha.hello" in methods
    assert manager.pm.get_plugin("tp-broken-hook") is None


def test_hookimpl_with_arguments_not_in_the_spec_fails_registration(site: Path) -> None:
    dist(site, "tp-dist", {"tp-bad-args": "tp_bad_args", "tp-beta": "tp_beta"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-bad-args,tp-beta"})
    record = manager.records["tp-bad-args"]
    assert record.status == FAILED
    assert record.error is not None and record.error.startswith("register: PluginValidationError")
    assert manager.records["tp-beta"].status == LOADED


def test_check_pending_verdicts(site: Path) -> None:
    manager = PluginManager({})
    import tp_alpha
    import tp_optional_hook
    import tp_unknown_hook

    manager.register(tp_alpha, "alpha")
    manager.register(tp_optional_hook, "optional")
    manager.register(tp_unknown_hook, "unknown")
    verdicts = manager.check_pending()
    assert verdicts == {
        "alpha": "ok",
        "optional": "ok",
        "unknown": "unknown hook 'thrum_no_such_hook'",
    }
    assert manager.records["unknown"].status == FAILED
    assert manager.records["unknown"].error == "check_pending: PluginError: unknown hook 'thrum_no_such_hook'"
    assert manager.pm.get_plugin("unknown") is None
    assert manager.records["optional"].status == LOADED


def test_load_entry_points_runs_check_pending(site: Path) -> None:
    dist(site, "tp-dist", {"tp-unknown": "tp_unknown_hook", "tp-alpha": "tp_alpha"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-unknown,tp-alpha"})
    assert manager.records["tp-unknown"].status == FAILED
    assert manager.records["tp-alpha"].status == LOADED


def test_load_entry_points_skips_plugins_already_registered(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha"})
    manager = PluginManager({"THRUM_LOAD_PLUGINS": "tp-alpha"})
    sentinel = types.ModuleType("sentinel")
    manager.register(sentinel, "tp-alpha")
    load_entry_points(manager)
    assert manager.pm.get_plugin("tp-alpha") is sentinel


def test_duplicate_method_names_both_plugins(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-dup": "tp_dup"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha,tp-dup"})
    methods = manager.collect("thrum_register_rpc_methods", MethodRegistry())
    # Sorted load order: tp-alpha registers first, tp-dup's duplicate is refused.
    assert methods.entry("alpha.hello") is not None
    assert methods.entry("alpha.hello").plugin == "tp-alpha"  # type: ignore[union-attr]
    error = manager.records["tp-dup"].error
    assert error is not None
    assert "'tp-alpha'" in error and "'tp-dup'" in error and "alpha.hello" in error
    assert manager.records["tp-dup"].status == FAILED


def test_duplicate_method_is_refused_in_strict_mode(site: Path) -> None:
    dist(site, "tp-dist", {"tp-alpha": "tp_alpha", "tp-dup": "tp_dup"})
    manager = make_plugin_manager({"THRUM_LOAD_PLUGINS": "tp-alpha,tp-dup", "THRUM_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match=r"'tp-alpha'.*'tp-dup'"):
        manager.collect("thrum_register_rpc_methods", MethodRegistry())


def test_notify_isolates_a_raising_observer() -> None:
    manager = PluginManager({})
    calls: list[str] = []

    class Bad:
        @hookimpl
        def thrum_detect_runtime(self, environ: object, cwd: object) -> str:
            raise RuntimeError("observer broke")

    class Good:
        @hookimpl
        def thrum_detect_runtime(self, environ: object, cwd: object) -> str:
            calls.append("good")
            return "good-tool"

    manager.register(Bad(), "bad")
    manager.register(Good(), "good")
    assert manager.notify("thrum_detect_runtime", environ={}, cwd=Path(".")) == ["good-tool"]
    assert calls == ["good"]
    assert manager.records["bad"].status == LOADED, "an observer failure does not unregister the plugin"
    strict = PluginManager({"THRUM_STRICT_PLUGINS": "1"})
    strict.register(Bad(), "bad")
    with pytest.raises(RuntimeError, match="observer broke"):
        strict.notify("thrum_detect_runtime", environ={}, cwd=Path("."))


def test_unregister_forgets_plugin_and_record() -> None:
    manager = PluginManager({})
    plugin = types.SimpleNamespace()
    manager.register(plugin, "thing")
    assert manager.pm.get_plugin("thing") is plugin
    manager.unregister("thing")
    assert manager.pm.get_plugin("thing") is None
    assert "thing" not in manager.records
    manager.unregister("thing")  # idempotent


# -- registries --------------------------------------------------------------------------


def test_registry_refuses_duplicates_and_names_both_plugins() -> None:
    registry: Registry[int] = Registry("runtime")
    registry.bound("plugin-a")("claude", 1)
    with pytest.raises(PluginError) as info:
        registry.bound("plugin-b")("claude", 2)
    assert (
        str(info.value)
        == "runtime 'claude' is registered twice: by plugin 'plugin-a' and by plugin 'plugin-b'"
    )
    assert registry.get("claude") == 1


def test_registry_validation_and_bookkeeping() -> None:
    def validate(entry: object) -> None:
        if getattr(entry, "name", "").startswith("bad"):
            raise PluginError("bad name")

    registry: Registry[str] = Registry("notifier", validate)
    reg_a = registry.bound("a")
    reg_a("zulu", "z", level=1)
    reg_a("alpha", "a")
    registry.bound("b")("mike", "m")
    with pytest.raises(PluginError, match="bad name"):
        reg_a("bad-one", "x")
    with pytest.raises(PluginError, match="without a name"):
        reg_a("", "x")
    assert "bad-one" not in registry
    assert registry.names() == ["alpha", "mike", "zulu"]
    assert list(registry) == ["alpha", "mike", "zulu"]
    assert len(registry) == 3
    entry = registry.entry("zulu")
    assert entry is not None and entry.plugin == "a" and entry.meta == {"level": 1}
    registry.remove_plugin("a")
    assert registry.names() == ["mike"]
    assert registry.get("alpha") is None


def test_method_registrar_validates_at_once() -> None:
    methods = MethodRegistry()
    register = methods.bound("tp")

    async def handler(params: object, ctx: object) -> None:
        return None

    with pytest.raises(PluginError, match="unknown auth class 'root'"):
        register("tp.x", handler, auth="root")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="not callable"):
        register("tp.y", "nope")  # type: ignore[arg-type]
    entry = register("tp.z", handler, transports=["unix"], auth="admin", deadline_s=1.5)
    spec = entry.obj
    assert (spec.name, spec.plugin, spec.auth, spec.transports) == (
        "tp.z",
        "tp",
        "admin",
        frozenset({"unix"}),
    )
    assert spec.deadline_for(None, 10.0) == 1.5
    with pytest.raises(PluginError, match="by plugin 'tp' and by plugin 'other'"):
        methods.bound("other")("tp.z", handler)


# -- the stdlib marker ----------------------------------------------------------------------

MARKER_OPTIONS = [
    {},
    {"tryfirst": True},
    {"trylast": True},
    {"wrapper": True},
    {"hookwrapper": True},
    {"optionalhook": True},
    {"specname": "thrum_startup"},
    {"tryfirst": True, "optionalhook": True, "specname": "x"},
]


@pytest.mark.parametrize("options", MARKER_OPTIONS, ids=lambda o: ",".join(sorted(o)) or "bare-call")
def test_stdlib_marker_equals_pluggy_marker(options: dict[str, object]) -> None:
    pluggy_marker = pluggy.HookimplMarker("thrum")

    def ours_fn() -> None: ...

    def theirs_fn() -> None: ...

    hookimpl(**options)(ours_fn)  # type: ignore[call-overload]
    pluggy_marker(**options)(theirs_fn)  # type: ignore[call-overload]
    assert ours_fn.thrum_impl == theirs_fn.thrum_impl  # type: ignore[attr-defined]
    assert type(ours_fn.thrum_impl) is type(theirs_fn.thrum_impl)  # type: ignore[attr-defined]


def test_stdlib_marker_bare_form_equals_pluggy() -> None:
    pluggy_marker = pluggy.HookimplMarker("thrum")

    @hookimpl
    def a() -> None: ...

    @pluggy_marker
    def b() -> None: ...

    assert a.thrum_impl == b.thrum_impl  # type: ignore[attr-defined]
    assert set(a.thrum_impl) == set(b.thrum_impl)  # type: ignore[attr-defined]


def test_stdlib_marker_accepts_the_same_options_as_pluggy() -> None:
    import inspect

    ours_params = set(inspect.signature(hookimpl).parameters) - {"function"}
    theirs = set(inspect.signature(pluggy.HookimplMarker.__call__).parameters) - {"self", "function"}
    assert ours_params == theirs


def test_stdlib_marker_is_understood_by_pluggy() -> None:
    manager = PluginManager({})

    class First:
        @hookimpl(tryfirst=True)
        def thrum_detect_runtime(self, environ: object, cwd: object) -> str:
            return "first"

    class Second:
        @hookimpl
        def thrum_detect_runtime(self, environ: object, cwd: object) -> str:
            return "second"

    manager.register(First(), "first")
    manager.register(Second(), "second")
    # firstresult hook; tryfirst wins although it was registered first (pluggy calls LIFO).
    assert manager.hook.thrum_detect_runtime(environ={}, cwd=Path(".")) == "first"


def test_markers_module_does_not_import_pluggy() -> None:
    import subprocess

    code = "import sys, thrum_core.markers; print('pluggy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
