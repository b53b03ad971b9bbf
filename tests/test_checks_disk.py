"""Disk checks against fixture node trees: disk.usage, disk.mounts, disk.io, disk.health."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import disk_health as disk_health_mod
from snapshot_agent.checks.disk import disk_usage, judge_usage, read_usage
from snapshot_agent.checks.disk_health import (
    DiskHealth,
    disk_health,
    judge_health,
    list_disks,
    parse_nvme_smart_log,
    parse_smartctl_json,
    read_health,
)
from snapshot_agent.checks.disk_io import IOFacts, disk_io, judge_io, read_io
from snapshot_agent.checks.disk_mounts import MountsFacts, disk_mounts, judge_mounts
from snapshot_agent.config import Config, IggyConfig
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node import mounts as mounts_mod
from snapshot_agent.node.diskstats import DiskCounters, compute_io, parse_diskstats
from snapshot_agent.node.mounts import MountEntry, decode_mount_field, find_mount, parse_mounts

from .conftest import fixture_roots, make_context, write_tree

USAGE_T = {
    "warn_free_gib_below": 100.0,
    "fail_free_gib_below": 20.0,
    "warn_free_pct_below": 5.0,
    "fail_free_pct_below": 3.0,
    "warn_floor_gib_below": 5.0,
    "fail_floor_gib_below": 1.0,
    "warn_pct": 80.0,
    "fail_pct": 90.0,
    "warn_free_inodes_below": 1_000_000,
    "fail_free_inodes_below": 100_000,
    "warn_inode_pct": 80.0,
    "fail_inode_pct": 90.0,
    "small_volume_gib": 10.0,
    "mount_timeout_s": 2.0,
}
#: Thresholds that ask nothing: a verdict on a real directory must not depend on how
#: full the test machine is.
ASK_NOTHING = {
    "warn_free_gib_below": 0.0,
    "fail_free_gib_below": 0.0,
    "warn_free_pct_below": 0.0,
    "fail_free_pct_below": 0.0,
    "warn_floor_gib_below": 0.0,
    "fail_floor_gib_below": 0.0,
    "warn_free_inodes_below": 0,
    "fail_free_inodes_below": 0,
    "small_volume_gib": 0.0,
}
MOUNTS_T = {"mount_timeout_s": 2.0}
IO_T = {
    "warn_util_pct": 80.0,
    "fail_util_pct": 95.0,
    "warn_await_ms": 50.0,
    "fail_await_ms": 200.0,
    "min_ios": 5,
    "sample_s": 0.5,
}
HEALTH_T = {"warn_sectors": 1, "warn_nvme_used_pct": 80.0, "warn_media_errors": 1}

# A realistic /proc/self/mounts of a bare-metal broker node (plus oddities to skip).
MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=8148812k,nr_inodes=2037203,mode=755 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=1635656k,mode=755 0 0
/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
/dev/loop0 /snap/core20/2105 squashfs ro,nodev,relatime,errors=continue 0 0
/dev/nvme1n1 /var/lib/iggy xfs rw,noatime,attr2,inode64,logbufs=8,noquota 0 0
/dev/nvme0n1p2 /srv/bind\\040copy ext4 rw,relatime,errors=remount-ro 0 0
fileserver:/export/backups /mnt/backups nfs4 rw,relatime,vers=4.2,hard,proto=tcp 0 0
"""

GIB = 1024**3


def sv(size_gib: float, avail_gib: float, inodes: int = 1000, ifree: int = 900) -> Any:
    """A statvfs result with 4 KiB blocks and no reserved blocks."""
    blocks = int(size_gib * GIB / 4096)
    free = int(avail_gib * GIB / 4096)
    return os.statvfs_result((4096, 4096, blocks, free, free, inodes, ifree, ifree, 0, 255))


