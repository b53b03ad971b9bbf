"""sysctl.all, .network, .vm and .fs against `sysctl`, `nstat` and /proc/sys read directly."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from .live import SHORT_WINDOW, Mismatch, agree, between, run_check, settle, tool

#: Keys that change by themselves between two reads (counters, random values, last pid).
VOLATILE = (
    "fs.dentry-state",
    "fs.file-nr",
    "fs.inode-nr",
    "fs.inode-state",
    "fs.aio-nr",
    "fs.quota.",
    "kernel.ns_last_pid",
    "kernel.random.uuid",
    "kernel.random.entropy_avail",
    "kernel.pty.nr",
    "kernel.tainted",
    "net.netfilter.nf_conntrack_count",
)


def _collapse(text: str) -> str:
    """Whitespace collapsed as the checks store values ('4096\t131072' -> '4096 131072')."""
    return " ".join(text.split())


def sysctl_a() -> tuple[dict[str, str], str]:
    """`sysctl -a` (key -> value, multi-line values joined), or /proc/sys read directly
    where procps is not installed; and which of the two it was."""
    if shutil.which("sysctl") is None:
        return walk_proc_sys(), "/proc/sys"
    out: dict[str, list[str]] = {}
    for line in tool("sysctl", "-a").splitlines():
        key, sep, value = line.partition(" =")
        if sep:
            out.setdefault(key, []).append(value.strip())
    return {k: _collapse(" ".join(v)) for k, v in out.items()}, "sysctl -a"


def walk_proc_sys() -> dict[str, str]:
    """Every readable key under /proc/sys, read directly (the oracle without procps)."""
    out = {}
    for path in sorted(Path("/proc/sys").rglob("*")):
        if path.is_file() and path.stat().st_mode & 0o444:
            key = ".".join(path.relative_to("/proc/sys").parts)
            value = direct(key)
            if not isinstance(value, OSError):
                out[key] = value
    return out


def direct(key: str) -> str | OSError:
    """A key read straight from /proc/sys: its value, or the error reading it."""
    try:
        with open("/proc/sys/" + key.replace(".", "/"), "rb") as fh:
            return _collapse(fh.read(4096).decode("utf-8", "replace"))
    except OSError as exc:
        return exc


def compare_all(tmp_path: Path) -> list[Mismatch]:
    """Every key `sysctl -a` prints, with its value; extra keys must read the same directly.

    procps hides some keys (deprecated ones such as neigh.*.base_reachable_time).
    """
    data = run_check("sysctl.all", tmp_path).data
    theirs, source = sysctl_a()
    ours: dict[str, str] = data["values"]
    out = []
    for key, value in sorted(theirs.items()):
        if key not in ours:
            out.append(Mismatch(f"values[{key}]", None, value, source))
        elif ours[key] != value and not key.startswith(VOLATILE):
            out.append(Mismatch(f"values[{key}]", ours[key], value, source))
    for key in sorted(set(ours) - set(theirs)):
        value = direct(key)
        if isinstance(value, OSError) or (value != ours[key] and not key.startswith(VOLATILE)):
            out.append(Mismatch(f"values[{key}]", ours[key], value, f"/proc/sys ({key})"))
    if data.get("count", len(ours)) != len(ours):
        out.append(Mismatch("count", data.get("count"), len(ours), "len(values)"))
    return out


def test_sysctl_all_matches_sysctl_a(tmp_path: Path) -> None:
    """Every parameter `sysctl -a` prints, with the same value."""
    agree(settle(lambda: compare_all(tmp_path)), "sysctl.all")


def test_sysctl_all_unreadable_keys_give_the_real_errno(tmp_path: Path) -> None:
    """Keys the check could not read fail the same way read directly, and it says how."""
    result = run_check("sysctl.all", tmp_path)
    unreadable: dict[str, str] = result.data["unreadable"]
    if not unreadable:
        pytest.skip("every /proc/sys key is readable on this machine")
    out = []
    for key, reason in sorted(unreadable.items()):
        exc = direct(key)
        if not isinstance(exc, OSError):
            out.append(Mismatch(f"unreadable[{key}]", reason, "readable", "open(/proc/sys/...)"))
        elif os.strerror(exc.errno or 0) not in reason:
            out.append(Mismatch(f"unreadable[{key}]", reason, os.strerror(exc.errno or 0), "open"))
    agree(out, "sysctl.all unreadable keys")
    if os.geteuid() == 0:
        blamed = "not root" in result.summary
        denied = any(
            isinstance(e := direct(k), OSError) and e.errno in (errno.EACCES, errno.EPERM)
            for k in unreadable
        )
        assert denied or not blamed, f"runs as root, yet the summary says: {result.summary}"


def _rows(data: dict[str, Any]) -> dict[str, str]:
    """The check's `values` table (rows of key/value, or a mapping) as key -> value."""
    values = data["values"]
    if isinstance(values, dict):
        return {k: str(v) for k, v in values.items()}
    return {row["key"]: str(row["value"]) for row in values}


