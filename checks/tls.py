"""Certificates and TLS: files on disk (chain, expiry, keys) and live listeners."""

from __future__ import annotations

import itertools
import socket
import ssl
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.certificates import (
    LENIENT_CLIENTS,
    PYCA_VERIFIER,
    CertFacts,
    Chain,
    Deviation,
    NotACertificate,
    PycaRefusal,
    Rejection,
    build_chain,
    classify_pyca_refusal,
    client_rejection,
    describe,
    issued_by,
    load_certificates,
    misissued_by,
    name_matches,
    public_der,
    strict_deviations,
    verify_strict_profile,
)
from snapshot_agent.node.iggy_config import DEV_CERT_FINGERPRINTS
from snapshot_agent.node.tls_inventory import (
    CertFile,
    Discovery,
    Endpoint,
    KeyFile,
    Throwaway,
    discover,
    load_roots,
    node_names,
    read_cert_file,
)

WEAK_HASHES = {"md5", "sha1"}
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

#: Days until a certificate's notAfter: for the files on disk, for what listeners serve,
#: and for the colour of each bar in the report's expiry timeline (the rows' "level").
DAYS_LEFT = Band("days", warn=30, fail=7, higher_is_worse=False)
#: Key sizes: a key shorter than this fails (2048-bit RSA and P-256 pass).
RSA_BITS = Band.minimum("rsa_bits_below", fail=2048)
EC_BITS = Band.minimum("ec_bits_below", fail=256)
#: The band grading a key by its type's first word ("RSA", "EC secp256r1"...).
KEY_BITS_BANDS = {"RSA": RSA_BITS, "EC": EC_BITS}
#: Both tls checks declare all of them, as they always have (tls.endpoints uses days and
#: the timeout, tls.certificates the bands), so one config block suits either.
BANDS = (DAYS_LEFT, RSA_BITS, EC_BITS)
THRESHOLDS = {"connect_timeout_s": 3.0}


# -- what the configs name but cannot be examined -----------------------------------


def discovery_notes(found: Discovery) -> list[Finding]:
    """Findings on TLS material the configs name but the checks cannot examine."""
    notes = [_iggy_config_unreadable(found)] if found.iggy_problem else []
    notes += [_throwaway_certificate(t) for t in found.throwaway]
    notes += [_unmatched_path(pattern) for pattern in found.unmatched_paths]
    notes += [_bad_endpoint(text) for text in found.bad_endpoints]
    return notes


def _iggy_config_unreadable(found: Discovery) -> Finding:
    """The Iggy config exists but could not be parsed: its TLS files stay unexamined."""
    return Finding(
        Severity.WARN,
        f"Iggy config {found.iggy_path} {found.iggy_problem}; its TLS files were not examined",
        "Fix the file, or point iggy.config_path at the right one.",
        str(found.iggy_path),
    )


def _throwaway_certificate(t: Throwaway) -> Finding:
    """The broker makes a throwaway self-signed certificate: fine on loopback only."""
    material, origin = t.material, t.origin
    why = (
        "self_signed = true ignores the files"
        if material.files_ignored
        else f"self_signed = true and cert_file {t.cert} does not exist"
    )
    host = (material.address or "").rpartition(":")[0].strip("[]")
    local = host in LOOPBACK_HOSTS
    return Finding(
        Severity.INFO if local else Severity.WARN,
        f"{origin}: the broker serves a throwaway self-signed certificate ({why})"
        + ("" if local else f" on {material.address}, which remote clients cannot verify"),
        "For clients on other hosts, issue a certificate from your CA, set cert_file/key_file "
        "and self_signed = false so a missing file fails loudly instead of silently.",
        origin,
    )


def _unmatched_path(pattern: str) -> Finding:
    """A checks.certificates.paths entry that matches no file."""
    return Finding(
        Severity.WARN,
        f"no file matches {pattern}",
        "Fix checks.certificates.paths in the agent config, or restore the file.",
        pattern,
    )


