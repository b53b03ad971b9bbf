"""iggy.logs: panics, errors by target, the resource line and leaked secrets in the broker's logs.

The files are read by snapshot_agent.node.iggy_logs (the format, naming and lines it
knows are cited there from the Iggy sources); this module judges what it counted.
"""

from __future__ import annotations

import time
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.printable import printable
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.units import MIB, mib_or_gib, utc_iso
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.iggy_logs import (
    LOG_PREFIX,
    LogFile,
    LogListing,
    LogScan,
    list_log_files,
    parse_resource_line,
    read_log_tail,
    scan_logs,
)
from snapshot_agent.node.mounts import probe_all, probe_budget

#: The broker's own ERROR lines in the window's busiest 60 minutes: a burst is not diluted
#: by a quiet day, nor split by the top of an hour. Failed client commands (logged at ERROR
#: too) are counted apart.
ERRORS_PER_HOUR = Band("errors_per_hour", warn=10, fail=100)
#: Panics in the window: a shard or the whole broker died.
PANICS = Band("panics", fail=1)
DEADLINE_MARGIN_S = 2.0  # left for judging and saving evidence after the read
TAIL_BYTES = 256 * 1024  # of the newest log, saved as evidence
LIST_TIMEOUT_S = 2.0  # a log directory that does not list in this time is on a dead mount


def _size(n: float) -> str:
    """Bytes in words: KiB below a MiB, else mib_or_gib."""
    return f"{n / 1024:.0f} KiB" if n < MIB else mib_or_gib(n)


def _read_words(scan: LogScan) -> str:
    """How much was read of how much, over which span, in words."""
    read = f"read {_size(scan.stats.bytes_read)} of {_size(scan.bytes_total)}"
    read += f" in {len(scan.files)} file(s)"
    if scan.first_at is not None and scan.last_at is not None:
        read += f", {utc_iso(scan.first_at)} to {utc_iso(scan.last_at)}"
    if scan.stopped_by_deadline:
        read += ", stopped by the deadline"
    elif scan.bytes_budget_skipped:
        read += f", the oldest {_size(scan.bytes_budget_skipped)} left out by the byte budget"
    return read


def _window(scan: LogScan) -> str:
    """'the last 24 h'."""
    return f"the last {scan.window_hours:g} h"


def _how_to_read(where: str) -> str:
    """How an SRE reads the lines behind a finding."""
    return (
        f"Read them: `grep -nE ' ERROR |panicked' {where}/{LOG_PREFIX}*` (the newest "
        "lines are in raw/iggy.logs/); correlate with restarts, disk-full and connection "
        "errors, and raise [system.logging] level only while investigating."
    )


# -- rules --------------------------------------------------------------------------


def _panics_in_window(scan: LogScan, where: str, thresholds: dict[str, Any]) -> list[Finding]:
    """Panics in the window: a shard or the process died."""
    severity = PANICS.grade_count(scan.panics_window, thresholds)
    if severity is None:
        return []
    newest = scan.panics[-1] if scan.panics else None
    what = (
        f"; newest at {utc_iso(newest.at)}: {newest.lines[0][:200]}"
        if newest and newest.lines
        else ""
    )
    return [
        Finding(
            severity,
            f"the broker panicked {scan.panics_window} time(s) in {_window(scan)}{what}",
            "A panic kills a shard (Iggy then shuts the whole server down) or the process: "
            "save the panic message and the lines before it for the Iggy maintainers, and "
            "check that the broker restarted and serves (`curl -s http://127.0.0.1:3000/ping`). "
            + _how_to_read(where),
            newest.file if newest else where,
        )
    ]


