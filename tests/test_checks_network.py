"""Network checks against fixture node trees, sample tool output and loopback sockets only."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import network as network_module
from snapshot_agent.checks import network_tcp as network_tcp_module
from snapshot_agent.checks.network import (
    network_interfaces,
    network_routes,
    parse_if_inet6,
    parse_ip_addr_json,
    parse_ipv6_route,
    parse_proc_route,
)
from snapshot_agent.checks.network_firewall import (
    ConntrackFacts,
    FirewallFacts,
    evaluate_port,
    judge_conntrack,
    judge_firewall,
    network_conntrack,
    network_firewall,
    parse_conntrack_stat,
    parse_iptables_save,
    parse_nft_json,
)
from snapshot_agent.checks.network_listening import network_listening
from snapshot_agent.checks.network_probes import (
    DnsFacts,
    Lookup,
    Probe,
    judge_dns,
    judge_reachability,
    network_dns,
    network_reachability,
    parse_endpoint,
    parse_resolv_conf,
)
from snapshot_agent.checks.network_tcp import (
    BrokerConnections,
    Counters,
    ListenQueue,
    TcpConnection,
    TcpFacts,
    TcpTally,
    judge_tcp,
    network_tcp,
    parse_ss_info,
    parse_ss_listen,
    read_broker_connections,
)
from snapshot_agent.config import ChecksConfig, Config, NetworkChecksConfig, RootsConfig
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.ports import (
    DEFAULT_BROKER_PORTS,
    BrokerPorts,
    broker_ports,
    parse_port_list,
)
from snapshot_agent.node.procfs import (
    decode_proc_address,
    is_listening,
    parse_snmp,
    parse_socket_line,
    parse_sockets,
)

from .conftest import fake_tools, fixture_roots, make_context, severities, write_tree


def net_context(
    tmp_path: Path,
    *,
    roots: RootsConfig | None = None,
    thresholds: dict[str, Any] | None = None,
    dns_names: list[str] | None = None,
    endpoints: list[str] | None = None,
) -> Context:
    """make_context plus the checks.network section (make_context has no config argument)."""
    ctx = make_context(tmp_path, roots=roots, thresholds=thresholds)
    ctx.config = Config(
        checks=ChecksConfig(
            roots=roots or RootsConfig(),
            network=NetworkChecksConfig(dns_names=dns_names or [], endpoints=endpoints or []),
        )
    )
    return ctx


# -- /proc/net socket tables (format copied from a live kernel) ------------------------------

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F9A 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 41001 1 0000000026ada52b 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 41002 1 0000000064924085 100 0 0 10 0
   2: 0100007F:1F9A 0100007F:C1C0 01 00000000:00000000 00:00000000 00000000   998        0 41003 1 0000000087cebedc 20 4 0 10 -1
   3: 0200000A:1F9A 0500000A:D431 08 00000000:00000001 00:00000000 00000000   998        0 41004 1 0000000087cebedd 20 4 0 10 -1
   4: 0100007F:C1C0 0100007F:1F9A 06 00000000:00000000 03:00001770 00000000     0        0 0 3 00000000241147fb
"""  # noqa: E501
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 41005 1 000000008117a8fb 100 0 0 10 0
   1: 00000000000000000000000001000000:1F9C 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 41006 1 000000008117a8fc 100 0 0 10 0
"""  # noqa: E501
PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 9059: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000   998        0 41007 2 00000000342e3153 0
 9060: 0200000A:E0F1 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 41008 2 00000000342e3154 0
 9061: garbage
"""  # noqa: E501
PROC_UDP6 = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
)


def test_decode_proc_address() -> None:
    assert decode_proc_address("0100007F:1F9A") == ("127.0.0.1", 8090)
    assert decode_proc_address("00000000:0016") == ("0.0.0.0", 22)
    assert decode_proc_address("00000000000000000000000001000000:1F9C") == ("::1", 8092)
    # IPv6 is four little-endian 32-bit words.
    assert decode_proc_address("000000FD000000000000000002000000:0BB8") == ("fd00::2", 3000)
    assert decode_proc_address("0000000000000000FFFF00000100007F:0050") == (
        "::ffff:127.0.0.1",
        80,
    )
    with pytest.raises(ValueError):
        decode_proc_address("0100:1F9A")


def test_parse_sockets_and_listening() -> None:
    tcp = parse_sockets(PROC_TCP.splitlines(), "tcp")
    assert len(tcp) == 5  # header skipped
    listen = [s for s in tcp if is_listening(s)]
    assert [(s.local_ip, s.local_port, s.inode) for s in listen] == [
        ("127.0.0.1", 8090, 41001),
        ("0.0.0.0", 22, 41002),
    ]
    assert listen[1].rx_queue == 3 and listen[0].uid == 998
    assert tcp[3].state_name == "CLOSE_WAIT" and tcp[3].local_ip == "10.0.0.2"
    tcp6 = parse_sockets(PROC_TCP6.splitlines(), "tcp6")
    assert [s.local for s in tcp6] == ["[::]:3000", "[::1]:8092"]
    udp = parse_sockets(PROC_UDP.splitlines(), "udp")
    # A connected UDP socket is not listening; the garbage line is skipped, not a crash.
    assert [(s.proto, s.local_port, is_listening(s)) for s in udp] == [
        ("udp", 8080, True),
        ("udp", 57585, False),
    ]
    assert parse_socket_line("   1: 0808080808:0035 00000000:0000 07 0:0 0 0 0 0 1", "udp") is None


# -- network.listening ----------------------------------------------------------------------


def listening_node(
    node: Path, *, broker: bool = True, tcp: str = PROC_TCP, owners: dict[int, int] | None = None
) -> Path:
    """A node with socket tables, an iggy-server (pid 4242) and sshd (pid 812) owning inodes."""
    write_tree(
        node,
        {
            "proc/net/tcp": tcp,
            "proc/net/tcp6": PROC_TCP6,
            "proc/net/udp": PROC_UDP,
            "proc/net/udp6": PROC_UDP6,
            "proc/812/comm": "sshd\n",
            "proc/812/cmdline": "sshd: /usr/sbin/sshd -D\0",
        },
    )
    if broker:
        write_tree(
            node,
            {"proc/4242/comm": "iggy-server\n", "proc/4242/cmdline": "/usr/bin/iggy-server\0"},
        )
    owners = (
        owners
        if owners is not None
        else {41001: 4242, 41005: 4242, 41006: 4242, 41007: 4242, 41002: 812}
    )
    for fd, (inode, pid) in enumerate(sorted(owners.items()), start=3):
        fd_dir = node / f"proc/{pid}/fd"
        fd_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(f"socket:[{inode}]", fd_dir / str(fd))
    (node / "proc/812/fd").mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/null", node / "proc/812/fd/0")
    return node


def test_listening_broker_on_all_ports_passes(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path,
        roots=fixture_roots(listening_node(node)),
        thresholds=dict(network_listening.thresholds),
    )
    result = network_listening.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert "iggy-server pid 4242" in result.summary
    assert result.data["broker_pids"] == [4242]
    rows = {r["port"]: r for r in result.data["broker_ports"]}
    assert rows["tcp/8090"]["process"] == "iggy-server (4242)" and rows["udp/8080"]["listening"]
    messages = " | ".join(f.message for f in result.findings)
    # 8090 on 127.0.0.1 only: remote clients cannot connect (informational).
    assert "tcp/8090 (Iggy TCP), tcp/8092 (Iggy WebSocket) listen on loopback only" in messages
    # sshd on 0.0.0.0:22 is listed as exposure, with its owner.
    assert "tcp 0.0.0.0:22 (sshd, pid 812)" in messages
    assert set(severities(result)) == {Severity.INFO}


