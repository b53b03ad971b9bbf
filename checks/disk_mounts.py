"""disk.mounts: how the Iggy data directory's filesystem is mounted, and unexpected
read-only mounts.

The mount table and the hang-safe probes come from snapshot_agent.node.mounts: the data
directory is looked up under a timeout, since its filesystem may hang. The table, fstab,
bind roots and the data directory are all read in one view, the host's when the agent
runs in a sandbox of its own (node.host_view): a sandbox's read-only / is not the node's.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import DEFAULT_READ_LIMIT, Context
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.host_view import (
    OWN,
    MountView,
    mount_view,
    read_beneath,
    resolve_beneath,
    view_result,
)
from snapshot_agent.node.iggy_install import discover
from snapshot_agent.node.mounts import (
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
    data_dir_source: str = "the default location"  # how discovery found it
    data_dir_state: str = "exists"  # exists | missing | hung | error: <reason>
    data_path: str = DEFAULT_DATA_DIR  # data_dir with symlinks resolved when possible
    timeout_s: float = 2.0
    table_truncated: bool = False  # the mount table had more than MAX_MOUNT_LINES lines
    view: MountView = OWN  # whose mount table was read (the host's from a sandbox)


def parse_fstab(text: str) -> dict[str, tuple[str, ...]]:
    """Mount point -> options from /etc/fstab (swap and comments left out)."""
    return {
        m.mountpoint: m.options
        for m in parse_mounts(text)
        if m.mountpoint.startswith("/") and m.fstype != "swap"
    }


def _read_fstab(ctx: Context, view: MountView) -> str:
    """/etc/fstab as the view's root has it ("" when unreadable)."""
    if not view.host:
        return ctx.read_optional("/etc/fstab") or ""
    try:
        return read_beneath(str(ctx.path(view.root)), "/etc/fstab", DEFAULT_READ_LIMIT)
    except OSError:
        return ""


def _look_beneath(root: str, data_dir: str) -> tuple[bool, str]:
    """Does the data directory exist in the host's tree, and where it really lives there."""
    real, exists = resolve_beneath(root, data_dir)
    return exists, real if exists else data_dir


def read_mounts(
    ctx: Context, timeout_s: float | None = None, view: MountView | None = None
) -> MountsFacts:
    """Mount table, fstab, bind roots, and the Iggy data directory (stat under a timeout).

    All in the view `mount_view` picks: in the host's, the data directory is resolved
    beneath /proc/1/root. A path into a broker's container (/proc/PID/root/...) is
    looked at as the agent sees it, since its mounts are in neither table.
    """
    wanted = float(timeout_s if timeout_s is not None else ctx.thresholds["mount_timeout_s"])
    view = mount_view(ctx) if view is None else view
    mounts, truncated = read_mount_table(ctx, view.mounts_path)
    facts = MountsFacts(
        mounts=mounts, timeout_s=probe_budget(ctx, wanted), table_truncated=truncated, view=view
    )
    facts.fstab = parse_fstab(_read_fstab(ctx, view))
    facts.bind_roots = read_mountinfo_roots(ctx, view.mountinfo_path)
    install = discover(ctx)
    facts.data_dir_source = install.data_dir_source or "the default location"
    facts.data_dir = posixpath.normpath(install.data_dir or DEFAULT_DATA_DIR)
    facts.data_path = facts.data_dir
    mapped = ctx.path(facts.data_dir)
    live = ctx.live
    root = str(ctx.path(view.root))

    def look() -> tuple[bool, str]:
        """Does the data directory exist, and where does it really live."""
        if view.host and not facts.data_dir.startswith("/proc/"):
            return _look_beneath(root, facts.data_dir)
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


def _located(facts: MountsFacts) -> bool:
    """Whether the data directory was found (a hung one still tells its mount by path)."""
    return facts.data_dir_state in ("exists", "hung")


def _where(facts: MountsFacts) -> str:
    """What the data mount is called in messages."""
    return f"Iggy data directory {facts.data_dir}" if _located(facts) else "root filesystem"


