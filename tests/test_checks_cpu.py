"""cpu.usage, cpu.pressure and cpu.frequency against fixture node trees."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks import cpu as cpu_mod
from snapshot_agent.checks.cpu import (
    cpu_frequency,
    cpu_pressure,
    cpu_usage,
    format_cpu_ids,
    judge_usage,
    parse_proc_stat,
    parse_psi,
    usage_between,
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
STAT_BEFORE = """\
cpu  14815 645 8666 225929 519 0 67 18 0 0
cpu0 4654 183 3380 117074 27 0 10 5 0 0
cpu1 10160 461 5286 108855 491 0 57 12 0 0
intr 362028 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 639965
btime 1795442656
processes 16534
procs_running 12
procs_blocked 0
softirq 264068 0 35318 12 3827 88135 0 2 58765 0 78009
"""


def stat_after(cpu0: tuple[int, ...], cpu1: tuple[int, ...]) -> str:
    """STAT_BEFORE advanced by per-field tick deltas for each core."""
    base0 = (4654, 183, 3380, 117074, 27, 0, 10, 5)
    base1 = (10160, 461, 5286, 108855, 491, 0, 57, 12)
    c0 = [b + d for b, d in zip(base0, cpu0, strict=True)]
    c1 = [b + d for b, d in zip(base1, cpu1, strict=True)]
    base = (14815, 645, 8666, 225929, 519, 0, 67, 18)
    total = [t + a + b for t, a, b in zip(base, cpu0, cpu1, strict=True)]

    def line(name: str, values: list[int]) -> str:
        """One cpu line with zero guest columns."""
        return name + " " + " ".join(map(str, values)) + " 0 0\n"

    return line("cpu ", total) + line("cpu0", c0) + line("cpu1", c1) + "intr 1 0\nctxt 2\n"


def usage(cpu0: tuple[int, ...], cpu1: tuple[int, ...]) -> Result:
    """Judge a 50-tick sample per core with the declared thresholds."""
    facts = usage_between(
        parse_proc_stat(STAT_BEFORE), parse_proc_stat(stat_after(cpu0, cpu1)), 0.5
    )
    assert facts is not None
    return judge_usage(facts, cpu_usage.thresholds)


def test_parse_proc_stat_reads_cpu_lines_only() -> None:
    parsed = parse_proc_stat(STAT_BEFORE + "cpu2 garbage\ncpu3 1 2\n")
    assert set(parsed) == {"cpu", "cpu0", "cpu1"}
    assert parsed["cpu1"].iowait == 491 and parsed["cpu"].steal == 18


def test_cpu_usage_pass_excludes_niced_time() -> None:
    # cpu0: 5 user, 20 nice (this agent), 25 idle; cpu1: 2 system, 48 idle.
    result = usage((5, 20, 0, 25, 0, 0, 0, 0), (0, 0, 2, 48, 0, 0, 0, 0))
    assert result.status == Status.PASS, result.summary
    overall = result.data["overall"]
    assert overall["busy_pct"] == 7.0 and overall["nice_pct"] == 20.0
    assert result.data["hottest"][0] == "cpu0"
    assert "busy 7%" in result.summary and "hottest cpu0 10%" in result.summary


def test_cpu_usage_warns_on_one_saturated_core() -> None:
    result = usage((50, 0, 0, 0, 0, 0, 0, 0), (2, 0, 1, 47, 0, 0, 0, 0))
    assert result.status == Status.WARN
    [finding] = result.findings
    assert finding.subject == "cpu0" and "cpu0 100%" in finding.message
    assert "shard" in finding.remediation


def test_cpu_usage_fails_when_all_cores_busy() -> None:
    result = usage((40, 0, 10, 0, 0, 0, 0, 0), (45, 0, 5, 0, 0, 0, 0, 0))
    assert result.status == Status.FAIL
    assert severities(result)[0] == Severity.FAIL
    assert "100% busy overall" in result.findings[0].message


@pytest.mark.parametrize(
    ("delta", "status", "word"),
    [
        ((5, 0, 5, 30, 10, 0, 0, 0), Status.WARN, "disk I/O"),  # iowait 10%
        ((5, 0, 5, 20, 20, 0, 0, 0), Status.FAIL, "disk I/O"),  # iowait 20%+20% -> 40%
        ((5, 0, 5, 36, 0, 0, 0, 4), Status.WARN, "stole"),  # steal 8%
        ((5, 0, 5, 30, 0, 0, 0, 10), Status.FAIL, "stole"),  # steal 20%
    ],
)
def test_cpu_usage_iowait_and_steal(delta: tuple[int, ...], status: Status, word: str) -> None:
    result = usage(delta, delta)
    assert result.status == status
    assert word in result.summary
    assert result.findings[0].remediation


def test_cpu_usage_counters_going_backwards_are_clamped() -> None:
    before = parse_proc_stat("cpu 100 0 100 1000 50 0 0 0\ncpu0 100 0 100 1000 50 0 0 0\n")
    after = parse_proc_stat("cpu 110 0 110 1080 40 0 0 0\ncpu0 110 0 110 1080 40 0 0 0\n")
    facts = usage_between(before, after, 0.5)
    assert facts is not None and facts.overall.iowait == 0.0 and facts.overall.busy == 20.0


def test_cpu_usage_samples_the_node_twice(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_mod, "SAMPLE_S", 0.3)
    write_tree(node, {"proc/stat": STAT_BEFORE})
    later = stat_after((45, 0, 5, 0, 0, 0, 0, 0), (5, 0, 0, 45, 0, 0, 0, 0))
    # The fixture changes while the check sleeps between its two reads.
    timer = threading.Timer(0.1, (node / "proc/stat").write_text, args=(later,))
    timer.start()
    try:
        ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=cpu_usage.thresholds)
        result = cpu_usage.run(ctx)
    finally:
        timer.join()
    assert result.status == Status.WARN  # cpu0 at 100%
    assert result.data["overall"]["busy_pct"] == 55.0
    evidence = (tmp_path / "artifacts/proc-stat-samples.txt").read_text()
    assert "s later ---" in evidence and "intr" not in evidence


def test_cpu_usage_skips_when_no_time_elapsed(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_mod, "SAMPLE_S", 0.01)
    result = run(cpu_usage, tmp_path, node, {"proc/stat": STAT_BEFORE})
    assert result.status == Status.SKIPPED and "no elapsed CPU time" in result.summary


# --- cpu.pressure ----------------------------------------------------------------------

PSI_QUIET = """\
some avg10=0.00 avg60=0.12 avg300=0.05 total=1234567
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def psi(avg10: float, avg60: float, full10: float = 0.0, full60: float = 0.0) -> str:
    """A /proc/pressure file with the given averages."""
    return (
        f"some avg10={avg10:.2f} avg60={avg60:.2f} avg300=1.00 total=29957980\n"
        f"full avg10={full10:.2f} avg60={full60:.2f} avg300=0.00 total=4922707\n"
    )


