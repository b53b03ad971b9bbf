"""memory.usage, memory.swap, memory.hugepages and memory.numa against fixture node trees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import cpu as cpu_mod
from snapshot_agent.checks.cpu import (
    parse_proc_stat,
    usage_between,
)
from snapshot_agent.checks.memory import (
    format_kib,
    memory_hugepages,
    memory_numa,
    memory_swap,
    memory_usage,
    parse_meminfo,
    parse_status_swap,
    parse_swaps,
    selected_mode,
)
from snapshot_agent.core.results import Result, Severity, Status

from .conftest import fixture_roots, make_context, write_tree


def run(check: Any, tmp_path: Path, node: Path, files: dict[str, str]) -> Result:
    """Run a check against a fixture tree with its declared thresholds."""
    write_tree(node, files)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=check.thresholds)
    return check.run(ctx)


def severities(result: Result) -> list[Severity]:
    """The severities of a result's findings, in order."""
    return [f.severity for f in result.findings]


# --- cpu.usage -------------------------------------------------------------------------

# Real /proc/stat layout (Linux 6.x): user nice system idle iowait irq softirq steal guest gnice


# --- memory.usage ----------------------------------------------------------------------


def meminfo(
    total: int = 16_000_000,
    available: int | None = 12_000_000,
    dirty: int = 9_704,
    swap_total: int = 0,
    swap_free: int = 0,
    huge: tuple[int, int, int] = (0, 0, 0),
    committed: int = 360_916,
) -> str:
    """A /proc/meminfo in the kernel's layout (values in kB)."""
    lines = [("MemTotal", total), ("MemFree", 2_000_000)]
    if available is not None:
        lines.append(("MemAvailable", available))
    lines += [
        ("Buffers", 175_380),
        ("Cached", 8_000_000),
        ("SwapCached", 0),
        ("Active(file)", 467_908),
        ("SwapTotal", swap_total),
        ("SwapFree", swap_free),
        ("Dirty", dirty),
        ("Writeback", 0),
        ("AnonPages", 3_000_000),
        ("Shmem", 8_856),
        ("Slab", 625_076),
        ("SReclaimable", 581_808),
        ("SUnreclaim", 43_268),
        ("CommitLimit", 8_000_000),
        ("Committed_AS", committed),
        ("AnonHugePages", 0),
    ]
    text = "".join(f"{k + ':':<16}{v:>8} kB\n" for k, v in lines)
    text += "".join(
        f"{k + ':':<16}{v:>8}\n"
        for k, v in zip(("HugePages_Total", "HugePages_Free", "HugePages_Rsvd"), huge, strict=True)
    )
    text += "HugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:               0 kB\n"
    return text


def test_parse_meminfo_and_format() -> None:
    parsed = parse_meminfo(meminfo() + "Node 0 MemFree:  5 kB\ngarbage\n")
    assert parsed["MemTotal"] == 16_000_000 and parsed["HugePages_Total"] == 0
    assert parsed["Active(file)"] == 467_908 and parsed["MemFree"] == 5
    assert format_kib(512) == "512 KiB" and format_kib(24_684_092) == "23.5 GiB"


@pytest.mark.parametrize(
    ("available", "status"),
    [(12_000_000, Status.PASS), (2_000_000, Status.WARN), (400_000, Status.FAIL)],
)
def test_memory_usage_available(tmp_path: Path, node: Path, available: int, status: Status) -> None:
    result = run(memory_usage, tmp_path, node, {"proc/meminfo": meminfo(available=available)})
    assert result.status == status
    assert result.data["available_kib"] == available
    if status != Status.PASS:
        assert "memory is available" in result.summary
        assert "memory_pool" in result.findings[0].remediation
    else:
        assert result.summary.startswith("11.4 GiB of 15.3 GiB available (75%)")
    assert any(row["field"] == "Committed_AS" for row in result.data["breakdown"])


@pytest.mark.parametrize(
    ("available", "status"),
    [(2_410_000, Status.PASS), (2_400_000, Status.WARN), (800_000, Status.FAIL)],
)
def test_memory_usage_available_reaching_a_threshold_counts(
    tmp_path: Path, node: Path, available: int, status: Status
) -> None:
    # Lower is worse: exactly 15% available warns and exactly 5% fails (the band's rule).
    result = run(memory_usage, tmp_path, node, {"proc/meminfo": meminfo(available=available)})
    assert result.status == status


@pytest.mark.parametrize(("dirty", "status"), [(2_000_000, Status.WARN), (3_500_000, Status.FAIL)])
def test_memory_usage_dirty(tmp_path: Path, node: Path, dirty: int, status: Status) -> None:
    files = {"proc/meminfo": meminfo(dirty=dirty), "proc/sys/vm/dirty_ratio": "20\n"}
    result = run(memory_usage, tmp_path, node, files)
    assert result.status == status
    assert "vm.dirty_ratio 20%" in result.findings[0].remediation
    assert "vm.dirty_bytes = 1073741824" in result.findings[0].remediation


