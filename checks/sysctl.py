"""Kernel parameter (sysctl) checks."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from snapshot_agent.check import Requirements, check
from snapshot_agent.context import Context
from snapshot_agent.results import Result, Status

MAX_KEYS = 20000
VALUE_LIMIT = 4096


@dataclass
class SysctlDump:
    """Every readable key under /proc/sys."""

    values: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> reason
    write_only: int = 0
    capped: bool = False


def read_sysctls(ctx: Context) -> SysctlDump:
    """Walk /proc/sys; keys are dotted like `sysctl -a` prints them."""
    root = ctx.path("/proc/sys")
    dump = SysctlDump()
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, root).replace("/", ".")
            if len(dump.values) >= MAX_KEYS:
                dump.capped = True
                return dump
            try:
                if not os.stat(path).st_mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
                    dump.write_only += 1
                    continue
                with open(path, "rb") as fh:
                    raw = fh.read(VALUE_LIMIT)
            except OSError as exc:
                dump.unreadable[key] = exc.strerror or str(exc)
                continue
            dump.values[key] = " ".join(raw.decode("utf-8", "replace").split())
    return dump


@check(
    id="sysctl.all",
    category="sysctl",
    title="All kernel parameters",
    description="Every readable key under /proc/sys, as data and as a `sysctl -a` style file.",
    requires=Requirements(paths=("/proc/sys",)),
    timeout_s=10,
)
def sysctl_all(ctx: Context) -> Result:
    """Dump /proc/sys; judging specific keys is the job of the sysctl.* checks."""
    dump = read_sysctls(ctx)
    ctx.artifact("sysctl.txt", "".join(f"{k} = {v}\n" for k, v in dump.values.items()))
    summary = f"{len(dump.values)} kernel parameters read"
    if dump.unreadable:
        summary += f", {len(dump.unreadable)} unreadable (not root?)"
    if dump.capped:
        summary += f", stopped at {MAX_KEYS} keys"
    return Result(
        Status.PASS,
        summary,
        data={
            "count": len(dump.values),
            "unreadable": dump.unreadable,
            "write_only": dump.write_only,
            "values": dump.values,
        },
    )
