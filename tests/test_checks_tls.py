"""Certificates and TLS against certificates made at test time, and live listeners on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from snapshot_agent.checks import tls as tls_module
from snapshot_agent.checks.tls import (
    DAYS_LEFT,
    Probe,
    judge_endpoints,
    tls_certificates,
    tls_endpoints,
)
from snapshot_agent.config import (
    ApiConfig,
    ApiTlsConfig,
    CertificatesConfig,
    ChecksConfig,
    Config,
    IggyConfig,
)
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.certificates import (
    PycaRefusal,
    build_chain,
    classify_pyca_refusal,
    describe,
)
from snapshot_agent.node.tls_inventory import Endpoint

from .conftest import make_context

HOST = socket.gethostname()
NOW = dt.datetime.now(dt.UTC)
# Iggy's development certificates, as the shared reference beside the checkout keeps them.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "iggy-dev-certs"
needs_dev_certs = pytest.mark.skipif(
    not (SHARED / "iggy_cert.pem").is_file(),
    reason=f"Iggy's development certificates are not at {SHARED} (../shared beside the checkout)",
)


# -- certificate factory (cryptography builder, for cases trustme cannot make) ----------


def new_key(kind: str = "ec", bits: int = 2048):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    subject: str,
    key,
    *,
    issuer: tuple[str, object] | None = None,
    names: tuple[str, ...] = (HOST, "localhost"),
    days: tuple[float, float] = (-1, 365),
    ca: bool = False,
    digest=None,
    aki: bool = True,
    aki_critical: bool = False,
    ski: bool = True,
    path_length: int | None = None,
    key_cert_sign: bool | None = None,
    eku: tuple[x509.ObjectIdentifier, ...] | None = None,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> x509.Certificate:
    """A certificate signed by `issuer` (name, key), or self-signed.

    `aki`/`ski` False leave out the key identifiers, as some private CAs do;
    `key_cert_sign` overrides keyUsage's keyCertSign (by default: `ca`); `eku` puts an
    extendedKeyUsage on any certificate (by default only a leaf with names has one);
    `extra` adds (extension, critical) pairs, e.g. nameConstraints. A name that is an
    IP address becomes an iPAddress SAN.
    """
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca if key_cert_sign is None else key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            aki_critical,
        )
    if names and not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([san(n) for n in names]), critical=False
        )
        eku = eku or (ExtendedKeyUsageOID.SERVER_AUTH,)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(issuer_key, None)  # EdDSA hashes by itself
    return builder.sign(issuer_key, digest or hashes.SHA256())


def san(name: str) -> x509.GeneralName:
    """An iPAddress SAN for an address, a dNSName otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key, password: bytes | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class Pki:
    """A private root CA with an intermediate, trusted via checks.certificates.ca_bundle."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root_key = new_key()
        self.root = make_cert("Test Root CA", self.root_key, ca=True, days=(-10, 3650))
        self.int_key = new_key()
        self.intermediate = make_cert(
            "Test Intermediate CA",
            self.int_key,
            issuer=("Test Root CA", self.root_key),
            ca=True,
            days=(-10, 1825),
        )
        self.bundle = self.write("ca.pem", pem(self.root))

    def leaf(self, key=None, **kw) -> x509.Certificate:
        return make_cert(
            HOST, key or new_key(), issuer=("Test Intermediate CA", self.int_key), **kw
        )

    def write(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        path.chmod(mode)
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def run_certs(
    tmp_path: Path, pki: Pki, paths: list[Path], thresholds: dict | None = None, **iggy
) -> Result:
    config = Config(
        iggy=IggyConfig(**iggy),
        checks=ChecksConfig(
            certificates=CertificatesConfig(
                paths=[str(p) for p in paths], ca_bundle=str(pki.bundle)
            )
        ),
    )
    overrides = tls_thresholds() | (thresholds or {})
    return tls_certificates.run(make_context(tmp_path, config=config, thresholds=overrides))


def tls_thresholds() -> dict:
    return dict(tls_certificates.thresholds)


def messages(result: Result, severity: Severity | None = None) -> str:
    return "\n".join(
        f.message for f in result.findings if severity is None or f.severity == severity
    )


def iggy_toml(tmp: Path, cert: Path, key: Path, address: str = "127.0.0.1:8090") -> Path:
    path = tmp / "server.toml"
    path.write_text(
        f'[tcp]\nenabled = true\naddress = "{address}"\n[tcp.tls]\nenabled = true\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\n'
        '[http]\nenabled = true\naddress = "0.0.0.0:3000"\n[http.tls]\nenabled = false\n'
        'cert_file = "certs/unused.pem"\nkey_file = "certs/unused_key.pem"\n'
    )
    return path


# -- files ---------------------------------------------------------------------------


def test_good_chain_with_matching_key_passes(tmp_path: Path, pki: Pki) -> None:
    key = new_key()
    cert = pki.write("server.pem", pem(pki.leaf(key), pki.intermediate), 0o644)
    key_file = pki.write("server.key", key_pem(key))
    result = run_certs(tmp_path, pki, [], config_path=str(iggy_toml(tmp_path, cert, key_file)))
    assert result.status == Status.PASS, messages(result)
    assert "next expiry in 365 days" in result.summary
    [first] = result.data["files"]
    assert first["origin"] == "iggy [tcp] TLS" and first["key"] == str(key_file)
    assert [r["days_left"] for r in result.data["expiry"]] == sorted(
        r["days_left"] for r in result.data["expiry"]
    )


@pytest.mark.parametrize(
    ("days", "severity", "text"),
    [
        ((-400, -5), Severity.FAIL, "expired on"),
        ((3, 300), Severity.FAIL, "not valid yet"),
        ((-1, 5), Severity.FAIL, "expires in 5 days"),
        ((-1, 20), Severity.WARN, "expires in 20 days"),
    ],
)
def test_validity_window(tmp_path: Path, pki: Pki, days, severity: Severity, text: str) -> None:
    path = pki.write("leaf.pem", pem(pki.leaf(days=days), pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    [finding] = [f for f in result.findings if text in f.message]
    assert finding.severity == severity
    assert finding.subject == str(path)
    assert result.status == (Status.FAIL if severity == Severity.FAIL else Status.WARN)


def openssl_sha1_leaf(pki: Pki) -> bytes:
    """A leaf signed by the intermediate with SHA-1 (cryptography refuses to make one)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    t = pki.tmp
    pki.write("int.key", key_pem(pki.int_key))
    pki.write("int.pem", pem(pki.intermediate))
    pki.write("leaf.key", key_pem(new_key()))
    (t / "ext.cnf").write_text(
        f"subjectAltName=DNS:{HOST},DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
    )
    for argv in (
        ["openssl", "req", "-new", "-key", "leaf.key", "-subj", f"/CN={HOST}", "-out", "leaf.csr"],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "int.pem",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-sha1",
            "-days",
            "90",
            "-extfile",
            "ext.cnf",
            "-out",
            "sha1.pem",
        ],
    ):
        subprocess.run(argv, cwd=t, check=True, capture_output=True)
    return (t / "sha1.pem").read_bytes()


