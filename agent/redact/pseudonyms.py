"""Consistent pseudonyms for IP addresses and host names (off by default).

With `redaction.pseudonymize: true`, every IP address other than loopback, unspecified
and broadcast, the node's own host names, and names under private DNS suffixes
(`.internal`, `.local`, `.lan`, `.corp`, `.home.arpa`, AWS's `ip-10-0-1-17`) become
`ip-<8 hex>` / `host-<8 hex>`: an HMAC-SHA256 keyed per snapshot, so one address has one
pseudonym throughout a snapshot (an SRE can still follow it across files) and a
different one in the next snapshot (nobody can build a dictionary of them). The key is
never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from snapshot_agent.redact.rule import Hit, Stateless

NAME = "pseudonym"

_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)"
_IPV6 = r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?:%\w{1,16})?(?![\w:])"
_PRIVATE_SUFFIXES = r"internal|local|lan|corp|home\.arpa|intranet|private"
_PRIVATE_NAME = (
    rf"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.){{1,8}}"
    rf"(?:{_PRIVATE_SUFFIXES})(?![\w-])|(?<![\w.-])ip(?:-\d{{1,3}}){{4}}(?![\w-])"
)
#: Addresses that say something about configuration, not about who the node is.
_KEEP = {"0.0.0.0", "255.255.255.255", "::", "::1"}


def _ip_kept(text: str) -> bool:
    """Whether an address-looking text stays: not an address, or loopback and the like."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return True
    return text in _KEEP or address.is_loopback or address.is_unspecified


@dataclass
class PseudonymRule(Stateless):
    """IP addresses and host names replaced by keyed, consistent pseudonyms."""

    hostnames: Sequence[str] = ()
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    name: str = NAME
    description: str = (
        "IP addresses and host names replaced by pseudonyms keyed per snapshot "
        "(redaction.pseudonymize)"
    )
    examples: tuple[str, ...] = ()  # pseudonyms are not [REDACTED:label]: see the tests
    benign: tuple[str, ...] = (
        "listening on 127.0.0.1:8090 and [::1]:8090",
        "bind 0.0.0.0:3000",
        "version 0.8.0",
    )
    hints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = sorted({h for h in self.hostnames if h and h != "localhost"}, key=len)[::-1]
        own = "|".join(re.escape(n) for n in names)
        parts = [f"(?P<ip>{_IPV4}|{_IPV6})", f"(?P<host>{_PRIVATE_NAME})"]
        if own:
            parts.append(rf"(?P<own>(?<![\w.-])(?i:{own})(?![\w-]))")
        self._pattern = re.compile("|".join(parts))

    def scan(self, line: str) -> list[Hit]:
        """Every address and host name in `line`, with its pseudonym."""
        hits = []
        for match in self._pattern.finditer(line):
            value = match.group()
            if match.lastgroup == "ip":
                if _ip_kept(value):
                    continue
                kind = "ip"
            else:
                kind = "host"
            text = f"{kind}-{self.pseudonym(value.lower())}"
            hits.append(Hit(match.start(), match.end(), f"{NAME}-{kind}", kind, text))
        return hits

    def pseudonym(self, value: str) -> str:
        """Eight hex digits standing for `value` in this snapshot."""
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:8]
