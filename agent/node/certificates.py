"""Reading X.509 certificates and private keys into facts (all parsing by `cryptography`)."""

from __future__ import annotations

import ipaddress
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    ServerVerifier,
    Store,
)

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


def misissued_by(
    cert: x509.Certificate, candidates: list[x509.Certificate]
) -> x509.Certificate | None:
    """A candidate named as `cert`'s issuer whose key did not sign it (or cannot be checked).

    Clients find the issuer by name, then check the signature: a mismatch (a damaged or
    tampered file, a CA re-keyed under the same name) fails, it is no unknown issuer.
    """
    named = [c for c in candidates if c.subject == cert.issuer and c != cert]
    if not named or any(issued_by(cert, c) for c in named):
        return None
    return named[0]


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
    and rustls accept): `classify_pyca_refusal` says whether a refusal is one of those
    strict-only points. The name checked is one of the leaf's own SANs (hostname match is
    judged apart); each is tried until one is a name the verifier takes. Anything that
    goes wrong, setting up included, is a refusal: never a silent pass.
    """
    if not roots:
        return "no trusted roots to validate against"
    problem = "the certificate has no subjectAltName (modern clients ignore the CN)"
    try:
        for subject in _pyca_subjects(leaf):
            try:  # a name the verifier cannot take (e.g. invalid DNS syntax): the next one
                verifier = (
                    PolicyBuilder()
                    .store(Store(roots))
                    .time(now or datetime.now(UTC))
                    .build_server_verifier(subject)
                )
            except ValueError as exc:
                problem = f"{exc} (subjectAltName {subject.value})"
                continue
            problem = _pyca_verify(verifier, leaf, intermediates)
            if problem is None or _PYCA_NO_SUCH_NAME not in problem:
                return problem
    except Exception as exc:  # a SAN that does not parse, a store that refuses a root...
        return str(exc) or type(exc).__name__
    return problem


_PYCA_NO_SUCH_NAME = "no matching subjectAltName"


def _pyca_subjects(leaf: x509.Certificate) -> list[DNSName | IPAddress]:
    """The leaf's own SANs as pyca/cryptography subjects (a wildcard made a concrete name)."""
    subjects: list[DNSName | IPAddress] = [
        DNSName(name.replace("*.", "wildcard.", 1)) for name in _san(leaf, x509.DNSName)
    ]
    return subjects + [IPAddress(ip) for ip in _san(leaf, x509.IPAddress)]


def _pyca_verify(
    verifier: ServerVerifier, leaf: x509.Certificate, intermediates: list[x509.Certificate]
) -> str | None:
    """One run of pyca/cryptography's server verifier: None, or why it refuses."""
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
# validity) and both name-constraint checkers (OpenSSL's check_name_constraints and
# v3_ncons.c, webpki's subject_name/mod.rs): DNS and IP subtrees as both evaluate them, and
# the name forms webpki refuses outright. Policies are not modelled. pyca/cryptography's
# verifier runs as well, on every chain the common verifiers accept: a refusal that is
# not a known strict-only point (`classify_pyca_refusal`) is a failure, never a warning.

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

    def is_anchor(self, i: int) -> bool:
        """Whether certs[i] is the trust anchor (the last certificate of an anchored path)."""
        return self.anchored and i == len(self.certs) - 1

    def refusing_clients(self, i: int) -> tuple[str, ...]:
        """The verifiers that refuse a chain over certs[i]: webpki reads no trust anchor."""
        return (OPENSSL,) if self.is_anchor(i) else (OPENSSL, RUSTLS)


@dataclass(frozen=True)
class Rejection:
    """Why the common verifiers refuse a chain, and which of them do."""

    problem: str
    refused_by: tuple[str, ...] = (OPENSSL, RUSTLS)
    fix: str = ""  # what to reissue, when the generic advice is not enough


