"""iggy.health and iggy.native_snapshot against the fake Iggy server on 127.0.0.1."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import zipfile
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.iggy_health import (
    endpoint_of,
    iggy_health,
    iggy_native_snapshot,
    judge_health,
    read_health,
)
from snapshot_agent.config import ChecksConfig, Config
from snapshot_agent.config import IggyConfig as AgentIggy
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.iggy_api import ApiClient
from snapshot_agent.node.iggy_install import discover

from ..conftest import closed_port_url, fixture_roots, make_context, run_cli, write_tree
from .fake_server import (
    JWT,
    PASSWORD,
    PAT,
    SNAPSHOT_MEMBERS,
    USERNAME,
    FakeIggy,
    serve,
)
from .procs import PID, fake_broker

PASSWORD_FILE = "/etc/snapshot-agent/iggy-password"
TOKEN_FILE = "/etc/snapshot-agent/iggy-token"


def _server_toml(url: str | None, extra: str = "") -> str:
    """An Iggy server config whose [http] address is the fake's."""
    address = url.rsplit("/", 1)[-1] if url else "127.0.0.1:3000"
    return f'[http]\nenabled = true\naddress = "{address}"\n{extra}'


def run_health(
    tmp_path: Path,
    url: str | None,
    *,
    creds: str = "password",
    toml: str | None = None,
    secret_mode: int = 0o600,
    thresholds: dict[str, Any] | None = None,
    check: Any = iggy_health,
    native: bool = False,
    cap: int = 10 * 1024 * 1024,
    http_url: str | None = None,
    files: dict[str, str | bytes] | None = None,
    secret: str | None = None,
) -> Result:
    """Run a check on a node whose Iggy config points at `url`; creds: password|token|none."""
    node = tmp_path / "node"
    files = {
        "etc/iggy/server.toml": toml if toml is not None else _server_toml(url),
        **(files or {}),
    }
    if creds == "password":
        files[PASSWORD_FILE.lstrip("/")] = f"{secret or PASSWORD}\n"
    elif creds == "token":
        files[TOKEN_FILE.lstrip("/")] = f"{secret or PAT}\n"
    write_tree(node, files)
    for name in (PASSWORD_FILE, TOKEN_FILE):
        if (path := node / name.lstrip("/")).exists():
            path.chmod(secret_mode)
    iggy = AgentIggy(
        username=USERNAME if creds == "password" else None,
        password_file=PASSWORD_FILE if creds == "password" else None,
        token_file=TOKEN_FILE if creds == "token" else None,
        native_snapshot=native,
        http_url=http_url,
    )
    config = Config(iggy=iggy, checks=ChecksConfig(roots=fixture_roots(node)))
    ctx = make_context(
        tmp_path, config=config, thresholds={**check.thresholds, **(thresholds or {})}, cap=cap
    )
    return check.run(ctx)


def _messages(result: Result) -> str:
    return "\n".join(f.message for f in result.findings)


def _no_secret(result: Result) -> None:
    """Neither the password, the token nor the bearer token leaves the check."""
    text = repr(result) + repr(result.data)
    for secret in (PASSWORD, PAT, JWT):
        assert secret not in text


# -- iggy.health -----------------------------------------------------------------------


