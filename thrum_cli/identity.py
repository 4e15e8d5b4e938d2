"""Identity files (SPEC §5.5) and the CLI caller's identity (SPEC §15.2).

An identity file ``.thrum/identities/<agent_id>.json`` (local to each
worktree, mode 0600) records who the agents working in that worktree are.
thrum reads every version the Go tool wrote (capitalised ``agent`` keys,
``kind: "human"``, ``claude_pid``) and writes version 5 with lowercase keys,
atomically, keeping keys it does not know.

:func:`resolve_identity` picks the caller in the order of SPEC §15.2:
``THRUM_NAME`` > ``--name`` > the only identity file > the file whose
``agent_pid`` is an ancestor of this process > ``THRUM_AGENT_ID`` > an error
(-32002) listing the candidates.  ``--role``/``--module`` then override
``THRUM_ROLE``/``THRUM_MODULE``/``THRUM_DISPLAY``, which override the file.

Standard library and thrum's stdlib-only modules only: every CLI command that
needs an identity imports this module, and the daemon uses the file helpers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thrum_core.errors import INVALID_PARAMS, PERMISSION, ThrumError
from thrum_core.names import is_safe_path_component, safe_child, validate_agent_id
from thrum_core.records import Record

__all__ = [
    "IDENTITY_VERSION",
    "Identity",
    "IdentityFile",
    "caller_agent_id",
    "find_identity_file",
    "identity_file_path",
    "list_identity_files",
    "read_identity_file",
    "remove_identity_file",
    "resolve_caller",
    "resolve_identity",
    "runtime_ancestor_pid",
    "write_identity_file",
]

IDENTITY_VERSION = 5

#: Top-level keys in the order thrum writes them (SPEC §5.5); unknown keys follow.
_KEY_ORDER = (
    "version",
    "repo_id",
    "agent",
    "worktree",
    "branch",
    "session_id",
    "intent",
    "agent_pid",
    "preferred_runtime",
    "runtime",
    "agent_status",
    "agent_status_updated_at",
    "confirmed_by",
    "context_file",
    "updated_at",
)
_AGENT_KEYS = ("kind", "name", "role", "module", "display")
_ZERO_TIME = "0001-01-01T00:00:00Z"


class IdentityFile(Record):
    """One identity file as read, normalised (SPEC §5.5 reading rules).

    ``raw`` is the parsed JSON exactly as found (used to preserve unknown keys
    on rewrite).  ``name`` is ``None`` for an unnamed agent, whose
    ``agent_id`` is then derived from ``repo_id``, ``role`` and ``module``.
    """

    _FIELDS = (
        "path",
        "agent_id",
        "name",
        "kind",
        "role",
        "module",
        "display",
        "repo_id",
        "worktree",
        "version",
        "agent_pid",
        "session_id",
        "branch",
        "intent",
        "agent_status",
        "agent_status_updated_at",
        "updated_at",
        "raw",
    )
    _NO_REPR = ("raw",)
    __slots__ = _FIELDS

    path: Path
    agent_id: str
    name: str | None
    kind: str
    role: str
    module: str
    display: str
    repo_id: str
    worktree: str
    version: int
    agent_pid: int | None
    session_id: str | None
    branch: str | None
    intent: str | None
    agent_status: str | None
    agent_status_updated_at: str | None
    updated_at: str | None
    raw: Mapping[str, Any]

    def __init__(
        self,
        path: Path,
        agent_id: str,
        name: str | None,
        kind: str,
        role: str,
        module: str,
        display: str,
        repo_id: str,
        worktree: str,
        version: int,
        agent_pid: int | None = None,
        session_id: str | None = None,
        branch: str | None = None,
        intent: str | None = None,
        agent_status: str | None = None,
        agent_status_updated_at: str | None = None,
        updated_at: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self._set(
            path=path,
            agent_id=agent_id,
            name=name,
            kind=kind,
            role=role,
            module=module,
            display=display,
            repo_id=repo_id,
            worktree=worktree,
            version=version,
            agent_pid=agent_pid,
            session_id=session_id,
            branch=branch,
            intent=intent,
            agent_status=agent_status,
            agent_status_updated_at=agent_status_updated_at,
            updated_at=updated_at,
            raw={} if raw is None else raw,
        )


class Identity(Record):
    """The identity the CLI acts as.

    ``source`` says how it was chosen: ``env`` (``THRUM_NAME``), ``flag``
    (``--name``), ``identity_file`` (the only file, or the one of an ancestor
    process) or ``agent_id_env`` (``THRUM_AGENT_ID``).  ``file`` is the
    identity file the fields came from, when there is one.
    """

    _FIELDS = (
        "agent_id",
        "name",
        "kind",
        "role",
        "module",
        "display",
        "repo_id",
        "worktree",
        "source",
        "file",
    )
    __slots__ = _FIELDS

    agent_id: str
    name: str | None
    kind: str
    role: str | None
    module: str | None
    display: str | None
    repo_id: str | None
    worktree: str | None
    source: str
    file: IdentityFile | None

    def __init__(
        self,
        agent_id: str,
        name: str | None,
        kind: str,
        role: str | None,
        module: str | None,
        display: str | None,
        repo_id: str | None,
        worktree: str | None,
        source: str,
        file: IdentityFile | None = None,
    ) -> None:
        self._set(
            agent_id=agent_id,
            name=name,
            kind=kind,
            role=role,
            module=module,
            display=display,
            repo_id=repo_id,
            worktree=worktree,
            source=source,
            file=file,
        )

    @property
    def identity_file(self) -> Path | None:
        """Path of the identity file, when there is one."""
        return self.file.path if self.file is not None else None

    @property
    def session_id(self) -> str | None:
        """The session id last recorded in the identity file (informational)."""
        return self.file.session_id if self.file is not None else None


# ---------------------------------------------------------------------------------------- reading


def _decode(data: bytes) -> str:
    # UTF-8 with an optional byte-order mark, without the "utf-8-sig" codec
    # (a module of its own, imported on first use).
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _lower_keys(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(key, str):
            # The lowercase spelling wins over the Go tool's capitalised one.
            low = key.lower()
            if low not in out or key == low:
                out[low] = value
    return out


def _pid(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def read_identity_file(path: Path) -> IdentityFile | None:
    """Parse one identity file; ``None`` when it is missing, unreadable or not an identity.

    Accepts versions 1-5, capitalised ``agent`` keys, ``kind: "human"``
    (= ``user``), ``claude_pid`` (= ``agent_pid``) and the zero time as an
    unset ``agent_status_updated_at``.
    """
    try:
        raw = json.loads(_decode(Path(path).read_bytes()))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    agent = _lower_keys(raw.get("agent"))
    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= IDENTITY_VERSION:
        return None
    kind = _str(agent.get("kind")) or "agent"
    if kind == "human":
        kind = "user"
    role = _str(agent.get("role"))
    module = _str(agent.get("module"))
    repo_id = _str(raw.get("repo_id"))
    name = _str(agent.get("name")) or None
    if name is not None:
        agent_id = name
    elif role and module:
        from thrum_core.ids import unnamed_agent_id

        agent_id = unnamed_agent_id(repo_id, role, module)
    else:
        return None
    pid = _pid(raw.get("agent_pid")) or _pid(raw.get("claude_pid"))
    status_at = _str(raw.get("agent_status_updated_at")) or None
    if status_at is not None and status_at.startswith("0001-01-01"):
        status_at = None
    return IdentityFile(
        path=Path(path),
        agent_id=agent_id,
        name=name,
        kind=kind,
        role=role,
        module=module,
        display=_str(agent.get("display")),
        repo_id=repo_id,
        worktree=_str(raw.get("worktree")),
        version=version,
        agent_pid=pid,
        session_id=_str(raw.get("session_id")) or None,
        branch=_str(raw.get("branch")) or None,
        intent=_str(raw.get("intent")) or None,
        agent_status=_str(raw.get("agent_status")) or None,
        agent_status_updated_at=status_at,
        updated_at=_str(raw.get("updated_at")) or None,
        raw=raw,
    )


def list_identity_files(identities_dir: Path) -> list[IdentityFile]:
    """Every readable identity file in ``identities_dir``, sorted by agent id.

    ``*.deleted.json`` files, hidden files and unparsable files are skipped.
    """
    try:
        names = sorted(os.listdir(identities_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[IdentityFile] = []
    for entry in names:
        if not entry.endswith(".json") or entry.endswith(".deleted.json") or entry.startswith("."):
            continue
        ident = read_identity_file(Path(identities_dir) / entry)
        if ident is not None:
            found.append(ident)
    found.sort(key=lambda f: f.agent_id)
    return found


def identity_file_path(identities_dir: Path, agent_id: str) -> Path:
    """``identities_dir/<agent_id>.json``, refusing ids that could escape the directory.

    Raises ``ValueError`` for an id that is not a valid agent id (SPEC §4) or
    not a safe path component.
    """
    validate_agent_id(agent_id)
    if not is_safe_path_component(agent_id):
        raise ValueError(f"agent id {agent_id!r} cannot be used as a file name")
    directory = Path(identities_dir)
    if directory.is_dir():
        return safe_child(directory, agent_id + ".json")
    return directory / (agent_id + ".json")


def find_identity_file(identities_dir: Path, agent_id: str) -> IdentityFile | None:
    """The identity file of ``agent_id``: ``<agent_id>.json``, else any file naming that agent."""
    try:
        direct = identity_file_path(identities_dir, agent_id)
    except ValueError:
        return None
    ident = read_identity_file(direct)
    if ident is not None and ident.agent_id == agent_id:
        return ident
    for candidate in list_identity_files(identities_dir):
        if candidate.agent_id == agent_id:
            return candidate
    return None


# ---------------------------------------------------------------------------------------- writing


def _now_ts() -> str:
    from thrum_core.timefmt import format_ts

    return format_ts(time.time_ns())


def write_identity_file(
    identities_dir: Path,
    agent_id: str,
    *,
    agent: Mapping[str, Any] | None = None,
    updates: Mapping[str, Any] | None = None,
    remove: Iterable[str] = (),
) -> Path:
    """Create or update ``identities_dir/<agent_id>.json`` (version 5, 0600, atomic).

    ``agent`` sets fields of the ``agent`` object (written with lowercase
    keys; capitalised duplicates are dropped); ``updates`` sets top-level
    keys (a ``None`` value removes the key); ``remove`` drops keys.  Every
    other key of an existing file is preserved.  ``updated_at`` is set to
    now.  The id is validated before anything is written.
    """
    identity_file_path(identities_dir, agent_id)  # validates the id before anything is created
    from thrum_core.fsutil import atomic_write_json, ensure_dir

    ensure_dir(identities_dir, 0o700)
    path = identity_file_path(identities_dir, agent_id)
    existing: dict[str, Any] = {}
    try:
        loaded = json.loads(_decode(path.read_bytes()))
        if isinstance(loaded, dict):
            existing = loaded
    except (OSError, ValueError):
        existing = {}

    merged_agent = {k: v for k, v in _lower_keys(existing.get("agent")).items()}
    if merged_agent.get("kind") == "human":
        merged_agent["kind"] = "user"
    for key, value in (agent or {}).items():
        merged_agent[key.lower()] = value
    ordered_agent = {k: merged_agent[k] for k in _AGENT_KEYS if k in merged_agent}
    ordered_agent.update({k: v for k, v in merged_agent.items() if k not in ordered_agent})

    top = dict(existing)
    if "claude_pid" in top and "agent_pid" not in top:
        top["agent_pid"] = top.pop("claude_pid")
    for key, value in (updates or {}).items():
        if value is None:
            top.pop(key, None)
        else:
            top[key] = value
    for key in remove:
        top.pop(key, None)
    top["version"] = IDENTITY_VERSION
    top["agent"] = ordered_agent
    top["updated_at"] = _now_ts()
    out = {k: top[k] for k in _KEY_ORDER if k in top}
    out.update({k: v for k, v in top.items() if k not in out})
    atomic_write_json(path, out, mode=0o600)
    return path


def remove_identity_file(identities_dir: Path, agent_id: str) -> bool:
    """Delete the identity file of ``agent_id``; ``True`` when one was removed."""
    ident = find_identity_file(identities_dir, agent_id)
    if ident is None:
        return False
    try:
        ident.path.unlink()
    except FileNotFoundError:
        return False
    return True


# ------------------------------------------------------------------------------------- resolution


def _parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (Linux ``/proc``, else ``ps``); ``None`` when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        # The command name may contain spaces and parentheses: split after the last ')'.
        return int(data[data.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import subprocess

        done = subprocess.run(
            ["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, timeout=2, check=False
        )
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _ancestors(limit: int = 64) -> list[int]:
    pids: list[int] = []
    pid: int | None = os.getpid()
    while pid and pid > 1 and len(pids) < limit:
        pid = _parent_pid(pid)
        if pid:
            pids.append(pid)
    return pids


#: Process names of AI coding tools whose pid an identity file records as ``agent_pid``.
RUNTIME_PROCESS_NAMES = frozenset(
    {"claude", "codex", "cursor", "cursor-agent", "gemini", "opencode", "auggie", "amp", "aider", "goose"}
)


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def runtime_ancestor_pid() -> int | None:
    """The pid of the nearest ancestor that looks like an AI coding tool (best effort, Linux)."""
    for pid in _ancestors():
        if _process_name(pid).lower() in RUNTIME_PROCESS_NAMES:
            return pid
    return None


def _invalid_name(source: str, value: str, reason: str) -> ThrumError:
    return ThrumError(
        f"invalid agent name {value!r} from {source}: {reason}",
        {"field": source, "reason": reason},
        code=INVALID_PARAMS,
    )


def _overrides(
    environ: Mapping[str, str], role_flag: str | None, module_flag: str | None
) -> tuple[str | None, str | None, str | None]:
    role = role_flag or environ.get("THRUM_ROLE") or None
    module = module_flag or environ.get("THRUM_MODULE") or None
    display = environ.get("THRUM_DISPLAY") or None
    return role, module, display


def _from_file(ident: IdentityFile, source: str) -> Identity:
    return Identity(
        agent_id=ident.agent_id,
        name=ident.name,
        kind=ident.kind,
        role=ident.role or None,
        module=ident.module or None,
        display=ident.display or None,
        repo_id=ident.repo_id or None,
        worktree=ident.worktree or None,
        source=source,
        file=ident,
    )


def _by_id(identities_dir: Path, agent_id: str, source: str) -> Identity:
    ident = find_identity_file(identities_dir, agent_id)
    if ident is not None:
        return _from_file(ident, source)
    return Identity(
        agent_id=agent_id,
        name=agent_id,
        kind="user" if agent_id.startswith("user:") else "agent",
        role=None,
        module=None,
        display=None,
        repo_id=None,
        worktree=None,
        source=source,
    )


def _pick(identities_dir: Path, name_flag: str | None, environ: Mapping[str, str]) -> Identity:
    for source, value in (("THRUM_NAME", environ.get("THRUM_NAME", "")), ("--name", name_flag or "")):
        value = value.strip()
        if not value:
            continue
        value = value.removeprefix("@")
        try:
            validate_agent_id(value)
        except ValueError as exc:
            raise _invalid_name(source, value, str(exc)) from None
        return _by_id(identities_dir, value, "env" if source == "THRUM_NAME" else "flag")

    files = list_identity_files(identities_dir)
    if len(files) == 1:
        return _from_file(files[0], "identity_file")
    if len(files) > 1:
        by_pid = {f.agent_pid: f for f in files if f.agent_pid}
        if by_pid:
            for pid in _ancestors():
                if pid in by_pid:
                    return _from_file(by_pid[pid], "identity_file")

    fallback = environ.get("THRUM_AGENT_ID", "").strip()
    if fallback:
        try:
            validate_agent_id(fallback)
        except ValueError as exc:
            raise _invalid_name("THRUM_AGENT_ID", fallback, str(exc)) from None
        return _by_id(identities_dir, fallback, "agent_id_env")

    candidates = [f.agent_id for f in files]
    if candidates:
        message = (
            f"cannot tell which agent you are: {len(candidates)} identities in {identities_dir} "
            f"({', '.join(candidates)}); set THRUM_NAME or pass --name"
        )
    else:
        message = (
            "no agent identity in this worktree; register one with "
            "thrum quickstart --name NAME --role ROLE --module MODULE (or set THRUM_NAME or pass --name)"
        )
    raise ThrumError(message, {"reason": "no_caller", "candidates": candidates}, code=PERMISSION)


def resolve_identity(
    identities_dir: Path | Any,
    *,
    name_flag: str | None = None,
    environ: Mapping[str, str] | None = None,
    role_flag: str | None = None,
    module_flag: str | None = None,
) -> Identity:
    """Choose the identity the CLI acts as (SPEC §15.2).

    ``identities_dir`` is the local ``.thrum/identities`` directory, or a
    :class:`~thrum_core.paths.ThrumPaths` (its ``identities_dir`` is used).
    Raises :class:`ThrumError` -32002 (``data.reason: "no_caller"``,
    ``data.candidates``) when no identity can be chosen, and -32602 for a
    malformed name.
    """
    directory = Path(getattr(identities_dir, "identities_dir", identities_dir))
    env = os.environ if environ is None else environ
    chosen = _pick(directory, name_flag, env)
    role, module, display = _overrides(env, role_flag, module_flag)
    if role is None and module is None and display is None:
        return chosen
    return Identity(
        agent_id=chosen.agent_id,
        name=chosen.name,
        kind=chosen.kind,
        role=role or chosen.role,
        module=module or chosen.module,
        display=display if display is not None else chosen.display,
        repo_id=chosen.repo_id,
        worktree=chosen.worktree,
        source=chosen.source,
        file=chosen.file,
    )


def resolve_caller(paths: Any = None) -> Identity:
    """The identity of this CLI invocation, from its global flags and environment.

    ``paths`` defaults to the invocation's repository (``--repo``, the cwd,
    ``$THRUM_HOME``).  Commands send ``.agent_id`` as ``caller_agent_id``.
    """
    from thrum_cli.state import get_state

    state = get_state()
    if paths is None:
        from thrum_cli.rpc import resolve_paths

        paths = resolve_paths()
    return resolve_identity(
        paths.identities_dir,
        name_flag=state.name,
        environ=state.environ,
        role_flag=state.role,
        module_flag=state.module,
    )


def caller_agent_id(paths: Any = None) -> str:
    """Shortcut: the ``agent_id`` of :func:`resolve_caller`."""
    return resolve_caller(paths).agent_id
