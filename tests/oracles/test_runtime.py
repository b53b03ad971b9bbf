"""runtime.packages and runtime.versions against `dpkg-query`, `dpkg --audit` and Python."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from .live import Mismatch, agree, check_module, run_check, tool

#: dpkg states in which a package is present on disk (fully or partly).
PRESENT = (
    "installed",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
)


def dpkg_query(*names: str) -> dict[tuple[str, str], tuple[str, str]]:
    """`dpkg-query -W` for `names` (all when none): (package, arch) -> (version, state)."""
    out = tool(
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${Architecture} ${db:Status-Status} ${Version}\\n",
        *names,
    )
    rows = {}
    for line in out.splitlines():
        name, arch, state, version = (line.split(" ", 3) + [""] * 4)[:4]
        rows[(name, arch)] = (version, state)
    return rows


def test_runtime_packages_match_dpkg_query(tmp_path: Path) -> None:
    """Versions, states and counts as `dpkg-query` gives them; broken as `dpkg --audit` says."""
    result = run_check("runtime.packages", tmp_path)
    data = result.data
    if data.get("manager") != "dpkg":
        pytest.skip(f"packages come from {data.get('manager')}, not dpkg")
    out = []
    reported = data["relevant"]
    theirs = dpkg_query(*sorted({row["package"] for row in reported})) if reported else {}
    for row in reported:
        key = (row["package"], row["arch"])
        ours = (row["version"], row["state"])
        if theirs.get(key) != ours:
            out.append(
                Mismatch(f"relevant[{key[0]}:{key[1]}]", ours, theirs.get(key), "dpkg-query -W")
            )
    everything = dpkg_query()
    # Every present package matching the check's own patterns is reported (none dropped).
    patterns = getattr(check_module("runtime.packages"), "RELEVANT_PACKAGES", ())
    wanted = {
        key
        for key, (_, state) in everything.items()
        if state in PRESENT and any(fnmatch.fnmatchcase(key[0], p) for p in patterns)
    }
    shown = {(row["package"], row["arch"]) for row in reported}
    if patterns and shown != wanted:
        out.append(Mismatch("relevant", sorted(shown), sorted(wanted), "dpkg-query -W PATTERN"))
    present = sum(1 for _, state in everything.values() if state in PRESENT)
    if data["installed"] != present:
        out.append(Mismatch("installed", data["installed"], present, "dpkg-query -W (present)"))
    audit = tool("dpkg", "--audit").strip()
    if bool(audit) != bool(data["broken"]):
        out.append(Mismatch("broken", data["broken"], audit[:200] or "nothing", "dpkg --audit"))
    agree(out, "runtime.packages")


def test_runtime_versions_match_python_and_package_metadata(tmp_path: Path) -> None:
    """The agent's version as its installed metadata says; Python's as `python -V` prints."""
    rows = {
        row["component"]: row for row in run_check("runtime.versions", tmp_path).data["versions"]
    }
    out = []
    try:
        agent = metadata.version("snapshot-agent")
    except metadata.PackageNotFoundError:
        agent = None
    if agent is not None and rows["snapshot-agent"]["version"] != agent:
        out.append(Mismatch("snapshot-agent", rows["snapshot-agent"]["version"], agent, "metadata"))
    python = subprocess.run(
        [sys.executable, "-V"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    if rows["python"]["version"] != python:
        out.append(Mismatch("python", rows["python"]["version"], python, f"{sys.executable} -V"))
    agree(out, "runtime.versions")