def fake_statvfs(node: Path, table: dict[str, Any], hang: threading.Event | None = None) -> Any:
    """statvfs over node paths; a missing entry raises ENOENT, '/mnt/backups' may hang."""

    def call(path: str) -> Any:
        """The fake statvfs."""
        rel = path[len(str(node)) :] or "/"
        if rel == "/mnt/backups" and hang is not None:
            hang.wait(30)
        value = table.get(rel)
        if isinstance(value, OSError):
            raise value
        if value is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return value

    return call


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event a fake hung mount waits on; set at teardown so no thread outlives long."""
    event = threading.Event()
    yield event
    event.set()


def usage_ctx(tmp_path: Path, node: Path, mounts: str = MOUNTS, **thresholds: Any) -> Context:
    """A disk.usage context over a fixture mount table."""
    write_tree(node, {"proc/self/mounts": mounts})
    return make_context(tmp_path, roots=fixture_roots(node), thresholds=USAGE_T | thresholds)


HEALTHY = {
    "/": sv(100, 60),
    "/run": sv(1.5, 1.4),
    "/dev/shm": sv(8, 8),
    "/var/lib/iggy": sv(1000, 500),
    "/mnt/backups": sv(5000, 4000),
}


# -- mount table ----------------------------------------------------------------------------


def test_mount_fields_decode_octal_escapes() -> None:
    assert decode_mount_field("/srv/bind\\040copy\\011x\\134y") == "/srv/bind copy\tx\\y"
    [entry] = parse_mounts("/dev/sdb /mnt/my\\040disk ext4 rw,noatime 0 0\ngarbage\n")
    assert entry.mountpoint == "/mnt/my disk" and entry.options == ("rw", "noatime")


def test_find_mount_takes_the_longest_prefix() -> None:
    mounts = parse_mounts(MOUNTS)
    assert find_mount(mounts, "/var/lib/iggy/local_data").mountpoint == "/var/lib/iggy"  # type: ignore[union-attr]
    assert find_mount(mounts, "/var/lib/iggyx").mountpoint == "/"  # type: ignore[union-attr]
    assert find_mount(mounts, "/var/lib/iggy").mountpoint == "/var/lib/iggy"  # type: ignore[union-attr]


# -- disk.usage -----------------------------------------------------------------------------


def test_usage_passes_and_skips_pseudo_and_bind_mounts(tmp_path: Path, node: Path) -> None:
    ctx = usage_ctx(tmp_path, node)
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, HEALTHY)), ctx.thresholds)
    assert result.status == Status.PASS, result.summary
    mounts = {row["mount"]: row for row in result.data["filesystems"]}
    # the bind mount of the root device is judged with /, not on its own
    assert set(mounts) == {"/", "/run", "/dev/shm", "/var/lib/iggy", "/mnt/backups"}
    assert mounts["/"]["also_at"] == "/srv/bind copy"
    assert result.data["skipped"]["proc"] == 1 and result.data["skipped"]["squashfs"] == 1
    assert result.data["read_only_not_judged"] == []
    assert "statvfs now" in result.summary and "no growth rate" in result.summary
    assert "tightest /: 60.0 GiB free of 100.0 GiB, warns below 20.0 GiB" in result.summary
    assert mounts["/var/lib/iggy"]["warn_below_gib"] == 100.0
    assert mounts["/var/lib/iggy"]["warn_rule"] == "the 100 GiB headroom"
    assert mounts["/run"]["warn_rule"] == "20 % of a volume under 10 GiB"
    assert mounts["/"]["days_left"] is None  # no growth rate known yet


@pytest.mark.parametrize(
    ("avail", "status", "word"),
    [
        (300, Status.PASS, ""),
        (150, Status.PASS, ""),  # 85 % full, but 150 GiB is a lot of segments
        (60, Status.WARN, "only 60.0 GiB free of 1000.0 GiB (94 % full): warn below 100.0 GiB"),
        (10, Status.FAIL, "(99 % full): fail below 30.0 GiB (3 % of its usable space"),
    ],
)
def test_usage_space_verdicts(
    tmp_path: Path, node: Path, avail: float, status: Status, word: str
) -> None:
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/var/lib/iggy": sv(1000, avail)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == status
    if status != Status.PASS:
        [finding] = result.findings
        assert word in finding.message and finding.subject == "/var/lib/iggy"
        assert "retention" in finding.remediation and "du -xh" in finding.remediation


@pytest.mark.parametrize(("ifree", "status"), [(150, Status.WARN), (50, Status.FAIL)])
def test_usage_inode_verdicts(tmp_path: Path, node: Path, ifree: int, status: Status) -> None:
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/": sv(100, 60, inodes=1000, ifree=ifree)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == status
    [finding] = result.findings
    assert "inodes" in finding.message and finding.subject == "/"


def test_usage_tmpfs_full_gets_tmpfs_advice(tmp_path: Path, node: Path) -> None:
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/dev/shm": sv(8, 0.1)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.FAIL
    assert "RAM" in result.findings[0].remediation


def test_usage_hung_mount_fails_without_blocking_the_rest(
    tmp_path: Path, node: Path, release: threading.Event
) -> None:
    ctx = usage_ctx(tmp_path, node, mount_timeout_s=0.2)
    table = HEALTHY | {"/var/lib/iggy": sv(1000, 60)}
    start = time.monotonic()
    facts = read_usage(ctx, statvfs=fake_statvfs(node, table, hang=release))
    assert time.monotonic() - start < 1.5
    result = judge_usage(facts, ctx.thresholds)
    assert result.status == Status.FAIL
    hung = [f for f in result.findings if f.subject == "/mnt/backups"]
    assert hung and hung[0].severity == Severity.FAIL
    assert "not responding" in hung[0].message and "hung NFS server?" in hung[0].message
    assert "showmount -e fileserver" in hung[0].remediation
    # the other mounts were still judged
    assert any(
        f.subject == "/var/lib/iggy" and f.severity == Severity.WARN for f in result.findings
    )
    assert result.summary.startswith("mount /mnt/backups")


def test_usage_stale_mount_fails_and_permission_is_info(tmp_path: Path, node: Path) -> None:
    ctx = usage_ctx(tmp_path, node)
    stale = HEALTHY | {"/mnt/backups": OSError(errno.ESTALE, "Stale file handle")}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, stale)), ctx.thresholds)
    assert result.status == Status.FAIL and "Stale file handle" in result.summary
    denied = HEALTHY | {"/mnt/backups": PermissionError(errno.EACCES, "Permission denied")}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, denied)), ctx.thresholds)
    assert result.status == Status.PASS
    assert result.findings[0].severity == Severity.INFO


def kubernetes_mounts(count: int) -> str:
    """`count` network-namespace and cgroup mounts, as a Kubernetes node piles them up."""
    lines = []
    for i in range(count):
        pod = f"{i:08x}-4f1c-4b6e-9d0a-{i:012x}"
        if i % 2:
            lines.append(f"nsfs /run/netns/cni-{pod} nsfs rw 0 0\n")
        else:
            lines.append(
                f"cgroup2 /var/lib/kubelet/pods/{pod}/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n"
            )
    return "".join(lines)


def test_usage_judges_the_last_mount_of_a_huge_table(tmp_path: Path, node: Path) -> None:
    tail = "/dev/nvme2n1 /var/lib/iggy-data ext4 rw,noatime 0 0\n"
    mounts = MOUNTS + kubernetes_mounts(14000) + tail
    assert len(mounts.encode()) > 1024 * 1024 + len(tail)  # past the old 1 MiB read cap
    ctx = usage_ctx(tmp_path, node, mounts)
    table = HEALTHY | {"/var/lib/iggy-data": sv(1000, 10)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.FAIL
    [finding] = result.findings
    assert finding.subject == "/var/lib/iggy-data" and "99 % full" in finding.message
    assert result.data["skipped"] == {
        "sysfs": 1,
        "proc": 1,
        "devtmpfs": 1,
        "devpts": 1,
        "cgroup2": 7001,
        "squashfs": 1,
        "nsfs": 7000,
    }


def test_usage_and_mounts_report_a_table_over_the_line_cap(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap falls on a line of its own: nothing half-read is parsed, the rest is an INFO.
    monkeypatch.setattr(mounts_mod, "MAX_MOUNT_LINES", MOUNTS.count("\n"))
    mounts = MOUNTS + "/dev/sdz1 /var/lib/iggy-data ext4 rw,noatime 0 0\n"
    ctx = usage_ctx(tmp_path, node, mounts)
    table = HEALTHY | {"/var/lib/iggy-data": sv(1000, 20)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.PASS
    [info] = result.findings
    assert info.severity == Severity.INFO and info.subject == "/proc/self/mounts"
    assert "more than 12 mounts" in info.message and "df -h" in info.remediation
    assert "/var/lib/iggy-data" not in {row["mount"] for row in result.data["filesystems"]}
    result = disk_mounts.run(mounts_ctx(tmp_path, node / "m", mounts))
    assert result.status == Status.PASS
    assert [f.subject for f in result.findings] == ["/proc/self/mounts"]


def test_usage_against_a_real_directory(tmp_path: Path, node: Path) -> None:
    (node / "data").mkdir()
    mounts = "/dev/sda1 / ext4 rw,relatime 0 0\n/dev/sdb /data xfs rw,noatime 0 0\n"
    # thresholds over 100 %: the verdict must not depend on how full the test machine is
    # (both ends: a band grades fail before warn, and warn must not be above fail)
    over = {"warn_pct": 101.0, "fail_pct": 101.0, "warn_inode_pct": 101.0, "fail_inode_pct": 101.0}
    ctx = usage_ctx(tmp_path, node, mounts, **over | ASK_NOTHING)
    result = disk_usage.run(ctx)
    assert result.status == Status.PASS
    rows = result.data["filesystems"]
    assert [r["mount"] for r in rows] == ["/", "/data"]
    assert all(r["size_gib"] > 0 and r["status"] == "ok" for r in rows)


# The two examples of issue 8, case 9: percentages alone judged both wrong.


def test_usage_big_volume_with_a_small_percentage_free_passes(tmp_path: Path, node: Path) -> None:
    """A 10 TiB broker volume at 85 % still holds 1.5 TiB: days of appends, not a warning."""
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/var/lib/iggy": sv(10 * 1024, 1.5 * 1024)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.PASS, result.summary
    row = next(r for r in result.data["filesystems"] if r["mount"] == "/var/lib/iggy")
    assert row["used_pct"] == 85.0 and row["warn_below_gib"] == 512.0
    assert row["warn_rule"] == "5 % of its usable space, the headroom scaled up"
    # ...and the same volume nearly full in bytes still fails
    table = HEALTHY | {"/var/lib/iggy": sv(10 * 1024, 12)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.FAIL and "fail below 307.2 GiB (3 %" in result.summary


@pytest.mark.parametrize(
    ("size", "avail", "status", "word"),
    [
        # the reviewer's three: over the fixed 20 GiB headroom, minutes of fast appends
        (1024, 25, Status.FAIL, "fail below 30.7 GiB (3 % of its usable space, the headroom"),
        (2048, 21, Status.FAIL, "fail below 61.4 GiB (3 % of its usable space, the headroom"),
        (10 * 1024, 21, Status.FAIL, "fail below 307.2 GiB (3 % of its usable space, the"),
        (10 * 1024, 400, Status.WARN, "warn below 512.0 GiB (5 % of its usable space, the"),
        (10 * 1024, 1.5 * 1024, Status.PASS, ""),  # the healthy example
        # under 667 GiB the 20 GiB headroom still decides fail, under 500 GiB 20 % warns
        (500, 15, Status.FAIL, "fail below 20.0 GiB (the 20 GiB headroom)"),
        (300, 21, Status.WARN, "warn below 60.0 GiB (20 % of its usable space)"),
    ],
)
def test_usage_free_space_need_scales_with_big_volumes(
    tmp_path: Path, node: Path, size: float, avail: float, status: Status, word: str
) -> None:
    """A 10 TiB volume 99.8 % full holds 21 GiB: two minutes at 170 MB/s, so it fails."""
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/var/lib/iggy": sv(size, avail)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == status, result.summary
    if status != Status.PASS:
        [finding] = result.findings
        assert finding.subject == "/var/lib/iggy" and word in finding.message, finding.message


def test_usage_small_volume_with_a_few_gib_free_warns(tmp_path: Path, node: Path) -> None:
    """A 20 GiB root at 79 % has 4.3 GiB left: one core dump or a few segments fill it."""
    ctx = usage_ctx(tmp_path, node)
    table = HEALTHY | {"/": sv(20, 4.3)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.WARN, result.summary
    [finding] = result.findings
    assert finding.subject == "/" and "(79 % full)" in finding.message
    assert "only 4.3 GiB free of 20.0 GiB" in finding.message
    assert "warn below 5.0 GiB (the 5 GiB floor)" in finding.message
    assert "retention" in finding.remediation
    table = HEALTHY | {"/": sv(20, 0.9)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert (
        result.status == Status.FAIL
        and "fail below 2.0 GiB (10 % of its usable space)" in result.summary
    )


@pytest.mark.parametrize(
    ("avail", "status"), [(0.3, Status.PASS), (0.15, Status.WARN), (0.05, Status.FAIL)]
)
def test_usage_small_system_volume_is_judged_by_percentage(
    tmp_path: Path, node: Path, avail: float, status: Status
) -> None:
    """A 1 GiB /boot never holds 5 GiB: under 10 GiB bytes say little, the share decides."""
    mounts = MOUNTS + "/dev/nvme0n1p1 /boot ext4 rw,relatime 0 0\n"
    ctx = usage_ctx(tmp_path, node, mounts)
    table = HEALTHY | {"/boot": sv(1, avail)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == status, result.summary
    if status != Status.PASS:
        assert "of a volume under 10 GiB" in result.findings[0].message


def test_usage_big_filesystem_with_a_small_share_of_inodes_free_passes(
    tmp_path: Path, node: Path
) -> None:
    """100 M inodes at 85 % used leave 15 M: a broker makes a few files per 1 GiB segment."""
    ctx = usage_ctx(tmp_path, node)
    big = HEALTHY | {"/var/lib/iggy": sv(1000, 500, inodes=100_000_000, ifree=15_000_000)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, big)), ctx.thresholds)
    assert result.status == Status.PASS, result.summary
    nearly = HEALTHY | {"/var/lib/iggy": sv(1000, 500, inodes=100_000_000, ifree=50_000)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, nearly)), ctx.thresholds)
    assert result.status == Status.FAIL
    assert "fail below 100,000 (the 100,000 inode headroom)" in result.summary


def test_usage_free_space_bands_come_from_the_config(tmp_path: Path, node: Path) -> None:
    """warn_free_gib_below raises the headroom asked of big volumes (a busier broker)."""
    ctx = usage_ctx(tmp_path, node, warn_free_gib_below=1024.0 + 512)
    table = HEALTHY | {"/var/lib/iggy": sv(10 * 1024, 1024)}
    result = judge_usage(read_usage(ctx, statvfs=fake_statvfs(node, table)), ctx.thresholds)
    assert result.status == Status.WARN
    [finding] = result.findings
    assert finding.subject == "/var/lib/iggy" and "the 1536 GiB headroom" in finding.message


def test_usage_judges_a_real_directory_by_its_free_bytes(tmp_path: Path, node: Path) -> None:
    """statvfs of a real directory: its free bytes as the kernel says, judged against a need."""
    (node / "data").mkdir()
    mounts = "/dev/sdb /data xfs rw,noatime 0 0\n"
    result = disk_usage.run(usage_ctx(tmp_path, node, mounts, **ASK_NOTHING))
    assert result.status == Status.PASS, result.summary
    [row] = result.data["filesystems"]
    real = shutil.disk_usage(node / "data")
    assert abs(row["avail_gib"] * GIB - real.free) < 0.5 * GIB  # other tests may write
    assert abs(row["size_gib"] * GIB - real.total) < 0.01 * GIB
    # a floor no disk meets: the same directory now fails, on its bytes
    floor = ASK_NOTHING | {"warn_floor_gib_below": 1e5, "fail_floor_gib_below": 1e5}
    result = disk_usage.run(usage_ctx(tmp_path, node, mounts, **floor))
    assert result.status == Status.FAIL
    [finding] = result.findings
    assert finding.subject == "/data" and "fail below 100000.0 GiB (the 100000 GiB floor)" in (
        finding.message
    )


# -- disk.mounts ----------------------------------------------------------------------------


def mounts_ctx(
    tmp_path: Path,
    node: Path,
    mounts: str = MOUNTS,
    data_dir: str | None = "/var/lib/iggy/local_data",
    files: dict[str, str] | None = None,
) -> Context:
    """A disk.mounts context whose config names `data_dir` (created in the tree when set)."""
    write_tree(node, {"proc/self/mounts": mounts, **(files or {})})
    if data_dir:
        (node / data_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=MOUNTS_T)
    config = Config(iggy=IggyConfig(data_dir=data_dir), checks=ctx.config.checks)
    return dataclasses.replace(ctx, config=config)


def test_mounts_pass_on_xfs_noatime(tmp_path: Path, node: Path) -> None:
    result = disk_mounts.run(mounts_ctx(tmp_path, node))
    assert result.status == Status.PASS, result.findings
    assert not result.findings
    assert result.data["data_mount"] == "/var/lib/iggy"
    assert "Iggy data on /var/lib/iggy: xfs, rw, noatime" in result.summary
    row = next(r for r in result.data["mounts"] if r["mount"] == "/var/lib/iggy")
    assert row["iggy_data"] and "inode64" in row["options"]


def test_mounts_warn_on_strict_atime(tmp_path: Path, node: Path) -> None:
    mounts = MOUNTS.replace("xfs rw,noatime,attr2", "xfs rw,attr2")
    result = disk_mounts.run(mounts_ctx(tmp_path, node, mounts))
    assert result.status == Status.WARN
    assert "strict atime" in result.summary
    assert "remount,noatime /var/lib/iggy" in result.findings[0].remediation


def test_mounts_fail_when_data_mount_is_read_only(tmp_path: Path, node: Path) -> None:
    mounts = MOUNTS.replace("xfs rw,noatime", "xfs ro,noatime")
    result = disk_mounts.run(mounts_ctx(tmp_path, node, mounts))
    assert result.status == Status.FAIL
    assert "read-only" in result.summary and "kernel.log / dmesg" in result.summary
    assert result.findings[0].subject == "/var/lib/iggy"


def test_mounts_network_data_dir_warns_other_fs_notes(tmp_path: Path, node: Path) -> None:
    nfs = MOUNTS + "nas:/iggy /var/lib/iggy nfs4 rw,relatime,vers=4.2 0 0\n"
    result = disk_mounts.run(mounts_ctx(tmp_path, node, nfs))
    assert result.status == Status.WARN and "network filesystem" in result.summary
    btrfs = MOUNTS.replace("/dev/nvme1n1 /var/lib/iggy xfs", "/dev/nvme1n1 /var/lib/iggy btrfs")
    result = disk_mounts.run(mounts_ctx(tmp_path, node / "b", btrfs))
    assert result.status == Status.PASS
    assert result.findings[0].severity == Severity.INFO and "btrfs" in result.findings[0].message


def test_mounts_missing_data_dir_judges_root(tmp_path: Path, node: Path) -> None:
    result = disk_mounts.run(mounts_ctx(tmp_path, node, data_dir=None))
    assert result.status == Status.PASS
    assert result.data["data_mount"] == "/" and result.data["data_dir_state"] == "missing"
    [info] = result.findings
    assert "does not exist" in info.message and "judged the mount of /" in info.message
    assert result.summary.startswith("root (Iggy data dir not found) on /: ext4")


def test_mounts_unexpected_read_only_mounts(tmp_path: Path, node: Path) -> None:
    extra = (
        "/dev/sdc1 /var/log ext4 ro,relatime 0 0\n"  # fstab says rw: remounted
        "/dev/sdd1 /opt ext4 ro,relatime 0 0\n"  # not in fstab: suspicious
        "/dev/sde1 /boot ext4 ro,relatime 0 0\n"  # fstab says ro: intended
        "/dev/sdf1 /etc/config ext4 ro,relatime 0 0\n"  # bind of a subtree: a volume
        "tmpfs /run/secrets tmpfs ro,relatime 0 0\n"
    )
    fstab = (
        "# /etc/fstab\nUUID=1 / ext4 errors=remount-ro 0 1\n"
        "/dev/sdc1 /var/log ext4 defaults 0 2\n/dev/sde1 /boot ext4 ro 0 2\n"
        "/swapfile none swap sw 0 0\n"
    )
    mountinfo = "101 1 8:81 /pods/x/config /etc/config ro,relatime - ext4 /dev/sdf1 rw\n"
    files = {"etc/fstab": fstab, "proc/self/mountinfo": mountinfo}
    result = disk_mounts.run(mounts_ctx(tmp_path, node, MOUNTS + extra, files=files))
    assert result.status == Status.FAIL
    by_subject = {f.subject: f.severity for f in result.findings}
    assert by_subject == {"/var/log": Severity.FAIL, "/opt": Severity.WARN}
    assert "/etc/fstab mounts it read-write" in result.summary


def test_mounts_reads_bind_roots_past_one_mib_of_mountinfo(tmp_path: Path, node: Path) -> None:
    # A read-only bind of a subtree (a hostPath volume) at the end of a huge table: still
    # known as a bind from mountinfo, so not taken for a remounted disk.
    filler = "".join(
        f"{100 + i} 1 0:{i} / /run/netns/cni-{i:040x} rw shared:{i} - nsfs nsfs rw\n"
        for i in range(14000)
    )
    mountinfo = filler + "99 1 8:81 /pods/x/config /etc/config ro,relatime - ext4 /dev/sdf1 rw\n"
    assert len(mountinfo.encode()) > 1024 * 1024
    mounts = MOUNTS + "/dev/sdf1 /etc/config ext4 ro,relatime 0 0\n"
    files = {"proc/self/mountinfo": mountinfo}
    result = disk_mounts.run(mounts_ctx(tmp_path, node, mounts, files=files))
    assert result.status == Status.PASS, result.findings
    assert not result.findings


def test_mounts_read_only_root_fails(tmp_path: Path, node: Path) -> None:
    mounts = MOUNTS.replace("/ ext4 rw,relatime", "/ ext4 ro,relatime")
    result = disk_mounts.run(mounts_ctx(tmp_path, node, mounts, data_dir=None))
    assert result.status == Status.FAIL and "root filesystem" in result.summary


def test_mounts_hung_data_dir_fails() -> None:
    facts = MountsFacts(
        mounts=parse_mounts(MOUNTS), data_dir="/var/lib/iggy/local_data", data_dir_state="hung"
    )
    result = judge_mounts(facts, MOUNTS_T)
    assert result.status == Status.FAIL and "does not answer" in result.summary
    assert result.data["data_mount"] == "/var/lib/iggy"


# -- disk.io --------------------------------------------------------------------------------

DISKSTATS_1 = """\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
8 0 sda 83092 31664 3270890 34318 7721 35004 1137304 7543 0 8504 42981 16271 52 351688 1099 427 19
   8       1 sda1 83000 31600 3270000 34300 7700 35000 1137000 7540 0 8500 42900 0 0 0 0 0 0
 259       0 nvme0n1 1000 0 80000 500 2000 0 160000 1000 0 1200 1500 0 0 0 0 0 0
 259       1 nvme0n1p1 1000 0 80000 500 2000 0 160000 1000 0 1200 1500 0 0 0 0 0 0
 253       0 dm-0 500 0 4000 100 500 0 4000 100 0 150 200
