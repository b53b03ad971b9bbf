"""Package discovery for the renamed roots; everything else is in pyproject.toml."""

from __future__ import annotations

from setuptools import find_packages, setup

#: Import name -> source directory (the design card's layout).
ROOTS = {
    "snapshot_agent": "agent",
    "snapshot_agent.checks": "checks",
    "snapshot_agent.templates": "templates",
}


def packages() -> list[str]:
    """Every root and every package below it, found on disk (never a hand list)."""
    found: list[str] = []
    for name, where in ROOTS.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(where))]
    return found


setup(packages=packages(), package_dir=ROOTS)
