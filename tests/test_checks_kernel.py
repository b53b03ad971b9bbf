"""kernel.version, kernel.io_uring, kernel.log and memory.oom against fixture node trees."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from snapshot_agent.checks.kernel import (
    KERNEL_BELOW,
    KernelRelease,
    config_io_uring,
    judge_kernel_version,
    kernel_io_uring,
    kernel_version,
)
from snapshot_agent.checks.kernel_log import (
    categorize,
    decode_taint,
    devices_in,
    judge_kernel_log,
    kernel_log,
    memory_oom,
    parse_oom_kills,
    summarize_log,
)
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.kernel_log import KernelLog, journal_lines, parse_log_time, within_window
from snapshot_agent.node.processes import BrokerProcess, broker_from_status
from snapshot_agent.node.system import parse_kernel_version

from .conftest import fixture_roots, make_context, write_tree

VERSION_T = {"fail_below": "5.19", "warn_below": "6.1"}
LOG_T = {
    "window_hours": 24,
    "fail_hardware": 1,
    "fail_io": 1,
    "warn_corrected": 10,
    "warn_hung_task": 1,
    "warn_lockup": 1,
    "warn_segfault": 1,
    "warn_oops": 1,
    "ignore_devices": "fd0,sr0",
}
OOM_T = {"window_hours": 24, "fail_broker_kills": 1, "warn_kills": 1}

# /proc/<pid>/status of a broker in a Docker container (trimmed, real field layout).
STATUS = """Name:\tiggy-server
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4321
Pid:\t4321
Uid:\t998\t998\t998\t998
Gid:\t998\t998\t998\t998
Groups:\t998 1001
NoNewPrivs:\t1
Seccomp:\t{seccomp}
Seccomp_filters:\t1
CapEff:\t{capeff}
"""


# ---------------------------------------------------------------- kernel.version


@pytest.mark.parametrize(
    ("release", "parsed"),
    [
        ("6.1.0-18-amd64\n", (6, 1, 0)),
        ("5.15.0-1051-aws", (5, 15, 0)),
        ("6.18.44-fc-v657", (6, 18, 44)),
        ("4.18.0-513.el8.x86_64", (4, 18, 0)),
        ("6.8", (6, 8, 0)),
        ("6", (6, 0, 0)),
        ("garbage", None),
    ],
)
def test_parse_kernel_version(release: str, parsed: tuple[int, int, int] | None) -> None:
    assert parse_kernel_version(release) == parsed


@pytest.mark.parametrize(
    ("release", "status"),
    [
        ("6.1.0-18-amd64", Status.PASS),
        ("6.18.44-fc-v657", Status.PASS),
        ("6.0.12-arch1-1", Status.WARN),
        ("5.19.0-50-generic", Status.WARN),
        ("5.15.0-1051-aws", Status.FAIL),
    ],
)
def test_kernel_version_verdicts(tmp_path: Path, node: Path, release: str, status: Status) -> None:
    write_tree(node, {"proc/sys/kernel/osrelease": release + "\n"})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=VERSION_T)
    result = kernel_version.run(ctx)
    assert result.status == status
    assert result.data["release"] == release
    if status != Status.PASS:
        assert "Upgrade" in result.findings[0].remediation
        assert result.findings[0].subject == "/proc/sys/kernel/osrelease"


def version_node(node: Path, release: str, *threads: str) -> Path:
    """A node on `release` whose broker (pid 4321) runs threads with these names."""
    files = {
        "proc/sys/kernel/osrelease": release + "\n",
        "proc/4321/comm": "iggy-server\n",
        "proc/4321/status": STATUS.format(seccomp=0, capeff="0" * 16),
    }
    for i, name in enumerate(threads):
        files[f"proc/4321/task/{4321 + i}/comm"] = name + "\n"
    return write_tree(node, files)


def test_kernel_version_old_kernel_with_pre_06_broker_warns(tmp_path: Path, node: Path) -> None:
    version_node(node, "5.15.0-1051-aws", "iggy-server", "tokio-runtime-w", "tokio-runtime-w")
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=VERSION_T)
    result = kernel_version.run(ctx)
    assert result.status == Status.WARN
    [finding] = result.findings
    assert "pre-0.6" in finding.message and "pid 4321" in finding.message
    assert "upgrading Iggy to 0.6+ will need kernel 5.19+" in finding.message
    assert "Upgrade" in finding.remediation
    assert result.data["brokers"] == [{"pid": 4321, "io_uring": False}]


@pytest.mark.parametrize(
    "threads",
    [
        ("iggy-server", "shard-0", "shard-1"),  # a 0.6+ broker: shards
        ("iggy-server",),  # one thread: cannot tell, so the current verdict stands
    ],
)
def test_kernel_version_old_kernel_fails_unless_broker_is_pre_06(
    tmp_path: Path, node: Path, threads: tuple[str, ...]
) -> None:
    version_node(node, "5.15.0-1051-aws", *threads)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=VERSION_T)
    result = kernel_version.run(ctx)
    assert result.status == Status.FAIL
    assert "will not start" in result.findings[0].message


def test_kernel_version_old_kernel_with_io_uring_fd_fails(tmp_path: Path, node: Path) -> None:
    version_node(node, "5.15.0-1051-aws", "iggy-server", "worker", "worker")
    (node / "proc/4321/fd").mkdir()
    (node / "proc/4321/fd/7").symlink_to("anon_inode:[io_uring]")
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=VERSION_T)
    result = kernel_version.run(ctx)
    assert result.status == Status.FAIL
    assert result.data["brokers"] == [{"pid": 4321, "io_uring": True}]


def test_kernel_version_thresholds_and_garbage(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/sys/kernel/osrelease": "6.1.0-18-amd64\n"})
    roots = fixture_roots(node)
    strict = {"fail_below": "5.19", "warn_below": "6.6"}
    assert kernel_version.run(make_context(tmp_path, roots=roots, thresholds=strict)).status == (
        Status.WARN
    )
    write_tree(node, {"proc/sys/kernel/osrelease": "linux\n"})
    result = kernel_version.run(make_context(tmp_path, roots=roots, thresholds=VERSION_T))
    assert result.status == Status.SKIPPED and "not of the form" in result.summary


@pytest.mark.parametrize(
    ("release", "status"),
    [
        ("5.18.19", Status.FAIL),
        ("5.19.0", Status.WARN),  # "below 5.19" is strict: 5.19 itself runs Iggy 0.6
        ("5.19.1", Status.WARN),
        ("6.0.99", Status.WARN),
        ("6.1.0", Status.PASS),  # and 6.1 is not below the recommended 6.1
    ],
)
def test_kernel_version_below_is_strict(release: str, status: Status) -> None:
    assert judge_kernel_version(KernelRelease(release), VERSION_T).status == status


def test_kernel_version_band_declares_below_thresholds() -> None:
    assert kernel_version.thresholds == {"warn_below": "6.1", "fail_below": "5.19"}
    assert KERNEL_BELOW.misordered({"warn_below": "5.15"}) is not None  # lower is worse
    assert KERNEL_BELOW.misordered({"fail_below": "6.1"}) is None  # equal: straight to fail
    assert "not a valid threshold" in (KERNEL_BELOW.misordered({"fail_below": "x"}) or "")
    result = judge_kernel_version(KernelRelease("6.1.0"), {"fail_below": "5.19", "warn_below": "x"})
    assert result.status == Status.SKIPPED
    assert result.summary == "threshold warn_below='x' is not a kernel version"


def test_kernel_version_patch_level_threshold(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/sys/kernel/osrelease": "6.1.75-1-amd64\n"})
    roots = fixture_roots(node)
    strict = {"fail_below": "5.19", "warn_below": "6.1.76"}
    result = kernel_version.run(make_context(tmp_path, roots=roots, thresholds=strict))
    assert result.status == Status.WARN and "older than the recommended 6.1.76" in result.summary


# ---------------------------------------------------------------- kernel.io_uring


def uring_node(node: Path, disabled: str | None, seccomp: int = 0, cap: str = "0") -> Path:
    files = {
        "proc/sys/kernel/osrelease": "6.6.13-amd64\n",
        "proc/sys/kernel/io_uring_group": "1001\n",
        "etc/group": "root:x:0:\niggy:x:998:\niouring:x:1001:iggy\n",
        "proc/4321/comm": "iggy-server\n",
        "proc/4321/status": STATUS.format(seccomp=seccomp, capeff=cap.rjust(16, "0")),
        "proc/4321/task/4321/comm": "iggy-server\n",
        "proc/4321/task/4330/comm": "shard-0\n",
        "proc/77/comm": "sshd\n",
        "proc/77/status": STATUS.format(seccomp=0, capeff="0" * 16),
    }
    if disabled is not None:
        files["proc/sys/kernel/io_uring_disabled"] = disabled + "\n"
    return write_tree(node, files)


def test_io_uring_allowed(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(uring_node(node, "0")))
    result = kernel_io_uring.run(ctx)
    assert result.status == Status.PASS
    assert "io_uring_disabled = 0" in result.summary
    [broker] = result.data["brokers"]
    assert broker["pid"] == 4321 and broker["groups"] == [998, 1001]
    assert broker["seccomp"] == 0 and broker["cap_sys_admin"] is False


def test_io_uring_group_covering_running_broker_passes(tmp_path: Path, node: Path) -> None:
    # io_uring_disabled = 1, io_uring_group = 1001, and the running broker (shard-0 thread)
    # has 1001 in its Groups: exactly the hardened setup that works. Not a warning.
    ctx = make_context(tmp_path, roots=fixture_roots(uring_node(node, "1")))
    result = kernel_io_uring.run(ctx)
    assert result.status == Status.PASS
    [finding] = result.findings
    assert finding.severity == Severity.INFO and finding.remediation == ""
    assert "group iouring (gid 1001)" in finding.message and "is in that group" in finding.message
    assert result.summary == (
        "io_uring allowed (io_uring_disabled = 1, group iouring covers iggy-server); "
        "1 iggy-server without a seccomp filter"
    )


def test_io_uring_cap_sys_admin_broker_passes_group_restriction(tmp_path: Path, node: Path) -> None:
    uring_node(node, "1", cap="000001ffffffffff")
    write_tree(node, {"proc/sys/kernel/io_uring_group": "2000\n"})
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS and "has CAP_SYS_ADMIN" in result.findings[0].message


def test_io_uring_group_broker_not_member(tmp_path: Path, node: Path) -> None:
    uring_node(node, "1")
    write_tree(node, {"proc/sys/kernel/io_uring_group": "2000\n"})
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.WARN
    assert "is NOT in it" in result.findings[0].message
    assert "kernel.io_uring_group" in result.findings[0].remediation


def test_io_uring_disabled_fails(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(uring_node(node, "2")))
    result = kernel_io_uring.run(ctx)
    assert result.status == Status.FAIL
    assert "sysctl -w kernel.io_uring_disabled=0" in result.findings[0].remediation
    assert "/etc/sysctl.d/99-iggy.conf" in result.findings[0].remediation


def test_io_uring_seccomp_filter_with_shards_is_info(tmp_path: Path, node: Path) -> None:
    # The broker runs shard-N threads: the filter evidently lets io_uring through.
    ctx = make_context(tmp_path, roots=fixture_roots(uring_node(node, None, seccomp=2)))
    result = kernel_io_uring.run(ctx)
    assert result.status == Status.PASS
    assert {f.severity for f in result.findings} == {Severity.INFO}  # + sysctl absent (< 6.6)
    seccomp = next(f for f in result.findings if "seccomp" in f.message)
    assert "already uses io_uring" in seccomp.message and seccomp.subject == "/proc/4321/status"
    assert "under a seccomp filter that lets io_uring through" in result.summary
    assert result.data["brokers"][0]["io_uring_in_use"] is True


def test_io_uring_seccomp_filter_with_io_uring_fd_is_info(tmp_path: Path, node: Path) -> None:
    uring_node(node, "0", seccomp=2)
    (node / "proc/4321/task/4330/comm").write_text("tokio-runtime-w\n")
    (node / "proc/4321/fd").mkdir()
    (node / "proc/4321/fd/3").symlink_to("/dev/null")
    (node / "proc/4321/fd/9").symlink_to("anon_inode:[io_uring]")
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS
    [info] = result.findings
    assert info.severity == Severity.INFO and "already uses io_uring" in info.message


@pytest.mark.parametrize(
    ("threads", "seen"),
    [
        ({"4330": "tokio-runtime-w\n"}, "shows no io_uring use"),
        ({}, "could not be read"),  # only the main thread: nothing to tell by
    ],
)
def test_io_uring_seccomp_filter_warns_without_io_uring_use(
    tmp_path: Path, node: Path, threads: dict[str, str], seen: str
) -> None:
    uring_node(node, None, seccomp=2)
    (node / "proc/4321/task/4330/comm").unlink()
    write_tree(node, {f"proc/4321/task/{tid}/comm": name for tid, name in threads.items()})
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.WARN
    severities = {f.severity for f in result.findings}
    assert severities == {Severity.INFO, Severity.WARN}  # INFO: sysctl absent (< 6.6)
    seccomp = next(f for f in result.findings if f.severity == Severity.WARN)
    assert "seccomp" in seccomp.message and seccomp.subject == "/proc/4321/status"
    assert seen in seccomp.message
    assert "io_uring" in seccomp.remediation


def test_io_uring_kernel_built_without_it(tmp_path: Path, node: Path) -> None:
    uring_node(node, "0")
    write_tree(
        node, {"boot/config-6.6.13-amd64": "CONFIG_EVENTFD=y\n# CONFIG_IO_URING is not set\n"}
    )
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.FAIL and "CONFIG_IO_URING" in result.summary


def test_io_uring_reads_proc_config_gz(tmp_path: Path, node: Path) -> None:
    uring_node(node, "0")
    write_tree(node, {"proc/config.gz": gzip.compress(b"CONFIG_IO_URING=y\n")})
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.data["config_io_uring"] == "y"
    assert result.data["config_source"] == "/proc/config.gz"


def test_broker_status_parsing() -> None:
    broker = broker_from_status(9, STATUS.format(seccomp=2, capeff="000001ffffffffff"))
    assert broker.uid == 998 and broker.gids == (998, 1001)
    assert broker.seccomp == 2 and broker.has_sys_admin
    assert not BrokerProcess(1, cap_eff=0).has_sys_admin
    assert config_io_uring("CONFIG_IO_URING=y\n") == "y"
    assert config_io_uring("CONFIG_X=y\n") is None


# ---------------------------------------------------------------- kernel log parsing

NOW = datetime(2026, 11, 23, 14, 0, 0).astimezone()

# `journalctl _TRANSPORT=kernel -o short-iso` (systemd 252), with a boot marker.
JOURNAL = """\
2026-11-23T02:10:11+0000 events-1 kernel: EXT4-fs (nvme0n1p1): mounted filesystem with ordered data mode.
-- Boot 3c1f1e0a4f2d4c0e9b1f2d3e4f5a6b7c --
2026-11-23T09:00:02+0000 events-1 kernel: nvme nvme1: I/O 745 QID 3 timeout, aborting
"""  # noqa: E501
# `dmesg --time-format=iso` (util-linux 2.38).
DMESG = """\
2026-11-21T14:04:16,000000+00:00 Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
2026-11-23T13:26:14,563832+00:00 iggy-server[4321]: segfault at 0 ip 000055d1c2a4 sp 00007ffd error 4 in iggy-server[55d1c2a00000+1a00000]
"""  # noqa: E501


def test_journal_lines_drop_boot_markers() -> None:
    lines = journal_lines(JOURNAL)
    assert len(lines) == 2 and all("kernel:" in line for line in lines)


def test_dmesg_iso_window() -> None:
    now = datetime.fromisoformat("2026-11-23T14:00:00+00:00")
    kept = within_window(DMESG.splitlines(), now - timedelta(hours=24), now)
    assert len(kept) == 1 and "segfault" in kept[0]


@pytest.mark.parametrize(
    "line",
    [
        "2026-11-23T13:59:00+0000 h kernel: x",
        "2026-11-23T13:59:00.123456+00:00 h kernel: x",
        "2026-11-23T13:59:00,123456+00:00 x",
        "[Mon Nov 23 13:59:00 2026] x",
        "Nov 23 13:59:00 h kernel: [ 12.3] x",
    ],
)
def test_parse_log_time_formats(line: str) -> None:
    stamp = parse_log_time(line, NOW)
    assert stamp is not None and stamp.tzinfo is not None
    assert stamp.year == 2026 and stamp.month == 11 and stamp.day == 23


def test_parse_log_time_syslog_year_rollover() -> None:
    stamp = parse_log_time("Dec 31 23:59:59 h kernel: x", datetime(2027, 1, 1, 0, 1).astimezone())
    assert stamp is not None and stamp.year == 2026
    assert parse_log_time("no time here", NOW) is None


@pytest.mark.parametrize(
    ("line", "category"),
    [
        ("mce: [Hardware Error]: Machine check events logged", "hardware"),
        ("EDAC MC0: 1 UE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", "hardware"),
        (
            "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
            "hardware_corrected",
        ),
        ("{1}[Hardware Error]: event severity: corrected", "hardware_corrected"),
        (
            "pcieport 0000:00:1c.0: AER: PCIe Bus Error: severity=Uncorrected (Non-Fatal)",
            "hardware",
        ),
        ("blk_update_request: I/O error, dev sdb, sector 123456 op 0x1:(WRITE)", "io"),
        ("I/O error, dev nvme0n1, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2", "io"),
        ("Buffer I/O error on dev sdb1, logical block 0, lost async page write", "io"),
        ("nvme nvme0: I/O 12 QID 4 timeout, reset controller", "io"),
        ("EXT4-fs error (device sdb1): ext4_find_entry:1455: inode #2: comm ls", "io"),
        ("EXT4-fs (sdb1): Remounting filesystem read-only", "io"),
        ('XFS (dm-0): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2', "io"),
        ("XFS (dm-0): Filesystem has been shut down due to log error (0x2).", "io"),
        ("ata1.00: failed command: READ FPDMA QUEUED", "io"),
        ("INFO: task iggy-server:4321 blocked for more than 120 seconds.", "hung_task"),
        ("watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [iggy-server:4321]", "lockup"),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", "lockup"),
        ("Out of memory: Killed process 2222 (java) total-vm:98kB, anon-rss:45kB", "oom"),
        ("java[2222]: segfault at 8 ip 00007f sp 00007f error 4 in libc.so.6", "segfault"),
        ("traps: node[99] general protection fault ip:55 sp:7f error:0 in node[55+1]", "segfault"),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000008", "oops"),
        # Ordinary boot messages must not count.
        ("EXT4-fs (vda1): re-mounted. Opts: errors=remount-ro. Quota mode: none.", None),
        ("mce: CPU0: Thermal monitoring enabled (TM1)", None),
        ("EDAC MC: Ver: 3.0.0", None),
        ("Kernel command line: BOOT_IMAGE=/vmlinuz nvme_core.io_timeout=4294967295", None),
        ("XFS (sda1): Mounting V5 Filesystem", None),
    ],
)
def test_categorize(line: str, category: str | None) -> None:
    assert categorize(line) == category


def test_devices_and_ignored_devices() -> None:
    assert devices_in("Buffer I/O error on dev sdb1, logical block 0") == ["sdb1"]
    assert devices_in("EXT4-fs error (device nvme0n1p2): ext4_lookup") == ["nvme0n1p2"]
    summary = summarize_log(
        ["blk_update_request: I/O error, dev fd0, sector 0", "I/O error, dev sdb, sector 9"],
        ["fd0", "sr*"],
    )
    assert summary.counts == {"io": 1} and summary.ignored == 1 and summary.devices == {"sdb": 1}


def test_decode_taint() -> None:
    assert decode_taint(0) == []
    assert [c for c, _ in decode_taint((1 << 7) | (1 << 12))] == ["D", "O"]


# ---------------------------------------------------------------- kernel.log end to end


def kern_log(node: Path, *messages: str, age_hours: float = 1.0) -> Path:
    """A Debian 12 rsyslog kern.log (RFC 3339 timestamps) with `messages`."""
    stamp = (datetime.now().astimezone() - timedelta(hours=age_hours)).isoformat()
    old = (datetime.now().astimezone() - timedelta(hours=48)).isoformat()
    lines = [f"{old} events-1 kernel: [    1.0] mce: [Hardware Error]: Machine check events logged"]
    lines += [f"{stamp} events-1 kernel: [ 1234.5] {m}" for m in messages]
    return write_tree(node, {"var/log/kern.log": "\n".join(lines) + "\n"})


def test_kernel_log_clean(tmp_path: Path, node: Path) -> None:
    kern_log(
        node, "EXT4-fs (vda1): re-mounted. Opts: errors=remount-ro", "e1000: eth0 NIC Link is Up"
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    # The 48 h old hardware error is outside the window.
    assert result.status == Status.PASS
    assert result.data["source"] == "/var/log/kern.log" and result.data["lines_read"] == 2
    assert (tmp_path / "artifacts/kernel.log").read_text().count("\n") == 3


def test_kernel_log_io_error_fails(tmp_path: Path, node: Path) -> None:
    kern_log(
        node,
        "blk_update_request: I/O error, dev sdb, sector 2048 op 0x1:(WRITE) flags 0x800",
        "Buffer I/O error on dev sdb1, logical block 0, lost async page write",
        "EXT4-fs (sdb1): Remounting filesystem read-only",
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.FAIL
    [finding] = result.findings
    assert finding.message.startswith("3 I/O or filesystem error line(s)")
    assert "sdb" in finding.subject and "smartctl" in finding.remediation
    assert result.data["counts"] == {"io": 3}


def test_kernel_log_io_errors_on_ignored_devices_pass(tmp_path: Path, node: Path) -> None:
    # A VM's empty floppy and CD-ROM drives log I/O errors at every probe: not a disk.
    kern_log(
        node,
        "blk_update_request: I/O error, dev fd0, sector 0 op 0x0:(READ) flags 0x0",
        "I/O error, dev sr0, sector 0 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0",
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.PASS
    assert result.data["ignored_io_lines"] == 2 and result.data["counts"] == {}


def test_kernel_log_segfault_and_lockup_warn(tmp_path: Path, node: Path) -> None:
    kern_log(
        node,
        "java[2222]: segfault at 8 ip 00007f0c sp 00007ffd error 4 in libjvm.so[7f0c+1000]",
        "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:2:99]",
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.WARN
    assert {f.subject for f in result.findings} == {"java", "kernel log"}


def test_kernel_log_broker_crash_fails(tmp_path: Path, node: Path) -> None:
    kern_log(
        node, "iggy-server[4321]: segfault at 0 ip 000055d1 sp 00007ffd error 4 in iggy-server"
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.FAIL and "iggy-server crashed" in result.summary


def test_kernel_log_thresholds_and_taint(tmp_path: Path, node: Path) -> None:
    kern_log(node, "EDAC MC0: 1 CE memory read error on DIMM_A1")
    write_tree(node, {"proc/sys/kernel/tainted": str(1 << 7) + "\n"})
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    # One corrected error is under warn_corrected=10; the D taint warns.
    assert result.status == Status.WARN
    [finding] = result.findings
    assert "tainted" in finding.message and "D (kernel died" in finding.message
    assert result.data["counts"] == {"hardware_corrected": 1}


def test_kernel_log_falls_back_to_messages(tmp_path: Path, node: Path) -> None:
    stamp = (datetime.now() - timedelta(minutes=5)).strftime("%b %e %H:%M:%S")
    write_tree(
        node,
        {
            "var/log/messages": f"{stamp} rhel9 systemd[1]: Started x.\n"
            f"{stamp} rhel9 kernel: mce: [Hardware Error]: Machine check events logged\n"
        },
    )
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.FAIL
    assert result.data["source"] == "/var/log/messages" and result.data["lines_read"] == 1
    assert "ras-mc-ctl" in result.findings[0].remediation


def test_kernel_log_skipped_without_any_source(tmp_path: Path, node: Path) -> None:
    result = kernel_log.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LOG_T))
    assert result.status == Status.SKIPPED and "/var/log/kern.log" in result.summary


def test_kernel_log_corrected_errors_warn_on_reaching_the_band() -> None:
    line = "EDAC MC0: 1 CE memory read error on DIMM_A1"
    under = judge_kernel_log(KernelLog([line] * 9, "journalctl", 24), LOG_T)
    assert under.status == Status.PASS
    at = judge_kernel_log(KernelLog([line] * 10, "journalctl", 24), LOG_T)
    assert at.status == Status.WARN
    assert at.findings[0].message.startswith("10 corrected hardware error line(s)")
    higher = judge_kernel_log(
        KernelLog([line] * 10, "journalctl", 24), LOG_T | {"warn_corrected": 11}
    )
    assert higher.status == Status.PASS


def test_kernel_log_bands_are_the_thresholds() -> None:
    assert kernel_log.thresholds == LOG_T
    assert memory_oom.thresholds == OOM_T


def test_judge_kernel_log_reports_oom_as_info() -> None:
    log = KernelLog(["Out of memory: Killed process 1 (x) total-vm:1kB"], "journalctl", 24)
    result = judge_kernel_log(log, LOG_T)
    assert result.status == Status.PASS
    assert (
        result.findings[0].severity == Severity.INFO and "memory.oom" in result.findings[0].message
    )


# ---------------------------------------------------------------- memory.oom

CGROUP_OOM = """\
iggy-server invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 3 PID: 4330 Comm: shard-0 Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
memory: usage 8388608kB, limit 8388608kB, failcnt 1532
memory+swap: usage 8388608kB, limit 9007199254740988kB, failcnt 0
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/system.slice/iggy.service,task_memcg=/system.slice/iggy.service,task=iggy-server,pid=4321,uid=998
Memory cgroup out of memory: Killed process 4321 (iggy-server) total-vm:12582912kB, anon-rss:8123456kB, file-rss:10240kB, shmem-rss:0kB, UID:998 pgtables:17000kB oom_score_adj:0
"""  # noqa: E501
GLOBAL_OOM = """\
java invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0
oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/app.service,task=java,pid=2222,uid=1000
Out of memory: Killed process 2222 (java) total-vm:9876543kB, anon-rss:4567890kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:9000kB oom_score_adj:0
oom_reaper: reaped process 2222 (java), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB
"""  # noqa: E501
OLD_OOM = """\
Out of memory: Kill process 1234 (iggy-server) score 900 or sacrifice child
Killed process 1234 (iggy-server) total-vm:1234567kB, anon-rss:1000000kB, file-rss:0kB, shmem-rss:0kB
"""  # noqa: E501


def test_parse_oom_kills() -> None:
    [cg, glob] = parse_oom_kills((CGROUP_OOM + GLOBAL_OOM).splitlines())
    assert (cg.process, cg.pid, cg.cgroup, cg.memcg) == (
        "iggy-server",
        4321,
        True,
        "/system.slice/iggy.service",
    )
    assert cg.anon_rss_kb == 8123456 and cg.limit_kb == 8388608 and cg.uid == 998
    assert cg.trigger == "iggy-server"
    assert (glob.process, glob.cgroup, glob.memcg, glob.trigger) == (
        "java",
        False,
        "/system.slice/app.service",
        "java",
    )
    [old] = parse_oom_kills(OLD_OOM.splitlines())
    assert old.process == "iggy-server" and old.total_vm_kb == 1234567 and old.memcg == ""


def oom_log(node: Path, text: str) -> Path:
    stamp = (datetime.now().astimezone() - timedelta(hours=2)).isoformat()
    body = "".join(f"{stamp} events-1 kernel: {line}\n" for line in text.splitlines())
    return write_tree(node, {"var/log/kern.log": body})


def test_memory_oom_broker_victim_fails(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(oom_log(node, CGROUP_OOM)), thresholds=OOM_T)
    result = memory_oom.run(ctx)
    assert result.status == Status.FAIL
    [finding] = result.findings
    assert "iggy-server was OOM-killed 1 time(s)" in finding.message
    assert "anon-rss 7.7 GiB" in finding.message and "limit of 8.0 GiB" in finding.message
    assert "MemoryMax=" in finding.remediation
    [kill] = result.data["kills"]
    assert kill["kind"] == "cgroup" and kill["limit_mib"] == 8192
    assert "invoked oom-killer" in (tmp_path / "artifacts/oom.txt").read_text()


def test_memory_oom_other_victim_warns(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(oom_log(node, GLOBAL_OOM)), thresholds=OOM_T)
    result = memory_oom.run(ctx)
    assert result.status == Status.WARN
    assert (
        result.findings[0].subject == "java" and "OOMScoreAdjust" in result.findings[0].remediation
    )


def test_memory_oom_kills_bands(tmp_path: Path, node: Path) -> None:
    roots = fixture_roots(oom_log(node, GLOBAL_OOM + CGROUP_OOM))
    quiet = OOM_T | {"warn_kills": 2, "fail_broker_kills": 2}
    result = memory_oom.run(make_context(tmp_path, roots=roots, thresholds=quiet))
    assert result.status == Status.PASS and result.findings == []
    assert result.data["total"] == 2 and result.data["broker_kills"] == 1


def test_memory_oom_kill_outside_window_passes(tmp_path: Path, node: Path) -> None:
    # The broker was OOM-killed 30 h ago; the window is 24 h: old news, not a verdict.
    stamp = (datetime.now().astimezone() - timedelta(hours=30)).isoformat()
    body = "".join(f"{stamp} events-1 kernel: {line}\n" for line in CGROUP_OOM.splitlines())
    write_tree(node, {"var/log/kern.log": body})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=OOM_T)
    result = memory_oom.run(ctx)
    assert result.status == Status.PASS and result.data["total"] == 0


def test_memory_oom_none_passes(tmp_path: Path, node: Path) -> None:
    ctx = make_context(
        tmp_path, roots=fixture_roots(oom_log(node, "eth0: link up\n")), thresholds=OOM_T
    )
    result = memory_oom.run(ctx)
    assert result.status == Status.PASS and result.summary.startswith("no OOM kills")
    assert not (tmp_path / "artifacts/oom.txt").exists()


def test_io_uring_no_group_and_confined_broker(tmp_path: Path, node: Path) -> None:
    uring_node(node, "1")
    write_tree(
        node,
        {
            "proc/sys/kernel/io_uring_group": "-1\n",
            "proc/4321/attr/current": "docker-default (enforce)\x00",
            "proc/77/attr/current": "unconfined\n",
        },
    )
    result = kernel_io_uring.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.WARN
    assert "only processes with CAP_SYS_ADMIN" in result.findings[0].message
    [info] = [f for f in result.findings if f.severity == Severity.INFO]
    assert "confined by apparmor 'docker-default (enforce)'" in info.message
    assert result.data["brokers"][0]["lsm_label"] == "docker-default (enforce)"
