"""Network checks: interfaces and routes.

Everything is read through the context (/proc, /sys map into fixture trees in tests).
Interface errors, drops and carrier changes are judged over a sampling window (counters
read twice, at least `sample_s` apart); their totals since boot only inform.
The other network checks sit beside this module: network_probes (DNS resolution and
reachability of the endpoints the config names), network_listening (listening sockets),
network_tcp (TCP health) and network_firewall (firewall rules, conntrack).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.procfs import counter_delta, read_int
from snapshot_agent.node.sampling import stretch_window

# Route flags (include/uapi/linux/route.h).
RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200

IFF_UP = 0x1
ARPHRD_LOOPBACK = 772

#: The window over which interface counters are judged (stretched up to max_sample_s).
INTERFACES_SAMPLE_S = 0.5
#: Seconds of network.interfaces' time kept for judging after the window.
RESERVE_S = 1.0


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
    stats: dict[str, int] = field(default_factory=dict)  # counters since boot
    window: dict[str, int] = field(default_factory=dict)  # the same, over the window
    window_carrier_changes: int | None = None
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

    @property
    def carries_traffic(self) -> bool:
        """Not loopback, up and with addresses: the interfaces whose counters are sampled."""
        return not self.loopback and self.operstate in ("up", "unknown") and bool(self.addresses)


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
        iface.stats = read_stats(ctx, name)
        for addr, prefix, scope in addresses.get(name, []):
            target = iface.link_local if scope == "link" else iface.addresses
            target.append(f"{addr}/{prefix}")
        interfaces.append(iface)
    return interfaces, source


def read_stats(ctx: Context, name: str) -> dict[str, int]:
    """An interface's counters since boot from /sys/class/net/<name>/statistics."""
    stats = {}
    for stat in STAT_NAMES:
        value = read_int(ctx, f"/sys/class/net/{name}/statistics/{stat}")
        if value is not None:
            stats[stat] = value
    return stats


def _take_window(ctx: Context, iface: Interface) -> None:
    """Counters again: what changed since the first read (a counter that went down is left out)."""
    now = read_stats(ctx, iface.name)
    iface.window = {
        k: d for k, v in now.items() if (d := counter_delta(iface.stats.get(k), v)) is not None
    }
    changes = read_int(ctx, f"/sys/class/net/{iface.name}/carrier_changes")
    if changes is not None and iface.carrier_changes is not None:
        iface.window_carrier_changes = max(0, changes - iface.carrier_changes)


def _enough_packets(iface: Interface, min_packets: int) -> bool:
    """Both directions passed `min_packets` over the window."""
    return all(iface.window.get(f"{d}_packets", 0) >= min_packets for d in ("rx", "tx"))


def _had_trouble(iface: Interface) -> bool:
    """Errors or drops in either direction over the window so far."""
    return any(
        iface.window.get(f"{d}_{kind}", 0) > 0
        for d in ("rx", "tx")
        for kind in ("errors", "dropped")
    )


def sample_interfaces(
    ctx: Context, interfaces: list[Interface], start: float, thresholds: dict[str, Any]
) -> float:
    """Read the counters of interfaces carrying traffic again after a window; its length.

    The window lasts `sample_s`, and goes on (up to `max_sample_s`) while an interface that
    saw errors or drops has not passed `min_packets` each way: a quiet link with trouble
    needs longer to say anything. Without errors or drops there is nothing to measure, so
    an idle node's snapshot never waits for the long window.
    """
    watched = [i for i in interfaces if i.carries_traffic]
    min_packets = int(thresholds["min_packets"])

    def still_undecided() -> bool:
        """Counters again; an interface with trouble has too few packets to judge yet."""
        for iface in watched:
            _take_window(ctx, iface)
        return any(_had_trouble(i) and not _enough_packets(i, min_packets) for i in watched)

    return stretch_window(
        ctx,
        thresholds,
        start,
        RESERVE_S,
        still_undecided,
        clock=time.monotonic,
        sleep=time.sleep,
    )


