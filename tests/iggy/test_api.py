"""The Iggy HTTP API client: pure parsing, then real requests to the fake Iggy server."""

from __future__ import annotations

import io
import os
import socket
import time
import zipfile
from pathlib import Path

import pytest

from snapshot_agent.node.iggy_api import (
    ApiClient,
    Credentials,
    Endpoint,
    Expired,
    Member,
    SecretFile,
    StatsError,
    ZipSkip,
    cleartext_refusal,
    credentials_from,
    decode_json,
    endpoint_from_config,
    fetch_snapshot,
    get_metrics,
    get_stats,
    http_base_url,
    login,
    parse_byte_size,
    parse_metrics,
    parse_stats,
    read_secret_file,
    resolve,
    snapshot_members,
)

from ..conftest import closed_port_url
from .fake_server import (
    DRIP_FOR_S,
    JWT,
    PASSWORD,
    PAT,
    SNAPSHOT_MEMBERS,
    USERNAME,
    Broker,
    FakeIggy,
    human_size,
    metrics_text,
    serve,
    stats_doc,
)

# -- byte sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.23 GB", 1_230_000_000),
        ("512 MiB", 512 * 1024**2),
        ("0 B", 0),
        (1234, 1234),
        ("1234", 1234),
        ("3136.5 KiB", 3_211_776),  # byte-unit's own example of `{:#}`
        ("10KB", 10_000),
        ("1.5 kib", 1536),
        ("1.0001 KB", 1001),  # a fraction of a byte rounds up, as byte-unit does
        (12.0, 12),
    ],
)
def test_parse_byte_size_reads_numbers_and_human_strings(value: object, expected: int) -> None:
    assert parse_byte_size(value) == expected


@pytest.mark.parametrize(
    "value", ["lots", -1, True, None, "1.2.3 GB", "5 XB", 2**64, "", [1], float("nan"), "-3 MB"]
)
def test_parse_byte_size_refuses_garbage(value: object) -> None:
    with pytest.raises(ValueError):
        parse_byte_size(value)


def test_human_size_is_byte_units_exact_format_and_parses_back() -> None:
    # byte-unit 5 documents these for `{:#}` (src/byte/mod.rs, Display for Byte).
    assert human_size(10240) == "10 KiB"
    assert human_size(10000) == "10 KB"
    assert human_size(3211776) == "3136.5 KiB"
    assert human_size(0) == "0 B"
    for n in (0, 1, 999, 1000, 1234, 3211776, 512 * 1024**2, 10**12 + 1, 400 * 1024**3):
        assert parse_byte_size(human_size(n)) == n


# -- /stats --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.5", "0.6", "0.8", "main"])
def test_parse_stats_reads_every_versions_answer(version: str) -> None:
    broker = Broker()
    stats = parse_stats(decode_json(_json(stats_doc(version, broker))))
    assert stats.malformed == [] and stats.missing == []
    assert (stats.streams, stats.topics, stats.partitions) == (2, 5, 40)
    assert stats.messages == broker.messages
    assert stats.messages_size_bytes == broker.messages_size_bytes
    assert stats.uptime_s == broker.run_time_us / 1e6
    assert stats.memory_usage_bytes == 512 * 1024**2
    assert {r.partition: r.hits for r in stats.cache} == {"0-0-0": 900, "0-1-0": 10}
    if version in ("0.5", "0.6"):  # the disk fields came with 0.8.0
        assert stats.free_disk_bytes is None and stats.threads is None
    else:
        assert stats.free_disk_bytes == broker.free_disk_bytes
        assert stats.total_disk_bytes == broker.total_disk_bytes
        assert stats.threads == broker.threads


def test_parse_stats_takes_byte_sizes_as_numbers() -> None:
    stats = parse_stats(stats_doc("0.8", Broker(), numbers=True))
    assert stats.free_disk_bytes == 400 * 1024**3 and stats.malformed == []


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([1, 2], "array"),
        ("pong", "string"),
        ({}, "without Iggy's stats keys"),
        ({"status": "ok"}, "keys: status"),
    ],
)
def test_parse_stats_refuses_what_is_not_stats(doc: object, says: str) -> None:
    with pytest.raises(StatsError, match=says):
        parse_stats(doc)


def test_parse_stats_names_each_garbage_field() -> None:
    doc = stats_doc("0.8", Broker()) | {"streams_count": "two", "free_disk_space": "lots"}
    del doc["topics_count"]
    doc["cache_metrics"] = {"0-0-0": "nope"}
    stats = parse_stats(doc)
    assert stats.streams is None and stats.free_disk_bytes is None
    assert [m.split(":")[0] for m in stats.malformed] == [
        "streams_count",
        "free_disk_space",
        "cache_metrics[0-0-0]",
    ]
    assert stats.missing == ["topics_count"]


