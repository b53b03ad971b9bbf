"""Tests of the storage sinks, and the real parts they run against.

The fixtures, which the test modules import: `moto`, `proxy`, and `aws_credentials`
(autouse). `MotoS3` is moto's S3 server on 127.0.0.1 (an ephemeral port), spoken to over HTTP.
`FaultProxy` is a TCP proxy on 127.0.0.1 between a client and that server which fails
chosen requests: a connection reset (RST), an HTTP 503 SlowDown or 403, or a stall (the
request is read and never answered). The moto server closes the connection after every
response, so each connection carries one request and a fault hits exactly the request
it was aimed at.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

LOCALHOST = "127.0.0.1"
#: A fault's answer: S3's error document, the connection closed after it.
ERROR_BODY = "<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
ANSWERS = {
    "503": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    "403": ("403 Forbidden", "AccessDenied", "Request has expired"),
    "no-such-upload": ("404 Not Found", "NoSuchUpload", "The specified upload does not exist."),
}


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the environment; no shared files, no instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class MotoS3:
    """moto's S3 server in this process, on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.address = (host, port)
        self.endpoint = f"http://{host}:{port}"

    def client(self, endpoint: str | None = None) -> Any:
        """A plain boto3 client, for the test's own look at the store."""
        import boto3

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1")

    def bucket(self) -> str:
        """A new, empty bucket (moto's state is shared by every server of the process)."""
        name = f"diag-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Shut the server down."""
        self._server.stop()


@dataclass
class Rule:
    """Fail the next `times` requests whose request line `pattern` matches (re.search)."""

    pattern: str
    fault: str  # reset | 503 | 403 | no-such-upload | stall | lost (done, answer dropped)
    times: int


@dataclass
class FaultProxy:
    """A TCP proxy on 127.0.0.1 that fails the requests its rules name; others pass."""

    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    #: (request line, what happened: pass or the fault), in order of arrival.
    log: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((LOCALHOST, 0))
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT of the proxy."""
        return f"http://{LOCALHOST}:{self._listener.getsockname()[1]}"

    def fail(self, pattern: str, fault: str, times: int = 1) -> None:
        """Add a rule: the next `times` requests matching `pattern` get `fault`."""
        with self._lock:
            self.rules.append(Rule(pattern, fault, times))

    def seen(self, pattern: str, outcome: str | None = None) -> int:
        """How many requests `pattern` matches arrived (with that outcome, if given)."""
        return sum(
            1 for line, got in self.log if re.search(pattern, line) and outcome in (None, got)
        )

    def stop(self) -> None:
        """Stop accepting; connections held by a stall are let go."""
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _choose(self, line: str) -> str:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and re.search(rule.pattern, line):
                    rule.times -= 1
                    self.log.append((line, rule.fault))
                    return rule.fault
            self.log.append((line, "pass"))
            return "pass"

    def _serve(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            head = _read_head(client)
            if head is None:
                return
            fault = self._choose(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if fault == "pass":
                self._pass(client, head)
            elif fault == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif fault == "stall":
                self._drain(client, until_closed=True)
            elif fault == "lost":
                self._lose_answer(client, head)
            else:
                self._answer(client, fault)

    def _pass(self, client: socket.socket, head: bytes) -> None:
        with contextlib.closing(socket.create_connection(self.upstream)) as upstream:
            upstream.sendall(head)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(30)

    def _lose_answer(self, client: socket.socket, head: bytes) -> None:
        """The store does the request; its answer is dropped and the client reset."""
        _, _, sent = head.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        missing = int(length[1]) - len(sent) if length else 0
        while missing > 0:  # the rest of the body, read here: no thread left on the socket
            more = client.recv(min(missing, 1 << 16))
            if not more:
                return
            missing -= len(more)
            head += more
        with contextlib.closing(socket.create_connection(self.upstream)) as upstream:
            upstream.sendall(head)
            answer = b""
            while b"\r\n\r\n" not in answer:  # the store has answered: the request is done
                more = upstream.recv(1 << 16)
                if not more:
                    break
                answer += more
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _answer(self, client: socket.socket, fault: str) -> None:
        status, code, message = ANSWERS[fault]
        body = ERROR_BODY.format(code=code, message=message).encode()
        client.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        client.shutdown(socket.SHUT_WR)
        self._drain(client, until_closed=False)

    def _drain(self, client: socket.socket, *, until_closed: bool) -> None:
        """Read and drop what the client sends: until it closes (a stall), or it pauses."""
        while not self._stopped.is_set():
            ready, _, _ = select.select([client], [], [], 0.2 if until_closed else 2.0)
            if not ready and not until_closed:
                return
            if ready:
                try:
                    if not client.recv(1 << 16):
                        return
                except OSError:
                    return


def _read_head(sock: socket.socket) -> bytes | None:
    """The request line and headers (with whatever body bytes came along); None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            more = sock.recv(1 << 16)
        except OSError:
            return None
        if not more:
            return None
        data += more
    return data


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until `source` ends, then end `target`'s direction too."""
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module", name="moto")
def moto_fixture() -> Iterator[MotoS3]:
    """A moto S3 server for the tests of a module."""
    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture(name="proxy")
def proxy_fixture(moto: MotoS3) -> Iterator[FaultProxy]:
    """A fault proxy in front of the moto server; it fails nothing until told to."""
    faults = FaultProxy(moto.address)
    yield faults
    faults.stop()
