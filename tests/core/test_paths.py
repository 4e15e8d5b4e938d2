"""Tests for thrum_core.paths: discovery, redirects, git dirs, origin URL, socket paths.

Every repository is a real one made with the ``git`` CLI in a temp dir; the
git-dependent answers are checked against what git itself prints.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from thrum_core.errors import NOT_INITIALIZED, NotInitialized, ThrumError
from thrum_core.lifecycle import PidInfo, socket_answers, write_pid_file
from thrum_core.paths import (
    MAX_SOCKET_PATH_BYTES,
    ThrumPaths,
    client_socket_path,
    daemon_socket_path,
    find_git_worktree_root,
    find_repo_root,
    git_common_dir,
    iter_git_config,
    main_worktree_root,
    read_origin_url,
)


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """Environment isolating git (and read_origin_url) from the machine's config files."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def git(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str]) -> Path:
    """A git repository with one commit and an initialised ``.thrum/``."""
    root = tmp_path / "main"
    root.mkdir()
    git(git_env, root, "init", "-q", "-b", "main")
    (root / "README").write_text("hi\n")
    git(git_env, root, "add", "README")
    git(git_env, root, "commit", "-q", "-m", "init")
    (root / ".thrum").mkdir()
    return root.resolve()


@pytest.fixture
def worktree(tmp_path: Path, repo: Path, git_env: dict[str, str]) -> Path:
    """A linked worktree of ``repo`` made with ``git worktree add``."""
    wt = tmp_path / "feature"
    git(git_env, repo, "worktree", "add", "-q", "-b", "feature", str(wt))
    return wt.resolve()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="thp", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ git dirs


def test_find_git_worktree_root_from_nested_dir(repo: Path) -> None:
    nested = repo / "a" / "b" / "c"
    nested.mkdir(parents=True)
    assert find_git_worktree_root(nested) == repo
    assert find_git_worktree_root(repo) == repo