def test_decode_json_says_what_the_body_is_instead() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head></html>"
    with pytest.raises(ValueError, match=r"HTML page \('502 Bad Gateway'\)"):
        decode_json(page, "text/html")
    with pytest.raises(ValueError, match="empty body"):
        decode_json(b"")
    with pytest.raises(ValueError, match="not UTF-8"):
        decode_json(b"\xff\xfe{")
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_json(b"[" * 100_000)


def test_parse_metrics_picks_the_series_worth_showing() -> None:
    series, samples = parse_metrics(metrics_text(Broker()))
    assert series["streams"] == 2 and series["messages"] == 1_234_567
    assert series["http_requests_total"] == 17
    assert samples == 8
    assert parse_metrics("garbage\n\x00\n{}") == ({}, 0)


# -- where the API is ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "tls", "url"),
    [
        ("0.0.0.0:3000", False, "http://127.0.0.1:3000"),
        ("[::]:3000", False, "http://[::1]:3000"),
        ("127.0.0.1:8080", True, "https://127.0.0.1:8080"),
        ("10.1.2.3:3000", False, "http://10.1.2.3:3000"),
        ("[fd00::5]:3001", False, "http://[fd00::5]:3001"),
        (None, False, "http://127.0.0.1:3000"),
        ("localhost", False, "http://localhost:3000"),
        ("127.0.0.1:99999", False, "http://127.0.0.1:3000"),
        ("127.0.0.1:\u00b2", False, "http://127.0.0.1:3000"),  # '²' is no port
        ("[::]:\uff13\uff10\uff10\uff10", False, "http://[::1]:3000"),  # full-width 3000
    ],
)
def test_http_base_url_reaches_the_listener_from_this_node(
    address: object, tls: bool, url: str
) -> None:
    assert http_base_url(address, tls) == url


def test_endpoint_from_config_prefers_the_agents_url_and_sees_a_disabled_api() -> None:
    settings = {"http.enabled": True, "http.address": "0.0.0.0:3000", "http.tls.enabled": True}
    endpoint, _ = endpoint_from_config(None, settings, "/etc/iggy/cert.pem")
    assert endpoint is not None and endpoint.base_url == "https://127.0.0.1:3000"
    assert endpoint.ca_file == "/etc/iggy/cert.pem" and endpoint.loopback
    endpoint, _ = endpoint_from_config("http://broker:3000/", settings, None)
    assert endpoint is not None and endpoint.base_url == "http://broker:3000"
    assert not endpoint.loopback and endpoint.source == "config iggy.http_url"
    assert endpoint_from_config(None, {"http.enabled": False}, None) == (None, "disabled")
    endpoint, _ = endpoint_from_config(None, {}, None)
    assert endpoint is not None and endpoint.base_url == "http://127.0.0.1:3000"


# -- credentials -----------------------------------------------------------------------


