"""Network checks: interfaces, routes, DNS, listening sockets, TCP health, conntrack,
firewall and reachability of the endpoints the config names.

Everything is read through the context (/proc, /sys, /etc map into fixture trees in
tests). The only traffic these checks make is name resolution of `checks.network.dns_names`
and TCP connects to `checks.network.endpoints`: nothing that the config does not name.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from snapshot_agent.check import Requirements, check
from snapshot_agent.context import Context
from snapshot_agent.iggy_config import IggyConfig, load_iggy_config, transports
from snapshot_agent.processes import find_brokers, list_pids, process_name
from snapshot_agent.procfs import parse_int, parse_snmp, read_int
from snapshot_agent.remedies import sysctl_fix
from snapshot_agent.results import Finding, Result, Severity

#: Upper bound of /proc/net/{tcp,udp}* lines read per file (a busy broker has many sockets).
MAX_SOCKET_LINES = 1_000_000
#: Rows kept in `data` tables; the rest is counted, not listed.
MAX_ROWS = 200
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

#: Kernel TCP states as printed (hex) in /proc/net/tcp (include/net/tcp_states.h).
TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07  # a bound UDP socket without a peer shows TCP_CLOSE

# Route flags (include/uapi/linux/route.h).
RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200

IFF_UP = 0x1
ARPHRD_LOOPBACK = 772


# -- small shared helpers ----------------------------------------------------------------


def _iter_lines(ctx: Context, node_path: str, max_lines: int = MAX_SOCKET_LINES) -> Iterator[str]:
    """Stream a node file line by line (bounded), yielding nothing when it is missing."""
    try:
        fh = ctx.path(node_path).open("rb")
    except OSError:
        return
    with fh:
        for count, raw in enumerate(fh):
            if count >= max_lines:
                return
            yield raw.decode("utf-8", "replace")


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


def _ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for reports."""
    return round(seconds * 1000, 1)


@dataclass
class Outcome:
    """What a call run in a watchdog thread did."""

    done: bool
    value: Any = None
    error: BaseException | None = None
    elapsed_s: float = 0.0


def run_parallel(calls: list[Callable[[], Any]], timeout_s: float) -> list[Outcome]:
    """Run calls in daemon threads and wait at most `timeout_s` for all of them.

    getaddrinfo() cannot be interrupted; a daemon thread that is still stuck is simply
    abandoned (the check's process exits with os._exit, so it never blocks anything).
    """
    outcomes = [Outcome(done=False) for _ in calls]

    def runner(i: int, call: Callable[[], Any]) -> None:
        """Run one call and record its value or exception and duration."""
        start = time.monotonic()
        try:
            outcomes[i].value = call()
        except Exception as exc:
            outcomes[i].error = exc
        outcomes[i].elapsed_s = time.monotonic() - start
        outcomes[i].done = True

    threads = [
        threading.Thread(target=runner, args=(i, c), daemon=True) for i, c in enumerate(calls)
    ]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return outcomes


# -- /proc/net socket tables ---------------------------------------------------------------


@dataclass(frozen=True)
class Socket:
    """One row of /proc/net/{tcp,tcp6,udp,udp6}."""

    proto: str  # tcp | udp
    family: int  # 4 | 6
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int
    tx_queue: int
    rx_queue: int  # for LISTEN: connections waiting in the accept queue
    uid: int
    inode: int

    @property
    def state_name(self) -> str:
        """Kernel name of the TCP state (UDP sockets reuse the numbers)."""
        return TCP_STATES.get(self.state, f"0x{self.state:02X}")

    @property
    def local(self) -> str:
        """address:port, IPv6 in brackets."""
        host = f"[{self.local_ip}]" if self.family == 6 else self.local_ip
        return f"{host}:{self.local_port}"


def decode_proc_address(text: str) -> tuple[str, int]:
    """Decode '0100007F:1F9A' (little-endian IPv4) or a 32-hex IPv6 address and hex port.

    IPv6 is printed as four 32-bit words, each in host (little-endian) byte order.
    """
    hex_ip, _, hex_port = text.partition(":")
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    elif len(raw) == 16:
        swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, swapped)
    else:
        raise ValueError(f"address {hex_ip!r} is neither IPv4 nor IPv6")
    return ip, int(hex_port, 16)


def parse_socket_line(line: str, proto: str) -> Socket | None:
    """Parse one data line of /proc/net/{tcp,udp}[6]; None for the header or garbage."""
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        return None
    try:
        local_ip, local_port = decode_proc_address(fields[1])
        remote_ip, remote_port = decode_proc_address(fields[2])
        tx, _, rx = fields[4].partition(":")
        return Socket(
            proto="tcp" if proto.startswith("tcp") else "udp",
            family=6 if ":" in local_ip else 4,
            local_ip=local_ip,
            local_port=local_port,
            remote_ip=remote_ip,
            remote_port=remote_port,
            state=int(fields[3], 16),
            tx_queue=int(tx, 16),
            rx_queue=int(rx, 16),
            uid=int(fields[7]),
            inode=int(fields[9]),
        )
    except ValueError:
        return None


def parse_sockets(lines: Iterable[str], proto: str) -> list[Socket]:
    """Parse a whole /proc/net/{tcp,udp}[6] text (header and garbage lines are skipped)."""
    return [s for line in lines if (s := parse_socket_line(line, proto)) is not None]


def is_listening(sock: Socket) -> bool:
    """TCP in LISTEN, or UDP bound without a peer (how a QUIC server socket looks)."""
    if sock.proto == "tcp":
        return sock.state == TCP_LISTEN
    return sock.state == UDP_UNCONNECTED and sock.remote_port == 0


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


def _read_sockets(ctx: Context, protos: Iterable[str]) -> tuple[list[Socket], list[str]]:
    """All sockets of the given /proc/net tables, and the tables that were missing."""
    sockets: list[Socket] = []
    missing: list[str] = []
    for proto in protos:
        path = f"/proc/net/{proto}"
        if not ctx.path(path).exists():
            missing.append(path)
            continue
        sockets.extend(parse_sockets(_iter_lines(ctx, path), proto))
    return sockets, missing


# -- network.interfaces --------------------------------------------------------------------


@dataclass
class Interface:
    """What /sys/class/net/<name> and the address list say about one interface."""

    name: str
    operstate: str = "unknown"
    flags: int = 0
    mtu: int | None = None
    speed_mbps: int | None = None  # None: not reported (virtual NICs, link down)
    type: int | None = None
    virtual: bool = False
    bridge_ports: int | None = None  # None: not a bridge
    carrier_changes: int | None = None
    stats: dict[str, int] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)  # "addr/prefix" (non-link-local)
    link_local: list[str] = field(default_factory=list)

    @property
    def loopback(self) -> bool:
        """The loopback device (never judged)."""
        return self.type == ARPHRD_LOOPBACK or self.name == "lo"

    @property
    def admin_up(self) -> bool:
        """IFF_UP: the interface was set up (ip link set up)."""
        return bool(self.flags & IFF_UP)


STAT_NAMES = (
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "rx_missed_errors",
    "rx_fifo_errors",
    "rx_crc_errors",
)


def parse_ip_addr_json(text: str) -> dict[str, list[tuple[str, int, str]]]:
    """`ip -j addr` -> {ifname: [(address, prefixlen, scope)]}; {} when not JSON."""
    try:
        links = json.loads(text)
    except ValueError:
        return {}
    out: dict[str, list[tuple[str, int, str]]] = {}
    if not isinstance(links, list):
        return out
    for link in links:
        if not isinstance(link, dict) or not isinstance(link.get("ifname"), str):
            continue
        addrs = out.setdefault(link["ifname"], [])
        for info in link.get("addr_info") or []:
            if isinstance(info, dict) and info.get("local"):
                addrs.append(
                    (str(info["local"]), int(info.get("prefixlen", 0)), str(info.get("scope", "")))
                )
    return out


