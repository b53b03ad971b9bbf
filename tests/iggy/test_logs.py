"""iggy.logs on fixture log directories written in Iggy's real format and naming.

Lines follow tracing-subscriber's Full format as Iggy configures it (timestamp, level
padded to five, thread name, target; server-0.8.0:core/server/src/log/logger.rs), the
resource line of server-0.8.0:core/server/src/shard/tasks/periodic/sysinfo_printer.rs,
the build line of `print_build_info` and the println! of bootstrap.rs `create_root_user`.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from snapshot_agent.checks.iggy_logs import iggy_logs
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.iggy_logs import (
    CHUNK,
    SESSION_DELETED,
    LogFile,
    LogScan,
    ReadStats,
    client_error_kind,
    line_blocks,
    list_log_files,
    parse_resource_line,
    plan_reads,
    read_log_tail,
    rotation_key,
    scan_logs,
    stamp_seconds,
    target_of,
)
from tests.conftest import fixture_roots, run_cli
from tests.iggy.procs import fake_broker, iggy_context

CWD = "/srv/iggy"
LOGS = "srv/iggy/local_data/logs"
NODE_LOGS = "/" + LOGS
SECRET = "Xq7vLp2RtZ9mWk4sBn8Hc3Jd"  # a generated root password, as Iggy prints one
NOW = datetime.now(UTC)
RESOURCE = (
    "CPU: 3.12%/14.50% (IggyUsage/Total), Mem: 61.20%/812.40 MB/6.21 GB/16.00 GB "
    "(Free/IggyUsage/TotalUsed/Total), Disk: 402.10 GB/512.00 GB (Free/Total), IggyUsage: "
    "9.80 GB, Clients: 12, Messages: 4.2M, Read: 1.10 GB, Written: 9.90 GB, Threads: 9, "
    "OpenFDs: 311"
)


def stamp(ago: timedelta) -> str:
    """tracing's SystemTime format: RFC 3339, microseconds, Z."""
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(ago: timedelta, level: str, target: str, message: str, thread: str = "shard-0") -> str:
    """One line of Iggy's file log."""
    return f"{stamp(ago)} {level:>5} {thread} {target}: {message}\n"


def build_line(ago: timedelta) -> str:
    """The first line of every start (print_build_info)."""
    return line(
        ago,
        "INFO",
        "server::log::logger",
        "Version: 0.8.0, hash: 1a2b3c, built at: 2026-04-01T00:00:00Z using rust version: "
        "1.90.0 for target: x86_64-unknown-linux-gnu",
        "main",
    )


def resource_line(ago: timedelta, fds: int = 311) -> str:
    """The periodic sysinfo line."""
    text = RESOURCE.replace("OpenFDs: 311", f"OpenFDs: {fds}")
    return line(ago, "INFO", "server::shard::tasks::periodic::sysinfo_printer", text)


def healthy(start: timedelta, end: timedelta, step: timedelta = timedelta(minutes=10)) -> str:
    """INFO and resource lines from `start` ago to `end` ago."""
    out = []
    ago = start
    while ago >= end:
        out.append(line(ago, "INFO", "server::tcp::tcp_listener", "Accepted new TCP client"))
        out.append(resource_line(ago))
        ago -= step
    return "".join(out)


def errors(ago: timedelta, count: int, target: str = "server::tcp::sender") -> str:
    """`count` ERROR lines around `ago`."""
    return "".join(
        line(ago - timedelta(seconds=i), "ERROR", target, f"Failed to send response {i}")
        for i in range(count)
    )


def write_logs(node: Path, files: dict[str, str | bytes]) -> Path:
    """The broker (cwd /srv/iggy) and its log files; mtimes follow the rotation order."""
    fake_broker(node, CWD)
    logs = node / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    for i, (name, content) in enumerate(files.items()):
        path = logs / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        mtime = time.time() - (len(files) - i) * 60
        os.utime(path, (mtime, mtime))
    return logs


def run(tmp_path: Path, node: Path, seconds: float = 30, **thresholds: Any) -> Any:
    """iggy.logs on the fixture node."""
    ctx = iggy_context(tmp_path, node, {**iggy_logs.thresholds, **thresholds})
    ctx.deadline = time.monotonic() + seconds
    result = iggy_logs.run(ctx)
    result.artifacts = ctx.artifacts + result.artifacts  # as the runner does
    return result


