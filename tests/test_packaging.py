"""Packaging: the wheel and an editable install both give one import package, with templates."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

PROBE = (
    "import importlib.resources as r, snapshot_agent, snapshot_agent.checks, sys\n"
    "t = r.files('snapshot_agent.templates')\n"
    "assert t.joinpath('report.html').is_file() and t.joinpath('report.css').is_file()\n"
    "from snapshot_agent.core.registry import builtin_checks\n"
    "assert {c.id for c in builtin_checks()} >= {'cpu.load', 'system.info', 'sysctl.all'}\n"
    "import site; print(site.getsitepackages()[0]); print(snapshot_agent.__file__)\n"
)


#: Source directory -> where it lands in the wheel.
SOURCES = {
    "agent": "snapshot_agent",
    "checks": "snapshot_agent/checks",
    "templates": "snapshot_agent/templates",
}

SKIP = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")


def sh(*argv: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def top_level(site_packages: Path) -> set[str]:
    return {p.name for p in site_packages.iterdir()}


def test_wheel_then_editable_install(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build leaves build/ in the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*SKIP))
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", src)
    [wheel] = (tmp_path / "dist").glob("snapshot_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names}
    assert roots == {"snapshot_agent", wheel.name.split("-py")[0] + ".dist-info"}, roots
    assert "snapshot_agent/templates/report.html" in names
    assert "snapshot_agent/checks/cpu.py" in names
    # Every package of the tree is in the wheel: a new stage can never be dropped silently.
    expected = {
        f"{prefix}/{init.parent.relative_to(REPO / source).as_posix()}/__init__.py".replace(
            "/./", "/"
        )
        for source, prefix in SOURCES.items()
        for init in (REPO / source).rglob("__init__.py")
    }
    assert len(expected) >= 9, expected  # root, checks, templates and the stage packages
    assert expected <= set(names), sorted(expected - set(names))
    modules = {
        f"{prefix}/{py.relative_to(REPO / source).as_posix()}"
        for source, prefix in SOURCES.items()
        for py in (REPO / source).rglob("*.py")
    }
    assert modules <= set(names), sorted(modules - set(names))

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    py = venv / "bin/python"
    sh(py, "-m", "pip", "install", "-q", wheel)
    site, module = sh(py, "-c", PROBE).split()
    assert not {"agent", "checks", "templates"} & top_level(Path(site))
    assert module.startswith(site)
    assert sh(venv / "bin/snapshot-agent", "--version").startswith("snapshot-agent ")

    sh(py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", "-e", REPO)
    site, module = sh(py, "-c", PROBE, cwd=tmp_path).split()
    assert not {"agent", "checks", "templates"} & top_level(Path(site))
    assert Path(module) == REPO / "agent" / "__init__.py"
