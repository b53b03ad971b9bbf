"""sysctl.network, sysctl.vm, sysctl.fs and sysctl.all against fixture node trees."""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import sysctl as sysctl_module
from snapshot_agent.checks.sysctl import (
    as_ints,
    dirty_limits,
    judge_network,
    parse_reserved_ports,
    parse_snmp6,
    read_network,
    softnet_dropped,
    sysctl_all,
    sysctl_fs,
    sysctl_network,
    sysctl_vm,
)
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.procfs import parse_meminfo, parse_snmp, parse_swaps

from .conftest import fixture_roots, make_context, write_tree

# A short window keeps the tests that run the whole check fast.
NET_T = {**sysctl_network.thresholds, "sample_s": 0.1}
VM_T = dict(sysctl_vm.thresholds)
FS_T = dict(sysctl_fs.thresholds)

# Debian 12 defaults on a 16 GB host.
NET_DEFAULTS = {
    "net/core/somaxconn": "4096",
    "net/ipv4/tcp_max_syn_backlog": "4096",
    "net/core/rmem_max": "212992",
    "net/core/wmem_max": "212992",
    "net/ipv4/tcp_rmem": "4096\t131072\t6291456",
    "net/ipv4/tcp_wmem": "4096\t16384\t4194304",
    "net/core/netdev_max_backlog": "1000",
    "net/ipv4/ip_local_port_range": "32768\t60999",
    "net/ipv4/ip_local_reserved_ports": "",
    "net/ipv4/tcp_keepalive_time": "7200",
    "net/ipv4/tcp_keepalive_intvl": "75",
    "net/ipv4/tcp_keepalive_probes": "9",
    "net/ipv4/tcp_tw_reuse": "2",
}


def netstat(listen_overflows: int = 0, prune: int = 0, req_full_drop: int = 0) -> str:
    """/proc/net/netstat in the kernel's layout (a subset of the TcpExt columns).

    As in the kernel, ListenDrops counts every listener drop, ListenOverflows and
    TCPReqQFullDrop included.
    """
    listen_drops = listen_overflows + req_full_drop
    return (
        "TcpExt: SyncookiesSent SyncookiesRecv PruneCalled RcvPruned ListenOverflows "
        "ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop\n"
        f"TcpExt: 0 0 {prune} 0 {listen_overflows} {listen_drops} 0 {req_full_drop}\n"
        "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 0 0\n"
    )


SNMP = (
    "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors "
    "IgnoredMulti MemErrors\nUdp: 73 0 {errs} 74 {errs} 0 0 0 0\n"
)
SNMP6 = "Udp6InDatagrams                 \t12\nUdp6RcvbufErrors                \t{errs}\n"
SOFTNET = "0000000a 00000000 00000000 00000000\n00000d2a {drop} 00000001 00000000\n"


def counter_files(**counters: int) -> dict[str, str]:
    """The /proc/net counter files for one moment (values since boot)."""
    return {
        "proc/net/netstat": netstat(
            counters.get("listen_overflows", 0),
            counters.get("prune", 0),
            counters.get("req_full_drop", 0),
        ),
        "proc/net/snmp": SNMP.format(errs=counters.get("udp_errors", 0)),
        "proc/net/snmp6": SNMP6.format(errs=counters.get("udp6_errors", 0)),
        "proc/net/softnet_stat": SOFTNET.format(drop=f"{counters.get('softnet', 0):08x}"),
    }


def net_node(node: Path, overrides: dict[str, str] | None = None, **counters: int) -> Path:
    values = {**NET_DEFAULTS, **(overrides or {})}
    files = {f"proc/sys/{k}": v + "\n" for k, v in values.items()}
    return write_tree(node, {**files, **counter_files(**counters)})


class Window:
    """A fake clock and sleep for read_network: during the sleep the counters move on."""

    def __init__(self, node: Path, **after: int) -> None:
        self.node, self.after, self.now = node, after, 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        write_tree(self.node, counter_files(**self.after))
        self.now += seconds


