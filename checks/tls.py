"""Certificates and TLS: files on disk (chain, expiry, keys) and live listeners."""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import stat
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.certificates import (
    CertFacts,
    KeyFacts,
    NotACertificate,
    NotAKey,
    describe,
    has_private_key_block,
    issued_by,
    load_certificates,
    load_private_key,
    name_matches,
    public_der,
    verify_server_chain,
)
from snapshot_agent.node.iggy_config import TlsMaterial, load_iggy_config, locate
from snapshot_agent.node.processes import find_broker

MAX_PEM_BYTES = 1024 * 1024
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora
    "/etc/ssl/cert.pem",  # Alpine, others
)
#: The development certificates committed to the Iggy repository (core/certs/): their
#: private key is public, so a node using them has no transport security at all.
IGGY_DEV_FINGERPRINTS = {
    "F3:CB:B3:BB:CB:99:E5:F6:E9:B7:A6:F2:60:4D:4F:4A:08:CA:DE:58:9A:4A:3F:31:A2:43:7D:3B:32:BB:13:21":
        "iggy_cert.pem",
    "78:01:B3:12:24:41:30:3A:0A:B3:99:EB:5F:28:75:2B:0A:85:97:47:AF:32:69:D9:8A:E9:79:F3:6B:68:F8:F9":
        "iggy_ca_cert.pem",
}  # fmt: skip
WEAK_HASHES = {"md5", "sha1"}
THRESHOLDS = {
    "warn_days": 30,
    "fail_days": 7,
    "min_rsa_bits": 2048,
    "min_ec_bits": 256,
    "connect_timeout_s": 3.0,
}


# -- discovery ----------------------------------------------------------------------


@dataclass(frozen=True)
class CertSource:
    """A certificate file to examine and where we heard of it."""

    path: str
    origin: str
    key_path: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """A live TLS listener to probe."""

    host: str
    port: int
    origin: str
    cert_path: str | None = None  # the file it should be serving, when known

    @property
    def label(self) -> str:
        """host:port, IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class Discovery:
    """Everything TLS-related the node's configs name."""

    sources: list[CertSource] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)


def discover(ctx: Context) -> Discovery:
    """Certificates and listeners from the Iggy config, the agent's API and our config."""
    found = Discovery()
    iggy = load_iggy_config(ctx)
    if iggy.problem:
        found.notes.append(
            Finding(
                Severity.WARN,
                f"Iggy config {iggy.path} {iggy.problem}; its TLS files were not examined",
                "Fix the file, or point iggy.config_path at the right one.",
                str(iggy.path),
            )
        )
    broker = find_broker(ctx) if iggy.tls_material() else None
    cwd = broker.cwd if broker else ""
    for material in iggy.tls_material():
        if not material.enabled:
            continue  # TLS off on this transport: its files are not used
        origin = f"iggy [{material.transport}] TLS"
        cert = locate(ctx, iggy.path, material.cert_file, cwd) if material.cert_file else None
        key = locate(ctx, iggy.path, material.key_file, cwd) if material.key_file else None
        ephemeral = material.files_ignored or (
            material.self_signed and (cert is None or not ctx.path(cert).exists())
        )
        if ephemeral:
            found.notes.append(_ephemeral_note(material, origin, cert))
            cert = key = None
        elif cert:
            found.sources.append(CertSource(cert, origin, key))
        if material.address and material.transport != "quic":
            endpoint = _loopback_endpoint(material.address, origin, cert)
            if endpoint:
                found.endpoints.append(endpoint)
    tls = ctx.config.api.tls
    if tls.cert:
        found.sources.append(CertSource(tls.cert, "snapshot-agent API", tls.key))
    if tls.client_ca:
        found.sources.append(CertSource(tls.client_ca, "snapshot-agent API client CA"))
    for pattern in ctx.config.checks.certificates.paths:
        matches = ctx.glob(pattern)
        if not matches:
            found.notes.append(
                Finding(
                    Severity.WARN,
                    f"no file matches {pattern}",
                    "Fix checks.certificates.paths in the agent config, or restore the file.",
                    pattern,
                )
            )
        for path in matches:
            found.sources.append(CertSource(path, "checks.certificates.paths"))
    for text in ctx.config.checks.certificates.endpoints:
        endpoint = _parse_endpoint(text, "checks.certificates.endpoints")
        if endpoint is None:
            found.notes.append(
                Finding(
                    Severity.WARN,
                    f"endpoint {text!r} is not host:port",
                    "Write endpoints as 127.0.0.1:8090 or [::1]:8090.",
                    text,
                )
            )
        else:
            found.endpoints.append(endpoint)
    found.sources = _dedupe(found.sources, lambda s: s.path)
    found.endpoints = _dedupe(found.endpoints, lambda e: (e.host, e.port))
    return found


