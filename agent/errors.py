"""Errors that end a command with a one-line message for a person (exit code 2)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input or an unusable environment: say what and what to do; exit 2."""

    exit_code = 2


class Interrupted(Exception):
    """The snapshot was stopped by a signal (Ctrl-C, SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
