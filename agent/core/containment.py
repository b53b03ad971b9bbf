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

Neither layer outlives the agent: killed outright (SIGKILL, the OOM killer), it can kill
nothing, and PR_SET_PDEATHSIG reaches only its checks and their commands, not what those
started. So each run has a guardian (`Guardian`), a small process forked before the
first check that waits for the agent's end and, if the agent died, kills the run's
cgroup and every process that carries the run's tag (RUN_ENV, which every command a
check starts has in its environment), then exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import secrets
import signal
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import psutil

from snapshot_agent.errors import STOP_SIGNALS, UsageError, stop_signals_held

MODE_ENV = "SNAPSHOT_AGENT_CONTAINMENT"
MODES = ("auto", "subreaper")  # auto: a cgroup per check when allowed, else subreapers
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NAME = 15
#: <cgroup of the agent>/snapshot-agent-<pid>-<start>-<n>/check-<i>, where <start> is when
#: the agent started (clock ticks after boot): a later process with the same pid is not it.
RUN_PREFIX = "snapshot-agent-"
#: In the environment of every command a check starts: the run's tag, unique per run.
RUN_ENV = "SNAPSHOT_AGENT_RUN"
GUARD_S = 10.0  # after the agent died: how long its guardian keeps killing the run
GUARD_QUIET_S = 0.1  # ...until it has found nothing new to kill for this long
FULL_SCAN_EVERY = 8  # one guardian round in this many reads every process in /proc
DISMISS = b"d"  # the agent to its guardian: the run is cleaned up, exit
DISMISS_S = 1.0  # how long the agent waits for a dismissed guardian to exit
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
    """Whether `pid` has exited (a zombie, or gone)."""
    fields = _stat(pid)
    return fields is None or fields[0] in (b"Z", b"X")


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first); None if unreadable.

    Split after the last `)`: the name itself may hold spaces and parentheses.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields if len(fields) > 19 else None


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (field 22 of its stat); None if unknown.

    With the pid it names one process for good: a pid is reused, a start time never is.
    """
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once: `die_with_parent` runs before every command starts.

    Safe in a forked child (the preexec hook): filled before the fork, the child calls a
    function pointer it inherited; filled in the child, it loads it there, as each call
    did before (the process that forks commands is a check's, single-threaded).
    """
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, *args: object) -> int:
    """prctl(2) with `args`, the unused ones zero; its return (-1 on error)."""
    return int(_libc().prctl(option, *args, *(0,) * (4 - len(args))))


def set_subreaper(on: bool) -> bool:
    """Make this process a subreaper (or not); False when the kernel refused."""
    with contextlib.suppress(Exception):
        return _prctl(PR_SET_CHILD_SUBREAPER, int(on)) == 0
    return False


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when `parent` dies (PR_SET_PDEATHSIG); at once if it already has.

    An agent killed outright (SIGKILL, the OOM killer) cannot stop its checks: without
    this they ran on, writing into a working directory nobody would clean up.
    """
    with contextlib.suppress(Exception):
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(70)


def is_subreaper() -> bool:
    """Whether this process is a subreaper now."""
    flag = ctypes.c_int(0)
    with contextlib.suppress(Exception):
        _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag))
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
            owner = _run_owner(entry.name)
            if owner is not None and not _owner_alive(*owner):
                stale.append(entry)
    return stale


def _run_owner(name: str) -> tuple[int, int | None] | None:
    """(pid, start ticks) of the agent that made the run cgroup `name`; None: not a run's.

    Names of agents before start ticks were recorded (`<pid>-<n>`) give no start.
    """
    if not name.startswith(RUN_PREFIX):
        return None
    parts = name.removeprefix(RUN_PREFIX).split("-")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]) if len(parts) == 3 else None


def _owner_alive(pid: int, start: int | None) -> bool:
    """Whether the agent that made a run cgroup may still be running it.

    Not this agent (its earlier runs are over), not a dead or zombie pid, and not a
    process that started at another time than the name says: the pid was reused.
    """
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: still read its stat, if /proc shows it
    fields = _stat(pid)
    if fields is None:  # hidden from us (hidepid): alive as far as we can tell
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return start is None or int(fields[19]) == start


# -- the guardian -------------------------------------------------------------------


class Guardian:
    """A small process that outlives the agent just long enough to kill its run.

    Forked before the first check, it blocks on a pipe whose write end only the agent
    holds (the checks close it, commands never inherit it). The agent dismisses it once
    the run is cleaned up; EOF without that means the agent died, and the guardian
    kills the run (`clean_up_run`) and exits. It ignores the stop signals, which are the
    agent's to handle, and has a process group of its own, so that killing the agent's
    group does not take it along.
    """

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd: int | None = fd  # the write end: closing it without DISMISS means death

    @classmethod
    def start(cls, tag: str, group: Path | None) -> Guardian | None:
        """Fork the guardian of the run tagged `tag` (cgroup `group`); None if fork failed."""
        read_fd, write_fd = os.pipe()  # not inheritable: no command ever holds the write end
        agent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return None
        if pid == 0:
            _guard(read_fd, agent, tag, group)  # never returns
        with contextlib.suppress(OSError):  # the guardian does this too; first one wins
            os.setpgid(pid, pid)
        os.close(read_fd)
        return cls(pid, write_fd)

    def dismiss(self) -> None:
        """The run is cleaned up: let the guardian exit without killing anything, reap it."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, DISMISS)
        os.close(self._fd)
        self._fd = None
        end = time.monotonic() + DISMISS_S
        while not _reaped(self.pid) and time.monotonic() < end:
            time.sleep(0.0005)


