"""disk.mounts: how the Iggy data directory's filesystem is mounted, and unexpected
read-only mounts.

The mount table and the hang-safe probes come from disk.py: the data directory is looked
up under a timeout, since its filesystem may hang.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.checks.disk import (
    MAX_ROWS,
    PSEUDO_FS,
    READONLY_BY_DESIGN,
    MountEntry,
    find_mount,
    parse_mounts,
    probe_all,
    probe_budget,
    read_mount_table,
    read_mountinfo_roots,
    table_truncated_finding,
)
from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity

DEFAULT_DATA_DIR = "/var/lib/iggy/local_data"

#: Disk filesystems that are normally mounted read-write.
RW_DISK_FS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "zfs", "bcachefs", "vfat"}
)
GOOD_DATA_FS = frozenset({"ext4", "xfs"})


@dataclass
class MountsFacts:
    """The mount table, what fstab intends, and where Iggy's data lives."""

    mounts: list[MountEntry]
    fstab: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mount point -> options
    bind_roots: dict[str, str] = field(default_factory=dict)  # mount point -> root in its fs
    data_dir: str = DEFAULT_DATA_DIR
    data_dir_configured: bool = False
    data_dir_state: str = "exists"  # exists | missing | hung | error: <reason>
    data_path: str = DEFAULT_DATA_DIR  # data_dir with symlinks resolved when possible
    timeout_s: float = 2.0
    table_truncated: bool = False  # /proc/self/mounts had more than MAX_MOUNT_LINES lines


def parse_fstab(text: str) -> dict[str, tuple[str, ...]]:
    """Mount point -> options from /etc/fstab (swap and comments left out)."""
    return {
        m.mountpoint: m.options
        for m in parse_mounts(text)
        if m.mountpoint.startswith("/") and m.fstype != "swap"
    }


def read_mounts(ctx: Context, timeout_s: float | None = None) -> MountsFacts:
    """Mount table, fstab, bind roots, and the Iggy data directory (stat under a timeout)."""
    wanted = float(timeout_s if timeout_s is not None else ctx.thresholds["mount_timeout_s"])
    mounts, truncated = read_mount_table(ctx)
    facts = MountsFacts(
        mounts=mounts, timeout_s=probe_budget(ctx, wanted), table_truncated=truncated
    )
    facts.fstab = parse_fstab(ctx.read_optional("/etc/fstab") or "")
    facts.bind_roots = read_mountinfo_roots(ctx)
    configured = ctx.config.iggy.data_dir
    facts.data_dir_configured = bool(configured)
    facts.data_dir = posixpath.normpath(configured or DEFAULT_DATA_DIR)
    facts.data_path = facts.data_dir
    mapped = ctx.path(facts.data_dir)
    live = ctx.live

    def look() -> tuple[bool, str]:
        """Does the data directory exist, and where does it really live."""
        exists = mapped.is_dir()
        # Symlinks resolve only on the live node: in a fixture tree they point elsewhere.
        real = os.path.realpath(facts.data_dir) if live and exists else facts.data_dir
        return exists, real

    probe = probe_all({"data_dir": look}, facts.timeout_s)["data_dir"]
    if not probe.done:
        facts.data_dir_state = "hung"
    elif probe.error is not None:
        facts.data_dir_state = f"error: {probe.error}"
    else:
        exists, facts.data_path = probe.value
        facts.data_dir_state = "exists" if exists else "missing"
    return facts


def _ro_remedy(mp: str) -> str:
    """What to do about a filesystem remounted read-only."""
    return (
        "Find why: `dmesg -T | grep -iE 'I/O error|EXT4-fs error|XFS|remount'` and kernel.log; "
        "check the drive (disk.health, `smartctl -a`). Once the disk is sound, repair offline "
        f"(`fsck` / `xfs_repair`) and `mount -o remount,rw {mp}`. While read-only, Iggy cannot "
        "append messages, roll segments or store consumer offsets."
    )


