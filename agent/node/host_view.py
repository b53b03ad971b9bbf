"""Whose mount table the disk checks judge: the host's, even from inside a sandbox.

Under its systemd unit (ProtectSystem=strict, PrivateTmp=yes, PrivateDevices=yes) the
agent runs in a mount namespace of its own: its /proc/self/mounts shows / and /usr
read-only and a private /tmp, none of which is the node's state. When the agent's mount
namespace is not PID 1's, the disk checks read PID 1's tables (/proc/1/mounts,
/proc/1/mountinfo) and reach each mount through /proc/1/root (CAP_SYS_PTRACE): the host's
view, which is also what a broker in a container writes to in the end.

Paths under /proc/1/root are walked one component at a time from a descriptor of that
root: a mount point is reached without following any symlink, and a path to resolve (the
Iggy data directory) has its symlinks resolved against that root, as the host would, with
`..` stopping there. Nothing leads out of the host's tree into the agent's. Where the
host's view cannot be had, the agent's own stands in, and the checks say so.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.mounts import read_table_lines

HOST_PID = 1  # the process whose mount namespace is the host's
MAX_SYMLINKS = 40  # symlinks followed in one path, as the kernel allows

_ROOT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # /proc/PID/root: the magic link is followed
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class MountView:
    """Whose mount table the disk checks read, and how they reach its mount points."""

    pid: int | None = None  # the process whose namespace is read; None: the agent's own
    note: str = ""  # what could not be told or read ("" when nothing)
    sandboxed: bool = False  # the own view stands in for a host view that differs
    host_pid: int = HOST_PID  # the process whose view was wanted

    @property
    def host(self) -> bool:
        """Mounts are read in another process's namespace, through its root."""
        return self.pid is not None

    @property
    def mounts_path(self) -> str:
        """The mount table read."""
        return f"/proc/{self.pid}/mounts" if self.host else "/proc/self/mounts"

    @property
    def mountinfo_path(self) -> str:
        """The mountinfo table read (bind roots)."""
        return f"/proc/{self.pid}/mountinfo" if self.host else "/proc/self/mountinfo"

    @property
    def root(self) -> str:
        """The node path mount points are reached under."""
        return f"/proc/{self.pid}/root" if self.host else "/"

    @property
    def label(self) -> str:
        """Which view this is, for a check's data."""
        if not self.host:
            return "own"
        return f"host (PID {self.pid}'s mount namespace, read through /proc/{self.pid}/root)"


OWN = MountView()


def mount_view(ctx: Context, pid: int = HOST_PID) -> MountView:
    """The host's view when the agent's mount namespace is not `pid`'s; else its own.

    A fixture tree (not live) has one table, its /proc/self/mounts. When the namespaces
    cannot be compared the agent assumes it shares `pid`'s and says so in the note; when
    they differ but `pid`'s table or root is out of reach, its own view stands in and
    is marked sandboxed.
    """
    if not ctx.live:
        return OWN
    same, why = same_namespace(ctx, pid)
    if same is None:
        return MountView(
            host_pid=pid,
            note=f"could not tell whether the agent shares PID {pid}'s mount namespace "
            f"({why}): assumed it does, and read its own mount table",
        )
    if same:
        return OWN
    try:
        with ctx.path(f"/proc/{pid}/mounts").open("rb") as fh:
            fh.read(1)
        os.close(os.open(ctx.path(f"/proc/{pid}/root"), _ROOT))
    except OSError as exc:
        return MountView(
            note=f"the agent runs in a mount namespace of its own (a sandbox) and cannot "
            f"read PID {pid}'s ({exc.filename}: {exc.strerror or exc}): the mounts and "
            "figures are the sandbox's, not the host's",
            sandboxed=True,
            host_pid=pid,
        )
    return MountView(pid, host_pid=pid)


def same_namespace(ctx: Context, pid: int) -> tuple[bool | None, str]:
    """Whether this process and `pid` share a mount namespace; None and why when unknown.

    The namespace files decide (st_dev, st_ino). When `pid`'s cannot be read, the mount
    tables do: mount IDs are unique across the system and each mount is in one
    namespace, so two tables share an ID exactly when they are one namespace's.
    """
    try:
        mine = os.stat(ctx.path("/proc/self/ns/mnt"))
        theirs = os.stat(ctx.path(f"/proc/{pid}/ns/mnt"))
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino), ""
    except OSError as exc:
        ns_error = f"{exc.filename}: {exc.strerror or exc}"
    mine_ids = _mount_ids(ctx, "/proc/self/mountinfo")
    their_ids = _mount_ids(ctx, f"/proc/{pid}/mountinfo")
    if mine_ids and their_ids:
        return bool(mine_ids & their_ids), ""
    return None, f"{ns_error}; mountinfo unreadable too"


