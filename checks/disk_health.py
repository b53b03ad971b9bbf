"""disk.health: drive health from SMART (smartctl) or the NVMe health log (nvme-cli).

Virtual disks (virtio, cloud volumes) have no SMART data and are reported as such; NVMe
namespaces are queried through their controller (/dev/nvme0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.commands import CommandResult
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity

_NOT_DISKS = re.compile(r"^(?:loop|ram|zram|dm-|md|sr|fd|nbd|rbd|drbd|bcache|pmem)")
_NVME_NS = re.compile(r"^(nvme\d+)(?:c\d+)?n\d+$")
#: Vendor/model substrings of disks a hypervisor or cloud emulates (no SMART to read).
_VIRTUAL_MODELS = (
    "qemu",
    "vmware",
    "virtual",
    "vbox",
    "msft",
    "amazon elastic block store",
    "google",
    "persistentdisk",
    "0x1af4",  # virtio PCI vendor id
    "xen",
)
_NVME_WARNINGS = (
    (0x01, "available spare below threshold"),
    (0x02, "temperature outside limits"),
    (0x04, "reliability degraded by media errors"),
    (0x08, "media placed in read-only mode"),
    (0x10, "volatile memory backup failed"),
    (0x20, "persistent memory region read-only"),
)


@dataclass(frozen=True)
class BlockDisk:
    """A whole disk found in /sys/block."""

    name: str  # sda, nvme0n1
    device: str  # what to query: /dev/sda, /dev/nvme0 (the controller)
    kind: str  # ata-or-scsi | nvme | virtual
    model: str = ""


@dataclass
class DiskHealth:
    """What SMART or the NVMe health log says about one disk."""

    device: str
    kind: str
    model: str = ""
    serial: str = ""
    source: str = ""  # smartctl | nvme-cli
    supported: bool = True
    note: str = ""
    passed: bool | None = None
    temperature_c: float | None = None
    power_on_hours: int | None = None
    reallocated: int | None = None
    pending: int | None = None
    offline_uncorrectable: int | None = None
    grown_defects: int | None = None
    critical_warning: int | None = None
    percentage_used: int | None = None
    available_spare: int | None = None
    media_errors: int | None = None


def _num(value: Any) -> int | None:
    """An integer from JSON that may be a number, a numeric string or {"value": n}."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return int(float(str(value).replace(",", "").strip()))
    except ValueError:
        return None


def _fill_nvme_log(health: DiskHealth, log: dict[str, Any], kelvin: bool) -> None:
    """Fields of an NVMe SMART/health log (smartctl or nvme-cli spelling)."""
    health.critical_warning = _num(log.get("critical_warning"))
    temp = _num(log.get("temperature"))
    if temp is not None:
        health.temperature_c = temp - 273 if kelvin or temp > 200 else temp
    health.percentage_used = _num(log.get("percentage_used", log.get("percent_used")))
    health.available_spare = _num(log.get("available_spare", log.get("avail_spare")))
    health.media_errors = _num(log.get("media_errors"))
    health.power_on_hours = _num(log.get("power_on_hours"))


def parse_smartctl_json(text: str, device: str, kind: str = "") -> DiskHealth:
    """Parse `smartctl -i -H -A --json` output (ATA, SCSI or NVMe) into DiskHealth."""
    health = DiskHealth(device=device, kind=kind, source="smartctl")
    try:
        doc = json.loads(text)
    except ValueError:
        health.supported, health.note = False, "smartctl printed no JSON"
        return health
    if not isinstance(doc, dict):
        health.supported, health.note = False, "smartctl printed unexpected JSON"
        return health
    health.model = str(doc.get("model_name") or doc.get("scsi_model_name") or "")
    health.serial = str(doc.get("serial_number") or "")
    proto = str((doc.get("device") or {}).get("protocol") or "")
    health.kind = proto.lower() or kind or "unknown"
    errors = [
        str(m.get("string", ""))
        for m in (doc.get("smartctl") or {}).get("messages") or []
        if isinstance(m, dict) and m.get("severity") == "error"
    ]
    support = doc.get("smart_support") or {}
    status = doc.get("smart_status")
    if isinstance(status, dict) and "passed" in status:
        health.passed = bool(status["passed"])
    if support.get("available") is False or (health.passed is None and errors):
        health.supported = False
        health.note = "; ".join(errors) or "device has no SMART capability"
        return health
    if support.get("enabled") is False:
        health.note = "SMART is disabled on the drive (`smartctl -s on`)"
    temp = (doc.get("temperature") or {}).get("current")
    health.temperature_c = _num(temp)
    health.power_on_hours = _num((doc.get("power_on_time") or {}).get("hours"))
    table = (doc.get("ata_smart_attributes") or {}).get("table") or []
    for attr in table:
        if not isinstance(attr, dict):
            continue
        raw = _num((attr.get("raw") or {}).get("value"))
        ident = attr.get("id")
        if ident == 5:
            health.reallocated = raw
        elif ident == 197:
            health.pending = raw
        elif ident == 198:
            health.offline_uncorrectable = raw
    if "scsi_grown_defect_list" in doc:
        health.grown_defects = _num(doc.get("scsi_grown_defect_list"))
    nvme = doc.get("nvme_smart_health_information_log")
    if isinstance(nvme, dict):
        _fill_nvme_log(health, nvme, kelvin=False)
        if health.temperature_c is None:
            health.temperature_c = _num(temp)
    return health


