"""The `snapshot-agent` command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

from snapshot_agent import __version__
from snapshot_agent.archive.crypto_command import add_parsers as add_crypto_parsers
from snapshot_agent.archive.verify import verify_archive
from snapshot_agent.config import (
    Config,
    LoadedConfig,
    RedactionConfig,
    default_config_path,
    load_config,
)
from snapshot_agent.core.printable import printable
from snapshot_agent.core.priority import lower_priority
from snapshot_agent.core.registry import all_checks, select, split_patterns
from snapshot_agent.errors import (
    STOP_SIGNALS,
    AgentError,
    Interrupted,
    UsageError,
    deferred,
    signal_name,
)
from snapshot_agent.pipeline.events import EventWriter, Observers
from snapshot_agent.pipeline.record import SNAPSHOT_NAME, SnapshotRecord
from snapshot_agent.pipeline.report_command import add_parsers as add_report_parsers
from snapshot_agent.redact.catalog import redactor_for
from snapshot_agent.service.command import add_parsers as add_serve_parsers
from snapshot_agent.service.exclusive import MAX_WAIT_S, SnapshotLock
from snapshot_agent.storage.sink import Sink

DESCRIPTION = """\
Diagnostic snapshots of an Apache Iggy node. `run` checks the OS, CPU, memory,
disks, kernel settings and more in parallel (each check in its own process with a
timeout), and writes one ZIP: report.html (open it in a browser), report.json,
manifest.json, manifest.sig (its signature, once installed), iggy-data.zip (the Iggy
data directory) and the raw evidence under raw/. The ZIP goes to a directory, to
object storage (storage.s3) or to a presigned URL, and is a .zip.enc when
archive.encrypt_to is set (`decrypt` opens it).
"""

MAX_URL_BYTES = 64 * 1024  # a presigned URL is a few hundred bytes; a file is read no further
STATUS_HELP = """\
check statuses:
  pass     looked, found nothing wrong
  warn     needs attention soon
  fail     something is wrong now (exit code 1)
  error    the check itself broke; its traceback is in raw/<id>/traceback.txt
  timeout  the check did not finish in time and was killed (the node may be hung)
  skipped  not applicable here (missing tool, not root, no systemd); reason given