def _mount_ids(ctx: Context, node_path: str) -> set[str]:
    """The mount IDs (first field) of a mountinfo table; empty when unreadable."""
    try:
        return {line.split(" ", 1)[0] for line in read_table_lines(ctx, node_path) if line}
    except OSError:
        return set()


# -- walking beneath a root ------------------------------------------------------------------


def _names(path: str) -> list[str]:
    """The components of a path, without empty ones and '.'."""
    return [n for n in path.split("/") if n not in ("", ".")]


def open_beneath(root: str, path: str, flags: int = os.O_PATH) -> int:
    """A descriptor of `path` inside `root`, reached without following any symlink.

    The last component is opened with `flags`; the caller closes the descriptor.
    Raises OSError: ELOOP or ENOTDIR when a component is a symlink, EINVAL for '..'.
    """
    names = _names(path)
    if ".." in names:
        raise OSError(errno.EINVAL, "'..' in a path walked beneath a root", path)
    fd = os.open(root, _ROOT)
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            step = (flags | os.O_NOFOLLOW | os.O_CLOEXEC) if last else _DIR
            nxt = os.open(name, step, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "a symlink, not followed out of the host's tree", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def statvfs_beneath(root: str, mountpoint: str, statvfs: Callable[[Any], Any] = os.statvfs) -> Any:
    """statvfs of a mount point inside `root` (through a descriptor; no symlink followed)."""
    fd = open_beneath(root, mountpoint)
    try:
        return statvfs(fd)
    finally:
        os.close(fd)


def resolve_beneath(root: str, path: str) -> tuple[str, bool]:
    """`path` with its symlinks resolved inside `root`, and whether it is a directory.

    Absolute targets start again at `root` and '..' stops there (openat2's
    RESOLVE_IN_ROOT). A missing component ends the walk: the rest is kept as given and
    the answer is False, as realpath does. Raises OSError (ELOOP past MAX_SYMLINKS).
    """
    todo = _names(path)[::-1]  # a stack: the next component last
    done: list[str] = []
    links = 0
    fd = os.open(root, _ROOT)
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                done = done[:-1]
                os.close(fd)
                fd = open_beneath(root, "/".join(done), _DIR)
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return "/" + "/".join([*done, name, *todo[::-1]]), False
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", path)
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    done = []
                    os.close(fd)
                    fd = os.open(root, _ROOT)
                todo.extend(_names(target)[::-1])
                continue
            done.append(name)
            if not stat.S_ISDIR(st.st_mode):
                return "/" + "/".join([*done, *todo[::-1]]), False
            nxt = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return "/" + "/".join(done), True
    finally:
        os.close(fd)


def read_beneath(root: str, path: str, max_bytes: int) -> str:
    """A regular file inside `root` (its symlinks resolved there), at most `max_bytes`."""
    real, _ = resolve_beneath(root, path)
    fd = open_beneath(root, real, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return fh.read(max_bytes).decode("utf-8", "replace")


# -- what the checks say about the view ------------------------------------------------------


def view_data(view: MountView) -> dict[str, str]:
    """The view's keys in a check's data."""
    data = {"mount_view": view.label}
    if view.note:
        data["mount_view_note"] = view.note
    return data


def view_clause(view: MountView) -> str:
    """What the summary adds: the host's view was read, or the sandbox's stood in."""
    if view.host:
        return (
            f"; read in the host's view (PID {view.pid}'s mount namespace, through "
            f"/proc/{view.pid}/root): the agent runs in a mount namespace of its own"
        )
    if view.sandboxed:
        return (
            "; figures from the agent's own sandbox, not the host's: the host's mount "
            "namespace is out of its reach"
        )
    return ""


def view_findings(view: MountView) -> list[Finding]:
    """INFO when the agent's sandbox stood in for the host's view."""
    if not view.sandboxed:
        return []
    pid = view.host_pid
    return [
        Finding(
            Severity.INFO,
            f"{view.note} (under ProtectSystem= / shows read-only, under PrivateTmp= /tmp "
            "is private)",
            f"Give the agent CAP_SYS_PTRACE (the packaged unit does, AmbientCapabilities=) so "
            f"it reads /proc/{pid}/mounts and /proc/{pid}/root, or run it as root outside "
            "the sandbox; meanwhile check `findmnt` and `df -h` on the host.",
            f"/proc/{pid}/root",
        )
    ]


def view_result(
    view: MountView, findings: list[Finding], *, ok: str, data: dict[str, Any]
) -> Result:
    """Result.from_findings with the view's note, data keys and summary clause added."""
    result = Result.from_findings(
        [*findings, *view_findings(view)], ok=ok, data={**data, **view_data(view)}
    )
    result.summary += view_clause(view)
    return result