def test_listening_missing_port_warns(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path,
        roots=fixture_roots(listening_node(node)),
        thresholds={**network_listening.thresholds, "broker_ports": "tcp:8090,tcp:8092,tcp:9090"},
    )
    result = network_listening.run(ctx)
    assert result.status == Status.WARN
    assert result.summary.startswith(
        "not listening: tcp/9090 (Iggy replication), while iggy-server pid 4242 runs here"
    )
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert "server config" in warn.remediation and warn.subject == "iggy-server"


def test_listening_port_held_by_another_process_warns(tmp_path: Path, node: Path) -> None:
    owners = {41001: 812, 41005: 4242, 41006: 4242, 41007: 4242, 41002: 812}
    ctx = net_context(
        tmp_path,
        roots=fixture_roots(listening_node(node, owners=owners)),
        thresholds=dict(network_listening.thresholds),
    )
    result = network_listening.run(ctx)
    assert result.status == Status.WARN
    assert "tcp/8090 (Iggy TCP) is held by tcp 127.0.0.1:8090 (sshd, pid 812)" in result.summary


def test_listening_without_broker_is_informational(tmp_path: Path, node: Path) -> None:
    sshd_only = "\n".join(PROC_TCP.splitlines()[:3:2]) + "\n"  # header + 0.0.0.0:22
    listening_node(node, broker=False, tcp=sshd_only, owners={41002: 812})
    for table in ("tcp6", "udp"):
        (node / f"proc/net/{table}").write_text(PROC_UDP6)  # header only
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_listening.thresholds)
    )
    result = network_listening.run(ctx)
    assert result.status == Status.PASS
    assert "no iggy-server process" in result.summary
    assert result.findings[0].message.startswith("the broker does not run here")


def test_listening_ports_but_no_visible_process(tmp_path: Path, node: Path) -> None:
    """Ports up, no iggy-server visible (container): missing ports still warn, with a hint."""
    ctx = net_context(
        tmp_path,
        roots=fixture_roots(listening_node(node, broker=False, owners={})),
        thresholds={**network_listening.thresholds, "broker_ports": "tcp:8090,tcp:8093"},
    )
    result = network_listening.run(ctx)
    assert result.status == Status.WARN
    assert "another PID namespace" in result.summary


#: A server.toml with TCP moved to 9999 and WebSocket turned off (QUIC and HTTP as shipped).
IGGY_TOML = """\
[system]
path = "local_data"

[tcp]
enabled = true
address = "127.0.0.1:9999"

[quic]
address = "0.0.0.0:8080"

[http]
enabled = true
address = "[::]:3000"

[websocket]
enabled = false
address = "127.0.0.1:8092"
"""


def test_listening_ports_come_from_the_iggy_config(tmp_path: Path, node: Path) -> None:
    """WebSocket off and TCP on 9999: 8092 is not expected, 9999 is (and is missing)."""
    listening_node(node)
    write_tree(node, {"etc/iggy/server.toml": IGGY_TOML})
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_listening.thresholds)
    )
    result = network_listening.run(ctx)
    assert [r["port"] for r in result.data["broker_ports"]] == ["tcp/9999", "udp/8080", "tcp/3000"]
    assert result.data["broker_ports_source"] == "iggy config"
    assert result.data["broker_ports_from"] == "/etc/iggy/server.toml"
    transports = {t["transport"]: t for t in result.data["transports"]}
    assert transports["websocket"]["enabled"] is False and not transports["websocket"]["expected"]
    assert transports["quic"]["enabled"] is True  # `enabled` absent: on
    assert result.status == Status.FAIL  # the config enables it: clients are refused now
    assert result.summary == (
        "not listening: tcp/9999 (Iggy TCP), while iggy-server pid 4242 runs here "
        "(ports from /etc/iggy/server.toml)"
    )
    assert not any("8092" in f.message for f in result.findings)
    fail = next(f for f in result.findings if f.severity == Severity.FAIL)
    assert "IGGY_<TRANSPORT>_ADDRESS" in fail.remediation


def test_listening_moved_port_listening_passes(tmp_path: Path, node: Path) -> None:
    # The broker's 127.0.0.1 socket on 9999 (0x270F) instead of 8090.
    tcp = PROC_TCP.replace("0100007F:1F9A 00000000:0000 0A", "0100007F:270F 00000000:0000 0A")
    listening_node(node, tcp=tcp)
    write_tree(node, {"etc/iggy/server.toml": IGGY_TOML})
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_listening.thresholds)
    )
    result = network_listening.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert result.summary.endswith(
        "broker ports listening: tcp/9999, udp/8080, tcp/3000 "
        "(iggy-server pid 4242; ports from /etc/iggy/server.toml)"
    )


def test_listening_config_without_websocket_section(tmp_path: Path, node: Path) -> None:
    """A 0.5.x config has no [websocket]: 8092 is not expected."""
    listening_node(node)
    config = IGGY_TOML.split("[websocket]")[0].replace("127.0.0.1:9999", "127.0.0.1:8090")
    write_tree(node, {"etc/iggy/server.toml": config})
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_listening.thresholds)
    )
    result = network_listening.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert [r["port"] for r in result.data["broker_ports"]] == ["tcp/8090", "udp/8080", "tcp/3000"]


def test_listening_unparsable_config_falls_back_to_threshold(tmp_path: Path, node: Path) -> None:
    listening_node(node)
    write_tree(node, {"etc/iggy/server.toml": "[tcp\naddress = \n"})
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_listening.thresholds)
    )
    result = network_listening.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert result.data["broker_ports_source"] == "threshold"
    assert [r["port"] for r in result.data["broker_ports"]] == [
        "tcp/8090",
        "udp/8080",
        "tcp/3000",
        "tcp/8092",
    ]
    assert "ports from checks.thresholds.network.listening.broker_ports" in result.summary
    assert any(
        f.message.startswith("Iggy config /etc/iggy/server.toml could not be used (not valid TOML")
        and f.severity == Severity.INFO
        for f in result.findings
    )


def test_listening_without_config_says_threshold(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path,
        roots=fixture_roots(listening_node(node)),
        thresholds=dict(network_listening.thresholds),
    )
    result = network_listening.run(ctx)
    assert result.data["broker_ports_source"] == "threshold"
    assert result.summary.endswith(
        "(iggy-server pid 4242; ports from checks.thresholds.network.listening.broker_ports)"
    )


def test_parse_port_list() -> None:
    assert parse_port_list("tcp:8090, udp:8080 TCP:3000") == (
        [("tcp", 8090), ("udp", 8080), ("tcp", 3000)],
        [],
    )
    assert parse_port_list("tcp:99999,sctp:1,8090") == ([], ["tcp:99999", "sctp:1", "8090"])


# -- network.tcp ----------------------------------------------------------------------------

