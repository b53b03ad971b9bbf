"""What the SRE sees while a snapshot runs: live progress on a TTY, plain lines otherwise.

All of it is best effort: a stderr closed at start, a pipe whose reader quit
(`2>&1 | head -1`) or a terminal that hung up ends the display, never the snapshot.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from snapshot_agent.core.check import Check
from snapshot_agent.core.printable import printable
from snapshot_agent.core.results import STATUS_ORDER, Result, Status
from snapshot_agent.pipeline.record import SnapshotRecord

STYLES = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "magenta",
    Status.TIMEOUT: "red",
    Status.SKIPPED: "dim",
}
#: Statuses worth a line in the final summary.
NOTABLE = (Status.FAIL, Status.ERROR, Status.TIMEOUT, Status.WARN)
#: What writing to a reader that is gone raises (ValueError: a stream closed under us).
GONE = (OSError, ValueError)


class PlainProgress:
    """One line per finished check; for logs, pipes and CI."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        # Never print(file=None): with stderr closed at start that is stdout.
        self.stream: TextIO | None = stream if stream is not None else sys.stderr

    def started(self, check: Check) -> None:
        """Nothing to print until it ends."""

    def finished(self, check: Check, result: Result) -> None:
        """`[ 3/30] pass     cpu.load  0.01s  summary`."""
        self.done += 1
        if self.stream is None:
            return
        width = len(str(self.total))
        try:
            print(
                f"[{self.done:>{width}}/{self.total}] {result.status:<8} "
                f"{printable(check.id):<24} {result.duration_ms / 1000:6.2f}s  "
                f"{printable(result.summary)}",
                file=self.stream,
                flush=True,
            )
        except GONE:
            self.stream = None  # the reader is gone: stop telling, keep snapshotting

    def tick(self) -> None:
        """Plain output has nothing to refresh."""

    def close(self) -> None:
        """Nothing to tear down."""


class LiveProgress:
    """A live panel: done/total, elapsed, and the checks still running."""

    def __init__(self, total: int, console: Console) -> None:
        self.total = total
        self.console = console
        self.start = time.monotonic()
        self.running: dict[str, float] = {}
        self.counts: dict[Status, int] = {}
        self.gone = False
        # auto_refresh would start a thread; the runner forks, so we refresh from tick().
        self.live = Live(self._render(), console=console, auto_refresh=False, transient=True)
        self._show(self.live.start)
        self._last = 0.0

    def started(self, check: Check) -> None:
        """Remember when it started."""
        self.running[check.id] = time.monotonic()

    def finished(self, check: Check, result: Result) -> None:
        """Count it and print notable results above the live panel."""
        self.running.pop(check.id, None)
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if result.status in NOTABLE:
            line = Text()
            line.append(f"{result.status:<8}", style=STYLES[result.status])
            line.append(f" {printable(check.id)}: {printable(result.summary)}")
            self._show(lambda: self.console.print(line))

    def tick(self) -> None:
        """Redraw at most ten times a second."""
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._show(lambda: self.live.update(self._render(), refresh=True))

    def close(self) -> None:
        """Remove the live panel."""
        self._show(self.live.stop)

    def _show(self, draw: Callable[[], None]) -> None:
        """Draw unless the terminal is gone (it hung up, or its reader quit)."""
        if self.gone:
            return
        try:
            draw()
        except GONE:
            self.gone = True

    def _render(self) -> Group:
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.start
        head = Text(f"snapshot: {done}/{self.total} checks done, {elapsed:.1f} s  ")
        for status in STATUS_ORDER:
            if self.counts.get(status):
                head.append(f"{self.counts[status]} {status}  ", style=STYLES[status])
        now = time.monotonic()
        lines = [
            Text(f"  running {printable(cid)} ({now - t0:.1f} s)", style="dim")
            for cid, t0 in sorted(self.running.items(), key=lambda kv: kv[1])[:10]
        ]
        return Group(head, *lines)


def make_progress(total: int) -> PlainProgress | LiveProgress:
    """Live panel on a terminal, plain lines otherwise."""
    console = Console(stderr=True)
    if console.is_terminal:
        return LiveProgress(total, console)
    return PlainProgress(total)


def print_summary(record: SnapshotRecord, stream: TextIO | None = None) -> None:
    """The closing table on stderr; nothing when it is closed or gone."""
    stream = stream if stream is not None else sys.stderr
    if stream is None:  # closed at start: Console(file=None) would print on stdout
        return
    with contextlib.suppress(*GONE):  # for a person: the archive and the exit code stand
        _summary(record, Console(file=stream, highlight=False))


def _summary(record: SnapshotRecord, console: Console) -> None:
    """Counts by status, then every notable check with its summary, then the archive."""
    counts = record.summary  # keyed by status name: a Status (a StrEnum) looks it up
    line = Text("Summary: ")
    for status in STATUS_ORDER:
        line.append(f"{counts[status]} {status}", style=STYLES[status] if counts[status] else "dim")
        line.append("  ")
    console.print(line)
    notable = [c for c in record.checks if c.status in NOTABLE]
    if notable:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("status")
        table.add_column("check")
        table.add_column("summary", overflow="fold")
        rank = {s: i for i, s in enumerate(STATUS_ORDER)}
        for check in sorted(notable, key=lambda c: (rank[c.status], c.id)):
            table.add_row(
                Text(str(check.status), style=STYLES[check.status]),
                printable(check.id),
                printable(check.summary),
            )
        console.print(table)
    console.print(f"Archive: {record.archive.uri if record.archive else '(none)'}")
