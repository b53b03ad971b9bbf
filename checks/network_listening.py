"""network.listening: which broker ports listen, who holds them, and what else is exposed.

Listening sockets come from the /proc/net tables (snapshot_agent.node.procfs), their owners
from /proc/PID/fd. The broker ports to expect come from snapshot_agent.node.ports (the Iggy
config's transport sections, else the threshold `broker_ports`); network.firewall and
sysctl.network judge the same ports.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.addresses import is_loopback
from snapshot_agent.node.ports import (
    DEFAULT_BROKER_PORTS,
    BrokerPorts,
    broker_ports,
    read_broker_ports,
    threshold_key,
)
from snapshot_agent.node.processes import find_brokers, list_pids, process_name
from snapshot_agent.node.procfs import is_listening, parse_int, read_sockets

#: Time spent mapping socket inodes to processes through /proc/PID/fd.
OWNER_SCAN_BUDGET_S = 0.5


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
        return is_loopback(self.address)

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


LISTENING_PORTS_KEY = threshold_key("network.listening")


@dataclass
class PortSurvey:
    """Who holds each broker port, as rows for the report and lists of what is wrong."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ports nobody listens on
    loopback_only: list[str] = field(default_factory=list)
    foreign: list[tuple[str, list[Listener]]] = field(default_factory=list)  # held by others
    broker_pids: set[int] = field(default_factory=set)

    @property
    def running(self) -> bool:
        """A broker process is visible."""
        return bool(self.broker_pids)

    def where(self, broker: str) -> str:
        """'iggy-server pid 4242' or 'no iggy-server process'."""
        if not self.running:
            return f"no {broker} process"
        return f"{broker} pid " + ", ".join(str(p) for p in sorted(self.broker_pids))


def survey_ports(facts: ListeningFacts, ports: BrokerPorts) -> PortSurvey:
    """Match every broker port against the listening sockets and their owners."""
    survey = PortSurvey(broker_pids=set(facts.broker_pids))
    by_port: dict[tuple[str, int], list[Listener]] = {}
    for li in facts.listeners:
        by_port.setdefault((li.proto, li.port), []).append(li)
    for proto, port in ports.ports:
        holders = by_port.get((proto, port), [])
        name = ports.label(proto, port)
        survey.rows.append(_port_row(proto, port, ports.labels.get((proto, port), ""), holders))
        if not holders:
            survey.missing.append(name)
            continue
        if all(h.loopback for h in holders):
            survey.loopback_only.append(name)
        others = [h for h in holders if h.pid and h.pid not in survey.broker_pids]
        if survey.broker_pids and others:
            survey.foreign.append((name, others))
    return survey


def _port_row(proto: str, port: int, label: str, holders: list[Listener]) -> dict[str, Any]:
    """One broker port as a data row: listening or not, on which addresses, held by whom."""
    return {
        "port": f"{proto}/{port}",
        "transport": label,
        "listening": bool(holders),
        "addresses": ", ".join(sorted({h.address for h in holders})),
        "process": ", ".join(sorted({f"{h.process} ({h.pid})" for h in holders if h.pid})),
    }


def _broker_not_here(survey: PortSurvey, ports: BrokerPorts, broker: str) -> list[Finding]:
    """No broker process and none of its ports listening: a node without the broker."""
    expected = ports.ports
    if not expected or survey.running or len(survey.missing) < len(expected):
        return []
    return [
        Finding(
            Severity.INFO,
            f"the broker does not run here: no {broker} process and none of "
            f"{', '.join(f'{p}/{n}' for p, n in expected)} is listening",
            "Expected on nodes without the broker; if it should run here, see the "
            "iggy/process checks and `systemctl status iggy-server` or `docker ps`.",
            broker,
        )
    ]


def _ports_not_listening(survey: PortSurvey, ports: BrokerPorts, broker: str) -> list[Finding]:
    """Broker ports that do not listen while the broker (or its other ports) is up.

    Ports the broker's own config enables must listen while it runs: clients of that
    transport are refused now (FAIL). Ports from the threshold are only a guess (WARN).
    """
    if not survey.missing or _broker_not_here(survey, ports, broker):
        return []
    context = (
        f"while {survey.where(broker)} runs here"
        if survey.running
        else f"while other broker ports listen (no {broker} process visible: another PID "
        "namespace or a renamed binary?)"
    )
    severity = Severity.WARN if ports.source == "threshold" else Severity.FAIL
    return [
        Finding(
            severity,
            f"not listening: {', '.join(survey.missing)}, {context} ({ports.describe()})",
            f"Is {broker} fully started (its log shows each server starting or a bind "
            f"error such as 'Address already in use')? {_moved_port_hint(ports)}",
            broker,
        )
    ]


def _moved_port_hint(ports: BrokerPorts) -> str:
    """Where a port that does not listen may have gone, by where the list came from."""
    if ports.source == "threshold":
        return (
            "Is the transport disabled (`enabled = false` under [tcp], [quic], [http] or "
            "[websocket] in the server config) or moved to another port (`address = ...`, "
            "or IGGY_<TRANSPORT>_ADDRESS in the environment)? If the transport is off on "
            f"purpose, remove the port from {ports.origin}."
        )
    return (
        f"The ports expected are those {ports.origin} enables; does the broker read "
        "another server config (IGGY_CONFIG_PATH), or does its environment override "
        "them (IGGY_<TRANSPORT>_ENABLED / IGGY_<TRANSPORT>_ADDRESS)?"
    )