@dataclass(frozen=True)
class Deviation:
    """A point of the strict X.509 profile one certificate of a chain misses."""

    subject: str  # the certificate's subject
    what: str  # what it lacks, e.g. "has no Authority Key Identifier"
    strict: tuple[str, ...]  # the verifiers that refuse it
    fix: str  # the OpenSSL extension line to reissue it with
    pyca_says: str = ""  # how pyca/cryptography's verifier words it, when it refuses it


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
        _name_constraints_violated,
    )
    try:
        for rule in rules:
            if found := rule(chain):
                return found
        return _outside_validity(chain, when)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return Rejection(f"an extension does not parse ({exc})")  # clients refuse it too


def strict_deviations(chain: Chain) -> list[Deviation]:
    """What strict verifiers refuse in a chain the common clients accept.

    As in OpenSSL, a lone trusted certificate (a pinned self-signed leaf) has none. An
    extension that does not parse raises (ValueError): `client_rejection` reports those.
    """
    if len(chain.certs) < 2:
        return []
    return [
        *_missing_authority_key_id(chain),
        *_missing_subject_key_id(chain),
        *_ca_without_key_usage(chain),
        *_ca_constraints_not_critical(chain),
        *_non_ca_signs_certificates(chain),
    ]


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


#: Critical extensions OpenSSL's verifier processes (X509_supported_extension, v3_purp.c):
#: netscape-cert-type, keyUsage, subjectAltName, basicConstraints, certificatePolicies,
#: cRLDistributionPoints, extendedKeyUsage, sbgp-ipAddrBlock/autonomousSysNum,
#: OCSP noCheck, policyConstraints, proxyCertInfo, nameConstraints, policyMappings,
#: inhibitAnyPolicy. Any other critical extension fails the chain.
_OPENSSL_CRITICAL_OK = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.OCSP_NO_CHECK,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
    ObjectIdentifier("2.16.840.1.113730.1.1"),  # netscape-cert-type
    ObjectIdentifier("1.3.6.1.5.5.7.1.7"),  # sbgp-ipAddrBlock
    ObjectIdentifier("1.3.6.1.5.5.7.1.8"),  # sbgp-autonomousSysNum
    ObjectIdentifier("1.3.6.1.5.5.7.1.14"),  # proxyCertInfo
}
#: Critical extensions webpki processes (cert.rs remember_cert_extension); it refuses
#: any other critical one (UnsupportedCriticalExtension), certificatePolicies included.
_WEBPKI_CRITICAL_OK = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS,
}


def _unhandled_critical(chain: Chain) -> Rejection | None:
    """A critical extension a verifier does not process makes it refuse the chain.

    OpenSSL checks the trust anchor too; webpki reads an anchor ignoring unknown critical
    extensions (Cert::for_trust_anchor).
    """
    handled = {OPENSSL: _OPENSSL_CRITICAL_OK, RUSTLS: _WEBPKI_CRITICAL_OK}
    for i, cert in enumerate(chain.certs):
        for ext in cert.extensions:
            if not ext.critical:
                continue
            refused_by = tuple(
                who for who in chain.refusing_clients(i) if ext.oid not in handled[who]
            )
            if refused_by:
                oid = ext.oid.dotted_string
                known = getattr(ext.oid, "_name", "Unknown OID") != "Unknown OID"
                name = f"{ext.oid._name} ({oid})" if known else oid
                return Rejection(
                    f"{_name(cert)} has a critical extension clients do not process ({name})",
                    refused_by,
                    f"Reissue {_name(cert)} without the extension {name} marked critical.",
                )
    return None


def _issuer_not_a_ca(chain: Chain) -> Rejection | None:
    """Every issuer must be a CA allowed to sign certificates (OpenSSL's X509_check_ca).

    OpenSSL lets a trusted root without basicConstraints pass when it is a v1 certificate
    or its keyUsage allows keyCertSign; an intermediate needs CA:TRUE (webpki too).
    webpki ignores keyUsage, OpenSSL refuses an issuer whose keyUsage lacks keyCertSign.
    """
    for i, cert in enumerate(chain.certs[1:], 1):
        anchor = chain.is_anchor(i)
        issued = f"{_name(cert)} issued {_name(chain.certs[i - 1])} but"
        constraints = _extension(cert, x509.BasicConstraints)
        usage = _extension(cert, x509.KeyUsage)
        ca = constraints is not None and constraints.value.ca
        signs = usage is not None and usage.value.key_cert_sign
        legacy_root = anchor and constraints is None and (cert.version == x509.Version.v1 or signs)
        if not (ca or legacy_root):
            return Rejection(
                f"{issued} is not a CA (no basicConstraints CA:TRUE)", chain.refusing_clients(i)
            )
        if usage is not None and not usage.value.key_cert_sign:
            return Rejection(f"{issued} its keyUsage does not allow keyCertSign", (OPENSSL,))
    return None