def parse_if_inet6(text: str) -> dict[str, list[tuple[str, int, str]]]:
    """/proc/net/if_inet6 -> {ifname: [(address, prefixlen, scope)]}."""
    scopes = {0x00: "global", 0x10: "host", 0x20: "link", 0x40: "site"}
    out: dict[str, list[tuple[str, int, str]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            addr = str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
            prefix, scope = int(fields[2], 16), int(fields[3], 16)
        except ValueError:
            continue
        out.setdefault(fields[5], []).append((addr, prefix, scopes.get(scope, str(scope))))
    return out


def _read_addresses(ctx: Context) -> tuple[dict[str, list[tuple[str, int, str]]], str]:
    """Addresses per interface: `ip -j addr` live, else /proc/net/if_inet6 (+ psutil IPv4)."""
    if ctx.live and shutil.which("ip"):
        res = ctx.run(["ip", "-j", "addr"], timeout_s=3, save_as="ip-addr.json")
        parsed = parse_ip_addr_json(res.stdout) if res.ok else {}
        if parsed:
            return parsed, "ip -j addr"
    out = parse_if_inet6(ctx.read_optional("/proc/net/if_inet6") or "")
    source = "/proc/net/if_inet6"
    if ctx.live:
        # IPv4 addresses have no /proc file; getifaddrs (psutil) is the live fallback.
        for name, addrs in psutil.net_if_addrs().items():
            for a in addrs:
                if a.family == socket.AF_INET:
                    prefix = (
                        ipaddress.IPv4Network(f"0.0.0.0/{a.netmask}").prefixlen if a.netmask else 32
                    )
                    scope = "host" if a.address.startswith("127.") else "global"
                    out.setdefault(name, []).append((a.address, prefix, scope))
        source += " + getifaddrs"
    return out, source


def read_interfaces(ctx: Context) -> tuple[list[Interface], str]:
    """Every interface under /sys/class/net with its counters and addresses."""
    base = ctx.path("/sys/class/net")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return [], ""
    addresses, source = _read_addresses(ctx)
    interfaces = []
    for name in names:
        sys_dir = f"/sys/class/net/{name}"
        iface = Interface(name=name)
        iface.operstate = (ctx.read_optional(f"{sys_dir}/operstate") or "unknown").strip()
        iface.flags = read_int(ctx, f"{sys_dir}/flags", 16) or 0
        iface.mtu = read_int(ctx, f"{sys_dir}/mtu")
        speed = read_int(ctx, f"{sys_dir}/speed")
        iface.speed_mbps = speed if speed is not None and speed > 0 else None
        iface.type = read_int(ctx, f"{sys_dir}/type")
        iface.carrier_changes = read_int(ctx, f"{sys_dir}/carrier_changes")
        iface.virtual = ctx.path(f"/sys/devices/virtual/net/{name}").exists()
        brif = ctx.path(f"{sys_dir}/brif")
        if brif.is_dir():
            try:
                iface.bridge_ports = len(os.listdir(brif))
            except OSError:
                iface.bridge_ports = None
        for stat in STAT_NAMES:
            value = read_int(ctx, f"{sys_dir}/statistics/{stat}")
            if value is not None:
                iface.stats[stat] = value
        for addr, prefix, scope in addresses.get(name, []):
            target = iface.link_local if scope == "link" else iface.addresses
            target.append(f"{addr}/{prefix}")
        interfaces.append(iface)
    return interfaces, source


def judge_interfaces(interfaces: list[Interface], thresholds: dict[str, Any]) -> Result:
    """Errors and drops per packet, interfaces down that carry addresses, link speed, MTU."""
    if not interfaces:
        return Result.skipped("no interfaces under /sys/class/net (is /sys mounted?)")
    err_ratio = float(thresholds["error_ratio_warn"])
    drop_ratio = float(thresholds["drop_ratio_warn"])
    min_packets = int(thresholds["min_packets"])
    flaps = int(thresholds["carrier_changes_warn"])
    min_speed = int(thresholds["min_speed_mbps"])
    findings: list[Finding] = []
    rows = []
    for iface in interfaces:
        rows.append(
            {
                "name": iface.name,
                "state": iface.operstate,
                "admin_up": iface.admin_up,
                "mtu": iface.mtu,
                "speed_mbps": iface.speed_mbps,
                "addresses": ", ".join(iface.addresses),
                "virtual": iface.virtual,
                "carrier_changes": iface.carrier_changes,
                **iface.stats,
            }
        )
        if iface.loopback:
            continue
        subject = f"/sys/class/net/{iface.name}"
        findings += _judge_link(iface, subject, flaps, min_speed)
        for direction in ("rx", "tx"):
            packets = iface.stats.get(f"{direction}_packets", 0)
            if packets < min_packets:
                continue  # ratios over a handful of packets mean nothing
            errors = iface.stats.get(f"{direction}_errors", 0)
            dropped = iface.stats.get(f"{direction}_dropped", 0)
            if errors / packets > err_ratio:
                findings.append(_counter_finding(iface, direction, "errors", errors, packets))
            if dropped / packets > drop_ratio:
                findings.append(_counter_finding(iface, direction, "dropped", dropped, packets))
    findings += _judge_mtus(interfaces)
    active = [i for i in interfaces if not i.loopback and i.operstate == "up" and i.addresses]
    described = "; ".join(
        f"{i.name} {', '.join(i.addresses[:2])} mtu {i.mtu}"
        + (f" {i.speed_mbps} Mb/s" if i.speed_mbps else "")
        for i in active[:4]
    )
    ok = (
        f"{len(interfaces)} interfaces, {len(active)} up with addresses"
        + (f" ({described})" if described else "")
        + "; errors and drops under thresholds"
    )
    return Result.from_findings(findings, ok=ok, data={"interfaces": rows})


def _judge_link(iface: Interface, subject: str, flaps: int, min_speed: int) -> list[Finding]:
    """Down-with-address, flapping carrier and slow negotiated speed."""
    findings = []
    down = iface.operstate in ("down", "lowerlayerdown", "notpresent")
    if iface.addresses and iface.bridge_ports == 0 and down:
        # An empty bridge (docker0 without containers) is down by design.
        findings.append(
            Finding(
                Severity.INFO,
                f"{iface.name} is a bridge without ports, down as expected",
                "",
                subject,
            )
        )
    elif iface.addresses and not iface.admin_up:
        findings.append(
            Finding(
                Severity.WARN,
                f"{iface.name} has addresses ({', '.join(iface.addresses[:3])}) but is "
                "administratively down: traffic for them goes nowhere",
                f"If it should carry traffic: `ip link set {iface.name} up` and fix the network "
                "configuration that left it down (netplan, /etc/network/interfaces, "
                "NetworkManager); if not, remove its addresses so nothing routes to it.",
                subject,
            )
        )
    elif iface.addresses and down:
        findings.append(
            Finding(
                Severity.WARN,
                f"{iface.name} has addresses ({', '.join(iface.addresses[:3])}) but its link "
                f"is {iface.operstate} (no carrier): peers using these addresses cannot reach "
                "this node",
                f"Check the cable / switch port / virtual NIC: `ip -s link show {iface.name}`, "
                f"`ethtool {iface.name}`, and the kernel log (`dmesg | grep {iface.name}`).",
                subject,
            )
        )
    if iface.carrier_changes is not None and iface.carrier_changes > flaps and iface.addresses:
        findings.append(
            Finding(
                Severity.WARN,
                f"{iface.name} lost and regained its link {iface.carrier_changes // 2} times "
                f"since it was created ({iface.carrier_changes} carrier changes > {flaps}): "
                "a flapping link drops broker and replication connections",
                f"Look at when it happened (`journalctl -k | grep -i '{iface.name}.*link'`); "
                "replace the cable / transceiver or check the switch port and NIC firmware.",
                subject,
            )
        )
    if (
        not iface.virtual
        and iface.operstate == "up"
        and iface.addresses
        and iface.speed_mbps is not None
        and iface.speed_mbps < min_speed
    ):
        findings.append(
            Finding(
                Severity.WARN,
                f"{iface.name} negotiated {iface.speed_mbps} Mb/s (< {min_speed} Mb/s): "
                "a streaming broker saturates such a link quickly",
                f"Check `ethtool {iface.name}` (autonegotiation, advertised modes); a "
                "gigabit+ link falling back to 100 Mb/s usually means a bad cable or port.",
                subject,
            )
        )
    return findings


def _counter_finding(
    iface: Interface, direction: str, kind: str, count: int, packets: int
) -> Finding:
    """A finding for an error or drop ratio over its threshold (counters since boot)."""
    pct = 100.0 * count / packets
    word = "received" if direction == "rx" else "sent"
    if kind == "errors":
        remedy = (
            f"Errors are usually physical: `ethtool -S {iface.name}` shows which counter "
            "(crc, frame, fifo) grows; check the cable, transceiver and switch port."
        )
    else:
        remedy = (
            f"See which counter grows with `ethtool -S {iface.name}` and `nstat -az`: "
            "rx_missed/fifo means the NIC ring is too small (`ethtool -G "
            f"{iface.name} rx <max>` from `ethtool -g`) or softirq cannot keep up "
            "(net.core.netdev_budget, RPS); note rx_dropped also counts frames for "
            "protocols nobody listens to, which is harmless."
        )
    return Finding(
        Severity.WARN,
        f"{iface.name}: {count} of {packets} {word} packets {kind} ({pct:.2f}% since boot)",
        remedy,
        f"/sys/class/net/{iface.name}/statistics/{direction}_{kind}",
    )


def _judge_mtus(interfaces: list[Interface]) -> list[Finding]:
    """Differing MTUs among active interfaces and jumbo frames are worth knowing."""
    active = [
        i
        for i in interfaces
        if not i.loopback and i.operstate in ("up", "unknown") and i.addresses and i.mtu
    ]
    findings = []
    mtus = {i.mtu for i in active}
    if len(mtus) > 1:
        listed = ", ".join(f"{i.name} {i.mtu}" for i in active)
        findings.append(
            Finding(
                Severity.INFO,
                f"interfaces use different MTUs ({listed})",
                "Fine when they face different networks; a bridge or container network with a "
                "larger MTU than the uplink (docker0 1500 over a 1400 tunnel) black-holes large "
                'packets: set the smaller MTU there (e.g. Docker\'s daemon.json "mtu").',
                "/sys/class/net",
            )
        )
    for iface in active:
        if iface.mtu and iface.mtu > 1500:
            findings.append(
                Finding(
                    Severity.INFO,
                    f"{iface.name} uses jumbo frames (MTU {iface.mtu})",
                    "Every switch and peer on the path must use the same MTU; verify with "
                    f"`ping -M do -s {iface.mtu - 28} <peer>` (large transfers stall otherwise).",
                    f"/sys/class/net/{iface.name}",
                )
            )
    return findings


@check(
    id="network.interfaces",
    category="network",
    title="Network interfaces",
    description="Link state, MTU, speed, error/drop ratios and addresses of every interface.",
    requires=Requirements(paths=("/sys/class/net",)),
    timeout_s=6,
    thresholds={
        "error_ratio_warn": 0.001,
        "drop_ratio_warn": 0.01,
        "min_packets": 10000,
        "carrier_changes_warn": 10,
        "min_speed_mbps": 1000,
    },
)
def network_interfaces(ctx: Context) -> Result:
    """Interfaces judged on counters since boot, link state and negotiated speed."""
    interfaces, source = read_interfaces(ctx)
    result = judge_interfaces(interfaces, ctx.thresholds)
    result.data["addresses_from"] = source
    return result


# -- network.routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One route of the main table."""

    family: int
    destination: str  # network/prefix
    gateway: str  # "" when on-link
    iface: str
    metric: int
    flags: int

    @property
    def is_default(self) -> bool:
        """A usable default route (up, prefix 0, not an unreachable/reject entry)."""
        return (
            self.destination in ("0.0.0.0/0", "::/0")
            and bool(self.flags & RTF_UP)
            and not self.flags & RTF_REJECT
        )


def parse_proc_route(text: str) -> list[Route]:
    """/proc/net/route (IPv4, hex little-endian addresses)."""
    routes = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest = socket.inet_ntop(socket.AF_INET, bytes.fromhex(f[1])[::-1])
            gw = socket.inet_ntop(socket.AF_INET, bytes.fromhex(f[2])[::-1])
            mask = socket.inet_ntop(socket.AF_INET, bytes.fromhex(f[7])[::-1])
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            flags, metric = int(f[3], 16), int(f[6])
        except ValueError:
            continue
        routes.append(
            Route(
                4,
                f"{dest}/{prefix}",
                gw if flags & RTF_GATEWAY else "",
                f[0],
                metric,
                flags,
            )
        )
    return routes


def parse_ipv6_route(text: str) -> list[Route]:
    """/proc/net/ipv6_route (network-order hex, every table including local)."""
    routes = []
    for line in text.splitlines():
        f = line.split()
        if len(f) != 10 or len(f[0]) != 32:
            continue
        try:
            dest = str(ipaddress.IPv6Address(bytes.fromhex(f[0])))
            gw = str(ipaddress.IPv6Address(bytes.fromhex(f[4])))
            prefix, metric, flags = int(f[1], 16), int(f[5], 16), int(f[8], 16)
        except ValueError:
            continue
        routes.append(
            Route(6, f"{dest}/{prefix}", gw if flags & RTF_GATEWAY else "", f[9], metric, flags)
        )
    return routes


@dataclass
class RouteFacts:
    """Routes of both families and the link state of the interfaces they use."""

    routes: list[Route] = field(default_factory=list)
    ipv4_table: bool = False
    ipv6_table: bool = False
    operstate: dict[str, str] = field(default_factory=dict)


def read_routes(ctx: Context) -> RouteFacts:
    """Read /proc/net/route and /proc/net/ipv6_route and the state of the devices used."""
    facts = RouteFacts()
    v4 = ctx.read_optional("/proc/net/route")
    v6 = ctx.read_optional("/proc/net/ipv6_route")
    for name, text in (("route", v4), ("ipv6_route", v6)):
        if text is not None:
            ctx.artifact(f"proc-net-{name}.txt", text)
    facts.ipv4_table, facts.ipv6_table = v4 is not None, v6 is not None
    facts.routes = parse_proc_route(v4 or "") + parse_ipv6_route(v6 or "")
    for dev in {r.iface for r in facts.routes}:
        state = ctx.read_optional(f"/sys/class/net/{dev}/operstate")
        if state is not None:
            facts.operstate[dev] = state.strip()
    return facts


def judge_routes(facts: RouteFacts, thresholds: dict[str, Any]) -> Result:
    """A default route must exist (object storage, the supervisor) and use a live link."""
    if not facts.ipv4_table and not facts.ipv6_table:
        return Result.skipped("neither /proc/net/route nor /proc/net/ipv6_route is readable")
    defaults = [r for r in facts.routes if r.is_default]
    findings: list[Finding] = []
    remedy = (
        "Without a default route the node reaches only directly connected networks and "
        "explicit routes: object storage, the supervisor and remote clients fail. Add one "
        "(`ip route add default via <gateway> dev <if>`) and make it persistent in the "
        "network configuration; if specific routes are intended, verify each destination "
        "with `ip route get <address>`."
    )
    if not defaults:
        findings.append(
            Finding(
                Severity.WARN,
                "no default route (IPv4 or IPv6): only directly connected networks are reachable",
                remedy,
                "/proc/net/route",
            )
        )
    else:
        v4 = [r for r in defaults if r.family == 4]
        v6 = [r for r in defaults if r.family == 6]
        if facts.ipv4_table and not v4:
            findings.append(
                Finding(
                    Severity.INFO,
                    "no IPv4 default route (IPv6 only): IPv4-only endpoints are unreachable",
                    remedy,
                    "/proc/net/route",
                )
            )
        elif facts.ipv6_table and not v6:
            findings.append(
                Finding(Severity.INFO, "no IPv6 default route (IPv4 only)", "", "/proc/net/route")
            )
    for route in defaults:
        state = facts.operstate.get(route.iface, "")
        if state in ("down", "lowerlayerdown", "notpresent"):
            findings.append(
                Finding(
                    Severity.WARN,
                    f"the IPv{route.family} default route uses {route.iface}, whose link is "
                    f"{state}: traffic off the local networks fails",
                    f"Bring the link back (`ip link show {route.iface}`, cable / virtual NIC) "
                    "or route through another interface.",
                    f"/sys/class/net/{route.iface}",
                )
            )
    rows = [
        {
            "family": f"IPv{r.family}",
            "destination": r.destination,
            "gateway": r.gateway,
            "iface": r.iface,
            "metric": r.metric,
            "default": r.is_default,
        }
        for r in facts.routes
        if r.family == 4 or not r.flags & RTF_REJECT
    ]
    ok = "default route(s): " + ", ".join(
        f"IPv{r.family} via {r.gateway or 'on-link'} dev {r.iface}" for r in defaults[:4]
    )
    return Result.from_findings(
        findings, ok=ok, data={"routes": rows[:MAX_ROWS], "route_count": len(rows)}
    )


@check(
    id="network.routes",
    category="network",
    title="Default routes",
    description="Whether an IPv4/IPv6 default route exists and its interface is up.",
    timeout_s=5,
)
def network_routes(ctx: Context) -> Result:
    """Default routes from /proc/net/route and /proc/net/ipv6_route."""
    return judge_routes(read_routes(ctx), ctx.thresholds)


# -- network.dns ---------------------------------------------------------------------------

RESOLVED_STUB = "127.0.0.53"
GLIBC_MAXNS = 3


@dataclass
class ResolvConf:
    """The parts of resolv.conf(5) that decide how lookups behave."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # "rotate" -> ""

    def option_int(self, name: str, default: int) -> int:
        """Numeric option such as timeout:2 (glibc's default when absent or bad)."""
        value = parse_int(self.options.get(name))
        return value if value is not None else default


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf: nameserver, search/domain (the last wins), options."""
    conf = ResolvConf()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            conf.nameservers.append(values[0])
        elif key in ("search", "domain"):
            conf.search = values
        elif key == "options":
            for opt in values:
                name, _, value = opt.partition(":")
                conf.options[name] = value
    return conf


@dataclass
class Lookup:
    """How resolving one configured name went."""

    name: str
    addresses: list[str] = field(default_factory=list)
    elapsed_ms: float | None = None
    error: str = ""  # "" when resolved
    timed_out: bool = False


@dataclass
class DnsFacts:
    """resolv.conf, systemd-resolved's upstreams, and the configured lookups."""

    resolv_conf: ResolvConf | None = None
    problem: str = ""  # why resolv.conf could not be read
    resolved_upstreams: list[str] | None = None  # None: no /run/systemd/resolve/resolv.conf
    resolved_running: bool = False
    lookups: list[Lookup] = field(default_factory=list)


def resolve_names(names: list[str], timeout_s: float) -> list[Lookup]:
    """getaddrinfo() each name in parallel threads, each bounded by `timeout_s`."""

    def lookup(name: str) -> Callable[[], list[str]]:
        """A call that resolves `name` to its unique addresses."""
        return lambda: sorted(
            {str(ai[4][0]) for ai in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
        )

    outcomes = run_parallel([lookup(n) for n in names], timeout_s)
    results = []
    for name, out in zip(names, outcomes, strict=True):
        if not out.done:
            results.append(Lookup(name, error="no answer in time", timed_out=True))
        elif out.error is not None:
            err = out.error
            text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            results.append(Lookup(name, elapsed_ms=_ms(out.elapsed_s), error=text))
        else:
            results.append(Lookup(name, out.value, _ms(out.elapsed_s)))
    return results


def read_dns(ctx: Context, names: list[str], timeout_s: float) -> DnsFacts:
    """resolv.conf (and resolved's upstream file), then the configured lookups."""
    facts = DnsFacts()
    path = ctx.path("/etc/resolv.conf")
    text = ctx.read_optional("/etc/resolv.conf", 64 * 1024)
    if text is None:
        if path.is_symlink():
            facts.problem = f"/etc/resolv.conf is a dangling symlink to {os.readlink(path)}"
        else:
            facts.problem = "/etc/resolv.conf does not exist or cannot be read"
    else:
        facts.resolv_conf = parse_resolv_conf(text)
        ctx.artifact("resolv.conf", text)
    upstream = ctx.read_optional("/run/systemd/resolve/resolv.conf", 64 * 1024)
    if upstream is not None:
        facts.resolved_upstreams = parse_resolv_conf(upstream).nameservers
    facts.resolved_running = ctx.path("/run/systemd/resolve").is_dir()
    if names:
        facts.lookups = resolve_names(names, max(0.2, min(timeout_s, ctx.remaining() - 1)))
    return facts


def judge_dns(facts: DnsFacts, thresholds: dict[str, Any]) -> Result:
    """resolv.conf must name servers; configured names must resolve, and quickly."""
    findings: list[Finding] = []
    conf = facts.resolv_conf
    if conf is None:
        findings.append(
            Finding(
                Severity.FAIL,
                f"{facts.problem}: glibc then asks 127.0.0.1 only, so name lookups most "
                "likely fail (object storage, the supervisor, clients by name)",
                "Restore /etc/resolv.conf (or its symlink target: `systemctl restart "
                "systemd-resolved`, your DHCP client or NetworkManager) with at least one "
                "`nameserver <address>` line.",
                "/etc/resolv.conf",
            )
        )
    else:
        findings += _judge_resolv_conf(conf, facts)
    slow_ms = float(thresholds["slow_ms"])
    for lk in facts.lookups:
        if lk.error:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{lk.name} does not resolve ({lk.error})"
                    if not lk.timed_out
                    else f"{lk.name} did not resolve within {thresholds['timeout_ms']:g} ms",
                    f"Ask the configured nameservers directly (`dig {lk.name}` / "
                    f"`getent ahosts {lk.name}`); check /etc/hosts, the search domains and "
                    "that the nameservers are reachable (UDP and TCP 53).",
                    lk.name,
                )
            )
        elif lk.elapsed_ms is not None and lk.elapsed_ms >= slow_ms:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{lk.name} took {lk.elapsed_ms:.0f} ms to resolve (>= {slow_ms:g} ms)",
                    "Slow lookups delay every new connection by name: check the first "
                    "nameserver (a dead first server costs `options timeout` seconds per "
                    "lookup), run a local cache (systemd-resolved, nscd, dnsmasq), or lower "
                    "ndots so names are not tried with every search domain first.",
                    lk.name,
                )
            )
    servers = ", ".join(conf.nameservers) if conf else "none"
    if facts.lookups:
        slowest = max((lk.elapsed_ms or 0.0) for lk in facts.lookups)
        tail = f"{len(facts.lookups)} configured names resolved (slowest {slowest:.0f} ms)"
    else:
        tail = "no names configured to resolve (checks.network.dns_names): resolv.conf only"
    data: dict[str, Any] = {
        "nameservers": conf.nameservers if conf else [],
        "search": conf.search if conf else [],
        "options": conf.options if conf else {},
        "resolved_upstreams": facts.resolved_upstreams,
        "lookups": [
            {
                "name": lk.name,
                "ok": not lk.error,
                "ms": lk.elapsed_ms,
                "addresses": ", ".join(lk.addresses[:6]),
                "error": lk.error,
            }
            for lk in facts.lookups
        ],
    }
    return Result.from_findings(findings, ok=f"nameservers {servers}; {tail}", data=data)


