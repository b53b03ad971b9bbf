"""The Iggy broker's HTTP API as a client: ping, login, /stats, /metrics and /snapshot.

Shapes come from the Iggy sources (apache/iggy):
- `GET /ping` answers `pong`, public in every version
  (server-0.8.0:core/server/src/http/system.rs; main: core/server/src/http/handlers.rs).
- `POST /users/login` takes `{"username", "password"}`
  (server-0.8.0:core/common/src/http/users/login_user.rs) and `POST
  /personal-access-tokens/login` takes `{"token"}` (.../personal_access_tokens/
  login_with_personal_access_token.rs); both answer an IdentityInfo
  `{"user_id", "access_token": {"token", "expiry"}}`
  (server-0.8.0:core/common/src/types/user/user_identity_info.rs).
- Errors are `{"id", "code", "reason", "field"}`; bad credentials are 400
  `invalid_credentials`, a missing or bad token 401, a missing permission 403
  (server-0.8.0:core/server/src/http/error.rs).
- `GET /stats` is the `Stats` struct serialized by serde_json
  (core/common/src/types/stats/mod.rs, identical in 0.5.0-0.7.0; 0.8.0 and main add
  threads_count, free_disk_space, total_disk_space). It is public in 0.5/0.6 and needs
  a bearer token from 0.7 (PUBLIC_PATHS in core/server/src/http/jwt/middleware.rs).
- Byte sizes are `IggyByteSize(byte_unit::Byte)`; byte-unit 5 serializes to a
  human-readable serializer as `format!("{:#}")`, the exact value in the largest unit
  with at most 3 decimals ("3136.5 KiB", "1.234 KB", "0 B"), so JSON carries strings;
  Iggy's own deserializer also takes integers (core/common/src/utils/byte_size.rs).
  Durations and timestamps are u64 microseconds (core/common/src/utils/duration.rs,
  timestamp.rs).
- `GET /metrics` is prometheus-client text (server-0.8.0:core/server/src/streaming/
  diagnostics/metrics.rs): gauges streams, topics, partitions, segments, messages,
  users, clients and the counter http_requests. Public in 0.8.0, authenticated on main.
- `POST /snapshot` takes `{"compression": "Deflated", "snapshot_types": ["All"]}`
  (server-0.8.0:core/common/src/http/system/get_snapshot.rs, types/snapshot/mod.rs)
  and answers application/zip with one `<type>.txt` per type
  (server-0.8.0:core/server/src/shard/system/snapshot/mod.rs).

Every request is bounded by a timeout and the check's deadline; every body by a size
cap. Secrets (password, personal access token, bearer token) never appear in a
repr, an error message or anything returned for display.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import math
import os
import re
import socket
import ssl
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from snapshot_agent.core.tail import TailBuffer
from snapshot_agent.node.addresses import is_loopback, local_target, parse_listen_address

JSON_CAP = 4 * 1024 * 1024  # /stats, login answers
METRICS_CAP = 1024 * 1024
SECRET_CAP = 4096  # a password or token file
CHUNK = 64 * 1024
DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_PORT = 3000  # server-0.8.0:core/server/config.toml [http] address
SNAPSHOT_BODY = {"compression": "Deflated", "snapshot_types": ["All"]}
#: Error codes Iggy answers a login with when the credentials are wrong or unusable.
#: server-0.8.0:core/server/src/http/error.rs maps them to 400/401.
LOGIN_REJECTED_CODES = 400, 401, 403
#: Series of /metrics worth showing (server-0.8.0 .../diagnostics/metrics.rs).
METRIC_SERIES = (
    "streams",
    "topics",
    "partitions",
    "segments",
    "messages",
    "users",
    "clients",
    "http_requests_total",
)

# -- byte sizes and durations ------------------------------------------------------

#: byte_unit 5 units (bytes only; Iggy never sends bits).
_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
    "pb": 1000**5,
    "pib": 1024**5,
    "eb": 1000**6,
    "eib": 1024**6,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
MAX_BYTES = 2**64 - 1  # IggyByteSize is a u64


def parse_byte_size(value: Any) -> int:
    """Bytes from an IggyByteSize in JSON: 1234, "1234", "1.23 GB", "512 MiB", "0 B".

    Fractions of a byte round up, as byte_unit does. Raises ValueError for anything
    else (negative, a bool, an unknown unit, over a u64).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a byte size")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a byte size")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        return _parse_size_text(value)
    else:
        raise ValueError(f"a {type(value).__name__} is not a byte size")
    return _whole_bytes(number, value)


