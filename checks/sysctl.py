"""Kernel parameter (sysctl) checks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity, Status
from snapshot_agent.node.ports import (
    DEFAULT_BROKER_PORTS,
    BrokerPorts,
    broker_ports,
    read_broker_ports,
    threshold_key,
)
from snapshot_agent.node.processes import find_brokers
from snapshot_agent.node.procfs import SwapDevice, parse_meminfo, parse_snmp, parse_swaps

MAX_KEYS = 20000
VALUE_LIMIT = 4096


@dataclass
class SysctlDump:
    """Every readable key under /proc/sys."""

    values: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> reason
    write_only: int = 0
    capped: bool = False


def read_sysctls(ctx: Context) -> SysctlDump:
    """Walk /proc/sys; keys are dotted like `sysctl -a` prints them."""
    root = ctx.path("/proc/sys")
    dump = SysctlDump()
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, root).replace("/", ".")
            if len(dump.values) >= MAX_KEYS:
                dump.capped = True
                return dump
            try:
                if not os.stat(path).st_mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
                    dump.write_only += 1
                    continue
                with open(path, "rb") as fh:
                    raw = fh.read(VALUE_LIMIT)
            except OSError as exc:
                dump.unreadable[key] = exc.strerror or str(exc)
                continue
            dump.values[key] = " ".join(raw.decode("utf-8", "replace").split())
    return dump


@check(
    id="sysctl.all",
    category="sysctl",
    title="All kernel parameters",
    description="Every readable key under /proc/sys, as data and as a `sysctl -a` style file.",
    requires=Requirements(paths=("/proc/sys",)),
    timeout_s=10,
)
def sysctl_all(ctx: Context) -> Result:
    """Dump /proc/sys; judging specific keys is the job of the sysctl.* checks."""
    dump = read_sysctls(ctx)
    ctx.artifact("sysctl.txt", "".join(f"{k} = {v}\n" for k, v in dump.values.items()))
    summary = f"{len(dump.values)} kernel parameters read"
    if dump.unreadable:
        summary += f", {len(dump.unreadable)} unreadable (not root?)"
    if dump.capped:
        summary += f", stopped at {MAX_KEYS} keys"
    return Result(
        Status.PASS,
        summary,
        data={
            "count": len(dump.values),
            "unreadable": dump.unreadable,
            "write_only": dump.write_only,
            "values": dump.values,
        },
    )


# --------------------------------------------------------------------------------------
# Judged parameters: sysctl.network, sysctl.vm, sysctl.fs
# --------------------------------------------------------------------------------------

MAPS_READ_LIMIT = 64 * 1024 * 1024


def sysctl_path(key: str) -> str:
    """The /proc/sys file of a dotted key (net.core.somaxconn -> /proc/sys/net/core/somaxconn)."""
    return "/proc/sys/" + key.replace(".", "/")


def read_keys(ctx: Context, keys: Iterable[str]) -> dict[str, str | None]:
    """Each key's value with whitespace collapsed, None when the key is absent or unreadable."""
    out: dict[str, str | None] = {}
    for key in keys:
        raw = ctx.read_optional(sysctl_path(key), VALUE_LIMIT)
        out[key] = " ".join(raw.split()) if raw is not None else None
    return out


def as_ints(value: str | None) -> list[int] | None:
    """'4096 131072 6291456' -> [4096, 131072, 6291456]; None for absent or garbage."""
    if not value:
        return None
    try:
        return [int(part) for part in value.split()]
    except ValueError:
        return None


def as_int(value: str | None) -> int | None:
    """The first integer of a value, None for absent or garbage."""
    ints = as_ints(value)
    return ints[0] if ints else None


def human_bytes(n: float) -> str:
    """1073741824 -> '1 GiB', 212992 -> '208 KiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def softnet_dropped(text: str) -> int:
    """Packets dropped because a CPU's backlog was full (column 2 of /proc/net/softnet_stat)."""
    total = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 2:
            try:
                total += int(cols[1], 16)
            except ValueError:
                continue
    return total


def parse_reserved_ports(text: str | None) -> list[tuple[int, int]]:
    """net.ipv4.ip_local_reserved_ports '8090,3000-3010' -> [(8090, 8090), (3000, 3010)]."""
    ranges: list[tuple[int, int]] = []
    for part in (text or "").replace(" ", ",").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            ranges.append((int(lo), int(hi or lo)))
    return ranges


# ------------------------------------------------------------------ sysctl.network

NETWORK_KEYS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.netdev_max_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_tw_reuse",
)


@dataclass
class NetworkFacts:
    """Network sysctls and the kernel counters that show whether they are too small."""

    values: dict[str, str | None]
    counters: dict[str, int] = field(default_factory=dict)  # absent when unreadable


