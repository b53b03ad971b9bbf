"""iggy.process against fixture /proc trees, a real process with shard threads, and its
parsers on the values Iggy accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.iggy_process import iggy_process
from snapshot_agent.config import ChecksConfig, Config, RootsConfig
from snapshot_agent.config import IggyConfig as AgentIggyConfig
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.iggy_process import (
    UNIT_PROPS,
    all_cores_shards,
    format_cpu_set,
    parse_cpu_allocation,
    parse_cpu_set,
)

from ..conftest import fake_tools, fixture_roots, make_context, run_cli, write_tree
from ..test_checks_process import limits_text, stat_line

PID = 812
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1024**3
BOOT_UPTIME_S = 100_000.0
DAY_S = 86_400

THRESHOLDS = dict(iggy_process.thresholds)

#: A 0.8-style server config: four shards, the default 4 GiB pool.
CONFIG = """\
[system]
path = "local_data"

[system.sharding]
cpu_allocation = "all"

[system.memory_pool]
enabled = true
size = "4 GiB"
bucket_capacity = 8192
"""


def broker_tree(
    node: Path,
    *,
    threads: dict[str, str] | None = None,
    affinity: str = "0-3",
    limits: str | None = None,
    fds: int = 40,
    rss_kib: int = 1024 * 1024,
    up_s: float = 3 * DAY_S,
    config: str | None = CONFIG,
    mem_total_kib: int = 16 * 1024 * 1024,
    environ: str = "",
    kernel: str | None = "6.1.0-18-amd64",
) -> Path:
    """A node running iggy-server as pid 812; `threads` maps thread name -> Cpus_allowed_list.

    By default: four shards each pinned to its own core of four, 1 GiB resident, 40 of
    65536 fds open, memlock unlimited, up three days, the config in /etc/iggy/server.toml,
    kernel 6.1 (None: no osrelease).
    """
    if threads is None:
        threads = {"iggy-server": affinity} | {f"shard-{i}": str(i) for i in range(4)}
    start = int((BOOT_UPTIME_S - up_s) * CLK_TCK)
    files: dict[str, str] = {
        f"proc/{PID}/stat": stat_line(PID, "iggy-server", threads=len(threads), start=start),
        f"proc/{PID}/comm": "iggy-server\n",
        f"proc/{PID}/cmdline": "/usr/bin/iggy-server\0",
        f"proc/{PID}/environ": environ,
        f"proc/{PID}/status": (
            f"Name:\tiggy-server\nState:\tS (sleeping)\nPid:\t{PID}\nVmRSS:\t{rss_kib} kB\n"
            f"Threads:\t{len(threads)}\nCpus_allowed:\tf\nCpus_allowed_list:\t{affinity}\n"
        ),
        f"proc/{PID}/limits": limits if limits is not None else limits_text(),
        "proc/uptime": f"{BOOT_UPTIME_S:.2f} 400000.00\n",
        "proc/meminfo": f"MemTotal:       {mem_total_kib} kB\n",
    }
    for n, (name, cpus) in enumerate(threads.items()):
        tid = PID + n
        files[f"proc/{PID}/task/{tid}/comm"] = name + "\n"
        files[f"proc/{PID}/task/{tid}/status"] = (
            f"Name:\t{name}\nPid:\t{tid}\nCpus_allowed_list:\t{cpus}\n"
        )
    if config is not None:
        files["etc/iggy/server.toml"] = config
    if kernel is not None:
        files["proc/sys/kernel/osrelease"] = kernel + "\n"
    write_tree(node, files)
    fd_dir = node / f"proc/{PID}/fd"
    fd_dir.mkdir(parents=True, exist_ok=True)
    for i in range(fds):
        os.symlink(f"socket:[{1000 + i}]", fd_dir / str(i))
    return node


def cgroup(
    node: Path, *, memory_max: str = "max", cpu_max: str = "max 100000", ooms: int = 0
) -> None:
    """Put the broker in a cgroup v2 unit with these limits (and `ooms` OOM kills so far)."""
    unit = "sys/fs/cgroup/system.slice/iggy-server.service"
    write_tree(
        node,
        {
            "sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
            f"proc/{PID}/cgroup": "0::/system.slice/iggy-server.service\n",
            f"{unit}/memory.max": memory_max + "\n",
            f"{unit}/memory.current": str(GIB) + "\n",
            f"{unit}/memory.events": f"low 0\nhigh 0\nmax {ooms}\noom {ooms}\noom_kill {ooms}\n",
            f"{unit}/cpu.max": cpu_max + "\n",
        },
    )


def run(tmp_path: Path, node: Path, **thresholds: Any) -> Any:
    """iggy.process on the fixture tree with its declared thresholds (and overrides)."""
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=THRESHOLDS | thresholds)
    return iggy_process.run(ctx)


def by_severity(result: Any, severity: Severity) -> list[str]:
    """The messages of the findings of one severity."""
    return [f.message for f in result.findings if f.severity == severity]


# -- parsers -------------------------------------------------------------------------


def test_parse_cpu_set_and_back() -> None:
    assert parse_cpu_set("0-3,8,10-11\n") == frozenset({0, 1, 2, 3, 8, 10, 11})
    assert format_cpu_set(frozenset({0, 1, 2, 3, 8, 10, 11})) == "0-3,8,10-11"
    assert format_cpu_set(frozenset({5})) == "5"
    for garbage in ("", "x", "3-1", "0-99999999", "-1"):
        with pytest.raises(ValueError):
            parse_cpu_set(garbage)


@pytest.mark.parametrize(
    ("value", "kind", "shards"),
    [
        ("all", "all", None),
        (4, "count", 4),
        ("4", "count", 4),
        ("5..8", "range", 3),  # cores 5, 6, 7 (sharding.rs: start..end, end excluded)
        ("numa:auto", "numa", None),
        ("numa:nodes=0,1;cores=4;no_ht=true", "numa", None),
        ("four", "invalid", None),
        ("1..x", "invalid", None),
        ("\u00b2", "invalid", None),  # '²'.isdigit() is True; int('²') raises
        ("0..\u00b2", "invalid", None),
        ("\uff14", "invalid", None),  # a full-width 4
        (None, "invalid", None),
        (True, "invalid", None),
    ],
)
def test_parse_cpu_allocation(value: Any, kind: str, shards: int | None) -> None:
    allocation = parse_cpu_allocation(value)
    assert (allocation.kind, allocation.shards) == (kind, shards)
    if kind == "range":
        assert allocation.cpus == (5, 6, 7)


def test_all_cores_follows_rusts_available_parallelism() -> None:
    assert all_cores_shards(8, None) == 8
    assert all_cores_shards(8, 2.5) == 2  # the quota, rounded down
    assert all_cores_shards(8, 0.5) == 1  # never below one
    assert all_cores_shards(2, 4.0) == 2


# -- verdicts on fixture trees ---------------------------------------------------------


def test_iggy_process_healthy_broker_passes(tmp_path: Path, node: Path) -> None:
    broker_tree(node)
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.findings
    assert result.findings == []
    assert result.summary == (
        "iggy-server (pid 812), 4 shards on 4 cores (all), RSS 1.0 GiB (pool 4.0 GiB), "
        "40/65536 fds, memlock unlimited, up 3 d 0 h"
    )
    data = result.data
    assert data["generation"] == "sharded" and data["shards"] == 4
    assert [r["cpus"] for r in data["shard_threads"]] == ["0", "1", "2", "3"]
    assert data["affinity"] == "0-3" and data["usable_cores"] == 4
    assert data["memory_pool_bytes"] == 4 * GIB
    assert data["memory_pool_source"] == "config /etc/iggy/server.toml"
    assert data["open_fds"] == 40 and data["uptime_s"] == 3 * DAY_S


@pytest.mark.parametrize(
    ("shards", "affinity", "cpu_max", "status"),
    [
        (4, "0-3", "max 100000", Status.PASS),
        (5, "0-4", "400000 100000", Status.WARN),  # five shards, a four-core quota
        (8, "0-7", "200000 100000", Status.FAIL),  # a Kubernetes limit of 2 CPUs
    ],
)
def test_iggy_process_shards_against_cores(
    tmp_path: Path, node: Path, shards: int, affinity: str, cpu_max: str, status: Status
) -> None:
    threads = {"iggy-server": affinity} | {f"shard-{i}": str(i) for i in range(shards)}
    broker_tree(node, threads=threads, affinity=affinity, config=CONFIG.replace('"all"', "8"))
    cgroup(node, cpu_max=cpu_max)
    result = run(tmp_path, node)
    assert result.status == status
    if status == Status.PASS:
        return
    finding = result.findings[0]
    assert f"runs {shards} shard threads on 4 cores" in finding.message or (
        f"runs {shards} shard threads on 2 cores" in finding.message
    )
    assert "cpu.max" in finding.message
    assert "cpu_allocation =" in finding.remediation
    assert result.data["cpu_quota_cores"] == float(cpu_max.split()[0]) / 100000


def test_iggy_process_unpinned_and_shared_shards_warn(tmp_path: Path, node: Path) -> None:
    # cpu_allocation = 4 pins to cores 0-3, but the broker may use only 4-7: every bind
    # fails and the shards float over 4-7 (Iggy only logs the failure).
    threads = {"iggy-server": "4-7"} | {f"shard-{i}": "4-7" for i in range(4)}
    broker_tree(node, threads=threads, affinity="4-7", config=CONFIG.replace('"all"', "4"))
    result = run(tmp_path, node)
    assert result.status == Status.WARN
    [unpinned] = by_severity(result, Severity.WARN)
    assert "4 of 4 shard threads" in unpinned and "not pinned to one CPU" in unpinned
    assert "allowed on 4-7" in unpinned
    assert "pin to cores 0..N-1" in result.findings[0].remediation
    assert "allowed here: 4-7" in result.findings[0].remediation

    shared = tmp_path / "shared"
    threads = {"iggy-server": "0-3", "shard-0": "0", "shard-1": "1", "shard-2": "1"}
    broker_tree(shared, threads=threads, config=CONFIG.replace('"all"', "3"))
    result = run(tmp_path, shared)
    assert result.status == Status.WARN
    [message] = by_severity(result, Severity.WARN)
    assert "pinned to 1 shared CPU(s) (CPU 1: shard-1, shard-2)" in message


def test_iggy_process_pre_sharding_broker_is_not_held_to_shards(tmp_path: Path, node: Path) -> None:
    threads = {"iggy-server": "0-3", "tokio-runtime-w": "0-3", "tokio-rt-worker": "0-3"}
    config = CONFIG.split("[system.sharding]")[0]  # 0.5 configs have no sharding table
    broker_tree(node, threads=threads, limits=limits_text(memlock="65536"), config=config)
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    [info] = result.findings
    assert info.severity == Severity.INFO and "pre-0.6 broker on tokio" in info.message
    assert result.data["generation"] == "tokio"
    assert "pre-0.6 (no shards)" in result.summary


@pytest.mark.parametrize(
    ("memlock", "open_fds", "status", "expected"),
    [
        ("8388608", 40, Status.WARN, "may lock only 8 MiB"),
        ("unlimited", 850, Status.WARN, "850 of 1000 files open (85%"),
        ("unlimited", 950, Status.FAIL, "950 of 1000 files open (95%"),
        ("134217728", 100, Status.PASS, ""),  # 128 MiB: large enough
    ],
)
def test_iggy_process_memlock_and_fds(
    tmp_path: Path, node: Path, memlock: str, open_fds: int, status: Status, expected: str
) -> None:
    limits = limits_text(nofile="1000", memlock=memlock)
    broker_tree(node, limits=limits, fds=open_fds, kernel="5.10.0-28-amd64")
    result = run(tmp_path, node)
    assert result.status == status
    if expected:
        assert expected in result.summary
        remedy = result.findings[0].remediation
        assert ("LimitMEMLOCK=infinity" if "lock" in expected else "LimitNOFILE=65536") in remedy


@pytest.mark.parametrize(
    ("kernel", "says"),
    [
        ("6.1.0-18-amd64", "kernel 6.1 charges io_uring rings to the memory cgroup"),
        ("5.12.0", "kernel 5.12 charges io_uring rings"),
        (None, "the kernel version could not be read"),
        ("\u00b2.1", "the kernel version could not be read"),
    ],
)
def test_iggy_process_memlock_is_moot_from_kernel_5_12(
    tmp_path: Path, node: Path, kernel: str | None, says: str
) -> None:
    # Docker's and systemd's stock 8 MiB: on 5.12+ the rings are charged to the memory
    # cgroup, and a 0.6+ broker (5.19+) that runs shards has created its rings already.
    broker_tree(node, limits=limits_text(memlock="8388608"), kernel=kernel)
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    [note] = by_severity(result, Severity.INFO)
    assert "may lock only 8 MiB" in note and says in note


def test_iggy_process_pool_above_the_memory_is_a_note_without_evidence(
    tmp_path: Path, node: Path
) -> None:
    # The default 4 GiB pool in a 2 Gi pod, 1 GiB resident: the pool is lazy and a soft cap.
    broker_tree(node)
    cgroup(node, memory_max=str(2 * GIB))
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    [note] = result.findings
    assert note.severity == Severity.INFO
    assert "`[system.memory_pool] size` 4.0 GiB (config /etc/iggy/server.toml) is larger " in (
        note.message
    )
    assert "than its cgroup memory limit 2.0 GiB (memory.max at /sys/fs/cgroup/" in note.message
    assert "fills lazily" in note.message and "1.0 GiB resident now" in note.message
    assert note.remediation.startswith("Size the pool below the memory the broker may use")
    assert result.data["memory_limit_bytes"] == 2 * GIB
    assert result.data["memory_oom_events"] == 0

    # A limit above the pool says nothing; a 4 GB VM (less RAM than the pool) is a note.
    cgroup(node, memory_max=str(6 * GIB))
    assert run(tmp_path, node).findings == []
    small = broker_tree(tmp_path / "small", mem_total_kib=2 * 1024 * 1024)
    result = run(tmp_path, small)
    assert result.status == Status.PASS
    assert "larger than the node's 2.0 GiB of memory" in by_severity(result, Severity.INFO)[0]


@pytest.mark.parametrize(
    ("rss_gib", "ooms", "mem_total_gib", "says"),
    [
        (1.9, 0, 16, "it holds 1.9 GiB resident (95% of it)"),
        (1.0, 3, 16, "the cgroup counted 3 OOM events"),
        (1.9, 0, 2, "it holds 1.9 GiB resident (95% of it)"),  # no cgroup limit: the RAM
    ],
)
def test_iggy_process_pool_above_the_memory_warns_with_evidence(
    tmp_path: Path, node: Path, rss_gib: float, ooms: int, mem_total_gib: int, says: str
) -> None:
    broker_tree(node, rss_kib=int(rss_gib * 1024 * 1024), mem_total_kib=mem_total_gib * 1024**2)
    if mem_total_gib == 16:
        cgroup(node, memory_max=str(2 * GIB), ooms=ooms)
    result = run(tmp_path, node)
    assert result.status == Status.WARN, result.findings
    [warn] = by_severity(result, Severity.WARN)
    assert "is running out of" in warn and says in warn
    assert "a busy broker will be OOM-killed" in warn
    assert "Size the pool below" in result.findings[0].remediation


def test_iggy_process_pool_from_the_environment_and_disabled(tmp_path: Path, node: Path) -> None:
    # IGGY_SYSTEM_MEMORY_POOL_SIZE overrides the file, as Iggy's env provider does.
    broker_tree(node, environ="IGGY_SYSTEM_MEMORY_POOL_SIZE=1 GiB\0")
    cgroup(node, memory_max=str(2 * GIB))
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["memory_pool_bytes"] == GIB
    assert result.data["memory_pool_source"] == "IGGY_SYSTEM_MEMORY_POOL_SIZE"
    # RSS far over a disabled pool says nothing; over an enabled one, a note.
    off = broker_tree(
        tmp_path / "off",
        config=CONFIG.replace("enabled = true", "enabled = false"),
        rss_kib=8 * 1024 * 1024,
    )
    assert run(tmp_path, off).findings == []
    big = broker_tree(tmp_path / "big", rss_kib=8 * 1024 * 1024)
    result = run(tmp_path, big)
    assert result.status == Status.PASS
    assert by_severity(result, Severity.INFO) == [
        "iggy-server (pid 812) holds 8.0 GiB resident, more than its 4.0 GiB memory pool plus 50%"
    ]


def test_iggy_process_pool_size_as_bytes_or_garbage(tmp_path: Path, node: Path) -> None:
    broker_tree(node, config=CONFIG.replace('"4 GiB"', str(8 * GIB)))
    cgroup(node, memory_max=str(6 * GIB))
    result = run(tmp_path, node)
    assert result.status == Status.PASS and result.data["memory_pool_bytes"] == 8 * GIB
    assert "8.0 GiB" in by_severity(result, Severity.INFO)[0]
    garbage = broker_tree(tmp_path / "garbage", config=CONFIG.replace('"4 GiB"', '"lots"'))
    cgroup(garbage, memory_max=str(GIB))
    result = run(tmp_path, garbage)
    assert result.status == Status.PASS and result.data["memory_pool_bytes"] is None
    broken = broker_tree(tmp_path / "broken", config="[system.memory_pool\nsize = ")
    cgroup(broken, memory_max=str(GIB))
    result = run(tmp_path, broken)
    assert result.status == Status.PASS and result.data["memory_pool_enabled"] is None
    assert result.data["cpu_allocation_source"] == (
        "Iggy's default since 0.7 (the config could not be read)"
    )


def test_iggy_process_defaults_without_a_config(tmp_path: Path, node: Path) -> None:
    broker_tree(node, config=None)
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["cpu_allocation"] == "numa:auto"
    assert result.data["cpu_allocation_source"] == "Iggy's default since 0.7"
    assert result.data["memory_pool_bytes"] == 4 * GIB
    assert result.data["memory_pool_source"] == "Iggy's default"


def test_iggy_process_config_drift_and_invalid_allocation(tmp_path: Path, node: Path) -> None:
    broker_tree(node, config=CONFIG.replace('"all"', "2"))
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    [drift] = by_severity(result, Severity.INFO)
    assert "starts 2 shards here, but iggy-server (pid 812) runs 4" in drift

    bad = broker_tree(tmp_path / "bad", config=CONFIG.replace('"all"', '"half"'))
    result = run(tmp_path, bad)
    assert result.status == Status.WARN
    assert "`cpu_allocation = half`" in result.summary and "will not start again" in result.summary


def test_iggy_process_notes_recent_start_and_restarts(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker_tree(node, up_s=600)
    (node / "run/systemd/system").mkdir(parents=True)
    show = "LoadState=loaded\nMainPID=812\nNRestarts=2\nActiveEnterTimestamp=x\n"
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "systemctl": [
                (("MainPID", "iggy-server.service"), "MainPID=812\n", 0),
                ((",".join(UNIT_PROPS), "iggy-server.service"), show, 0),
            ]
        },
    )
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    notes = by_severity(result, Severity.INFO)
    assert notes == [
        "iggy-server (pid 812) started 10 min ago",
        "systemd restarted iggy-server.service automatically 2 times since it was last "
        "started by hand",
    ]
    assert result.data["found_by"] == "systemd MainPID of iggy-server.service"
    assert result.data["restarts"] == 2
    assert (tmp_path / "artifacts/unit.txt").is_file()

    # One `systemctl show` helper reads both; digits other than ASCII are no numbers.
    odd = show.replace("=812", "=\u00b2").replace("=2", "=\u00b2")
    fake_tools(
        tmp_path,
        monkeypatch,
        {"systemctl": [(("MainPID", "iggy-server.service"), "MainPID=\u00b2\n", 0), ((), odd, 0)]},
    )
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["found_by"] == "process name iggy-server" and result.data["restarts"] is None


def test_iggy_process_skipped_without_iggy(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"proc/1/stat": stat_line(1, "init"), "proc/1/comm": "init\n"})
    result = run(tmp_path, node)
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("no Iggy broker found on this node: looked for")
    assert "iggy-server" in result.summary

    write_tree(node, {"etc/iggy/server.toml": CONFIG})
    result = run(tmp_path, node)
    assert result.status == Status.SKIPPED
    assert "no iggy-server process runs" in result.summary
    assert "/etc/iggy/server.toml" in result.summary


# -- bad input ---------------------------------------------------------------------------


def test_iggy_process_garbage_proc_files_are_unknowns(tmp_path: Path, node: Path) -> None:
    threads = {"iggy-server": "zz", "shard-0": "0-99999999", "shard-1": "garbage"}
    broker_tree(node, threads=threads, affinity="nonsense", limits="not limits\n")
    (node / f"proc/{PID}/status").write_text("VmRSS:\tlots kB\n\0\0\0")
    write_tree(node, {"proc/uptime": "soon\n", "proc/meminfo": "MemTotal: ?\n"})
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    data = result.data
    assert data["shards"] == 2 and data["affinity"] is None and data["rss_bytes"] is None
    assert data["memlock_soft_bytes"] is None and data["uptime_s"] is None
    assert [r["cpus"] for r in data["shard_threads"]] == [None, None]


def test_iggy_process_stops_reading_threads_at_the_deadline(tmp_path: Path, node: Path) -> None:
    threads = {f"shard-{i}": str(i % 4) for i in range(50)}
    broker_tree(node, threads=threads)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=THRESHOLDS, seconds=0.5)
    result = iggy_process.run(ctx)
    assert result.data["threads_read"] == 0 and result.data["threads"] == 50
    assert any("read 0 of 50 threads" in m for m in by_severity(result, Severity.INFO))


def test_iggy_process_unreadable_fds_are_a_note(tmp_path: Path, node: Path) -> None:
    broker_tree(node, fds=0)
    (node / f"proc/{PID}/fd").rmdir()
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    assert any(f"cannot read /proc/{PID}/fd" in m for m in by_severity(result, Severity.INFO))


# -- a real process ------------------------------------------------------------------------

#: A process that names itself iggy-server and runs one thread per allowed CPU, each
#: named shard-N (prctl PR_SET_NAME) and pinned to its CPU, like Iggy 0.6+.
SHARDED_CHILD = r"""
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def name(text):
    libc.prctl(15, text.encode(), 0, 0, 0)  # PR_SET_NAME: the calling thread's comm