def _guard(fd: int, agent: int, tag: str, group: Path | None) -> None:
    """The guardian's whole life: wait for the agent's end, clean up if it died; exits."""
    try:
        for signum in STOP_SIGNALS:  # Ctrl-C, a hang-up: the agent stops the run itself
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        with contextlib.suppress(Exception):  # how `ps` and `top` tell it from the agent
            _prctl(PR_SET_NAME, b"snapshot-guard")
        _keep_only(fd)
        if not _dismissed(fd):
            _await_reparenting(agent)
            clean_up_run(tag, group, time.monotonic() + GUARD_S)
    finally:
        os._exit(0)


def _keep_only(fd: int) -> None:
    """Close every inherited descriptor but `fd`; stdio on /dev/null.

    Held open, the agent's pipes would keep a reader waiting for EOF (a caller's
    `communicate()`, the service's events) and its lock file would look alive.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    top = os.sysconf("SC_OPEN_MAX")
    os.closerange(3, fd)
    os.closerange(fd + 1, max(top, fd + 1))


def _dismissed(fd: int) -> bool:
    """Block until the agent dismisses this guardian (True) or dies (EOF: False)."""
    while True:
        data = os.read(fd, 64)
        if not data:
            return False
        if DISMISS in data:
            return True


def _await_reparenting(agent: int) -> None:
    """Wait until the agent has finished dying: its files close before its children move.

    Until then, what its checks leave is not yet where `hunt` looks for it.
    """
    end = time.monotonic() + 1.0
    while os.getppid() == agent and time.monotonic() < end:
        time.sleep(0.0005)


def clean_up_run(tag: str, group: Path | None, end: float) -> None:
    """Kill all of a dead agent's run, until `end`: its cgroup, then its tagged processes."""
    if group is not None:
        _kill_group(group)
    hunt(tag, end)
    while group is not None and not _remove(group) and time.monotonic() < end:
        _kill_group(group)  # once more: nothing enters a run's cgroup but its checks
        time.sleep(0.005)


def hunt(tag: str, end: float) -> int:
    """SIGKILL every process carrying the run's tag until none turns up for a while.

    A daemon that keeps re-forking is never where a scan of /proc last saw it. But once
    the agent is dead everything its checks orphaned lands on the agent's reaper, this
    process's parent now: its children, read each round newest first, are where such a
    daemon is, and a killed process's children are read after the kill, when it can
    fork no more. A full scan of /proc every few rounds finds the rest. Returns how
    many processes it killed.
    """
    marker = b"\0" + f"{RUN_ENV}={tag}".encode() + b"\0"
    killed: set[int] = set()
    quiet_since = time.monotonic()
    quiet_scans = 0  # full scans that found nothing new since `quiet_since`
    for turn in itertools.count():
        full = turn % FULL_SCAN_EVERY == 0
        fresh = _kill_tagged(_all_pids() if full else children(os.getppid()), marker) - killed
        killed |= fresh
        now = time.monotonic()
        if fresh:
            quiet_since, quiet_scans = now, 0
        elif full:
            quiet_scans += 1
        if now >= end or (quiet_scans >= 2 and now - quiet_since >= GUARD_QUIET_S):
            break
        if not fresh:
            time.sleep(0.001)
    return len(killed)


def _all_pids() -> list[int]:
    """Every pid in /proc."""
    with contextlib.suppress(OSError):
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return []


def _kill_tagged(pids: list[int], marker: bytes) -> set[int]:
    """SIGKILL those of `pids` whose environment holds `marker`, and the same below them."""
    hit: set[int] = set()
    stack = sorted(pids)  # pop() takes the newest first: a re-forking daemon is there
    seen = {os.getpid()}
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if _kill_if_tagged(pid, marker):
            hit.add(pid)
            stack += sorted(children(pid))
    return hit


