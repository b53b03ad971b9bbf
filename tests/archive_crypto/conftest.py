"""A real snapshot made by the CLI, shared by this directory's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import run_cli


@pytest.fixture(scope="session")
def cli_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real snapshot, made by `snapshot-agent run --only system.info` (unsigned)."""
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("run", "--only", "system.info", "--output", out)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])
