"""Parsers for the /proc files several checks read: integers, meminfo, swaps, snmp, counters.

Each parser is a pure function of the file's text; the `read_*` helpers read through the
context, so fixture trees work like a live node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from snapshot_agent.context import Context

_NUMBER_UNIT = re.compile(r"^(\d+)(?:\s*kB)?$")


def parse_int(text: str | None, base: int = 10) -> int | None:
    """The first integer of a /proc or /sys value (base `base`); None when absent or garbage."""
    parts = text.split() if text else []
    try:
        return int(parts[0], base) if parts else None
    except ValueError:
        return None


def read_int(ctx: Context, node_path: str, base: int = 10) -> int | None:
    """The integer in a node file such as /proc/sys/vm/swappiness; None when absent or garbage."""
    return parse_int(ctx.read_optional(node_path), base)


def parse_kib(value: str) -> int | None:
    """A /proc size or count as written after its key: '123 kB' or '123' -> 123."""
    m = _NUMBER_UNIT.match(value.strip())
    return int(m.group(1)) if m else None


def parse_meminfo(text: str) -> dict[str, int]:
    """`Key:   123 kB` lines -> {key: 123}; kB values stay in KiB, counts stay counts.

    Also takes the per-node form `Node 0 MemFree:   123 kB`.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key.startswith("Node "):
            key = key.split(None, 2)[-1]
        if (number := parse_kib(value)) is not None:
            out[key] = number
    return out


def read_mem_total(ctx: Context) -> int | None:
    """MemTotal from /proc/meminfo in bytes; None when unknown."""
    kib = parse_meminfo(ctx.read_optional("/proc/meminfo", 64 * 1024) or "").get("MemTotal")
    return kib * 1024 if kib is not None else None


@dataclass(frozen=True)
class SwapDevice:
    """One line of /proc/swaps (sizes in KiB)."""

    name: str
    kind: str
    size_kib: int
    used_kib: int
    priority: int

    @property
    def disk_backed(self) -> bool:
        """zram is compressed RAM, not a disk."""
        return not self.name.startswith("/dev/zram")


def parse_swaps(text: str) -> list[SwapDevice]:
    """Parse /proc/swaps (header line, then name type size used priority)."""
    out: list[SwapDevice] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5:
            continue
        # The name may contain spaces (escaped as \040 by the kernel, but be lenient).
        name = " ".join(parts[:-4])
        try:
            out.append(SwapDevice(name, parts[-4], int(parts[-3]), int(parts[-2]), int(parts[-1])))
        except ValueError:
            continue
    return out


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp or /proc/net/netstat: header/value line pairs -> {"Tcp": {...}}."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        h_name, _, h_rest = header.partition(":")
        v_name, _, v_rest = values.partition(":")
        if h_name != v_name:
            continue
        table = out.setdefault(h_name.strip(), {})
        for key, value in zip(h_rest.split(), v_rest.split(), strict=False):
            number = parse_int(value)
            if number is not None:
                table[key] = number
    return out


def parse_kv(text: str | None) -> dict[str, int]:
    """`key value` lines (/proc/vmstat, numastat, cgroup memory.stat and cpu.stat) as ints."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out
