"""Errors that end a command with a one-line message for a person (exit code 2)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

#: The signals that stop a run cleanly: a hang-up (an SSH session dropping), Ctrl-C,
#: Ctrl-\ and a polite kill. Each stops the checks and removes what the run had written.
STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


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
    """The snapshot was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT).

    A BaseException, like KeyboardInterrupt: the handler raises it wherever the parent
    happens to be, and an `except Exception` there (decoding a check's result, say)
    must not swallow it and leave the snapshot running.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    """`SIGHUP` for 1; the number for a signal Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def stop_signals_held() -> Iterator[set[signal.Signals]]:
    """Hold the stop signals for a step that must not be cut in half (commit, cleanup).

    A signal that arrives meanwhile stays pending and is handled when the step is done.
    The mask is read before anything changes and restored in `finally`: a signal that
    arrived just before is raised the moment they are held, and must not leave them so.
    Yields that mask, the one from before they were held.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # only reads it
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield old
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