def _kill_if_tagged(pid: int, marker: bytes) -> bool:
    """SIGKILL `pid` if its environment holds `marker`; whether it did.

    Through a pidfd opened before the environment is read: if the pid is reused
    meanwhile, the signal goes to the process that was read or to no one.
    """
    pidfd: int | None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError):  # before Linux 5.3: plain kill, a narrow race
        pidfd = None
    try:
        if not _tagged(pid, marker):
            return False
        if pidfd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _tagged(pid: int, marker: bytes) -> bool:
    """Whether `pid`'s environment holds `marker` (a zombie's reads as empty).

    Readable for our own uid's processes and, as root, for all.
    """
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return False
    return marker in b"\0" + environ


# -- one run ------------------------------------------------------------------------


class Containment:
    """Where one run's checks live, and how all they started dies with them.

    The runner opens it before the first check and closes it after the last; in
    between it makes a cell per check (`cell`), kills a check's whole tree (`kill`) and
    sweeps up what killed checks orphaned onto the agent (`sweep`). A guardian kills the
    run if the agent dies before `close`.
    """

    def __init__(self, mode: str) -> None:
        self.requested = mode  # auto or subreaper: resolved by the caller (resolve_mode)
        self.run_group: Path | None = None
        self.mode = "subreaper"  # what contains this run's checks: cgroup or subreaper
        #: In every command's environment (as RUN_ENV): how the guardian tells the run's
        #: processes from all others. Random: a pid and a counter repeat across boots.
        self.tag = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.guardian: Guardian | None = None
        self._was_subreaper: bool | None = None  # None: not opened
        self._foreign: set[int] = set()  # the agent's children before the run: not ours
        self._orphans: set[int] = set()  # killed, not yet reaped
        self._dead_cells: list[Path] = []  # killed, not yet removed
        self._cells = itertools.count()
        self._next_scan = 0.0

    def open(self) -> None:
        """Become a subreaper, start the guardian, make the run's cgroup when allowed.

        As one step, with the stop signals held: a Ctrl-C halfway would leave a cgroup
        or a guardian that `close` does not know of. The guardian is started before the
        cgroup is made, so there is no moment when the agent could die and leave it.
        """
        with stop_signals_held():
            self._foreign = set(children(os.getpid()))
            self._was_subreaper = is_subreaper()
            set_subreaper(True)
            base = self._cgroup_base() if self.requested == "auto" else None
            group = None if base is None else base / _run_group_name()
            self.guardian = Guardian.start(self.tag, group)
            if self.guardian is not None:
                self._foreign.add(self.guardian.pid)
            if group is not None:
                self.run_group = self._make_run_group(group)
            self.mode = "cgroup" if self.run_group is not None else "subreaper"

    def _cgroup_base(self) -> Path | None:
        """Where this run's cgroup goes (the agent's own), stale runs there cleaned; None:
        the agent may not make one."""
        base = own_cgroup_dir()
        if base is None or not os.access(base / "cgroup.procs", os.W_OK):
            return None
        for stale in _stale_runs(base):
            _kill_group(stale)
            self._dead_cells.append(stale)  # removed by `sweep` once its processes died
        return base

    def _make_run_group(self, group: Path) -> Path | None:
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
        """After the last check: kill what is left, reap it, remove the cgroups, dismiss
        the guardian. Safe after an `open` that did not finish, and to repeat."""
        try:
            self._clean_up(checks)
        finally:
            if self.guardian is not None:
                self.guardian.dismiss()
            if self._was_subreaper is False:
                set_subreaper(False)

    def _clean_up(self, checks: Collection[int]) -> None:
        if self.run_group is not None:
            _kill_group(self.run_group)
        end = time.monotonic() + CLOSE_S
        while True:
            # A check not yet dead may hold what it started: what was reparented to it, its
            # subreaper, after its tree was read. Killed again with it; what is left reaches
            # the agent only once the check has exited, so wait for that too.
            dying = {pid for pid in checks if kill_tree(pid) or not _zombie(pid)}
            self.sweep(checks)
            group_gone = self.run_group is None or _remove(self.run_group)
            strays = set(children(os.getpid())) - set(checks) - self._foreign
            done = group_gone and not (dying or strays or self._orphans or self._dead_cells)
            if done or time.monotonic() >= end:
                break
            time.sleep(0.005)
        if group_gone:
            self.run_group = None


def _run_group_name() -> str:
    """A new run cgroup's name: this agent's pid and start (see RUN_PREFIX), then a count."""
    return f"{RUN_PREFIX}{os.getpid()}-{start_ticks(os.getpid()) or 0}-{next(_runs)}"