def _error_rate(scan: LogScan, where: str, thresholds: dict[str, Any]) -> list[Finding]:
    """ERROR lines in the busiest 60 minutes of the window reach their band."""
    start, peak = scan.busiest_hour()
    severity = ERRORS_PER_HOUR.grade_count(peak, thresholds)
    if severity is None:
        return []
    errors = sum(scan.errors.window.values())
    warn, fail = ERRORS_PER_HOUR.limits(thresholds)
    top = ", ".join(f"{t['target']} {t['window']}" for t in scan.errors.top(3) if t["window"])
    return [
        Finding(
            severity,
            f"{errors} ERROR lines in {_window(scan)}, {peak} of them in the 60 minutes from "
            f"{start} (warn at {warn:g}/h, fail at {fail:g}/h); top targets: {top}",
            _how_to_read(where),
            where,
        )
    ]


def _client_errors(scan: LogScan, where: str) -> list[Finding]:
    """Failed client commands in the window: the clients' business, noted with their kinds."""
    failed = sum(scan.client_errors.window.values())
    if not failed:
        return []
    kinds = "; ".join(
        f"{k['kind']} ({k['window']})" for k in scan.client_errors.top(3, "kind") if k["window"]
    )
    return [
        Finding(
            Severity.INFO,
            f"{failed} client command(s) failed in {_window(scan)}, each logged at ERROR by "
            f"the broker (not counted as its errors); top kinds: {kinds}",
            "Usually a client's logic (creating a stream that exists, polling a topic that "
            "does not, a wrong password): find the client by the session in those lines "
            f"(`grep -E 'not handled successfully|Command failed|There was an error' "
            f"{where}/{LOG_PREFIX}*`) and fix or quieten it. A kind that is not the "
            "client's (an I/O or 'Cannot ...' error) points at the broker.",
            where,
        )
    ]


def _symlinks(listing: LogListing) -> list[Finding]:
    """Log names that are symlinks: noted with their targets, never read."""
    return [
        Finding(
            Severity.INFO,
            f"{printable(path)} is a symlink to {printable(target)}: not followed, not read",
            "The broker writes its log files itself and makes no symlinks: find who made "
            "this one (a log shipper, a hand-made link) and remove it; if the logs really "
            "live elsewhere, point [system.logging] path (or iggy.logs_dir) there.",
            path,
        )
        for path, target in listing.symlinks[:MAX_ROWS]
    ]


def _generated_password(scan: LogScan, where: str) -> list[Finding]:
    """A generated root password printed into a retained log: a secret at rest."""
    if not scan.password_lines:
        return []
    spots = ", ".join(f"{path} {where}" for path, where in scan.password_spots[:3])
    return [
        Finding(
            Severity.WARN,
            f"{scan.password_lines} line(s) of the broker's logs print the generated root "
            f"password ({spots}); anyone who can read the logs can log in as root",
            # The CLI prompts when the passwords are not given (server-0.8.0:core/cli/src/
            # args/user.rs, UserPasswordArgs); the route is in core/server/src/http/users.rs.
            "Change the root user's password now: `iggy user password root` (it prompts, "
            "so no password lands in the shell history) or PUT /users/root/password; then "
            "remove the line: rotate or delete the log file holding it. Before a new "
            "broker's first start, set both IGGY_ROOT_USERNAME and IGGY_ROOT_PASSWORD (from "
            "a secret store) so that no password is generated and printed, and do not "
            "capture the broker's stdout into its log directory.",
            scan.password_spots[0][0] if scan.password_spots else where,
        )
    ]


def _history(scan: LogScan, where: str) -> list[Finding]:
    """Errors and panics older than the window: reported, not judged."""
    old_errors = sum(scan.errors.total.values()) - sum(scan.errors.window.values())
    old_panics = scan.panics_total - scan.panics_window
    if not (old_errors or old_panics):
        return []
    return [
        Finding(
            Severity.INFO,
            f"{old_errors} ERROR line(s) and {old_panics} panic(s) in the retained logs are "
            f"older than {_window(scan)}; not judged",
            "History, not the broker's present state: read them only when the incident "
            "under investigation is that old. The window is "
            "checks.thresholds.iggy.logs.window_hours.",
            where,
        )
    ]


