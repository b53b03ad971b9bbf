"""The broker's own log files, streamed whole within a byte budget and a deadline.

What Iggy writes there (read in apache/iggy, not remembered):
- Format: tracing-subscriber's default `Full` format with thread names and targets, no
  ANSI in the file (server-0.8.0:core/server/src/log/logger.rs, `get_log_format`,
  `.with_ansi(false)`; 0.5 shows thread ids instead of names), so a line is
  `2026-05-20T10:00:00.123456Z ERROR shard-0 server::tcp::sender: message`, the level
  padded to five characters (`  INFO`, `  WARN`) and the thread name padded on the left.
  Stdout (ANSI colours) only reaches a file when someone redirects it there.
- Naming: 0.5 and 0.6 roll hourly through tracing-appender, `iggy-server.log.YYYY-MM-DD-HH`
  (server-0.5.0 and server-0.6.0:core/server/src/log/logger.rs, `rolling::hourly`), the
  newest date being the current file; 0.7+ use rolling_file's `BasicRollingFileAppender`
  by size and hour: `iggy-server.log` is current, `.1` the newest rotation, `.N` the
  oldest (server-0.8.0:core/server/src/log/logger.rs).
- The periodic resource line `CPU: a%/b% (IggyUsage/Total), Mem: ..., Disk: ..., Clients:
  ..., Messages: ..., Read: ..., Written: ..., Threads: N, OpenFDs: N`
  (server-0.8.0:core/server/src/shard/tasks/periodic/sysinfo_printer.rs; 0.5 has no Disk
  and ends with `Uptime:`, server-0.5.0:core/server/src/channels/commands/print_sysinfo.rs).
- Every start logs its build line first, `Version: V, hash: H, built at: ...` or `It seems
  that you are a developer...` (`print_build_info` in logger.rs, 0.5 to 0.8).
- A panicking shard is logged as `ERROR ... Shard N panicked: msg` (server-0.8.0:
  core/server/src/main.rs); Rust's default hook prints `thread 'x' panicked at file:l:c:`
  and the message on stderr, which reaches a file only when redirected.
- `Generated root user password: ...` is a println! on first start
  (server-0.8.0:core/server/src/bootstrap.rs, `create_root_user`): on stdout, so in a
  file only when stdout is captured there, and then a secret at rest.
- Every command a client gets an error for is logged at ERROR by the transport that
  answered it, whoever was at fault (a stream that already exists, a wrong password):
  TCP `Command was not handled successfully, session: S, error: E.` (server-0.5.0:
  core/server/src/tcp/connection_handler.rs), `Command with code C was not handled ...`
  (0.6, 0.7) and `Command with code C (name) was not handled ...` (server-0.8.0:
  core/server/src/tcp/connection_handler.rs); QUIC `Command was not handled
  successfully, session: S, error: E.` (quic/listener.rs, 0.5 to 0.8); WebSocket `Command
  failed for session: S, error: E.` (websocket/connection_handler.rs, 0.6 to 0.8); HTTP
  `There was an error: E` (http/error.rs, 0.5 to main). A ClientNotFound or StaleClient
  error is followed by `Session: S will be deleted.` (TCP) or `Session will be deleted.`
  (QUIC). These are counted apart from the broker's own errors.

Files are listed without following symlinks and opened with O_NOFOLLOW: a log name
pointing elsewhere (`iggy-server.log -> /etc/shadow`) is noted with its target, never read.

Lines are handled as bytes in blocks of whole lines (regular expressions run over a block,
not per line in Python); a line longer than a block is cut, counted and its rest skipped.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from snapshot_agent.core.printable import printable
from snapshot_agent.core.units import as_utc, utc_iso

LOG_PREFIX = "iggy-server.log"
CHUNK = 1024 * 1024  # bytes read at a time; also the longest line kept whole
COMPRESSED = (".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip")
MAX_DIR_ENTRIES = 100_000  # directory entries looked at before giving up on the rest
MAX_TARGETS = 1000  # distinct targets counted per level; more go to OTHER_TARGET
OTHER_TARGET = "(other targets)"
MAX_PANICS_KEPT = 10  # the newest panics kept with their first lines
PANIC_LINES = 5  # lines kept of each panic
MAX_SHOWN = 300  # characters kept of a line shown in data or findings
MAX_RESOURCE_LINE = 1000  # characters kept of the resource line (it is about 300)
MAX_PASSWORD_SPOTS = 20  # (file, line) spots of generated-password lines kept
MAX_LINK = 4096  # characters of a symlink's target kept
MAX_KIND = 160  # characters of a failed client command's kind
CLIENT_LINE = 2000  # bytes of an ERROR line searched for a failed client command
STAMP_LOOKBACK = 256  # lines searched back for the timestamp an untimed line belongs to

_TS = rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
_STAMPED = re.compile(rb"^" + _TS + rb"[ \t]", re.MULTILINE)
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z0-9_]+)*:")
_HOOK_THREAD = re.compile(rb"thread '([^']*)' panicked at")
_SHARD_PANIC = re.compile(rb"\bShard (\d+) panicked: ")
# [0-9], not \d: in a str pattern \d takes any script's digits.
_DATED = re.compile(r"^iggy-server\.log\.([0-9]{4}-[0-9]{2}-[0-9]{2}(?:-[0-9]{2})?)$")
_NUMBERED = re.compile(r"^iggy-server\.log\.([0-9]+)$")
_DIGITS = re.compile(r"[0-9]+")
_RESOURCE_SPLIT = re.compile(r", (?=[A-Z][A-Za-z ]*: )")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

#: A failed client command (see the module docstring for where each shape comes from):
#: the command's code and name when logged, and the error's text.
_CLIENT_ERROR = re.compile(
    rb"Command (?:with code ([0-9]+)(?: \(([^)\s]{1,64})\))? )?was not handled successfully, "
    rb"session: .*?, error: (.*)"
    rb"|Command failed for session: .*?, error: (.*)"
    rb"|There was an error: (.*)"
    rb"|(Session(?:: .*)? will be deleted\.)"
)
SESSION_DELETED = "the session was deleted (a stale or unknown client)"
_ANY_NUMBER = re.compile(r"[0-9]+")

PASSWORD_NEEDLE = b"Generated root user password"
START_NEEDLES = (b"It seems that you are a developer", b", built at: ")
RESOURCE_NEEDLE = b"(IggyUsage/Total)"


# -- files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFile:
    """One retained log file: where it is (on this host and on the node), size, mtime."""

    path: Path
    node_path: str
    size: int
    mtime: float

    @property
    def name(self) -> str:
        """The file's name."""
        return self.path.name


