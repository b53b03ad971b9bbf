"""Keeping everything a check starts inside the check, so that all of it dies with it.

A process group is not a container: `setsid` leaves it, and a daemon that forks and lets
its parent exit leaves any tree walked from a snapshot of /proc before it is killed. Two
things hold whatever a command does:

- a cgroup v2 leaf per check, when the agent may create one (root on a writable cgroup2
  mount, or the subtree systemd delegates to the service): nothing can leave a cgroup on
  its own, and `cgroup.kill` kills every process in it at once;
- otherwise subreapers (PR_SET_CHILD_SUBREAPER). The check's process is one, so what a
  command orphans stays its child; before it reports, it kills and reaps until it has
  no child left. The agent is one while the checks run, so what a killed check leaves
  lands on the agent, which kills and reaps it.

Both layers are always on; the cgroup only makes the kill atomic. A process that is not
a check's is never touched: the agent's own children from before the run are kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import signal
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import psutil

from snapshot_agent.errors import UsageError

MODE_ENV = "SNAPSHOT_AGENT_CONTAINMENT"
MODES = ("auto", "subreaper")  # auto: a cgroup per check when allowed, else subreapers
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_CHILD_SUBREAPER = 37
RUN_PREFIX = "snapshot-agent-"  # <cgroup of the agent>/snapshot-agent-<pid>-<n>/check-<i>
CLOSE_S = 1.0  # after the run, how long to wait for killed processes to go
SCAN_EVERY_S = 1.0  # without /proc/PID/task/TID/children, how often to scan all of /proc
_runs = itertools.count()  # one process may run the checks many times (tests, the service)


def resolve_mode(mode: str | None) -> str:
    """The mode asked for (else $SNAPSHOT_AGENT_CONTAINMENT, else auto), checked."""
    value = mode if mode is not None else os.environ.get(MODE_ENV, "") or "auto"
    if value not in MODES:
        raise UsageError(
            f"{MODE_ENV}={value!r} is not a containment mode: use auto (a cgroup per check "
            "when allowed) or subreaper, or unset it"
        )
    return value


# -- processes ----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The direct children of `pid` (zombies included); [] when it is gone.

    /proc/PID/task/TID/children is read per thread, without scanning all of /proc: on a
    node with thousands of processes a full scan takes seconds, and a process that
    forks and exits in a loop is never where such a scan last saw it.
    """
    if not children_file():
        return _children_by_scan(pid)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        # A thread or the process itself may go away meanwhile: it has no children then.
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


@functools.cache
def children_file() -> bool:
    """Whether the kernel lists children in /proc (CONFIG_PROC_CHILDREN, on in distros)."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_by_scan(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def kill_tree(pid: int) -> set[int]:
    """SIGKILL `pid` and everything below it; the pids that were alive to be killed.

    Each process is killed before its children are read: once SIGKILL is pending a
    process can fork no more, so the list read after it is complete. A child that was
    reparented meanwhile is the caller's next pass (a subreaper's own child).
    """
    killed: set[int] = set()
    stack = [pid]
    while stack:
        victim = stack.pop()
        if victim in killed or _zombie(victim):  # dead already, and childless
            continue
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass  # still walk its children: they may be ours to kill
        killed.add(victim)
        stack += children(victim)
    return killed


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited (a zombie, or gone): the state after the command name."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def set_subreaper(on: bool) -> bool:
    """Make this process a subreaper (or not); False when the kernel refused."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    return False


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when `parent` dies (PR_SET_PDEATHSIG); at once if it already has.

    An agent killed outright (SIGKILL, the OOM killer) cannot stop its checks: without
    this they ran on, writing into a working directory nobody would clean up.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(70)


def is_subreaper() -> bool:
    """Whether this process is a subreaper now."""
    flag = ctypes.c_int(0)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


def reap_everything(bound_s: float) -> int:
    """In a subreaper: kill and reap until no child is left; how many it killed.

    With this process a subreaper, every descendant is a child or below one, so an
    empty `waitpid(-1)` means nothing it started is left anywhere. Bounded: past
    `bound_s` what remains is left to the next subreaper up (the agent).
    """
    end = time.monotonic() + bound_s
    killed: set[int] = set()
    while not _reap_children():
        fresh = set()
        for pid in children(os.getpid()):
            fresh |= kill_tree(pid)
        if time.monotonic() >= end:
            break
        if not fresh - killed:
            time.sleep(0.0005)  # only dying processes left: let them die
        killed |= fresh
    return len(killed)


def _reap_children() -> bool:
    """Reap every exited child; True when this process has no child at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        except InterruptedError:
            continue
        if pid == 0:
            return False


def _reaped(pid: int) -> bool:
    """Reap `pid` if it exited; True when it is gone (reaped now or before)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


# -- cgroups ------------------------------------------------------------------------


def own_cgroup_dir() -> Path | None:
    """This process's cgroup v2 directory, or None without a cgroup2 mount that has it."""
    own = _own_cgroup_path()
    if own is None:
        return None
    for root, mount in _cgroup2_mounts():
        if own == root or own.startswith(root.rstrip("/") + "/"):
            return Path(mount) / own[len(root) :].lstrip("/")
    return None


def _own_cgroup_path() -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    path = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    if path is None or path.endswith(" (deleted)"):
        return None
    return path


