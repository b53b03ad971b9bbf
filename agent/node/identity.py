"""Who this node is: the names an SRE and the supervisor use to find its snapshots."""

from __future__ import annotations

import platform
import socket
from typing import Any

from snapshot_agent.config import Config
from snapshot_agent.core.context import map_path


def node_identity(config: Config) -> dict[str, Any]:
    """Hostname, machine id and the deployment/node ids from the config."""
    roots = config.checks.roots
    return {
        "name": config.node.name or socket.gethostname(),
        "hostname": socket.gethostname(),
        "deployment_id": config.node.deployment_id,
        "node_id": config.node.node_id,
        "machine_id": _first_line(map_path(roots, "/etc/machine-id")),
        "boot_id": _first_line(map_path(roots, "/proc/sys/kernel/random/boot_id")),
        "kernel": platform.release(),
    }


def _first_line(path: object) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:  # type: ignore[call-overload]
            return fh.readline(256).strip() or None
    except OSError:
        return None