def _secret(tmp_path: Path, name: str, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_read_secret_file_takes_the_first_line_and_never_shows_it(tmp_path: Path) -> None:
    path = _secret(tmp_path, "pw", f"{PASSWORD}\n".encode())
    secret = read_secret_file(str(path), path)
    assert secret.value == PASSWORD and not secret.problem and not secret.world_readable
    assert PASSWORD not in repr(secret)


@pytest.mark.parametrize(
    ("content", "mode", "problem", "world"),
    [
        (None, 0o600, "does not exist", False),
        (b"\n  \n", 0o600, "is empty", False),
        (b"x" * 5000, 0o600, "larger than 4096", False),
        (b"\xff\xfe", 0o600, "not UTF-8", False),
        (b"secret\n", 0o644, "", True),
    ],
)
def test_read_secret_file_problems_are_words_not_crashes(
    tmp_path: Path, content: bytes | None, mode: int, problem: str, world: bool
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        _secret(tmp_path, "secret", content, mode)
    secret = read_secret_file(str(path), path)
    assert problem in secret.problem if problem else not secret.problem
    assert secret.world_readable is world


def test_read_secret_file_refuses_a_directory_and_an_unreadable_file(tmp_path: Path) -> None:
    assert read_secret_file("d", tmp_path).problem == "is not a regular file"
    locked = _secret(tmp_path, "locked", b"x", 0o000)
    if os.geteuid() != 0:  # root reads anything
        assert "cannot be opened" in read_secret_file("l", locked).problem


def test_credentials_from_prefers_the_token_and_names_what_is_missing(tmp_path: Path) -> None:
    token = _secret(tmp_path, "token", PAT.encode())
    pw = _secret(tmp_path, "pw", PASSWORD.encode())
    creds = credentials_from(USERNAME, str(pw), str(token), Path)
    assert creds.kind == "token" and creds.usable
    creds = credentials_from(USERNAME, str(pw), None, Path)
    assert creds.kind == "password" and creds.username == USERNAME and creds.usable
    creds = credentials_from(None, str(pw), None, Path)
    assert not creds.usable and not creds.unconfigured
    assert creds.problems == ["iggy.username is not set (a password login needs both)"]
    creds = credentials_from(USERNAME, str(tmp_path / "nope"), None, Path)
    assert not creds.usable and "does not exist" in creds.problems[0]
    assert credentials_from(None, None, None, Path).unconfigured


# -- requests to the fake server --------------------------------------------------------


def _client(url: str, timeout_s: float = 3.0) -> ApiClient:
    return ApiClient(Endpoint(url, "test"), timeout_s=timeout_s, deadline=time.monotonic() + 30)


def _password() -> Credentials:
    return Credentials("password", USERNAME, SecretFile("pw", PASSWORD), unconfigured=False)


def _token(value: str = PAT) -> Credentials:
    return Credentials("token", "", SecretFile("token", value), unconfigured=False)


def test_ping_login_stats_and_metrics_of_a_0_8_broker() -> None:
    fake = FakeIggy("0.8")
    with serve(fake) as url:
        client = _client(url)
        ping = client.request("GET", "/ping")
        assert ping.ok and ping.body == b"pong" and ping.elapsed_ms < 1000
        assert get_stats(client, None).reply.status == 401  # 0.7+: /stats needs a token
        result = login(client, _password())
        assert result.outcome == "ok" and result.token is not None
        assert JWT not in repr(result) and JWT not in str(result.token)
        got = get_stats(client, result.token)
        assert got.stats is not None and got.stats.version == "0.8.0"
        metrics = get_metrics(client, "/metrics", result.token)
        assert metrics.reply.ok and metrics.series["partitions"] == 40
    assert fake.bodies[0] == {"username": USERNAME, "password": PASSWORD}


def test_login_with_a_personal_access_token_and_rejections() -> None:
    with serve(FakeIggy("main")) as url:
        client = _client(url)
        assert login(client, _token()).outcome == "ok"
        bad = login(client, _token("pat-wrong"))
        assert bad.outcome == "rejected" and bad.reply.status == 401
        assert "Invalid personal access token" in bad.detail
        wrong = login(
            client, Credentials("password", USERNAME, SecretFile("pw", "nope"), unconfigured=False)
        )
        assert wrong.outcome == "rejected" and wrong.reply.status == 400
        assert wrong.detail == "Invalid credentials (invalid_credentials)"
    with serve(FakeIggy("0.8", failures={"login_garbage"})) as url:
        odd = login(_client(url), _password())
        assert odd.outcome == "failed" and "no access_token.token" in odd.detail


def test_a_broker_that_is_down_is_refused_at_once() -> None:
    reply = _client(closed_port_url()).request("GET", "/ping")
    assert reply.status is None and reply.refused and "connection refused" in reply.error


def test_a_slow_answer_is_cut_at_the_timeout() -> None:
    with serve(FakeIggy("0.8", delays={"/ping": 3.0})) as url:
        started = time.monotonic()
        reply = _client(url, timeout_s=0.4).request("GET", "/ping")
        assert time.monotonic() - started < 2.0
    assert reply.status is None and reply.timed_out


def test_dripping_headers_are_cut_at_the_budget() -> None:
    # Each header byte comes well within the socket timeout; the whole answer never does.
    with serve(FakeIggy("0.8", failures={"headers_drip"})) as url:
        started = time.monotonic()
        reply = _client(url, timeout_s=0.5).request("GET", "/ping")
        took = time.monotonic() - started
    assert took < min(2.0, DRIP_FOR_S / 2), took
    assert reply.status is None and reply.timed_out
    assert reply.error == "no whole answer in time"


def _slow_lookup(*args: object, **kwargs: object) -> list:
    """A resolver that hangs (a dead DNS server)."""
    time.sleep(3)
    raise OSError("never")


def _to_loopback(host: str, port: int, **kwargs: object) -> list:
    """Resolve every name to 127.0.0.1 (a name that is not loopback, reaching the fake)."""
    return socket.getaddrinfo("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]


def test_name_resolution_is_bounded_by_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(Expired, match=r"resolving broker\.example took longer than 0\.2 s"):
        resolve("broker.example", 3000, 0.2, _slow_lookup)
    client = ApiClient(
        Endpoint("http://broker.example:3000", "t"),
        timeout_s=0.3,
        deadline=time.monotonic() + 30,
        lookup=_slow_lookup,
    )
    reply = client.request("GET", "/ping")
    assert time.monotonic() - started < 1.5
    assert reply.timed_out and "resolving broker.example" in reply.error
    # An address is never looked up in a thread, and a name that resolves is reached.
    assert resolve("127.0.0.1", 80, 0.0)[0][4] == ("127.0.0.1", 80)
    with serve(FakeIggy("0.8")) as url:
        port = int(url.rsplit(":", 1)[1])
        assert resolve("localhost", port, 5.0)


def test_credentials_never_go_in_clear_text_off_loopback() -> None:
    fake = FakeIggy("0.6")  # /stats is public: still read without a login
    with serve(fake) as url:
        port = url.rsplit(":", 1)[1]
        client = ApiClient(
            Endpoint(f"http://broker.example:{port}", "t"),
            timeout_s=3,
            deadline=time.monotonic() + 30,
            lookup=_to_loopback,
        )
        assert client.request("GET", "/ping").ok
        for creds in (_password(), _token()):
            refused = login(client, creds)
            assert refused.outcome == "refused" and refused.token is None
            assert refused.detail == (
                f"not sending credentials in clear text to http://broker.example:{port}; "
                "use https or a loopback address"
            )
        got = get_stats(client, None)
        assert got.stats is not None and got.stats.version == "0.6.0"
    assert [r[:2] for r in fake.requests] == [("GET", "/ping"), ("GET", "/stats")]
    assert fake.bodies == []  # nothing was posted
    for url in ("https://broker.example:3000", "http://[::ffff:127.0.0.1]:3000", "http://[::1]:1"):
        assert cleartext_refusal(Endpoint(url, "t")) == ""


def test_the_deadline_bounds_every_request() -> None:
    client = ApiClient(Endpoint("http://127.0.0.1:1", "t"), timeout_s=5, deadline=time.monotonic())
    reply = client.request("GET", "/ping")
    assert reply.timed_out and "deadline" in reply.error


def test_cut_off_and_oversize_answers_are_errors() -> None:
    with serve(FakeIggy("0.5", failures={"stats_truncated"})) as url:
        got = get_stats(_client(url), None)
        assert got.stats is None and "cut off after" in got.problem
    with serve(FakeIggy("0.5")) as url:
        reply = _client(url).request("GET", "/stats", cap=100)
        assert reply.oversize and len(reply.body) == 100 and not reply.ok


def test_snapshot_streams_into_a_file_within_the_cap(tmp_path: Path) -> None:
    fake = FakeIggy("0.8")
    with serve(fake) as url:
        client = _client(url)
        token = login(client, _password()).token
        assert token is not None
        with (tmp_path / "s.zip").open("wb") as sink:
            reply = fetch_snapshot(client, token, sink, 10 * 1024 * 1024)
        assert reply.ok and reply.body == b"" and reply.size == (tmp_path / "s.zip").stat().st_size
        with zipfile.ZipFile(tmp_path / "s.zip") as zf:
            assert sorted(zf.namelist()) == sorted(SNAPSHOT_MEMBERS)
        with (tmp_path / "small.zip").open("wb") as sink:
            small = fetch_snapshot(client, token, sink, 100)
        assert small.oversize and (tmp_path / "small.zip").stat().st_size == 100
    assert fake.bodies[-1] == {"compression": "Deflated", "snapshot_types": ["All"]}


def _zip(members: dict[str, bytes]) -> zipfile.ZipFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(buf.getvalue()))


def test_snapshot_members_are_bounded_in_size_count_and_kind() -> None:
    zf = _zip(
        {
            "server_logs.txt": b"line\n" * 2_000_000,  # 10 MB of text, a few KB zipped
            "core.bin": b"\x00\x01" * 100,
            "../../etc/evil name.txt": b"hello",
            "a.txt": b"a",
            "b.txt": b"b",
        }
    )
    items = list(
        snapshot_members(
            zf, max_members=3, keep=1000, read_limit=1_000_000, deadline=time.monotonic() + 10
        )
    )
    kept = [i for i in items if isinstance(i, Member)]
    skipped = {i.name: i.reason for i in items if isinstance(i, ZipSkip)}
    logs = kept[0]
    assert logs.name == "server_logs.txt" and logs.read == 1_000_000 and not logs.complete
    assert logs.tail.kept == 1000 and logs.tail.getvalue().endswith(b"line\n")
    assert skipped["core.bin"] == "binary, not text"
    assert [m.name for m in kept] == ["server_logs.txt", "evil_name.txt", "a.txt"]
    assert "more than 3 members" in skipped["b.txt"]


def _json(doc: object) -> bytes:
    import json

    return json.dumps(doc).encode()
