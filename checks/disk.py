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
- Free space is judged in bytes, because what a volume has left is what the broker can
  still append: a 10 TiB volume at 85 % still holds 1.5 TiB, a 20 GiB one at 79 % only
  4.3 GiB, a few segments. The rule is written out next to its bands (FREE_GIB,
  FREE_PCT, FLOOR_GIB, USED_PCT) and applied by `space_needed`; inodes are judged the
  same way (`inodes_needed`). Only one statvfs per mount is taken, so the verdict is
  about now: how fast space goes (days left) needs a growth rate, which the agent does
  not have yet.
- The mounts judged are the host's: from a sandbox of its own (the systemd unit's
  ProtectSystem=strict shows / read-only, PrivateTmp= a private /tmp) the agent reads
  PID 1's mount table and reaches each mount through /proc/1/root (node.host_view); the
  data's `mount_view` and the summary say which view was read.
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
from snapshot_agent.node.host_view import (
    OWN,
    MountView,
    mount_view,
    statvfs_beneath,
    view_result,
)
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

# How much free space a filesystem must keep (`space_needed`), in four parts:
#
# - FREE_GIB, the headroom: free space a broker volume keeps whatever its size, for a
#   burst of writes, a segment roll-over, a core dump. 100 GiB is about a day of appends
#   at 1.2 MB/s (ten minutes at 170 MB/s): no fixed number fits every broker, which is
#   why days left (from a growth rate) will replace it once the agent knows one.
# - FREE_PCT, the scale: a big volume keeps 5 % of its usable space (3 % for fail) when
#   that is more than the headroom, i.e. from 2000 GiB up for warn and from 667 GiB up
#   for fail. A big volume is bought for a big broker, and a fixed 20 GiB is two minutes
#   of its appends at 170 MB/s: without the scale a 10 TiB volume 99.8 % full only
#   warned. 5 % still lets a 10 TiB volume at 85 % (1.5 TiB free) pass.
# - USED_PCT, the share: a volume smaller than five times the headroom (500 GiB) is asked
#   for 20 % of its usable space instead (10 % for fail; usable is df's used + free), the
#   old rule, since asking a 100 GiB volume for 100 GiB free would flag every healthy one.
# - FLOOR_GIB, the floor: yet never less than 5 GiB (1 GiB for fail) on a volume of
#   SMALL_VOLUME_GIB or more: below that one more 1 GiB segment (Iggy's default size), a
#   package upgrade or a core dump fills it, whatever the percentage says.
#
# Volumes under SMALL_VOLUME_GIB (/boot, /boot/efi, /run and other small tmpfs) hold no
# broker data and grow slowly: bytes say little there, so the percentage alone decides.

