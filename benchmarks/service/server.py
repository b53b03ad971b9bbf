"""The service under benchmark: a config in a temporary directory, and `serve` started on it.

Snapshots it takes look at an empty directory instead of the node's trees (most checks
skip at once), so each takes a few seconds. Used by run.py and fuzz.py beside it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
PYTHON = os.environ.get("SNAPSHOT_AGENT_PYTHON", str(REPO / ".venv" / "bin" / "python"))


def config(root: Path, **more: Any) -> dict[str, Any]:
    """state_dir, local storage and the socket under `root`; fast checks; `more` on top."""
    node = root / "node"
    node.mkdir(exist_ok=True)
    api = {"unix_socket": str(root / "run" / "agent.sock"), **more.pop("api", {})}
    return {
        "state_dir": str(root / "state"),
        "storage": {"local_dir": str(root / "state" / "snapshots")},
        "checks": {
            "roots": {
                "root": str(node),
                **{k: str(node / k) for k in ("proc", "sys", "etc", "run")},
                "var_log": str(node / "log"),
            },
            "cloud": {"enabled": False},
        },
        "api": api,
        **more,
    }


def start(root: Path, settings: dict[str, Any], timeout: float = 60) -> subprocess.Popen[bytes]:
    """Write the config and start `snapshot-agent serve`; returns once it is listening."""
    (root / "config.yaml").write_text(json.dumps(settings))
    log = root / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    proc = subprocess.Popen(
        [PYTHON, "-m", "snapshot_agent", "serve", "--config", str(root / "config.yaml")],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + timeout
    while "listening on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"serve did not start: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and wait for the clean stop."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=90)


def machine() -> str:
    """CPUs, memory, OS, Python and the load: the line a result is recorded with."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem:.1f} GiB; {platform.platform()}, "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}"
    )