def test_find_git_worktree_root_outside_git(tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "sub"
    plain.mkdir(parents=True)
    if any((p / ".git").exists() for p in (plain, *plain.parents)):
        pytest.skip("the temp dir lives inside a git repository")
    assert find_git_worktree_root(plain) is None
    # A bogus .git entry is not a repository (git skips it too).
    (tmp_path / "plain" / ".git").write_text("not a gitdir file")
    assert find_git_worktree_root(plain) is None


def test_common_dir_and_main_root_of_main_worktree(repo: Path, git_env: dict[str, str]) -> None:
    common = git_common_dir(repo)
    assert common == repo / ".git"
    assert common == Path(git(git_env, repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    assert main_worktree_root(common) == repo


def test_linked_worktree_resolves_to_main_repository(
    repo: Path, worktree: Path, git_env: dict[str, str]
) -> None:
    assert (worktree / ".git").is_file()
    assert find_git_worktree_root(worktree / "README") == worktree
    common = git_common_dir(worktree)
    expected = git(git_env, worktree, "rev-parse", "--path-format=absolute", "--git-common-dir")
    assert common == Path(expected).resolve() == repo / ".git"
    assert main_worktree_root(common) == repo


def test_main_worktree_root_of_bare_style_common_dir(tmp_path: Path) -> None:
    bare = tmp_path / "proj.git"
    bare.mkdir()
    assert main_worktree_root(bare) == bare.resolve()


def test_git_common_dir_errors(tmp_path: Path) -> None:
    d = tmp_path / "broken"
    d.mkdir()
    with pytest.raises(ThrumError, match="not a git worktree"):
        git_common_dir(d)
    (d / ".git").write_text("gitdir: /nonexistent/place\n")
    with pytest.raises(ThrumError, match="does not exist"):
        git_common_dir(d)


# ------------------------------------------------------------------- origin


def test_read_origin_url_matches_git(repo: Path, git_env: dict[str, str]) -> None:
    common = git_common_dir(repo)
    assert read_origin_url(common, environ=git_env) is None
    git(git_env, repo, "remote", "add", "origin", "git@github.com:Acme/Widgets.git")
    git(git_env, repo, "remote", "add", "upstream", "https://example.com/up.git")
    assert read_origin_url(common, environ=git_env) == "git@github.com:Acme/Widgets.git"
    assert read_origin_url(common, "upstream", environ=git_env) == "https://example.com/up.git"
    assert read_origin_url(common, "nope", environ=git_env) is None


def test_read_origin_url_from_linked_worktree(repo: Path, worktree: Path, git_env: dict[str, str]) -> None:
    git(git_env, repo, "remote", "add", "origin", "https://host.example/team/repo")
    assert read_origin_url(git_common_dir(worktree), environ=git_env) == "https://host.example/team/repo"


TRICKY_CONFIGS = [
    # comments, odd spacing and key case
    '[core]\n\tbare = false\n# [remote "origin"]\n; url = wrong\n'
    '[Remote "origin"]\n\tURL   =   https://a.example/x.git   # trailing comment\n',
    # quoted value with escapes and an embedded comment character
    '[remote "origin"]\n\turl = "https://a.example/has;semi#hash"\n',
    # deprecated section syntax, CRLF line endings
    "[remote.origin]\r\n\turl = ssh://git@a.example:2222/x\r\n",
    # line continuation
    '[remote "origin"]\n\turl = https://a.example/\\\nsplit.git\n',
    # several URLs: the first one wins
    '[remote "origin"]\n\turl = https://first.example/x\n\turl = https://second.example/x\n',
    # subsection is case-sensitive: "Origin" is another remote
    '[remote "Origin"]\n\turl = https://wrong.example/\n[remote "origin"]\n\turl = https://right.example/\n',
    # variable on the header line
    '[remote "origin"] url = https://same-line.example/r\n',
    # insteadOf rewriting, longest prefix wins
    '[url "git@github.com:"]\n\tinsteadOf = gh:\n[url "https://mirror.example/"]\n\tinsteadOf = gh:special/\n'
    '[remote "origin"]\n\turl = gh:special/repo.git\n',
]


@pytest.mark.parametrize("config_text", TRICKY_CONFIGS)
def test_read_origin_url_tricky_configs_agree_with_git(
    tmp_path: Path, git_env: dict[str, str], config_text: str
) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(git_env, root, "init", "-q")
    config = root / ".git" / "config"
    with config.open("a", newline="") as fh:
        fh.write(config_text)
    expected = git(git_env, root, "remote", "get-url", "origin")
    assert read_origin_url(root / ".git", environ=git_env) == expected


def test_read_origin_url_applies_global_insteadof(
    tmp_path: Path, repo: Path, git_env: dict[str, str]
) -> None:
    Path(git_env["GIT_CONFIG_GLOBAL"]).write_text('[url "https://github.com/"]\n\tinsteadOf = gh:\n')
    git(git_env, repo, "remote", "add", "origin", "gh:o/r")
    expected = git(git_env, repo, "remote", "get-url", "origin")
    assert expected == "https://github.com/o/r"
    assert read_origin_url(repo / ".git", environ=git_env) == expected


def test_iter_git_config_entries() -> None:
    text = '[a]\nflag\nk = v\n[b "Sub \\"q\\""]\n  x = 1 2  3 \n[bad\nz = ignored\n[c]\nok = "  kept  "\n'
    assert list(iter_git_config(text)) == [
        ("a", None, "flag", None),
        ("a", None, "k", "v"),
        ("b", 'Sub "q"', "x", "1 2  3"),
        ("c", None, "ok", "  kept  "),
    ]


# ---------------------------------------------------------------- discovery


def test_discovery_from_nested_subfolder(repo: Path) -> None:
    nested = repo / "src" / "pkg" / "deep"
    nested.mkdir(parents=True)
    assert find_repo_root(nested, environ={}) == repo
    paths = ThrumPaths.discover(cwd=nested, environ={})
    assert paths.root == repo
    assert paths.thrum_dir == paths.local_thrum_dir == repo / ".thrum"
    assert not paths.redirected


def test_paths_compare_by_value_and_derive_the_layout(repo: Path) -> None:
    """``ThrumPaths`` is a plain class: equal and hashable by its four found paths, the rest derived."""
    a = ThrumPaths.discover(cwd=repo, environ={})
    b = ThrumPaths.for_root(repo)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != object()
    assert a.git_common_dir == repo / ".git"
    assert a.main_root == repo
    assert a.var_dir == repo / ".thrum" / "var"
    assert (a.pid_file, a.lock_file, a.default_socket_path) == (
        a.var_dir / "thrum.pid",
        a.var_dir / "thrum.lock",
        a.var_dir / "thrum.sock",
    )
    assert a.identities_dir == repo / ".thrum" / "identities"
    assert a.sync_dir == repo / ".git" / "thrum-sync" / "a-sync"
    assert repr(a).startswith("ThrumPaths(root=")


def test_nearest_thrum_dir_wins(repo: Path) -> None:
    inner = repo / "sub"
    (inner / ".thrum").mkdir(parents=True)
    (inner / "x").mkdir()
    assert find_repo_root(inner / "x", environ={}) == inner


def test_repo_flag(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert find_repo_root(elsewhere, str(repo), environ={}) == repo
    assert find_repo_root(tmp_path, "main", environ={}) == repo  # relative to cwd
    # --repo wins over a .thrum found from the cwd and over THRUM_HOME.
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True, capture_output=True)
    (other / ".thrum").mkdir()
    assert find_repo_root(other, str(repo), environ={"THRUM_HOME": str(other)}) == repo
    with pytest.raises(NotInitialized, match="--repo"):
        find_repo_root(elsewhere, str(tmp_path / "missing"), environ={})
    with pytest.raises(NotInitialized, match="not inside a git repository"):
        find_repo_root(elsewhere, str(elsewhere), environ={})


def test_thrum_home_fallback(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    assert find_repo_root(outside, environ={"THRUM_HOME": str(repo)}) == repo
    # The cwd wins over THRUM_HOME (D12).
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True, capture_output=True)
    (other / ".thrum").mkdir()
    assert find_repo_root(other, environ={"THRUM_HOME": str(repo)}) == other.resolve()
    with pytest.raises(NotInitialized, match="THRUM_HOME"):
        find_repo_root(outside, environ={"THRUM_HOME": str(tmp_path / "gone")})


def test_not_initialized(tmp_path: Path, git_env: dict[str, str]) -> None:
    root = tmp_path / "plain-repo"
    root.mkdir()
    git(git_env, root, "init", "-q")
    with pytest.raises(NotInitialized) as info:
        find_repo_root(root, environ={})
    assert info.value.code == NOT_INITIALIZED
    assert "thrum init" in info.value.message
    with pytest.raises(NotInitialized):
        ThrumPaths.discover(cwd=root, environ={"THRUM_HOME": ""})


def test_thrum_dir_outside_git_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "nogit"
    (root / ".thrum").mkdir(parents=True)
    if find_git_worktree_root(root) is not None:
        pytest.skip("the temp dir lives inside a git repository")
    with pytest.raises(NotInitialized, match="not inside a git repository"):
        find_repo_root(root, environ={})
    with pytest.raises(NotInitialized, match="not inside a git repository"):
        ThrumPaths.for_root(root)


def test_layout_of_main_worktree(repo: Path) -> None:
    p = ThrumPaths.for_root(repo)
    t = repo / ".thrum"
    v = t / "var"
    assert p.main_root == repo
    assert p.var_dir == v
    assert p.default_socket_path == v / "thrum.sock"
    assert p.pid_file == v / "thrum.pid"
    assert p.lock_file == v / "thrum.lock"
    assert p.log_file == v / "daemon.log"
    assert p.db_path == v / "messages.db"
    assert p.ws_port_file == v / "ws.port"
    assert p.sync_lock_file == v / "sync.lock"
    assert p.peers_file == v / "peers.json"
    assert p.torn_dir == v / "torn"
    assert p.migrated_file == v / "migrated.json"
    assert p.config_file == t / "config.json"
    assert p.identities_dir == t / "identities"
    assert p.context_dir == t / "context"
    assert p.role_templates_dir == t / "role_templates"
    assert p.backup_dir_default == t / "backup"
    assert p.git_common_dir == repo / ".git"
    assert p.sync_dir == repo / ".git" / "thrum-sync" / "a-sync"
    assert not v.exists(), "computing paths creates nothing"


def test_for_root_without_thrum_dir(tmp_path: Path, git_env: dict[str, str]) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(git_env, root, "init", "-q")
    p = ThrumPaths.for_root(root)
    assert p.thrum_dir == root.resolve() / ".thrum"
    assert not p.thrum_dir.exists()


# ---------------------------------------------------------------- redirects


def test_redirect_valid(repo: Path, worktree: Path) -> None:
    (worktree / ".thrum").mkdir()
    (worktree / ".thrum" / "redirect").write_text(f"  {repo / '.thrum'}\n\n")
    nested = worktree / "deep" / "er"
    nested.mkdir(parents=True)
    p = ThrumPaths.discover(cwd=nested, environ={})
    assert p.root == worktree
    assert p.redirected
    assert p.local_thrum_dir == worktree / ".thrum"
    assert p.identities_dir == worktree / ".thrum" / "identities"
    assert p.thrum_dir == repo / ".thrum"
    assert p.main_root == repo
    assert p.var_dir == repo / ".thrum" / "var"
    assert p.config_file == repo / ".thrum" / "config.json"
    assert p.context_dir == repo / ".thrum" / "context"
    assert p.git_common_dir == repo / ".git"
    assert p.sync_dir == repo / ".git" / "thrum-sync" / "a-sync"


def test_redirect_missing_target(repo: Path, worktree: Path, tmp_path: Path) -> None:
    (worktree / ".thrum").mkdir()
    (worktree / ".thrum" / "redirect").write_text(str(tmp_path / "nowhere" / ".thrum"))
    with pytest.raises(ThrumError, match="does not exist"):
        ThrumPaths.for_root(worktree)


def test_redirect_double_hop(repo: Path, worktree: Path, tmp_path: Path) -> None:
    (repo / ".thrum" / "redirect").write_text(str(tmp_path / "somewhere"))
    (worktree / ".thrum").mkdir()
    (worktree / ".thrum" / "redirect").write_text(str(repo / ".thrum"))
    with pytest.raises(ThrumError, match="single hop"):
        ThrumPaths.for_root(worktree)


def test_redirect_target_not_a_directory(repo: Path, worktree: Path) -> None:
    target = repo / "not-a-dir"
    target.write_text("x")
    (worktree / ".thrum").mkdir()
    (worktree / ".thrum" / "redirect").write_text(str(target))
    with pytest.raises(ThrumError, match="not a directory"):
        ThrumPaths.for_root(worktree)


def test_redirect_empty_or_multiline(repo: Path, worktree: Path) -> None:
    (worktree / ".thrum").mkdir()
    redirect = worktree / ".thrum" / "redirect"
    redirect.write_text("  \n")
    with pytest.raises(ThrumError, match="empty"):
        ThrumPaths.for_root(worktree)
    redirect.write_text(f"{repo / '.thrum'}\n{repo / '.thrum'}\n")
    with pytest.raises(ThrumError, match="one line"):
        ThrumPaths.for_root(worktree)


# ----------------------------------------------------------------- sockets


def _deep_repo(base: Path, git_env: dict[str, str]) -> Path:
    deep = base
    while len(os.fsencode(deep / ".thrum" / "var" / "thrum.sock")) <= MAX_SOCKET_PATH_BYTES + 20:
        deep = deep / "a-rather-long-directory-name"
    deep.mkdir(parents=True)
    git(git_env, deep, "init", "-q")
    (deep / ".thrum" / "var").mkdir(parents=True)
    return deep


def test_short_socket_path_is_default(repo: Path) -> None:
    p = ThrumPaths.for_root(repo)
    if len(os.fsencode(p.default_socket_path)) > MAX_SOCKET_PATH_BYTES:
        pytest.skip("temp dir too deep for this case")
    assert daemon_socket_path(p, "r_ABCDEFGHJKMN", environ={}) == p.default_socket_path


def _bind_and_connect(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen(1)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        conn, _ = server.accept()
        client.sendall(b"ping\n")
        assert conn.recv(16) == b"ping\n"
        conn.close()
        client.close()
        assert socket_answers(path)
    finally:
        server.close()
        path.unlink(missing_ok=True)


def test_long_socket_path_falls_back_to_xdg_runtime_dir(
    tmp_path: Path, git_env: dict[str, str], short_dir: Path
) -> None:
    p = ThrumPaths.for_root(_deep_repo(tmp_path, git_env))
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX).bind(str(p.default_socket_path))
    sock = daemon_socket_path(p, "r_TESTXDG00001", environ={"XDG_RUNTIME_DIR": str(short_dir)})
    assert sock == short_dir / "thrum" / "r_TESTXDG00001.sock"
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    _bind_and_connect(sock)


def test_long_socket_path_falls_back_to_tmp(tmp_path: Path, git_env: dict[str, str]) -> None:
    p = ThrumPaths.for_root(_deep_repo(tmp_path, git_env))
    repo_id = f"r_TEST{os.getpid():08d}"[:14]
    sock = daemon_socket_path(p, repo_id, environ={})
    assert sock == Path(f"/tmp/thrum-{os.getuid()}") / f"{repo_id}.sock"
    st = sock.parent.lstat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid()
    _bind_and_connect(sock)


def test_socket_fallback_dir_must_be_a_private_directory(
    tmp_path: Path, git_env: dict[str, str], short_dir: Path
) -> None:
    p = ThrumPaths.for_root(_deep_repo(tmp_path, git_env))
    (short_dir / "thrum").write_text("not a dir")
    with pytest.raises(ThrumError, match="not a directory"):
        daemon_socket_path(p, "r_X", environ={"XDG_RUNTIME_DIR": str(short_dir)})
    (short_dir / "thrum").unlink()
    (short_dir / "real").mkdir()
    (short_dir / "thrum").symlink_to(short_dir / "real")
    with pytest.raises(ThrumError, match="not a directory"):
        daemon_socket_path(p, "r_X", environ={"XDG_RUNTIME_DIR": str(short_dir)})


def test_client_socket_path_precedence(repo: Path, tmp_path: Path) -> None:
    p = ThrumPaths.for_root(repo)
    assert client_socket_path(p, environ={}) == p.default_socket_path
    p.var_dir.mkdir()
    write_pid_file(p.pid_file, PidInfo(123, socket_path="/run/user/1/thrum/r_X.sock"))
    assert client_socket_path(p, environ={}) == Path("/run/user/1/thrum/r_X.sock")
    assert client_socket_path(p, environ={"THRUM_SOCKET": "/x/y.sock"}) == Path("/x/y.sock")
    assert client_socket_path(p, environ={"THRUM_SOCKET": ""}) == Path("/run/user/1/thrum/r_X.sock")
    # A legacy pid file has no socket path: the default is used.
    p.pid_file.write_text("123\n")
    assert client_socket_path(p, environ={}) == p.default_socket_path