def _issuer_not_for_servers(chain: Chain) -> Rejection | None:
    """An issuer whose extendedKeyUsage leaves out serverAuth cannot vouch for a server."""
    for i, cert in enumerate(chain.certs[1:], 1):
        usage = _extension(cert, x509.ExtendedKeyUsage)
        if usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage.value:
            return Rejection(
                f"{_name(cert)} limits its extendedKeyUsage to "
                f"{', '.join(_EKU_NAMES.get(o, o.dotted_string) for o in usage.value)}, "
                "without serverAuth",
                chain.refusing_clients(i),
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


def _name_constraints_violated(chain: Chain) -> Rejection | None:
    """RFC 5280 4.2.1.10: a CA's nameConstraints bind every certificate below it.

    Both verifiers apply each CA's constraints, the trust anchor's included, to all the
    certificates under it; OpenSSL skips self-issued intermediates. See `_openssl_nc` and
    `_webpki_nc` for where they differ.
    """
    for j, ca in enumerate(chain.certs[1:], 1):
        ext = _extension(ca, x509.NameConstraints)
        if ext is None:
            continue
        for i, cert in enumerate(chain.certs[:j]):
            self_issued = i > 0 and cert.issuer == cert.subject
            openssl = None if self_issued else _openssl_nc(cert, ext.value, leaf=i == 0)
            webpki = _webpki_nc(cert, ext.value)
            if openssl or webpki:
                refused_by = tuple(w for w, v in ((OPENSSL, openssl), (RUSTLS, webpki)) if v)
                return Rejection(
                    f"name constraints of {_name(ca)}: {_name(cert)} {openssl or webpki}",
                    refused_by,
                    f"Reissue {_name(cert)} with names inside what {_name(ca)} permits "
                    f"({_subtrees_text(ext.value)}), or have the CA's constraints widened.",
                )
    return None


_NameCheck = Callable[[x509.GeneralName, x509.GeneralName, bool], bool]


def _openssl_nc(cert: x509.Certificate, nc: x509.NameConstraints, *, leaf: bool) -> str | None:
    """OpenSSL's NAME_CONSTRAINTS_check (and _check_CN for a leaf), or None when it passes.

    DNS: a subtree `example.com` holds itself and its subdomains, `.example.com` only
    subdomains; a wildcard SAN is compared as written. IP: address within the network.
    directoryName: the subject starts with the subtree's RDNs. otherName and
    registeredID constraints are unsupported: a name of that form fails. rfc822Name and
    URI constraints are not modelled here.
    """
    names = _san_names(cert)
    subject = cert.subject
    if len(subject) and (found := _against(x509.DirectoryName(subject), nc, _dn_within)):
        return found
    for name in names:
        if isinstance(name, x509.DNSName):
            found = _against(name, nc, _dns_within)
        elif isinstance(name, x509.IPAddress):
            found = _against(name, nc, _ip_within)
        elif isinstance(name, (x509.OtherName, x509.RegisteredID)) and _subtrees_of(nc, name):
            found = f"has {_label(name)}, a name form OpenSSL cannot check against constraints"
        else:
            found = None
        if found:
            return found
    if leaf and not any(isinstance(n, x509.DNSName) for n in names):
        for cn in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            hostname = isinstance(cn.value, str) and _cn_is_hostname(cn.value)
            if hostname and (found := _against(x509.DNSName(cn.value), nc, _dns_within)):
                return f"{found} (its CN: OpenSSL checks it when there is no DNS SAN)"
    return None


def _webpki_nc(cert: x509.Certificate, nc: x509.NameConstraints) -> str | None:
    """webpki's check_name_constraints, or None when it passes.

    DNS and IP as OpenSSL, except that against an excluded subtree a wildcard SAN counts
    when one of its expansions falls inside (`*.example.com` hits `www.example.com`).
    It implements no directoryName nor URI constraints and refuses them: a CA with a
    directoryName subtree fails every certificate below it. Other forms (rfc822Name,
    otherName, registeredID) fail when the certificate has a name of a constrained form.
    """
    if any(isinstance(b, x509.DirectoryName) for b in _all_subtrees(nc)):
        return "is below a directoryName constraint, which rustls/webpki refuses outright"
    for name in _san_names(cert):
        if isinstance(name, x509.DNSName):
            found = _against(name, nc, _webpki_dns_within)
        elif isinstance(name, x509.IPAddress):
            found = _against(name, nc, _ip_within)
        elif _subtrees_of(nc, name):
            found = f"has {_label(name)}, a name form rustls/webpki refuses under constraints"
        else:
            found = None
        if found:
            return found
    return None


def _against(name: x509.GeneralName, nc: x509.NameConstraints, within: _NameCheck) -> str | None:
    """Why a name breaks the subtrees of its own form (in none permitted, in one excluded).

    As RFC 5280, OpenSSL (nc_match) and webpki read it: with permitted subtrees of the
    name's form, it must fall in one of them; it must fall in no excluded one.
    """
    kind = type(name)
    permitted = [b for b in nc.permitted_subtrees or () if isinstance(b, kind)]
    if permitted and not any(within(name, b, False) for b in permitted):
        allowed = ", ".join(_label(b) for b in permitted)
        return f"has {_label(name)}, outside the permitted names ({allowed})"
    for base in nc.excluded_subtrees or ():
        if isinstance(base, kind) and within(name, base, True):
            return f"has {_label(name)}, inside the excluded names ({_label(base)})"
    return None


def _dns_within(name: x509.GeneralName, base: x509.GeneralName, excluded: bool) -> bool:
    """OpenSSL's nc_dns: the name itself or below it (`.x` only below), any case."""
    n, b = str(name.value).lower(), str(base.value).lower()
    if not b or n == b:
        return True
    return n.endswith(b if b.startswith(".") else "." + b)


def _webpki_dns_within(name: x509.GeneralName, base: x509.GeneralName, excluded: bool) -> bool:
    """webpki: as OpenSSL, plus a wildcard SAN whose expansions reach an excluded subtree."""
    if _dns_within(name, base, excluded):
        return True
    n, b = str(name.value).lower(), str(base.value).lower()
    if not (excluded and n.startswith("*.") and len(n) <= len(b)):
        return False
    first_dot = b.find(".", 1)
    return first_dot > 0 and n[1:] == b[first_dot:]


def _ip_within(name: x509.GeneralName, base: x509.GeneralName, excluded: bool) -> bool:
    """An address within the network; IPv4 never matches an IPv6 subtree, nor the reverse."""
    ip, net = name.value, base.value
    return isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network) and (
        ip.version == net.version and ip in net
    )