def parse_nvme_smart_log(text: str, device: str) -> DiskHealth:
    """Parse `nvme smart-log -o json` (nvme-cli 1.x/2.x; temperature in kelvin)."""
    health = DiskHealth(device=device, kind="nvme", source="nvme-cli")
    try:
        doc = json.loads(text)
    except ValueError:
        health.supported, health.note = False, "nvme smart-log printed no JSON"
        return health
    if not isinstance(doc, dict) or "critical_warning" not in doc:
        health.supported, health.note = False, "nvme smart-log printed no health log"
        return health
    _fill_nvme_log(health, doc, kelvin=True)
    return health


def list_disks(ctx: Context) -> list[BlockDisk]:
    """Whole physical-looking disks from /sys/block; NVMe namespaces map to their controller."""
    try:
        names = sorted(os.listdir(ctx.path("/sys/block")))
    except OSError:
        return []
    disks: dict[str, BlockDisk] = {}
    for name in names:
        if _NOT_DISKS.match(name):
            continue
        if (ctx.read_optional(f"/sys/block/{name}/hidden") or "0").strip() == "1":
            continue  # NVMe multipath path devices: the visible namespace covers them
        vendor = (ctx.read_optional(f"/sys/block/{name}/device/vendor") or "").strip()
        model = (ctx.read_optional(f"/sys/block/{name}/device/model") or "").strip()
        nvme = _NVME_NS.match(name)
        device = f"/dev/{nvme.group(1)}" if nvme else f"/dev/{name}"
        ident = f"{vendor} {model}".lower()
        if name.startswith(("vd", "xvd")) or any(v in ident for v in _VIRTUAL_MODELS):
            kind = "virtual"
        else:
            kind = "nvme" if nvme else "ata-or-scsi"
        disks.setdefault(device, BlockDisk(name, device, kind, model or vendor))
    return list(disks.values())


def read_health(ctx: Context, disks: list[BlockDisk], have: dict[str, str]) -> list[DiskHealth]:
    """Query each physical disk with nvme-cli or smartctl, whichever is installed."""
    out: list[DiskHealth] = []
    for disk in disks:
        base = disk.device.rsplit("/", 1)[-1]
        if disk.kind == "virtual":
            out.append(
                DiskHealth(
                    disk.device,
                    "virtual",
                    disk.model,
                    supported=False,
                    note="virtual disk: the hypervisor exposes no SMART data",
                )
            )
            continue
        result: CommandResult
        if disk.kind == "nvme" and "nvme" in have:
            argv = [have["nvme"], "smart-log", disk.device, "-o", "json"]
            result = ctx.run(argv, timeout_s=8, save_as=f"nvme-smart-log-{base}.json")
            health = parse_nvme_smart_log(result.stdout, disk.device)
        elif "smartctl" in have:
            argv = [have["smartctl"], "-i", "-H", "-A", "--json", disk.device]
            result = ctx.run(argv, timeout_s=8, save_as=f"smartctl-{base}.json")
            health = parse_smartctl_json(result.stdout, disk.device, disk.kind)
        else:
            need = "nvme-cli or smartmontools" if disk.kind == "nvme" else "smartmontools"
            out.append(
                DiskHealth(
                    disk.device, disk.kind, disk.model, supported=False, note=f"install {need}"
                )
            )
            continue
        if not health.model:
            health.model = disk.model
        if result.timed_out or result.error:
            health.supported, health.note = False, result.describe()
        out.append(health)
    return out