def _ports_held_by_others(survey: PortSurvey, broker: str) -> list[Finding]:
    """A broker port owned by another process: the broker cannot bind it."""
    return [
        Finding(
            Severity.WARN,
            f"{name} is held by {', '.join(o.describe() for o in others)}, not {broker}",
            "Another process owns the broker's port, so the broker cannot bind it: stop "
            "that process or move one of them to another port.",
            name,
        )
        for name, others in survey.foreign
    ]


def _loopback_only(survey: PortSurvey, broker: str) -> list[Finding]:
    """Broker ports bound to loopback only: remote clients cannot connect."""
    if not survey.loopback_only:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{', '.join(survey.loopback_only)} listen on loopback only: clients on other hosts "
            "cannot connect",
            "Iggy 0.6+ binds 127.0.0.1 by default; for remote clients set e.g. "
            '`address = "0.0.0.0:8090"` under [tcp] (likewise [quic], [http], '
            "[websocket]) and restart the broker.",
            broker,
        )
    ]


def _other_exposed_sockets(facts: ListeningFacts, ports: BrokerPorts) -> list[Finding]:
    """Sockets other than the broker's reachable from the network."""
    broker_keys = set(ports.ports)
    exposed = [
        li for li in facts.listeners if not li.loopback and (li.proto, li.port) not in broker_keys
    ]
    if not exposed:
        return []
    shown = ", ".join(li.describe() for li in exposed[:8])
    more = f" and {len(exposed) - 8} more" if len(exposed) > 8 else ""
    return [
        Finding(
            Severity.INFO,
            f"{_plural(len(exposed), 'other socket')} listening on non-loopback addresses: "
            f"{shown}{more}",
            "Each is reachable from the network unless a firewall stops it; make sure "
            "each one is meant to be (see network.firewall).",
            "/proc/net/tcp",
        )
    ]


def _owners_unknown(facts: ListeningFacts) -> list[Finding]:
    """Sockets whose owning process could not be found (not root)."""
    if facts.owners_complete:
        return []
    return [
        Finding(
            Severity.INFO,
            "some sockets could not be mapped to processes (not root, or /proc/PID/fd unreadable)",
            "Run snapshot-agent as root to see which process owns each port.",
            "/proc",
        )
    ]


def _listening_data(
    facts: ListeningFacts, ports: BrokerPorts, survey: PortSurvey
) -> dict[str, Any]:
    """The broker port rows, where they came from, and the listening sockets."""
    return {
        "broker_ports": survey.rows,
        "broker_ports_source": ports.source,
        "broker_ports_from": ports.origin,
        "transports": ports.transports,
        "broker_pids": sorted(survey.broker_pids),
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


def judge_listening(
    facts: ListeningFacts, thresholds: dict[str, Any], ports: BrokerPorts | None = None
) -> Result:
    """Broker ports listening when the broker runs; note non-loopback exposure.

    `ports` comes from the Iggy config when there is one (read_broker_ports); without
    it, the threshold `broker_ports` is used.
    """
    if len(facts.missing_tables) == 4:
        return Result.skipped("no /proc/net/tcp, tcp6, udp or udp6 to read")
    broker = str(thresholds["broker_process"])
    if ports is None:
        ports = broker_ports(None, thresholds, LISTENING_PORTS_KEY)
    survey = survey_ports(facts, ports)
    findings = [
        *ports.findings,
        *_broker_not_here(survey, ports, broker),
        *_ports_not_listening(survey, ports, broker),
        *_ports_held_by_others(survey, broker),
        *_loopback_only(survey, broker),
        *_other_exposed_sockets(facts, ports),
        *_owners_unknown(facts),
    ]
    up = [r["port"] for r in survey.rows if r["listening"]]
    ok = (
        f"{_plural(len(facts.listeners), 'listening socket')}; broker ports "
        + (f"listening: {', '.join(up)}" if up else "not in use")
        + f" ({survey.where(broker)}; {ports.describe()})"
    )
    return Result.from_findings(findings, ok=ok, data=_listening_data(facts, ports, survey))


@check(
    id="network.listening",
    category="network",
    title="Listening sockets",
    description="Which broker ports listen (and who holds them) and what else is exposed.",
    timeout_s=8,
    thresholds={"broker_ports": DEFAULT_BROKER_PORTS, "broker_process": "iggy-server"},
)
def network_listening(ctx: Context) -> Result:
    """Listening sockets from /proc/net, owners from /proc/PID/fd; ports from server.toml.

    Verdicts:
    - pass: the broker on all its default ports, some on loopback only (informs)
      [test_listening_broker_on_all_ports_passes]
    - pass: the TCP transport moved to 9999 in server.toml and listening there
      [test_listening_moved_port_listening_passes]
    - pass: no broker process on the node, nothing of it listening
      [test_listening_without_broker_is_informational]
    - warn: a port from the threshold list not listening while the broker runs
      [test_listening_missing_port_warns]
    - warn: a broker port held by another process
      [test_listening_port_held_by_another_process_warns]
    - fail: a port the broker's server.toml enables not listening while it runs
      [test_listening_ports_come_from_the_iggy_config]
    """
    facts = read_listening(ctx, str(ctx.thresholds["broker_process"]))
    return judge_listening(facts, ctx.thresholds, read_broker_ports(ctx, LISTENING_PORTS_KEY))
