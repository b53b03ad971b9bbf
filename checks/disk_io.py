"""disk.io: per-disk utilisation, IOPS, throughput and wait from /proc/diskstats.

Two samples half a second apart give `iostat -x` style rates. Whole disks plus dm/md
devices are judged (partitions double-count their disk); loop/ram/zram and other virtual
devices appear only when they did I/O in the sample.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.units import MIB

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
    """iostat -x over half a second, judged."""
    sample = min(float(ctx.thresholds["sample_s"]), max(0.1, ctx.remaining() - 1.0))
    return judge_io(read_io(ctx, sample), ctx.thresholds)
