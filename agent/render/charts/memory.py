"""memory.usage: host RAM (and the broker's cgroup limit, and swap) split into its uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.core.units import format_bytes
from snapshot_agent.render.charts import stacks, svg, values
from snapshot_agent.render.charts.chart import Chart

CHECK_ID = "memory.usage"
SWAP_ID = "memory.swap"
KIB = 1024


def _part(name: str, amount: float, whole: float, cls: str) -> stacks.Part:
    """A share with its size and percentage in words."""
    return stacks.Part(name, amount, cls, f"{format_bytes(amount)} ({100 * amount / whole:.1f}%)")


def _parts(named: list[tuple[str, float | None, str]]) -> list[stacks.Part]:
    """Parts of a whole from (name, bytes, class); none when a size is missing or all are 0."""
    if any(amount is None for _, amount, _ in named):
        return []
    whole = sum(amount or 0.0 for _, amount, _ in named)
    if whole <= 0:
        return []
    return [_part(name, amount or 0.0, whole, cls) for name, amount, cls in named]


def host_stack(data: Mapping[str, Any]) -> stacks.Stack | None:
    """/proc/meminfo as `free` splits it: processes, kernel, cache, buffers, free."""
    info: dict[str, float] = {}
    for row in values.rows(data.get("breakdown")):
        field, kib = values.text(row.get("field")), values.amount(row.get("kib"))
        if field and kib is not None:
            info[field] = kib * KIB
    total, free = info.get("MemTotal"), info.get("MemFree")
    if not total or free is None or "Cached" not in info:
        return None
    buffers = info.get("Buffers", 0.0)
    cache = info["Cached"] + info.get("SReclaimable", 0.0)
    apps = info.get("AnonPages")
    used = max(total - free - buffers - cache, 0.0)
    if apps is None:
        split = [("used", used, "mem-other")]
    else:
        apps = min(apps, used)
        split = [("processes", apps, "mem-apps"), ("kernel & other", used - apps, "mem-other")]
    parts = _parts(
        [
            *split,
            ("cache (reclaimable)", cache, "mem-cache"),
            ("buffers", buffers, "mem-buffers"),
            ("free", free, "mem-free"),
        ]
    )
    return stacks.Stack(f"host RAM {format_bytes(total)}", parts) if parts else None


def cgroup_stack(data: Mapping[str, Any]) -> stacks.Stack | None:
    """The cgroup's charge against its limit: anon, reclaimable, other, headroom."""
    cg = values.mapping(data.get("judged_against"))
    limit, charged = values.amount(cg.get("limit_bytes")), values.amount(cg.get("charged_bytes"))
    if cg.get("scope") != "cgroup" or not limit or charged is None:
        return None
    anon = min(values.amount(cg.get("anon_bytes")) or 0.0, charged)
    reclaimable = min(values.amount(cg.get("reclaimable_bytes")) or 0.0, charged - anon)
    parts = _parts(
        [
            ("processes", anon, "mem-apps"),
            ("kernel & other", charged - anon - reclaimable, "mem-other"),
            ("cache (reclaimable)", reclaimable, "mem-cache"),
            ("headroom", max(limit - charged, 0.0), "mem-free"),
        ]
    )
    path = svg.clean(values.text(cg.get("cgroup_path")) or "", 60)
    label = f"cgroup {path} limit {format_bytes(limit)}: {format_bytes(charged)} charged"
    return stacks.Stack(label, parts) if parts else None


def swap_stack(swap: Mapping[str, Any]) -> stacks.Stack | None:
    """Swap used and free, when there is swap."""
    total, used = values.amount(swap.get("total_kib")), values.amount(swap.get("used_kib"))
    if not total or used is None:
        return None
    used = min(used, total)
    parts = _parts([("used", used * KIB, "mem-swap"), ("free", (total - used) * KIB, "mem-free")])
    return stacks.Stack(f"swap {format_bytes(total * KIB)}", parts) if parts else None


def _said(stack: stacks.Stack) -> str:
    """'host RAM 23.5 GiB: processes 161.6 MiB (0.7%), ..., free 16.8 GiB (71.5%)'."""
    return f"{stack.label}: " + ", ".join(f"{p.name} {p.detail}" for p in stack.parts)


def charts(check: Mapping[str, Any], report: Mapping[str, Any], uid: str) -> list[Chart]:
    """The memory breakdown, when /proc/meminfo's figures are there."""
    data = values.mapping(check.get("data"))
    host = host_stack(data)
    if host is None:
        return []
    swap = next(
        (
            values.mapping(c.get("data"))
            for c in values.rows(report.get("checks"))
            if c.get("id") == SWAP_ID
        ),
        {},
    )
    wholes = [s for s in (host, cgroup_stack(data), swap_stack(swap)) if s is not None]
    title = "Memory breakdown"
    desc = ". ".join(_said(s) for s in wholes) + "."
    available = values.amount(data.get("available_kib"))
    if available is not None:
        desc += f" Available: {format_bytes(available * KIB)}."
    return [
        Chart(CHECK_ID, title, stacks.stack_chart(uid, "memory", title, desc, wholes), True, uid)
    ]
