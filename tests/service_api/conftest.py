"""The real `snapshot-agent serve`, started by the tests on a socket in a temp dir (and on
127.0.0.1 with trustme-made mutual TLS), and plain HTTP clients for it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from snapshot_agent.service.auth import token_sha256

from ..conftest import REPO

READ_TOKEN = "read-token-0123456789abcdef"
MANAGE_TOKEN = "manage-token-0123456789abcdef"
TOKENS = [
    {"name": "dashboard", "scope": "read", "sha256": token_sha256(READ_TOKEN)},
    {"name": "supervisor", "scope": "manage", "sha256": token_sha256(MANAGE_TOKEN)},
]
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")},
    "SNAPSHOT_AGENT_CONFIG": os.devnull,
    "PYTHONPATH": str(REPO),
}


@dataclass
class Reply:
    """An HTTP response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document; asserts that this is one."""
        assert self.headers.get("content-type") == "application/problem+json", self
        doc = self.json()
        assert {"type", "title", "status", "detail"} <= set(doc) and doc["status"] == self.status
        return doc  # type: ignore[no-any-return]


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on `conn`, its whole response."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = dict(headers or {})
    if isinstance(body, dict):
        sent.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


@dataclass
class Certs:
    """A CA that signs the server's and the clients' certificates, and a stranger CA."""

    dir: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    other: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(self.server_cert)
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(self.server_cert, append=True)
        server.private_key_pem.write_to_path(self.server_key)
        self.ca.cert_pem.write_to_path(self.ca_pem)
        self.ca.issue_cert("supervisor@example.test").private_key_and_cert_chain_pem.write_to_path(
            self.client_pem
        )
        self.other.issue_cert("intruder@example.test").private_key_and_cert_chain_pem.write_to_path(
            self.stranger_pem
        )

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def ca_pem(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def client_pem(self) -> Path:
        return self.dir / "client.pem"

    @property
    def stranger_pem(self) -> Path:
        return self.dir / "stranger.pem"

    def api(self, port: int | None = None, key: Path | None = None) -> dict[str, Any]:
        """api: TCP on 127.0.0.1 (a free port by default) with these certificates."""
        return {
            "listen": f"127.0.0.1:{port or free_port()}",
            "tls": {
                "cert": str(self.server_cert),
                "key": str(key or self.server_key),
                "client_ca": str(self.ca_pem),
            },
        }

    def client_context(self, cert: Path | None) -> ssl.SSLContext:
        """What a client uses: trusts the CA, presents `cert` (None: no certificate)."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if cert is not None:
            context.load_cert_chain(str(cert))
        return context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fast_checks(root: Path, **more: Any) -> dict[str, Any]:
    """checks: the node's trees in an empty directory (most checks skip at once), no cloud."""
    node = root / "node"
    node.mkdir(exist_ok=True)
    roots = {k: str(node / k) for k in ("proc", "sys", "etc", "run")}
    return {
        "deadline_s": 30,
        "roots": {"root": str(node), "var_log": str(node / "log"), **roots},
        "cloud": {"enabled": False},
        **more,
    }


class Server:
    """One `snapshot-agent serve` process with its own state_dir, socket and config."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.local_dir = self.state_dir / "snapshots"
        self.socket = root / "run" / "agent.sock"
        self.config_path = root / "config.yaml"
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.configure(**config)

    def configure(self, **config: Any) -> None:
        """Write the config: temp paths, fast checks, the tokens; `config` on top."""
        api = {"unix_socket": str(self.socket), "tokens": TOKENS, **config.pop("api", {})}
        port = str(api.get("listen", "")).rpartition(":")[2]
        self.port = int(port) if port.isdigit() else None
        doc = {
            "state_dir": str(self.state_dir),
            "storage": {"local_dir": str(self.local_dir)},
            "checks": fast_checks(self.root),
            "api": api,
            **config,
        }
        self.config_path.write_text(json.dumps(doc, indent=2))  # JSON is YAML

    def start(self, env: dict[str, str] | None = None, timeout: float = 60) -> None:
        """Start it and wait until it answers on the socket."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snapshot_agent", "serve", "--config", self.config_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env or ENV,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.logs()}"
            with contextlib.suppress(OSError):
                if self.get("/healthz").status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer in {timeout} s: {self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """A request over the Unix socket."""
        return exchange(UnixConnection(self.socket), method, path, body, headers)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def create(self, body: dict[str, Any] | None = None) -> Reply:
        return self.request("POST", "/v1/snapshots", body if body is not None else {})

    def wait_until_ended(self, record_id: int, timeout: float = 120) -> dict[str, Any]:
        """Poll the record until it is no longer processing; the record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.get(f"/v1/snapshots/{record_id}")
            assert reply.status == 200, reply
            record = reply.json()
            if record["status"] != "processing":
                return record  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"snapshot {record_id} still processing after {timeout} s")

    def snapshot(self) -> dict[str, Any]:
        """Take one snapshot and wait for its end; the record."""
        reply = self.create()
        assert reply.status == 202, reply
        return self.wait_until_ended(reply.json()["id"])

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal it and wait for its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket's path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers(short_dir: Path) -> Iterator[list[Server]]:
    """Servers a test starts; each is killed at the end whatever happened."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def serve(short_dir: Path, servers: list[Server]) -> Any:
    """Make (not start) a server under short_dir with a config; killed at the end."""

    def make(**config: Any) -> Server:
        server = Server(short_dir, **config)
        servers.append(server)
        return server

    return make


@pytest.fixture
def certs(short_dir: Path) -> Certs:
    directory = short_dir / "certs"
    directory.mkdir()
    return Certs(directory)