def _dn_within(name: x509.GeneralName, base: x509.GeneralName, excluded: bool) -> bool:
    """OpenSSL's nc_dn: the subtree's RDNs start the subject (case and spaces folded)."""
    subject, prefix = list(name.value.rdns), list(base.value.rdns)
    return len(prefix) <= len(subject) and all(
        _rdn_key(a) == _rdn_key(b) for a, b in zip(prefix, subject, strict=False)
    )


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> frozenset[tuple[str, str]]:
    return frozenset((a.oid.dotted_string, " ".join(str(a.value).lower().split())) for a in rdn)


def _cn_is_hostname(cn: str) -> bool:
    """OpenSSL's cn2dnsid: letters, digits, `_`, inner `-` and `.`, at least two labels."""
    dotted = False
    for i, c in enumerate(cn):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        inner = 0 < i < len(cn) - 1
        if inner and c == "-":
            continue
        if inner and c == "." and cn[i + 1] not in ".-" and cn[i - 1] != "-":
            dotted = True
            continue
        return False
    return dotted


def _san_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    ext = _extension(cert, x509.SubjectAlternativeName)
    return list(ext.value) if ext is not None else []


def _all_subtrees(nc: x509.NameConstraints) -> list[x509.GeneralName]:
    return [*(nc.permitted_subtrees or ()), *(nc.excluded_subtrees or ())]


