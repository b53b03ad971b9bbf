"""time.* checks: parsers on real tool output, checks on fixture trees with fake tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import timesync
from snapshot_agent.checks.timesync import (
    STA_UNSYNC,
    KernelClock,
    adjtimex,
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
from .test_node_container import (
    CHILD_CGROUP,
    CHILD_PID,
    HOST_PID,
    HOST_USER,
    hostpid_pod,
    namespaces,
)

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


def test_time_sync_no_daemon_in_a_container_is_skipped(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_container(node)
    # A fixture tree never asks this machine's kernel.
    monkeypatch.setattr(timesync, "adjtimex", lambda: pytest.fail("adjtimex on a fixture"))
    result = run_sync(tmp_path, node)
    assert result.status == Status.SKIPPED and "container (docker)" in result.summary
    assert "the kernel's state could not be read" in result.summary


# -- time.sync: the kernel's state, by the class of node ------------------------------

#: What adjtimex returns on a clock nobody disciplines (this machine): maxerror at 16 s.
UNSYNCED = KernelClock(status=STA_UNSYNC, state=5, maxerror_us=16_000_000, esterror_us=16_000_000)
#: A clock a daemon keeps: STA_UNSYNC clear, maxerror a few ms.
SYNCED = KernelClock(status=0x2001, state=0, maxerror_us=12_345, esterror_us=410)
#: chrony without `rtcsync` keeps STA_UNSYNC set (the kernel leaves the RTC alone).
CHRONY_NO_RTCSYNC = KernelClock(
    status=STA_UNSYNC | 0x2001, state=5, maxerror_us=3_000, esterror_us=90
)


def kernel_clock(monkeypatch: pytest.MonkeyPatch, clock: KernelClock) -> None:
    """The kernel's state as adjtimex would report it on that node."""
    monkeypatch.setattr(timesync, "read_kernel_clock", lambda ctx: clock)


def kvm_guest_with_dockerenv(node: Path) -> None:
    """Issue 8 case 3: a KVM microVM built from a container image; PID 1 is the guest's."""
    namespaces(node, pid=HOST_PID, user=HOST_USER)
    daemon(node, 1, "process_api")
    write_tree(
        node,
        {
            ".dockerenv": "",
            "proc/1/cgroup": "9:name=systemd:/\n4:memory:/\n0::/\n",
            "proc/1/sched": "process_api (1, #threads: 14)\n",
            "proc/cpuinfo": "flags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n",
            "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc kvm-clock\n",
        },
    )


def bare_metal(node: Path) -> None:
    """A physical server: host namespaces, a DMI vendor, no hypervisor."""
    namespaces(node, pid=HOST_PID, user=HOST_USER)
    daemon(node, 1, "systemd")
    write_tree(node, {"proc/1/cgroup": "0::/init.scope\n", "sys/class/dmi/id/sys_vendor": "Dell\n"})


def real_container(node: Path) -> None:
    """docker run: PID 1 in its own PID and cgroup namespaces (and a /.dockerenv)."""
    namespaces(node, pid=CHILD_PID, user=HOST_USER, cgroup=CHILD_CGROUP)
    daemon(node, 1, "iggy-server")
    write_tree(node, {".dockerenv": "", "proc/1/cgroup": "0::/\n"})


@pytest.mark.parametrize(
    ("build", "where", "advice"),
    [
        (kvm_guest_with_dockerenv, "no time sync daemon runs on this VM (kvm)", "ptp_kvm"),
        (bare_metal, "no time sync daemon runs on this bare-metal node", "apt install chrony"),
        (real_container, "the kernel this container (docker) shares with its host", "host"),
    ],
    ids=["vm-with-dockerenv", "bare-metal", "real-container"],
)
def test_time_sync_no_daemon_and_unsynchronised_kernel_warns(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: Any,
    where: str,
    advice: str,
) -> None:
    build(node)
    kernel_clock(monkeypatch, UNSYNCED)
    result = run_sync(tmp_path, node)
    assert result.status == Status.WARN
    assert result.summary.startswith(where)
    assert "unsynchronised (adjtimex read once: STA_UNSYNC set, max error 16 s" in result.summary
    [finding] = result.findings
    assert advice in finding.remediation and "segments" in finding.remediation
    kernel = result.data["kernel"]
    assert kernel["sta_unsync"] and kernel["maxerror_us"] == 16_000_000
    assert result.data["container"] == ("docker" if build is real_container else None)


