"""Bad input gets a 4xx problem document (or a closed connection), the store is untouched,
and the service keeps serving; a slow client holds up no one else."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.service.listeners import MAX_CONNECTIONS, MAX_PER_PEER
from snapshot_agent.service.server import HEADER_TIMEOUT_S

from .conftest import Certs, Reply, Server, UnixConnection, exchange

BAD_CREATES = [
    (b"{not json", 400, "malformed-body"),
    (b'{"redact_secrets": "yes"}', 422, "invalid-body"),
    (b'{"include_iggy": 1}', 422, "invalid-body"),
    (b'{"redact_secrets": null}', 422, "invalid-body"),
    (b'{"redact_secrets": true, "upload_everything": true}', 422, "invalid-body"),
    (b"[true, true]", 422, "invalid-body"),
    (b'"redact_secrets"', 422, "invalid-body"),
    (b"\xff\xfe{}", 400, "malformed-body"),
    (b'{"redact_secrets": false, "redact_secrets": true}', 400, "malformed-body"),
    (b'{"redact_secrets": true, "\xff": true}', 400, "malformed-body"),
]
BAD_PATHS = [
    ("/v1/snapshots/..%2F..%2Fetc", 400),
    ("/v1/snapshots/..%2F..%2Fetc/download", 400),
    ("/v1/snapshots/%2e%2e/%2e%2e/etc/passwd", 404),
    ("/v1/snapshots/0", 400),
    ("/v1/snapshots/-1", 400),
    ("/v1/snapshots/1.5", 400),
    ("/v1/snapshots/1e3", 400),
    ("/v1/snapshots/99999999999999999999999", 400),
    ("/v1/snapshots/9223372036854775807", 404),
    ("/v1/snapshots/%00", 400),
    ("/v1/snapshots?page=0", 400),
    ("/v1/snapshots?page=1000000000", 400),
    ("/v1/snapshots?page=-1", 400),
    ("/v1/snapshots?page=abc", 400),
    ("/v1/snapshots?page=1&page=2", 400),
    ("/v1/snapshots?results=0", 400),
    ("/v1/snapshots?results=101", 400),
    ("/v1/snapshots?results=1e2", 400),
    ("/nothing/here", 404),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server for the module: every test also checks that it is still serving."""
    root = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))
    server = Server(root)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


def still_serving(server: Server) -> None:
    assert server.get("/healthz").status == 200
    assert server.get("/v1/snapshots").json()["total_results"] == 0  # nothing half-made


@pytest.mark.parametrize(("body", "status", "kind"), BAD_CREATES)
def test_bad_bodies_are_problems(server: Server, body: bytes, status: int, kind: str) -> None:
    reply = server.request("POST", "/v1/snapshots", body, {"Content-Type": "application/json"})
    problem = reply.problem
    assert problem["status"] == status and problem["type"].endswith(kind), problem
    assert "\n" not in problem["detail"]
    still_serving(server)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_refused(server: Server, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = server.request("POST", "/v1/snapshots", b'{"redact_secrets": false}', headers)
    problem = reply.problem
    assert problem["status"] == 415 and problem["type"].endswith("unsupported-media-type")
    assert "application/json" in problem["detail"]
    said = f"a body sent as {content_type};" if content_type else "without a Content-Type;"
    assert said in problem["detail"]
    still_serving(server)


@pytest.mark.parametrize(("path", "status"), BAD_PATHS)
def test_bad_paths_and_queries_are_problems(server: Server, path: str, status: int) -> None:
    assert server.get(path).problem["status"] == status
    still_serving(server)


def test_a_ten_megabyte_body_is_refused_unread(server: Server) -> None:
    body = b'{"redact_secrets": true, "x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    try:
        reply = server.request("POST", "/v1/snapshots", body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before it was all sent: a closed connection is an answer too
    else:
        assert reply.problem["status"] == 413
    still_serving(server)


def test_a_chunked_body_past_the_limit_is_refused(server: Server) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(server.socket))
        sock.sendall(
            b"POST /v1/snapshots HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 65536
        try:
            for _ in range(40):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    still_serving(server)


def test_methods_not_in_the_api_are_problems(server: Server) -> None:
    reply = server.request("PUT", "/v1/snapshots")
    assert reply.problem["status"] == 405 and "POST" in reply.headers["allow"]
    assert server.request("PATCH", "/v1/snapshots/1").problem["status"] == 405
    still_serving(server)


def test_garbage_instead_of_http_closes_that_connection_only(server: Server) -> None:
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 10, b"GET /" + b"a" * 20000):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(server.socket))
            sock.sendall(garbage + b"\r\n\r\n")
            answer = sock.recv(4096)
        assert answer == b"" or answer[:10] in (b"HTTP/1.0 4", b"HTTP/1.1 4"), answer[:100]
    still_serving(server)


