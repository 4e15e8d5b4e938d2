"""The Unix-socket JSON-RPC transport (SPEC §8.1).

Newline-delimited JSON in both directions; many requests per connection,
executed concurrently (at most 64 in flight) and answered as they complete;
server-pushed notifications interleave; a line over 4 MiB is answered with
-32600 and skipped without being buffered, and the connection stays usable.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from thrum_core.lifecycle import socket_answers
from thrum_core.markers import hookimpl

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.plugins.registry import Registrar

log = logging.getLogger("thrum.transport.unix")

MAX_LINE = 4 * 1024 * 1024
MAX_INFLIGHT = 64
OUTBOUND_QUEUE = 256
IDLE_TIMEOUT_S = 600.0
RECEIVE_CHUNK = 1 << 16
TOO_LARGE_REPLY = (
    b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"request too large",'
    b'"data":{"limit":4194304,"reason":"too_large"}},"id":null}\n'
)


class UnixConnection:
    """One accepted client: a reader loop, a writer task and an outbound queue."""

    transport = "unix"

    def __init__(self, kernel: Kernel, stream: trio.SocketStream, conn_id: str):
        self.kernel = kernel
        self.stream = stream
        self.id = conn_id
        self.session_id: str | None = None
        self.user_id: str | None = None
        self.closed = False
        self.last_activity = time.monotonic()
        self.inflight = 0
        self._send, self._receive = trio.open_memory_channel[bytes](OUTBOUND_QUEUE)
        self._close_callbacks: list[Any] = []
        self._cancel = trio.CancelScope()

    # -- Connection protocol ---------------------------------------------------
    def notify(self, method: str, params: dict[str, Any]) -> bool:
        """Queue a notification; close the connection when its queue is full."""
        if self.closed:
            return False
        import json

        line = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}, ensure_ascii=False).encode()
        try:
            self._send.send_nowait(line + b"\n")
        except trio.WouldBlock:
            log.warning("connection %s is too slow (outbound queue full); closing it", self.id)
            self.close()
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel.cancel()

    def add_close_callback(self, callback: Any) -> None:
        self._close_callbacks.append(callback)

    # -- serving ------------------------------------------------------------------
    async def serve(self) -> None:
        self.kernel.register_connection(self)
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    await self._reader(nursery)
                    # EOF: let in-flight requests finish and their replies go out.
                    while self.inflight:
                        await trio.sleep(0.01)
                    await self._send.aclose()
        finally:
            self.closed = True
            self.kernel.unregister_connection(self)
            for callback in self._close_callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("close callback failed")
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    async def _writer(self) -> None:
        try:
            async for first in self._receive:
                chunks = [first]
                while True:
                    try:
                        chunks.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self.stream.send_all(b"".join(chunks) if len(chunks) > 1 else first)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    async def _reply(self, data: bytes) -> None:
        try:
            await self._send.send(data + b"\n")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _handle(self, line: bytes, limiter: trio.Semaphore) -> None:
        try:
            reply = await self.kernel.dispatcher.handle_bytes(line, self, "unix")
            if reply is not None and not self.closed:
                await self._reply(reply)
        finally:
            self.inflight -= 1
            self.last_activity = time.monotonic()
            limiter.release()

    async def _reader(self, nursery: trio.Nursery) -> None:
        limiter = trio.Semaphore(MAX_INFLIGHT)
        buf = bytearray()
        discarding = False
        while True:
            chunk = await self._receive_with_idle_timeout()
            if not chunk:
                return
            self.last_activity = time.monotonic()
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    if not discarding:
                        buf += chunk[start:]
                        if len(buf) > MAX_LINE:
                            buf.clear()
                            discarding = True
                            await self._reply(TOO_LARGE_REPLY[:-1])
                    break
                if discarding:
                    discarding = False
                    start = nl + 1
                    continue
                if buf:
                    buf += chunk[start:nl]
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = chunk[start:nl]
                start = nl + 1
                if len(line) > MAX_LINE:
                    await self._reply(TOO_LARGE_REPLY[:-1])
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line.strip():
                    continue
                await limiter.acquire()
                self.inflight += 1
                nursery.start_soon(self._handle, line, limiter)

    async def _receive_with_idle_timeout(self) -> bytes:
        while True:
            with trio.move_on_after(IDLE_TIMEOUT_S):
                try:
                    return await self.stream.receive_some(RECEIVE_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return b""
            idle = time.monotonic() - self.last_activity >= IDLE_TIMEOUT_S
            if idle and not self.inflight and self.session_id is None:
                log.info("closing idle connection %s", self.id)
                return b""


class UnixSocketTransport:
    """Binds ``thrum.sock`` (0600) and serves a :class:`UnixConnection` per client."""

    name = "unix"

    def __init__(self, kernel: Kernel, path: Path):
        self.kernel = kernel
        self.path = path
        self._listener_scope = trio.CancelScope()
        self._sock: trio.socket.SocketType | None = None

    def stop_accepting(self) -> None:
        self._listener_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        sock = await self._bind()
        from thrum_core.rpc.spec import next_connection_id

        try:
            async with trio.open_nursery() as connections:
                task_status.started(self.path)
                with self._listener_scope:
                    listener = trio.SocketListener(sock)
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:
                            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                                log.error("accept failed (%s); pausing", exc)
                                await trio.sleep(0.1)
                                continue
                            raise
                        conn = UnixConnection(self.kernel, stream, next_connection_id("unix"))
                        connections.start_soon(conn.serve)
                sock.close()
                self._unlink()
        finally:
            sock.close()
            self._unlink()

    def _unlink(self) -> None:
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass

    async def _bind(self) -> trio.socket.SocketType:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if socket_answers(path):
                raise RuntimeError(f"another process is serving {path}")
            path.unlink()
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        self._sock = sock
        return sock


def make_transport(kernel: Kernel) -> UnixSocketTransport:
    """Build the transport for ``kernel`` at its socket path (SPEC §8.1)."""
    path = kernel.status.get("socket_path")
    if path is None:
        from thrum_core.paths import daemon_socket_path

        path = daemon_socket_path(kernel.paths, kernel.repo_id)
        kernel.status["socket_path"] = str(path)
    return UnixSocketTransport(kernel, Path(path))


@hookimpl
def thrum_register_transports(register: Registrar) -> None:
    register("unix", make_transport)