def _bad_endpoint(text: str) -> Finding:
    """A checks.certificates.endpoints entry that is not host:port."""
    return Finding(
        Severity.WARN,
        f"endpoint {text!r} is not host:port",
        "Write endpoints as 127.0.0.1:8090 or [::1]:8090.",
        text,
    )


# -- judging files ------------------------------------------------------------------


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
        findings += _judge_file(f, roots, names, now, thresholds)
        if not f.error:
            rows += [_row(f.source.path, c, now, thresholds) for c in f.certs]
    rows.sort(key=lambda r: r["days_left"])
    return findings, rows


def _judge_file(
    f: CertFile, roots: list, names: list[str], now: datetime, th: dict[str, Any]
) -> list[Finding]:
    """One certificate file: its certificates, its own permissions, and its key file."""
    out = [_unusable_file(f)] if f.error else _judge_certs(f, roots, names, now, th)
    out += _key_block_exposed(f)
    if f.key is not None:
        out += _judge_key(f, f.key)
    return out


def _unusable_file(f: CertFile) -> Finding:
    """A configured certificate file that is missing or holds no certificate."""
    path = f.source.path
    return Finding(
        Severity.FAIL,
        f"{path}: cannot use it as a certificate: {f.error}",
        f"Check the path ({f.source.origin}) and that the file holds PEM or DER "
        "certificates; reissue or restore it.",
        path,
    )


def _key_block_exposed(f: CertFile) -> list[Finding]:
    """A certificate file that also carries a private key must be private itself."""
    if not (f.has_key_block and f.mode is not None and f.mode & 0o044):
        return []
    path = f.source.path
    return [
        Finding(
            Severity.FAIL,
            f"{path}: holds a private key and is readable by group/others (mode {f.mode:04o})",
            f"chmod 600 {path} (owner: the broker's user), or keep the key in its own file.",
            path,
        )
    ]


def _judge_certs(
    f: CertFile, roots: list, names: list[str], now: datetime, th: dict[str, Any]
) -> list[Finding]:
    """Every certificate in the file on its own, then the leaf as a server certificate."""
    path = f.source.path
    out: list[Finding] = []
    leaf = f.certs[0]
    for c in f.certs:
        who = f"{path}: {c.subject}"
        out += _judge_validity(who, path, c, now, th)
        out += _judge_strength(who, path, c, th, trust_anchor=c.self_issued and c.is_ca)
        out += _dev_certificate(who, path, c)
    if leaf.is_ca and len(f.certs) == 1 and not f.source.key_path:
        return out  # a CA certificate file (e.g. a client CA): no server checks apply
    out += _judge_server_usage(path, leaf)
    out += _judge_order(path, f.certs)
    out += _judge_chain(path, f.certs, roots, now)
    out += _names_not_covered(path, leaf, names)
    return out


def _dev_certificate(who: str, path: str, c: CertFacts) -> list[Finding]:
    """One of Iggy's development certificates, whose private key anyone can download."""
    if c.fingerprint not in DEV_CERT_FINGERPRINTS:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{who} is Iggy's development certificate "
            f"({DEV_CERT_FINGERPRINTS[c.fingerprint]}), whose private key is public",
            "Issue a certificate from your own CA (or ACME) and point the Iggy "
            "config's cert_file/key_file at it; anyone can impersonate this server now.",
            path,
        )
    ]


def _names_not_covered(path: str, leaf: CertFacts, names: list[str]) -> list[Finding]:
    """Clients verifying the hostname need one of this node's names in the leaf's SANs."""
    if not names or any(name_matches(n, leaf.dns_names, leaf.ip_addresses) for n in names):
        return []
    sans = ", ".join(leaf.dns_names + leaf.ip_addresses) or "none"
    return [
        Finding(
            Severity.WARN,
            f"{path}: none of this node's names ({', '.join(names)}) is in the "
            f"certificate's names ({sans})",
            "Clients that verify the hostname will refuse to connect by these names; "
            "reissue with the names clients use as subjectAltName entries.",
            path,
        )
    ]