def judge_window(
    tmp_path: Path, node: Path, thresholds: dict[str, Any] | None = None, **after: int
) -> Result:
    """sysctl.network over a 0.5 s window during which the counters reach `after`."""
    window = Window(node, **after)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds or NET_T)
    facts = read_network(ctx, 0.5, sleep=window.sleep, clock=window.clock)
    assert facts.window_s == 0.5
    return judge_network(facts, thresholds or NET_T)


# ---------------------------------------------------------------- parsers


def test_parsers() -> None:
    snmp = parse_snmp(SNMP.format(errs=5))
    assert snmp["Udp"]["RcvbufErrors"] == 5 and snmp["Ip"]["DefaultTTL"] == 64
    assert parse_snmp6(SNMP6.format(errs=7)) == {"Udp6InDatagrams": 12, "Udp6RcvbufErrors": 7}
    assert softnet_dropped(SOFTNET.format(drop="000001f4")) == 500
    assert parse_reserved_ports("8090,3000-3002") == [(8090, 8090), (3000, 3002)]
    assert parse_reserved_ports("") == []
    assert as_ints("4096\t131072 6291456") == [4096, 131072, 6291456] and as_ints("x") is None
    assert sysctl_fix("net.ipv4.tcp_rmem", "4096 131072 16777216").startswith(
        '`sysctl -w net.ipv4.tcp_rmem="4096 131072 16777216"`'
    )
    assert "`vm.swappiness = 10` to /etc/sysctl.d/99-iggy.conf" in sysctl_fix("vm.swappiness", 10)


# ---------------------------------------------------------------- sysctl.network


def test_network_samples_a_window_the_runner_starts_early() -> None:
    assert sysctl_network.sampling_s == 0.5 and sysctl_network.thresholds["sample_s"] == 0.5
    assert sysctl_network.timeout_s is not None and sysctl_network.timeout_s > 2
    # The bands are rates over the window; the old since-boot counts are gone.
    assert NET_T["warn_listen_drops_per_s"] == 1.0 and "warn_listen_drops" not in NET_T


def test_network_defaults_pass_with_info(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(net_node(node)), thresholds=NET_T)
    result = sysctl_network.run(ctx)
    assert result.status == Status.PASS
    assert all(f.severity == Severity.INFO for f in result.findings)
    subjects = {f.subject for f in result.findings}
    # rmem/wmem_max below the 4 MiB suggestion, keepalive 2 h: informational only.
    assert "/proc/sys/net/core/rmem_max" in subjects
    assert "/proc/sys/net/ipv4/tcp_keepalive_time" in subjects
    rmem = next(f for f in result.findings if f.subject == "/proc/sys/net/core/rmem_max")
    assert "no pressure measured" in rmem.message
    assert "sysctl -w net.core.rmem_max=4194304" in rmem.remediation
    assert result.data["counters_since_boot"]["ListenOverflows"] == 0
    assert result.data["counters_over_window"]["ListenOverflows"] == 0
    # The summary says what was measured over what window.
    assert "over 0.1 s: listen drops +0, UDP buffer errors +0 (since boot: 0, 0)" in (
        result.summary
    )
    assert (tmp_path / "artifacts/counters.json").exists()


def test_network_old_listen_overflows_since_boot_pass(tmp_path: Path, node: Path) -> None:
    """50 overflows months ago (ListenDrops 50 too, the same drops) and none now: a pass."""
    net_node(node, {"net/core/somaxconn": "128"}, listen_overflows=50)
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    assert result.status == Status.PASS
    somaxconn = next(f for f in result.findings if f.subject == "/proc/sys/net/core/somaxconn")
    assert somaxconn.severity == Severity.INFO
    assert "no pressure measured (ListenOverflows +0 over 0.1 s; 50 since boot" in (
        somaxconn.message
    )
    assert "(since boot: 50, 0)" in result.summary  # ListenDrops, not 50 + 50


