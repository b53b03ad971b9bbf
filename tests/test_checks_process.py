"""process.* checks against fixture /proc trees, and their parsers on real sample text."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from snapshot_agent.checks.process import (
    LimitsFacts,
    agent_pid,
    classify_fd,
    cpu_percents,
    judge_limits,
    parse_file_nr,
    process_fds,
    process_limits,
    process_top,
    process_zombies,
)
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.processes import BrokerProcess, ProcStat, find_broker, parse_stat
from snapshot_agent.node.procfs import Limit, parse_limits
from snapshot_agent.pipeline.filter import filter_for, filter_result
from snapshot_agent.pipeline.record import CheckRecord

from .conftest import fixture_roots, make_context, run_cli, starred, write_tree

# Real /proc/<pid>/stat lines from a Debian 12 VM (the second one's comm has a space).
REAL_STAT = (
    "1 (process_api) S 0 0 0 0 -1 4194560 74848 11143329 0 1394 137 472 13961 12888 20 0 13 0 "
    "24 45084672 3583 18446744073709551615 1 1 0 0 0 0 0 4096 1256 0 0 0 17 1 0 0 0 0 0 0 0 0 "
    "0 0 0 0 0\n"
)

# /proc/self/limits from the same VM.
REAL_LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96365                96365                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
"""  # noqa: W291 - the kernel pads every column, the last one too


def limits_text(nofile: str = "65536", memlock: str = "unlimited", nproc: str = "96365") -> str:
    """REAL_LIMITS with nofile, memlock and nproc (soft = hard) replaced."""
    out = []
    for line in REAL_LIMITS.splitlines(keepends=True):
        for name, value in (
            ("Max open files", nofile),
            ("Max locked memory", memlock),
            ("Max processes", nproc),
        ):
            if line.startswith(name):
                units = line.split()[-1]
                line = f"{name:<26}{value:<21}{value:<21}{units:<10}\n"
        out.append(line)
    return "".join(out)


def stat_line(
    pid: int,
    name: str,
    *,
    state: str = "S",
    ppid: int = 1,
    ticks: int = 0,
    threads: int = 1,
    start: int = 100,
    rss_pages: int = 0,
) -> str:
    """A /proc/<pid>/stat line laid out like the kernel's."""
    return (
        f"{pid} ({name}) {state} {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {ticks} 0 0 0 20 0 "
        f"{threads} 0 {start} 45084672 {rss_pages} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 "
        "17 1 0 0 0 0 0\n"
    )


MEMINFO = "MemTotal:        4000000 kB\nMemFree:         1000000 kB\n"
PAGES_PER_PERCENT = 4000000 * 1024 // os.sysconf("SC_PAGE_SIZE") // 100


def proc(
    node: Path,
    pid: int,
    name: str,
    cmdline: str = "",
    limits: str | None = None,
    **stat: Any,
) -> None:
    """Add a process to a fixture tree."""
    files = {
        f"proc/{pid}/stat": stat_line(pid, name, **stat),
        f"proc/{pid}/cmdline": cmdline.replace(" ", "\0") + ("\0" if cmdline else ""),
    }
    if limits is not None:
        files[f"proc/{pid}/limits"] = limits
    write_tree(node, files)


def ctx_for(tmp_path: Path, node: Path, thresholds: dict[str, Any]) -> Any:
    """A context on the fixture tree with the check's thresholds."""
    return make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)


# -- parsers -------------------------------------------------------------------------


def test_parse_stat_real_line() -> None:
    s = parse_stat(REAL_STAT)
    assert s == ProcStat(
        pid=1,
        name="process_api",
        state="S",
        ppid=0,
        ticks=137 + 472,
        threads=13,
        start_ticks=24,
        rss_pages=3583,
        user_ticks=137,
        system_ticks=472,
        reaped_user_ticks=13961,
        reaped_system_ticks=12888,
        nice=0,
    )


def test_parse_stat_odd_names_and_garbage() -> None:
    s = parse_stat(stat_line(7, "tmux: server) (x", state="Z", ppid=3))
    assert s is not None and s.name == "tmux: server) (x" and s.state == "Z" and s.ppid == 3
    assert parse_stat("") is None
    assert parse_stat("12 (short) S 1 2\n") is None
    assert parse_stat(stat_line(7, "x").replace(" 100 45084672 ", " zz 45084672 ")) is None


