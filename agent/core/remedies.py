"""Remediation text that several checks give the same way."""

from __future__ import annotations

#: The one drop-in every sysctl remediation tells the user to persist settings in.
SYSCTL_CONF = "/etc/sysctl.d/99-iggy.conf"


def sysctl_fix(key: str, value: int | str, why: str = "") -> str:
    """The `sysctl -w` command for now, the line that keeps it in SYSCTL_CONF, then why."""
    text = str(value)
    shown = f'"{text}"' if " " in text else text
    fix = (
        f"`sysctl -w {key}={shown}` now and add the line `{key} = {text}` to {SYSCTL_CONF} "
        "(then `sysctl --system`) so it survives a reboot."
    )
    return f"{fix} {why}" if why else fix
