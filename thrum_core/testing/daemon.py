"""A real daemon in a subprocess (``python -m thrum_core.daemon run --repo ...``).

It is started the way ``thrum daemon start`` starts one: the click-free entry
point, with the repository's main root.

Extra plugins reach the subprocess as real entry points: a temp site directory
with a minimal ``.dist-info`` is put on its ``PYTHONPATH``.  Talk to it with the
blocking :class:`thrum_core.client.Client` (it is another process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from thrum_core.client import Client
from thrum_core.errors import ThrumError
from thrum_core.lifecycle import read_pid_file
from thrum_core.testing.plugins import clean_environ, write_entry_point_dist
from thrum_core.testing.repo import ThrumRepo

TEST_DIST = "thrum-test-plugins"


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` every ``interval`` seconds until it is true (``True``) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class DaemonProcess:
    """Start, reach and stop one daemon subprocess for ``repo``.

    ``extra_entry_points`` (``{name: "module[:attr]"}``) are advertised to the
    daemon as the ``thrum`` entry points of a test distribution.
    ``load_plugins``, when given, becomes ``THRUM_LOAD_PLUGINS`` (the extra
    plugins are added to it automatically).
    """

    def __init__(
        self,
        repo: ThrumRepo,
        *,
        extra_entry_points: Mapping[str, str] | None = None,
        load_plugins: Iterable[str] | None = None,
        env: Mapping[str, str] | None = None,
        argv: Iterable[str] = (),
    ):
        self.repo = repo
        self.extra_entry_points = dict(extra_entry_points or {})
        self.load_plugins = None if load_plugins is None else list(load_plugins)
        self.extra_env = dict(env or {})
        self.argv = list(argv)
        self.proc: subprocess.Popen[bytes] | None = None
        self._site: tempfile.TemporaryDirectory[str] | None = None
        self.output_path = repo.root.parent / f"{repo.root.name}-daemon-output.log"

    def command(self) -> list[str]:
        """The daemon's command line."""
        root = str(self.repo.paths.main_root)
        return [sys.executable, "-m", "thrum_core.daemon", "run", "--repo", root, *self.argv]

    def environment(self) -> dict[str, str]:
        """The daemon's environment: ours without ``THRUM_*``, plus the test plugins."""
        env = clean_environ()
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if self.extra_entry_points:
            self._site = tempfile.TemporaryDirectory(prefix="thrum-site-")
            write_entry_point_dist(Path(self._site.name), TEST_DIST, self.extra_entry_points)
            paths.insert(0, self._site.name)
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        if self.load_plugins is not None:
            names = [*self.load_plugins, *self.extra_entry_points]
            env["THRUM_LOAD_PLUGINS"] = ",".join(dict.fromkeys(names))
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        """Spawn the daemon and wait until it answers ``health``."""
        with self.output_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.repo.root),
            )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with self.client(dial_timeout=0.5) as client:
                    client.call("health", timeout=2.0)
                return self
            except (ThrumError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daemon did not answer health within {timeout} s ({last}):\n{self.output()}")

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def socket_path(self) -> Path:
        """The socket the daemon recorded in ``thrum.pid`` (else the default path)."""
        info = read_pid_file(self.repo.paths.pid_file)
        if info is not None and info.socket_path:
            return Path(info.socket_path)
        return self.repo.paths.default_socket_path

    def client(self, *, dial_timeout: float = 5.0, call_timeout: float = 10.0) -> Client:
        """A new blocking connection to the daemon."""
        return Client(self.socket_path, dial_timeout=dial_timeout, call_timeout=call_timeout)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """What the process printed, plus the tail of ``daemon.log``."""
        parts = []
        for path in (self.output_path, self.repo.paths.log_file):
            try:
                parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-8000:])
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit status."""
        proc = self.proc
        try:
            if proc is None:
                return None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return proc.returncode
        finally:
            if self._site is not None:
                self._site.cleanup()
                self._site = None

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
