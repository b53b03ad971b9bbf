"""Processes as /proc shows them: pids, stat lines, comm, argv, status, and the broker.

`find_brokers(ctx)` lists every running iggy-server process; `find_broker(ctx)` picks
the one the systemd unit names (its MainPID), else the oldest. Everything is read
through the context (`ctx.path`, `ctx.read_optional`), so fixture trees work the same
as a live node.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace

from snapshot_agent.core.context import Context
from snapshot_agent.node.confinement import parse_show
from snapshot_agent.node.procfs import parse_int

BROKER_NAME = "iggy-server"
COMM_LIMIT = 256
STAT_LIMIT = 4096
CMDLINE_LIMIT = 4096  # bytes of /proc/<pid>/cmdline read; enough to name a process
STATUS_LIMIT = 64 * 1024
LABEL_LIMIT = 4096
MAX_PIDS = 65536  # processes looked at when searching by name
MAX_THREADS = 4096
CAP_SYS_ADMIN = 21
IO_URING_SCAN_LIMIT = 1024  # fds and threads looked at to tell an io_uring (0.6+) broker
IO_URING_FD = "anon_inode:[io_uring]"
_SHARD_THREAD = re.compile(r"shard-\d+")
DIGITS = re.compile(r"[0-9]+")  # ASCII digits only (str.isdigit takes "²")
SYSTEMCTL_TIMEOUT_S = 3


# -- /proc/<pid>/stat --------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """One line of /proc/<pid>/stat, the fields the checks use."""

    pid: int
    name: str  # comm, at most 15 characters
    state: str  # R, S, D, Z, T, I...
    ppid: int
    ticks: int  # utime + stime, in clock ticks
    threads: int
    start_ticks: int  # start time after boot; tells a reused pid apart
    rss_pages: int
    user_ticks: int = 0  # utime
    system_ticks: int = 0  # stime
    reaped_user_ticks: int = 0  # cutime: children it has waited for
    reaped_system_ticks: int = 0  # cstime
    nice: int = 0


def parse_stat(text: str) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the line is malformed.

    The command name sits in parentheses and may itself contain spaces and ')',
    so the fields are split after the last ')'.
    """
    head, sep, tail = text.rpartition(")")
    pid_text, _, name = head.partition(" (")
    rest = tail.split()
    if not sep or len(rest) < 22:
        return None
    try:
        return ProcStat(
            pid=int(pid_text),
            name=name,
            state=rest[0],
            ppid=int(rest[1]),
            ticks=int(rest[11]) + int(rest[12]),
            threads=int(rest[17]),
            start_ticks=int(rest[19]),
            rss_pages=int(rest[21]),
            user_ticks=int(rest[11]),
            system_ticks=int(rest[12]),
            reaped_user_ticks=int(rest[13]),
            reaped_system_ticks=int(rest[14]),
            nice=int(rest[16]),
        )
    except ValueError:
        return None


def list_pids(ctx: Context) -> list[int]:
    """Process ids under /proc (thread group leaders only, as the kernel lists them)."""
    try:
        names = os.listdir(ctx.path("/proc"))
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def read_stat(ctx: Context, pid: int) -> ProcStat | None:
    """A process's stat line, or None when it is gone or unreadable."""
    text = ctx.read_optional(f"/proc/{pid}/stat", STAT_LIMIT)
    return parse_stat(text) if text else None


def read_processes(ctx: Context) -> dict[int, ProcStat]:
    """Every process's stat line; processes that vanish while we read are left out."""
    table: dict[int, ProcStat] = {}
    for pid in list_pids(ctx):
        if stat := read_stat(ctx, pid):
            table[pid] = stat
    return table


# -- comm, cmdline, status, links ------------------------------------------------------