def _judge_data_mount(facts: MountsFacts, m: MountEntry, findings: list[Finding]) -> None:
    """Filesystem type, atime and read-only state of the mount holding Iggy's data."""
    # A hung data directory still tells where the data lives (its mount was found by path).
    located = facts.data_dir_state in ("exists", "hung")
    where = f"Iggy data directory {facts.data_dir}" if located else "root filesystem"
    subject = m.mountpoint
    intended_ro = "ro" in facts.fstab.get(m.mountpoint, ())
    if m.read_only and (located or (not intended_ro and m.fstype in RW_DISK_FS)):
        findings.append(
            Finding(
                Severity.FAIL,
                f"filesystem of the {where} ({m.mountpoint}, {m.fstype}) is mounted "
                "read-only — usually remounted after I/O errors; check kernel.log / dmesg",
                _ro_remedy(m.mountpoint),
                subject,
            )
        )
    elif m.read_only and not intended_ro:
        findings.append(
            Finding(
                Severity.INFO,
                f"the root filesystem ({m.fstype}) is read-only, as in a container or image "
                "started with a read-only root",
                "Make sure Iggy's data directory is on a writable volume, and set "
                "iggy.data_dir in the agent config so this check judges that volume.",
                subject,
            )
        )
    fstype = m.fstype
    if fstype in GOOD_DATA_FS or (not located and fstype not in RW_DISK_FS):
        pass  # fine, or a container root that says nothing about where the data will be
    elif m.network and located:
        findings.append(
            Finding(
                Severity.WARN,
                f"the {where} is on a network filesystem ({fstype} from {m.device})",
                "A log-structured broker wants a local disk: network filesystems add latency "
                "to every append and fsync, have weaker flush semantics, and hang the broker "
                "when the server goes away. Move system.path to a local ext4/XFS volume.",
                subject,
            )
        )
    elif fstype in ("tmpfs", "ramfs") and located:
        findings.append(
            Finding(
                Severity.WARN,
                f"the {where} is on {fstype} (RAM): every message is lost at reboot",
                "Unless this is a throwaway test node, point system.path at a disk-backed "
                "ext4/XFS filesystem.",
                subject,
            )
        )
    elif fstype == "overlay" and located:
        findings.append(
            Finding(
                Severity.WARN,
                f"the {where} is in the container's overlay layer, not on a volume",
                "The data disappears when the container is recreated, and copy-on-write overlay "
                "is slower; mount a volume at the data directory (e.g. `-v iggy-data:/app/"
                "local_data`, or a PersistentVolumeClaim).",
                subject,
            )
        )
    else:
        findings.append(
            Finding(
                Severity.INFO,
                f"the {where} is on {fstype}, not ext4 or XFS",
                "It works, but ext4 and XFS are what Iggy is usually run and tuned on; on "
                "copy-on-write filesystems (btrfs, zfs) append-only segment files fragment.",
                subject,
            )
        )
    if not any(o in m.options for o in ("noatime", "relatime", "lazytime")):
        findings.append(
            Finding(
                Severity.WARN,
                f"the {where} ({m.mountpoint}) is mounted with strict atime: every read of a "
                "segment writes its inode",
                f"`mount -o remount,noatime {m.mountpoint}` now, and add `noatime` to its "
                "options in /etc/fstab so it survives a reboot; consumers reading segments "
                "should not cause disk writes.",
                subject,
            )
        )