def _judge_validity(
    who: str, path: str, c: CertFacts, now: datetime, th: dict[str, Any]
) -> list[Finding]:
    """A certificate inside its validity window, with DAYS_LEFT to spare."""
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
    severity = DAYS_LEFT.grade(days, th)
    if severity is None:
        return []
    message = f"{who} expires in {days:.0f} days ({c.not_after:%Y-%m-%d})"
    return [Finding(severity, message, renew, path)]


def _judge_strength(
    who: str, path: str, c: CertFacts, th: dict[str, Any], *, trust_anchor: bool
) -> list[Finding]:
    """A key long enough and, below a trust anchor, a signature hash that is not broken."""
    out = _weak_key(who, path, c, th)
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


def _weak_key(who: str, path: str, c: CertFacts, th: dict[str, Any]) -> list[Finding]:
    """An RSA or EC key shorter than its minimum (other key types have no band)."""
    band = KEY_BITS_BANDS.get(c.key_type.split(" ")[0])
    if band is None:
        return []
    severity = band.grade(c.key_bits, th)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{who} has a weak {c.key_type} {c.key_bits}-bit key "
            f"(minimum {band.limit(severity, th):g})",
            "Reissue with RSA 2048+ or ECDSA P-256+; clients and OpenSSL's default "
            "security level reject weaker keys.",
            path,
        )
    ]


