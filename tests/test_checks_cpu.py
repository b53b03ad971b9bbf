"""cpu.load, cpu.usage, cpu.pressure and cpu.frequency against fixture node trees."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import cpu as cpu_mod
from snapshot_agent.checks.cpu import (
    CpuSample,
    IoUringWaits,
    OwnTicks,
    UsageFacts,
    agent_per_core,
    cpu_frequency,
    cpu_load,
    cpu_pressure,
    cpu_usage,
    format_cpu_ids,
    judge_usage,
    parse_proc_stat,
    parse_psi,
    usage_between,
)
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.processes import scan_waits

from .conftest import fixture_roots, make_context, run_check, severities, write_tree

# --- cpu.load --------------------------------------------------------------------------


def test_cpu_load_passes_a_one_minute_spike(tmp_path: Path, node: Path) -> None:
    # 3 per core over the last minute (a deploy, a compaction), 0.5 over five minutes.
    files = {
        "proc/loadavg": "12.00 2.00 1.00 3/400 999\n",
        "sys/devices/system/cpu/online": "0-3\n",
    }
    result = run_check(cpu_load, tmp_path, node, files)
    assert result.status == Status.PASS, result.summary
    assert "(0.50 per core, rising)" in result.summary


# --- cpu.usage -------------------------------------------------------------------------

# Real /proc/stat layout (Linux 6.x): user nice system idle iowait irq softirq steal guest gnice
STAT_BEFORE = """\
cpu  14815 645 8666 225929 519 0 67 18 0 0
cpu0 4654 183 3380 117074 27 0 10 5 0 0
cpu1 10160 461 5286 108855 491 0 57 12 0 0
intr 362028 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 639965
btime 1795442656
processes 16534
procs_running 12
procs_blocked 0
softirq 264068 0 35318 12 3827 88135 0 2 58765 0 78009
"""


def stat_after(cpu0: tuple[int, ...], cpu1: tuple[int, ...], steps: int = 1) -> str:
    """STAT_BEFORE advanced `steps` times by per-field tick deltas for each core."""
    base0 = (4654, 183, 3380, 117074, 27, 0, 10, 5)
    base1 = (10160, 461, 5286, 108855, 491, 0, 57, 12)
    c0 = [b + d * steps for b, d in zip(base0, cpu0, strict=True)]
    c1 = [b + d * steps for b, d in zip(base1, cpu1, strict=True)]
    base = (14815, 645, 8666, 225929, 519, 0, 67, 18)
    total = [t + (a + b) * steps for t, a, b in zip(base, cpu0, cpu1, strict=True)]

    def line(name: str, values: list[int]) -> str:
        """One cpu line with zero guest columns."""
        return name + " " + " ".join(map(str, values)) + " 0 0\n"

    return line("cpu ", total) + line("cpu0", c0) + line("cpu1", c1) + "intr 1 0\nctxt 2\n"


def sample(cpu0: tuple[int, ...], cpu1: tuple[int, ...], own: OwnTicks | None = None) -> CpuSample:
    """The shares of one sample of the given per-core tick deltas."""
    found = usage_between(
        parse_proc_stat(STAT_BEFORE), parse_proc_stat(stat_after(cpu0, cpu1)), 0.5, own
    )
    assert found is not None
    return found


def steady(cpu0: tuple[int, ...], cpu1: tuple[int, ...], **more: Any) -> UsageFacts:
    """The same shares over the window and in both of its back-to-back samples."""
    window = sample(cpu0, cpu1)
    half = dataclasses.replace(window, interval_s=0.25)
    return UsageFacts(window, (half, half), **more)


def usage(cpu0: tuple[int, ...], cpu1: tuple[int, ...], **more: Any) -> Result:
    """Judge a steady 50-tick window per core with the declared thresholds."""
    return judge_usage(steady(cpu0, cpu1, **more), cpu_usage.thresholds)


def test_parse_proc_stat_reads_cpu_lines_only() -> None:
    parsed = parse_proc_stat(STAT_BEFORE + "cpu2 garbage\ncpu3 1 2\n")
    assert set(parsed) == {"cpu", "cpu0", "cpu1"}
    assert parsed["cpu1"].iowait == 491 and parsed["cpu"].steal == 18


def test_cpu_usage_pass_excludes_niced_time() -> None:
    # cpu0: 5 user, 20 nice (this agent), 25 idle; cpu1: 2 system, 48 idle.
    result = usage((5, 20, 0, 25, 0, 0, 0, 0), (0, 0, 2, 48, 0, 0, 0, 0))
    assert result.status == Status.PASS, result.summary
    overall = result.data["overall"]
    assert overall["busy_pct"] == 7.0 and overall["nice_pct"] == 20.0
    assert result.data["hottest"][0] == "cpu0"
    assert "busy 7%" in result.summary and "hottest cpu0 10%" in result.summary


def test_cpu_usage_warns_on_one_saturated_core() -> None:
    result = usage((50, 0, 0, 0, 0, 0, 0, 0), (2, 0, 1, 47, 0, 0, 0, 0))
    assert result.status == Status.WARN
    [finding] = result.findings
    assert finding.subject == "cpu0" and "cpu0 100%" in finding.message
    assert "in every sample" in finding.message and "shard" in finding.remediation


def test_a_core_hot_in_one_sample_only_is_not_saturated() -> None:
    # cpu0 at 96% over the window: 100% in the first half, 92% in the second.
    idle = (0, 0, 0, 50, 0, 0, 0, 0)
    window = sample((48, 0, 0, 2, 0, 0, 0, 0), idle)
    hot, cool = sample((50, 0, 0, 0, 0, 0, 0, 0), idle), sample((46, 0, 0, 4, 0, 0, 0, 0), idle)
    result = judge_usage(UsageFacts(window, (hot, cool)), cpu_usage.thresholds)
    assert result.status == Status.PASS, result.summary
    assert "hottest cpu0 96%" in result.summary


def test_cpu_usage_fails_when_all_cores_busy() -> None:
    result = usage(
        (40, 0, 10, 0, 0, 0, 0, 0), (45, 0, 5, 0, 0, 0, 0, 0), load1_per_core=1.6, cpu_some_avg10=3
    )
    assert result.status == Status.FAIL
    assert severities(result)[0] == Severity.FAIL
    message = result.findings[0].message
    assert "100% busy overall" in message and "in each of the 2 samples" in message
    assert "confirmed by the 1-minute load 1.6 per core" in message


def test_cpu_usage_one_busy_sample_only_warns() -> None:
    # One 0.5 s window at 96%, the node otherwise idle: a burst (a cron job, a deploy).
    busy = sample((48, 0, 0, 2, 0, 0, 0, 0), (48, 0, 0, 2, 0, 0, 0, 0))
    facts = UsageFacts(busy, (busy,), load1_per_core=0.3, cpu_some_avg10=0.0)
    result = judge_usage(facts, cpu_usage.thresholds)
    assert result.status == Status.WARN, result.summary
    assert "96% busy" in result.summary and "not in every sample" in result.summary


def test_cpu_usage_busy_samples_unconfirmed_by_load_and_pressure_warn() -> None:
    result = usage(
        (48, 0, 0, 2, 0, 0, 0, 0), (48, 0, 0, 2, 0, 0, 0, 0), load1_per_core=0.3, cpu_some_avg10=1
    )
    assert result.status == Status.WARN
    assert "not confirmed by the 1-minute load 0.3 per core under 0.8" in result.summary
    assert "CPU pressure 1% (avg10) under 10" in result.summary


def test_cpu_usage_busy_confirmed_by_cpu_pressure_alone_fails() -> None:
    facts = steady((48, 0, 0, 2, 0, 0, 0, 0), (48, 0, 0, 2, 0, 0, 0, 0), cpu_some_avg10=40.0)
    assert judge_usage(facts, cpu_usage.thresholds).status == Status.FAIL


def test_cpu_usage_busy_in_every_sample_fails_when_nothing_can_confirm() -> None:
    # No /proc/loadavg and no PSI to ask: the samples alone decide.
    assert usage((48, 0, 0, 2, 0, 0, 0, 0), (48, 0, 0, 2, 0, 0, 0, 0)).status == Status.FAIL


@pytest.mark.parametrize(
    ("delta", "status", "word"),
    [
        ((5, 0, 5, 30, 10, 0, 0, 0), Status.WARN, "disk I/O"),  # iowait 10%
        ((5, 0, 5, 20, 20, 0, 0, 0), Status.FAIL, "disk I/O"),  # iowait 20%+20% -> 40%
        ((5, 0, 5, 36, 0, 0, 0, 4), Status.WARN, "stole"),  # steal 8%
        ((5, 0, 5, 30, 0, 0, 0, 10), Status.FAIL, "stole"),  # steal 20%
    ],
)
def test_cpu_usage_iowait_and_steal(delta: tuple[int, ...], status: Status, word: str) -> None:
    result = usage(delta, delta, io_uring=IoUringWaits())  # looked: no io_uring in use
    assert result.status == status
    assert word in result.summary
    assert result.findings[0].remediation


def test_cpu_usage_counters_going_backwards_are_clamped() -> None:
    before = parse_proc_stat("cpu 100 0 100 1000 50 0 0 0\ncpu0 100 0 100 1000 50 0 0 0\n")
    after = parse_proc_stat("cpu 110 0 110 1080 40 0 0 0\ncpu0 110 0 110 1080 40 0 0 0\n")
    facts = usage_between(before, after, 0.5)
    assert facts is not None and facts.overall.iowait == 0.0 and facts.overall.busy == 20.0


# The node, as the check reads it: files that change while the check sleeps.

#: vda, idle: the same counters before and after.
DISKSTATS_IDLE = (
    " 254 0 vda 116057 16377 4890346 57858 27239 237483 4831032 49370 0 30232 124494 "
    "190414 62 3398552 17132 1973 132\n"
)


def diskstats_queued(step: int) -> str:
    """vda after `step` quarter-seconds with two requests in flight all the time (100% util)."""
    writes, write_ms = 27239 + 100 * step, 49370 + 500 * step
    io_ms, weighted_ms = 30232 + 250 * step, 124494 + 500 * step
    return (
        f" 254 0 vda 116057 16377 4890346 57858 {writes} 237483 4831032 {write_ms} 2 {io_ms} "
        f"{weighted_ms} 190414 62 3398552 17132 1973 132\n"
    )


class FakeTime:
    """Stands in for cpu.py's `time`: each sleep passes that time on the node's files."""

    def __init__(self, node: Path, files_at: Callable[[int], dict[str, str]]) -> None:
        self.node, self.files_at, self.now, self.step = node, files_at, 1000.0, 0
        write_tree(node, files_at(0))

    def monotonic(self) -> float:
        """Seconds on the fake clock."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Let `seconds` pass: the node's files move on one step."""
        self.now += seconds
        self.step += 1
        write_tree(self.node, self.files_at(self.step))


