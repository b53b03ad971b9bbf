"""process.limits, .fds and .zombies against `prlimit`, `ps` and /proc, on our own processes."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .live import Mismatch, agree, between, need, run_check, settle, tool

#: The limits the fake broker starts with (soft, hard), as prlimit names them.
BROKER_LIMITS = {
    "NOFILE": (4321, 8765),
    "MEMLOCK": (65536, 131072),
    "NPROC": (5000, 6000),
}
#: The check's row names -> prlimit's resource names.
LIMIT_NAMES = {"Max open files": "NOFILE", "Max locked memory": "MEMLOCK", "Max processes": "NPROC"}


def _broker_limits() -> None:
    """In the child before exec: the limits above."""
    for name, value in BROKER_LIMITS.items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), value)


@pytest.fixture
def fake_broker() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose argv[0] is iggy-server (sleep underneath), with known limits."""
    sleep = need("sleep")
    proc = subprocess.Popen(
        ["iggy-server", "30"], executable=sleep, preexec_fn=_broker_limits, close_fds=True
    )
    try:
        deadline = time.monotonic() + 5
        # Until exec, /proc/<pid>/cmdline is still python's.
        while time.monotonic() < deadline:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            if cmdline.startswith(b"iggy-server\0"):
                break
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def prlimit(pid: int) -> dict[str, tuple[str, str]]:
    """`prlimit --pid` as {'NOFILE': ('4321', '8765')}; 'unlimited' stays a word."""
    out = tool("prlimit", "--pid", str(pid), "--raw", "--noheadings", "-o", "RESOURCE,SOFT,HARD")
    return {name: (soft, hard) for name, soft, hard in (line.split() for line in out.splitlines())}


def test_process_limits_match_prlimit(fake_broker: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """The broker's nofile, memlock and nproc limits as `prlimit --pid` prints them."""
    data = run_check("process.limits", tmp_path).data
    pid = data["pid"]
    brokers = [
        int(p)
        for p, _, args in (
            line.strip().partition(" ") for line in tool("ps", "-eo", "pid=,args=").splitlines()
        )
        if args.split(" ", 1)[0].rsplit("/", 1)[-1] == "iggy-server"
    ]
    if pid != fake_broker.pid and brokers != [fake_broker.pid]:
        pytest.skip(f"another iggy-server runs here (pids {brokers}); the check chose {pid}")
    theirs = prlimit(pid)
    out = []
    rows = {row["limit"]: row for row in data["limits"]}
    for name, resource_name in LIMIT_NAMES.items():
        if name not in rows:
            out.append(Mismatch(f"limits[{name}]", None, theirs.get(resource_name), "prlimit"))
            continue
        ours = (str(rows[name]["soft"]), str(rows[name]["hard"]))
        if ours != theirs[resource_name]:
            out.append(Mismatch(f"limits[{name}]", ours, theirs[resource_name], "prlimit --pid"))
    agree(out, "process.limits")
    assert pid == fake_broker.pid, f"found {pid}, not the only iggy-server {fake_broker.pid}"


def open_fds(pid: int) -> int:
    """How many fds /proc/<pid>/fd lists right now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_process_fds_match_proc_and_prlimit(
    fake_broker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Open fds and nofile limits of broker and agent, and the system's file handles.

    The oracles: /proc/<pid>/fd, `prlimit --pid` and `sysctl fs.file-nr`.
    """

    def compare() -> list[Mismatch]:
        handles_before = int(tool("sysctl", "-n", "fs.file-nr").split()[0])
        data = run_check("process.fds", tmp_path).data
        handles_after = int(tool("sysctl", "-n", "fs.file-nr").split()[0])
        out = []
        rows = {row["pid"]: row for row in data["processes"]}
        for pid, slack in ((fake_broker.pid, 0), (os.getpid(), 3)):
            row = rows.get(pid)
            if row is None:
                out.append(Mismatch(f"processes[{pid}]", None, "running", "own process"))
                continue
            if not between(row["open_fds"], open_fds(pid), open_fds(pid), slack):
                out.append(
                    Mismatch(
                        f"processes[{pid}].open_fds",
                        row["open_fds"],
                        open_fds(pid),
                        "ls /proc/PID/fd",
                    )
                )
            soft = prlimit(pid)["NOFILE"][0]
            if str(row["soft_limit"]) != soft:
                out.append(
                    Mismatch(f"processes[{pid}].soft_limit", row["soft_limit"], soft, "prlimit")
                )
        slack = max(200, 0.1 * handles_after)
        if not between(data["system_allocated"], handles_before, handles_after, slack):
            value = (handles_before, handles_after)
            out.append(Mismatch("system_allocated", data["system_allocated"], value, "fs.file-nr"))
        file_max = int(tool("sysctl", "-n", "fs.file-max"))
        if data["system_max"] != file_max:
            out.append(Mismatch("system_max", data["system_max"], file_max, "sysctl fs.file-max"))
        return out

    agree(settle(compare), "process.fds")


def ps_zombies() -> list[tuple[int, int]]:
    """(pid, ppid) of every zombie `ps` lists."""
    out = []
    for line in tool("ps", "-eo", "pid=,ppid=,stat=").splitlines():
        pid, ppid, stat = line.split()
        if stat.startswith("Z"):
            out.append((int(pid), int(ppid)))
    return out


@pytest.fixture
def zombie_parent() -> Iterator[int]:
    """A child of ours that never reaps its own finished child: one zombie under it."""
    need("sh")
    shell = shutil.which("sh")
    proc = subprocess.Popen([shell, "-c", "sleep 0 & exec sleep 30"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(p == proc.pid for _, p in ps_zombies()):
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_process_zombies_match_ps_and_count_our_zombie(zombie_parent: int, tmp_path: Path) -> None:
    """Zombies as `ps` counts them (the agent's own children aside), ours among them."""

    def compare() -> list[Mismatch]:
        before = [z for z in ps_zombies() if z[1] != os.getpid()]
        data = run_check("process.zombies", tmp_path).data
        after = [z for z in ps_zombies() if z[1] != os.getpid()]
        out = []
        if not between(data["zombies"], len(before), len(after), slack=1):
            out.append(Mismatch("zombies", data["zombies"], (len(before), len(after)), "ps"))
        parents = {row["parent_pid"]: row["zombies"] for row in data["parents"]}
        if parents.get(zombie_parent) != 1:
            out.append(Mismatch(f"parents[{zombie_parent}]", parents.get(zombie_parent), 1, "own"))
        return out

    agree(settle(compare), "process.zombies")
