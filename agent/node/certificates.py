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
    """Facts of one certificate."""
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


def verify_server_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime | None = None,
) -> str | None:
    """Validate like a TLS client would (webpki rules); None when valid, else the reason.

    The name checked is one of the leaf's own SANs: hostname match is judged apart,
    so a chain problem and a name problem are reported as what they are.
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
