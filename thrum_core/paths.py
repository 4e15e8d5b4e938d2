"""Where things live: repository discovery and the on-disk layout (SPEC §5, §8.1).

Standard library only and no ``git`` subprocess: the CLI resolves paths on
every command, so ``.git`` files, ``commondir`` and the git config are read
directly.

Terms (SPEC §5.1):

* **root** — the worktree thrum acts for (``--repo``, the nearest ancestor
  holding ``.thrum/``, or ``$THRUM_HOME``);
* **local thrum dir** — ``<root>/.thrum`` (identities; never redirected);
* **effective thrum dir** — the target of ``<root>/.thrum/redirect`` in a
  feature worktree, else the local one (config, context, ``var/``);
* **main root** — the parent of the effective thrum dir;
* **git common dir** — what ``git rev-parse --git-common-dir`` prints;
* **sync dir** — ``<git common dir>/thrum-sync/a-sync``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from thrum_core.errors import NotInitialized, ThrumError
from thrum_core.records import Record

__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "ThrumPaths",
    "client_socket_path",
    "daemon_socket_path",
    "find_git_worktree_root",
    "find_repo_root",
    "git_common_dir",
    "iter_git_config",
    "main_worktree_root",
    "read_origin_url",
]

THRUM_DIR_NAME = ".thrum"
MAX_SOCKET_PATH_BYTES = 100
"""Longest default socket path used as is (``sun_path`` is 104-108 bytes)."""


# --------------------------------------------------------------------------- git


def _is_git_marker(candidate: Path) -> bool:
    """Whether ``candidate`` (a ``.git`` entry) looks like what git accepts."""
    if candidate.is_dir():
        return (candidate / "HEAD").exists()
    if candidate.is_file():
        try:
            with candidate.open("rb") as fh:
                return fh.read(8) == b"gitdir: "
        except OSError:
            return False
    return False


def find_git_worktree_root(start: Path) -> Path | None:
    """Return the nearest ancestor of ``start`` (itself included) holding a ``.git`` dir or file.

    The path is resolved first (git works with the physical cwd).  A ``.git``
    directory must contain ``HEAD`` and a ``.git`` file must start with
    ``gitdir: ``; anything else is skipped, as git does.  ``None`` when no
    ancestor qualifies.
    """
    return _worktree_of_resolved(Path(start).expanduser().resolve())


def _worktree_of_resolved(here: Path) -> Path | None:
    """:func:`find_git_worktree_root` for an already resolved path."""
    for candidate in (here, *here.parents):
        if _is_git_marker(candidate / ".git"):
            return candidate
    return None


def _read_one_line(path: Path) -> str:
    return path.read_text("utf-8").strip()


def git_common_dir(worktree_root: Path) -> Path:
    """Return the git common dir of the worktree at ``worktree_root`` (absolute, resolved).

    A ``.git`` directory is the common dir itself.  A ``.git`` file
    ``gitdir: X`` (linked worktree, submodule) points at X, relative to the
    worktree; if X holds a ``commondir`` file, its content (relative to X)
    names the common dir, else X is it.  Raises :class:`ThrumError` when the
    ``.git`` entry is missing or malformed.
    """
    return _common_dir_of_resolved(Path(worktree_root).expanduser().resolve())


def _common_dir_of_resolved(root: Path) -> Path:
    """:func:`git_common_dir` for an already resolved worktree root."""
    dot_git = root / ".git"
    try:
        st = os.lstat(dot_git)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return dot_git  # a real directory under a resolved root: resolved already
    if st is not None and stat.S_ISLNK(st.st_mode) and dot_git.is_dir():
        return dot_git.resolve()  # a symlink to a directory
    try:
        content = _read_one_line(dot_git)
    except FileNotFoundError:
        raise ThrumError(f"{root} is not a git worktree (no .git)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThrumError(f"cannot read {dot_git}: {exc}") from None
    if not content.startswith("gitdir:"):
        raise ThrumError(f"{dot_git} is not a valid gitdir file")
    gitdir = (root / content[len("gitdir:") :].strip()).resolve()
    if not gitdir.is_dir():
        raise ThrumError(f"{dot_git} points at {gitdir}, which does not exist")
    commondir_file = gitdir / "commondir"
    if commondir_file.is_file():
        try:
            common = _read_one_line(commondir_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ThrumError(f"cannot read {commondir_file}: {exc}") from None
        if common:
            return (gitdir / common).resolve()
    return gitdir


def main_worktree_root(common_dir: Path) -> Path:
    """Return the main worktree root for a git common dir (SPEC §3.1 step 2).

    The parent when the common dir is named ``.git``, else the common dir
    itself (bare repositories, submodules' module dirs).
    """
    common = Path(common_dir).resolve()
    return common.parent if common.name == ".git" else common


_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", "\\": "\\", '"': '"'}


def _parse_value(text: str, i: int) -> tuple[str, int, bool]:
    """Parse a config value starting at ``text[i]``; return (value, index after line, ok).

    Follows git's ``parse_value``: each whitespace character outside quotes
    becomes a space, except leading and trailing ones; ``"`` toggles quoting;
    ``#``/``;`` outside quotes start a comment; backslash escapes ``\\n \\t
    \\b \\\\ \\"`` and backslash-newline continues the line.
    """
    out: list[str] = []
    spaces = 0
    quoted = False
    comment = False
    n = len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "\n":
            return "".join(out), i, not quoted
        if comment:
            continue
        if c in " \t\r\f\v" and not quoted:
            if out:
                spaces += 1
            continue
        if not quoted and c in "#;":
            comment = True
            continue
        if spaces:
            out.append(" " * spaces)
            spaces = 0
        if c == "\\":
            nxt = text[i] if i < n else ""
            i += 1
            if nxt == "\r" and i < n and text[i] == "\n":
                nxt = "\n"
                i += 1
            if nxt == "\n":
                continue
            mapped = _ESCAPES.get(nxt)
            if mapped is None:
                return "".join(out), _skip_line(text, i), False
            out.append(mapped)
            continue
        if c == '"':
            quoted = not quoted
            continue
        out.append(c)
    return "".join(out), i, not quoted


def _skip_line(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end + 1


def iter_git_config(text: str) -> Iterator[tuple[str, str | None, str, str | None]]:
    """Yield ``(section, subsection, key, value)`` for each variable of a git config text.

    Section and key are lower-cased; a quoted subsection keeps its case, the
    deprecated ``[section.sub]`` form is lower-cased; a key without ``=`` has
    value ``None`` (boolean true).  Malformed lines are skipped rather than
    raising: this reader only needs to be good enough for normal configs.
    ``include`` directives are not followed.
    """
    section: str | None = None
    subsection: str | None = None
    i = 1 if text.startswith("\ufeff") else 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n\f\v":
            i += 1
            continue
        if c in "#;":
            i = _skip_line(text, i)
            continue
        if c == "[":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "-."):
                j += 1
            name = text[i + 1 : j].lower()
            sub: str | None = None
            k = j
            while k < n and text[k] in " \t":
                k += 1
            if k < n and text[k] == '"' and k > j:
                k += 1
                chars: list[str] = []
                while k < n and text[k] not in '"\n':
                    if text[k] == "\\" and k + 1 < n and text[k + 1] != "\n":
                        k += 1
                    chars.append(text[k])
                    k += 1
                if k >= n or text[k] != '"':
                    i = _skip_line(text, i)
                    section = None
                    continue
                sub = "".join(chars)
                k += 1
            elif "." in name and k == j:
                name, sub = name.split(".", 1)
            if not name or k >= n or text[k] != "]":
                i = _skip_line(text, i)
                section = None
                continue
            section, subsection = name, sub
            i = k + 1  # a variable may follow on the same line
            continue
        if not c.isalpha():
            i = _skip_line(text, i)
            continue
        j = i
        while j < n and (text[j].isalnum() or text[j] == "-"):
            j += 1
        key = text[i:j].lower()
        while j < n and text[j] in " \t\r":
            j += 1
        value: str | None
        if j >= n or text[j] == "\n" or text[j] in "#;":
            value, i = None, _skip_line(text, j)
            ok = True
        elif text[j] == "=":
            value, i, ok = _parse_value(text, j + 1)
        else:
            i, ok = _skip_line(text, j), False
        if ok and section is not None:
            yield section, subsection, key, value


def _global_config_files(environ: Mapping[str, str]) -> list[Path]:
    files: list[Path] = []
    if environ.get("GIT_CONFIG_NOSYSTEM", "").lower() not in ("1", "true", "yes", "on"):
        files.append(Path(environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"))
    if "GIT_CONFIG_GLOBAL" in environ:
        if environ["GIT_CONFIG_GLOBAL"]:
            files.append(Path(environ["GIT_CONFIG_GLOBAL"]).expanduser())
    else:
        home = environ.get("HOME")
        xdg = environ.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else None)
        if xdg:
            files.append(Path(xdg) / "git" / "config")
        if home:
            files.append(Path(home) / ".gitconfig")
    return files


def _config_entries(files: Iterable[Path]) -> list[tuple[str, str | None, str, str | None]]:
    entries: list[tuple[str, str | None, str, str | None]] = []
    for f in files:
        try:
            text = f.read_text("utf-8", errors="surrogateescape")
        except OSError:
            continue
        entries.extend(iter_git_config(text))
    return entries


def read_origin_url(
    common_dir: Path, remote: str = "origin", *, environ: Mapping[str, str] | None = None
) -> str | None:
    """Return what ``git remote get-url <remote>`` would print, read from the config files.

    Reads the system, global and repository config (``<common_dir>/config``)
    in git's order, takes the first ``remote.<remote>.url`` and applies the
    longest matching ``url.<base>.insteadOf`` rewrite.  ``environ`` (default
    ``os.environ``) locates the global files (``HOME``, ``XDG_CONFIG_HOME``,
    ``GIT_CONFIG_GLOBAL``, ``GIT_CONFIG_NOSYSTEM``).  ``None`` when the remote
    has no URL or the URL is empty.  Not handled: ``include``/``includeIf``,
    per-worktree config, the legacy ``.git/remotes`` files.
    """
    env = os.environ if environ is None else environ
    files = [*_global_config_files(env), Path(common_dir) / "config"]
    entries = _config_entries(files)
    url: str | None = None
    for section, sub, key, value in entries:
        if section == "remote" and sub == remote and key == "url" and value is not None:
            url = value
            break
    if url is None:
        return None
    url = url.strip()
    if not url:
        return None
    best_prefix = ""
    best_base: str | None = None
    for section, sub, key, value in entries:
        if (
            section == "url"
            and sub is not None
            and key == "insteadof"
            and value
            and url.startswith(value)
            and len(value) > len(best_prefix)
        ):
            best_prefix, best_base = value, sub
    if best_base is not None:
        url = best_base + url[len(best_prefix) :]
    return url


# ------------------------------------------------------------------ discovery


def _require_git_worktree(root: Path, how: str) -> Path:
    """The git worktree holding the resolved ``root``, or :class:`NotInitialized` naming ``how``."""
    worktree = _worktree_of_resolved(root)
    if worktree is None:
        raise NotInitialized(f"{root} ({how}) is not inside a git repository; thrum needs one (run git init)")
    return worktree


def _locate(
    cwd: Path, repo_flag: str | os.PathLike[str] | None, environ: Mapping[str, str] | None
) -> tuple[Path, Path]:
    """:func:`find_repo_root` plus the git worktree holding the root (both resolved)."""
    env = os.environ if environ is None else environ
    base = Path(cwd).expanduser()
    if repo_flag is not None and os.fspath(repo_flag) != "":
        root = (base / Path(repo_flag).expanduser()).resolve()
        if not root.is_dir():
            raise NotInitialized(f"--repo {os.fspath(repo_flag)}: no such directory")
        return root, _require_git_worktree(root, "--repo")
    here = base.resolve()
    for candidate in (here, *here.parents):
        if (candidate / THRUM_DIR_NAME).is_dir():
            return candidate, _require_git_worktree(candidate, "found from the current directory")
    home = env.get("THRUM_HOME", "")
    if home:
        root = Path(home).expanduser().resolve()
        if not root.is_dir():
            raise NotInitialized(f"THRUM_HOME={home}: no such directory")
        return root, _require_git_worktree(root, "THRUM_HOME")
    raise NotInitialized()


def find_repo_root(
    cwd: Path,
    repo_flag: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Return the repository root thrum acts for (SPEC §5.1), resolved.

    ``--repo`` (relative to ``cwd``) wins; else the nearest ancestor of ``cwd``
    holding a ``.thrum/`` directory; else ``$THRUM_HOME``.  The root must exist
    and be inside a git worktree; every failure raises :class:`NotInitialized`
    with a message saying which source was used.
    """
    return _locate(cwd, repo_flag, environ)[0]


def _resolve_redirect(local_thrum_dir: Path) -> Path | None:
    """Return the redirect target of ``local_thrum_dir``, or ``None`` without a redirect."""
    redirect = local_thrum_dir / "redirect"
    try:
        os.lstat(redirect)  # a dangling symlink counts: reading it reports the problem
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        content = redirect.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ThrumError(f"cannot read {redirect}: {exc}") from None
    if not content:
        raise ThrumError(f"{redirect} is empty; it must name the main worktree's .thrum directory")
    if "\n" in content:
        raise ThrumError(f"{redirect} must contain one line (the main worktree's .thrum directory)")
    # The SPEC writes an absolute path; a relative one is read relative to the worktree root.
    target = (local_thrum_dir.parent / Path(content).expanduser()).resolve()
    if not target.exists():
        raise ThrumError(f"{redirect} points at {target}, which does not exist (run thrum setup again)")
    if not target.is_dir():
        raise ThrumError(f"{redirect} points at {target}, which is not a directory")
    if (target / "redirect").exists() or (target / "redirect").is_symlink():
        raise ThrumError(
            f"{redirect} points at {target}, which has its own redirect; "
            "redirects are single hop — point it at the main worktree's .thrum"
        )
    return target


class ThrumPaths(Record):
    """Every path thrum uses for one repository root (SPEC §5.1-5.3, §5.8, §8.1).

    Four paths are found on disk (:attr:`root`, :attr:`local_thrum_dir`,
    :attr:`thrum_dir`, :attr:`git_common_dir`); the others are properties
    derived from them.  A :class:`~thrum_core.records.Record` rather than a
    ``NamedTuple`` or a dataclass: the CLI builds one for every command, and
    creating either kind of class (or all the derived paths up front) costs it
    start-up time.
    Instances compare equal, and hash, by those four paths.

    Build it with :meth:`for_root` or :meth:`discover`; nothing is created on
    disk.  Runtime files live in the *effective* thrum dir's ``var/`` (shared by
    all worktrees redirected to it); identities stay in the *local* one.
    """

    _FIELDS = ("root", "local_thrum_dir", "thrum_dir", "git_common_dir")
    __slots__ = _FIELDS

    #: The worktree thrum acts for.
    root: Path
    #: ``<root>/.thrum``: identities (never redirected).
    local_thrum_dir: Path
    #: The effective thrum dir: the redirect target in a feature worktree, else the local one.
    thrum_dir: Path
    #: What ``git rev-parse --git-common-dir`` prints, resolved.
    git_common_dir: Path

    def __init__(self, root: Path, local_thrum_dir: Path, thrum_dir: Path, git_common_dir: Path) -> None:
        self._set(
            root=root, local_thrum_dir=local_thrum_dir, thrum_dir=thrum_dir, git_common_dir=git_common_dir
        )

    @property
    def redirected(self) -> bool:
        """Whether this root uses another worktree's ``.thrum`` through ``redirect``."""
        return self.thrum_dir != self.local_thrum_dir

    @property
    def main_root(self) -> Path:
        """The main worktree: the parent of the effective thrum dir."""
        return self.thrum_dir.parent

    @property
    def var_dir(self) -> Path:
        """``<thrum dir>/var``: runtime files (socket, pid, lock, log, database)."""
        return self.thrum_dir / "var"

    @property
    def default_socket_path(self) -> Path:
        """``var/thrum.sock`` (see :func:`daemon_socket_path` for long paths)."""
        return self.var_dir / "thrum.sock"

    @property
    def pid_file(self) -> Path:
        """``var/thrum.pid``."""
        return self.var_dir / "thrum.pid"

    @property
    def lock_file(self) -> Path:
        """``var/thrum.lock``."""
        return self.var_dir / "thrum.lock"

    @property
    def log_file(self) -> Path:
        """``var/daemon.log``."""
        return self.var_dir / "daemon.log"

    @property
    def db_path(self) -> Path:
        """``var/messages.db``."""
        return self.var_dir / "messages.db"

    @property
    def ws_port_file(self) -> Path:
        """``var/ws.port``."""
        return self.var_dir / "ws.port"

    @property
    def sync_lock_file(self) -> Path:
        """``var/sync.lock``."""
        return self.var_dir / "sync.lock"

    @property
    def peers_file(self) -> Path:
        """``var/peers.json``."""
        return self.var_dir / "peers.json"

    @property
    def torn_dir(self) -> Path:
        """``var/torn``."""
        return self.var_dir / "torn"

    @property
    def migrated_file(self) -> Path:
        """``var/migrated.json``."""
        return self.var_dir / "migrated.json"

    @property
    def config_file(self) -> Path:
        """``<thrum dir>/config.json``."""
        return self.thrum_dir / "config.json"

    @property
    def identities_dir(self) -> Path:
        """``<local thrum dir>/identities``."""
        return self.local_thrum_dir / "identities"

    @property
    def context_dir(self) -> Path:
        """``<thrum dir>/context``."""
        return self.thrum_dir / "context"

    @property
    def role_templates_dir(self) -> Path:
        """``<thrum dir>/role_templates``."""
        return self.thrum_dir / "role_templates"

    @property
    def backup_dir_default(self) -> Path:
        """``<thrum dir>/backup``."""
        return self.thrum_dir / "backup"

    @property
    def sync_dir(self) -> Path:
        """``<git common dir>/thrum-sync/a-sync``."""
        return self.git_common_dir / "thrum-sync" / "a-sync"

    @classmethod
    def for_root(cls, root: Path) -> ThrumPaths:
        """Compute the layout for ``root``, following ``.thrum/redirect`` (single hop).

        ``.thrum`` need not exist yet (``thrum init`` uses this too).  Raises
        :class:`NotInitialized` when ``root`` is not inside a git worktree and
        :class:`ThrumError` for a broken redirect (empty, missing target, not a
        directory, or a target that redirects again).
        """
        root = Path(root).expanduser().resolve()
        worktree = _worktree_of_resolved(root)
        if worktree is None:
            raise NotInitialized(f"{root} is not inside a git repository; thrum needs one (run git init)")
        return cls._build(root, worktree)

    @classmethod
    def _build(cls, root: Path, worktree: Path) -> ThrumPaths:
        common = _common_dir_of_resolved(worktree)
        local = root / THRUM_DIR_NAME
        return cls(root, local, _resolve_redirect(local) or local, common)

    @classmethod
    def discover(
        cls,
        cwd: Path | None = None,
        repo_flag: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ThrumPaths:
        """:func:`find_repo_root` (``cwd`` defaults to the process cwd) then :meth:`for_root`."""
        return cls._build(*_locate(Path.cwd() if cwd is None else cwd, repo_flag, environ))


# -------------------------------------------------------------------- sockets


def _private_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one that is a symlink or owned by someone else."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ThrumError(f"socket directory {path} is not a directory")
    if st.st_uid != os.getuid():
        raise ThrumError(f"socket directory {path} is owned by another user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def daemon_socket_path(paths: ThrumPaths, repo_id: str, *, environ: Mapping[str, str] | None = None) -> Path:
    """Return the path the daemon binds its Unix socket to (SPEC §8.1).

    The default ``<thrum dir>/var/thrum.sock`` unless it is longer than
    :data:`MAX_SOCKET_PATH_BYTES` bytes; then ``$XDG_RUNTIME_DIR/thrum/<repo_id>.sock``
    or, without ``XDG_RUNTIME_DIR``, ``/tmp/thrum-<uid>/<repo_id>.sock``.  The
    fallback directory is created with mode 0700 (and must belong to us).
    """
    default = paths.default_socket_path
    if len(os.fsencode(default)) <= MAX_SOCKET_PATH_BYTES:
        return default
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    directory = Path(runtime) / "thrum" if runtime else Path(f"/tmp/thrum-{os.getuid()}")
    return _private_dir(directory) / f"{repo_id}.sock"


def client_socket_path(paths: ThrumPaths, environ: Mapping[str, str] | None = None) -> Path:
    """Return the socket a client should dial: ``THRUM_SOCKET`` > the pid file's ``socket_path`` > default."""
    env = os.environ if environ is None else environ
    explicit = env.get("THRUM_SOCKET", "")
    if explicit:
        return Path(explicit).expanduser()
    from thrum_core.lifecycle import read_pid_file

    info = read_pid_file(paths.pid_file)
    if info is not None and info.socket_path and os.path.isabs(info.socket_path):
        return Path(info.socket_path)
    return paths.default_socket_path