def _judge_resolv_conf(conf: ResolvConf, facts: DnsFacts) -> list[Finding]:
    """Nameserver list, the systemd-resolved stub, and options that slow lookups down."""
    findings = []
    subject = "/etc/resolv.conf"
    if not conf.nameservers:
        findings.append(
            Finding(
                Severity.WARN,
                "/etc/resolv.conf has no nameserver line: glibc asks 127.0.0.1, which works "
                "only if a local resolver listens there",
                "Add `nameserver <address>` lines (or fix whatever generates the file: "
                "DHCP client, NetworkManager, systemd-resolved).",
                subject,
            )
        )
    if len(conf.nameservers) > GLIBC_MAXNS:
        findings.append(
            Finding(
                Severity.INFO,
                f"{len(conf.nameservers)} nameservers listed; glibc uses only the first "
                f"{GLIBC_MAXNS} ({', '.join(conf.nameservers[:GLIBC_MAXNS])})",
                "Put the servers that must be used first.",
                subject,
            )
        )
    if RESOLVED_STUB in conf.nameservers:
        if facts.resolved_running:
            upstream = ", ".join(facts.resolved_upstreams or []) or "unknown"
            findings.append(
                Finding(
                    Severity.INFO,
                    f"lookups go through the systemd-resolved stub {RESOLVED_STUB}; its "
                    f"upstream servers are {upstream}",
                    "`resolvectl status` shows the per-link servers and `resolvectl query "
                    "<name>` tests a lookup through the stub.",
                    subject,
                )
            )
        else:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"resolv.conf points at the systemd-resolved stub {RESOLVED_STUB} but "
                    "/run/systemd/resolve does not exist: systemd-resolved seems not to run, "
                    "so lookups fail",
                    "`systemctl enable --now systemd-resolved`, or replace /etc/resolv.conf "
                    "with real nameserver lines.",
                    subject,
                )
            )
    ndots = conf.option_int("ndots", 1)
    if ndots > 1 and conf.search:
        findings.append(
            Finding(
                Severity.INFO,
                f"options ndots:{ndots} with {len(conf.search)} search domains: a name with "
                f"fewer than {ndots} dots is tried with every search domain first (up to "
                f"{len(conf.search)} extra queries per lookup)",
                "Configure external endpoints (object storage, the supervisor) as fully "
                "qualified names with a trailing dot, or lower ndots.",
                subject,
            )
        )
    return findings