#: Free space a volume too big for the USED_PCT share keeps, in GiB (the headroom),
#: unless FREE_PCT asks more of it.
FREE_GIB = Band.minimum("free_gib_below", warn=100.0, fail=20.0)
#: Free space in percent of usable space that a volume keeps above the headroom: the
#: headroom grows with the volume (warn from 95 % full as df shows it, fail from 97 %).
FREE_PCT = Band.minimum("free_pct_below", warn=5.0, fail=3.0)
#: Free space a filesystem of SMALL_VOLUME_GIB or more keeps at least, in GiB.
FLOOR_GIB = Band.minimum("floor_gib_below", warn=5.0, fail=1.0)
#: Used space in percent, as df computes it: the share of smaller volumes, and the whole
#: rule below SMALL_VOLUME_GIB.
USED_PCT = Band("pct", warn=80.0, fail=90.0)
#: Volumes smaller than this (GiB) are judged by USED_PCT alone.
SMALL_VOLUME_GIB = 10.0
#: Free inodes a filesystem keeps at most: a broker makes a few files per 1 GiB segment,
#: so a million free inodes is years of segments; big filesystems (100 M inodes) are not
#: flagged at 85 % used. Smaller ones are asked for the INODE_PCT share; there is no
#: floor, since a handful of files per segment never needs one.
FREE_INODES = Band.minimum("free_inodes_below", warn=1_000_000, fail=100_000)
#: Used inodes in percent (filesystems with an inode limit): the share asked of them.
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
    table_truncated: bool = False  # the mount table had more than MAX_MOUNT_LINES lines
    view: MountView = OWN  # whose mount table was read (the host's from a sandbox)


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
    statvfs: Callable[[Any], Any] = os.statvfs,
    timeout_s: float | None = None,
    view: MountView | None = None,
) -> UsageFacts:
    """statvfs every candidate mount under a timeout, in the view `mount_view` picks.

    The own view maps each mount point through the context roots; the host's reaches it
    beneath /proc/1/root, through a descriptor (statvfs is then given that descriptor).
    """
    wanted = float(timeout_s if timeout_s is not None else ctx.thresholds["mount_timeout_s"])
    view = mount_view(ctx) if view is None else view
    facts = UsageFacts(timeout_s=probe_budget(ctx, wanted), view=view)
    mounts, facts.table_truncated = read_mount_table(ctx, view.mounts_path)
    candidates = usage_candidates(mounts, facts)
    if len(candidates) > MAX_MOUNTS:
        facts.not_probed = len(candidates) - MAX_MOUNTS
        candidates = candidates[:MAX_MOUNTS]
    root = str(ctx.path(view.root))

    def reach(mountpoint: str) -> Callable[[], Any]:
        """The statvfs call of one mount point, in the chosen view."""
        if view.host:
            return lambda: statvfs_beneath(root, mountpoint, statvfs)
        return bind(statvfs, str(ctx.path(mountpoint)))

    calls = {u.mount.mountpoint: reach(u.mount.mountpoint) for u in candidates}
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


@dataclass(frozen=True)
class SpaceNeed:
    """Free space (bytes or inodes) a filesystem must keep to stay under one severity."""

    amount: float
    rule: str  # the part that set it, e.g. "the 100 GiB headroom" or "20 % of its usable space"


def _small_volume_gib(thresholds: dict[str, Any]) -> float:
    return float(thresholds.get("small_volume_gib", SMALL_VOLUME_GIB))


def space_needed(u: MountUsage, severity: Severity, thresholds: dict[str, Any]) -> SpaceNeed:
    """Free bytes `u` must keep not to reach `severity`: max(floor, min(headroom, share), scale).

    Under small_volume_gib only the share (the percentage band) counts.
    """
    usable = u.used + u.avail  # what df's percentage is of (root's reserve left out)
    share_pct = 100.0 - float(USED_PCT.limit(severity, thresholds))
    share = usable * share_pct / 100.0
    small = _small_volume_gib(thresholds)
    if u.size < small * GIB:
        return SpaceNeed(share, f"{share_pct:g} % of a volume under {small:g} GiB")
    headroom = float(FREE_GIB.limit(severity, thresholds)) * GIB
    need = (
        SpaceNeed(headroom, f"the {headroom / GIB:g} GiB headroom")
        if headroom <= share
        else SpaceNeed(share, f"{share_pct:g} % of its usable space")
    )
    scale_pct = float(FREE_PCT.limit(severity, thresholds))
    scale = usable * scale_pct / 100.0
    if scale > need.amount:
        need = SpaceNeed(scale, f"{scale_pct:g} % of its usable space, the headroom scaled up")
    floor = float(FLOOR_GIB.limit(severity, thresholds)) * GIB
    return SpaceNeed(floor, f"the {floor / GIB:g} GiB floor") if floor > need.amount else need


def inodes_needed(u: MountUsage, severity: Severity, thresholds: dict[str, Any]) -> SpaceNeed:
    """Free inodes `u` must keep not to reach `severity`: the share, capped by the headroom."""
    share_pct = 100.0 - float(INODE_PCT.limit(severity, thresholds))
    share = u.inodes * share_pct / 100.0
    headroom = float(FREE_INODES.limit(severity, thresholds))
    if headroom <= share:
        return SpaceNeed(headroom, f"the {headroom:,.0f} inode headroom")
    return SpaceNeed(share, f"{share_pct:g} % of its inodes")