def rotation_key(name: str) -> tuple[int, Any]:
    """Sort key putting a broker's log files oldest first, the current file last."""
    if name == LOG_PREFIX:
        return (3, 0)
    dated = _DATED.match(name)
    if dated:
        return (0, dated[1])  # 0.5/0.6: the newest hour is the current file
    numbered = _NUMBERED.match(name)
    if numbered:
        return (1, -int(numbered[1]))  # 0.7+: .1 is the newest rotation
    return (2, name)


def is_log_name(name: str) -> bool:
    """An iggy-server.log file or one of its rotations (compressed ones are not read)."""
    return name.startswith(LOG_PREFIX) and not name.endswith(COMPRESSED)


@dataclass
class LogListing:
    """The broker's log files, oldest first; what could not be listed; symlinks not followed."""

    files: list[LogFile] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (node path, why)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (node path, target)


def list_log_files(
    directory: Path, node_dir: str, deadline: float, clock: Callable[[], float] = time.monotonic
) -> LogListing:
    """The broker's log files in `directory`: regular files only, symlinks noted."""
    listing = LogListing()
    try:
        with os.scandir(directory) as entries:
            for seen, entry in enumerate(entries):
                if seen >= MAX_DIR_ENTRIES or clock() >= deadline:
                    why = "the deadline came" if seen < MAX_DIR_ENTRIES else "too many entries"
                    listing.problems.append(
                        (node_dir, f"{why}; stopped listing after {seen} entries")
                    )
                    break
                if is_log_name(entry.name):
                    _add_file(entry, node_dir, listing)
    except OSError as exc:
        listing.problems.append((node_dir, exc.strerror or str(exc)))
    listing.files.sort(key=lambda f: rotation_key(f.name))
    return listing


def _add_file(entry: os.DirEntry[str], node_dir: str, listing: LogListing) -> None:
    """A regular file joins the listing's files; a symlink is noted, never followed."""
    node_path = f"{node_dir.rstrip('/')}/{entry.name}"
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError as exc:
        listing.problems.append((node_path, exc.strerror or str(exc)))
        return
    if stat.S_ISLNK(info.st_mode):
        listing.symlinks.append((node_path, _link_target(entry.path)))
    elif stat.S_ISREG(info.st_mode):
        listing.files.append(LogFile(Path(entry.path), node_path, info.st_size, info.st_mtime))