def _restarts(scan: LogScan, where: str) -> list[Finding]:
    """The broker started in the window (each start logs its build line)."""
    if not scan.starts_window:
        return []
    return [
        Finding(
            Severity.INFO,
            f"the broker started {scan.starts_window} time(s) in {_window(scan)} "
            f"(latest at {utc_iso(scan.last_start_at)})",
            "If the restarts were not planned, read the lines before each start for the "
            "cause, and the unit's journal (`journalctl -u iggy-server`).",
            where,
        )
    ]


def _partial_read(scan: LogScan, where: str) -> list[Finding]:
    """Not every retained byte was read: what the verdict rests on."""
    findings = []
    if scan.stopped_by_deadline:
        findings.append(
            Finding(
                Severity.INFO,
                f"the read stopped at the check's deadline after {_size(scan.stats.bytes_read)} "
                f"of {_size(scan.bytes_total)}; the newest lines may be uncounted",
                "Lower checks.thresholds.iggy.logs.max_read_mb or raise the check's timeout "
                "(checks.timeouts) so that the read ends in time.",
                where,
            )
        )
    if scan.stats.long_lines:
        findings.append(
            Finding(
                Severity.INFO,
                f"{scan.stats.long_lines} line(s) longer than 1 MiB were cut",
                "A log line that long is not a normal tracing line: look for something "
                "else writing into the broker's log directory.",
                where,
            )
        )
    return findings


def _unreadable(scan: LogScan) -> list[Finding]:
    """Files or the directory that could not be read."""
    return [
        Finding(
            Severity.INFO,
            f"could not read {path}: {why}",
            "Run snapshot-agent as root (or as the broker's user) so the log can be judged.",
            path,
        )
        for path, why in scan.problems[:MAX_ROWS]
    ]


def _foreign_format(scan: LogScan, where: str) -> list[Finding]:
    """Lines were read but none had tracing's timestamp: nothing could be dated."""
    if not scan.lines or scan.first_at is not None:
        return []
    return [
        Finding(
            Severity.INFO,
            f"none of the {scan.lines} lines read starts with a timestamp in Iggy's format",
            "The files are not the broker's tracing log (something else writes there, "
            "or they are corrupt): errors and panics could not be placed in the window.",
            where,
        )
    ]


# -- judge ----------------------------------------------------------------------------


