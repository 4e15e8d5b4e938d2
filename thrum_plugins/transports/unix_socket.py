"""The Unix-socket JSON-RPC transport (SPEC §8.1).

Newline-delimited JSON in both directions; many requests per connection,
executed concurrently (at most 64 in flight) and answered as they complete;
server-pushed notifications interleave; a line over 4 MiB is answered with
-32600 and skipped without being buffered, and the connection stays usable.

Performance notes (the request/response round trip is the daemon's hot path):

* Non-blocking stdlib sockets driven with ``trio.lowlevel.wait_readable`` /
  ``wait_writable`` instead of ``trio.SocketStream``, whose every call costs
  extra trips through the scheduler.
* Requests run inline in the reader task; only a request that suspends gets
  a task of its own, by handing the reading role to another task just before
  it first suspends (see ``_read_lines``): a spare task of the connection
  parked after finishing such a request, else a new one.  The reader task's
  cancel scope is lent to the request it runs, so a request needs no scope
  of its own (:class:`~thrum_core.rpc.dispatcher.LentScope`).
* A reply is written straight from the task that computed it when nothing
  is queued; replies of a run of pipelined requests are sent together at
  the end of the chunk; a writer task drains what the socket did not take.
* Idle connections are closed by one sweeper per listener rather than a
  timeout scope around every receive.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
import time
import types
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import outcome
import trio

from thrum_core.lifecycle import socket_answers
from thrum_core.markers import hookimpl
from thrum_core.rpc.dispatcher import LentScope, encode_json

if TYPE_CHECKING:
    from thrum_core.kernel import Kernel
    from thrum_core.plugins.registry import Registrar

log = logging.getLogger("thrum.transport.unix")

MAX_LINE = 4 * 1024 * 1024
MAX_INFLIGHT = 64
OUTBOUND_QUEUE = 256
IDLE_TIMEOUT_S = 600.0
IDLE_SWEEP_S = 30.0
RECEIVE_CHUNK = 1 << 16
DEFER_MAX = 64  # replies held back at most while serving a run of pipelined requests
INLINE_STREAK = 16  # reads + requests served back to back before the reader yields to other tasks
MAX_SPARE = 8  # parked tasks kept per connection for reading (see UnixConnection._park)
TOO_LARGE_REPLY = (
    b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"request too large",'
    b'"data":{"limit":4194304}},"id":null}\n'
)
_ACCEPT_RETRY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_DISCONNECTED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class UnixConnection:
    """One accepted client: a reader loop, request tasks and an outbound buffer."""

    transport = "unix"

    def __init__(self, kernel: Kernel, sock: stdlib_socket.socket, conn_id: str):
        self.kernel = kernel
        self.sock = sock
        self.id = conn_id
        self.session_id: str | None = None
        self.user_id: str | None = None
        self.closed = False
        self.last_activity = time.monotonic()
        self.inflight = 0
        self._handle_bytes = kernel.dispatcher.handle_bytes
        self._out: list[bytes] = []  # frames (or a partly sent remainder) waiting for the writer
        self._writer_task: trio.lowlevel.Task | None = None
        self._writer_parked = False
        self._writing = False  # the writer is waiting for the socket to drain
        self._slot_free: trio.Event | None = None  # set when inflight drops below the cap
        self._space: trio.Event | None = None  # set when the outbound buffer shrinks
        self._idle: trio.Event | None = None  # set when inflight reaches 0
        self._flushed: trio.Event | None = None  # set when the outbound buffer empties
        self._close_callbacks: list[Callable[[UnixConnection], Any]] = []
        self._cancel = trio.CancelScope()
        self._eof = trio.Event()
        self._buf = bytearray()  # the start of a line whose end has not arrived yet
        self._discarding = False  # skipping the rest of an oversize line
        # True only while the reader serves a request inline with more complete lines behind it
        # in the same chunk; it is synchronous code, so no other task can see it True.
        self._deferring = False
        # Tasks that finished a request they had handed reading away for, parked until a reader
        # hands reading to them (cheaper than spawning a task per suspending request).
        self._spare: list[trio.lowlevel.Task] = []

    # -- Connection protocol ---------------------------------------------------
    def notify(self, method: str, params: dict[str, Any]) -> bool:
        """Queue a notification; close the connection when its outbound queue is full."""
        if self.closed:
            return False
        if len(self._out) >= OUTBOUND_QUEUE:
            log.warning("connection %s is too slow (outbound queue full); closing it", self.id)
            self.close()
            return False
        line = encode_json({"jsonrpc": "2.0", "method": method, "params": params})
        self._queue(line.encode() + b"\n")
        return not self.closed

    def close(self) -> None:
        """Stop serving this connection (in-flight requests are cancelled unless shielded)."""
        if self.closed:
            return
        self.closed = True
        self._cancel.cancel()

    def add_close_callback(self, callback: Callable[[UnixConnection], Any]) -> None:
        """Call ``callback(connection)`` once the connection is closed."""
        self._close_callbacks.append(callback)

    # -- output -----------------------------------------------------------------
    def _send_now(self, data: bytes) -> int:
        """Write as much of ``data`` as the socket takes without blocking; -1 when the peer is gone."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except _DISCONNECTED:
            self.close()
            return -1
        except OSError as exc:
            if exc.errno == errno.EBADF:
                self.close()
                return -1
            raise

    def _queue(self, data: bytes) -> None:
        """Send ``data`` now if nothing is queued, else (or for the rest) leave it to the writer."""
        if not self._out and not self._writing:
            sent = self._send_now(data)
            if sent < 0 or sent == len(data):
                return
            data = data[sent:]
        self._out.append(data)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer_parked and self._writer_task is not None:
            self._writer_parked = False
            trio.lowlevel.reschedule(self._writer_task)

    async def _writer(self) -> None:
        """Send whatever is queued, in as few syscalls as possible."""
        self._writer_task = trio.lowlevel.current_task()
        while True:
            if not self._out:
                if self._flushed is not None:
                    self._flushed.set()
                    self._flushed = None
                self._writer_parked = True

                def abort(_: Any) -> trio.lowlevel.Abort:
                    self._writer_parked = False
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
                continue
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            if self._space is not None:
                self._space.set()
                self._space = None
            sent = self._send_now(data)
            if sent < 0:
                return
            if sent < len(data):
                self._out.insert(0, data[sent:])
                self._writing = True
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                finally:
                    self._writing = False

    def _flush_deferred(self) -> None:
        """Send the replies the reader held back while it served a run of pipelined requests."""
        if self._out and not self._writing:
            data = b"".join(self._out)
            self._out.clear()
            self._queue(data)

    async def _reply(self, data: bytes) -> None:
        if self._deferring:
            # The reader is serving pipelined requests inline (nothing else can run meanwhile):
            # hold the reply and send the run's replies together when the chunk is done.
            self._out.append(data)
            if len(self._out) >= DEFER_MAX:
                self._flush_deferred()
            return
        if len(self._out) >= OUTBOUND_QUEUE:
            # The peer is not reading: hold this request (and so, at the cap, the reader).
            while len(self._out) >= OUTBOUND_QUEUE and not self.closed:
                if self._space is None:
                    self._space = trio.Event()
                await self._space.wait()
        if self.inflight > 1 and not self._out and not self._writing:
            # Other replies are due soon: let the writer send them together.
            self._out.append(data)
            self._wake_writer()
        else:
            self._queue(data)

    # -- serving ------------------------------------------------------------------
    async def serve(self) -> None:
        """Serve until EOF, a fatal error, :meth:`close` or cancellation."""
        self.kernel.register_connection(self)
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._read_loop, nursery, b"", 0)
                    await self._eof.wait()
                    # EOF: let in-flight requests finish and their replies go out.
                    while self.inflight:
                        self._idle = trio.Event()
                        await self._idle.wait()
                    while self._out or self._writing:
                        if self._flushed is None:
                            self._flushed = trio.Event()
                        self._wake_writer()
                        await self._flushed.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self.kernel.unregister_connection(self)
            for callback in self._close_callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("close callback failed")
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def _handle(self, line: bytes, lent: LentScope | None = None) -> None:
        try:
            reply = await self._handle_bytes(line, self, "unix", lent_scope=lent)
            if reply is not None and not self.closed:
                await self._reply(reply + b"\n")
        finally:
            self.inflight -= 1
            self.last_activity = time.monotonic()
            if self._slot_free is not None:
                self._slot_free.set()
                self._slot_free = None
            if self._idle is not None and not self.inflight:
                self._idle.set()
                self._idle = None

    async def _wait_for_slot(self) -> None:
        self._flush_deferred()
        while self.inflight >= MAX_INFLIGHT:
            # Stop reading until a request finishes (SPEC §8.1).
            if self._slot_free is None:
                self._slot_free = trio.Event()
            await self._slot_free.wait()

    async def _too_large(self) -> None:
        await self._reply(TOO_LARGE_REPLY)

    async def _read_loop(self, nursery: trio.Nursery, chunk: bytes, start: int) -> None:
        """Read lines and serve them, starting with ``chunk[start:]``.

        Each request runs inline, in this task.  If it completes without
        suspending (most do) that saves spawning a task and a trip through
        the scheduler.  If it suspends, another task takes over reading (the
        rest of this chunk first) just before it does, and this task
        finishes that request, then parks as a spare reader (``_park``):
        requests still run concurrently and replies go out as they complete.
        The task's cancel scope is lent to the request it runs
        (:class:`~thrum_core.rpc.dispatcher.LentScope`), so a request needs no
        scope of its own.
        """
        with trio.CancelScope() as scope:
            lent = LentScope(scope)
            while await self._read_lines(nursery, chunk, start, lent):
                # This task handed reading over and has finished its request: wait to read again.
                lent.release()
                resumed = await self._park()
                if resumed is None:
                    return
                chunk, start = resumed
        if scope.cancelled_caught:
            # The deadline of the request this task was finishing passed (SPEC §8.5).
            reply = lent.timeout_reply()
            if reply is not None and not self.closed:
                self._queue(reply + b"\n")

    async def _park(self) -> tuple[bytes, int] | None:
        """Wait as a spare task until a reader hands reading over (``None``: too many spares)."""
        if len(self._spare) >= MAX_SPARE:
            return None
        task = trio.lowlevel.current_task()
        self._spare.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if task in self._spare:
                self._spare.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        resumed: tuple[bytes, int] = await trio.lowlevel.wait_task_rescheduled(abort)
        return resumed

    async def _read_lines(self, nursery: trio.Nursery, chunk: bytes, start: int, lent: LentScope) -> bool:
        """Serve lines until EOF (``False``) or until reading was handed to another task (``True``)."""
        sock = self.sock
        streak = 0  # reads and requests since this task last yielded to the scheduler
        while True:
            if start >= len(chunk):
                if self._out and not self._writing:
                    self._flush_deferred()
                if streak >= INLINE_STREAK:
                    # Data keeps coming without a wait: let other tasks run (fairness).
                    streak = 0
                    await trio.lowlevel.checkpoint()
                try:
                    chunk = sock.recv(RECEIVE_CHUNK)
                except BlockingIOError:
                    streak = 0
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except (ConnectionResetError, ConnectionAbortedError):
                    chunk = b""
                if not chunk:
                    self._eof.set()
                    return False
                start = 0
                streak += 1
                self.last_activity = time.monotonic()
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if not self._discarding:
                    self._buf += chunk[start:] if start else chunk
                    if len(self._buf) > MAX_LINE:
                        self._buf.clear()
                        self._discarding = True
                        await self._too_large()
                start = len(chunk)
                continue
            line_start, start = start, nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._buf:
                if len(self._buf) + nl - line_start > MAX_LINE:
                    self._buf.clear()
                    await self._too_large()
                    continue
                self._buf += chunk[line_start:nl]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                if nl - line_start > MAX_LINE:
                    await self._too_large()
                    continue
                line = chunk[line_start:nl]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.isspace():
                continue
            if self.inflight >= MAX_INFLIGHT:
                await self._wait_for_slot()
            self.inflight += 1
            handed_off = False

            def hand_off(chunk: bytes = chunk, start: int = start) -> None:
                nonlocal handed_off
                handed_off = True
                self._deferring = False
                if self._out:
                    self._wake_writer()
                lent.activate()
                if self._spare:
                    trio.lowlevel.reschedule(self._spare.pop(), outcome.Value((chunk, start)))
                else:
                    nursery.start_soon(self._read_loop, nursery, chunk, start)

            self._deferring = chunk.find(b"\n", start) >= 0
            try:
                await _run_until_done(self._handle(line, lent), hand_off)
            finally:
                self._deferring = False
            if handed_off:
                return True
            lent.release()
            streak += 1
            if streak >= INLINE_STREAK:
                streak = 0
                self._flush_deferred()
                await trio.lowlevel.checkpoint()


