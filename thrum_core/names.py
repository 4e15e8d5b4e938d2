"""Validation of names, ids and short texts, and safe path components (SPEC §4).

Each ``validate_*`` function returns the value unchanged when it is valid and
raises ``ValueError`` with a readable reason otherwise.  Nothing is silently
rewritten (no case folding, no trimming): matching is case-sensitive, and the
one normalisation the SPEC asks for — dropping a leading ``@`` from an address —
is :func:`strip_at`, which callers apply explicitly.

"chars" are Unicode code points (``len`` of the str).  "Control chars" are
C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F).

Standard library only: the CLI imports this module.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "MAX_REFS",
    "MAX_SCOPES",
    "RESERVED_NAMES",
    "is_safe_path_component",
    "parse_type_value",
    "safe_child",
    "strip_at",
    "validate_agent_id",
    "validate_agent_name",
    "validate_display_name",
    "validate_group_name",
    "validate_intent",
    "validate_module",
    "validate_ref_type",
    "validate_ref_value",
    "validate_role",
    "validate_scope_type",
    "validate_scope_value",
    "validate_task",
    "validate_username",
]

#: Names no agent, role or group may take (SPEC §4).
RESERVED_NAMES: frozenset[str] = frozenset({"daemon", "system", "thrum", "all", "broadcast", "everyone"})

#: At most this many scopes and refs per message (SPEC §4).
MAX_SCOPES = 32
MAX_REFS = 32

# Patterns go through re's own cache: compiled on first use, not at import.
_AGENT_NAME = r"[a-z0-9_]{1,64}"
_ROLE_LIKE = r"[a-z0-9][a-z0-9_-]{0,63}"
_USERNAME = r"[a-z0-9][a-z0-9_-]{0,31}"
_TYPE = r"[a-z][a-z0-9_-]{0,31}"
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"
_IMPORTED_ID_FORBIDDEN = r"[/\\\x00\n\r]"


def _require_str(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be a string, not {type(value).__name__}")
    return value


def _check_reserved(kind: str, value: str) -> None:
    if value in RESERVED_NAMES:
        raise ValueError(f"{kind} {value!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")


def validate_agent_name(value: str) -> str:
    """Validate a name for a new registration: ``^[a-z0-9_]+$``, 1-64 chars, not reserved."""
    value = _require_str("agent name", value)
    if not value:
        raise ValueError("agent name must not be empty")
    if len(value) > 64:
        raise ValueError(f"agent name is too long ({len(value)} chars, at most 64)")
    if not re.fullmatch(_AGENT_NAME, value):
        raise ValueError(
            f"agent name {value!r} may contain only lowercase letters a-z, digits 0-9 and underscores"
        )
    _check_reserved("agent name", value)
    return value


def validate_agent_id(value: str) -> str:
    """Validate an agent id as found in imported data (the lenient rule).

    1-256 chars without ``/``, ``\\``, NUL or a line break; ``-``, ``:`` and
    uppercase are allowed (``agent:implementer:1B9K33T6RK``, ``user:leon``).
    Such ids are usable but cannot be newly registered.
    """
    value = _require_str("agent id", value)
    if not value:
        raise ValueError("agent id must not be empty")
    if len(value) > 256:
        raise ValueError(f"agent id is too long ({len(value)} chars, at most 256)")
    bad = re.search(_IMPORTED_ID_FORBIDDEN, value)
    if bad:
        raise ValueError(f"agent id {value!r} must not contain {bad.group()!r}")
    return value


def _validate_role_like(kind: str, value: str, *, reserved: bool) -> str:
    value = _require_str(kind, value)
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if len(value) > 64:
        raise ValueError(f"{kind} is too long ({len(value)} chars, at most 64)")
    if not re.fullmatch(_ROLE_LIKE, value):
        raise ValueError(
            f"{kind} {value!r} must start with a lowercase letter or digit and contain only "
            "a-z, 0-9, '_' and '-'"
        )
    if reserved:
        _check_reserved(kind, value)
    return value


def validate_role(value: str, *, allow_wildcard: bool = False) -> str:
    """Validate a role: ``^[a-z0-9][a-z0-9_-]{0,63}$``, not reserved.

    ``allow_wildcard=True`` also accepts ``*`` ("every agent"), which is valid
    only as a group member.
    """
    if allow_wildcard and value == "*":
        return value
    return _validate_role_like("role", value, reserved=True)


def validate_module(value: str) -> str:
    """Validate a module: ``^[a-z0-9][a-z0-9_-]{0,63}$``."""
    return _validate_role_like("module", value, reserved=False)


def validate_group_name(value: str) -> str:
    """Validate a group name: ``^[a-z0-9][a-z0-9_-]{0,63}$``, not reserved (``everyone`` is built in)."""
    return _validate_role_like("group name", value, reserved=True)


def validate_username(value: str) -> str:
    """Validate a username (user id ``user:<username>``): ``^[a-z0-9][a-z0-9_-]{0,31}$``."""
    value = _require_str("username", value)
    if not value:
        raise ValueError("username must not be empty")
    if len(value) > 32:
        raise ValueError(f"username is too long ({len(value)} chars, at most 32)")
    if not re.fullmatch(_USERNAME, value):
        raise ValueError(
            f"username {value!r} must start with a lowercase letter or digit and contain only "
            "a-z, 0-9, '_' and '-'"
        )
    return value


def _validate_type(kind: str, value: str) -> str:
    value = _require_str(kind, value)
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if len(value) > 32:
        raise ValueError(f"{kind} is too long ({len(value)} chars, at most 32)")
    if not re.fullmatch(_TYPE, value):
        raise ValueError(
            f"{kind} {value!r} must start with a lowercase letter and contain only a-z, 0-9, '_' and '-'"
        )
    return value


def _validate_value(kind: str, value: str) -> str:
    value = _require_str(kind, value)
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if len(value) > 256:
        raise ValueError(f"{kind} is too long ({len(value)} chars, at most 256)")
    if re.search(_CONTROL, value):
        raise ValueError(f"{kind} {value!r} must not contain control characters")
    return value


def validate_scope_type(value: str) -> str:
    """Validate a scope type: ``^[a-z][a-z0-9_-]{0,31}$``."""
    return _validate_type("scope type", value)


def validate_ref_type(value: str) -> str:
    """Validate a ref type: ``^[a-z][a-z0-9_-]{0,31}$``."""
    return _validate_type("ref type", value)


def validate_scope_value(value: str) -> str:
    """Validate a scope value: 1-256 chars, no control chars."""
    return _validate_value("scope value", value)


def validate_ref_value(value: str) -> str:
    """Validate a ref value: 1-256 chars, no control chars."""
    return _validate_value("ref value", value)


def parse_type_value(text: str, *, kind: str = "scope") -> tuple[str, str]:
    """Split the CLI form ``type:value`` at the first ``:`` and validate both halves.

    ``kind`` (``"scope"`` or ``"ref"``) only changes the wording of errors.
    """
    text = _require_str(kind, text)
    typ, colon, value = text.partition(":")
    if not colon:
        raise ValueError(f"{kind} {text!r} must be written as type:value")
    return _validate_type(f"{kind} type", typ), _validate_value(f"{kind} value", value)


def validate_display_name(value: str) -> str:
    """Validate a display name: 0-128 chars, no control chars."""
    value = _require_str("display name", value)
    if len(value) > 128:
        raise ValueError(f"display name is too long ({len(value)} chars, at most 128)")
    if re.search(_CONTROL, value):
        raise ValueError("display name must not contain control characters")
    return value


def validate_intent(value: str) -> str:
    """Validate an intent: at most 1000 chars (line breaks allowed)."""
    value = _require_str("intent", value)
    if len(value) > 1000:
        raise ValueError(f"intent is too long ({len(value)} chars, at most 1000)")
    return value


def validate_task(value: str) -> str:
    """Validate a task: at most 200 chars, on one line (no ``\\n`` or ``\\r``)."""
    value = _require_str("task", value)
    if len(value) > 200:
        raise ValueError(f"task is too long ({len(value)} chars, at most 200)")
    if "\n" in value or "\r" in value:
        raise ValueError("task must be a single line")
    return value


def strip_at(address: str) -> str:
    """Drop one leading ``@`` from an address (``@furiosa`` → ``furiosa``)."""
    return address[1:] if address.startswith("@") else address


def is_safe_path_component(name: str) -> bool:
    """True when ``name`` can be used as one file or directory name (SPEC §4 "Paths").

    Refused: non-strings, the empty string, ``.``/``..`` and anything with a
    leading ``.``, and names containing ``/``, ``\\`` or NUL.
    """
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def safe_child(base: Path, name: str) -> Path:
    """Return ``base / name`` after checking it cannot escape ``base``.

    ``name`` must pass :func:`is_safe_path_component`, and the path with every
    symlink resolved must lie strictly inside ``base`` resolved (a symlink named
    ``name`` pointing elsewhere is refused).  Raises ``ValueError`` otherwise.
    """
    if not is_safe_path_component(name):
        raise ValueError(f"unsafe file name {name!r}")
    child = base / name
    root = base.resolve()
    target = child.resolve()
    if target == root or not target.is_relative_to(root):
        raise ValueError(f"{name!r} resolves to {str(target)!r}, outside {str(root)!r}")
    return child
