"""iggy.config on fixture nodes: each audit rule, the healthy config, garbage, no Iggy."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
import trustme

from snapshot_agent.checks.iggy_config import DEFAULT_JWT_SECRET, iggy_config
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node import iggy_config as server_config
from snapshot_agent.node.certificates import fingerprint, load_certificates
from tests.conftest import write_tree
from tests.iggy.procs import fake_broker, iggy_context

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "iggy-dev-certs"
CWD = "/srv/iggy"
CONFIG = "srv/iggy/core/server/config.toml"

HEALTHY = """
[http]
enabled = true
address = "127.0.0.1:3000"

[http.jwt]
encoding_secret = ""
decoding_secret = ""

[tcp]
enabled = true
address = "127.0.0.1:8090"

[tcp.tls]
enabled = false

[quic]
enabled = true
address = "0.0.0.0:8080"

[system]
path = "local_data"

[system.encryption]
enabled = false
key = ""
"""


def audit(
    tmp_path: Path,
    node: Path,
    config: str = HEALTHY,
    env: dict[str, str] | None = None,
    argv: tuple[str, ...] = ("iggy-server",),
    files: dict[str, str] | None = None,
) -> Result:
    """iggy.config on a node whose broker runs in /srv/iggy with `config`."""
    fake_broker(node, CWD, env, argv=argv)
    write_tree(
        node, {CONFIG: config, "srv/iggy/local_data/logs/iggy-server.log": "", **(files or {})}
    )
    return iggy_config.run(iggy_context(tmp_path, node))


def messages(result: Result, severity: Severity) -> str:
    """The messages of the findings of one severity, joined."""
    return " | ".join(f.message for f in result.findings if f.severity == severity)


def test_iggy_config_healthy_passes(tmp_path: Path, node: Path) -> None:
    result = audit(tmp_path, node)
    assert result.status == Status.PASS, result.findings
    assert result.summary == f"/{CONFIG}: nothing risky found"
    assert result.data["jwt_secret"] == "empty" and result.data["encryption"] is False
    quic = next(t for t in result.data["transports"] if t["transport"] == "quic")
    assert quic["tls"] is True  # QUIC on 0.0.0.0 is always TLS: no warning
    assert "encryption at rest is off" in messages(result, Severity.INFO)
    copied = tmp_path / "artifacts" / "server.toml"
    assert copied.read_text() == HEALTHY


def test_iggy_config_default_jwt_secret_fails(tmp_path: Path, node: Path) -> None:
    config = HEALTHY.replace('encoding_secret = ""', f'encoding_secret = "{DEFAULT_JWT_SECRET}"')
    result = audit(tmp_path, node, config)
    assert result.status == Status.FAIL
    assert "http.jwt.encoding_secret is the JWT secret published" in result.summary
    assert DEFAULT_JWT_SECRET not in str(result.data) + messages(result, Severity.FAIL)
    # The same secret from the environment is named by its variable.
    env = {"IGGY_HTTP_JWT_DECODING_SECRET": DEFAULT_JWT_SECRET}
    again = audit(tmp_path / "env", tmp_path / "env" / "node", HEALTHY, env)
    assert again.status == Status.FAIL
    assert again.summary.startswith("http.jwt.decoding_secret is the JWT secret")
    assert again.findings[0].subject == "IGGY_HTTP_JWT_DECODING_SECRET (environment of the broker)"


def test_iggy_config_default_root_credentials_fail(tmp_path: Path, node: Path) -> None:
    result = audit(tmp_path, node, env={"IGGY_ROOT_PASSWORD": "iggy"})
    assert result.status == Status.FAIL and "default credentials iggy/iggy" in result.summary
    flag = audit(
        tmp_path / "f",
        tmp_path / "f" / "node",
        argv=("iggy-server", "--with-default-root-credentials"),
    )
    assert flag.status == Status.FAIL and "--with-default-root-credentials" in flag.summary
    other = audit(tmp_path / "o", tmp_path / "o" / "node", env={"IGGY_ROOT_PASSWORD": "Str0ng!"})
    assert other.status == Status.PASS


def test_iggy_config_plaintext_listener_warns(tmp_path: Path, node: Path) -> None:
    exposed = HEALTHY.replace('address = "127.0.0.1:8090"', 'address = "0.0.0.0:8090"')
    result = audit(tmp_path, node, exposed)
    assert result.status == Status.WARN
    assert "[tcp] listens on 0.0.0.0:8090 without TLS" in result.summary
    with_tls = exposed.replace("[tcp.tls]\nenabled = false", "[tcp.tls]\nenabled = true")
    assert audit(tmp_path / "t", tmp_path / "t" / "node", with_tls).status == Status.PASS
    # An override from the environment counts the same, and is named.
    env = {"IGGY_HTTP_ADDRESS": "[::]:3000"}
    via_env = audit(tmp_path / "e", tmp_path / "e" / "node", HEALTHY, env)
    assert via_env.status == Status.WARN and "[http] listens on [::]:3000" in via_env.summary
    assert via_env.findings[0].subject == "IGGY_HTTP_ADDRESS (environment of the broker)"


def test_iggy_config_bad_encryption_key_fails(tmp_path: Path, node: Path) -> None:
    bad = HEALTHY.replace('enabled = false\nkey = ""', 'enabled = true\nkey = "c2hvcnQ="')
    result = audit(tmp_path, node, bad)
    assert result.status == Status.FAIL and "not a base64-encoded 32-byte key" in result.summary
    good_key = base64.b64encode(bytes(range(32))).decode()
    good = HEALTHY.replace('enabled = false\nkey = ""', f'enabled = true\nkey = "{good_key}"')
    fine = audit(tmp_path / "g", tmp_path / "g" / "node", good)
    assert fine.status == Status.WARN and "every user on the node can read it" in fine.summary
    (tmp_path / "g" / "node" / CONFIG).chmod(0o640)  # a key in the file: keep it private
    fine = iggy_config.run(iggy_context(tmp_path / "g", tmp_path / "g" / "node"))
    assert fine.status == Status.PASS and fine.data["encryption"] is True
    assert good_key not in str(fine.data)


def _tls_config(cert: str) -> str:
    """HEALTHY with TCP TLS on, using `cert`."""
    return HEALTHY.replace(
        "[tcp.tls]\nenabled = false",
        f'[tcp.tls]\nenabled = true\ncert_file = "{cert}"\nkey_file = "certs/key.pem"',
    )


def test_iggy_config_development_certificate_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A certificate standing in for Iggy's (whose PEM stays out of this repository):
    # its fingerprint joins the known development ones.
    ca = trustme.CA()
    pem = ca.issue_cert("localhost").cert_chain_pems[0].bytes()
    [cert] = load_certificates(pem)
    monkeypatch.setitem(server_config.DEV_CERT_FINGERPRINTS, fingerprint(cert), "iggy_cert.pem")
    result = audit(
        tmp_path,
        node,
        _tls_config("certs/cert.pem"),
        files={"srv/iggy/certs/cert.pem": pem.decode()},
    )
    assert result.status == Status.FAIL
    assert "cert_file /srv/iggy/certs/cert.pem is Iggy's development certificate" in result.summary
    # An ordinary certificate passes.
    monkeypatch.delitem(server_config.DEV_CERT_FINGERPRINTS, fingerprint(cert))
    again = audit(
        tmp_path / "o",
        tmp_path / "o" / "node",
        _tls_config("certs/cert.pem"),
        files={"srv/iggy/certs/cert.pem": pem.decode()},
    )
    assert again.status == Status.PASS


@pytest.mark.skipif(not (SHARED / "iggy_cert.pem").is_file(), reason=f"no {SHARED}")
def test_iggy_config_flags_the_real_development_certificate(tmp_path: Path, node: Path) -> None:
    pem = (SHARED / "iggy_cert.pem").read_text()
    result = audit(
        tmp_path,
        node,
        _tls_config("core/certs/iggy_cert.pem"),
        files={"srv/iggy/core/certs/iggy_cert.pem": pem},
    )
    assert result.status == Status.FAIL and "iggy_cert.pem" in result.summary
    assert dt.datetime.now(dt.UTC).year >= 2026


def test_iggy_config_runtime_config_secrets(tmp_path: Path, node: Path) -> None:
    runtime = (
        '[http.jwt]\nencoding_secret = "Qm9vbS1hLXJlYWwtc2VjcmV0"\n[system.encryption]\nkey = ""\n'
    )
    path = "srv/iggy/local_data/runtime/current_config.toml"
    result = audit(tmp_path, node, files={path: runtime})
    (node / path).chmod(0o600)
    result = iggy_config.run(iggy_context(tmp_path, node))
    assert result.status == Status.WARN
    assert (
        f"/{path} holds the broker's secrets in plain text (http.jwt.encoding_secret)"
        in result.summary
    )
    assert result.data["runtime_config_secrets"] == ["http.jwt.encoding_secret"]
    assert "Qm9vbS1h" not in str(result.data) + result.summary
    (node / path).chmod(0o644)
    world = iggy_config.run(iggy_context(tmp_path, node))
    assert world.status == Status.FAIL and "readable by every user (mode 644)" in world.summary


def test_iggy_config_world_readable_secrets(tmp_path: Path, node: Path) -> None:
    config = HEALTHY.replace(
        'encoding_secret = ""', 'encoding_secret = "a-long-private-secret-value"'
    )
    result = audit(tmp_path, node, config)
    (node / CONFIG).chmod(0o644)
    result = iggy_config.run(iggy_context(tmp_path, node))
    assert result.status == Status.WARN and "every user on the node can read it" in result.summary
    (node / CONFIG).chmod(0o640)
    assert iggy_config.run(iggy_context(tmp_path, node)).status == Status.PASS


def test_iggy_config_garbage_warns(tmp_path: Path, node: Path) -> None:
    result = audit(tmp_path, node, "[http\naddress = \x00\xff")
    assert result.status == Status.WARN and "is unusable (not valid TOML" in result.summary
    assert result.data["config_problem"].startswith("not valid TOML")


def test_iggy_config_without_a_config_file(tmp_path: Path, node: Path) -> None:
    fake_broker(node, CWD)
    result = iggy_config.run(iggy_context(tmp_path, node))
    assert result.status == Status.PASS
    assert result.summary == "built-in defaults: nothing risky found"
    assert "runs on its built-in defaults" in messages(result, Severity.INFO)


def test_iggy_config_skipped_without_iggy(tmp_path: Path, node: Path) -> None:
    result = iggy_config.run(iggy_context(tmp_path, node))
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("no Iggy broker found on this node: looked for")


def test_iggy_config_default_jwt_secret_of_an_image_without_a_config(
    tmp_path: Path, node: Path
) -> None:
    # 0.6/0.7 images run on built-in defaults holding the published secret, with no config
    # file: runtime/current_config.toml, the effective config, tells.
    fake_broker(node, "/app")
    runtime = f'[http.jwt]\nencoding_secret = "{DEFAULT_JWT_SECRET}"\n'
    path = "app/local_data/runtime/current_config.toml"
    write_tree(node, {path: runtime})
    (node / path).chmod(0o600)
    result = iggy_config.run(iggy_context(tmp_path, node))
    assert result.status == Status.FAIL
    assert result.summary.startswith("http.jwt.encoding_secret is the JWT secret published")
    assert result.findings[1].subject == f"/{path}"


def test_iggy_config_world_readable_file_in_a_private_directory_passes(
    tmp_path: Path, node: Path
) -> None:
    config = HEALTHY.replace(
        'encoding_secret = ""', 'encoding_secret = "a-long-private-secret-value"'
    )
    audit(tmp_path, node, config)
    (node / CONFIG).chmod(0o644)
    (node / "srv/iggy/core").chmod(0o750)  # others cannot get to the file
    try:
        assert iggy_config.run(iggy_context(tmp_path, node)).status == Status.PASS
    finally:
        (node / "srv/iggy/core").chmod(0o755)