SNMP = """\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 3319 0 0 0 0 0 3319 2180 0 0 0 0 0 0 0 0 0 2180
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 36 2 0 0 0 3248 200000 3000 0 51 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 70 0 0 71 0 0 0 0 0
"""  # noqa: E501
NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 0 0 0 12 12 35
IpExt: InNoRoutes InTruncatedPkts InMcastPkts
IpExt: 0 0 0
"""  # noqa: E501


def test_parse_snmp() -> None:
    tables = parse_snmp(SNMP)
    assert tables["Tcp"]["RetransSegs"] == 3000 and tables["Tcp"]["MaxConn"] == -1
    assert parse_snmp(NETSTAT)["TcpExt"]["ListenOverflows"] == 12


def tcp_node(node: Path, tcp: str = PROC_TCP) -> Path:
    return write_tree(
        node,
        {
            "proc/net/tcp": tcp,
            "proc/net/tcp6": PROC_TCP6,
            "proc/net/snmp": SNMP,
            "proc/net/netstat": NETSTAT,
            "proc/sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
        },
    )


TCP_THRESHOLDS = {**network_tcp.thresholds, "sample_s": 0.0, "max_sample_s": 0.0}


def test_tcp_pass_with_history_as_info(tmp_path: Path, node: Path) -> None:
    ctx = net_context(tmp_path, roots=fixture_roots(tcp_node(node)), thresholds=TCP_THRESHOLDS)
    result = network_tcp.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert result.data["states"] == {
        "CLOSE_WAIT": 1,
        "ESTABLISHED": 1,
        "LISTEN": 4,
        "TIME_WAIT": 1,
    }
    assert result.summary.startswith("7 TCP sockets (1 established, 1 time-wait, 1 close-wait)")
    # 1.5% retransmitted since boot and 12 past overflows: worth knowing, not judged.
    messages = [f.message for f in result.findings]
    assert any("since boot" in m and "retransmitted" in m for m in messages)
    assert any("12 listen queue overflows since boot" in m for m in messages)
    assert result.data["listeners"][1] == {
        "address": "0.0.0.0:22",
        "accept_queue": 3,
        "backlog": None,
    }


def test_tcp_close_wait_pileup_warns(tmp_path: Path, node: Path) -> None:
    line = (
        "   {i}: 0200000A:1F9A 0500000A:{port:04X} 08 00000000:00000001 00:00000000 "
        "00000000   998        0 5{i} 1 0000000087cebedd 20 4 0 10 -1\n"
    )
    many = PROC_TCP + "".join(line.format(i=i, port=40000 + i) for i in range(10, 130))
    ctx = net_context(
        tmp_path, roots=fixture_roots(tcp_node(node, many)), thresholds=TCP_THRESHOLDS
    )
    result = network_tcp.run(ctx)
    assert result.status == Status.WARN
    assert result.summary.startswith("121 TCP sockets in CLOSE_WAIT")
    assert "port 8090: 121" in result.summary
    assert result.data["close_wait_by_port"] == [{"port": 8090, "count": 121}]


def tcp_facts(
    before: Counters, after: Counters, queues: list[ListenQueue] | None = None
) -> TcpFacts:
    return TcpFacts(TcpTally(), before, after, 0.5, 28232, tables_read=2, queues=queues)


@pytest.mark.parametrize(
    ("retrans", "status"),
    [(10, Status.PASS), (300, Status.WARN), (800, Status.FAIL)],
)
def test_tcp_sampled_retransmits(retrans: int, status: Status) -> None:
    facts = tcp_facts(Counters(100_000, 500, 0, 0), Counters(110_000, 500 + retrans, 0, 0))
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == status
    if status != Status.PASS:
        assert f"over 0.5 s ({retrans} of 10000 segments)" in result.summary
        assert result.findings[0].subject == "/proc/net/snmp"


def test_tcp_listen_overflows_now_and_full_queue_warn() -> None:
    queues = parse_ss_listen(
        "LISTEN 0      128      0.0.0.0:2024  0.0.0.0:*\n"
        "LISTEN 4097   4096   127.0.0.1:8090 0.0.0.0:*\n"
        "LISTEN 0      5              *:33707       *:*\n"
    )
    assert queues[1] == ListenQueue("127.0.0.1:8090", 4097, 4096)
    facts = tcp_facts(Counters(100, 0, 12, 12), Counters(200, 0, 20, 20), queues)
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.WARN
    assert "ListenOverflows +8" in result.findings[0].message
    assert "somaxconn" in result.findings[0].remediation
    assert any("accept queue of 127.0.0.1:8090 is full" in f.message for f in result.findings)


# -- network.tcp: retransmits over a window, node-wide and on the broker's connections -------


def snmp_with(out_segs: int, retrans_segs: int) -> str:
    """The SNMP fixture with these Tcp OutSegs and RetransSegs (both since boot)."""
    return SNMP.replace(
        "Tcp: 1 200 120000 -1 36 2 0 0 0 3248 200000 3000 0 51 0",
        f"Tcp: 1 200 120000 -1 36 2 0 0 0 3248 {out_segs} {retrans_segs} 0 51 0",
    )


class TrafficClock:
    """Stands in for `time` in network_tcp: sleeping advances a clock and the node's traffic.

    The node has sent `out_segs` and resent `retrans_segs` since boot; from then on it
    sends `sent_per_s` segments a second, `retrans_per_s` of them resent, written to the
    fixture's /proc/net/snmp as the clock moves (the check reads it before and after).
    """

    def __init__(self, node: Path, sent_per_s: float, retrans_per_s: float) -> None:
        self.node, self.now = node, 0.0
        self.sent_per_s, self.retrans_per_s = sent_per_s, retrans_per_s
        self.sleep(0.0)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        sent = 5_000_000 + int(self.sent_per_s * self.now + 1e-9)
        resent = 1_000 + int(self.retrans_per_s * self.now + 1e-9)
        write_tree(self.node, {"proc/net/snmp": snmp_with(sent, resent)})


def traffic_run(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    sent_per_s: float,
    retrans_per_s: float,
    module: Any = network_tcp_module,
) -> Any:
    """Run network.tcp (the given module's) on a fixture node with this much traffic."""
    tcp_node(node)
    monkeypatch.setattr(module, "time", TrafficClock(node, sent_per_s, retrans_per_s))
    thresholds = dict(module.network_tcp.thresholds)
    ctx = net_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    return module.network_tcp.run(ctx)


def test_tcp_quiet_node_with_loss_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 80 segments/s, a fifth of them resent: 40 segments in 0.5 s used to be "too little
    # traffic" (it took 1000), so a lossy quiet node passed. The window now stretches
    # until 100 segments were sent.
    result = traffic_run(tmp_path, node, monkeypatch, sent_per_s=80, retrans_per_s=16)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith(
        "19.23% of TCP segments retransmitted over 1.3 s (20 of 104 segments), >= 5%"
    )
    assert result.data["retransmits"] == {
        "window_s": 1.3,
        "sent": 104,
        "retransmitted": 20,
        "pct": 19.231,
        "judged": True,
    }


def test_tcp_quiet_node_with_a_few_probes_passes(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 segments/s and 2 tail-loss probes in the half second: 1.3% of 150, but two
    # resent segments say nothing about the path.
    result = traffic_run(tmp_path, node, monkeypatch, sent_per_s=300, retrans_per_s=4)
    assert result.status == Status.PASS, result.summary
    assert "retransmits 1.33% over 0.5 s (2 of 150 segments), too few retransmits" in (
        result.summary
    )


def test_tcp_handful_of_segments_is_not_judged(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 segments/s, 2 of them resent: 30 segments in the longest window are not enough
    # to call a rate, so the summary says what was seen instead of a verdict.
    result = traffic_run(tmp_path, node, monkeypatch, sent_per_s=10, retrans_per_s=2)
    assert result.status == Status.PASS, result.summary
    assert "retransmits not judged: 30 segments sent over 3.0 s (fewer than 100)" in (
        result.summary
    )
    assert "since boot 0.02% (information only)" in result.summary
    assert result.data["retransmits"]["judged"] is False


def ss_block(local: str, peer: str, segs_out: int, retrans: str = "", state: str = "ESTAB") -> str:
    """One connection as `ss -H -tin` prints it (trailing spaces and all)."""
    info = f" retrans:{retrans}" if retrans else ""
    return (
        f"{state + ' ' if state else ''}0      0      {local} {peer}\n"
        f"\t cubic wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 bytes_sent:9000 "
        f"segs_out:{segs_out} segs_in:{segs_out} data_segs_out:{segs_out - 2}{info} "
        "send 231Mbps lastsnd:4 lastrcv:4 lastack:4 bytes_retrans:2896 minrtt:0.2   \n"
    )


SS_TIN = (
    ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1000, "0/10")
    + ss_block("10.0.0.2:8090", "10.0.0.8:40100", 5000)
    # No State column (as with a state filter), IPv6, unacked retransmits, lost segments.
    + ss_block("[::ffff:10.0.0.2]:3000", "[::ffff:10.0.0.9]:60000", 400, "2/9 lost:2", state="")
    + ss_block("10.0.0.2:22", "10.0.0.5:50000", 900, "0/400")  # not a broker port
    + "TIME-WAIT 0 0 10.0.0.2:8090 10.0.0.7:51000\n"  # no tcp_info at all
    + "garbage\n\tsegs_out:1\n"
)


def test_tcp_reads_broker_connections_from_ss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, {"ss": [(("-H", "-tin"), SS_TIN, 0)]})
    ctx = make_context(tmp_path)
    conns, problem = read_broker_connections(ctx, [8090, 3000], "ss-ti.txt")
    assert problem == ""
    assert ctx.commands[0]["argv"] == ["ss", "-H", "-tin", "( sport = :8090 or sport = :3000 )"]
    assert conns == [
        TcpConnection("10.0.0.2:8090", "10.0.0.7:51234", 1000, 10, 0, 0),
        TcpConnection("10.0.0.2:8090", "10.0.0.8:40100", 5000, 0, 0, 0),
        TcpConnection("[::ffff:10.0.0.2]:3000", "[::ffff:10.0.0.9]:60000", 400, 9, 2, 2),
        TcpConnection("10.0.0.2:8090", "10.0.0.7:51000"),
    ]


def test_tcp_ss_failure_is_said_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, {"ss": [((), "", 1)]})
    conns, problem = read_broker_connections(make_context(tmp_path), [8090], "ss-ti.txt")
    assert conns == [] and "exited 1" in problem