def agent_pid(ctx: Context) -> int | None:
    """The agent's own process: the parent of this forked check child.

    Each check runs in a child forked from the agent, so the agent is our parent;
    when a check is called in-process (a test, a script) we are the agent ourselves.
    In a fixture tree, `proc/self` (a symlink to a pid) names the agent.
    """
    if not ctx.live:
        try:
            return int(os.readlink(ctx.path("/proc/self")))
        except (OSError, ValueError):
            return None
    parent = os.getppid()
    cmdline = read_cmdline(ctx, parent)
    if "snapshot-agent" in cmdline or "snapshot_agent" in cmdline:
        return parent
    return os.getpid()


def read_comm(ctx: Context, pid: int) -> str:
    """A process's comm (its name, at most 15 characters); '' when unreadable."""
    return (ctx.read_optional(f"/proc/{pid}/comm", COMM_LIMIT) or "").strip()


def _cmdline_raw(ctx: Context, pid: int) -> str:
    """The NUL-separated /proc/<pid>/cmdline ('' for kernel threads or when gone)."""
    return ctx.read_optional(f"/proc/{pid}/cmdline", CMDLINE_LIMIT) or ""


def _argv(raw: str) -> tuple[str, ...]:
    """The arguments of a raw NUL-separated command line."""
    return tuple(a for a in raw.split("\0") if a)


def _cmdline(raw: str) -> str:
    """A raw command line with NULs as spaces."""
    return raw.replace("\0", " ").strip()


def read_cmdline(ctx: Context, pid: int) -> str:
    """A process's command line with NULs as spaces ('' for kernel threads or when gone)."""
    return _cmdline(_cmdline_raw(ctx, pid))


def command_line(argv: Sequence[str]) -> str:
    """argv as one line a shell reads back the same (arguments with spaces quoted).

    A title rewritten into one argument (setproctitle) is shown as it is.
    """
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def read_argv(ctx: Context, pid: int) -> tuple[str, ...]:
    """A process's arguments, argv[0] first (empty for kernel threads or when gone)."""
    return _argv(_cmdline_raw(ctx, pid))


def process_name(ctx: Context, pid: int) -> str:
    """A process's comm, else the basename of its argv[0], else '?'."""
    if comm := read_comm(ctx, pid):
        return comm
    argv = read_argv(ctx, pid)
    return (os.path.basename(argv[0]) if argv else "") or "?"


def parse_proc_status(text: str) -> dict[str, str]:
    """/proc/<pid>/status as key -> raw value."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_status(ctx: Context, pid: int) -> dict[str, str] | None:
    """A process's /proc/<pid>/status fields, or None when it is gone or unreadable."""
    text = ctx.read_optional(f"/proc/{pid}/status", STATUS_LIMIT)
    return parse_proc_status(text) if text is not None else None


def read_link(ctx: Context, node_path: str) -> str:
    """Target of a /proc symlink (exe, cwd, fd/N), '' when it cannot be read."""
    try:
        return os.readlink(ctx.path(node_path))
    except OSError:
        return ""


def clean_label(raw: str | None) -> str:
    """An LSM label as /proc/<pid>/attr/current gives it, without NULs and newlines."""
    return (raw or "").replace("\x00", "").strip()


def read_label(ctx: Context, pid: int) -> str:
    """The LSM label of a process (AppArmor profile or SELinux context); '' when none."""
    return clean_label(
        ctx.read_optional(f"/proc/{pid}/attr/apparmor/current", LABEL_LIMIT)
        or ctx.read_optional(f"/proc/{pid}/attr/current", LABEL_LIMIT)
    )


def read_threads(ctx: Context, pid: int) -> tuple[int, ...]:
    """Thread ids of a process (at most MAX_THREADS); (pid,) when /proc/<pid>/task is unreadable."""
    try:
        tasks = sorted(int(t) for t in os.listdir(ctx.path(f"/proc/{pid}/task")))
    except (OSError, ValueError):
        tasks = [pid]
    return tuple(tasks[:MAX_THREADS])