def messages(result: Any, severity: Severity) -> list[str]:
    """The messages of the findings of `severity`."""
    return [f.message for f in result.findings if f.severity == severity]


# -- the check --------------------------------------------------------------------------


def test_iggy_logs_healthy_08_log_passes(tmp_path: Path, node: Path) -> None:
    write_logs(
        node,
        {
            "iggy-server.log.2": build_line(timedelta(hours=9))
            + healthy(timedelta(hours=9), timedelta(hours=6)),
            "iggy-server.log.1": healthy(timedelta(hours=6), timedelta(hours=3)),
            "iggy-server.log": healthy(timedelta(hours=3), timedelta(0))
            + resource_line(timedelta(0), fds=777),
        },
    )
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    assert result.summary.startswith("0 ERROR lines and no panic in the last 24 h (read ")
    data = result.data
    assert [f["path"].rsplit("/", 1)[1] for f in data["files"]] == [
        "iggy-server.log.2",
        "iggy-server.log.1",
        "iggy-server.log",
    ]
    assert data["complete"] and data["bytes_read"] == data["bytes_total"]
    assert data["resource"]["fields"]["open_fds"] == 777  # the newest line of the newest file
    assert data["resource"]["fields"]["clients"] == 12
    assert data["starts_total"] == 1 and data["starts_window"] == 1
    assert data["logs_dir"] == NODE_LOGS
    assert [a.name for a in result.artifacts] == ["tail/iggy-server.log"]


def test_iggy_logs_old_errors_outside_the_window_pass(tmp_path: Path, node: Path) -> None:
    days = timedelta(days=3)
    old = (
        errors(days, 200)
        + line(days, "ERROR", "iggy_server", "Shard 2 panicked: index out of bounds", "main")
        + healthy(days, days - timedelta(hours=1))
    )
    write_logs(
        node,
        {"iggy-server.log.1": old, "iggy-server.log": healthy(timedelta(hours=5), timedelta(0))},
    )
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    data = result.data
    assert data["errors_total"] == 201 and data["errors_window"] == 0
    assert data["panics_total"] == 1 and data["panics_window"] == 0
    assert any("older than the last 24 h" in m for m in messages(result, Severity.INFO))
    top = data["top_error_targets"][0]
    assert top == {"target": "server::tcp::sender", "window": 0, "total": 200}


def test_iggy_logs_05_naming_read_oldest_first(tmp_path: Path, node: Path) -> None:
    hours = [NOW - timedelta(hours=h) for h in (3, 2, 1)]
    files = {
        f"iggy-server.log.{h:%Y-%m-%d-%H}": healthy(
            NOW - h, NOW - h - timedelta(minutes=50)
        ).replace("shard-0", "ThreadId(02)")
        + resource_line(NOW - h - timedelta(minutes=55), fds=100 + i)
        for i, h in enumerate(hours)
    }
    # Written newest first, so that directory order and mtimes do not decide the order.
    write_logs(node, dict(reversed(list(files.items()))))
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    names = [f["path"].rsplit("/", 1)[1] for f in result.data["files"]]
    assert names == list(files)
    assert result.data["resource"]["fields"]["open_fds"] == 102


def test_iggy_logs_huge_line_is_cut_and_counted(tmp_path: Path, node: Path) -> None:
    logs = write_logs(node, {"iggy-server.log": healthy(timedelta(hours=2), timedelta(hours=1))})
    with (logs / "iggy-server.log").open("ab") as fh:
        for _ in range(100):  # a 100 MB line, written without holding it
            fh.write(b"x" * (1024 * 1024))
        fh.write(b"\n" + resource_line(timedelta(0), fds=999).encode())
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    assert result.data["long_lines_cut"] == 1
    assert result.data["resource"]["fields"]["open_fds"] == 999  # the line after it is read
    assert any("longer than 1 MiB were cut" in m for m in messages(result, Severity.INFO))