def judge_mounts(facts: MountsFacts, thresholds: dict[str, Any]) -> Result:
    """Judge the Iggy data mount and any mount that is read-only but should be writable."""
    findings: list[Finding] = []
    if facts.data_dir_state == "exists":
        lookup = facts.data_path
    elif facts.data_dir_state == "hung":
        lookup = facts.data_dir  # symlinks unresolved: resolving would hang as well
    else:
        lookup = "/"
    data_mount = find_mount(facts.mounts, lookup)
    if facts.data_dir_state == "hung":
        findings.append(
            Finding(
                Severity.FAIL,
                f"Iggy data directory {facts.data_dir} does not answer: stat did not return "
                f"within {facts.timeout_s:g} s (its filesystem is hung)",
                "The broker is most likely stuck in D state too (`ps -eo pid,stat,comm | grep "
                "' D'`). Check the disk or file server behind "
                f"{data_mount.mountpoint if data_mount else 'it'} and dmesg for I/O errors.",
                facts.data_dir,
            )
        )
    elif facts.data_dir_state != "exists":
        how = "iggy.data_dir" if facts.data_dir_configured else "the default location"
        findings.append(
            Finding(
                Severity.INFO,
                f"Iggy data directory {facts.data_dir} ({how}) "
                f"{'does not exist' if facts.data_dir_state == 'missing' else 'is unreadable'}"
                " here; judged the mount of / instead",
                "Set iggy.data_dir in the agent config to the broker's system.path "
                "(IGGY_SYSTEM_PATH; /app/local_data in the official image).",
                facts.data_dir,
            )
        )
    if data_mount is not None:
        _judge_data_mount(facts, data_mount, findings)
    for m in facts.mounts:
        if m is data_mount or not m.read_only:
            continue
        if m.fstype in PSEUDO_FS or m.fstype in READONLY_BY_DESIGN:
            continue
        intended = facts.fstab.get(m.mountpoint)
        bind_sub = facts.bind_roots.get(m.mountpoint, "/") != "/"
        if intended is not None:
            if "ro" in intended:
                continue  # read-only on purpose
            sev, why = Severity.FAIL, "but /etc/fstab mounts it read-write"
        elif m.mountpoint == "/" and m.fstype in RW_DISK_FS:
            sev, why = Severity.FAIL, "and it is the root filesystem"
        elif m.fstype in RW_DISK_FS and not bind_sub:
            sev, why = Severity.WARN, "though this filesystem type is normally read-write"
        else:
            continue  # tmpfs, overlay and bind-mounted subtrees: read-only by design (volumes)
        findings.append(
            Finding(
                sev,
                f"{m.mountpoint} ({m.fstype} on {m.device}) is mounted read-only {why} — "
                "remounted after I/O errors? check kernel.log / dmesg",
                _ro_remedy(m.mountpoint),
                m.mountpoint,
            )
        )
    if facts.table_truncated:
        findings.append(table_truncated_finding())
    rows = [
        {
            "mount": m.mountpoint,
            "device": m.device,
            "fstype": m.fstype,
            "options": ",".join(m.options),
            "read_only": m.read_only,
            "iggy_data": m is data_mount,
        }
        for m in facts.mounts
    ]
    data: dict[str, Any] = {
        "data_dir": facts.data_dir,
        "data_dir_state": facts.data_dir_state,
        "data_mount": data_mount.mountpoint if data_mount else None,
        "mounts": rows[:MAX_ROWS],
    }
    if data_mount is None:
        return Result.from_findings(findings, ok="no mount table entries", data=data)
    atime = next((o for o in data_mount.options if o in ("noatime", "relatime")), "strictatime")
    what = "Iggy data" if facts.data_dir_state == "exists" else "root (Iggy data dir not found)"
    ok = (
        f"{what} on {data_mount.mountpoint}: {data_mount.fstype}, "
        f"{'ro' if data_mount.read_only else 'rw'}, {atime}; "
        "no unexpected read-only mounts"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="disk.mounts",
    category="disk",
    title="Mount options",
    description="Filesystem type, atime and read-only state of the Iggy data mount; "
    "unexpected read-only mounts.",
    requires=Requirements(paths=("/proc/self/mounts",)),
    timeout_s=8,
    thresholds={"mount_timeout_s": 2.0},
)
def disk_mounts(ctx: Context) -> Result:
    """Judge how the data directory's filesystem is mounted."""
    return judge_mounts(read_mounts(ctx), ctx.thresholds)
