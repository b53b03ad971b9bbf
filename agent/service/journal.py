"""The service's log: one line per event on stderr, shaped for journald when that is where
it goes ($JOURNAL_STREAM names stderr): a `<N>` syslog priority first and no timestamp,
which the journal adds. Elsewhere (a terminal, a file): time and level first."""

from __future__ import annotations

import logging
import os
import sys

#: logging levels -> syslog priorities (journald reads `<N>` at the start of a line).
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """`<6>message`, a traceback folded onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{_one_line(super().format(record))}"


class TerminalFormatter(logging.Formatter):
    """`2026-06-01 10:30:00 INFO message`, a traceback folded onto the same line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


def configure_logging(level: int = logging.INFO) -> None:
    """Log the service's events to stderr, for the journal or for a person."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if under_journald() else TerminalFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_not_bad_requests)


def _not_bad_requests(record: logging.LogRecord) -> bool:
    """Drop aiohttp's tracebacks for requests that are not HTTP (a scanner, TLS on the
    socket): the client got its 400, the operator needs no page of traceback per probe."""
    from aiohttp.http_exceptions import HttpProcessingError

    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, HttpProcessingError)


def under_journald() -> bool:
    """Whether stderr is the journal stream systemd set up ($JOURNAL_STREAM is `dev:ino`)."""
    try:
        device, inode = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def _one_line(text: str) -> str:
    """Lines joined with ` | `: one journal entry per event, a traceback included."""
    return " | ".join(line for line in text.splitlines() if line.strip())