def test_network_old_drops_since_boot_pass(tmp_path: Path, node: Path) -> None:
    """Softnet, UDP and prune counters high since boot, still during the window: a pass."""
    net_node(
        node,
        {"net/ipv4/tcp_rmem": "4096\t131072\t1048576"},
        softnet=5000,
        udp_errors=1000,
        udp6_errors=1000,
        prune=1000,
        req_full_drop=300,
    )
    thresholds = {**NET_T, "min_netdev_max_backlog": 4096}
    result = sysctl_network.run(
        make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    )
    assert result.status == Status.PASS, result.summary
    assert {f.severity for f in result.findings} == {Severity.INFO}
    backlog = next(f for f in result.findings if "netdev_max_backlog" in f.message)
    assert "SoftnetDropped +0 over 0.1 s; 5000 since boot" in backlog.message


def test_network_low_somaxconn_with_overflows_warns(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/core/somaxconn": "128"}, listen_overflows=50)
    result = judge_window(tmp_path, node, listen_overflows=550)
    assert result.status == Status.WARN
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.subject == "/proc/sys/net/core/somaxconn"
    # Counted once: ListenDrops (which includes the overflows) is not added to them.
    assert "ListenOverflows +500 over 0.5 s = 1e+03/s; 550 since boot" in warn.message
    assert "ListenDrops" not in warn.message
    assert "net.core.somaxconn = 4096` to /etc/sysctl.d/99-iggy.conf" in warn.remediation
    assert result.data["counters_over_window"]["ListenDrops"] == 500


def test_network_syn_queue_drops_judge_tcp_max_syn_backlog(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/ipv4/tcp_max_syn_backlog": "512"})
    result = judge_window(tmp_path, node, req_full_drop=20)
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.subject == "/proc/sys/net/ipv4/tcp_max_syn_backlog"
    assert "TCPReqQFullDrop +20, TCPReqQFullDoCookies +0 over 0.5 s" in warn.message
    assert "ListenDrops" not in warn.message and "ListenOverflows" not in warn.message


def test_network_real_listen_overflows_during_the_window_warn(tmp_path: Path) -> None:
    """A real listener on 127.0.0.1 with a full accept queue, overflowed during the window."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # accept queue of one; nobody accepts

        def overflow(seconds: float) -> None:
            for _ in range(8):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                client.setblocking(False)
                client.connect_ex(server.getsockname())
                clients.append(client)
            time.sleep(seconds)

        # The live node: every somaxconn is "below" this minimum, so overflows warn.
        thresholds = {**NET_T, "min_somaxconn": 1 << 30}
        ctx = make_context(tmp_path, thresholds=thresholds)
        result = judge_network(read_network(ctx, 0.3, sleep=overflow), thresholds)
    finally:
        for sock in [server, *clients]:
            sock.close()
    somaxconn = next(f for f in result.findings if f.subject == "/proc/sys/net/core/somaxconn")
    assert somaxconn.severity == Severity.WARN, somaxconn.message
    assert "the kernel counted pressure (ListenOverflows +" in somaxconn.message
    assert result.data["counters_over_window"]["ListenOverflows"] >= 1


def test_network_udp_buffer_errors_warn(tmp_path: Path, node: Path) -> None:
    net_node(node, udp_errors=100)
    result = judge_window(tmp_path, node, udp_errors=200, udp6_errors=300)
    assert result.status == Status.WARN
    # Receive errors judge rmem_max; wmem_max has no send errors, so it stays a hint.
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.subject == "/proc/sys/net/core/rmem_max"
    assert "UdpRcvbufErrors +100, Udp6RcvbufErrors +300 over 0.5 s" in warn.message
    # A few errors, under the rate, do not warn.
    net_node(node, udp_errors=100)
    result = judge_window(tmp_path, node, udp_errors=102)
    assert result.status == Status.PASS
    rmem = next(f for f in result.findings if f.subject == "/proc/sys/net/core/rmem_max")
    assert "drops below warn_udp_drops_per_s 10/s (UdpRcvbufErrors +2" in rmem.message


def test_network_tcp_prunes_during_the_window_warn(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/ipv4/tcp_rmem": "4096\t131072\t1048576"}, prune=1000)
    result = judge_window(tmp_path, node, prune=1100)
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.subject == "/proc/sys/net/ipv4/tcp_rmem"
    assert "PruneCalled +100 over 0.5 s = 200/s; 1100 since boot" in warn.message
    assert 'net.ipv4.tcp_rmem="4096 131072 4194304"' in warn.remediation


def test_network_counters_reset_or_unreadable_are_not_judged(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/core/somaxconn": "128"}, listen_overflows=500)
    result = judge_window(tmp_path, node, listen_overflows=10)  # went backwards: not a delta
    assert result.status == Status.PASS
    somaxconn = next(f for f in result.findings if f.subject == "/proc/sys/net/core/somaxconn")
    assert "counters not readable" in somaxconn.message
    assert "listen drops ?" in result.summary


def test_network_broker_port_in_ephemeral_range(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/ipv4/ip_local_port_range": "1024\t65535"})
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    assert result.status == Status.WARN
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert "8090,8080,3000,8092" in warn.message
    assert "net.ipv4.ip_local_reserved_ports=8090,8080,3000,8092" in warn.remediation
    # Reserved ports, or a user threshold without them, clear it.
    net_node(
        node,
        {
            "net/ipv4/ip_local_port_range": "1024\t65535",
            "net/ipv4/ip_local_reserved_ports": "3000,8080,8090-8092",
        },
    )
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    assert result.status == Status.PASS


#: A server.toml that moves TCP to 9090 and turns QUIC and WebSocket off.
IGGY_TOML_MOVED = """\
[tcp]
address = "0.0.0.0:9090"

[quic]
enabled = false
address = "0.0.0.0:8080"

[http]
address = "0.0.0.0:3000"

[websocket]
enabled = false
"""


def test_network_ephemeral_range_judges_the_ports_of_server_toml(
    tmp_path: Path, node: Path
) -> None:
    """tcp 9090 from server.toml inside the range is reported; the default 8090 is not."""
    net_node(node, {"net/ipv4/ip_local_port_range": "8000\t9999"})
    # Without a config the threshold's defaults are judged: 8090, 8080 and 8092 clash.
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.message.startswith("broker port(s) 8090,8080,8092 (ports from checks.thresholds")
    assert result.data["broker_ports_source"] == "threshold"
    write_tree(node, {"etc/iggy/server.toml": IGGY_TOML_MOVED})
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    assert result.status == Status.WARN
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.message.startswith(
        "broker port(s) 9090 (ports from /etc/iggy/server.toml) lie inside the ephemeral range "
        "8000-9999"
    )
    assert "8090" not in warn.message and "8080" not in warn.message
    assert "net.ipv4.ip_local_reserved_ports=9090" in warn.remediation
    assert result.data["broker_ports"] == ["tcp/9090", "tcp/3000"]
    assert result.data["broker_ports_from"] == "/etc/iggy/server.toml"


def test_network_broker_ports_threshold_is_proto_port(tmp_path: Path, node: Path) -> None:
    """The threshold has network.listening's format; the old bare numbers are pointed out."""
    assert NET_T["broker_ports"] == "tcp:8090,udp:8080,tcp:3000,tcp:8092"
    net_node(node, {"net/ipv4/ip_local_port_range": "1024\t65535"})
    thresholds = {**NET_T, "broker_ports": "tcp:8090,3000"}
    result = sysctl_network.run(
        make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    )
    messages = [f.message for f in result.findings if f.severity == Severity.WARN]
    assert "threshold broker_ports has entries that are not proto:port: 3000" in messages
    assert any(m.startswith("broker port(s) 8090 (") for m in messages)


def test_network_softnet_drops_warn(tmp_path: Path, node: Path) -> None:
    net_node(node, softnet=5000)
    thresholds = {**NET_T, "min_netdev_max_backlog": 4096}
    result = judge_window(tmp_path, node, thresholds, softnet=5100)
    assert result.status == Status.WARN
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert "SoftnetDropped +100 over 0.5 s = 200/s; 5100 since boot" in warn.message


# ---------------------------------------------------------------- sysctl.vm

VM_DEFAULTS = {
    "vm/swappiness": "60",
    "vm/dirty_ratio": "20",
    "vm/dirty_background_ratio": "10",
    "vm/dirty_bytes": "0",
    "vm/dirty_background_bytes": "0",
    "vm/max_map_count": "65530",
    "vm/overcommit_memory": "0",
    "vm/overcommit_ratio": "50",
    "vm/zone_reclaim_mode": "0",
}


def meminfo(
    total_gib: int, commit_pct: int = 40, free_gib: float | None = None, file_gib: float = 0
) -> str:
    """/proc/meminfo; by default a quarter free and a quarter page cache."""
    total = total_gib * 1024 * 1024
    free = int(free_gib * 1024 * 1024) if free_gib is not None else total // 4
    file_kb = int(file_gib * 1024 * 1024) if free_gib is not None else total // 4
    return (
        f"MemTotal:       {total} kB\n"
        f"MemFree:        {free} kB\n"
        f"MemAvailable:   {free + file_kb} kB\n"
        f"Active(file):   {file_kb // 2} kB\n"
        f"Inactive(file): {file_kb // 2} kB\n"
        "Dirty:              1204 kB\n"
        "Writeback:             0 kB\n"
        f"CommitLimit:    {total // 2} kB\n"
        f"Committed_AS:   {total // 2 * commit_pct // 100} kB\n"
    )


SWAPS_DISK = (
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    "/dev/dm-1                               partition\t2097148\t\t{used}\t\t-2\n"
)


def vm_node(
    node: Path,
    overrides: dict[str, str] | None = None,
    gib: int = 16,
    commit_pct: int = 40,
    free_gib: float | None = None,
    file_gib: float = 0,
) -> Path:
    files = {f"proc/sys/{k}": v + "\n" for k, v in {**VM_DEFAULTS, **(overrides or {})}.items()}
    files["proc/meminfo"] = meminfo(gib, commit_pct, free_gib, file_gib)
    files["proc/swaps"] = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    return write_tree(node, files)


def test_vm_parsers() -> None:
    [swap] = parse_swaps(SWAPS_DISK.format(used=1024))
    assert swap.name == "/dev/dm-1" and swap.used_kib == 1024 and swap.disk_backed
    assert not parse_swaps("F T S U P\n/dev/zram0 partition 100 0 100\n")[0].disk_backed
    mem = parse_meminfo(meminfo(16))
    values = {k.replace("/", "."): v for k, v in VM_DEFAULTS.items()}
    limits = dirty_limits(values, mem)
    # The ratios apply to MemTotal (16 GiB), not to this moment's free + file pages.
    assert limits is not None
    assert limits.foreground == 16 * 1024**3 * 20 // 100
    assert limits.background == 16 * 1024**3 * 10 // 100
    assert limits.basis == "vm.dirty_ratio = 20% of MemTotal 16 GiB"
    by_bytes = dirty_limits({**values, "vm.dirty_bytes": "1073741824"}, mem)
    assert by_bytes is not None and by_bytes.foreground == 1073741824
    assert by_bytes.basis == "vm.dirty_bytes"
    # A background limit at or above the limit is halved, as the kernel does.
    assert by_bytes.background == 1073741824 // 2
    assert dirty_limits({**values, "vm.dirty_ratio": "x"}, mem) is None


def test_vm_defaults_pass(tmp_path: Path, node: Path) -> None:
    result = sysctl_vm.run(
        make_context(tmp_path, roots=fixture_roots(vm_node(node)), thresholds=VM_T)
    )
    assert result.status == Status.PASS
    # Only the max_map_count hint (no broker running to measure against).
    assert [f.subject for f in result.findings] == ["/proc/sys/vm/max_map_count"]
    assert "no swap" in result.summary
    assert (
        "dirty limit 3.2 GiB (vm.dirty_ratio = 20% of MemTotal 16 GiB; 26 s of writeback at "
        "125 MiB/s)" in result.summary
    )


def test_vm_big_dirty_limit_warns(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(vm_node(node, gib=128)), thresholds=VM_T)
    result = sysctl_vm.run(ctx)
    assert result.status == Status.WARN
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert "25.6 GiB of dirty page cache" in warn.message
    assert "about 210 s of writeback at an assumed 125 MiB/s" in warn.message
    assert "sysctl -w vm.dirty_bytes=1073741824" in warn.remediation
    assert "sysctl -w vm.dirty_background_bytes=268435456" in warn.remediation
    assert "assumed_write_mib_s" in warn.remediation
    assert result.data["dirty_writeback_s"] == 209.7


@pytest.mark.parametrize(
    ("memory", "status"),
    [
        # (MemTotal, MemFree, page cache) in GiB: idle, page cache full, broker holding 30 GiB.
        ((64, 60, 2), Status.WARN),
        ((64, 2, 60), Status.WARN),
        ((64, 30, 2), Status.WARN),
        ((16, 14, 1), Status.PASS),
        ((16, 1, 2), Status.PASS),
    ],
)
def test_vm_dirty_verdict_does_not_follow_free_memory(
    tmp_path: Path, node: Path, memory: tuple[int, float, float], status: Status
) -> None:
    """Debian dirty ratios: one verdict per node, whatever its memory holds at the moment."""
    total, free, cache = memory
    vm_node(node, {"vm/max_map_count": "262144"}, gib=total, free_gib=free, file_gib=cache)
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == status, result.summary
    assert result.data["dirty_limit_bytes"] == total * 1024**3 * 20 // 100
    if status == Status.WARN:
        assert result.summary.startswith(
            "up to 12.8 GiB of dirty page cache may build up before writers are throttled "
            "(vm.dirty_ratio = 20% of MemTotal 64 GiB): about 105 s of writeback"
        )


@pytest.mark.parametrize(
    ("dirty", "status"),
    [(60 * 125 * 1024**2 - 1, Status.PASS), (60 * 125 * 1024**2, Status.WARN)],
)
def test_vm_dirty_limit_reaching_the_band_warns(
    tmp_path: Path, node: Path, dirty: int, status: Status
) -> None:
    # Boundary: dirty_bytes worth exactly warn_dirty_flush_s (60 s) at assumed_write_mib_s
    # (125 MiB/s) warns: reaching a threshold counts. It replaced warn_dirty_limit_bytes.
    vm_node(node, {"vm/dirty_bytes": str(dirty), "vm/max_map_count": "262144"})
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == status
    assert VM_T["warn_dirty_flush_s"] == 60 and VM_T["assumed_write_mib_s"] == 125
    assert "warn_dirty_limit_bytes" not in VM_T
    # A faster disk, once the SRE states it, flushes the same limit in time.
    faster = {**VM_T, "assumed_write_mib_s": 500}
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=faster))
    assert result.status == Status.PASS


