"""Process confinement by a Linux security module, as /proc/<pid>/attr/current labels it.

kernel.io_uring and security.lsm both ask how the broker is confined: `parse_label`
reads an AppArmor label ('docker-default (enforce)') or an SELinux context
('system_u:system_r:container_t:s0') into a `Confinement`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: SELinux domains that are not confined in practice.
UNCONFINED_SELINUX_TYPES = frozenset(
    {"unconfined_t", "unconfined_service_t", "spc_t", "kernel_t", "initrc_t", "init_t"}
)


@dataclass(frozen=True)
class Confinement:
    """How one broker process is confined by its LSM label."""

    lsm: str  # 'apparmor', 'selinux' or ''
    name: str  # AppArmor profile or SELinux type
    mode: str  # 'enforce', 'complain', 'permissive'... ('' when unknown)
    confined: bool


def parse_label(label: str, selinux_enforcing: bool | None) -> Confinement:
    """Interpret /proc/<pid>/attr/current: 'docker-default (enforce)' or 'u:r:type:s0'."""
    label = label.strip()
    if not label or label == "unconfined":
        return Confinement("", "unconfined", "", False)
    if label.count(":") >= 2 and " " not in label:
        selinux_type = label.split(":")[2]
        mode = (
            "enforcing"
            if selinux_enforcing
            else "permissive"
            if selinux_enforcing is not None
            else ""
        )
        return Confinement(
            "selinux", selinux_type, mode, selinux_type not in UNCONFINED_SELINUX_TYPES
        )
    match = re.match(r"(.+?)\s*\((\w+)\)$", label)
    name, mode = (match[1], match[2]) if match else (label, "")
    return Confinement("apparmor", name, mode, mode not in ("unconfined", ""))