def _link_target(path: str) -> str:
    """A symlink's target (bounded), or why it cannot be read."""
    try:
        return os.readlink(path)[:MAX_LINK]
    except OSError as exc:
        return f"? ({exc.strerror or exc})"


def open_log(path: Path) -> BinaryIO:
    """A log file open for reading: never through a symlink, never a FIFO or a device.

    O_NOFOLLOW refuses a name swapped for a symlink since it was listed; O_NONBLOCK keeps
    a FIFO from blocking the open, and fstat refuses anything but a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, "not a regular file")
    return fh


def read_log_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log file (opened by open_log), from its first whole line."""
    with open_log(path) as fh:
        start = max(0, os.fstat(fh.fileno()).st_size - max_bytes)
        fh.seek(start)
        raw = fh.read(max_bytes)
    if start > 0:
        raw = raw.partition(b"\n")[2]  # the first line was cut by the seek
    return raw.decode("utf-8", "replace")


def _open_problem(exc: OSError) -> str:
    """Why a log file could not be opened, in words."""
    if exc.errno == errno.ELOOP:
        return "a symlink now (it was a file when listed); not followed"
    return exc.strerror or str(exc)


def plan_reads(files: list[LogFile], budget: int) -> list[int]:
    """Where to start reading each file so that only the newest `budget` bytes are read."""
    skip = max(0, sum(f.size for f in files) - budget)
    starts = []
    for f in files:
        start = min(skip, f.size)
        starts.append(start)
        skip -= start
    return starts


# -- timestamps and fields ------------------------------------------------------------


def stamp_seconds(raw: bytes) -> float | None:
    """Epoch seconds of a tracing timestamp (`2026-05-20T10:00:00.123456Z`), None if bad."""
    text = raw.decode("ascii", "replace")
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(when).timestamp()  # a stamp without an offset is UTC


def target_of(rest: str) -> str:
    """The tracing target of a line's text after its level (thread name and spans skipped)."""
    candidates = [t for t in rest.split()[:8] if _TARGET.fullmatch(t)]
    scoped = [t for t in candidates if "::" in t]
    chosen = (scoped or candidates or [""])[0]
    return chosen[:-1] or "(no target)"


def shown(raw: bytes, limit: int = MAX_SHOWN) -> str:
    """A line as data may show it: decoded (bad UTF-8 replaced), escaped, bounded."""
    return printable(raw[: limit * 4].decode("utf-8", "replace"))[:limit]


def parse_resource_line(line: str) -> dict[str, Any]:
    """The fields of Iggy's periodic resource line (numbers where the log prints numbers)."""
    start = line.find("CPU:")
    if start < 0:
        return {}
    out: dict[str, Any] = {}
    for part in _RESOURCE_SPLIT.split(line[start:].strip()):
        key, sep, value = part.partition(": ")
        if sep:
            out.update(_resource_field(key.strip(), value.split(" (")[0].strip()))
    return out


def _numbers(text: str) -> list[float]:
    """The numbers in '12.34%/56.78%'."""
    return [float(n) for n in _NUMBER.findall(text)]


def _resource_field(key: str, value: str) -> dict[str, Any]:
    """One `Key: value` of the resource line as named fields."""
    parts = [p.strip() for p in value.split("/")]
    if key == "CPU" and len(parts) == 2:
        iggy, total = (_numbers(p) for p in parts)
        return {
            "cpu_iggy_pct": iggy[0] if iggy else None,
            "cpu_total_pct": total[0] if total else None,
        }
    if key == "Mem" and len(parts) == 4:
        free = _numbers(parts[0])
        return {
            "mem_free_pct": free[0] if free else None,
            "mem_iggy": parts[1],
            "mem_used": parts[2],
            "mem_total": parts[3],
        }
    if key == "Disk" and len(parts) == 2:
        return {"disk_free": parts[0], "disk_total": parts[1]}
    names = {
        "IggyUsage": "data_size",
        "Messages processed": "messages",
        "OpenFDs": "open_fds",
    }
    name = names.get(key, key.lower().replace(" ", "_"))
    return {name: int(value) if _DIGITS.fullmatch(value) else value}


