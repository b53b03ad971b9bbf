"""disk.usage: a bar per filesystem, used against its size, in its own verdict's colour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.core.units import GIB, format_bytes
from snapshot_agent.render.charts import bars, svg, values
from snapshot_agent.render.charts.chart import Chart
from snapshot_agent.render.charts.findings import RANK, worst_by_subject
from snapshot_agent.render.words import counted

CHECK_ID = "disk.usage"
MAX_BARS = 24
#: A row's own status word -> the page's status.
ROW_STATUS = {"ok": "pass", "warn": "warn", "fail": "fail", "not responding": "fail"}


def _status(row: Mapping[str, Any], named: str | None) -> str:
    """The row's verdict, made worse by a finding that names the mount."""
    word = values.text(row.get("status")) or ""
    own = ROW_STATUS.get(word, "error" if word.startswith("error") else "neutral")
    return named if named and RANK[named] < RANK.get(own, 9) else own


def _row(row: Mapping[str, Any], mount: str, status: str) -> tuple[bars.Bar, str] | None:
    """The bar of one filesystem and its sentence; None when it has nothing to show."""
    size, avail = values.amount(row.get("size_gib")), values.amount(row.get("avail_gib"))
    pct = values.amount(row.get("used_pct"))
    if pct is None and size and avail is not None and avail <= size:
        pct = 100.0 * (1 - avail / size)
    verdict = "" if status in ("pass", "neutral") else f" · {status}"
    said = {"pass": "; ok", "neutral": ""}.get(status, f"; {status}")
    name = svg.clean(mount, 80)
    if pct is None or size is None or avail is None:
        word = values.text(row.get("status"))
        if not word or status in ("pass", "neutral"):
            return None
        words = svg.clean(word, 40)
        return bars.Bar(mount, None, words + verdict, status), f"{name}: {words}{said}"
    pct = min(pct, 100.0)
    words = f"{pct:.0f}% used · {format_bytes(avail * GIB)} free of {format_bytes(size * GIB)}"
    inodes = values.amount(row.get("inodes_used_pct"))
    extra = f"; inodes {inodes:.0f}% used" if inodes is not None else ""
    bar = bars.Bar(mount, pct / 100, words + verdict, status, words, _limit(row, pct, avail))
    return bar, f"{name}: {words.replace(' · ', ', ')}{said}{extra}"


def _limit(row: Mapping[str, Any], pct: float, avail: float) -> float | None:
    """Where the warning starts on the bar: usable space less the free space it must keep."""
    need = values.amount(row.get("warn_below_gib"))
    if need is None or pct >= 99.9:
        return None
    usable = avail / (1 - pct / 100)  # df's percentage is of used + available
    return max(0.0, 1 - need / usable) if usable > 0 else None


def charts(check: Mapping[str, Any], report: Mapping[str, Any], uid: str) -> list[Chart]:
    """The disk usage chart, when at least one filesystem has a size."""
    named = worst_by_subject(check)
    found: list[tuple[bars.Bar, str]] = []
    for row in values.rows(values.mapping(check.get("data")).get("filesystems")):
        mount = values.text(row.get("mount"))
        shown = _row(row, mount, _status(row, named.get(mount))) if mount else None
        if shown is not None:
            found.append(shown)
    if not any(bar.fraction is not None for bar, _ in found):
        return []
    order = {"fail": 0, "error": 1, "warn": 2}
    found.sort(key=lambda br: (order.get(br[0].status, 3), -(br[0].fraction or 0.0)))
    shown = found[:MAX_BARS]
    more = len(found) - len(shown)
    hidden = f"{counted(more, 'more filesystem')} in the table below" if more > 0 else ""
    drawn = [bar for bar, _ in shown]
    ticks = (
        "the tick marks where a filesystem starts to warn" if any(b.limit for b in drawn) else ""
    )
    footer = "; ".join(filter(None, [ticks, hidden]))
    title = "Disk usage per mount"
    desc = ". ".join(svg.clean(said, 200) for _, said in shown) + (
        f". {hidden}." if hidden else "."
    )
    return [
        Chart(CHECK_ID, title, bars.bar_chart(uid, "disk", title, desc, drawn, footer), True, uid)
    ]