@check(
    id="network.dns",
    category="network",
    title="DNS resolution",
    description="resolv.conf sanity and resolution time of the names in checks.network.dns_names.",
    timeout_s=8,
    thresholds={"timeout_ms": 3000, "slow_ms": 500},
)
def network_dns(ctx: Context) -> Result:
    """Read resolv.conf and resolve the configured names with a timeout."""
    names = list(ctx.config.checks.network.dns_names)
    facts = read_dns(ctx, names, float(ctx.thresholds["timeout_ms"]) / 1000)
    return judge_dns(facts, ctx.thresholds)


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
    sockets, missing = _read_sockets(ctx, ("tcp", "tcp6", "udp", "udp6"))
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
FIREWALL_PORTS_KEY = "checks.thresholds.network.firewall.broker_ports"


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


# -- network.tcp ---------------------------------------------------------------------------


@dataclass
class TcpTally:
    """Socket state counts and the things worth naming from /proc/net/tcp[6]."""

    states: Counter[str] = field(default_factory=Counter)
    close_wait_ports: Counter[int] = field(default_factory=Counter)  # local port -> count
    listeners: list[Socket] = field(default_factory=list)


def tally_tcp(lines: Iterable[str], proto: str, tally: TcpTally) -> TcpTally:
    """Count states; keep listeners and CLOSE_WAIT by local port."""
    for line in lines:
        fields = line.split(None, 4)
        if len(fields) < 5 or not fields[0].endswith(":"):
            continue
        state = parse_int(fields[3], 16)
        if state is None:
            continue
        tally.states[TCP_STATES.get(state, f"0x{state:02X}")] += 1
        if state in (TCP_LISTEN, 0x08):
            sock = parse_socket_line(line, proto)
            if sock is None:
                continue
            if state == 0x08:
                tally.close_wait_ports[sock.local_port] += 1
            else:
                # rx_queue of a LISTEN socket is its accept queue; the backlog is not in
                # /proc/net/tcp (only inet_diag has it, which is what `ss` prints).
                tally.listeners.append(sock)
    return tally


@dataclass
class Counters:
    """The kernel TCP counters this check judges (cumulative since boot)."""

    out_segs: int | None = None
    retrans_segs: int | None = None
    listen_overflows: int | None = None
    listen_drops: int | None = None


def read_counters(ctx: Context) -> Counters:
    """Tcp OutSegs/RetransSegs from /proc/net/snmp, TcpExt Listen* from /proc/net/netstat."""
    snmp = parse_snmp(ctx.read_optional("/proc/net/snmp") or "").get("Tcp", {})
    ext = parse_snmp(ctx.read_optional("/proc/net/netstat") or "").get("TcpExt", {})
    return Counters(
        snmp.get("OutSegs"),
        snmp.get("RetransSegs"),
        ext.get("ListenOverflows"),
        ext.get("ListenDrops"),
    )