exit codes: 0 no check failed, 1 some check failed, 2 no snapshot could be made
(bad input, unwritable output, disk full), 130 interrupted (SIGINT, SIGTERM, SIGHUP,
SIGQUIT; nothing is left behind).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(
        prog="snapshot-agent",
        description=DESCRIPTION,
        epilog=STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run the checks and write a snapshot archive",
        description="Run the checks and write snapshot-YYYYMMDD-HHMMSS.zip (UTC), or\n"
        "snapshot-YYYYMMDD-HHMMSS.zip.enc when archive.encrypt_to is set: into --output DIR,\n"
        "else to object storage when the config has storage.s3 (an s3:// object), else\n"
        "into the current directory; or PUT to the presigned --upload-url. Prints where the\n"
        "archive is on stdout; progress and the summary go to stderr.",
        epilog=STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _version(run)
    run.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for the archive (default: object storage when the config has "
        "storage.s3, else the current directory)",
    )
    upload = run.add_mutually_exclusive_group()
    upload.add_argument(
        "--upload-url",
        metavar="URL",
        help="PUT the archive to this presigned URL (signed by someone else, e.g. the "
        "control plane). A PUT needs the size up front, so the archive is staged first in "
        "--output DIR, else storage.local_dir, after checking free space, and removed "
        "once uploaded",
    )
    upload.add_argument(
        "--upload-url-file",
        type=Path,
        metavar="FILE",
        help="the same, with the URL read from FILE (- for stdin): its signature then "
        "stays out of the process list",
    )
    _config_arg(run)
    run.add_argument(
        "--no-redact",
        dest="redact",
        action="store_false",
        help="keep secrets as they are (by default passwords, tokens, keys and private "
        "keys are replaced by [REDACTED:kind] everywhere in the archive, and the manifest "
        "counts what was removed); the report then carries a warning banner",
    )
    iggy = run.add_mutually_exclusive_group()
    iggy.add_argument(
        "--include-iggy",
        dest="include_iggy",
        action="store_true",
        default=True,
        help="bundle the Iggy data directory as iggy-data.zip (default)",
    )
    iggy.add_argument(
        "--no-include-iggy",
        dest="include_iggy",
        action="store_false",
        help="do not bundle the Iggy data directory",
    )
    run.add_argument(
        "--only",
        action="append",
        metavar="IDS",
        help="run only these checks: ids, categories or globs, comma-separated "
        "(e.g. cpu.load,sysctl or 'cpu.*')",
    )
    run.add_argument(
        "--skip",
        action="append",
        metavar="IDS",
        help="do not run these checks (same forms as --only)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object (path, name, status, verdict, summary) on stdout",
    )
    run.add_argument(
        "--no-low-priority",
        dest="low_priority",
        action="store_false",
        help="do not lower the agent's CPU (nice 10) and I/O priority",
    )
    run.add_argument(
        "--wait",
        type=_wait_seconds,
        metavar="SECONDS",
        help="if another snapshot is in progress on this node (the service's, or another "
        "run's), wait up to SECONDS for it to end (default: refuse at once, exit 2)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    # The service names the archive as its record (snapshot-YYYYMMDD-HHMMSS), so the name
    # its 202 answered with is the name the snapshot completes with.
    run.add_argument("--name", type=_snapshot_name, help=argparse.SUPPRESS)
    run.add_argument(
        "--events-fd",
        type=int,
        metavar="FD",
        help="also write progress as JSON lines to this inherited file descriptor "
        "(for a caller such as the service; the README lists the events)",
    )

    checks = sub.add_parser(
        "checks",
        help="list the available checks",
        description="List every check: id, category, title, description, requirements.",
    )
    _version(checks)
    _config_arg(checks)
    checks.add_argument("--json", action="store_true", help="print the list as JSON")

    verify = sub.add_parser(
        "verify",
        help="check an archive against its manifest",
        description="Recompute the size and sha256 of every member of a snapshot archive "
        "and compare them with manifest.json. Exit 0 when all match; 1 on a mismatch or "
        "a bad signature (or none, when --public-key asks for one); 2 when the archive "
        "or the key cannot be read or used (not a snapshot ZIP, a .zip.enc not yet "
        "decrypted, not an Ed25519 public key).",
    )
    _version(verify)
    verify.add_argument("archive", type=Path, metavar="ARCHIVE", help="a snapshot-*.zip file")
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the node's node-ed25519.pub: manifest.sig must be present and made by it",
    )

    url = sub.add_parser(
        "url",
        help="print a short-lived download URL for an archive in object storage",
        description="Print a presigned URL for NAME (as `run` printed it) under this "
        "node's prefix in storage.s3. It expires after storage.s3.presign_ttl_s (default "
        "15 minutes) or --ttl. Credentials come from the standard AWS chain.",
    )
    _version(url)
    _config_arg(url)
    url.add_argument("name", metavar="NAME", help="e.g. snapshot-20261126-183000")
    url.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime of the URL")

    redact = sub.add_parser(
        "redact",
        help="print a file with its secrets redacted, as a snapshot would store it",
        description="Print FILE (or stdin for -) with every secret replaced by "
        "[REDACTED:kind], exactly as a snapshot redacts the files it collects: a preview "
        "of what leaves the node. Streams: any size, bounded memory.",
    )
    _version(redact)
    _config_arg(redact)
    redact.add_argument("file", nargs="?", metavar="FILE|-", help="the file to redact; - for stdin")
    redact.add_argument(
        "--audit",
        action="store_true",
        help="also print what was removed (counts per rule, never values) as JSON on stderr",
    )
    redact.add_argument("--rules", action="store_true", help="list the redaction rules and exit")
    handlers = {
        **add_crypto_parsers(sub, _version),
        **add_report_parsers(sub, _version),
        **add_serve_parsers(sub, _version),
    }
    for name, handler in handlers.items():
        sub.choices[name].set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    with _std_streams():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    """Parse, run the subcommand, and turn its errors into one line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handlers = {
        "run": cmd_run,
        "checks": cmd_checks,
        "verify": cmd_verify,
        "redact": cmd_redact,
        "url": cmd_url,
    }
    try:
        return (getattr(args, "handler", None) or handlers[args.command])(args)
    except AgentError as exc:
        # stderr is the journal under systemd: the message passes the filter too (a
        # refused config value may be a password).
        return _fail(args, redactor_for(RedactionConfig()).text(str(exc)), exc.exit_code)
    except (KeyboardInterrupt, Interrupted) as exc:
        by = f" by {signal_name(exc.signum)}" if isinstance(exc, Interrupted) else ""
        # All printable ASCII (a signal's name or number), so printable() leaves it be.
        return _fail(args, f"interrupted{by}; no archive was written", 130)
    except Exception:  # a bug: its traceback is for the report, through the redactor too
        trace = redactor_for(RedactionConfig()).text(traceback.format_exc())
        print("\n".join(map(printable, trace.splitlines())), file=sys.stderr)
        return _fail(args, "internal error (the traceback above); please report it", 2)


def cmd_run(args: argparse.Namespace) -> int:
    """`snapshot-agent run`."""
    with _StopOnSignal() as stop:
        return _run(args, stop)


def _run(args: argparse.Namespace, stop: _StopOnSignal) -> int:
    """Take the snapshot; `stop` is told the record, to know when it is too late to cancel."""
    args.events = EventWriter.from_fd(args.events_fd) if args.events_fd is not None else None
    loaded = _load(args)
    # One snapshot at a time per node, with the service's and other SREs' runs alike.
    lock = SnapshotLock(Path(loaded.config.state_dir))
    with lock.acquire(args.wait, "; pass --wait SECONDS to wait for it") as lease:
        if lease.note:
            print(f"snapshot-agent: {lease.note}", file=sys.stderr)
        return _take(args, stop, loaded)


def _take(args: argparse.Namespace, stop: _StopOnSignal, loaded: LoadedConfig) -> int:
    """The snapshot itself, the node's snapshot lock held."""
    from snapshot_agent.pipeline.record import SnapshotOptions
    from snapshot_agent.pipeline.snapshot import take_snapshot

    events = args.events
    only, skip = split_patterns(args.only), split_patterns(args.skip)
    checks = select(all_checks(loaded), only, skip)
    options = SnapshotOptions(
        redact=args.redact,
        include_iggy=args.include_iggy,
        only=tuple(only),
        skip=tuple(skip),
        low_priority=args.low_priority,
    )
    if args.low_priority:
        lower_priority()
    sink = _sink(args, loaded.config)

    def opened(record: SnapshotRecord) -> None:
        stop.record = record
        if sink.removed:
            print(
                f"snapshot-agent: removed what a dead run left in {sink.workdir.parent}: "
                + ", ".join(sink.removed),
                file=sys.stderr,
            )
        if getattr(sink, "aborted", None):
            print(
                "snapshot-agent: aborted the uploads dead runs left unfinished: "
                + ", ".join(sink.aborted),  # type: ignore[attr-defined]
                file=sys.stderr,
            )
        if events:
            events.opened(record, len(checks))

    progress = None
    if not args.quiet:  # rich is imported only when something is shown
        from snapshot_agent.render.terminal import make_progress

        progress = make_progress(len(checks))
    try:
        record = take_snapshot(
            loaded,
            checks,
            sink,
            options,
            Observers(progress, events),
            on_open=opened,
            name=args.name,
        )
    except AgentError:
        # "Nothing was kept" unless the store refused the abort too: _fail says what is left.
        args.also = getattr(sink, "abort_problem", None)
        raise
    finally:
        if progress:
            progress.close()
    # The archive is in place: from here on a signal is only noted (see _StopOnSignal).
    if not args.quiet:
        from snapshot_agent.render.terminal import print_summary

        print_summary(record)
    outline = record.outline()
    if events:
        events.emit("snapshot_completed", **outline)
    print(json.dumps(outline) if args.json else outline["path"], flush=True)
    if getattr(sys.stdout, "broken", False):  # the archive stands, and so does its verdict
        print(
            f"snapshot-agent: stdout is closed, so the archive's path was not printed; "
            f"it is {outline['path']}",
            file=sys.stderr,
        )
    return 1 if record.failed else 0


def _sink(args: argparse.Namespace, config: Config) -> Sink:
    """Where the archive goes: a presigned URL when given, else --output, else storage.s3
    when configured, else here."""
    from snapshot_agent.storage.local import LocalSink

    suffix = ".zip.enc" if config.archive.encrypt_to else ".zip"
    url = _upload_url(args)
    if url is not None:
        from snapshot_agent.storage.presign import PresignedPutSink, staging_estimate

        stage = args.output or Path(config.storage.local_dir)
        return PresignedPutSink(url, stage, staging_estimate(config.archive, args.include_iggy))
    if args.output is None and config.storage.s3 is not None:
        from snapshot_agent.storage.s3 import S3Sink

        return S3Sink(
            config.storage.s3,
            Path(config.storage.local_dir),  # the evidence spool only, bounded by the caps
            deployment_id=config.node.deployment_id,
            node_id=config.node.node_id,
            suffix=suffix,
        )
    # archive.group: archives 0640 for that group (0600 without it).
    return LocalSink(args.output or Path("."), group=config.archive.group, suffix=suffix)


def _snapshot_name(text: str) -> str:
    """--name: snapshot-YYYYMMDD-HHMMSS."""
    if not SNAPSHOT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text}: give a name like snapshot-20260520-101500")
    return text


