"""logs.journal and logs.files against sample journal JSON, fake journalctl and fixture logs."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from snapshot_agent.checks.logs import (
    JournalEntry,
    JournalFacts,
    classify_line,
    judge_journal,
    line_time,
    line_times,
    logs_files,
    logs_journal,
    parse_journal_json,
    read_tail_lines,
)
from snapshot_agent.config import ChecksConfig, Config, IggyConfig, LogsConfig
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.iggy_logs import parse_resource_line

from .conftest import fixture_roots, make_context, write_tree

JOURNAL_T = dict(logs_journal.thresholds)
FILES_T = dict(logs_files.thresholds)

# What `journalctl -p err -o json --output-fields=...` prints (systemd 252), one record a line.
# The broker colours its stdout, so journald stores that MESSAGE as a byte array.
_ANSI_ERROR = (
    "\x1b[2m2026-05-20T03:12:09.101Z\x1b[0m \x1b[31mERROR\x1b[0m shard-0 "
    "server::tcp::tcp_listener: Failed to accept connection: Too many open files"
)
JOURNAL_ERR = "\n".join(
    json.dumps(r)
    for r in [
        {
            "__CURSOR": "s=7c1f;i=1a2;b=9e0d;m=2a1b;t=61f0;x=5d3c",
            "__REALTIME_TIMESTAMP": "1779246729101000",
            "__MONOTONIC_TIMESTAMP": "8812345678",
            "_BOOT_ID": "9e0d4f1c2b3a48e7a1d2c3b4a5f60718",
            "PRIORITY": "3",
            "_SYSTEMD_UNIT": "chrony.service",
            "SYSLOG_IDENTIFIER": "chronyd",
            "_COMM": "chronyd",
            "_PID": "611",
            "_TRANSPORT": "syslog",
            "MESSAGE": "Could not open NTP socket on 0.0.0.0:123 : Address in use",
        },
        {
            "__CURSOR": "s=7c1f;i=1a3;b=9e0d;m=2a1c;t=61f1;x=5d3d",
            "__REALTIME_TIMESTAMP": "1779246730200000",
            "__MONOTONIC_TIMESTAMP": "8813445678",
            "_BOOT_ID": "9e0d4f1c2b3a48e7a1d2c3b4a5f60718",
            "PRIORITY": "3",
            "SYSLOG_IDENTIFIER": "kernel",
            "_TRANSPORT": "kernel",
            "MESSAGE": "Out of memory: Killed process 812 (iggy-server) total-vm:9123456kB, "
            "anon-rss:7012345kB, file-rss:0kB, shmem-rss:0kB, UID:998 pgtables:14000kB "
            "oom_score_adj:0",
        },
    ]
)
JOURNAL_BROKER = "\n".join(
    json.dumps(r)
    for r in [
        {
            "__REALTIME_TIMESTAMP": "1779246729101000",
            "PRIORITY": "6",
            "_SYSTEMD_UNIT": "iggy-server.service",
            "SYSLOG_IDENTIFIER": "iggy-server",
            "_PID": "812",
            "MESSAGE": list(_ANSI_ERROR.encode()),
        },
        {
            "__REALTIME_TIMESTAMP": "1779246729301000",
            "PRIORITY": "6",
            "_SYSTEMD_UNIT": "iggy-server.service",
            "SYSLOG_IDENTIFIER": "iggy-server",
            "_PID": "812",
            "MESSAGE": "2026-05-20T03:12:09.301Z  INFO shard-0 server::main: CPU: 1.00%/2.00% "
            "(IggyUsage/Total), Mem: 50.00%/1.00 GB/4.00 GB/8.00 GB, Clients: 2, OpenFDs: 57",
        },
    ]
)


def test_parse_journal_json_handles_byte_arrays_nulls_and_cut_lines() -> None:
    text = JOURNAL_BROKER + '\n{"MESSAGE": null, "PRIORITY": "2", "_COMM": "x"}\n{"__CURS'
    entries, bad = parse_journal_json(text)
    assert bad == 1
    first = entries[0]
    assert first.unit == "iggy-server.service" and first.pid == "812"
    assert first.message.startswith("2026-05-20T03:12:09.101Z ERROR shard-0")  # ANSI gone
    assert classify_line(first.message) == "error"
    assert entries[2].unit == "x" and entries[2].priority == 2
    assert "too large" in entries[2].message


def _entry(unit: str, message: str, prio: int = 3, t: int = 1) -> JournalEntry:
    return JournalEntry(time_us=t, priority=prio, unit=unit, message=message, identifier=unit)


def _jfacts(errors: list[JournalEntry], broker: list[JournalEntry] | None = None) -> JournalFacts:
    return JournalFacts(
        service="iggy-server.service",
        window_hours=24,
        max_entries=5000,
        errors=errors,
        broker_lines=broker or [],
    )


def test_judge_journal_pass_warn_fail() -> None:
    quiet = judge_journal(_jfacts([_entry("chrony.service", "x")]), JOURNAL_T)
    assert quiet.status == Status.PASS
    assert quiet.summary.startswith("1 error-priority entries in the last 24 h")

    line = "2026-05-20T03:12:09.101Z ERROR shard-0 server::x: disk full"
    broker = [_entry("iggy-server.service", line, prio=6, t=i) for i in range(3)]
    warn = judge_journal(_jfacts([], broker), JOURNAL_T)
    assert warn.status == Status.WARN
    assert warn.data["broker_errors"] == 3
    assert warn.findings[0].subject == "iggy-server.service"
    assert "journalctl -u iggy-server.service" in warn.findings[0].remediation

    many = [_entry("iggy-server.service", line, prio=6, t=i) for i in range(100)]
    assert judge_journal(_jfacts([], many), JOURNAL_T).status == Status.FAIL

    noisy = [_entry(f"unit{i % 3}.service", "boom", t=i) for i in range(250)]
    result = judge_journal(_jfacts(noisy), JOURNAL_T)
    assert result.status == Status.WARN and "250 error-priority" in result.summary
    assert result.data["by_unit"][0]["errors"] in (83, 84)


def test_judge_journal_bands() -> None:
    assert JOURNAL_T == {
        "window_hours": 24,
        "max_entries": 5000,
        "warn_broker_errors": 1,
        "fail_broker_errors": 100,
        "warn_total_errors": 200,
    }
    line = "2026-05-20T03:12:09.101Z ERROR shard-0 server::x: disk full"
    broker = [_entry("iggy-server.service", line, prio=6, t=i) for i in range(5)]
    strict = JOURNAL_T | {"warn_broker_errors": 2, "fail_broker_errors": 5}
    result = judge_journal(_jfacts([], broker), strict)
    assert result.status == Status.FAIL
    assert "5 error line(s) from the broker" in result.summary
    assert "(warn at 2, fail at 5)" in result.summary
    assert judge_journal(_jfacts([], broker[:1]), strict).status == Status.PASS
    noisy = [_entry("unit.service", "boom", t=i) for i in range(200)]
    result = judge_journal(_jfacts(noisy), JOURNAL_T)
    assert result.status == Status.WARN and "(warn at 200; top: unit.service 200)" in result.summary
    assert judge_journal(_jfacts(noisy[:199]), JOURNAL_T).status == Status.PASS


def test_judge_journal_broker_info_lines_mentioning_errors_pass() -> None:
    # Healthy lines whose text mentions errors: the tracing level (INFO) decides.
    lines = [
        "2026-05-20T03:12:09.101Z  INFO shard-0 server::x: retried after ERROR 0 times",
        "2026-05-20T03:12:10.101Z  INFO shard-0 server::x: error_count=0 for partition 1",
    ]
    broker = [_entry("iggy-server.service", line, prio=6, t=i) for i, line in enumerate(lines)]
    result = judge_journal(_jfacts([], broker), JOURNAL_T)
    assert result.status == Status.PASS and result.data["broker_errors"] == 0


def test_judge_journal_fails_on_oom_kill_and_panic() -> None:
    oom = _entry("kernel", "Out of memory: Killed process 812 (iggy-server) total-vm:1kB")
    result = judge_journal(_jfacts([oom]), JOURNAL_T)
    assert result.status == Status.FAIL and "OOM killer killed the broker (pid 812)" in (
        result.summary
    )
    panic = _entry("iggy-server.service", "thread 'shard-1' panicked at core/x.rs:1:2", prio=6)
    assert judge_journal(_jfacts([], [panic]), JOURNAL_T).status == Status.FAIL


def test_judge_journal_warns_on_unit_failures() -> None:
    failed = JournalEntry(
        time_us=5,
        priority=4,
        unit="init.scope",
        message="iggy-server.service: Failed with result 'signal'.",
        about_unit="iggy-server.service",
        comm="systemd",
        identifier="systemd",
    )
    result = judge_journal(_jfacts([], [failed, failed]), JOURNAL_T)
    assert result.status == Status.WARN
    assert result.summary.startswith("iggy-server.service failed 2 time(s) in the last 24 h")
    assert result.data["broker_unit_failures"] == 2


def _fake_journalctl(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "journalctl"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_logs_journal_end_to_end_with_a_fake_journalctl(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "err.json").write_text(JOURNAL_ERR + "\n")
    (tmp_path / "broker.json").write_text(JOURNAL_BROKER + "\n")
    _fake_journalctl(
        tmp_path / "bin",
        f'case "$*" in\n  *"-p err"*) cat {tmp_path}/err.json ;;\n'
        f'  *"-u iggy-server.service"*) cat {tmp_path}/broker.json ;;\nesac\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    write_tree(node, {"run/systemd/journal/socket": ""})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=JOURNAL_T)
    result = logs_journal.run(ctx)
    assert result.status == Status.FAIL  # the OOM kill of the broker
    assert result.data["error_entries"] == 2
    assert result.data["broker_errors"] == 2  # the OOM kill + the ERROR line on stdout
    assert {r["unit"] for r in result.data["by_unit"]} == {"chrony.service", "kernel"}
    errors = (tmp_path / "artifacts/errors.txt").read_text()
    assert "chrony.service[611]: Could not open NTP socket" in errors
    # A fixture tree must never read the host's journal.
    argv = ctx.commands[0]["argv"]
    assert any(a.startswith("--directory=" + str(node)) for a in argv)
    assert "-n" in argv and "5000" in argv


def test_logs_journal_skips_without_journald(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/1/comm": "tini\n"})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=JOURNAL_T)
    result = logs_journal.run(ctx)
    assert result.status == Status.SKIPPED
    assert "journald is not running" in result.summary and "PID 1 is tini" in result.summary


def test_logs_journal_skips_when_journalctl_finds_no_files(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_journalctl(tmp_path / "bin", 'echo "No journal files were found." >&2\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    write_tree(node, {"run/systemd/journal/socket": ""})
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=JOURNAL_T)
    result = logs_journal.run(ctx)
    assert result.status == Status.SKIPPED and "no journal files" in result.summary


# -- logs.files ---------------------------------------------------------------------

RESOURCE = (
    "2026-05-20T03:12:10.000000Z  INFO shard-0 server::log::sysinfo: CPU: 3.20%/41.50% "
    "(IggyUsage/Total), Mem: 52.10%/1.20 GB/3.70 GB/7.77 GB (Free/IggyUsage/TotalUsed/Total), "
    "Clients: 14, Messages: 1.2M, Read: 5.00 GB, Written: 9.10 GB, OpenFDs: 311"
)


def iggy_line(level: str, msg: str, second: int = 0, *, ago_s: float = 600.0) -> str:
    """A line as Iggy's file layer writes it (tracing full format, thread names, no ANSI).

    Written `ago_s` seconds ago (10 minutes by default: inside the window), plus `second`.
    """
    when = datetime.fromtimestamp(time.time() - ago_s + second, UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S.%fZ} {level:>5} shard-0 server::streaming: {msg}"


def files_ctx(
    tmp_path: Path,
    node: Path,
    *,
    logs_dir: str | None = "/var/lib/iggy/logs",
    files: list[str] | None = None,
    thresholds: dict[str, object] | None = None,
) -> Context:
    """A context with iggy.logs_dir and checks.logs.files set (make_context takes roots only)."""
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds or FILES_T)
    ctx.config = Config(
        iggy=IggyConfig(logs_dir=logs_dir),
        checks=ChecksConfig(roots=fixture_roots(node), logs=LogsConfig(files=files or [])),
    )
    return ctx


def test_logs_files_pass_with_resource_line(tmp_path: Path, node: Path) -> None:
    resource = iggy_line("INFO", RESOURCE[RESOURCE.index("CPU:") :], 50)
    lines = [iggy_line("INFO", f"message {i}", i) for i in range(50)] + [resource]
    write_tree(node, {"var/lib/iggy/logs/iggy-server.log": "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.PASS
    assert result.summary.startswith("1 log(s) read, 0 ERROR lines")
    assert "OpenFDs 311" in result.summary
    assert "iggy-server.log: the lines read reach back 10 min" in result.summary
    fields = result.data["broker_resources"]["fields"]
    assert fields["open_fds"] == 311 and fields["clients"] == 14
    assert result.data["broker_resources"]["at"] == resource.split()[0]
    assert result.data["iggy_log_dir_source"] == "config iggy.logs_dir"
    tail = tmp_path / "artifacts/tail/var/lib/iggy/logs/iggy-server.log"
    assert tail.read_text().endswith(resource + "\n")


@pytest.mark.parametrize(
    ("errors", "panic", "status"),
    [
        (3, False, Status.PASS),
        (12, False, Status.WARN),
        (150, False, Status.FAIL),
        (0, True, Status.FAIL),
    ],
)
def test_logs_files_verdicts(
    tmp_path: Path, node: Path, errors: int, panic: bool, status: Status
) -> None:
    lines = [iggy_line("INFO", "ok", i) for i in range(100)]
    lines += [
        iggy_line("ERROR", f"Failed to persist segment {i}: No space left", i)
        for i in range(errors)
    ]
    lines += [iggy_line(" WARN", "slow fsync", 1)] * 5
    if panic:
        lines.append("thread 'shard-3' panicked at core/server/src/shard/mod.rs:211:9:")
    write_tree(node, {"var/lib/iggy/logs/iggy-server.log": "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == status
    [row] = result.data["logs"]
    assert row["errors"] == errors and row["warnings"] == 5 and row["panics"] == int(panic)
    if status != Status.PASS:
        finding = result.findings[0]
        assert finding.subject == "/var/lib/iggy/logs/iggy-server.log"
        assert "grep" in finding.remediation


def test_logs_files_bands(tmp_path: Path, node: Path) -> None:
    assert FILES_T == {
        "tail_lines": 2000,
        "max_files": 20,
        "info_warnings": 200,
        "stale_minutes": 60,
        "window_hours": 24,
        "warn_errors": 10,
        "fail_errors": 100,
        "fail_panics": 1,
    }
    lines = [iggy_line("ERROR", f"Failed {i}", i) for i in range(10)]
    lines.append("thread 'shard-3' panicked at core/server/src/shard/mod.rs:211:9:")
    write_tree(node, {"var/lib/iggy/logs/iggy-server.log": "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.FAIL  # the panic
    errors = next(f for f in result.findings if "ERROR lines" in f.message)
    assert errors.severity == Severity.WARN  # 10 reaches warn_errors
    assert "(warn at 10, fail at 100)" in errors.message
    # fail_panics 0 turns the panic rule off, as before.
    result = logs_files.run(files_ctx(tmp_path, node, thresholds=FILES_T | {"fail_panics": 0}))
    assert result.status == Status.WARN
    assert not any("panic(s)" in f.message for f in result.findings)


def test_logs_files_window_spans_rotation(tmp_path: Path, node: Path) -> None:
    old = [iggy_line("ERROR", "before rotation", i) for i in range(15)]
    new = [iggy_line("INFO", "after rotation", i) for i in range(5)]
    write_tree(
        node,
        {
            "var/lib/iggy/logs/iggy-server.log.1": "\n".join(old) + "\n",
            "var/lib/iggy/logs/iggy-server.log": "\n".join(new) + "\n",
        },
    )
    past = time.time() - 3600
    os.utime(node / "var/lib/iggy/logs/iggy-server.log.1", (past, past))
    result = logs_files.run(files_ctx(tmp_path, node, thresholds=FILES_T | {"tail_lines": 10}))
    [row] = result.data["logs"]
    assert row["files"] == 2 and row["lines_read"] == 10 and row["errors"] == 5
    assert result.status == Status.PASS  # 5 < warn_errors
    assert result.data["files"][0]["path"].endswith("iggy-server.log")


def test_read_tail_lines_seeks_and_drops_the_cut_line(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    with big.open("w") as fh:
        for i in range(200_000):
            fh.write(f"line {i:06d} {'x' * 20}\n")
    lines = read_tail_lines(big, 5, max_bytes=4096)
    assert lines == [f"line {i:06d} {'x' * 20}" for i in range(199_995, 200_000)]
    few = read_tail_lines(big, 10_000, max_bytes=4096)
    assert few[0].startswith("line ") and len(few[0]) == len(few[-1])  # no partial first line


def test_logs_files_stale_log_while_broker_runs(tmp_path: Path, node: Path) -> None:
    # No logs_dir in the config: found from the running broker's working directory.
    write_tree(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/cmdline": "/usr/bin/iggy-server\0",
            "srv/iggy/local_data/logs/iggy-server.log": iggy_line("INFO", "hello") + "\n",
        },
    )
    (node / "proc/812/cwd").symlink_to("/srv/iggy")
    log = node / "srv/iggy/local_data/logs/iggy-server.log"
    past = time.time() - 5 * 3600
    os.utime(log, (past, past))
    result = logs_files.run(files_ctx(tmp_path, node, logs_dir=None))
    assert result.status == Status.PASS
    assert result.data["iggy_log_dir"] == "/srv/iggy/local_data/logs"
    [finding] = result.findings
    assert finding.severity == Severity.INFO
    assert "last written 5 h ago while iggy-server (pid 812) runs" in finding.message


def test_logs_files_finds_a_containerised_broker_log(tmp_path: Path, node: Path) -> None:
    # The agent on the host, the broker in a container: its paths are in its mount namespace.
    write_tree(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/environ": "HOME=/root\0IGGY_SYSTEM_PATH=/data/iggy\0",
            "proc/812/root/data/iggy/logs/iggy-server.log": iggy_line("ERROR", "x") + "\n",
        },
    )
    (node / "proc/812/cwd").symlink_to("/app")
    result = logs_files.run(files_ctx(tmp_path, node, logs_dir=None))
    assert result.data["iggy_log_dir"] == "/proc/812/root/data/iggy/logs"
    assert "inside its container" in result.data["iggy_log_dir_source"]
    assert result.data["logs"][0]["errors"] == 1


def test_logs_files_configured_globs_fifo_and_unmatched(tmp_path: Path, node: Path) -> None:
    write_tree(
        node,
        {
            "var/log/app/a.log": "2026-05-20 ERROR db down\nall good\n",
            "var/log/app/b.log.gz": b"\x1f\x8b\x08binary",
        },
    )
    os.mkfifo(node / "var/log/app/pipe.log")
    ctx = files_ctx(
        tmp_path, node, logs_dir=None, files=["/var/log/app/*.log", "/var/log/none/*.log"]
    )
    result = logs_files.run(ctx)  # must not hang on the FIFO
    assert result.status == Status.PASS
    [row] = result.data["logs"]
    assert row["log"] == "/var/log/app/a.log" and row["errors"] == 1
    messages = [f.message for f in result.findings]
    assert any("could not read /var/log/app/pipe.log: not a regular file" in m for m in messages)
    assert any("no file matches the configured log /var/log/none/*.log" in m for m in messages)


def test_logs_files_skipped_without_logs(tmp_path: Path, node: Path) -> None:
    result = logs_files.run(files_ctx(tmp_path, node, logs_dir=None))
    assert result.status == Status.SKIPPED
    assert "Iggy log directory is unknown" in result.summary
    assert "checks.logs.files is empty" in result.summary


def test_classify_and_resource_parsers() -> None:
    assert classify_line(iggy_line("ERROR", "x")) == "error"
    assert classify_line(iggy_line("WARN", "x")) == "warn"
    assert classify_line(iggy_line("INFO", "a message mentioning ERROR codes")) == ""
    assert classify_line('ts=1 level=error msg="db"') == "error"
    assert classify_line('{"level":"warn","msg":"slow"}') == "warn"
    assert parse_resource_line("nothing here") == {}
    assert parse_resource_line(RESOURCE)["cpu_iggy_pct"] == 3.2


# -- logs.files: the time window --------------------------------------------------------

DAYS_AGO = 3 * 86400
IGGY_LOG = "var/lib/iggy/logs/iggy-server.log"
PANIC = "thread 'shard-3' panicked at core/server/src/shard/mod.rs:211:9:"


def _age_file(path: Path, seconds: float) -> None:
    """Set a file's mtime `seconds` into the past."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def _burst_days_ago(errors: int = 150) -> list[str]:
    """An error burst three days ago ending in a panic (its line carries no timestamp)."""
    burst = [
        iggy_line("ERROR", f"Failed to persist segment {i}: No space left", i, ago_s=DAYS_AGO)
        for i in range(errors)
    ]
    return [*burst, PANIC]