def _cgroup2_mounts() -> Iterator[tuple[str, str]]:
    """(root inside the hierarchy, mount point) of each cgroup2 mount."""
    try:
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if tail.split()[:1] == ["cgroup2"] and len(parts) >= 5:
            yield _unescape(parts[3]), _unescape(parts[4])


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _write(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove(group: Path) -> bool:
    """rmdir a cgroup and the leaves below it; False while a process is still inside."""
    try:
        leaves = [p for p in group.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    gone = all([_remove(leaf) for leaf in leaves])
    try:
        group.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return gone


def _kill_group(group: Path) -> bool:
    """Every process in `group` and below gets SIGKILL, in one write."""
    return _write(group / "cgroup.kill", "1")


def join(cell: str | None) -> bool:
    """In a check's process, first thing: move into its cgroup leaf (None: no leaf)."""
    return cell is not None and _write(Path(cell) / "cgroup.procs", "0")


def _stale_runs(base: Path) -> list[Path]:
    """Run cgroups of dead agents (a killed agent leaves them, maybe with processes), and
    this agent's own from earlier runs (a process stuck in the kernel kept them)."""
    stale = []
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            owner = entry.name.removeprefix(RUN_PREFIX).split("-")[0]
            if not (entry.name.startswith(RUN_PREFIX) and owner.isdigit()):
                continue
            if int(owner) == os.getpid():
                stale.append(entry)
                continue
            try:
                os.kill(int(owner), 0)
            except ProcessLookupError:
                stale.append(entry)
            except PermissionError:
                pass  # alive, someone else's
    return stale


# -- one run ------------------------------------------------------------------------


class Containment:
    """Where one run's checks live, and how all they started dies with them.

    The runner opens it before the first check and closes it after the last; in
    between it makes a cell per check (`cell`), kills a check's whole tree (`kill`) and
    sweeps up what killed checks orphaned onto the agent (`sweep`).
    """

    def __init__(self, mode: str | None = None) -> None:
        self.requested = resolve_mode(mode)
        self.run_group: Path | None = None
        self.mode = "subreaper"  # what contains this run's checks: cgroup or subreaper
        self._was_subreaper = False
        self._foreign: set[int] = set()  # the agent's children before the run: not ours
        self._orphans: set[int] = set()  # killed, not yet reaped
        self._dead_cells: list[Path] = []  # killed, not yet removed
        self._cells = itertools.count()
        self._next_scan = 0.0

    def open(self) -> None:
        """Become a subreaper and make the run's cgroup when that is allowed."""
        self._foreign = set(children(os.getpid()))
        self._was_subreaper = is_subreaper()
        set_subreaper(True)
        if self.requested == "auto":
            self.run_group = self._make_run_group()
        self.mode = "cgroup" if self.run_group is not None else "subreaper"

    def _make_run_group(self) -> Path | None:
        base = own_cgroup_dir()
        if base is None or not os.access(base / "cgroup.procs", os.W_OK):
            return None
        for stale in _stale_runs(base):
            _kill_group(stale)
            self._dead_cells.append(stale)  # removed by `sweep` once its processes died
        group = base / f"{RUN_PREFIX}{os.getpid()}-{next(_runs)}"
        try:
            group.mkdir()
        except OSError:
            return None
        if not (group / "cgroup.kill").exists():  # before Linux 5.14: no atomic kill
            _remove(group)
            return None
        return group

    def cell(self) -> str | None:
        """A new cgroup leaf for one check (None: the subreapers alone contain it)."""
        if self.run_group is None:
            return None
        leaf = self.run_group / f"check-{next(self._cells)}"
        try:
            leaf.mkdir()
        except OSError:  # cgroup.max.descendants, say: this check has subreapers only
            return None
        return str(leaf)

    def kill(self, pid: int, cell: str | None) -> None:
        """SIGKILL a check's process and everything it started, wherever it went."""
        if cell is not None:
            _kill_group(Path(cell))
            self._dead_cells.append(Path(cell))
        kill_tree(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def sweep(self, checks: Collection[int]) -> None:
        """Kill and reap what killed checks orphaned onto the agent; remove dead cells.

        `checks` are the check processes still running or not yet reaped: every other
        child the agent has gained since the run began was orphaned by a check.
        """
        if children_file() or time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + SCAN_EVERY_S  # a scan of /proc is slow
            for pid in children(os.getpid()):
                if pid not in checks and pid not in self._foreign:
                    kill_tree(pid)
                    self._orphans.add(pid)
        self._orphans = {pid for pid in self._orphans if not _reaped(pid)}
        self._dead_cells = [cell for cell in self._dead_cells if not _remove(cell)]

    def close(self, checks: Collection[int] = ()) -> None:
        """After the last check: kill what is left, reap it, remove the cgroups."""
        if self.run_group is not None:
            _kill_group(self.run_group)
        end = time.monotonic() + CLOSE_S
        while True:
            self.sweep(checks)
            group_gone = self.run_group is None or _remove(self.run_group)
            strays = set(children(os.getpid())) - set(checks) - self._foreign
            done = group_gone and not (strays or self._orphans or self._dead_cells)
            if done or time.monotonic() >= end:
                break
            time.sleep(0.005)
        if group_gone:
            self.run_group = None
        if not self._was_subreaper:
            set_subreaper(False)