def broker_sample(before: str, after: str, window_s: float = 0.5) -> BrokerConnections:
    """The broker's connections at both ends of a window, from `ss -ti` output."""
    ports = broker_ports(None, {"broker_ports": DEFAULT_BROKER_PORTS}, "test")
    return BrokerConnections(ports, parse_ss_info(before), parse_ss_info(after), window_s=window_s)


def test_tcp_broker_connection_loss_fails() -> None:
    # The node sends 10000 segments and resends 20 (0.2%: fine), but one client of the
    # broker loses a fifth of what the broker sends it.
    before = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1000, "0/10") + ss_block(
        "10.0.0.2:8090", "10.0.0.8:40100", 5000
    )
    after = (
        ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1200, "1/50")
        + ss_block("10.0.0.2:8090", "10.0.0.8:40100", 7000)
        + ss_block("10.0.0.2:8090", "10.0.0.9:33000", 30)  # opened during the window
    )
    facts = tcp_facts(Counters(100_000, 500, 0, 0), Counters(110_000, 520, 0, 0))
    facts.broker = broker_sample(before, after)
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith(
        "the broker's TCP connections retransmit over 0.5 s: "
        "10.0.0.2:8090 <- 10.0.0.7:51234 20.0% (40 of 200 segments) "
        "(all 3 connections on tcp/8090, tcp/3000, tcp/8092: 1.79%, 40 of 2230 segments), >= 5%"
    )
    assert result.findings[-1].subject == "ss -ti"
    rows = result.data["broker_connections"]["connections"]
    assert rows[0]["peer"] == "10.0.0.7:51234" and rows[0]["retransmitted_in_window"] == 40
    assert rows[0]["retransmitted_since_open"] == 50 and rows[0]["retransmits_unacked"] == 1
    assert {r["peer"]: r["sent_in_window"] for r in rows}["10.0.0.9:33000"] == 30


def test_tcp_broker_connection_past_loss_is_info() -> None:
    # The connection lost a quarter of its segments long ago; over the window it resends
    # nothing. Its lifetime totals inform, they do not judge.
    before = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 2000, "0/500")
    after = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 2300, "0/500")
    facts = tcp_facts(Counters(100_000, 500, 0, 0), Counters(110_000, 500, 0, 0))
    facts.broker = broker_sample(before, after)
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.PASS, result.summary
    assert (
        "broker connections on tcp/8090, tcp/3000, tcp/8092 0.00% over 0.5 s "
        "(0 of 300 segments), 1 connections" in result.summary
    )
    assert any(
        f.severity == Severity.INFO and "retransmitted since they opened" in f.message
        for f in result.findings
    )


def fake_ss(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    before: str,
    after: str,
    module: Any = network_tcp_module,
) -> Path:
    """A stateful fake `ss` on PATH: `-ltn` lists a listener on 8090; the first `-tin` call
    prints `before`, later ones `after`. Returns the file its `-tin` calls are logged to."""
    listen = "LISTEN 0 4096 0.0.0.0:8090 0.0.0.0:*\n"
    state = tmp_path / "ss-calls"
    script = (
        "import sys, pathlib\n"
        f"state = pathlib.Path({str(state)!r})\n"
        "args = sys.argv[1:]\n"
        f"if '-ltn' in args: sys.stdout.write({listen!r}); sys.exit(0)\n"
        "calls = state.read_text().splitlines() if state.exists() else []\n"
        "state.write_text('\\n'.join([*calls, repr(args)]))\n"
        f"sys.stdout.write([{before!r}, {after!r}][min(len(calls), 1)])\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "ss").write_text(f"#!{sys.executable}\n{script}")
    (bindir / "ss").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(module, "ss_usable", lambda ctx: True)
    return state


def test_tcp_broker_connections_through_the_whole_check(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real sampling path: `ss -ti` before and after a window that the fixture's
    # counters cover (a busy, healthy node), one broker client losing 20%.
    before = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1000, "0/10")
    after = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1200, "1/50")
    state = fake_ss(tmp_path, monkeypatch, before, after)
    result = traffic_run(tmp_path, node, monkeypatch, sent_per_s=20_000, retrans_per_s=10)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith("the broker's TCP connections retransmit over 0.5 s")
    assert len(state.read_text().splitlines()) == 2  # before and after the window
    assert result.data["retransmits"]["pct"] == 0.05  # the node as a whole is fine
    assert result.data["listeners"] == [
        {"address": "0.0.0.0:8090", "accept_queue": 0, "backlog": 4096}
    ]


def test_tcp_quiet_broker_with_lifetime_loss_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quiet broker (20 segments/s) losing a fifth of what it sends, on a quiet node:
    # 60 segments over the whole 3 s window are too few to judge a rate, node-wide or on
    # the connection, so this used to pass. Since it opened, the connection resent 412 of
    # 2060 segments: a lifetime ratio, which warns (and says so) rather than fails.
    before = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 2000, "0/400")
    after = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 2060, "1/412")
    state = fake_ss(tmp_path, monkeypatch, before, after)
    result = traffic_run(tmp_path, node, monkeypatch, sent_per_s=20, retrans_per_s=4)
    assert len(state.read_text().splitlines()) == 2
    assert result.status == Status.WARN, result.summary
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.message.startswith(
        "1 of the broker's connections sent too little over the 3.0 s window to judge their "
        "rate (fewer than 100 segments) and retransmitted >= 5% of their segments over their "
        "lifetime: 10.0.0.2:8090 <- 10.0.0.7:51234 20.0% since it opened (412 of 2060 "
        "segments; 12 of 60 segments over the window)"
    )
    assert "lifetime ratios, since each connection opened (open at least 3.0 s" in warn.message
    assert warn.subject == "ss -ti" and "retrans:X/Y" in warn.remediation
    assert result.data["retransmits"]["judged"] is False  # the node-wide rate: not judged
    assert result.data["broker_connections"]["judged"] is False


def test_tcp_quiet_broker_connection_lifetime_never_fails() -> None:
    # Even a connection that resent half of everything since it opened only warns: a
    # lifetime ratio may be old, the window is what fails a node.
    before = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1000, "0/500")
    after = ss_block("10.0.0.2:8090", "10.0.0.7:51234", 1010, "1/505")
    facts = tcp_facts(Counters(100_000, 500, 0, 0), Counters(110_000, 500, 0, 0))
    facts.broker = broker_sample(before, after, window_s=3.0)
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.WARN, result.summary
    assert "50.0% since it opened (505 of 1010 segments" in result.summary


