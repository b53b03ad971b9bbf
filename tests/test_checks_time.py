"""time.* checks: parsers on real tool output, checks on fixture trees with fake tools."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.timesync import (
    is_utc,
    parse_chronyc_tracking,
    parse_environ_tz,
    parse_ntpq_peers,
    parse_timedatectl_show,
    parse_timespan_ms,
    parse_timesync_status,
    time_sync,
    time_timezone,
    tzif_footer,
    zone_from_path,
)
from snapshot_agent.core.results import Status

from .conftest import fake_tools, fixture_roots, make_context, write_tree

CHRONY_SYNCED = """\
Reference ID    : A9FEA97B (169.254.169.123)
Stratum         : 4
Ref time (UTC)  : Mon Nov 23 14:20:11 2026
System time     : 0.000012345 seconds fast of NTP time
Last offset     : -0.000003456 seconds
RMS offset      : 0.000012345 seconds
Frequency       : 12.345 ppm slow
Residual freq   : -0.001 ppm
Skew            : 0.012 ppm
Root delay      : 0.000412345 seconds
Root dispersion : 0.000234567 seconds
Update interval : 16.1 seconds
Leap status     : Normal
"""

CHRONY_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Last offset     : +0.000000000 seconds
RMS offset      : 0.000000000 seconds
Frequency       : 0.000 ppm slow
Residual freq   : +0.000 ppm
Skew            : 0.000 ppm
Root delay      : 1.000000000 seconds
Root dispersion : 1.000000000 seconds
Update interval : 0.0 seconds
Leap status     : Not synchronised
"""

# ntpsec's ntpq (Debian 12) with -pn.
NTPQ_SYNCED = """\
     remote                                   refid      st t when poll reach   delay   offset   jitter
=======================================================================================================
 0.debian.pool.ntp.org                        .POOL.     16 p    -  256    0   0.0000   0.0000   0.0001
*192.0.2.10                                   .GPS.       1 u   33   64  377   1.2340  -0.4560   0.0890
+198.51.100.7                                 192.0.2.10  2 u   40   64  377   2.3450   0.7890   0.1230
"""  # noqa: E501 - real ntpsec column widths

# Classic ntp 4.2 wraps a long IPv6 remote onto its own line.
NTPQ_WRAPPED = """\
     remote           refid      st t when poll reach   delay   offset  jitter
==============================================================================
*2001:db8:0:1::123
                 .GPS.            1 u   33   64  377    1.234  250.456   0.089
"""

NTPQ_UNSYNCED = """\
     remote           refid      st t when poll reach   delay   offset  jitter
==============================================================================
 192.0.2.10      .INIT.          16 u    -   64    0    0.000    0.000   0.000
 198.51.100.7    .INIT.          16 u    -   64    0    0.000    0.000   0.000
"""

TIMEDATECTL_SHOW = """\
Timezone=Etc/UTC
LocalRTC=no
CanNTP=yes
NTP=yes
NTPSynchronized={synced}
TimeUSec=Mon 2026-11-23 14:32:10 UTC
RTCTimeUSec=Mon 2026-11-23 14:32:10 UTC
"""

TIMESYNC_STATUS = """\
       Server: 169.254.169.123 (169.254.169.123)
Poll interval: 34min 8s (min: 32s; max 34min 8s)
         Leap: normal
      Version: 4
      Stratum: 3
    Reference: A9FEA97B
    Precision: 1us (-24)
Root distance: 1.021ms (max: 5s)
       Offset: {offset}
        Delay: 0.512ms
       Jitter: 0.286ms
 Packet count: 263
    Frequency: -16.064ppm
"""


def daemon(node: Path, pid: int, comm: str) -> None:
    """A running process called `comm` in the fixture /proc."""
    write_tree(
        node,
        {
            f"proc/{pid}/stat": f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 5 5 0 0 20 0 1 0 "
            "100 1000 10 0 0 0 0 0\n"
        },
    )


SYNC = {"warn_offset_ms": 100, "fail_offset_ms": 1000}