#: Errors per packet sent or received over the window (of one interface, one direction).
ERROR_RATIO = Band("error_ratio", warn=0.001)
#: Drops per packet sent or received over the window.
DROP_RATIO = Band("drop_ratio", warn=0.01)
#: Carrier changes since the interface was created (two per lost and regained link); only
#: informs, since they may be months old (a switch reboot, a VM migration): a carrier
#: change during the window warns.
CARRIER_CHANGES = Band("carrier_changes", warn=10)

#: Link states in which an interface carries no traffic.
LINK_DOWN = ("down", "lowerlayerdown", "notpresent")


def judge_interfaces(
    interfaces: list[Interface], thresholds: dict[str, Any], window_s: float = 0.0
) -> Result:
    """Errors and drops per packet over the window, links down with addresses, speed, MTU."""
    if not interfaces:
        return Result.skipped("no interfaces under /sys/class/net (is /sys mounted?)")
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
                "window": {**iface.window, "carrier_changes": iface.window_carrier_changes}
                if iface.carries_traffic
                else None,
            }
        )
        if iface.loopback:
            continue
        findings += _judge_link(iface, thresholds, window_s)
        findings += _error_and_drop_ratios(iface, thresholds, window_s)
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
        + f"; errors and drops over {window_s:.1f} s under thresholds (totals since boot "
        "only inform)"
    )
    return Result.from_findings(
        findings, ok=ok, data={"interfaces": rows, "window_s": round(window_s, 2)}
    )


def _error_and_drop_ratios(
    iface: Interface, thresholds: dict[str, Any], window_s: float
) -> list[Finding]:
    """Errors and drops per packet over the window (judged) and since boot (information)."""
    findings = []
    min_packets, min_events = int(thresholds["min_packets"]), int(thresholds["min_events"])
    for direction in ("rx", "tx"):
        for kind, band in (("errors", ERROR_RATIO), ("dropped", DROP_RATIO)):
            key = f"{direction}_{kind}"
            packets, count = iface.window.get(f"{direction}_packets", 0), iface.window.get(key, 0)
            # Ratios over a handful of packets or events mean nothing.
            now = band.grade(count / packets, thresholds) if packets >= min_packets else None
            if now and count >= min_events:
                span = f"over {window_s:.1f} s"
                findings.append(_counter_finding(iface, direction, kind, count, packets, now, span))
                continue
            packets, count = iface.stats.get(f"{direction}_packets", 0), iface.stats.get(key, 0)
            if packets >= min_packets and band.grade_count(count / packets, thresholds):
                span = f"since boot; information only: not over the {window_s:.1f} s window"
                findings.append(
                    _counter_finding(iface, direction, kind, count, packets, Severity.INFO, span)
                )
    return findings


def _judge_link(iface: Interface, thresholds: dict[str, Any], window_s: float) -> list[Finding]:
    """Down-with-address, flapping carrier and slow negotiated speed."""
    return [
        *_link_down(iface),
        *_flapping_link(iface, thresholds, window_s),
        *_slow_link(iface, int(thresholds["min_speed_mbps"])),
    ]


def _link_down(iface: Interface) -> list[Finding]:
    """An interface with addresses but no link: traffic for those addresses goes nowhere."""
    down = iface.operstate in LINK_DOWN
    if not iface.addresses:
        return []
    if iface.bridge_ports == 0 and down:
        # An empty bridge (docker0 without containers) is down by design.
        return [
            Finding(
                Severity.INFO,
                f"{iface.name} is a bridge without ports, down as expected",
                "",
                _subject(iface),
            )
        ]
    if not iface.admin_up:
        return [_admin_down(iface)]
    if down:
        return [_no_carrier(iface)]
    return []


def _subject(iface: Interface) -> str:
    """The interface's /sys directory, the subject of its findings."""
    return f"/sys/class/net/{iface.name}"


def _admin_down(iface: Interface) -> Finding:
    """Addresses on an interface that was never set up (or was set down)."""
    return Finding(
        Severity.WARN,
        f"{iface.name} has addresses ({', '.join(iface.addresses[:3])}) but is "
        "administratively down: traffic for them goes nowhere",
        f"If it should carry traffic: `ip link set {iface.name} up` and fix the network "
        "configuration that left it down (netplan, /etc/network/interfaces, "
        "NetworkManager); if not, remove its addresses so nothing routes to it.",
        _subject(iface),
    )


