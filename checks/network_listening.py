"""network.listening: which broker ports listen, who holds them, and what else is exposed.

Listening sockets come from the /proc/net tables (snapshot_agent.node.procfs), their owners
from /proc/PID/fd. The broker ports to expect come from the Iggy config's transport
sections, else the threshold `broker_ports`; network.firewall judges the same ports.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.checks.network import MAX_ROWS
from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.iggy_config import IggyConfig, load_iggy_config, transports
from snapshot_agent.node.processes import find_brokers, list_pids, process_name
from snapshot_agent.node.procfs import is_listening, parse_int, read_sockets

#: Time spent mapping socket inodes to processes through /proc/PID/fd.
OWNER_SCAN_BUDGET_S = 0.5

#: Default broker ports (iggy-facts.md). The Iggy config's transport sections decide which
#: ports are expected; without a usable config, the threshold `broker_ports` does.
BROKER_PORT_LABELS = {
    ("tcp", 8090): "Iggy TCP",
    ("udp", 8080): "Iggy QUIC",
    ("tcp", 3000): "Iggy HTTP",
    ("tcp", 8092): "Iggy WebSocket",
    ("tcp", 9090): "Iggy replication",  # main branch only; not in the defaults
}
DEFAULT_BROKER_PORTS = "tcp:8090,udp:8080,tcp:3000,tcp:8092"


def _is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _plural(count: int, word: str) -> str:
    """'1 socket', '3 sockets'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


# -- socket owners -------------------------------------------------------------------------


@dataclass
class ProcessScan:
    """Processes found by walking /proc: broker PIDs and owners of socket inodes."""

    broker_pids: list[int] = field(default_factory=list)
    owners: dict[int, tuple[int, str]] = field(default_factory=dict)  # inode -> (pid, comm)
    complete: bool = True  # False when the time budget ran out or fds were unreadable
    unreadable: int = 0


def scan_processes(
    ctx: Context, broker_name: str, inodes: set[int], budget_s: float = OWNER_SCAN_BUDGET_S
) -> ProcessScan:
    """Find processes named `broker_name`, then map socket inodes to (pid, comm).

    The broker's processes first (by comm or argv[0], so the broker is never missed);
    then file descriptors, broker processes first, within `budget_s`.
    """
    scan = ProcessScan()
    proc = ctx.path("/proc")
    if not proc.is_dir():
        scan.complete = False
        return scan
    pids = list_pids(ctx)
    if broker_name:
        scan.broker_pids = [b.pid for b in find_brokers(ctx, broker_name)]
    wanted = set(inodes)
    deadline = time.monotonic() + budget_s
    order = scan.broker_pids + [p for p in pids if p not in set(scan.broker_pids)]
    for pid in order:
        if not wanted:
            break
        if time.monotonic() > deadline:
            scan.complete = False
            break
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            scan.unreadable += 1
            continue
        name = ""
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                inode = parse_int(target[8:-1])
                if inode in wanted:
                    name = name or process_name(ctx, pid)
                    scan.owners[inode] = (pid, name)
                    wanted.discard(inode)
    if wanted and scan.unreadable:
        scan.complete = False
    return scan


# -- network.listening ---------------------------------------------------------------------


def parse_port_list(text: str) -> tuple[list[tuple[str, int]], list[str]]:
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


#: Labels of the transports by config section name.
TRANSPORT_LABELS = {
    "tcp": "Iggy TCP",
    "quic": "Iggy QUIC",
    "http": "Iggy HTTP",
    "websocket": "Iggy WebSocket",
}


@dataclass
class ExpectedPorts:
    """The broker ports to look for, and where that list came from."""

    ports: list[tuple[str, int]]
    labels: dict[tuple[str, int], str]
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


def expected_ports(
    iggy: IggyConfig | None, thresholds: dict[str, Any], threshold_key: str
) -> ExpectedPorts:
    """Ports from the Iggy config's transport sections; the threshold without a config.

    `iggy` None or without a path means no config was found; a config that cannot be
    parsed falls back to the threshold, with an informational finding saying so.
    """
    findings: list[Finding] = []
    if iggy is not None and iggy.path is not None and not iggy.problem:
        out = ExpectedPorts([], {}, "iggy config", str(iggy.path))
        for t in transports(iggy):
            key = (t.proto, t.port) if t.port is not None else None
            expected = t.enabled and key is not None
            out.transports.append(
                {
                    "transport": t.name,
                    "enabled": t.enabled,
                    "address": t.address,
                    "port": f"{t.proto}/{t.port}" if t.port is not None else None,
                    "expected": expected,
                }
            )
            if t.enabled and key is None:
                out.findings.append(
                    Finding(
                        Severity.INFO,
                        f"[{t.name}] address {t.address!r} in {iggy.path} has no port; "
                        "that transport is not checked",
                        f'Write the address as host:port, e.g. "0.0.0.0:8090", under [{t.name}].',
                        str(iggy.path),
                    )
                )
            if expected and key not in out.labels:
                out.ports.append(key)
                out.labels[key] = TRANSPORT_LABELS[t.name]
        return out
    if iggy is not None and iggy.path is not None:
        findings.append(
            Finding(
                Severity.INFO,
                f"Iggy config {iggy.path} could not be used ({iggy.problem}); expecting the "
                f"ports of {threshold_key} instead",
                "Fix the file, or point iggy.config_path at the right one, so the expected "
                "ports follow the broker's transports.",
                str(iggy.path),
            )
        )
    ports, bad = parse_port_list(str(thresholds["broker_ports"]))
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
    return ExpectedPorts(ports, labels, "threshold", threshold_key, findings)