def _health_remedy(h: DiskHealth, what: str) -> str:
    """Replacement advice for a failing drive."""
    detail = f"`nvme smart-log {h.device}`" if h.kind == "nvme" else f"`smartctl -a {h.device}`"
    return (
        f"{what} Look at {detail} and dmesg for I/O errors; move Iggy's data (or this node's "
        "partitions, via replication or a restore) off the drive and replace it before it "
        "corrupts segments."
    )


def _overall(h: DiskHealth) -> str:
    """One word for the table: passed, FAILED or n/a."""
    if not h.supported:
        return "n/a"
    if h.passed is False or h.critical_warning:
        return "FAILED"
    return "passed" if h.passed or h.critical_warning == 0 else "n/a"


#: Reallocated, pending, offline-uncorrectable or grown-defect sectors (each count alone).
SECTORS = Band("sectors", warn=1, parse=int)
#: NVMe "percentage used": the share of the rated write endurance spent.
NVME_USED_PCT = Band("nvme_used_pct", warn=80.0)
#: NVMe media and data integrity errors the controller could not recover.
MEDIA_ERRORS = Band("media_errors", warn=1, parse=int)


def _no_health_data(h: DiskHealth) -> Finding:
    """INFO: the disk gave no SMART or NVMe health data to judge."""
    return Finding(
        Severity.INFO,
        f"{h.device}: no health data ({h.note})",
        "Virtual and RAID-backed disks hide SMART: check the hypervisor, cloud "
        "console or RAID tool (`smartctl -d megaraid,N`, `storcli`) instead.",
        h.device,
    )


def _self_assessment_failed(h: DiskHealth, thresholds: dict[str, Any]) -> Finding | None:
    """FAIL: the drive's SMART overall-health self-assessment predicts its failure."""
    if h.passed is not False:
        return None
    return Finding(
        Severity.FAIL,
        f"{h.device} ({h.model}): SMART overall-health self-assessment FAILED",
        _health_remedy(h, "The drive predicts its own failure."),
        h.device,
    )