def test_sha1_signature_fails(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("sha1-chain.pem", openssl_sha1_leaf(pki) + pem(pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.FAIL
    assert "signed with SHA1" in messages(result, Severity.FAIL)


def test_rsa_1024_fails(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("weak.pem", pem(pki.leaf(new_key("rsa", 1024)), pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert "weak RSA 1024-bit key" in messages(result, Severity.FAIL)


def test_key_size_is_a_minimum(tmp_path: Path, pki: Pki) -> None:
    """fail_rsa_bits_below: 2048 by default, so RSA 2048 itself passes."""
    path = pki.write("rsa2048.pem", pem(pki.leaf(new_key("rsa", 2048)), pki.intermediate))
    assert run_certs(tmp_path, pki, [path]).status == Status.PASS
    stricter = run_certs(tmp_path, pki, [path], {"fail_rsa_bits_below": 3072})
    assert "weak RSA 2048-bit key (minimum 3072)" in messages(stricter, Severity.FAIL)


def test_both_tls_checks_accept_the_same_threshold_names() -> None:
    names = {
        "warn_days",
        "fail_days",
        "fail_rsa_bits_below",
        "fail_ec_bits_below",
        "connect_timeout_s",
    }
    assert set(tls_certificates.thresholds) == set(tls_endpoints.thresholds) == names
    assert tls_certificates.band("days") is tls_endpoints.band("days") is DAYS_LEFT


def test_timeline_level_and_findings_come_from_one_expiry_band(tmp_path: Path, pki: Pki) -> None:
    """Lower is worse: raising warn_days to 400 turns a 365-day leaf amber in both places."""
    path = pki.write("leaf.pem", pem(pki.leaf(days=(-1, 365)), pki.intermediate))
    result = run_certs(tmp_path, pki, [path], {"warn_days": 400})
    assert "expires in 365 days" in messages(result, Severity.WARN)
    levels = {r["subject"]: r["level"] for r in result.data["expiry"]}
    assert levels == {f"CN={HOST}": "warn", "CN=Test Intermediate CA": "pass"}
    assert result.data["windows"] == {"warn_days": 400, "fail_days": 7}  # the chart's shading
    failing = run_certs(tmp_path, pki, [path], {"warn_days": 2000, "fail_days": 365})
    assert {r["level"] for r in failing.data["expiry"]} == {"fail", "warn"}


def test_served_certificate_expiry_is_graded_by_the_same_band(pki: Pki) -> None:
    served = Probe(Endpoint("127.0.0.1", 8090, "test"), leaf=describe(pki.leaf(days=(-1, 20))))
    [warn] = judge_endpoints([served], {}, NOW, tls_thresholds())
    assert warn.severity == Severity.WARN and "serves CN=" in warn.message
    assert "expires in 20 days" in warn.message
    [fail] = judge_endpoints([served], {}, NOW, tls_thresholds() | {"fail_days": 20})
    assert fail.severity == Severity.FAIL


def test_key_that_does_not_match(tmp_path: Path, pki: Pki) -> None:
    cert = pki.write("server.pem", pem(pki.leaf(new_key()), pki.intermediate))
    key = pki.write("other.key", key_pem(new_key()))
    result = run_certs(tmp_path, pki, [], config_path=str(iggy_toml(tmp_path, cert, key)))
    assert result.status == Status.FAIL
    [f] = [f for f in result.findings if "does not match" in f.message]
    assert f.subject == str(key)


def test_encrypted_key_is_reported_and_never_copied(tmp_path: Path, pki: Pki) -> None:
    key = new_key()
    cert = pki.write("server.pem", pem(pki.leaf(key), pki.intermediate))
    key_file = pki.write("enc.key", key_pem(key, b"s3cret"))
    ctx_result = run_certs(tmp_path, pki, [], config_path=str(iggy_toml(tmp_path, cert, key_file)))
    assert "is encrypted" in messages(ctx_result, Severity.INFO)
    assert ctx_result.status == Status.PASS
    artifacts = tmp_path / "artifacts"
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in artifacts.rglob("*") if p.is_file())


def test_world_readable_key_fails(tmp_path: Path, pki: Pki) -> None:
    key = new_key()
    cert = pki.write("server.pem", pem(pki.leaf(key), pki.intermediate))
    key_file = pki.write("open.key", key_pem(key), mode=0o644)
    result = run_certs(tmp_path, pki, [], config_path=str(iggy_toml(tmp_path, cert, key_file)))
    [f] = [f for f in result.findings if "readable by group/others" in f.message]
    assert f.severity == Severity.FAIL and f.subject == str(key_file) and "0644" in f.message


def test_missing_intermediate(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("noint.pem", pem(pki.leaf(), pki.root))  # leaf + root, no intermediate
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.FAIL
    assert "missing intermediate" in messages(result, Severity.FAIL)
    assert "Test Intermediate CA" in messages(result, Severity.FAIL)


def test_unknown_issuer(tmp_path: Path, pki: Pki) -> None:
    stranger_key = new_key()
    leaf = make_cert(HOST, new_key(), issuer=("Stranger CA", stranger_key))
    path = pki.write("stranger.pem", pem(leaf))
    result = run_certs(tmp_path, pki, [path])
    text = messages(result, Severity.WARN)
    assert "unknown issuer CN=Stranger CA" in text and "missing intermediate" not in text


def test_self_signed_leaf(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("self.pem", pem(make_cert(HOST, new_key())))
    result = run_certs(tmp_path, pki, [path])
    assert "self-signed" in messages(result, Severity.WARN)
    assert result.status == Status.WARN


def test_wrong_hostname(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("other.pem", pem(pki.leaf(names=("other.example",)), pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.WARN
    assert f"none of this node's names ({HOST}" in messages(result, Severity.WARN)


def test_chain_out_of_order(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("order.pem", pem(pki.leaf(), pki.root, pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert "out of order" in messages(result, Severity.WARN)


# -- chains judged as the broker's clients judge them --------------------------------
#
# OpenSSL with default flags and rustls/webpki (the Iggy Rust SDK) accept a chain whose
# certificates lack RFC 5280's key identifiers; strict verifiers (Python >= 3.13's default
# context sets VERIFY_X509_STRICT; pyca/cryptography's) refuse it. Each chain below is also
# handed to `openssl verify`, so the tests state the OpenSSL behaviour they rely on
# (rustls cannot be run from here: its rules are quoted in node/certificates.py).


def odd_chain(kind: str) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    """(root, intermediates, leaf) of a private CA with one peculiarity named by `kind`."""
    root_key, int_key, leaf_key = new_key(), new_key(), new_key()
    if kind == "ed25519_root":  # EdDSA: fine for OpenSSL and rustls, not CA/Browser Forum
        root_key = ed25519.Ed25519PrivateKey.generate()
    root = make_cert("Odd Root CA", root_key, ca=True, days=(-10, 3650), ski=kind != "root_no_ski")
    inter_kw: dict = {
        "intermediate_no_aki": {"aki": False},
        "issuer_not_ca": {"ca": False, "key_cert_sign": True, "names": ()},
        "issuer_without_cert_sign": {"key_cert_sign": False},
        "issuer_not_for_servers": {"eku": (ExtendedKeyUsageOID.CLIENT_AUTH,)},
        "path_too_long": {"path_length": 0},
    }.get(kind, {})
    int_kw = {"ca": True, "days": (-10, 1825)} | inter_kw
    inter = make_cert("Odd Intermediate CA", int_key, issuer=("Odd Root CA", root_key), **int_kw)
    chain, issuer = [inter], ("Odd Intermediate CA", int_key)
    if kind == "path_too_long":  # a second CA below one that allows none (pathlen:0)
        sub_key = new_key()
        sub = make_cert("Odd Sub CA", sub_key, issuer=issuer, ca=True, days=(-10, 1000))
        chain, issuer = [sub, inter], ("Odd Sub CA", sub_key)
    leaf = make_cert(
        HOST,
        leaf_key,
        issuer=issuer,
        aki=kind != "leaf_no_aki",
        key_cert_sign=kind == "leaf_signs_certificates",
    )
    return root, chain, leaf


Certs = tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]


def run_chain(tmp_path: Path, kind: str) -> Result:
    """tls.certificates on a file holding the odd chain, its root trusted via ca_bundle."""
    return run_certs_of(tmp_path, odd_chain(kind))


def run_certs_of(
    tmp_path: Path, certs: Certs, names: tuple[str, ...] = (), thresholds: dict | None = None
) -> Result:
    """tls.certificates on a file holding (root, chain, leaf): leaf and chain, root trusted."""
    root, chain, leaf = certs
    bundle, path = tmp_path / "odd-ca.pem", tmp_path / "odd-chain.pem"
    bundle.write_bytes(pem(root))
    path.write_bytes(pem(leaf, *chain))
    certificates = CertificatesConfig(paths=[str(path)], ca_bundle=str(bundle), names=[*names])
    config = Config(checks=ChecksConfig(certificates=certificates))
    overrides = tls_thresholds() | (thresholds or {})
    return tls_certificates.run(make_context(tmp_path, config=config, thresholds=overrides))


def openssl_verify(tmp_path: Path, kind: str, *flags: str) -> subprocess.CompletedProcess:
    """`openssl verify` of the odd chain as a TLS client checks a server (-purpose sslserver)."""
    return openssl_verify_certs(tmp_path, odd_chain(kind), *flags)


def openssl_verify_certs(tmp_path: Path, certs: Certs, *flags: str) -> subprocess.CompletedProcess:
    """`openssl verify -purpose sslserver` of (root, chain, leaf), the root as the CA file."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    root, chain, leaf = certs
    (tmp_path / "root.pem").write_bytes(pem(root))
    (tmp_path / "untrusted.pem").write_bytes(pem(*chain))
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    argv = ["openssl", "verify", *flags, "-purpose", "sslserver", "-CAfile", "root.pem"]
    argv += ["-untrusted", "untrusted.pem", "leaf.pem"] if chain else ["leaf.pem"]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)


def openssl_says(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


#: kind -> (what the warning says, what `openssl verify -x509_strict` says)
STRICT_ONLY = {
    "leaf_no_aki": ("has no Authority Key Identifier", "Missing Authority Key Identifier"),
    "intermediate_no_aki": ("has no Authority Key Identifier", "Missing Authority Key Identifier"),
    "root_no_ski": ("without a Subject Key Identifier", "Missing Subject Key Identifier"),
    "leaf_signs_certificates": (
        "is not a CA but its keyUsage allows keyCertSign",
        "Key usage keyCertSign invalid for non-CA cert",
    ),
}
#: kind -> (what the failure says, what `openssl verify` with default flags says)
REFUSED = {
    "issuer_not_ca": ("is not a CA", "invalid CA certificate"),
    "issuer_without_cert_sign": ("does not allow keyCertSign", "invalid CA certificate"),
    "path_too_long": ("allows 0 CA(s) below it", "path length constraint exceeded"),
    "issuer_not_for_servers": ("without serverAuth", "unsuitable certificate purpose"),
}


@pytest.mark.parametrize("kind", sorted(STRICT_ONLY))
def test_chain_only_strict_verifiers_refuse_warns_naming_them(tmp_path: Path, kind: str) -> None:
    result = run_chain(tmp_path, kind)
    assert result.status == Status.WARN, messages(result)
    [warning] = result.findings
    assert STRICT_ONLY[kind][0] in warning.message
    assert "Python ≥ 3.13" in warning.message and "VERIFY_X509_STRICT" in warning.message
    assert "rustls/webpki (the Iggy Rust SDK) accept it" in warning.message
    assert "will reject" not in warning.message and "VERIFY_X509_STRICT" in warning.remediation


@pytest.mark.parametrize("kind", sorted(STRICT_ONLY))
def test_openssl_accepts_by_default_what_only_its_strict_mode_refuses(
    tmp_path: Path, kind: str
) -> None:
    default = openssl_verify(tmp_path, kind)
    assert default.returncode == 0 and "leaf.pem: OK" in default.stdout, default.stderr
    strict = openssl_verify(tmp_path, kind, "-x509_strict")
    assert strict.returncode != 0
    assert STRICT_ONLY[kind][1] in strict.stdout + strict.stderr


def test_chain_only_pyca_cryptography_refuses_warns_naming_it(tmp_path: Path) -> None:
    """An Ed25519 root: OpenSSL, strict or not, and rustls accept; the CA/B Forum profile not."""
    result = run_chain(tmp_path, "ed25519_root")
    assert result.status == Status.WARN, messages(result)
    [warning] = result.findings
    assert "pyca/cryptography's verifier (CA/Browser Forum profile) refuses" in warning.message
    assert "rustls/webpki (the Iggy Rust SDK) accept it" in warning.message
    assert "Python" not in warning.message  # OpenSSL's strict mode accepts it: not named


def test_openssl_accepts_an_ed25519_root_even_in_strict_mode(tmp_path: Path) -> None:
    for flags in ((), ("-x509_strict",)):
        done = openssl_verify(tmp_path, "ed25519_root", *flags)
        assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, (flags, done.stdout)


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_chain_every_client_refuses_fails(tmp_path: Path, kind: str) -> None:
    result = run_chain(tmp_path, kind)
    assert result.status == Status.FAIL, messages(result)
    [failure] = [f for f in result.findings if f.severity == Severity.FAIL]
    assert "chain validation failed" in failure.message
    assert REFUSED[kind][0] in failure.message and "clients will reject it" in failure.message


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_openssl_refuses_by_default_what_the_check_fails(tmp_path: Path, kind: str) -> None:
    default = openssl_verify(tmp_path, kind)
    assert default.returncode != 0
    assert REFUSED[kind][1] in default.stdout + default.stderr


def test_ca_certificate_as_server_certificate_fails_for_rustls(tmp_path: Path, pki: Pki) -> None:
    """`openssl req -x509` makes CA:TRUE certificates; webpki refuses one as a server's."""
    key = new_key()
    cert = pki.write("self-ca.pem", pem(make_cert(HOST, key, ca=True)))
    key_file = pki.write("self-ca.key", key_pem(key))
    result = run_certs(tmp_path, pki, [], config_path=str(iggy_toml(tmp_path, cert, key_file)))
    assert result.status == Status.FAIL
    assert "CaUsedAsEndEntity" in messages(result, Severity.FAIL)
    # the same certificate named in checks.certificates.paths is a CA file: not judged as a server
    assert run_certs(tmp_path, pki, [cert]).status == Status.PASS


# -- name constraints, as OpenSSL and rustls/webpki enforce them -----------------------
#
# A CA's nameConstraints bind every certificate below it: both verifiers refuse a server
# whose names fall outside the permitted subtrees or inside an excluded one. `.invalid` is
# a reserved TLD, so this machine's own name never falls inside `example.invalid`.

BOTH = "OpenSSL with default flags and rustls/webpki (the Iggy Rust SDK)"
RUSTLS_ONLY = "rustls/webpki (the Iggy Rust SDK)"


def dns_trees(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def ip_trees(*networks: str) -> list[x509.GeneralName]:
    return [x509.IPAddress(ipaddress.ip_network(n)) for n in networks]


#: kind -> (the CA carrying the constraints, permitted, excluded, the leaf's names)
CONSTRAINED: dict[str, tuple[str, list | None, list | None, tuple[str, ...]]] = {
    "permitted_dns": ("intermediate", dns_trees("example.invalid"), None, (HOST, "localhost")),
    "permitted_dns_intermediate_no_aki": (
        "intermediate",
        dns_trees("example.invalid"),
        None,
        (HOST, "localhost"),
    ),
    "excluded_dns": ("intermediate", None, dns_trees("localhost"), (HOST, "localhost")),
    "permitted_ip": (
        "intermediate",
        dns_trees(HOST, "localhost") + ip_trees("10.0.0.0/8"),
        None,
        (HOST, "localhost", "127.0.0.1"),
    ),
    "excluded_ip": ("intermediate", None, ip_trees("127.0.0.0/8"), (HOST, "127.0.0.1")),
    "root_permitted_dns": ("root", dns_trees("example.invalid"), None, (HOST, "localhost")),
    "excluded_wildcard_reach": (
        "intermediate",
        None,
        dns_trees("www.example.invalid"),
        ("*.example.invalid",),
    ),
    "directory_name": (
        "intermediate",
        [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))],
        None,
        (HOST, "localhost"),
    ),
    # healthy: names inside the constraints, or constraints on another name form
    "permitted_satisfied": (
        "intermediate",
        dns_trees(HOST, "localhost") + ip_trees("127.0.0.0/8"),
        None,
        (HOST, "localhost", "127.0.0.1"),
    ),
    "constraint_on_another_form": ("intermediate", ip_trees("10.0.0.0/8"), None, (HOST,)),
    "permitted_parent_domain": (
        "root",
        dns_trees("example.invalid"),
        dns_trees("internal.example.invalid"),
        ("iggy.example.invalid", "*.iggy.example.invalid"),
    ),
    # `.example.invalid`: subdomains only; OpenSSL and webpki take it, pyca calls it malformed
    "leading_dot_subtree": (
        "intermediate",
        dns_trees(".example.invalid"),
        None,
        ("iggy.example.invalid",),
    ),
}
#: kind -> (what the failure says, who refuses, what `openssl verify` says; None: OK)
NC_REFUSED = {
    "permitted_dns": (
        f"CN={HOST} has DNS:{HOST}, outside the permitted names (DNS:example.invalid)",
        BOTH,
        "permitted subtree violation",
    ),
    "permitted_dns_intermediate_no_aki": (
        "outside the permitted names (DNS:example.invalid)",
        BOTH,
        "permitted subtree violation",
    ),
    "excluded_dns": (
        "has DNS:localhost, inside the excluded names (DNS:localhost)",
        BOTH,
        "excluded subtree violation",
    ),
    "permitted_ip": (
        "has IP:127.0.0.1, outside the permitted names (IP:10.0.0.0/8)",
        BOTH,
        "permitted subtree violation",
    ),
    "excluded_ip": (
        "has IP:127.0.0.1, inside the excluded names (IP:127.0.0.0/8)",
        BOTH,
        "excluded subtree violation",
    ),
    "root_permitted_dns": (
        "name constraints of CN=Odd Root CA",
        BOTH,
        "permitted subtree violation",
    ),
    "excluded_wildcard_reach": (
        "has DNS:*.example.invalid, inside the excluded names (DNS:www.example.invalid)",
        RUSTLS_ONLY,
        None,  # OpenSSL compares the wildcard as written; webpki expands it (CVE-2025-61727)
    ),
    "directory_name": ("directoryName constraint", RUSTLS_ONLY, None),
}
NC_ACCEPTED = {
    "permitted_satisfied": (),
    "constraint_on_another_form": (),
    "permitted_parent_domain": ("iggy.example.invalid",),
}


def constrained_chain(kind: str) -> Certs:
    """(root, [intermediate], leaf) with the nameConstraints of CONSTRAINED[kind]."""
    where, permitted, excluded, names = CONSTRAINED[kind]
    constraints = ((x509.NameConstraints(permitted, excluded), True),)
    root_key, int_key = new_key(), new_key()
    root = make_cert(
        "Odd Root CA",
        root_key,
        ca=True,
        days=(-10, 3650),
        extra=constraints if where == "root" else (),
    )
    inter = make_cert(
        "Odd Intermediate CA",
        int_key,
        issuer=("Odd Root CA", root_key),
        ca=True,
        days=(-10, 1825),
        aki=not kind.endswith("no_aki"),
        extra=constraints if where == "intermediate" else (),
    )
    leaf = make_cert(HOST, new_key(), issuer=("Odd Intermediate CA", int_key), names=names)
    return root, [inter], leaf


@pytest.mark.parametrize("kind", sorted(NC_REFUSED))
def test_name_constraint_violations_fail(tmp_path: Path, kind: str) -> None:
    """Names outside a CA's constraints: a failure naming who refuses, never a warning.

    With the intermediate also lacking its Authority Key Identifier, the key-identifier
    warning used to be the only finding; the violation is found on its own now.
    """
    result = run_certs_of(tmp_path, constrained_chain(kind))
    assert result.status == Status.FAIL, messages(result)
    [failure] = [f for f in result.findings if f.severity == Severity.FAIL]
    text, refused_by, _ = NC_REFUSED[kind]
    assert "chain validation failed: name constraints of" in failure.message
    assert text in failure.message and f"(refused by {refused_by})" in failure.message
    assert "Reissue" in failure.remediation and "permits" in failure.remediation
    assert not [f for f in result.findings if "accept it" in f.message]


@pytest.mark.parametrize("kind", sorted(NC_REFUSED))
def test_openssl_on_the_name_constraint_violations(tmp_path: Path, kind: str) -> None:
    """OpenSSL refuses what the check says it refuses, and accepts the webpki-only cases."""
    done = openssl_verify_certs(tmp_path, constrained_chain(kind))
    says = NC_REFUSED[kind][2]
    if says is None:
        assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, openssl_says(done)
    else:
        assert done.returncode != 0 and says in openssl_says(done)


@pytest.mark.parametrize("kind", sorted(NC_ACCEPTED))
def test_name_constraints_satisfied_pass(tmp_path: Path, kind: str) -> None:
    result = run_certs_of(tmp_path, constrained_chain(kind), names=NC_ACCEPTED[kind])
    assert result.status == Status.PASS, messages(result)


@pytest.mark.parametrize("kind", sorted(NC_ACCEPTED))
def test_openssl_accepts_satisfied_name_constraints(tmp_path: Path, kind: str) -> None:
    done = openssl_verify_certs(tmp_path, constrained_chain(kind))
    assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, openssl_says(done)


def test_leading_dot_name_constraint_only_pyca_refuses_warns(tmp_path: Path) -> None:
    """A subtree written `.example.invalid`: OpenSSL and webpki accept it, pyca does not."""
    certs = constrained_chain("leading_dot_subtree")
    result = run_certs_of(tmp_path, certs, names=("iggy.example.invalid",))
    assert result.status == Status.WARN, messages(result)
    [warning] = result.findings
    assert "malformed DNS name constraint: .example.invalid" in warning.message
    assert f"{BOTH} accept it" in warning.message
    done = openssl_verify_certs(tmp_path, certs)
    assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, openssl_says(done)


# -- what pyca/cryptography refuses and the model does not explain ----------------------


def private_chain(
    *,
    root_key=None,
    int_key=None,
    root_kw: dict | None = None,
    int_kw: dict | None = None,
    **leaf_kw,
) -> Certs:
    """(root, [intermediate], leaf) of a private CA; keywords shape each certificate."""
    root_key, int_key = root_key or new_key(), int_key or new_key()
    root = make_cert("Odd Root CA", root_key, ca=True, days=(-10, 3650), **(root_kw or {}))
    inter = make_cert(
        "Odd Intermediate CA",
        int_key,
        issuer=("Odd Root CA", root_key),
        **({"ca": True, "days": (-10, 1825)} | (int_kw or {})),
    )
    leaf = make_cert(HOST, new_key(), issuer=("Odd Intermediate CA", int_key), **leaf_kw)
    return root, [inter], leaf


def test_unknown_pyca_refusal_fails_even_beside_a_missing_key_identifier(
    tmp_path: Path,
) -> None:
    """A 1024-bit RSA intermediate without AKI, the weak-key band lowered to allow it.

    pyca/cryptography refuses it ("RSA key is too weak"), which is no strict-only point:
    rustls/webpki refuses RSA keys under 2048 bits too. It used to be skipped (the
    missing AKI returned first) or, alone, reported as a warning saying rustls accepts.
    """
    certs = private_chain(int_key=new_key("rsa", 1024), int_kw={"aki": False})
    result = run_certs_of(tmp_path, certs, thresholds={"fail_rsa_bits_below": 1024})
    assert result.status == Status.FAIL, messages(result)
    [warning] = [f for f in result.findings if f.severity == Severity.WARN]
    assert "CN=Odd Intermediate CA has no Authority Key Identifier" in warning.message
    [failure] = [f for f in result.findings if f.severity == Severity.FAIL]
    assert "pyca/cryptography's verifier refuses the chain" in failure.message
    assert "RSA key is too weak" in failure.message and "not a point known" in failure.message


def test_openssl_on_a_1024_bit_intermediate(tmp_path: Path) -> None:
    """`openssl verify` takes it at its default level; at level 2 (Debian's) it refuses."""
    certs = private_chain(int_key=new_key("rsa", 1024), int_kw={"aki": False})
    default = openssl_verify_certs(tmp_path, certs)
    assert default.returncode == 0, openssl_says(default)
    level2 = openssl_verify_certs(tmp_path, certs, "-auth_level", "2")
    assert level2.returncode != 0 and "key too weak" in openssl_says(level2)


def test_an_ed448_root_fails_for_rustls(tmp_path: Path) -> None:
    """pyca refuses Ed448 as it refuses Ed25519, but rustls/webpki has no Ed448: a failure."""
    result = run_certs_of(tmp_path, private_chain(root_key=ed448.Ed448PrivateKey.generate()))
    assert result.status == Status.FAIL, messages(result)
    [failure] = result.findings
    assert "Forbidden public key algorithm" in failure.message
    assert "may refuse it too" in failure.message


def test_openssl_accepts_an_ed448_root(tmp_path: Path) -> None:
    certs = private_chain(root_key=ed448.Ed448PrivateKey.generate())
    done = openssl_verify_certs(tmp_path, certs)
    assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, openssl_says(done)


def test_pyca_reasons_are_strict_only_only_when_known_and_confirmed() -> None:
    """A forbidden algorithm is strict-only for Ed25519, not for Ed448 (webpki lacks it)."""
    ed25519_certs = odd_chain("ed25519_root")
    chain = build_chain(ed25519_certs[2], ed25519_certs[1], [ed25519_certs[0]])
    forbidden = "validation failed: candidates exhausted: Forbidden public key algorithm: x"
    assert classify_pyca_refusal(forbidden, chain, []) is PycaRefusal.STRICT_ONLY
    new_wording = "validation failed: some reason a later cryptography release invents"
    assert classify_pyca_refusal(new_wording, chain, []) is PycaRefusal.UNKNOWN
    ed448_certs = private_chain(root_key=ed448.Ed448PrivateKey.generate())
    ed448_chain = build_chain(ed448_certs[2], ed448_certs[1], [ed448_certs[0]])
    assert classify_pyca_refusal(forbidden, ed448_chain, []) is PycaRefusal.UNKNOWN


def critical_ski(key) -> tuple[tuple[x509.ExtensionType, bool], ...]:
    return ((x509.SubjectKeyIdentifier.from_public_key(key.public_key()), True),)


ROOT_KEY = new_key()
#: kind -> (private_chain keywords, who refuses, what `openssl verify` says; None: OK)
CRITICAL = {
    "leaf_aki_critical": ({"aki_critical": True}, BOTH, "unhandled critical extension"),
    "root_ski_critical": (  # webpki reads a trust anchor ignoring unknown critical ones
        {"root_key": ROOT_KEY, "root_kw": {"ski": False, "extra": critical_ski(ROOT_KEY)}},
        "OpenSSL with default flags",
        "unhandled critical extension",
    ),
    "intermediate_policies_critical": (
        {
            "int_kw": {
                "extra": (
                    (
                        x509.CertificatePolicies(
                            [x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]
                        ),
                        True,
                    ),
                )
            }
        },
        RUSTLS_ONLY,
        None,
    ),
}


@pytest.mark.parametrize("kind", sorted(CRITICAL))
def test_critical_extension_clients_do_not_process_fails(tmp_path: Path, kind: str) -> None:
    """A critical AKI (both), certificatePolicies (webpki only), a root's SKI (OpenSSL only)."""
    keywords, refused_by, _ = CRITICAL[kind]
    result = run_certs_of(tmp_path, private_chain(**keywords))
    assert result.status == Status.FAIL, messages(result)
    [failure] = result.findings
    assert "has a critical extension clients do not process" in failure.message
    assert f"(refused by {refused_by})" in failure.message


@pytest.mark.parametrize("kind", sorted(CRITICAL))
def test_openssl_on_critical_extensions(tmp_path: Path, kind: str) -> None:
    keywords, _, says = CRITICAL[kind]
    done = openssl_verify_certs(tmp_path, private_chain(**keywords))
    if says is None:
        assert done.returncode == 0 and "leaf.pem: OK" in done.stdout, openssl_says(done)
    else:
        assert done.returncode != 0 and says in openssl_says(done)


# -- signatures and errors while judging a chain ----------------------------------------


def forged_leaf(pki: Pki, issuer: str) -> x509.Certificate:
    """A leaf naming `issuer` (and its key identifier) but signed by another key."""
    issuer_key = pki.root_key if issuer == "Test Root CA" else pki.int_key
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return make_cert(HOST, new_key(), issuer=(issuer, new_key()), aki=False, extra=((aki, False),))


@pytest.mark.parametrize("issuer", ["Test Root CA", "Test Intermediate CA"])
def test_signature_by_another_key_fails(tmp_path: Path, pki: Pki, issuer: str) -> None:
    """Named issuer, wrong signature: was an 'unknown issuer' warning (or a wrong gap)."""
    chain = [pki.intermediate] if issuer == "Test Intermediate CA" else []
    path = pki.write("forged.pem", pem(forged_leaf(pki, issuer), *chain))
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.FAIL, messages(result)
    [failure] = result.findings
    assert f"names CN={issuer} as its issuer, but its signature does not verify" in (
        failure.message
    )


@pytest.mark.parametrize("issuer", ["Test Root CA", "Test Intermediate CA"])
def test_openssl_refuses_a_signature_by_another_key(pki: Pki, issuer: str) -> None:
    chain = [pki.intermediate] if issuer == "Test Intermediate CA" else []
    done = openssl_verify_certs(pki.tmp, (pki.root, chain, forged_leaf(pki, issuer)))
    assert done.returncode != 0 and "certificate signature failure" in openssl_says(done)


def test_chain_that_cannot_be_judged_fails(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error while building or checking a chain is a failure, never a pass or a crash."""

    def broken(*_args: object) -> None:
        raise RuntimeError("a certificate the checker cannot handle")

    monkeypatch.setattr(tls_module, "client_rejection", broken)
    path = pki.write("server.pem", pem(pki.leaf(), pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.FAIL
    [failure] = result.findings
    assert "the chain could not be validated (RuntimeError" in failure.message
    assert "openssl verify" in failure.remediation


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", "PEM"),
        (b"\x00\x01garbage", "neither PEM nor DER"),
    ],
)
def test_garbage_and_empty_files(tmp_path: Path, pki: Pki, content: bytes, reason: str) -> None:
    path = pki.write("bad.pem", content)
    result = run_certs(tmp_path, pki, [path])
    assert result.status == Status.FAIL
    [f] = result.findings
    assert reason in f.message and f.subject == str(path)


def test_der_certificate(tmp_path: Path, pki: Pki) -> None:
    der = pki.leaf(days=(-1, 3)).public_bytes(serialization.Encoding.DER)
    path = pki.write("leaf.der", der)
    result = run_certs(tmp_path, pki, [path])
    assert "expires in 3 days" in messages(result, Severity.FAIL)


def test_ca_file_gets_no_server_checks(tmp_path: Path, pki: Pki) -> None:
    result = run_certs(tmp_path, pki, [pki.bundle])
    assert result.status == Status.PASS, messages(result)


@needs_dev_certs
def test_iggy_development_certificates_are_flagged(tmp_path: Path, pki: Pki) -> None:
    result = run_certs(tmp_path, pki, [SHARED / "iggy_cert.pem", SHARED / "iggy_ca_cert.pem"])
    text = messages(result, Severity.FAIL)
    assert "development certificate (iggy_cert.pem)" in text
    assert "development certificate (iggy_ca_cert.pem)" in text


def test_glob_without_match_and_no_sources(tmp_path: Path, pki: Pki) -> None:
    result = run_certs(tmp_path, pki, [tmp_path / "certs" / "*.pem"])
    assert result.status == Status.WARN and "no file matches" in result.summary
    config = Config()
    empty = tls_certificates.run(make_context(tmp_path, config=config, thresholds=tls_thresholds()))
    assert empty.status == Status.SKIPPED


def test_garbage_iggy_config_is_a_finding(tmp_path: Path, pki: Pki) -> None:
    bad = tmp_path / "server.toml"
    bad.write_text("[tcp\nenabled = ")
    result = run_certs(tmp_path, pki, [], config_path=str(bad))
    assert "not valid TOML" in messages(result, Severity.WARN)


def test_agent_api_certificates_are_examined(tmp_path: Path, pki: Pki) -> None:
    key = new_key()
    cert = pki.write("api.pem", pem(pki.leaf(key, days=(-1, 6)), pki.intermediate))
    config = Config(
        api=ApiConfig(
            tls=ApiTlsConfig(cert=str(cert), key=str(pki.write("api.key", key_pem(key))))
        ),
        checks=ChecksConfig(certificates=CertificatesConfig(ca_bundle=str(pki.bundle))),
    )
    result = tls_certificates.run(
        make_context(tmp_path, config=config, thresholds=tls_thresholds())
    )
    assert result.data["files"][0]["origin"] == "snapshot-agent API"
    assert "expires in 6 days" in messages(result, Severity.FAIL)


# -- live endpoints ------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator:
    """Start TLS servers on 127.0.0.1 serving a given trustme certificate."""
    servers: list[tuple[socket.socket, threading.Thread]] = []
    stop = threading.Event()

    def start(cert: trustme.LeafCert, legacy: bool = False) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        if legacy:  # an old-fashioned listener that still takes TLS 1.0/1.1
            context.set_ciphers("ALL:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.settimeout(1)
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((listener, thread))
        return listener.getsockname()[1]

    yield start
    stop.set()
    for listener, thread in servers:
        listener.close()
        thread.join(timeout=2)


def write_trustme(tmp: Path, name: str, cert: trustme.LeafCert) -> tuple[Path, Path]:
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    key_path.chmod(0o600)
    return cert_path, key_path


def run_endpoints(tmp_path: Path, ca: trustme.CA, config_path: Path | None, endpoints=()) -> Result:
    bundle = tmp_path / "trust.pem"
    ca.cert_pem.write_to_path(str(bundle))
    config = Config(
        iggy=IggyConfig(config_path=str(config_path) if config_path else None),
        checks=ChecksConfig(
            certificates=CertificatesConfig(endpoints=list(endpoints), ca_bundle=str(bundle))
        ),
    )
    return tls_endpoints.run(make_context(tmp_path, config=config, thresholds=tls_thresholds()))


def test_live_listener_serving_the_file_on_disk_passes(tmp_path: Path, tls_server) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    port = tls_server(cert)
    cert_path, key_path = write_trustme(tmp_path, "live", cert)
    toml = iggy_toml(tmp_path, cert_path, key_path, f"0.0.0.0:{port}")
    result = run_endpoints(tmp_path, ca, toml)
    assert result.status == Status.PASS, messages(result)
    [row] = result.data["endpoints"]
    assert row["endpoint"] == f"127.0.0.1:{port}" and row["protocol"].startswith("TLSv1.")
    assert row["handshake_ms"] > 0
    assert "accepted" not in row["legacy"]


def test_live_listener_serving_an_old_certificate_warns(tmp_path: Path, tls_server) -> None:
    ca = trustme.CA()
    served = ca.issue_cert(HOST, "localhost")
    port = tls_server(served)
    renewed = ca.issue_cert(HOST, "localhost")
    cert_path, key_path = write_trustme(tmp_path, "renewed", renewed)
    toml = iggy_toml(tmp_path, cert_path, key_path, f"127.0.0.1:{port}")
    result = run_endpoints(tmp_path, ca, toml)
    assert result.status == Status.WARN
    [f] = result.findings
    assert f"serves a different certificate than {cert_path}" in f.message
    assert f.subject == f"127.0.0.1:{port}" and "restart" in f.remediation.lower()


def test_closed_port_fails_and_nothing_configured_skips(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    result = run_endpoints(tmp_path, trustme.CA(), None, [f"127.0.0.1:{port}"])
    assert result.status == Status.FAIL and "handshake failed" in result.summary
    assert run_endpoints(tmp_path, trustme.CA(), None).status == Status.SKIPPED


def test_legacy_protocols_still_accepted_warn(tmp_path: Path, tls_server) -> None:
    ca = trustme.CA()
    port = tls_server(ca.issue_cert(HOST, "localhost"), legacy=True)
    result = run_endpoints(tmp_path, ca, None, [f"127.0.0.1:{port}"])
    assert result.status == Status.WARN
    assert "still accepts TLSv1 and TLSv1.1" in messages(result, Severity.WARN)


@needs_dev_certs
def test_report_shows_the_expiry_timeline(tmp_path: Path, pki: Pki) -> None:
    import zipfile

    from .conftest import run_cli

    soon = pki.write("soon.pem", pem(pki.leaf(days=(-1, 5)), pki.intermediate))
    config = tmp_path / "agent.yaml"
    config.write_text(
        "checks:\n  certificates:\n"
        f"    paths: ['{soon}', '{SHARED}/*.pem']\n    ca_bundle: '{pki.bundle}'\n"
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "tls", "-q")
    assert proc.returncode == 1, proc.stderr
    html = zipfile.ZipFile(proc.stdout.strip()).read("report.html").decode()
    start = html.index('class="chart chart-expiry"')
    chart = html[start : html.index("</svg>", start)]
    assert "<title" in chart and "Certificate expiry" in chart
    assert chart.count('<g class="row">') == 4  # soon + intermediate, 2 Iggy dev certs
    assert re.search(r'class="value">in 5 days · [^<]* · fail<', chart), chart


def shipped_toml(tmp: Path, address: str, cert_file: str = "core/certs/iggy_cert.pem") -> Path:
    """Iggy's shipped [tcp.tls] layout: self_signed, a relative cert_file; QUIC self-signed."""
    path = tmp / "core" / "server" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[tcp]\nenabled = true\naddress = "{address}"\n'
        f'[tcp.tls]\nenabled = true\nself_signed = true\ncert_file = "{cert_file}"\n'
        'key_file = "core/certs/iggy_key.pem"\n'
        '[quic]\nenabled = true\naddress = "127.0.0.1:8080"\n'
        '[quic.certificate]\nself_signed = true\ncert_file = ""\nkey_file = ""\n'
    )
    return path


def test_self_signed_without_files_is_not_a_failure(tmp_path: Path, pki: Pki) -> None:
    toml = shipped_toml(tmp_path, "127.0.0.1:8090")
    result = run_certs(tmp_path, pki, [], config_path=str(toml))
    assert result.status == Status.PASS, messages(result)
    tcp, quic = result.findings
    assert tcp.severity == Severity.INFO and "throwaway self-signed" in tcp.message
    assert "cert_file" in tcp.message and tcp.subject == "iggy [tcp] TLS"
    assert quic.severity == Severity.INFO and "ignores the files" in quic.message
    assert result.summary.startswith("no certificate files to examine")
    remote = run_certs(tmp_path, pki, [], config_path=str(shipped_toml(tmp_path, "0.0.0.0:8090")))
    assert remote.status == Status.WARN and "remote clients cannot verify" in remote.summary


def test_relative_cert_file_is_found_like_the_broker_would(tmp_path: Path, pki: Pki) -> None:
    """A source layout: core/server/config.toml names core/certs/... from the checkout root."""
    key = new_key()
    (tmp_path / "core" / "certs").mkdir(parents=True)
    pki.write("core/certs/iggy_cert.pem", pem(pki.leaf(key, days=(-1, 4)), pki.intermediate))
    pki.write("core/certs/iggy_key.pem", key_pem(key))
    result = run_certs(tmp_path, pki, [], config_path=str(shipped_toml(tmp_path, "127.0.0.1:1")))
    [f] = [f for f in result.findings if "expires in 4 days" in f.message]
    assert f.subject == str(tmp_path / "core" / "certs" / "iggy_cert.pem")
    assert not [f for f in result.findings if f.subject == "iggy [tcp] TLS"]  # files used


def test_missing_cert_without_self_signed_fails(tmp_path: Path, pki: Pki) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(
        '[tcp]\naddress = "127.0.0.1:8090"\n[tcp.tls]\nenabled = true\nself_signed = false\n'
        'cert_file = "certs/server.pem"\nkey_file = "certs/server.key"\n'
    )
    result = run_certs(tmp_path, pki, [], config_path=str(toml))
    assert result.status == Status.FAIL
    assert f"{tmp_path}/certs/server.pem: cannot use it" in messages(result, Severity.FAIL)


def test_expired_certificate_is_not_also_a_broken_chain(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("old.pem", pem(pki.leaf(days=(-400, -5)), pki.intermediate))
    result = run_certs(tmp_path, pki, [path])
    assert [f.message for f in result.findings if f.severity == Severity.FAIL] == [
        f"{path}: CN={HOST} expired on {(NOW - dt.timedelta(days=5)):%Y-%m-%d} (5 days ago)"
    ]


def test_configured_names_count_for_the_hostname_match(tmp_path: Path, pki: Pki) -> None:
    path = pki.write("svc.pem", pem(pki.leaf(names=("iggy.example.com",)), pki.intermediate))
    config = Config(
        checks=ChecksConfig(
            certificates=CertificatesConfig(
                paths=[str(path)], ca_bundle=str(pki.bundle), names=["iggy.example.com"]
            )
        )
    )
    result = tls_certificates.run(
        make_context(tmp_path, config=config, thresholds=tls_thresholds())
    )
    assert result.status == Status.PASS, messages(result)


def test_hung_listeners_are_probed_at_once_within_the_budget(tmp_path: Path) -> None:
    """Listeners that accept TCP but never answer the handshake, like a wedged broker."""
    hung = [socket.create_server(("127.0.0.1", 0)) for _ in range(4)]
    try:
        endpoints = [f"127.0.0.1:{s.getsockname()[1]}" for s in hung]
        bundle = tmp_path / "trust.pem"
        trustme.CA().cert_pem.write_to_path(str(bundle))
        config = Config(
            checks=ChecksConfig(
                certificates=CertificatesConfig(endpoints=endpoints, ca_bundle=str(bundle))
            )
        )
        thresholds = tls_thresholds() | {"connect_timeout_s": 1.0}
        ctx = make_context(tmp_path, config=config, thresholds=thresholds)
        start = time.monotonic()
        result = tls_endpoints.run(ctx)
        assert time.monotonic() - start < 2.5  # one after the other would take 4 s
        assert result.status == Status.FAIL
        assert len([f for f in result.findings if "handshake failed" in f.message]) == 4
    finally:
        for s in hung:
            s.close()