def stat_line(
    pid: int,
    name: str,
    ppid: int,
    utime: int,
    *,
    nice: int = 0,
    start: int = 100,
    cpu: int = 0,
    state: str = "S",
) -> str:
    """A /proc/<pid>/stat line (52 fields) with the state, times, nice, start and CPU given."""
    fields = [state, ppid, pid, pid, 0, -1, 4194560, 100, 0, 0, 0, utime, 0, 0, 0, 20, nice]
    fields += [1, 0, start, 1000000, 100] + [0] * 14 + [cpu] + [0] * 15
    return f"{pid} ({name}) " + " ".join(map(str, fields)) + "\n"


#: Each quarter-second step of an idle io_uring broker on two cores: cpu0 sits in
#: iowait (its shard waits in io_uring_enter with a receive pending), cpu1 is idle.
IDLE_URING_CPU0 = (1, 0, 1, 0, 23, 0, 0, 0)
IDLE_CPU1 = (1, 0, 0, 24, 0, 0, 0, 0)


def io_uring_broker(pid: int = 812, shards: int = 2) -> dict[str, str]:
    """An iggy-server whose shard threads each wait in io_uring_enter (wchan and syscall)."""
    files = {
        f"proc/{pid}/comm": "iggy-server\n",
        f"proc/{pid}/cmdline": "/usr/bin/iggy-server\0",
        f"proc/{pid}/stat": stat_line(pid, "iggy-server", 1, 500),
        f"proc/{pid}/task/{pid}/comm": "iggy-server\n",
        f"proc/{pid}/task/{pid}/wchan": "futex_wait_queue",
    }
    for n in range(shards):
        task = f"proc/{pid}/task/{pid + 1 + n}"
        files |= {
            f"{task}/comm": f"shard-{n}\n",
            f"{task}/wchan": "io_cqring_wait",
            f"{task}/syscall": "426 0x7 0x0 0x1 0x1 0x0 0x8 0x7ffc5a1b2c28 0x7f3e9a51e88d\n",
        }
    return files