def test_parse_limits_real_sample() -> None:
    limits = parse_limits(REAL_LIMITS)
    assert limits["Max open files"].soft == 20000 and limits["Max open files"].units == "files"
    assert limits["Max locked memory"].soft == 8388608
    assert limits["Max processes"].hard == 96365
    assert limits["Max cpu time"].soft is None  # unlimited
    assert limits["Max nice priority"].units == ""
    assert len(limits) == 16


def test_parse_limits_skips_garbage() -> None:
    text = "Limit  Soft Limit  Hard Limit  Units\nMax open files   lots   4096   files\nnoise\n"
    assert parse_limits(text) == {}


def test_cpu_percents_from_two_scans() -> None:
    before = {1: ProcStat(1, "a", "S", 0, 100, 1, 5, 0), 2: ProcStat(2, "b", "S", 0, 50, 1, 5, 0)}
    after = {
        1: ProcStat(1, "a", "S", 0, 150, 1, 5, 0),  # 50 ticks in 0.5 s at 100 Hz: one core
        2: ProcStat(2, "b", "S", 0, 0, 1, 9, 0),  # pid reused by a new process
        3: ProcStat(3, "c", "S", 0, 10, 1, 9, 0),  # new
    }
    assert cpu_percents(before, after, 0.5, 100) == {1: 100.0}


def test_parse_file_nr_and_classify_fd() -> None:
    assert parse_file_nr("557\t0\t2466177\n") == (557, 2466177)
    assert parse_file_nr("garbage") is None
    assert classify_fd("socket:[123]") == "socket"
    assert classify_fd("anon_inode:[io_uring]") == "io_uring"
    assert classify_fd("pipe:[66821]") == "pipe"
    assert classify_fd("/dev/null") == "device"
    assert classify_fd("/data/streams/1/00000000000000000000.log") == "file"


# -- find_broker / agent_pid -----------------------------------------------------------


def test_find_broker_by_name_or_argv0_oldest_wins(tmp_path: Path, node: Path) -> None:
    proc(node, 10, "bash", "/bin/bash")
    proc(node, 20, "tokio-runtime-w", "/usr/local/bin/iggy-server --with-x", start=500)
    proc(node, 30, "iggy-server", "/usr/bin/iggy-server", start=300)
    proc(node, 40, "iggy-server", "", state="Z", start=10)  # a zombie is not the broker
    ctx = ctx_for(tmp_path, node, {})
    broker = find_broker(ctx)
    assert broker is not None and broker.pid == 30 and broker.found_by == "process name iggy-server"
    shutil.rmtree(node / "proc/30")
    assert find_broker(ctx).pid == 20  # type: ignore[union-attr]


def test_find_broker_none(tmp_path: Path, node: Path) -> None:
    proc(node, 10, "bash", "/bin/bash -c iggy-server")
    assert find_broker(ctx_for(tmp_path, node, {})) is None


def test_agent_pid_in_a_fixture_tree(tmp_path: Path, node: Path) -> None:
    ctx = ctx_for(tmp_path, node, {})
    assert agent_pid(ctx) is None
    (node / "proc").mkdir(exist_ok=True)
    os.symlink("4242", node / "proc/self")
    assert agent_pid(ctx) == 4242


# -- process.top -------------------------------------------------------------------

TOP = {"sample_s": 0.01, "warn_rss_percent": 50, "fail_rss_percent": 90}


