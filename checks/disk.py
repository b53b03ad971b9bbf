"""Disk checks: space and inodes, mount options, I/O latency and drive health.

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
- disk.io judges whole disks plus dm/md devices (partitions double-count their disk);
  loop/ram/zram and other virtual devices appear only when they did I/O in the sample.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.check import Requirements, check
from snapshot_agent.commands import CommandResult
from snapshot_agent.context import Context
from snapshot_agent.results import Finding, Result, Severity
from snapshot_agent.units import GIB, MIB, mib_or_gib

MAX_MOUNTS = 1000  # more than this is a pathological mount table; the rest are not probed
MAX_MOUNT_LINES = 100_000  # lines of a mount table read; more is reported, not parsed
MAX_ROWS = 300  # rows kept in `data` tables
DEFAULT_DATA_DIR = "/var/lib/iggy/local_data"

#: Kernel and virtual filesystems that hold no user data and cannot fill up meaningfully.
# ramfs is here because it has no size limit: statvfs reports zeros.
PSEUDO_FS = frozenset(
    {
        *("autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs"),
        *("devpts", "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nfsd", "nsfs"),
        *("proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "sysfs", "tracefs"),
    }
)
#: Read-only images: always "100 % full", never a problem.
READONLY_BY_DESIGN = frozenset({"squashfs", "iso9660", "udf", "erofs", "cramfs"})
#: Disk filesystems that are normally mounted read-write.
RW_DISK_FS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "zfs", "bcachefs", "vfat"}
)
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph", "9p", "lustre", "gpfs", "afs"}
)
GOOD_DATA_FS = frozenset({"ext4", "xfs"})
#: errno values meaning the mount is broken (not merely unreadable by us).
BROKEN_ERRNOS = frozenset(
    {errno.ESTALE, errno.ENOTCONN, errno.EIO, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.ENODEV}
)

_OCTAL = re.compile(r"\\([0-7]{3})")


# -- mount table -----------------------------------------------------------------------------


def decode_mount_field(text: str) -> str:
    """Undo the kernel's octal escapes in mount tables (\\040 is a space, \\011 a tab)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mounts."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        """Mounted read-only."""
        return "ro" in self.options

    @property
    def network(self) -> bool:
        """On a network or FUSE filesystem (can hang when the server goes away)."""
        return self.fstype in NETWORK_FS or self.fstype.startswith("fuse")


def parse_mount_line(line: str) -> MountEntry | None:
    """One /proc/self/mounts (or fstab-like) line; None for comments and malformed lines."""
    fields = line.split()
    if len(fields) < 4 or line.lstrip().startswith("#"):
        return None
    return MountEntry(
        device=decode_mount_field(fields[0]),
        mountpoint=decode_mount_field(fields[1]),
        fstype=fields[2],
        options=tuple(fields[3].split(",")),
    )


def parse_mounts(text: str) -> list[MountEntry]:
    """Parse /proc/self/mounts (or fstab-like) lines; malformed lines are ignored."""
    return [m for line in text.splitlines() if (m := parse_mount_line(line)) is not None]


def dedupe_mounts(mounts: Iterable[MountEntry]) -> list[MountEntry]:
    """One entry per mount point: the last one, which shadows earlier mounts there."""
    by_point: dict[str, MountEntry] = {}
    for m in mounts:
        by_point.pop(m.mountpoint, None)
        by_point[m.mountpoint] = m
    return list(by_point.values())


def find_mount(mounts: Iterable[MountEntry], path: str) -> MountEntry | None:
    """The mount holding `path` (longest mount point prefix), like `findmnt --target`."""
    best: MountEntry | None = None
    for m in mounts:
        mp = m.mountpoint
        inside = path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best.mountpoint)):
            best = m
    return best


