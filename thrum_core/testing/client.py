"""An async JSON-RPC client over the Unix socket, for trio tests.

A test that runs a kernel in-process shares one thread with it, so it must not
use the blocking :class:`thrum_core.client.Client` (a blocking ``recv`` would
stop the kernel from ever answering).  :class:`AsyncClient` speaks the same
newline-delimited protocol with trio sockets.  Server notifications are queued
apart from responses; responses are matched by ``id``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
from typing import Any

import trio

from thrum_core.errors import ThrumError, error_from_object

DEFAULT_TIMEOUT_S = 10.0


class AsyncClient:
    """One connection to a daemon socket; use :func:`open_async_client` to make one."""

    def __init__(self, stream: trio.SocketStream, socket_path: str):
        self.stream = stream
        self.socket_path = socket_path
        self.notifications: collections.deque[dict[str, Any]] = collections.deque()
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._responses: dict[Any, Any] = {}
        self._eof = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()

    # -- sending ---------------------------------------------------------------
    async def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given (for malformed-input tests)."""
        await self.stream.send_all(data)

    async def send_value(self, value: Any) -> None:
        """Send one JSON value followed by ``\\n``."""
        await self.stream.send_all(json.dumps(value, separators=(",", ":")).encode() + b"\n")

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, notification: bool = False
    ) -> dict[str, Any]:
        """Build a request object with a fresh id (none for a notification)."""
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            req["params"] = params
        if not notification:
            req["id"] = next(self._ids)
        return req

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, notification: bool = False
    ) -> Any:
        """Send one request without waiting; return its id (``None`` for a notification)."""
        req = self.request(method, params, notification=notification)
        await self.send_value(req)
        return req.get("id")

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        """Call ``method``; return its result or raise :class:`ThrumError` from an error reply."""
        rid = await self.send(method, params)
        reply = await self.wait_response(rid, timeout=timeout)
        if "error" in reply:
            raise error_from_object(reply["error"])
        return reply.get("result")

    # -- receiving ------------------------------------------------------------
    async def _read_line(self) -> bytes | None:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self._eof:
                return None
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                self._eof = True
                if self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line
                return None
            self._buf += chunk

    async def read_line(self, timeout: float = DEFAULT_TIMEOUT_S) -> bytes | None:
        """The next raw line (without ``\\n``); ``None`` at EOF; :class:`trio.TooSlowError` on timeout."""
        with trio.fail_after(timeout):
            return await self._read_line()

    async def read_message(self, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """The next JSON value from the server; ``None`` at EOF."""
        with trio.fail_after(timeout):
            while True:
                line = await self._read_line()
                if line is None:
                    return None
                line = line.rstrip(b"\r")
                if line:
                    return json.loads(line)

    def _file(self, msg: Any) -> None:
        if isinstance(msg, list):
            for item in msg:
                self._responses[item.get("id") if isinstance(item, dict) else None] = item
        elif isinstance(msg, dict) and "method" in msg and "id" not in msg:
            self.notifications.append(msg)
        elif isinstance(msg, dict):
            self._responses[msg.get("id")] = msg

    async def wait_response(self, rid: Any, *, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the response whose id is ``rid``; queue everything else met on the way."""
        with trio.fail_after(timeout):
            while rid not in self._responses:
                msg = await self.read_message(timeout=timeout)
                if msg is None:
                    raise ThrumError("the daemon closed the connection")
                self._file(msg)
            reply: dict[str, Any] = self._responses.pop(rid)
            return reply

    async def next_notification(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """The next server notification (raises :class:`trio.TooSlowError` after ``timeout``)."""
        with trio.fail_after(timeout):
            while not self.notifications:
                msg = await self.read_message(timeout=timeout)
                if msg is None:
                    raise ThrumError("the daemon closed the connection")
                self._file(msg)
            return self.notifications.popleft()


async def open_async_client(socket_path: str | os.PathLike[str]) -> AsyncClient:
    """Connect to the Unix socket at ``socket_path``."""
    path = os.fspath(socket_path)
    stream = await trio.open_unix_socket(path)
    return AsyncClient(stream, path)
