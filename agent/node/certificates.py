"""Reading X.509 certificates and private keys into facts (all parsing by `cryptography`)."""

from __future__ import annotations

import ipaddress
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


class NotACertificate(ValueError):
    """The bytes hold no certificate we can parse."""


class NotAKey(ValueError):
    """The bytes hold no private key we can parse."""


@dataclass
class CertFacts:
    """What one certificate says about itself."""

    cert: x509.Certificate = field(repr=False)
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    dns_names: list[str]
    ip_addresses: list[str]
    key_type: str
    key_bits: int
    signature_hash: str | None
    is_ca: bool
    key_usage: list[str]
    ext_key_usage: list[str] | None  # None when the extension is absent (any usage)
    self_issued: bool
    fingerprint: str  # SHA-256, colon-separated upper-case hex
    ca_issuers_urls: list[str]

    def days_left(self, now: datetime) -> float:
        """Days until notAfter (negative when expired)."""
        return (self.not_after - now).total_seconds() / 86400


@dataclass
class KeyFacts:
    """What a private key file holds (never the key material itself)."""

    encrypted: bool
    key_type: str = ""
    key_bits: int = 0
    public_der: bytes = field(default=b"", repr=False)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in a PEM bundle, or the one in a DER file."""
    if not data.strip():
        raise NotACertificate("the file is empty")
    if b"-----BEGIN" in data:
        if b"CERTIFICATE-----" not in data:
            raise NotACertificate("PEM file without a CERTIFICATE block")
        try:
            with warnings.catch_warnings():
                # Old roots in system bundles trip RFC 5280 pedantry that helps nobody here.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise NotACertificate(f"PEM certificate does not parse ({exc})") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise NotACertificate("neither PEM nor DER certificate data") from None


def has_private_key_block(data: bytes) -> bool:
    """True when a PEM file also carries a private key (so it must be protected like one)."""
    return b"PRIVATE KEY-----" in data


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as 'AB:CD:...'."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def describe(cert: x509.Certificate) -> CertFacts:
    """Facts of one certificate; NotACertificate when its fields or extensions do not parse."""
    try:
        return _describe(cert)
    except (ValueError, UnsupportedAlgorithm) as exc:  # e.g. a duplicate extension, parsed lazily
        raise NotACertificate(f"a certificate's fields do not parse ({exc})") from None


def _describe(cert: x509.Certificate) -> CertFacts:
    key_type, bits = _key_kind(cert.public_key())
    try:
        sig_hash = cert.signature_hash_algorithm
        hash_name = sig_hash.name if sig_hash is not None else None
    except UnsupportedAlgorithm:
        hash_name = "unsupported"
    return CertFacts(
        cert=cert,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:X}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=_san(cert, x509.DNSName),
        ip_addresses=[str(ip) for ip in _san(cert, x509.IPAddress)],
        key_type=key_type,
        key_bits=bits,
        signature_hash=hash_name,
        is_ca=_is_ca(cert),
        key_usage=_key_usage(cert),
        ext_key_usage=_ext_key_usage(cert),
        self_issued=cert.issuer == cert.subject and issued_by(cert, cert),
        fingerprint=fingerprint(cert),
        ca_issuers_urls=_ca_issuers(cert),
    )


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer` names and signed `cert`."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def load_private_key(data: bytes) -> KeyFacts:
    """Parse a PEM or DER private key; an encrypted one is reported, not decrypted."""
    if not data.strip():
        raise NotAKey("the file is empty")
    loaders = (
        (serialization.load_pem_private_key,)
        if b"-----BEGIN" in data
        else (serialization.load_der_private_key,)
    )
    if b"ENCRYPTED" in data:
        return KeyFacts(encrypted=True)
    for loader in loaders:
        try:
            key = loader(data, password=None)
        except TypeError:  # "Password was not given but private key is encrypted"
            return KeyFacts(encrypted=True)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise NotAKey(f"not a private key we can read ({exc})") from None
        key_type, bits = _key_kind(key.public_key())
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return KeyFacts(encrypted=False, key_type=key_type, key_bits=bits, public_der=der)
    raise NotAKey("not a private key")


def public_der(cert: x509.Certificate) -> bytes:
    """The certificate's public key as DER, to compare with a private key's."""
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_strict_profile(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime | None = None,
) -> str | None:
    """Validate with pyca/cryptography's verifier; None when valid, else its reason.

    That verifier applies the RFC 5280 and CA/Browser Forum profile, stricter than the
    broker's clients (it refuses a leaf without an Authority Key Identifier, which OpenSSL
    and rustls accept): `client_rejection` decides whether clients connect, this only
    finds what strict verifiers would refuse. The name checked is one of the leaf's own
    SANs: hostname match is judged apart.
    """
    facts_dns, facts_ip = _san(leaf, x509.DNSName), _san(leaf, x509.IPAddress)
    if facts_dns:
        subject: DNSName | IPAddress = DNSName(facts_dns[0].replace("*.", "wildcard.", 1))
    elif facts_ip:
        subject = IPAddress(facts_ip[0])
    else:
        return "the certificate has no subjectAltName (modern clients ignore the CN)"
    if not roots:
        return "no trusted roots to validate against"
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now or datetime.now(UTC))
        .build_server_verifier(subject)
    )
    try:
        verifier.verify(leaf, intermediates)
    except Exception as exc:  # VerificationError, plus ValueError on malformed input
        return str(exc) or type(exc).__name__
    return None


# -- chains as the broker's clients judge them ---------------------------------------------
#
# Two verdicts, because the broker's clients do not agree. The common verifiers, OpenSSL
# with its default flags (Node.js, C, PHP, Python before 3.13) and rustls/webpki (the Iggy
# Rust SDK and the SDKs built on it), check signatures, names, validity, that issuers are
# CAs, key usage and path length. Strict verifiers, OpenSSL with X509_V_FLAG_X509_STRICT
# (Python 3.13 sets it in its default context) and pyca/cryptography's (CA/Browser Forum
# profile), also demand RFC 5280's key identifiers and criticality: a chain only they
# refuse works for the SDKs and breaks only those clients, so it is a warning.
#
# The rules follow OpenSSL 3's x509_vfy.c (check_extensions, X509_check_ca, the sslserver
# purpose) and rustls-webpki's verify_cert.rs (check_basic_constraints: an end entity
# must not be CA:TRUE, an issuer must be; it does not read keyUsage nor a trust anchor's
# validity). Name constraints and policies are not modelled: a chain that breaks them
# fails pyca/cryptography's verifier and is reported by the check as a warning.

OPENSSL = "OpenSSL with default flags"
RUSTLS = "rustls/webpki (the Iggy Rust SDK)"
#: The verifiers `client_rejection` models; a chain they accept works for the Iggy SDKs.
LENIENT_CLIENTS = f"{OPENSSL} and {RUSTLS}"
#: OpenSSL in strict mode, as Python >= 3.13's ssl.create_default_context() runs it.
STRICT_OPENSSL = (
    "Python ≥ 3.13's default SSL context (VERIFY_X509_STRICT)",
    "`openssl verify -x509_strict`",
)
PYCA_VERIFIER = "pyca/cryptography's verifier"
MAX_CHAIN = 10  # longer paths are loops or junk; clients give up earlier (webpki: 6 CAs)


@dataclass
class Chain:
    """A certification path as a TLS client builds it: the leaf, then each issuer."""

    certs: list[x509.Certificate]
    anchored: bool  # the last certificate is trusted: the path reaches a root


@dataclass(frozen=True)
class Rejection:
    """Why the common verifiers refuse a chain, and which of them do."""

    problem: str
    refused_by: tuple[str, ...] = (OPENSSL, RUSTLS)


@dataclass(frozen=True)
class Deviation:
    """A point of the strict X.509 profile one certificate of a chain misses."""

    subject: str  # the certificate's subject
    what: str  # what it lacks, e.g. "has no Authority Key Identifier"
    strict: tuple[str, ...]  # the verifiers that refuse it
    fix: str  # the OpenSSL extension line to reissue it with


def build_chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], roots: list[x509.Certificate]
) -> Chain:
    """Follow issuers from the leaf by name and signature, a trusted root first (as OpenSSL)."""
    trusted = set(roots)
    path = [leaf]
    while len(path) < MAX_CHAIN:
        current = path[-1]
        if current in trusted:
            return Chain(path, anchored=True)
        root = next((r for r in roots if issued_by(current, r)), None)
        if root is not None:
            return Chain([*path, root], anchored=True)
        parent = next((c for c in intermediates if c not in path and issued_by(current, c)), None)
        if parent is None:
            break
        path.append(parent)
    return Chain(path, anchored=False)


def client_rejection(chain: Chain, when: datetime) -> Rejection | None:
    """Why OpenSSL (default flags) or rustls/webpki would refuse this anchored chain, or None.

    The leaf's own usage (extendedKeyUsage, CA:TRUE) and the host name are judged apart.
    """
    rules = (
        _no_subject_alt_name,
        _unhandled_critical,
        _issuer_not_a_ca,
        _issuer_not_for_servers,
        _path_too_long,
    )
    try:
        for rule in rules:
            if found := rule(chain):
                return found
        return _outside_validity(chain, when)
    except ValueError as exc:  # an extension that does not parse: clients refuse it too
        return Rejection(f"an extension does not parse ({exc})")


def strict_deviations(chain: Chain) -> list[Deviation]:
    """What strict verifiers refuse in a chain the common clients accept.

    As in OpenSSL, a lone trusted certificate (a pinned self-signed leaf) has none.
    """
    if len(chain.certs) < 2:
        return []
    try:
        return [
            *_missing_authority_key_id(chain),
            *_missing_subject_key_id(chain),
            *_ca_without_key_usage(chain),
            *_ca_constraints_not_critical(chain),
            *_non_ca_signs_certificates(chain),
        ]
    except ValueError:
        return []  # client_rejection already reports extensions that do not parse


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _extension(cert: x509.Certificate, kind: type) -> x509.Extension | None:
    """The certificate's extension of this class, None when absent."""
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _no_subject_alt_name(chain: Chain) -> Rejection | None:
    """Host names are matched against subjectAltName only, never the CN (rustls, Go, Python)."""
    if _extension(chain.certs[0], x509.SubjectAlternativeName) is not None:
        return None
    return Rejection(
        "the certificate has no subjectAltName (modern clients ignore the CN)",
        (RUSTLS, "every client that checks the host name"),
    )


