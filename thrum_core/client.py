"""A blocking JSON-RPC client over the Unix socket, standard library only.

The CLI runs for every message an agent sends, so this module imports
nothing but ``_socket``, ``json`` and thrum's stdlib-only modules.  Dial
timeout 5 s, call timeout 10 s (plus the SPEC's 2 s of slack when a method
deadline is given).  Server-pushed notification lines are queued, not mixed up
with responses.

The connection is a bare :class:`_socket.socket`, the C type that
:class:`socket.socket` wraps: a blocking client needs only ``connect``,
``sendall``, ``recv`` and ``settimeout``, and importing :mod:`socket` (which
pulls in :mod:`selectors` and builds its enums) costs the CLI about two
milliseconds per command.  Timeouts still raise :class:`TimeoutError`.
"""

from __future__ import annotations

import _socket
import collections
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from thrum_core.errors import DaemonNotRunning, ThrumError, Timeout, error_from_object

DIAL_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0
CLIENT_SLACK_S = 2.0


class Client:
    """One connection to the daemon; many calls, in order, on it."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        dial_timeout: float = DIAL_TIMEOUT_S,
        call_timeout: float = CALL_TIMEOUT_S,
    ):
        self.socket_path = str(socket_path)
        self.call_timeout = call_timeout
        self._ids = itertools.count(1)
        self._buf = b""
        self.notifications: collections.deque[dict[str, Any]] = collections.deque()
        self._responses: dict[Any, dict[str, Any]] = {}
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(dial_timeout)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunning() from exc
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise Timeout(
                    int(dial_timeout * 1000), f"could not connect to {self.socket_path} in time"
                ) from exc
            raise DaemonNotRunning() from exc
        self.sock: _socket.socket = sock

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending ---------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (tests use this for malformed input)."""
        self.sock.sendall(data)

    def send(self, method: str, params: dict[str, Any] | None = None, *, notification: bool = False) -> Any:
        """Send one request; return its id (``None`` for a notification)."""
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            request["params"] = params
        rid = None
        if not notification:
            rid = next(self._ids)
            request["id"] = rid
        self.sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        return rid

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` and return its result; raise :class:`ThrumError` on an error reply."""
        rid = self.send(method, params)
        reply = self.wait_response(rid, timeout=timeout)
        if "error" in reply:
            raise error_from_object(reply["error"])
        return reply.get("result")

    # -- receiving -----------------------------------------------------------
    def _read_line(self, deadline: float) -> bytes | None:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            if not chunk:
                raise ThrumError("the daemon closed the connection")
            self._buf += chunk

    def read_message(self, timeout: float | None = None) -> dict[str, Any] | list[Any] | None:
        """The next JSON value from the server, or ``None`` on timeout."""
        deadline = time.monotonic() + (self.call_timeout if timeout is None else timeout)
        while True:
            line = self._read_line(deadline)
            if line is None:
                return None
            line = line.rstrip(b"\r")
            if not line:
                continue
            value: dict[str, Any] | list[Any] = json.loads(line)
            return value

    def wait_response(self, rid: Any, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the response with id ``rid``; queue notifications met on the way."""
        if rid in self._responses:
            return self._responses.pop(rid)
        limit = self.call_timeout if timeout is None else timeout + CLIENT_SLACK_S
        deadline = time.monotonic() + limit
        while True:
            msg = self.read_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise Timeout(int(limit * 1000), f"no reply from the daemon within {limit:g} s")
            if isinstance(msg, list):
                for item in msg:
                    self._responses[item.get("id")] = item
                if rid in self._responses:
                    return self._responses.pop(rid)
                continue
            if "method" in msg and "id" not in msg:
                self.notifications.append(msg)
                continue
            if msg.get("id") == rid:
                return msg
            self._responses[msg.get("id")] = msg

    def next_notification(self, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any] | None:
        """The next server notification, or ``None`` after ``timeout`` seconds."""
        if self.notifications:
            return self.notifications.popleft()
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                return msg
            if isinstance(msg, dict):
                self._responses[msg.get("id")] = msg


def connect(
    socket_path: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    dial_timeout: float = DIAL_TIMEOUT_S,
    call_timeout: float = CALL_TIMEOUT_S,
) -> Client:
    """Connect to the daemon of the repository at ``root`` (or the cwd's)."""
    if socket_path is None:
        from thrum_core.paths import ThrumPaths, client_socket_path

        paths = ThrumPaths.discover(repo_flag=str(root) if root is not None else None)
        socket_path = client_socket_path(paths)
    return Client(Path(socket_path), dial_timeout=dial_timeout, call_timeout=call_timeout)