cpus = sorted(os.sched_getaffinity(0))
ready = threading.Barrier(len(cpus) + 1)
stop = threading.Event()
def shard(n, cpu):
    name(f"shard-{n}")
    os.sched_setaffinity(0, {cpu})  # 0: the calling thread
    ready.wait()
    stop.wait()
for n, cpu in enumerate(cpus):
    threading.Thread(target=shard, args=(n, cpu), daemon=True).start()
ready.wait()
name("iggy-server")
print(len(cpus), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def sharded_child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A running SHARDED_CHILD with its config in its cwd, and its number of shards."""
    config = tmp_path / "server.toml"
    config.write_text(CONFIG.replace("enabled = true", "enabled = false"))
    env = {"PATH": os.environ.get("PATH", ""), "IGGY_CONFIG_PATH": str(config)}
    child = subprocess.Popen(
        [sys.executable, "-c", SHARDED_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert child.stdout is not None
        shards = int(child.stdout.readline())
        yield child, shards
    finally:
        child.kill()
        child.wait(timeout=10)


#: The test's broker unit; a fake systemctl names the child as its MainPID, so the check
#: looks at this test's child even while another run's child (also an iggy-server) lives.
TEST_UNIT = "snapshot-agent-test-iggy.service"
#: Thresholds this machine's own limits and CPU quota cannot trip: the live tests are about
#: reading real shard threads, not about the machine they run on.
LIVE_THRESHOLDS = {
    "warn_shards_per_core": 1000.0,
    "fail_shards_per_core": 2000.0,
    "warn_memlock_mib_below": 0,
}


def systemd_naming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: int) -> Path:
    """A /run root saying systemd is PID 1, and a systemctl naming `pid` TEST_UNIT's MainPID."""
    run_root = tmp_path / "run"
    (run_root / "systemd/system").mkdir(parents=True)
    show = f"LoadState=loaded\nMainPID={pid}\nNRestarts=0\nActiveEnterTimestamp=x\n"
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "systemctl": [
                (("MainPID", TEST_UNIT), f"MainPID={pid}\n", 0),
                ((",".join(UNIT_PROPS), TEST_UNIT), show, 0),
            ]
        },
    )
    return run_root