def _unhandled_critical(chain: Chain) -> Rejection | None:
    """A critical extension the verifier does not know makes OpenSSL and webpki refuse."""
    for cert in chain.certs:
        for ext in cert.extensions:
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
                oid = ext.oid.dotted_string
                return Rejection(
                    f"{_name(cert)} has a critical extension clients do not know ({oid})"
                )
    return None


def _issuer_not_a_ca(chain: Chain) -> Rejection | None:
    """Every issuer must be a CA allowed to sign certificates (OpenSSL's X509_check_ca).

    OpenSSL lets a trusted root without basicConstraints pass when it is a v1 certificate
    or its keyUsage allows keyCertSign; an intermediate needs CA:TRUE (webpki too).
    webpki ignores keyUsage, OpenSSL refuses an issuer whose keyUsage lacks keyCertSign.
    """
    for i, cert in enumerate(chain.certs[1:], 1):
        anchor = chain.anchored and i == len(chain.certs) - 1
        issued = f"{_name(cert)} issued {_name(chain.certs[i - 1])} but"
        constraints = _extension(cert, x509.BasicConstraints)
        usage = _extension(cert, x509.KeyUsage)
        ca = constraints is not None and constraints.value.ca
        signs = usage is not None and usage.value.key_cert_sign
        legacy_root = anchor and constraints is None and (cert.version == x509.Version.v1 or signs)
        if not (ca or legacy_root):
            refused_by = (OPENSSL,) if anchor else (OPENSSL, RUSTLS)  # webpki reads no anchor
            return Rejection(f"{issued} is not a CA (no basicConstraints CA:TRUE)", refused_by)
        if usage is not None and not usage.value.key_cert_sign:
            return Rejection(f"{issued} its keyUsage does not allow keyCertSign", (OPENSSL,))
    return None


