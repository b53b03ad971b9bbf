"""Listen addresses as configs write them: "0.0.0.0:8090", "[::]:3000", "localhost:3000".

One parser for every module that reads an Iggy transport address, and one notion of
loopback (IPv4-mapped addresses included), so a port in full-width or superscript digits is never a
number and a hostname is never taken for loopback unless it is `localhost`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_PORT = re.compile(r"[0-9]{1,5}")
#: Wildcard listen hosts and the loopback address a local client reaches them on.
LOOPBACK_FOR_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class ListenAddress:
    """A parsed host:port; `port` None when absent or not a usable port number."""

    host: str  # without brackets; "" when the address was ":8090"
    port: int | None


def parse_port(text: str) -> int | None:
    """A TCP/UDP port written in ASCII digits, 1-65535; None otherwise."""
    text = text.strip()
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def parse_listen_address(text: str) -> ListenAddress:
    """'[::]:3000' -> ('::', 3000); '0.0.0.0:8090'; 'localhost' -> ('localhost', None)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return ListenAddress(host, parse_port(rest[1:]) if rest.startswith(":") else None)
    if text.count(":") > 1:  # a bare IPv6 address, no port
        return ListenAddress(text, None)
    host, sep, port = text.partition(":")
    return ListenAddress(host, parse_port(port) if sep else None)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8, ::1 and IPv4-mapped loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # another hostname: it may resolve to anything
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def local_target(host: str) -> str:
    """Where a local client reaches a listener bound to `host` (wildcards -> loopback)."""
    return LOOPBACK_FOR_ANY.get(host, host)
