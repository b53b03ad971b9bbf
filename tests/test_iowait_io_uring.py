"""A real idle io_uring program on this machine: its waits are not disk waits.

Since Linux 6.1.39/6.5 a thread asleep in io_uring_enter with a request pending counts as
iowait and as I/O pressure. An idle Iggy broker has exactly that: one receive pending per
shard, on sockets nobody writes to. This test starts such a program (Python ctypes, no
compiler: io_uring_setup, the rings mmapped, one IORING_OP_RECV per thread on a
socketpair that never gets data, io_uring_enter waiting for one completion), checks that
this kernel does count the wait as iowait, then takes a snapshot with the real CLI and
expects no iowait or I/O pressure finding that the waiter's time could have made: on a
shared machine the disks may be really busy meanwhile (writeback), and a finding they
account for, as witnessed by the test's own /proc/diskstats and /proc/pressure/io
readings, is the check doing its job.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.cpu import IOWAIT, PSI_BANDS, cpu_pressure, cpu_usage
from snapshot_agent.core.results import Severity

from .conftest import REPO, run_cli

SYS_IO_URING_SETUP = 425  # the same on every architecture but alpha
SYS_IO_URING_ENTER = 426
IORING_OP_RECV = 27
IORING_ENTER_GETEVENTS = 1
IORING_OFF_SQES = 0x10000000
PARAMS_SIZE = 120  # struct io_uring_params
SQE_SIZE = 64
WAITERS_MAX = 8  # one pinned waiter per CPU, like one shard per core, up to this many
LOOK_S = 8.0  # how long to look for idle time on a machine busy with other work
IDLE_TICKS_NEEDED = 50  # /proc/stat ticks (half a CPU-second) of not-busy time to judge by
COUNTER_SLACK_MS = 50  # /proc/diskstats times move in jiffies: what two readings may differ by


# -- the program: runs in a child (`python -c "...; wait_in_io_uring(n)"`) --------------


def _syscall(number: int, *args: Any) -> int:
    """A raw syscall; -errno on failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(number), *args)
    return -ctypes.get_errno() if ret < 0 else ret


