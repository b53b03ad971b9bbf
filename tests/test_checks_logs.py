"""logs.journal and logs.files against sample journal JSON, fake journalctl and fixture logs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from snapshot_agent.checks.logs import (
    JournalEntry,
    JournalFacts,
    classify_line,
    judge_journal,
    logs_files,
    logs_journal,
    parse_journal_json,
    parse_resource_line,
    read_tail_lines,
)
from snapshot_agent.config import ChecksConfig, Config, IggyConfig, LogsConfig
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Severity, Status

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


def iggy_line(level: str, msg: str, second: int = 0) -> str:
    """A line as Iggy's file layer writes it (tracing full format, thread names, no ANSI)."""
    return f"2026-05-20T03:12:{second % 60:02d}.123456Z {level:>5} shard-0 server::streaming: {msg}"


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
    lines = [iggy_line("INFO", f"message {i}", i) for i in range(50)] + [RESOURCE]
    write_tree(node, {"var/lib/iggy/logs/iggy-server.log": "\n".join(lines) + "\n"})
    result = logs_files.run(files_ctx(tmp_path, node))
    assert result.status == Status.PASS
    assert result.summary.startswith("1 log(s) read, 0 ERROR lines")
    assert "OpenFDs 311" in result.summary
    fields = result.data["broker_resources"]["fields"]
    assert fields["OpenFDs"] == "311" and fields["Clients"] == "14"
    assert result.data["broker_resources"]["at"].startswith("2026-05-20T03:12:10")
    assert result.data["iggy_log_dir_source"] == "config iggy.logs_dir"
    tail = tmp_path / "artifacts/tail/var/lib/iggy/logs/iggy-server.log"
    assert tail.read_text().endswith(RESOURCE + "\n")


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
            "proc/812/environ": "HOME=/root\0IGGY_PATH=/data/iggy\0",
            "proc/812/root/data/iggy/logs/iggy-server.log": iggy_line("ERROR", "x") + "\n",
        },
    )
    (node / "proc/812/cwd").symlink_to("/app")
    result = logs_files.run(files_ctx(tmp_path, node, logs_dir=None))
    assert result.data["iggy_log_dir"] == "/proc/812/root/data/iggy/logs"
    assert result.data["iggy_log_dir_source"].endswith("inside its container")
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
    assert parse_resource_line(RESOURCE)["CPU"] == "3.20%/41.50% (IggyUsage/Total)"
