"""A fake Iggy HTTP API on 127.0.0.1 with the shapes of the Iggy sources, and failure modes.

Endpoints (apache/iggy; the file each shape comes from):
- GET /ping -> "pong" (server-0.8.0:core/server/src/http/system.rs; main:
  core/server/src/http/handlers.rs `ping`).
- POST /users/login {"username", "password"} (core/common/src/http/users/login_user.rs)
  and POST /personal-access-tokens/login {"token"} (core/common/src/http/
  personal_access_tokens/login_with_personal_access_token.rs) -> IdentityInfo
  {"user_id", "access_token": {"token", "expiry"}} (core/common/src/types/user/
  user_identity_info.rs). Wrong credentials -> 400 {"id": 42, "code":
  "invalid_credentials", ...}; a bad token -> 401 (server-0.8.0:core/server/src/http/
  error.rs, iggy_error.rs).
- GET /stats -> Stats (core/common/src/types/stats/mod.rs): public in 0.5/0.6, bearer
  from 0.7 (core/server/src/http/jwt/middleware.rs PUBLIC_PATHS); 0.8.0 and main add
  threads_count, free_disk_space, total_disk_space. IggyByteSize values are byte-unit
  5's `{:#}` strings (see `human_size`), durations u64 microseconds.
- GET /metrics -> prometheus-client text (server-0.8.0:core/server/src/streaming/
  diagnostics/metrics.rs); public in 0.8.0, authenticated on main (core/server/src/
  http.rs: every route but /ping authenticates).
- POST /snapshot {"compression", "snapshot_types"} -> application/zip with one
  `<type>.txt` per type (server-0.8.0:core/server/src/shard/system/snapshot/mod.rs;
  names from core/common/src/types/snapshot/mod.rs Display).

Failure modes, chosen per instance (`FakeIggy(failures={...})`): see FAILURES.
"Down" is `tests.conftest.closed_port_url()`: a port nothing listens on.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import ssl
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USERNAME = "snapshot"
PASSWORD = "pa55-w0rd-from-a-file"
PAT = "pat-0123456789abcdef0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjJ9.c2lnbmF0dXJl"  # what the fake hands out

#: Failure modes a FakeIggy can be told to show.
FAILURES = frozenset(
    {
        "login_401",  # every login answers 401 (a reverse proxy, or a revoked token)
        "login_garbage",  # login answers 200 with a body that is not IdentityInfo
        "stats_401",  # /stats refuses every token (expired, or from another server)
        "stats_403",  # the user lacks read_servers (Iggy's 403 Unauthorized)
        "stats_malformed",  # /stats answers 200 with broken JSON
        "stats_html",  # /stats answers 502 with an HTML error page (a proxy)
        "stats_truncated",  # Content-Length promises more than is sent, then close
        "stats_garbage_fields",  # JSON, but counts are strings and sizes nonsense
        "stats_numbers",  # byte sizes as plain integers (Iggy reads them too)
        "metrics_off",  # [http.metrics] enabled = false: 404
        "snapshot_huge",  # /snapshot answers a zip larger than the client's cap
        "snapshot_garbage",  # /snapshot answers 200 with bytes that are no zip
        "headers_drip",  # every answer's headers trickle, one byte per DRIP_S, for DRIP_FOR_S
    }
)

#: "headers_drip": seconds between two header bytes, and how long the trickle lasts.
DRIP_S = 0.05
DRIP_FOR_S = 5.0

#: Versions and what differs between their /stats and auth rules.
VERSIONS = {
    # version: (iggy_server_version, semver, /stats public, /metrics public, disk fields)
    "0.5": ("0.5.0", 5000, True, True, False),
    "0.6": ("0.6.0", 6000, True, True, False),
    "0.8": ("0.8.0", 8000, False, True, True),
    "main": ("0.9.0-edge.1", 9000, False, False, True),
}

#: byte-unit 5 units, largest first (Unit::get_multiples_bytes, walked from the end).
_UNITS = sorted(
    [
        (name, base**power)
        for power, (dec, bin_) in enumerate(
            [("KB", "KiB"), ("MB", "MiB"), ("GB", "GiB"), ("TB", "TiB"), ("PB", "PiB")], 1
        )
        for name, base in ((dec, 1000), (bin_, 1024))
    ],
    key=lambda u: -u[1],
)


def human_size(n: int) -> str:
    """How byte-unit 5 writes a Byte with `{:#}`: exact in the largest unit, <= 3 decimals."""
    for name, size in _UNITS:
        if n >= size and (n * 1000) % size == 0:
            value = (Decimal(n * 1000 // size) / 1000).normalize()
            return f"{value:f} {name}"
    return f"{n} B"


@dataclass
class Broker:
    """The numbers the fake broker reports."""

    streams: int = 2
    topics: int = 5
    partitions: int = 40
    segments: int = 120
    messages: int = 1_234_567
    messages_size_bytes: int = 3_211_776_000
    clients: int = 7
    consumer_groups: int = 3
    threads: int = 18
    free_disk_bytes: int = 400 * 1024**3
    total_disk_bytes: int = 1000 * 1024**3
    run_time_us: int = 3 * 86400 * 10**6 + 4 * 3600 * 10**6
    cache: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"0-0-0": (900, 100), "0-1-0": (10, 90)}
    )


def stats_doc(version: str, broker: Broker, *, numbers: bool = False) -> dict[str, Any]:
    """A /stats body as the given version serializes it (keys in the struct's order)."""
    name, semver, _, _, disk = VERSIONS[version]
    size: Any = (lambda n: n) if numbers else human_size
    doc: dict[str, Any] = {
        "process_id": 4242,
        "cpu_usage": 12.5,
        "total_cpu_usage": 30.25,
        "memory_usage": size(512 * 1024**2),
        "total_memory": size(16 * 1024**3),
        "available_memory": size(9 * 1024**3),
        "run_time": broker.run_time_us,
        "start_time": 1_760_000_000_000_000,
        "read_bytes": size(1_234_000),
        "written_bytes": size(98_765_432),
        "messages_size_bytes": size(broker.messages_size_bytes),
        "streams_count": broker.streams,
        "topics_count": broker.topics,
        "partitions_count": broker.partitions,
        "segments_count": broker.segments,
        "messages_count": broker.messages,
        "clients_count": broker.clients,
        "consumer_groups_count": broker.consumer_groups,
        "hostname": "broker-1",
        "os_name": "Linux",
        "os_version": "Debian GNU/Linux 12",
        "kernel_version": "6.1.0-18-amd64",
        "iggy_server_version": name,
        "iggy_server_semver": semver,
        "cache_metrics": {
            key: {"hits": h, "misses": m, "hit_ratio": h / (h + m) if h + m else 0.0}
            for key, (h, m) in broker.cache.items()
        },
    }
    if disk:
        doc["threads_count"] = broker.threads
        doc["free_disk_space"] = size(broker.free_disk_bytes)
        doc["total_disk_space"] = size(broker.total_disk_bytes)
    return doc


def metrics_text(broker: Broker) -> str:
    """prometheus-client's text encoding of the broker's registry (gauges and a counter)."""
    lines = ["# HELP http_requests total count of http_requests.", "# TYPE http_requests counter"]
    lines.append("http_requests_total 17")
    gauges = {
        "streams": broker.streams,
        "topics": broker.topics,
        "partitions": broker.partitions,
        "segments": broker.segments,
        "messages": broker.messages,
        "users": 2,
        "clients": broker.clients,
    }
    for name, value in gauges.items():
        lines += [
            f"# HELP {name} total count of {name}.",
            f"# TYPE {name} gauge",
            f"{name} {value}",
        ]
    return "\n".join([*lines, "# EOF"]) + "\n"


#: Text of the members of Iggy's snapshot zip (one `<type>.txt` per type).
SNAPSHOT_MEMBERS = {
    "filesystem_overview.txt": "total 8\ndrwxrwxrwt 2 root root 4096 Jan 1 00:00 .\n",
    "process_list.txt": "USER PID %CPU %MEM COMMAND\niggy 4242 12.5 3.1 iggy-server\n",
    "resource_usage.txt": "top - 12:00:00 up 3 days\n",
    "server_logs.txt": "2026-01-01T00:00:00Z INFO server: started\n",
    "server_config.txt": '[http.jwt]\nencoding_secret = "not-the-default-secret"\n',
}


def snapshot_zip(members: dict[str, str | bytes] | None = None) -> bytes:
    """A Deflated zip like the one Iggy's snapshot builds."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (members or SNAPSHOT_MEMBERS).items():
            zf.writestr(name, text)
    return buf.getvalue()


@dataclass
class FakeIggy:
    """What the fake answers; change it between requests from the test."""

    version: str = "0.8"
    failures: set[str] = field(default_factory=set)
    broker: Broker = field(default_factory=Broker)
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    snapshot: bytes | None = None  # the zip /snapshot answers (default: snapshot_zip())
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, bearer
    bodies: list[Any] = field(default_factory=list)  # decoded JSON request bodies

    def __post_init__(self) -> None:
        unknown = set(self.failures) - FAILURES
        if unknown or self.version not in VERSIONS:
            raise ValueError(f"unknown failure modes {unknown} or version {self.version}")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the FakeIggy held by the server."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read FakeIggy.requests."""

    @property
    def fake(self) -> FakeIggy:
        return self.server.fake

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc).encode())

    def _error(self, code: int, iggy_id: int, name: str, reason: str) -> None:
        """Iggy's ErrorResponse (server-0.8.0:core/server/src/http/error.rs)."""
        self._json(code, {"id": iggy_id, "code": name, "reason": reason, "field": None})

    def _bearer(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {JWT}"

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        self.fake.bodies.append(doc)
        return doc

    def _start(self, method: str) -> str:
        path = self.path.split("?", 1)[0]
        self.fake.requests.append((method, path, bool(self.headers.get("Authorization"))))
        if delay := self.fake.delays.get(path):
            time.sleep(delay)
        if "headers_drip" in self.fake.failures:
            self._drip()
        return path

    def _drip(self) -> None:
        """A status line, then one header byte every DRIP_S: each read is quick, the answer
        never is (a stuck proxy, a slowloris in reverse)."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        header = b"X-Drip: " + b"." * int(DRIP_FOR_S / DRIP_S)
        for byte in header:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(DRIP_S)
        self.close_connection = True
        raise ConnectionAbortedError("dripped")  # no real answer follows

    def do_GET(self) -> None:
        path = self._start("GET")
        if path == "/ping":
            self._send(200, b"pong", "text/plain; charset=utf-8")
        elif path == "/stats":
            self._stats()
        elif path == "/metrics":
            self._metrics()
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        path = self._start("POST")
        body = self._body()
        if path in ("/users/login", "/personal-access-tokens/login"):
            self._login(path, body)
        elif path == "/snapshot":
            self._snapshot(body)
        else:
            self._send(404, b"")

    def _login(self, path: str, body: Any) -> None:
        failures = self.fake.failures
        if "login_401" in failures:
            self._send(401, b"")
            return
        if "login_garbage" in failures:
            self._json(200, {"user_id": 2, "access_token": None})
            return
        body = body if isinstance(body, dict) else {}
        if path == "/users/login":
            good = body.get("username") == USERNAME and body.get("password") == PASSWORD
            if not good:
                self._error(400, 42, "invalid_credentials", "Invalid credentials")
                return
        elif body.get("token") != PAT:
            self._error(401, 53, "invalid_personal_access_token", "Invalid personal access token")
            return
        self._json(200, {"user_id": 2, "access_token": {"token": JWT, "expiry": 1_900_000_000}})

    def _stats(self) -> None:
        fake = self.fake
        public = VERSIONS[fake.version][2]
        if "stats_401" in fake.failures or (not public and not self._bearer()):
            self._send(401, b"")  # the JWT middleware answers an empty 401
            return
        if "stats_403" in fake.failures:
            self._error(403, 41, "unauthorized", "Unauthorized")
            return
        if "stats_html" in fake.failures:
            page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            self._send(502, page, "text/html")
            return
        if "stats_malformed" in fake.failures:
            self._send(200, b'{"process_id": 4242, "streams_count": ')
            return
        if "stats_truncated" in fake.failures:
            self._truncated(json.dumps(stats_doc(fake.version, fake.broker)).encode())
            return
        doc = stats_doc(fake.version, fake.broker, numbers="stats_numbers" in fake.failures)
        if "stats_garbage_fields" in fake.failures:
            doc |= {"streams_count": "two", "free_disk_space": "lots", "run_time": -5}
        self._json(200, doc)

    def _truncated(self, body: bytes) -> None:
        """Promise the whole body, send half, close."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _metrics(self) -> None:
        fake = self.fake
        if "metrics_off" in fake.failures:
            self._send(404, b"")
        elif not VERSIONS[fake.version][3] and not self._bearer():
            self._send(401, b"")
        else:
            text = metrics_text(fake.broker).encode()
            self._send(200, text, "application/openmetrics-text; version=1.0.0; charset=utf-8")

    def _snapshot(self, body: Any) -> None:
        fake = self.fake
        if not self._bearer():
            self._send(401, b"")
            return
        if (
            not isinstance(body, dict)
            or "compression" not in body
            or not body.get("snapshot_types")
        ):
            self._error(400, 3, "invalid_command", "Invalid command")
            return
        if "snapshot_garbage" in fake.failures:
            self._send(200, b"this is not a zip file at all", "application/zip")
            return
        data = fake.snapshot if fake.snapshot is not None else snapshot_zip()
        if "snapshot_huge" in fake.failures:
            noise = random.Random(0).randbytes(400_000)  # does not compress
            data = snapshot_zip({"server_logs.txt": noise})
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header(
            "Content-Disposition", 'attachment; filename="iggy_snapshot_20260101_000000.zip"'
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeIggy, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hangs up mid-answer (timeouts in tests) is expected."""


@contextlib.contextmanager
def serve(fake: FakeIggy, *, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Run `fake` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = _Server(fake, tls)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