def parse_mountinfo_roots(text: str) -> dict[str, str]:
    """Mount point -> root of the mount within its filesystem ('/' unless a bind mount)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out[decode_mount_field(fields[4])] = decode_mount_field(fields[3])
    return out


def read_table_lines(ctx: Context, node_path: str) -> Iterator[str | None]:
    """The first MAX_MOUNT_LINES whole lines of a mount table, streamed (raises OSError).

    Kubernetes nodes have thousands of mounts, megabytes of text: a byte cap would drop
    the tail and hand over a half-read last line. When there are more lines than the
    cap, a final None says so.
    """
    with ctx.path(node_path).open("rb") as fh:
        for n, raw in enumerate(fh):
            if n >= MAX_MOUNT_LINES:
                yield None
                return
            yield raw.decode("utf-8", "replace")


def read_mount_table(ctx: Context) -> tuple[list[MountEntry], bool]:
    """The node's mounts, one per mount point, and whether MAX_MOUNT_LINES cut the table.

    Raises OSError when /proc/self/mounts is unreadable.
    """
    entries: list[MountEntry] = []
    truncated = False
    for line in read_table_lines(ctx, "/proc/self/mounts"):
        if line is None:
            truncated = True
        elif entry := parse_mount_line(line):
            entries.append(entry)
    return dedupe_mounts(entries), truncated


def read_mountinfo_roots(ctx: Context) -> dict[str, str]:
    """parse_mountinfo_roots of /proc/self/mountinfo, streamed like the mount table."""
    roots: dict[str, str] = {}
    try:
        for line in read_table_lines(ctx, "/proc/self/mountinfo"):
            if line is not None:
                roots.update(parse_mountinfo_roots(line))
    except OSError:
        return {}
    return roots


def _table_truncated_finding() -> Finding:
    """INFO: the mount table had more lines than MAX_MOUNT_LINES; the rest was not read."""
    return Finding(
        Severity.INFO,
        f"/proc/self/mounts has more than {MAX_MOUNT_LINES:,} mounts: only the first "
        f"{MAX_MOUNT_LINES:,} were read and judged",
        "Run `df -h` and `df -i` by hand for the rest, and find what keeps adding mounts "
        "(`cut -d' ' -f3 /proc/self/mounts | sort | uniq -c | sort -n | tail`): leaked "
        "container or snap mounts.",
        "/proc/self/mounts",
    )


# -- calls that may hang in the kernel -------------------------------------------------------


@dataclass
class Probe:
    """What became of one call run under a timeout."""

    done: bool = False
    value: Any = None
    error: BaseException | None = None


def probe_all(calls: dict[str, Callable[[], Any]], timeout_s: float) -> dict[str, Probe]:
    """Run each call in its own daemon thread, all at once; wait at most `timeout_s` in all.

    A call still running at the deadline is abandoned (its probe has done=False): a thread
    stuck in statvfs on a dead mount cannot be interrupted, only left behind.
    """
    probes = {key: Probe() for key in calls}

    def runner(key: str, fn: Callable[[], Any]) -> None:
        """Run one call and record its value or exception."""
        try:
            probes[key].value = fn()
        except BaseException as exc:  # reported per call by the caller, never lost
            probes[key].error = exc
        probes[key].done = True

    threads = []
    for key, fn in calls.items():
        t = threading.Thread(target=runner, args=(key, fn), name=f"probe {key}", daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return probes


def _bind(fn: Callable[[str], Any], arg: str) -> Callable[[], Any]:
    """fn(arg) as a call without arguments (for probe_all)."""
    return lambda: fn(arg)


def _probe_budget(ctx: Context, wanted: float) -> float:
    """The per-mount timeout, shortened when the check itself is about to be killed."""
    return max(0.05, min(wanted, ctx.remaining() - 1.0))


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


# -- disk.usage ------------------------------------------------------------------------------


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
    facts = UsageFacts(timeout_s=_probe_budget(ctx, wanted))
    mounts, facts.table_truncated = read_mount_table(ctx)
    candidates = usage_candidates(mounts, facts)
    if len(candidates) > MAX_MOUNTS:
        facts.not_probed = len(candidates) - MAX_MOUNTS
        candidates = candidates[:MAX_MOUNTS]
    calls = {
        u.mount.mountpoint: _bind(statvfs, str(ctx.path(u.mount.mountpoint))) for u in candidates
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


def judge_usage(facts: UsageFacts, thresholds: dict[str, Any]) -> Result:
    """Space and inodes per filesystem against warn/fail percentages; hung mounts fail."""
    warn, fail = float(thresholds["warn_pct"]), float(thresholds["fail_pct"])
    iwarn, ifail = float(thresholds["inode_warn_pct"]), float(thresholds["inode_fail_pct"])
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    judged: list[MountUsage] = []
    for u in facts.usages:
        m = u.mount
        row: dict[str, Any] = {"mount": m.mountpoint, "device": m.device, "fstype": m.fstype}
        if u.state == "hung":
            findings.append(_hung_finding(m, facts.timeout_s))
            rows.append(row | {"status": "not responding"})
            continue
        if u.state == "error" and u.error is not None:
            if u.error.errno in BROKEN_ERRNOS:
                findings.append(_broken_finding(m, u.error))
            else:
                findings.append(
                    Finding(
                        Severity.INFO,
                        f"could not check {m.mountpoint}: {u.error.strerror or u.error}",
                        "Run snapshot-agent as root; FUSE mounts without allow_other refuse "
                        "other users.",
                        m.mountpoint,
                    )
                )
            rows.append(row | {"status": f"error: {u.error.strerror or u.error}"})
            continue
        if u.state == "empty":
            continue  # a FUSE or virtual filesystem reporting no size: nothing to judge
        judged.append(u)
        ipct = u.inodes_pct
        row |= {
            "size_gib": round(u.size / GIB, 2),
            "used_pct": round(u.used_pct, 1),
            "avail_gib": round(u.avail / GIB, 2),
            "inodes_used_pct": None if ipct is None else round(ipct, 1),
            "also_at": ", ".join(u.also_at),
        }
        status = "ok"
        pct = u.used_pct
        if pct >= warn:
            sev = Severity.FAIL if pct >= fail else Severity.WARN
            limit = fail if sev == Severity.FAIL else warn
            findings.append(
                Finding(
                    sev,
                    f"{m.mountpoint} is {pct:.0f} % full ({mib_or_gib(u.avail)} free of "
                    f"{mib_or_gib(u.size)}), at or over {limit:g} %",
                    _space_remedy(u),
                    m.mountpoint,
                )
            )
            status = str(sev)
        if ipct is not None and ipct >= iwarn:
            sev = Severity.FAIL if ipct >= ifail else Severity.WARN
            limit = ifail if sev == Severity.FAIL else iwarn
            findings.append(
                Finding(
                    sev,
                    f"{m.mountpoint} has used {ipct:.0f} % of its inodes "
                    f"({u.inodes - u.inodes_used:,} of {u.inodes:,} left), at or over {limit:g} %",
                    _inode_remedy(u),
                    m.mountpoint,
                )
            )
            status = "fail" if "fail" in (status, str(sev)) else str(sev)
        rows.append(row | {"status": status})
    if facts.not_probed:
        findings.append(
            Finding(
                Severity.INFO,
                f"{facts.not_probed} more mounts were not checked (over {MAX_MOUNTS})",
                "Run `df -h` and `df -i` by hand for the rest.",
            )
        )
    if facts.table_truncated:
        findings.append(_table_truncated_finding())
    data = {
        "filesystems": rows[:MAX_ROWS],
        "read_only_not_judged": facts.read_only[:MAX_ROWS],
        "skipped": facts.skipped_types,
        "mount_timeout_s": facts.timeout_s,
    }
    if judged:
        fullest = max(judged, key=lambda u: u.used_pct)
        ok = (
            f"{len(judged)} filesystems below {warn:g} % space and {iwarn:g} % inodes; fullest "
            f"{fullest.mount.mountpoint} at {fullest.used_pct:.0f} % "
            f"({mib_or_gib(fullest.avail)} free)"
        )
    else:
        ok = "no writable filesystems with a size to judge"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="disk.usage",
    category="disk",
    title="Disk space and inodes",
    description="Space and inode usage of every real mount; mounts that do not answer fail.",
    requires=Requirements(paths=("/proc/self/mounts",)),
    timeout_s=10,
    thresholds={
        "warn_pct": 80.0,
        "fail_pct": 90.0,
        "inode_warn_pct": 80.0,
        "inode_fail_pct": 90.0,
        "mount_timeout_s": 2.0,
    },
)
def disk_usage(ctx: Context) -> Result:
    """df -h and df -i, judged, without hanging on dead network mounts."""
    return judge_usage(read_usage(ctx), ctx.thresholds)


# -- disk.mounts -----------------------------------------------------------------------------


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
        mounts=mounts, timeout_s=_probe_budget(ctx, wanted), table_truncated=truncated
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
        findings.append(_table_truncated_finding())
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


# -- disk.io ---------------------------------------------------------------------------------

_PARTITION = re.compile(
    r"^(?:(?:sd|hd|vd|xvd)[a-z]+\d+|(?:nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+|md\d+)p\d+)$"
)
_VIRTUAL_DEV = re.compile(r"^(?:loop|ram|zram|sr|fd|nbd)\d*")


@dataclass(frozen=True)
class DiskCounters:
    """One device's cumulative counters from /proc/diskstats (times in ms)."""

    name: str
    reads: int
    read_sectors: int
    read_ms: int
    writes: int
    write_sectors: int
    write_ms: int
    in_flight: int
    io_ms: int
    weighted_ms: int
    discards: int = 0
    discard_ms: int = 0


