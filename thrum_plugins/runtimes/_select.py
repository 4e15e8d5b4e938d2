"""Which runtime preset applies, and the ``runtime.list`` / ``runtime.show`` results (SPEC §9.3, §15.5).

The choice, first match wins:

1. an explicit name (``--runtime``), which must be registered;
2. a plugin's ``thrum_detect_runtime`` hook (third-party override);
3. a variable an AI tool sets in the processes it runs (``CLAUDECODE``, ``CODEX_THREAD_ID``,
   ``GEMINI_CLI``, ``OPENCODE``, ``CURSOR_AGENT``, ...), presets in name order; a preset without these
   tiers (a third-party one) answers here through its ``detect``;
4. the configured default ``runtime.primary``;
5. an editor-terminal variable (``CURSOR_TRACE_ID``);
6. a repository marker (``.claude/``, ``.cursor/``, ``.gemini/``, ...).

Environment beats configuration because it says which tool runs *this* process (one repository may be
worked on from several tools); configuration beats the weak signals.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["describe_runtime", "list_runtimes", "select_runtime"]


def _call(fn: Any, *args: Any) -> bool:
    try:
        return bool(fn(*args))
    except Exception:  # a broken third-party detector never stops init
        return False


def select_runtime(
    registry: Any,
    *,
    environ: Mapping[str, str],
    root: Path,
    explicit: str | None = None,
    configured: str | None = None,
    hook: Any = None,
) -> tuple[str | None, str | None]:
    """``(name, source)`` of the runtime to use, or ``(None, None)``.

    ``source`` is ``flag``, ``plugin``, ``env``, ``config``, ``ide`` or ``repo``. ``registry`` is a
    :class:`~thrum_core.plugins.registry.Registry` of runtime presets; ``hook`` is the plugin manager's
    ``thrum_detect_runtime`` hook caller (``None`` to skip it). An explicit name is returned as given;
    the caller validates it.
    """
    if explicit:
        return explicit, "flag"
    if hook is not None:
        try:
            found = hook(environ=environ, cwd=root)
        except Exception:
            found = None
        if isinstance(found, str) and found in registry:
            return found, "plugin"
    entries = registry.entries()
    for entry in entries:
        preset = entry.obj
        if hasattr(preset, "detect_env"):
            if _call(preset.detect_env, environ):
                return entry.name, "env"
        elif hasattr(preset, "detect") and _call(preset.detect, environ, root):
            return entry.name, "plugin"
    if configured and configured in registry:
        return configured, "config"
    for tier, method in (("ide", "detect_ide"), ("repo", "detect_repo")):
        for entry in entries:
            fn = getattr(entry.obj, method, None)
            if fn is not None and _call(fn, *((environ,) if tier == "ide" else (root,))):
                return entry.name, tier
    return None, None


def _templates(preset: Any) -> list[dict[str, str]]:
    if hasattr(preset, "templates"):
        return [{"path": path, "policy": policy} for path, policy in preset.templates()]
    try:
        files = preset.files(
            {"agent_name": "default_agent", "agent_role": "implementer", "agent_module": "main"}
        )
    except Exception:
        return []
    return [{"path": path, "policy": policy} for path, _content, policy in files]


def describe_runtime(name: str, preset: Any, *, detected: bool) -> dict[str, Any]:
    """One ``runtime.show`` result: the ``runtime.list`` entry plus ``templates`` (and preset details)."""
    templates = _templates(preset)
    info: dict[str, Any] = {
        "name": name,
        "display": str(getattr(preset, "display", name)),
        "detected": detected,
        "files": [t["path"] for t in templates],
        "features": list(getattr(preset, "features", []) or []),
    }
    if hasattr(preset, "describe"):
        extra = preset.describe()
        info.update({k: v for k, v in extra.items() if k not in info})
    info["templates"] = templates
    return info


def list_runtimes(
    registry: Any, *, environ: Mapping[str, str], root: Path, configured: str | None, hook: Any = None
) -> dict[str, Any]:
    """``{default, runtimes: [{name, display, detected, files, features}]}`` (``runtime.list``).

    ``detected`` is true for the preset :func:`select_runtime` picks from the signals alone (no flag, no
    configured default); ``default`` is ``runtime.primary`` when it names a registered preset.
    """
    chosen, _source = select_runtime(registry, environ=environ, root=root, configured=None, hook=hook)
    runtimes = []
    for entry in registry.entries():
        info = describe_runtime(entry.name, entry.obj, detected=entry.name == chosen)
        runtimes.append({k: info[k] for k in ("name", "display", "detected", "files", "features")})
    default = configured if configured and configured in registry else None
    return {"default": default, "runtimes": runtimes}