def test_vm_swappiness_with_disk_swap_is_info(tmp_path: Path, node: Path) -> None:
    vm_node(node, {"vm/max_map_count": "262144"})
    write_tree(node, {"proc/swaps": SWAPS_DISK.format(used=524288)})
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == Status.PASS
    [info] = result.findings
    assert "512 MiB swapped out" in info.message and "vm.swappiness=10" in info.remediation


def test_vm_overcommit_strict(tmp_path: Path, node: Path) -> None:
    vm_node(node, {"vm/overcommit_memory": "2", "vm/max_map_count": "262144"})
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == Status.WARN and "strict accounting" in result.summary
    vm_node(node, {"vm/overcommit_memory": "2", "vm/max_map_count": "262144"}, commit_pct=97)
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == Status.FAIL and "(97%)" in result.summary


def test_vm_broker_map_count(tmp_path: Path, node: Path) -> None:
    vm_node(node, {"vm/max_map_count": "1000"})
    maps = "".join(f"7f00{i:08x}-7f00{i + 1:08x} rw-p 00000000 00:00 0\n" for i in range(950))
    write_tree(
        node,
        {
            "proc/4321/comm": "iggy-server\n",
            "proc/4321/status": "Name:\tiggy-server\nUid:\t0\t0\t0\t0\n",
            "proc/4321/maps": maps,
        },
    )
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == Status.FAIL
    [fail] = result.findings  # the generic max_map_count hint is folded into this one
    assert "950 memory mappings, 95%" in fail.message and fail.subject == "/proc/4321/maps"
    assert result.data["broker_maps"] == {"4321": 950}