def parse_diskstats(text: str) -> dict[str, DiskCounters]:
    """Parse /proc/diskstats (14 to 20 fields per line); malformed lines are skipped."""
    out: dict[str, DiskCounters] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 14:
            continue
        try:
            v = [int(x) for x in f[3:]]
        except ValueError:
            continue
        out[f[2]] = DiskCounters(
            name=f[2],
            reads=v[0],
            read_sectors=v[2],
            read_ms=v[3],
            writes=v[4],
            write_sectors=v[6],
            write_ms=v[7],
            in_flight=v[8],
            io_ms=v[9],
            weighted_ms=v[10],
            discards=v[11] if len(v) > 14 else 0,
            discard_ms=v[14] if len(v) > 14 else 0,
        )
    return out


@dataclass(frozen=True)
class DeviceIO:
    """iostat -x style rates of one device over the sample."""

    name: str
    ios: int  # I/Os completed in the sample
    r_s: float
    w_s: float
    read_mb_s: float
    write_mb_s: float
    r_await_ms: float
    w_await_ms: float
    await_ms: float
    util_pct: float
    aqu_sz: float
    in_flight: int
    await_since_boot_ms: float


@dataclass
class IOFacts:
    """Two diskstats samples turned into rates."""

    interval_s: float
    devices: list[DeviceIO] = field(default_factory=list)


