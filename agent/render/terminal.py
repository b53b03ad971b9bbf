"""What the SRE sees while a snapshot runs: live progress on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from snapshot_agent.core.check import Check
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


class PlainProgress:
    """One line per finished check; for logs, pipes and CI."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr

    def started(self, check: Check) -> None:
        """Nothing to print until it ends."""

    def finished(self, check: Check, result: Result) -> None:
        """`[ 3/30] pass     cpu.load  0.01s  summary`."""
        self.done += 1
        width = len(str(self.total))
        print(
            f"[{self.done:>{width}}/{self.total}] {result.status:<8} {check.id:<24} "
            f"{result.duration_ms / 1000:6.2f}s  {result.summary}",
            file=self.stream,
            flush=True,
        )

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
        # auto_refresh would start a thread; the runner forks, so we refresh from tick().
        self.live = Live(self._render(), console=console, auto_refresh=False, transient=True)
        self.live.start()
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
            line.append(f" {check.id}: {result.summary}")
            self.console.print(line)

    def tick(self) -> None:
        """Redraw at most ten times a second."""
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self.live.update(self._render(), refresh=True)

    def close(self) -> None:
        """Remove the live panel."""
        self.live.stop()

    def _render(self) -> Group:
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.start
        head = Text(f"snapshot: {done}/{self.total} checks done, {elapsed:.1f} s  ")
        for status in STATUS_ORDER:
            if self.counts.get(status):
                head.append(f"{self.counts[status]} {status}  ", style=STYLES[status])
        now = time.monotonic()
        lines = [
            Text(f"  running {cid} ({now - t0:.1f} s)", style="dim")
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
    """The closing table: counts by status, then every notable check with its summary."""
    console = Console(file=stream or sys.stderr, highlight=False)
    counts = {s: 0 for s in STATUS_ORDER}
    for check in record.checks:
        counts[check.status] += 1
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
                Text(str(check.status), style=STYLES[check.status]), check.id, check.summary
            )
        console.print(table)
    console.print(f"Archive: {record.archive.uri if record.archive else '(none)'}")