@dataclass
class TcpFacts:
    """Socket states plus counters at the start and end of a short sample."""

    tally: TcpTally
    before: Counters
    after: Counters
    sample_s: float
    port_range: int | None = None  # size of net.ipv4.ip_local_port_range
    tables_read: int = 0
    queues: list[ListenQueue] | None = None  # from `ss -ltn`; None when not available


@dataclass(frozen=True)
class ListenQueue:
    """A listener's accept queue against its backlog, as `ss -ltn` prints them."""

    local: str
    queued: int  # Recv-Q: connections waiting for accept()
    backlog: int  # Send-Q: min(listen() backlog, net.core.somaxconn)


def parse_ss_listen(text: str) -> list[ListenQueue]:
    """`ss -H -ltn` lines: 'LISTEN 0 4096 127.0.0.1:8090 0.0.0.0:*'."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        queued, backlog = parse_int(fields[1]), parse_int(fields[2])
        if queued is not None and backlog is not None:
            out.append(ListenQueue(fields[3], queued, backlog))
    return out


def read_tcp(ctx: Context, sample_s: float) -> TcpFacts:
    """Count sockets while the counters sample runs (at most `sample_s`)."""
    start = time.monotonic()
    before = read_counters(ctx)
    tally = TcpTally()
    read = 0
    for proto in ("tcp", "tcp6"):
        if ctx.path(f"/proc/net/{proto}").exists():
            tally_tcp(_iter_lines(ctx, f"/proc/net/{proto}"), proto, tally)
            read += 1
    rest = sample_s - (time.monotonic() - start)
    if rest > 0:
        time.sleep(rest)
    after = read_counters(ctx)
    span = time.monotonic() - start if sample_s > 0 else 0.0
    rng = (ctx.read_optional("/proc/sys/net/ipv4/ip_local_port_range") or "").split()
    size = (
        int(rng[1]) - int(rng[0]) + 1 if len(rng) == 2 and all(x.isdigit() for x in rng) else None
    )
    facts = TcpFacts(tally, before, after, span, size, read)
    if ctx.live and shutil.which("ss"):
        res = ctx.run(["ss", "-H", "-ltn"], timeout_s=3, save_as="ss-ltn.txt")
        if res.ok:
            facts.queues = parse_ss_listen(res.stdout)
    return facts


def _delta(a: int | None, b: int | None) -> int | None:
    """b - a when both are known and the counter did not wrap or reset."""
    return b - a if a is not None and b is not None and b >= a else None


def judge_tcp(facts: TcpFacts, thresholds: dict[str, Any]) -> Result:
    """CLOSE_WAIT pile-ups, SYN_RECV floods, retransmissions and accept-queue overflows."""
    if not facts.tables_read and facts.after.out_segs is None:
        return Result.skipped("no /proc/net/tcp, tcp6 or snmp to read")
    states = facts.tally.states
    findings: list[Finding] = []
    close_wait = states.get("CLOSE_WAIT", 0)
    if close_wait >= int(thresholds["close_wait_warn"]):
        top = ", ".join(f"port {p}: {n}" for p, n in facts.tally.close_wait_ports.most_common(5))
        findings.append(
            Finding(
                Severity.WARN,
                f"{close_wait} TCP sockets in CLOSE_WAIT (>= {thresholds['close_wait_warn']:g})"
                f" ({top}): the peer closed, the application never did",
                "An application is leaking sockets (and file descriptors). Find it with "
                "`ss -tnp state close-wait`; if it is the broker, report it with its log and "
                "restart it before it reaches its open-file limit.",
                "/proc/net/tcp",
            )
        )
    syn_recv = states.get("SYN_RECV", 0) + states.get("NEW_SYN_RECV", 0)
    if syn_recv >= int(thresholds["syn_recv_warn"]):
        findings.append(
            Finding(
                Severity.WARN,
                f"{syn_recv} half-open connections in SYN_RECV (>= "
                f"{thresholds['syn_recv_warn']:g}): a SYN flood or clients that cannot "
                "complete the handshake",
                "See where they come from with `ss -tn state syn-recv`; keep "
                "net.ipv4.tcp_syncookies=1 and raise net.ipv4.tcp_max_syn_backlog if the "
                "load is legitimate.",
                "/proc/net/tcp",
            )
        )
    findings += _judge_retransmits(facts, thresholds)
    findings += _judge_listen_queues(facts)
    time_wait = states.get("TIME_WAIT", 0)
    if (
        facts.port_range
        and time_wait >= facts.port_range * float(thresholds["time_wait_pct"]) / 100
    ):
        findings.append(
            Finding(
                Severity.INFO,
                f"{time_wait} sockets in TIME_WAIT, {100 * time_wait / facts.port_range:.0f}% "
                f"of the {facts.port_range} local ports: outgoing connections to one "
                "destination may run out of ports",
                "Reuse connections (client pools) rather than reconnecting; a wider "
                "net.ipv4.ip_local_port_range and reusing TIME_WAIT ports for outgoing "
                "connections help: " + sysctl_fix("net.ipv4.tcp_tw_reuse", 1),
                "/proc/net/tcp",
            )
        )
    data = {
        "states": dict(sorted(states.items())),
        "close_wait_by_port": [
            {"port": p, "count": n} for p, n in facts.tally.close_wait_ports.most_common(10)
        ],
        "listeners": [
            {"address": q.local, "accept_queue": q.queued, "backlog": q.backlog}
            for q in facts.queues[:MAX_ROWS]
        ]
        if facts.queues is not None
        else [
            {"address": s.local, "accept_queue": s.rx_queue, "backlog": None}
            for s in facts.tally.listeners[:MAX_ROWS]
        ],
        "counters": {
            "out_segs": facts.after.out_segs,
            "retrans_segs": facts.after.retrans_segs,
            "listen_overflows": facts.after.listen_overflows,
            "listen_drops": facts.after.listen_drops,
        },
        "sample_s": round(facts.sample_s, 2),
    }
    established = states.get("ESTABLISHED", 0)
    ratio = _retrans_ratio(facts, int(thresholds["min_segments"]))
    retrans = f", retransmits {ratio[0]:.2f}% ({ratio[1]})" if ratio else ""
    ok = (
        f"{sum(states.values())} TCP sockets ({established} established, "
        f"{states.get('TIME_WAIT', 0)} time-wait, {close_wait} close-wait){retrans}"
    )
    return Result.from_findings(findings, ok=ok, data=data)


def _retrans_ratio(facts: TcpFacts, min_segs: int) -> tuple[float, str] | None:
    """Retransmitted / sent segments over the sample, else since boot; None when unknown."""
    out = _delta(facts.before.out_segs, facts.after.out_segs)
    ret = _delta(facts.before.retrans_segs, facts.after.retrans_segs)
    if out and ret is not None and out >= max(1, min_segs):
        return 100.0 * ret / out, f"{ret}/{out} segments in {facts.sample_s:.1f} s"
    total_out, total_ret = facts.after.out_segs, facts.after.retrans_segs
    if total_out and total_ret is not None:
        return 100.0 * total_ret / total_out, "since boot"
    return None


def _judge_retransmits(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Judge the sampled ratio; the ratio since boot only informs (it may be old news)."""
    warn, fail = float(thresholds["retrans_warn_pct"]), float(thresholds["retrans_fail_pct"])
    min_segs = int(thresholds["min_segments"])
    remedy = (
        "Retransmissions mean packet loss or congestion between this node and its peers: "
        "`nstat -az TcpRetransSegs TcpExtTCPLostRetransmit`, `ss -ti` (per-connection "
        "retrans), interface errors/drops (network.interfaces), and the switch/VPC side."
    )
    out = _delta(facts.before.out_segs, facts.after.out_segs)
    ret = _delta(facts.before.retrans_segs, facts.after.retrans_segs)
    if out is not None and ret is not None and out >= min_segs:
        pct = 100.0 * ret / out
        msg = f"{pct:.2f}% of TCP segments retransmitted ({ret} of {out} in {facts.sample_s:.1f} s)"
        if pct >= fail:
            return [Finding(Severity.FAIL, f"{msg}, >= {fail:g}%", remedy, "/proc/net/snmp")]
        if pct >= warn:
            return [Finding(Severity.WARN, f"{msg}, >= {warn:g}%", remedy, "/proc/net/snmp")]
        return []
    total_out, total_ret = facts.after.out_segs, facts.after.retrans_segs
    if total_out and total_ret is not None and total_out >= min_segs:
        pct = 100.0 * total_ret / total_out
        if pct >= warn:
            return [
                Finding(
                    Severity.INFO,
                    f"{pct:.2f}% of TCP segments retransmitted since boot (too little "
                    "traffic during the sample to say whether it is happening now)",
                    remedy,
                    "/proc/net/snmp",
                )
            ]
    return []


