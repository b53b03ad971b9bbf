"""system.*, kernel.*, cpu.* and time.* checks against uname, /proc, sysctl, getconf, date.

Identity, kernel, io_uring settings, load, PSI, CPU usage, time zone and clock state.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from pathlib import Path

import pytest

from .live import (
    Mismatch,
    agree,
    between,
    finding,
    near,
    need,
    read,
    run_check,
    settle,
    tool,
    unset_tz_env,
)

#: The inode of the kernel's initial PID namespace (PROC_PID_INIT_INO).
INIT_PID_NAMESPACE = 0xEFFFFFFC


def os_release(field: str) -> str:
    """One os-release(5) field as a shell sources it (not our parser)."""
    path = "/etc/os-release" if Path("/etc/os-release").exists() else "/usr/lib/os-release"
    return tool("sh", "-c", f'. "{path}" && printf %s "${field}"').strip()


def uptime() -> float:
    """Seconds since boot from /proc/uptime, read directly."""
    return float(read("/proc/uptime").split()[0])


def test_system_info_matches_uname_os_release_and_uptime(tmp_path: Path) -> None:
    """Kernel, build, hostname as `uname` says; OS as os-release says; uptime from /proc."""
    before = uptime()
    data = run_check("system.info", tmp_path).data
    after = uptime()
    out = []
    for key, flag in (("kernel", "-r"), ("kernel_build", "-v"), ("hostname", "-n")):
        theirs = tool("uname", flag).strip()
        if data.get(key) != theirs:
            out.append(Mismatch(key, data.get(key), theirs, f"uname {flag}"))
    pretty = os_release("PRETTY_NAME") or os_release("NAME")
    for key, theirs in (
        ("os", pretty),
        ("os_id", os_release("ID")),
        ("os_version", os_release("VERSION_ID")),
    ):
        if theirs and data.get(key) != theirs:
            out.append(Mismatch(key, data.get(key), theirs, "sh -c '. /etc/os-release'"))
    if not between(data["uptime_s"], before, after, slack=0.01):
        out.append(Mismatch("uptime_s", data["uptime_s"], (before, after), "/proc/uptime"))
    agree(out, "system.info")


def pid_namespace() -> tuple[str, int]:
    """Whose PID namespace could be read ('1', else 'self') and its inode.

    Reading PID 1's needs ptrace access to it; this process's is always readable, and when
    it is the initial namespace, so is PID 1's (PID 1 is the init of our namespace).
    """
    for who in ("1", "self"):
        try:
            link = os.readlink(f"/proc/{who}/ns/pid")
        except OSError:
            continue
        match = re.fullmatch(r"pid:\[(\d+)\]", link)
        if match:
            return who, int(match.group(1))
    pytest.skip("cannot read /proc/1/ns/pid or /proc/self/ns/pid")


def test_system_info_placement_matches_the_kernel(tmp_path: Path) -> None:
    """A hypervisor CPU flag means a VM; the initial PID namespace means no container.

    The kernel numbers its initial PID namespace 0xEFFFFFFC.
    """
    data = run_check("system.info", tmp_path).data
    out = []
    hypervisor = " hypervisor" in read("/proc/cpuinfo")
    if hypervisor and data["virtualization"] == "none":
        out.append(Mismatch("virtualization", "none", "a VM", "/proc/cpuinfo flag hypervisor"))
    agree(out, "system.info virtualization")
    who, inode = pid_namespace()
    container = data["container"]
    initial = inode == INIT_PID_NAMESPACE
    finding(
        [Mismatch("container", container, "none", f"readlink /proc/{who}/ns/pid: {inode}")]
        if initial and container != "none"
        else [],
        "FINDING system.info container: PID 1 is in the initial PID namespace (not a "
        "container) but the check reports a container, from a marker file such as "
        "/.dockerenv (issue 8 case 3)",
    )
    if who == "1":
        assert initial or container != "none", f"PID 1 is in PID namespace {inode}, not a host's"


def test_kernel_version_matches_uname(tmp_path: Path) -> None:
    """Release and build as `uname -r` / `uname -v` print them."""
    data = run_check("kernel.version", tmp_path).data
    release = tool("uname", "-r").strip()
    out = []
    if data["release"] != release:
        out.append(Mismatch("release", data["release"], release, "uname -r"))
    numbers = re.match(r"\d+(\.\d+)*", release)
    if numbers and not numbers.group(0).startswith(str(data["version"])):
        out.append(Mismatch("version", data["version"], numbers.group(0), "uname -r"))
    build = tool("uname", "-v").strip()
    if data.get("build", build) != build:
        out.append(Mismatch("build", data.get("build"), build, "uname -v"))
    agree(out, "kernel.version")


def test_kernel_io_uring_matches_sysctl_and_kernel_config(tmp_path: Path) -> None:
    """io_uring sysctls as `sysctl -n` prints them; CONFIG_IO_URING as /proc/config.gz says."""
    data = run_check("kernel.io_uring", tmp_path).data
    out = []
    for key in ("io_uring_disabled", "io_uring_group"):
        if not Path(f"/proc/sys/kernel/{key}").exists() or key not in data:
            continue
        theirs = tool("sysctl", "-n", f"kernel.{key}").strip()
        if str(data[key]) != theirs:
            out.append(Mismatch(key, data[key], theirs, f"sysctl -n kernel.{key}"))
    if data.get("config_source") == "/proc/config.gz":
        config = tool("zcat", "/proc/config.gz")
        m = re.search(r"^CONFIG_IO_URING=(\w+)$", config, re.MULTILINE)
        theirs = m.group(1) if m else "n"
        if data.get("config_io_uring") != theirs:
            out.append(Mismatch("config_io_uring", data.get("config_io_uring"), theirs, "zcat"))
    agree(out, "kernel.io_uring")


def loadavg() -> tuple[list[float], int]:
    """The three load averages and the thread count, from /proc/loadavg directly."""
    fields = read("/proc/loadavg").split()
    return [float(f) for f in fields[:3]], int(fields[3].partition("/")[2])


def test_cpu_load_matches_loadavg_and_getconf(tmp_path: Path) -> None:
    """Load averages as /proc/loadavg says (read before and after); cores as `getconf`."""

    def compare() -> list[Mismatch]:
        (loads_before, threads_before) = loadavg()
        data = run_check("cpu.load", tmp_path).data
        (loads_after, threads_after) = loadavg()
        out = []
        for i, key in enumerate(("load_1m", "load_5m", "load_15m")):
            lo, hi = loads_before[i], loads_after[i]
            if not between(data[key], lo, hi, slack=0.006):
                out.append(Mismatch(key, data[key], (lo, hi), "/proc/loadavg"))
        slack = max(50, 0.2 * threads_after)
        if not between(data["threads"], threads_before, threads_after, slack=slack):
            out.append(Mismatch("threads", data["threads"], threads_after, "/proc/loadavg"))
        online = int(tool("getconf", "_NPROCESSORS_ONLN"))
        if data["cores"] != online:
            out.append(Mismatch("cores", data["cores"], online, "getconf _NPROCESSORS_ONLN"))
        usable = int(tool("nproc"))
        if usable > data["cores"]:
            out.append(Mismatch("cores", data["cores"], f">= {usable}", "nproc"))
        return out

    agree(settle(compare), "cpu.load")


def pressure() -> dict[tuple[str, str], dict[str, float]]:
    """/proc/pressure/* read directly: (resource, kind) -> {avg10, avg60, avg300, total}."""
    out = {}
    for resource in ("cpu", "io", "memory"):
        path = Path(f"/proc/pressure/{resource}")
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            kind, *pairs = line.split()
            out[(resource, kind)] = {k: float(v) for k, v in (p.split("=") for p in pairs)}
    if not out:
        pytest.skip("no /proc/pressure (kernel without PSI, or psi=0)")
    return out


def test_cpu_pressure_matches_proc_pressure(tmp_path: Path) -> None:
    """PSI averages and totals as /proc/pressure says (read before and after)."""

    def compare() -> list[Mismatch]:
        before = pressure()
        data = run_check("cpu.pressure", tmp_path).data
        after = pressure()
        out = []
        for row in data["pressure"]:
            key = (row["resource"], row["kind"])
            if key not in before or key not in after:
                continue
            for name in ("avg10", "avg60", "avg300"):
                lo, hi = before[key][name], after[key][name]
                if not between(row[name], lo, hi, slack=0.006):
                    out.append(Mismatch(f"{key}.{name}", row[name], (lo, hi), "/proc/pressure"))
            lo, hi = before[key]["total"], after[key]["total"]
            if "total_us" in row and not between(row["total_us"], lo, hi):
                out.append(Mismatch(f"{key}.total_us", row["total_us"], (lo, hi), "/proc/pressure"))
        return out

    agree(settle(compare), "cpu.pressure")


def date_at(when: int, tz: str | None) -> str:
    """`date -d @when +'%Z %z'` in the node's zone (TZ unset) or in `tz`."""
    env = unset_tz_env() | ({"TZ": tz} if tz else {})
    return tool("date", "-d", f"@{when}", "+%Z %z", env=env).strip()


def test_time_timezone_matches_localtime_and_date(tmp_path: Path) -> None:
    """The zone gives the node's local time (`date`, TZ unset) in winter and summer.

    is_utc only when the offset is zero all year.
    """
    need("date")
    data = run_check("time.timezone", tmp_path).data
    zone = data["zone"]
    out = []
    local = Path("/etc/localtime")
    if local.is_symlink():
        target = tool("readlink", "/etc/localtime").strip()
        name = target.partition("zoneinfo/")[2].removeprefix("posix/").removeprefix("right/")
        if name and zone != name:
            out.append(Mismatch("zone", zone, name, "readlink /etc/localtime"))
    now = int(time.time())
    year = time.gmtime(now).tm_year
    instants = [now, int(time.mktime((year, 1, 15, 12, 0, 0, 0, 0, 0)))]
    instants.append(instants[1] + 182 * 86400)  # mid-July
    for when in instants:
        theirs = date_at(when, None)
        ours = date_at(when, zone if "/" in zone or zone.isalpha() else None)
        if ours != theirs:
            out.append(Mismatch(f"zone at @{when}", f"{zone}: {ours}", theirs, "date +'%Z %z'"))
    offsets = {date_at(when, None).split()[-1] for when in instants}
    utc_like = offsets == {"+0000"} and all(
        date_at(when, None).split()[0] in ("UTC", "UCT") for when in instants
    )
    if "is_utc" in data and data["is_utc"] and offsets != {"+0000"}:
        out.append(Mismatch("is_utc", True, sorted(offsets), "date +%z"))
    if "is_utc" in data and utc_like and not data["is_utc"]:
        out.append(Mismatch("is_utc", False, "UTC all year", "date +'%Z %z'"))
    agree(out, "time.timezone")


class Timex(ctypes.Structure):
    """struct timex (linux/timex.h), for reading the kernel clock's state."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


STA_UNSYNC = 0x0040
TIME_STATES = {
    0: "TIME_OK",
    1: "TIME_INS",
    2: "TIME_DEL",
    3: "TIME_OOP",
    4: "TIME_WAIT",
    5: "TIME_ERROR",
}
TIME_DAEMONS = ("chronyd", "ntpd", "systemd-timesyncd", "ptp4l", "phc2sys", "timemaster")


def adjtimex() -> tuple[str, Timex]:
    """The kernel clock's state from adjtimex(2) with no modes set (a read)."""
    tx = Timex()
    libc = ctypes.CDLL(None, use_errno=True)
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        pytest.skip(f"adjtimex failed: {os.strerror(ctypes.get_errno())}")
    return TIME_STATES.get(state, str(state)), tx


def test_time_sync_matches_adjtimex_and_ps(tmp_path: Path) -> None:
    """The kernel clock state as adjtimex(2) reads it; time daemons as `ps` lists them."""
    data = run_check("time.sync", tmp_path).data
    out = []
    kernel = data.get("kernel")
    if isinstance(kernel, dict) and kernel.get("read"):
        state, tx = adjtimex()
        unsync = bool(tx.status & STA_UNSYNC)
        for key, theirs in (("sta_unsync", unsync), ("state", state)):
            if key in kernel and kernel[key] != theirs:
                out.append(Mismatch(f"kernel.{key}", kernel[key], theirs, "adjtimex(2)"))
        # maxerror grows by 500 us per second while unsynchronised (capped at 16 s).
        if "maxerror_us" in kernel and not near(kernel["maxerror_us"], tx.maxerror, abs_tol=5000):
            out.append(
                Mismatch("kernel.maxerror_us", kernel["maxerror_us"], tx.maxerror, "adjtimex")
            )
    # comm is cut at 15 characters: systemd-timesyncd shows as systemd-timesyn.
    running = {line.strip() for line in tool("ps", "-eo", "comm=").splitlines()}
    theirs = sorted(d for d in TIME_DAEMONS if d[:15] in running)
    if "daemons" in data and bool(data["daemons"]) != bool(theirs):
        out.append(Mismatch("daemons", data["daemons"], theirs, "ps -eo comm"))
    agree(out, "time.sync")


def online_cpus() -> list[str]:
    """Online CPUs as 'cpuN', from /sys/devices/system/cpu/online read directly."""
    names = []
    for part in read("/sys/devices/system/cpu/online").strip().split(","):
        first, _, last = part.partition("-")
        names += [f"cpu{n}" for n in range(int(first), int(last or first) + 1)]
    return names


def busy_ticks() -> int:
    """Ticks every CPU spent neither idle nor in iowait, since boot (/proc/stat 'cpu')."""
    fields = [int(v) for v in read("/proc/stat").splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return sum(fields[:3]) + sum(fields[5:8])


def test_cpu_usage_matches_online_cpus_and_proc_stat(tmp_path: Path) -> None:
    """One row per online CPU; its busy time fits in what /proc/stat counted around it."""

    def compare() -> list[Mismatch]:
        start, ticks_before = time.monotonic(), busy_ticks()
        data = run_check("cpu.usage", tmp_path).data
        elapsed, ticks = time.monotonic() - start, busy_ticks() - ticks_before
        out = []
        cpus = online_cpus()
        ours = sorted((row["cpu"] for row in data["per_core"]), key=lambda c: int(c[3:]))
        if ours != cpus:
            out.append(Mismatch("per_core[].cpu", ours, cpus, "/sys/devices/system/cpu/online"))
        if not 0 < data["interval_s"] <= elapsed:
            out.append(Mismatch("interval_s", data["interval_s"], f"<= {elapsed:.3f}", "clock"))
        hz = os.sysconf("SC_CLK_TCK")
        busy_s = data["overall"]["busy_pct"] / 100 * data["interval_s"] * len(cpus)
        most = ticks / hz + 2 * len(cpus) / hz  # a tick per CPU at each end
        if busy_s > most:
            out.append(Mismatch("overall.busy_pct", busy_s, f"<= {most:.3f} CPU-s", "/proc/stat"))
        return out

    agree(settle(compare), "cpu.usage")
