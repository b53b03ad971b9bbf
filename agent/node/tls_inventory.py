"""Which certificate files and TLS listeners the node's configs name, and what the files hold."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from snapshot_agent.core.context import Context
from snapshot_agent.node.addresses import local_target, parse_listen_address
from snapshot_agent.node.certificates import (
    CertFacts,
    KeyFacts,
    NotACertificate,
    NotAKey,
    describe,
    has_private_key_block,
    load_certificates,
    load_private_key,
)
from snapshot_agent.node.iggy_config import TlsMaterial, locate
from snapshot_agent.node.iggy_install import discover as discover_iggy

MAX_PEM_BYTES = 1024 * 1024
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora
    "/etc/ssl/cert.pem",  # Alpine, others
)

T = TypeVar("T")


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


@dataclass(frozen=True)
class Throwaway:
    """A transport whose broker makes its own self-signed certificate instead of a file's."""

    material: TlsMaterial
    origin: str
    cert: str | None  # the configured cert_file (resolved), when there is one


@dataclass
class Discovery:
    """Everything TLS-related the node's configs name, and what could not be used."""

    sources: list[CertSource] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    iggy_path: Path | None = None
    iggy_problem: str = ""  # the Iggy config was found but could not be read
    throwaway: list[Throwaway] = field(default_factory=list)
    unmatched_paths: list[str] = field(default_factory=list)  # globs matching no file
    bad_endpoints: list[str] = field(default_factory=list)  # configured, not host:port


def discover(ctx: Context) -> Discovery:
    """Certificates and listeners from the Iggy config, the agent's API and our config."""
    found = Discovery()
    _from_iggy_config(ctx, found)
    _from_agent_api(ctx, found)
    _from_configured_paths(ctx, found)
    _from_configured_endpoints(ctx, found)
    found.sources = _dedupe(found.sources, lambda s: s.path)
    found.endpoints = _dedupe(found.endpoints, lambda e: (e.host, e.port))
    return found


def _from_iggy_config(ctx: Context, found: Discovery) -> None:
    """The files and listeners of every Iggy transport that has TLS on."""
    install = discover_iggy(ctx, directories=False)
    iggy = install.config
    found.iggy_path, found.iggy_problem = iggy.path, iggy.problem
    cwd = install.broker.cwd if install.broker else ""
    for material in iggy.tls_material():
        if not material.enabled:
            continue  # TLS off on this transport: its files are not used
        origin = f"iggy [{material.transport}] TLS"
        cert = locate(ctx, iggy.path, material.cert_file, cwd) if material.cert_file else None
        key = locate(ctx, iggy.path, material.key_file, cwd) if material.key_file else None
        if _serves_throwaway(ctx, material, cert):
            found.throwaway.append(Throwaway(material, origin, cert))
            cert = None
        elif cert:
            found.sources.append(CertSource(cert, origin, key))
        if material.address and material.transport != "quic":
            endpoint = _loopback_endpoint(material.address, origin, cert)
            if endpoint:
                found.endpoints.append(endpoint)


def _serves_throwaway(ctx: Context, material: TlsMaterial, cert: str | None) -> bool:
    """The broker ignores the files, or makes a certificate because cert_file is absent."""
    return material.files_ignored or (
        material.self_signed and (cert is None or not ctx.path(cert).exists())
    )


def _from_agent_api(ctx: Context, found: Discovery) -> None:
    """The agent's own API certificate and client CA."""
    tls = ctx.config.api.tls
    if tls.cert:
        found.sources.append(CertSource(tls.cert, "snapshot-agent API", tls.key))
    if tls.client_ca:
        found.sources.append(CertSource(tls.client_ca, "snapshot-agent API client CA"))


def _from_configured_paths(ctx: Context, found: Discovery) -> None:
    """The files checks.certificates.paths names (globs)."""
    for pattern in ctx.config.checks.certificates.paths:
        matches = ctx.glob(pattern)
        if not matches:
            found.unmatched_paths.append(pattern)
        for path in matches:
            found.sources.append(CertSource(path, "checks.certificates.paths"))


def _from_configured_endpoints(ctx: Context, found: Discovery) -> None:
    """The listeners checks.certificates.endpoints names."""
    for text in ctx.config.checks.certificates.endpoints:
        endpoint = parse_endpoint(text, "checks.certificates.endpoints")
        if endpoint is None:
            found.bad_endpoints.append(text)
        else:
            found.endpoints.append(endpoint)


def parse_endpoint(text: str, origin: str, cert: str | None = None) -> Endpoint | None:
    """'host:port' or '[v6]:port' as an Endpoint; None when it is not that."""
    address = parse_listen_address(text)
    if address.port is None or not address.host:
        return None
    return Endpoint(address.host, address.port, origin, cert)


def _loopback_endpoint(address: str, origin: str, cert: str | None) -> Endpoint | None:
    """A listen address as a loopback target: 0.0.0.0 and :: are reached on loopback."""
    endpoint = parse_endpoint(address, origin, cert)
    if endpoint is None:
        return None
    return Endpoint(local_target(endpoint.host), endpoint.port, origin, cert)


def _dedupe(items: list[T], key: Callable[[T], Hashable]) -> list[T]:
    seen: set = set()
    out = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


def node_names(ctx: Context) -> list[str]:
    """Names clients use for this node: hostname, /etc/hostname, node.name, configured names."""
    names = [socket.gethostname(), (ctx.read_optional("/etc/hostname") or "").strip()]
    names.append(ctx.config.node.name or "")
    names += ctx.config.checks.certificates.names  # service or load-balancer names
    return [n for n in dict.fromkeys(names) if n]


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
    """The bytes and permission bits of a regular file no larger than `limit`."""
    with ctx.path(node_path).open("rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file: {node_path}")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit // 1024} KiB; not a certificate file?")
    return data, stat.S_IMODE(mode)


def _reason(exc: Exception) -> str:
    """An OS error's plain reason, else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