@pytest.mark.parametrize(
    ("clock", "status", "summary"),
    [
        (UNSYNCED, Status.WARN, "no time sync daemon runs on this node (container or host: "),
        (None, Status.WARN, "no time sync daemon runs on this node (container or host: "),
        (SYNCED, Status.PASS, "no time daemon visible on this node (container or host: "),
    ],
    ids=["kernel-unsynchronised", "kernel-unread", "kernel-synchronised"],
)
def test_time_sync_undetermined_container_gives_neutral_advice(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: KernelClock | None,
    status: Status,
    summary: str,
) -> None:
    # Review of issue 8: a hostPID pod that may not read PID 1's namespaces. It sees the
    # host's processes, so "no daemon" is the host's state; but it was called bare metal
    # and told to install chrony here, i.e. in the pod.
    hostpid_pod(node)
    daemon(node, 1, "systemd")
    if clock is not None:
        kernel_clock(monkeypatch, clock)
    result = run_sync(tmp_path, node)
    assert result.status == status
    assert result.summary.startswith(summary + "undetermined)")
    assert result.data["container"] == "unknown"
    assert result.data["placement_evidence"][0].startswith("this process sees its own cgroup")
    for finding in result.findings:
        assert "this node if the agent runs on it directly and the container's host" in (
            finding.remediation
        )
        assert "apt install chrony" in finding.remediation


def test_time_sync_no_daemon_but_kernel_synchronised_passes(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a container the host's daemon is invisible, but the kernel's state is the host's.
    real_container(node)
    kernel_clock(monkeypatch, SYNCED)
    result = run_sync(tmp_path, node)
    assert result.status == Status.PASS
    assert result.summary == (
        "no time daemon visible on this container (docker), but the kernel reports the clock "
        "synchronised (adjtimex read once: STA_UNSYNC clear, max error 12.3 ms, estimated "
        "error 410 us (TIME_OK))"
    )


def test_time_sync_sta_unsync_with_small_maxerror_is_synchronised(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chrony runs (without rtcsync) but chronyc is not installed: the kernel decides, by
    # its error bound as timedatectl does, not by the STA_UNSYNC bit alone.
    bare_metal(node)
    daemon(node, 600, "chronyd")
    fake_tools(tmp_path, monkeypatch, {})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    kernel_clock(monkeypatch, CHRONY_NO_RTCSYNC)
    result = run_sync(tmp_path, node)
    assert result.status == Status.PASS
    assert result.summary.startswith(
        "the kernel reports the clock synchronised (adjtimex read once: STA_UNSYNC set, "
        "max error 3.0 ms"
    )
    assert result.data["unreadable"] == ["chrony runs but `chronyc` is not installed"]


def test_time_sync_daemon_not_disciplining_the_kernel_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_metal(node)
    daemon(node, 600, "chronyd")
    fake_tools(tmp_path, monkeypatch, {})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    kernel_clock(monkeypatch, UNSYNCED)
    result = run_sync(tmp_path, node)
    assert result.status == Status.FAIL
    assert result.summary.startswith("the clock is not synchronised (kernel: adjtimex")
    assert "ntpctl -s status" in result.findings[0].remediation


def test_adjtimex_reads_this_kernel() -> None:
    """Live: adjtimex and clock_adjtime(CLOCK_REALTIME) agree, and the fields are consistent."""
    clock = adjtimex()
    if isinstance(clock, str):
        pytest.skip(clock)
    assert clock.syscall == "adjtimex"
    assert 0 <= clock.state <= 5 and 0 <= clock.maxerror_us <= 16_000_000
    assert clock.synchronized == (clock.maxerror_us < 16_000_000)
    if clock.sta_unsync:
        assert clock.state == 5  # the kernel answers TIME_ERROR while STA_UNSYNC is set
    other = adjtimex(calls=("clock_adjtime",))  # the other entry point to the same state
    assert isinstance(other, KernelClock) and other.syscall == "clock_adjtime"
    assert other.sta_unsync == clock.sta_unsync
    assert abs(other.maxerror_us - clock.maxerror_us) <= 2_000  # grows 0.5 ms per second
    assert adjtimex(calls=("no_such_call",)) == "libc has none of no_such_call"


def test_adjtimex_agrees_with_the_adjtimex_tool() -> None:
    """Live oracle: `adjtimex -p` (Debian package adjtimex) reads the same kernel state."""
    if shutil.which("adjtimex") is None:
        pytest.skip("the adjtimex tool is not installed (apt install adjtimex)")
    out = subprocess.run(["adjtimex", "-p"], capture_output=True, text=True, timeout=10)
    clock = adjtimex()
    if isinstance(clock, str):
        pytest.skip(clock)
    tool = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in out.stdout.splitlines())
    )
    assert int(tool["status"]) & STA_UNSYNC == clock.status & STA_UNSYNC
    assert abs(int(tool["maxerror"]) - clock.maxerror_us) <= 2_000
    assert int(out.stdout.rsplit("return value =", 1)[1]) == clock.state


def test_time_sync_live_reads_the_kernel_and_ignores_marker_files(tmp_path: Path) -> None:
    """Live: the check reads this kernel's state; a /.dockerenv alone never makes a container."""
    clock = adjtimex()
    if isinstance(clock, str):
        pytest.skip(clock)
    result = time_sync.run(make_context(tmp_path, thresholds=SYNC))
    assert result.data["kernel"]["read"] is True
    if os.readlink("/proc/self/ns/pid") == f"pid:[{HOST_PID}]":
        assert result.data["container"] is None
        assert result.status != Status.SKIPPED


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