# -- reading ----------------------------------------------------------------------------


@dataclass
class ReadStats:
    """How much of the files was read, and lines that were cut."""

    bytes_read: int = 0
    long_lines: int = 0


def line_blocks(
    fh: BinaryIO, start: int, limit: int, stats: ReadStats, keep_going: Callable[[], bool]
) -> Iterator[tuple[int, bytes]]:
    """(offset, block of whole lines) from `start` up to `limit` bytes of the file.

    Started mid-file, the cut first line is skipped. A line longer than CHUNK is cut: its
    head is yielded (with a newline), the rest is read past and never held.
    """
    skipping = False
    if start > 0:  # begun mid-file: skip to the next line unless this is a line's start
        fh.seek(start - 1)
        skipping = fh.read(1) != b"\n"
    fh.seek(start)
    at, carry = start, b""
    while at < limit and keep_going():
        data = fh.read(min(CHUNK, limit - at))
        if not data:
            break
        at += len(data)
        stats.bytes_read += len(data)
        if skipping:
            newline = data.find(b"\n")
            if newline < 0:
                continue
            data, skipping = data[newline + 1 :], False
        buf = carry + data
        base = at - len(buf)
        end = buf.rfind(b"\n") + 1
        block, carry = buf[:end], buf[end:]
        if block:
            yield base, block
        if len(carry) > CHUNK:
            stats.long_lines += 1
            yield at - len(carry), carry[:CHUNK] + b"\n"
            carry, skipping = b"", True
    if carry and not skipping:
        yield at - len(carry), carry + b"\n"


def _stamp_before(block: bytes, pos: int) -> tuple[int, bytes] | None:
    """(offset, timestamp) of the last stamped line starting before `pos` in `block`."""
    end = pos
    for _ in range(STAMP_LOOKBACK):
        start = block.rfind(b"\n", 0, end) + 1
        match = _STAMPED.match(block, start)
        if match and start < pos:
            return start, match[1]
        if start == 0:
            return None
        end = start - 1
    return None


def _line_at(block: bytes, pos: int) -> tuple[int, int]:
    """(start, end) of the line holding `pos` (end excludes the newline)."""
    start = block.rfind(b"\n", 0, pos) + 1
    end = block.find(b"\n", pos)
    return start, len(block) if end < 0 else end


# -- counting ---------------------------------------------------------------------------


@dataclass
class LevelCounts:
    """Lines of one level per target: over all lines read, and inside the window."""

    total: Counter[str] = field(default_factory=Counter)
    window: Counter[str] = field(default_factory=Counter)

    def add(self, target: str, in_window: bool) -> None:
        """Count one line of `target`."""
        if target not in self.total and len(self.total) >= MAX_TARGETS:
            target = OTHER_TARGET
        self.total[target] += 1
        if in_window:
            self.window[target] += 1

    def top(self, n: int, label: str = "target") -> list[dict[str, Any]]:
        """The `n` targets (or kinds) with most lines in the window, then overall."""
        ranked = sorted(self.total, key=lambda t: (-self.window[t], -self.total[t], t))
        return [{label: t, "window": self.window[t], "total": self.total[t]} for t in ranked[:n]]


def client_error_kind(text: bytes) -> str | None:
    """The kind of a failed client command logged in `text` (a line after its level), or None.

    'stream.create: Stream with name: orders already exists' (numbers as N, so IDs
    and sessions do not split a kind); None when the line is not such a failure.
    """
    found = _CLIENT_ERROR.search(text[:CLIENT_LINE])
    if found is None:
        return None
    code, name, tcp, websocket, http, deleted = found.groups()
    if deleted is not None:
        return SESSION_DELETED
    error = (tcp or websocket or http or b"").decode("utf-8", "replace").strip().rstrip(".")
    error = _ANY_NUMBER.sub("N", printable(error))
    command = name.decode("ascii", "replace") if name else f"code {code.decode()}" if code else ""
    return (f"{command}: {error}" if command else error)[:MAX_KIND] or "(no error text)"


@dataclass
class Panic:
    """One panic: when (None: unknown), where, and its first lines."""

    at: float | None
    file: str
    where: str  # "line 12", or "byte 5120" in a file read from its middle
    lines: list[str]
    thread: str = ""
    timed: bool = True  # the line had a timestamp of its own
    offset: int = 0
    seq: int = 0  # line number from where the file's read began

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"at": utc_iso(self.at), "file": self.file, "where": self.where, "lines": self.lines}


