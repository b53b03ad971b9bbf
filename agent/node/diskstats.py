"""/proc/diskstats: per-device counters, and `iostat -x` style rates between two readings.

disk.io judges the rates per device; the cpu checks use the same window to tell whether
anyone could have been waiting on a disk (iowait and I/O pressure also count other waits,
such as io_uring's). Whole disks plus dm/md devices are kept (partitions double-count
their disk); loop/ram/zram and other virtual devices only when they did I/O.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from snapshot_agent.core.context import Context
from snapshot_agent.core.units import MIB

_PARTITION = re.compile(
    r"^(?:(?:sd|hd|vd|xvd)[a-z]+\d+|(?:nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+|md\d+)p\d+)$"
)
_VIRTUAL_DEV = re.compile(r"^(?:loop|ram|zram|sr|fd|nbd)\d*")
#: Devices stacked on other block devices: their requests are counted again below them.
_STACKED_DEV = re.compile(r"^(?:dm-|md)\d+$")

DISKSTATS_LIMIT = 1024 * 1024  # bytes of /proc/diskstats read (thousands of devices)


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
    in_flight: int  # requests in flight when the sample ended
    await_since_boot_ms: float
    in_flight_before: int = 0  # requests in flight when the sample began

    @property
    def stuck(self) -> bool:
        """Requests in flight at both ends of the sample and none completed: a stalled device."""
        return self.ios == 0 and self.in_flight_before > 0 and self.in_flight > 0

    @property
    def held(self) -> float:
        """The share of the sample (0..1) with a request in flight: %util, all of it if stuck.

        io_ticks (%util) grows while any request is in flight, finished or not (on kernels
        that bring it up to date when /proc/diskstats is read); a stuck device counts as
        busy throughout on any kernel.
        """
        return 1.0 if self.stuck else self.util_pct / 100.0

    @property
    def waiting_bound(self) -> float:
        """At most this many tasks waited on the device, on average over the sample.

        A task waits only while its request is in flight. aqu-sz (field 11) sums the times
        of completed requests only, so a request that never finishes adds nothing to it;
        the busy share times the requests in flight at both ends (at least one) does count
        it. The larger of the two.
        """
        in_flight = max(1, min(self.in_flight_before, self.in_flight))
        return max(self.aqu_sz, self.held * in_flight)


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
                in_flight_before=a.in_flight,
            )
        )
    return sorted(out, key=lambda d: d.name)


def read_block_devices(ctx: Context) -> set[str] | None:
    """Names under /sys/block (whole disks); None when sysfs cannot be listed."""
    try:
        return set(os.listdir(ctx.path("/sys/block")))
    except OSError:
        return None


def read_diskstats(ctx: Context) -> str:
    """The text of /proc/diskstats (raises OSError like open())."""
    return ctx.read_text("/proc/diskstats", DISKSTATS_LIMIT)


@dataclass(frozen=True)
class DiskActivity:
    """What the disks did over one sampling window: could anyone have waited on them?"""

    interval_s: float
    devices: tuple[DeviceIO, ...]

    @property
    def counted(self) -> tuple[DeviceIO, ...]:
        """The devices whose requests are their own (dm/md re-count the disks below them)."""
        own = tuple(d for d in self.devices if not _STACKED_DEV.match(d.name))
        return own or self.devices

    @property
    def queued(self) -> float:
        """Requests in flight on average over the window, summed over the disks (aqu-sz)."""
        return sum(d.aqu_sz for d in self.counted)

    @property
    def waiting_bound(self) -> float:
        """At most this many tasks waited on the disks on average over the window (summed)."""
        return sum(d.waiting_bound for d in self.counted)

    @property
    def busy_pct(self) -> float:
        """At most this much of the window had a request in flight: %util summed, up to 100.

        A stuck device (requests in flight at both ends, none completed) counts as 100%.
        """
        return min(100.0, 100.0 * sum(d.held for d in self.counted))

    @property
    def in_flight(self) -> int:
        """Requests in flight when the window closed."""
        return sum(d.in_flight for d in self.counted)

    @property
    def in_flight_before(self) -> int:
        """Requests in flight when the window opened."""
        return sum(d.in_flight_before for d in self.counted)

    @property
    def stuck(self) -> tuple[DeviceIO, ...]:
        """Devices with requests in flight all window and none completed."""
        return tuple(d for d in self.counted if d.stuck)

    @property
    def busiest(self) -> DeviceIO | None:
        """The device with the highest %util (then the longest queue)."""
        return max(self.devices, key=lambda d: (d.util_pct, d.aqu_sz), default=None)

    def describe(self) -> str:
        """'on average 0.00 requests in flight over 0.50 s; busiest vda: 0% util, ...'."""
        text = f"on average {self.queued:.2f} requests in flight over {self.interval_s:.2f} s"
        busiest = self.busiest
        if busiest is None:
            return text + "; no disks"
        text = (
            f"{text}; busiest {busiest.name}: {busiest.util_pct:.0f}% util, "
            f"await {busiest.await_ms:.1f} ms; {self.in_flight_before} in flight at the start "
            f"and {self.in_flight} at the end"
        )
        if stuck := self.stuck:
            names = ", ".join(f"{d.name} ({d.in_flight} requests)" for d in stuck[:3])
            text += f"; nothing completed on {names}: stalled"
        return text

    def to_dict(self) -> dict[str, object]:
        """The window's figures for a check's data."""
        busiest = self.busiest
        return {
            "interval_s": round(self.interval_s, 3),
            "requests_in_flight_avg": round(self.queued, 3),
            "busy_pct": round(self.busy_pct, 1),
            "in_flight_at_start": self.in_flight_before,
            "in_flight_at_end": self.in_flight,
            "waiting_bound": round(self.waiting_bound, 3),
            "stuck": [d.name for d in self.stuck],
            "busiest": busiest.name if busiest else None,
            "busiest_util_pct": round(busiest.util_pct, 1) if busiest else None,
            "busiest_await_ms": round(busiest.await_ms, 2) if busiest else None,
        }


def disk_activity(
    before: str, after: str, interval_s: float, block_devices: set[str] | None = None
) -> DiskActivity:
    """The disks' activity between two /proc/diskstats texts read `interval_s` apart."""
    devices = compute_io(parse_diskstats(before), parse_diskstats(after), interval_s, block_devices)
    return DiskActivity(interval_s, tuple(devices))
