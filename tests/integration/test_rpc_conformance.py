"""JSON-RPC 2.0 conformance of a real daemon process (SPEC §8.1, §8.3, §8.4).

One ``thrum daemon run`` subprocess per module, with the ``test.*`` methods of
:mod:`thrum_core.testing.conformance_plugin` advertised to it as a real entry
point.  Clients are the blocking stdlib client and raw sockets.  After every
bad input the same connection (where it must stay usable) and a fresh one
still get ``health`` answered, and a bystander connection opened at the start
is checked at the end.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from thrum_core.client import Client
from thrum_core.testing import make_thrum_repo
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
from thrum_core.testing.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    repo = make_thrum_repo(tmp_path_factory.mktemp("conformance"))
    proc = DaemonProcess(
        repo,
        extra_entry_points={"test": "thrum_core.testing.conformance_plugin"},
        load_plugins=["rpc.health", "transports.unix_socket"],
    )
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"daemon exit status {code}:\n{proc.output()}"


@pytest.fixture(scope="module")
def bystander(daemon: DaemonProcess) -> Iterator[Client]:
    """A connection opened before the other tests and checked after them."""
    client = daemon.client()
    assert client.call("health")["status"] == "ok"
    yield client
    assert client.call("test.echo", {"text": "still here"}) == {"text": "still here"}
    client.close()


@pytest.fixture
def client(daemon: DaemonProcess, bystander: Client) -> Iterator[Client]:
    with daemon.client() as c:
        yield c
    assert daemon.alive(), daemon.output()
    with daemon.client() as fresh:
        assert fresh.call("health")["status"] == "ok"


def raw_line(client: Client, timeout: float = 10.0) -> bytes:
    line = client._read_line(time.monotonic() + timeout)
    assert line is not None, "timed out waiting for a line"
    return line


def probe(client: Client) -> None:
    """The connection answers health, and nothing unexpected comes first."""
    client.send_raw(json.dumps(req("health", id="probe")).encode() + b"\n")
    reply = json.loads(raw_line(client))
    assert reply["id"] == "probe", f"unexpected line before the probe's reply: {reply!r}"
    assert reply["result"]["status"] == "ok"


# -- the conformance table -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, client: Client) -> None:
    client.send_raw(case.line + b"\n")
    if case.expect is NO_REPLY:
        time.sleep(0.05)
        probe(client)
        return
    reply = client.read_message()
    assert matches(reply, case.expect), f"{case.name}: got {reply!r}"
    probe(client)


def test_health_shape(client: Client, daemon: DaemonProcess) -> None:
    health = client.call("health")
    assert health["status"] == "ok"
    assert health["pid"] == daemon.pid
    assert health["identity"]["repo_path"] == str(daemon.repo.paths.main_root)
    for key in ("version", "uptime_ms", "repo_id", "daemon_id", "sync_state", "local_only", "started_at"):
        assert key in health


def test_many_requests_on_one_connection(client: Client) -> None:
    for i in range(200):
        assert client.call("test.echo", {"text": str(i)}) == {"text": str(i)}


def test_pipelined_requests(client: Client) -> None:
    n = 1000
    client.send_raw(
        b"".join(json.dumps(req("test.echo", {"text": str(i)}, id=i)).encode() + b"\n" for i in range(n))
    )
    got = {}
    for _ in range(n):
        reply = client.read_message()
        assert isinstance(reply, dict)
        got[reply["id"]] = reply["result"]["text"]
    assert got == {i: str(i) for i in range(n)}


def test_out_of_order_replies(client: Client) -> None:
    client.send_raw(json.dumps(req("test.slow", {"seconds": 0.5}, id="slow")).encode() + b"\n")
    client.send_raw(json.dumps(req("test.echo", {"text": "fast"}, id="fast")).encode() + b"\n")
    first = client.read_message()
    second = client.read_message()
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["id"], second["id"]) == ("fast", "slow")


def test_mixed_batch(client: Client) -> None:
    before = client.call("test.counter")
    client.send_raw(json.dumps(MIXED_BATCH).encode() + b"\n")
    reply = client.read_message()
    assert isinstance(reply, list)
    by_id = {r["id"]: r for r in reply}
    assert len(reply) == len(by_id) == len(MIXED_BATCH_REPLIES)
    for rid, expected in MIXED_BATCH_REPLIES.items():
        assert matches(by_id[rid], expected), (rid, by_id[rid])
    assert client.call("test.counter") == before + 1
    probe(client)


def test_all_notification_batch_runs_and_sends_nothing(client: Client) -> None:
    before = client.call("test.counter")
    client.send_raw(json.dumps([note("test.bump") for _ in range(5)]).encode() + b"\n")
    time.sleep(0.1)
    probe(client)
    assert client.call("test.counter") == before + 5


def test_batch_elements_run_concurrently(client: Client) -> None:
    start = time.monotonic()
    client.send_raw(
        json.dumps([req("test.slow", {"seconds": 0.3}, id=i) for i in range(20)]).encode() + b"\n"
    )
    reply = client.read_message()
    assert isinstance(reply, list) and len(reply) == 20
    assert time.monotonic() - start < 2.0


def test_raising_handler_fails_only_that_call(client: Client) -> None:
    client.send_raw(
        json.dumps(req("test.boom", id="b")).encode()
        + b"\n"
        + json.dumps(req("test.counter", id="c")).encode()
        + b"\n"
    )
    replies = {r["id"]: r for r in (client.read_message(), client.read_message()) if isinstance(r, dict)}
    assert replies["b"]["error"]["code"] == -32603
    assert "result" in replies["c"]


def test_timeout_then_connection_usable(client: Client) -> None:
    client.send_raw(json.dumps(req("test.deadline", {"seconds": 5}, id="t")).encode() + b"\n")
    start = time.monotonic()
    reply = client.read_message()
    assert isinstance(reply, dict)
    assert reply["error"] == {
        "code": -32004,
        "message": reply["error"]["message"],
        "data": {"timeout_ms": 200},
    }
    assert time.monotonic() - start < 2.0
    probe(client)


def test_suspending_requests_one_after_another_then_a_timeout_then_pipelined(client: Client) -> None:
    # Each request suspends, so another task takes over reading each time (a parked one when
    # there is one); a timed-out request must not leave the connection without a reader.
    for i in range(30):
        assert client.call("test.slow", {"seconds": 0.001, "tag": str(i)}) == {"slept": 0.001, "tag": str(i)}
    client.send_raw(json.dumps(req("test.deadline", {"seconds": 5}, id="t")).encode() + b"\n")
    reply = client.read_message()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32004
    for i in range(5):
        assert client.call("test.slow", {"seconds": 0.001, "tag": str(i)})["tag"] == str(i)
    client.send_raw(
        b"".join(
            json.dumps(req("test.slow", {"seconds": 0.01 * (i % 3), "tag": str(i)}, id=i)).encode() + b"\n"
            for i in range(40)
        )
    )
    got = set()
    for _ in range(40):
        reply = client.read_message()
        assert isinstance(reply, dict) and reply["result"]["tag"] == str(reply["id"])
        got.add(reply["id"])
    assert got == set(range(40))
    probe(client)


def test_notifications_interleave(client: Client) -> None:
    assert client.call("test.emit", {"count": 10}) == {"sent": 10}
    notes = [client.next_notification(5) for _ in range(10)]
    assert [n["params"]["i"] for n in notes if n] == list(range(10))


# -- framing ---------------------------------------------------------------------------------------


def test_crlf_and_blank_lines(client: Client) -> None:
    client.send_raw(b"\r\n\n  \n" + json.dumps(req("test.counter", id="crlf")).encode() + b"\r\n\n")
    reply = client.read_message()
    assert isinstance(reply, dict) and reply["id"] == "crlf"
    probe(client)


def test_oversize_line_exact_reply_and_connection_usable(client: Client) -> None:
    client.send_raw(padded_request(MAX_LINE + 1) + b"\n")
    assert raw_line(client, 30) == TOO_LARGE_REPLY
    probe(client)


def test_huge_line_streamed_is_discarded(client: Client) -> None:
    chunk = b"y" * (1 << 20)
    for _ in range(16):
        client.send_raw(chunk)
    client.send_raw(b"\n")
    assert raw_line(client, 30) == TOO_LARGE_REPLY
    probe(client)


def test_line_of_exactly_4_mib_is_served(client: Client) -> None:
    client.send_raw(padded_request(MAX_LINE, id="max") + b"\n")
    reply = client.read_message(timeout=30)
    assert isinstance(reply, dict) and reply["id"] == "max"


def test_truncated_request_then_eof(daemon: DaemonProcess) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket_path))
    sock.sendall(b'{"jsonrpc":"2.0","method":"health","id":1')
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(1024) == b""  # closed without a reply
    sock.close()
    with daemon.client() as c:
        probe(c)


def test_dropped_connection_mid_request(daemon: DaemonProcess) -> None:
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket_path))
        sock.sendall(
            json.dumps(req("test.slow", {"seconds": 0.2})).encode() + b"\n" + b'{"jsonrpc":"2.0","me'
        )
        sock.close()
    with daemon.client() as c:
        probe(c)
        time.sleep(0.3)
        probe(c)


def test_half_close_gets_pending_replies(daemon: DaemonProcess) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket_path))
    sock.sendall(json.dumps(req("test.slow", {"seconds": 0.2}, id="a")).encode() + b"\n")
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert json.loads(data)["id"] == "a"


def test_inflight_cap_does_not_deadlock(daemon: DaemonProcess) -> None:
    with daemon.client() as blocked, daemon.client() as other:
        other.call("test.close_gate")
        n = 100
        blocked.send_raw(b"".join(json.dumps(req("test.gate", id=i)).encode() + b"\n" for i in range(n)))
        deadline = time.monotonic() + 10
        while other.call("test.gate_waiting") < 64 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert other.call("test.gate_waiting") == 64
        assert other.call("health")["status"] == "ok"
        other.call("test.open_gate")
        ids = set()
        for _ in range(n):
            reply = blocked.read_message()
            assert isinstance(reply, dict)
            ids.add(reply["id"])
        assert ids == set(range(n))
        probe(blocked)
        other.call("test.close_gate")


def test_many_connections_concurrently(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            with daemon.client() as c:
                for i in range(50):
                    assert c.call("test.echo", {"text": f"{k}-{i}"}) == {"text": f"{k}-{i}"}
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_bad_input_on_many_connections_while_others_work(daemon: DaemonProcess) -> None:
    stop = threading.Event()
    failures: list[Any] = []
    calls = [0]

    def good() -> None:
        with daemon.client() as c:
            while not stop.is_set():
                try:
                    assert c.call("test.echo", {"text": "ok"}) == {"text": "ok"}
                    calls[0] += 1
                except BaseException as exc:
                    failures.append(exc)
                    return

    thread = threading.Thread(target=good)
    thread.start()
    try:
        payloads = [
            b"garbage\n",
            b"[]\n",
            padded_request(MAX_LINE + 5) + b"\n",
            b'{"jsonrpc":"2.0","method":"test.boom","id":1}\n',
            b'{"jsonrpc":"2.0","method":"test.deadline","params":{"seconds":1},"id":2}\n',
            b"\xff\xfe\n",
            b'{"jsonrpc":"2.0","method":"test.slow","params":{"seconds":1},"id":3}',  # dropped mid-request
        ]
        for payload in payloads:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket_path))
            sock.sendall(payload)
            sock.close()
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join(30)
    assert not failures, failures
    assert calls[0] > 0
    with daemon.client() as c:
        probe(c)


def test_graceful_stop_removes_runtime_files(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = make_thrum_repo(tmp_path_factory.mktemp("stop"))
    proc = DaemonProcess(repo, load_plugins=["rpc.health", "transports.unix_socket"])
    proc.start()
    socket_path = proc.socket_path
    assert socket_path.exists() and repo.paths.pid_file.exists()
    assert (socket_path.stat().st_mode & 0o777) == 0o600
    assert proc.stop() == 0
    assert not socket_path.exists()
    assert not repo.paths.pid_file.exists()
    assert repo.paths.lock_file.exists()