LiveBroker = tuple[subprocess.Popen[str], int, Path]


@pytest.fixture
def live_broker(
    tmp_path: Path,
    sharded_child: tuple[subprocess.Popen[str], int],
    monkeypatch: pytest.MonkeyPatch,
) -> LiveBroker:
    """The sharded child, its number of shards, and the /run root naming it TEST_UNIT's."""
    child, shards = sharded_child
    return child, shards, systemd_naming(tmp_path, monkeypatch, child.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc and prctl")
def test_iggy_process_on_a_real_sharded_process(tmp_path: Path, live_broker: LiveBroker) -> None:
    child, shards, run_root = live_broker
    config = Config(
        checks=ChecksConfig(roots=RootsConfig(run=str(run_root))),
        iggy=AgentIggyConfig(service=TEST_UNIT),
    )
    ctx = make_context(tmp_path, config=config, thresholds=THRESHOLDS | LIVE_THRESHOLDS)
    result = iggy_process.run(ctx)
    assert result.status == Status.PASS, result.findings
    data = result.data
    assert data["pid"] == child.pid and data["found_by"] == f"systemd MainPID of {TEST_UNIT}"
    assert data["generation"] == "sharded" and data["shards"] == shards
    pinned = [r["cpus"] for r in data["shard_threads"]]
    assert pinned == [str(cpu) for cpu in sorted(os.sched_getaffinity(0))]
    assert data["cpu_allocation"] == "all"
    assert data["cpu_allocation_source"] == f"config {tmp_path / 'server.toml'}"
    assert data["open_fds"] is not None and data["uptime_s"] is not None
    assert data["restarts"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc and prctl")
def test_iggy_process_through_the_real_cli(tmp_path: Path, live_broker: LiveBroker) -> None:
    child, shards, run_root = live_broker
    thresholds = ", ".join(f"{k}: {v}" for k, v in LIVE_THRESHOLDS.items())
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"iggy: {{service: {TEST_UNIT}}}\n"
        "checks:\n"
        f"  roots: {{run: {run_root}}}\n"
        f"  thresholds: {{iggy.process: {{{thresholds}}}}}\n"
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "iggy.process", "-q")
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        report = json.loads(zf.read("report.json"))
    [record] = [c for c in report["checks"] if c["id"] == "iggy.process"]
    assert record["status"] == "pass", record
    assert record["data"]["pid"] == child.pid and record["data"]["shards"] == shards
    assert record["summary"].startswith(f"iggy-server (pid {child.pid}), {shards} shards")
