"""network.listening, .interfaces, .routes and .tcp against `ss`, `ip -j` and `nstat`."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .live import SHORT_WINDOW, Mismatch, agree, between, pick, run_check, settle, tool

# -- network.listening -----------------------------------------------------------------


def _address(text: str) -> str:
    """An address as ss or /proc spells it, normalised (v4-mapped as v4, wildcards as '*')."""
    text = text.strip("[]").split("%", 1)[0]
    if text in ("*", "0.0.0.0", "::"):
        return "*"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def ss_listening() -> dict[tuple[str, str, int], set[int]]:
    """Listening TCP and unconnected UDP sockets from `ss`: (proto, address, port) -> pids."""
    out: dict[tuple[str, str, int], set[int]] = {}
    for proto, flag in (("tcp", "-ltnp"), ("udp", "-lunp")):
        for line in tool("ss", "-H", flag).splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            host, _, port = fields[3].rpartition(":")
            if not port.isdigit():
                continue
            pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            out.setdefault((proto, _address(host), int(port)), set()).update(pids)
    return out


@contextmanager
def own_listeners() -> Iterator[tuple[int, int]]:
    """A TCP listener and a bound UDP socket of this process on 127.0.0.1: their ports."""
    with ExitStack() as stack:
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]


def test_network_listening_matches_ss_and_finds_own_listeners(tmp_path: Path) -> None:
    """Our own 127.0.0.1 listeners appear with their port and our pid; the rest as `ss` says."""
    with own_listeners() as (tcp_port, udp_port):

        def compare() -> list[Mismatch]:
            before = ss_listening()
            data = run_check("network.listening", tmp_path).data
            after = ss_listening()
            ours: dict[tuple[str, str, int], Any] = {
                (li["proto"], _address(li["address"]), li["port"]): li.get("pid")
                for li in data["listeners"]
            }
            out = []
            for proto, port in (("tcp", tcp_port), ("udp", udp_port)):
                key = (proto, "127.0.0.1", port)
                if key not in ours:
                    out.append(Mismatch(f"listeners[{proto} 127.0.0.1:{port}]", None, key, "bound"))
                elif ours[key] != os.getpid():
                    out.append(Mismatch(f"listeners[{key}].pid", ours[key], os.getpid(), "getpid"))
            # Sockets that exist before and after the check must be in it; the check's
            # owner must be one of the processes ss names (a socket may be shared).
            if data.get("listener_count", len(ours)) <= len(data["listeners"]):
                for key in sorted(set(before) & set(after)):
                    if key not in ours:
                        out.append(Mismatch(f"listeners[{key}]", "absent", "listening", "ss -l"))
                    elif ours[key] is not None and before[key] and ours[key] not in before[key]:
                        out.append(
                            Mismatch(f"listeners[{key}].pid", ours[key], before[key], "ss -lp")
                        )
                for key in sorted(set(ours) - set(before) - set(after)):
                    out.append(Mismatch(f"listeners[{key}]", "listening", "absent", "ss -l"))
            return out

        agree(settle(compare), "network.listening")


# -- network.interfaces ----------------------------------------------------------------

#: The check's counter names -> (direction, name) in `ip -j -s -s link` stats64.
IP_COUNTERS = {
    "rx_packets": ("rx", "packets"),
    "tx_packets": ("tx", "packets"),
    "rx_errors": ("rx", "errors"),
    "tx_errors": ("tx", "errors"),
    "rx_dropped": ("rx", "dropped"),
    "tx_dropped": ("tx", "dropped"),
    "rx_missed_errors": ("rx", "missed_errors"),
    "rx_fifo_errors": ("rx", "fifo_errors"),
    "rx_crc_errors": ("rx", "crc_errors"),
}


def ip_links() -> dict[str, dict[str, Any]]:
    """`ip -j -s -s link` by interface name."""
    return {link["ifname"]: link for link in json.loads(tool("ip", "-j", "-s", "-s", "link"))}


def ip_addresses() -> dict[str, set[str]]:
    """`ip -j addr`: non-link-local addresses per interface, as addr/prefix."""
    out: dict[str, set[str]] = {}
    for link in json.loads(tool("ip", "-j", "addr")):
        out[link["ifname"]] = {
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("local") and a.get("scope") != "link"
        }
    return out


def _counter(link: dict[str, Any], direction: str, name: str) -> int | None:
    """One counter of `ip -s -s link` (stats64, or stats on old iproute2)."""
    stats = link.get("stats64") or link.get("stats") or {}
    value = stats.get(direction, {}).get(name)
    return int(value) if value is not None else None


def compare_interfaces(tmp_path: Path) -> list[Mismatch]:
    """Names, state, MTU, addresses and counters of every interface."""
    before = ip_links()
    data = run_check("network.interfaces", tmp_path, thresholds=SHORT_WINDOW).data
    after = ip_links()
    addresses = ip_addresses()
    rows = {row["name"]: row for row in data["interfaces"]}
    out = []
    stable = set(before) & set(after)
    if set(rows) != stable and set(rows) != set(after):
        out.append(Mismatch("interfaces[].name", sorted(rows), sorted(after), "ip -j link"))
    for name in sorted(stable & set(rows)):
        ours, link = rows[name], after[name]
        if ours["state"].lower() != str(link.get("operstate", "")).lower():
            out.append(Mismatch(f"{name}.state", ours["state"], link.get("operstate"), "ip link"))
        if ours["mtu"] != link.get("mtu"):
            out.append(Mismatch(f"{name}.mtu", ours["mtu"], link.get("mtu"), "ip link"))
        admin_up = "UP" in link.get("flags", [])
        if ours.get("admin_up", admin_up) != admin_up:
            out.append(Mismatch(f"{name}.admin_up", ours.get("admin_up"), admin_up, "ip link"))
        ours_addr = {a for a in str(ours.get("addresses") or "").split(", ") if a}
        if ours_addr != addresses.get(name, set()):
            out.append(Mismatch(f"{name}.addresses", ours_addr, addresses.get(name), "ip -j addr"))
        changes = link.get("stats64", {}).get("tx", {}).get("carrier_changes")
        if changes is not None and ours.get("carrier_changes") not in (None, changes):
            out.append(Mismatch(f"{name}.carrier_changes", ours["carrier_changes"], changes, "ip"))
        for key, (direction, counter) in IP_COUNTERS.items():
            lo, hi = _counter(before[name], direction, counter), _counter(link, direction, counter)
            known = key in ours and lo is not None and hi is not None
            if known and not between(ours[key], lo, hi):
                out.append(Mismatch(f"{name}.{key}", ours[key], (lo, hi), "ip -s -s link"))
            # What the check counted over its window happened between our two reads.
            window = ours.get("window") or {}
            if (
                key in window
                and lo is not None
                and hi is not None
                and not 0 <= window[key] <= hi - lo
            ):
                out.append(Mismatch(f"{name}.window.{key}", window[key], f"0..{hi - lo}", "ip -s"))
    return out


def test_network_interfaces_match_ip_link_and_addr(tmp_path: Path) -> None:
    """Interfaces, link state, MTU, addresses and counters as `ip -j` reports them."""
    agree(settle(lambda: compare_interfaces(tmp_path)), "network.interfaces")


# -- network.routes --------------------------------------------------------------------


def ip_routes(family: str, table: str) -> list[dict[str, Any]]:
    """`ip -j -<family> route show table <table>`: unicast routes only."""
    routes = json.loads(tool("ip", "-j", f"-{family}", "route", "show", "table", table) or "[]")
    return [r for r in routes if r.get("type", "unicast") == "unicast"]


def _route_key(dst: str, gateway: str, dev: str) -> tuple[str, str, str]:
    """A route as (destination, gateway, device), destinations normalised."""
    if dst == "default":
        dst = "default"
    elif "/" not in dst:
        dst = str(ipaddress.ip_network(dst))
    elif dst in ("0.0.0.0/0", "::/0"):
        dst = "default"
    return dst, gateway or "", dev


def test_network_routes_match_ip_route(tmp_path: Path) -> None:
    """Default routes (both families) and the IPv4 main table as `ip -j route` shows them."""

    def compare() -> list[Mismatch]:
        data = run_check("network.routes", tmp_path).data
        rows = data["routes"]
        out = []
        ours4 = {
            _route_key(r["destination"], r["gateway"], r["iface"])
            for r in rows
            if r["family"] == "IPv4"
        }
        theirs4 = {
            _route_key(r["dst"], r.get("gateway", ""), r.get("dev", ""))
            for r in ip_routes("4", "main")
        }
        if ours4 != theirs4:
            out.append(Mismatch("routes[IPv4]", sorted(ours4), sorted(theirs4), "ip -4 route"))
        for family, table in (("4", "main"), ("6", "all")):
            ours = {
                (r["gateway"], r["iface"], r["metric"])
                for r in rows
                if r["family"] == f"IPv{family}" and r["default"]
            }
            theirs = {
                (r.get("gateway", ""), r.get("dev", ""), r.get("metric", 0))
                for r in ip_routes(family, table)
                if r["dst"] == "default"
            }
            if ours != theirs:
                out.append(
                    Mismatch(
                        f"routes[IPv{family} default]",
                        sorted(ours),
                        sorted(theirs),
                        f"ip -{family} route show table {table}",
                    )
                )
        return out

    agree(settle(compare), "network.routes")


# -- network.tcp -----------------------------------------------------------------------

#: `ss` state names -> /proc/net/tcp names (the check's).
SS_STATES = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "UNCONN": "CLOSE",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}
#: Counters the check reports -> their `nstat` names.
NSTAT = {
    "out_segs": "TcpOutSegs",
    "retrans_segs": "TcpRetransSegs",
    "listen_overflows": "TcpExtListenOverflows",
    "listen_drops": "TcpExtListenDrops",
}


def ss_states() -> Counter[str]:
    """TCP sockets per state, from `ss -H -tan`."""
    counts: Counter[str] = Counter()
    for line in tool("ss", "-H", "-tan").splitlines():
        state = line.split(None, 1)[0] if line.strip() else ""
        if state:
            counts[SS_STATES.get(state, state)] += 1
    return counts


def nstat() -> dict[str, int]:
    """Absolute TCP counters from `nstat -asz` (its history file is left alone)."""
    out = {}
    for line in tool("nstat", "-asz", *NSTAT.values()).splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


@contextmanager
def own_connections(count: int) -> Iterator[tuple[socket.socket, int]]:
    """`count` loopback connections, one in CLOSE_WAIT, and a listener with 2 unaccepted.

    The listener (backlog 7) is yielded with `count`.
    """
    with ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        for _ in range(count + 1):
            client = stack.enter_context(socket.create_connection(server.getsockname()))
            stack.enter_context(server.accept()[0])
        client.close()  # the accepted end of the last one is now in CLOSE_WAIT
        pending = stack.enter_context(socket.socket())
        pending.bind(("127.0.0.1", 0))
        pending.listen(7)
        for _ in range(2):
            stack.enter_context(socket.create_connection(pending.getsockname()))
        yield pending, count


def test_network_tcp_states_and_counters_match_ss_and_nstat(tmp_path: Path) -> None:
    """Socket states as `ss -tan` counts them, counters as `nstat` reads them, ours among them."""
    with own_connections(3) as (pending, count):
        port = pending.getsockname()[1]

        def compare() -> list[Mismatch]:
            states_before, counters_before = ss_states(), nstat()
            data = run_check("network.tcp", tmp_path, thresholds=SHORT_WINDOW).data
            states_after, counters_after = ss_states(), nstat()
            states = data["states"]
            out = []
            for state in sorted(set(states) | set(states_before) | set(states_after)):
                lo, hi = states_before.get(state, 0), states_after.get(state, 0)
                slack = max(2, 0.05 * max(lo, hi))
                if not between(states.get(state, 0), lo, hi, slack):
                    out.append(Mismatch(f"states[{state}]", states.get(state), (lo, hi), "ss -tan"))
            # Ours: 2 ends per connection (+ the 2 unaccepted pairs), one CLOSE_WAIT.
            if states.get("ESTABLISHED", 0) < 2 * count + 4:
                out.append(
                    Mismatch("states[ESTABLISHED]", states.get("ESTABLISHED"), ">= ours", "own")
                )
            if states.get("CLOSE_WAIT", 0) < 1:
                out.append(Mismatch("states[CLOSE_WAIT]", states.get("CLOSE_WAIT"), ">= 1", "own"))
            counters = pick(data, "counters", "counters_since_boot") or {}
            for key, name in NSTAT.items():
                if key not in counters or name not in counters_before or name not in counters_after:
                    continue
                value = (counters_before[name], counters_after[name])
                if not between(counters[key], *value):
                    out.append(Mismatch(f"counters.{key}", counters[key], value, "nstat -asz"))
            # Whatever the check counted over its window happened between our two reads.
            window = data.get("retransmits") or {}
            for key, name in (("sent", "TcpOutSegs"), ("retransmitted", "TcpRetransSegs")):
                if key not in window or name not in counters_before or name not in counters_after:
                    continue
                most = counters_after[name] - counters_before[name]
                if not 0 <= window[key] <= most:
                    out.append(Mismatch(f"retransmits.{key}", window[key], f"0..{most}", "nstat"))
            listener = next(
                (q for q in data.get("listeners", []) if q["address"].endswith(f":{port}")), None
            )
            if listener is None:
                out.append(Mismatch(f"listeners[127.0.0.1:{port}]", None, "listening", "own"))
            else:
                if listener["accept_queue"] != 2:
                    out.append(
                        Mismatch("listeners[].accept_queue", listener["accept_queue"], 2, "own")
                    )
                if listener.get("backlog") not in (None, 7):
                    out.append(Mismatch("listeners[].backlog", listener["backlog"], 7, "listen(7)"))
            return out

        agree(settle(compare), "network.tcp")


# -- network.conntrack and network.dns ---------------------------------------------------


def test_network_conntrack_matches_sysctl(tmp_path: Path) -> None:
    """Table size and entries as `sysctl -n net.netfilter.nf_conntrack_*` prints them."""

    def compare() -> list[Mismatch]:
        before = int(tool("sysctl", "-n", "net.netfilter.nf_conntrack_count"))
        data = run_check("network.conntrack", tmp_path).data
        after = int(tool("sysctl", "-n", "net.netfilter.nf_conntrack_count"))
        out = []
        if not between(data["count"], before, after, slack=max(10, 0.05 * after)):
            out.append(Mismatch("count", data["count"], (before, after), "nf_conntrack_count"))
        most = int(tool("sysctl", "-n", "net.netfilter.nf_conntrack_max"))
        if data["max"] != most:
            out.append(Mismatch("max", data["max"], most, "sysctl -n nf_conntrack_max"))
        return out

    agree(settle(compare), "network.conntrack")


def test_network_dns_nameservers_match_resolv_conf(tmp_path: Path) -> None:
    """Nameservers in resolv.conf order, as awk reads them."""
    data = run_check("network.dns", tmp_path).data
    theirs = tool("awk", '$1 == "nameserver" { print $2 }', "/etc/resolv.conf").split()
    ours = [str(n) for n in data.get("nameservers", [])]
    agree(
        [] if ours == theirs else [Mismatch("nameservers", ours, theirs, "awk resolv.conf")],
        "network.dns",
    )
