"""System identity checks."""

from __future__ import annotations

from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.system import SystemFacts, placement, read_system


def format_duration(seconds: float) -> str:
    """12 d 3 h, 4 h 10 min, 7 min."""
    minutes = int(seconds // 60)
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


def judge_system(facts: SystemFacts, thresholds: dict[str, Any]) -> Result:
    """Identity is informational; a very recent boot is worth pointing out."""
    os_name = facts.os_release.get("PRETTY_NAME") or facts.os_release.get("NAME") or "unknown OS"
    parts = [os_name, f"kernel {facts.kernel or 'unknown'}"]
    if facts.uptime_s is not None:
        parts.append(f"up {format_duration(facts.uptime_s)}")
    parts.append(placement(facts.virtualization, facts.container))
    findings = []
    recent = float(thresholds["recent_boot_minutes"]) * 60
    if facts.uptime_s is not None and facts.uptime_s < recent:
        findings.append(
            Finding(
                Severity.INFO,
                f"the node booted {format_duration(facts.uptime_s)} ago",
                "If the reboot was not planned, read the previous boot's journal "
                "(`journalctl -b -1 -p warning`) and the kernel log for the cause.",
                "/proc/uptime",
            )
        )
    data = {
        "os": os_name,
        "os_id": facts.os_release.get("ID", ""),
        "os_version": facts.os_release.get("VERSION_ID", ""),
        "kernel": facts.kernel,
        "kernel_build": facts.kernel_version,
        "hostname": facts.hostname,
        "uptime_s": facts.uptime_s,
        "virtualization": facts.virtualization,
        "container": facts.container,
        "detected_by": facts.evidence,
    }
    return Result.from_findings(findings, ok=", ".join(parts), data=data)


@check(
    id="system.info",
    category="system",
    title="System identity",
    description="OS release, kernel, hostname, uptime, and whether this is a VM or a container.",
    timeout_s=8,
    thresholds={"recent_boot_minutes": 60},
)
def system_info(ctx: Context) -> Result:
    """Who and what this node is."""
    facts = read_system(ctx)
    if (text := ctx.read_optional("/etc/os-release")) is not None:
        ctx.artifact("os-release", text)
    return judge_system(facts, ctx.thresholds)
