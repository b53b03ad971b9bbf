"""Kernel parameter (sysctl) checks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity, Status
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


def parse_port_list(text: str | None) -> list[tuple[int, int]]:
    """'8090,3000-3010' (ip_local_reserved_ports, thresholds) -> [(8090, 8090), (3000, 3010)]."""
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


def _pressure(
    facts: NetworkFacts, names: Sequence[str], limit: float
) -> tuple[int | None, str, bool]:
    """Sum of counters, their description, and whether the sum reaches `limit`."""
    present = [n for n in names if n in facts.counters]
    if not present:
        return None, "counters not readable", False
    total = sum(facts.counters[n] for n in present)
    text = " + ".join(f"{n} {facts.counters[n]}" for n in present) + " since boot"
    return total, text, total >= limit


def _below(
    findings: list[Finding],
    facts: NetworkFacts,
    key: str,
    current: int | None,
    want: int,
    reason: str,
    pressure: tuple[int | None, str, bool],
    fix_value: int | str | None = None,
) -> None:
    """Add the finding for one 'raise only when measured' minimum."""
    _, evidence, measured = pressure
    subject = sysctl_path(key)
    fix = sysctl_fix(key, fix_value if fix_value is not None else want)
    if current is None:
        return
    if current < want and measured:
        findings.append(
            Finding(
                Severity.WARN,
                f"{key} = {facts.values[key]} is below {want} and the kernel counted "
                f"pressure ({evidence})",
                f"{reason} Raise it: {fix}",
                subject,
            )
        )
    elif current < want:
        findings.append(
            Finding(
                Severity.INFO,
                f"{key} = {facts.values[key]} is below the {want} suggested for a busy broker; "
                f"no pressure measured ({evidence}), so leave it unless that changes",
                f"{reason} If needed: {fix}",
                subject,
            )
        )
    elif measured:
        findings.append(
            Finding(
                Severity.INFO,
                f"{key} = {facts.values[key]} is already >= {want}, yet the kernel counted "
                f"pressure ({evidence}): look at the application or CPU side",
                reason,
                subject,
            )
        )


def judge_network(facts: NetworkFacts, thresholds: dict[str, Any]) -> Result:
    """Network limits for a streaming broker; raised only where drops show the need."""
    v = facts.values
    t = thresholds
    findings: list[Finding] = []
    somaxconn = as_int(v["net.core.somaxconn"])
    listen = _pressure(facts, ("ListenOverflows", "ListenDrops"), float(t["warn_listen_drops"]))
    _below(
        findings,
        facts,
        "net.core.somaxconn",
        somaxconn,
        int(t["min_somaxconn"]),
        "somaxconn caps every listen() backlog; when a broker restarts, all producers and "
        "consumers reconnect at once and connections beyond the backlog are dropped and "
        "retried (seconds of delay).",
        listen,
    )
    _below(
        findings,
        facts,
        "net.ipv4.tcp_max_syn_backlog",
        as_int(v["net.ipv4.tcp_max_syn_backlog"]),
        int(t["min_tcp_max_syn_backlog"]),
        "It bounds half-open connections waiting for the handshake to finish; a reconnect "
        "storm overflows it first.",
        _pressure(facts, ("TCPReqQFullDrop", "ListenDrops"), float(t["warn_listen_drops"])),
    )
    udp = _pressure(facts, ("UdpRcvbufErrors", "UdpSndbufErrors"), float(t["warn_udp_drops"]))
    for key, tkey in (("net.core.rmem_max", "min_rmem_max"), ("net.core.wmem_max", "min_wmem_max")):
        _below(
            findings,
            facts,
            key,
            as_int(v[key]),
            int(t[tkey]),
            "It caps buffers set with SO_RCVBUF/SO_SNDBUF; Iggy's QUIC transport (UDP 8080) and "
            "any explicit socket buffer size are limited by it, and UDP datagrams are dropped "
            "when a socket buffer is full.",
            udp,
        )
    prune = _pressure(facts, ("PruneCalled", "RcvPruned"), float(t["warn_tcp_prune"]))
    for key, tkey in (
        ("net.ipv4.tcp_rmem", "min_tcp_rmem_max"),
        ("net.ipv4.tcp_wmem", "min_tcp_wmem_max"),
    ):
        ints = as_ints(v[key])
        if ints and len(ints) == 3:
            want = int(t[tkey])
            _below(
                findings,
                facts,
                key,
                ints[2],
                want,
                "Its third value is the most TCP autotuning gives one connection; a consumer "
                "far away (bandwidth x round-trip time above it) is window-limited.",
                prune if key.endswith("rmem") else (None, "no counter for send buffers", False),
                fix_value=f"{ints[0]} {ints[1]} {want}",
            )
    backlog = as_int(v["net.core.netdev_max_backlog"])
    _below(
        findings,
        facts,
        "net.core.netdev_max_backlog",
        backlog,
        int(t["min_netdev_max_backlog"]),
        "Packets wait in a per-CPU backlog before the network stack processes them; when it is "
        "full they are dropped (softnet_stat column 2).",
        _pressure(facts, ("SoftnetDropped",), float(t["warn_softnet_drops"])),
    )
    ports = as_ints(v["net.ipv4.ip_local_port_range"])
    if ports and len(ports) == 2:
        lo, hi = ports
        reserved = parse_port_list(v["net.ipv4.ip_local_reserved_ports"])
        clash = [
            p
            for a, b in parse_port_list(str(t["broker_ports"]))
            for p in range(a, b + 1)
            if lo <= p <= hi and not any(ra <= p <= rb for ra, rb in reserved)
        ]
        if clash:
            listed = ",".join(map(str, clash))
            findings.append(
                Finding(
                    Severity.WARN,
                    f"broker port(s) {listed} lie inside the ephemeral range {lo}-{hi} and are "
                    "not reserved: an outgoing connection can take one, and the broker then "
                    "fails to bind it on restart (address already in use)",
                    f"Reserve them: {sysctl_fix('net.ipv4.ip_local_reserved_ports', listed)} "
                    "Or move the ephemeral range above the broker's ports.",
                    sysctl_path("net.ipv4.ip_local_port_range"),
                )
            )
        span = hi - lo + 1
        if span < int(t["min_local_ports"]):
            findings.append(
                Finding(
                    Severity.INFO,
                    f"net.ipv4.ip_local_port_range {lo}-{hi} gives only {span} ephemeral ports "
                    "for outgoing connections from this node (connectors, replication, clients "
                    "running here)",
                    "Widen it only if connects fail with 'Cannot assign requested address': "
                    + sysctl_fix("net.ipv4.ip_local_port_range", "10240 65535"),
                    sysctl_path("net.ipv4.ip_local_port_range"),
                )
            )
    ka_time, ka_intvl, ka_probes = (
        as_int(v[f"net.ipv4.tcp_keepalive_{k}"]) for k in ("time", "intvl", "probes")
    )
    if (
        ka_time is not None
        and ka_intvl is not None
        and ka_probes is not None
        and ka_time > int(t["max_keepalive_time"])
    ):
        detect = ka_time + ka_intvl * ka_probes
        findings.append(
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
        )
    table = [{"key": k, "value": val if val is not None else "(absent)"} for k, val in v.items()]
    data = {"values": table, "counters_since_boot": facts.counters}
    ok = (
        f"somaxconn {v['net.core.somaxconn']}, rmem_max {v['net.core.rmem_max']}, "
        f"port range {v['net.ipv4.ip_local_port_range']}; "
        f"listen drops {listen[0] if listen[0] is not None else '?'}, "
        f"UDP buffer errors {udp[0] if udp[0] is not None else '?'}"
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
        "warn_listen_drops": 100,
        "warn_udp_drops": 100,
        "warn_tcp_prune": 100,
        "warn_softnet_drops": 100,
        "min_local_ports": 16384,
        "broker_ports": "8090,8080,3000,8092",
        "max_keepalive_time": 600,
    },
)
def sysctl_network(ctx: Context) -> Result:
    """Network sysctls against a streaming broker's needs."""
    return judge_network(read_network(ctx), ctx.thresholds)


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