def network_counters(netstat: str, snmp: str, softnet: str | None) -> dict[str, int]:
    """The pressure counters (since boot) the network judgements rely on."""
    tcpext = parse_snmp(netstat).get("TcpExt", {})
    udp = parse_snmp(snmp).get("Udp", {})
    out: dict[str, int] = {}
    for name in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "PruneCalled", "RcvPruned"):
        if name in tcpext:
            out[name] = tcpext[name]
    for name in ("RcvbufErrors", "SndbufErrors"):
        if name in udp:
            out["Udp" + name] = udp[name]
    if softnet is not None:
        out["SoftnetDropped"] = softnet_dropped(softnet)
    return out


def read_network(ctx: Context) -> NetworkFacts:
    """Read the network keys and /proc/net counters through the context."""
    return NetworkFacts(
        read_keys(ctx, NETWORK_KEYS),
        network_counters(
            ctx.read_optional("/proc/net/netstat") or "",
            ctx.read_optional("/proc/net/snmp") or "",
            ctx.read_optional("/proc/net/softnet_stat"),
        ),
    )


#: Listen queue overflows and drops since boot (behind the listen backlog limits).
LISTEN_DROPS = Band("listen_drops", warn=100)
#: UDP receive and send buffer errors since boot (behind rmem_max / wmem_max).
UDP_DROPS = Band("udp_drops", warn=100)
#: TCP receive queue prunes since boot (behind tcp_rmem).
TCP_PRUNE = Band("tcp_prune", warn=100)
#: Packets dropped from a full per-CPU backlog since boot (behind netdev_max_backlog).
SOFTNET_DROPS = Band("softnet_drops", warn=100)

NETWORK_PORTS_KEY = threshold_key("sysctl.network")


class Pressure(NamedTuple):
    """The kernel's drop counters behind one limit: their sum, as text, and whether it counts."""

    total: int | None
    evidence: str
    measured: bool


NO_SEND_BUFFER_COUNTER = Pressure(None, "no counter for send buffers", False)


def _pressure(
    facts: NetworkFacts, names: Sequence[str], band: Band, thresholds: dict[str, Any]
) -> Pressure:
    """Sum of counters, their description, and whether the sum reaches the band."""
    present = [n for n in names if n in facts.counters]
    if not present:
        return Pressure(None, "counters not readable", False)
    total = sum(facts.counters[n] for n in present)
    text = " + ".join(f"{n} {facts.counters[n]}" for n in present) + " since boot"
    return Pressure(total, text, band.grade(total, thresholds) is not None)


def _below(
    facts: NetworkFacts,
    key: str,
    current: int | None,
    want: int,
    reason: str,
    pressure: Pressure,
    fix_value: int | str | None = None,
) -> list[Finding]:
    """The finding for one 'raise only when measured' minimum."""
    if current is None:
        return []
    subject = sysctl_path(key)
    fix = sysctl_fix(key, fix_value if fix_value is not None else want)
    if current < want and pressure.measured:
        return [
            Finding(
                Severity.WARN,
                f"{key} = {facts.values[key]} is below {want} and the kernel counted "
                f"pressure ({pressure.evidence})",
                f"{reason} Raise it: {fix}",
                subject,
            )
        ]
    if current < want:
        return [
            Finding(
                Severity.INFO,
                f"{key} = {facts.values[key]} is below the {want} suggested for a busy broker; "
                f"no pressure measured ({pressure.evidence}), so leave it unless that changes",
                f"{reason} If needed: {fix}",
                subject,
            )
        ]
    if pressure.measured:
        return [
            Finding(
                Severity.INFO,
                f"{key} = {facts.values[key]} is already >= {want}, yet the kernel counted "
                f"pressure ({pressure.evidence}): look at the application or CPU side",
                reason,
                subject,
            )
        ]
    return []