def _grade_free(
    band: Band, free: float, need: Callable[[Severity], SpaceNeed]
) -> tuple[Severity, SpaceNeed] | None:
    """The severity `free` reaches against this filesystem's needs (a minimum: meeting is fine)."""
    needs = {sev: need(sev) for sev in (Severity.WARN, Severity.FAIL)}
    limits = {
        band.warn_key: needs[Severity.WARN].amount,
        band.fail_key: needs[Severity.FAIL].amount,
    }
    severity = band.grade(free, limits)
    return None if severity is None else (severity, needs[severity])


def _space_exhaustion(u: MountUsage, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL when the free bytes fall below what the filesystem must keep."""
    graded = _grade_free(FREE_GIB, u.avail, lambda sev: space_needed(u, sev, thresholds))
    if graded is None:
        return None
    severity, need = graded
    return Finding(
        severity,
        f"{u.mount.mountpoint} has only {mib_or_gib(u.avail)} free of {mib_or_gib(u.size)} "
        f"({u.used_pct:.0f} % full): {severity} below {mib_or_gib(need.amount)} ({need.rule})",
        _space_remedy(u),
        u.mount.mountpoint,
    )


def _inode_exhaustion(u: MountUsage, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL when the free inodes fall below what the filesystem must keep."""
    if not u.inodes:
        return None  # no inode limit (btrfs, some FUSE)
    free = u.inodes - u.inodes_used
    graded = _grade_free(FREE_INODES, free, lambda sev: inodes_needed(u, sev, thresholds))
    if graded is None:
        return None
    severity, need = graded
    return Finding(
        severity,
        f"{u.mount.mountpoint} has only {free:,} inodes free of {u.inodes:,} "
        f"({u.inodes_pct:.0f} % used): {severity} below {need.amount:,.0f} ({need.rule})",
        _inode_remedy(u),
        u.mount.mountpoint,
    )


def _usage_columns(u: MountUsage, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Size, use, what it must keep and inode columns of a judged filesystem's table row."""
    ipct = u.inodes_pct
    need = space_needed(u, Severity.WARN, thresholds)
    return {
        "size_gib": round(u.size / GIB, 2),
        "used_pct": round(u.used_pct, 1),
        "avail_gib": round(u.avail / GIB, 2),
        "warn_below_gib": round(need.amount / GIB, 2),
        "warn_rule": need.rule,
        "days_left": None,  # days left needs a growth rate, which the agent does not have yet
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
        findings.append(table_truncated_finding(facts.view.mounts_path))
    return findings


def _usage_ok(judged: list[MountUsage], thresholds: dict[str, Any]) -> str:
    """The summary when nothing is wrong: what was measured, and the tightest filesystem."""
    if not judged:
        return "no writable filesystems with a size to judge"

    def margin(u: MountUsage) -> float:
        """Free space over what it must keep before a warning (smallest: tightest)."""
        return u.avail / max(space_needed(u, Severity.WARN, thresholds).amount, 1.0)

    tight = min(judged, key=margin)
    need = space_needed(tight, Severity.WARN, thresholds)
    return (
        f"{len(judged)} filesystems keep the free space and inodes they need (statvfs now; "
        f"free bytes judged, no growth rate known yet for days left); tightest "
        f"{tight.mount.mountpoint}: {mib_or_gib(tight.avail)} free of {mib_or_gib(tight.size)}, "
        f"warns below {mib_or_gib(need.amount)} ({need.rule})"
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
            rows.append(row | _usage_columns(u, thresholds) | {"status": _row_status(found)})
    findings += _left_out(facts)
    data = {
        "filesystems": rows[:MAX_ROWS],
        "read_only_not_judged": facts.read_only[:MAX_ROWS],
        "skipped": facts.skipped_types,
        "mount_timeout_s": facts.timeout_s,
    }
    return view_result(facts.view, findings, ok=_usage_ok(judged, thresholds), data=data)


@check(
    id="disk.usage",
    category="disk",
    title="Disk space and inodes",
    description="Free space (judged in bytes, the need growing with big volumes) and inodes "
    "of every real mount; mounts that do not answer fail.",
    requires=Requirements(paths=("/proc/self/mounts",)),
    timeout_s=10,
    bands=(FREE_GIB, FREE_PCT, FLOOR_GIB, USED_PCT, FREE_INODES, INODE_PCT),
    thresholds={"mount_timeout_s": 2.0, "small_volume_gib": SMALL_VOLUME_GIB},
)
def disk_usage(ctx: Context) -> Result:
    """df -h and df -i, judged by free bytes, without hanging on dead network mounts.

    Verdicts:
    - pass: a 10 TiB broker volume 85 % full, 1.5 TiB still free
      [test_usage_big_volume_with_a_small_percentage_free_passes]
    - pass: 100 M inodes 85 % used, 15 M still free
      [test_usage_big_filesystem_with_a_small_share_of_inodes_free_passes]
    - pass: a 1 GiB /boot with 300 MiB free (small volumes go by percentage)
      [test_usage_small_system_volume_is_judged_by_percentage]
    - pass: pseudo filesystems, squashfs images and bind mounts are not judged twice
      [test_usage_passes_and_skips_pseudo_and_bind_mounts]
    - pass: a FUSE mount we may not stat is a note
      [test_usage_stale_mount_fails_and_permission_is_info]
    - pass: run in a sandbox whose / is read-only and /tmp a private tmpfs: the host's
      writable / is judged, the sandbox's tmpfs is not
      [test_host_view_from_a_read_only_namespace_judges_the_hosts_mounts]
    - warn: a 20 GiB root 79 % full with only 4.3 GiB free
      [test_usage_small_volume_with_a_few_gib_free_warns]
    - warn: a 1000 GiB broker volume with 60 GiB free [test_usage_space_verdicts]
    - warn: a 10 TiB volume 96 % full, 400 GiB free (under 5 % of it)
      [test_usage_free_space_need_scales_with_big_volumes]
    - fail: a 10 TiB volume with 12 GiB free
      [test_usage_big_volume_with_a_small_percentage_free_passes]
    - fail: a 10 TiB volume 99.8 % full, 21 GiB free: above the 20 GiB headroom, but
      under 3 % of it (minutes of appends for a fast broker)
      [test_usage_free_space_need_scales_with_big_volumes]
    - fail: a 1 TiB volume 97.6 % full (25 GiB free)
      [test_usage_free_space_need_scales_with_big_volumes]
    - fail: /dev/shm (tmpfs, RAM) 99 % full [test_usage_tmpfs_full_gets_tmpfs_advice]
    - fail: inodes nearly gone with space left [test_usage_inode_verdicts]
    - fail: a hung NFS mount (statvfs does not return)
      [test_usage_hung_mount_fails_without_blocking_the_rest]
    - fail: a stale NFS handle [test_usage_stale_mount_fails_and_permission_is_info]
    - fail: a real directory below a configured floor
      [test_usage_judges_a_real_directory_by_its_free_bytes]

    One statvfs per filesystem, now: no rate is sampled, so days left is not judged
    until a growth rate is known. The rule for free space is in `space_needed`:
    warn/fail below the headroom (100/20 GiB), or 20/10 % of a volume too small for it,
    or 5/3 % of a volume big enough for that to be more (from 2000/667 GiB), but never
    below the floor (5/1 GiB) from 10 GiB up; under 10 GiB the percentage alone. Each
    finding names the part that decided.
    """
    return judge_usage(read_usage(ctx), ctx.thresholds)
