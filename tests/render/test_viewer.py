"""Error lines in the raw viewer: real log errors marked, settings that merely name an
error word (kernel command lines, sysctl output, JSON keys, package names) not."""

from __future__ import annotations

import time

import pytest

from snapshot_agent.render.html import render_html
from snapshot_agent.render.viewer import RawBudget, is_error_line

from .pages import check, heads, parse, report

#: Lines a real snapshot's page highlighted although nothing went wrong in them.
SETTINGS = [
    # kernel.log: the kernel command line, twice at boot
    "2026-11-26T13:05:12,000000+00:00 Command line: console=ttyS0 quiet reboot=k panic=1 "
    "nomodule random.trust_cpu=1 swiotlb=noforce psi=1",
    "2026-11-26T13:05:12,099142+00:00 Kernel command line: mitigations=auto console=ttyS0 "
    "quiet reboot=k panic=1 nomodule",
    # sysctl.all: dotted keys
    "kernel.panic = 1",
    "kernel.print-fatal-signals = 0",
    "kernel.panic_on_oops = 1",
    "kernel.hung_task_panic = 0",
    "vm.panic_on_oom = 0",
    "vm.oom_kill_allocating_task = 0",
    # spacing and other setting shapes
    "panic = 1",
    "panic  =1",
    "errors=remount-ro",
    "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0",
    "oops=panic",
    '    "error": "",',
    '"error": null,',
    "rx_errors: 0",
    "errors: 0",
    # names: a package, a log file, an option, a process called `timeout`
    "libgpg-error-dev\t1.46-1\tinstall ok installed\tamd64",
    "log_file = /var/log/iggy/error.log",
    "iggy-bench --fail-fast",
    "   6234    6232 S    0.0       1656     1 timeout",
    "   6240    6234 S    0.0       1200     1 timeout 30 sleep 5",
    "Restart=on-failure",
]

#: Log lines that do say something went wrong.
ERRORS = [
    "2026-11-26T10:00:00Z ERROR iggy_server::binary: could not bind 0.0.0.0:8090",
    "error: could not open /dev/vda: no such file or directory",
    "systemd[1]: Failed to start iggy.service - Iggy message streaming.",
    "systemd[1]: iggy.service: Failed with result 'exit-code'.",
    "thread 'main' panicked at core/server/src/main.rs:42:5:",
    "kernel: BUG: unable to handle page fault for address: ffff8880deadbeef",
    "kernel: Oops: 0002 [#1] PREEMPT SMP NOPTI",
    "Call Trace:",
    "iggy-server[812]: segfault at 0 ip 000055d1 sp 00007ffd error 4 in iggy-server",
    "Out of memory: Killed process 812 (iggy-server) total-vm:4194304kB",
    "blk_update_request: I/O error, dev vda, sector 2048 op 0x0:(READ)",
    "kernel: EXT4-fs error (device vda1): ext4_find_entry:1455: reading directory lblock 0",
    "Kernel panic - not syncing: Fatal exception",
    "systemd[1]: Couldn't move remaining userspace processes, ignoring: Input/output error",
    'time=2026-11-26T10:00:00Z level=error msg="connection refused"',
    '{"level":"ERROR","message":"segment index torn"}',
    'ts=1 msg="failed to sync the state"',
    "nfs: server 10.0.0.5 not responding, timed out",
    "sshd[1]: error: kex_exchange_identification: Connection closed by remote host",
    "panic = 1 but then: write error on /dev/vda",  # a setting, and an error after it
    "kernel: java invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE), order=0",
    "kernel: oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,task=java,pid=812",
    "nvme nvme0: I/O 12 QID 3 timeout, aborting",
    "ata1.00: failed command: READ DMA; Emask 0x4 (timeout)",
    "Connection timeout after 10001 ms",
    "systemd[1]: iggy.service: Main process exited, code=killed, status=9/KILL",
    "ActiveState=failed",
    "Result=oom-kill",
]


@pytest.mark.parametrize("line", SETTINGS)
def test_a_setting_that_names_an_error_word_is_not_an_error_line(line: str) -> None:
    assert not is_error_line(line)


@pytest.mark.parametrize("line", ERRORS)
def test_a_log_line_that_says_something_failed_is_an_error_line(line: str) -> None:
    assert is_error_line(line)


KERNEL_LOG = (
    "2026-11-26T13:05:12,000000+00:00 Command line: console=ttyS0 quiet reboot=k panic=1\n"
    "2026-11-26T13:05:13,000000+00:00 Kernel command line: quiet reboot=k panic=1 nomodule\n"
    "2026-11-26T13:06:00,000000+00:00 blk_update_request: I/O error, dev vda, sector 2048\n"
    "2026-11-26T13:06:01,000000+00:00 kernel: BUG: unable to handle page fault\n"
    "2026-11-26T13:06:01,000000+00:00 Call Trace:\n"
    "2026-11-26T13:06:02,000000+00:00 all quiet again\n"
)
SYSCTL = (
    "kernel.osrelease = 6.1.0\n"
    "kernel.panic = 1\n"
    "kernel.print-fatal-signals = 0\n"
    "vm.swappiness = 60\n"
)


def test_the_page_marks_only_the_real_error_lines() -> None:
    """The lines of a real page that were all false positives, beside real errors."""
    doc = report(
        [
            check("kernel.log", "warn", artifacts=["kernel.log"]),
            check("sysctl.all", "pass", artifacts=["sysctl.txt"]),
        ]
    )
    raw = heads(
        {
            "raw/kernel.log/kernel.log": KERNEL_LOG.encode(),
            "raw/sysctl.all/sysctl.txt": SYSCTL.encode(),
        }
    )
    page = parse(render_html(doc, raw))
    marked = {pre["data-path"]: pre["data-error-lines"] for pre in page.find("pre", class_="raw")}
    assert marked == {"raw/kernel.log/kernel.log": "3 4 5", "raw/sysctl.all/sysctl.txt": ""}


def test_the_viewer_lists_error_lines_by_number() -> None:
    [view_head] = heads({"raw/a.b/x.log": KERNEL_LOG.encode()}).values()
    view = RawBudget().view(view_head)
    assert view is not None and view.errors == [3, 4, 5]


def test_a_long_line_of_error_words_is_judged_in_linear_time() -> None:
    # A raw head may be one 192 KiB line: every word is looked at in place, never copied.
    for line in ("error " * 32_000, "kernel.panic = 1 " * 11_000):
        start = time.perf_counter()
        is_error_line(line)
        assert time.perf_counter() - start < 2  # about 0.06 s here; a copy per word is quadratic