def _parse_size_text(text: str) -> int:
    """'3136.5 KiB' -> 3211776; the unit is case-insensitive, B when absent."""
    match = _SIZE.fullmatch(text[:64])
    unit = (match.group(2).lower() or "b") if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text[:40]!r} is not a byte size like '1.23 GB' or '512 MiB'")
    try:
        number = Decimal(match.group(1)) * _UNITS[unit]
    except InvalidOperation:
        raise ValueError(f"{text[:40]!r} is not a byte size") from None
    return _whole_bytes(number, text)


def _whole_bytes(number: Decimal, shown: Any) -> int:
    """A non-negative Decimal rounded up to whole bytes, within a u64."""
    if number < 0 or number > MAX_BYTES:
        raise ValueError(f"{str(shown)[:40]!r} is out of range for a byte size")
    return int(number.to_integral_value(rounding="ROUND_CEILING"))


def parse_micros(value: Any) -> int:
    """A u64 count of microseconds (IggyDuration, IggyTimestamp); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**64 - 1:
        raise ValueError(f"{str(value)[:40]!r} is not a count of microseconds")
    return value


def _count(value: Any) -> int:
    """A non-negative integer count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{str(value)[:40]!r} is not a count")
    return value


def _ratio(value: Any) -> float:
    """A float (f32 in Iggy); JSON may carry an integer."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{str(value)[:40]!r} is not a number")
    return float(value)


def _text(value: Any) -> str:
    """A string field, cut to a sane length."""
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} where text belongs")
    return value[:200]


def _semver(value: Any) -> int | None:
    """iggy_server_semver: Option<u32> (major * 1000000 + minor * 1000 + patch)."""
    return None if value is None else _count(value)


# -- /stats ------------------------------------------------------------------------


@dataclass
class CacheRow:
    """One partition's cache metrics; key "stream-topic-partition" as Iggy sends it."""

    partition: str
    hits: int | None
    misses: int | None
    hit_ratio: float | None


@dataclass
class Stats:
    """What /stats says about the broker; None for a field absent or unreadable."""

    version: str | None = None
    semver: int | None = None
    process_id: int | None = None
    hostname: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    kernel_version: str | None = None
    run_time_us: int | None = None
    start_time_us: int | None = None
    cpu_usage: float | None = None
    total_cpu_usage: float | None = None
    memory_usage_bytes: int | None = None
    total_memory_bytes: int | None = None
    available_memory_bytes: int | None = None
    read_bytes: int | None = None
    written_bytes: int | None = None
    messages_size_bytes: int | None = None
    streams: int | None = None
    topics: int | None = None
    partitions: int | None = None
    segments: int | None = None
    messages: int | None = None
    clients: int | None = None
    consumer_groups: int | None = None
    threads: int | None = None
    free_disk_bytes: int | None = None
    total_disk_bytes: int | None = None
    cache: list[CacheRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # JSON keys this server did not send
    malformed: list[str] = field(default_factory=list)  # "key: why" for unreadable values

    @property
    def uptime_s(self) -> float | None:
        """run_time in seconds."""
        return None if self.run_time_us is None else self.run_time_us / 1e6


#: Stats attribute -> (JSON key, parser). Keys from core/common/src/types/stats/mod.rs.
STATS_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "process_id": ("process_id", _count),
    "cpu_usage": ("cpu_usage", _ratio),
    "total_cpu_usage": ("total_cpu_usage", _ratio),
    "memory_usage_bytes": ("memory_usage", parse_byte_size),
    "total_memory_bytes": ("total_memory", parse_byte_size),
    "available_memory_bytes": ("available_memory", parse_byte_size),
    "run_time_us": ("run_time", parse_micros),
    "start_time_us": ("start_time", parse_micros),
    "read_bytes": ("read_bytes", parse_byte_size),
    "written_bytes": ("written_bytes", parse_byte_size),
    "messages_size_bytes": ("messages_size_bytes", parse_byte_size),
    "streams": ("streams_count", _count),
    "topics": ("topics_count", _count),
    "partitions": ("partitions_count", _count),
    "segments": ("segments_count", _count),
    "messages": ("messages_count", _count),
    "clients": ("clients_count", _count),
    "consumer_groups": ("consumer_groups_count", _count),
    "hostname": ("hostname", _text),
    "os_name": ("os_name", _text),
    "os_version": ("os_version", _text),
    "kernel_version": ("kernel_version", _text),
    "version": ("iggy_server_version", _text),
    "semver": ("iggy_server_semver", _semver),
    "threads": ("threads_count", _count),
    "free_disk_bytes": ("free_disk_space", parse_byte_size),
    "total_disk_bytes": ("total_disk_space", parse_byte_size),
}
#: Keys added in server-0.8.0 (absent from 0.5-0.7 answers, which is no fault).
LATER_KEYS = frozenset({"threads_count", "free_disk_space", "total_disk_space"})
#: A /stats answer with none of these is not Iggy's Stats.
CORE_KEYS = frozenset({"iggy_server_version", "streams_count", "topics_count", "run_time"})
MAX_CACHE_ROWS = 10_000