def run_usage(tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch, files_at: Any) -> Result:
    """Run cpu.usage on a fixture node whose files move on while it sleeps."""
    monkeypatch.setattr(cpu_mod, "time", FakeTime(node, files_at))
    return run_check(cpu_usage, tmp_path, node, {})


def test_cpu_usage_idle_io_uring_broker_is_not_iowait(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """The idle broker: iowait rises, the disk does nothing."""
        return {
            "proc/stat": stat_after(IDLE_URING_CPU0, IDLE_CPU1, step),
            "proc/diskstats": DISKSTATS_IDLE,
        } | io_uring_broker()

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.PASS, result.summary
    assert "iowait 46% discounted to 0%" in result.summary
    assert "2 threads sleep in io_uring_enter (iggy-server pid 812)" in result.summary
    assert "on average 0.00 requests in flight over 0.50 s; busiest vda: 0% util" in result.summary
    assert result.data["io_uring"]["processes"] == [
        {"pid": 812, "name": "iggy-server", "threads": 2}
    ]
    assert result.data["iowait_judged_pct"] == 0.0 and result.data["disks"]["busy_pct"] == 0.0
    assert "s later ---" in (tmp_path / "artifacts/diskstats-window.txt").read_text()
    assert [f.severity for f in result.findings] == [Severity.INFO]


def test_cpu_usage_io_uring_node_with_queued_disks_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """The broker's appends wait on a saturated disk: two requests queued all along."""
        return {
            "proc/stat": stat_after(IDLE_URING_CPU0, (1, 0, 0, 0, 24, 0, 0, 0), step),
            "proc/diskstats": diskstats_queued(step),
        } | io_uring_broker()

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith("the disks kept CPUs waiting about 94% of the time")
    assert (
        "on average 2.00 requests in flight over 0.50 s; busiest vda: 100% util" in result.summary
    )


def diskstats_hung(step: int) -> str:
    """vda with 16 requests stuck in flight (a dead EBS volume, an iSCSI path, an NVMe timeout).

    io_ticks grows (100% util) while nothing completes, so the weighted field (the sum of
    completed requests' times since Linux 5.x) stays put: aqu-sz reads 0.
    """
    io_ms = 30232 + 250 * step
    return (
        f" 254 0 vda 116057 16377 4890346 57858 27239 237483 4831032 49370 16 {io_ms} "
        "124494 190414 62 3398552 17132 1973 132\n"
    )


#: Each quarter-second step of a CPU in iowait all the time.
IOWAIT_CPU1 = (1, 0, 0, 0, 24, 0, 0, 0)

#: The root filesystem on vda and an NFS share (hard-mounted: a dead server blocks readers).
MOUNTS_NFS = (
    "/dev/vda1 / ext4 rw,relatime 0 0\n"
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
    "nfs.example:/export /mnt/archive nfs4 rw,relatime,vers=4.2,hard,proto=tcp 0 0\n"
)


def blocked_app(pid: int = 900, threads: int = 2, wchan: str = "rpc_wait_bit_killable") -> dict:
    """A user process whose threads sleep in D state (on a file server, a hung device)."""
    files = {
        f"proc/{pid}/comm": "rsync\n",
        f"proc/{pid}/stat": stat_line(pid, "rsync", 1, 50, state="D"),
    }
    for tid in range(pid, pid + threads):
        files |= {
            f"proc/{pid}/task/{tid}/stat": stat_line(tid, "rsync", 1, 50, state="D"),
            f"proc/{pid}/task/{tid}/comm": "rsync\n",
            f"proc/{pid}/task/{tid}/wchan": wchan,
        }
    return files


def test_cpu_usage_io_uring_node_with_a_hung_disk_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """Both CPUs in iowait; vda holds 16 requests that never complete."""
        return {
            "proc/stat": stat_after(IDLE_URING_CPU0, IOWAIT_CPU1, step),
            "proc/diskstats": diskstats_hung(step),
        } | io_uring_broker()

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith("the disks kept CPUs waiting about 94% of the time")
    assert "16 in flight at the start and 16 at the end" in result.summary
    assert "nothing completed on vda (16 requests): stalled" in result.summary
    assert "dmesg" in result.findings[0].remediation
    assert result.data["disks"]["stuck"] == ["vda"] and result.data["iowait_judged_pct"] == 94.0


def test_cpu_usage_io_uring_node_with_a_hung_nfs_server_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """Disks idle; two rsync threads stuck on a dead NFS server (D state)."""
        return (
            {
                "proc/stat": stat_after(IDLE_URING_CPU0, IOWAIT_CPU1, step),
                "proc/diskstats": DISKSTATS_IDLE,
                "proc/self/mounts": MOUNTS_NFS,
            }
            | io_uring_broker()
            | blocked_app()
        )

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith(
        "the disks and threads blocked in D state kept CPUs waiting about 94% of the time"
    )
    assert (
        "2 threads sleep in D state outside io_uring_enter (rsync tid 900 in "
        "rpc_wait_bit_killable, rsync tid 901 in rpc_wait_bit_killable)" in result.summary
    )
    assert "nfs4 on /mnt/archive mounted" in result.summary
    assert [t["tid"] for t in result.data["io_uring"]["blocked_threads"]] == [900, 901]


def test_cpu_usage_idle_io_uring_broker_with_nfs_mounted_passes(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """Two idle shards keep both CPUs in iowait; an NFS share is mounted, nobody on it."""
        return {
            "proc/stat": stat_after(IDLE_URING_CPU0, IOWAIT_CPU1, step),
            "proc/diskstats": DISKSTATS_IDLE,
            "proc/self/mounts": MOUNTS_NFS,
        } | io_uring_broker()

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.PASS, result.summary
    assert "iowait 94% discounted to 0%" in result.summary
    assert (
        "nfs4 on /mnt/archive mounted, whose waits /proc/diskstats does not show; no thread "
        "sleeps in D state outside io_uring_enter, so none is counted" in result.summary
    )


@pytest.mark.parametrize(
    ("stays", "status"), [(True, Status.FAIL), (False, Status.PASS)], ids=["stays", "passes"]
)
def test_cpu_usage_thread_stuck_in_d_state_counts(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch, stays: bool, status: Status
) -> None:
    def files_at(step: int) -> dict[str, str]:
        """Idle disks, no network filesystem; one thread in D state when the threads are
        walked (after the two samples), still there a moment later or not."""
        files = {
            "proc/stat": stat_after(IDLE_URING_CPU0, IOWAIT_CPU1, step),
            "proc/diskstats": DISKSTATS_IDLE,
        } | io_uring_broker()
        if step == 2 or (stays and step > 2):
            files |= blocked_app(threads=1, wchan="folio_wait_bit_common")
        else:
            files |= blocked_app(threads=1, wchan="do_epoll_wait")
            files["proc/900/task/900/stat"] = stat_line(900, "rsync", 1, 50)
        return files

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == status, result.summary
    blocked = result.data["io_uring"]["blocked_threads"]
    assert [t["wchan"] for t in blocked] == (["folio_wait_bit_common"] if stays else [])


def test_blocked_threads_leave_out_kernel_threads_and_io_uring(tmp_path: Path, node: Path) -> None:
    kthread = stat_line(55, "kworker/u8:2", 2, 0, state="D")
    write_tree(
        node,
        blocked_app(threads=1)
        | {
            "proc/55/task/55/stat": kthread,  # a kernel thread (parent kthreadd)
            "proc/55/task/55/wchan": "msleep",
            "proc/60/task/60/stat": stat_line(60, "app", 1, 5, state="D"),
            "proc/60/task/60/wchan": "io_uring_cancel_generic",  # io_uring's own
        },
    )
    scan = scan_waits(make_context(tmp_path, roots=fixture_roots(node)))
    assert [(t.pid, t.tid, t.name, t.wchan) for t in scan.blocked] == [
        (900, 900, "rsync", "rpc_wait_bit_killable")
    ]


def test_io_uring_waits_without_diskstats_warn_at_most() -> None:
    facts = steady(IDLE_URING_CPU0, (1, 0, 0, 0, 24, 0, 0, 0), io_uring=IoUringWaits(broker_pid=9))
    result = judge_usage(facts, cpu_usage.thresholds)
    assert result.status == Status.WARN
    assert "iggy-server (pid 9) uses io_uring" in result.summary
    assert "could not be read" in result.summary


def test_cpu_usage_leaves_the_agent_out_per_core(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node / "proc").mkdir()
    (node / "proc/self").symlink_to("4242")

    def files_at(step: int) -> dict[str, str]:
        """The agent's one thread keeps cpu0 busy (not niced: --no-low-priority)."""
        agent = stat_line(4242, "snapshot-agent", 1, 100 + 25 * step, cpu=0)
        return {
            "proc/stat": stat_after((25, 0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 25, 0, 0, 0, 0), step),
            "proc/4242/stat": agent,
            "proc/4242/task/4242/stat": agent,
        }

    result = run_usage(tmp_path, node, monkeypatch, files_at)
    assert result.status == Status.PASS, result.summary
    cpu0 = result.data["per_core"][0]
    assert cpu0["cpu"] == "cpu0" and cpu0["busy_pct"] == 0.0 and cpu0["agent_pct"] == 100.0
    assert "this snapshot's own 50% left out" in result.summary
    evidence = (tmp_path / "artifacts/proc-stat-samples.txt").read_text()
    assert evidence.count("s later ---") == 2 and "intr" not in evidence


def test_agent_ticks_nobody_can_place_come_off_the_busiest_core() -> None:
    deltas = {
        "cpu0": dict.fromkeys(cpu_mod.STAT_FIELDS, 0) | {"user": 10, "idle": 40},
        "cpu1": dict.fromkeys(cpu_mod.STAT_FIELDS, 0) | {"user": 48, "idle": 2},
    }
    # 30 user ticks: 5 of a thread last seen on cpu0, 25 of a check reaped meanwhile.
    placed = agent_per_core(deltas, OwnTicks(30, 0, False, {"cpu0": (5, 0)}))
    assert placed["cpu0"].user == 5 and placed["cpu1"].user == 25


def test_io_uring_waiters_are_told_by_wchan_else_by_syscall(tmp_path: Path, node: Path) -> None:
    write_tree(node, io_uring_broker(812, shards=1))
    task = "proc/900/task"
    write_tree(
        node,
        {
            "proc/900/comm": "app\n",
            f"{task}/900/wchan": "0",  # wchan hidden: the syscall says io_uring_enter
            f"{task}/900/syscall": "426 0x3 0x0 0x1 0x1 0x0 0x8 0x7ffd 0x7f12\n",
            f"{task}/901/wchan": "do_epoll_wait",  # asleep elsewhere
            f"{task}/901/syscall": "426 stale\n",
            f"{task}/902/wchan": "0",  # running, or nothing readable
            f"{task}/902/syscall": "running\n",
        },
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    assert scan_waits(ctx).io_uring == {812: 1, 900: 1}
    assert scan_waits(ctx, limit=2).io_uring == {812: 1}  # the scan stops at its budget


def test_cpu_usage_skips_when_no_time_elapsed(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_usage(tmp_path, node, monkeypatch, lambda step: {"proc/stat": STAT_BEFORE})
    assert result.status == Status.SKIPPED and "no elapsed CPU time" in result.summary


# --- cpu.pressure ----------------------------------------------------------------------

PSI_QUIET = """\
some avg10=0.00 avg60=0.12 avg300=0.05 total=1234567
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def psi(avg10: float, avg60: float, full10: float = 0.0, full60: float = 0.0) -> str:
    """A /proc/pressure file with the given averages."""
    return (
        f"some avg10={avg10:.2f} avg60={avg60:.2f} avg300=1.00 total=29957980\n"
        f"full avg10={full10:.2f} avg60={full60:.2f} avg300=0.00 total=4922707\n"
    )


def pressure_tree(cpu: str = PSI_QUIET, io: str = PSI_QUIET, memory: str = PSI_QUIET) -> dict:
    """The three PSI files."""
    return {"proc/pressure/cpu": cpu, "proc/pressure/io": io, "proc/pressure/memory": memory}


def test_parse_psi() -> None:
    parsed = parse_psi(psi(18.23, 17.07, 0.01, 0.98) + "\nbogus line\n")
    assert parsed["some"].avg10 == 18.23 and parsed["full"].avg60 == 0.98
    assert parsed["some"].total_us == 29957980 and "bogus" not in parsed


def test_cpu_pressure_pass(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_pressure, tmp_path, node, pressure_tree())
    assert result.status == Status.PASS
    assert result.summary.startswith("PSI avg10/avg60: cpu some 0/0.12%")
    assert (tmp_path / "artifacts/pressure-io.txt").read_text() == PSI_QUIET


def test_cpu_pressure_warns_on_a_spike_only(tmp_path: Path, node: Path) -> None:
    # 80% over 10 s but only 15% over a minute: a spike warns, it does not fail.
    result = run_check(cpu_pressure, tmp_path, node, pressure_tree(cpu=psi(80, 15)))
    assert result.status == Status.WARN
    assert result.findings[0].subject == "/proc/pressure/cpu"


def test_cpu_pressure_fails_on_sustained_memory_stalls(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_pressure, tmp_path, node, pressure_tree(memory=psi(30, 25, 12, 11)))
    assert result.status == Status.FAIL
    assert severities(result) == [Severity.FAIL, Severity.FAIL]  # some and full
    assert "swappiness" in result.findings[0].remediation


def test_cpu_pressure_io_full_warns(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_pressure, tmp_path, node, pressure_tree(io=psi(12, 12, 11, 11)))
    assert result.status == Status.WARN
    assert "every non-idle task" in result.summary


def test_cpu_pressure_cpu_full_is_not_judged(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_pressure, tmp_path, node, pressure_tree(cpu=psi(1, 1, 99, 99)))
    assert result.status == Status.PASS


def test_cpu_pressure_skips_without_psi(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_pressure, tmp_path, node, {"proc/stat": STAT_BEFORE})
    assert result.status == Status.SKIPPED and "CONFIG_PSI" in result.summary
    (node / "proc/pressure").mkdir()
    result = cpu_pressure.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.SKIPPED and "psi=1" in result.summary


def psi_totals(avg10: float, avg60: float, some_us: int, full_us: int) -> str:
    """A /proc/pressure file whose some and full lines share the averages, with totals."""
    return (
        f"some avg10={avg10:.2f} avg60={avg60:.2f} avg300=1.00 total={some_us}\n"
        f"full avg10={avg10:.2f} avg60={avg60:.2f} avg300=1.00 total={full_us}\n"
    )


def run_pressure(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    diskstats: Callable[[int], str],
    averages: tuple[float, float] = (21.05, 4.29),
    stalled_us: int = 500000,
    more: dict[str, str] | None = None,
) -> Result:
    """cpu.pressure on an io_uring broker node with the io averages given.

    Each half-second step the I/O stall totals grow by `stalled_us` (all of it: every task
    stalled all the time); the disks as given; `more` files (mounts, blocked threads).
    """

    def files_at(step: int) -> dict[str, str]:
        """The io PSI totals move on by `stalled_us` each step; the disks as given."""
        grown = stalled_us * step
        io = psi_totals(*averages, 21999841 + grown, 17253323 + grown)
        files = pressure_tree(io=io) | {"proc/diskstats": diskstats(step)} | io_uring_broker()
        return files | (more or {})

    monkeypatch.setattr(cpu_mod, "time", FakeTime(node, files_at))
    return run_check(cpu_pressure, tmp_path, node, {})


def test_cpu_pressure_io_uring_waits_are_not_disk_stalls(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_pressure(tmp_path, node, monkeypatch, lambda step: DISKSTATS_IDLE)
    assert result.status == Status.PASS, result.summary
    assert "io pressure discounted: 2 threads sleep in io_uring_enter" in result.summary
    assert "PSI read some 100%, full 100% and the disks account for some 0%, full 0%" in (
        result.summary
    )
    assert result.data["io_window"]["judged_pct"] == {"some": 0.0, "full": 0.0}


def test_cpu_pressure_io_uring_node_with_busy_disks_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # diskstats_queued moves on 250 ms of busy time per step; the window is one 0.5 s step.
    result = run_pressure(tmp_path, node, monkeypatch, lambda step: diskstats_queued(step))
    assert result.status == Status.WARN, result.summary
    some, full = result.findings[:2]
    assert some.severity == full.severity == Severity.WARN
    assert "about 50% of 0.50 s as far as the disks account for it" in some.message


def test_cpu_pressure_steady_io_uring_waits_pass(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle broker up for an hour: its pending receives stall "I/O" all the time, the
    # averages read 99%, the window 100%; the disks do nothing.
    result = run_pressure(tmp_path, node, monkeypatch, lambda step: DISKSTATS_IDLE, (99.5, 98.9))
    assert result.status == Status.PASS, result.summary
    assert result.data["io_window"]["io_uring_pct"] == {"some": 100.0, "full": 100.0}


def test_cpu_pressure_io_uring_node_quiet_window_high_averages_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minute of heavy I/O stalls (85/80%), but the 0.5 s window fell between bursts: no
    # stall and idle disks in it. Neither io_uring nor the disks can be blamed: warn.
    result = run_pressure(
        tmp_path, node, monkeypatch, lambda step: DISKSTATS_IDLE, (85.0, 80.0), stalled_us=0
    )
    assert result.status == Status.WARN, result.summary
    some, full = result.findings[:2]
    assert some.severity == full.severity == Severity.WARN
    assert "cannot tell io_uring waits from disk stalls here" in some.message
    assert "85% of the last 10 s and 80% of the last 60 s, but only 0% of the 0.50 s" in (
        some.message
    )


@pytest.mark.parametrize(
    ("disks", "more"),
    [
        (diskstats_queued, {}),
        (diskstats_hung, {}),
        (lambda step: DISKSTATS_IDLE, {"proc/self/mounts": MOUNTS_NFS} | blocked_app()),
    ],
    ids=["saturated", "hung-disk", "hung-nfs"],
)
def test_cpu_pressure_io_uring_node_with_a_minute_of_disk_stalls_fails(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    disks: Callable[[int], str],
    more: dict[str, str],
) -> None:
    # A minute of I/O stalls (some 85/80%, full 85/80%) and the window shows why: the disks
    # saturated or stalled, or (idle disks) threads stuck on a dead NFS server.
    result = run_pressure(tmp_path, node, monkeypatch, disks, (85.0, 80.0), more=more)
    assert result.status == Status.FAIL, result.summary
    assert [f.severity for f in result.findings[:2]] == [Severity.FAIL, Severity.FAIL]
    assert "(fail at 50% over 60 s); over 0.50 s:" in result.findings[0].message
    assert "as far as the disks account for it" in result.findings[0].message


# --- cpu.frequency ---------------------------------------------------------------------


def freq_tree(governors: list[str], max_khz: int = 3_500_000) -> dict[str, str]:
    """cpufreq files for one CPU per governor (plus a non-CPU directory and file)."""
    files = {"sys/devices/system/cpu/online": f"0-{len(governors) - 1}\n"}
    for n, governor in enumerate(governors):
        base = f"sys/devices/system/cpu/cpu{n}/cpufreq"
        files |= {
            f"{base}/scaling_governor": governor + "\n",
            f"{base}/scaling_driver": "intel_pstate\n",
            f"{base}/scaling_cur_freq": "2100000\n",
            f"{base}/scaling_max_freq": f"{max_khz}\n",
            f"{base}/cpuinfo_max_freq": "3500000\n",
            f"{base}/energy_performance_preference": "balance_performance\n",
        }
    files["sys/devices/system/cpu/cpuidle/current_driver"] = "intel_idle\n"
    return files


def test_cpu_frequency_pass(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_frequency, tmp_path, node, freq_tree(["performance"] * 4))
    assert result.status == Status.PASS
    assert result.summary == "governor performance on CPUs 0-3 (driver intel_pstate)"
    assert result.data["cpus"][0]["hardware_max_mhz"] == 3500


def test_cpu_frequency_warns_on_powersave(tmp_path: Path, node: Path) -> None:
    governors = ["performance", "powersave", "powersave", "performance"] + ["powersave"] * 8
    result = run_check(cpu_frequency, tmp_path, node, freq_tree(governors))
    assert result.status == Status.WARN
    [finding] = result.findings
    assert "10 of 12 CPUs use the `powersave` governor" in finding.message
    assert "(CPUs 1-2,4-11)" in finding.message
    assert "cpupower frequency-set -g performance" in finding.remediation


def test_cpu_frequency_fails_on_a_capped_clock(tmp_path: Path, node: Path) -> None:
    result = run_check(cpu_frequency, tmp_path, node, freq_tree(["performance"] * 2, 1_400_000))
    assert result.status == Status.FAIL
    assert "1400 MHz of 3500 MHz, 60% below" in result.summary


def test_cpu_frequency_expected_governor_is_configurable(tmp_path: Path, node: Path) -> None:
    write_tree(node, freq_tree(["schedutil"] * 2))
    thresholds = cpu_frequency.thresholds | {"expected_governor": "schedutil"}
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    assert cpu_frequency.run(ctx).status == Status.PASS


def test_cpu_frequency_skips_without_cpufreq(tmp_path: Path, node: Path) -> None:
    files = {"sys/devices/system/cpu/cpu0/topology/core_id": "0\n"}
    result = run_check(cpu_frequency, tmp_path, node, files)
    assert result.status == Status.SKIPPED and "VMs" in result.summary


def test_format_cpu_ids() -> None:
    assert format_cpu_ids([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert format_cpu_ids([5]) == "5"


def _stat_line(
    pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0, nice: int = 0
) -> str:
    """A /proc/<pid>/stat line with the fields agent_ticks reads."""
    return (
        f"{pid} (python3) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} "
        f"{cutime} {cstime} 30 {nice} 1 0 500 1000000 300 18446744073709551615 0 0 0 0\n"
    )


def test_agent_ticks_sum_the_agent_tree_including_reaped_children(
    tmp_path: Path, node: Path
) -> None:
    write_tree(
        node,
        {
            "proc/100/stat": _stat_line(100, 1, 50, 20, cutime=7, cstime=3, nice=10),
            "proc/101/stat": _stat_line(101, 100, 5, 4, nice=10),  # a running check
            "proc/102/stat": _stat_line(102, 101, 2, 1, nice=10),  # a command it started
            "proc/200/stat": _stat_line(200, 1, 900, 900),  # the broker: not ours
        },
    )
    (node / "proc/self").symlink_to("100")
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    ticks = cpu_mod.agent_ticks(ctx)
    assert ticks is not None
    assert (ticks.user, ticks.system, ticks.niced) == (50 + 7 + 5 + 2, 20 + 3 + 4 + 1, True)


def test_agent_ticks_are_left_out_of_busy() -> None:
    before = parse_proc_stat("cpu  1000 500 800 5000 10 0 0 0\n")
    after = parse_proc_stat("cpu  1010 560 880 5050 10 0 0 0\n")  # 200 ticks elapsed
    plain = usage_between(before, after, 0.5)
    own = cpu_mod.OwnTicks(user=50, system=60, niced=True)
    mine = usage_between(before, after, 0.5, own)
    assert plain is not None and mine is not None
    assert plain.overall.system == 40.0 and plain.overall.nice == 30.0
    assert mine.overall.system == 10.0 and mine.overall.nice == 5.0
    assert mine.overall.agent == 55.0
    assert mine.overall.busy == 15.0  # user 10 + system 20 ticks of 200
    # Never more than was there: the kernel's and our counters are read a moment apart.
    huge = usage_between(before, after, 0.5, cpu_mod.OwnTicks(500, 500, False))
    assert huge is not None and huge.overall.user == 0 and huge.overall.system == 0