def _data_mount_read_only(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """FAIL when the data (or a disk root) is read-only; INFO for a read-only container root."""
    if not m.read_only:
        return None
    intended_ro = "ro" in facts.fstab.get(m.mountpoint, ())
    if _located(facts) or (not intended_ro and m.fstype in RW_DISK_FS):
        return Finding(
            Severity.FAIL,
            f"filesystem of the {_where(facts)} ({m.mountpoint}, {m.fstype}) is mounted "
            "read-only — usually remounted after I/O errors; check kernel.log / dmesg",
            _ro_remedy(m.mountpoint),
            m.mountpoint,
        )
    if intended_ro:
        return None
    return Finding(
        Severity.INFO,
        f"the root filesystem ({m.fstype}) is read-only, as in a container or image "
        "started with a read-only root",
        "Make sure Iggy's data directory is on a writable volume, and set "
        "iggy.data_dir in the agent config so this check judges that volume.",
        m.mountpoint,
    )


def _data_on_network(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """WARN: the data lives on a network or FUSE filesystem."""
    if not m.network:
        return None
    return Finding(
        Severity.WARN,
        f"the {_where(facts)} is on a network filesystem ({m.fstype} from {m.device})",
        "A log-structured broker wants a local disk: network filesystems add latency "
        "to every append and fsync, have weaker flush semantics, and hang the broker "
        "when the server goes away. Move system.path to a local ext4/XFS volume.",
        m.mountpoint,
    )


def _data_in_ram(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """WARN: the data lives in RAM and is lost at reboot."""
    if m.fstype not in ("tmpfs", "ramfs"):
        return None
    return Finding(
        Severity.WARN,
        f"the {_where(facts)} is on {m.fstype} (RAM): every message is lost at reboot",
        "Unless this is a throwaway test node, point system.path at a disk-backed "
        "ext4/XFS filesystem.",
        m.mountpoint,
    )


def _data_in_overlay(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """WARN: the data lives in a container's overlay layer, not on a volume."""
    if m.fstype != "overlay":
        return None
    return Finding(
        Severity.WARN,
        f"the {_where(facts)} is in the container's overlay layer, not on a volume",
        "The data disappears when the container is recreated, and copy-on-write overlay "
        "is slower; mount a volume at the data directory (e.g. `-v iggy-data:/app/"
        "local_data`, or a PersistentVolumeClaim).",
        m.mountpoint,
    )


def _data_on_unusual_fs(facts: MountsFacts, m: MountEntry) -> Finding:
    """INFO: the data lives on a filesystem other than ext4 or XFS."""
    return Finding(
        Severity.INFO,
        f"the {_where(facts)} is on {m.fstype}, not ext4 or XFS",
        "It works, but ext4 and XFS are what Iggy is usually run and tuned on; on "
        "copy-on-write filesystems (btrfs, zfs) append-only segment files fragment.",
        m.mountpoint,
    )


def _data_fs_type(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """How well the data mount's filesystem type suits a log-structured broker."""
    if m.fstype in GOOD_DATA_FS:
        return None
    if not _located(facts):
        # A container root says nothing about where the data will be; a disk root does.
        return _data_on_unusual_fs(facts, m) if m.fstype in RW_DISK_FS else None
    return (
        _data_on_network(facts, m)
        or _data_in_ram(facts, m)
        or _data_in_overlay(facts, m)
        or _data_on_unusual_fs(facts, m)
    )


def _data_strict_atime(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """WARN: every read of a segment writes its inode (no noatime/relatime/lazytime)."""
    if any(o in m.options for o in ("noatime", "relatime", "lazytime")):
        return None
    return Finding(
        Severity.WARN,
        f"the {_where(facts)} ({m.mountpoint}) is mounted with strict atime: every read of a "
        "segment writes its inode",
        f"`mount -o remount,noatime {m.mountpoint}` now, and add `noatime` to its "
        "options in /etc/fstab so it survives a reboot; consumers reading segments "
        "should not cause disk writes.",
        m.mountpoint,
    )


def _judge_data_mount(facts: MountsFacts, m: MountEntry) -> list[Finding]:
    """Read-only state, filesystem type and atime of the mount holding Iggy's data."""
    rules = (_data_mount_read_only, _data_fs_type, _data_strict_atime)
    return [f for rule in rules if (f := rule(facts, m)) is not None]


def _data_lookup(facts: MountsFacts) -> str:
    """The path whose mount is judged as the data mount."""
    if facts.data_dir_state == "exists":
        return facts.data_path
    if facts.data_dir_state == "hung":
        return facts.data_dir  # symlinks unresolved: resolving would hang as well
    return "/"


def _data_dir_hung(facts: MountsFacts, data_mount: MountEntry | None) -> Finding | None:
    """FAIL: stat of the data directory did not return (its filesystem is hung)."""
    if facts.data_dir_state != "hung":
        return None
    return Finding(
        Severity.FAIL,
        f"Iggy data directory {facts.data_dir} does not answer: stat did not return "
        f"within {facts.timeout_s:g} s (its filesystem is hung)",
        "The broker is most likely stuck in D state too (`ps -eo pid,stat,comm | grep "
        "' D'`). Check the disk or file server behind "
        f"{data_mount.mountpoint if data_mount else 'it'} and dmesg for I/O errors.",
        facts.data_dir,
    )


def _data_dir_not_found(facts: MountsFacts) -> Finding | None:
    """INFO: the data directory is missing or unreadable, so / was judged instead."""
    if facts.data_dir_state in ("exists", "hung"):
        return None
    how = facts.data_dir_source
    state = "does not exist" if facts.data_dir_state == "missing" else "is unreadable"
    return Finding(
        Severity.INFO,
        f"Iggy data directory {facts.data_dir} ({how}) {state} here; judged the mount of / instead",
        "Set iggy.data_dir in the agent config to the broker's system.path "
        "(IGGY_SYSTEM_PATH; /app/local_data in the official image).",
        facts.data_dir,
    )


def _read_only_why(facts: MountsFacts, m: MountEntry) -> tuple[Severity, str] | None:
    """Why a read-only mount (other than the data mount) is unexpected; None if it is not."""
    if not m.read_only or m.fstype in PSEUDO_FS or m.fstype in READONLY_BY_DESIGN:
        return None
    intended = facts.fstab.get(m.mountpoint)
    if intended is not None:
        if "ro" in intended:
            return None  # read-only on purpose
        return Severity.FAIL, "but /etc/fstab mounts it read-write"
    if m.mountpoint == "/" and m.fstype in RW_DISK_FS:
        return Severity.FAIL, "and it is the root filesystem"
    if m.fstype in RW_DISK_FS and facts.bind_roots.get(m.mountpoint, "/") == "/":
        return Severity.WARN, "though this filesystem type is normally read-write"
    return None  # tmpfs, overlay and bind-mounted subtrees: read-only by design (volumes)


def _unexpected_read_only(facts: MountsFacts, m: MountEntry) -> Finding | None:
    """WARN or FAIL for a mount that is read-only but should be writable."""
    why = _read_only_why(facts, m)
    if why is None:
        return None
    return Finding(
        why[0],
        f"{m.mountpoint} ({m.fstype} on {m.device}) is mounted read-only {why[1]} — "
        "remounted after I/O errors? check kernel.log / dmesg",
        _ro_remedy(m.mountpoint),
        m.mountpoint,
    )


def _mounts_ok(facts: MountsFacts, data_mount: MountEntry) -> str:
    """The summary when nothing is wrong: how the data mount is mounted."""
    atime = next((o for o in data_mount.options if o in ("noatime", "relatime")), "strictatime")
    what = "Iggy data" if facts.data_dir_state == "exists" else "root (Iggy data dir not found)"
    return (
        f"{what} on {data_mount.mountpoint}: {data_mount.fstype}, "
        f"{'ro' if data_mount.read_only else 'rw'}, {atime}; "
        "no unexpected read-only mounts"
    )


def judge_mounts(facts: MountsFacts, thresholds: dict[str, Any]) -> Result:
    """Judge the Iggy data mount and any mount that is read-only but should be writable."""
    data_mount = find_mount(facts.mounts, _data_lookup(facts))
    found = [_data_dir_hung(facts, data_mount), _data_dir_not_found(facts)]
    findings = [f for f in found if f is not None]
    if data_mount is not None:
        findings += _judge_data_mount(facts, data_mount)
    others = (_unexpected_read_only(facts, m) for m in facts.mounts if m is not data_mount)
    findings += [f for f in others if f is not None]
    if facts.table_truncated:
        findings.append(table_truncated_finding(facts.view.mounts_path))
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
    ok = _mounts_ok(facts, data_mount) if data_mount else "no mount table entries"
    return view_result(facts.view, findings, ok=ok, data=data)


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
    """Judge how the data directory's filesystem is mounted.

    Verdicts:
    - pass: Iggy's data on a local xfs mount, rw, noatime [test_mounts_pass_on_xfs_noatime]
    - pass: a read-only bind of a subtree (a hostPath volume) at the end of a huge table
      [test_mounts_reads_bind_roots_past_one_mib_of_mountinfo]
    - pass: the data directory on btrfs (a note about copy-on-write)
      [test_mounts_network_data_dir_warns_other_fs_notes]
    - pass: no data directory yet: the mount of / is judged, with a note
      [test_mounts_missing_data_dir_judges_root]
    - pass: run in a sandbox whose / is read-only (ProtectSystem=strict): the host's /
      and the data directory's mount are judged, read-write
      [test_host_view_from_a_read_only_namespace_judges_the_hosts_mounts]
    - warn: the data mount uses strict atime (a metadata write per read)
      [test_mounts_warn_on_strict_atime]
    - warn: the data directory on NFS [test_mounts_network_data_dir_warns_other_fs_notes]
    - warn: a read-only mount /etc/fstab does not know [test_mounts_unexpected_read_only_mounts]
    - fail: the data mount remounted read-only (errors=remount-ro)
      [test_mounts_fail_when_data_mount_is_read_only]
    - fail: /var/log read-only while /etc/fstab mounts it read-write
      [test_mounts_unexpected_read_only_mounts]
    - fail: the root filesystem read-only [test_mounts_read_only_root_fails]
    - fail: the data directory does not answer (hung mount) [test_mounts_hung_data_dir_fails]

    One read of the mount tables and one stat of the data directory, now, in the host's
    view when the agent runs in a mount namespace of its own.
    """
    return judge_mounts(read_mounts(ctx), ctx.thresholds)