def test_iggy_logs_invalid_utf8_and_ansi_are_tolerated(tmp_path: Path, node: Path) -> None:
    colour = (
        f"\x1b[2m{stamp(timedelta(minutes=5))}\x1b[0m \x1b[31mERROR\x1b[0m shard-1 "
        "\x1b[2mserver::binary::handlers\x1b[0m\x1b[2m:\x1b[0m Invalid command\n"
    ).encode()
    bad = line(timedelta(minutes=4), "ERROR", "server::http", "bad bytes \udcff", "shard-2")
    content = (
        healthy(timedelta(hours=3), timedelta(hours=1)).encode()
        + colour
        + bad.encode("utf-8", "surrogateescape")
        + b"\xfe\xff\xc3 not UTF-8 at all\n"
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    targets = {t["target"]: t["window"] for t in result.data["top_error_targets"]}
    assert targets == {"server::binary::handlers": 1, "server::http": 1}
    json.dumps(result.data)  # everything kept is text


@pytest.mark.parametrize(("count", "status"), [(30, Status.WARN), (200, Status.FAIL)])
def test_iggy_logs_error_rate_warns_and_fails(
    tmp_path: Path, node: Path, count: int, status: Status
) -> None:
    content = healthy(timedelta(minutes=50), timedelta(minutes=40)) + errors(
        timedelta(minutes=30), count
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == status, result.summary
    assert result.summary.startswith(f"{count} ERROR lines in the last 24 h, {count} of them ")
    assert "top targets: server::tcp::sender" in result.summary


def test_iggy_logs_a_burst_across_the_top_of_an_hour_is_counted_whole(
    tmp_path: Path, node: Path
) -> None:
    # 150 errors from 23:58:30 to 00:00:59 (of some hour): 90 in one clock hour and 60 in
    # the next, each under the fail band alone, but all in one 60 minutes.
    top = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    content = healthy(timedelta(hours=3), timedelta(hours=2)) + errors(
        NOW - top + timedelta(seconds=90), 150
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.FAIL, result.summary
    start = (top - timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M")
    assert f"150 of them in the 60 minutes from {start}Z" in result.summary
    assert result.data["errors_busiest_hour"] == {"from": f"{start}Z", "errors": 150}


def test_iggy_logs_a_date_that_does_not_exist_is_not_counted(tmp_path: Path, node: Path) -> None:
    # A line dated February 30th of the future sorts inside the window as text.
    bad = "2099-02-30T10:00:00.000000Z ERROR shard-0 server::tcp::sender: Failed to send\n"
    content = (
        healthy(timedelta(minutes=50), timedelta(minutes=40))
        + bad
        + errors(timedelta(minutes=30), 3)
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    assert result.data["errors_busiest_hour"]["errors"] == 3


def test_busiest_hour_slides_by_the_minute() -> None:
    scan = LogScan(now=0, window_hours=24)
    assert scan.busiest_hour() == ("", 0)

    def minute(hhmm: str) -> int:
        when = datetime.fromisoformat(f"2026-05-20T{hhmm}:00+00:00")
        return int(when.timestamp()) // 60

    scan.error_minutes.update(
        {minute("09:30"): 5, minute("10:10"): 5, minute("10:29"): 5, minute("10:30"): 1}
    )
    # 09:30 to 10:29 holds 15; the clock hour 10:00 only 11.
    assert scan.busiest_hour() == ("2026-05-20T09:30Z", 15)
    scan.error_minutes[minute("11:09")] = 5  # 10:10 to 11:09 holds 16: the later wins
    assert scan.busiest_hour() == ("2026-05-20T10:10Z", 16)


def failed_create(ago: timedelta, i: int) -> str:
    """A 0.8 TCP handler's line for a `create stream` that found the stream there.

    server-0.8.0:core/server/src/tcp/connection_handler.rs (the line), streaming/session.rs
    (the session's Display), core/common/src/error/iggy_error.rs StreamNameAlreadyExists.
    """
    return line(
        ago,
        "ERROR",
        "server::tcp::connection_handler",
        f"Command with code 202 (stream.create) was not handled successfully, session: "
        f"client ID: {i}, user ID: 1, IP address: 10.0.0.{i % 250}:5{i % 9999}, error: "
        "Stream with name: orders already exists..",
    )


def test_iggy_logs_failed_client_commands_are_not_broker_errors(tmp_path: Path, node: Path) -> None:
    # A fleet that creates its stream at every start and ignores AlreadyExists: 500 ERROR
    # lines in one hour from a healthy broker, and 3 errors of its own.
    content = (
        healthy(timedelta(minutes=50), timedelta(minutes=40))
        + "".join(failed_create(timedelta(minutes=30, seconds=i), i) for i in range(500))
        + errors(timedelta(minutes=20), 3)
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    assert result.summary.startswith(
        "3 ERROR lines (and 500 failed client commands) and no panic in the last 24 h"
    )
    data = result.data
    assert data["errors_window"] == 3 and data["client_errors_window"] == 500
    assert data["errors_busiest_hour"]["errors"] == 3
    assert data["top_client_error_kinds"] == [
        {
            "kind": "stream.create: Stream with name: orders already exists",
            "window": 500,
            "total": 500,
        }
    ]
    (note,) = [m for m in messages(result, Severity.INFO) if "client command(s)" in m]
    assert note.startswith("500 client command(s) failed in the last 24 h")
    assert "stream.create: Stream with name: orders already exists (500)" in note


@pytest.mark.parametrize(
    ("rest", "kind"),
    [
        # server-0.5.0:core/server/src/tcp/connection_handler.rs
        (
            "shard-0 server::tcp::connection_handler: Command was not handled successfully, "
            "session: client ID: 3, user ID: 1, IP address: 127.0.0.1:5, error: Unauthenticated.",
            "Unauthenticated",
        ),
        # server-0.7.0:core/server/src/tcp/connection_handler.rs
        (
            "shard-0 server::tcp::connection_handler: Command with code 302 was not handled "
            "successfully, session: client ID: 3, IP address: 127.0.0.1:1, error: Topic with "
            "name: t1 for stream with ID: 7 already exists..",
            "code 302: Topic with name: tN for stream with ID: N already exists",
        ),
        # server-0.8.0:core/server/src/quic/listener.rs (the session as Debug)
        (
            "shard-1 server::quic::listener: Command was not handled successfully, session: "
            "Session { client_id: 9, ip_address: 127.0.0.1:2 }, error: Invalid credentials.",
            "Invalid credentials",
        ),
        # server-0.8.0:core/server/src/websocket/connection_handler.rs
        (
            "shard-0 server::websocket::connection_handler: Command failed for session: "
            "client ID: 4, IP address: 127.0.0.1:3, error: Unauthorized.",
            "Unauthorized",
        ),
        # server-0.8.0:core/server/src/http/error.rs
        (
            "shard-0 server::http::error: There was an error: Stream with ID: 5 was not found.",
            "Stream with ID: N was not found",
        ),
        # server-0.8.0:core/server/src/tcp/connection_handler.rs, after ClientNotFound
        (
            "shard-0 server::tcp::connection_handler: Session: client ID: 4, IP address: "
            "127.0.0.1:3 will be deleted.",
            SESSION_DELETED,
        ),
        ("shard-0 server::tcp::sender: Failed to send response 1", None),
        ("shard-0 server::streaming: Cannot append messages: No space left on device", None),
    ],
)
def test_client_error_kind_of_every_transport(rest: str, kind: str | None) -> None:
    assert client_error_kind(rest.encode()) == kind


def test_iggy_logs_symlinked_log_is_noted_and_never_read(tmp_path: Path, node: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$saltsalt$SECRETHASH:19000:0:99999:7:::\n")
    logs = write_logs(node, {"iggy-server.log.1": healthy(timedelta(hours=2), timedelta(0))})
    (logs / "iggy-server.log").symlink_to(secret)
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.summary
    (note,) = [m for m in messages(result, Severity.INFO) if "symlink" in m]
    assert note == f"{NODE_LOGS}/iggy-server.log is a symlink to {secret}: not followed, not read"
    assert [f["path"] for f in result.data["files"]] == [f"{NODE_LOGS}/iggy-server.log.1"]
    assert [a.name for a in result.artifacts] == ["tail/iggy-server.log.1"]
    for artifact in result.artifacts:
        assert b"SECRETHASH" not in (tmp_path / "artifacts" / artifact.name).read_bytes()
    assert "SECRETHASH" not in json.dumps(result.data)


def test_open_log_refuses_symlinks_and_fifos(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("a\nb\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")
    assert read_log_tail(tmp_path / "real", 3) == "b\n"
    for name in ("link", "fifo"):
        with pytest.raises(OSError):
            read_log_tail(tmp_path / name, 100)
    scan = LogScan(now=time.time(), window_hours=24)
    swapped = LogFile(tmp_path / "link", "/logs/iggy-server.log", 4, 0.0)  # listed as a file
    scan_logs([swapped], scan, budget=1 << 20, deadline=time.monotonic() + 5)
    assert scan.problems == [
        ("/logs/iggy-server.log", "a symlink now (it was a file when listed); not followed")
    ]


def test_iggy_logs_generated_root_password_warns_without_the_value(
    tmp_path: Path, node: Path
) -> None:
    # The broker's stdout captured into its log directory: the println! lands in the file.
    content = (
        build_line(timedelta(hours=2))
        + f"Generated root user password: {SECRET}\n"
        + healthy(timedelta(hours=2), timedelta(0))
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.WARN, result.summary
    (finding,) = [f for f in result.findings if f.severity == Severity.WARN]
    assert "print the generated root password" in finding.message
    assert f"{NODE_LOGS}/iggy-server.log line 2" in finding.message
    assert "IGGY_ROOT_PASSWORD" in finding.remediation
    shown = json.dumps([result.summary, result.data, [f.to_dict() for f in result.findings]])
    assert SECRET not in shown
    assert result.data["root_password_lines"] == 1


def test_iggy_logs_end_to_end_archive_holds_no_password(tmp_path: Path, node: Path) -> None:
    """The real CLI on the fixture node: the verdict, and the saved tail redacted."""
    content = f"Generated root user password: {SECRET}\n" + healthy(
        timedelta(hours=1), timedelta(0)
    )
    write_logs(node, {"iggy-server.log": content})
    roots = msgspec.structs.asdict(fixture_roots(node))
    config = tmp_path / "config.yaml"
    config.write_text("checks:\n  roots:\n" + "".join(f"    {k}: {v}\n" for k, v in roots.items()))
    proc = run_cli(
        "run", "-c", config, "-o", tmp_path, "--only", "iggy.logs", "--no-include-iggy", "-q"
    )
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        report = json.loads(zf.read("report.json"))
        members = {name: zf.read(name) for name in zf.namelist()}
    [logs] = report["checks"]
    assert logs["id"] == "iggy.logs" and logs["status"] == "warn", logs["summary"]
    tail = members["raw/iggy.logs/tail/iggy-server.log"]
    assert b"Generated root user password" in tail and b"OpenFDs: 311" in tail
    assert not [name for name, data in members.items() if SECRET.encode() in data]


def test_iggy_logs_panic_in_window_fails(tmp_path: Path, node: Path) -> None:
    hook = (
        "thread 'shard-1' panicked at core/server/src/streaming/segments/indexes.rs:88:21:\n"
        "index out of bounds: the len is 3 but the index is 7\n"
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
    )
    content = (
        healthy(timedelta(hours=3), timedelta(minutes=20))
        + hook
        + line(
            timedelta(minutes=10),
            "ERROR",
            "iggy_server",
            "Shard 1 panicked: index out of bounds: the len is 3 but the index is 7",
            "main",
        )
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.FAIL, result.summary
    assert result.summary.startswith("the broker panicked 1 time(s) in the last 24 h")
    (panic,) = result.data["panics"]
    assert panic["lines"][0].startswith("thread 'shard-1' panicked at")
    assert panic["lines"][1].startswith("index out of bounds")
    assert panic["where"] == f"line {content.count(chr(10)) - 3}"


def test_iggy_logs_untimed_panic_after_days_of_silence_fails(tmp_path: Path, node: Path) -> None:
    # The last tracing line is three days old; the hook's lines (no timestamp) came after
    # it, and the file was written a minute ago: the panic is dated by that write.
    days = timedelta(days=3)
    content = healthy(days, days - timedelta(hours=1)) + (
        "thread 'main' panicked at core/server/src/main.rs:120:13:\n"
        "Cannot create runtime: Cannot allocate memory (os error 12)\n"
    )
    write_logs(node, {"iggy-server.log": content})
    result = run(tmp_path, node)
    assert result.status == Status.FAIL, result.summary
    assert result.data["panics_window"] == 1
    assert "Cannot create runtime" in result.data["panics"][0]["lines"][1]


def test_iggy_logs_skipped_without_iggy(tmp_path: Path, node: Path) -> None:
    result = run(tmp_path, node)
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("no Iggy broker found on this node: looked for")


def test_iggy_logs_skipped_without_log_files(tmp_path: Path, node: Path) -> None:
    fake_broker(node, CWD)
    (node / "srv/iggy/local_data").mkdir(parents=True)
    missing = run(tmp_path, node)
    assert missing.status == Status.SKIPPED
    assert missing.summary.startswith(f"{NODE_LOGS} (")
    (node / LOGS).mkdir()
    (node / LOGS / "other.log").write_text("not the broker's\n")
    empty = run(tmp_path, node)
    assert empty.status == Status.SKIPPED
    assert "holds no iggy-server.log* file" in empty.summary


def test_iggy_logs_deadline_before_any_read_is_a_skip(tmp_path: Path, node: Path) -> None:
    write_logs(node, {"iggy-server.log": healthy(timedelta(hours=1), timedelta(0))})
    result = run(tmp_path, node, seconds=1)  # less than the margin kept for judging
    assert result.status == Status.SKIPPED
    assert "deadline" in result.summary


def test_iggy_logs_byte_budget_reads_the_newest_bytes(tmp_path: Path, node: Path) -> None:
    # ~400 KB of old errors, mostly left out, then the password the read does reach.
    old = errors(timedelta(days=2), 5000) + f"Generated root user password: {SECRET}\n"
    write_logs(
        node,
        {"iggy-server.log.1": old, "iggy-server.log": healthy(timedelta(hours=2), timedelta(0))},
    )
    result = run(tmp_path, node, max_read_mb=0.1)
    assert result.status == Status.WARN, result.summary
    # Line numbers are unknown in a file read from its middle: the byte offset says where.
    offset = len(old) - len(SECRET) - len("Generated root user password: ") - 1
    spot = {"file": f"{NODE_LOGS}/iggy-server.log.1", "where": f"byte {offset}"}
    assert result.data["root_password_spots"] == [spot]
    assert "left out by the byte budget" in result.summary
    first = result.data["files"][0]
    assert first["status"] == "read from the byte budget's start" and first["read_from"] > 0
    assert result.data["bytes_read"] < result.data["bytes_total"]


# -- the reader -------------------------------------------------------------------------


def log_file(path: Path) -> LogFile:
    """A LogFile for a real file."""
    info = path.stat()
    return LogFile(path, "/node/" + path.name, info.st_size, info.st_mtime)


def test_scan_stops_at_the_deadline_and_says_how_far(tmp_path: Path) -> None:
    path = tmp_path / "iggy-server.log"
    chunk_of_lines = healthy(timedelta(hours=20), timedelta(0), timedelta(seconds=5))
    path.write_text(chunk_of_lines)
    assert path.stat().st_size > 3 * CHUNK
    ticks = iter(range(100))

    def clock() -> float:
        return float(next(ticks))

    scan = LogScan(now=time.time(), window_hours=24)
    scan_logs([log_file(path)], scan, budget=1 << 40, deadline=3, clock=clock)
    assert scan.stopped_by_deadline and not scan.complete
    # The clock is asked before the file (0) and before each read (1, 2, then 3: stop).
    assert scan.stats.bytes_read == 2 * CHUNK
    assert scan.files[0]["status"] == "partly read: the deadline came"


def test_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "iggy-server.log"
    with path.open("wb") as fh:
        fh.write(b"head\n")
        for _ in range(100):
            fh.write(b"y" * (1024 * 1024))
        fh.write(b"\ntail\n")
    tracemalloc.start()
    try:
        stats = ReadStats()
        with path.open("rb") as fh:
            kept = [len(b) for _, b in line_blocks(fh, 0, path.stat().st_size, stats, lambda: True)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stats.long_lines == 1 and stats.bytes_read == path.stat().st_size
    assert max(kept) <= CHUNK + 1
    assert peak < 8 * CHUNK


def test_reading_from_mid_file_skips_the_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"first line\nsecond\nthird\n")
    stats = ReadStats()
    with path.open("rb") as fh:
        blocks = list(line_blocks(fh, 3, 100, stats, lambda: True))
        at_line_start = list(line_blocks(fh, 11, 100, stats, lambda: True))
    assert blocks == [(11, b"second\nthird\n")]
    assert at_line_start == [(11, b"second\nthird\n")]


def test_rotation_order_of_every_iggy_naming() -> None:
    assert rotation_key("iggy-server.log.²") == rotation_key("iggy-server.log.²")  # no crash
    assert rotation_key("iggy-server.log.٣")[0] == 2  # not a rotation number
    names = [
        "iggy-server.log",
        "iggy-server.log.1",
        "iggy-server.log.10",
        "iggy-server.log.2",
        "iggy-server.log.2026-05-20-09",
        "iggy-server.log.2026-05-19-23",
    ]
    assert sorted(names, key=rotation_key) == [
        "iggy-server.log.2026-05-19-23",
        "iggy-server.log.2026-05-20-09",
        "iggy-server.log.10",
        "iggy-server.log.2",
        "iggy-server.log.1",
        "iggy-server.log",
    ]


def test_list_log_files_keeps_only_regular_uncompressed_logs(tmp_path: Path) -> None:
    for name in ("iggy-server.log", "iggy-server.log.1", "iggy-server.log.2.gz", "app.log"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "iggy-server.log.3").mkdir()
    (tmp_path / "iggy-server.log.4").symlink_to("/dev/zero")  # would never end
    os.mkfifo(tmp_path / "iggy-server.log.5")  # would block a reader
    listing = list_log_files(tmp_path, "/logs", time.monotonic() + 5)
    names = [f.node_path for f in listing.files]
    assert names == ["/logs/iggy-server.log.1", "/logs/iggy-server.log"]
    assert listing.problems == []
    assert listing.symlinks == [("/logs/iggy-server.log.4", "/dev/zero")]


def test_plan_reads_keeps_the_newest_bytes() -> None:
    files = [LogFile(Path(n), n, size, 0.0) for n, size in (("a", 100), ("b", 50), ("c", 30))]
    assert plan_reads(files, 1000) == [0, 0, 0]
    assert plan_reads(files, 60) == [100, 20, 0]


def test_parse_resource_line_08_and_05() -> None:
    assert parse_resource_line("... sysinfo_printer: " + RESOURCE) == {
        "cpu_iggy_pct": 3.12,
        "cpu_total_pct": 14.5,
        "mem_free_pct": 61.2,
        "mem_iggy": "812.40 MB",
        "mem_used": "6.21 GB",
        "mem_total": "16.00 GB",
        "disk_free": "402.10 GB",
        "disk_total": "512.00 GB",
        "data_size": "9.80 GB",
        "clients": 12,
        "messages": "4.2M",
        "read": "1.10 GB",
        "written": "9.90 GB",
        "threads": 9,
        "open_fds": 311,
    }
    # server-0.5.0:core/server/src/channels/commands/print_sysinfo.rs
    old = (
        "CPU: 1.00%/2.00% (IggyUsage/Total), Mem: 50.00%/1.00 GB/2.00 GB/4.00 GB "
        "(Free/IggyUsage/TotalUsed/Total), Clients: 2, Messages processed: 1000, "
        "Read: 1.00 MB, Written: 2.00 MB, Uptime: 1h 2m"
    )
    fields = parse_resource_line(old)
    assert fields["messages"] == 1000 and fields["uptime"] == "1h 2m"
    assert fields["cpu_total_pct"] == 2.0 and "open_fds" not in fields
    assert parse_resource_line("no resources here") == {}
    assert parse_resource_line("CPU: 1%/2% (IggyUsage/Total), Threads: ²")["threads"] == "²"


@pytest.mark.parametrize(
    ("rest", "target"),
    [
        ("shard-0 server::tcp::sender: msg", "server::tcp::sender"),
        ("   main iggy_server: Shard 1 panicked: x", "iggy_server"),
        ("ThreadId(02) handle{client=1}: server::binary: x: y", "server::binary"),
        ("shard-0 span: server::http::jwt: bad", "server::http::jwt"),
        ("nothing that looks like one", "(no target)"),
    ],
)
def test_target_of(rest: str, target: str) -> None:
    assert target_of(rest) == target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"2026-05-20T10:00:00.123456Z", datetime(2026, 5, 20, 10, 0, 0, 123456, UTC)),
        (b"2026-05-20T10:00:00.123456789Z", datetime(2026, 5, 20, 10, 0, 0, 123456, UTC)),
        (b"2026-05-20T12:00:00+02:00", datetime(2026, 5, 20, 10, 0, 0, tzinfo=UTC)),
        (b"2026-13-40T10:00:00Z", None),
    ],
)
def test_stamp_seconds(raw: bytes, expected: datetime | None) -> None:
    assert stamp_seconds(raw) == (expected.timestamp() if expected else None)
