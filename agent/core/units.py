"""How sizes are written in findings and summaries."""

from __future__ import annotations

GIB = 1024**3
MIB = 1024**2


def mib_or_gib(n: float) -> str:
    """Bytes as a short size: '512 MiB' below 1 GiB, else '12.3 GiB'."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"