def test_logs_files_errors_from_days_ago_pass_on_a_quiet_broker(tmp_path: Path, node: Path) -> None:
    # A quiet broker: the burst three days ago is still within the last 2000 lines.
    lines = _burst_days_ago() + [iggy_line("INFO", f"ok {i}", i) for i in range(20)]
    write_tree(node, {IGGY_LOG: "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.PASS
    assert result.summary.startswith("1 log(s) read, 0 ERROR lines in the last 24 h")
    assert "(151 older error/panic lines not judged)" in result.summary
    [row] = result.data["logs"]
    assert (row["errors"], row["panics"], row["lines_in_window"]) == (0, 0, 20)
    assert (row["older_errors"], row["older_panics"]) == (150, 1)
    newest = datetime.fromisoformat(row["newest_older_error_at"].replace("Z", "+00:00"))
    ago = datetime.now(UTC) - newest  # the last of the burst, 149 s after its first
    assert timedelta(days=3, seconds=-150) < ago < timedelta(days=3, seconds=60), ago
    [old] = result.findings
    assert old.severity == Severity.INFO
    assert "150 ERROR line(s) and 1 panic(s)" in old.message
    assert (
        "older than the 24 h window (the newest at " in old.message and "(3 d ago)" in old.message
    )
    # A wider window reaches the burst: judged again.
    wide = logs_files.run(files_ctx(tmp_path, node, thresholds=FILES_T | {"window_hours": 96}))
    assert wide.status == Status.FAIL
    assert "lines of /var/lib/iggy/logs/iggy-server.log (reaching back 3 d of the 96 h)" in (
        wide.summary
    )


@pytest.mark.parametrize(
    ("recent_errors", "recent_panic", "status"),
    [(3, False, Status.PASS), (12, False, Status.WARN), (0, True, Status.FAIL)],
)
def test_logs_files_judges_only_the_errors_of_the_window(
    tmp_path: Path, node: Path, recent_errors: int, recent_panic: bool, status: Status
) -> None:
    lines = _burst_days_ago(200) + [
        iggy_line("ERROR", f"Failed to accept connection {i}", i) for i in range(recent_errors)
    ]
    if recent_panic:
        lines += [iggy_line("INFO", "shard 3 started"), PANIC]
    write_tree(node, {IGGY_LOG: "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == status
    [row] = result.data["logs"]
    assert (row["errors"], row["panics"]) == (recent_errors, int(recent_panic))
    assert (row["older_errors"], row["older_panics"]) == (200, 1)
    if status != Status.PASS:
        assert "in the last 24 h of /var/lib/iggy/logs/iggy-server.log" in result.summary


def test_logs_files_continuation_lines_belong_to_their_entry(tmp_path: Path, node: Path) -> None:
    cont = [f"    caused by: ERROR writing partition {i}: Input/output error" for i in range(12)]
    lines = [
        *cont[:3],  # the tail starts mid-message: these belong to the first timestamped entry
        iggy_line("ERROR", "Failed to flush", ago_s=DAYS_AGO),
        *cont,
        iggy_line("INFO", "ok"),
        iggy_line("WARN", "slow fsync, details follow"),
        *cont[:10],  # continuation of a recent WARN entry: inside the window
    ]
    write_tree(node, {IGGY_LOG: "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    [row] = result.data["logs"]
    assert (row["older_errors"], row["errors"], row["warnings"]) == (16, 10, 1)
    assert result.status == Status.WARN  # 10 recent error lines reach warn_errors
    assert row["timestamped_lines"] == 3


def test_logs_files_without_timestamps_judged_by_tail_and_mtime(tmp_path: Path, node: Path) -> None:
    log = "var/log/app/app.log"
    write_tree(node, {log: "".join(f"ERROR db down ({i})\nretrying\n" for i in range(12))})
    ctx = files_ctx(tmp_path, node, logs_dir=None, files=["/var/log/app/*.log"])
    # Written a minute ago: judged by its tail, as before, and the summary says why.
    _age_file(node / log, 60)
    result = logs_files.run(ctx)
    assert result.status == Status.WARN
    assert "12 ERROR lines in the last 24 lines of /var/log/app/app.log" in result.summary
    assert "(they have no timestamps)" in result.summary
    # Not written for three days: none of its lines can be from the window.
    _age_file(node / log, DAYS_AGO)
    result = logs_files.run(ctx)
    assert result.status == Status.PASS
    assert "/var/log/app/app.log: lines without timestamps, judged by its last 24" in result.summary
    [old] = result.findings
    assert "12 ERROR line(s) in /var/log/app/app.log are older than the 24 h window" in old.message
    assert "last written 3 d ago and its lines have no timestamps" in old.message


def test_logs_files_file_unwritten_in_window_holds_no_recent_lines(
    tmp_path: Path, node: Path
) -> None:
    # The lines claim to be ten minutes old (a skewed clock, a misread zone); the file's
    # mtime says nothing was written for three days: the mtime wins.
    lines = [iggy_line("ERROR", f"Failed {i}", i) for i in range(12)]
    write_tree(node, {IGGY_LOG: "\n".join(lines) + "\n"})
    _age_file(node / IGGY_LOG, DAYS_AGO)
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.PASS
    [row] = result.data["logs"]
    assert (row["errors"], row["older_errors"]) == (0, 12)


def test_logs_files_stale_broker_log_with_old_errors(tmp_path: Path, node: Path) -> None:
    # The broker runs; its log was last written three days ago, during an error burst.
    write_tree(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/cmdline": "/usr/bin/iggy-server\0",
            "srv/iggy/local_data/logs/iggy-server.log": "\n".join(_burst_days_ago()) + "\n",
        },
    )
    (node / "proc/812/cwd").symlink_to("/srv/iggy")
    _age_file(node / "srv/iggy/local_data/logs/iggy-server.log", DAYS_AGO)
    result = logs_files.run(files_ctx(tmp_path, node, logs_dir=None))
    assert result.status == Status.PASS
    assert {f.severity for f in result.findings} == {Severity.INFO}
    messages = " | ".join(f.message for f in result.findings)
    assert "150 ERROR line(s) and 1 panic(s)" in messages
    stale = "last written 3 d ago while iggy-server (pid 812) runs; nothing in it is from the"
    assert f"{stale} last 24 h" in messages


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _syslog_time(seconds_ago: float) -> str:
    """`Nov 23 10:00:00` for local time `seconds_ago` seconds in the past (C-locale names)."""
    when = datetime.fromtimestamp(time.time() - seconds_ago)
    return f"{MONTHS[when.month - 1]} {when.day:>2} {when:%H:%M:%S}"


def test_logs_files_syslog_and_rfc3339_offset_logs(tmp_path: Path, node: Path) -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    stamp = lambda ago: (datetime.now(tz) - timedelta(seconds=ago)).isoformat()  # noqa: E731
    write_tree(
        node,
        {
            "var/log/app/syslog.log": "".join(
                f"{_syslog_time(ago)} node1 app[42]: ERROR queue {i} stuck\n"
                for i, ago in enumerate([DAYS_AGO] * 20 + [300] * 2)
            ),
            "var/log/app/rsyslog.log": "".join(
                f'{stamp(ago)} node1 app[42]: <error> level=error msg="queue {i}"\n'
                for i, ago in enumerate([DAYS_AGO] * 30 + [120] * 11)
            ),
        },
    )
    ctx = files_ctx(tmp_path, node, logs_dir=None, files=["/var/log/app/*.log"])
    result = logs_files.run(ctx)
    rows = {r["log"]: r for r in result.data["logs"]}
    assert (
        rows["/var/log/app/syslog.log"]["errors"],
        rows["/var/log/app/syslog.log"]["older_errors"],
    ) == (2, 20)
    assert (
        rows["/var/log/app/rsyslog.log"]["errors"],
        rows["/var/log/app/rsyslog.log"]["older_errors"],
    ) == (11, 30)
    assert result.status == Status.WARN  # 11 recent errors in rsyslog.log
    assert result.summary.startswith("11 ERROR lines in the last 24 h of /var/log/app/rsyslog.log")


def test_line_time_parses_the_formats() -> None:
    ref = datetime(2027, 1, 2, 12, 0, tzinfo=UTC).timestamp()
    utc = datetime(2026, 11, 26, 13, 5, 41, tzinfo=UTC).timestamp()
    assert line_time("2026-11-26T13:05:41.123456Z  INFO shard-0 server: x", ref) == utc + 0.123456
    ansi = "\x1b[2m2026-11-26T13:05:41.5Z\x1b[0m \x1b[31mERROR\x1b[0m shard-0 server: x"
    assert line_time(ansi, ref) == utc + 0.5
    assert line_time("2026-11-26T14:35:41+01:30 host prog[1]: x", ref) == utc
    assert line_time("[2026-11-26 13:05:41 UTC] ERROR x", ref) == utc
    assert line_time('{"timestamp":"2026-11-26T13:05:41Z","level":"error"}', ref) == utc
    assert line_time(f'{{"level":"error","ts":{utc:.3f},"msg":"x"}}', ref) == utc
    naive = datetime(2026, 11, 26, 13, 5, 41).timestamp()  # no zone: the node's local time
    assert line_time("2026-11-26 13:05:41,250 ERROR app: x", ref) == naive + 0.25
    # Syslog has no year: `Dec 31` read on 2 January 2027 is from 2026.
    dec31 = datetime(2026, 12, 31, 23, 59, 59).timestamp()
    assert line_time("Dec 31 23:59:59 host kernel: x", ref) == dec31
    assert line_time("Jan  2 11:00:00 host kernel: x", ref) == datetime(2027, 1, 2, 11).timestamp()
    for untimed in (
        "    at core/server/src/main.rs:12",
        "2026-05-20 ERROR db down",
        "",
        "2026-13-01T00:00:00Z x",
    ):
        assert line_time(untimed, ref) is None


def test_line_times_carry_and_cap() -> None:
    ref = datetime(2026, 11, 26, 13, 0, tzinfo=UTC).timestamp()
    stamp = lambda s: f"{datetime.fromtimestamp(ref + s, UTC):%FT%TZ} INFO x"  # noqa: E731
    older = (["cont", stamp(0), "cont", stamp(10)], ref + 5)  # mtime earlier than stamp(10)
    newer = (["cont", stamp(20)], ref + 100)
    times, stamped = line_times([older, newer])
    assert stamped == 3
    assert times == [ref, ref, ref, ref + 5, ref + 5, ref + 20]
    assert line_times([(["a", "b"], ref)]) == ([ref, ref], 0)


def test_logs_files_absurd_timestamps_are_not_a_crash(tmp_path: Path, node: Path) -> None:
    lines = [
        "0001-01-01T00:00:00Z ERROR year one",
        "9999-12-31T23:59:59+23:59 ERROR the far future",
        "2026-02-30T00:00:00+99:99 ERROR no such day, no such offset",
        '{"ts":9999999999,"level":"error"}',
        "Feb 30 12:00:00 host app: ERROR no such day in any year",
    ]
    write_tree(node, {"var/log/app/odd.log": "\n".join(lines) + "\n"})
    ctx = files_ctx(tmp_path, node, logs_dir=None, files=["/var/log/app/*.log"])
    result = logs_files.run(ctx)
    [row] = result.data["logs"]
    # Year one is before the window; the others are capped by the file's mtime (now).
    assert (row["older_errors"], row["errors"]) == (1, 4)
    assert result.status == Status.PASS


def test_logs_files_untimed_panic_after_days_of_silence_fails(tmp_path: Path, node: Path) -> None:
    """The end of a file is its last write: a panic printed just now is dated now."""
    lines = [
        iggy_line("WARN", "slow fsync", ago_s=2 * 86400),
        PANIC,
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ]
    write_tree(node, {IGGY_LOG: "\n".join(lines) + "\n"})  # written now: mtime is now
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.FAIL
    [row] = result.data["logs"]
    assert (row["panics"], row["older_panics"]) == (1, 0)
    # The same file last written two days ago: the panic is as old as that.
    _age_file(node / IGGY_LOG, 2 * 86400)
    assert logs_files.run(files_ctx(tmp_path, node)).status == Status.PASS