def _ephemeral_note(material: TlsMaterial, origin: str, cert: str | None) -> Finding:
    """The broker makes a throwaway self-signed certificate: fine on loopback only."""
    why = (
        "self_signed = true ignores the files"
        if material.files_ignored
        else f"self_signed = true and cert_file {cert} does not exist"
    )
    host = (material.address or "").rpartition(":")[0].strip("[]")
    local = host in ("127.0.0.1", "::1", "localhost")
    return Finding(
        Severity.INFO if local else Severity.WARN,
        f"{origin}: the broker serves a throwaway self-signed certificate ({why})"
        + ("" if local else f" on {material.address}, which remote clients cannot verify"),
        "For clients on other hosts, issue a certificate from your CA, set cert_file/key_file "
        "and self_signed = false so a missing file fails loudly instead of silently.",
        origin,
    )


def _parse_endpoint(text: str, origin: str, cert: str | None = None) -> Endpoint | None:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return Endpoint(host.strip("[]"), int(port), origin, cert)


def _loopback_endpoint(address: str, origin: str, cert: str | None) -> Endpoint | None:
    """A listen address as a loopback target: 0.0.0.0 and :: are reached on loopback."""
    endpoint = _parse_endpoint(address, origin, cert)
    if endpoint is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(endpoint.host, endpoint.host)
    return Endpoint(host, endpoint.port, origin, cert)


def _dedupe(items: list, key: Any) -> list:
    seen: set = set()
    out = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


# -- reading files --------------------------------------------------------------------


@dataclass
class KeyFile:
    """A private key file as found on disk."""

    path: str
    mode: int | None = None
    facts: KeyFacts | None = None
    error: str = ""


@dataclass
class CertFile:
    """A certificate file as found on disk."""

    source: CertSource
    certs: list[CertFacts] = field(default_factory=list)
    error: str = ""
    mode: int | None = None
    has_key_block: bool = False
    key: KeyFile | None = None


def read_cert_file(ctx: Context, source: CertSource) -> CertFile:
    """Parse a certificate file and its key file; problems are recorded, not raised."""
    result = CertFile(source)
    try:
        data, result.mode = _read_small(ctx, source.path)
        result.has_key_block = has_private_key_block(data)
        result.certs = [describe(c) for c in load_certificates(data)]
    except (OSError, NotACertificate) as exc:
        result.error = _reason(exc)
    if source.key_path:
        key = KeyFile(source.key_path)
        try:
            data, key.mode = _read_small(ctx, source.key_path)
            key.facts = load_private_key(data)
        except (OSError, NotAKey) as exc:
            key.error = _reason(exc)
        result.key = key
    return result


def load_roots(ctx: Context) -> tuple[list, list[str]]:
    """Trusted roots: the system bundle plus checks.certificates.ca_bundle."""
    roots: list = []
    used: list[str] = []
    bundles = [next((b for b in SYSTEM_BUNDLES if ctx.path(b).is_file()), None)]
    bundles.append(ctx.config.checks.certificates.ca_bundle)
    for bundle in filter(None, bundles):
        try:
            data, _ = _read_small(ctx, bundle, limit=8 * MAX_PEM_BYTES)
            roots += load_certificates(data)
            used.append(bundle)
        except (OSError, NotACertificate):
            continue
    return roots, used


def _read_small(ctx: Context, node_path: str, limit: int = MAX_PEM_BYTES) -> tuple[bytes, int]:
    with ctx.path(node_path).open("rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file: {node_path}")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit // 1024} KiB; not a certificate file?")
    return data, stat.S_IMODE(mode)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


# -- judging files ------------------------------------------------------------------