# ---------------------------------------------------------------- sysctl.fs


def fs_node(node: Path, overrides: dict[str, str] | None = None) -> Path:
    base = {
        "file-max": "9223372036854775807",
        "nr_open": "1048576",
        "file-nr": "2080\t0\t9223372036854775807",
        "aio-max-nr": "65536",
        "aio-nr": "0",
    }
    base.update(overrides or {})
    return write_tree(node, {f"proc/sys/fs/{k}": v + "\n" for k, v in base.items()})


def test_fs_defaults_pass(tmp_path: Path, node: Path) -> None:
    result = sysctl_fs.run(
        make_context(tmp_path, roots=fixture_roots(fs_node(node)), thresholds=FS_T)
    )
    assert result.status == Status.PASS and not result.findings
    assert result.summary.startswith("file-max 9223372036854775807 (2080/")


def test_fs_low_limits_warn(tmp_path: Path, node: Path) -> None:
    fs_node(
        node,
        {
            "file-max": "65536",
            "file-nr": "1000\t0\t65536",
            "nr_open": "32768",
            "aio-max-nr": "4096",
        },
    )
    result = sysctl_fs.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=FS_T))
    assert result.status == Status.WARN
    by_subject = {f.subject: f for f in result.findings}
    assert by_subject["/proc/sys/fs/file-max"].severity == Severity.WARN
    assert "sysctl -w fs.file-max=131072" in by_subject["/proc/sys/fs/file-max"].remediation
    assert by_subject["/proc/sys/fs/nr_open"].severity == Severity.WARN
    assert by_subject["/proc/sys/fs/aio-max-nr"].severity == Severity.INFO