def _judge_listen_queues(facts: TcpFacts) -> list[Finding]:
    """Accept queues overflowing now (sample) or full right now; past overflows inform."""
    findings = []
    remedy = (
        "A listener's accept queue was full, so new connections were dropped: the "
        "application does not accept() fast enough, or its backlog (min(listen() backlog, "
        "net.core.somaxconn)) is too small. `ss -ltn` shows Recv-Q (queued) against Send-Q "
        "(backlog). Check the broker's CPU (cpu.load), and raise the limits: "
        + sysctl_fix("net.core.somaxconn", 4096)
        + " "
        + sysctl_fix("net.ipv4.tcp_max_syn_backlog", 8192)
    )
    overflow = _delta(facts.before.listen_overflows, facts.after.listen_overflows)
    drops = _delta(facts.before.listen_drops, facts.after.listen_drops)
    if overflow or drops:
        findings.append(
            Finding(
                Severity.WARN,
                f"listen queues are overflowing now: ListenOverflows +{overflow or 0}, "
                f"ListenDrops +{drops or 0} in {facts.sample_s:.1f} s",
                remedy,
                "/proc/net/netstat",
            )
        )
    elif facts.after.listen_overflows:
        findings.append(
            Finding(
                Severity.INFO,
                f"{facts.after.listen_overflows} listen queue overflows since boot (none "
                "during the sample)",
                remedy,
                "/proc/net/netstat",
            )
        )
    for q in facts.queues or []:
        if q.backlog and q.queued >= q.backlog:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"the accept queue of {q.local} is full ({q.queued} waiting, backlog "
                    f"{q.backlog}): new connections to it are dropped",
                    remedy,
                    q.local,
                )
            )
    return findings


@check(
    id="network.tcp",
    category="network",
    title="TCP health",
    description="Socket states, retransmission ratio and accept-queue overflows (0.5 s sample).",
    timeout_s=6,
    thresholds={
        "close_wait_warn": 100,
        "syn_recv_warn": 500,
        "retrans_warn_pct": 1.0,
        "retrans_fail_pct": 5.0,
        "min_segments": 1000,
        "time_wait_pct": 50.0,
        "sample_s": 0.5,
    },
    sampling_s=0.5,
)
def network_tcp(ctx: Context) -> Result:
    """Socket state counts and TCP counters sampled over a short interval."""
    sample = min(0.5, max(0.0, float(ctx.thresholds["sample_s"])))
    return judge_tcp(read_tcp(ctx, sample), ctx.thresholds)


# -- network.conntrack ---------------------------------------------------------------------


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header and one hex row per CPU -> summed counters."""
    lines = text.splitlines()
    if not lines:
        return {}
    names = lines[0].split()
    totals: dict[str, int] = dict.fromkeys(names, 0)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            number = parse_int(value, 16)
            if number is not None and name != "entries":  # entries is global, not per CPU
                totals[name] += number
    return totals


@dataclass
class ConntrackFacts:
    """Connection tracking table fill and its failure counters."""

    count: int | None
    maximum: int | None
    stats: dict[str, int] = field(default_factory=dict)


def read_conntrack(ctx: Context) -> ConntrackFacts | None:
    """None when nf_conntrack is not loaded."""
    count = read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_count")
    maximum = read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_max")
    if count is None and maximum is None:
        return None
    stats = parse_conntrack_stat(ctx.read_optional("/proc/net/stat/nf_conntrack") or "")
    return ConntrackFacts(count, maximum, stats)


def judge_conntrack(facts: ConntrackFacts, thresholds: dict[str, Any]) -> Result:
    """A full conntrack table drops new connections; 80% warns, 95% fails."""
    if facts.count is None or not facts.maximum:
        return Result.skipped(
            "nf_conntrack_count or nf_conntrack_max is unreadable or zero; cannot judge the table"
        )
    pct = 100.0 * facts.count / facts.maximum
    warn, fail = float(thresholds["warn_pct"]), float(thresholds["fail_pct"])
    findings: list[Finding] = []
    message = f"conntrack table {pct:.0f}% full ({facts.count} of {facts.maximum} entries)"
    remedy = (
        "When the table is full the kernel drops packets of new connections ('nf_conntrack: "
        "table full, dropping packet' in dmesg). Raise it (each entry costs ~300 bytes of "
        "kernel memory): "
        + sysctl_fix(
            "net.netfilter.nf_conntrack_max",
            facts.maximum * 2,
            "Or exempt the broker's ports from tracking with an nftables `notrack` rule.",
        )
    )
    subject = "/proc/sys/net/netfilter/nf_conntrack_count"
    if pct >= fail:
        findings.append(Finding(Severity.FAIL, f"{message}, >= {fail:g}%", remedy, subject))
    elif pct >= warn:
        findings.append(Finding(Severity.WARN, f"{message}, >= {warn:g}%", remedy, subject))
    dropped = {k: facts.stats.get(k, 0) for k in ("drop", "early_drop", "insert_failed")}
    if any(dropped.values()):
        findings.append(
            Finding(
                Severity.INFO,
                "conntrack dropped entries since boot: "
                + ", ".join(f"{k} {v}" for k, v in dropped.items() if v),
                remedy,
                "/proc/net/stat/nf_conntrack",
            )
        )
    data = {
        "count": facts.count,
        "max": facts.maximum,
        "used_pct": round(pct, 1),
        "stats": {k: v for k, v in facts.stats.items() if k != "entries"},
    }
    return Result.from_findings(findings, ok=message, data=data)


@check(
    id="network.conntrack",
    category="network",
    title="Connection tracking table",
    description="nf_conntrack entries against nf_conntrack_max (a full table drops packets).",
    timeout_s=5,
    thresholds={"warn_pct": 80.0, "fail_pct": 95.0},
)
def network_conntrack(ctx: Context) -> Result:
    """Fill of the netfilter connection tracking table."""
    facts = read_conntrack(ctx)
    if facts is None:
        return Result.skipped(
            "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_count): "
            "no connection tracking table to fill"
        )
    return judge_conntrack(facts, ctx.thresholds)


# -- network.firewall ----------------------------------------------------------------------

PortRanges = list[tuple[int, int]]


@dataclass
class FwRule:
    """A firewall rule reduced to what the broker-port judgement needs."""

    where: str  # "nft inet filter input #7" / "iptables filter INPUT #3"
    verdict: str  # accept | drop | reject | jump | goto | return | "" (non-terminal)
    target: str = ""  # chain for jump/goto
    proto: str | None = None  # tcp | udp | None (any)
    ports: PortRanges | None = None  # destination ports; None: no port match
    conditional: bool = False  # other matches (source, interface, ct state...)
    opaque: bool = False  # could not be understood (xt compat, unknown expression)
    vmap: list[tuple[PortRanges, str]] = field(default_factory=list)  # dport verdict maps


@dataclass
class FwChain:
    """A chain; `hook` set for base chains."""

    key: str  # "family table name" (nft) or "iptables table name"
    name: str
    hook: str = ""
    policy: str = ""
    rules: list[FwRule] = field(default_factory=list)


@dataclass
class Ruleset:
    """Chains from one tool, with the base input chains named."""

    source: str  # nft | iptables | ip6tables
    chains: dict[str, FwChain] = field(default_factory=dict)

    def input_chains(self) -> list[FwChain]:
        """Base chains on the input hook (nft) or filter INPUT (iptables)."""
        return [c for c in self.chains.values() if c.hook == "input"]


def _port_ranges(value: Any) -> PortRanges | None:
    """nft JSON right-hand side -> port ranges (int, set, range); None when not ports."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [(value, value)]
    if isinstance(value, str):
        if value.isdigit():
            return [(int(value), int(value))]
        try:
            port = socket.getservbyname(value)
        except OSError:
            return None
        return [(port, port)]
    if isinstance(value, dict):
        if "range" in value and isinstance(value["range"], list) and len(value["range"]) == 2:
            lo, hi = (_port_ranges(v) for v in value["range"])
            return [(lo[0][0], hi[0][1])] if lo and hi else None
        if "set" in value:
            return _port_ranges(value["set"])
    if isinstance(value, list):
        out: PortRanges = []
        for item in value:
            got = _port_ranges(item)
            if got is None:
                return None
            out += got
        return out
    return None


INET_FAMILIES = ("ip", "ip6", "inet")
_NFT_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")
_NFT_NEUTRAL = ("counter", "log", "comment", "limit", "quota", "meter")


def _nft_rule(rule: dict[str, Any], where: str) -> FwRule:
    """Reduce one nft JSON rule to protocol, destination ports, conditions and verdict."""
    fw = FwRule(where=where, verdict="")
    for expr in rule.get("expr") or []:
        if not isinstance(expr, dict) or len(expr) != 1:
            fw.opaque = True
            continue
        ((kind, body),) = expr.items()
        if kind in _NFT_VERDICTS:
            fw.verdict = kind
            if kind in ("jump", "goto") and isinstance(body, dict):
                fw.target = str(body.get("target", ""))
        elif kind == "match" and isinstance(body, dict):
            _nft_match(fw, body)
        elif kind == "vmap" and isinstance(body, dict):
            key = body.get("key", {})
            payload = key.get("payload", {}) if isinstance(key, dict) else {}
            data = body.get("data")
            entries = data.get("set") if isinstance(data, dict) else None
            if payload.get("field") == "dport" and isinstance(entries, list):
                if payload.get("protocol") in ("tcp", "udp"):
                    fw.proto = payload["protocol"]
                for entry in entries:
                    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
                        ports = _port_ranges(entry[0])
                        verdict = next(iter(entry[1]), "")
                        if ports is not None:
                            fw.vmap.append((ports, verdict))
            else:
                fw.conditional = True  # a verdict map on something else (ct state...)
        elif kind in _NFT_NEUTRAL:
            continue
        elif kind in ("xt",):
            fw.opaque = True
        else:
            fw.conditional = True
    return fw


