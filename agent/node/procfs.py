"""Parsers for the /proc files several checks read: integers, meminfo, swaps, snmp, counters,
and the /proc/net socket tables.

Each parser is a pure function of the file's text; the `read_*` helpers read through the
context, so fixture trees work like a live node.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from snapshot_agent.core.context import Context

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


def counter_delta(a: int | None, b: int | None) -> int | None:
    """How much a counter grew from `a` to `b`; None when either is unknown, reset or wrapped."""
    return b - a if a is not None and b is not None and b >= a else None


def parse_cpu_list(text: str) -> int:
    """Count CPUs in a kernel CPU list such as '0-3,8,10-11'."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


# -- /proc/net socket tables ---------------------------------------------------------------

#: Upper bound of /proc/net/{tcp,udp}* lines read per file (a busy broker has many sockets).
MAX_SOCKET_LINES = 1_000_000

#: Kernel TCP states as printed (hex) in /proc/net/tcp (include/net/tcp_states.h).
TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07  # a bound UDP socket without a peer shows TCP_CLOSE


def iter_lines(ctx: Context, node_path: str, max_lines: int = MAX_SOCKET_LINES) -> Iterator[str]:
    """Stream a node file line by line (bounded), yielding nothing when it is missing."""
    try:
        fh = ctx.path(node_path).open("rb")
    except OSError:
        return
    with fh:
        for count, raw in enumerate(fh):
            if count >= max_lines:
                return
            yield raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class Socket:
    """One row of /proc/net/{tcp,tcp6,udp,udp6}."""

    proto: str  # tcp | udp
    family: int  # 4 | 6
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int
    tx_queue: int
    rx_queue: int  # for LISTEN: connections waiting in the accept queue
    uid: int
    inode: int

    @property
    def state_name(self) -> str:
        """Kernel name of the TCP state (UDP sockets reuse the numbers)."""
        return TCP_STATES.get(self.state, f"0x{self.state:02X}")

    @property
    def local(self) -> str:
        """address:port, IPv6 in brackets."""
        host = f"[{self.local_ip}]" if self.family == 6 else self.local_ip
        return f"{host}:{self.local_port}"


def decode_proc_address(text: str) -> tuple[str, int]:
    """Decode '0100007F:1F9A' (little-endian IPv4) or a 32-hex IPv6 address and hex port.

    IPv6 is printed as four 32-bit words, each in host (little-endian) byte order.
    """
    hex_ip, _, hex_port = text.partition(":")
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    elif len(raw) == 16:
        swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, swapped)
    else:
        raise ValueError(f"address {hex_ip!r} is neither IPv4 nor IPv6")
    return ip, int(hex_port, 16)


def parse_socket_line(line: str, proto: str) -> Socket | None:
    """Parse one data line of /proc/net/{tcp,udp}[6]; None for the header or garbage."""
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        return None
    try:
        local_ip, local_port = decode_proc_address(fields[1])
        remote_ip, remote_port = decode_proc_address(fields[2])
        tx, _, rx = fields[4].partition(":")
        return Socket(
            proto="tcp" if proto.startswith("tcp") else "udp",
            family=6 if ":" in local_ip else 4,
            local_ip=local_ip,
            local_port=local_port,
            remote_ip=remote_ip,
            remote_port=remote_port,
            state=int(fields[3], 16),
            tx_queue=int(tx, 16),
            rx_queue=int(rx, 16),
            uid=int(fields[7]),
            inode=int(fields[9]),
        )
    except ValueError:
        return None


def parse_sockets(lines: Iterable[str], proto: str) -> list[Socket]:
    """Parse a whole /proc/net/{tcp,udp}[6] text (header and garbage lines are skipped)."""
    return [s for line in lines if (s := parse_socket_line(line, proto)) is not None]


def is_listening(sock: Socket) -> bool:
    """TCP in LISTEN, or UDP bound without a peer (how a QUIC server socket looks)."""
    if sock.proto == "tcp":
        return sock.state == TCP_LISTEN
    return sock.state == UDP_UNCONNECTED and sock.remote_port == 0


def read_sockets(ctx: Context, protos: Iterable[str]) -> tuple[list[Socket], list[str]]:
    """All sockets of the given /proc/net tables, and the tables that were missing."""
    sockets: list[Socket] = []
    missing: list[str] = []
    for proto in protos:
        path = f"/proc/net/{proto}"
        if not ctx.path(path).exists():
            missing.append(path)
            continue
        sockets.extend(parse_sockets(iter_lines(ctx, path), proto))
    return sockets, missing


# -- /proc/PID/limits ------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One row of /proc/<pid>/limits; None means unlimited."""

    soft: int | None
    hard: int | None
    units: str


def parse_limits(text: str) -> dict[str, Limit]:
    """Parse /proc/<pid>/limits into {'Max open files': Limit(soft, hard, units)}."""
    out: dict[str, Limit] = {}
    for line in text.splitlines():
        # Names contain single spaces; columns are separated by two or more.
        m = re.match(r"^(Max [A-Za-z ]+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if not m:
            continue
        try:
            out[m.group(1)] = Limit(_limit_value(m.group(2)), _limit_value(m.group(3)), m.group(4))
        except ValueError:
            continue  # a garbled line is left out, not guessed at
    return out


def _limit_value(text: str) -> int | None:
    """'unlimited' -> None, digits -> int; anything else raises ValueError."""
    if text == "unlimited":
        return None
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def read_limits(ctx: Context, pid: int) -> dict[str, Limit] | None:
    """The resource limits of `pid`, or None when /proc/<pid>/limits cannot be read."""
    text = ctx.read_optional(f"/proc/{pid}/limits", 16384)
    return parse_limits(text) if text is not None else None
