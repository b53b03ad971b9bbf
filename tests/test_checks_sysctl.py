"""sysctl.network, sysctl.vm and sysctl.fs against fixture node trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot_agent.checks.sysctl import (
    as_ints,
    dirty_limits,
    parse_reserved_ports,
    softnet_dropped,
    sysctl_fs,
    sysctl_network,
    sysctl_vm,
)
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.procfs import parse_meminfo, parse_snmp, parse_swaps

from .conftest import fixture_roots, make_context, write_tree

NET_T = dict(sysctl_network.thresholds)
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


def netstat(listen_overflows: int = 0, prune: int = 0) -> str:
    """/proc/net/netstat in the kernel's layout (a subset of the TcpExt columns)."""
    return (
        "TcpExt: SyncookiesSent SyncookiesRecv PruneCalled RcvPruned ListenOverflows "
        "ListenDrops TCPReqQFullDrop\n"
        f"TcpExt: 0 0 {prune} 0 {listen_overflows} {listen_overflows} 0\n"
        "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 0 0\n"
    )


SNMP = (
    "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors "
    "IgnoredMulti MemErrors\nUdp: 73 0 {errs} 74 {errs} 0 0 0 0\n"
)
SOFTNET = "0000000a 00000000 00000000 00000000\n00000d2a {drop} 00000001 00000000\n"


def net_node(node: Path, overrides: dict[str, str] | None = None, **counters: int) -> Path:
    values = {**NET_DEFAULTS, **(overrides or {})}
    files = {f"proc/sys/{k}": v + "\n" for k, v in values.items()}
    files["proc/net/netstat"] = netstat(
        counters.get("listen_overflows", 0), counters.get("prune", 0)
    )
    files["proc/net/snmp"] = SNMP.format(errs=counters.get("udp_errors", 0))
    files["proc/net/softnet_stat"] = SOFTNET.format(drop=f"{counters.get('softnet', 0):08x}")
    return write_tree(node, files)


# ---------------------------------------------------------------- parsers


def test_parsers() -> None:
    snmp = parse_snmp(SNMP.format(errs=5))
    assert snmp["Udp"]["RcvbufErrors"] == 5 and snmp["Ip"]["DefaultTTL"] == 64
    assert softnet_dropped(SOFTNET.format(drop="000001f4")) == 500
    assert parse_reserved_ports("8090,3000-3002") == [(8090, 8090), (3000, 3002)]
    assert parse_reserved_ports("") == []
    assert as_ints("4096\t131072 6291456") == [4096, 131072, 6291456] and as_ints("x") is None
    assert sysctl_fix("net.ipv4.tcp_rmem", "4096 131072 16777216").startswith(
        '`sysctl -w net.ipv4.tcp_rmem="4096 131072 16777216"`'
    )
    assert "`vm.swappiness = 10` to /etc/sysctl.d/99-iggy.conf" in sysctl_fix("vm.swappiness", 10)


# ---------------------------------------------------------------- sysctl.network


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


def test_network_low_somaxconn_with_overflows_warns(tmp_path: Path, node: Path) -> None:
    net_node(node, {"net/core/somaxconn": "128"}, listen_overflows=500)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T)
    result = sysctl_network.run(ctx)
    assert result.status == Status.WARN
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert warn.subject == "/proc/sys/net/core/somaxconn"
    assert "ListenOverflows 500" in warn.message
    assert "net.core.somaxconn = 4096` to /etc/sysctl.d/99-iggy.conf" in warn.remediation


def test_network_udp_buffer_errors_warn(tmp_path: Path, node: Path) -> None:
    net_node(node, udp_errors=1000)
    result = sysctl_network.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=NET_T))
    assert result.status == Status.WARN
    assert {f.subject for f in result.findings if f.severity == Severity.WARN} == {
        "/proc/sys/net/core/rmem_max",
        "/proc/sys/net/core/wmem_max",
    }


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
    result = sysctl_network.run(
        make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    )
    assert result.status == Status.WARN
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert "SoftnetDropped 5000" in warn.message


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


def meminfo(total_gib: int, commit_pct: int = 40) -> str:
    total = total_gib * 1024 * 1024
    return (
        f"MemTotal:       {total} kB\n"
        f"MemFree:        {total // 4} kB\n"
        f"MemAvailable:   {total // 2} kB\n"
        f"Active(file):   {total // 8} kB\n"
        f"Inactive(file): {total // 8} kB\n"
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
    node: Path, overrides: dict[str, str] | None = None, gib: int = 16, commit_pct: int = 40
) -> Path:
    files = {f"proc/sys/{k}": v + "\n" for k, v in {**VM_DEFAULTS, **(overrides or {})}.items()}
    files["proc/meminfo"] = meminfo(gib, commit_pct)
    files["proc/swaps"] = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    return write_tree(node, files)


def test_vm_parsers() -> None:
    [swap] = parse_swaps(SWAPS_DISK.format(used=1024))
    assert swap.name == "/dev/dm-1" and swap.used_kib == 1024 and swap.disk_backed
    assert not parse_swaps("F T S U P\n/dev/zram0 partition 100 0 100\n")[0].disk_backed
    mem = parse_meminfo(meminfo(16))
    values = {k.replace("/", "."): v for k, v in VM_DEFAULTS.items()}
    background, foreground = dirty_limits(values, mem) or (0, 0)
    # 20 % of (free + file pages = 8 GiB).
    assert foreground == 8 * 1024**3 * 20 // 100 and background == foreground // 2
    assert dirty_limits({**values, "vm.dirty_bytes": "1073741824"}, mem) == (
        background,
        1073741824,
    )


def test_vm_defaults_pass(tmp_path: Path, node: Path) -> None:
    result = sysctl_vm.run(
        make_context(tmp_path, roots=fixture_roots(vm_node(node)), thresholds=VM_T)
    )
    assert result.status == Status.PASS
    # Only the max_map_count hint (no broker running to measure against).
    assert [f.subject for f in result.findings] == ["/proc/sys/vm/max_map_count"]
    assert "no swap" in result.summary and "dirty limit 1.6 GiB" in result.summary


def test_vm_big_dirty_limit_warns(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(vm_node(node, gib=128)), thresholds=VM_T)
    result = sysctl_vm.run(ctx)
    assert result.status == Status.WARN
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert "12.8 GiB of dirty page cache" in warn.message
    assert "sysctl -w vm.dirty_bytes=1073741824" in warn.remediation
    assert "sysctl -w vm.dirty_background_bytes=268435456" in warn.remediation


@pytest.mark.parametrize(
    ("dirty", "status"), [(8 * 1024**3 - 1, Status.PASS), (8 * 1024**3, Status.WARN)]
)
def test_vm_dirty_limit_reaching_the_band_warns(
    tmp_path: Path, node: Path, dirty: int, status: Status
) -> None:
    # Boundary: a dirty limit of exactly warn_dirty_limit_bytes (was max_dirty_bytes, judged
    # with >) now warns: reaching a threshold counts.
    vm_node(node, {"vm/dirty_bytes": str(dirty), "vm/max_map_count": "262144"})
    result = sysctl_vm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=VM_T))
    assert result.status == status
    assert VM_T["warn_dirty_limit_bytes"] == 8 * 1024**3 and "max_dirty_bytes" not in VM_T


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
