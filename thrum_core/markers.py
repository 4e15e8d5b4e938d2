"""The ``hookimpl`` marker, without importing pluggy.

Plugin modules are imported by the CLI on its hot path, so marking a hook
implementation must not pull in pluggy.  This marker stores exactly the options
dict that ``pluggy.HookimplMarker("thrum")`` would store (attribute
``thrum_impl``); pluggy reads that attribute when the plugin is registered.
A meta-test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

PROJECT_NAME = "thrum"

_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def hookimpl(function: _F) -> _F: ...


@overload
def hookimpl(
    function: None = None,
    *,
    tryfirst: bool = False,
    trylast: bool = False,
    wrapper: bool = False,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    specname: str | None = None,
) -> Callable[[_F], _F]: ...


def hookimpl(
    function: _F | None = None,
    *,
    tryfirst: bool = False,
    trylast: bool = False,
    wrapper: bool = False,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    specname: str | None = None,
) -> _F | Callable[[_F], _F]:
    """Mark a function as an implementation of a ``thrum_*`` hook.

    Usable bare (``@hookimpl``) or with pluggy's options
    (``@hookimpl(tryfirst=True)``).
    """

    def mark(func: _F) -> _F:
        setattr(
            func,
            PROJECT_NAME + "_impl",
            {
                "wrapper": wrapper,
                "hookwrapper": hookwrapper,
                "optionalhook": optionalhook,
                "tryfirst": tryfirst,
                "trylast": trylast,
                "specname": specname,
            },
        )
        return func

    if function is None:
        return mark
    return mark(function)