@dataclass
class LogScan:
    """What the broker's retained logs hold, over all lines read and inside the window."""

    now: float
    window_hours: float
    files: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    bytes_total: int = 0
    bytes_budget_skipped: int = 0  # oldest bytes left unread by the byte budget
    stats: ReadStats = field(default_factory=ReadStats)
    stopped_by_deadline: bool = False
    lines: int = 0
    first_at: float | None = None
    last_at: float | None = None
    errors: LevelCounts = field(default_factory=LevelCounts)  # the broker's own
    error_minutes: Counter[int] = field(default_factory=Counter)  # window ERRORs per epoch minute
    client_errors: LevelCounts = field(default_factory=LevelCounts)  # failed commands by kind
    warnings: LevelCounts = field(default_factory=LevelCounts)
    panics: deque[Panic] = field(default_factory=lambda: deque(maxlen=MAX_PANICS_KEPT))
    panics_total: int = 0
    panics_window: int = 0
    password_lines: int = 0
    password_spots: list[tuple[str, str]] = field(default_factory=list)  # (file, where)
    starts: int = 0
    starts_window: int = 0
    last_start_at: float | None = None
    resource_line: str = ""
    resource_at: float | None = None

    @property
    def since(self) -> float:
        """Where the window starts (epoch seconds)."""
        return self.now - self.window_hours * 3600

    @property
    def complete(self) -> bool:
        """Every retained byte was read."""
        return self.stats.bytes_read >= self.bytes_total and not self.stopped_by_deadline

    def busiest_hour(self) -> tuple[str, int]:
        """The 60 minutes of the window with most ERROR lines: where they start
        ('2026-05-20T10:17Z') and how many. Any 60 minutes, to the minute, not clock hours:
        a burst across the top of an hour is counted whole."""
        if not self.error_minutes:
            return "", 0
        minutes = sorted(self.error_minutes.items())
        best, best_start, left, running = 0, minutes[0][0], 0, 0
        for minute, n in minutes:
            running += n
            while minute - minutes[left][0] >= 60:
                running -= minutes[left][1]
                left += 1
            if running >= best:  # the latest of equal hours
                best, best_start = running, minutes[left][0]
        return utc_iso(best_start * 60)[:16] + "Z", best


@dataclass
class _FileState:
    """Where the scan is in one file."""

    file: LogFile
    from_start: bool = True  # read from the file's first byte: line numbers are known
    line_no: int = 0  # lines before the current block (from where the read began)
    last_stamp: bytes = b""
    last_stamp_offset: int = -1
    pending: list[Panic] = field(default_factory=list)  # untimed panics to date at the end

    def where(self, line_no: int, offset: int) -> str:
        """A line's place in the file: its number when known, else its byte offset."""
        return f"line {line_no}" if self.from_start else f"byte {offset}"


