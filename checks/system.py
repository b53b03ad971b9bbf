"""System identity checks."""

from __future__ import annotations

from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.units import format_duration
from snapshot_agent.node.system import SystemFacts, placement, read_system


def judge_system(facts: SystemFacts, thresholds: dict[str, Any]) -> Result:
    """Identity is informational; a very recent boot is worth pointing out."""
    if not facts.os_release and not facts.kernel and facts.uptime_s is None:
        return Result.skipped(
            "nothing identifies this node: /etc/os-release, /usr/lib/os-release, "
            "/proc/sys/kernel/osrelease and /proc/uptime are all missing or unreadable "
            "(is /proc mounted?)"
        )
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
    """Who and what this node is.

    Verdicts:
    - pass: a Debian 12 VM on AWS, up a day [test_system_info_reads_identity]
    - pass: a Kubernetes container that booted 5 minutes ago (the recent boot is noted)
      [test_system_info_notes_recent_boot_and_container]
    - pass: a garbage /proc/uptime: uptime unknown, the rest reported
      [test_system_info_garbage_uptime_is_unknown]
    - skipped: nothing identifies the node (no os-release, kernel release or uptime)
      [test_system_info_survives_an_empty_node]
    """
    facts = read_system(ctx)
    if (text := ctx.read_optional("/etc/os-release")) is not None:
        ctx.artifact("os-release", text)
    return judge_system(facts, ctx.thresholds)
