"""Errors that end a command with a one-line message for a person (exit code 2)."""

from __future__ import annotations


class AgentError(Exception):
    """A failure to report in one line, naming the input or the step, with what to do."""

    exit_code = 2


class UsageError(AgentError):
    """Bad input (an option, the config, a path given): say which and what to do; exit 2."""


class SnapshotError(AgentError):
    """The snapshot could not be made at run time (disk full, the sink failed); exit 2.

    Nothing half-written is left behind when this is raised.
    """


class Interrupted(BaseException):
    """The snapshot was stopped by a signal (Ctrl-C, SIGTERM).

    A BaseException, like KeyboardInterrupt: the handler raises it wherever the parent
    happens to be, and an `except Exception` there (decoding a check's result, say)
    must not swallow it and leave the snapshot running.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