def uses_io_uring(ctx: Context, pid: int) -> bool | None:
    """Whether a process uses io_uring, as Iggy 0.6+ does: an io_uring fd or `shard-N` threads.

    True on an `anon_inode:[io_uring]` fd in /proc/<pid>/fd or a thread named `shard-N`;
    False only when several threads were seen and none of them is a shard (a tokio-based
    0.5 broker); None when nothing could be read (not root, the process is gone, a lone
    thread), which proves nothing either way.
    """
    with contextlib.suppress(OSError), os.scandir(ctx.path(f"/proc/{pid}/fd")) as it:
        for n, entry in enumerate(it):
            if n >= IO_URING_SCAN_LIMIT:
                break
            with contextlib.suppress(OSError):
                if os.readlink(entry.path) == IO_URING_FD:
                    return True
    seen = 0
    for tid in read_threads(ctx, pid)[:IO_URING_SCAN_LIMIT]:
        comm = ctx.read_optional(f"/proc/{pid}/task/{tid}/comm", COMM_LIMIT)
        if comm is None:
            continue
        seen += 1
        if _SHARD_THREAD.fullmatch(comm.strip()):
            return True
    return False if seen >= 2 else None


#: io_uring_enter's syscall number: the same on every architecture but alpha (asm-generic
#: numbering, 5.1+), as /proc/<pid>/task/<tid>/syscall shows it while the thread sleeps.
IO_URING_ENTER_NR = 426
#: Where a thread waiting for io_uring completions sleeps, as wchan names it.
IO_URING_WCHAN = ("io_cqring_wait", "io_uring")
IO_URING_WAIT_SCAN_LIMIT = 8192  # threads looked at, machine-wide (~50 µs each)
WCHAN_LIMIT = 256


def waits_in_io_uring(ctx: Context, pid: int, tid: int) -> bool:
    """Whether a thread sleeps in io_uring_enter, waiting for completions.

    wchan names the function it sleeps in (readable for your own processes even where
    ptrace is restricted); when it says nothing ('0': running, or not allowed to tell)
    the syscall it sleeps in (/proc/<pid>/task/<tid>/syscall, root) decides.
    """
    task = f"/proc/{pid}/task/{tid}"
    wchan = (ctx.read_optional(f"{task}/wchan", WCHAN_LIMIT) or "").strip()
    if wchan.startswith(IO_URING_WCHAN):
        return True
    if wchan and wchan != "0":
        return False  # asleep somewhere else
    syscall = (ctx.read_optional(f"{task}/syscall", WCHAN_LIMIT) or "").split()
    return syscall[:1] == [str(IO_URING_ENTER_NR)]


#: /proc/<pid>/stat flags bit of kernel threads (their D sleeps are not user I/O waits).
PF_KTHREAD = 0x00200000
KTHREADD_PID = 2


@dataclass(frozen=True)
class BlockedTask:
    """A user thread in uninterruptible sleep (state D), not in io_uring_enter."""

    pid: int
    tid: int
    start_ticks: int  # tells a reused tid apart
    name: str  # the thread's comm
    wchan: str  # where it sleeps ('' when not readable)


@dataclass(frozen=True)
class ThreadWaits:
    """What a walk over every thread found asleep: io_uring waiters, threads in D state."""

    io_uring: dict[int, int]  # pid -> threads asleep in io_uring_enter
    blocked: tuple[BlockedTask, ...]


def _task_stat(ctx: Context, pid: int, tid: int) -> str:
    """A thread's stat line ('' when gone or unreadable)."""
    return ctx.read_optional(f"/proc/{pid}/task/{tid}/stat", STAT_LIMIT) or ""


def _state(text: str) -> str:
    """The state letter of a stat line ('' when there is none), without parsing the rest."""
    fields = text.rpartition(")")[2].split(maxsplit=1)
    return fields[0] if fields else ""