def node_names(ctx: Context) -> list[str]:
    """Names clients use for this node: hostname, /etc/hostname, node.name, configured names."""
    names = [socket.gethostname(), (ctx.read_optional("/etc/hostname") or "").strip()]
    names.append(ctx.config.node.name or "")
    names += ctx.config.checks.certificates.names  # service or load-balancer names
    return [n for n in dict.fromkeys(names) if n]


def judge_files(
    files: list[CertFile],
    roots: list,
    names: list[str],
    now: datetime,
    thresholds: dict[str, Any],
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Findings for every certificate and key file, and the expiry table rows."""
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for f in files:
        path = f.source.path
        if f.error:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{path}: cannot use it as a certificate: {f.error}",
                    f"Check the path ({f.source.origin}) and that the file holds PEM or DER "
                    "certificates; reissue or restore it.",
                    path,
                )
            )
        else:
            findings += _judge_certs(f, roots, names, now, thresholds)
            rows += [_row(path, c, now, thresholds) for c in f.certs]
        if f.has_key_block and f.mode is not None and f.mode & 0o044:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{path}: holds a private key and is readable by group/others "
                    f"(mode {f.mode:04o})",
                    f"chmod 600 {path} (owner: the broker's user), or keep the key in its own "
                    "file.",
                    path,
                )
            )
        if f.key is not None:
            findings += _judge_key(f, f.key)
    rows.sort(key=lambda r: r["days_left"])
    return findings, rows


def _judge_certs(
    f: CertFile, roots: list, names: list[str], now: datetime, th: dict[str, Any]
) -> list[Finding]:
    path = f.source.path
    out: list[Finding] = []
    leaf = f.certs[0]
    for c in f.certs:
        who = f"{path}: {c.subject}"
        out += _judge_validity(who, path, c, now, th)
        out += _judge_strength(who, path, c, th, trust_anchor=c.self_issued and c.is_ca)
        if c.fingerprint in IGGY_DEV_FINGERPRINTS:
            out.append(
                Finding(
                    Severity.FAIL,
                    f"{who} is Iggy's development certificate "
                    f"({IGGY_DEV_FINGERPRINTS[c.fingerprint]}), whose private key is public",
                    "Issue a certificate from your own CA (or ACME) and point the Iggy "
                    "config's cert_file/key_file at it; anyone can impersonate this server now.",
                    path,
                )
            )
    if leaf.is_ca and len(f.certs) == 1:
        return out  # a CA certificate file (e.g. a client CA): no server checks apply
    out += _judge_server_usage(path, leaf)
    out += _judge_order(path, f.certs)
    out += _judge_chain(path, f.certs, roots, now)
    if names and not any(name_matches(n, leaf.dns_names, leaf.ip_addresses) for n in names):
        sans = ", ".join(leaf.dns_names + leaf.ip_addresses) or "none"
        out.append(
            Finding(
                Severity.WARN,
                f"{path}: none of this node's names ({', '.join(names)}) is in the "
                f"certificate's names ({sans})",
                "Clients that verify the hostname will refuse to connect by these names; "
                "reissue with the names clients use as subjectAltName entries.",
                path,
            )
        )
    return out


def _judge_validity(
    who: str, path: str, c: CertFacts, now: datetime, th: dict[str, Any]
) -> list[Finding]:
    days = c.days_left(now)
    renew = "Renew it and restart the broker (or reload) so it serves the new one."
    if now < c.not_before:
        return [
            Finding(
                Severity.FAIL,
                f"{who} is not valid yet (from {c.not_before:%Y-%m-%d %H:%M} UTC)",
                "Check this node's clock (time.sync) and the certificate's issue date.",
                path,
            )
        ]
    if days < 0:
        return [
            Finding(
                Severity.FAIL,
                f"{who} expired on {c.not_after:%Y-%m-%d} ({-days:.0f} days ago)",
                renew,
                path,
            )
        ]
    if days <= float(th["fail_days"]):
        sev = Severity.FAIL
    elif days <= float(th["warn_days"]):
        sev = Severity.WARN
    else:
        return []
    return [Finding(sev, f"{who} expires in {days:.0f} days ({c.not_after:%Y-%m-%d})", renew, path)]


def _judge_strength(
    who: str, path: str, c: CertFacts, th: dict[str, Any], *, trust_anchor: bool
) -> list[Finding]:
    out = []
    minimum = {"RSA": int(th["min_rsa_bits"])}.get(c.key_type)
    if c.key_type.startswith("EC"):
        minimum = int(th["min_ec_bits"])
    if minimum and c.key_bits < minimum:
        out.append(
            Finding(
                Severity.FAIL,
                f"{who} has a weak {c.key_type} {c.key_bits}-bit key (minimum {minimum})",
                "Reissue with RSA 2048+ or ECDSA P-256+; clients and OpenSSL's default "
                "security level reject weaker keys.",
                path,
            )
        )
    # A root's self-signature is never checked by clients: its hash does not matter.
    if not trust_anchor and c.signature_hash in WEAK_HASHES:
        out.append(
            Finding(
                Severity.FAIL,
                f"{who} is signed with {c.signature_hash.upper()}, which is broken",
                "Reissue it signed with SHA-256 or better.",
                path,
            )
        )
    return out


def _judge_server_usage(path: str, leaf: CertFacts) -> list[Finding]:
    out = []
    if leaf.is_ca:
        out.append(
            Finding(
                Severity.WARN,
                f"{path}: the server certificate is a CA certificate (basicConstraints CA:TRUE)",
                "Issue a leaf certificate (CA:FALSE) for the server; keep the CA key offline.",
                path,
            )
        )
    if leaf.ext_key_usage is not None and "serverAuth" not in leaf.ext_key_usage:
        out.append(
            Finding(
                Severity.FAIL,
                f"{path}: extendedKeyUsage ({', '.join(leaf.ext_key_usage)}) does not allow "
                "serverAuth",
                "Clients will refuse it as a server certificate; reissue with "
                "extendedKeyUsage=serverAuth.",
                path,
            )
        )
    if leaf.key_usage and "digital_signature" not in leaf.key_usage:
        out.append(
            Finding(
                Severity.WARN,
                f"{path}: keyUsage ({', '.join(leaf.key_usage)}) lacks digitalSignature, "
                "which TLS 1.3 handshakes need",
                "Reissue with keyUsage=digitalSignature (plus keyEncipherment for RSA).",
                path,
            )
        )
    return out


def _judge_order(path: str, certs: list[CertFacts]) -> list[Finding]:
    for child, parent in itertools.pairwise(certs):
        if not issued_by(child.cert, parent.cert):
            linked = any(issued_by(child.cert, other.cert) for other in certs if other != child)
            if linked:
                return [
                    Finding(
                        Severity.WARN,
                        f"{path}: the chain is out of order ({parent.subject} does not issue "
                        f"{child.subject})",
                        "Order the file leaf first, then each issuer; some clients reject "
                        "other orders.",
                        path,
                    )
                ]
    return []


def _judge_chain(path: str, certs: list[CertFacts], roots: list, now: datetime) -> list[Finding]:
    """Validate like a client; when it fails, say which of the usual causes it is.

    Expiry is judged on its own: when a certificate is out of its validity window
    now, the chain is checked at a moment when all of them were valid, so an
    expired certificate is not reported a second time as a broken chain.
    """
    leaf = certs[0]
    start, end = max(c.not_before for c in certs), min(c.not_after for c in certs)
    when = now if start <= now <= end else start + (end - start) / 2
    if start > end:
        return []  # never all valid at once: the validity findings already say so
    problem = verify_server_chain(leaf.cert, [c.cert for c in certs[1:]], roots, when)
    if problem is None:
        return []
    trusted = {r.fingerprint(_sha256()) for r in roots}
    if leaf.self_issued:
        if leaf.cert.fingerprint(_sha256()) in trusted:
            return []  # explicitly trusted self-signed certificate
        return [
            Finding(
                Severity.WARN,
                f"{path}: the certificate is self-signed ({leaf.subject})",
                "Clients must pin it or trust it explicitly; prefer a certificate from your "
                "CA. If this is intended, add it to checks.certificates.ca_bundle.",
                path,
            )
        ]
    top = _walk_up(certs)
    anchored = any(issued_by(top.cert, r) for r in roots) or top.cert in roots
    if not anchored:
        if top.self_issued:
            return [_unknown_issuer(path, top.subject, "its root is not trusted here")]
        gap = top is not leaf or len(certs) > 1 or bool(leaf.ca_issuers_urls)
        if gap:
            url = (
                f" (its issuer is published at {leaf.ca_issuers_urls[0]})"
                if (leaf.ca_issuers_urls)
                else ""
            )
            return [
                Finding(
                    Severity.FAIL,
                    f"{path}: missing intermediate: the certificate of {top.issuer}, which "
                    f"issued {top.subject}, is not in the file{url}",
                    "Append the intermediate certificate(s) after the leaf in this file, "
                    "then restart the broker; clients cannot build the chain without it.",
                    path,
                )
            ]
        return [_unknown_issuer(path, top.issuer, "it is neither in the file nor trusted")]
    return [
        Finding(
            Severity.FAIL,
            f"{path}: chain validation failed: {problem}",
            "Reissue the certificate or fix the chain; clients will reject it.",
            path,
        )
    ]


def _unknown_issuer(path: str, issuer: str, why: str) -> Finding:
    return Finding(
        Severity.WARN,
        f"{path}: unknown issuer {issuer}: {why}",
        "If it is your private CA, set checks.certificates.ca_bundle to its certificate so "
        "the agent can validate the chain (clients need it too); if an intermediate is "
        "missing, append it to the file.",
        path,
    )


def _walk_up(certs: list[CertFacts]) -> CertFacts:
    """Follow issuers within the file from the leaf; the last one reached."""
    current, seen = certs[0], {certs[0].fingerprint}
    while True:
        parent = next(
            (c for c in certs if c.fingerprint not in seen and issued_by(current.cert, c.cert)),
            None,
        )
        if parent is None:
            return current
        seen.add(parent.fingerprint)
        current = parent


def _judge_key(f: CertFile, key: KeyFile) -> list[Finding]:
    path = key.path
    if key.error:
        return [
            Finding(
                Severity.FAIL,
                f"{path}: key file unusable: {key.error}",
                f"Restore the key for {f.source.path} or fix the path ({f.source.origin}).",
                path,
            )
        ]
    out = []
    if key.mode is not None and key.mode & 0o044:
        out.append(
            Finding(
                Severity.FAIL,
                f"{path}: private key is readable by group/others (mode {key.mode:04o})",
                f"chmod 600 {path} and chown it to the broker's user.",
                path,
            )
        )
    assert key.facts is not None
    if key.facts.encrypted:
        out.append(
            Finding(
                Severity.INFO,
                f"{path}: private key is encrypted (passphrase-protected); its match with "
                "the certificate was not checked",
                "Make sure the broker is given the passphrase, or it cannot start TLS.",
                path,
            )
        )
    elif f.certs and key.facts.public_der != public_der(f.certs[0].cert):
        out.append(
            Finding(
                Severity.FAIL,
                f"{path}: private key does not match the certificate {f.source.path}",
                "Use the key the certificate was issued for (or reissue); TLS cannot "
                "start with a mismatched pair.",
                path,
            )
        )
    return out


def _row(path: str, c: CertFacts, now: datetime, th: dict[str, Any]) -> dict[str, Any]:
    days = c.days_left(now)
    level = (
        "fail"
        if days <= float(th["fail_days"])
        else "warn"
        if days <= float(th["warn_days"])
        else "pass"
    )
    return {
        "path": path,
        "subject": c.subject,
        "issuer": c.issuer,
        "names": ", ".join(c.dns_names + c.ip_addresses),
        "not_after": c.not_after.strftime("%Y-%m-%d"),
        "days_left": round(days, 1),
        "level": level,
        "key": f"{c.key_type} {c.key_bits}",
        "signature": c.signature_hash,
        "serial": c.serial,
        "sha256": c.fingerprint,
    }


def _sha256() -> hashes.HashAlgorithm:
    return hashes.SHA256()


@check(
    id="tls.certificates",
    category="tls",
    title="TLS certificates and keys",
    description="Expiry, chain, key match, strength and permissions of every certificate "
    "the Iggy config, the agent and checks.certificates.paths name.",
    timeout_s=15,
    thresholds=dict(THRESHOLDS),
    view="expiry",
)
def tls_certificates(ctx: Context) -> Result:
    """Judge every certificate and key file found."""
    found = discover(ctx)
    if not found.sources:
        if found.notes:
            ok = "no certificate files to examine: " + found.notes[0].message
            return Result.from_findings(found.notes, ok=ok)
        return Result.skipped(
            "no certificates configured: TLS is off in the Iggy config (or none was found) "
            "and checks.certificates.paths is empty"
        )
    roots, bundles = load_roots(ctx)
    files = [read_cert_file(ctx, s) for s in found.sources]
    now = datetime.now(UTC)
    findings, rows = judge_files(files, roots, node_names(ctx), now, ctx.thresholds)
    findings = found.notes + findings
    soonest = min(rows, key=lambda r: r["days_left"], default=None)
    ok = f"{len(files)} certificate file(s) fine"
    if soonest:
        ok += f"; next expiry in {soonest['days_left']:.0f} days ({soonest['path']})"
    data = {
        "expiry": rows,
        "files": [
            {
                "path": f.source.path,
                "origin": f.source.origin,
                "certificates": len(f.certs),
                "mode": f"{f.mode:04o}" if f.mode is not None else None,
                "key": f.key.path if f.key else None,
                "error": f.error,
            }
            for f in files
        ],
        "trust": bundles,
    }
    return Result.from_findings(findings, ok=ok, data=data)


# -- live endpoints ------------------------------------------------------------------


@dataclass
class Probe:
    """What a TLS listener presented."""

    endpoint: Endpoint
    error: str = ""
    protocol: str = ""
    cipher: str = ""
    handshake_ms: float = 0.0
    leaf: CertFacts | None = None
    legacy: dict[str, str] = field(default_factory=dict)  # version -> accepted|refused|untested


def probe(endpoint: Endpoint, sni: str, timeout_s: float) -> Probe:
    """Handshake once normally, then try TLS 1.0/1.1 to see whether they are still accepted."""
    result = Probe(endpoint)
    context = _client_context()
    start = time.monotonic()
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            result.handshake_ms = round((time.monotonic() - start) * 1000, 1)
            result.protocol = tls.version() or ""
            result.cipher = (tls.cipher() or ("",))[0]
            der = tls.getpeercert(binary_form=True)
            if der:
                result.leaf = describe(load_certificates(der)[0])
    except (OSError, ssl.SSLError, NotACertificate) as exc:
        result.error = str(exc) or type(exc).__name__
        return result
    for name, version in (("TLSv1", ssl.TLSVersion.TLSv1), ("TLSv1.1", ssl.TLSVersion.TLSv1_1)):
        result.legacy[name] = _try_legacy(endpoint, sni, version, timeout_s)
    return result


def probe_all(
    endpoints: list[Endpoint], sni: str, timeout_s: float, budget_s: float
) -> list[Probe]:
    """Probe every endpoint at once; one that does not answer within the budget says so.

    A hung listener (accepts TCP, never finishes the handshake) is exactly what this
    check exists to find, so one must not eat the time of all the others.
    """
    pool = ThreadPoolExecutor(max_workers=min(8, len(endpoints)))
    futures = [pool.submit(probe, e, sni, timeout_s) for e in endpoints]
    done, _ = wait(futures, timeout=max(0.5, budget_s))
    pool.shutdown(wait=False, cancel_futures=True)  # a stuck thread dies with the check
    return [
        f.result()
        if f in done
        else Probe(e, error=f"no answer within {budget_s:.0f} s (hung listener?)")
        for e, f in zip(endpoints, futures, strict=True)
    ]


def _client_context() -> ssl.SSLContext:
    # Validation is judged from the files and the presented certificate, not here.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _try_legacy(endpoint: Endpoint, sni: str, version: ssl.TLSVersion, timeout_s: float) -> str:
    context = _client_context()
    try:
        context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated is the point: we look for it on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
            context.maximum_version = version
    except (ValueError, ssl.SSLError):
        return "untested (this OpenSSL cannot speak it)"
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=sni),
        ):
            return "accepted"
    except ssl.SSLError as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper():
            return "untested (this OpenSSL cannot speak it)"
        return "refused"
    except OSError:
        return "refused"


def judge_endpoints(
    probes: list[Probe],
    on_disk: dict[str, set[str]],
    now: datetime,
    thresholds: dict[str, Any],
) -> list[Finding]:
    """Findings per endpoint; `on_disk` maps cert path -> fingerprints in that file."""
    out: list[Finding] = []
    every_file = set().union(*on_disk.values()) if on_disk else set()
    for p in probes:
        label = p.endpoint.label
        if p.error:
            out.append(
                Finding(
                    Severity.FAIL,
                    f"{label}: TLS handshake failed: {p.error}",
                    f"Is the listener up ({p.endpoint.origin})? `ss -ltnp | grep "
                    f":{p.endpoint.port}`; check the broker's log for TLS errors.",
                    label,
                )
            )
            continue
        if p.leaf is None:
            continue
        who = f"{label} serves {p.leaf.subject}"
        out += _judge_validity(who, label, p.leaf, now, thresholds)
        if p.leaf.fingerprint in IGGY_DEV_FINGERPRINTS:
            out.append(
                Finding(
                    Severity.FAIL,
                    f"{label} serves Iggy's development certificate, whose private key is public",
                    "Configure a real certificate in the Iggy config and restart the broker.",
                    label,
                )
            )
        expected = on_disk.get(p.endpoint.cert_path or "") if p.endpoint.cert_path else None
        if expected is not None and p.leaf.fingerprint not in expected:
            out.append(
                Finding(
                    Severity.WARN,
                    f"{label} serves a different certificate than {p.endpoint.cert_path} on "
                    "disk (renewed but not reloaded?)",
                    "Restart the broker (systemctl restart iggy-server) so it loads the "
                    "certificate on disk.",
                    label,
                )
            )
        elif expected is None and every_file and p.leaf.fingerprint not in every_file:
            out.append(
                Finding(
                    Severity.WARN,
                    f"{label} serves a certificate that is in none of the files examined",
                    "Check which certificate this listener is configured with; restart it "
                    "after a renewal.",
                    label,
                )
            )
        accepted = [v for v, state in p.legacy.items() if state == "accepted"]
        if accepted:
            out.append(
                Finding(
                    Severity.WARN,
                    f"{label} still accepts {' and '.join(accepted)}",
                    "Disable TLS 1.0/1.1 on this listener; they are deprecated (RFC 8996).",
                    label,
                )
            )
    return out


@check(
    id="tls.endpoints",
    category="tls",
    title="Live TLS listeners",
    description="Handshake with each TLS listener (Iggy config and checks.certificates."
    "endpoints): protocol, cipher, served certificate vs the file on disk, legacy TLS.",
    timeout_s=20,
    thresholds=dict(THRESHOLDS),
)
def tls_endpoints(ctx: Context) -> Result:
    """Probe live listeners and compare with the certificates on disk."""
    found = discover(ctx)
    if not found.endpoints:
        return Result.skipped(
            "no TLS listener configured (Iggy transports without TLS, and "
            "checks.certificates.endpoints is empty)"
        )
    sni = (node_names(ctx) or ["localhost"])[0]
    timeout_s = float(ctx.thresholds["connect_timeout_s"])
    probes = probe_all(found.endpoints, sni, timeout_s, budget_s=ctx.remaining() - 1.0)
    on_disk = {
        f.source.path: {c.fingerprint for c in f.certs}
        for f in (read_cert_file(ctx, s) for s in found.sources)
        if not f.error
    }
    findings = judge_endpoints(probes, on_disk, datetime.now(UTC), ctx.thresholds)
    rows = [
        {
            "endpoint": p.endpoint.label,
            "origin": p.endpoint.origin,
            "protocol": p.protocol,
            "cipher": p.cipher,
            "handshake_ms": p.handshake_ms,
            "subject": p.leaf.subject if p.leaf else None,
            "not_after": p.leaf.not_after.strftime("%Y-%m-%d") if p.leaf else None,
            "sha256": p.leaf.fingerprint if p.leaf else None,
            "legacy": ", ".join(f"{v}: {s}" for v, s in p.legacy.items()),
            "error": p.error,
        }
        for p in probes
    ]
    ok = f"{len(probes)} TLS listener(s) fine: " + ", ".join(
        f"{p.endpoint.label} {p.protocol}" for p in probes
    )
    return Result.from_findings(found.notes + findings, ok=ok, data={"endpoints": rows})
