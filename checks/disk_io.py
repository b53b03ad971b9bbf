"""disk.io: per-disk utilisation, IOPS, throughput and wait from /proc/diskstats.

Two samples half a second apart give `iostat -x` style rates (read and computed by
node/diskstats.py, which the cpu checks share). Whole disks plus dm/md devices are judged
(partitions double-count their disk); loop/ram/zram and other virtual devices appear only
when they did I/O in the sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.diskstats import (
    DeviceIO,
    compute_io,
    parse_diskstats,
    read_block_devices,
    read_diskstats,
)


@dataclass
class IOFacts:
    """Two diskstats samples turned into rates."""

    interval_s: float
    devices: list[DeviceIO] = field(default_factory=list)


def read_io(
    ctx: Context,
    sample_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> IOFacts:
    """Sample /proc/diskstats twice, `sample_s` apart; keep both samples as evidence."""
    block_devices = read_block_devices(ctx)
    first = read_diskstats(ctx)
    t0 = clock()
    sleep(sample_s)
    second = read_diskstats(ctx)
    interval = clock() - t0
    ctx.artifact(
        "diskstats.txt", f"# sample 1\n{first}\n# sample 2, {interval:.3f} s later\n{second}"
    )
    return IOFacts(
        interval,
        compute_io(parse_diskstats(first), parse_diskstats(second), interval, block_devices),
    )


#: How busy the device was (%util): alone it only warns, see _busy.
UTIL_PCT = Band("util_pct", warn=80.0, fail=95.0)
#: Average time an I/O took, queueing included (await), judged with enough I/Os.
AWAIT_MS = Band("await_ms", warn=50.0, fail=200.0)


def _slow(d: DeviceIO, thresholds: dict[str, Any]) -> Severity | None:
    """How long requests wait on the device; unjudged with too few I/Os in the sample."""
    if d.ios < int(thresholds["min_ios"]):
        return None
    return AWAIT_MS.grade(d.await_ms, thresholds)


def _busy(d: DeviceIO, slow: Severity | None, thresholds: dict[str, Any]) -> Severity | None:
    """%util of the device; it fails only when requests also wait.

    %util alone overstates saturation on SSD/NVMe (parallel queues).
    """
    busy = UTIL_PCT.grade(d.util_pct, thresholds)
    return Severity.WARN if busy == Severity.FAIL and slow is None else busy


def _saturated(d: DeviceIO, interval_s: float, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL for a device that is busy or slow over the sample."""
    slow = _slow(d, thresholds)
    busy = _busy(d, slow, thresholds)
    reasons: list[str] = []
    if busy:
        reasons.append(f"{d.util_pct:.0f} % busy")
    if slow:
        limit = AWAIT_MS.limit(slow, thresholds)
        reasons.append(f"average I/O wait {d.await_ms:.0f} ms (over {limit:g} ms)")
    if not reasons:
        return None
    return Finding(
        Severity.FAIL if Severity.FAIL in (slow, busy) else Severity.WARN,
        f"{d.name}: {', '.join(reasons)} over {interval_s:.1f} s "
        f"({d.r_s:.0f} r/s, {d.w_s:.0f} w/s, {d.read_mb_s:.1f} MB/s read, "
        f"{d.write_mb_s:.1f} MB/s written, queue {d.aqu_sz:.1f})",
        f"Confirm it lasts with `iostat -x 1 5 {d.name}` and find who does the I/O "
        "(`iotop -o`, `pidstat -d 1`). A saturated disk delays Iggy's appends and "
        "fsyncs (producer latency, consumer lag): give the data directory a dedicated "
        "or faster disk, or more provisioned IOPS/throughput on a cloud volume. On "
        "SSD/NVMe a high %util alone is not saturation; the wait time is what hurts.",
        f"/dev/{d.name}",
    )


def _io_row(d: DeviceIO) -> dict[str, Any]:
    """One device's rates for the table."""
    return {
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


def judge_io(facts: IOFacts, thresholds: dict[str, Any]) -> Result:
    """Utilisation and average wait per device; await is judged only with enough I/Os."""
    found = (_saturated(d, facts.interval_s, thresholds) for d in facts.devices)
    findings = [f for f in found if f is not None]
    rows = [_io_row(d) for d in facts.devices]
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
    bands=(UTIL_PCT, AWAIT_MS),
    thresholds={"min_ios": 5, "sample_s": 0.5},
    sampling_s=0.5,
)
def disk_io(ctx: Context) -> Result:
    """iostat -x over half a second, judged.

    Verdicts:
    - pass: quiet disks, no I/O in the sample [test_disk_io_runs_on_a_quiet_fixture]
    - pass: two slow I/Os in half a second (too few to judge a wait time), a disk
      lightly used with fast I/Os [test_judge_io_verdicts]
    - warn: an NVMe 99% busy with 1 ms I/Os (parallel queues, not saturation)
      [test_judge_io_verdicts]
    - fail: a disk 98% busy whose I/Os wait 75 ms on average
      [test_read_io_samples_through_the_context]
    - fail: I/Os that wait 500 ms on average [test_judge_io_verdicts]
    """
    sample = min(float(ctx.thresholds["sample_s"]), max(0.1, ctx.remaining() - 1.0))
    return judge_io(read_io(ctx, sample), ctx.thresholds)