def run_sync(tmp_path: Path, node: Path, thresholds: dict[str, Any] | None = None) -> Any:
    """time.sync on the fixture tree."""
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds or SYNC)
    return time_sync.run(ctx)


# -- parsers -------------------------------------------------------------------------


def test_parse_chronyc_tracking() -> None:
    r = parse_chronyc_tracking(CHRONY_SYNCED)
    assert r is not None and r.synchronized is True
    assert r.offset_ms == pytest.approx(0.012345) and r.server == "169.254.169.123"
    assert r.stratum == 4
    slow = parse_chronyc_tracking(
        CHRONY_SYNCED.replace("0.000012345 seconds fast", "2.5 seconds slow")
    )
    assert slow is not None and slow.offset_ms == pytest.approx(-2500)
    bad = parse_chronyc_tracking(CHRONY_UNSYNCED)
    assert bad is not None and bad.synchronized is False and "Not synchronised" in bad.detail
    assert parse_chronyc_tracking("506 Cannot talk to daemon\n") is None


def test_parse_ntpq_peers() -> None:
    r = parse_ntpq_peers(NTPQ_SYNCED)
    assert r is not None and r.synchronized is True
    assert r.server == "192.0.2.10" and r.offset_ms == pytest.approx(-0.456) and r.stratum == 1
    wrapped = parse_ntpq_peers(NTPQ_WRAPPED)
    assert wrapped is not None and wrapped.server == "2001:db8:0:1::123"
    assert wrapped.offset_ms == pytest.approx(250.456)
    bad = parse_ntpq_peers(NTPQ_UNSYNCED)
    assert bad is not None and bad.synchronized is False and "0 reachable" in bad.detail
    assert parse_ntpq_peers("ntpq: read: Connection refused\n") is None


def test_parse_timedatectl_and_timesync_status() -> None:
    show = parse_timedatectl_show(TIMEDATECTL_SHOW.format(synced="yes"))
    assert show["NTPSynchronized"] == "yes" and show["Timezone"] == "Etc/UTC"
    r = parse_timesync_status(TIMESYNC_STATUS.format(offset="-1.132ms"))
    assert r is not None and r.synchronized is True and r.offset_ms == pytest.approx(-1.132)
    assert r.server == "169.254.169.123 (169.254.169.123)" and r.stratum == 3
    # Never synchronised: timesyncd prints no Offset line at all.
    never = parse_timesync_status("       Server: n/a (0.debian.pool.ntp.org)\n")
    assert never is not None and never.synchronized is None


@pytest.mark.parametrize(
    ("text", "ms"),
    [("+1.132ms", 1.132), ("-250us", -0.25), ("1min 2.5s", 62500), ("+12µs", 0.012), ("x", None)],
)
def test_parse_timespan_ms(text: str, ms: float | None) -> None:
    assert parse_timespan_ms(text) == (pytest.approx(ms) if ms is not None else None)


# -- time.sync ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tracking", "status"),
    [
        (CHRONY_SYNCED, Status.PASS),
        (CHRONY_SYNCED.replace("0.000012345 seconds fast", "0.250 seconds slow"), Status.WARN),
        (CHRONY_SYNCED.replace("0.000012345 seconds fast", "3.0 seconds fast"), Status.FAIL),
        (CHRONY_UNSYNCED, Status.FAIL),
    ],
)
def test_time_sync_chrony(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch, tracking: str, status: Status
) -> None:
    daemon(node, 600, "chronyd")
    fake_tools(tmp_path, monkeypatch, {"chronyc": [(("tracking",), tracking, 0)]})
    result = run_sync(tmp_path, node)
    assert result.status == status
    assert result.data["daemons"] == ["chrony"]
    assert (tmp_path / "artifacts/chronyc-tracking.txt").read_text() == tracking
    if status == Status.PASS:
        assert result.summary == "synchronised by chrony to 169.254.169.123, offset +0.012 ms"
    else:
        assert "chronyc sources -v" in result.findings[0].remediation
        assert "TLS" in result.findings[0].remediation
    if tracking == CHRONY_UNSYNCED:
        assert "not synchronised" in result.summary


