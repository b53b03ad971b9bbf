"""disk.usage: space and inodes of every filesystem that can fill up.

The mount table and the hang-safe probes come from snapshot_agent.node.mounts (disk.mounts
uses them too); disk.io and disk.health are in disk_io.py and disk_health.py.

Choices worth knowing when reading the verdicts:

- disk.usage judges every filesystem that can fill up and be written to. Skipped: kernel
  pseudo filesystems (proc, sysfs, cgroup, devtmpfs, ...), images that are full by design
  (squashfs, iso9660, erofs), anything under /proc or /sys, and read-only mounts (nothing
  can fill them; disk.mounts judges why they are read-only). Kept: tmpfs (/dev/shm and
  /run full in RAM break programs too), overlay (a container's writable layer is the host
  disk), network and FUSE mounts. Bind mounts of one block device are judged once.
- statvfs on a dead NFS/CIFS/FUSE mount blocks in the kernel forever, so every call that
  may touch a mount runs in a daemon thread with a per-mount timeout; a mount that does
  not answer is a FAIL and the other mounts are still judged. The runner takes the result
  even when such a thread stays stuck.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.units import GIB, mib_or_gib
from snapshot_agent.node.mounts import (
    PSEUDO_FS,
    READONLY_BY_DESIGN,
    MountEntry,
    bind,
    probe_all,
    probe_budget,
    read_mount_table,
    table_truncated_finding,
)

MAX_MOUNTS = 1000  # more than this is a pathological mount table; the rest are not probed

#: errno values meaning the mount is broken (not merely unreadable by us).
BROKEN_ERRNOS = frozenset(
    {errno.ESTALE, errno.ENOTCONN, errno.EIO, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.ENODEV}
)

#: Used space in percent, as df computes it.
USED_PCT = Band("pct", warn=80.0, fail=90.0)
#: Used inodes in percent (filesystems with an inode limit).
INODE_PCT = Band("inode_pct", warn=80.0, fail=90.0)


def _server_of(m: MountEntry) -> str:
    """The server a network mount talks to (host of host:/export or //host/share)."""
    dev = m.device
    if dev.startswith("//"):
        return dev[2:].split("/", 1)[0]
    if ":" in dev and not dev.startswith("/"):
        return dev.split(":", 1)[0]
    return ""


def _hung_finding(m: MountEntry, timeout_s: float, what: str = "statvfs") -> Finding:
    """FAIL for a mount that does not answer."""
    server = _server_of(m)
    if m.fstype.startswith("fuse"):
        cause = "hung FUSE daemon?"
        check_server = f"check the FUSE process serving it (`ps -ef | grep {m.device}`)"
    else:
        cause = "hung NFS server?" if m.fstype.startswith("nfs") else "hung file server?"
        host = server or "<server>"
        check_server = (
            f"check the server: `ping {host}`, `showmount -e {host}` / `rpcinfo -p {host}`"
        )
    return Finding(
        Severity.FAIL,
        f"mount {m.mountpoint} ({m.fstype} from {m.device}) is not responding: {what} did not "
        f"return within {timeout_s:g} s — {cause}",
        f"Anything touching it (df, ls, backups, the broker if its data or logs live there) "
        f"blocks in D state. {check_server}; if the server is gone for good, "
        f"`umount -f -l {m.mountpoint}`. Mount network filesystems with `soft,timeo=` or via "
        "automount, and keep Iggy's data directory on a local disk.",
        m.mountpoint,
    )


def _broken_finding(m: MountEntry, exc: OSError) -> Finding:
    """FAIL for a mount whose statvfs fails with a 'broken mount' errno."""
    return Finding(
        Severity.FAIL,
        f"mount {m.mountpoint} ({m.fstype} from {m.device}) is broken: "
        f"{exc.strerror or exc} — stale NFS handle or dead FUSE daemon?",
        f"Remount it: `umount -l {m.mountpoint} && mount {m.mountpoint}`; for NFS check the "
        "export still exists on the server; for FUSE restart the daemon that serves it.",
        m.mountpoint,
    )


@dataclass
class MountUsage:
    """Space and inode usage of one filesystem (possibly seen at several mount points)."""

    mount: MountEntry
    also_at: list[str] = field(default_factory=list)
    state: str = "ok"  # ok | hung | error | empty
    error: OSError | None = None
    size: int = 0
    used: int = 0
    avail: int = 0  # for unprivileged users, like df
    inodes: int = 0  # 0: the filesystem has no inode limit (btrfs, some FUSE)
    inodes_used: int = 0

    @property
    def used_pct(self) -> float:
        """Used space as df computes it: used / (used + available to users)."""
        total = self.used + self.avail
        return 100.0 * self.used / total if total else 0.0

    @property
    def inodes_pct(self) -> float | None:
        """Used inodes in percent, None when the filesystem has no inode limit."""
        return 100.0 * self.inodes_used / self.inodes if self.inodes else None


@dataclass
class UsageFacts:
    """All judged filesystems plus what was left out and why."""

    usages: list[MountUsage] = field(default_factory=list)
    skipped_types: dict[str, int] = field(default_factory=dict)
    read_only: list[str] = field(default_factory=list)
    timeout_s: float = 2.0
    not_probed: int = 0
    table_truncated: bool = False  # /proc/self/mounts had more than MAX_MOUNT_LINES lines


def fill_usage(usage: MountUsage, st: Any) -> None:
    """Fill sizes from a statvfs result (os.statvfs_result or anything with its fields)."""
    frsize = st.f_frsize or st.f_bsize
    usage.size = st.f_blocks * frsize
    usage.used = max(0, st.f_blocks - st.f_bfree) * frsize
    usage.avail = st.f_bavail * frsize
    usage.inodes = st.f_files
    usage.inodes_used = max(0, st.f_files - st.f_ffree)
    if usage.size == 0:
        usage.state = "empty"


def usage_candidates(mounts: list[MountEntry], facts: UsageFacts) -> list[MountUsage]:
    """Mounts worth judging, one per filesystem; records what was skipped in `facts`."""
    groups: dict[str, list[MountEntry]] = {}
    for m in mounts:
        mp = m.mountpoint
        if m.fstype in PSEUDO_FS or m.fstype in READONLY_BY_DESIGN:
            facts.skipped_types[m.fstype] = facts.skipped_types.get(m.fstype, 0) + 1
            continue
        if mp in ("/proc", "/sys") or mp.startswith(("/proc/", "/sys/")):
            facts.skipped_types["under /proc or /sys"] = (
                facts.skipped_types.get("under /proc or /sys", 0) + 1
            )
            continue
        if m.read_only:
            facts.read_only.append(mp)
            continue
        # Bind mounts of one block device are one filesystem; virtual ones (tmpfs,
        # overlay, nfs...) cannot be told apart by device name, so each stands alone.
        key = m.device if m.device.startswith("/") else "\0" + mp
        groups.setdefault(key, []).append(m)
    out: list[MountUsage] = []
    for members in groups.values():
        members.sort(key=lambda m: (len(m.mountpoint), m.mountpoint))
        out.append(MountUsage(members[0], [m.mountpoint for m in members[1:]]))
    return out


def read_usage(
    ctx: Context,
    statvfs: Callable[[str], Any] = os.statvfs,
    timeout_s: float | None = None,
) -> UsageFacts:
    """statvfs every candidate mount (mapped through the context roots) under a timeout."""
    wanted = float(timeout_s if timeout_s is not None else ctx.thresholds["mount_timeout_s"])
    facts = UsageFacts(timeout_s=probe_budget(ctx, wanted))
    mounts, facts.table_truncated = read_mount_table(ctx)
    candidates = usage_candidates(mounts, facts)
    if len(candidates) > MAX_MOUNTS:
        facts.not_probed = len(candidates) - MAX_MOUNTS
        candidates = candidates[:MAX_MOUNTS]
    calls = {
        u.mount.mountpoint: bind(statvfs, str(ctx.path(u.mount.mountpoint))) for u in candidates
    }
    probes = probe_all(calls, facts.timeout_s)
    for usage in candidates:
        probe = probes[usage.mount.mountpoint]
        if not probe.done:
            usage.state = "hung"
        elif isinstance(probe.error, OSError):
            usage.state, usage.error = "error", probe.error
        elif probe.error is not None:
            raise probe.error
        else:
            fill_usage(usage, probe.value)
        facts.usages.append(usage)
    return facts


def _space_remedy(u: MountUsage) -> str:
    """What to do about a filesystem filling up, depending on its kind."""
    mp = u.mount.mountpoint
    if u.mount.fstype == "tmpfs":
        return (
            f"{mp} is tmpfs, i.e. RAM: find what fills it with `du -xsh {mp}/* | sort -h | "
            f"tail`; remove stale files or raise the limit (`mount -o remount,size=2G {mp}`, "
            "and the size= option in /etc/fstab). A full /dev/shm or /run breaks programs "
            "and services that write there."
        )
    return (
        f"Find what grew: `du -xh --max-depth=2 {mp} 2>/dev/null | sort -h | tail -20`. If it "
        "holds Iggy's data, lower the topics' retention (message expiry / max topic size) or "
        "add capacity (grow the volume, then `resize2fs`/`xfs_growfs`); at 100 % the broker "
        "can no longer append messages or persist offsets. Also check for deleted-but-open "
        "files (`lsof +L1`) and old rotated logs."
    )


def _inode_remedy(u: MountUsage) -> str:
    """What to do about inodes running out."""
    mp = u.mount.mountpoint
    return (
        f"Something creates many small files: `find {mp} -xdev -type f | cut -d/ -f1-4 | "
        "sort | uniq -c | sort -n | tail` shows where. With no inodes left nothing can "
        "create files (Iggy cannot open a new segment or index) even with free space; "
        "clean up, or recreate the filesystem with more inodes (mkfs.ext4 -i) / use XFS."
    )


def _not_answering(u: MountUsage, timeout_s: float) -> Finding | None:
    """FAIL: statvfs on the mount did not return in time (hung server or FUSE daemon)."""
    return _hung_finding(u.mount, timeout_s) if u.state == "hung" else None


def _statvfs_refused(u: MountUsage) -> Finding | None:
    """FAIL when statvfs says the mount is broken; INFO when we merely may not look."""
    if u.state != "error" or u.error is None:
        return None
    if u.error.errno in BROKEN_ERRNOS:
        return _broken_finding(u.mount, u.error)
    return Finding(
        Severity.INFO,
        f"could not check {u.mount.mountpoint}: {u.error.strerror or u.error}",
        "Run snapshot-agent as root; FUSE mounts without allow_other refuse other users.",
        u.mount.mountpoint,
    )


def _space_exhaustion(u: MountUsage, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL when the filesystem's used space reaches the USED_PCT band."""
    pct = u.used_pct
    severity = USED_PCT.grade(pct, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{u.mount.mountpoint} is {pct:.0f} % full ({mib_or_gib(u.avail)} free of "
        f"{mib_or_gib(u.size)}), at or over {USED_PCT.limit(severity, thresholds):g} %",
        _space_remedy(u),
        u.mount.mountpoint,
    )


def _inode_exhaustion(u: MountUsage, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL when the filesystem's used inodes reach the INODE_PCT band."""
    ipct = u.inodes_pct
    severity = INODE_PCT.grade(ipct, thresholds)
    if ipct is None or severity is None:
        return None
    return Finding(
        severity,
        f"{u.mount.mountpoint} has used {ipct:.0f} % of its inodes "
        f"({u.inodes - u.inodes_used:,} of {u.inodes:,} left), at or over "
        f"{INODE_PCT.limit(severity, thresholds):g} %",
        _inode_remedy(u),
        u.mount.mountpoint,
    )


def _usage_columns(u: MountUsage) -> dict[str, Any]:
    """Size, use and inode columns of a judged filesystem's table row."""
    ipct = u.inodes_pct
    return {
        "size_gib": round(u.size / GIB, 2),
        "used_pct": round(u.used_pct, 1),
        "avail_gib": round(u.avail / GIB, 2),
        "inodes_used_pct": None if ipct is None else round(ipct, 1),
        "also_at": ", ".join(u.also_at),
    }


def _row_status(found: list[Finding]) -> str:
    """'fail' when any finding fails, else 'warn' when there is one, else 'ok'."""
    if any(f.severity == Severity.FAIL for f in found):
        return str(Severity.FAIL)
    return str(Severity.WARN) if found else "ok"


def _left_out(facts: UsageFacts) -> list[Finding]:
    """INFO for the mounts that were not probed or not read at all."""
    findings: list[Finding] = []
    if facts.not_probed:
        findings.append(
            Finding(
                Severity.INFO,
                f"{facts.not_probed} more mounts were not checked (over {MAX_MOUNTS})",
                "Run `df -h` and `df -i` by hand for the rest.",
            )
        )
    if facts.table_truncated:
        findings.append(table_truncated_finding())
    return findings


def _usage_ok(judged: list[MountUsage], thresholds: dict[str, Any]) -> str:
    """The summary when nothing is wrong: how many filesystems, and the fullest."""
    if not judged:
        return "no writable filesystems with a size to judge"
    fullest = max(judged, key=lambda u: u.used_pct)
    warn = USED_PCT.limit(Severity.WARN, thresholds)
    iwarn = INODE_PCT.limit(Severity.WARN, thresholds)
    return (
        f"{len(judged)} filesystems below {warn:g} % space and {iwarn:g} % inodes; fullest "
        f"{fullest.mount.mountpoint} at {fullest.used_pct:.0f} % "
        f"({mib_or_gib(fullest.avail)} free)"
    )


def judge_usage(facts: UsageFacts, thresholds: dict[str, Any]) -> Result:
    """Space and inodes per filesystem against their bands; hung mounts fail."""
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    judged: list[MountUsage] = []
    for u in facts.usages:
        m = u.mount
        row: dict[str, Any] = {"mount": m.mountpoint, "device": m.device, "fstype": m.fstype}
        if hung := _not_answering(u, facts.timeout_s):
            findings.append(hung)
            rows.append(row | {"status": "not responding"})
        elif refused := _statvfs_refused(u):
            findings.append(refused)
            rows.append(row | {"status": f"error: {u.error.strerror or u.error}"})
        elif u.state != "empty":  # empty: a FUSE or virtual fs reporting no size
            judged.append(u)
            found = [
                f
                for f in (_space_exhaustion(u, thresholds), _inode_exhaustion(u, thresholds))
                if f is not None
            ]
            findings += found
            rows.append(row | _usage_columns(u) | {"status": _row_status(found)})
    findings += _left_out(facts)
    data = {
        "filesystems": rows[:MAX_ROWS],
        "read_only_not_judged": facts.read_only[:MAX_ROWS],
        "skipped": facts.skipped_types,
        "mount_timeout_s": facts.timeout_s,
    }
    return Result.from_findings(findings, ok=_usage_ok(judged, thresholds), data=data)


@check(
    id="disk.usage",
    category="disk",
    title="Disk space and inodes",
    description="Space and inode usage of every real mount; mounts that do not answer fail.",
    requires=Requirements(paths=("/proc/self/mounts",)),
    timeout_s=10,
    bands=(USED_PCT, INODE_PCT),
    thresholds={"mount_timeout_s": 2.0},
)
def disk_usage(ctx: Context) -> Result:
    """df -h and df -i, judged, without hanging on dead network mounts."""
    return judge_usage(read_usage(ctx), ctx.thresholds)