def _judge_server_usage(path: str, leaf: CertFacts) -> list[Finding]:
    """A leaf fit to be a TLS server certificate: not a CA, serverAuth, digitalSignature."""
    out = []
    if leaf.is_ca:
        out.append(
            Finding(
                Severity.FAIL,
                f"{path}: the server certificate is a CA certificate (basicConstraints "
                "CA:TRUE): rustls/webpki (the Iggy Rust SDK) refuses it (CaUsedAsEndEntity), "
                "even when trusted explicitly; OpenSSL accepts it",
                "Issue a leaf certificate (basicConstraints=critical,CA:FALSE) for the "
                "server, signed by your CA, and keep the CA key offline. `openssl req "
                "-x509` marks certificates CA:TRUE by default: add `-addext "
                "basicConstraints=critical,CA:FALSE`.",
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
    """A chain file ordered leaf first, each certificate followed by its issuer."""
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
    """Build the chain as clients do: fail what they refuse, warn what only strict ones refuse.

    When no chain reaches a trusted root, say which of the usual causes it is. Expiry is
    judged on its own: when a certificate is out of its validity window now, the chain
    is checked at a moment when all of them were valid, so an expired certificate is not
    reported a second time as a broken chain. A chain that cannot be judged at all (an
    error while building or checking it) fails: it is never taken for a good one.
    """
    start, end = max(c.not_before for c in certs), min(c.not_after for c in certs)
    if start > end:
        return []  # never all valid at once: the validity findings already say so
    when = now if start <= now <= end else start + (end - start) / 2
    try:
        chain = build_chain(certs[0].cert, [c.cert for c in certs[1:]], roots)
        if not chain.anchored:
            return _not_anchored(path, certs, roots)
        rejection = client_rejection(chain, when)
        if rejection is not None:
            return [_clients_refuse(path, rejection)]
        return _strict_profile(path, chain, roots, when)
    except Exception as exc:  # a certificate that breaks the judging itself
        return [_chain_not_judged(path, exc)]


def _chain_not_judged(path: str, exc: Exception) -> Finding:
    """FAIL: the chain could not be checked, so nothing says clients accept it."""
    return Finding(
        Severity.FAIL,
        f"{path}: the chain could not be validated ({type(exc).__name__}: {exc}); "
        "treat it as refused until `openssl verify` says otherwise",
        f"Run `openssl verify -purpose sslserver -CAfile <your CA bundle> -untrusted {path} "
        f"{path}`; reissue the certificate if it fails, then restart the broker.",
        path,
    )


def _not_anchored(path: str, certs: list[CertFacts], roots: list) -> list[Finding]:
    """No path from the leaf to a trusted root: bad signature, self-signed, untrusted root, gap."""
    leaf = certs[0]
    if leaf.self_issued:
        return _self_signed(path, leaf, roots)
    top = _walk_up(certs)
    wrong_key = misissued_by(top.cert, [c.cert for c in certs] + roots)
    if not top.self_issued and wrong_key is not None:
        return [_clients_refuse(path, _bad_signature(top))]
    if not (any(issued_by(top.cert, r) for r in roots) or top.cert in roots):
        return [_unanchored(path, certs, top)]
    return [_clients_refuse(path, Rejection(f"no path from {leaf.subject} to a trusted root"))]


def _bad_signature(cert: CertFacts) -> Rejection:
    """A certificate whose named issuer's key did not sign it."""
    return Rejection(
        f"{cert.subject} names {cert.issuer} as its issuer, but its signature does not "
        "verify with that certificate's key (a damaged file, or a CA re-keyed under the "
        "same name)",
        fix="Put the issuer certificate that signed it in the file (the CA's current one), "
        f"or reissue {cert.subject} from the CA that is trusted.",
    )


def _clients_refuse(path: str, rejection: Rejection) -> Finding:
    """FAIL: the verifiers of the broker's clients (not only strict ones) refuse the chain."""
    return Finding(
        Severity.FAIL,
        f"{path}: chain validation failed: {rejection.problem}; clients will reject it "
        f"(refused by {' and '.join(rejection.refused_by)})",
        (rejection.fix or "Reissue the certificate or fix the chain.")
        + " Then restart the broker.",
        path,
    )


def _strict_profile(path: str, chain: Chain, roots: list, when: datetime) -> list[Finding]:
    """WARN per strict-profile point the chain misses; FAIL when pyca refuses it otherwise.

    pyca/cryptography's verifier runs whatever the deviations found, so a problem behind
    a missing key identifier is still found; its refusal is a warning only when it is
    a known strict-only point (`classify_pyca_refusal`).
    """
    deviations = strict_deviations(chain)
    out = [_strict_deviation(path, d) for d in deviations]
    if len(chain.certs) < 2:
        return out  # a pinned self-signed leaf: strict verifiers apply no profile to it
    problem = verify_strict_profile(chain.certs[0], chain.certs[1:-1], roots, when)
    if problem is None:
        return out
    kind = classify_pyca_refusal(problem, chain, deviations)
    if kind is PycaRefusal.STRICT_ONLY:
        out.append(_pyca_only(path, problem))
    elif kind is PycaRefusal.UNKNOWN:
        out.append(_pyca_refuses_unknown(path, problem))
    return out


def _pyca_only(path: str, problem: str) -> Finding:
    """WARN: a CA/Browser Forum point only pyca/cryptography's verifier enforces."""
    return Finding(
        Severity.WARN,
        f"{path}: {PYCA_VERIFIER} (CA/Browser Forum profile) refuses the chain: {problem}; "
        f"{LENIENT_CLIENTS} accept it",
        "Clients of the Iggy SDKs connect; tools built on pyca/cryptography's verifier "
        "do not. Reissue the certificate from a CA profile that follows RFC 5280.",
        path,
    )


def _pyca_refuses_unknown(path: str, problem: str) -> Finding:
    """FAIL: pyca refuses for a reason not known to be strict-only."""
    return Finding(
        Severity.FAIL,
        f"{path}: chain validation failed: {PYCA_VERIFIER} refuses the chain: {problem}; "
        f"this is not a point known to be strict-only, so {LENIENT_CLIENTS} may refuse "
        "it too",
        f"Check with `openssl verify -purpose sslserver -CAfile <your CA bundle> "
        f"-untrusted {path} {path}`, then reissue the certificate or fix the chain and "
        "restart the broker.",
        path,
    )


def _strict_deviation(path: str, d: Deviation) -> Finding:
    """WARN: a point of RFC 5280 only strict verifiers enforce (e.g. a missing AKI)."""
    return Finding(
        Severity.WARN,
        f"{path}: {d.subject} {d.what}: strict verifiers refuse the chain "
        f"({', '.join(d.strict)}); {LENIENT_CLIENTS} accept it",
        "Clients of the Iggy Rust SDK and of OpenSSL's defaults connect; clients with a "
        "strict verifier fail the handshake. Reissue the certificate with the extension "
        f"`{d.fix}` (OpenSSL: in the -extfile or the CA's extension section) and restart "
        "the broker. Until then a Python ≥ 3.13 client can connect with "
        "`ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT`.",
        path,
    )


def _self_signed(path: str, leaf: CertFacts, roots: list) -> list[Finding]:
    """A self-signed server certificate is fine only when trusted explicitly."""
    trusted = {r.fingerprint(_sha256()) for r in roots}
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


def _unanchored(path: str, certs: list[CertFacts], top: CertFacts) -> Finding:
    """The chain ends below any trusted root: an untrusted root or a missing intermediate."""
    leaf = certs[0]
    if top.self_issued:
        return _unknown_issuer(path, top.subject, "its root is not trusted here")
    gap = top is not leaf or len(certs) > 1 or bool(leaf.ca_issuers_urls)
    if not gap:
        return _unknown_issuer(path, top.issuer, "it is neither in the file nor trusted")
    url = (
        f" (its issuer is published at {leaf.ca_issuers_urls[0]})" if (leaf.ca_issuers_urls) else ""
    )
    return Finding(
        Severity.FAIL,
        f"{path}: missing intermediate: the certificate of {top.issuer}, which "
        f"issued {top.subject}, is not in the file{url}",
        "Append the intermediate certificate(s) after the leaf in this file, "
        "then restart the broker; clients cannot build the chain without it.",
        path,
    )


def _unknown_issuer(path: str, issuer: str, why: str) -> Finding:
    """A chain that ends at an issuer this node does not trust."""
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
    """The key file of a certificate: readable, private, and the certificate's pair."""
    if key.error:
        return [
            Finding(
                Severity.FAIL,
                f"{key.path}: key file unusable: {key.error}",
                f"Restore the key for {f.source.path} or fix the path ({f.source.origin}).",
                key.path,
            )
        ]
    return [*_key_exposed(key), *_key_pairing(f, key)]


def _key_exposed(key: KeyFile) -> list[Finding]:
    """A private key readable by group or others."""
    if key.mode is None or not key.mode & 0o044:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{key.path}: private key is readable by group/others (mode {key.mode:04o})",
            f"chmod 600 {key.path} and chown it to the broker's user.",
            key.path,
        )
    ]