@pytest.mark.parametrize(
    ("big_percent", "status"),
    [(20, Status.PASS), (60, Status.WARN), (95, Status.FAIL)],
)
def test_process_top_verdicts(tmp_path: Path, node: Path, big_percent: int, status: Status) -> None:
    write_tree(node, {"proc/meminfo": MEMINFO})
    proc(node, 1, "init", "/sbin/init", rss_pages=PAGES_PER_PERCENT)
    proc(node, 812, "iggy-server", "/usr/bin/iggy-server", rss_pages=PAGES_PER_PERCENT * 10)
    proc(node, 900, "java", "java -jar big.jar", rss_pages=PAGES_PER_PERCENT * big_percent)
    result = process_top.run(ctx_for(tmp_path, node, TOP))
    assert result.status == status
    assert result.data["broker"]["pid"] == 812 and result.data["broker"]["role"] == "broker"
    assert result.data["top_rss"][0]["name"] == "java"
    assert result.data["top_rss"][0]["command"] == "java -jar big.jar"
    assert [r["pid"] for r in result.data["top_cpu"]][:3] == [900, 812, 1]
    broker_info = [f for f in result.findings if f.severity == Severity.INFO]
    assert "broker iggy-server (pid 812)" in broker_info[0].message
    if status == Status.PASS:
        assert "broker iggy-server (pid 812)" in result.summary and "largest java" in result.summary
    else:
        worst = result.findings[0]
        assert "java (pid 900)" in worst.message and f"{big_percent}%" in worst.message
        assert "MemoryMax=" in worst.remediation and worst.subject == "pid 900"
    assert (tmp_path / "artifacts/processes.txt").read_text().splitlines()[1].split()[0] == "900"


def test_process_top_broker_is_exempt_from_the_rss_threshold(tmp_path: Path, node: Path) -> None:
    """A dedicated node: the broker at 70% is the design (memory.usage judges what is left)."""
    write_tree(node, {"proc/meminfo": MEMINFO})
    proc(node, 812, "iggy-server", "iggy-server", rss_pages=PAGES_PER_PERCENT * 70)
    result = process_top.run(ctx_for(tmp_path, node, TOP))
    assert result.status == Status.PASS, result.summary
    assert "(70% of memory)" in result.summary
    assert result.data["broker"]["mem_percent"] == 70.0
    [info] = result.findings
    assert info.severity == Severity.INFO and "memory_pool" in info.remediation