def _issuer_not_for_servers(chain: Chain) -> Rejection | None:
    """An issuer whose extendedKeyUsage leaves out serverAuth cannot vouch for a server."""
    for i, cert in enumerate(chain.certs[1:], 1):
        usage = _extension(cert, x509.ExtendedKeyUsage)
        if usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage.value:
            anchor = chain.anchored and i == len(chain.certs) - 1
            return Rejection(
                f"{_name(cert)} limits its extendedKeyUsage to "
                f"{', '.join(_EKU_NAMES.get(o, o.dotted_string) for o in usage.value)}, "
                "without serverAuth",
                (OPENSSL,) if anchor else (OPENSSL, RUSTLS),
            )
    return None


def _path_too_long(chain: Chain) -> Rejection | None:
    """A CA's pathLenConstraint caps the CAs below it (self-issued ones do not count)."""
    for i, cert in enumerate(chain.certs[2:], 2):
        constraints = _extension(cert, x509.BasicConstraints)
        limit = constraints.value.path_length if constraints is not None else None
        below = sum(1 for c in chain.certs[1:i] if c.issuer != c.subject)
        if limit is not None and below > limit:
            return Rejection(
                f"{_name(cert)} allows {limit} CA(s) below it (pathlen) but the chain has {below}"
            )
    return None