def _no_carrier(iface: Interface) -> Finding:
    """Addresses on an interface that is up but has lost its link."""
    return Finding(
        Severity.WARN,
        f"{iface.name} has addresses ({', '.join(iface.addresses[:3])}) but its link "
        f"is {iface.operstate} (no carrier): peers using these addresses cannot reach "
        "this node",
        f"Check the cable / switch port / virtual NIC: `ip -s link show {iface.name}`, "
        f"`ethtool {iface.name}`, and the kernel log (`dmesg | grep {iface.name}`).",
        _subject(iface),
    )


def _flapping_link(iface: Interface, thresholds: dict[str, Any], window_s: float) -> list[Finding]:
    """A link lost during the window warns; many losses since it was created inform."""
    if iface.carrier_changes is None or not iface.addresses:
        return []
    remedy = (
        f"Look at when it happened (`journalctl -k | grep -i '{iface.name}.*link'`); "
        "replace the cable / transceiver or check the switch port and NIC firmware."
    )
    if iface.window_carrier_changes:
        return [
            Finding(
                Severity.WARN,
                f"{iface.name} lost its link during the {window_s:.1f} s sample "
                f"({iface.window_carrier_changes} carrier changes): a flapping link drops "
                "broker and replication connections",
                remedy,
                _subject(iface),
            )
        ]
    severity = CARRIER_CHANGES.grade_count(iface.carrier_changes, thresholds)
    if severity is None:
        return []
    limit = CARRIER_CHANGES.limit(severity, thresholds)
    return [
        Finding(
            Severity.INFO,
            f"{iface.name} lost and regained its link {iface.carrier_changes // 2} times "
            f"since it was created ({iface.carrier_changes} carrier changes >= {limit:g}); "
            f"information only: none during the {window_s:.1f} s sample, and these may be "
            "old (a switch reboot, a VM migration)",
            remedy,
            _subject(iface),
        )
    ]


def _slow_link(iface: Interface, min_speed: int) -> list[Finding]:
    """A physical link up at a speed a streaming broker saturates quickly."""
    if (
        iface.virtual
        or iface.operstate != "up"
        or not iface.addresses
        or iface.speed_mbps is None
        or iface.speed_mbps >= min_speed
    ):
        return []
    return [
        Finding(
            Severity.WARN,
            f"{iface.name} negotiated {iface.speed_mbps} Mb/s (< {min_speed} Mb/s): "
            "a streaming broker saturates such a link quickly",
            f"Check `ethtool {iface.name}` (autonegotiation, advertised modes); a "
            "gigabit+ link falling back to 100 Mb/s usually means a bad cable or port.",
            _subject(iface),
        )
    ]


def _counter_finding(
    iface: Interface,
    direction: str,
    kind: str,
    count: int,
    packets: int,
    severity: Severity,
    span: str,
) -> Finding:
    """A finding for an error or drop ratio over its threshold, over `span`."""
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
        severity,
        f"{iface.name}: {count} of {packets} {word} packets {kind} ({pct:.2f}% {span})",
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
    description=(
        "Link state, MTU, speed, error/drop ratios over a 0.5-3 s window and addresses of "
        "every interface."
    ),
    requires=Requirements(paths=("/sys/class/net",)),
    timeout_s=8,
    bands=(ERROR_RATIO, DROP_RATIO, CARRIER_CHANGES),
    thresholds={
        "min_packets": 500,
        "min_events": 5,
        "min_speed_mbps": 1000,
        "sample_s": INTERFACES_SAMPLE_S,
        "max_sample_s": 3.0,
    },
    sampling_s=INTERFACES_SAMPLE_S,
)
def network_interfaces(ctx: Context) -> Result:
    """Interfaces judged on counters over a window, link state and negotiated speed.

    Verdicts:
    - pass: interfaces up with addresses, an empty docker0 bridge down as designed
      [test_interfaces_pass]
    - pass: errors, drops and carrier changes since boot (old news), none over the window
      [test_interfaces_old_counters_since_boot_inform]
    - pass: jumbo frames and differing MTUs (pointed out, not judged)
      [test_interfaces_mtu_mismatch_and_jumbo_are_info]
    - warn: receive errors or send drops over the window, the link lost during it
      [test_interfaces_errors_over_the_window_warn]
    - warn: an interface with addresses whose link is down or that is admin down; a link
      negotiated at 100 Mb/s [test_interfaces_warn]
    """
    start = time.monotonic()
    interfaces, source = read_interfaces(ctx)
    window_s = sample_interfaces(ctx, interfaces, start, ctx.thresholds)
    result = judge_interfaces(interfaces, ctx.thresholds, window_s)
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