class _Scanner:
    """Feeds blocks of lines through the counting rules."""

    def __init__(self, scan: LogScan) -> None:
        self.scan = scan
        self.since_key = utc_iso(scan.since).rstrip("Z").encode()
        self._last_panic: Panic | None = None

    def in_window(self, raw: bytes) -> bool:
        """Whether a timestamp is inside the window (UTC stamps compare as text)."""
        if raw.endswith(b"Z"):
            return raw[:19] >= self.since_key
        when = stamp_seconds(raw)
        return when is not None and when >= self.scan.since

    def feed(self, state: _FileState, offset: int, block: bytes) -> None:
        """Count one block of whole lines of `state.file`."""
        if b"\x1b" in block:  # byte offsets in such a block are then approximate
            block = _ANSI.sub(b"", block)
        self._stamps(state, offset, block)
        self._events(block)
        if b"panicked" in block:
            self._panics(state, offset, block)
        if PASSWORD_NEEDLE in block:
            self._passwords(state, offset, block)
        self._starts(block)
        self._resource(block)
        newlines = block.count(b"\n")
        state.line_no += newlines
        self.scan.lines += newlines

    def _stamps(self, state: _FileState, offset: int, block: bytes) -> None:
        """Note the first and last timestamps seen."""
        scan = self.scan
        last = _stamp_before(block, len(block))
        if last is None:
            return
        state.last_stamp, state.last_stamp_offset = last[1], offset + last[0]
        if scan.first_at is None:
            first = _STAMPED.search(block)
            scan.first_at = stamp_seconds(first[1]) if first else None
        when = stamp_seconds(last[1])
        if when is not None:
            scan.last_at = when if scan.last_at is None else max(scan.last_at, when)

    def _events(self, block: bytes) -> None:
        """Count ERROR and WARN lines per target, in the window and overall."""
        for needle, counts in ((b" ERROR ", self.scan.errors), (b" WARN ", self.scan.warnings)):
            pos = block.find(needle)
            while pos >= 0:
                start, end = _line_at(block, pos)
                stamp = _STAMPED.match(block, start)
                # The level right after the line's timestamp, not a word of a message.
                if stamp and not block[stamp.end() : pos].strip():
                    in_window = self.in_window(stamp[1])
                    if counts is self.scan.errors:
                        self._error(block[pos + len(needle) : end], stamp[1], in_window)
                    else:
                        rest = block[pos + len(needle) : min(end, pos + 400)]
                        counts.add(target_of(rest.decode("utf-8", "replace")), in_window)
                pos = block.find(needle, end)

    def _error(self, rest: bytes, stamp: bytes, in_window: bool) -> None:
        """One ERROR line: a failed client command, or the broker's own error."""
        kind = client_error_kind(rest)
        if kind is not None:
            self.scan.client_errors.add(kind, in_window)
            return
        self.scan.errors.add(target_of(rest[:400].decode("utf-8", "replace")), in_window)
        if in_window:
            when = stamp_seconds(stamp)  # None for a date that does not exist (02-30)
            if when is not None:
                self.scan.error_minutes[int(when // 60)] += 1

    def _panics(self, state: _FileState, offset: int, block: bytes) -> None:
        """Record panics: Rust's hook (`panicked at`) and Iggy's `Shard N panicked:`."""
        pos = block.find(b"panicked")
        while pos >= 0:
            start, end = _line_at(block, pos)
            self._panic(state, offset, block, start, end)
            pos = block.find(b"panicked", end)

    def _panic(self, state: _FileState, offset: int, block: bytes, start: int, end: int) -> None:
        """Record the panic on line [start, end) of `block`, if it is one."""
        line = block[start:end]
        hook = _HOOK_THREAD.search(line)
        shard = _SHARD_PANIC.search(line)
        if not (hook or shard):
            return
        line_no = state.line_no + block.count(b"\n", 0, start) + 1
        if shard and self._same_as_last(state, shard[1], line_no):
            return
        own = _STAMPED.match(line)
        before = _stamp_before(block, start) if not own else None
        stamp = own[1] if own else before[1] if before else state.last_stamp
        panic = Panic(
            at=stamp_seconds(stamp) if stamp else None,
            file=state.file.node_path,
            where=state.where(line_no, offset + start),
            lines=self._panic_lines(block, start, 1 if shard else PANIC_LINES),
            thread=hook[1].decode("utf-8", "replace") if hook else f"shard-{shard[1].decode()}",
            timed=bool(own),
            offset=offset + start,
            seq=line_no,
        )
        self._last_panic = panic
        if panic.timed or len(state.pending) >= MAX_PANICS_KEPT * 100:
            self._count_panic(panic)
        else:
            state.pending.append(panic)

    def _same_as_last(self, state: _FileState, shard: bytes, line_no: int) -> bool:
        """Iggy's `Shard N panicked:` line right after the hook's output for shard-N."""
        last = self._last_panic
        return (
            last is not None
            and not last.timed
            and last.file == state.file.node_path
            and last.thread == f"shard-{shard.decode()}"
            and 0 < line_no - last.seq <= 50
        )

    @staticmethod
    def _panic_lines(block: bytes, start: int, count: int) -> list[str]:
        """The first `count` lines from `start` (bounded each)."""
        lines = []
        for _ in range(count):
            line_start, end = _line_at(block, start)
            if line_start >= len(block):
                break
            lines.append(shown(block[line_start:end]))
            start = end + 1
        return [line for line in lines if line]

    def _count_panic(self, panic: Panic) -> None:
        """Count a dated panic, in the window or not, and keep it among the newest."""
        scan = self.scan
        scan.panics_total += 1
        if panic.at is not None and panic.at >= scan.since:
            scan.panics_window += 1
        scan.panics.append(panic)

    def end_file(self, state: _FileState) -> None:
        """Date untimed panics: by the line before them, or the file's last write when no
        timestamped line follows them (a panic printed after days of silence is recent)."""
        for panic in state.pending:
            if panic.offset > state.last_stamp_offset or panic.at is None:
                panic.at = state.file.mtime
            self._count_panic(panic)
        state.pending.clear()

    def _passwords(self, state: _FileState, offset: int, block: bytes) -> None:
        """Count lines printing a generated root password: where, never the value."""
        pos = block.find(PASSWORD_NEEDLE)
        while pos >= 0:
            self.scan.password_lines += 1
            if len(self.scan.password_spots) < MAX_PASSWORD_SPOTS:
                start = _line_at(block, pos)[0]
                line_no = state.line_no + block.count(b"\n", 0, start) + 1
                spot = state.where(line_no, offset + start)
                self.scan.password_spots.append((state.file.node_path, spot))
            pos = block.find(PASSWORD_NEEDLE, _line_at(block, pos)[1])

    def _starts(self, block: bytes) -> None:
        """Count broker starts by the build line each start logs first."""
        for needle in START_NEEDLES:
            pos = block.find(needle)
            while pos >= 0:
                start, end = _line_at(block, pos)
                own = _STAMPED.match(block, start)
                if own and (needle != START_NEEDLES[1] or b"Version: " in block[start:end]):
                    self._count_start(own[1])
                pos = block.find(needle, end)

    def _count_start(self, stamp: bytes) -> None:
        """Count one start at `stamp`."""
        scan = self.scan
        scan.starts += 1
        scan.starts_window += self.in_window(stamp)
        when = stamp_seconds(stamp)
        if when is not None:
            scan.last_start_at = (
                when if scan.last_start_at is None else max(scan.last_start_at, when)
            )

    def _resource(self, block: bytes) -> None:
        """Keep the newest periodic resource line."""
        pos = block.rfind(RESOURCE_NEEDLE)
        if pos < 0:
            return
        start, end = _line_at(block, pos)
        line = block[start:end]
        own = _STAMPED.match(line)
        self.scan.resource_line = shown(line, MAX_RESOURCE_LINE)
        self.scan.resource_at = stamp_seconds(own[1]) if own else None


# -- the scan ---------------------------------------------------------------------------


def scan_logs(
    files: list[LogFile],
    scan: LogScan,
    *,
    budget: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> LogScan:
    """Stream the newest `budget` bytes of `files` (oldest first) into `scan` until `deadline`.

    `scan` is filled as the read goes: a caller that gave up waiting (a read hung on a
    dead mount) still sees how many bytes were read.
    """
    scan.bytes_total = sum(f.size for f in files)
    scanner = _Scanner(scan)

    def keep_going() -> bool:
        if clock() >= deadline:
            scan.stopped_by_deadline = True
        return not scan.stopped_by_deadline

    for log, start in zip(files, plan_reads(files, budget), strict=True):
        scan.bytes_budget_skipped += start
        before = scan.stats.bytes_read
        status = _scan_file(scanner, log, start, keep_going)
        read = scan.stats.bytes_read - before
        scan.files.append(_file_row(log, start, read, status))
        if status.startswith("unreadable"):
            scan.problems.append((log.node_path, status.partition(": ")[2]))
    return scan


def _scan_file(scanner: _Scanner, log: LogFile, start: int, keep_going: Callable[[], bool]) -> str:
    """Read one file from `start` through the scanner; how it went, in words."""
    if start >= log.size:
        return "not read: older than the byte budget"
    if not keep_going():
        return "not read: the deadline came first"
    state = _FileState(log, from_start=start == 0)
    try:
        with open_log(log.path) as fh:
            blocks = line_blocks(fh, start, log.size, scanner.scan.stats, keep_going)
            for offset, block in blocks:
                scanner.feed(state, offset, block)
    except OSError as exc:
        return f"unreadable: {_open_problem(exc)}"
    finally:
        scanner.end_file(state)
    if scanner.scan.stopped_by_deadline:
        return "partly read: the deadline came"
    return "read" if start == 0 else "read from the byte budget's start"


def _file_row(log: LogFile, start: int, read: int, status: str) -> dict[str, Any]:
    """One file as a row of the check's data."""
    return {
        "path": log.node_path,
        "size": log.size,
        "mtime": utc_iso(log.mtime),
        "read_from": start,
        "bytes_read": read,
        "status": status,
    }