"""
# 0.5 s later: sda did 100 reads (+400 ms) and 300 writes (+29600 ms) and was busy 490 ms;
# nvme0n1 did 1000 fast writes; dm-0 (11-field format, old kernel) stayed idle.
DISKSTATS_2 = """\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
8 0 sda 83192 31664 3271690 34718 8021 35004 1147544 37143 3 8994 73000 16271 52 351688 1099 427 19
   8       1 sda1 83100 31600 3270800 34700 8000 35000 1147000 37140 3 8990 72900 0 0 0 0 0 0
 259       0 nvme0n1 1000 0 80000 500 3000 0 240000 1100 0 1300 1600 0 0 0 0 0 0
 259       1 nvme0n1p1 1000 0 80000 500 3000 0 240000 1100 0 1300 1600 0 0 0 0 0 0
 253       0 dm-0 500 0 4000 100 500 0 4000 100 0 150 200
"""


def test_parse_diskstats_handles_old_and_new_formats() -> None:
    stats = parse_diskstats(DISKSTATS_1 + "garbage line\n 8 2 sdz x y\n")
    assert set(stats) == {"loop0", "sda", "sda1", "nvme0n1", "nvme0n1p1", "dm-0"}
    assert stats["sda"].discards == 16271 and stats["dm-0"].discards == 0
    assert stats["sda"].io_ms == 8504


def test_compute_io_like_iostat() -> None:
    devices = {
        d.name: d
        for d in compute_io(parse_diskstats(DISKSTATS_1), parse_diskstats(DISKSTATS_2), 0.5)
    }
    assert set(devices) == {"sda", "nvme0n1", "dm-0"}  # partitions and idle loop0 left out
    sda = devices["sda"]
    assert sda.r_s == pytest.approx(200) and sda.w_s == pytest.approx(600)
    assert sda.r_await_ms == pytest.approx(4.0) and sda.w_await_ms == pytest.approx(98.67, 0.01)
    assert sda.await_ms == pytest.approx(30000 / 400)
    assert sda.util_pct == pytest.approx(98.0) and sda.aqu_sz == pytest.approx(60.038)
    assert sda.write_mb_s == pytest.approx(10240 * 512 / 1024**2 / 0.5)
    assert devices["nvme0n1"].w_s == pytest.approx(2000) and devices["dm-0"].ios == 0


def test_compute_io_ignores_wrapped_counters() -> None:
    after = parse_diskstats(DISKSTATS_1.replace("83092", "10"))
    assert "sda" not in {d.name for d in compute_io(parse_diskstats(DISKSTATS_1), after, 0.5)}


def test_read_io_samples_through_the_context(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/diskstats": DISKSTATS_1})
    for name in ("sda", "nvme0n1", "dm-0", "loop0"):
        (node / "sys/block" / name).mkdir(parents=True)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=IO_T)
    ticks = iter([10.0, 10.5])

    def sleep(seconds: float) -> None:
        """Instead of waiting, the disks 'do' their I/O."""
        assert seconds == 0.5
        (node / "proc/diskstats").write_text(DISKSTATS_2)

    facts = read_io(ctx, 0.5, sleep=sleep, clock=lambda: next(ticks))
    assert facts.interval_s == 0.5 and [d.name for d in facts.devices] == ["dm-0", "nvme0n1", "sda"]
    result = judge_io(facts, IO_T)
    assert result.status == Status.FAIL
    [finding] = result.findings
    assert finding.subject == "/dev/sda" and "98 % busy" in finding.message
    assert "average I/O wait 75 ms" in finding.message and "iostat -x" in finding.remediation
    assert "# sample 2" in (tmp_path / "artifacts/diskstats.txt").read_text()


def io_device(util: float, await_ms: float, ios: int = 100) -> Any:
    """A device with the given utilisation, wait and I/O count."""
    d = compute_io(parse_diskstats(DISKSTATS_1), parse_diskstats(DISKSTATS_1), 0.5)[0]
    return dataclasses.replace(d, name="sdb", util_pct=util, await_ms=await_ms, ios=ios)


@pytest.mark.parametrize(
    ("util", "await_ms", "ios", "status"),
    [
        (20, 2, 100, Status.PASS),
        (99, 1, 100, Status.WARN),  # busy but fast: NVMe-style parallelism, not saturation
        (30, 80, 100, Status.WARN),
        (30, 500, 100, Status.FAIL),
        (99, 60, 100, Status.FAIL),  # busy and waiting
        (10, 900, 2, Status.PASS),  # two slow I/Os in half a second say little
        (95, 50, 100, Status.FAIL),  # both at their thresholds: reaching one counts
        (99, 600, 2, Status.WARN),  # busy; the wait of two I/Os is not judged, so no fail
    ],
)
def test_judge_io_verdicts(util: float, await_ms: float, ios: int, status: Status) -> None:
    result = judge_io(IOFacts(0.5, [io_device(util, await_ms, ios)]), IO_T)
    assert result.status == status, result.summary


def test_disk_checks_declare_their_bands() -> None:
    assert {"warn_pct", "fail_pct", "warn_inode_pct", "fail_inode_pct"} <= set(
        disk_usage.thresholds
    )
    assert {"warn_util_pct", "fail_util_pct", "warn_await_ms", "fail_await_ms"} <= set(
        disk_io.thresholds
    )
    assert disk_health.thresholds == {
        "warn_sectors": 1,
        "warn_nvme_used_pct": 80.0,
        "warn_media_errors": 1,
    }


def test_disk_io_runs_on_a_quiet_fixture(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/diskstats": DISKSTATS_1})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=IO_T | {"sample_s": 0.01})
    result = disk_io.run(ctx)
    assert result.status == Status.PASS and "busiest" in result.summary


# -- disk.health ----------------------------------------------------------------------------


def ata_json(passed: bool = True, realloc: int = 0, pending: int = 0) -> str:
    """smartctl 7.3 `-i -H -A --json` output of a SATA SSD."""

    def attr(ident: int, name: str, raw: int, raw_str: str | None = None) -> dict[str, Any]:
        """One row of ata_smart_attributes.table."""
        return {
            "id": ident,
            "name": name,
            "value": 100,
            "worst": 100,
            "thresh": 10 if ident == 5 else 0,
            "when_failed": "",
            "flags": {
                "value": 50,
                "string": "-O--CK ",
                "prefailure": False,
                "updated_online": True,
                "performance": False,
                "error_rate": False,
                "event_count": True,
                "auto_keep": True,
            },
            "raw": {"value": raw, "string": raw_str or str(raw)},
        }

    doc = {
        "json_format_version": [1, 0],
        "smartctl": {
            "version": [7, 3],
            "svn_revision": "5338",
            "platform_info": "x86_64-linux-6.1.0-18-amd64",
            "build_info": "(local build)",
            "argv": ["smartctl", "-i", "-H", "-A", "--json", "/dev/sda"],
            "exit_status": 0 if passed else 8,
        },
        "local_time": {"time_t": 1795443997, "asctime": "Mon Nov 23 14:26:37 2026 UTC"},
        "device": {
            "name": "/dev/sda",
            "info_name": "/dev/sda [SAT]",
            "type": "sat",
            "protocol": "ATA",
        },
        "model_family": "Samsung based SSDs",
        "model_name": "Samsung SSD 870 EVO 1TB",
        "serial_number": "S6PTNX0T123456A",
        "firmware_version": "SVT02B6Q",
        "user_capacity": {"blocks": 1953525168, "bytes": 1000204886016},
        "smart_support": {"available": True, "enabled": True},
        "smart_status": {"passed": passed},
        "ata_smart_attributes": {
            "revision": 1,
            "table": [
                attr(5, "Reallocated_Sector_Ct", realloc),
                attr(9, "Power_On_Hours", 21043),
                attr(190, "Airflow_Temperature_Cel", 34),
                attr(194, "Temperature_Celsius", 158915952674, "34 (Min/Max 20/45)"),
                attr(197, "Current_Pending_Sector", pending),
                attr(198, "Offline_Uncorrectable", 0),
            ],
        },
        "power_on_time": {"hours": 21043},
        "power_cycle_count": 57,
        "temperature": {"current": 34},
    }
    return json.dumps(doc, indent=2)


SMARTCTL_NVME = json.dumps(
    {
        "json_format_version": [1, 0],
        "smartctl": {
            "version": [7, 3],
            "argv": ["smartctl", "-i", "-H", "-A", "--json", "/dev/nvme0"],
            "exit_status": 0,
        },
        "device": {
            "name": "/dev/nvme0",
            "info_name": "/dev/nvme0",
            "type": "nvme",
            "protocol": "NVMe",
        },
        "model_name": "SAMSUNG MZVL21T0HCLR-00B00",
        "serial_number": "S676NF0R123456",
        "smart_support": {"available": True, "enabled": True},
        "smart_status": {"passed": True, "nvme": {"value": 0}},
        "nvme_smart_health_information_log": {
            "critical_warning": 0,
            "temperature": 38,
            "available_spare": 100,
            "available_spare_threshold": 10,
            "percentage_used": 85,
            "data_units_read": 17462339,
            "data_units_written": 124891211,
            "host_reads": 211876133,
            "host_writes": 411213009,
            "controller_busy_time": 1312,
            "power_cycles": 231,
            "power_on_hours": 7402,
            "unsafe_shutdowns": 41,
            "media_errors": 0,
            "num_err_log_entries": 512,
            "warning_temp_time": 0,
            "critical_comp_time": 0,
            "temperature_sensors": [38, 43],
        },
        "temperature": {"current": 38},
        "power_cycle_count": 231,
        "power_on_time": {"hours": 7402},
    }
)

# nvme-cli 2.3 `nvme smart-log /dev/nvme0 -o json` (temperature in kelvin)
NVME_CLI = """{
  "critical_warning":4,
  "temperature":311,
  "avail_spare":100,
  "spare_thresh":10,
  "percent_used":3,
  "endurance_grp_critical_warning_summary":0,
  "data_units_read":17462339,
  "data_units_written":24891211,
  "host_read_commands":211876133,
  "host_write_commands":411213009,
  "controller_busy_time":1312,
  "power_cycles":231,
  "power_on_hours":7402,
  "unsafe_shutdowns":41,
  "media_errors":7,
  "num_err_log_entries":512,
  "warning_temp_time":0,
  "critical_comp_time":0,
  "temperature_sensor_1":311,
  "temperature_sensor_2":316,
  "thm_temp1_trans_count":0,
  "thm_temp2_trans_count":0,
  "thm_temp1_total_time":0,
  "thm_temp2_total_time":0
}
"""

# What smartctl 7.3 really prints for a virtio disk (captured on the development VM).
SMARTCTL_VIRTIO = """{
  "json_format_version": [1, 0],
  "smartctl": {
    "version": [7, 3],
    "svn_revision": "5338",
    "platform_info": "x86_64-linux-6.1.0-18-amd64",
    "build_info": "(local build)",
    "argv": ["smartctl", "-i", "-H", "-A", "--json", "/dev/vda"],
    "messages": [{"string": "/dev/vda: Unable to detect device type", "severity": "error"}],
    "exit_status": 1
  },
  "local_time": {"time_t": 1795443997, "asctime": "Mon Nov 23 14:26:37 2026 UTC"}
}
"""


@pytest.mark.parametrize(
    ("doc", "status", "word"),
    [
        (ata_json(), Status.PASS, ""),
        (ata_json(realloc=8, pending=2), Status.WARN, "8 reallocated and 2 pending sectors"),
        (ata_json(passed=False, realloc=120), Status.FAIL, "self-assessment FAILED"),
    ],
)
def test_smartctl_ata_verdicts(doc: str, status: Status, word: str) -> None:
    health = parse_smartctl_json(doc, "/dev/sda", "ata-or-scsi")
    assert health.model == "Samsung SSD 870 EVO 1TB" and health.kind == "ata"
    assert health.temperature_c == 34 and health.power_on_hours == 21043
    result = judge_health([health], HEALTH_T)
    assert result.status == status
    assert word in result.summary
    if status == Status.PASS:
        assert result.summary == "1 disk healthy (/dev/sda)"
        assert result.data["disks"][0]["health"] == "passed"


def test_smartctl_nvme_wear_warns() -> None:
    health = parse_smartctl_json(SMARTCTL_NVME, "/dev/nvme0", "nvme")
    assert health.percentage_used == 85 and health.temperature_c == 38
    result = judge_health([health], HEALTH_T)
    assert result.status == Status.WARN and "85 % of its rated endurance" in result.summary


def test_nvme_cli_critical_warning_fails() -> None:
    health = parse_nvme_smart_log(NVME_CLI, "/dev/nvme0")
    assert health.temperature_c == 38 and health.media_errors == 7
    result = judge_health([health], HEALTH_T)
    assert result.status == Status.FAIL
    assert "critical warning 0x04: reliability degraded" in result.summary
    assert {f.severity for f in result.findings} == {Severity.FAIL, Severity.WARN}


def test_nvme_cli_verbose_critical_warning_object() -> None:
    doc = json.loads(NVME_CLI) | {"critical_warning": {"value": 0, "available_spare": 0}}
    doc["media_errors"] = 0
    health = parse_nvme_smart_log(json.dumps(doc), "/dev/nvme0")
    assert health.critical_warning == 0
    assert judge_health([health], HEALTH_T).status == Status.PASS


def test_smartctl_on_a_virtual_disk_is_a_note_not_an_error() -> None:
    health = parse_smartctl_json(SMARTCTL_VIRTIO, "/dev/vda")
    assert not health.supported and "Unable to detect device type" in health.note
    result = judge_health([health], HEALTH_T)
    assert result.status == Status.PASS
    assert result.findings[0].severity == Severity.INFO
    assert parse_smartctl_json("not json", "/dev/sda").supported is False


def sys_block(node: Path) -> Path:
    """A /sys/block with a SATA disk, two namespaces of one NVMe, a virtio disk and noise."""
    files = {
        "sys/block/sda/device/vendor": "ATA     \n",
        "sys/block/sda/device/model": "Samsung SSD 870\n",
        "sys/block/nvme0n1/device/model": "SAMSUNG MZVL21T0HCLR-00B00\n",
        "sys/block/nvme0n2/device/model": "SAMSUNG MZVL21T0HCLR-00B00\n",
        "sys/block/vda/device/vendor": "0x1af4\n",
        "sys/block/loop0/size": "0\n",
        "sys/block/dm-0/size": "0\n",
    }
    return write_tree(node, files)


def test_list_disks_classifies_devices(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(sys_block(node)))
    disks = {d.device: d.kind for d in list_disks(ctx)}
    assert disks == {"/dev/nvme0": "nvme", "/dev/sda": "ata-or-scsi", "/dev/vda": "virtual"}


def fake_tool(tmp_path: Path, name: str, outputs: dict[str, str]) -> str:
    """An executable that prints the canned output for the device it is asked about."""
    for dev, text in outputs.items():
        (tmp_path / f"{name}-{dev}.out").write_text(text)
    script = tmp_path / name
    script.write_text(
        '#!/bin/sh\nfor a in "$@"; do case $a in /dev/*) dev=${a#/dev/};; esac; done\n'
        f'cat "{tmp_path}/{name}-$dev.out"\n'
    )
    script.chmod(0o755)
    return str(script)


def test_read_health_runs_the_tools(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(sys_block(node)), thresholds=HEALTH_T)
    have = {
        "smartctl": fake_tool(tmp_path, "smartctl", {"sda": ata_json(realloc=3)}),
        "nvme": fake_tool(tmp_path, "nvme", {"nvme0": NVME_CLI}),
    }
    healths = read_health(ctx, list_disks(ctx), have)
    by_dev = {h.device: h for h in healths}
    assert by_dev["/dev/sda"].reallocated == 3 and by_dev["/dev/nvme0"].source == "nvme-cli"
    assert not by_dev["/dev/vda"].supported and "virtual" in by_dev["/dev/vda"].note
    result = judge_health(healths, HEALTH_T)
    assert result.status == Status.FAIL
    assert {f.subject for f in result.findings} == {"/dev/sda", "/dev/nvme0", "/dev/vda"}
    assert (tmp_path / "artifacts/smartctl-sda.json").exists()
    assert (tmp_path / "artifacts/nvme-smart-log-nvme0.json").exists()
    argvs = [c["argv"][1:] for c in ctx.commands]
    assert ["-i", "-H", "-A", "--json", "/dev/sda"] in argvs
    assert ["smart-log", "/dev/nvme0", "-o", "json"] in argvs


def test_disk_health_skips_virtual_only_and_without_tools(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(node, {"sys/block/vda/device/vendor": "0x1af4\n", "sys/block/zram0/size": "0\n"})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=HEALTH_T)
    result = disk_health.run(ctx)
    assert result.status == Status.SKIPPED and "only virtual disks (vda)" in result.summary

    sys_block(node)

    def missing(binary: str) -> None:
        """No tool is installed."""
        return None

    monkeypatch.setattr(disk_health_mod, "find_tool", missing)
    result = disk_health.run(ctx)
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("install smartmontools to check disk health")


def test_judge_health_without_data_is_a_pass_with_notes() -> None:
    h = DiskHealth("/dev/sdb", "ata-or-scsi", supported=False, note="install smartmontools")
    result = judge_health([h], HEALTH_T)
    assert result.status == Status.PASS and "no health data for /dev/sdb" in result.summary


def test_mount_entry_flags() -> None:
    m = MountEntry("srv:/x", "/mnt/x", "nfs4", ("ro", "hard"))
    assert m.read_only and m.network
    assert DiskCounters("sda", 0, 0, 0, 0, 0, 0, 0, 0, 0).discards == 0