def test_time_sync_ntpd(tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon(node, 700, "ntpd")
    fake_tools(tmp_path, monkeypatch, {"ntpq": [(("-pn",), NTPQ_WRAPPED, 0)]})
    result = run_sync(tmp_path, node)
    assert result.status == Status.WARN
    assert "250.5 ms ahead of 2001:db8:0:1::123" in result.summary
    fake_tools(tmp_path, monkeypatch, {"ntpq": [(("-pn",), NTPQ_UNSYNCED, 0)]})
    result = run_sync(tmp_path, node)
    assert result.status == Status.FAIL and "ntpq -pn" in result.findings[0].remediation


def test_time_sync_timesyncd_with_systemd(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon(node, 500, "systemd-timesyn")
    (node / "run/systemd/system").mkdir(parents=True)
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "timedatectl": [
                (("show",), TIMEDATECTL_SHOW.format(synced="yes"), 0),
                (("timesync-status",), TIMESYNC_STATUS.format(offset="+3.5ms"), 0),
            ]
        },
    )
    result = run_sync(tmp_path, node)
    assert result.status == Status.PASS
    assert result.summary.startswith("synchronised by systemd-timesyncd")
    assert {s["source"] for s in result.data["sources"]} == {"kernel", "systemd-timesyncd"}


def test_time_sync_kernel_flag_decides_when_daemon_says_nothing(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon(node, 500, "systemd-timesyn")
    (node / "run/systemd/system").mkdir(parents=True)
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "timedatectl": [
                (("show",), TIMEDATECTL_SHOW.format(synced="no"), 0),
                (("timesync-status",), "       Server: n/a (0.debian.pool.ntp.org)\n", 0),
            ]
        },
    )
    result = run_sync(tmp_path, node)
    assert result.status == Status.FAIL and "kernel" in result.summary