@dataclass
class Listener:
    """A listening socket, with its owner when /proc/PID/fd told us."""

    proto: str
    address: str
    port: int
    pid: int | None = None
    process: str = ""

    @property
    def loopback(self) -> bool:
        """Only reachable from this node."""
        return _is_loopback(self.address)

    def describe(self) -> str:
        """'tcp 0.0.0.0:22 (sshd, pid 812)'."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        owner = f" ({self.process}, pid {self.pid})" if self.pid else ""
        return f"{self.proto} {host}:{self.port}{owner}"


@dataclass
class ListeningFacts:
    """Listening sockets, broker processes and whether owners could be mapped."""

    listeners: list[Listener] = field(default_factory=list)
    broker_pids: list[int] = field(default_factory=list)
    owners_complete: bool = True
    missing_tables: list[str] = field(default_factory=list)


def read_listening(ctx: Context, broker_name: str) -> ListeningFacts:
    """Listening TCP and unconnected UDP sockets, mapped to processes where possible."""
    sockets, missing = read_sockets(ctx, ("tcp", "tcp6", "udp", "udp6"))
    listening = [s for s in sockets if is_listening(s)]
    scan = scan_processes(ctx, broker_name, {s.inode for s in listening if s.inode})
    facts = ListeningFacts(
        broker_pids=scan.broker_pids, owners_complete=scan.complete, missing_tables=missing
    )
    seen = set()
    for s in listening:
        key = (s.proto, s.local_ip, s.local_port, s.inode)
        if key in seen:
            continue
        seen.add(key)
        pid, comm = scan.owners.get(s.inode, (None, ""))
        facts.listeners.append(Listener(s.proto, s.local_ip, s.local_port, pid, comm))
    facts.listeners.sort(key=lambda li: (li.proto, li.port, li.address))
    return facts


LISTENING_PORTS_KEY = "checks.thresholds.network.listening.broker_ports"


def judge_listening(
    facts: ListeningFacts, thresholds: dict[str, Any], ports: ExpectedPorts | None = None
) -> Result:
    """Broker ports listening when the broker runs; note non-loopback exposure.

    `ports` comes from the Iggy config when there is one (expected_ports); without
    it, the threshold `broker_ports` is used.
    """
    if len(facts.missing_tables) == 4:
        return Result.skipped("no /proc/net/tcp, tcp6, udp or udp6 to read")
    broker = str(thresholds["broker_process"])
    if ports is None:
        ports = expected_ports(None, thresholds, LISTENING_PORTS_KEY)
    expected = ports.ports
    findings: list[Finding] = list(ports.findings)
    by_port: dict[tuple[str, int], list[Listener]] = {}
    for li in facts.listeners:
        by_port.setdefault((li.proto, li.port), []).append(li)
    rows = []
    missing, loopback_only, foreign = [], [], []
    broker_pids = set(facts.broker_pids)
    for proto, port in expected:
        holders = by_port.get((proto, port), [])
        label = ports.labels.get((proto, port), "")
        name = ports.label(proto, port)
        rows.append(
            {
                "port": f"{proto}/{port}",
                "transport": label,
                "listening": bool(holders),
                "addresses": ", ".join(sorted({h.address for h in holders})),
                "process": ", ".join(sorted({f"{h.process} ({h.pid})" for h in holders if h.pid})),
            }
        )
        if not holders:
            missing.append(name)
            continue
        if all(h.loopback for h in holders):
            loopback_only.append(name)
        others = [h for h in holders if h.pid and h.pid not in broker_pids]
        if broker_pids and others:
            foreign.append((name, others))
    running = bool(broker_pids)
    listening_any = len(missing) < len(expected)
    where = (
        f"no {broker} process"
        if not running
        else f"{broker} pid " + ", ".join(str(p) for p in sorted(broker_pids))
    )
    if expected and not running and not listening_any:
        findings.append(
            Finding(
                Severity.INFO,
                f"the broker does not run here: no {broker} process and none of "
                f"{', '.join(f'{p}/{n}' for p, n in expected)} is listening",
                "Expected on nodes without the broker; if it should run here, see the "
                "iggy/process checks and `systemctl status iggy-server` or `docker ps`.",
                broker,
            )
        )
    elif missing:
        context = (
            f"while {where} runs here"
            if running
            else f"while other broker ports listen (no {broker} process visible: another PID "
            "namespace or a renamed binary?)"
        )
        if ports.source == "threshold":
            moved = (
                "Is the transport disabled (`enabled = false` under [tcp], [quic], [http] or "
                "[websocket] in the server config) or moved to another port (`address = ...`, "
                "or IGGY_<TRANSPORT>_ADDRESS in the environment)? If the transport is off on "
                f"purpose, remove the port from {ports.origin}."
            )
        else:
            moved = (
                f"The ports expected are those {ports.origin} enables; does the broker read "
                "another server config (IGGY_CONFIG_PATH), or does its environment override "
                "them (IGGY_<TRANSPORT>_ENABLED / IGGY_<TRANSPORT>_ADDRESS)?"
            )
        # Ports the broker's own config enables must listen while it runs: clients of
        # that transport are refused now. Ports from the threshold are only a guess.
        severity = Severity.WARN if ports.source == "threshold" else Severity.FAIL
        findings.append(
            Finding(
                severity,
                f"not listening: {', '.join(missing)}, {context} ({ports.describe()})",
                f"Is {broker} fully started (its log shows each server starting or a bind "
                f"error such as 'Address already in use')? {moved}",
                broker,
            )
        )
    for name, others in foreign:
        findings.append(
            Finding(
                Severity.WARN,
                f"{name} is held by {', '.join(o.describe() for o in others)}, not {broker}",
                "Another process owns the broker's port, so the broker cannot bind it: stop "
                "that process or move one of them to another port.",
                name,
            )
        )
    if loopback_only:
        findings.append(
            Finding(
                Severity.INFO,
                f"{', '.join(loopback_only)} listen on loopback only: clients on other hosts "
                "cannot connect",
                "Iggy 0.6+ binds 127.0.0.1 by default; for remote clients set e.g. "
                '`address = "0.0.0.0:8090"` under [tcp] (likewise [quic], [http], '
                "[websocket]) and restart the broker.",
                broker,
            )
        )
    broker_keys = set(expected)
    exposed = [
        li for li in facts.listeners if not li.loopback and (li.proto, li.port) not in broker_keys
    ]
    if exposed:
        shown = ", ".join(li.describe() for li in exposed[:8])
        more = f" and {len(exposed) - 8} more" if len(exposed) > 8 else ""
        findings.append(
            Finding(
                Severity.INFO,
                f"{_plural(len(exposed), 'other socket')} listening on non-loopback addresses: "
                f"{shown}{more}",
                "Each is reachable from the network unless a firewall stops it; make sure "
                "each one is meant to be (see network.firewall).",
                "/proc/net/tcp",
            )
        )
    if not facts.owners_complete:
        findings.append(
            Finding(
                Severity.INFO,
                "some sockets could not be mapped to processes (not root, or /proc/PID/fd "
                "unreadable)",
                "Run snapshot-agent as root to see which process owns each port.",
                "/proc",
            )
        )
    data = {
        "broker_ports": rows,
        "broker_ports_source": ports.source,
        "broker_ports_from": ports.origin,
        "transports": ports.transports,
        "broker_pids": sorted(broker_pids),
        "listeners": [
            {
                "proto": li.proto,
                "address": li.address,
                "port": li.port,
                "pid": li.pid,
                "process": li.process,
                "loopback": li.loopback,
            }
            for li in facts.listeners[:MAX_ROWS]
        ],
        "listener_count": len(facts.listeners),
    }
    up = [r["port"] for r in rows if r["listening"]]
    ok = (
        f"{_plural(len(facts.listeners), 'listening socket')}; broker ports "
        + (f"listening: {', '.join(up)}" if up else "not in use")
        + f" ({where}; {ports.describe()})"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="network.listening",
    category="network",
    title="Listening sockets",
    description="Which broker ports listen (and who holds them) and what else is exposed.",
    timeout_s=8,
    thresholds={"broker_ports": DEFAULT_BROKER_PORTS, "broker_process": "iggy-server"},
)
def network_listening(ctx: Context) -> Result:
    """Listening sockets from /proc/net, owners from /proc/PID/fd; ports from server.toml."""
    facts = read_listening(ctx, str(ctx.thresholds["broker_process"]))
    ports = expected_ports(load_iggy_config(ctx), ctx.thresholds, LISTENING_PORTS_KEY)
    return judge_listening(facts, ctx.thresholds, ports)