def test_fs_file_table_nearly_full_fails(tmp_path: Path, node: Path) -> None:
    fs_node(node, {"file-max": "200000", "file-nr": "195000\t0\t200000", "aio-nr": "65000"})
    result = sysctl_fs.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=FS_T))
    assert result.status == Status.FAIL
    fail = next(f for f in result.findings if f.severity == Severity.FAIL)
    assert "195000 of fs.file-max 200000" in fail.message
    assert any("aio-nr = 65000" in f.message for f in result.findings)


@pytest.mark.parametrize(
    ("allocated", "status"),
    [(150000, Status.PASS), (170000, Status.WARN), (195000, Status.FAIL)],
)
def test_fs_file_table_usage_verdicts(
    tmp_path: Path, node: Path, allocated: int, status: Status
) -> None:
    # sysctl.fs owns the verdict on fs.file-nr; process.fds only reports the numbers.
    fs_node(node, {"file-max": "200000", "file-nr": f"{allocated}\t0\t200000"})
    result = sysctl_fs.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=FS_T))
    assert result.status == status
    usage = [f for f in result.findings if f.subject == "/proc/sys/fs/file-nr"]
    if status == Status.PASS:
        assert not usage
    else:
        [finding] = usage
        assert finding.severity == (Severity.FAIL if status == Status.FAIL else Severity.WARN)
        assert f"{allocated} of fs.file-max 200000 file handles are in use" in finding.message
        assert "sysctl -w fs.file-max=400000" in finding.remediation


