"""How a check is declared: metadata as data, plus one function from context to result.

A check module looks like this (see checks/cpu.py)::

    @check(
        id="cpu.load",
        category="cpu",
        title="CPU load",
        description="Load averages against the number of cores.",
        bands=(Band("per_core", warn=1.0, fail=2.0),),
    )
    def cpu_load(ctx: Context) -> Result:
        ...

The runner, `snapshot-agent checks` and the report read the declaration without
running anything.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapshot_agent.core.grading import Band

if TYPE_CHECKING:
    from snapshot_agent.core.context import Context
    from snapshot_agent.core.results import Result

#: A check id, `area.name`. \Z, not `$`: `$` would let "x.y\n" pass.
ID_REGEX = r"^[a-z][a-z0-9_]*\.[a-z0-9_.-]+\Z"
ID_PATTERN = re.compile(ID_REGEX)

ThresholdValue = float | int | str | bool


@dataclass(frozen=True)
class Requirements:
    """What a check needs; when unmet the check is `skipped` with the reason."""

    root: bool = False
    binaries: tuple[str, ...] = ()  # looked up on PATH (or absolute paths)
    paths: tuple[str, ...] = ()  # absolute node paths, mapped through the context roots
    linux: bool = True
    systemd: bool = False  # PID 1 is systemd

    def unmet(self, map_path: Callable[[str], Path]) -> str | None:
        """Why this node cannot run the check, or None when every requirement is met."""
        if self.linux and not sys.platform.startswith("linux"):
            return f"needs Linux (this is {sys.platform})"
        if self.root and os.geteuid() != 0:
            return "needs root; run snapshot-agent as root (sudo) for this check"
        if self.systemd and not map_path("/run/systemd/system").is_dir():
            return "needs systemd as PID 1 (not the case here, e.g. a container)"
        for binary in self.binaries:
            if shutil.which(binary) is None:
                return f"needs `{binary}`, which is not installed or not on PATH"
        for path in self.paths:
            if not map_path(path).exists():
                return f"needs {path}, which does not exist on this node"
        return None

    def describe(self) -> list[str]:
        """Human-readable list for `snapshot-agent checks`."""
        out: list[str] = []
        if self.linux:
            out.append("linux")
        if self.root:
            out.append("root")
        if self.systemd:
            out.append("systemd")
        out += [f"binary:{b}" for b in self.binaries]
        out += [f"path:{p}" for p in self.paths]
        return out


@dataclass(frozen=True)
class Check:
    """A declared diagnostic check."""

    id: str
    category: str
    title: str
    description: str
    run: Callable[[Context], Result] = field(compare=False, repr=False)
    requires: Requirements = Requirements()
    timeout_s: float | None = None  # None: the config's checks.timeout_s
    thresholds: dict[str, ThresholdValue] = field(default_factory=dict, compare=False)
    bands: tuple[Band, ...] = ()  # graded measures; their ends are in `thresholds` too
    source: str = "builtin"  # builtin | entry point name | config
    view: str | None = None  # a hint kept in report.json; the page draws charts (render/charts)
    sampling_s: float = 0.0  # time the check deliberately waits to sample; started first

    def __post_init__(self) -> None:
        if not ID_PATTERN.match(self.id):
            raise ValueError(f"check id {self.id!r} is not of the form 'area.name'")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"check {self.id}: timeout_s must be positive")
        for band in self.bands:
            for key, value in band.defaults().items():
                if self.thresholds.setdefault(key, value) != value:
                    raise ValueError(f"check {self.id}: threshold {key} is also declared by a band")

    def band(self, name: str) -> Band:
        """The declared band called `name`."""
        return next(b for b in self.bands if b.name == name)

    def to_dict(self) -> dict[str, Any]:
        """Declaration as JSON (for `checks --json` and the report)."""
        return {
            "id": self.id,
            "category": self.category,
            "title": self.title,
            "description": self.description,
            "timeout_s": self.timeout_s,
            "requires": self.requires.describe(),
            "thresholds": dict(self.thresholds),
            "bands": [b.describe() for b in self.bands],
            "source": self.source,
            "view": self.view,
        }


def check(
    *,
    id: str,
    category: str,
    title: str,
    description: str,
    requires: Requirements | None = None,
    timeout_s: float | None = None,
    thresholds: dict[str, ThresholdValue] | None = None,
    bands: tuple[Band, ...] = (),
    view: str | None = None,
    sampling_s: float = 0.0,
) -> Callable[[Callable[[Context], Result]], Check]:
    """Declare a check; the decorated function becomes a `Check` the registry finds."""

    def wrap(fn: Callable[[Context], Result]) -> Check:
        return Check(
            id=id,
            category=category,
            title=title,
            description=description,
            run=fn,
            requires=requires or Requirements(),
            timeout_s=timeout_s,
            thresholds=dict(thresholds or {}),
            bands=tuple(bands),
            view=view,
            sampling_s=sampling_s,
        )

    return wrap