def test_health_passes_on_a_healthy_broker(tmp_path: Path) -> None:
    fake = FakeIggy("0.8")
    with serve(fake) as url:
        result = run_health(tmp_path, url)
    assert result.status == Status.PASS, _messages(result)
    assert result.summary.startswith("Iggy 0.8.0 up 3 d 4 h: 2 streams, 5 topics, 40 partitions")
    data = result.data
    assert data["url"] == url and data["url_source"] == "the broker's [http] address"
    assert data["login"] == "password ok" and data["stats_read"]
    assert (data["version"], data["streams"], data["messages"]) == ("0.8.0", 2, 1_234_567)
    assert data["free_disk_bytes"] == 400 * 1024**3 and data["free_disk_pct"] == 40.0
    assert data["uptime_s"] == 273_600.0 and data["consumer_groups"] == 3
    assert data["cache_hit_ratios"][0] == {
        "partition": "0-1-0",
        "hits": 10,
        "misses": 90,
        "hit_ratio": 0.1,
    }
    assert data["metrics"]["reachable"] and data["metrics"]["series"]["streams"] == 2
    assert data["certificate_verified"] is None and data["tls"] is False
    assert [r[:2] for r in fake.requests] == [
        ("GET", "/ping"),
        ("POST", "/users/login"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
    ]
    _no_secret(result)


@pytest.mark.parametrize("version", ["0.5", "0.6"])
def test_health_reads_public_stats_of_old_brokers(tmp_path: Path, version: str) -> None:
    with serve(FakeIggy(version)) as url:
        result = run_health(tmp_path, url, creds="none")
    assert result.status == Status.PASS, _messages(result)
    assert result.data["version"] == f"{version}.0" and result.data["login"] == "none configured"
    assert result.data["free_disk_bytes"] is None  # not sent before 0.8.0
    assert not [f for f in result.findings if "missing" in f.message]


def test_health_main_branch_with_a_token(tmp_path: Path) -> None:
    fake = FakeIggy("main")
    with serve(fake) as url:
        result = run_health(tmp_path, url, creds="token")
    assert result.status == Status.PASS, _messages(result)
    assert result.data["login"] == "token ok" and result.data["metrics"]["reachable"]
    assert ("GET", "/metrics", True) in fake.requests  # main authenticates the scrape
    _no_secret(result)


def test_health_without_credentials_pings_only(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8")) as url:
        result = run_health(tmp_path, url, creds="none")
    assert result.status == Status.PASS
    assert not result.data["stats_read"] and "stats not read" in result.summary
    [info] = [f for f in result.findings if "needs a login" in f.message]
    assert info.severity == Severity.INFO and "iggy.token_file" in info.remediation
    assert "pat create" in info.remediation


def test_health_reads_byte_sizes_sent_as_numbers(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8", failures={"stats_numbers"})) as url:
        result = run_health(tmp_path, url)
    assert result.status == Status.PASS and result.data["free_disk_bytes"] == 400 * 1024**3


def test_health_skipped_without_iggy(tmp_path: Path) -> None:
    node = tmp_path / "empty"
    node.mkdir()
    config = Config(checks=ChecksConfig(roots=fixture_roots(node)))
    ctx = make_context(tmp_path, config=config, thresholds=iggy_health.thresholds)
    result = iggy_health.run(ctx)
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("no Iggy broker found on this node: looked for")


def test_health_skipped_when_http_is_disabled(tmp_path: Path) -> None:
    toml = '[http]\nenabled = false\naddress = "127.0.0.1:3000"\n'
    result = run_health(tmp_path, None, toml=toml)
    assert result.status == Status.SKIPPED
    assert "HTTP API is off" in result.summary and "enabled = false" in result.summary


def test_health_fails_when_the_api_is_down(tmp_path: Path) -> None:
    url = closed_port_url()
    result = run_health(tmp_path, url)
    assert result.status == Status.FAIL
    assert f"the Iggy HTTP API at {url} is unreachable: connection refused" in result.summary
    assert "iggy.http_url" in result.findings[0].remediation


def test_health_fails_when_ping_hangs(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8", delays={"/ping": 3.0})) as url:
        result = run_health(tmp_path, url, thresholds={"request_timeout_s": 0.5})
    assert result.status == Status.FAIL
    assert "does not answer /ping in time" in result.summary
    assert "thread dump" in result.findings[0].remediation


def test_health_warns_on_a_slow_ping(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8", delays={"/ping": 0.3})) as url:
        result = run_health(tmp_path, url)
    assert result.status == Status.WARN
    assert "to answer /ping (limit 250 ms)" in result.summary
    assert result.data["stats_read"]  # slow, but it answered everything


@pytest.mark.parametrize(
    ("creds", "failures", "secret", "status"),
    [
        ("password", {"login_401"}, None, 401),  # a proxy in front, or a disabled user
        ("token", set(), "pat-revoked", 401),  # Iggy: invalid_personal_access_token
        ("password", set(), "wrong-password", 400),  # Iggy: 400 invalid_credentials
    ],
)
def test_health_warns_when_login_is_rejected(
    tmp_path: Path, creds: str, failures: set[str], secret: str | None, status: int
) -> None:
    with serve(FakeIggy("0.8", failures=failures)) as url:
        result = run_health(tmp_path, url, creds=creds, secret=secret)
    assert result.status == Status.WARN
    assert "rejected the login" in result.summary and f"HTTP {status}" in result.summary
    assert "iggy.password_file" in result.findings[0].remediation
    assert result.data["login"].endswith("rejected") and not result.data["stats_read"]
    _no_secret(result)
    assert "wrong-password" not in repr(result) and "pat-revoked" not in repr(result)


def test_health_warns_about_credential_files(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8")) as url:
        exposed = run_health(tmp_path / "a", url, secret_mode=0o644)
        (tmp_path / "b").mkdir()
        node = tmp_path / "b/node"
        write_tree(node, {"etc/iggy/server.toml": _server_toml(url)})
        iggy = AgentIggy(username=USERNAME, password_file="/nowhere/password")
        config = Config(iggy=iggy, checks=ChecksConfig(roots=fixture_roots(node)))
        ctx = make_context(tmp_path / "b", config=config, thresholds=iggy_health.thresholds)
        missing = iggy_health.run(ctx)
    assert exposed.status == Status.WARN and exposed.data["stats_read"]
    assert "is readable by every user" in exposed.summary
    assert f"chmod 600 {PASSWORD_FILE}" in exposed.findings[0].remediation
    assert missing.status == Status.WARN
    assert "iggy.password_file /nowhere/password does not exist" in missing.summary


@pytest.mark.parametrize(
    ("failures", "says"),
    [
        ({"stats_malformed"}, "the answer is not JSON (Expecting value"),
        ({"stats_html"}, "HTTP 502 with an HTML page ('502 Bad Gateway')"),
        ({"stats_truncated"}, "cut off after"),
        ({"stats_garbage_fields"}, "streams_count: 'two' is not a count"),
        (set(), "no whole answer within"),
    ],
)
def test_health_names_what_was_wrong_with_stats(
    tmp_path: Path, failures: set[str], says: str
) -> None:
    delays = {} if failures else {"/stats": 3.0}
    with serve(FakeIggy("0.8", failures=failures, delays=delays)) as url:
        result = run_health(tmp_path, url, thresholds={"request_timeout_s": 1.0})
    assert result.status == Status.WARN, _messages(result)
    assert says in _messages(result)
    assert result.data["ping_ms"] is not None


def test_health_warns_when_stats_is_forbidden(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8", failures={"stats_403"})) as url:
        result = run_health(tmp_path, url)
    assert result.status == Status.WARN
    assert "lacks the read_servers permission" in result.summary
    assert "-g r_srv" in result.findings[0].remediation


def test_health_shows_free_disk_without_judging_it(tmp_path: Path) -> None:
    # 20 GiB free of a 1000 GiB volume is 2 %: disk.usage and iggy.data_dir judge that
    # filesystem (by size and growth); the broker's own figure is shown, not graded twice.
    fake = FakeIggy("0.8")
    fake.broker.free_disk_bytes = 20 * 1024**3
    with serve(fake) as url:
        result = run_health(tmp_path, url)
    assert result.status == Status.PASS, _messages(result)
    assert result.findings == []
    assert "disk 20.0 GiB free of 1000.0 GiB (2.0%); ping" in result.summary
    assert result.data["free_disk_pct"] == 2.0
    assert result.data["total_disk_bytes"] == 1000 * 1024**3
    assert "free_disk_pct" not in " ".join(iggy_health.thresholds)


def _to_loopback(host: str, port: int, **kwargs: Any) -> list:
    """Resolve every name to 127.0.0.1: a name that is not loopback, reaching the fake."""
    return socket.getaddrinfo("127.0.0.1", port, **kwargs)


def test_health_refuses_clear_text_credentials_off_loopback(tmp_path: Path) -> None:
    fake = FakeIggy("0.6")  # /stats is public: read without a login
    with serve(fake) as url:
        port = url.rsplit(":", 1)[1]
        node = tmp_path / "node"
        write_tree(node, {"etc/iggy/server.toml": "[system]\n", PASSWORD_FILE[1:]: PASSWORD})
        (node / PASSWORD_FILE[1:]).chmod(0o600)
        broker_url = f"http://broker.example:{port}"
        iggy = AgentIggy(username=USERNAME, password_file=PASSWORD_FILE, http_url=broker_url)
        config = Config(iggy=iggy, checks=ChecksConfig(roots=fixture_roots(node)))
        ctx = make_context(tmp_path, config=config, thresholds=iggy_health.thresholds)
        install = discover(ctx)
        endpoint, _ = endpoint_of(ctx, install)
        assert endpoint is not None and endpoint.base_url == broker_url
        client = ApiClient(endpoint, timeout_s=3, deadline=ctx.deadline, lookup=_to_loopback)
        result = judge_health(read_health(ctx, install, client), ctx.thresholds)
    assert result.status == Status.WARN, _messages(result)
    [warn] = result.findings
    assert warn.message.startswith(
        f"not sending credentials in clear text to {broker_url}; use https or a loopback address"
    )
    assert "https://" in warn.remediation
    assert result.data["login"] == "password refused" and result.data["stats_read"]
    assert [r[:2] for r in fake.requests] == [
        ("GET", "/ping"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
    ]
    assert fake.bodies == []  # the password was never posted
    _no_secret(result)


def _netns(node: Path, broker: str, agent: str) -> None:
    """The broker's and the agent's network namespaces as /proc shows them (readlink)."""
    for pid, ns in ((str(PID), broker), ("self", agent)):
        (node / f"proc/{pid}/ns").mkdir(parents=True, exist_ok=True)
        (node / f"proc/{pid}/ns/net").symlink_to(ns)


@pytest.mark.parametrize(
    ("broker_ns", "http_url", "status"),
    [
        ("net:[4026532999]", False, Status.SKIPPED),  # a container: its 0.0.0.0 is not ours
        ("net:[4026532999]", True, Status.PASS),  # told where to reach it: go ahead
        ("net:[4026531840]", False, Status.PASS),  # the host's namespace: loopback works
    ],
)
def test_health_skipped_for_a_broker_in_another_network_namespace(
    tmp_path: Path, broker_ns: str, http_url: bool, status: Status
) -> None:
    fake = FakeIggy("0.8")
    with serve(fake) as url:
        node = tmp_path / "node"
        fake_broker(node, "/app")
        _netns(node, broker_ns, "net:[4026531840]")
        result = run_health(tmp_path, url, http_url=url if http_url else None)
    assert result.status == status, result.summary
    if status == Status.SKIPPED:
        assert result.summary.startswith(
            f"the broker (pid {PID}) runs in another network namespace (a container); set "
            "iggy.http_url to an address the agent can reach"
        )
        assert fake.requests == []  # nothing was tried
    else:
        assert result.data["install"]["pid"] == PID


def test_health_with_the_agents_url_and_no_server_config(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8")) as url:
        result = run_health(tmp_path, None, toml="[system]\n", http_url=url)
    assert result.status == Status.PASS and result.data["url_source"] == "config iggy.http_url"


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh certificate for CN=localhost (and the cert's path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_health_over_tls_says_whether_the_certificate_was_verified(tmp_path: Path) -> None:
    context, cert_path = _self_signed(tmp_path)
    with serve(FakeIggy("0.8"), tls=context) as url:
        port = url.rsplit(":", 1)[1]
        toml = (
            f'[http]\nenabled = true\naddress = "127.0.0.1:{port}"\n'
            '[http.tls]\nenabled = true\ncert_file = "/etc/iggy/cert.pem"\n'
        )
        files: dict[str, str | bytes] = {"etc/iggy/cert.pem": cert_path.read_bytes()}
        # The certificate names localhost, not 127.0.0.1: on loopback the agent goes on.
        unverified = run_health(tmp_path / "a", None, toml=toml, files=files)
        # With the name it gives, the configured certificate verifies it.
        localhost = f"https://localhost:{port}"
        verified = run_health(tmp_path / "b", None, toml=toml, files=files, http_url=localhost)
    assert unverified.status == Status.PASS, _messages(unverified)
    assert unverified.data["tls"] and unverified.data["certificate_verified"] is False
    assert unverified.data["url"] == f"https://127.0.0.1:{port}"
    [note] = [f for f in unverified.findings if "not verified" in f.message]
    assert note.severity == Severity.INFO
    assert verified.status == Status.PASS, _messages(verified)
    assert verified.data["certificate_verified"] is True


# -- iggy.native_snapshot -------------------------------------------------------------


def test_native_snapshot_is_off_by_default(tmp_path: Path) -> None:
    result = run_health(tmp_path, None, check=iggy_native_snapshot)
    assert result.status == Status.SKIPPED
    assert "set `iggy.native_snapshot: true`" in result.summary


def test_native_snapshot_needs_credentials(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8")) as url:
        result = run_health(tmp_path, url, check=iggy_native_snapshot, native=True, creds="none")
    assert result.status == Status.SKIPPED
    assert "needs a login: no Iggy credentials configured" in result.summary


def test_native_snapshot_keeps_text_members(tmp_path: Path) -> None:
    fake = FakeIggy("0.8")
    with serve(fake) as url:
        result = run_health(tmp_path, url, check=iggy_native_snapshot, native=True, cap=4096)
    assert result.status == Status.PASS, _messages(result)
    names = sorted(m["member"] for m in result.data["members"])
    assert names == sorted(SNAPSHOT_MEMBERS)
    config = tmp_path / "artifacts/native/server_config.txt"
    # Kept as Iggy sent it: the pipeline redacts every artifact on its way out.
    assert config.read_text() == SNAPSHOT_MEMBERS["server_config.txt"]
    assert fake.bodies[-1] == {"compression": "Deflated", "snapshot_types": ["All"]}
    _no_secret(result)


@pytest.mark.parametrize(
    ("failures", "says"),
    [
        ({"snapshot_huge"}, "larger than max_zip_bytes"),
        ({"snapshot_garbage"}, "not a readable zip"),
    ],
)
def test_native_snapshot_warns_on_oversize_and_garbage(
    tmp_path: Path, failures: set[str], says: str
) -> None:
    with serve(FakeIggy("0.8", failures=failures)) as url:
        result = run_health(
            tmp_path,
            url,
            check=iggy_native_snapshot,
            native=True,
            thresholds={"max_zip_bytes": 100_000},
        )
    assert result.status == Status.WARN and says in result.summary
    assert not (tmp_path / "artifacts/native").exists()


def test_native_snapshot_warns_when_login_is_rejected(tmp_path: Path) -> None:
    with serve(FakeIggy("0.8", failures={"login_401"})) as url:
        result = run_health(tmp_path, url, check=iggy_native_snapshot, native=True)
    assert result.status == Status.WARN and "HTTP 401" in result.summary
    _no_secret(result)


# -- end to end: the real CLI ------------------------------------------------------------


def test_cli_snapshot_of_a_broker_keeps_its_stats_and_none_of_its_secrets(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    secret = tmp_path / "iggy-password"
    secret.write_text(f"{PASSWORD}\n")
    secret.chmod(0o600)
    with serve(FakeIggy("0.8")) as url:
        toml.write_text(_server_toml(url))
        config = tmp_path / "agent.yaml"
        config.write_text(
            f"iggy:\n  config_path: {toml}\n  username: {USERNAME}\n"
            f"  password_file: {secret}\n  native_snapshot: true\n"
        )
        proc = run_cli(
            "run",
            "-c",
            config,
            "-o",
            tmp_path,
            "--only",
            "iggy.health,iggy.native_snapshot",
            "--json",
            "-q",
        )
    assert proc.returncode == 0, proc.stderr
    archive = Path(json.loads(proc.stdout)["path"])
    with zipfile.ZipFile(archive) as zf:
        report = json.loads(zf.read("report.json"))
        everything = b"".join(zf.read(name) for name in zf.namelist())
        config_member = zf.read("raw/iggy.native_snapshot/native/server_config.txt").decode()
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["iggy.health"]["status"] == "pass"
    assert checks["iggy.health"]["data"]["streams"] == 2
    assert checks["iggy.native_snapshot"]["status"] == "pass"
    # Iggy's snapshot holds its config unredacted; the pipeline redacts it on the way in.
    assert "encoding_secret" in config_member and "not-the-default-secret" not in config_member
    for leaked in (PASSWORD, JWT, "not-the-default-secret"):
        assert leaked.encode() not in everything
