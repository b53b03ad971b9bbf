"""Disk checks: space and inodes (disk.usage), and the mount table they are judged on.

The mount table and the hang-safe probes here serve disk.mounts too (disk_mounts.py);
disk.io and disk.health are in disk_io.py and disk_health.py.

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
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.units import GIB, mib_or_gib

MAX_MOUNTS = 1000  # more than this is a pathological mount table; the rest are not probed
MAX_MOUNT_LINES = 100_000  # lines of a mount table read; more is reported, not parsed
MAX_ROWS = 300  # rows kept in `data` tables

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
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph", "9p", "lustre", "gpfs", "afs"}
)
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


def table_truncated_finding() -> Finding:
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


def probe_budget(ctx: Context, wanted: float) -> float:
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
    facts = UsageFacts(timeout_s=probe_budget(ctx, wanted))
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
        findings.append(table_truncated_finding())
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