def _key_pairing(f: CertFile, key: KeyFile) -> list[Finding]:
    """The key must match the leaf; an encrypted key cannot be compared, only noted."""
    path = key.path
    assert key.facts is not None
    if key.facts.encrypted:
        return [
            Finding(
                Severity.INFO,
                f"{path}: private key is encrypted (passphrase-protected); its match with "
                "the certificate was not checked",
                "Make sure the broker is given the passphrase, or it cannot start TLS.",
                path,
            )
        ]
    if f.certs and key.facts.public_der != public_der(f.certs[0].cert):
        return [
            Finding(
                Severity.FAIL,
                f"{path}: private key does not match the certificate {f.source.path}",
                "Use the key the certificate was issued for (or reissue); TLS cannot "
                "start with a mismatched pair.",
                path,
            )
        ]
    return []


def _row(path: str, c: CertFacts, now: datetime, th: dict[str, Any]) -> dict[str, Any]:
    """One expiry table row; its level (pass/warn/fail) colours the report's timeline."""
    days = c.days_left(now)
    severity = DAYS_LEFT.grade(days, th)
    return {
        "path": path,
        "subject": c.subject,
        "issuer": c.issuer,
        "names": ", ".join(c.dns_names + c.ip_addresses),
        "not_after": c.not_after.strftime("%Y-%m-%d"),
        "days_left": round(days, 1),
        "level": severity.value if severity else "pass",
        "key": f"{c.key_type} {c.key_bits}",
        "signature": c.signature_hash,
        "serial": c.serial,
        "sha256": c.fingerprint,
    }