def _outside_validity(chain: Chain, when: datetime) -> Rejection | None:
    """Clients check every certificate's validity window; OpenSSL the trusted root's too."""
    for i, cert in enumerate(chain.certs):
        anchor = chain.anchored and i == len(chain.certs) - 1
        refused_by = (OPENSSL,) if anchor else (OPENSSL, RUSTLS)
        if when < cert.not_valid_before_utc:
            since = cert.not_valid_before_utc
            return Rejection(f"{_name(cert)} is not valid until {since:%Y-%m-%d}", refused_by)
        if when > cert.not_valid_after_utc:
            until = cert.not_valid_after_utc
            return Rejection(f"{_name(cert)} expired on {until:%Y-%m-%d}", refused_by)
    return None


def _missing_authority_key_id(chain: Chain) -> list[Deviation]:
    """RFC 5280 4.2.1.1: every certificate but a self-signed root names its issuer's key."""
    out = []
    for i, cert in enumerate(chain.certs[:-1]):  # OpenSSL skips the last, the trust anchor
        if cert.version != x509.Version.v3 or issued_by(cert, cert):
            continue
        if _extension(cert, x509.AuthorityKeyIdentifier) is None:
            # pyca/cryptography's verifier demands it of the leaf only
            strict = (*STRICT_OPENSSL, PYCA_VERIFIER) if i == 0 else STRICT_OPENSSL
            out.append(
                Deviation(
                    _name(cert),
                    "has no Authority Key Identifier",
                    strict,
                    "authorityKeyIdentifier=keyid",
                )
            )
    return out


def _missing_subject_key_id(chain: Chain) -> list[Deviation]:
    """RFC 5280 4.2.1.2: a CA certificate carries its own key's identifier."""
    return [
        Deviation(
            _name(cert),
            "is a CA without a Subject Key Identifier",
            STRICT_OPENSSL,
            "subjectKeyIdentifier=hash",
        )
        for cert in chain.certs
        if cert.version == x509.Version.v3
        and _is_ca(cert)
        and _extension(cert, x509.SubjectKeyIdentifier) is None
    ]


def _ca_without_key_usage(chain: Chain) -> list[Deviation]:
    """RFC 5280 4.2.1.3: a CA certificate states its keyUsage (keyCertSign)."""
    return [
        Deviation(
            _name(cert),
            "is a CA without a keyUsage extension",
            (*STRICT_OPENSSL, PYCA_VERIFIER),
            "keyUsage=critical,keyCertSign,cRLSign",
        )
        for cert in chain.certs
        if _is_ca(cert) and _extension(cert, x509.KeyUsage) is None
    ]


def _ca_constraints_not_critical(chain: Chain) -> list[Deviation]:
    """RFC 5280 4.2.1.9: a CA's basicConstraints is marked critical."""
    out = []
    for cert in chain.certs:
        constraints = _extension(cert, x509.BasicConstraints)
        if constraints is not None and constraints.value.ca and not constraints.critical:
            out.append(
                Deviation(
                    _name(cert),
                    "is a CA whose basicConstraints is not marked critical",
                    (*STRICT_OPENSSL, PYCA_VERIFIER),
                    "basicConstraints=critical,CA:TRUE",
                )
            )
    return out


def _non_ca_signs_certificates(chain: Chain) -> list[Deviation]:
    """RFC 5280 4.2.1.3: keyCertSign is for CA certificates only."""
    out = []
    for cert in chain.certs:
        usage = _extension(cert, x509.KeyUsage)
        if usage is not None and usage.value.key_cert_sign and not _is_ca(cert):
            out.append(
                Deviation(
                    _name(cert),
                    "is not a CA but its keyUsage allows keyCertSign",
                    (*STRICT_OPENSSL, PYCA_VERIFIER),
                    "keyUsage=critical,digitalSignature",
                )
            )
    return out


def name_matches(name: str, dns_names: list[str], ip_addresses: list[str]) -> bool:
    """RFC 6125 matching: exact, or a wildcard in the left-most label only; IPs exactly."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(a) == ip for a in ip_addresses)
    name = name.lower().rstrip(".")
    for pattern in (d.lower().rstrip(".") for d in dns_names):
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _san(cert: x509.Certificate, kind: type) -> list:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(kind))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert: x509.Certificate) -> list[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    used = []
    for name in _KEY_USAGES:
        if getattr(ku, name):
            used.append(name)
    if ku.key_agreement:
        used += [n for n in ("encipher_only", "decipher_only") if getattr(ku, n)]
    return used


def _ext_key_usage(cert: x509.Certificate) -> list[str] | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]


def _ca_issuers(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in aia
        if d.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS
    ]


def _key_kind(key: object) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, 0
