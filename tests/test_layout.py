"""The layout shows the data flow: each stage imports only the stages before it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

#: Source directory -> import name.
ROOTS = {"agent": "snapshot_agent", "checks": "snapshot_agent.checks"}

#: What each part of the tree may import from snapshot_agent (prefixes). The root package
#: itself (`snapshot_agent`, for __version__), config and errors are shared by all.
SHARED = (
    "snapshot_agent",
    "snapshot_agent.__version__",
    "snapshot_agent.config",
    "snapshot_agent.errors",
)
#: The registry is where checks are discovered: the one core module that names them.
EXCEPTIONS = {"snapshot_agent.core.registry": {"snapshot_agent.checks"}}
ALLOWED: dict[str, tuple[str, ...]] = {
    "snapshot_agent.core": ("snapshot_agent.core",),
    "snapshot_agent.node": ("snapshot_agent.core", "snapshot_agent.node"),
    "snapshot_agent.checks": ("snapshot_agent.core", "snapshot_agent.node"),
    "snapshot_agent.redact": ("snapshot_agent.core", "snapshot_agent.redact"),
    "snapshot_agent.bundle": (
        "snapshot_agent.core",
        "snapshot_agent.node",
        "snapshot_agent.bundle",
        "snapshot_agent.archive.writer",
    ),
    "snapshot_agent.pipeline": (
        "snapshot_agent.core",
        "snapshot_agent.redact",
        "snapshot_agent.node",
        "snapshot_agent.bundle",
        "snapshot_agent.pipeline",
        "snapshot_agent.archive",
        "snapshot_agent.render",
        "snapshot_agent.storage",
    ),
    "snapshot_agent.render": (
        "snapshot_agent.core",
        "snapshot_agent.render",
        "snapshot_agent.pipeline.record",
    ),
    "snapshot_agent.archive": (
        "snapshot_agent.archive",
        "snapshot_agent.core.check",
        "snapshot_agent.pipeline.record",
    ),
    "snapshot_agent.storage": ("snapshot_agent.storage", "snapshot_agent.pipeline.record"),
    "snapshot_agent.service": (
        "snapshot_agent.core.units",  # the one ISO 8601 format its records share with runs
        "snapshot_agent.pipeline",
        "snapshot_agent.redact",
        "snapshot_agent.storage",
        "snapshot_agent.service",
    ),
}


def modules() -> list[tuple[str, Path]]:
    """(module name, file) for every module of the import package."""
    found = []
    for directory, name in ROOTS.items():
        for path in sorted((REPO / directory).rglob("*.py")):
            rel = path.relative_to(REPO / directory).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.append((".".join([name, *parts]), path))
    return found


def imports_of(path: Path) -> set[str]:
    """Every snapshot_agent module a file imports, at any depth (function-local too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "snapshot_agent":  # `from snapshot_agent import pipeline`
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m == "snapshot_agent" or m.startswith("snapshot_agent.")}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _rule_for(module: str) -> tuple[str, tuple[str, ...]] | None:
    owners = [stage for stage in ALLOWED if _within(module, (stage,))]
    if not owners:
        return None
    stage = max(owners, key=len)  # snapshot_agent.checks before snapshot_agent
    return stage, ALLOWED[stage]


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda v: str(v))
def test_each_stage_imports_only_what_comes_before_it(module: str, path: Path) -> None:
    rule = _rule_for(module)
    if rule is None:  # cli, config, errors, the package root: free to use every stage
        return
    stage, allowed = rule
    wrong = {
        imported
        for imported in imports_of(path) - EXCEPTIONS.get(module, set())
        if imported not in SHARED and not _within(imported, allowed)
    }
    assert not wrong, f"{module} ({stage}) imports {sorted(wrong)}"


def test_no_check_imports_another_check() -> None:
    offenders = {
        module: sorted(i for i in imports_of(path) if i.startswith("snapshot_agent.checks"))
        for module, path in modules()
        if module.startswith("snapshot_agent.checks.")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_every_subpackage_is_a_package() -> None:
    """A directory of modules without __init__.py would be left out of the wheel."""
    for directory in (*ROOTS, "templates"):
        for sub in (REPO / directory).rglob("*.py"):
            assert (sub.parent / "__init__.py").is_file() or sub.parent.name == "views", sub