def _file_row(f: CertFile) -> dict[str, Any]:
    """One examined file for the check's data."""
    return {
        "path": f.source.path,
        "origin": f.source.origin,
        "certificates": len(f.certs),
        "mode": f"{f.mode:04o}" if f.mode is not None else None,
        "key": f.key.path if f.key else None,
        "error": f.error,
    }


def _sha256() -> hashes.HashAlgorithm:
    """The hash of certificate fingerprints."""
    return hashes.SHA256()


@check(
    id="tls.certificates",
    category="tls",
    title="TLS certificates and keys",
    description="Expiry, chain, key match, strength and permissions of every certificate "
    "the Iggy config, the agent and checks.certificates.paths name.",
    timeout_s=15,
    bands=BANDS,
    thresholds=dict(THRESHOLDS),
    view="expiry",
)
def tls_certificates(ctx: Context) -> Result:
    """Judge every certificate and key file found; chains as the broker's clients judge them.

    Verdicts:
    - pass: a leaf and intermediate from a private CA, matching key, mode 0600
      [test_good_chain_with_matching_key_passes]
    - pass: an RSA key of exactly 2048 bits [test_key_size_is_a_minimum]
    - pass: the broker's throwaway self-signed certificate on loopback
      [test_self_signed_without_files_is_not_a_failure]
    - pass: a passphrase-protected key is a note [test_encrypted_key_is_reported_and_never_copied]
    - pass: a CA certificate file [test_ca_file_gets_no_server_checks]
    - pass: CA name constraints the server's DNS names and IP addresses satisfy, or that
      constrain another name form [test_name_constraints_satisfied_pass]
    - warn: a chain OpenSSL and rustls accept but strict verifiers (Python 3.13) refuse: no
      Authority or Subject Key Identifier
      [test_chain_only_strict_verifiers_refuse_warns_naming_them]
    - warn: an Ed25519 root, which only pyca/cryptography's verifier refuses
      [test_chain_only_pyca_cryptography_refuses_warns_naming_it]
    - warn: a `.example.com` name constraint, which only pyca/cryptography calls malformed
      [test_leading_dot_name_constraint_only_pyca_refuses_warns]
    - warn: a leaf expiring in 20 days [test_validity_window]
    - warn: a self-signed leaf nobody trusts explicitly [test_self_signed_leaf]
    - warn: a chain ending at an issuer this node does not trust [test_unknown_issuer]
    - warn: none of this node's names in the certificate [test_wrong_hostname]
    - warn: a chain file out of order [test_chain_out_of_order]
    - fail: expired, not yet valid, or 5 days left [test_validity_window]
    - fail: an issuer that is not a CA, may not sign, is not for servers, or a path
      too long: every client refuses [test_chain_every_client_refuses_fails]
    - fail: server names outside a CA's permitted subtrees or inside an excluded one (DNS
      or IP), also when a key identifier is missing too
      [test_name_constraint_violations_fail]
    - fail: a critical extension OpenSSL or rustls does not process
      [test_critical_extension_clients_do_not_process_fails]
    - fail: a refusal by pyca/cryptography that is no known strict-only point (a 1024-bit
      intermediate), found beside a missing key identifier
      [test_unknown_pyca_refusal_fails_even_beside_a_missing_key_identifier]
    - fail: an Ed448 root, which rustls cannot verify [test_an_ed448_root_fails_for_rustls]
    - fail: a certificate its named issuer's key did not sign
      [test_signature_by_another_key_fails]
    - fail: a chain that cannot be judged (an error while checking it)
      [test_chain_that_cannot_be_judged_fails]
    - fail: a CA:TRUE server certificate, which rustls refuses
      [test_ca_certificate_as_server_certificate_fails_for_rustls]
    - fail: a missing intermediate [test_missing_intermediate]
    - fail: a key that is not the certificate's [test_key_that_does_not_match]
    - fail: a world-readable private key [test_world_readable_key_fails]
    - fail: a SHA-1 signature [test_sha1_signature_fails]
    - fail: an RSA 1024 key [test_rsa_1024_fails]
    - fail: Iggy's development certificates [test_iggy_development_certificates_are_flagged]
    - skipped: no certificate configured anywhere [test_glob_without_match_and_no_sources]

    Files are read once, now; days left are counted from now.
    """
    found = discover(ctx)
    notes = discovery_notes(found)
    if not found.sources:
        if notes:
            return Result.from_findings(
                notes, ok="no certificate files to examine: " + notes[0].message
            )
        return Result.skipped(
            "no certificates configured: TLS is off in the Iggy config (or none was found) "
            "and checks.certificates.paths is empty"
        )
    roots, bundles = load_roots(ctx)
    files = [read_cert_file(ctx, s) for s in found.sources]
    now = datetime.now(UTC)
    findings, rows = judge_files(files, roots, node_names(ctx), now, ctx.thresholds)
    soonest = min(rows, key=lambda r: r["days_left"], default=None)
    ok = f"{len(files)} certificate file(s) fine"
    if soonest:
        ok += f"; next expiry in {soonest['days_left']:.0f} days ({soonest['path']})"
    warn_days, fail_days = DAYS_LEFT.limits(ctx.thresholds)
    data = {
        "expiry": rows,
        "windows": {"warn_days": warn_days, "fail_days": fail_days},  # the timeline's shading
        "files": [_file_row(f) for f in files],
        "trust": bundles,
    }
    return Result.from_findings(notes + findings, ok=ok, data=data)


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
    """A client context that accepts any certificate (it is judged apart)."""
    # Validation is judged from the files and the presented certificate, not here.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _try_legacy(endpoint: Endpoint, sni: str, version: ssl.TLSVersion, timeout_s: float) -> str:
    """Whether the listener completes a handshake pinned to one legacy TLS version."""
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
    every_file = set().union(*on_disk.values()) if on_disk else set()
    out: list[Finding] = []
    for p in probes:
        if p.error:
            out.append(_handshake_failed(p))
        elif p.leaf is not None:
            out += _judge_served(p, p.leaf, on_disk, every_file, now, thresholds)
    return out