class StatsError(ValueError):
    """The /stats answer is not Iggy's Stats at all."""


def parse_stats(doc: Any) -> Stats:
    """A typed Stats from the decoded /stats JSON; per-field problems are recorded.

    Raises StatsError when `doc` is not a JSON object or has none of Iggy's core keys.
    """
    if not isinstance(doc, dict):
        raise StatsError(f"a JSON {_json_kind(doc)}, not an object with Iggy's stats")
    if not CORE_KEYS & doc.keys():
        keys = ", ".join(sorted(str(k)[:30] for k in doc)[:5]) or "none"
        raise StatsError(f"a JSON object without Iggy's stats keys (keys: {keys})")
    stats = Stats()
    for attr, (key, parse) in STATS_FIELDS.items():
        if key not in doc:
            if key not in LATER_KEYS:
                stats.missing.append(key)
            continue
        try:
            setattr(stats, attr, parse(doc[key]))
        except ValueError as exc:
            stats.malformed.append(f"{key}: {exc}")
    stats.cache = _cache_rows(doc.get("cache_metrics"), stats)
    return stats


def _cache_rows(value: Any, stats: Stats) -> list[CacheRow]:
    """cache_metrics {"1-1-1": {hits, misses, hit_ratio}} as rows (bad entries noted)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        stats.malformed.append(f"cache_metrics: a JSON {_json_kind(value)}, not an object")
        return []
    rows: list[CacheRow] = []
    for key, entry in list(value.items())[:MAX_CACHE_ROWS]:
        if not isinstance(entry, dict):
            stats.malformed.append(f"cache_metrics[{str(key)[:30]}]: not an object")
            continue
        rows.append(
            CacheRow(
                str(key)[:40],
                _optional(entry.get("hits"), _count),
                _optional(entry.get("misses"), _count),
                _optional(entry.get("hit_ratio"), _ratio),
            )
        )
    return rows


def _optional(value: Any, parse: Callable[[Any], Any]) -> Any:
    """parse(value), or None when it is absent or unreadable."""
    try:
        return None if value is None else parse(value)
    except ValueError:
        return None


def _json_kind(value: Any) -> str:
    """'array', 'string', 'number'... for messages."""
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}
    return kinds.get(type(value), "number")


def describe_body(body: bytes, content_type: str = "") -> str:
    """What an answer that is not the expected JSON looks like, in a few words."""
    if not body.strip():
        return "an empty body"
    head = body[:512].decode("utf-8", "replace").strip()
    if "html" in content_type.lower() or head[:1] == "<":
        title = re.search(r"<title[^>]*>([^<]{1,80})", head, re.IGNORECASE)
        return "an HTML page" + (f" ({title.group(1).strip()!r})" if title else "")
    return f"{len(body)} bytes starting {head[:40]!r}"


def decode_json(body: bytes, content_type: str = "") -> Any:
    """The JSON document in `body`; ValueError saying what the body is instead."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"not UTF-8 text ({describe_body(body, content_type)})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
            f"{describe_body(body, content_type)})"
        ) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# -- /metrics ----------------------------------------------------------------------

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> tuple[dict[str, float], int]:
    """The METRIC_SERIES values of a Prometheus text answer, and how many samples it had."""
    picked: dict[str, float] = {}
    samples = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        samples += 1
        name = match.group(1)
        if name in METRIC_SERIES and not match.group(2):
            try:
                picked[name] = float(match.group(3))
            except ValueError:
                continue
    return picked, samples