@pytest.mark.parametrize(
    ("after", "why"),
    [
        # 60 quiet segments, none resent, where a 25% lifetime ratio predicts 15: over.
        (ss_block("10.0.0.2:8090", "10.0.0.7:51234", 2060, "0/500"), "loss is over"),
        # A short-lived connection: 300 segments in all are too few for a lifetime ratio.
        (ss_block("10.0.0.2:8090", "10.0.0.7:51234", 300, "0/75"), "too short a life"),
    ],
)
def test_tcp_quiet_broker_connection_with_old_or_little_loss_passes(after: str, why: str) -> None:
    before = after.replace("segs_out:2060", "segs_out:2000").replace("segs_out:300", "segs_out:240")
    facts = tcp_facts(Counters(100_000, 500, 0, 0), Counters(110_000, 500, 0, 0))
    facts.broker = broker_sample(before, after, window_s=3.0)
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.PASS, (why, result.summary)
    assert any(
        f.severity == Severity.INFO and "retransmitted since they opened" in f.message
        for f in result.findings
    ), why


@pytest.fixture
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket, int]]:
    """A TCP connection on 127.0.0.1 this test owns: (server side, client side, port)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            server, _ = listener.accept()
            with server:
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                yield server, client, port


def exchange(server: socket.socket, client: socket.socket, count: int) -> None:
    """The server side sends `count` one-byte segments, each read before the next."""
    for _ in range(count):
        server.sendall(b"m")
        assert client.recv(1) == b"m"


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2) here")
def test_tcp_real_loopback_connection_through_ss(
    tmp_path: Path, loopback_pair: tuple[socket.socket, socket.socket, int]
) -> None:
    # Our own connection, seen by the real `ss` through the filter the check builds:
    # the broker side (local port = the listening port) with its counters, and a window
    # over which it sent 120 segments and lost none.
    server, client, port = loopback_pair
    ctx = make_context(tmp_path)
    exchange(server, client, 5)
    before, problem = read_broker_connections(ctx, [port], "before.txt")
    assert problem == "", problem
    client_port = client.getsockname()[1]
    assert [(c.local, c.peer) for c in before] == [
        (f"127.0.0.1:{port}", f"127.0.0.1:{client_port}")
    ]
    assert before[0].segs_out >= 5 and before[0].retrans_total == 0
    exchange(server, client, 120)
    after, _ = read_broker_connections(ctx, [port], "after.txt")
    ports = BrokerPorts([("tcp", port)], {}, "threshold", "test")
    facts = tcp_facts(Counters(0, 0, 0, 0), Counters(0, 0, 0, 0))
    facts.broker = BrokerConnections(ports, before, after, window_s=0.2)
    [window] = facts.broker.windows()
    assert window.window.sent >= 120 and window.window.retransmitted == 0
    result = judge_tcp(facts, TCP_THRESHOLDS)
    assert result.status == Status.PASS, result.summary
    assert f"broker connections on tcp/{port} 0.00% over 0.2 s" in result.summary


# -- network.interfaces ---------------------------------------------------------------------

IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fd000000000000000000000000000003 05 40 00 82     eth1
fd000000000000000000000000000004 06 40 00 82  docker0
"""


def iface_tree(name: str, **values: str | int) -> dict[str, str]:
    stats = {
        "rx_packets": 1_000_000,
        "tx_packets": 900_000,
        "rx_errors": 0,
        "tx_errors": 0,
        "rx_dropped": 12,
        "tx_dropped": 0,
    }
    attrs: dict[str, str | int] = {
        "operstate": "up",
        "flags": "0x1003",
        "mtu": 1500,
        "type": 1,
        "carrier_changes": 2,
    }
    files = {}
    for key, value in values.items():
        (stats if key in stats else attrs)[key] = value
    for key, value in attrs.items():
        files[f"sys/class/net/{name}/{key}"] = f"{value}\n"
    for key, value in stats.items():
        files[f"sys/class/net/{name}/statistics/{key}"] = f"{value}\n"
    return files


def interfaces_node(node: Path, **eth1: str | int) -> Path:
    eth1 = {"speed": 25000, **eth1}
    write_tree(
        node,
        {
            "proc/net/if_inet6": IF_INET6,
            **iface_tree("lo", operstate="unknown", flags="0x9", mtu=65536, type=772),
            **iface_tree("eth0", speed=10000),
            **iface_tree("eth1", **eth1),
            # docker0 without containers: a bridge with no ports is down, with its address.
            **iface_tree("docker0", operstate="down", flags="0x1003"),
            "sys/devices/virtual/net/docker0/uevent": "DEVTYPE=bridge\n",
            "sys/devices/virtual/net/lo/uevent": "",
        },
    )
    (node / "sys/class/net/docker0/brif").mkdir()
    return node


#: No window: these tests judge one reading (the window tests use CounterClock).
IF_THRESHOLDS = {**network_interfaces.thresholds, "sample_s": 0.0, "max_sample_s": 0.0}


def test_interfaces_pass(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path, roots=fixture_roots(interfaces_node(node)), thresholds=IF_THRESHOLDS
    )
    result = network_interfaces.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert result.summary.startswith("4 interfaces, 2 up with addresses (eth0 fd00::2/64 mtu 1500")
    assert [f.message for f in result.findings] == [
        "docker0 is a bridge without ports, down as expected"
    ]
    rows = {r["name"]: r for r in result.data["interfaces"]}
    assert rows["eth0"]["addresses"] == "fd00::2/64" and rows["eth0"]["speed_mbps"] == 10000
    assert rows["docker0"]["virtual"] and result.data["addresses_from"] == "/proc/net/if_inet6"


@pytest.mark.parametrize(
    ("eth1", "expected"),
    [
        ({"operstate": "down"}, "eth1 has addresses (fd00::3/64) but its link is down"),
        ({"flags": "0x1002", "operstate": "down"}, "eth1 has addresses (fd00::3/64) but is admin"),
        ({"speed": 100}, "eth1 negotiated 100 Mb/s (< 1000 Mb/s)"),
    ],
)
def test_interfaces_warn(
    tmp_path: Path, node: Path, eth1: dict[str, str | int], expected: str
) -> None:
    ctx = net_context(
        tmp_path, roots=fixture_roots(interfaces_node(node, **eth1)), thresholds=IF_THRESHOLDS
    )
    result = network_interfaces.run(ctx)
    assert result.status == Status.WARN
    assert result.summary.startswith(expected), result.summary
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert warn.remediation and warn.subject.startswith("/sys/class/net/eth1")


class CounterClock:
    """Stands in for `time` in checks.network: sleeping advances interfaces' counters.

    `per_second` maps "eth1/rx_errors" (a statistics counter, or "eth1/carrier_changes")
    to how fast it grows from the fixture's value; the check reads the counters before
    and after the window.
    """

    def __init__(self, node: Path, per_second: dict[str, float]) -> None:
        self.node, self.per_second, self.now = node, per_second, 0.0
        self.start = {key: int((node / self.rel(key)).read_text()) for key in per_second}

    @staticmethod
    def rel(key: str) -> str:
        name, _, counter = key.partition("/")
        sub = "" if counter == "carrier_changes" else "statistics/"
        return f"sys/class/net/{name}/{sub}{counter}"

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for key, rate in self.per_second.items():
            value = self.start[key] + int(rate * self.now + 1e-9)
            write_tree(self.node, {self.rel(key): f"{value}\n"})


def window_run(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    eth1_per_second: dict[str, float],
    **eth1: str | int,
) -> Any:
    """network.interfaces on a busy eth0 and eth1 whose counters grow at `eth1_per_second`."""
    interfaces_node(node, **eth1)
    rates = {f"eth0/{k}": v for k, v in BUSY.items()}
    rates |= {f"eth1/{k}": v for k, v in {**BUSY, **eth1_per_second}.items()}
    monkeypatch.setattr(network_module, "time", CounterClock(node, rates))
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_interfaces.thresholds)
    )
    return network_interfaces.run(ctx)