def _subtrees_of(nc: x509.NameConstraints, name: x509.GeneralName) -> list[x509.GeneralName]:
    return [b for b in _all_subtrees(nc) if isinstance(b, type(name))]


def _subtrees_text(nc: x509.NameConstraints) -> str:
    permitted = ", ".join(_label(b) for b in nc.permitted_subtrees or ()) or "any"
    excluded = ", ".join(_label(b) for b in nc.excluded_subtrees or ())
    return f"permitted: {permitted}" + (f"; excluded: {excluded}" if excluded else "")


_FORMS = {
    x509.DNSName: "DNS",
    x509.IPAddress: "IP",
    x509.DirectoryName: "dirName",
    x509.RFC822Name: "email",
    x509.UniformResourceIdentifier: "URI",
    x509.OtherName: "otherName",
    x509.RegisteredID: "RID",
}


def _label(name: x509.GeneralName) -> str:
    """`DNS:example.com`, `IP:10.0.0.0/8`, as OpenSSL prints names."""
    value = name.value
    if isinstance(name, x509.DirectoryName):
        value = value.rfc4514_string()
    elif isinstance(name, x509.OtherName | x509.RegisteredID):
        value = getattr(name, "type_id", value).dotted_string
    return f"{_FORMS.get(type(name), type(name).__name__)}:{value}"


def _outside_validity(chain: Chain, when: datetime) -> Rejection | None:
    """Clients check every certificate's validity window; OpenSSL the trusted root's too."""
    for i, cert in enumerate(chain.certs):
        refused_by = chain.refusing_clients(i)
        if when < cert.not_valid_before_utc:
            since = cert.not_valid_before_utc
            return Rejection(f"{_name(cert)} is not valid until {since:%Y-%m-%d}", refused_by)
        if when > cert.not_valid_after_utc:
            until = cert.not_valid_after_utc
            return Rejection(f"{_name(cert)} expired on {until:%Y-%m-%d}", refused_by)
    return None


_PYCA_MISSING = "{oid}: Certificate is missing required extension"


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
                    _PYCA_MISSING.format(oid="2.5.29.35") if i == 0 else "",
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
            _PYCA_MISSING.format(oid="2.5.29.15"),
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
                    "2.5.29.19: Certificate extension has incorrect criticality",
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
                    "EE keyUsage must not assert keyCertSign",
                )
            )
    return out


# -- what pyca/cryptography's refusals mean -------------------------------------------


class PycaRefusal(Enum):
    """What a refusal by pyca/cryptography's verifier means for the broker's clients."""

    EXPLAINED = "a strict-profile deviation the check reports on its own"
    STRICT_ONLY = "a CA/Browser Forum point OpenSSL and rustls/webpki do not enforce"
    JUDGED_APART = "the leaf's own usage, which the check fails on its own"
    UNKNOWN = "not known to be strict-only: the broker's clients may refuse it too"


def classify_pyca_refusal(problem: str, chain: Chain, deviations: list[Deviation]) -> PycaRefusal:
    """Whether pyca/cryptography's reason is strict-only, explained, or unknown (a failure).

    Only reasons named here, each confirmed on the chain itself, count as strict-only;
    anything else, a new wording in a later cryptography release included, is UNKNOWN.
    """
    if any(d.pyca_says and d.pyca_says in problem for d in deviations):
        return PycaRefusal.EXPLAINED
    for says, confirmed in _STRICT_ONLY_REASONS:
        if any(text in problem for text in says) and confirmed(chain):
            return PycaRefusal.STRICT_ONLY
    for says, confirmed in _JUDGED_APART_REASONS:
        if any(text in problem for text in says) and confirmed(chain):
            return PycaRefusal.JUDGED_APART
    return PycaRefusal.UNKNOWN


def _algorithms_clients_accept(chain: Chain) -> bool:
    """Every key and signature is one OpenSSL and rustls/webpki accept (Ed25519 included)."""
    certs = chain.certs
    if not all(_key_clients_accept(c.public_key()) for c in certs):
        return False
    return all(
        _signature_clients_accept(child.signature_algorithm_oid, issuer.public_key())
        for child, issuer in itertools.pairwise(certs)
    )