def is_whole_disk(name: str, block_devices: set[str] | None) -> bool:
    """Whole disks and dm/md/nvme namespaces; partitions only double-count their disk."""
    if block_devices is not None:
        return name in block_devices
    return _PARTITION.match(name) is None


def compute_io(
    before: dict[str, DiskCounters],
    after: dict[str, DiskCounters],
    interval_s: float,
    block_devices: set[str] | None = None,
) -> list[DeviceIO]:
    """Rates like `iostat -x` between two samples, for whole disks with something to say."""
    out: list[DeviceIO] = []
    ms = interval_s * 1000.0
    for name, b in after.items():
        a = before.get(name)
        if a is None or not is_whole_disk(name, block_devices) or interval_s <= 0:
            continue
        dr, dw, dd = b.reads - a.reads, b.writes - a.writes, b.discards - a.discards
        drs, dws = b.read_sectors - a.read_sectors, b.write_sectors - a.write_sectors
        drt, dwt, ddt = b.read_ms - a.read_ms, b.write_ms - a.write_ms, b.discard_ms - a.discard_ms
        dio, dwq = b.io_ms - a.io_ms, b.weighted_ms - a.weighted_ms
        if min(dr, dw, dd, drs, dws, drt, dwt, ddt, dio, dwq) < 0:
            continue  # counters wrapped or the device was re-created: no honest rate
        ios = dr + dw + dd
        if ios == 0 and dio == 0 and _VIRTUAL_DEV.match(name):
            continue
        total_ios = b.reads + b.writes + b.discards
        out.append(
            DeviceIO(
                name=name,
                ios=ios,
                r_s=dr / interval_s,
                w_s=dw / interval_s,
                read_mb_s=drs * 512 / MIB / interval_s,
                write_mb_s=dws * 512 / MIB / interval_s,
                r_await_ms=drt / dr if dr else 0.0,
                w_await_ms=dwt / dw if dw else 0.0,
                await_ms=(drt + dwt + ddt) / ios if ios else 0.0,
                util_pct=min(100.0, 100.0 * dio / ms),
                aqu_sz=dwq / ms,
                in_flight=b.in_flight,
                await_since_boot_ms=(
                    (b.read_ms + b.write_ms + b.discard_ms) / total_ios if total_ios else 0.0
                ),
            )
        )
    return sorted(out, key=lambda d: d.name)