@pytest.mark.parametrize("check_id", ["sysctl.network", "sysctl.vm", "sysctl.fs"])
def test_judged_sysctl_values_match_sysctl_n(check_id: str, tmp_path: Path) -> None:
    """The parameters a sysctl check judges have the values `sysctl -n` prints."""

    def compare() -> list[Mismatch]:
        out = []
        data = run_check(check_id, tmp_path, thresholds=SHORT_WINDOW).data
        for key, ours in sorted(_rows(data).items()):
            theirs = direct(key)
            if isinstance(theirs, OSError):
                if ours != "(absent)":
                    out.append(Mismatch(f"values[{key}]", ours, str(theirs), "/proc/sys"))
                continue
            source = f"sysctl -n {key}" if shutil.which("sysctl") else f"/proc/sys ({key})"
            if shutil.which("sysctl"):
                theirs = _collapse(tool("sysctl", "-n", key))
            if ours != theirs and not key.startswith(VOLATILE):
                out.append(Mismatch(f"values[{key}]", ours, theirs, source))
        return out

    agree(settle(compare), check_id)


#: sysctl.network's counters -> their `nstat` names (SoftnetDropped is not in nstat).
NSTAT = {
    "ListenOverflows": "TcpExtListenOverflows",
    "ListenDrops": "TcpExtListenDrops",
    "TCPReqQFullDrop": "TcpExtTCPReqQFullDrop",
    "PruneCalled": "TcpExtPruneCalled",
    "RcvPruned": "TcpExtRcvPruned",
    "UdpRcvbufErrors": "UdpRcvbufErrors",
    "UdpSndbufErrors": "UdpSndbufErrors",
    "Udp6RcvbufErrors": "Udp6RcvbufErrors",
    "Udp6SndbufErrors": "Udp6SndbufErrors",
}


def nstat() -> dict[str, int]:
    """Absolute values of the counters above, from `nstat -asz` (history left alone)."""
    out = {}
    for line in tool("nstat", "-asz", *NSTAT.values()).splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


def softnet_dropped() -> int:
    """Packets dropped by the backlog queue, all CPUs: column 2 of /proc/net/softnet_stat."""
    with open("/proc/net/softnet_stat") as fh:
        return sum(int(line.split()[1], 16) for line in fh if line.strip())


def test_sysctl_network_counters_match_nstat(tmp_path: Path) -> None:
    """The since-boot drop counters as `nstat` reads them (between a read before and after)."""

    def compare() -> list[Mismatch]:
        before, soft_before = nstat(), softnet_dropped()
        data = run_check("sysctl.network", tmp_path, thresholds=SHORT_WINDOW).data
        after, soft_after = nstat(), softnet_dropped()
        counters = data.get("counters_since_boot") or {}
        out = []
        for key, value in sorted(counters.items()):
            if key == "SoftnetDropped":
                lo, hi, source = soft_before, soft_after, "/proc/net/softnet_stat"
            elif NSTAT.get(key) in before and NSTAT[key] in after:
                lo, hi, source = before[NSTAT[key]], after[NSTAT[key]], "nstat -asz"
            else:
                continue
            if not between(value, lo, hi):
                out.append(Mismatch(f"counters_since_boot.{key}", value, (lo, hi), source))
        if not counters:
            out.append(Mismatch("counters_since_boot", counters, "counters", "nstat"))
        return out

    agree(settle(compare), "sysctl.network")