def blocked_task(ctx: Context, pid: int, tid: int, text: str | None = None) -> BlockedTask | None:
    """The thread, when it is a user thread asleep in D state outside io_uring; else None.

    Disk, NFS, CIFS and FUSE waits sleep in D (uninterruptible or killable); io_uring's
    completion wait sleeps interruptibly (S). Kernel threads are left out: some idle in D
    without doing I/O, and their disk waits show in /proc/diskstats anyway. `text` is
    the thread's stat line when already read.
    """
    task = f"/proc/{pid}/task/{tid}"
    text = _task_stat(ctx, pid, tid) if text is None else text
    stat = parse_stat(text)
    if stat is None or stat.state != "D":
        return None
    fields = text.rpartition(")")[2].split()
    flags = parse_int(fields[6]) if len(fields) > 6 else None
    if KTHREADD_PID in (pid, stat.ppid) or (flags is not None and flags & PF_KTHREAD):
        return None
    wchan = (ctx.read_optional(f"{task}/wchan", WCHAN_LIMIT) or "").strip()
    if wchan.startswith(IO_URING_WCHAN):
        return None
    return BlockedTask(pid, tid, stat.start_ticks, stat.name, "" if wchan == "0" else wchan)


def scan_waits(ctx: Context, limit: int = IO_URING_WAIT_SCAN_LIMIT) -> ThreadWaits:
    """One walk over at most `limit` threads: who waits in io_uring_enter, who sleeps in D."""
    found: dict[int, int] = {}
    blocked: list[BlockedTask] = []
    budget = limit
    for pid in list_pids(ctx)[:MAX_PIDS]:
        if budget <= 0:
            break
        tids = read_threads(ctx, pid)[:budget]
        budget -= len(tids)
        waiting = 0
        for tid in tids:
            text = _task_stat(ctx, pid, tid)
            state = _state(text)
            if state == "D":
                if task := blocked_task(ctx, pid, tid, text):
                    blocked.append(task)
            elif state in ("S", "") and waits_in_io_uring(ctx, pid, tid):
                waiting += 1  # io_uring's wait sleeps in S ('': stat unreadable, ask wchan)
        if waiting:
            found[pid] = waiting
    return ThreadWaits(found, tuple(blocked))


# -- the broker --------------------------------------------------------------------

_DELETED = " (deleted)"


@dataclass(frozen=True)
class BrokerProcess:
    """One running iggy-server process: how it was found and what /proc says about it."""

    pid: int
    name: str = ""  # comm (the main thread may have renamed itself, e.g. to a shard name)
    cmdline: str = ""  # argv joined by spaces
    found_by: str = ""  # "systemd MainPID of iggy-server.service" or "process name iggy-server"
    argv: tuple[str, ...] = ()
    exe: str = ""  # target of /proc/PID/exe ("" when unreadable, e.g. not root)
    cwd: str = ""  # target of /proc/PID/cwd
    exe_deleted: bool = False  # the binary was replaced or removed since it started
    start_ticks: int = 0  # start time after boot (the oldest broker wins)
    uid: int | None = None
    gids: tuple[int, ...] = ()  # real gid and supplementary groups
    seccomp: int | None = None  # 0 none, 1 strict, 2 filter
    no_new_privs: int | None = None
    cap_eff: int | None = None  # effective capability bitmask
    label: str = ""  # LSM label (AppArmor profile or SELinux context), '' when none/unknown
    threads: tuple[int, ...] = ()

    @property
    def has_sys_admin(self) -> bool:
        """True when the process holds CAP_SYS_ADMIN in its effective set."""
        return self.cap_eff is not None and bool(self.cap_eff >> CAP_SYS_ADMIN & 1)


def broker_from_status(pid: int, status: str, label: str = "") -> BrokerProcess:
    """Build a BrokerProcess from a /proc/<pid>/status text (identity and confinement only)."""
    return _from_status(pid, parse_proc_status(status), label)


def _from_status(pid: int, fields: dict[str, str], label: str) -> BrokerProcess:
    """A BrokerProcess with the identity and confinement that /proc/<pid>/status gives."""
    gids: list[int] = []
    for raw in (fields.get("Gid", "").split()[:1]) + fields.get("Groups", "").split():
        value = parse_int(raw)
        if value is not None and value not in gids:
            gids.append(value)
    return BrokerProcess(
        pid=pid,
        name=fields.get("Name", ""),
        uid=parse_int(fields.get("Uid")),
        gids=tuple(gids),
        seccomp=parse_int(fields.get("Seccomp")),
        no_new_privs=parse_int(fields.get("NoNewPrivs")),
        cap_eff=parse_int(fields.get("CapEff"), 16),
        label=label,
    )


