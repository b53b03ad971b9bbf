"""memory.usage, .swap, .hugepages and .numa against free, swapon, lsmem and sysfs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .live import (
    Mismatch,
    agree,
    finding,
    near,
    parse_size,
    pick,
    read,
    run_check,
    settle,
    tool,
)

KIB = 1024
#: How far free memory may move between the check's read and the tool's on a busy machine.
MOVING_BYTES = 256 * 1024**2


def free_b() -> dict[str, dict[str, int]]:
    """`free -b` as {'Mem': {'total':.., 'available':..}, 'Swap': {...}}."""
    lines = tool("free", "-b").splitlines()
    header = lines[0].split()
    out: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        name, *values = line.split()
        out[name.rstrip(":")] = dict(zip(header, map(int, values), strict=False))
    return out


def meminfo() -> dict[str, int]:
    """/proc/meminfo read directly, in KiB."""
    out = {}
    for line in read("/proc/meminfo").splitlines():
        m = re.match(r"^(\S+):\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_memory_usage_matches_free_and_meminfo(tmp_path: Path) -> None:
    """Total and available memory as `free -b` says; the breakdown as /proc/meminfo says."""

    def compare() -> list[Mismatch]:
        data = run_check("memory.usage", tmp_path).data
        mem, info = free_b()["Mem"], meminfo()
        out = []
        total = pick(data, "total_kib", "mem_total_kib")
        if total is None or total * KIB != mem["total"]:
            out.append(Mismatch("total_kib", total, mem["total"] // KIB, "free -b"))
        avail = pick(data, "available_kib", "mem_available_kib")
        if avail is None or not near(avail * KIB, mem["available"], abs_tol=MOVING_BYTES):
            out.append(Mismatch("available_kib", avail, mem["available"] // KIB, "free -b"))
        for row in data.get("breakdown", []):
            field, kib = row["field"], row["kib"]
            theirs = info.get(field)
            stable = field in ("MemTotal", "CommitLimit")
            if theirs is None or not near(
                kib * KIB, theirs * KIB, abs_tol=0 if stable else MOVING_BYTES
            ):
                out.append(Mismatch(f"breakdown[{field}]", kib, theirs, "/proc/meminfo"))
        return out

    agree(settle(compare), "memory.usage")


def test_memory_swap_matches_free_and_swapon(tmp_path: Path) -> None:
    """Swap size and use as `free -b` and `swapon` say; swappiness as `sysctl` says."""

    def compare() -> list[Mismatch]:
        data = run_check("memory.swap", tmp_path).data
        swap = free_b().get("Swap", {"total": 0, "used": 0})
        out = []
        if data["total_kib"] * KIB != swap["total"]:
            out.append(Mismatch("total_kib", data["total_kib"], swap["total"] // KIB, "free -b"))
        if not near(data["used_kib"] * KIB, swap["used"], abs_tol=MOVING_BYTES):
            out.append(Mismatch("used_kib", data["used_kib"], swap["used"] // KIB, "free -b"))
        devices = tool("swapon", "--show=NAME,SIZE", "--bytes", "--noheadings").split()
        names = sorted(devices[0::2])
        ours = sorted(pick(d, "name", "device", "filename") for d in data.get("devices", []))
        if ours != names:
            out.append(Mismatch("devices[].name", ours, names, "swapon --show"))
        swappiness = int(tool("sysctl", "-n", "vm.swappiness"))
        if data.get("swappiness") != swappiness:
            out.append(
                Mismatch("swappiness", data.get("swappiness"), swappiness, "sysctl vm.swappiness")
            )
        return out

    agree(settle(compare), "memory.swap")


def test_memory_hugepages_matches_sysfs_and_meminfo(tmp_path: Path) -> None:
    """THP mode from its sysfs file, the HugeTLB pool from /proc/meminfo."""
    data = run_check("memory.hugepages", tmp_path).data
    out = []
    enabled = read("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = re.search(r"\[(\w+)\]", enabled)
    if mode and data.get("thp_enabled") != mode.group(1):
        out.append(
            Mismatch(
                "thp_enabled",
                data.get("thp_enabled"),
                mode.group(1),
                "/sys/kernel/mm/transparent_hugepage/enabled",
            )
        )
    info = meminfo()
    for key, field in (("hugetlb_total", "HugePages_Total"), ("hugetlb_page_kib", "Hugepagesize")):
        if field in info and data.get(key) != info[field]:
            out.append(Mismatch(key, data.get(key), info[field], "/proc/meminfo"))
    agree(out, "memory.hugepages")


def node_dirs() -> list[Path]:
    """/sys/devices/system/node/node* (skip without NUMA support in the kernel)."""
    base = Path("/sys/devices/system/node")
    nodes = sorted(base.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))
    if not nodes:
        pytest.skip("no /sys/devices/system/node/node* (kernel without NUMA support)")
    return nodes


def lsmem_online_bytes() -> int:
    """Online memory as `lsmem` counts it (memory blocks, before the kernel's reservations)."""
    out = tool("lsmem", "--bytes", "--summary=only")
    m = re.search(r"Total online memory:\s+(\d+)", out)
    if not m:
        pytest.skip(f"cannot read `lsmem --summary=only`: {out.strip()[:100]}")
    return int(m.group(1))


def test_memory_numa_matches_sysfs_and_lsmem(tmp_path: Path) -> None:
    """Nodes and their CPUs as sysfs says; their memory adds up to what the kernel manages."""
    data = run_check("memory.numa", tmp_path).data
    nodes = node_dirs()
    rows = {row["node"]: row for row in data["nodes"]}
    out = []
    if sorted(rows) != [int(p.name[4:]) for p in nodes]:
        out.append(Mismatch("nodes[].node", sorted(rows), [p.name for p in nodes], "ls node*"))
    for path in nodes:
        n = int(path.name[4:])
        cpus = (path / "cpulist").read_text().strip() or "none"
        if n in rows and rows[n]["cpus"] != cpus:
            out.append(Mismatch(f"nodes[{n}].cpus", rows[n]["cpus"], cpus, f"{path}/cpulist"))
    agree(out, "memory.numa")

    # What the kernel manages (MemTotal) is a bit less than the online memory blocks
    # (`lsmem`): firmware and kernel reservations.
    total = meminfo()["MemTotal"] * KIB
    online = lsmem_online_bytes()
    assert 0.8 * online <= total <= online, f"MemTotal {total} vs lsmem online {online}"
    # The nodes' own figures, read directly, may not add up to MemTotal (memory the kernel
    # has not accounted to a node yet): the check must report what sysfs says and say
    # whether it adds up.
    sysfs = sum(node_meminfo_total(p) for p in nodes) * KIB
    reported = sum(parse_size(str(r["total"])) for r in data["nodes"])
    rounding = 0.06 * 1024**3 * len(rows)  # format_kib prints one decimal of GiB
    out = []
    if not near(reported, sysfs, abs_tol=rounding, rel_tol=0.02):
        out.append(Mismatch("nodes[].total (sum)", reported, sysfs, "node*/meminfo MemTotal"))
    if "meminfo_total_kib" in data and data["meminfo_total_kib"] * KIB != total:
        out.append(
            Mismatch("meminfo_total_kib", data["meminfo_total_kib"], total // KIB, "/proc/meminfo")
        )
    agree(out, "memory.numa node memory")
    partial = sysfs < 0.98 * total
    if "node_figures_partial" in data:
        assert data["node_figures_partial"] == partial, (
            f"node_figures_partial is {data['node_figures_partial']}, but the nodes hold "
            f"{sysfs} of MemTotal {total} bytes"
        )
    finding(
        [Mismatch("nodes[].total (sum)", reported, total, "/proc/meminfo MemTotal")]
        if partial and "node_figures_partial" not in data
        else [],
        "FINDING memory.numa: the nodes' memory (sysfs node*/meminfo) does not add up to "
        "MemTotal and the check does not say so (issue 8 case 11)",
    )


def node_meminfo_total(path: Path) -> int:
    """MemTotal (KiB) of one node, from its meminfo read directly."""
    m = re.search(r"MemTotal:\s+(\d+)", (path / "meminfo").read_text())
    return int(m.group(1)) if m else 0


def own_cgroup() -> tuple[str, str, Path]:
    """This process's memory cgroup: (version, path, its directory), from /proc/self/cgroup."""
    lines = read("/proc/self/cgroup").splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return "v1", path, Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            path = line[3:]
            return "v2", path, Path("/sys/fs/cgroup") / path.lstrip("/")
    pytest.skip("no memory cgroup in /proc/self/cgroup")


def cgroup_file(directory: Path, name: str) -> str:
    """One cgroup file read directly; skips when the cgroup is not mounted where expected."""
    try:
        return (directory / name).read_text().strip()
    except OSError as exc:
        pytest.skip(f"cannot read {directory / name}: {exc.strerror}")


def test_memory_usage_cgroup_matches_proc_self_cgroup(tmp_path: Path) -> None:
    """Without a broker, the agent's cgroup: path, limit and charge as the kernel says.

    The oracle is /proc/self/cgroup and the cgroup's own files, read directly.
    """
    scope = run_check("memory.usage", tmp_path).data.get("judged_against")
    if not isinstance(scope, dict) or "this agent" not in str(scope.get("of", "")):
        pytest.skip(f"memory.usage reports no agent cgroup here: {scope!r}")
    version, path, directory = own_cgroup()
    usage, limit = (
        ("memory.usage_in_bytes", "memory.limit_in_bytes")
        if version == "v1"
        else ("memory.current", "memory.max")
    )

    def compare() -> list[Mismatch]:
        data = run_check("memory.usage", tmp_path).data["judged_against"]
        out = []
        for key, theirs in (("cgroup_version", version), ("cgroup_path", path)):
            if key in data and data[key] != theirs:
                out.append(
                    Mismatch(f"judged_against.{key}", data[key], theirs, "/proc/self/cgroup")
                )
        raw = cgroup_file(directory, limit)
        total = meminfo()["MemTotal"] * KIB
        unlimited = raw == "max" or int(raw) >= total
        ours = data.get("limit_bytes")
        if (ours is None) != unlimited or (ours is not None and ours != int(raw)):
            out.append(Mismatch("judged_against.limit_bytes", ours, raw, f"{directory}/{limit}"))
        charged = int(cgroup_file(directory, usage))
        ours = data.get("charged_bytes")
        if ours is not None and not near(ours, charged, abs_tol=64 * 1024**2):
            out.append(
                Mismatch("judged_against.charged_bytes", ours, charged, f"{directory}/{usage}")
            )
        return out

    agree(settle(compare), "memory.usage cgroup")


def test_system_virtualization_matches_free_getconf_and_cgroup(tmp_path: Path) -> None:
    """Host memory as `free -b`, cores as `getconf`, the cgroup as /proc/self/cgroup says."""
    data = run_check("system.virtualization", tmp_path).data
    out = []
    total = free_b()["Mem"]["total"]
    if "mem_total" in data and data["mem_total"] != total:
        out.append(Mismatch("mem_total", data["mem_total"], total, "free -b"))
    cores = int(tool("getconf", "_NPROCESSORS_ONLN"))
    if "host_cores" in data and data["host_cores"] != cores:
        out.append(Mismatch("host_cores", data["host_cores"], cores, "getconf _NPROCESSORS_ONLN"))
    cgroup = data.get("cgroup") or {}
    if "this agent" in str(cgroup.get("of", "")):
        version, path, _ = own_cgroup()
        for key, theirs in (("version", version), ("path", path)):
            if key in cgroup and cgroup[key] != theirs:
                out.append(Mismatch(f"cgroup.{key}", cgroup[key], theirs, "/proc/self/cgroup"))
    agree(out, "system.virtualization")