NO_DEFAULT_ROUTE_REMEDY = (
    "Without a default route the node reaches only directly connected networks and "
    "explicit routes: object storage, the supervisor and remote clients fail. Add one "
    "(`ip route add default via <gateway> dev <if>`) and make it persistent in the "
    "network configuration; if specific routes are intended, verify each destination "
    "with `ip route get <address>`."
)


def judge_routes(facts: RouteFacts, thresholds: dict[str, Any]) -> Result:
    """A default route must exist (object storage, the supervisor) and use a live link."""
    if not facts.ipv4_table and not facts.ipv6_table:
        return Result.skipped("neither /proc/net/route nor /proc/net/ipv6_route is readable")
    defaults = [r for r in facts.routes if r.is_default]
    findings = [
        *_missing_default_route(facts, defaults),
        *_default_route_on_down_link(facts, defaults),
    ]
    ok = "default route(s): " + ", ".join(
        f"IPv{r.family} via {r.gateway or 'on-link'} dev {r.iface}" for r in defaults[:4]
    )
    rows = _route_rows(facts)
    return Result.from_findings(
        findings, ok=ok, data={"routes": rows[:MAX_ROWS], "route_count": len(rows)}
    )


def _missing_default_route(facts: RouteFacts, defaults: list[Route]) -> list[Finding]:
    """No default route at all warns; one family without one (the other has it) informs."""
    if not defaults:
        return [
            Finding(
                Severity.WARN,
                "no default route (IPv4 or IPv6): only directly connected networks are reachable",
                NO_DEFAULT_ROUTE_REMEDY,
                "/proc/net/route",
            )
        ]
    if facts.ipv4_table and not any(r.family == 4 for r in defaults):
        return [
            Finding(
                Severity.INFO,
                "no IPv4 default route (IPv6 only): IPv4-only endpoints are unreachable",
                NO_DEFAULT_ROUTE_REMEDY,
                "/proc/net/route",
            )
        ]
    if facts.ipv6_table and not any(r.family == 6 for r in defaults):
        return [Finding(Severity.INFO, "no IPv6 default route (IPv4 only)", "", "/proc/net/route")]
    return []


def _default_route_on_down_link(facts: RouteFacts, defaults: list[Route]) -> list[Finding]:
    """A default route through an interface whose link is down leads nowhere."""
    findings = []
    for route in defaults:
        state = facts.operstate.get(route.iface, "")
        if state in LINK_DOWN:
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
    return findings


def _route_rows(facts: RouteFacts) -> list[dict[str, Any]]:
    """The routes as data rows (IPv6 reject entries such as lo's unreachable ::/0 left out)."""
    return [
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


@check(
    id="network.routes",
    category="network",
    title="Default routes",
    description="Whether an IPv4/IPv6 default route exists and its interface is up.",
    timeout_s=5,
)
def network_routes(ctx: Context) -> Result:
    """Default routes from /proc/net/route and /proc/net/ipv6_route.

    Verdicts:
    - pass: IPv4 and IPv6 default routes via a live eth0 [test_routes_pass]
    - warn: no default route in either family (object storage, remote clients unreachable)
      [test_routes_without_default_warn]
    - warn: the default route uses an interface whose link is down
      [test_routes_default_via_down_link_warns]
    """
    return judge_routes(read_routes(ctx), ctx.thresholds)
