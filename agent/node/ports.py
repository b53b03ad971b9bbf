"""Which ports the broker uses, and where that list came from.

One answer for network.listening, network.firewall and sysctl.network: the Iggy
config's transport sections ([tcp], [quic], [http], [websocket]) when there is a usable
config, else the check's `broker_ports` threshold ("tcp:8090,udp:8080,..."), together
with the findings about entries that could not be used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Severity
from snapshot_agent.node.iggy_config import IggyConfig, Transport, transports
from snapshot_agent.node.iggy_install import discover
from snapshot_agent.node.procfs import parse_int

#: A broker port: (protocol, number), e.g. ("tcp", 8090); QUIC is ("udp", 8080).
PortKey = tuple[str, int]

#: Default broker ports (iggy-facts.md), as the `broker_ports` thresholds write them.
DEFAULT_BROKER_PORTS = "tcp:8090,udp:8080,tcp:3000,tcp:8092"

#: Labels of the well-known ports, for ports that come from a threshold.
BROKER_PORT_LABELS = {
    ("tcp", 8090): "Iggy TCP",
    ("udp", 8080): "Iggy QUIC",
    ("tcp", 3000): "Iggy HTTP",
    ("tcp", 8092): "Iggy WebSocket",
    ("tcp", 9090): "Iggy replication",  # main branch only; not in the defaults
}

#: Labels of the transports by config section name.
TRANSPORT_LABELS = {
    "tcp": "Iggy TCP",
    "quic": "Iggy QUIC",
    "http": "Iggy HTTP",
    "websocket": "Iggy WebSocket",
}


def parse_port_list(text: str) -> tuple[list[PortKey], list[str]]:
    """'tcp:8090,udp:8080' -> [(proto, port)] and the entries that made no sense."""
    ports, bad = [], []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        proto, _, port = entry.lower().partition(":")
        number = parse_int(port)
        if proto in ("tcp", "udp") and number is not None and 0 < number < 65536:
            ports.append((proto, number))
        else:
            bad.append(entry)
    return ports, bad


def threshold_key(check_id: str) -> str:
    """Where a check's `broker_ports` threshold lives in the agent config."""
    return f"checks.thresholds.{check_id}.broker_ports"


@dataclass
class BrokerPorts:
    """The broker's ports, and where that list came from."""

    ports: list[PortKey]
    labels: dict[PortKey, str]
    source: str  # "iggy config" | "threshold"
    origin: str  # the config's node path, or the threshold's key
    findings: list[Finding] = field(default_factory=list)  # fallbacks and odd entries
    transports: list[dict[str, Any]] = field(default_factory=list)  # per config section

    def describe(self) -> str:
        """'ports from /etc/iggy/server.toml' for summaries."""
        return f"ports from {self.origin}"

    def label(self, proto: str, port: int) -> str:
        """'tcp/8090 (Iggy TCP)'."""
        text = self.labels.get((proto, port), "")
        return f"{proto}/{port}" + (f" ({text})" if text else "")

    def numbers(self) -> list[int]:
        """The port numbers, each once, in order (tcp/8080 and udp/8080 are one number)."""
        return list(dict.fromkeys(port for _, port in self.ports))


def broker_ports(
    iggy: IggyConfig | None, thresholds: dict[str, Any], threshold_key: str
) -> BrokerPorts:
    """Ports from the Iggy config's transport sections; the threshold without a config.

    `iggy` None or without a path means no config was found; a config that cannot be
    parsed falls back to the threshold, with an informational finding saying so.
    """
    if iggy is not None and iggy.path is not None and not iggy.problem:
        return _from_config(iggy, iggy.path)
    findings: list[Finding] = []
    if iggy is not None and iggy.path is not None:
        findings.append(_config_unusable(iggy, threshold_key))
    return _from_threshold(str(thresholds["broker_ports"]), threshold_key, findings)


def read_broker_ports(ctx: Context, threshold_key: str) -> BrokerPorts:
    """The broker's ports: its config (IGGY_* overrides applied), else the threshold."""
    return broker_ports(discover(ctx, directories=False).config, ctx.thresholds, threshold_key)


def _from_config(iggy: IggyConfig, path: Path) -> BrokerPorts:
    """The ports of the transports the config enables, each once."""
    out = BrokerPorts([], {}, "iggy config", str(path))
    for t in transports(iggy):
        out.transports.append(_transport_row(t))
        if t.enabled and t.port is None:
            out.findings.append(_address_without_port(t, path))
        key = (t.proto, t.port) if t.port is not None else None
        if t.enabled and key is not None and key not in out.labels:
            out.ports.append(key)
            out.labels[key] = TRANSPORT_LABELS[t.name]
    return out


def _transport_row(t: Transport) -> dict[str, Any]:
    """One config section as data: on or off, its address, and whether its port counts."""
    return {
        "transport": t.name,
        "enabled": t.enabled,
        "address": t.address,
        "port": f"{t.proto}/{t.port}" if t.port is not None else None,
        "expected": t.enabled and t.port is not None,
    }


def _address_without_port(t: Transport, path: Path) -> Finding:
    """An enabled transport whose address names no usable port is left out, and said so."""
    return Finding(
        Severity.INFO,
        f"[{t.name}] address {t.address!r} in {path} has no port; that transport is not checked",
        f'Write the address as host:port, e.g. "0.0.0.0:8090", under [{t.name}].',
        str(path),
    )


def _config_unusable(iggy: IggyConfig, threshold_key: str) -> Finding:
    """A config that exists but cannot be parsed: the threshold stands in, and that is said."""
    return Finding(
        Severity.INFO,
        f"Iggy config {iggy.path} could not be used ({iggy.problem}); expecting the "
        f"ports of {threshold_key} instead",
        "Fix the file, or point iggy.config_path at the right one, so the expected "
        "ports follow the broker's transports.",
        str(iggy.path),
    )


def _from_threshold(text: str, threshold_key: str, findings: list[Finding]) -> BrokerPorts:
    """The threshold's proto:port entries; entries that are not that warn."""
    ports, bad = parse_port_list(text)
    if bad:
        findings.append(
            Finding(
                Severity.WARN,
                f"threshold broker_ports has entries that are not proto:port: {', '.join(bad)}",
                f'Set {threshold_key} to e.g. "{DEFAULT_BROKER_PORTS}".',
                threshold_key,
            )
        )
    labels = {k: BROKER_PORT_LABELS[k] for k in ports if k in BROKER_PORT_LABELS}
    return BrokerPorts(ports, labels, "threshold", threshold_key, findings)