def _data(scan: LogScan, install: IggyInstall, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Counts, top targets, the resource line, panics and files, bounded."""
    top = int(thresholds["top_targets"])
    data: dict[str, Any] = {
        "logs_dir": install.logs_dir,
        "logs_dir_source": install.logs_dir_source,
        "window_hours": scan.window_hours,
        "bytes_total": scan.bytes_total,
        "bytes_read": scan.stats.bytes_read,
        "complete": scan.complete,
        "stopped_by_deadline": scan.stopped_by_deadline,
        "lines": scan.lines,
        "long_lines_cut": scan.stats.long_lines,
        "first_line_at": utc_iso(scan.first_at),
        "last_line_at": utc_iso(scan.last_at),
        "errors_window": sum(scan.errors.window.values()),
        "errors_busiest_hour": dict(zip(("from", "errors"), scan.busiest_hour(), strict=True)),
        "errors_total": sum(scan.errors.total.values()),
        "client_errors_window": sum(scan.client_errors.window.values()),
        "client_errors_total": sum(scan.client_errors.total.values()),
        "top_client_error_kinds": scan.client_errors.top(top, "kind"),
        "warnings_window": sum(scan.warnings.window.values()),
        "warnings_total": sum(scan.warnings.total.values()),
        "top_error_targets": scan.errors.top(top),
        "top_warning_targets": scan.warnings.top(top),
        "panics_window": scan.panics_window,
        "panics_total": scan.panics_total,
        "panics": [p.to_dict() for p in scan.panics],
        "root_password_lines": scan.password_lines,
        "root_password_spots": [{"file": f, "where": w} for f, w in scan.password_spots],
        "starts_total": scan.starts,
        "starts_window": scan.starts_window,
        "last_start_at": utc_iso(scan.last_start_at),
        "files": scan.files[-MAX_ROWS:],
        "files_left_out": max(0, len(scan.files) - MAX_ROWS),
    }
    if scan.resource_line:
        data["resource"] = {
            "at": utc_iso(scan.resource_at),
            "fields": parse_resource_line(scan.resource_line),
            "line": scan.resource_line,
        }
    return data


def judge_logs(
    scan: LogScan,
    install: IggyInstall,
    thresholds: dict[str, Any],
    listing: LogListing | None = None,
) -> Result:
    """Panics fail, the broker's ERROR rate is banded, a printed password warns; the rest notes."""
    where = install.logs_dir
    findings = (
        _panics_in_window(scan, where, thresholds)
        + _error_rate(scan, where, thresholds)
        + _generated_password(scan, where)
        + _client_errors(scan, where)
        + _symlinks(listing or LogListing())
        + _history(scan, where)
        + _restarts(scan, where)
        + _partial_read(scan, where)
        + _unreadable(scan)
        + _foreign_format(scan, where)
    )
    errors = sum(scan.errors.window.values())
    failed = sum(scan.client_errors.window.values())
    apart = f" (and {failed} failed client commands)" if failed else ""
    ok = f"{errors} ERROR lines{apart} and no panic in {_window(scan)}"
    data = _data(scan, install, thresholds)
    if listing is not None and listing.symlinks:
        data["symlinks_not_followed"] = [
            {"path": printable(p), "target": printable(t)} for p, t in listing.symlinks[:MAX_ROWS]
        ]
    result = Result.from_findings(findings, ok=ok, data=data)
    result.summary += f" ({_read_words(scan)})"
    return result


def _save_tail(ctx: Context, newest: LogFile) -> None:
    """The end of the newest log as evidence (the pipeline redacts it).

    Read as the scan read it (no symlink followed, regular files only), under a timeout.
    """
    read = probe_all(
        {"tail": lambda: read_log_tail(newest.path, TAIL_BYTES)}, probe_budget(ctx, LIST_TIMEOUT_S)
    )["tail"]
    if read.done and read.error is None:
        ctx.artifact(f"tail/{newest.name}", read.value)
    # Otherwise already reported by the scan as unreadable, or the mount stopped answering.


@check(
    id="iggy.logs",
    category="iggy",
    title="Iggy broker logs",
    description=(
        "Panics, ERROR/WARN lines by target, restarts, the latest resource line and "
        "generated root passwords in the broker's retained log files."
    ),
    timeout_s=20,
    thresholds={"window_hours": 24, "max_read_mb": 1024, "top_targets": 10},
    bands=(ERRORS_PER_HOUR, PANICS),
)
def iggy_logs(ctx: Context) -> Result:
    """What the broker's own logs say about the last day, and what they leak.

    Verdicts:
    - pass: INFO lines and resource lines only, 0.8 naming (.1 .. .N)
      [test_iggy_logs_healthy_08_log_passes]
    - pass: errors and a panic from three days ago, quiet since
      [test_iggy_logs_old_errors_outside_the_window_pass]
    - pass: 0.5 naming (iggy-server.log.YYYY-MM-DD-HH), INFO only
      [test_iggy_logs_05_naming_read_oldest_first]
    - pass: a 100 MB line without a newline is cut and counted
      [test_iggy_logs_huge_line_is_cut_and_counted]
    - pass: invalid UTF-8 and ANSI colours in the lines
      [test_iggy_logs_invalid_utf8_and_ansi_are_tolerated]
    - pass: 500 failed `stream.create` commands in an hour (a fleet ignoring
      AlreadyExists): counted apart as client errors, a note with their kinds
      [test_iggy_logs_failed_client_commands_are_not_broker_errors]
    - pass: `iggy-server.log -> a secret file`: a note with the target, never read nor
      saved [test_iggy_logs_symlinked_log_is_noted_and_never_read]
    - warn: 30 ERROR lines within one hour (warn at 10/h)
      [test_iggy_logs_error_rate_warns_and_fails]
    - warn: a generated root password printed in a log (its value never in the result)
      [test_iggy_logs_generated_root_password_warns_without_the_value]
    - warn: that password line in a file read from its middle (the byte budget left the
      oldest 300 KB out) [test_iggy_logs_byte_budget_reads_the_newest_bytes]
    - fail: 200 ERROR lines within one hour (fail at 100/h)
      [test_iggy_logs_error_rate_warns_and_fails]
    - fail: a shard panicked in the last hour
      [test_iggy_logs_panic_in_window_fails]
    - fail: a panic without a timestamp at the end of a file written a minute ago, after
      days of silence [test_iggy_logs_untimed_panic_after_days_of_silence_fails]
    - skipped: no broker, config or data directory on the node
      [test_iggy_logs_skipped_without_iggy]
    - skipped: the log directory is missing or holds no iggy-server.log*
      [test_iggy_logs_skipped_without_log_files]
    - skipped: the deadline came before any file was read
      [test_iggy_logs_deadline_before_any_read_is_a_skip]
    """
    install = discover(ctx)
    if not install.found:
        return Result.skipped(install.skip_reason())
    if not install.logs_dir:
        return Result.skipped(
            "the broker's log directory is unknown (no data directory found); set "
            "iggy.logs_dir or iggy.data_dir in the agent's config"
        )
    directory = ctx.path(install.logs_dir)
    deadline = ctx.deadline - DEADLINE_MARGIN_S
    where = f"{install.logs_dir} ({install.logs_dir_source})"
    # A dead network mount hangs listing and reads in the kernel: wait for them in a
    # thread, never past the deadline (node/mounts.py probe_all).
    listing = probe_all(
        {"list": lambda: list_log_files(directory, install.logs_dir, deadline)},
        probe_budget(ctx, LIST_TIMEOUT_S),
    )["list"]
    if not listing.done:
        return Result.skipped(f"{where} does not answer: listing it hung for {LIST_TIMEOUT_S:g} s")
    found: LogListing = listing.value
    files = found.files
    if not files:
        return _nothing_to_read(where, found)
    scan = LogScan(now=time.time(), window_hours=float(ctx.thresholds["window_hours"]))
    budget = int(float(ctx.thresholds["max_read_mb"]) * MIB)
    reading = probe_all(
        {"scan": lambda: scan_logs(files, scan, budget=budget, deadline=deadline)},
        max(0.05, deadline + DEADLINE_MARGIN_S / 2 - time.monotonic()),
    )["scan"]
    if not reading.done:
        return Result.skipped(
            f"reading {where} hung after {_size(scan.stats.bytes_read)} (its filesystem "
            "does not answer); nothing was judged"
        )
    if reading.error is not None:
        raise reading.error
    scan.problems[:0] = found.problems
    if scan.stopped_by_deadline and not scan.stats.bytes_read:
        return Result.skipped(
            f"the check's deadline came before any of {install.logs_dir} was read "
            f"({len(files)} file(s), {_size(scan.bytes_total)}); raise its timeout"
        )
    _save_tail(ctx, files[-1])
    return judge_logs(scan, install, ctx.thresholds, found)


def _nothing_to_read(where: str, listing: LogListing) -> Result:
    """The skip when no regular log file was listed, saying why."""
    if listing.problems:
        return Result.skipped(f"{where} could not be listed: {listing.problems[0][1]}")
    if listing.symlinks:
        path, target = listing.symlinks[0]
        return Result.skipped(
            f"{where} holds no regular {LOG_PREFIX}* file: {printable(path)} is a symlink to "
            f"{printable(target)} (not followed)"
        )
    return Result.skipped(
        f"{where} holds no {LOG_PREFIX}* file; file logging may be off ([system.logging] "
        "file_enabled) or the logs are elsewhere (set iggy.logs_dir)"
    )