def _key_clients_accept(key: object) -> bool:
    """webpki's key types (ring): RSA 2048-8192, ECDSA P-256/P-384, Ed25519."""
    if isinstance(key, rsa.RSAPublicKey):
        return 2048 <= key.key_size <= 8192
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in ("secp256r1", "secp384r1")
    return isinstance(key, ed25519.Ed25519PublicKey)


def _signature_clients_accept(algorithm: ObjectIdentifier, issuer_key: object) -> bool:
    """webpki's signature algorithms, which OpenSSL accepts too."""
    s = SignatureAlgorithmOID
    if isinstance(issuer_key, ed25519.Ed25519PublicKey):
        return algorithm == s.ED25519
    if isinstance(issuer_key, ec.EllipticCurvePublicKey):
        return algorithm in (s.ECDSA_WITH_SHA256, s.ECDSA_WITH_SHA384)
    return algorithm in (s.RSA_WITH_SHA256, s.RSA_WITH_SHA384, s.RSA_WITH_SHA512, s.RSASSA_PSS)


def _only_the_anchor_is_v1(chain: Chain) -> bool:
    """OpenSSL and rustls take a v1 root as a trust anchor; no other v1 certificate."""
    return all(c.version == x509.Version.v3 for c in chain.certs[:-1]) and chain.anchored


def _leaf_has_san(chain: Chain) -> bool:
    """The leaf has a subjectAltName (its criticality is all pyca/cryptography minds)."""
    return _extension(chain.certs[0], x509.SubjectAlternativeName) is not None


def _leaf_has_name_constraints(chain: Chain) -> bool:
    return _extension(chain.certs[0], x509.NameConstraints) is not None


def _empty_name_constraints(chain: Chain) -> bool:
    for cert in chain.certs:
        ext = _extension(cert, x509.NameConstraints)
        if ext is not None and not (ext.value.permitted_subtrees or ext.value.excluded_subtrees):
            return True
    return False


def _leading_dot_dns_constraint(chain: Chain) -> bool:
    """A DNS subtree written `.example.com` (subdomains only): OpenSSL and webpki take it."""
    return any(
        isinstance(b, x509.DNSName) and b.value.startswith(".")
        for cert in chain.certs
        if (ext := _extension(cert, x509.NameConstraints)) is not None
        for b in _all_subtrees(ext.value)
    )


def _leaf_is_ca(chain: Chain) -> bool:
    return _is_ca(chain.certs[0])


def _leaf_not_for_servers(chain: Chain) -> bool:
    usage = _extension(chain.certs[0], x509.ExtendedKeyUsage)
    return usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage.value


_Confirm = Callable[[Chain], bool]
#: pyca/cryptography's wording of CA/Browser Forum points OpenSSL (default flags) and
#: rustls/webpki do not enforce, each with what must hold on the chain for it to count.
_STRICT_ONLY_REASONS: tuple[tuple[tuple[str, ...], _Confirm], ...] = (
    (("Forbidden public key algorithm", "Forbidden signature algorithm"),
     _algorithms_clients_accept),
    (("must be an X509v3 certificate",), _only_the_anchor_is_v1),
    (("serial between 1 and 20 octets", "serial number cannot be negative"), lambda _: True),
    (("must be UtcTime",), lambda _: True),
    (("subjectAltName MUST NOT be critical", "subjectAltName MUST be critical"),
     _leaf_has_san),
    (("Certificate contains prohibited extension",), _leaf_has_name_constraints),
    (("nameConstraints must have non-empty",), _empty_name_constraints),
    (("malformed DNS name constraint: .",), _leading_dot_dns_constraint),
)  # fmt: skip
#: Reasons about the leaf's own usage, which the check fails apart (CA:TRUE, EKU).
_JUDGED_APART_REASONS: tuple[tuple[tuple[str, ...], _Confirm], ...] = (
    (("basicConstraints.cA must not be asserted in an EE",), _leaf_is_ca),
    (("required EKU not found",), _leaf_not_for_servers),
)


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