BUSY = {"rx_packets": 20_000, "tx_packets": 20_000}  # per second: 10000 each way in 0.5 s


@pytest.mark.parametrize(
    ("per_second", "status", "text"),
    [
        ({"rx_errors": 18}, Status.PASS, ""),  # 9 of 10000: under 0.1%
        (
            {"rx_errors": 20},
            Status.WARN,
            "eth1: 10 of 10000 received packets errors (0.10% over 0.5 s)",
        ),
        ({"tx_dropped": 198}, Status.PASS, ""),
        (
            {"tx_dropped": 200},
            Status.WARN,
            "eth1: 100 of 10000 sent packets dropped (1.00% over 0.5 s)",
        ),
        (
            {"carrier_changes": 4},
            Status.WARN,
            "eth1 lost its link during the 0.5 s sample (2 carrier",
        ),
    ],
)
def test_interfaces_errors_over_the_window_warn(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    per_second: dict[str, float],
    status: Status,
    text: str,
) -> None:
    result = window_run(tmp_path, node, monkeypatch, per_second)
    assert result.status == status, result.summary
    assert result.summary.startswith(text)
    assert result.data["window_s"] == 0.5


def test_interfaces_old_counters_since_boot_inform(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0.5% receive errors, 10% send drops and 20 link losses since boot, none now: a
    # switch reboot months ago is not a reason to warn until the next reboot.
    result = window_run(
        tmp_path, node, monkeypatch, {}, rx_errors=5000, tx_dropped=90_000, carrier_changes=40
    )
    assert result.status == Status.PASS, result.summary
    assert "errors and drops over 0.5 s under thresholds" in result.summary
    messages = [f.message for f in result.findings if f.severity == Severity.INFO]
    assert any(
        m.startswith("eth1: 5000 of 1000000 received packets errors (0.50% since boot")
        for m in messages
    )
    assert any(
        m.startswith("eth1: 90000 of 900000 sent packets dropped (10.00% since boot")
        for m in messages
    )
    assert any(m.startswith("eth1 lost and regained its link 20 times") for m in messages)


def test_interfaces_quiet_link_with_a_few_errors_is_not_judged(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 packets/s each way: 300 over the longest window, 10 of them errors (3.3%):
    # too few packets to call a rate.
    result = window_run(
        tmp_path, node, monkeypatch, {"rx_packets": 100, "tx_packets": 100, "rx_errors": 3.34}
    )
    assert result.status == Status.PASS, result.summary
    assert result.data["window_s"] == 3.0
    assert (
        next(r for r in result.data["interfaces"] if r["name"] == "eth1")["window"]["rx_errors"]
        == 10
    )


def test_interfaces_band_names() -> None:
    assert {"warn_error_ratio", "warn_drop_ratio", "warn_carrier_changes"} <= set(IF_THRESHOLDS)
    assert not {"error_ratio_warn", "drop_ratio_warn", "carrier_changes_warn"} & set(IF_THRESHOLDS)


def test_interfaces_mtu_mismatch_and_jumbo_are_info(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path, roots=fixture_roots(interfaces_node(node, mtu=9000)), thresholds=IF_THRESHOLDS
    )
    result = network_interfaces.run(ctx)
    assert result.status == Status.PASS
    messages = [f.message for f in result.findings]
    assert "interfaces use different MTUs (eth0 1500, eth1 9000)" in messages
    assert "eth1 uses jumbo frames (MTU 9000)" in messages


def test_parse_address_sources() -> None:
    # Copied from `ip -j addr` on a Debian 12 VM.
    ip_j = (
        '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,'
        '"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,'
        '"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00",'
        '"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host",'
        '"label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]},'
        '{"ifindex":2,"ifname":"ifb0","flags":["BROADCAST","NOARP"],"mtu":1500,"addr_info":[]},'
        '{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],'
        '"mtu":1400,"addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,'
        '"broadcast":"192.0.2.255","scope":"global","label":"eth0"},{"family":"inet6",'
        '"local":"fe80::fc:ff:fe00:1","prefixlen":64,"scope":"link"}]}]'
    )
    assert parse_ip_addr_json(ip_j) == {
        "lo": [("127.0.0.1", 8, "host")],
        "ifb0": [],
        "eth0": [("192.0.2.2", 24, "global"), ("fe80::fc:ff:fe00:1", 64, "link")],
    }
    assert parse_ip_addr_json("Error: not JSON") == {}
    assert parse_if_inet6(IF_INET6)["eth0"] == [
        ("fe80::fc:ff:fe00:1", 64, "link"),
        ("fd00::2", 64, "global"),
    ]


# -- network.routes -------------------------------------------------------------------------

PROC_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
"""  # noqa: E501
# The last line is the kernel's "unreachable" ::/0 entry on lo: not a default route.


def test_parse_routes() -> None:
    v4 = parse_proc_route(PROC_ROUTE)
    assert [(r.destination, r.gateway, r.is_default) for r in v4] == [
        ("0.0.0.0/0", "192.0.2.1", True),
        ("192.0.2.0/24", "", False),
    ]
    v6 = parse_ipv6_route(IPV6_ROUTE)
    assert next(r for r in v6 if r.is_default).gateway == "fd00::1"
    assert v6[3].destination == "::/0" and not v6[3].is_default


def routes_node(node: Path, route: str, ipv6: str, eth0: str = "up") -> Path:
    return write_tree(
        node,
        {
            "proc/net/route": route,
            "proc/net/ipv6_route": ipv6,
            "sys/class/net/eth0/operstate": eth0 + "\n",
        },
    )


def test_routes_pass(tmp_path: Path, node: Path) -> None:
    ctx = net_context(tmp_path, roots=fixture_roots(routes_node(node, PROC_ROUTE, IPV6_ROUTE)))
    result = network_routes.run(ctx)
    assert result.status == Status.PASS
    assert result.summary == (
        "default route(s): IPv4 via 192.0.2.1 dev eth0, IPv6 via fd00::1 dev eth0"
    )
    assert (tmp_path / "artifacts/proc-net-route.txt").read_text() == PROC_ROUTE


def test_routes_without_default_warn(tmp_path: Path, node: Path) -> None:
    v4 = "\n".join(PROC_ROUTE.splitlines()[::2]) + "\n"  # header + the connected route
    v6 = "\n".join(IPV6_ROUTE.splitlines()[::2]) + "\n"  # no default, only lo's unreachable
    ctx = net_context(tmp_path, roots=fixture_roots(routes_node(node, v4, v6)))
    result = network_routes.run(ctx)
    assert result.status == Status.WARN
    assert result.summary.startswith("no default route (IPv4 or IPv6)")
    assert "ip route add default" in result.findings[0].remediation


def test_routes_default_via_down_link_warns(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path, roots=fixture_roots(routes_node(node, PROC_ROUTE, IPV6_ROUTE, "down"))
    )
    result = network_routes.run(ctx)
    assert result.status == Status.WARN
    assert "default route uses eth0, whose link is down" in result.summary


# -- network.dns ----------------------------------------------------------------------------

RESOLV = """\
# Generated by NetworkManager
search corp.example svc.cluster.local cluster.local
nameserver 10.0.0.2
nameserver 10.0.0.3
options timeout:2 attempts:3 ndots:5 rotate
"""
DNS_THRESHOLDS = dict(network_dns.thresholds)


def test_parse_resolv_conf() -> None:
    conf = parse_resolv_conf(RESOLV + "; comment\ndomain only.example\nnameserver\n")
    assert conf.nameservers == ["10.0.0.2", "10.0.0.3"]
    assert conf.search == ["only.example"]  # the last search/domain line wins
    assert conf.options == {"timeout": "2", "attempts": "3", "ndots": "5", "rotate": ""}
    assert conf.option_int("timeout", 5) == 2 and conf.option_int("attempts", 2) == 3


def test_dns_resolves_localhost(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"etc/resolv.conf": RESOLV})
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=DNS_THRESHOLDS, dns_names=["localhost"]
    )
    result = network_dns.run(ctx)
    assert result.status == Status.PASS, result.summary
    assert result.summary.startswith("nameservers 10.0.0.2, 10.0.0.3; 1 configured names resolved")
    [lookup] = result.data["lookups"]
    assert lookup["ok"] and "127.0.0.1" in lookup["addresses"]
    # ndots:5 with search domains is pointed out, not judged.
    assert [f.severity for f in result.findings] == [Severity.INFO]
    assert "ndots:5 with 3 search domains" in result.findings[0].message


def test_dns_without_names_judges_resolv_conf_only(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"etc/resolv.conf": "nameserver 10.0.0.2\n"})
    ctx = net_context(tmp_path, roots=fixture_roots(node), thresholds=DNS_THRESHOLDS)
    result = network_dns.run(ctx)
    assert result.status == Status.PASS and not result.findings
    assert "no names configured to resolve (checks.network.dns_names)" in result.summary


def test_dns_missing_or_dangling_resolv_conf_fails(tmp_path: Path, node: Path) -> None:
    (node / "etc").mkdir()
    ctx = net_context(tmp_path, roots=fixture_roots(node), thresholds=DNS_THRESHOLDS)
    result = network_dns.run(ctx)
    assert result.status == Status.FAIL
    assert result.summary.startswith("/etc/resolv.conf does not exist")
    os.symlink("/run/systemd/resolve/stub-resolv.conf", node / "etc/resolv.conf")
    result = network_dns.run(ctx)
    assert result.status == Status.FAIL
    assert "dangling symlink to /run/systemd/resolve/stub-resolv.conf" in result.summary


def test_dns_stub_resolver(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"etc/resolv.conf": "nameserver 127.0.0.53\noptions edns0 trust-ad\n"})
    ctx = net_context(tmp_path, roots=fixture_roots(node), thresholds=DNS_THRESHOLDS)
    result = network_dns.run(ctx)
    assert result.status == Status.WARN
    assert "systemd-resolved seems not to run" in result.summary
    write_tree(node, {"run/systemd/resolve/resolv.conf": "nameserver 10.0.0.53\n"})
    result = network_dns.run(ctx)
    assert result.status == Status.PASS
    assert "its upstream servers are 10.0.0.53" in result.findings[0].message


@pytest.mark.parametrize(
    ("lookup", "status", "text"),
    [
        (Lookup("s3.example", ["10.1.1.1"], 12.0), Status.PASS, "1 configured names resolved"),
        (Lookup("s3.example", ["10.1.1.1"], 900.0), Status.WARN, "took 900 ms to resolve"),
        (Lookup("s3.example", error="Name or service not known"), Status.FAIL, "does not resolve"),
        (
            Lookup("s3.example", error="no answer in time", timed_out=True),
            Status.FAIL,
            "did not resolve within 3000 ms",
        ),
    ],
)
def test_dns_lookup_verdicts(lookup: Lookup, status: Status, text: str) -> None:
    facts = DnsFacts(parse_resolv_conf("nameserver 10.0.0.2\n"), lookups=[lookup])
    result = judge_dns(facts, DNS_THRESHOLDS)
    assert result.status == status and text in result.summary


# -- network.conntrack ----------------------------------------------------------------------

CONNTRACK_STAT = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000123  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000010 00000000 00000000  00000000 00000000 00000000 00000000
00000123  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000006 00000000 00000000  00000000 00000000 00000000 00000000
"""  # noqa: E501


@pytest.mark.parametrize(
    ("count", "status"), [(1000, Status.PASS), (210_000, Status.WARN), (255_000, Status.FAIL)]
)
def test_conntrack_verdicts(tmp_path: Path, node: Path, count: int, status: Status) -> None:
    write_tree(
        node,
        {
            "proc/sys/net/netfilter/nf_conntrack_count": f"{count}\n",
            "proc/sys/net/netfilter/nf_conntrack_max": "262144\n",
        },
    )
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_conntrack.thresholds)
    )
    result = network_conntrack.run(ctx)
    assert result.status == status
    assert result.data["max"] == 262144
    if status != Status.PASS:
        assert "net.netfilter.nf_conntrack_max=524288" in result.findings[0].remediation


