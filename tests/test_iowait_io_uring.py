"""A real idle io_uring program on this machine: its waits are not disk waits.

Since Linux 6.1.39/6.5 a thread asleep in io_uring_enter with a request pending counts as
iowait and as I/O pressure. An idle Iggy broker has exactly that: one receive pending per
shard, on sockets nobody writes to. This test starts such a program (Python ctypes, no
compiler: io_uring_setup, the rings mmapped, one IORING_OP_RECV per thread on a
socketpair that never gets data, io_uring_enter waiting for one completion), checks that
this kernel does count the wait as iowait, then takes a snapshot with the real CLI and
expects no iowait or I/O pressure finding.
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
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.cpu import IOWAIT, cpu_usage
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


@pytest.fixture
def idle_io_uring_program() -> Iterator[tuple[int, list[int]]]:
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
    idle_io_uring_program: tuple[int, list[int]], tmp_path: Path
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
    assert not iowait_findings, usage["summary"]
    io_pressure = [
        f
        for f in pressure["findings"]
        if f["severity"] != "info" and f["subject"] == "/proc/pressure/io"
    ]
    assert not io_pressure, pressure["summary"]

    # When the waits reached the iowait threshold, the snapshot found them and says why
    # it discounted them (on many CPUs they may stay under it: nothing to discount).
    iowait = usage["data"]["overall"]["iowait_pct"]
    if iowait < IOWAIT.limit(Severity.WARN, cpu_usage.thresholds):
        return
    waiting = {p["pid"]: p["threads"] for p in usage["data"]["io_uring"]["processes"]}
    assert waiting.get(pid) == len(cpus), usage["data"]["io_uring"]
    notes = [f["message"] for f in usage["findings"] if f["severity"] == "info"]
    assert any(f"iowait {iowait:g}% discounted" in n and "io_uring_enter" in n for n in notes)
