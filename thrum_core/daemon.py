"""``thrum daemon run``: boot a kernel in this process (SPEC §14).

Order: resolve dirs and create ``var/`` → take ``thrum.lock`` → write
``thrum.pid`` → logging, config, identity block → sync worktree check and
torn-line repair, projection and catch-up (``Kernel.open_store``) → socket →
services → ``ready``.  SIGTERM/SIGINT shut down gracefully; SIGHUP reopens the
log file.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Mapping
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
    import trio

    from thrum_core import __version__
    from thrum_core.kernel import Kernel
    from thrum_core.lifecycle import DaemonLock, PidInfo, ensure_var_dir, write_pid_file
    from thrum_core.paths import ThrumPaths, daemon_socket_path
    from thrum_core.plugins.loader import make_plugin_manager
    from thrum_core.timefmt import format_ts, format_ts_seconds

    paths = ThrumPaths.for_root(root)
    ensure_var_dir(paths)
    lock = DaemonLock(paths.lock_file)
    if not lock.acquire():
        print("daemon already running", file=sys.stderr)
        return 1
    try:
        log_handler = setup_logging(paths.log_file, foreground=foreground)
        pm = make_plugin_manager(environ)
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

        try:
            trio.run(lambda: kernel.run(shutdown_trigger=shutdown_trigger))
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