def _listen_backlogs(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """somaxconn and tcp_max_syn_backlog, judged with the listen drop counters."""
    v = facts.values
    return [
        *_below(
            facts,
            "net.core.somaxconn",
            as_int(v["net.core.somaxconn"]),
            int(t["min_somaxconn"]),
            "somaxconn caps every listen() backlog; when a broker restarts, all producers and "
            "consumers reconnect at once and connections beyond the backlog are dropped and "
            "retried (seconds of delay).",
            _pressure(facts, ("ListenOverflows", "ListenDrops"), LISTEN_DROPS, t),
        ),
        *_below(
            facts,
            "net.ipv4.tcp_max_syn_backlog",
            as_int(v["net.ipv4.tcp_max_syn_backlog"]),
            int(t["min_tcp_max_syn_backlog"]),
            "It bounds half-open connections waiting for the handshake to finish; a reconnect "
            "storm overflows it first.",
            _pressure(facts, ("TCPReqQFullDrop", "ListenDrops"), LISTEN_DROPS, t),
        ),
    ]


def _socket_buffer_ceilings(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """rmem_max and wmem_max, judged with the UDP buffer error counters."""
    udp = _pressure(facts, ("UdpRcvbufErrors", "UdpSndbufErrors"), UDP_DROPS, t)
    findings = []
    for key, tkey in (("net.core.rmem_max", "min_rmem_max"), ("net.core.wmem_max", "min_wmem_max")):
        findings += _below(
            facts,
            key,
            as_int(facts.values[key]),
            int(t[tkey]),
            "It caps buffers set with SO_RCVBUF/SO_SNDBUF; Iggy's QUIC transport (UDP 8080) and "
            "any explicit socket buffer size are limited by it, and UDP datagrams are dropped "
            "when a socket buffer is full.",
            udp,
        )
    return findings


def _tcp_autotuning_ceilings(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """The third value of tcp_rmem / tcp_wmem, judged with the receive prune counters."""
    prune = _pressure(facts, ("PruneCalled", "RcvPruned"), TCP_PRUNE, t)
    findings = []
    for key, tkey in (
        ("net.ipv4.tcp_rmem", "min_tcp_rmem_max"),
        ("net.ipv4.tcp_wmem", "min_tcp_wmem_max"),
    ):
        ints = as_ints(facts.values[key])
        if not ints or len(ints) != 3:
            continue
        want = int(t[tkey])
        findings += _below(
            facts,
            key,
            ints[2],
            want,
            "Its third value is the most TCP autotuning gives one connection; a consumer "
            "far away (bandwidth x round-trip time above it) is window-limited.",
            prune if key.endswith("rmem") else NO_SEND_BUFFER_COUNTER,
            fix_value=f"{ints[0]} {ints[1]} {want}",
        )
    return findings


def _netdev_backlog(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """netdev_max_backlog, judged with the softnet drop counter."""
    return _below(
        facts,
        "net.core.netdev_max_backlog",
        as_int(facts.values["net.core.netdev_max_backlog"]),
        int(t["min_netdev_max_backlog"]),
        "Packets wait in a per-CPU backlog before the network stack processes them; when it is "
        "full they are dropped (softnet_stat column 2).",
        _pressure(facts, ("SoftnetDropped",), SOFTNET_DROPS, t),
    )


def _ephemeral_range(facts: NetworkFacts) -> tuple[int, int] | None:
    """net.ipv4.ip_local_port_range as (low, high); None when unreadable."""
    ports = as_ints(facts.values["net.ipv4.ip_local_port_range"])
    return (ports[0], ports[1]) if ports and len(ports) == 2 else None


def _broker_ports_in_ephemeral_range(facts: NetworkFacts, ports: BrokerPorts) -> list[Finding]:
    """Broker ports an outgoing connection may take: the broker then cannot bind them."""
    span = _ephemeral_range(facts)
    if span is None:
        return []
    lo, hi = span
    reserved = parse_reserved_ports(facts.values["net.ipv4.ip_local_reserved_ports"])
    clash = [
        p
        for p in ports.numbers()
        if lo <= p <= hi and not any(ra <= p <= rb for ra, rb in reserved)
    ]
    if not clash:
        return []
    listed = ",".join(map(str, clash))
    return [
        Finding(
            Severity.WARN,
            f"broker port(s) {listed} ({ports.describe()}) lie inside the ephemeral range "
            f"{lo}-{hi} and are not reserved: an outgoing connection can take one, and the "
            "broker then fails to bind it on restart (address already in use)",
            f"Reserve them: {sysctl_fix('net.ipv4.ip_local_reserved_ports', listed)} "
            "Or move the ephemeral range above the broker's ports.",
            sysctl_path("net.ipv4.ip_local_port_range"),
        )
    ]


def _few_ephemeral_ports(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """A narrow ephemeral range limits outgoing connections from this node (informational)."""
    span = _ephemeral_range(facts)
    if span is None or span[1] - span[0] + 1 >= int(t["min_local_ports"]):
        return []
    lo, hi = span
    return [
        Finding(
            Severity.INFO,
            f"net.ipv4.ip_local_port_range {lo}-{hi} gives only {hi - lo + 1} ephemeral ports "
            "for outgoing connections from this node (connectors, replication, clients "
            "running here)",
            "Widen it only if connects fail with 'Cannot assign requested address': "
            + sysctl_fix("net.ipv4.ip_local_port_range", "10240 65535"),
            sysctl_path("net.ipv4.ip_local_port_range"),
        )
    ]


def _slow_keepalive(facts: NetworkFacts, t: dict[str, Any]) -> list[Finding]:
    """TCP keepalive that notices a vanished peer only after a long time (informational)."""
    ka_time, ka_intvl, ka_probes = (
        as_int(facts.values[f"net.ipv4.tcp_keepalive_{k}"]) for k in ("time", "intvl", "probes")
    )
    if ka_time is None or ka_intvl is None or ka_probes is None:
        return []
    if ka_time <= int(t["max_keepalive_time"]):
        return []
    detect = ka_time + ka_intvl * ka_probes
    return [
        Finding(
            Severity.INFO,
            f"TCP keepalive notices a silently vanished peer only after {detect} s "
            f"(time {ka_time} + intvl {ka_intvl} x probes {ka_probes})",
            "This matters only for sockets that enable SO_KEEPALIVE (broker or client side); "
            "a client behind a NAT or firewall that drops the connection keeps its server "
            "state until then. If that hurts, "
            + sysctl_fix("net.ipv4.tcp_keepalive_time", int(t["max_keepalive_time"])),
            sysctl_path("net.ipv4.tcp_keepalive_time"),
        )
    ]


def judge_network(
    facts: NetworkFacts, thresholds: dict[str, Any], ports: BrokerPorts | None = None
) -> Result:
    """Network limits for a streaming broker; raised only where drops show the need.

    `ports` are the broker's (read_broker_ports: its server.toml, else the threshold
    `broker_ports`); without them, the threshold is used.
    """
    if ports is None:
        ports = broker_ports(None, thresholds, NETWORK_PORTS_KEY)
    findings = [
        *ports.findings,
        *_listen_backlogs(facts, thresholds),
        *_socket_buffer_ceilings(facts, thresholds),
        *_tcp_autotuning_ceilings(facts, thresholds),
        *_netdev_backlog(facts, thresholds),
        *_broker_ports_in_ephemeral_range(facts, ports),
        *_few_ephemeral_ports(facts, thresholds),
        *_slow_keepalive(facts, thresholds),
    ]
    v = facts.values
    table = [{"key": k, "value": val if val is not None else "(absent)"} for k, val in v.items()]
    data = {
        "values": table,
        "counters_since_boot": facts.counters,
        "broker_ports": [f"{proto}/{port}" for proto, port in ports.ports],
        "broker_ports_source": ports.source,
        "broker_ports_from": ports.origin,
    }
    listen = _pressure(facts, ("ListenOverflows", "ListenDrops"), LISTEN_DROPS, thresholds)
    udp = _pressure(facts, ("UdpRcvbufErrors", "UdpSndbufErrors"), UDP_DROPS, thresholds)
    ok = (
        f"somaxconn {v['net.core.somaxconn']}, rmem_max {v['net.core.rmem_max']}, "
        f"port range {v['net.ipv4.ip_local_port_range']}; "
        f"listen drops {listen.total if listen.total is not None else '?'}, "
        f"UDP buffer errors {udp.total if udp.total is not None else '?'}"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="sysctl.network",
    category="sysctl",
    title="Network kernel parameters",
    description="Listen backlogs, socket buffer ceilings, ephemeral ports and keepalive, "
    "judged with the kernel's drop counters.",
    requires=Requirements(paths=("/proc/sys/net",)),
    timeout_s=5,
    thresholds={
        "min_somaxconn": 4096,
        "min_tcp_max_syn_backlog": 4096,
        "min_rmem_max": 4194304,
        "min_wmem_max": 4194304,
        "min_tcp_rmem_max": 4194304,
        "min_tcp_wmem_max": 4194304,
        "min_netdev_max_backlog": 1000,
        "min_local_ports": 16384,
        "broker_ports": DEFAULT_BROKER_PORTS,
        "max_keepalive_time": 600,
    },
    bands=(LISTEN_DROPS, UDP_DROPS, TCP_PRUNE, SOFTNET_DROPS),
)
def sysctl_network(ctx: Context) -> Result:
    """Network sysctls against a streaming broker's needs; broker ports from server.toml."""
    ports = read_broker_ports(ctx, NETWORK_PORTS_KEY)
    return judge_network(read_network(ctx), ctx.thresholds, ports)


# ------------------------------------------------------------------ sysctl.vm

VM_KEYS = (
    "vm.swappiness",
    "vm.dirty_ratio",
    "vm.dirty_background_ratio",
    "vm.dirty_bytes",
    "vm.dirty_background_bytes",
    "vm.max_map_count",
    "vm.overcommit_memory",
    "vm.overcommit_ratio",
    "vm.zone_reclaim_mode",  # reported as data; memory.numa judges it
)


@dataclass
class VmFacts:
    """VM sysctls, memory figures and the broker's memory-map counts."""

    values: dict[str, str | None]
    meminfo: dict[str, int] = field(default_factory=dict)
    swaps: list[SwapDevice] = field(default_factory=list)
    broker_maps: dict[int, int] = field(default_factory=dict)  # pid -> mappings


def count_lines(ctx: Context, node_path: str, limit: int = MAPS_READ_LIMIT) -> int | None:
    """Newlines in a node file, streamed (a big process's maps is megabytes)."""
    count, read = 0, 0
    try:
        with ctx.path(node_path).open("rb") as fh:
            while read < limit and (chunk := fh.read(1024 * 1024)):
                count += chunk.count(b"\n")
                read += len(chunk)
    except OSError:
        return None
    return count


def read_vm(ctx: Context) -> VmFacts:
    """Read the vm.* keys, /proc/meminfo, /proc/swaps and the broker's map count."""
    facts = VmFacts(
        read_keys(ctx, VM_KEYS),
        parse_meminfo(ctx.read_optional("/proc/meminfo") or ""),
        parse_swaps(ctx.read_optional("/proc/swaps") or ""),
    )
    for broker in find_brokers(ctx):
        maps = count_lines(ctx, f"/proc/{broker.pid}/maps")
        if maps is not None:
            facts.broker_maps[broker.pid] = maps
    return facts


def dirty_limits(values: dict[str, str | None], meminfo: dict[str, int]) -> tuple[int, int] | None:
    """(background, foreground) dirty limits in bytes, as the kernel derives them (about)."""
    dirtyable = (
        meminfo.get("MemFree", 0)
        + meminfo.get("Active(file)", 0)
        + meminfo.get("Inactive(file)", 0)
    ) * 1024
    out = []
    for byte_key, ratio_key in (
        ("vm.dirty_background_bytes", "vm.dirty_background_ratio"),
        ("vm.dirty_bytes", "vm.dirty_ratio"),
    ):
        nbytes, ratio = as_int(values[byte_key]), as_int(values[ratio_key])
        if nbytes:
            out.append(nbytes)
        elif ratio is not None and dirtyable:
            out.append(dirtyable * ratio // 100)
        else:
            return None
    return out[0], out[1]


#: The dirty page cache allowed before writers are throttled (vm.dirty_bytes or its ratio).
DIRTY_LIMIT = Band("dirty_limit_bytes", warn=8 * 1024**3)
#: The broker's memory mappings in % of vm.max_map_count.
MAP_USAGE_PCT = Band("map_usage_pct", warn=50, fail=90)
#: Committed memory in % of CommitLimit, under strict overcommit accounting.
COMMIT_PCT = Band("commit_pct", fail=95)


def judge_vm(facts: VmFacts, thresholds: dict[str, Any]) -> Result:
    """Swapping, writeback bursts, map count and overcommit, as they affect the broker."""
    v, mem = facts.values, facts.meminfo
    limits = dirty_limits(v, mem)
    findings = [
        *_swappiness_with_disk_swap(facts, thresholds),
        *_dirty_writeback_burst(facts, limits, thresholds),
        *_broker_map_usage(facts, thresholds),
        *_low_max_map_count(facts, thresholds),
        *_strict_overcommit(facts, thresholds),
        *_overcommit_never_refuses(facts),
    ]
    swap_text = (
        f"swap {human_bytes(sum(s.size_kib for s in facts.swaps) * 1024)}"
        if facts.swaps
        else "no swap"
    )
    ok = (
        f"swappiness {v['vm.swappiness']} ({swap_text}), dirty limit "
        f"{human_bytes(limits[1]) if limits else '?'}, max_map_count {v['vm.max_map_count']}, "
        f"overcommit {v['vm.overcommit_memory']}"
    )
    return Result.from_findings(findings, ok=ok, data=_vm_data(facts, limits))


def _swappiness_with_disk_swap(facts: VmFacts, t: dict[str, Any]) -> list[Finding]:
    """A high swappiness with disk-backed swap pages the broker's memory out (informational)."""
    swappiness = as_int(facts.values["vm.swappiness"])
    disk_swap = [s for s in facts.swaps if s.disk_backed]
    max_swappiness = int(t["max_swappiness"])
    if swappiness is None or not disk_swap or swappiness <= max_swappiness:
        return []
    used_kb = sum(s.used_kib for s in disk_swap)
    devices = ", ".join(s.name for s in disk_swap)
    swapped = f"{human_bytes(used_kb * 1024)} swapped out" if used_kb else "nothing swapped"
    # INFO only: memory.swap judges swap use and swappiness with its own thresholds.
    return [
        Finding(
            Severity.INFO,
            f"vm.swappiness = {swappiness} with disk-backed swap ({devices}), {swapped}; "
            f"{max_swappiness} is suggested (memory.swap judges swap use)",
            "With a high swappiness the kernel swaps out anonymous memory (the broker's "
            "buffers and memory pool) instead of dropping page cache; touching swapped pages "
            "costs disk reads on the hot path. " + sysctl_fix("vm.swappiness", max_swappiness),
            sysctl_path("vm.swappiness"),
        )
    ]


def _dirty_writeback_burst(
    facts: VmFacts, limits: tuple[int, int] | None, t: dict[str, Any]
) -> list[Finding]:
    """So much dirty page cache allowed that flushing it stalls writes and fsync for seconds."""
    if limits is None:
        return []
    background, foreground = limits
    severity = DIRTY_LIMIT.grade(foreground, t)
    if severity is None:
        return []
    v = facts.values
    want_bg, want_fg = int(t["dirty_background_bytes"]), int(t["dirty_bytes"])
    source = (
        "vm.dirty_bytes"
        if as_int(v["vm.dirty_bytes"])
        else (f"vm.dirty_ratio = {v['vm.dirty_ratio']}% of reclaimable memory")
    )
    return [
        Finding(
            severity,
            f"up to {human_bytes(foreground)} of dirty page cache may build up before "
            f"writers are throttled ({source}; background writeback starts at "
            f"{human_bytes(background)}): flushing that much stalls writes and fsync "
            f"for seconds",
            "Use byte limits sized from the disk's write throughput (a few seconds' "
            "worth): "
            + sysctl_fix("vm.dirty_background_bytes", want_bg)
            + " "
            + sysctl_fix(
                "vm.dirty_bytes",
                want_fg,
                "Setting the _bytes form turns the _ratio form off. Compare broker p99 "
                "latency before and after.",
            ),
            sysctl_path("vm.dirty_bytes"),
        )
    ]


def _broker_map_usage(facts: VmFacts, t: dict[str, Any]) -> list[Finding]:
    """A broker near vm.max_map_count: at the limit mmap fails and the broker aborts."""
    map_count = as_int(facts.values["vm.max_map_count"])
    if not map_count:
        return []
    findings = []
    for pid, used in sorted(facts.broker_maps.items()):
        pct = used * 100 / map_count
        severity = MAP_USAGE_PCT.grade(pct, t)
        if severity:
            findings.append(
                Finding(
                    severity,
                    f"iggy-server (pid {pid}) has {used} memory mappings, {pct:.0f}% of "
                    f"vm.max_map_count {map_count}: at the limit mmap fails and the broker "
                    "aborts on an allocation",
                    sysctl_fix("vm.max_map_count", max(int(t["min_max_map_count"]), map_count * 4)),
                    f"/proc/{pid}/maps",
                )
            )
    return findings


def _low_max_map_count(facts: VmFacts, t: dict[str, Any]) -> list[Finding]:
    """A low vm.max_map_count, when no broker's mappings are judged against it already."""
    map_count = as_int(facts.values["vm.max_map_count"])
    min_maps = int(t["min_max_map_count"])
    if not map_count or map_count >= min_maps:
        return []
    if any(MAP_USAGE_PCT.grade(used * 100 / map_count, t) for used in facts.broker_maps.values()):
        return []  # _broker_map_usage says it, with the numbers
    return [
        Finding(
            Severity.INFO,
            f"vm.max_map_count = {map_count} (below {min_maps}); every mapping a process "
            "holds (thread stacks, allocator arenas, mapped files) counts against it",
            "Raise it if the broker's mappings (`wc -l /proc/PID/maps`) approach it: "
            + sysctl_fix("vm.max_map_count", min_maps),
            sysctl_path("vm.max_map_count"),
        )
    ]


def _strict_overcommit(facts: VmFacts, t: dict[str, Any]) -> list[Finding]:
    """overcommit_memory = 2: allocations fail at CommitLimit; failing when nearly there."""
    if as_int(facts.values["vm.overcommit_memory"]) != 2:
        return []
    mem = facts.meminfo
    limit, committed = mem.get("CommitLimit"), mem.get("Committed_AS")
    pct = committed * 100 / limit if limit and committed is not None else None
    usage = (
        f"; {human_bytes(committed * 1024)} of {human_bytes(limit * 1024)} committed ({pct:.0f}%)"
        if pct is not None and limit and committed is not None
        else ""
    )
    # Strict accounting warns in itself; the commit band only raises it to FAIL.
    severity = COMMIT_PCT.grade(pct, t) or Severity.WARN
    return [
        Finding(
            severity,
            "vm.overcommit_memory = 2 (strict accounting): allocations fail with ENOMEM "
            "once committed memory reaches CommitLimit, even with RAM free" + usage,
            "Every reservation counts: the broker's memory pool ([system.memory_pool] size, "
            "default 4 GiB), thread stacks and allocator arenas, whether used or not; an "
            "allocation failure aborts the broker. Unless a policy requires 2: "
            + sysctl_fix(
                "vm.overcommit_memory", 0, "Otherwise raise vm.overcommit_ratio or add swap."
            ),
            sysctl_path("vm.overcommit_memory"),
        )
    ]


def _overcommit_never_refuses(facts: VmFacts) -> list[Finding]:
    """overcommit_memory = 1: a memory shortage ends in the OOM killer (informational)."""
    if as_int(facts.values["vm.overcommit_memory"]) != 1:
        return []
    return [
        Finding(
            Severity.INFO,
            "vm.overcommit_memory = 1: the kernel never refuses memory, so a shortage ends "
            "in the OOM killer instead of a failed allocation",
            "Keep the OOM killer away from the broker (`OOMScoreAdjust=-500`) or use the "
            "default heuristic: " + sysctl_fix("vm.overcommit_memory", 0),
            sysctl_path("vm.overcommit_memory"),
        )
    ]


def _vm_data(facts: VmFacts, limits: tuple[int, int] | None) -> dict[str, Any]:
    """The vm.* values, swap devices, dirty limits, broker mappings and commit figures."""
    mem = facts.meminfo
    return {
        "values": [
            {"key": k, "value": val if val is not None else "(absent)"}
            for k, val in facts.values.items()
        ],
        "swap": [
            {
                "name": s.name,
                "kind": s.kind,
                "size_kb": s.size_kib,
                "used_kb": s.used_kib,
                "disk_backed": s.disk_backed,
            }
            for s in facts.swaps
        ],
        "dirty_background_limit_bytes": limits[0] if limits else None,
        "dirty_limit_bytes": limits[1] if limits else None,
        "dirty_now_kb": mem.get("Dirty"),
        "writeback_now_kb": mem.get("Writeback"),
        "broker_maps": {str(k): n for k, n in facts.broker_maps.items()},
        "commit_limit_kb": mem.get("CommitLimit"),
        "committed_as_kb": mem.get("Committed_AS"),
    }


@check(
    id="sysctl.vm",
    category="sysctl",
    title="Memory kernel parameters",
    description="Swappiness, dirty-page limits, max_map_count and overcommit, judged with the "
    "node's memory and the broker's mappings.",
    requires=Requirements(paths=("/proc/sys/vm",)),
    timeout_s=5,
    thresholds={
        "max_swappiness": 10,
        "dirty_bytes": 1024**3,
        "dirty_background_bytes": 256 * 1024**2,
        "min_max_map_count": 262144,
    },
    bands=(DIRTY_LIMIT, MAP_USAGE_PCT, COMMIT_PCT),
)
def sysctl_vm(ctx: Context) -> Result:
    """VM sysctls against a streaming broker's needs."""
    return judge_vm(read_vm(ctx), ctx.thresholds)


# ------------------------------------------------------------------ sysctl.fs

FS_KEYS = ("fs.file-max", "fs.nr_open", "fs.file-nr", "fs.aio-max-nr", "fs.aio-nr")


#: Allocated file handles in % of fs.file-max.
FILE_USAGE_PCT = Band("file_usage_pct", warn=80, fail=95)
#: Linux AIO contexts in use in % of fs.aio-max-nr.
AIO_USAGE_PCT = Band("aio_usage_pct", warn=90)


def judge_fs(values: dict[str, str | None], thresholds: dict[str, Any]) -> Result:
    """File handle and AIO limits against minimums and current usage."""
    findings = [
        *_low_file_max(values, thresholds),
        *_file_table_usage(values, thresholds),
        *_low_nr_open(values, thresholds),
        *_low_aio_max_nr(values, thresholds),
        *_aio_contexts_exhausted(values, thresholds),
    ]
    table = [
        {"key": k, "value": val if val is not None else "(absent)"} for k, val in values.items()
    ]
    file_max, allocated = as_int(values["fs.file-max"]), _allocated_files(values)
    usage = f"{allocated}/{file_max}" if allocated is not None and file_max else "?"
    ok = (
        f"file-max {values['fs.file-max']} ({usage} in use), nr_open {values['fs.nr_open']}, "
        f"aio {values['fs.aio-nr']}/{values['fs.aio-max-nr']}"
    )
    return Result.from_findings(findings, ok=ok, data={"values": table})


def _allocated_files(values: dict[str, str | None]) -> int | None:
    """Allocated file handles: the first field of fs.file-nr."""
    file_nr = as_ints(values["fs.file-nr"])
    return file_nr[0] if file_nr else None


def _below_minimum(values: dict[str, str | None], key: str, want: int) -> int | None:
    """The key's value when it is below `want`; None when it is not, or is unreadable."""
    current = as_int(values[key])
    return current if current is not None and current < want else None


def _low_file_max(values: dict[str, str | None], t: dict[str, Any]) -> list[Finding]:
    """A node-wide file table smaller than one broker may need."""
    want = int(t["min_file_max"])
    file_max = _below_minimum(values, "fs.file-max", want)
    if file_max is None:
        return []
    return [
        Finding(
            Severity.WARN,
            f"fs.file-max = {file_max} is below {want}: the whole node can open "
            "only that many files and sockets",
            "The broker alone may use LimitNOFILE=65536 (connections, segment and index "
            "files); when the node-wide table is full every open() and accept() fails with "
            "ENFILE. " + sysctl_fix("fs.file-max", want),
            sysctl_path("fs.file-max"),
        )
    ]


def _file_table_usage(values: dict[str, str | None], t: dict[str, Any]) -> list[Finding]:
    """The node-wide file table filling up: open() and accept() fail with ENFILE when full."""
    file_max, allocated = as_int(values["fs.file-max"]), _allocated_files(values)
    if not file_max or allocated is None:
        return []
    pct = allocated * 100 / file_max
    severity = FILE_USAGE_PCT.grade(pct, t)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{allocated} of fs.file-max {file_max} file handles are in use ({pct:.0f}%)",
            "Find the holders (`ls /proc/*/fd | wc -l` per process, or "
            "`lsof -n | awk '{print $1}' | sort | uniq -c | sort -n | tail`); raise the "
            "ceiling with " + sysctl_fix("fs.file-max", max(int(t["min_file_max"]), file_max * 2)),
            sysctl_path("fs.file-nr"),
        )
    ]


def _low_nr_open(values: dict[str, str | None], t: dict[str, Any]) -> list[Finding]:
    """fs.nr_open caps LimitNOFILE: a unit asking for more fails to start."""
    want = int(t["min_nr_open"])
    nr_open = _below_minimum(values, "fs.nr_open", want)
    if nr_open is None:
        return []
    return [
        Finding(
            Severity.WARN,
            f"fs.nr_open = {nr_open} is below {want}: no process may have a "
            "file-descriptor limit (LimitNOFILE) above it",
            "A unit with a higher LimitNOFILE= fails to start. " + sysctl_fix("fs.nr_open", want),
            sysctl_path("fs.nr_open"),
        )
    ]


def _low_aio_max_nr(values: dict[str, str | None], t: dict[str, Any]) -> list[Finding]:
    """A low fs.aio-max-nr matters to Linux AIO users, not to Iggy (informational)."""
    want = int(t["min_aio_max_nr"])
    aio_max = _below_minimum(values, "fs.aio-max-nr", want)
    if aio_max is None:
        return []
    return [
        Finding(
            Severity.INFO,
            f"fs.aio-max-nr = {aio_max} is below {want}",
            "Iggy uses io_uring, which this limit does not cover; it matters for Linux AIO "
            "users on the same node (databases, some storage agents). "
            + sysctl_fix("fs.aio-max-nr", want),
            sysctl_path("fs.aio-max-nr"),
        )
    ]


def _aio_contexts_exhausted(values: dict[str, str | None], t: dict[str, Any]) -> list[Finding]:
    """Linux AIO contexts nearly used up: io_setup() fails with EAGAIN for other services."""
    aio_max, aio_nr = as_int(values["fs.aio-max-nr"]), as_int(values["fs.aio-nr"])
    if not aio_max or aio_nr is None:
        return []
    severity = AIO_USAGE_PCT.grade(aio_nr * 100 / aio_max, t)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"fs.aio-nr = {aio_nr} of fs.aio-max-nr {aio_max}: Linux AIO contexts are "
            "nearly exhausted, io_setup() fails with EAGAIN",
            "Iggy itself uses io_uring, but other services on the node cannot start AIO; "
            + sysctl_fix("fs.aio-max-nr", max(int(t["min_aio_max_nr"]), aio_max * 2)),
            sysctl_path("fs.aio-nr"),
        )
    ]


@check(
    id="sysctl.fs",
    category="sysctl",
    title="File handle kernel parameters",
    description="fs.file-max, fs.nr_open and fs.aio-max-nr against minimums, with current usage.",
    requires=Requirements(paths=("/proc/sys/fs",)),
    timeout_s=5,
    thresholds={"min_file_max": 131072, "min_nr_open": 65536, "min_aio_max_nr": 65536},
    bands=(FILE_USAGE_PCT, AIO_USAGE_PCT),
)
def sysctl_fs(ctx: Context) -> Result:
    """File handle and AIO limits."""
    return judge_fs(read_keys(ctx, FS_KEYS), ctx.thresholds)
