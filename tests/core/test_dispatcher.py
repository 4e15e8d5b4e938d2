"""The dispatcher and the Unix-socket transport, in-process (SPEC §8.1, §8.3 to §8.5).

A real kernel runs in the test's trio nursery with the ``test.*`` methods of
:mod:`thrum_core.testing.conformance_plugin`; requests go over its real Unix
socket with :class:`~thrum_core.testing.AsyncClient`, or straight into
``Dispatcher.handle_bytes``.  ``tests/integration/test_rpc_conformance.py``
runs the same cases against a daemon subprocess.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
import trio

from thrum_core.errors import PermissionDenied, ThrumError
from thrum_core.kernel import Kernel
from thrum_core.markers import hookimpl
from thrum_core.rpc.spec import CallContext, MethodRegistrar, Params
from thrum_core.testing import AsyncClient, conformance_plugin
from thrum_core.testing.conformance import (
    CASES,
    MAX_LINE,
    MIXED_BATCH,
    MIXED_BATCH_REPLIES,
    NO_REPLY,
    TOO_LARGE_REPLY,
    Case,
    matches,
    note,
    padded_request,
    req,
)

ClientFactory = Callable[[], Awaitable[AsyncClient]]


@pytest.fixture
def thrum_extra_plugins() -> Mapping[str, object]:
    return {"test": conformance_plugin}


async def probe(client: AsyncClient) -> None:
    """The connection still answers, and nothing unexpected is queued before the answer."""
    await client.send_value(req("health", id="probe"))
    line = await client.read_line()
    assert line is not None, "connection closed"
    reply = json.loads(line)
    assert reply["id"] == "probe", f"unexpected line before the probe's reply: {line!r}"
    assert reply["result"]["status"] == "ok"


async def assert_no_reply_then_probe(client: AsyncClient) -> None:
    await trio.sleep(0.05)
    await probe(client)


# -- the conformance table, over the socket --------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case_over_socket(case: Case, rpc_client: AsyncClient) -> None:
    await rpc_client.send_raw(case.line + b"\n")
    if case.expect is NO_REPLY:
        await assert_no_reply_then_probe(rpc_client)
        return
    reply = await rpc_client.read_message()
    assert matches(reply, case.expect), f"{case.name}: got {reply!r}"
    await probe(rpc_client)


@pytest.mark.parametrize("case", [c for c in CASES if c.expect is not NO_REPLY], ids=lambda c: c.name)
async def test_case_direct(case: Case, thrum_kernel: Kernel) -> None:
    out = await thrum_kernel.dispatcher.handle_bytes(case.line, None, "unix")
    assert out is not None
    assert b"\n" not in out
    assert matches(json.loads(out), case.expect)


@pytest.mark.parametrize("case", [c for c in CASES if c.expect is NO_REPLY], ids=lambda c: c.name)
async def test_notification_direct_returns_nothing(case: Case, thrum_kernel: Kernel) -> None:
    assert await thrum_kernel.dispatcher.handle_bytes(case.line, None, "unix") is None


async def test_replies_are_compact_utf8(thrum_kernel: Kernel) -> None:
    out = await thrum_kernel.dispatcher.handle_bytes(
        json.dumps(req("test.echo", {"text": "é"})).encode(), None, "unix"
    )
    assert out == '{"jsonrpc":"2.0","result":{"text":"é"},"id":1}'.encode()


async def test_notifications_run(rpc_client: AsyncClient) -> None:
    for _ in range(3):
        await rpc_client.send_value(note("test.bump"))
    await rpc_client.send_value([note("test.bump"), note("test.bump")])
    with trio.fail_after(5):
        while await rpc_client.call("test.counter") != 5:
            await trio.sleep(0.01)


# -- batches ---------------------------------------------------------------------------------------


async def test_mixed_batch(rpc_client: AsyncClient) -> None:
    await rpc_client.send_value(MIXED_BATCH)
    reply = await rpc_client.read_message()
    assert isinstance(reply, list)
    by_id = {r["id"]: r for r in reply}
    assert len(reply) == len(MIXED_BATCH_REPLIES) == len(by_id)
    for rid, expected in MIXED_BATCH_REPLIES.items():
        assert matches(by_id[rid], expected), (rid, by_id[rid])
    assert await rpc_client.call("test.counter") == 1  # the notification ran
    await probe(rpc_client)


async def test_batch_of_100_is_accepted(rpc_client: AsyncClient) -> None:
    await rpc_client.send_value([req("test.echo", {"text": str(i)}, id=i) for i in range(100)])
    reply = await rpc_client.read_message()
    assert sorted(r["id"] for r in reply) == list(range(100))
    assert all(r["result"] == {"text": str(r["id"])} for r in reply)


async def test_batch_elements_run_concurrently(rpc_client: AsyncClient) -> None:
    start = trio.current_time()
    await rpc_client.send_value([req("test.slow", {"seconds": 0.3}, id=i) for i in range(10)])
    reply = await rpc_client.read_message()
    assert len(reply) == 10
    assert trio.current_time() - start < 1.5


async def test_all_notification_batch_sends_nothing_but_runs(rpc_client: AsyncClient) -> None:
    await rpc_client.send_value([note("test.bump") for _ in range(4)])
    await assert_no_reply_then_probe(rpc_client)
    assert await rpc_client.call("test.counter") == 4


# -- concurrency and ordering ----------------------------------------------------------------------


async def test_slow_call_does_not_hold_up_a_fast_one(rpc_client: AsyncClient) -> None:
    await rpc_client.send_value(req("test.slow", {"seconds": 0.5}, id="slow"))
    await rpc_client.send_value(req("test.echo", {"text": "fast"}, id="fast"))
    first = await rpc_client.read_message()
    second = await rpc_client.read_message()
    assert first["id"] == "fast"
    assert second["id"] == "slow"


async def test_many_requests_pipelined_on_one_connection(rpc_client: AsyncClient) -> None:
    n = 500
    await rpc_client.send_raw(
        b"".join(json.dumps(req("test.echo", {"text": str(i)}, id=i)).encode() + b"\n" for i in range(n))
    )
    seen = {}
    for _ in range(n):
        reply = await rpc_client.read_message()
        seen[reply["id"]] = reply["result"]["text"]
    assert seen == {i: str(i) for i in range(n)}


async def test_notifications_interleave_with_responses(rpc_client: AsyncClient) -> None:
    assert await rpc_client.call("test.emit", {"count": 5}) == {"sent": 5}
    notes = [await rpc_client.next_notification() for _ in range(5)]
    assert [n["params"]["i"] for n in notes] == list(range(5))
    assert all(n["method"] == "test.note" and "id" not in n for n in notes)


async def test_inflight_cap_does_not_deadlock(
    rpc_client_factory: ClientFactory, thrum_kernel: Kernel
) -> None:
    blocked = await rpc_client_factory()
    other = await rpc_client_factory()
    n = 100
    await blocked.send_raw(b"".join(json.dumps(req("test.gate", id=i)).encode() + b"\n" for i in range(n)))
    with trio.fail_after(10):
        while await other.call("test.gate_waiting") < 64:
            await trio.sleep(0.01)
    await trio.sleep(0.1)
    # The reader stopped at the cap: exactly 64 are running, the rest wait unread.
    assert await other.call("test.gate_waiting") == 64
    assert (await other.call("health"))["status"] == "ok"
    await other.call("test.open_gate")
    ids = set()
    with trio.fail_after(10):
        for _ in range(n):
            ids.add((await blocked.read_message())["id"])
    assert ids == set(range(n))
    await probe(blocked)


# -- deadlines -------------------------------------------------------------------------------------


async def test_deadline_cancels_and_connection_stays_usable(rpc_client: AsyncClient) -> None:
    start = trio.current_time()
    with pytest.raises(ThrumError) as info:
        await rpc_client.call("test.deadline", {"seconds": 5})
    assert info.value.code == -32004
    assert info.value.data == {"timeout_ms": 200}
    assert trio.current_time() - start < 2
    await probe(rpc_client)


class SubmittingPlugin:
    """A handler that 'submits to the writer' and then outlives its deadline."""

    finished: bool = False

    @hookimpl
    def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
        async def submit_then_sleep(params: None, ctx: CallContext) -> str:
            ctx.mark_submitted()
            await trio.sleep(0.4)
            SubmittingPlugin.finished = True
            return "done"

        async def sleep_only(params: None, ctx: CallContext) -> str:
            await trio.sleep(0.4)
            return "unreachable"

        register("sub.submit", submit_then_sleep, deadline_s=0.1)
        register("sub.sleep", sleep_only, deadline_s=0.1)


async def test_submitted_call_runs_past_its_deadline(thrum_kernel_runner: Any, thrum_repo: Any) -> None:
    from thrum_core.testing import make_test_pm, open_async_client, register_test_plugin

    pm = make_test_pm(("rpc.health", "transports.unix_socket"))
    register_test_plugin(pm, SubmittingPlugin(), "sub")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    async with await open_async_client(kernel.status["socket_path"]) as client:
        assert await client.call("sub.submit") == "done"
        assert SubmittingPlugin.finished
        with pytest.raises(ThrumError) as info:
            await client.call("sub.sleep")
        assert info.value.code == -32004


async def test_method_default_deadline_comes_from_config(thrum_kernel: Kernel) -> None:
    assert thrum_kernel.dispatcher.default_deadline_s == thrum_kernel.config.daemon.request_timeout_ms / 1000


# -- callers and auth ------------------------------------------------------------------------------


class AuthPlugin:
    """Methods of every auth class, and a resolver for ``caller``/``session``."""

    @hookimpl
    def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
        async def whoami(params: Any, ctx: CallContext) -> dict[str, Any]:
            return {
                "caller": ctx.caller,
                "caller_agent_id": ctx.caller_agent_id,
                "params": params.model_dump(),
            }

        async def admin(params: None, ctx: CallContext) -> str:
            return "admin"

        class WhoParams(Params):
            note: str = ""

        register("auth.whoami", whoami, params=WhoParams, auth="caller")
        register("auth.session", whoami, params=WhoParams, auth="session")
        register("auth.admin", admin, auth="admin")

    @hookimpl
    def thrum_resolve_caller(self, ctx: CallContext, auth: str) -> Any:
        if ctx.caller_agent_id == "intruder":
            raise PermissionDenied("not_registered", "intruder is not registered")
        if ctx.caller_agent_id is None:
            return None
        return {"agent": ctx.caller_agent_id, "auth": auth}


async def test_caller_resolution(thrum_kernel_runner: Any, thrum_repo: Any) -> None:
    from thrum_core.testing import make_test_pm, register_test_plugin

    pm = make_test_pm(("rpc.health", "transports.unix_socket"))
    register_test_plugin(pm, AuthPlugin(), "auth")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)

    async def call(method: str, params: Any, transport: str = "unix") -> Any:
        out = await kernel.dispatcher.handle_bytes(json.dumps(req(method, params)), None, transport)
        assert out is not None
        return json.loads(out)

    reply = await call("auth.whoami", {"caller_agent_id": "ada", "note": "n"})
    assert reply["result"] == {
        "caller": {"agent": "ada", "auth": "caller"},
        "caller_agent_id": "ada",
        "params": {"note": "n"},  # caller_agent_id is taken out before validation
    }
    assert (await call("auth.session", {"caller_agent_id": "ada"}))["result"]["caller"]["auth"] == "session"
    reply = await call("auth.whoami", {})
    assert reply["error"]["code"] == -32002 and reply["error"]["data"]["reason"] == "no_caller"
    reply = await call("auth.whoami", {"caller_agent_id": "intruder"})
    assert reply["error"]["code"] == -32002 and reply["error"]["data"]["reason"] == "not_registered"
    assert (await call("auth.admin", None))["result"] == "admin"
    reply = await call("auth.admin", None, transport="ws")
    assert reply["error"]["code"] == -32002 and reply["error"]["data"]["reason"] == "forbidden"


async def test_caller_methods_without_a_resolver_are_refused(
    thrum_kernel_runner: Any, thrum_repo: Any
) -> None:
    from thrum_core.testing import make_test_pm, register_test_plugin

    class NoResolver:
        @hookimpl
        def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
            async def m(params: None, ctx: CallContext) -> None:
                return None

            register("nr.m", m, auth="caller")

    pm = make_test_pm(("rpc.health", "transports.unix_socket"))
    register_test_plugin(pm, NoResolver(), "nr")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    out = await kernel.dispatcher.handle_bytes(
        json.dumps(req("nr.m", {"caller_agent_id": "a"})), None, "unix"
    )
    assert out is not None
    assert json.loads(out)["error"]["data"]["reason"] == "no_caller"


# -- results that cannot be encoded ----------------------------------------------------------------


async def test_unserialisable_result_is_an_internal_error(thrum_kernel_runner: Any, thrum_repo: Any) -> None:
    from thrum_core.testing import make_test_pm, register_test_plugin

    class Bad:
        @hookimpl
        def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
            async def nan(params: None, ctx: CallContext) -> float:
                return math.nan

            async def obj(params: None, ctx: CallContext) -> object:
                return object()

            register("bad.nan", nan)
            register("bad.obj", obj)

    pm = make_test_pm(("rpc.health", "transports.unix_socket"))
    register_test_plugin(pm, Bad(), "bad")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    for method in ("bad.nan", "bad.obj"):
        out = await kernel.dispatcher.handle_bytes(json.dumps(req(method, id=9)).encode(), None, "unix")
        assert out is not None
        reply = json.loads(out)
        assert reply["id"] == 9 and reply["error"]["code"] == -32603


# -- framing (SPEC §8.1) ---------------------------------------------------------------------------


async def test_crlf_and_empty_lines(rpc_client: AsyncClient) -> None:
    await rpc_client.send_raw(
        b"\n\n\r\n   \n" + json.dumps(req("test.counter", id="crlf")).encode() + b"\r\n\n"
    )
    reply = await rpc_client.read_message()
    assert reply["id"] == "crlf"
    await probe(rpc_client)


async def test_request_split_across_writes(rpc_client: AsyncClient) -> None:
    data = json.dumps(req("test.echo", {"text": "split"}, id="s")).encode() + b"\n"
    for i in range(len(data)):
        await rpc_client.send_raw(data[i : i + 1])
        if i % 7 == 0:
            await trio.sleep(0)
    assert (await rpc_client.read_message())["result"] == {"text": "split"}


async def test_oversize_line_is_refused_and_connection_stays_usable(rpc_client: AsyncClient) -> None:
    big = padded_request(MAX_LINE + 1)
    await rpc_client.send_raw(big[: len(big) // 2])
    await rpc_client.send_raw(big[len(big) // 2 :] + b"\n")
    assert await rpc_client.read_line() == TOO_LARGE_REPLY
    await probe(rpc_client)


async def test_oversize_line_streamed_in_chunks(rpc_client: AsyncClient) -> None:
    # Far more than the limit, sent in 1 MiB pieces: answered once, not buffered.
    chunk = b"x" * (1 << 20)
    for _ in range(10):
        await rpc_client.send_raw(chunk)
    await rpc_client.send_raw(b"\n" + json.dumps(req("test.counter", id="after")).encode() + b"\n")
    assert await rpc_client.read_line() == TOO_LARGE_REPLY
    assert (await rpc_client.read_message())["id"] == "after"


async def test_line_of_exactly_the_limit_is_accepted(rpc_client: AsyncClient) -> None:
    line = padded_request(MAX_LINE, id="max")
    assert len(line) == MAX_LINE
    await rpc_client.send_raw(line + b"\n")
    reply = await rpc_client.read_message(timeout=30)
    assert reply["id"] == "max"
    assert len(reply["result"]["text"]) > MAX_LINE - 100


async def test_limit_counts_every_byte_before_the_newline(rpc_client: AsyncClient) -> None:
    # SPEC §8.1: "4 194 304 bytes before \n" -- a trailing \r counts, so this line is one byte too long.
    await rpc_client.send_raw(padded_request(MAX_LINE, id="maxcr") + b"\r\n")
    assert await rpc_client.read_line(timeout=30) == TOO_LARGE_REPLY
    await probe(rpc_client)


async def test_truncated_request_then_eof(rpc_client_factory: ClientFactory) -> None:
    client = await rpc_client_factory()
    await client.send_raw(b'{"jsonrpc":"2.0","method":"test.counter","id":1')
    await client.stream.send_eof()
    assert await client.read_line() is None  # no reply, the server closes
    other = await rpc_client_factory()
    await probe(other)


async def test_half_close_still_gets_replies(rpc_client: AsyncClient) -> None:
    await rpc_client.send_value(req("test.slow", {"seconds": 0.2}, id="a"))
    await rpc_client.send_value(req("test.counter", id="b"))
    await rpc_client.stream.send_eof()
    ids = {(await rpc_client.read_message())["id"], (await rpc_client.read_message())["id"]}
    assert ids == {"a", "b"}
    assert await rpc_client.read_message() is None


async def test_dropped_connection_mid_request(
    rpc_client_factory: ClientFactory, thrum_kernel: Kernel
) -> None:
    before = len(thrum_kernel.connections)
    client = await rpc_client_factory()
    await client.send_value(req("test.slow", {"seconds": 0.2}, id=1))
    await client.send_raw(b'{"jsonrpc":"2.0","meth')
    await client.aclose()
    other = await rpc_client_factory()
    await probe(other)
    await trio.sleep(0.4)  # the slow handler finishes and its reply has nowhere to go
    await probe(other)
    with trio.fail_after(5):
        while len(thrum_kernel.connections) > before + 1:
            await trio.sleep(0.01)


async def test_reset_connection_with_pending_replies(
    thrum_kernel: Kernel, rpc_client_factory: ClientFactory
) -> None:
    path = thrum_kernel.status["socket_path"]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
        sock.send(
            b"".join(json.dumps(req("test.emit", {"count": 200}, id=i)).encode() + b"\n" for i in range(20))
        )
    finally:
        sock.close()
    other = await rpc_client_factory()
    await trio.sleep(0.2)
    await probe(other)


async def test_other_connections_served_during_bad_input(rpc_client_factory: ClientFactory) -> None:
    bystander = await rpc_client_factory()
    attackers = [await rpc_client_factory() for _ in range(3)]
    for attacker in attackers:
        await attacker.send_raw(b"garbage\n" + padded_request(MAX_LINE + 10) + b"\n[]\n")
    for _ in range(20):
        assert (await bystander.call("test.echo", {"text": "still here"})) == {"text": "still here"}
    for attacker in attackers:
        assert (await attacker.read_message())["error"]["code"] == -32700
        assert await attacker.read_line() == TOO_LARGE_REPLY
        assert (await attacker.read_message())["error"]["data"]["reason"] == "empty_batch"
        await probe(attacker)


async def test_slow_consumer_is_disconnected(rpc_client_factory: ClientFactory, thrum_kernel: Kernel) -> None:
    # Notifications past the 256-frame outbound queue close the connection (SPEC §8.2).
    client = await rpc_client_factory()
    await client.send("test.emit", {"count": 5000})
    with trio.fail_after(10):
        while True:
            msg = await client.read_message()
            if msg is None or "id" in msg:
                break
    other = await rpc_client_factory()
    await probe(other)


# -- the inline fast path (requests run in the reader task until they suspend) ---------------------


async def test_suspending_request_in_a_pipelined_chunk_hands_reading_over(rpc_client: AsyncClient) -> None:
    lines = [req("test.slow", {"seconds": 0.4}, id="slow")] + [
        req("test.echo", {"text": str(i)}, id=i) for i in range(5)
    ]
    await rpc_client.send_raw(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    order = [(await rpc_client.read_message())["id"] for _ in range(6)]
    assert order[-1] == "slow"
    assert sorted(order[:-1]) == list(range(5))


class SyncSubmitPlugin:
    """A handler that marks itself submitted and finishes without suspending."""

    @hookimpl
    def thrum_register_rpc_methods(self, register: MethodRegistrar) -> None:
        async def sync_submit(params: None, ctx: CallContext) -> bool:
            ctx.mark_submitted()
            return bool(ctx.cancel_scope is not None and ctx.cancel_scope.shield)

        async def tighten(params: None, ctx: CallContext) -> str:
            # A handler may shorten its own deadline before it first suspends.
            assert ctx.cancel_scope is not None
            ctx.cancel_scope.deadline = trio.current_time() + 0.05
            await trio.sleep(5)
            return "unreachable"

        register("ss.submit", sync_submit)
        register("ss.tighten", tighten, deadline_s=30.0)


async def test_inline_submitted_request_does_not_leak_its_shield(
    thrum_kernel_runner: Any, thrum_repo: Any
) -> None:
    from thrum_core.testing import make_test_pm, open_async_client, register_test_plugin

    pm = make_test_pm(("rpc.health", "transports.unix_socket"))
    register_test_plugin(pm, conformance_plugin, "test")
    register_test_plugin(pm, SyncSubmitPlugin(), "ss")
    kernel = await thrum_kernel_runner.start(pm, thrum_repo)
    async with await open_async_client(kernel.status["socket_path"]) as client:
        for _ in range(3):
            assert await client.call("ss.submit") is True
        # The next request on the same connection still gets its deadline...
        with pytest.raises(ThrumError) as info:
            await client.call("test.deadline", {"seconds": 5})
        assert info.value.code == -32004
        assert await client.call("ss.submit") is True
        # ...and a deadline a handler set itself is respected.
        start = trio.current_time()
        with pytest.raises(ThrumError) as info:
            await client.call("ss.tighten")
        assert info.value.code == -32004
        assert trio.current_time() - start < 2
        await probe(client)
    # Teardown stops the kernel: a reader left shielded would hang it here.


async def test_a_flooding_connection_does_not_starve_others(rpc_client_factory: ClientFactory) -> None:
    flood = await rpc_client_factory()
    other = await rpc_client_factory()
    n = 3000
    await flood.send_raw(
        b"".join(json.dumps(req("test.echo", {"text": "x"}, id=i)).encode() + b"\n" for i in range(n))
    )
    await other.send_value(req("health", id="other"))
    received = 0
    other_done = False

    async def drain_flood() -> None:
        nonlocal received
        while received < n:
            await flood.read_message()
            received += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_flood)
        reply = await other.read_message(timeout=10)
        other_done = True
        answered_after = received
    assert other_done and reply["id"] == "other"
    assert answered_after < n, "the other connection waited for the whole flood"


async def test_inline_reply_is_not_held_back_by_blocked_requests(
    rpc_client_factory: ClientFactory,
) -> None:
    client = await rpc_client_factory()
    other = await rpc_client_factory()
    await other.call("test.close_gate")
    lines = [req("test.counter", id="first")] + [req("test.gate", id=i) for i in range(70)]
    lines.append(req("test.counter", id="last"))
    await client.send_raw(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    # The first reply goes out although 64 gates then fill the in-flight cap and the reader stops.
    first = await client.read_message(timeout=5)
    assert first["id"] == "first"
    with trio.fail_after(5):
        while await other.call("test.gate_waiting") < 64:
            await trio.sleep(0.01)
    await other.call("test.open_gate")
    ids = {(await client.read_message())["id"] for _ in range(71)}
    assert ids == set(range(70)) | {"last"}


async def test_pipelined_replies_are_coalesced_but_complete(rpc_client: AsyncClient) -> None:
    n = 2000
    await rpc_client.send_raw(
        b"".join(json.dumps(req("test.counter", id=i)).encode() + b"\n" for i in range(n))
    )
    ids = [(await rpc_client.read_message())["id"] for _ in range(n)]
    assert ids == list(range(n)), "synchronous requests on one connection are answered in order"


async def test_idle_connections_are_closed(
    thrum_kernel: Kernel, rpc_client_factory: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thrum_plugins.transports import unix_socket

    monkeypatch.setattr(unix_socket, "IDLE_TIMEOUT_S", 0.2)
    transport = next(
        t for t in thrum_kernel._transport_objects if isinstance(t, unix_socket.UnixSocketTransport)
    )
    idle = await rpc_client_factory()
    attached = await rpc_client_factory()
    await probe(idle)
    await probe(attached)
    with trio.fail_after(5):
        while len(transport.connections) < 2:
            await trio.sleep(0.01)
    for conn in transport.connections:
        conn.last_activity -= 1.0
    # Connections register in accept order: the second one is `attached`.
    served = [c for c in thrum_kernel.connections.values() if c in transport.connections]
    served[1].session_id = "ses_attached"
    monkeypatch.setattr(unix_socket, "IDLE_SWEEP_S", 0.05)
    # The sweeper sleeps IDLE_SWEEP_S between rounds; run one round now.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._sweep_idle)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert await idle.read_line(timeout=5) is None, "the idle connection was closed"
    await probe(attached)