def test_conntrack_skipped_when_not_loaded(tmp_path: Path, node: Path) -> None:
    ctx = net_context(
        tmp_path, roots=fixture_roots(node), thresholds=dict(network_conntrack.thresholds)
    )
    result = network_conntrack.run(ctx)
    assert result.status == Status.SKIPPED and "not loaded" in result.summary


def test_conntrack_stat_drops_are_info() -> None:
    stats = parse_conntrack_stat(CONNTRACK_STAT)
    assert stats["drop"] == 22 and stats["insert_failed"] == 1
    result = judge_conntrack(ConntrackFacts(10, 100, stats), dict(network_conntrack.thresholds))
    assert result.status == Status.PASS
    assert result.findings[0].message.endswith("drop 22, insert_failed 1")


# -- network.firewall -----------------------------------------------------------------------


def nft_doc(rules: list[list[dict[str, Any]]], policy: str = "accept") -> str:
    """`nft -j list ruleset` output for an inet filter table with an input chain."""
    items: list[dict[str, Any]] = [
        {
            "metainfo": {
                "version": "1.0.6",
                "release_name": "Lester Gooch #5",
                "json_schema_version": 1,
            }
        },
        {"table": {"family": "inet", "name": "filter", "handle": 1}},
        {
            "chain": {
                "family": "inet",
                "table": "filter",
                "name": "input",
                "handle": 1,
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": policy,
            }
        },
        {"chain": {"family": "inet", "table": "filter", "name": "broker", "handle": 2}},
    ]
    for handle, expr in enumerate(rules, start=3):
        chain = "broker" if any("return" in e for e in expr) else "input"
        items.append(
            {
                "rule": {
                    "family": "inet",
                    "table": "filter",
                    "chain": chain,
                    "handle": handle,
                    "expr": expr,
                }
            }
        )
    return json.dumps({"nftables": items})


def dport(proto: str, right: Any) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": proto, "field": "dport"}},
            "right": right,
        }
    }


CT_ESTABLISHED = {
    "match": {
        "op": "in",
        "left": {"ct": {"key": "state"}},
        "right": ["established", "related"],
    }
}
IIF_LO = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}
SADDR = {
    "match": {
        "op": "==",
        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
        "right": {"prefix": {"addr": "10.0.0.0", "len": 8}},
    }
}
FW_THRESHOLDS = dict(network_firewall.thresholds)


def judge_nft(text: str) -> Any:
    rs = parse_nft_json(text)
    assert rs is not None
    return judge_firewall(FirewallFacts(rulesets=[rs], tools=["nft"]), FW_THRESHOLDS)


def test_firewall_accepting_ruleset_passes() -> None:
    result = judge_nft(
        nft_doc(
            [
                [CT_ESTABLISHED, {"accept": None}],
                [IIF_LO, {"accept": None}],
                [
                    dport("tcp", {"set": [22, 8090, 3000, 8092]}),
                    {"counter": {"packets": 1, "bytes": 60}},
                    {"accept": None},
                ],
                [dport("udp", 8080), {"accept": None}],
                [{"drop": None}],
            ],
            policy="drop",
        )
    )
    assert result.status == Status.PASS, result.summary
    assert result.summary.startswith("5 rules; input: inet filter input policy drop (5 rules)")
    verdicts = {r["port"]: r["verdict"] for r in result.data["broker_ports"]}
    assert verdicts == {
        "tcp/8090": "accept",
        "udp/8080": "accept",
        "tcp/3000": "accept",
        "tcp/8092": "accept",
    }


