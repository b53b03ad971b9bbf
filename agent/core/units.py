"""How sizes and durations are written in findings, summaries and the report."""

from __future__ import annotations

from datetime import UTC, datetime

GIB = 1024**3
MIB = 1024**2
#: ISO 8601 UTC with a Z, to the second: the supervisor's timestamps, and ours.
ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"


def as_utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is taken as UTC already (never as local time)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def utc_iso(when: datetime | float | None) -> str:
    """'2026-11-25T10:00:00Z' for a datetime (naive ones taken as UTC) or epoch seconds;
    '' for None or a time out of range."""
    if when is None:
        return ""
    try:
        if isinstance(when, datetime):
            return as_utc(when).strftime(ISO_UTC)
        return datetime.fromtimestamp(when, UTC).strftime(ISO_UTC)
    except (ValueError, OverflowError, OSError):
        return ""


def mib_or_gib(n: float) -> str:
    """Bytes as a short size: '512 MiB' below 1 GiB, else '12.3 GiB'."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, bytes without decimals)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_duration(seconds: float) -> str:
    """Roughly how long: '12 d 3 h', '4 h 10 min', '7 min', '30 s'."""
    whole = int(seconds)
    if whole < 60:
        return f"{max(whole, 0)} s"
    days, rem = divmod(whole // 60, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


def from_utc_iso(text: str) -> datetime:
    """The aware datetime of a time utc_iso wrote ('2026-11-25T10:00:00Z')."""
    return datetime.strptime(text, ISO_UTC).replace(tzinfo=UTC)
