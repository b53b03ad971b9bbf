"""The mount table, and calls on mounts that may hang, shared by disk.usage and disk.mounts.

Which table is read (the agent's own, or the host's from a sandbox) is node.host_view's
choice; the functions here take the table's path.

Kubernetes nodes have thousands of mounts: the tables are streamed line by line, with a
cap on the lines read. statvfs (or a stat) on a dead NFS/CIFS/FUSE mount blocks in the
kernel forever, so such calls run in daemon threads under a deadline (`probe_all`): a
call that does not return is abandoned, never waited for.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Severity

MAX_MOUNT_LINES = 100_000  # lines of a mount table read; more is reported, not parsed

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

_OCTAL = re.compile(r"\\([0-7]{3})")


# -- mount table -----------------------------------------------------------------------------


def decode_mount_field(text: str) -> str:
    """Undo the kernel's octal escapes in mount tables (\\040 is a space, \\011 a tab)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class MountEntry:
    """One line of a mount table (/proc/self/mounts, or /proc/1/mounts for the host's)."""

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


def read_mount_table(
    ctx: Context, node_path: str = "/proc/self/mounts"
) -> tuple[list[MountEntry], bool]:
    """The node's mounts, one per mount point, and whether MAX_MOUNT_LINES cut the table.

    `node_path` is the table read: the agent's own, or /proc/1/mounts for the host's
    (node.host_view). Raises OSError when it is unreadable.
    """
    entries: list[MountEntry] = []
    truncated = False
    for line in read_table_lines(ctx, node_path):
        if line is None:
            truncated = True
        elif entry := parse_mount_line(line):
            entries.append(entry)
    return dedupe_mounts(entries), truncated


def read_mountinfo_roots(ctx: Context, node_path: str = "/proc/self/mountinfo") -> dict[str, str]:
    """parse_mountinfo_roots of a mountinfo table, streamed like the mount table."""
    roots: dict[str, str] = {}
    try:
        for line in read_table_lines(ctx, node_path):
            if line is not None:
                roots.update(parse_mountinfo_roots(line))
    except OSError:
        return {}
    return roots


def table_truncated_finding(node_path: str = "/proc/self/mounts") -> Finding:
    """INFO: the mount table had more lines than MAX_MOUNT_LINES; the rest was not read."""
    return Finding(
        Severity.INFO,
        f"{node_path} has more than {MAX_MOUNT_LINES:,} mounts: only the first "
        f"{MAX_MOUNT_LINES:,} were read and judged",
        "Run `df -h` and `df -i` by hand for the rest, and find what keeps adding mounts "
        f"(`cut -d' ' -f3 {node_path} | sort | uniq -c | sort -n | tail`): leaked "
        "container or snap mounts.",
        node_path,
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


def bind(fn: Callable[[str], Any], arg: str) -> Callable[[], Any]:
    """fn(arg) as a call without arguments (for probe_all)."""
    return lambda: fn(arg)


def probe_budget(ctx: Context, wanted: float) -> float:
    """The per-mount timeout, shortened when the check itself is about to be killed."""
    return max(0.05, min(wanted, ctx.remaining() - 1.0))