def test_memory_usage_commit_limit_only_in_strict_mode(tmp_path: Path, node: Path) -> None:
    files = {"proc/meminfo": meminfo(committed=7_900_000), "proc/sys/vm/overcommit_memory": "0\n"}
    assert run(memory_usage, tmp_path, node, files).status == Status.PASS
    (node / "proc/sys/vm/overcommit_memory").write_text("2\n")
    result = memory_usage.run(
        make_context(tmp_path, roots=fixture_roots(node), thresholds=memory_usage.thresholds)
    )
    assert result.status == Status.FAIL and "strict overcommit" in result.summary


def test_memory_usage_estimates_on_old_kernels(tmp_path: Path, node: Path) -> None:
    result = run(memory_usage, tmp_path, node, {"proc/meminfo": meminfo(available=None)})
    assert result.data["available_estimated"] is True and "estimated" in result.summary


# --- memory.swap -----------------------------------------------------------------------

SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/dm-1                               partition\t8388604\t\t0\t\t-2
/swapfile                               file\t\t2097148\t\t524288\t\t-3
"""


def status_file(name: str, swap_kib: int | None) -> str:
    """A trimmed /proc/PID/status (kernel threads have no VmSwap line)."""
    text = f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nVmRSS:\t    1804 kB\n"
    if swap_kib is not None:
        text += f"VmSwap:\t{swap_kib:>8} kB\n"
    return text + "Threads:\t1\n"


def test_parse_swaps_and_status() -> None:
    first, second = parse_swaps(SWAPS)
    assert (first.name, first.kind, first.size_kib, first.priority) == (
        "/dev/dm-1",
        "partition",
        8388604,
        -2,
    )
    assert second.used_kib == 524288
    assert parse_status_swap(status_file("iggy-server", 2048)) == ("iggy-server", 2048)
    assert parse_status_swap(status_file("kworker/0:1", None)) is None


def test_memory_swap_without_swap_passes(tmp_path: Path, node: Path) -> None:
    files = {
        "proc/meminfo": meminfo(),
        "proc/swaps": SWAPS.splitlines()[0] + "\n",
        "proc/sys/vm/swappiness": "60\n",
    }
    result = run(memory_swap, tmp_path, node, files)
    assert result.status == Status.PASS
    assert result.summary == "no swap configured (vm.swappiness 60 has no effect without swap)"


def test_memory_swap_pass_with_low_swappiness(tmp_path: Path, node: Path) -> None:
    files = {
        "proc/meminfo": meminfo(swap_total=10_485_752, swap_free=10_485_752),
        "proc/swaps": SWAPS.replace("524288", "0"),
        "proc/sys/vm/swappiness": "10\n",
    }
    result = run(memory_swap, tmp_path, node, files)
    assert result.status == Status.PASS
    assert result.summary == "0 KiB of 10.0 GiB swap in use (0%) on 2 device(s); vm.swappiness 10"


def test_memory_swap_warns_on_swappiness(tmp_path: Path, node: Path) -> None:
    files = {
        "proc/meminfo": meminfo(swap_total=10_485_752, swap_free=10_485_752),
        "proc/sys/vm/swappiness": "60\n",
    }
    result = run(memory_swap, tmp_path, node, files)
    assert result.status == Status.WARN
    [finding] = result.findings
    assert "sysctl -w vm.swappiness=10" in finding.remediation
    assert "`vm.swappiness = 10` to /etc/sysctl.d/" in finding.remediation


@pytest.mark.parametrize(("free", "status"), [(8_000_000, Status.WARN), (4_000_000, Status.FAIL)])
def test_memory_swap_in_use_names_the_users(
    tmp_path: Path, node: Path, free: int, status: Status
) -> None:
    files = {
        "proc/meminfo": meminfo(swap_total=10_485_752, swap_free=free),
        "proc/swaps": SWAPS,
        "proc/sys/vm/swappiness": "10\n",
        "proc/vmstat": "nr_free_pages 1\npswpin 1234\npswpout 56789\n",
        "proc/4242/status": status_file("iggy-server", 1_048_576),
        "proc/77/status": status_file("java", 2_048),
        "proc/2/status": status_file("kthreadd", None),
        "proc/100/status": status_file("sshd", 0),
    }
    result = run(memory_swap, tmp_path, node, files)
    assert result.status == status
    assert [u["pid"] for u in result.data["top_users"]] == [4242, 77]
    assert "most swapped: iggy-server (4242) 1.0 GiB" in result.summary
    assert result.data["pages_swapped_out_since_boot"] == 56789


# --- memory.hugepages ------------------------------------------------------------------

THP = "sys/kernel/mm/transparent_hugepage"


def thp_tree(enabled: str, defrag: str, huge: tuple[int, int, int] = (0, 0, 0)) -> dict:
    """THP sysfs files and a matching /proc/meminfo."""
    return {
        f"{THP}/enabled": enabled + "\n",
        f"{THP}/defrag": defrag + "\n",
        "proc/meminfo": meminfo(huge=huge),
    }


def test_selected_mode() -> None:
    assert selected_mode("always defer defer+madvise [madvise] never\n") == "madvise"
    assert selected_mode("never") == "never" and selected_mode(None) is None


def test_memory_hugepages_pass(tmp_path: Path, node: Path) -> None:
    tree = thp_tree("always [madvise] never", "always defer defer+madvise [madvise] never")
    result = run(memory_hugepages, tmp_path, node, tree)
    assert result.status == Status.PASS
    assert result.summary.startswith("THP madvise (defrag madvise); no HugeTLB pool")


def test_memory_hugepages_warns_on_always_always(tmp_path: Path, node: Path) -> None:
    tree = thp_tree("[always] madvise never", "[always] defer defer+madvise madvise never")
    result = run(memory_hugepages, tmp_path, node, tree)
    assert result.status == Status.WARN
    assert "compaction" in result.summary
    assert "madvise > /sys/kernel/mm/transparent_hugepage/defrag" in (
        result.findings[0].remediation
    )


def test_memory_hugepages_always_with_deferred_defrag_is_info(tmp_path: Path, node: Path) -> None:
    tree = thp_tree("[always] madvise never", "always defer [defer+madvise] madvise never")
    result = run(memory_hugepages, tmp_path, node, tree)
    assert result.status == Status.PASS and severities(result) == [Severity.INFO]


@pytest.mark.parametrize(
    ("huge", "status"),
    [
        ((1024, 1024, 1024), Status.PASS),  # 2 GiB pool, all reserved by a mapping
        ((1024, 1000, 0), Status.WARN),  # ~2 GiB idle of 15 GiB
        ((4096, 4096, 0), Status.FAIL),  # 8 GiB idle: half the RAM
    ],
)
def test_memory_hugepages_unused_pool(
    tmp_path: Path, node: Path, huge: tuple[int, int, int], status: Status
) -> None:
    tree = thp_tree("always madvise [never]", "always defer defer+madvise madvise [never]", huge)
    result = run(memory_hugepages, tmp_path, node, tree)
    assert result.status == status
    if status != Status.PASS:
        assert f"sysctl -w vm.nr_hugepages={huge[0] - huge[1]}" in result.findings[0].remediation


def test_memory_hugepages_without_thp(tmp_path: Path, node: Path) -> None:
    result = run(memory_hugepages, tmp_path, node, {"proc/meminfo": meminfo()})
    assert result.status == Status.PASS and result.summary.startswith("THP not available")


# --- memory.numa -----------------------------------------------------------------------


def node_meminfo(n: int, total: int, free: int, file: int = 0) -> str:
    """A /sys/devices/system/node/nodeN/meminfo in the kernel's layout."""
    rows = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemUsed", total - free),
        ("Active(file)", file // 2),
        ("Inactive(file)", file - file // 2),
        ("SReclaimable", 0),
    ]
    return "".join(f"Node {n} {k + ':':<16}{v:>8} kB\n" for k, v in rows)


def numa_tree(nodes: list[tuple[str, int, int, int]], miss: int = 0) -> dict[str, str]:
    """Node directories from (cpulist, total, free, file) tuples."""
    files = {"sys/devices/system/node/online": f"0-{len(nodes) - 1}\n"}
    for n, (cpus, total, free, file) in enumerate(nodes):
        base = f"sys/devices/system/node/node{n}"
        files |= {
            f"{base}/cpulist": cpus + "\n",
            f"{base}/meminfo": node_meminfo(n, total, free, file),
            f"{base}/numastat": f"numa_hit 1000000\nnuma_miss {miss}\nnuma_foreign 0\n",
        }
    files["proc/sys/vm/zone_reclaim_mode"] = "0\n"
    return files


GIB = 1024 * 1024


def test_memory_numa_single_node(tmp_path: Path, node: Path) -> None:
    result = run(memory_numa, tmp_path, node, numa_tree([("0-1", 4 * GIB, 3 * GIB, 0)]))
    assert result.status == Status.PASS
    assert result.summary.startswith("not a NUMA machine: 1 node with CPUs 0-1 and 4.0 GiB")
    assert result.data["numa"] is False


def test_memory_numa_without_node_directory(tmp_path: Path, node: Path) -> None:
    result = run(memory_numa, tmp_path, node, {"proc/meminfo": meminfo()})
    assert result.status == Status.PASS and "no NUMA support" in result.summary


def test_memory_numa_balanced(tmp_path: Path, node: Path) -> None:
    tree = numa_tree([("0-7", 64 * GIB, 2 * GIB, 40 * GIB), ("8-15", 64 * GIB, 3 * GIB, 41 * GIB)])
    result = run(memory_numa, tmp_path, node, tree)
    assert result.status == Status.PASS
    assert result.summary.startswith("2 NUMA nodes: node0 CPUs 0-7, 65.6% of 64.0 GiB")


@pytest.mark.parametrize(("free_gib", "status"), [(4, Status.WARN), (1, Status.FAIL)])
def test_memory_numa_imbalance(tmp_path: Path, node: Path, free_gib: int, status: Status) -> None:
    tree = numa_tree([("0-7", 64 * GIB, 40 * GIB, 0), ("8-15", 64 * GIB, free_gib * GIB, 0)])
    result = run(memory_numa, tmp_path, node, tree)
    assert result.status == status
    [finding] = result.findings
    assert finding.subject == "/sys/devices/system/node/node1"
    assert "while node 0 has 62.5%" in finding.message and "numa:auto" in finding.remediation


@pytest.mark.parametrize(("free_gib", "status"), [(10, Status.WARN), (3, Status.FAIL)])
def test_memory_numa_reaching_a_threshold_counts(
    tmp_path: Path, node: Path, free_gib: int, status: Status
) -> None:
    # Lower is worse: a node at exactly 10% available warns, at exactly 3% fails.
    tree = numa_tree([("0-7", 100 * GIB, 40 * GIB, 0), ("8-15", 100 * GIB, free_gib * GIB, 0)])
    result = run(memory_numa, tmp_path, node, tree)
    assert result.status == status
    assert result.data["nodes"][1]["available_pct"] == float(free_gib)


def test_memory_numa_all_nodes_low_is_not_imbalance(tmp_path: Path, node: Path) -> None:
    tree = numa_tree([("0-7", 64 * GIB, GIB, 0), ("8-15", 64 * GIB, GIB, 0)])
    assert run(memory_numa, tmp_path, node, tree).status == Status.PASS


def test_memory_numa_zone_reclaim_and_misses(tmp_path: Path, node: Path) -> None:
    tree = numa_tree([("0-7", 64 * GIB, 40 * GIB, 0), ("8-15", 64 * GIB, 40 * GIB, 0)], 300_000)
    tree["proc/sys/vm/zone_reclaim_mode"] = "1\n"
    result = run(memory_numa, tmp_path, node, tree)
    assert result.status == Status.WARN
    assert severities(result) == [Severity.WARN, Severity.WARN]
    assert "sysctl -w vm.zone_reclaim_mode=0" in result.findings[0].remediation
    assert result.data["miss_pct_since_boot"] == 23.1


def _stat_line(
    pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0, nice: int = 0
) -> str:
    """A /proc/<pid>/stat line with the fields own_ticks reads."""
    return (
        f"{pid} (python3) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} "
        f"{cutime} {cstime} 30 {nice} 1 0 500 1000000 300 18446744073709551615 0 0 0 0\n"
    )


def test_own_ticks_sums_the_agent_tree_including_reaped_children(
    tmp_path: Path, node: Path
) -> None:
    write_tree(
        node,
        {
            "proc/100/stat": _stat_line(100, 1, 50, 20, cutime=7, cstime=3, nice=10),
            "proc/101/stat": _stat_line(101, 100, 5, 4, nice=10),  # a running check
            "proc/102/stat": _stat_line(102, 101, 2, 1, nice=10),  # a command it started
            "proc/200/stat": _stat_line(200, 1, 900, 900),  # the broker: not ours
        },
    )
    (node / "proc/self").symlink_to("100")
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    assert cpu_mod.own_ticks(ctx) == (50 + 7 + 5 + 2, 20 + 3 + 4 + 1, True)


def test_own_ticks_are_left_out_of_busy() -> None:
    before = parse_proc_stat("cpu  1000 500 800 5000 10 0 0 0\n")
    after = parse_proc_stat("cpu  1010 560 880 5050 10 0 0 0\n")  # 200 ticks elapsed
    plain = usage_between(before, after, 0.5)
    own = cpu_mod.OwnTicks(user=50, system=60, niced=True)
    mine = usage_between(before, after, 0.5, own)
    assert plain is not None and mine is not None
    assert plain.overall.system == 40.0 and plain.overall.nice == 30.0
    assert mine.overall.system == 10.0 and mine.overall.nice == 5.0
    assert mine.overall.agent == 55.0
    assert mine.overall.busy == 15.0  # user 10 + system 20 ticks of 200
    # Never more than was there: the kernel's and our counters are read a moment apart.
    huge = usage_between(before, after, 0.5, cpu_mod.OwnTicks(500, 500, False))
    assert huge is not None and huge.overall.user == 0 and huge.overall.system == 0