def test_firewall_drop_on_broker_port_warns() -> None:
    result = judge_nft(
        nft_doc(
            [
                [CT_ESTABLISHED, {"accept": None}],
                [dport("tcp", {"range": [8085, 8091]}), {"reject": {"type": "tcp reset"}}],
                [dport("th", 8080), {"drop": None}],
            ]
        )
    )
    assert result.status == Status.WARN
    warns = [f for f in result.findings if f.severity == Severity.WARN]
    assert [w.message for w in warns] == [
        "the firewall rejects new connections to tcp/8090 (Iggy TCP) "
        "(nft inet filter input handle 4)",
        "the firewall drops new connections to udp/8080 (Iggy QUIC) "
        "(nft inet filter input handle 5)",
    ]
    assert "dport 8090 accept" in warns[0].remediation


def test_firewall_policy_drop_and_source_restriction_are_info() -> None:
    result = judge_nft(
        nft_doc(
            [
                [SADDR, dport("tcp", 3000), {"drop": None}],
                [dport("tcp", 22), {"accept": None}],
                [{"jump": {"target": "broker"}}],
                [dport("tcp", 8092), {"return": None}],
            ],
            policy="drop",
        )
    )
    assert result.status == Status.PASS
    verdicts = {r["port"]: r["verdict"] for r in result.data["broker_ports"]}
    assert verdicts["tcp/8090"] == "policy-drop" and verdicts["tcp/3000"] == "policy-drop"
    assert any("no rule accepts tcp/8090" in f.message for f in result.findings)


def test_firewall_restricted_when_policy_accepts() -> None:
    result = judge_nft(nft_doc([[SADDR, dport("tcp", 3000), {"drop": None}]]))
    assert result.status == Status.PASS
    assert any(
        f.message.startswith("tcp/3000 (Iggy HTTP) is dropped for some sources")
        for f in result.findings
    )


IPTABLES_SAVE = """\
# Generated by iptables-save v1.8.9 (legacy) on Mon Jun  3 10:00:00 2024
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [120:9000]
:BROKER - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 3000,8092 -m comment --comment "iggy http/ws" -j ACCEPT
-A INPUT -p udp -m udp --dport 8080 -j BROKER
-A INPUT -p tcp -m tcp --dport 8090 -j REJECT --reject-with icmp-port-unreachable
-A BROKER -j LOG --log-prefix "quic: "
-A BROKER -j ACCEPT
COMMIT
# Completed on Mon Jun  3 10:00:00 2024
"""


def test_firewall_iptables_save() -> None:
    rs = parse_iptables_save(IPTABLES_SAVE)
    [chain] = rs.input_chains()
    assert chain.policy == "drop" and len(chain.rules) == 6
    assert evaluate_port(rs, chain, "udp", 8080).verdict == "accept"
    assert evaluate_port(rs, chain, "tcp", 3000).verdict == "accept"
    assert evaluate_port(rs, chain, "tcp", 9999).verdict == "policy-drop"
    result = judge_firewall(FirewallFacts(rulesets=[rs], tools=["iptables-save"]), FW_THRESHOLDS)
    assert result.status == Status.WARN
    assert result.summary == (
        "the firewall rejects new connections to tcp/8090 (Iggy TCP) (iptables filter INPUT rule 6)"
    )
    assert result.data["base_chains"][0]["policy"] == "drop"


def test_firewall_skipped_without_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither nft nor iptables-save on PATH
    result = network_firewall.run(net_context(tmp_path, thresholds=FW_THRESHOLDS))
    assert result.status == Status.SKIPPED
    assert result.summary == "neither `nft` nor `iptables-save` is installed"


def test_firewall_judges_the_iggy_config_ports(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ports from server.toml: 9999 instead of 8090, no WebSocket."""
    fake_tools(tmp_path, monkeypatch, {"iptables-save": [((), IPTABLES_SAVE, 0)]})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nft, no ip6tables-save
    write_tree(node, {"etc/iggy/server.toml": IGGY_TOML})
    ctx = net_context(tmp_path, roots=fixture_roots(node), thresholds=FW_THRESHOLDS)
    result = network_firewall.run(ctx)
    verdicts = {r["port"]: r["verdict"] for r in result.data["broker_ports"]}
    assert verdicts == {"tcp/9999": "policy-drop", "udp/8080": "accept", "tcp/3000": "accept"}
    assert result.data["broker_ports_source"] == "iggy config"
    # The REJECT on 8090 no longer matters: TCP moved to 9999.
    assert result.status == Status.PASS, result.summary
    assert result.summary.endswith("(ports from /etc/iggy/server.toml)")
    assert any("no rule accepts tcp/9999 (Iggy TCP)" in f.message for f in result.findings)


def test_firewall_reports_unusable_threshold_entries() -> None:
    """network.firewall shares network.listening's port list, findings included."""
    rs = parse_nft_json(nft_doc([]))
    assert rs is not None
    thresholds = {**FW_THRESHOLDS, "broker_ports": "tcp:8090,8080"}
    result = judge_firewall(FirewallFacts(rulesets=[rs], tools=["nft"]), thresholds)
    assert result.status == Status.WARN
    assert result.summary == "threshold broker_ports has entries that are not proto:port: 8080"
    assert result.findings[0].subject == "checks.thresholds.network.firewall.broker_ports"
    assert [r["port"] for r in result.data["broker_ports"]] == ["tcp/8090"]


def test_firewall_empty_and_unreadable() -> None:
    assert parse_nft_json("not json") is None
    rs = parse_nft_json('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}')
    assert rs is not None
    result = judge_firewall(FirewallFacts(rulesets=[rs], tools=["nft"]), FW_THRESHOLDS)
    assert result.status == Status.PASS and result.summary == "no firewall rules loaded (nft)"


# -- network.reachability -------------------------------------------------------------------


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 (the kernel completes handshakes from the backlog)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REACH_THRESHOLDS = dict(network_reachability.thresholds)


def test_reachability_pass(tmp_path: Path, loopback_server: int) -> None:
    ctx = net_context(
        tmp_path, thresholds=REACH_THRESHOLDS, endpoints=[f"127.0.0.1:{loopback_server}"]
    )
    result = network_reachability.run(ctx)
    assert result.status == Status.PASS, result.summary
    [row] = result.data["endpoints"]
    assert row["address"] == "127.0.0.1" and row["connect_ms"] is not None
    assert result.summary.startswith(f"1 endpoints reachable: 127.0.0.1:{loopback_server}")


def test_reachability_refused_fails(tmp_path: Path, loopback_server: int) -> None:
    port = closed_port()
    ctx = net_context(
        tmp_path,
        thresholds=REACH_THRESHOLDS,
        endpoints=[f"127.0.0.1:{loopback_server}", f"127.0.0.1:{port}", "no-port-here"],
    )
    result = network_reachability.run(ctx)
    assert result.status == Status.FAIL
    assert result.summary == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert [f.severity for f in result.findings] == [Severity.WARN, Severity.FAIL]
    assert "'no-port-here' is not host:port" in result.findings[0].message


def test_reachability_slow_warns_and_none_configured_skips(tmp_path: Path) -> None:
    result = judge_reachability([Probe("s3.example:443", "10.1.1.1", 812.0)], [], REACH_THRESHOLDS)
    assert result.status == Status.WARN and "took 812 ms" in result.summary
    skipped = network_reachability.run(net_context(tmp_path, thresholds=REACH_THRESHOLDS))
    assert skipped.status == Status.SKIPPED
    assert "configure checks.network.endpoints" in skipped.summary


def test_parse_endpoint() -> None:
    assert parse_endpoint("s3.eu-west-1.amazonaws.com:443") == ("s3.eu-west-1.amazonaws.com", 443)
    assert parse_endpoint("[::1]:8090") == ("::1", 8090)
    assert parse_endpoint("::1:8090") is None
    assert parse_endpoint("host:0") is None and parse_endpoint("host") is None