def test_process_top_other_process_at_70_percent_warns(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/meminfo": MEMINFO})
    proc(node, 812, "iggy-server", "iggy-server", rss_pages=PAGES_PER_PERCENT * 10)
    proc(node, 900, "java", "java -jar big.jar", rss_pages=PAGES_PER_PERCENT * 70)
    result = process_top.run(ctx_for(tmp_path, node, TOP))
    assert result.status == Status.WARN
    assert result.summary.startswith("java (pid 900) uses")
    assert "70% of" in result.summary


def test_process_top_command_lines_leave_masked(tmp_path: Path, node: Path) -> None:
    """process.top keeps whole command lines; the pipeline's default filter masks them."""
    write_tree(node, {"proc/meminfo": MEMINFO})
    proc(node, 812, "iggy-server", "/usr/bin/iggy-server --with-default-root-credentials")
    proc(
        node,
        900,
        "loader",
        "/opt/loader --iggy-password=iggypass --token abc123 --url http://u:pw@h:3000/",
        rss_pages=PAGES_PER_PERCENT * 20,
    )
    raw = process_top.run(ctx_for(tmp_path, node, TOP))
    assert "abc123" in json.dumps(raw.data)  # the check itself never redacts
    result = filter_result(filter_for(True), process_top, raw)
    rows = {r["pid"]: r["command"] for r in result.data["top_rss"]}
    assert (
        starred(rows[900])
        == "/opt/loader --iggy-password=*** --token *** --url http://u:***@h:3000/"
    )
    assert (
        result.data["broker"]["command"] == "/usr/bin/iggy-server --with-default-root-credentials"
    )
    text = json.dumps(CheckRecord.of(process_top, result).to_json())
    assert "iggypass" not in text and "abc123" not in text and ":pw@" not in text


def test_process_top_without_broker(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/meminfo": MEMINFO})
    proc(node, 1, "init", "/sbin/init")
    result = process_top.run(ctx_for(tmp_path, node, TOP))
    assert result.status == Status.PASS
    assert result.summary.startswith("no broker process found")
    assert result.data["broker"] is None


# -- process.limits ----------------------------------------------------------------

LIMITS = {
    "warn_nofile_below": 65536,
    "fail_nofile_below": 4096,
    "memlock_unlimited": True,
    "warn_nproc_below": 4096,
}


def broker_node(node: Path, limits: str, threads: list[str] | None = None) -> Path:
    """A node with an iggy-server process (pid 812) with these limits and thread names."""
    proc(node, 812, "iggy-server", "/usr/bin/iggy-server", limits=limits)
    for i, comm in enumerate(threads or []):
        write_tree(node, {f"proc/812/task/{812 + i}/comm": comm + "\n"})
    return node


def test_process_limits_pass(tmp_path: Path, node: Path) -> None:
    broker_node(node, limits_text(), ["iggy-server", "shard-0", "shard-1"])
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.PASS
    assert result.summary == "iggy-server (pid 812): nofile 65536, memlock unlimited, nproc 96365"
    assert result.data["io_uring_shards"] is True
    assert {r["limit"] for r in result.data["limits"]} == {
        "Max open files",
        "Max locked memory",
        "Max processes",
    }
    assert (tmp_path / "artifacts/limits.txt").read_text() == limits_text()


def test_process_limits_warn_nofile_and_memlock_on_io_uring(tmp_path: Path, node: Path) -> None:
    broker_node(node, limits_text(nofile="20000", memlock="8388608"), ["shard-0"])
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.WARN
    nofile, memlock = result.findings
    assert "only 20000 files" in nofile.message and "LimitNOFILE=65536" in nofile.remediation
    assert "systemctl edit iggy-server" in nofile.remediation
    assert nofile.subject == "/proc/812/limits"
    assert "8192 KiB" in memlock.message and "LimitMEMLOCK=infinity" in memlock.remediation


def test_process_limits_fail_on_tiny_nofile(tmp_path: Path, node: Path) -> None:
    broker_node(node, limits_text(nofile="1024", nproc="512"))
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.FAIL
    assert "only 1024 files" in result.summary and "below 4096" in result.summary
    assert any("LimitNPROC=4096" in f.remediation for f in result.findings)


@pytest.mark.parametrize(
    ("soft", "severity"),
    [
        (65537, None),
        (65536, None),  # the recommended limit itself: "below 65536" is what warns
        (65535, Severity.WARN),
        (4096, Severity.WARN),
        (4095, Severity.FAIL),
        (None, None),  # unlimited
    ],
)
def test_nofile_band_is_lower_is_worse_and_strictly_below(
    soft: int | None, severity: Severity | None
) -> None:
    assert process_limits.band("nofile_below").higher_is_worse is False
    assert {"warn_nofile_below", "fail_nofile_below", "warn_nproc_below"} <= set(
        process_limits.thresholds
    )
    facts = LimitsFacts(
        BrokerProcess(812, "iggy-server", "name"),
        {"Max open files": Limit(soft, None, "files")},
        True,
        "iggy-server.service",
    )
    found = [f.severity for f in judge_limits(facts, LIMITS).findings]
    assert found == ([severity] if severity else [])


def test_process_limits_memlock_is_info_for_a_pre_io_uring_broker(
    tmp_path: Path, node: Path
) -> None:
    broker_node(node, limits_text(memlock="65536"), ["iggy-server", "tokio-runtime-w"])
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.PASS
    [info] = result.findings
    assert info.severity == Severity.INFO and "pre-0.6" in info.message


def test_process_limits_io_uring_fd_or_lone_thread_warns(tmp_path: Path, node: Path) -> None:
    broker_node(node, limits_text(memlock="65536"), ["iggy-server"])
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.WARN and result.data["io_uring_shards"] is None
    (node / "proc/812/fd").mkdir()
    os.symlink("anon_inode:[io_uring]", node / "proc/812/fd/7")
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.WARN and result.data["io_uring_shards"] is True


def test_process_limits_skipped_without_broker(tmp_path: Path, node: Path) -> None:
    proc(node, 1, "init", "/sbin/init")
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.SKIPPED and "no broker process" in result.summary


def test_process_limits_skipped_on_garbage(tmp_path: Path, node: Path) -> None:
    broker_node(node, "not a limits file\n")
    result = process_limits.run(ctx_for(tmp_path, node, LIMITS))
    assert result.status == Status.SKIPPED and "no limit lines" in result.summary


# -- process.zombies ---------------------------------------------------------------

ZOMBIES = {"warn_count": 5, "fail_count": 1000}


def zombie_node(node: Path, count: int) -> Path:
    """init, a leaky supervisor (pid 50) with `count` zombie children, and one under init."""
    proc(node, 1, "init", "/sbin/init")
    proc(node, 50, "supervisord", "/usr/bin/supervisord")
    for i in range(count):
        proc(node, 100 + i, "worker", state="Z", ppid=50)
    proc(node, 99, "sh", state="Z", ppid=1)
    return node


def test_process_zombies_pass_with_none(tmp_path: Path, node: Path) -> None:
    proc(node, 1, "init", "/sbin/init")
    result = process_zombies.run(ctx_for(tmp_path, node, ZOMBIES))
    assert result.status == Status.PASS and result.summary == "no zombie processes"


def test_process_zombies_few_are_info(tmp_path: Path, node: Path) -> None:
    result = process_zombies.run(ctx_for(tmp_path, zombie_node(node, 2), ZOMBIES))
    assert result.status == Status.PASS
    assert result.summary == "3 zombie process(es), below the warning level of 5"
    assert {f.severity for f in result.findings} == {Severity.INFO}


def test_process_zombies_warn_grouped_by_parent(tmp_path: Path, node: Path) -> None:
    result = process_zombies.run(ctx_for(tmp_path, zombie_node(node, 6), ZOMBIES))
    assert result.status == Status.WARN
    assert result.summary.startswith("7 zombie processes (at or over 5)")
    assert result.data["parents"][0] == {
        "parent_pid": 50,
        "parent": "supervisord",
        "zombies": 6,
        "names": "worker",
    }
    by_parent = {f.subject: f for f in result.findings[1:]}
    assert "supervisord (pid 50) is not reaping" in by_parent["pid 50"].remediation
    assert "--init" in by_parent["pid 1"].remediation


def test_process_zombies_fail(tmp_path: Path, node: Path) -> None:
    ctx = ctx_for(tmp_path, zombie_node(node, 3), {"warn_count": 2, "fail_count": 4})
    assert process_zombies.run(ctx).status == Status.FAIL


def test_process_zombies_ignores_the_agents_own_children(tmp_path: Path, node: Path) -> None:
    zombie_node(node, 6)
    os.symlink("50", node / "proc/self")  # the agent is pid 50 here
    result = process_zombies.run(ctx_for(tmp_path, node, ZOMBIES))
    assert result.status == Status.PASS and result.data["zombies"] == 1


# -- process.fds -------------------------------------------------------------------

FDS = {"warn_percent": 80, "fail_percent": 90}


def fd_proc(node: Path, pid: int, name: str, limit: int, sockets: int, files: int) -> None:
    """A process with `sockets` + `files` open fds and a nofile limit of `limit`."""
    proc(node, pid, name, name, limits=limits_text(nofile=str(limit)))
    fd = node / f"proc/{pid}/fd"
    fd.mkdir(parents=True)
    for i in range(sockets):
        os.symlink(f"socket:[{1000 + i}]", fd / str(i))
    for i in range(files):
        os.symlink(f"/data/streams/1/{i:020d}.log", fd / str(sockets + i))


@pytest.mark.parametrize(
    ("open_fds", "status"), [(10, Status.PASS), (85, Status.WARN), (95, Status.FAIL)]
)
def test_process_fds_broker_verdicts(
    tmp_path: Path, node: Path, open_fds: int, status: Status
) -> None:
    fd_proc(node, 812, "iggy-server", 100, open_fds - 5, 5)
    fd_proc(node, 4000, "snapshot-agent", 1024, 2, 1)
    os.symlink("4000", node / "proc/self")
    write_tree(node, {"proc/sys/fs/file-nr": "2000\t0\t100000\n"})
    result = process_fds.run(ctx_for(tmp_path, node, FDS))
    assert result.status == status
    broker, agent = result.data["processes"]
    assert broker["open_fds"] == open_fds and broker["soft_limit"] == "100"
    assert broker["by_type"] == f"socket {open_fds - 5}, file 5"
    assert agent["role"] == "agent" and agent["open_fds"] == 3
    assert result.data["system_allocated"] == 2000
    if status == Status.PASS:
        assert result.summary == (
            "broker 10/100 fds, agent 3/1024 fds, system 2000/100000 file handles"
        )
    else:
        assert f"{open_fds} of 100 files open" in result.summary
        assert "LimitNOFILE=65536" in result.findings[0].remediation


def test_process_fds_reports_the_system_table_without_judging_it(
    tmp_path: Path, node: Path
) -> None:
    # sysctl.fs owns the verdict on fs.file-nr (see test_checks_sysctl); this only reports it.
    write_tree(node, {"proc/sys/fs/file-nr": "95000\t0\t100000\n"})
    result = process_fds.run(ctx_for(tmp_path, node, FDS))
    assert result.status == Status.PASS
    assert result.summary == "system 95000/100000 file handles"
    assert result.data["system_allocated"] == 95000 and result.data["system_max"] == 100000
    assert result.data["system_percent"] == 95.0
    assert not any(f.subject == "/proc/sys/fs/file-nr" for f in result.findings)
    assert any("no broker process found" in f.message for f in result.findings)


def test_process_fds_skipped_with_nothing_to_read(tmp_path: Path, node: Path) -> None:
    result = process_fds.run(ctx_for(tmp_path, node, FDS))
    assert result.status == Status.SKIPPED


# -- names and command lines with control characters (issue 9, item 11) --------------

#: A row of processes.txt: pid, ppid, state, CPU%, RSS KiB, threads, then the name.
LISTING_ROW = re.compile(r"^ *\d+ +\d+ \S +\d+\.\d +\d+ +\d+ .*$")

#: Names itself `n<newline><tag>`, forks a child that names itself with an escape sequence
#: and exits unreaped (a zombie), prints the child's pid and waits to be killed.
NAMED_BADLY = """
import os, sys, time
tag = sys.argv[1]
with open("/proc/self/comm", "w") as f:
    f.write("n\\n" + tag)
child = os.fork()
if child == 0:
    with open("/proc/self/comm", "w") as f:
        f.write("z\\x1b[2J" + tag)
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


def test_control_characters_in_live_process_names_are_escaped(tmp_path: Path) -> None:
    """A live process named with a newline and a zombie named with an escape sequence."""
    tag = secrets.token_hex(3)
    parent = subprocess.Popen(
        [sys.executable, "-c", NAMED_BADLY, tag], stdout=subprocess.PIPE, text=True
    )
    try:
        zombie = int(parent.stdout.readline())  # type: ignore[union-attr]
        config = tmp_path / "config.yaml"
        config.write_text("{}\n")
        proc = run_cli(
            "run", "-c", config, "-o", tmp_path, "--only", "process.top,process.zombies", "-q"
        )
    finally:
        parent.kill()
        parent.wait()
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        listing = zf.read("raw/process.top/processes.txt").decode()
        report = json.loads(zf.read("report.json"))
        html = zf.read("report.html").decode()
    rows = listing.splitlines()[1:]
    assert [r for r in rows if not LISTING_ROW.match(r)] == []  # no row split in two
    mine = {r.split()[0]: r.split(maxsplit=6)[6] for r in rows if tag in r}
    assert mine == {str(parent.pid): f"n\\n{tag}", str(zombie): f"z\\x1b[2J{tag}"}
    [zombies] = [c for c in report["checks"] if c["id"] == "process.zombies"]
    [group] = [g for g in zombies["data"]["parents"] if g["parent_pid"] == parent.pid]
    assert group["parent"] == f"n\\n{tag}" and group["names"] == f"z\\x1b[2J{tag}"
    assert any(
        f"(z\\x1b[2J{tag}) left by n\\n{tag} (pid" in f["message"] for f in zombies["findings"]
    )
    text = json.dumps(report, ensure_ascii=False) + html
    assert f"\n{tag}" not in text and "\x1b" not in text


def test_control_characters_in_command_lines_are_escaped(tmp_path: Path, node: Path) -> None:
    """The broker's command line in a fixture tree, through the real CLI."""
    write_tree(node, {"proc/meminfo": MEMINFO})
    write_tree(
        node,
        {
            "proc/812/stat": stat_line(812, "iggy-server"),
            "proc/812/cmdline": "/usr/bin/iggy-server\0--name\0a\nb\u2028c\x1b[0m\0",
        },
    )
    roots = msgspec.structs.asdict(fixture_roots(node))
    config = tmp_path / "config.yaml"
    config.write_text("checks:\n  roots:\n" + "".join(f"    {k}: {v}\n" for k, v in roots.items()))
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "process.top", "-q")
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        report = json.loads(zf.read("report.json"))
    [top] = report["checks"]
    assert top["data"]["broker"]["command"] == "/usr/bin/iggy-server --name 'a\\nb\\u2028c\\x1b[0m'"
