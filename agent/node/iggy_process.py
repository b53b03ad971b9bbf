"""The running Iggy broker as a process: its shard threads and their CPUs, its memory pool,
its limits and open files, how long it has run and how often its unit restarted.

Every reader is a function of the context (or of plain text) so fixture /proc trees work
like a live node. What the broker does with these comes from the Iggy sources:
- one thread per shard, named `shard-{id}`, each pinned to one CPU with
  sched_setaffinity; a failed bind is only logged and the shard runs unpinned
  (server-0.8.0:core/server/src/main.rs, core/server/src/shard_allocator.rs);
- `[system.sharding] cpu_allocation`: "all", a count N (cores 0..N-1), a range "a..b"
  (cores a..b-1), or "numa:auto" / "numa:nodes=..;cores=..;no_ht=.."
  (server-0.8.0:core/configs/src/server_config/sharding.rs); the shipped default is
  "all" in 0.6 (server-0.6.0:core/configs/server.toml) and "numa:auto" from 0.7
  (server-0.8.0:core/server/config.toml, merged under the file by
  core/configs/src/configs_impl/file_provider.rs);
- `[system.memory_pool]` enabled = true, size = "4 GiB", bucket_capacity = 8192 from 0.5 to
  0.8; the pool allocates lazily up to `size` and beyond it outside the pool
  (server-0.8.0:core/common/src/alloc/memory_pool.rs);
- a shard whose io_uring runtime cannot be created (ENOMEM from RLIMIT_MEMLOCK) panics,
  and Iggy prints advice ending in `LimitMEMLOCK=infinity`
  (server-0.8.0:core/server/src/diagnostics.rs, core/server/src/bootstrap.rs); from
  Linux 5.12 the kernel charges io_uring rings to the memory cgroup instead of
  RLIMIT_MEMLOCK, so the limit only bites on older kernels.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.node.processes import COMM_LIMIT, DIGITS, read_threads, systemctl_show

#: Seconds kept back from the check's deadline while walking threads and fds.
RESERVE_S = 1.0
MAX_CPU_ID = 8192  # the kernel's largest NR_CPUS; a list naming more is garbage
TASK_STATUS_LIMIT = 16 * 1024
FD_COUNT_CHECK_EVERY = 4096  # fds counted between two looks at the deadline
SHARD_NAME = re.compile(r"shard-([0-9]+)")

RING_MEMLOCK_UNTIL = (5, 12, 0)  # kernels before this charge io_uring rings to RLIMIT_MEMLOCK
DEFAULT_POOL_SIZE = 4 * 1024**3  # server-0.5.0 .. server-0.8.0 config: size = "4 GiB"
DEFAULT_ALLOCATION = "numa:auto"  # server-0.7.0 and later; 0.6 shipped "all"


# -- CPU lists -------------------------------------------------------------------------


def parse_cpu_set(text: str) -> frozenset[int]:
    """A kernel CPU list ('0-3,8') as the set of CPU ids; ValueError on garbage."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 0 <= first <= last < MAX_CPU_ID:
            raise ValueError(f"CPU range {part!r}")
        cpus.update(range(first, last + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    return frozenset(cpus)


def format_cpu_set(cpus: frozenset[int]) -> str:
    """{0, 1, 2, 5} -> '0-2,5' (the kernel's own notation)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# -- [system.sharding] cpu_allocation ----------------------------------------------------


@dataclass(frozen=True)
class CpuAllocation:
    """What `cpu_allocation` asks for, as Iggy parses it."""

    text: str  # as written ("all", "4", "2..6", "numa:auto")
    kind: str  # all | count | range | numa | invalid
    cpus: tuple[int, ...] = ()  # the cores a count or range pins shards to

    @property
    def shards(self) -> int | None:
        """Shards it starts when that does not depend on the node (count, range)."""
        return len(self.cpus) if self.kind in ("count", "range") else None


def parse_cpu_allocation(value: Any) -> CpuAllocation:
    """A `cpu_allocation` value (a string or a TOML integer) as Iggy reads it."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return CpuAllocation(str(value), "count", tuple(range(value)))
    if not isinstance(value, str):
        return CpuAllocation(repr(value), "invalid")
    text = value.strip()
    if text == "all":
        return CpuAllocation(text, "all")
    if text.startswith("numa:"):
        return CpuAllocation(text, "numa")
    start, sep, end = text.partition("..")
    if sep and _number(start) and _number(end) and int(end) - int(start) <= MAX_CPU_ID:
        return CpuAllocation(text, "range", tuple(range(int(start), int(end))))
    if _number(text) and int(text) <= MAX_CPU_ID:
        return CpuAllocation(text, "count", tuple(range(int(text))))
    return CpuAllocation(text, "invalid")


def _number(text: str) -> bool:
    """True for ASCII digits only (str.isdigit also takes superscripts, other scripts)."""
    return DIGITS.fullmatch(text) is not None


def all_cores_shards(affinity: int, quota: float | None) -> int:
    """Shards "all" starts: Rust's available_parallelism (affinity, capped by the CPU quota)."""
    return min(affinity, max(1, math.floor(quota))) if quota else affinity


# -- threads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """One thread of the broker: its name and the CPUs it may run on (None: unreadable)."""

    tid: int
    name: str
    cpus: frozenset[int] | None

    @property
    def shard(self) -> int | None:
        """N for a thread named shard-N, else None."""
        m = SHARD_NAME.fullmatch(self.name)
        return int(m.group(1)) if m else None


@dataclass
class BrokerThreads:
    """The broker's threads as far as they were read before the deadline."""

    tasks: list[TaskInfo] = field(default_factory=list)
    listed: int = 0  # thread ids listed in /proc/PID/task (at most MAX_THREADS)
    stopped_early: bool = False

    @property
    def shards(self) -> list[TaskInfo]:
        """The shard-N threads, by shard number."""
        return sorted((t for t in self.tasks if t.shard is not None), key=lambda t: t.shard or 0)

    @property
    def named(self) -> int:
        """Threads whose name could be read."""
        return sum(1 for t in self.tasks if t.name)

    @property
    def generation(self) -> str:
        """'sharded' (0.6+), 'tokio' (threads seen, none a shard: 0.5) or 'unknown'."""
        if self.shards:
            return "sharded"
        return "tokio" if self.named >= 2 else "unknown"


def allowed_cpus(status: dict[str, str] | None) -> frozenset[int] | None:
    """Cpus_allowed_list of a /proc status as a set; None when absent or garbage."""
    text = (status or {}).get("Cpus_allowed_list")
    if not text:
        return None
    try:
        return parse_cpu_set(text)
    except ValueError:
        return None


def _task_cpu_list(ctx: Context, pid: int, tid: int) -> str:
    """A thread's Cpus_allowed_list as written ('' when unreadable)."""
    text = ctx.read_optional(f"/proc/{pid}/task/{tid}/status", TASK_STATUS_LIMIT) or ""
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.partition(":")[2].strip()
    return ""


def read_broker_threads(ctx: Context, pid: int) -> BrokerThreads:
    """Name and CPU affinity of each thread, stopping RESERVE_S before the deadline.

    Threads share a handful of CPU lists: each distinct list is parsed once.
    """
    tids = read_threads(ctx, pid)
    found = BrokerThreads(listed=len(tids))
    parsed: dict[str, frozenset[int] | None] = {}
    for tid in tids:
        if ctx.remaining() < RESERVE_S:
            found.stopped_early = True
            break
        name = (ctx.read_optional(f"/proc/{pid}/task/{tid}/comm", COMM_LIMIT) or "").strip()
        text = _task_cpu_list(ctx, pid, tid)
        if text not in parsed:
            parsed[text] = allowed_cpus({"Cpus_allowed_list": text})
        found.tasks.append(TaskInfo(tid, name, parsed[text]))
    return found


# -- the kernel ---------------------------------------------------------------------------


# -- open files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FdCount:
    """Open file descriptors counted in /proc/PID/fd."""

    count: int | None  # None: the directory could not be read
    complete: bool = True  # False: the deadline came first; `count` is a lower bound
    note: str = ""


def count_fds(ctx: Context, pid: int) -> FdCount:
    """Count /proc/PID/fd entries (no readlink), stopping RESERVE_S before the deadline."""
    count = 0
    try:
        with os.scandir(ctx.path(f"/proc/{pid}/fd")) as it:
            for _ in it:
                count += 1
                if count % FD_COUNT_CHECK_EVERY == 0 and ctx.remaining() < RESERVE_S:
                    return FdCount(count, False, f"stopped counting at {count} fds (time)")
    except PermissionError:
        return FdCount(None, note=f"cannot read /proc/{pid}/fd (permission denied; run as root)")
    except OSError as exc:
        return FdCount(None, note=f"cannot read /proc/{pid}/fd ({exc.strerror or exc})")
    return FdCount(count)


# -- the unit ------------------------------------------------------------------------------

UNIT_PROPS = ("LoadState", "MainPID", "NRestarts", "ActiveEnterTimestamp")


def read_unit_restarts(ctx: Context, unit: str) -> dict[str, str]:
    """The unit's MainPID, NRestarts and last activation; {} without systemd or systemctl."""
    return systemctl_show(ctx, unit, UNIT_PROPS, save_as="unit.txt")