def _wait_seconds(text: str) -> float:
    """--wait: seconds from 0 to a day."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"{text}: give seconds from 0 to {MAX_WAIT_S:g}")
    return value


def _upload_url(args: argparse.Namespace) -> str | None:
    """--upload-url, or the first line of --upload-url-file (- for stdin)."""
    if args.upload_url_file is None:
        return args.upload_url  # type: ignore[no-any-return]
    where = args.upload_url_file
    try:
        if str(where) == "-":
            text = sys.stdin.readline(MAX_URL_BYTES + 1)
        else:
            with where.open(encoding="utf-8") as file:
                text = file.readline(MAX_URL_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"--upload-url-file {where}: cannot read it ({reason})") from None
    if len(text.rstrip("\n")) > MAX_URL_BYTES:
        raise UsageError(
            f"--upload-url-file {where}: its first line is longer than {MAX_URL_BYTES} "
            "characters; put only the presigned PUT URL in it"
        )
    if not text.strip():
        raise UsageError(f"--upload-url-file {where}: empty; put the presigned PUT URL in it")
    return text.strip()


def cmd_checks(args: argparse.Namespace) -> int:
    """`snapshot-agent checks`."""
    checks = all_checks(_load(args))
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "category", "title", "description", "needs"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(c.id, c.category, c.title, c.description, ", ".join(c.requires.describe()))
    console = Console(highlight=False)
    if not console.is_terminal:  # piped into grep or less: one line per check, never wrapped
        console = Console(highlight=False, width=1000)
    console.print(table)
    console.print(f"{len(checks)} checks in {len({c.category for c in checks})} categories")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """`snapshot-agent verify ARCHIVE`."""
    result = verify_archive(args.archive, args.public_key)
    for problem in result.problems:
        print(f"MISMATCH {problem}")
    # Without --public-key, a signature line only for an archive that has one.
    signed = result.signature.startswith(("valid", "INVALID", "present"))
    quiet = args.public_key is None and not signed
    if result.ok:
        print(f"OK: {result.checked} members match the manifest ({args.archive})")
        if not quiet:
            print(f"signature: {result.signature}")
        return 0
    if not quiet:
        print(f"signature: {result.signature}")
    print(f"FAILED: {len(result.problems)} problem(s) in {args.archive}", file=sys.stderr)
    return 1


def cmd_url(args: argparse.Namespace) -> int:
    """`snapshot-agent url NAME`."""
    from snapshot_agent.storage.command import print_archive_url

    if args.ttl is not None and not 0 < args.ttl <= 7 * 86400:
        raise UsageError(f"--ttl {args.ttl}: give seconds between 1 and 604800 (7 days)")
    return print_archive_url(_load(args).config, args.name, sys.stdout, ttl_s=args.ttl)


def cmd_redact(args: argparse.Namespace) -> int:
    """`snapshot-agent redact FILE|-`."""
    from snapshot_agent.redact.command import list_rules, redact_file

    settings = _load(args).config.redaction
    if args.rules:
        list_rules(settings, sys.stdout)
        return 0
    if args.file is None:
        raise UsageError("redact: give a FILE to redact, or - for stdin (see --help)")
    with open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) as out:
        try:
            audit = redact_file(args.file, settings, out)
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            return 0
    if args.audit:
        print(json.dumps(audit.to_json(), indent=2), file=sys.stderr)
    return 0


def _load(args: argparse.Namespace) -> LoadedConfig:
    explicit = args.config is not None
    return load_config(args.config if explicit else default_config_path(), explicit=explicit)


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"snapshot-agent {__version__}")


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help="YAML config (default: /etc/snapshot-agent/config.yaml when it exists; "
        "$SNAPSHOT_AGENT_CONFIG overrides). No config is needed.",
    )


def _fail(args: argparse.Namespace, message: str, exit_code: int) -> int:
    """No snapshot was made: say so on stdout (--json), the event stream and stderr."""
    if getattr(args, "json", False):
        print(json.dumps({"status": "failed", "error": message}))
    events = getattr(args, "events", None)
    if events is not None:
        events.emit("snapshot_failed", error=message, exit_code=exit_code)
    print(f"snapshot-agent: {printable(message)}", file=sys.stderr)
    if getattr(args, "also", None):
        print(f"snapshot-agent: also: {printable(args.also)}", file=sys.stderr)
    return exit_code


class _StopOnSignal:
    """SIGHUP, SIGINT, SIGQUIT and SIGTERM stop a run, once.

    The first raises Interrupted wherever the run is; the cleanup that follows (the
    runner kills the checks, the sink removes the .partial and the working directory)
    then runs to its end: later signals (a burst of Ctrl-C, the SIGHUP of a dropped SSH
    session after a Ctrl-C) are only noted. Once the archive is in place it is too late
    to cancel, and the run ends as if no signal had come.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.record: SnapshotRecord | None = None  # the snapshot's, once it is opened

    def __enter__(self) -> _StopOnSignal:
        """Handle every stop signal here, but one the caller chose to ignore.

        `nohup` ignores SIGHUP and a shell's `&` ignores SIGINT and SIGQUIT: such a run
        must survive them, as every other program does.
        """
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:
                signal.signal(signum, self.handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        """The run is over: ignore stop signals until the process exits.

        Left to the handler, a signal during the interpreter's own exit would kill the
        process (it puts the default actions back first) and turn 130 into -2.
        """
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        """The signal handler."""
        if deferred(signum):
            return  # a step that must not be cut in half: raised again when it is done
        if self.received is not None:
            return  # cleanup is under way: let it finish
        self.received = signum
        if self.record is not None and self.record.archive is not None:
            return  # committed: the archive, the verdict and the exit code stand
        raise Interrupted(signum)


class BestEffortStream(io.TextIOBase):
    """stdout or stderr for a command: a reader that is gone loses the output, nothing else.

    A pipe whose reader quit (`2>&1 | head -1`), a terminal that hung up, a descriptor
    closed at start (`2>&-`): writes are dropped, never raised, and `broken` says so.
    """

    def __init__(self, inner: TextIO | None) -> None:
        super().__init__()
        self.inner = inner
        self.broken = inner is None

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The inner stream's, for rich and print."""
        return getattr(self.inner, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        """Always: what cannot be written is dropped."""
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        """Write through, or drop once the reader is gone."""
        if self.inner is not None and not self.broken:
            try:
                self.inner.write(text)
            except (OSError, ValueError):
                self._drop()
        return len(text)

    def flush(self) -> None:
        """Flush through, or drop once the reader is gone."""
        if self.inner is not None and not self.broken:
            try:
                self.inner.flush()
            except (OSError, ValueError):
                self._drop()

    def isatty(self) -> bool:
        """A live terminal only."""
        try:
            return self.inner is not None and not self.broken and self.inner.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        """The inner stream's descriptor (rich asks it for the terminal's size)."""
        if self.inner is None:
            raise io.UnsupportedOperation("closed at start")
        return self.inner.fileno()

    def _drop(self) -> None:
        """Stop writing, and point the descriptor at /dev/null so that the interpreter's
        own flush at exit does not fail on what is still buffered either."""
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.fileno())
            finally:
                os.close(null)


@contextlib.contextmanager
def _std_streams() -> Iterator[None]:
    """Fds 0-2 open and sys.stdout/sys.stderr best effort, for one command."""
    _open_std_fds()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = BestEffortStream(sys.stdout), BestEffortStream(sys.stderr)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


def _open_std_fds() -> None:
    """Put /dev/null on any of fds 0-2 that is closed, so no file we open becomes one.

    With `2>&-`, the next file opened (the .partial, say) would become fd 2, and
    anything written to "stderr" at the descriptor level would land in the archive.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