def pressure_tree(cpu: str = PSI_QUIET, io: str = PSI_QUIET, memory: str = PSI_QUIET) -> dict:
    """The three PSI files."""
    return {"proc/pressure/cpu": cpu, "proc/pressure/io": io, "proc/pressure/memory": memory}


def test_parse_psi() -> None:
    parsed = parse_psi(psi(18.23, 17.07, 0.01, 0.98) + "\nbogus line\n")
    assert parsed["some"].avg10 == 18.23 and parsed["full"].avg60 == 0.98
    assert parsed["some"].total_us == 29957980 and "bogus" not in parsed


def test_cpu_pressure_pass(tmp_path: Path, node: Path) -> None:
    result = run(cpu_pressure, tmp_path, node, pressure_tree())
    assert result.status == Status.PASS
    assert result.summary.startswith("PSI avg10/avg60: cpu some 0/0.12%")
    assert (tmp_path / "artifacts/pressure-io.txt").read_text() == PSI_QUIET


def test_cpu_pressure_warns_on_a_spike_only(tmp_path: Path, node: Path) -> None:
    # 80% over 10 s but only 15% over a minute: a spike warns, it does not fail.
    result = run(cpu_pressure, tmp_path, node, pressure_tree(cpu=psi(80, 15)))
    assert result.status == Status.WARN
    assert result.findings[0].subject == "/proc/pressure/cpu"