def _nft_match(fw: FwRule, body: dict[str, Any]) -> None:
    """Fold one nft `match` into the rule: protocol, dport, or another condition."""
    left, right, op = body.get("left"), body.get("right"), body.get("op", "==")
    if isinstance(left, dict) and op in ("==", "in"):
        payload, meta = left.get("payload"), left.get("meta")
        if isinstance(payload, dict) and payload.get("field") == "dport":
            ports = _port_ranges(right)
            if ports is not None:
                fw.ports = ports
                if payload.get("protocol") in ("tcp", "udp"):
                    fw.proto = payload["protocol"]
                return
        if isinstance(meta, dict) and meta.get("key") == "l4proto" and right in ("tcp", "udp"):
            fw.proto = str(right)
            return
        l4_field = isinstance(payload, dict) and payload.get("field") in ("nexthdr", "protocol")
        if l4_field and right in ("tcp", "udp"):
            fw.proto = str(right)
            return
    fw.conditional = True


def parse_nft_json(text: str) -> Ruleset | None:
    """`nft -j list ruleset` -> Ruleset; None when the output is not nft JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return None
    rs = Ruleset("nft")
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(chain := item.get("chain"), dict):
            key = f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"
            # Only filter base chains of the IP families see packets for local sockets.
            ip_filter = chain.get("type") == "filter" and chain.get("family") in INET_FAMILIES
            rs.chains[key] = FwChain(
                key,
                str(chain.get("name")),
                hook=str(chain.get("hook", "")) if ip_filter else "",
                policy=str(chain.get("policy", "")),
            )
        elif isinstance(rule := item.get("rule"), dict):
            key = f"{rule.get('family')} {rule.get('table')} {rule.get('chain')}"
            target = rs.chains.setdefault(key, FwChain(key, str(rule.get("chain"))))
            where = f"nft {key} handle {rule.get('handle')}"
            target.rules.append(_nft_rule(rule, where))
    return rs


def _ipt_ports(text: str) -> PortRanges | None:
    """'8090', '8000:8100', '22,8090,3000:3010' -> ranges."""
    out: PortRanges = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a, b = parse_int(lo), parse_int(hi) if hi else parse_int(lo)
        if a is None or b is None:
            return None
        out.append((a, b))
    return out


_IPT_NEUTRAL_MATCHES = ("tcp", "udp", "multiport", "comment")


def _ipt_rule(tokens: list[str], where: str) -> FwRule:
    """Reduce an iptables-save `-A CHAIN ...` rule (tokens after the chain name)."""
    fw = FwRule(where=where, verdict="")
    if "-j" in tokens or "--jump" in tokens or "-g" in tokens or "--goto" in tokens:
        idx = next(i for i, t in enumerate(tokens) if t in ("-j", "--jump", "-g", "--goto"))
        target = tokens[idx + 1] if idx + 1 < len(tokens) else ""
        goto = tokens[idx] in ("-g", "--goto")
        tokens = tokens[:idx]  # what follows the target are its own options
        builtin = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}
        if target in builtin:
            fw.verdict = builtin[target]
        elif target in ("LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK"):
            fw.verdict = ""  # non-terminating targets
        else:
            fw.verdict, fw.target = ("goto" if goto else "jump"), target
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "!":
            fw.conditional = True
            i += 1
            continue
        if tok in ("-p", "--protocol"):
            fw.proto = nxt.lower() if nxt.lower() in ("tcp", "udp") else None
            if nxt.lower() not in ("tcp", "udp", "all"):
                fw.conditional = True
            i += 2
        elif tok in ("-m", "--match"):
            if nxt not in _IPT_NEUTRAL_MATCHES:
                fw.conditional = True
            i += 2
        elif tok in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            fw.ports = _ipt_ports(nxt)
            if fw.ports is None:
                fw.opaque = True
            i += 2
        elif tok == "--comment":
            i += 2
        else:
            fw.conditional = True
            i += 1
    return fw


def parse_iptables_save(text: str, source: str = "iptables") -> Ruleset:
    """iptables-save / ip6tables-save output -> Ruleset (filter INPUT is the input hook)."""
    rs = Ruleset(source)
    table = ""
    counters: Counter[str] = Counter()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table:
            name, policy = [*line[1:].split(), "", ""][:2]
            key = f"{source} {table} {name}"
            hook = "input" if table == "filter" and name == "INPUT" else ""
            rs.chains[key] = FwChain(key, name, hook, policy.lower() if policy != "-" else "")
        elif line.startswith("-A ") and table:
            try:
                tokens = shlex.split(line)
            except ValueError:
                tokens = line.split()
            if len(tokens) < 2:
                continue
            key = f"{source} {table} {tokens[1]}"
            counters[key] += 1
            chain = rs.chains.setdefault(key, FwChain(key, tokens[1]))
            chain.rules.append(_ipt_rule(tokens[2:], f"{key} rule {counters[key]}"))
    return rs


@dataclass
class PortVerdict:
    """How the input path treats new connections to one broker port."""

    proto: str
    port: int
    verdict: str  # accept | drop | reject | policy-drop | restricted | open | unknown
    rule: str = ""  # where it was decided


def _matches(rule: FwRule, proto: str, port: int) -> bool:
    """The rule's protocol and destination ports cover proto/port."""
    if rule.proto not in (None, proto) or rule.ports is None:
        return False
    return any(lo <= port <= hi for lo, hi in rule.ports)


def evaluate_port(rs: Ruleset, chain: FwChain, proto: str, port: int) -> PortVerdict:
    """Walk an input chain (following jumps) for a new connection to proto/port.

    Best effort and conservative: rules with conditions we cannot evaluate (source
    addresses, interfaces, conntrack state...) never decide; a drop among them only
    makes the port 'restricted'.
    """
    restricted = ""

    def walk(c: FwChain, depth: int) -> PortVerdict | None:
        """First deciding rule in `c`; None when the chain falls through."""
        nonlocal restricted
        for rule in c.rules:
            if rule.opaque:
                continue
            for ports, verdict in rule.vmap:
                covered = rule.proto in (None, proto) and any(lo <= port <= hi for lo, hi in ports)
                if covered and verdict in ("accept", "drop", "reject"):
                    return PortVerdict(proto, port, verdict, rule.where)
            port_rule = _matches(rule, proto, port)
            any_port = rule.ports is None and rule.proto in (None, proto) and not rule.vmap
            if not (port_rule or any_port):
                continue
            if rule.conditional:
                if port_rule and rule.verdict in ("drop", "reject") and not restricted:
                    restricted = rule.where
                continue
            if rule.verdict in ("jump", "goto") and depth < 8:
                sub = rs.chains.get(c.key.rsplit(" ", 1)[0] + " " + rule.target)
                if sub is not None:
                    got = walk(sub, depth + 1)
                    if got is not None or rule.verdict == "goto":
                        return got
                continue
            if rule.verdict == "return":
                return None
            if rule.verdict in ("accept", "drop", "reject"):
                if any_port and rule.verdict != "accept":
                    return PortVerdict(proto, port, "policy-drop", rule.where)
                return PortVerdict(proto, port, rule.verdict, rule.where)
        return None

    decided = walk(chain, 0)
    if decided is not None:
        return decided
    if chain.policy == "drop":
        return PortVerdict(proto, port, "policy-drop", f"{chain.key} policy drop")
    if restricted:
        return PortVerdict(proto, port, "restricted", restricted)
    return PortVerdict(proto, port, "open", f"{chain.key} policy {chain.policy or 'accept'}")


@dataclass
class FirewallFacts:
    """The rulesets read, which tools ran, and what could not be read."""

    rulesets: list[Ruleset] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    iptables_backend: str = ""  # nf_tables | legacy | ""


def read_firewall(ctx: Context) -> FirewallFacts:
    """Run nft and iptables-save / ip6tables-save where installed; keep their output."""
    facts = FirewallFacts()
    if shutil.which("nft"):
        facts.tools.append("nft")
        res = ctx.run(["nft", "-j", "list", "ruleset"], timeout_s=5, save_as="nft-ruleset.json")
        rs = parse_nft_json(res.stdout) if res.ok else None
        if rs is None:
            facts.problems.append(res.describe() if not res.ok else "nft printed no JSON")
        else:
            facts.rulesets.append(rs)
    for tool, source in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        if not shutil.which(tool):
            continue
        facts.tools.append(tool)
        res = ctx.run([tool], timeout_s=5, save_as=f"{tool}.txt")
        if not res.ok:
            facts.problems.append(res.describe())
            continue
        backend = "nf_tables" if "(nf_tables)" in res.stdout else "legacy"
        facts.iptables_backend = facts.iptables_backend or backend
        # iptables-nft rules are already in the nft ruleset; judge them once.
        if backend == "legacy" or "nft" not in facts.tools:
            facts.rulesets.append(parse_iptables_save(res.stdout, source))
    return facts