def read_io(
    ctx: Context,
    sample_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> IOFacts:
    """Sample /proc/diskstats twice, `sample_s` apart; keep both samples as evidence."""
    try:
        block_devices: set[str] | None = set(os.listdir(ctx.path("/sys/block")))
    except OSError:
        block_devices = None
    first = ctx.read_text("/proc/diskstats")
    t0 = clock()
    sleep(sample_s)
    second = ctx.read_text("/proc/diskstats")
    interval = clock() - t0
    ctx.artifact(
        "diskstats.txt", f"# sample 1\n{first}\n# sample 2, {interval:.3f} s later\n{second}"
    )
    return IOFacts(
        interval,
        compute_io(parse_diskstats(first), parse_diskstats(second), interval, block_devices),
    )


def judge_io(facts: IOFacts, thresholds: dict[str, Any]) -> Result:
    """Utilisation and average wait per device; await is judged only with enough I/Os."""
    uwarn, ufail = float(thresholds["util_warn_pct"]), float(thresholds["util_fail_pct"])
    awarn, afail = float(thresholds["await_warn_ms"]), float(thresholds["await_fail_ms"])
    min_ios = int(thresholds["min_ios"])
    findings: list[Finding] = []
    for d in facts.devices:
        slow = d.ios >= min_ios and d.await_ms >= awarn
        sev: Severity | None = None
        reasons: list[str] = []
        if d.ios >= min_ios and d.await_ms >= afail:
            sev = Severity.FAIL
            reasons.append(f"average I/O wait {d.await_ms:.0f} ms (over {afail:g} ms)")
        elif slow:
            sev = Severity.WARN
            reasons.append(f"average I/O wait {d.await_ms:.0f} ms (over {awarn:g} ms)")
        if d.util_pct >= uwarn:
            # %util alone overstates saturation on SSD/NVMe (parallel queues): it fails only
            # when requests also wait.
            busy = Severity.FAIL if d.util_pct >= ufail and slow else Severity.WARN
            sev = Severity.FAIL if Severity.FAIL in (sev, busy) else busy
            reasons.insert(0, f"{d.util_pct:.0f} % busy")
        if sev is None:
            continue
        findings.append(
            Finding(
                sev,
                f"{d.name}: {', '.join(reasons)} over {facts.interval_s:.1f} s "
                f"({d.r_s:.0f} r/s, {d.w_s:.0f} w/s, {d.read_mb_s:.1f} MB/s read, "
                f"{d.write_mb_s:.1f} MB/s written, queue {d.aqu_sz:.1f})",
                f"Confirm it lasts with `iostat -x 1 5 {d.name}` and find who does the I/O "
                "(`iotop -o`, `pidstat -d 1`). A saturated disk delays Iggy's appends and "
                "fsyncs (producer latency, consumer lag): give the data directory a dedicated "
                "or faster disk, or more provisioned IOPS/throughput on a cloud volume. On "
                "SSD/NVMe a high %util alone is not saturation; the wait time is what hurts.",
                f"/dev/{d.name}",
            )
        )
    rows = [
        {
            "device": d.name,
            "r_s": round(d.r_s, 1),
            "w_s": round(d.w_s, 1),
            "read_mb_s": round(d.read_mb_s, 2),
            "write_mb_s": round(d.write_mb_s, 2),
            "r_await_ms": round(d.r_await_ms, 2),
            "w_await_ms": round(d.w_await_ms, 2),
            "await_ms": round(d.await_ms, 2),
            "util_pct": round(d.util_pct, 1),
            "aqu_sz": round(d.aqu_sz, 2),
            "in_flight": d.in_flight,
            "await_since_boot_ms": round(d.await_since_boot_ms, 2),
        }
        for d in facts.devices
    ]
    data = {"interval_s": round(facts.interval_s, 3), "devices": rows[:MAX_ROWS]}
    if not facts.devices:
        return Result.from_findings(findings, ok="no block devices with activity", data=data)
    busiest = max(facts.devices, key=lambda d: (d.util_pct, d.await_ms))
    ok = (
        f"{len(facts.devices)} devices; busiest {busiest.name} at {busiest.util_pct:.0f} % util, "
        f"await {busiest.await_ms:.1f} ms over {facts.interval_s:.1f} s"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="disk.io",
    category="disk",
    title="Disk I/O latency and utilisation",
    description="Per-disk utilisation, IOPS, throughput and average wait from /proc/diskstats "
    "over a short sample.",
    requires=Requirements(paths=("/proc/diskstats",)),
    timeout_s=5,
    thresholds={
        "util_warn_pct": 80.0,
        "util_fail_pct": 95.0,
        "await_warn_ms": 50.0,
        "await_fail_ms": 200.0,
        "min_ios": 5,
        "sample_s": 0.5,
    },
    sampling_s=0.5,
)
def disk_io(ctx: Context) -> Result:
    """iostat -x over half a second, judged."""
    sample = min(float(ctx.thresholds["sample_s"]), max(0.1, ctx.remaining() - 1.0))
    return judge_io(read_io(ctx, sample), ctx.thresholds)


# -- disk.health -----------------------------------------------------------------------------

_NOT_DISKS = re.compile(r"^(?:loop|ram|zram|dm-|md|sr|fd|nbd|rbd|drbd|bcache|pmem)")
_NVME_NS = re.compile(r"^(nvme\d+)(?:c\d+)?n\d+$")
#: Vendor/model substrings of disks a hypervisor or cloud emulates (no SMART to read).
_VIRTUAL_MODELS = (
    "qemu",
    "vmware",
    "virtual",
    "vbox",
    "msft",
    "amazon elastic block store",
    "google",
    "persistentdisk",
    "0x1af4",  # virtio PCI vendor id
    "xen",
)
_NVME_WARNINGS = (
    (0x01, "available spare below threshold"),
    (0x02, "temperature outside limits"),
    (0x04, "reliability degraded by media errors"),
    (0x08, "media placed in read-only mode"),
    (0x10, "volatile memory backup failed"),
    (0x20, "persistent memory region read-only"),
)


@dataclass(frozen=True)
class BlockDisk:
    """A whole disk found in /sys/block."""

    name: str  # sda, nvme0n1
    device: str  # what to query: /dev/sda, /dev/nvme0 (the controller)
    kind: str  # ata-or-scsi | nvme | virtual
    model: str = ""


@dataclass
class DiskHealth:
    """What SMART or the NVMe health log says about one disk."""

    device: str
    kind: str
    model: str = ""
    serial: str = ""
    source: str = ""  # smartctl | nvme-cli
    supported: bool = True
    note: str = ""
    passed: bool | None = None
    temperature_c: float | None = None
    power_on_hours: int | None = None
    reallocated: int | None = None
    pending: int | None = None
    offline_uncorrectable: int | None = None
    grown_defects: int | None = None
    critical_warning: int | None = None
    percentage_used: int | None = None
    available_spare: int | None = None
    media_errors: int | None = None


def _num(value: Any) -> int | None:
    """An integer from JSON that may be a number, a numeric string or {"value": n}."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return int(float(str(value).replace(",", "").strip()))
    except ValueError:
        return None


def _fill_nvme_log(health: DiskHealth, log: dict[str, Any], kelvin: bool) -> None:
    """Fields of an NVMe SMART/health log (smartctl or nvme-cli spelling)."""
    health.critical_warning = _num(log.get("critical_warning"))
    temp = _num(log.get("temperature"))
    if temp is not None:
        health.temperature_c = temp - 273 if kelvin or temp > 200 else temp
    health.percentage_used = _num(log.get("percentage_used", log.get("percent_used")))
    health.available_spare = _num(log.get("available_spare", log.get("avail_spare")))
    health.media_errors = _num(log.get("media_errors"))
    health.power_on_hours = _num(log.get("power_on_hours"))


def parse_smartctl_json(text: str, device: str, kind: str = "") -> DiskHealth:
    """Parse `smartctl -i -H -A --json` output (ATA, SCSI or NVMe) into DiskHealth."""
    health = DiskHealth(device=device, kind=kind, source="smartctl")
    try:
        doc = json.loads(text)
    except ValueError:
        health.supported, health.note = False, "smartctl printed no JSON"
        return health
    if not isinstance(doc, dict):
        health.supported, health.note = False, "smartctl printed unexpected JSON"
        return health
    health.model = str(doc.get("model_name") or doc.get("scsi_model_name") or "")
    health.serial = str(doc.get("serial_number") or "")
    proto = str((doc.get("device") or {}).get("protocol") or "")
    health.kind = proto.lower() or kind or "unknown"
    errors = [
        str(m.get("string", ""))
        for m in (doc.get("smartctl") or {}).get("messages") or []
        if isinstance(m, dict) and m.get("severity") == "error"
    ]
    support = doc.get("smart_support") or {}
    status = doc.get("smart_status")
    if isinstance(status, dict) and "passed" in status:
        health.passed = bool(status["passed"])
    if support.get("available") is False or (health.passed is None and errors):
        health.supported = False
        health.note = "; ".join(errors) or "device has no SMART capability"
        return health
    if support.get("enabled") is False:
        health.note = "SMART is disabled on the drive (`smartctl -s on`)"
    temp = (doc.get("temperature") or {}).get("current")
    health.temperature_c = _num(temp)
    health.power_on_hours = _num((doc.get("power_on_time") or {}).get("hours"))
    table = (doc.get("ata_smart_attributes") or {}).get("table") or []
    for attr in table:
        if not isinstance(attr, dict):
            continue
        raw = _num((attr.get("raw") or {}).get("value"))
        ident = attr.get("id")
        if ident == 5:
            health.reallocated = raw
        elif ident == 197:
            health.pending = raw
        elif ident == 198:
            health.offline_uncorrectable = raw
    if "scsi_grown_defect_list" in doc:
        health.grown_defects = _num(doc.get("scsi_grown_defect_list"))
    nvme = doc.get("nvme_smart_health_information_log")
    if isinstance(nvme, dict):
        _fill_nvme_log(health, nvme, kelvin=False)
        if health.temperature_c is None:
            health.temperature_c = _num(temp)
    return health


def parse_nvme_smart_log(text: str, device: str) -> DiskHealth:
    """Parse `nvme smart-log -o json` (nvme-cli 1.x/2.x; temperature in kelvin)."""
    health = DiskHealth(device=device, kind="nvme", source="nvme-cli")
    try:
        doc = json.loads(text)
    except ValueError:
        health.supported, health.note = False, "nvme smart-log printed no JSON"
        return health
    if not isinstance(doc, dict) or "critical_warning" not in doc:
        health.supported, health.note = False, "nvme smart-log printed no health log"
        return health
    _fill_nvme_log(health, doc, kelvin=True)
    return health


def list_disks(ctx: Context) -> list[BlockDisk]:
    """Whole physical-looking disks from /sys/block; NVMe namespaces map to their controller."""
    try:
        names = sorted(os.listdir(ctx.path("/sys/block")))
    except OSError:
        return []
    disks: dict[str, BlockDisk] = {}
    for name in names:
        if _NOT_DISKS.match(name):
            continue
        if (ctx.read_optional(f"/sys/block/{name}/hidden") or "0").strip() == "1":
            continue  # NVMe multipath path devices: the visible namespace covers them
        vendor = (ctx.read_optional(f"/sys/block/{name}/device/vendor") or "").strip()
        model = (ctx.read_optional(f"/sys/block/{name}/device/model") or "").strip()
        nvme = _NVME_NS.match(name)
        device = f"/dev/{nvme.group(1)}" if nvme else f"/dev/{name}"
        ident = f"{vendor} {model}".lower()
        if name.startswith(("vd", "xvd")) or any(v in ident for v in _VIRTUAL_MODELS):
            kind = "virtual"
        else:
            kind = "nvme" if nvme else "ata-or-scsi"
        disks.setdefault(device, BlockDisk(name, device, kind, model or vendor))
    return list(disks.values())


def read_health(ctx: Context, disks: list[BlockDisk], have: dict[str, str]) -> list[DiskHealth]:
    """Query each physical disk with nvme-cli or smartctl, whichever is installed."""
    out: list[DiskHealth] = []
    for disk in disks:
        base = disk.device.rsplit("/", 1)[-1]
        if disk.kind == "virtual":
            out.append(
                DiskHealth(
                    disk.device,
                    "virtual",
                    disk.model,
                    supported=False,
                    note="virtual disk: the hypervisor exposes no SMART data",
                )
            )
            continue
        result: CommandResult
        if disk.kind == "nvme" and "nvme" in have:
            argv = [have["nvme"], "smart-log", disk.device, "-o", "json"]
            result = ctx.run(argv, timeout_s=8, save_as=f"nvme-smart-log-{base}.json")
            health = parse_nvme_smart_log(result.stdout, disk.device)
        elif "smartctl" in have:
            argv = [have["smartctl"], "-i", "-H", "-A", "--json", disk.device]
            result = ctx.run(argv, timeout_s=8, save_as=f"smartctl-{base}.json")
            health = parse_smartctl_json(result.stdout, disk.device, disk.kind)
        else:
            need = "nvme-cli or smartmontools" if disk.kind == "nvme" else "smartmontools"
            out.append(
                DiskHealth(
                    disk.device, disk.kind, disk.model, supported=False, note=f"install {need}"
                )
            )
            continue
        if not health.model:
            health.model = disk.model
        if result.timed_out or result.error:
            health.supported, health.note = False, result.describe()
        out.append(health)
    return out


def _health_remedy(h: DiskHealth, what: str) -> str:
    """Replacement advice for a failing drive."""
    detail = f"`nvme smart-log {h.device}`" if h.kind == "nvme" else f"`smartctl -a {h.device}`"
    return (
        f"{what} Look at {detail} and dmesg for I/O errors; move Iggy's data (or this node's "
        "partitions, via replication or a restore) off the drive and replace it before it "
        "corrupts segments."
    )


def _overall(h: DiskHealth) -> str:
    """One word for the table: passed, FAILED or n/a."""
    if not h.supported:
        return "n/a"
    if h.passed is False or h.critical_warning:
        return "FAILED"
    return "passed" if h.passed or h.critical_warning == 0 else "n/a"


def judge_health(healths: list[DiskHealth], thresholds: dict[str, Any]) -> Result:
    """SMART verdicts: failed self-assessment or NVMe critical warning fail; wear warns."""
    sectors_warn = int(thresholds["sectors_warn"])
    used_warn = float(thresholds["nvme_used_warn_pct"])
    media_warn = int(thresholds["media_errors_warn"])
    findings: list[Finding] = []
    for h in healths:
        subj = h.device
        if not h.supported:
            findings.append(
                Finding(
                    Severity.INFO,
                    f"{h.device}: no health data ({h.note})",
                    "Virtual and RAID-backed disks hide SMART: check the hypervisor, cloud "
                    "console or RAID tool (`smartctl -d megaraid,N`, `storcli`) instead.",
                    subj,
                )
            )
            continue
        if h.passed is False:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{h.device} ({h.model}): SMART overall-health self-assessment FAILED",
                    _health_remedy(h, "The drive predicts its own failure."),
                    subj,
                )
            )
        bad = {
            "reallocated": h.reallocated,
            "pending": h.pending,
            "offline uncorrectable": h.offline_uncorrectable,
            "grown defect": h.grown_defects,
        }
        counts = [f"{v} {k}" for k, v in bad.items() if v is not None and v >= sectors_warn]
        if counts:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{h.device} ({h.model}) has {' and '.join(counts)} sectors",
                    _health_remedy(
                        h,
                        f"Sectors are failing: run `smartctl -t long {h.device}` and watch "
                        "whether the counts grow; pending sectors are unreadable data.",
                    ),
                    subj,
                )
            )
        if h.critical_warning:
            bits = [t for bit, t in _NVME_WARNINGS if h.critical_warning & bit] or ["unknown bit"]
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{h.device} ({h.model}) reports NVMe critical warning "
                    f"0x{h.critical_warning:02x}: {', '.join(bits)}",
                    _health_remedy(h, "The controller flags the drive as failing."),
                    subj,
                )
            )
        if h.percentage_used is not None and h.percentage_used >= used_warn:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{h.device} ({h.model}) has used {h.percentage_used} % of its rated "
                    f"endurance (at or over {used_warn:g} %)",
                    "Plan a replacement: a write-heavy broker wears flash fast; past 100 % the "
                    "vendor no longer guarantees the drive.",
                    subj,
                )
            )
        if h.media_errors is not None and h.media_errors >= media_warn:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{h.device} ({h.model}) logged {h.media_errors} media errors "
                    "(unrecovered data integrity errors)",
                    _health_remedy(h, "Media errors mean data the drive could not read back."),
                    subj,
                )
            )
    rows = [
        {
            "device": h.device,
            "kind": h.kind,
            "model": h.model,
            "serial": h.serial,
            "source": h.source,
            "health": _overall(h),
            "temperature_c": h.temperature_c,
            "power_on_hours": h.power_on_hours,
            "reallocated": h.reallocated,
            "pending": h.pending,
            "critical_warning": h.critical_warning,
            "percentage_used": h.percentage_used,
            "available_spare": h.available_spare,
            "media_errors": h.media_errors,
            "note": h.note,
        }
        for h in healths
    ]
    checked = [h.device for h in healths if h.supported]
    unchecked = [h.device for h in healths if not h.supported]
    plural = "s" if len(checked) != 1 else ""
    ok = (
        f"{len(checked)} disk{plural} healthy ({', '.join(checked)})"
        if checked
        else "no health data"
    )
    if unchecked:
        ok += f"; no health data for {', '.join(unchecked)}"
    return Result.from_findings(findings, ok=ok, data={"disks": rows})


def find_tool(binary: str) -> str | None:
    """Absolute path of an installed tool; sbin included (smartctl and nvme live there)."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


@check(
    id="disk.health",
    category="disk",
    title="Disk health (SMART / NVMe)",
    description="SMART overall health, failing sectors and NVMe critical warnings, wear and "
    "media errors.",
    requires=Requirements(root=True, paths=("/sys/block",)),
    timeout_s=30,
    thresholds={"sectors_warn": 1, "nvme_used_warn_pct": 80.0, "media_errors_warn": 1},
)
def disk_health(ctx: Context) -> Result:
    """Read SMART / NVMe health for each physical disk and judge it."""
    disks = list_disks(ctx)
    if not disks:
        return Result.skipped("no disks found in /sys/block")
    physical = [d for d in disks if d.kind != "virtual"]
    if not physical:
        names = ", ".join(d.name for d in disks)
        return Result.skipped(
            f"only virtual disks ({names}): the hypervisor exposes no SMART data; "
            "the provider monitors the hardware"
        )
    have = {b: p for b in ("smartctl", "nvme") if (p := find_tool(b))}
    if not have:
        return Result.skipped(
            "install smartmontools to check disk health (and nvme-cli for NVMe drives)"
        )
    return judge_health(read_health(ctx, disks, have), ctx.thresholds)