def test_cpu_pressure_fails_on_sustained_memory_stalls(tmp_path: Path, node: Path) -> None:
    result = run(cpu_pressure, tmp_path, node, pressure_tree(memory=psi(30, 25, 12, 11)))
    assert result.status == Status.FAIL
    assert severities(result) == [Severity.FAIL, Severity.FAIL]  # some and full
    assert "swappiness" in result.findings[0].remediation


def test_cpu_pressure_io_full_warns(tmp_path: Path, node: Path) -> None:
    result = run(cpu_pressure, tmp_path, node, pressure_tree(io=psi(12, 12, 11, 11)))
    assert result.status == Status.WARN
    assert "every non-idle task" in result.summary


def test_cpu_pressure_cpu_full_is_not_judged(tmp_path: Path, node: Path) -> None:
    result = run(cpu_pressure, tmp_path, node, pressure_tree(cpu=psi(1, 1, 99, 99)))
    assert result.status == Status.PASS


def test_cpu_pressure_skips_without_psi(tmp_path: Path, node: Path) -> None:
    result = run(cpu_pressure, tmp_path, node, {"proc/stat": STAT_BEFORE})
    assert result.status == Status.SKIPPED and "CONFIG_PSI" in result.summary
    (node / "proc/pressure").mkdir()
    result = cpu_pressure.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.SKIPPED and "psi=1" in result.summary


# --- cpu.frequency ---------------------------------------------------------------------


def freq_tree(governors: list[str], max_khz: int = 3_500_000) -> dict[str, str]:
    """cpufreq files for one CPU per governor (plus a non-CPU directory and file)."""
    files = {"sys/devices/system/cpu/online": f"0-{len(governors) - 1}\n"}
    for n, governor in enumerate(governors):
        base = f"sys/devices/system/cpu/cpu{n}/cpufreq"
        files |= {
            f"{base}/scaling_governor": governor + "\n",
            f"{base}/scaling_driver": "intel_pstate\n",
            f"{base}/scaling_cur_freq": "2100000\n",
            f"{base}/scaling_max_freq": f"{max_khz}\n",
            f"{base}/cpuinfo_max_freq": "3500000\n",
            f"{base}/energy_performance_preference": "balance_performance\n",
        }
    files["sys/devices/system/cpu/cpuidle/current_driver"] = "intel_idle\n"
    return files


def test_cpu_frequency_pass(tmp_path: Path, node: Path) -> None:
    result = run(cpu_frequency, tmp_path, node, freq_tree(["performance"] * 4))
    assert result.status == Status.PASS
    assert result.summary == "governor performance on CPUs 0-3 (driver intel_pstate)"
    assert result.data["cpus"][0]["hardware_max_mhz"] == 3500


def test_cpu_frequency_warns_on_powersave(tmp_path: Path, node: Path) -> None:
    governors = ["performance", "powersave", "powersave", "performance"] + ["powersave"] * 8
    result = run(cpu_frequency, tmp_path, node, freq_tree(governors))
    assert result.status == Status.WARN
    [finding] = result.findings
    assert "10 of 12 CPUs use the `powersave` governor" in finding.message
    assert "(CPUs 1-2,4-11)" in finding.message
    assert "cpupower frequency-set -g performance" in finding.remediation


def test_cpu_frequency_fails_on_a_capped_clock(tmp_path: Path, node: Path) -> None:
    result = run(cpu_frequency, tmp_path, node, freq_tree(["performance"] * 2, 1_400_000))
    assert result.status == Status.FAIL
    assert "1400 MHz of 3500 MHz, 60% below" in result.summary


def test_cpu_frequency_expected_governor_is_configurable(tmp_path: Path, node: Path) -> None:
    write_tree(node, freq_tree(["schedutil"] * 2))
    thresholds = cpu_frequency.thresholds | {"expected_governor": "schedutil"}
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds)
    assert cpu_frequency.run(ctx).status == Status.PASS


def test_cpu_frequency_skips_without_cpufreq(tmp_path: Path, node: Path) -> None:
    files = {"sys/devices/system/cpu/cpu0/topology/core_id": "0\n"}
    result = run(cpu_frequency, tmp_path, node, files)
    assert result.status == Status.SKIPPED and "VMs" in result.summary


def test_format_cpu_ids() -> None:
    assert format_cpu_ids([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert format_cpu_ids([5]) == "5"