@types.coroutine
def _run_until_done(
    coro: Coroutine[Any, Any, Any], on_first_suspend: Callable[[], None]
) -> Generator[Any, Any, Any]:
    """Await ``coro`` in the current task, calling ``on_first_suspend()`` just before it first suspends.

    Equivalent to ``await coro`` (every value ``coro`` yields to trio is passed
    up unchanged and every answer or exception passed back down), plus the
    hook, which :class:`UnixConnection` uses to hand reading over to a new task.
    """
    suspended = False
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        try:
            trap = coro.throw(to_throw) if to_throw is not None else coro.send(to_send)
        except StopIteration as stop:
            return stop.value
        if not suspended:
            suspended = True
            try:
                on_first_suspend()
            except BaseException:
                coro.close()
                raise
        to_send = to_throw = None
        try:
            to_send = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            to_throw = exc


class UnixSocketTransport:
    """Binds ``thrum.sock`` (0600) and serves a :class:`UnixConnection` per client."""

    name = "unix"

    def __init__(self, kernel: Kernel, path: Path):
        self.kernel = kernel
        self.path = path
        self._listener_scope = trio.CancelScope()
        self._sock: stdlib_socket.socket | None = None
        self.connections: set[UnixConnection] = set()

    def stop_accepting(self) -> None:
        """Stop accepting new connections (existing ones keep being served)."""
        self._listener_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the path through ``task_status``, then accept until cancelled."""
        sock = self._bind()
        try:
            async with trio.open_nursery() as connections:
                connections.start_soon(self._sweep_idle)
                task_status.started(self.path)
                with self._listener_scope:
                    await self._accept_loop(sock, connections)
                self._close_listener()
                await trio.sleep_forever()
        finally:
            self._close_listener()

    async def _accept_loop(self, sock: stdlib_socket.socket, nursery: trio.Nursery) -> None:
        from thrum_core.rpc.spec import next_connection_id

        while True:
            try:
                client, _ = sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept failed (%s); pausing", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            client.setblocking(False)
            conn = UnixConnection(self.kernel, client, next_connection_id("unix"))
            nursery.start_soon(self._serve_connection, conn)
            await trio.lowlevel.checkpoint()

    async def _serve_connection(self, conn: UnixConnection) -> None:
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def _sweep_idle(self) -> None:
        """Close connections idle for 10 min with nothing in flight and no session (SPEC §8.1)."""
        while True:
            await trio.sleep(IDLE_SWEEP_S)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.inflight or conn.session_id is not None or conn._out:
                    continue
                if now - conn.last_activity >= IDLE_TIMEOUT_S:
                    log.info("closing idle connection %s", conn.id)
                    conn.close()

    def _close_listener(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            self._unlink()

    def _unlink(self) -> None:
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass

    def _bind(self) -> stdlib_socket.socket:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if socket_answers(path):
                raise RuntimeError(f"another process is serving {path}")
            path.unlink()
        sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
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
    """Register the ``unix`` transport."""
    register("unix", make_transport)
