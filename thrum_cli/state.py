"""Global CLI flags (SPEC §15.1) and the pre-scan that lets them follow the command.

``--repo PATH``, ``--json``, ``-q/--quiet`` and ``-v/--verbose`` are accepted
anywhere on the command line (up to ``--``): :func:`prescan` takes them out of
argv before click parses it.  ``--role``, ``--module`` and ``--name`` are root
options that the root group also adds to the command being run
(:func:`thrum_cli.main.accept_identity_flags`), so they may follow it too,
while a command may still define its own options with the same names.
Commands read everything through :func:`get_state`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = ["CliState", "get_state", "hints_enabled", "prescan", "set_state"]


class CliState:
    """The global flags of one CLI invocation.

    ``error_exit_code`` is the status used when the command fails with an
    error; a command whose contract differs (``wait`` exits 2) sets it.
    ``environ`` is the environment commands read (``os.environ``).
    """

    # A plain class, not a dataclass: building a dataclass costs about a
    # millisecond at import, and every CLI command imports this module.
    __slots__ = ("environ", "error_exit_code", "json", "module", "name", "quiet", "repo", "role", "verbose")

    def __init__(
        self,
        repo: str | None = None,
        json: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        role: str | None = None,
        module: str | None = None,
        name: str | None = None,
        error_exit_code: int = 1,
        environ: Mapping[str, str] | None = None,
    ):
        self.repo = repo
        self.json = json
        self.quiet = quiet
        self.verbose = verbose
        self.role = role
        self.module = module
        self.name = name
        self.error_exit_code = error_exit_code
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k != "environ")
        return f"CliState({fields})"


_state = CliState()


def get_state() -> CliState:
    """The flags of the invocation being run (defaults outside one)."""
    return _state


def set_state(state: CliState) -> CliState:
    """Make ``state`` current (done by the root group for each invocation)."""
    global _state
    _state = state
    return state


class PrescanError(Exception):
    """A global flag was given without its value (``--repo`` at the end)."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def prescan(argv: Sequence[str]) -> tuple[CliState, list[str]]:
    """Take the four position-independent global flags out of ``argv``.

    Scanning stops at ``--`` (kept, with everything after it, for click).
    ``--repo`` accepts ``--repo PATH`` and ``--repo=PATH``; the short flags may
    be combined only with each other (``-qv``).  Returns the state and the
    remaining arguments.
    """
    state = CliState()
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--json":
            state.json = True
        elif arg in ("-q", "--quiet"):
            state.quiet = True
        elif arg in ("-v", "--verbose"):
            state.verbose = True
        elif arg in ("-qv", "-vq"):
            state.quiet = state.verbose = True
        elif arg == "--repo":
            if i + 1 >= len(args):
                raise PrescanError("--repo", "option --repo requires a value (a path)")
            state.repo = args[i + 1]
            i += 1
        elif arg.startswith("--repo="):
            state.repo = arg[len("--repo=") :]
        else:
            rest.append(arg)
        i += 1
    return state, rest


def hints_enabled(state: CliState | None = None) -> bool:
    """Whether hints go to stderr: not with ``--quiet`` nor ``THRUM_NO_HINTS`` (SPEC §5.7)."""
    st = state or _state
    if st.quiet:
        return False
    value = st.environ.get("THRUM_NO_HINTS", "")
    return value.strip().lower() in ("", "0", "false")