def test_fs_file_table_full_at_the_fail_level(tmp_path: Path, node: Path) -> None:
    # The case process.fds used to judge as well: 95000 of 100000 handles allocated.
    fs_node(node, {"file-max": "100000", "file-nr": "95000\t0\t100000"})
    result = sysctl_fs.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=FS_T))
    assert result.status == Status.FAIL
    assert "95000 of fs.file-max 100000 file handles" in result.summary
    usage = next(f for f in result.findings if f.subject == "/proc/sys/fs/file-nr")
    assert usage.severity == Severity.FAIL and "fs.file-max" in usage.remediation


def test_fs_garbage_values_do_not_crash(tmp_path: Path, node: Path) -> None:
    fs_node(node, {"file-max": "lots", "file-nr": "", "nr_open": "?"})
    result = sysctl_fs.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=FS_T))
    assert result.status == Status.PASS


# ---------------------------------------------------------------- sysctl.all


def stable_secret_node(node: Path) -> Path:
    """A /proc/sys with two stable_secret keys beside readable ones."""
    return write_tree(
        node,
        {
            "proc/sys/vm/swappiness": "60\n",
            "proc/sys/net/ipv6/conf/all/stable_secret": "",
            "proc/sys/net/ipv6/conf/lo/stable_secret": "",
            "proc/sys/net/ipv6/conf/lo/mtu": "65536\n",
        },
    )