def judge_vm(facts: VmFacts, thresholds: dict[str, Any]) -> Result:
    """Swapping, writeback bursts, map count and overcommit, as they affect the broker."""
    v, t, mem = facts.values, thresholds, facts.meminfo
    findings: list[Finding] = []
    swappiness = as_int(v["vm.swappiness"])
    disk_swap = [s for s in facts.swaps if s.disk_backed]
    max_swappiness = int(t["max_swappiness"])
    if swappiness is not None and disk_swap and swappiness > max_swappiness:
        used_kb = sum(s.used_kib for s in disk_swap)
        devices = ", ".join(s.name for s in disk_swap)
        message = f"vm.swappiness = {swappiness} with disk-backed swap ({devices})"
        remedy = (
            "With a high swappiness the kernel swaps out anonymous memory (the broker's "
            "buffers and memory pool) instead of dropping page cache; touching swapped pages "
            "costs disk reads on the hot path. " + sysctl_fix("vm.swappiness", max_swappiness)
        )
        swapped = f"{human_bytes(used_kb * 1024)} swapped out" if used_kb else "nothing swapped"
        # INFO only: memory.swap judges swap use and swappiness with its own thresholds.
        findings.append(
            Finding(
                Severity.INFO,
                f"{message}, {swapped}; {max_swappiness} is suggested "
                "(memory.swap judges swap use)",
                remedy,
                sysctl_path("vm.swappiness"),
            )
        )
    limits = dirty_limits(v, mem)
    if limits is not None:
        background, foreground = limits
        if foreground > int(t["max_dirty_bytes"]):
            want_bg, want_fg = int(t["dirty_background_bytes"]), int(t["dirty_bytes"])
            source = (
                "vm.dirty_bytes"
                if as_int(v["vm.dirty_bytes"])
                else (f"vm.dirty_ratio = {v['vm.dirty_ratio']}% of reclaimable memory")
            )
            findings.append(
                Finding(
                    Severity.WARN,
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
            )
    map_count = as_int(v["vm.max_map_count"])
    min_maps = int(t["min_max_map_count"])
    if map_count:
        for pid, used in sorted(facts.broker_maps.items()):
            pct = used * 100 / map_count
            sev = (
                Severity.FAIL
                if pct >= float(t["fail_map_usage_pct"])
                else Severity.WARN
                if pct >= float(t["warn_map_usage_pct"])
                else None
            )
            if sev:
                findings.append(
                    Finding(
                        sev,
                        f"iggy-server (pid {pid}) has {used} memory mappings, {pct:.0f}% of "
                        f"vm.max_map_count {map_count}: at the limit mmap fails and the broker "
                        "aborts on an allocation",
                        sysctl_fix("vm.max_map_count", max(min_maps, map_count * 4)),
                        f"/proc/{pid}/maps",
                    )
                )
        if map_count < min_maps and not any(
            used * 100 / map_count >= float(t["warn_map_usage_pct"])
            for used in facts.broker_maps.values()
        ):
            findings.append(
                Finding(
                    Severity.INFO,
                    f"vm.max_map_count = {map_count} (below {min_maps}); every mapping a process "
                    "holds (thread stacks, allocator arenas, mapped files) counts against it",
                    "Raise it if the broker's mappings (`wc -l /proc/PID/maps`) approach it: "
                    + sysctl_fix("vm.max_map_count", min_maps),
                    sysctl_path("vm.max_map_count"),
                )
            )
    overcommit = as_int(v["vm.overcommit_memory"])
    if overcommit == 2:
        limit, committed = mem.get("CommitLimit"), mem.get("Committed_AS")
        pct = committed * 100 / limit if limit and committed is not None else None
        usage = (
            f"; {human_bytes(committed * 1024)} of {human_bytes(limit * 1024)} committed "
            f"({pct:.0f}%)"
            if pct is not None and limit and committed is not None
            else ""
        )
        full = pct is not None and pct >= float(t["fail_commit_pct"])
        findings.append(
            Finding(
                Severity.FAIL if full else Severity.WARN,
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
        )
    elif overcommit == 1:
        findings.append(
            Finding(
                Severity.INFO,
                "vm.overcommit_memory = 1: the kernel never refuses memory, so a shortage ends "
                "in the OOM killer instead of a failed allocation",
                "Keep the OOM killer away from the broker (`OOMScoreAdjust=-500`) or use the "
                "default heuristic: " + sysctl_fix("vm.overcommit_memory", 0),
                sysctl_path("vm.overcommit_memory"),
            )
        )
    table = [{"key": k, "value": val if val is not None else "(absent)"} for k, val in v.items()]
    data: dict[str, Any] = {
        "values": table,
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
    return Result.from_findings(findings, ok=ok, data=data)


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
        "max_dirty_bytes": 8 * 1024**3,
        "dirty_bytes": 1024**3,
        "dirty_background_bytes": 256 * 1024**2,
        "min_max_map_count": 262144,
        "warn_map_usage_pct": 50,
        "fail_map_usage_pct": 90,
        "fail_commit_pct": 95,
    },
)
def sysctl_vm(ctx: Context) -> Result:
    """VM sysctls against a streaming broker's needs."""
    return judge_vm(read_vm(ctx), ctx.thresholds)


# ------------------------------------------------------------------ sysctl.fs

FS_KEYS = ("fs.file-max", "fs.nr_open", "fs.file-nr", "fs.aio-max-nr", "fs.aio-nr")


def judge_fs(values: dict[str, str | None], thresholds: dict[str, Any]) -> Result:
    """File handle and AIO limits against minimums and current usage."""
    t = thresholds
    findings: list[Finding] = []
    file_max = as_int(values["fs.file-max"])
    file_nr = as_ints(values["fs.file-nr"])
    allocated = file_nr[0] if file_nr else None
    want_file_max = int(t["min_file_max"])
    if file_max is not None and file_max < want_file_max:
        findings.append(
            Finding(
                Severity.WARN,
                f"fs.file-max = {file_max} is below {want_file_max}: the whole node can open "
                "only that many files and sockets",
                "The broker alone may use LimitNOFILE=65536 (connections, segment and index "
                "files); when the node-wide table is full every open() and accept() fails with "
                "ENFILE. " + sysctl_fix("fs.file-max", want_file_max),
                sysctl_path("fs.file-max"),
            )
        )
    if file_max and allocated is not None:
        pct = allocated * 100 / file_max
        sev = (
            Severity.FAIL
            if pct >= float(t["fail_file_usage_pct"])
            else Severity.WARN
            if pct >= float(t["warn_file_usage_pct"])
            else None
        )
        if sev:
            findings.append(
                Finding(
                    sev,
                    f"{allocated} of fs.file-max {file_max} file handles are in use ({pct:.0f}%)",
                    "Find the holders (`ls /proc/*/fd | wc -l` per process, or "
                    "`lsof -n | awk '{print $1}' | sort | uniq -c | sort -n | tail`); raise the "
                    "ceiling with " + sysctl_fix("fs.file-max", max(want_file_max, file_max * 2)),
                    sysctl_path("fs.file-nr"),
                )
            )
    nr_open = as_int(values["fs.nr_open"])
    want_nr_open = int(t["min_nr_open"])
    if nr_open is not None and nr_open < want_nr_open:
        findings.append(
            Finding(
                Severity.WARN,
                f"fs.nr_open = {nr_open} is below {want_nr_open}: no process may have a "
                "file-descriptor limit (LimitNOFILE) above it",
                "A unit with a higher LimitNOFILE= fails to start. "
                + sysctl_fix("fs.nr_open", want_nr_open),
                sysctl_path("fs.nr_open"),
            )
        )
    aio_max, aio_nr = as_int(values["fs.aio-max-nr"]), as_int(values["fs.aio-nr"])
    want_aio = int(t["min_aio_max_nr"])
    if aio_max is not None and aio_max < want_aio:
        findings.append(
            Finding(
                Severity.INFO,
                f"fs.aio-max-nr = {aio_max} is below {want_aio}",
                "Iggy uses io_uring, which this limit does not cover; it matters for Linux AIO "
                "users on the same node (databases, some storage agents). "
                + sysctl_fix("fs.aio-max-nr", want_aio),
                sysctl_path("fs.aio-max-nr"),
            )
        )
    if aio_max and aio_nr is not None and aio_nr * 100 / aio_max >= float(t["warn_aio_usage_pct"]):
        findings.append(
            Finding(
                Severity.WARN,
                f"fs.aio-nr = {aio_nr} of fs.aio-max-nr {aio_max}: Linux AIO contexts are "
                "nearly exhausted, io_setup() fails with EAGAIN",
                "Iggy itself uses io_uring, but other services on the node cannot start AIO; "
                + sysctl_fix("fs.aio-max-nr", max(want_aio, aio_max * 2)),
                sysctl_path("fs.aio-nr"),
            )
        )
    table = [
        {"key": k, "value": val if val is not None else "(absent)"} for k, val in values.items()
    ]
    usage = f"{allocated}/{file_max}" if allocated is not None and file_max else "?"
    ok = (
        f"file-max {values['fs.file-max']} ({usage} in use), nr_open {values['fs.nr_open']}, "
        f"aio {values['fs.aio-nr']}/{values['fs.aio-max-nr']}"
    )
    return Result.from_findings(findings, ok=ok, data={"values": table})


@check(
    id="sysctl.fs",
    category="sysctl",
    title="File handle kernel parameters",
    description="fs.file-max, fs.nr_open and fs.aio-max-nr against minimums, with current usage.",
    requires=Requirements(paths=("/proc/sys/fs",)),
    timeout_s=5,
    thresholds={
        "min_file_max": 131072,
        "warn_file_usage_pct": 80,
        "fail_file_usage_pct": 95,
        "min_nr_open": 65536,
        "min_aio_max_nr": 65536,
        "warn_aio_usage_pct": 90,
    },
)
def sysctl_fs(ctx: Context) -> Result:
    """File handle and AIO limits."""
    return judge_fs(read_keys(ctx, FS_KEYS), ctx.thresholds)