def test_a_slowloris_holds_up_no_one_and_is_cut_off(server: Server) -> None:
    """Headers sent a byte at a time, never finished: others are served meanwhile, and
    the slow connections are closed once HEADER_TIMEOUT_S has passed."""
    request = b"GET /v1/snapshots HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 1000
    slow = []
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(server.socket))
        slow.append(sock)
    started = time.monotonic()
    try:
        for byte in request:
            try:
                for sock in slow:
                    sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            before = time.monotonic()
            assert server.get("/v1/snapshots").status == 200
            assert time.monotonic() - before < 2
            assert time.monotonic() - started < HEADER_TIMEOUT_S + 10, "never cut off"
            time.sleep(0.2)
        else:
            raise AssertionError("the slow client was never cut off")
    finally:
        for sock in slow:
            sock.close()
    assert time.monotonic() - started >= HEADER_TIMEOUT_S - 1
    still_serving(server)


def turned_away(connect: Callable[[], Reply]) -> Reply:
    """The first 503 `connect` gets: until the server has accepted the connections that
    fill a limit, one more may still get in."""
    deadline = time.monotonic() + 10
    while (reply := connect()).status != 503:
        assert time.monotonic() < deadline, "the connection past the limit was let in"
        time.sleep(0.05)
    assert reply.problem["status"] == 503 and reply.headers["retry-after"] == "5"
    return reply


def test_one_peer_past_its_share_is_turned_away_then_let_in(server: Server) -> None:
    idle = []
    try:
        for _ in range(MAX_PER_PEER):  # all from this test's uid
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(server.socket))
            idle.append(sock)
        turned_away(lambda: exchange(UnixConnection(server.socket), "GET", "/healthz"))
        # A client slow to send its request still reads why it was turned away.
        late = UnixConnection(server.socket)
        late.connect()
        time.sleep(0.2)
        assert exchange(late, "GET", "/healthz").status == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while server.get("/healthz").status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_flood_from_one_address_leaves_room_for_the_others(serve: Any, certs: Certs) -> None:
    # Over TCP the peer is the address: 127.0.0.2 and .3 are this machine's loopback too.
    server: Server = serve(api=certs.api())
    server.start()
    assert server.port is not None
    port, context = server.port, certs.client_context(certs.client_pem)

    def request(source: str) -> Reply:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=30, source_address=(source, 0)
        )
        return exchange(conn, "GET", "/healthz")

    def slow(source: str) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), 30, source_address=(source, 0))
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end
        return sock

    flood: list[ssl.SSLSocket] = []
    try:
        flood += [slow("127.0.0.2") for _ in range(MAX_PER_PEER)]
        turned_away(lambda: request("127.0.0.2"))
        assert request("127.0.0.1").status == 200  # the others still get in
        flood += [slow("127.0.0.3") for _ in range(MAX_CONNECTIONS - MAX_PER_PEER)]
        turned_away(lambda: request("127.0.0.1"))  # and the listener's own limit holds
    finally:
        for sock in flood:
            sock.close()
    deadline = time.monotonic() + 10
    while request("127.0.0.1").status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.stop() == 0