def failing_reads(monkeypatch: pytest.MonkeyPatch, errors: dict[str, int]) -> None:
    """Make reading a /proc/sys file ending in a key of `errors` fail with that errno."""
    real = sysctl_module.read_value

    def read_value(path: str) -> bytes:
        for suffix, code in errors.items():
            if path.endswith(suffix):
                raise OSError(code, os.strerror(code), path)
        return real(path)

    monkeypatch.setattr(sysctl_module, "read_value", read_value)


def test_sysctl_all_names_the_real_errno_of_unreadable_keys(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, stable_secret answers EIO (no secret set): say EIO, not "not root?"."""
    failing_reads(monkeypatch, {"stable_secret": errno.EIO})
    monkeypatch.setattr(sysctl_module.os, "geteuid", lambda: 0)
    ctx = make_context(tmp_path, roots=fixture_roots(stable_secret_node(node)))
    result = sysctl_all.run(ctx)
    assert result.status == Status.PASS
    assert result.summary == (
        "2 kernel parameters read, 2 unreadable (EIO: net.ipv6.conf.all.stable_secret and 1 "
        "more, no IPv6 stable-privacy secret set, the kernel's normal answer)"
    )
    assert result.data["unreadable"] == {
        "net.ipv6.conf.all.stable_secret": "EIO (Input/output error)",
        "net.ipv6.conf.lo.stable_secret": "EIO (Input/output error)",
    }


def test_sysctl_all_on_this_machine_names_stable_secret_errno(tmp_path: Path) -> None:
    """This machine's own stable_secret keys, when they exist and fail to read."""
    secret = Path("/proc/sys/net/ipv6/conf/lo/stable_secret")
    try:
        secret.read_bytes()
        pytest.skip("stable_secret is readable or set on this machine")
    except FileNotFoundError:
        pytest.skip("no IPv6 stable_secret on this machine")
    except OSError as exc:
        code = exc.errno
    result = sysctl_all.run(make_context(tmp_path))
    name = errno.errorcode[code]
    assert result.data["unreadable"]["net.ipv6.conf.lo.stable_secret"].startswith(name + " (")
    assert f"{name}: " in result.summary
    if code not in (errno.EACCES, errno.EPERM) or os.geteuid() == 0:
        assert "not root" not in result.summary


def test_sysctl_all_says_not_root_only_for_permission_errors(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real symlink loop (ELOOP) and a denied key (EACCES): only EACCES suggests root."""
    stable_secret_node(node)
    (node / "proc/sys/vm/loop").symlink_to("loop")
    failing_reads(monkeypatch, {"stable_secret": errno.EACCES})
    monkeypatch.setattr(sysctl_module.os, "geteuid", lambda: 1000)
    result = sysctl_all.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS
    assert result.data["unreadable"]["vm.loop"].startswith("ELOOP (")
    assert result.summary == (
        "2 kernel parameters read, 3 unreadable (EACCES: net.ipv6.conf.all.stable_secret and 1 "
        "more, not root: run as root to read them; ELOOP: vm.loop)"
    )
    # As root a permission error is the kernel's answer, not a missing privilege.
    monkeypatch.setattr(sysctl_module.os, "geteuid", lambda: 0)
    result = sysctl_all.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert "not root" not in result.summary and "EACCES: " in result.summary


def test_sysctl_all_is_skipped_without_proc_sys(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    reason = sysctl_all.requires.unmet(ctx.path)
    assert reason == "needs /proc/sys, which does not exist on this node"