def _judge_served(
    p: Probe,
    leaf: CertFacts,
    on_disk: dict[str, set[str]],
    every_file: set[str],
    now: datetime,
    th: dict[str, Any],
) -> list[Finding]:
    """What one listener serves: validity, Iggy's dev certificate, the file, legacy TLS."""
    label = p.endpoint.label
    return [
        *_judge_validity(f"{label} serves {leaf.subject}", label, leaf, now, th),
        *_serves_dev_certificate(label, leaf),
        *_serves_other_than_disk(p, leaf, on_disk, every_file),
        *_accepts_legacy_tls(p),
    ]


def _handshake_failed(p: Probe) -> Finding:
    """A listener that did not complete a TLS handshake."""
    label = p.endpoint.label
    return Finding(
        Severity.FAIL,
        f"{label}: TLS handshake failed: {p.error}",
        f"Is the listener up ({p.endpoint.origin})? `ss -ltnp | grep "
        f":{p.endpoint.port}`; check the broker's log for TLS errors.",
        label,
    )


def _serves_dev_certificate(label: str, leaf: CertFacts) -> list[Finding]:
    """A listener serving Iggy's development certificate, whose private key is public."""
    if leaf.fingerprint not in DEV_CERT_FINGERPRINTS:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{label} serves Iggy's development certificate, whose private key is public",
            "Configure a real certificate in the Iggy config and restart the broker.",
            label,
        )
    ]


