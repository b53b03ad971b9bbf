"""The first real checks against fixture node trees: system.info, cpu.load, sysctl.all."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot_agent.checks.cpu import cpu_load
from snapshot_agent.checks.sysctl import sysctl_all
from snapshot_agent.checks.system import system_info
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.procfs import parse_cpu_list
from snapshot_agent.node.system import parse_os_release

from .conftest import fixture_roots, make_context, write_tree

CPU_THRESHOLDS = {"warn_per_core": 1.0, "fail_per_core": 2.0}


def cpu_node(node: Path, loadavg: str, online: str = "0-3") -> Path:
    return write_tree(
        node,
        {
            "proc/loadavg": loadavg,
            "sys/devices/system/cpu/online": online + "\n",
        },
    )


@pytest.mark.parametrize(
    ("loadavg", "status"),
    [
        ("0.50 0.40 0.30 1/200 999\n", Status.PASS),
        ("5.00 4.50 4.00 5/300 999\n", Status.WARN),
        ("12.0 9.00 7.00 20/400 999\n", Status.FAIL),
    ],
)
def test_cpu_load_verdicts(tmp_path: Path, node: Path, loadavg: str, status: Status) -> None:
    ctx = make_context(
        tmp_path, roots=fixture_roots(cpu_node(node, loadavg)), thresholds=CPU_THRESHOLDS
    )
    result = cpu_load.run(ctx)
    assert result.status == status
    assert result.data["cores"] == 4
    if status != Status.PASS:
        assert result.findings[0].remediation
        assert result.findings[0].subject == "/proc/loadavg"


def test_cpu_load_thresholds_are_configurable(tmp_path: Path, node: Path) -> None:
    ctx = make_context(
        tmp_path,
        roots=fixture_roots(cpu_node(node, "5 4.5 4 1/1 1\n")),
        thresholds={"warn_per_core": 2.0, "fail_per_core": 3.0},
    )
    assert cpu_load.run(ctx).status == Status.PASS


def test_cpu_count_falls_back_to_cpuinfo(tmp_path: Path, node: Path) -> None:
    write_tree(
        node,
        {"proc/loadavg": "1 1 1 1/1 1\n", "proc/cpuinfo": "processor\t: 0\n\nprocessor\t: 1\n"},
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=CPU_THRESHOLDS)
    assert cpu_load.run(ctx).data["cores"] == 2


@pytest.mark.parametrize(
    ("loadavg", "reason"),
    [
        ("", "/proc/loadavg is empty"),
        ("\n", "/proc/loadavg is empty"),
        ("0.50 0.40\n", "'0.50 0.40'"),
        ("0.50 0.40 0.30 1-200 999\n", "'0.50 0.40 0.30 1-200 999'"),
        ("high medium low 1/200 999\n", "'high medium low 1/200 999'"),
        ("nan 0.40 0.30 1/200 999\n", "'nan 0.40 0.30 1/200 999'"),
        ("\x00" * 500, "'" + "\\x00" * 80 + "...'"),
    ],
)
def test_cpu_load_garbage_loadavg_is_skipped(
    tmp_path: Path, node: Path, loadavg: str, reason: str
) -> None:
    ctx = make_context(
        tmp_path, roots=fixture_roots(cpu_node(node, loadavg)), thresholds=CPU_THRESHOLDS
    )
    result = cpu_load.run(ctx)
    assert result.status == Status.SKIPPED
    assert "/proc/loadavg" in result.summary and result.summary.endswith(reason)


def test_cpu_load_missing_loadavg_is_skipped(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=CPU_THRESHOLDS)
    result = cpu_load.run(ctx)
    assert result.status == Status.SKIPPED and "cannot read /proc/loadavg" in result.summary


def test_cpu_count_garbage_online_list_falls_back_to_cpuinfo(tmp_path: Path, node: Path) -> None:
    cpu_node(node, "1 1 1 1/1 1\n", online="zero-three")
    write_tree(node, {"proc/cpuinfo": "processor\t: 0\n\nprocessor\t: 1\n"})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=CPU_THRESHOLDS)
    result = cpu_load.run(ctx)
    assert result.status == Status.PASS and result.data["cores"] == 2


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == 7
    assert parse_cpu_list("0") == 1


OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def test_system_info_reads_identity(tmp_path: Path, node: Path) -> None:
    write_tree(
        node,
        {
            "etc/os-release": OS_RELEASE,
            "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
            "proc/sys/kernel/hostname": "events-prod-1\n",
            "proc/uptime": "90061.5 170000.0\n",
            "proc/1/cgroup": "0::/init.scope\n",
            "sys/class/dmi/id/sys_vendor": "Amazon EC2\n",
        },
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds={"recent_boot_minutes": 60})
    result = system_info.run(ctx)
    assert result.status == Status.PASS
    assert result.data["os_id"] == "debian" and result.data["kernel"] == "6.1.0-18-amd64"
    assert result.data["virtualization"] == "amazon" and result.data["container"] == "none"
    assert "up 1 d 1 h" in result.summary
    assert not result.findings
    assert (tmp_path / "artifacts/os-release").read_text() == OS_RELEASE


def test_system_info_notes_recent_boot_and_container(tmp_path: Path, node: Path) -> None:
    write_tree(
        node,
        {
            "etc/os-release": OS_RELEASE,
            "proc/uptime": "300.0 100.0\n",
            "proc/1/cgroup": "0::/kubepods/besteffort/pod123/abc\n",
        },
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds={"recent_boot_minutes": 60})
    result = system_info.run(ctx)
    assert result.data["container"] == "kubernetes"
    [finding] = result.findings
    assert finding.severity == Severity.INFO and "booted 5 min ago" in finding.message


@pytest.mark.parametrize("uptime", ["", "\n", "garbage 1.0\n", "nan 1\n", "-5 1\n"])
def test_system_info_garbage_uptime_is_unknown(tmp_path: Path, node: Path, uptime: str) -> None:
    write_tree(
        node,
        {
            "etc/os-release": OS_RELEASE,
            "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
            "proc/uptime": uptime,
        },
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds={"recent_boot_minutes": 60})
    result = system_info.run(ctx)
    assert result.status == Status.PASS and not result.findings
    assert result.data["uptime_s"] is None and result.data["kernel"] == "6.1.0-18-amd64"
    assert result.summary.startswith("Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64, ")
    assert " up " not in result.summary


def test_system_info_survives_an_empty_node(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds={"recent_boot_minutes": 60})
    result = system_info.run(ctx)
    assert result.status == Status.SKIPPED and "nothing identifies this node" in result.summary
    # One fact is enough to report on.
    write_tree(node, {"proc/sys/kernel/osrelease": "6.1.0-18-amd64\n"})
    result = system_info.run(ctx)
    assert result.status == Status.PASS and "unknown OS, kernel 6.1.0-18-amd64" in result.summary


def test_parse_os_release_quoting() -> None:
    parsed = parse_os_release('# c\nNAME=\'Arch Linux\'\nX="a \\"b\\""\nBAD\n')
    assert parsed == {"NAME": "Arch Linux", "X": 'a "b"'}


def test_sysctl_all_reads_every_key(tmp_path: Path, node: Path) -> None:
    write_tree(
        node,
        {
            "proc/sys/vm/swappiness": "60\n",
            "proc/sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
            "proc/sys/net/core/somaxconn": "4096\n",
        },
    )
    wo = node / "proc/sys/vm/drop_caches"
    wo.write_text("")
    wo.chmod(0o200)
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = sysctl_all.run(ctx)
    assert result.status == Status.PASS
    assert result.data["values"] == {
        "net.core.somaxconn": "4096",
        "net.ipv4.ip_local_port_range": "32768 60999",
        "vm.swappiness": "60",
    }
    assert result.data["write_only"] == 1
    text = (tmp_path / "artifacts/sysctl.txt").read_text()
    assert "vm.swappiness = 60\n" in text
