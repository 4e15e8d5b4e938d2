"""``thrum daemon run``: boot a kernel in this process (SPEC §14).

Order: resolve dirs and create ``var/`` → take ``thrum.lock`` → write
``thrum.pid`` → logging, config, identity block → sync worktree check and
torn-line repair, projection and catch-up (``Kernel.open_store``) → socket →
services → ``ready``.  SIGTERM/SIGINT shut down gracefully; SIGHUP reopens the
log file.

``python -m thrum_core.daemon run --repo ROOT`` is what ``thrum daemon start``
spawns: the same daemon without the CLI (no click, no command plugins), so
start-up pays only for what serves requests.
"""

from __future__ import annotations

import functools
import gc
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 4
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


class DaemonAlreadyRunning(Exception):
    """The lock is held by another daemon of this repository."""


def setup_logging(log_file: Path, level: str = "info", *, foreground: bool = False) -> logging.Handler:
    """Rotating ``daemon.log`` (10 MiB, 4 backups); stderr too in the foreground."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(console)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    return handler


def refresh_identity(config_file: Path, identity: dict[str, Any]) -> None:
    """Write the identity block: ``daemon_id``/``init_at`` once, the rest each start."""
    from thrum_core.config import read_config_file, update_config_file

    current = read_config_file(config_file).get("identity") or {}
    merged = dict(current)
    for key, value in identity.items():
        if key in ("daemon_id", "init_at") and current.get(key):
            continue
        merged[key] = value
    if merged != current:
        update_config_file(config_file, {"identity": merged})


def run_daemon(
    root: Path,
    *,
    flags: Mapping[str, Any] | None = None,
    foreground: bool = False,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the daemon for the repository at ``root`` until a signal stops it."""
    # Booting imports ~400 modules and creates little cyclic garbage (~2k of
    # ~60k objects, ~0.6 MB): the cyclic collector would run ~100 times for
    # next to nothing.  Pause it until ``ready``, then move everything boot
    # built into the permanent generation (``gc.freeze``): re-enabling without
    # that would make the first collection after ``ready`` walk all 60k young
    # objects (tens of ms on the trio thread, just as the first requests
    # arrive), and freezing keeps later full collections from walking them
    # again.  The price is that boot's little garbage is never collected.
    collecting = gc.isenabled()

    def on_ready() -> None:
        if collecting:
            gc.freeze()
            gc.enable()

    gc.disable()
    try:
        return _run_daemon(root, flags=flags, foreground=foreground, environ=environ, on_ready=on_ready)
    finally:
        if collecting:
            gc.enable()  # in case boot failed before ready


def _run_daemon(
    root: Path,
    *,
    flags: Mapping[str, Any] | None,
    foreground: bool,
    environ: Mapping[str, str] | None,
    on_ready: Callable[[], None],
) -> int:
    import trio

    from thrum_core import __version__
    from thrum_core.kernel import Kernel
    from thrum_core.lifecycle import DaemonLock, PidInfo, ensure_var_dir, write_pid_file
    from thrum_core.paths import ThrumPaths, daemon_socket_path
    from thrum_core.plugins.loader import is_builtin_command_plugin, make_plugin_manager
    from thrum_core.timefmt import format_ts, format_ts_seconds

    paths = ThrumPaths.for_root(root)
    ensure_var_dir(paths)
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        print("daemon already running", file=sys.stderr)
        return 1
    try:
        log_handler = setup_logging(paths.log_file, foreground=foreground)
        # Command plugins only add click commands, which a daemon never builds.
        pm = make_plugin_manager(environ, skip=is_builtin_command_plugin)
        kernel = Kernel(paths, pm, environ=environ, flags=flags)
        logging.getLogger().setLevel(_LEVELS.get(kernel.config.daemon.log_level, logging.INFO))
        socket_path = daemon_socket_path(paths, kernel.repo_id)
        kernel.status["socket_path"] = str(socket_path)
        kernel.status["pid"] = os.getpid()
        write_pid_file(
            paths.pid_file,
            PidInfo(
                pid=os.getpid(),
                repo_path=str(paths.main_root),
                started_at=format_ts(time.time_ns()),
                socket_path=str(socket_path),
                version=__version__,
            ),
        )
        identity = kernel.identity_block()
        identity["init_at"] = kernel.identity.get("init_at") or format_ts_seconds(time.time_ns())
        refresh_identity(paths.config_file, identity)
        for record in pm.plugin_records():
            if record.status == "failed":
                logging.getLogger("thrum.plugins").warning("plugin %s failed: %s", record.name, record.error)

        async def shutdown_trigger() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log_handler.acquire()
                        try:
                            if isinstance(log_handler, logging.FileHandler) and log_handler.stream:
                                log_handler.stream.close()
                                log_handler.stream = log_handler._open()
                        finally:
                            log_handler.release()
                        continue
                    logging.getLogger("thrum.daemon").info("received %s", signal.Signals(signum).name)
                    return

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(kernel.run, shutdown_trigger=shutdown_trigger))
                on_ready()

        try:
            trio.run(serve)
        except Exception:
            logging.getLogger("thrum.daemon").exception("daemon failed")
            return 1
        finally:
            for path in (paths.ws_port_file, paths.pid_file):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            try:
                if socket_path.is_socket():
                    socket_path.unlink()
            except OSError:
                pass
        logging.getLogger("thrum.daemon").info("stopped")
        return 0
    finally:
        lock.release()


USAGE = "usage: python -m thrum_core.daemon run --repo ROOT [--local | --no-local] [--foreground]"


def parse_args(argv: Sequence[str]) -> tuple[Path, bool | None, bool]:
    """``(root, local, foreground)`` from ``run --repo ROOT [--local|--no-local] [--foreground]``.

    Raises :class:`ValueError` with a usage message on anything else.  A
    hand-written parser: this runs on every daemon start and argparse costs
    more to import than the whole parse.
    """
    args = list(argv)
    if not args or args.pop(0) != "run":
        raise ValueError(USAGE)
    root: Path | None = None
    local: bool | None = None
    foreground = False
    while args:
        arg = args.pop(0)
        if arg == "--repo" and args:
            root = Path(args.pop(0))
        elif arg.startswith("--repo="):
            root = Path(arg.partition("=")[2])
        elif arg in ("--local", "--no-local"):
            local = arg == "--local"
        elif arg == "--foreground":
            foreground = True
        else:
            raise ValueError(f"unexpected argument {arg!r}\n{USAGE}")
    if root is None or not str(root):
        raise ValueError(f"--repo is required\n{USAGE}")
    return root, local, foreground


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon for ``--repo`` (the repository's main root) in this process."""
    try:
        root, local, foreground = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    from thrum_core.errors import ThrumError

    flags = {"daemon.local_only": local} if local is not None else None
    try:
        return run_daemon(root, flags=flags, foreground=foreground)
    except ThrumError as exc:
        print(f"thrum daemon: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