def _serves_other_than_disk(
    p: Probe, leaf: CertFacts, on_disk: dict[str, set[str]], every_file: set[str]
) -> list[Finding]:
    """A listener serving another certificate than its file (or than any file) holds."""
    label, cert_path = p.endpoint.label, p.endpoint.cert_path
    expected = on_disk.get(cert_path or "") if cert_path else None
    if expected is not None and leaf.fingerprint not in expected:
        return [
            Finding(
                Severity.WARN,
                f"{label} serves a different certificate than {cert_path} on "
                "disk (renewed but not reloaded?)",
                "Restart the broker (systemctl restart iggy-server) so it loads the "
                "certificate on disk.",
                label,
            )
        ]
    if expected is None and every_file and leaf.fingerprint not in every_file:
        return [
            Finding(
                Severity.WARN,
                f"{label} serves a certificate that is in none of the files examined",
                "Check which certificate this listener is configured with; restart it "
                "after a renewal.",
                label,
            )
        ]
    return []


def _accepts_legacy_tls(p: Probe) -> list[Finding]:
    """A listener still accepting TLS 1.0 or 1.1."""
    accepted = [v for v, state in p.legacy.items() if state == "accepted"]
    if not accepted:
        return []
    label = p.endpoint.label
    return [
        Finding(
            Severity.WARN,
            f"{label} still accepts {' and '.join(accepted)}",
            "Disable TLS 1.0/1.1 on this listener; they are deprecated (RFC 8996).",
            label,
        )
    ]


def _endpoint_row(p: Probe) -> dict[str, Any]:
    """One probed listener for the check's data."""
    return {
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


@check(
    id="tls.endpoints",
    category="tls",
    title="Live TLS listeners",
    description="Handshake with each TLS listener (Iggy config and checks.certificates."
    "endpoints): protocol, cipher, served certificate vs the file on disk, legacy TLS.",
    timeout_s=20,
    bands=BANDS,
    thresholds=dict(THRESHOLDS),
)
def tls_endpoints(ctx: Context) -> Result:
    """Probe live listeners and compare with the certificates on disk.

    Verdicts:
    - pass: a listener serving the certificate on disk, TLS 1.0/1.1 refused
      [test_live_listener_serving_the_file_on_disk_passes]
    - warn: a listener still serving the certificate from before a renewal
      [test_live_listener_serving_an_old_certificate_warns]
    - warn: a listener accepting TLS 1.0 and 1.1 [test_legacy_protocols_still_accepted_warn]
    - warn: the served certificate expires in 20 days
      [test_served_certificate_expiry_is_graded_by_the_same_band]
    - fail: nothing listens on the configured port
      [test_closed_port_fails_and_nothing_configured_skips]
    - fail: listeners that accept TCP and never finish the handshake
      [test_hung_listeners_are_probed_at_once_within_the_budget]
    - skipped: no TLS listener configured [test_closed_port_fails_and_nothing_configured_skips]

    One handshake per listener (plus one per legacy version), now.
    """
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
    ok = f"{len(probes)} TLS listener(s) fine: " + ", ".join(
        f"{p.endpoint.label} {p.protocol}" for p in probes
    )
    data = {"endpoints": [_endpoint_row(p) for p in probes]}
    return Result.from_findings(discovery_notes(found) + findings, ok=ok, data=data)