def judge_firewall(
    facts: FirewallFacts, thresholds: dict[str, Any], ports: ExpectedPorts | None = None
) -> Result:
    """Default policies, rule counts, and whether input rules stop the broker ports.

    `ports` as for judge_listening: the Iggy config's transports, else the threshold.
    """
    if ports is None:
        ports = expected_ports(None, thresholds, FIREWALL_PORTS_KEY)
    expected = ports.ports
    findings: list[Finding] = []
    chains_rows = []
    port_rows = []
    for problem in facts.problems:
        findings.append(
            Finding(
                Severity.INFO,
                f"firewall ruleset not read: {problem}",
                "Run the tool by hand as root to see why.",
                "",
            )
        )
    total_rules = 0
    for rs in facts.rulesets:
        for chain in rs.chains.values():
            total_rules += len(chain.rules)
            if chain.hook:
                chains_rows.append(
                    {
                        "source": rs.source,
                        "chain": chain.key,
                        "hook": chain.hook,
                        "policy": chain.policy or "accept",
                        "rules": len(chain.rules),
                        "opaque_rules": sum(r.opaque for r in chain.rules),
                    }
                )
        for chain in rs.input_chains():
            for proto, port in expected:
                pv = evaluate_port(rs, chain, proto, port)
                port_rows.append(
                    {"port": f"{proto}/{port}", "verdict": pv.verdict, "decided_by": pv.rule}
                )
                findings += _port_findings(pv, ports.label(proto, port))
    inputs = [r for r in chains_rows if r["hook"] == "input"]
    if not facts.rulesets:
        ok = "no firewall ruleset could be read"
    elif not total_rules and not chains_rows:
        ok = f"no firewall rules loaded ({', '.join(facts.tools)})"
    else:
        policies = ", ".join(
            f"{r['chain']} policy {r['policy']} ({r['rules']} rules)" for r in inputs
        )
        ok = (
            f"{total_rules} rules; input: {policies or 'no input chain'}; no rule blocks the "
            f"broker ports ({ports.describe()})"
        )
    opaque = sum(r["opaque_rules"] for r in chains_rows)
    if opaque:
        findings.append(
            Finding(
                Severity.INFO,
                f"{opaque} rules in base chains could not be analysed (iptables-nft compat "
                "matches or unknown expressions); the port verdicts ignore them",
                "Read the saved ruleset (nft-ruleset.json / iptables-save.txt) for these.",
                "",
            )
        )
    data = {
        "tools": facts.tools,
        "iptables_backend": facts.iptables_backend,
        "base_chains": chains_rows,
        "broker_ports": port_rows,
        "broker_ports_source": ports.source,
        "broker_ports_from": ports.origin,
        "rule_count": total_rules,
    }
    return Result.from_findings(findings, ok=ok, data=data)


def _port_findings(pv: PortVerdict, name: str) -> list[Finding]:
    """Explicit drop/reject warns; a default-drop or source-restricted port informs.

    `name` is the port as shown, e.g. 'tcp/8090 (Iggy TCP)'.
    """
    if pv.verdict in ("drop", "reject"):
        return [
            Finding(
                Severity.WARN,
                f"the firewall {pv.verdict}s new connections to {name} ({pv.rule})",
                "Clients on other hosts cannot reach this broker transport. If that is not "
                f"intended, allow it, e.g. `nft insert rule <family> <table> <chain> "
                f"{pv.proto} dport {pv.port} accept` (persist in /etc/nftables.conf) or "
                f"`iptables -I INPUT -p {pv.proto} --dport {pv.port} -j ACCEPT`.",
                pv.rule,
            )
        ]
    if pv.verdict == "policy-drop":
        return [
            Finding(
                Severity.INFO,
                f"no rule accepts {name} and the input default is drop ({pv.rule}): new "
                "connections get through only via a conditional rule (e.g. a source allow-list)",
                f"If remote clients must reach it, add an accept rule for {pv.proto} dport "
                f"{pv.port}; then test from a client with `nc -vz <this-node> {pv.port}`.",
                pv.rule,
            )
        ]
    if pv.verdict == "restricted":
        return [
            Finding(
                Severity.INFO,
                f"{name} is dropped for some sources or interfaces ({pv.rule})",
                "Check that every client network is on the allowed side of that rule.",
                pv.rule,
            )
        ]
    return []


@check(
    id="network.firewall",
    category="network",
    title="Firewall rules",
    description="nftables/iptables input policies and rules, judged for the broker ports.",
    requires=Requirements(root=True),
    timeout_s=10,
    thresholds={"broker_ports": DEFAULT_BROKER_PORTS},
)
def network_firewall(ctx: Context) -> Result:
    """Save the ruleset; judge input policies and rules touching the broker ports."""
    if not (shutil.which("nft") or shutil.which("iptables-save")):
        return Result.skipped("neither `nft` nor `iptables-save` is installed")
    ports = expected_ports(load_iggy_config(ctx), ctx.thresholds, FIREWALL_PORTS_KEY)
    return judge_firewall(read_firewall(ctx), ctx.thresholds, ports)


# -- network.reachability ------------------------------------------------------------------


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port' -> (host, port); None when malformed."""
    text = text.strip()
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port) if 0 < port < 65536 else None


@dataclass
class Probe:
    """One TCP connect attempt to a configured endpoint."""

    endpoint: str
    address: str = ""
    connect_ms: float | None = None
    error: str = ""


def connect_endpoint(host: str, port: int, timeout_s: float) -> tuple[str, float]:
    """Resolve and connect (each address in turn); (address, connect seconds) or raise."""
    deadline = time.monotonic() + timeout_s
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError("no address")
    for family, kind, proto, _, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left)
            start = time.monotonic()
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                last = exc
                continue
            return str(sockaddr[0]), time.monotonic() - start
    raise last


def probe_endpoints(endpoints: list[tuple[str, str, int]], timeout_s: float) -> list[Probe]:
    """Connect to each (label, host, port) in parallel, bounded by `timeout_s`."""
    calls = [
        (lambda h=host, p=port: connect_endpoint(h, p, timeout_s)) for _, host, port in endpoints
    ]
    outcomes = run_parallel(calls, timeout_s + 0.2)
    probes = []
    for (label, _, _), out in zip(endpoints, outcomes, strict=True):
        if not out.done:
            probes.append(Probe(label, error=f"timed out after {timeout_s * 1000:.0f} ms"))
        elif out.error is not None:
            err = out.error
            if isinstance(err, socket.gaierror):
                text = f"does not resolve ({err.strerror})"
            elif isinstance(err, ConnectionRefusedError):
                text = "connection refused"
            elif isinstance(err, TimeoutError):
                text = f"timed out after {timeout_s * 1000:.0f} ms"
            else:
                text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            probes.append(Probe(label, error=text))
        else:
            address, seconds = out.value
            probes.append(Probe(label, address, _ms(seconds)))
    return probes


def judge_reachability(probes: list[Probe], bad: list[str], thresholds: dict[str, Any]) -> Result:
    """Refused or timed-out endpoints fail; slow connects warn."""
    findings: list[Finding] = []
    slow = float(thresholds["slow_ms"])
    for entry in bad:
        findings.append(
            Finding(
                Severity.WARN,
                f"checks.network.endpoints entry {entry!r} is not host:port",
                "Write endpoints as host:port, IPv6 as [address]:port.",
                "checks.network.endpoints",
            )
        )
    for p in probes:
        if p.error:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"cannot connect to {p.endpoint}: {p.error}",
                    "Refused: nothing listens there (service down, wrong port). Timed out: a "
                    "firewall, security group or route drops the packets "
                    "(`ip route get <address>`, `nc -vz <host> <port>` from this node). Does "
                    "not resolve: see network.dns.",
                    p.endpoint,
                )
            )
        elif p.connect_ms is not None and p.connect_ms >= slow:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"connecting to {p.endpoint} took {p.connect_ms:.0f} ms (>= {slow:g} ms)",
                    "A slow TCP handshake means a long or lossy path (retransmitted SYNs take "
                    "1 s or more): check network.tcp retransmits and the route to it.",
                    p.endpoint,
                )
            )
    rows = [
        {"endpoint": p.endpoint, "address": p.address, "connect_ms": p.connect_ms, "error": p.error}
        for p in probes
    ]
    ok = f"{len(probes)} endpoints reachable: " + ", ".join(
        f"{p.endpoint} {p.connect_ms:.0f} ms" for p in probes[:5] if p.connect_ms is not None
    )
    return Result.from_findings(findings, ok=ok, data={"endpoints": rows})


@check(
    id="network.reachability",
    category="network",
    title="Endpoint reachability",
    description="TCP connect time to each endpoint in checks.network.endpoints.",
    timeout_s=10,
    thresholds={"timeout_ms": 3000, "slow_ms": 500},
)
def network_reachability(ctx: Context) -> Result:
    """Connect to the configured endpoints only (never anything else)."""
    configured = list(ctx.config.checks.network.endpoints)
    if not configured:
        return Result.skipped(
            "no endpoints configured; configure checks.network.endpoints: the supervisor, "
            "your object storage (host:port)"
        )
    parsed, bad = [], []
    for entry in configured:
        got = parse_endpoint(entry)
        if got is None:
            bad.append(entry)
        else:
            parsed.append((entry, *got))
    timeout = min(float(ctx.thresholds["timeout_ms"]) / 1000, max(0.2, ctx.remaining() - 1))
    probes = probe_endpoints(parsed, timeout) if parsed else []
    return judge_reachability(probes, bad, ctx.thresholds)