def test_time_sync_two_daemons_warn(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon(node, 600, "chronyd")
    daemon(node, 700, "ntpd")
    fake_tools(
        tmp_path,
        monkeypatch,
        {"chronyc": [(("tracking",), CHRONY_SYNCED, 0)], "ntpq": [(("-pn",), NTPQ_SYNCED, 0)]},
    )
    result = run_sync(tmp_path, node)
    assert result.status == Status.WARN and "fight over the clock" in result.summary


def test_time_sync_no_daemon_warns_on_a_host(tmp_path: Path, node: Path) -> None:
    daemon(node, 1, "init")
    result = run_sync(tmp_path, node)
    assert result.status == Status.WARN
    assert "no time sync daemon runs" in result.summary
    assert "chrony" in result.findings[0].remediation


def test_time_sync_no_daemon_in_a_container_is_skipped(tmp_path: Path, node: Path) -> None:
    daemon(node, 1, "sh")
    write_tree(node, {".dockerenv": "", "proc/1/cgroup": "0::/\n"})
    result = run_sync(tmp_path, node)
    assert result.status == Status.SKIPPED and "container (docker)" in result.summary


def test_time_sync_daemon_that_cannot_be_asked_is_skipped(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon(node, 600, "chronyd")
    fake_tools(tmp_path, monkeypatch, {"chronyc": [((), "506 Cannot talk to daemon\n", 1)]})
    result = run_sync(tmp_path, node)
    assert result.status == Status.SKIPPED and "chrony" in result.summary


# -- time.timezone -----------------------------------------------------------------

TZIF_BERLIN = b"TZif2" + b"\0" * 50 + b"\nCET-1CEST,M3.5.0,M10.5.0/3\n"
TZIF_UTC = b"TZif2" + b"\0" * 50 + b"\nUTC0\n"


def zone_node(
    node: Path, link: str | None = None, content: bytes | None = None, **files: str
) -> Path:
    """/etc/localtime as a symlink to `link`, or a copied file with `content`."""
    (node / "etc").mkdir(parents=True, exist_ok=True)
    if link is not None:
        os.symlink(link, node / "etc/localtime")
    if content is not None:
        (node / "etc/localtime").write_bytes(content)
    return write_tree(node, files)


def run_zone(tmp_path: Path, node: Path, require_utc: bool = True) -> Any:
    """time.timezone on the fixture tree."""
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds={"require_utc": require_utc})
    return time_timezone.run(ctx)


def test_timezone_utc_symlink_passes(tmp_path: Path, node: Path) -> None:
    zone_node(node, "/usr/share/zoneinfo/Etc/UTC", **{"etc/timezone": "Etc/UTC\n"})
    result = run_zone(tmp_path, node)
    assert result.status == Status.PASS
    assert result.summary == "time zone Etc/UTC (from /etc/localtime)"


def test_timezone_not_utc_warns(tmp_path: Path, node: Path) -> None:
    zone_node(node, "../usr/share/zoneinfo/Europe/Berlin", **{"etc/timezone": "Europe/Berlin\n"})
    result = run_zone(tmp_path, node)
    assert result.status == Status.WARN
    assert result.summary == "the node's time zone is Europe/Berlin (from /etc/localtime), not UTC"
    assert "timedatectl set-timezone Etc/UTC" in result.findings[0].remediation
    assert run_zone(tmp_path, node, require_utc=False).status == Status.PASS


def test_timezone_copied_file_uses_the_tzif_footer(tmp_path: Path, node: Path) -> None:
    zone_node(node, content=TZIF_BERLIN)
    result = run_zone(tmp_path, node)
    assert result.status == Status.WARN and "CET-1CEST" in result.summary
    other = node.parent / "other"
    zone_node(other, content=TZIF_UTC)
    assert run_zone(tmp_path, other).status == Status.PASS


def test_timezone_files_disagree(tmp_path: Path, node: Path) -> None:
    zone_node(node, "/usr/share/zoneinfo/Etc/UTC", **{"etc/timezone": "America/New_York\n"})
    result = run_zone(tmp_path, node)
    assert result.status == Status.WARN
    assert "/etc/timezone says America/New_York but /etc/localtime is Etc/UTC" in result.summary


def test_timezone_no_localtime_means_utc(tmp_path: Path, node: Path) -> None:
    (node / "etc").mkdir()
    result = run_zone(tmp_path, node)
    assert result.status == Status.PASS and "default (no /etc/localtime)" in result.summary


def test_timezone_broker_tz(tmp_path: Path, node: Path) -> None:
    zone_node(node, "/usr/share/zoneinfo/Etc/UTC")
    write_tree(
        node,
        {
            "proc/812/stat": "812 (iggy-server) S 1 812 812 0 -1 0 0 0 0 0 5 5 0 0 20 0 4 0 "
            "100 1000 10 0 0 0 0 0\n",
            "proc/812/environ": "PATH=/usr/bin\0TZ=Europe/Warsaw\0HOME=/var/lib/iggy\0",
        },
    )
    result = run_zone(tmp_path, node)
    assert result.status == Status.WARN
    assert "runs with TZ=Europe/Warsaw" in result.summary
    assert result.data["broker_tz"] == "Europe/Warsaw"


@pytest.mark.parametrize(
    ("zone", "utc"),
    [
        ("Etc/UTC", True),
        ("UTC", True),
        (":UTC", True),
        ("UTC0", True),
        ("<UTC>0", True),
        ("Etc/GMT+0", True),
        ("Universal", True),
        ("/usr/share/zoneinfo/right/UTC", True),
        ("Europe/London", False),
        ("GMT0BST,M3.5.0/1,M10.5.0", False),
        ("Etc/GMT-2", False),
        ("CET-1CEST,M3.5.0,M10.5.0/3", False),
    ],
)
def test_is_utc(zone: str, utc: bool) -> None:
    assert is_utc(zone) is utc


def test_zone_helpers() -> None:
    assert zone_from_path("../usr/share/zoneinfo/posix/Asia/Tokyo") == "Asia/Tokyo"
    assert tzif_footer(TZIF_BERLIN) == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert tzif_footer(b"not tzif") is None
    assert parse_environ_tz("A=1\0TZ=\0") == ""
    assert parse_environ_tz("A=1\0") is None
