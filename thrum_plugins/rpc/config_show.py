"""``config.show``: the effective configuration and where each value came from (SPEC §9.3).

``config`` has every section with defaults filled in (plus preserved unknown
blocks) and secrets — values under keys named like token, secret, password
or authkey — shown as ``"<redacted>"``; ``sources`` maps each dotted key to
``default`` | ``file`` | ``env`` | ``flag``.  ``thrum config show`` computes the
same result locally with :func:`config_show_result` when the daemon is down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.config import Config
    from thrum_core.rpc.spec import CallContext, MethodRegistrar

REDACTED = "<redacted>"
SECRET_WORDS = ("token", "secret", "password", "authkey")


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret: ``token``, ``bot_token``, ``apiToken``, ``ts_authkey``, ...

    True when one of the key's ``_``/``-``/``.`` separated words is a secret
    word, or the key ends with one (``tokenizer`` is not a secret).
    """
    low = key.lower()
    words = low.replace("-", "_").replace(".", "_").split("_")
    return any(word in words or low.endswith(word) for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every non-empty secret replaced by ``"<redacted>"``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and value[k] not in (None, "") else redact(value[k]))
            for k in value
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def config_show_result(config: Config) -> dict[str, Any]:
    """``{path, config, sources}`` for a loaded configuration."""
    return {
        "path": str(config.path),
        "config": redact(config.effective()),
        "sources": dict(sorted(config.sources.items())),
    }


async def config_show(params: None, ctx: CallContext) -> dict[str, Any]:
    """The daemon's effective configuration (secrets redacted) and value sources."""
    return config_show_result(ctx.kernel.config)


@hookimpl
def thrum_register_rpc_methods(register: MethodRegistrar) -> None:
    register("config.show", config_show, auth="open", transports={"unix", "ws"})