# -- where the API is ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The API's base URL, how it was chosen, and what to trust for its certificate."""

    base_url: str
    source: str
    ca_file: str | None = None  # a readable local path to trust besides the system CAs

    @property
    def tls(self) -> bool:
        """True for https."""
        return self.base_url.startswith("https:")

    @property
    def host(self) -> str:
        """Host name or address (IPv6 without brackets)."""
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """The port, 80/443 when the URL has none."""
        parts = urlsplit(self.base_url)
        return parts.port or (443 if self.tls else 80)

    @property
    def loopback(self) -> bool:
        """True when the API is on this node's loopback (IPv4-mapped included)."""
        return is_loopback(self.host)


def http_base_url(address: Any, tls: bool) -> str:
    """The URL to reach a broker listening on `address` ("0.0.0.0:3000") from this node.

    A wildcard listener is reached on loopback; an address without a usable port gets 3000.
    """
    scheme = "https" if tls else "http"
    if not isinstance(address, str) or not address.strip():
        return f"{scheme}://127.0.0.1:{DEFAULT_PORT}"
    listen = parse_listen_address(address)
    host = local_target(listen.host)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{listen.port or DEFAULT_PORT}"


# -- requests ------------------------------------------------------------------------


@dataclass
class Reply:
    """One request's outcome; `status` None when no complete HTTP answer came."""

    status: int | None
    body: bytes = field(default=b"", repr=False)  # a login answer's holds the token
    error: str = ""  # why there is no (whole) answer
    elapsed_ms: float = 0.0
    content_type: str = ""
    size: int = 0  # body bytes received (also when streamed into a file)
    timed_out: bool = False
    oversize: bool = False  # the body was larger than its cap (and was cut)
    refused: bool = False  # nothing listens there

    @property
    def ok(self) -> bool:
        """A whole 2xx answer."""
        return self.status is not None and 200 <= self.status < 300 and not self.error

    def api_error(self) -> str:
        """Iggy's error reason from a JSON error body ({"code", "reason"}), or ''."""
        try:
            doc = json.loads(self.body[:65536].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return ""
        if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
            code = doc.get("code")
            return f"{doc['reason'][:120]}" + (f" ({str(code)[:40]})" if code else "")
        return ""


class Expired(TimeoutError):
    """The request's own budget ran out (its message says where)."""


#: socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, name, addr)].
Lookup = Callable[..., list[tuple[Any, ...]]]


def resolve(host: str, port: int, timeout_s: float, lookup: Lookup = socket.getaddrinfo) -> list:
    """The stream addresses of host:port, waiting at most `timeout_s` for the resolver.

    getaddrinfo cannot be interrupted, so a host name is looked up in a daemon thread
    that is left behind when the resolver hangs (TimeoutError); an address is not looked up.
    """
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return lookup(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(lookup(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            box.append(exc)

    thread = threading.Thread(target=work, name="iggy-api-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    if not box:
        raise Expired(f"resolving {host[:100]} took longer than {timeout_s:.1f} s")
    if isinstance(box[0], OSError):
        raise box[0]
    return box[0]


def _connect(addresses: list, end: float, watchdog: _Watchdog) -> socket.socket:
    """A TCP connection to the first address that answers before `end` (monotonic)."""
    last: OSError = Expired("no time left to connect")
    for family, kind, proto, _, sockaddr in addresses:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        watchdog.watch(sock)
        try:
            sock.settimeout(left)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last


class _Watchdog:
    """Shuts the watched socket down at `end`, so no trickling answer outlasts the budget.

    A socket timeout bounds each read, not the request: a server sending one header byte
    per second keeps every read short and the whole answer endless.
    """

    def __init__(self, end: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, end - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Make `sock` the one shut down at the deadline (at once if it has passed)."""
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError, ValueError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """Stop the timer (the request is over)."""
        self._timer.cancel()


class ApiClient:
    """Requests to one broker's HTTP API, each bounded by a timeout and a deadline."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float,
        deadline: float,
        lookup: Lookup = socket.getaddrinfo,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.deadline = deadline  # time.monotonic() past which nothing is sent
        self.lookup = lookup  # name resolution (tests map a name to 127.0.0.1)
        self.verified: bool | None = None  # TLS: was the certificate verified?
        self.verify_error = ""  # why it was not

    def request(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        token: BearerToken | None = None,
        cap: int = JSON_CAP,
        sink: IO[bytes] | None = None,
    ) -> Reply:
        """Send one request; the body is kept (up to `cap`) or streamed into `sink`."""
        budget = min(self.timeout_s, self.deadline - time.monotonic())
        if budget <= 0.05:
            return Reply(None, error="no time left before the check's deadline", timed_out=True)
        headers = {"Accept": "*/*", "User-Agent": "snapshot-agent"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = token.header()
        started = time.monotonic()
        try:
            reply = self._exchange(method, path, data, headers, budget, cap, sink)
        except ssl.SSLCertVerificationError as exc:
            if not self.endpoint.loopback:
                self.verified, self.verify_error = False, str(exc.verify_message or exc)
                return self._failed(started, f"certificate not trusted ({exc.verify_message})")
            # On loopback the broker is this node's own; its certificate names a host
            # name (often a self-signed localhost one), not 127.0.0.1: go on, say so.
            self.verified, self.verify_error = False, str(exc.verify_message or exc)
            started = time.monotonic()  # the answer's time, not the refused handshake's
            reply = self._unverified_retry(method, path, data, headers, cap, sink)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return self._failed(started, _why(exc), exc)
        else:
            if self.endpoint.tls and self.verified is None:
                self.verified = True
        reply.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        return reply

    def _unverified_retry(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        cap: int,
        sink: IO[bytes] | None,
    ) -> Reply:
        """The same request without verifying the certificate (loopback only)."""
        budget = min(self.timeout_s, self.deadline - time.monotonic())
        started = time.monotonic()
        if budget <= 0.05:
            return Reply(None, error="no time left before the check's deadline", timed_out=True)
        try:
            return self._exchange(method, path, data, headers, budget, cap, sink, verify=False)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return self._failed(started, _why(exc), exc)

    def _failed(self, started: float, error: str, exc: BaseException | None = None) -> Reply:
        """A Reply for a request that got no answer."""
        return Reply(
            None,
            error=error,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            timed_out=isinstance(exc, TimeoutError),
            refused=isinstance(exc, ConnectionRefusedError),
        )

    def _connection(
        self, end: float, verify: bool, watchdog: _Watchdog
    ) -> http.client.HTTPConnection:
        """A connected (and for https, handshaken) connection, all within `end`."""
        ep = self.endpoint
        sock = _connect(
            resolve(ep.host, ep.port, end - time.monotonic(), self.lookup), end, watchdog
        )
        conn = http.client.HTTPConnection(ep.host, ep.port, timeout=end - time.monotonic())
        conn.sock = sock
        if ep.tls:
            context = self._tls_context(verify)
            tls = context.wrap_socket(sock, server_hostname=ep.host, do_handshake_on_connect=False)
            conn.sock = tls
            watchdog.watch(tls)
            try:
                tls.settimeout(max(0.01, end - time.monotonic()))
                tls.do_handshake()
            except BaseException:
                conn.close()
                raise
        return conn

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        """System CAs plus the configured certificate (trusted as is), or no checks."""
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.endpoint.ca_file:
            try:
                context.load_verify_locations(cafile=self.endpoint.ca_file)
                # The broker's own certificate is often self-signed or a leaf: trust it.
                context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            except (OSError, ssl.SSLError):
                pass  # not readable or not PEM: the system CAs decide
        return context

    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        budget: float,
        cap: int,
        sink: IO[bytes] | None,
        verify: bool = True,
    ) -> Reply:
        """Resolve, connect, send, and read the whole answer within `budget` seconds."""
        end = time.monotonic() + budget
        watchdog = _Watchdog(end)
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connection(end, verify, watchdog)
            conn.request(method, path, body=data, headers=headers)
            if conn.sock is not None:  # connecting used part of the budget
                conn.sock.settimeout(max(0.01, end - time.monotonic()))
            resp = conn.getresponse()
            if watchdog.fired:  # headers cut at the deadline look whole to http.client
                raise Expired("no whole answer in time")
            reply = Reply(resp.status, content_type=resp.getheader("Content-Type", "") or "")
            _read_body(conn, resp, reply, end, cap, sink)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if watchdog.fired and not isinstance(exc, Expired):  # the shut socket ended it
                raise Expired("no whole answer in time") from None
            raise
        finally:
            watchdog.cancel()
            if conn is not None:
                conn.close()
        if watchdog.fired and not reply.oversize:
            reply.error, reply.timed_out = "the answer did not finish in time", True
        return reply


def _read_body(
    conn: http.client.HTTPConnection,
    resp: http.client.HTTPResponse,
    reply: Reply,
    end: float,
    cap: int,
    sink: IO[bytes] | None,
) -> None:
    """Read the body chunk by chunk until it ends, the cap, or `end` (monotonic)."""
    kept: list[bytes] = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            reply.error, reply.timed_out = "the answer did not finish in time", True
            break
        if conn.sock is not None:
            conn.sock.settimeout(left)
        try:
            chunk = resp.read1(CHUNK)
        except http.client.IncompleteRead:
            reply.error = f"the answer was cut off after {reply.size} bytes"
            break
        if not chunk:
            if resp.length:  # Content-Length promised more than came
                reply.error = (
                    f"the answer was cut off after {reply.size} of {reply.size + resp.length} bytes"
                )
            break
        room = cap - reply.size
        reply.size += len(chunk)
        if sink is not None:
            sink.write(chunk[: max(room, 0)])
        else:
            kept.append(chunk[: max(room, 0)])
        if reply.size > cap:
            reply.oversize = True
            reply.error = f"the answer is larger than {cap} bytes; read no further"
            break
    reply.body = b"".join(kept)


def _why(exc: BaseException) -> str:
    """A short reason for a failed request (never a secret: none is in the exception)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, Expired):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200]


# -- credentials -----------------------------------------------------------------------


@dataclass(frozen=True)
class BearerToken:
    """An access token; never shown (repr and str hide it)."""

    _value: str = field(repr=False)

    def header(self) -> str:
        """The Authorization header value."""
        return f"Bearer {self._value}"

    def __str__(self) -> str:
        return "BearerToken(***)"


@dataclass
class SecretFile:
    """A password or token read from a file: the value (hidden) or why it is unusable."""

    path: str
    value: str = field(default="", repr=False)
    problem: str = ""  # missing, unreadable, empty, too large: the file cannot be used
    world_readable: bool = False


def read_secret_file(shown: str, path: Path) -> SecretFile:
    """The first line of a small regular file; `shown` is the path named in messages."""
    out = SecretFile(shown)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        out.problem = "does not exist"
        return out
    except OSError as exc:
        out.problem = f"cannot be opened ({exc.strerror or exc})"
        return out
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            out.problem = "is not a regular file"
            return out
        out.world_readable = bool(info.st_mode & stat.S_IROTH)
        raw = os.read(fd, SECRET_CAP + 1)
    except OSError as exc:
        out.problem = f"cannot be read ({exc.strerror or exc})"
        return out
    finally:
        os.close(fd)
    _secret_value(out, raw)
    return out


def _secret_value(out: SecretFile, raw: bytes) -> None:
    """The file's first line, stripped, into `out` (or the problem with it)."""
    if len(raw) > SECRET_CAP:
        out.problem = f"is larger than {SECRET_CAP} bytes; a password or token is one line"
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        out.problem = "is not UTF-8 text"
        return
    lines = text.strip().splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        out.problem = "is empty"
        return
    out.value = value


@dataclass
class Credentials:
    """How the agent logs in: 'token', 'password', or '' (none configured or usable)."""

    kind: str = ""
    username: str = ""
    secret: SecretFile | None = None
    unconfigured: bool = True  # neither a token file nor username + password file is set
    problems: list[str] = field(default_factory=list)  # configured but unusable, in words

    @property
    def usable(self) -> bool:
        """A secret was read and can be sent."""
        return bool(self.kind) and self.secret is not None and not self.secret.problem


def credentials_from(
    username: str | None,
    password_file: str | None,
    token_file: str | None,
    locate: Callable[[str], Path],
) -> Credentials:
    """The configured credentials: a token file wins over username + password file.

    `locate` maps a configured path to where it is read (the context's roots).
    """
    creds = Credentials()
    if token_file:
        creds.kind, creds.unconfigured = "token", False
        creds.secret = read_secret_file(token_file, locate(token_file))
    elif password_file and username:
        creds.kind, creds.username, creds.unconfigured = "password", username, False
        creds.secret = read_secret_file(password_file, locate(password_file))
    elif password_file or username:
        creds.unconfigured = False
        missing = "iggy.username" if password_file else "iggy.password_file"
        creds.problems.append(f"{missing} is not set (a password login needs both)")
    if creds.secret is not None and creds.secret.problem:
        key = "iggy.token_file" if creds.kind == "token" else "iggy.password_file"
        creds.problems.append(f"{key} {creds.secret.path} {creds.secret.problem}")
    return creds


# -- the calls ---------------------------------------------------------------------


@dataclass
class Login:
    """A login's outcome: ok, rejected, failed (no usable answer); the token hidden."""

    outcome: str  # ok | rejected | failed | refused (not sent: clear text off loopback)
    method: str  # password | token
    reply: Reply
    detail: str = ""  # what was wrong, in words
    token: BearerToken | None = field(default=None, repr=False)


def login(client: ApiClient, creds: Credentials) -> Login:
    """POST /users/login or /personal-access-tokens/login; the bearer token on success.

    Credentials go only over https or to this node's loopback: anything else is refused
    before a byte is sent.
    """
    assert creds.secret is not None
    if cleartext := cleartext_refusal(client.endpoint):
        return Login("refused", creds.kind, Reply(None, error=cleartext), cleartext)
    if creds.kind == "token":
        path, payload = "/personal-access-tokens/login", {"token": creds.secret.value}
    else:
        path = "/users/login"
        payload = {"username": creds.username, "password": creds.secret.value}
    reply = client.request("POST", path, payload=payload)
    if reply.status is None:
        return Login("failed", creds.kind, reply, reply.error)
    if reply.status in LOGIN_REJECTED_CODES:
        reason = reply.api_error() or f"HTTP {reply.status}"
        return Login("rejected", creds.kind, reply, reason)
    if not reply.ok:
        why = reply.error or reply.api_error() or describe_body(reply.body, reply.content_type)
        return Login("failed", creds.kind, reply, f"HTTP {reply.status}: {why}")
    return _identity(creds.kind, reply)


def cleartext_refusal(endpoint: Endpoint) -> str:
    """Why credentials must not go to `endpoint` (plain http off loopback), or ''."""
    if endpoint.tls or endpoint.loopback:
        return ""
    return (
        f"not sending credentials in clear text to {endpoint.base_url}; use https or a "
        "loopback address"
    )


def _identity(method: str, reply: Reply) -> Login:
    """The access token from an IdentityInfo answer, or what the answer was instead."""
    try:
        doc = decode_json(reply.body, reply.content_type)
    except ValueError as exc:
        return Login("failed", method, reply, f"the login answer is {exc}")
    access = doc.get("access_token") if isinstance(doc, dict) else None
    token = access.get("token") if isinstance(access, dict) else None
    if not isinstance(token, str) or not token:
        return Login(
            "failed", method, reply, "the login answer has no access_token.token (not Iggy?)"
        )
    reply.body = b""  # the token lives only in the BearerToken now
    return Login("ok", method, reply, token=BearerToken(token))


@dataclass
class StatsReply:
    """GET /stats: the parsed Stats, or the reply and what was wrong with it."""

    reply: Reply
    stats: Stats | None = None
    problem: str = ""


def get_stats(client: ApiClient, token: BearerToken | None) -> StatsReply:
    """GET /stats (with the bearer token when there is one) and parse it."""
    reply = client.request("GET", "/stats", token=token)
    if reply.status is None or not reply.ok:
        return StatsReply(reply, problem=reply.error or f"HTTP {reply.status}")
    try:
        return StatsReply(reply, parse_stats(decode_json(reply.body, reply.content_type)))
    except ValueError as exc:
        return StatsReply(reply, problem=f"the answer is {exc}")


@dataclass
class MetricsReply:
    """GET /metrics: the picked series and how many samples the answer had."""

    reply: Reply
    series: dict[str, float] = field(default_factory=dict)
    samples: int = 0


def get_metrics(client: ApiClient, path: str, token: BearerToken | None) -> MetricsReply:
    """GET the Prometheus endpoint (main needs the token; 0.8.0 does not mind it)."""
    reply = client.request("GET", path, token=token, cap=METRICS_CAP)
    if not reply.ok:
        return MetricsReply(reply)
    series, samples = parse_metrics(reply.body.decode("utf-8", "replace"))
    return MetricsReply(reply, series, samples)


def fetch_snapshot(client: ApiClient, token: BearerToken, sink: IO[bytes], cap: int) -> Reply:
    """POST /snapshot, streaming the zip into `sink` (at most `cap` bytes)."""
    return client.request(
        "POST", "/snapshot", payload=SNAPSHOT_BODY, token=token, cap=cap, sink=sink
    )


# -- Iggy's snapshot zip -------------------------------------------------------------


@dataclass
class Member:
    """One text member of the zip: its last `keep` bytes, and how much there was."""

    name: str  # safe: letters, digits, '._-' only
    tail: TailBuffer
    read: int  # decompressed bytes read
    complete: bool  # the whole member was read


@dataclass
class ZipSkip:
    """A member not kept, and why."""

    name: str
    reason: str


def snapshot_members(
    zf: zipfile.ZipFile,
    *,
    max_members: int,
    keep: int,
    read_limit: int,
    deadline: float,
) -> Iterator[Member | ZipSkip]:
    """Text members one at a time (tails of at most `keep` bytes), skips with reasons.

    Each member is decompressed for at most `read_limit` bytes (a zip bomb costs that
    much, no more) and only until `deadline` (time.monotonic()).
    """
    taken = 0
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = _safe_member_name(info.filename)
        if taken >= max_members:
            yield ZipSkip(name, f"more than {max_members} members; the rest are left out")
            continue
        if time.monotonic() >= deadline:
            yield ZipSkip(name, "no time left before the check's deadline")
            continue
        item = _read_member(zf, info, name, keep, read_limit, deadline)
        taken += isinstance(item, Member)
        yield item


def _read_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    name: str,
    keep: int,
    read_limit: int,
    deadline: float,
) -> Member | ZipSkip:
    """Decompress one member into a tail buffer; binary members are skipped."""
    tail = TailBuffer(keep)
    read, first = 0, True
    try:
        with zf.open(info) as fh:
            while read < read_limit and time.monotonic() < deadline:
                chunk = fh.read(min(CHUNK, read_limit - read))
                if not chunk:
                    return Member(name, tail, read, True)
                if first and b"\0" in chunk[:8192]:
                    return ZipSkip(name, "binary, not text")
                first = False
                read += len(chunk)
                tail.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        return ZipSkip(name, f"cannot be decompressed ({exc})"[:200])
    return Member(name, tail, read, False)


def _safe_member_name(name: str) -> str:
    """A member name usable as an artifact name: its last part, odd characters replaced."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:100].lstrip(".")
    return cleaned or "member"


def endpoint_from_config(
    http_url: str | None,
    settings: Mapping[str, Any],
    ca_file: str | None,
) -> tuple[Endpoint | None, str]:
    """The API endpoint, or None and why not (the [http] transport is off).

    `settings` holds the broker config's http.enabled, http.address and
    http.tls.enabled (IGGY_* overrides applied); `http_url` is the agent's override.
    """
    if http_url:
        return Endpoint(http_url.rstrip("/"), "config iggy.http_url", ca_file), ""
    if settings.get("http.enabled") is False:
        return None, "disabled"
    tls = settings.get("http.tls.enabled") is True
    address = settings.get("http.address")
    if address is None:
        return Endpoint(DEFAULT_URL, "Iggy's default (no [http] address in its config)"), ""
    source = "the broker's [http] address" + (" with TLS" if tls else "")
    return Endpoint(http_base_url(address, tls), source, ca_file if tls else None), ""
