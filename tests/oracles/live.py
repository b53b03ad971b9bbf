"""Running a check on this machine and asking an independent tool the same question.

An oracle test runs a check live (default roots: this machine), asks a tool nobody here
wrote (free, df, ss, ip, sysctl, dpkg-query, prlimit...) or reads /proc directly, and
compares facts, never verdicts. Values that move (memory, counters, sockets) are compared
with a tolerance, or read before and after the check so the check's value must lie in
between; a comparison that still disagrees is retried a few times before it counts.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import snapshot_agent.checks as checks_package
from snapshot_agent.core.check import Check
from snapshot_agent.core.results import Result, Status

from ..conftest import make_context

TOOL_TIMEOUT_S = 10
#: Facts need no long sampling window: the checks that sample (and stretch their window on a
#: quiet node) sample for a fifth of a second in oracle tests.
SHORT_WINDOW = {"sample_s": 0.2, "max_sample_s": 0.2}

GIB = 1024**3
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


@cache
def _checks() -> tuple[dict[str, Check], dict[str, str]]:
    """Every built-in check by id, and the check modules that failed to import (and why).

    Each module is imported on its own, so one module broken mid-edit does not take the
    oracles of every other check down with it.
    """
    found: dict[str, Check] = {}
    broken: dict[str, str] = {}
    for info in pkgutil.iter_modules(checks_package.__path__):
        name = f"{checks_package.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            broken[name] = f"{type(exc).__name__}: {exc}"
            continue
        found |= {v.id: v for v in vars(module).values() if isinstance(v, Check)}
    return found, broken


def declared(check_id: str) -> Check:
    """The built-in check `check_id`; fails naming the modules that did not import."""
    checks, broken = _checks()
    if check_id not in checks:
        pytest.fail(f"no built-in check {check_id}; modules that did not import: {broken}")
    return checks[check_id]


def check_module(check_id: str) -> ModuleType:
    """The module that declares `check_id` (for the lists it declares, e.g. its patterns)."""
    return sys.modules[declared(check_id).run.__module__]


def run_check(check_id: str, tmp_path: Path, thresholds: Mapping[str, Any] | None = None) -> Result:
    """Run a built-in check on this machine; skip the test when the check skips here."""
    found = declared(check_id)
    ctx = make_context(tmp_path, thresholds={**found.thresholds, **(thresholds or {})})
    why = found.requires.unmet(ctx.path)
    if why:
        pytest.skip(f"{check_id} does not run on this machine: {why}")
    result = found.run(ctx)
    if result.status == Status.SKIPPED:
        pytest.skip(f"{check_id} skipped on this machine: {result.summary}")
    assert result.status != Status.ERROR, f"{check_id} broke: {result.summary}"
    return result


def need(binary: str) -> str:
    """The path of `binary`, or skip the test naming it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed")
    return path


def tool(*argv: str, env: Mapping[str, str] | None = None) -> str:
    """stdout of an independent tool; skips when it is absent or refuses to answer."""
    need(argv[0])
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            env=dict(env) if env is not None else None,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`{' '.join(argv)}` did not answer within {TOOL_TIMEOUT_S} s")
    if proc.returncode != 0:
        pytest.skip(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
    return proc.stdout


def read(path: str) -> str:
    """A node file read directly (the oracle side); skips when it does not exist."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        pytest.skip(f"{path} does not exist on this machine")


def pick(row: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of `keys` present in a data row (keys get renamed), else None."""
    for key in keys:
        if key in row:
            return row[key]
    return None


def parse_size(text: str) -> float:
    """'4.3 GiB' / '512 KiB' (as the checks print sizes) -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(B|KiB|MiB|GiB|TiB)\s*", text)
    assert m, f"not a size: {text!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Mismatch:
    """One fact on which a check and an independent tool disagree."""

    key: str  # the check's data key, e.g. filesystems[/].avail
    ours: Any
    theirs: Any
    source: str  # the command or file that gave `theirs`

    def __str__(self) -> str:
        return f"{self.key}: check says {self.ours!r}, `{self.source}` says {self.theirs!r}"


def near(ours: float, theirs: float, *, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """Within an absolute or a relative tolerance of each other."""
    return abs(ours - theirs) <= max(abs_tol, rel_tol * max(abs(ours), abs(theirs)))


def between(value: float, before: float, after: float, slack: float = 0.0) -> bool:
    """A moving value read between two oracle reads lies between them (give or take slack)."""
    return min(before, after) - slack <= value <= max(before, after) + slack


def settle(
    compare: Callable[[], list[Mismatch]], attempts: int = 3, pause_s: float = 0.2
) -> list[Mismatch]:
    """Compare until check and tool agree or `attempts` run out; the last disagreement."""
    mismatches: list[Mismatch] = []
    for attempt in range(attempts):
        mismatches = compare()
        if not mismatches:
            return []
        if attempt + 1 < attempts:
            time.sleep(pause_s)
    return mismatches


def agree(mismatches: Sequence[Mismatch], what: str) -> None:
    """Fail listing every disagreement."""
    assert not mismatches, f"{what} disagrees with the independent tool:\n" + "\n".join(
        f"  {m}" for m in mismatches
    )


def finding(mismatches: Sequence[Mismatch], reason: str) -> None:
    """A known discrepancy on this machine: xfail naming it, so the suite stays green."""
    if mismatches:
        pytest.xfail(f"{reason}: " + "; ".join(str(m) for m in mismatches))


def unset_tz_env() -> dict[str, str]:
    """This process's environment without TZ (so tools use the node's zone)."""
    return {k: v for k, v in os.environ.items() if k != "TZ"}
