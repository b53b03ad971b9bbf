"""cpu.usage: how busy each core was over the check's window, as bars or a heat grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.render.charts import bars, grid, svg, values
from snapshot_agent.render.charts.chart import Chart
from snapshot_agent.render.charts.findings import worst_by_subject
from snapshot_agent.render.words import counted

CHECK_ID = "cpu.usage"
#: Up to this many cores get a bar each; more get a heat grid.
MAX_BARS = 16
MAX_CELLS = 128
#: Cores listed by name in the description (when more, the busiest of them).
MAX_SAID = 16


Core = tuple[str, float, float | None]  # name, busy %, iowait %


def _cores(data: Mapping[str, Any]) -> list[Core]:
    """(name, busy %, iowait %) of every core with a busy share."""
    out = []
    for row in values.rows(data.get("per_core")):
        name, busy = values.text(row.get("cpu")), values.amount(row.get("busy_pct"))
        if name and busy is not None:
            out.append((name, min(busy, 100.0), values.amount(row.get("iowait_pct"))))
    return out


def _window(data: Mapping[str, Any]) -> str:
    """' over 0.53 s' when the window is known."""
    seconds = values.amount(data.get("interval_s"))
    return f" over {seconds:.2f} s" if seconds else ""


def _words(busy: float, iowait: float | None, flag: str) -> str:
    """'21% busy · iowait 4% · warn'."""
    text = f"{busy:.0f}% busy"
    text += f" · iowait {iowait:.0f}%" if iowait is not None else ""
    return text + (f" · {flag}" if flag else "")


def _desc(cores: list[Core], flagged: dict[str, str], window: str, overall: float | None) -> str:
    """Every core in words when few; the busiest and a count at 80 % or more when many."""
    listed = cores if len(cores) <= MAX_SAID else sorted(cores, key=lambda c: -c[1])[:MAX_SAID]
    said = "; ".join(
        f"{svg.clean(n, 20)} {_words(b, w, flagged.get(n, ''))}".replace(" · ", ", ")
        for n, b, w in listed
    )
    if len(cores) <= MAX_SAID:
        desc = (
            f"Busy share of each of {counted(len(cores), 'core')}{window}: {said}."
            if len(cores) > 1
            else f"Busy share of the one core{window}: {said}."
        )
    else:
        hot = sum(1 for _, b, _ in cores if b >= 80)
        desc = f"{len(cores)} cores{window}, {hot} at 80% busy or more; the busiest: {said}."
    return desc + (f" Overall {overall:.0f}% busy." if overall is not None else "")


def charts(check: Mapping[str, Any], report: Mapping[str, Any], uid: str) -> list[Chart]:
    """The per-core chart, when the check measured at least one core."""
    data = values.mapping(check.get("data"))
    cores = _cores(data)
    if not cores:
        return []
    flagged = worst_by_subject(check, split=",")
    mark = "pass" if check.get("status") in ("pass", "warn", "fail") else "neutral"
    window = _window(data)
    whole = values.mapping(data.get("overall"))
    overall, own = values.amount(whole.get("busy_pct")), values.amount(whole.get("agent_pct"))
    title = f"CPU busy per core{window}"
    desc = _desc(cores, flagged, window, overall)
    left_out = f" (this snapshot's own {own:.0f}% left out)" if own else ""
    footer = [f"overall {overall:.0f}% busy{window}{left_out}" if overall is not None else ""]
    if len(cores) <= MAX_BARS:
        drawn = [
            bars.Bar(n, b / 100, _words(b, w, flagged.get(n, "")), flagged.get(n, mark))
            for n, b, w in cores
        ]
        chart = bars.bar_chart(uid, "cpu", title, desc, drawn, footer[0])
    else:
        cells = [grid.Cell(n, b, n in flagged) for n, b, _ in cores[:MAX_CELLS]]
        hidden = cores[MAX_CELLS:]
        if hidden:
            name, busiest, _ = max(hidden, key=lambda c: c[1])
            footer.append(
                f"{counted(len(hidden), 'more core')} in the table below "
                f"(busiest {svg.clean(name, 20)} {busiest:.0f}%)"
            )
        footer.append("! = named by a finding" if flagged else "")
        chart = grid.grid_chart(uid, "cpu", title, desc, cells, "; ".join(filter(None, footer)))
    return [Chart(CHECK_ID, title, chart, True, uid)]
