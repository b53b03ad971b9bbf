"""Errors that end a command with a one-line message for a person (exit code 2)."""

from __future__ import annotations

import contextlib
import signal
import threading
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


class _Held:
    """How deep the main thread is in stop_signals_held, and what its handler put off."""

    depth = 0
    deferred: dict[int, None] = {}  # signal numbers in arrival order, each once


@contextlib.contextmanager
def stop_signals_held() -> Iterator[set[signal.Signals]]:
    """Hold the stop signals for a step that must not be cut in half (commit, cleanup).

    A signal that arrives meanwhile is handled when the step is done. The mask is read
    before anything changes and restored in `finally`: a signal that arrived just before
    is raised the moment they are held, and must not leave them so. Yields that mask,
    the one from before they were held.

    The mask alone is not enough: the kernel gives a signal sent to the process to any
    thread that does not block it (a compression or upload worker), and Python then runs
    the handler in the main thread whatever the main thread's mask. So a handler asks
    `deferred()` first, and what it put off is raised again once the step is done.
    """
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # only reads it
    if main:
        _Held.depth += 1
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield old
    finally:
        if main:
            _Held.depth -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if main and not _Held.depth and _Held.deferred:
            pending = list(_Held.deferred)
            _Held.deferred.clear()
            for signum in pending:  # the handler runs now, as for a signal just unblocked
                signal.raise_signal(signum)


def deferred(signum: int) -> bool:
    """For a stop signal's handler: True when the signal came while the stop signals are
    held; it is then raised again when they are let go, and the handler should return."""
    if not _Held.depth:
        return False
    _Held.deferred[signum] = None
    return True