def read_broker(ctx: Context, pid: int, found_by: str = "") -> BrokerProcess | None:
    """Everything the checks use about one process; None when it is gone or a zombie."""
    stat = read_stat(ctx, pid)
    if stat is not None and stat.state == "Z":
        return None
    status = read_status(ctx, pid)
    if stat is None and status is None and not ctx.path(f"/proc/{pid}").is_dir():
        return None  # exited meanwhile
    base = _from_status(pid, status or {}, read_label(ctx, pid))
    raw = _cmdline_raw(ctx, pid)
    exe = read_link(ctx, f"/proc/{pid}/exe")
    return replace(
        base,
        name=read_comm(ctx, pid) or (stat.name if stat else "") or base.name,
        cmdline=_cmdline(raw),
        found_by=found_by,
        argv=_argv(raw),
        exe=exe.removesuffix(_DELETED),
        cwd=read_link(ctx, f"/proc/{pid}/cwd"),
        exe_deleted=exe.endswith(_DELETED),
        start_ticks=stat.start_ticks if stat else 0,
        threads=read_threads(ctx, pid),
    )


def _named(ctx: Context, pid: int, name: str) -> bool:
    """True when the process's comm or the basename of its argv[0] is `name`."""
    comm = read_comm(ctx, pid)
    if not comm and (stat := read_stat(ctx, pid)):
        comm = stat.name  # no comm file (a fixture tree with stat lines only)
    if comm == name:
        return True
    # The main thread may have renamed itself (e.g. to a shard name): ask argv[0].
    argv = read_argv(ctx, pid)
    return bool(argv) and os.path.basename(argv[0]) == name


def find_brokers(ctx: Context, name: str = BROKER_NAME) -> list[BrokerProcess]:
    """Every running process whose comm or argv[0] basename is `name`, by pid."""
    found: list[BrokerProcess] = []
    for pid in list_pids(ctx)[:MAX_PIDS]:
        if _named(ctx, pid, name) and (proc := read_broker(ctx, pid, f"process name {name}")):
            found.append(proc)
    return found


def is_broker(name: str) -> bool:
    """True when a process name (comm, an OOM victim's name) is the broker's."""
    return name == BROKER_NAME


def systemctl_show(
    ctx: Context, unit: str, props: Sequence[str], save_as: str | None = None
) -> dict[str, str]:
    """`systemctl show -p PROPS UNIT` as {property: value}; {} without systemd or an answer."""
    if not ctx.path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return {}
    res = ctx.run(
        ["systemctl", "show", "--no-pager", "-p", ",".join(props), unit],
        timeout_s=SYSTEMCTL_TIMEOUT_S,
        save_as=save_as,
    )
    return parse_show(res.stdout) if res.ok else {}


def systemd_main_pid(ctx: Context, unit: str) -> int:
    """The unit's MainPID (0 when not running, not installed or not asked)."""
    text = systemctl_show(ctx, unit, ("MainPID",)).get("MainPID", "")
    return int(text) if DIGITS.fullmatch(text) else 0


def find_broker(ctx: Context) -> BrokerProcess | None:
    """The Iggy server process: the systemd unit's MainPID, else a process named iggy-server.

    The unit comes from the config (`iggy.service`); without systemd (containers,
    hand-started brokers) the oldest process whose name or argv[0] is iggy-server wins.
    """
    unit = ctx.config.iggy.service
    pid = systemd_main_pid(ctx, unit)
    if pid > 0 and read_stat(ctx, pid) is not None:
        broker = read_broker(ctx, pid, f"systemd MainPID of {unit}")
        if broker is not None:
            return broker
    candidates = find_brokers(ctx)
    return min(candidates, key=lambda b: (b.start_ticks, b.pid)) if candidates else None