def _failing_sectors(h: DiskHealth, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: bad-sector counts reach the SECTORS band (data the drive lost or moved)."""
    bad = {
        "reallocated": h.reallocated,
        "pending": h.pending,
        "offline uncorrectable": h.offline_uncorrectable,
        "grown defect": h.grown_defects,
    }
    present = {k: v for k, v in bad.items() if v is not None}
    severity = SECTORS.grade(max(present.values()), thresholds) if present else None
    if severity is None:
        return None
    counts = [f"{v} {k}" for k, v in present.items() if SECTORS.grade(v, thresholds)]
    return Finding(
        severity,
        f"{h.device} ({h.model}) has {' and '.join(counts)} sectors",
        _health_remedy(
            h,
            f"Sectors are failing: run `smartctl -t long {h.device}` and watch "
            "whether the counts grow; pending sectors are unreadable data.",
        ),
        h.device,
    )


def _nvme_critical_warning(h: DiskHealth, thresholds: dict[str, Any]) -> Finding | None:
    """FAIL: the NVMe controller raises a critical warning bit."""
    if not h.critical_warning:
        return None
    bits = [t for bit, t in _NVME_WARNINGS if h.critical_warning & bit] or ["unknown bit"]
    return Finding(
        Severity.FAIL,
        f"{h.device} ({h.model}) reports NVMe critical warning "
        f"0x{h.critical_warning:02x}: {', '.join(bits)}",
        _health_remedy(h, "The controller flags the drive as failing."),
        h.device,
    )


def _flash_worn(h: DiskHealth, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: the flash has spent the NVME_USED_PCT share of its rated endurance."""
    severity = NVME_USED_PCT.grade(h.percentage_used, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{h.device} ({h.model}) has used {h.percentage_used} % of its rated "
        f"endurance (at or over {NVME_USED_PCT.limit(severity, thresholds):g} %)",
        "Plan a replacement: a write-heavy broker wears flash fast; past 100 % the "
        "vendor no longer guarantees the drive.",
        h.device,
    )


def _media_errors(h: DiskHealth, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: the drive logged unrecovered media errors reaching the MEDIA_ERRORS band."""
    severity = MEDIA_ERRORS.grade(h.media_errors, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{h.device} ({h.model}) logged {h.media_errors} media errors "
        "(unrecovered data integrity errors)",
        _health_remedy(h, "Media errors mean data the drive could not read back."),
        h.device,
    )


#: What is judged on a disk with health data, in the order the findings are listed.
HEALTH_RULES = (
    _self_assessment_failed,
    _failing_sectors,
    _nvme_critical_warning,
    _flash_worn,
    _media_errors,
)


def _health_row(h: DiskHealth) -> dict[str, Any]:
    """One disk's health for the table."""
    return {
        "device": h.device,
        "kind": h.kind,
        "model": h.model,
        "serial": h.serial,
        "source": h.source,
        "health": _overall(h),
        "temperature_c": h.temperature_c,
        "power_on_hours": h.power_on_hours,
        "reallocated": h.reallocated,
        "pending": h.pending,
        "critical_warning": h.critical_warning,
        "percentage_used": h.percentage_used,
        "available_spare": h.available_spare,
        "media_errors": h.media_errors,
        "note": h.note,
    }


def _health_ok(healths: list[DiskHealth]) -> str:
    """The summary when nothing is wrong: which disks were checked, which could not be."""
    checked = [h.device for h in healths if h.supported]
    unchecked = [h.device for h in healths if not h.supported]
    plural = "s" if len(checked) != 1 else ""
    ok = (
        f"{len(checked)} disk{plural} healthy ({', '.join(checked)})"
        if checked
        else "no health data"
    )
    if unchecked:
        ok += f"; no health data for {', '.join(unchecked)}"
    return ok


def judge_health(healths: list[DiskHealth], thresholds: dict[str, Any]) -> Result:
    """SMART verdicts: failed self-assessment or NVMe critical warning fail; wear warns."""
    findings: list[Finding] = []
    for h in healths:
        if not h.supported:
            findings.append(_no_health_data(h))
            continue
        findings += [f for rule in HEALTH_RULES if (f := rule(h, thresholds)) is not None]
    rows = [_health_row(h) for h in healths]
    return Result.from_findings(findings, ok=_health_ok(healths), data={"disks": rows})


def find_tool(binary: str) -> str | None:
    """Absolute path of an installed tool; sbin included (smartctl and nvme live there)."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


@check(
    id="disk.health",
    category="disk",
    title="Disk health (SMART / NVMe)",
    description="SMART overall health, failing sectors and NVMe critical warnings, wear and "
    "media errors.",
    requires=Requirements(root=True, paths=("/sys/block",)),
    timeout_s=30,
    bands=(SECTORS, NVME_USED_PCT, MEDIA_ERRORS),
)
def disk_health(ctx: Context) -> Result:
    """Read SMART / NVMe health for each physical disk and judge it.

    Verdicts:
    - pass: a SATA SSD with no bad sectors after 21,000 hours [test_smartctl_ata_verdicts]
    - pass: an NVMe drive with 512 error-log entries and 41 unsafe shutdowns but no media
      error nor warning (lifetime counters that look alarming)
      [test_nvme_cli_verbose_critical_warning_object]
    - pass: a virtual disk without SMART is a note
      [test_smartctl_on_a_virtual_disk_is_a_note_not_an_error]
    - skipped: only virtual disks, or no smartctl/nvme installed
      [test_disk_health_skips_virtual_only_and_without_tools]
    - warn: 8 reallocated and 2 pending sectors [test_smartctl_ata_verdicts]
    - warn: an NVMe drive at 85 % of its rated endurance [test_smartctl_nvme_wear_warns]
    - fail: the SMART self-assessment FAILED [test_smartctl_ata_verdicts]
    - fail: an NVMe critical warning (reliability degraded) [test_nvme_cli_critical_warning_fails]

    Counters are the drive's lifetime totals (sectors, media errors, wear): they only
    grow, and any bad sector is worth a look, so they are judged as they are.
    """
    disks = list_disks(ctx)
    if not disks:
        return Result.skipped("no disks found in /sys/block")
    physical = [d for d in disks if d.kind != "virtual"]
    if not physical:
        names = ", ".join(d.name for d in disks)
        return Result.skipped(
            f"only virtual disks ({names}): the hypervisor exposes no SMART data; "
            "the provider monitors the hardware"
        )
    have = {b: p for b in ("smartctl", "nvme") if (p := find_tool(b))}
    if not have:
        return Result.skipped(
            "install smartmontools to check disk health (and nvme-cli for NVMe drives)"
        )
    return judge_health(read_health(ctx, disks, have), ctx.thresholds)