def _ring_with_pending_recv(sock: socket.socket, buf: ctypes.Array[ctypes.c_char]) -> int:
    """Set up an io_uring and queue one receive on `sock`; the ring fd, or -errno."""
    params = ctypes.create_string_buffer(PARAMS_SIZE)
    fd = _syscall(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
    if fd < 0:
        return fd
    sq_entries = struct.unpack_from("I", params, 0)[0]
    _head, tail_off, mask_off, _entries, _flags, _dropped, array_off = struct.unpack_from(
        "7I", params, 40
    )
    prot, shared = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED
    ring = mmap.mmap(fd, array_off + sq_entries * 4, shared, prot, offset=0)
    sqes = mmap.mmap(fd, sq_entries * SQE_SIZE, shared, prot, offset=IORING_OFF_SQES)
    # opcode, flags, ioprio, fd, off, addr, len, msg_flags, user_data; the rest zero.
    sqe = struct.pack(
        "<BBHiQQIIQ", IORING_OP_RECV, 0, 0, sock.fileno(), 0, ctypes.addressof(buf), 64, 0, 1
    )
    tail = struct.unpack_from("<I", ring, tail_off)[0]
    slot = tail & struct.unpack_from("<I", ring, mask_off)[0]
    sqes[slot * SQE_SIZE : (slot + 1) * SQE_SIZE] = sqe.ljust(SQE_SIZE, b"\0")
    struct.pack_into("<I", ring, array_off + 4 * slot, slot)
    struct.pack_into("<I", ring, tail_off, tail + 1)
    _KEEP.extend((ring, sqes))
    return fd


_KEEP: list[Any] = []  # mappings, sockets and buffers that must outlive the waits


def _wait(cpu: int, started: threading.Barrier) -> None:
    """One shard: pinned to `cpu`, asleep in io_uring_enter until a receive that never comes."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})
    mine, peer = socket.socketpair()  # peer stays open: the receive neither completes nor fails
    buf = ctypes.create_string_buffer(64)
    _KEEP.extend((mine, peer, buf))
    fd = _ring_with_pending_recv(mine, buf)
    if fd < 0:
        print(f"unavailable: io_uring_setup failed: {os.strerror(-fd)}", flush=True)
        os._exit(3)
    started.wait()
    one, getevents = ctypes.c_uint(1), ctypes.c_uint(IORING_ENTER_GETEVENTS)
    _syscall(SYS_IO_URING_ENTER, ctypes.c_uint(fd), one, one, getevents, None, ctypes.c_size_t(0))


def wait_in_io_uring(cpus: list[int]) -> None:
    """Start one waiting thread per CPU, say so, and sleep until killed."""
    started = threading.Barrier(len(cpus) + 1)
    for cpu in cpus:
        threading.Thread(target=_wait, args=(cpu, started), daemon=True).start()
    started.wait()
    print("waiting", flush=True)
    while True:
        time.sleep(3600)


# -- the test ------------------------------------------------------------------------------


def io_uring_waiting_threads(pid: int) -> int:
    """Threads of `pid` asleep in io_uring_enter, as /proc tells (wchan, else the syscall)."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        with contextlib.suppress(OSError):
            wchan = Path(f"{base}/wchan").read_text().strip()
            if wchan.startswith("io_cqring_wait"):
                count += 1
                continue
            if wchan in ("", "0"):
                count += Path(f"{base}/syscall").read_text().startswith("426 ")
    return count


def idle_and_iowait(cpus: list[int]) -> tuple[int, int]:
    """(idle, iowait) ticks so far of the given CPUs (/proc/stat `cpuN` lines)."""
    idle = iowait = 0
    names = {f"cpu{n}" for n in cpus}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in names:
            idle, iowait = idle + int(fields[4]), iowait + int(fields[5])
    return idle, iowait


def iowait_share_while_waiting(cpus: list[int]) -> float | None:
    """Of the time the waiters' CPUs were not busy, the share counted as iowait.

    None when those CPUs were busy with other work the whole time (no idle time to
    tell idle from iowait); looks for up to LOOK_S.
    """
    start = idle_and_iowait(cpus)
    deadline = time.monotonic() + LOOK_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        idle, iowait = (now - then for now, then in zip(idle_and_iowait(cpus), start, strict=True))
        if idle + iowait >= IDLE_TICKS_NEEDED:
            return max(0, iowait) / (max(0, idle) + max(0, iowait))
    return None


@dataclass(frozen=True)
class IoReading:
    """The test's own witness of real I/O at one moment (never the agent's code)."""

    at: float  # time.monotonic()
    psi: dict[str, tuple[float, float]]  # /proc/pressure/io kind -> (avg10, avg60)
    #: Whole disks (dm/md left out: they count their disks' requests again) ->
    #: (ms with a request in flight, ms summed over the requests in flight).
    disks: dict[str, tuple[int, int]]


def read_io() -> IoReading:
    """/proc/pressure/io's averages and the disks' busy counters now."""
    psi: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/pressure/io").read_text().splitlines():
            kind, *pairs = line.split()
            values = dict(pair.partition("=")[::2] for pair in pairs)
            psi[kind] = (float(values["avg10"]), float(values["avg60"]))
    whole = {n for n in os.listdir("/sys/block") if not n.startswith(("dm-", "md"))}
    disks: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 14 and fields[2] in whole:
            disks[fields[2]] = (int(fields[12]), int(fields[13]))
    return IoReading(time.monotonic(), psi, disks)


@dataclass(frozen=True)
class RealIo:
    """What really happened on the disks between two readings."""

    before: IoReading
    seconds: float
    busy_ms: int  # summed over the disks: ms with a request in flight
    queued_ms: int  # summed over the requests: ms each was in flight

    @classmethod
    def between(cls, before: IoReading, after: IoReading) -> RealIo:
        deltas = [
            (after.disks[n][0] - b[0], after.disks[n][1] - b[1])
            for n, b in before.disks.items()
            if n in after.disks
        ]
        busy = sum(max(0, d[0]) for d in deltas)
        return cls(before, after.at - before.at, busy, sum(max(0, d[1]) for d in deltas))


def io_uring_waiters(io_uring: dict[str, Any] | None) -> dict[int, int]:
    """pid -> threads asleep in io_uring_enter, as a check's data reports them."""
    return {p["pid"]: p["threads"] for p in (io_uring or {}).get("processes", [])}


def assert_iowait_is_the_disks(
    usage: dict[str, Any], pid: int, cpus: list[int], io: RealIo
) -> None:
    """cpu.usage's iowait findings: the waiter's time discounted, what is left the disks'.

    The waiter seen and left out; the finding graded on the share the disks (and threads
    blocked in D state, never the waiter) can have kept CPUs waiting; and that much disk
    waiting witnessed by /proc/diskstats over the whole test, which contains the window.
    """
    data, found = usage["data"], usage["findings"]
    assert io_uring_waiters(data["io_uring"]).get(pid) == len(cpus), (
        f"the io_uring waiter's time was taken for disk waits: {usage['summary']}"
    )
    disks, blocked = data["disks"], data["io_uring"]["blocked_threads"]
    assert disks is not None, usage["summary"]  # else iowait would be taken at its word
    assert pid not in {t["pid"] for t in blocked}, blocked
    judged, iowait = data["iowait_judged_pct"], data["overall"]["iowait_pct"]
    n = len(data["per_core"]) or 1
    bound = 100.0 * min(disks["waiting_bound"] + len(blocked), n) / n
    assert judged <= min(iowait, bound) + 0.1, (judged, iowait, disks, blocked)
    grade = IOWAIT.grade(judged, cpu_usage.thresholds)
    assert grade is not None and {f["severity"] for f in found} == {grade.value}, found
    if not blocked and not disks["stuck"]:
        claimed_ms = judged / 100 * n * data["interval_s"] * 1000
        seen_ms = max(io.busy_ms, io.queued_ms)
        assert seen_ms + COUNTER_SLACK_MS >= claimed_ms, (
            f"cpu.usage judged {judged}% disk waits ({claimed_ms:.0f} task-ms), the disks "
            f"show {seen_ms} ms over the whole {io.seconds:.1f} s: {found}"
        )


def assert_io_pressure_is_real(
    pressure: dict[str, Any], found: list[Any], pid: int, cpus: list[int], io: RealIo
) -> None:
    """cpu.pressure's io findings: the waiter's stalls discounted, what is left real.

    Per io line that could make a finding: stalls the disks account for over the window,
    witnessed by /proc/diskstats over the whole test; or averages beyond the waiter's
    share, which only stalls from before the window make: the machine stalling already
    before the waiter started (/proc/pressure/io then) or the disks busy since.
    """
    data, thresholds = pressure["data"], cpu_pressure.thresholds
    window = data["io_window"]
    assert window is not None and io_uring_waiters(window["io_uring"]).get(pid) == len(cpus), (
        f"the io_uring waiter's stalls were taken for disk stalls: {pressure['summary']}"
    )
    blocked = window["io_uring"]["blocked_threads"]
    assert pid not in {t["pid"] for t in blocked}, blocked
    disks = window["disks"]
    averages = {
        line["kind"]: max(line["avg10"], line["avg60"])
        for line in data["pressure"]
        if line["resource"] == "io"
    }
    real = 0
    for kind, judged in window["judged_pct"].items():
        band = PSI_BANDS["io", kind]
        warn = band.limit(Severity.WARN, thresholds)
        if band.grade(judged, thresholds):  # graded on what the disks account for
            real += 1
            if blocked or (disks and disks["stuck"]):
                continue
            assert disks is not None and judged <= disks["busy_pct"] + 0.1, (kind, window)
            claimed_ms = judged / 100 * window["interval_s"] * 1000
            assert io.busy_ms + COUNTER_SLACK_MS >= claimed_ms, (
                f"io {kind} judged {judged}% stalled on the disks ({claimed_ms:.0f} ms), the "
                f"disks show {io.busy_ms} ms busy over the whole {io.seconds:.1f} s: {found}"
            )
        elif band.grade(averages.get(kind, 0.0) - window["io_uring_pct"][kind], thresholds):
            real += 1
            before = max(io.before.psi.get(kind, (0.0, 0.0)))
            assert before >= warn or io.busy_ms >= warn / 100 * 10_000, (
                f"io {kind} averages {averages[kind]}% less the waiter's "
                f"{window['io_uring_pct'][kind]}% left a finding, but before the waiter "
                f"started they were {before}% and since then the disks were busy only "
                f"{io.busy_ms} ms: {found}"
            )
    assert len(found) <= real, (found, window)


@pytest.fixture
def io_before_waiter() -> IoReading:
    """Real I/O as it stood before the waiter started (its waits count as I/O stalls)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("io_uring is Linux only")
    return read_io()


@pytest.fixture
def idle_io_uring_program(io_before_waiter: IoReading) -> Iterator[tuple[int, list[int]]]:
    """A program whose threads (one per CPU) wait in io_uring_enter; (pid, their CPUs)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("io_uring is Linux only")
    cpus = sorted(os.sched_getaffinity(0))[:WAITERS_MAX]
    code = f"from tests.test_iowait_io_uring import wait_in_io_uring; wait_in_io_uring({cpus})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line.startswith("unavailable"):
            pytest.skip(f"io_uring is not available here ({line})")
        assert line == "waiting", f"the io_uring program said {line!r}"
        deadline = time.monotonic() + 5
        while io_uring_waiting_threads(proc.pid) < len(cpus):
            assert time.monotonic() < deadline, "the io_uring program never waited"
            time.sleep(0.05)
        yield proc.pid, cpus
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_idle_io_uring_waiter_shows_no_iowait_finding(
    io_before_waiter: IoReading, idle_io_uring_program: tuple[int, list[int]], tmp_path: Path
) -> None:
    pid, cpus = idle_io_uring_program
    # This kernel must count the wait as iowait, or there is nothing to discount.
    share = iowait_share_while_waiting(cpus)
    if share is None:
        pytest.skip(
            f"CPUs {cpus} were busy with other work for {LOOK_S:g} s: no idle time to see iowait"
        )
    if share < 0.5:
        pytest.skip(
            f"only {share:.0%} of the idle time of CPUs {cpus} was iowait while a thread on "
            "each waited in io_uring_enter: this kernel does not count io_uring waits as "
            "iowait (before 6.1.39/6.5, or the waits opt out)"
        )

    proc = run_cli("run", "--only", "cpu.usage,cpu.pressure", "-o", tmp_path, "--json")
    io = RealIo.between(io_before_waiter, read_io())
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(json.loads(proc.stdout)["path"]) as archive:
        report = json.loads(archive.read("report.json"))
    checks = {c["id"]: c for c in report["checks"]}
    usage, pressure = checks["cpu.usage"], checks["cpu.pressure"]

    iowait_findings = [
        f
        for f in usage["findings"]
        if f["severity"] != "info" and ("iowait" in f["message"] or "disk" in f["message"])
    ]
    if iowait_findings:  # tolerated only as real disk waits
        assert_iowait_is_the_disks({**usage, "findings": iowait_findings}, pid, cpus, io)
    io_pressure = [
        f
        for f in pressure["findings"]
        if f["severity"] != "info" and f["subject"] == "/proc/pressure/io"
    ]
    if io_pressure:  # tolerated only as real I/O stalls
        assert_io_pressure_is_real(pressure, io_pressure, pid, cpus, io)

    # When the waits reached the iowait threshold, the snapshot found them and says why
    # it discounted them (on many CPUs they may stay under it: nothing to discount), or,
    # when the disks really kept the CPUs waiting as long, that iowait includes them.
    iowait = usage["data"]["overall"]["iowait_pct"]
    if iowait < IOWAIT.limit(Severity.WARN, cpu_usage.thresholds):
        return
    assert io_uring_waiters(usage["data"]["io_uring"]).get(pid) == len(cpus), usage["data"]
    judged = usage["data"]["iowait_judged_pct"]
    assert judged is not None, usage["summary"]  # the disks were read to judge by
    said = f"discounted to {judged:g}%" if judged < iowait else "includes io_uring waits"
    notes = [f["message"] for f in usage["findings"] if f["severity"] == "info"]
    assert any(f"iowait {iowait:g}% {said}" in n and "io_uring_enter" in n for n in notes)
