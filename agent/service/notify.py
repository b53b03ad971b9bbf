"""Telling systemd how the service is (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

A datagram of `KEY=value` lines to the socket $NOTIFY_SOCKET names (a leading `@` is the
abstract namespace). Without the variable (run by hand, in tests) nothing is sent. The
unit has NotifyAccess=main: only this process may notify, so the snapshots it starts get
an environment without these variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Mapping

#: What the service's children must not inherit: they may not speak for it.
VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: Pings per watchdog period: with three, one late ping is not yet a missed watchdog.
PINGS_PER_PERIOD = 3

log = logging.getLogger(__name__)


class Notifier:
    """The service manager's notification socket, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = _watchdog_period(env)

    @property
    def ping_every_s(self) -> float | None:
        """How often to send WATCHDOG=1, or None when no watchdog is set for this process."""
        return self.watchdog_s / PINGS_PER_PERIOD if self.watchdog_s else None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False when there is no one to tell."""
        if not self.address:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never waits: the event loop sends, and a manager whose queue is full (it
                # stopped reading) costs a dropped message, not a wedged service.
                sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed (%s)", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """The service is listening."""
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        """A line for `systemctl status`."""
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Still alive (sent from the event loop, so a wedged loop stops the pings)."""
        self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        """The service is shutting down."""
        self.send("STOPPING=1", f"STATUS={status}")


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the service manager's notify and watchdog variables."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k not in VARIABLES}


def _watchdog_period(env: Mapping[str, str]) -> float | None:
    """$WATCHDOG_USEC in seconds when it is meant for this process ($WATCHDOG_PID)."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    with contextlib.suppress(ValueError):
        if pid and int(pid) != os.getpid():
            return None
        period = int(usec) / 1_000_000
        return period if period > 0 else None
    return None
