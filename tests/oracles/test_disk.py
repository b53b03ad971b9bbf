"""disk.usage and disk.mounts against `df` and `findmnt`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .live import GIB, SHORT_WINDOW, Mismatch, agree, near, pick, run_check, settle, tool

#: Free space may move this much between statvfs calls on a busy machine (other tests write).
MOVING_BYTES = 512 * 1024**2
#: df's columns; the mount point last, since it may contain spaces.
DF_COLUMNS = ("size", "avail", "used", "itotal", "iavail", "fstype", "target")


def df() -> dict[str, dict[str, Any]]:
    """`df -l -B1` per mount point: local filesystems only (no network mounts to hang on)."""
    out = tool("df", "-l", "-B1", "--output=" + ",".join(DF_COLUMNS))
    rows: dict[str, dict[str, Any]] = {}
    for line in out.splitlines()[1:]:
        fields = line.split(None, len(DF_COLUMNS) - 1)
        if len(fields) != len(DF_COLUMNS):
            continue
        row = dict(zip(DF_COLUMNS, fields, strict=True))
        for key in DF_COLUMNS[:5]:
            row[key] = int(row[key]) if row[key].isdigit() else 0
        rows[row["target"]] = row
    return rows


def _bytes(row: dict[str, Any], name: str) -> tuple[float, float]:
    """A size column of a disk.usage row in bytes, with its rounding (bytes or GiB keys)."""
    exact = pick(row, f"{name}_bytes")
    if exact is not None:
        return float(exact), 0.0
    return float(row[f"{name}_gib"]) * GIB, 0.006 * GIB  # two decimals of GiB


def compare_usage(data: dict[str, Any], by_mount: dict[str, dict[str, Any]]) -> list[Mismatch]:
    """Size, free space, used % and inodes of every filesystem both list."""
    out = []
    compared = 0
    for row in data["filesystems"]:
        names = [row["mount"], *filter(None, str(row.get("also_at") or "").split(", "))]
        theirs = next((by_mount[n] for n in names if n in by_mount), None)
        if theirs is None or ("size_gib" not in row and "size_bytes" not in row):
            continue  # not local, not answering, or df hides it (size 0)
        compared += 1
        mp = row["mount"]
        size, rounding = _bytes(row, "size")
        if not near(size, theirs["size"], abs_tol=rounding):
            out.append(Mismatch(f"filesystems[{mp}].size", size, theirs["size"], "df -B1"))
        avail, rounding = _bytes(row, "avail")
        if not near(avail, theirs["avail"], abs_tol=rounding + MOVING_BYTES):
            out.append(Mismatch(f"filesystems[{mp}].avail", avail, theirs["avail"], "df -B1"))
        df_total = theirs["used"] + theirs["avail"]
        pct = 100.0 * theirs["used"] / df_total if df_total else 0.0
        slack = 0.06 + 100.0 * MOVING_BYTES / df_total if df_total else 0.06
        if not near(row["used_pct"], pct, abs_tol=slack):
            out.append(Mismatch(f"filesystems[{mp}].used_pct", row["used_pct"], pct, "df -B1"))
        ipct_theirs = (
            100.0 * (theirs["itotal"] - theirs["iavail"]) / theirs["itotal"]
            if theirs["itotal"]
            else None
        )
        ipct = row.get("inodes_used_pct")
        if (ipct is None) != (ipct_theirs is None) or (
            ipct is not None and not near(ipct, ipct_theirs, abs_tol=0.1)
        ):
            out.append(Mismatch(f"filesystems[{mp}].inodes_used_pct", ipct, ipct_theirs, "df"))
    if not compared:
        out.append(Mismatch("filesystems", "no mount in common", sorted(by_mount), "df -l"))
    return out


def test_disk_usage_matches_df(tmp_path: Path) -> None:
    """Size, free space and inode use of each local filesystem, as `df -B1` sees them."""
    agree(
        settle(lambda: compare_usage(run_check("disk.usage", tmp_path).data, df())),
        "disk.usage",
    )


def test_disk_usage_judges_every_writable_local_filesystem(tmp_path: Path) -> None:
    """Every writable local filesystem df shows with a size is judged (none silently dropped)."""
    data = run_check("disk.usage", tmp_path).data
    seen = set()
    for row in data["filesystems"]:
        seen |= {row["mount"], *filter(None, str(row.get("also_at") or "").split(", "))}
    seen |= set(data.get("read_only_not_judged", []))
    mounts = findmnt()
    missing = [
        mp
        for mp, row in df().items()
        if row["size"]
        and mp not in seen
        and not mp.startswith(("/proc/", "/sys/", "/dev/"))
        and mp not in ("/dev", "/proc", "/sys")
        and not mounts.get(mp, {}).get("options", "").startswith("ro")
        and row["fstype"] not in ("devtmpfs", "squashfs", "iso9660", "erofs")
    ]
    agree(
        [Mismatch("filesystems[].mount", sorted(seen), missing, "df -l")] if missing else [],
        "disk.usage coverage",
    )


def findmnt() -> dict[str, dict[str, str]]:
    """`findmnt -J -l`: every mount by target (the last one mounted on a target wins)."""
    text = tool("findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS")
    return {fs["target"]: fs for fs in json.loads(text)["filesystems"]}


def test_disk_mounts_match_findmnt(tmp_path: Path) -> None:
    """Mount points, filesystem types and read-only flags as `findmnt` lists them."""

    def compare() -> list[Mismatch]:
        data = run_check("disk.mounts", tmp_path).data
        theirs = findmnt()
        ours = {row["mount"]: row for row in data["mounts"]}
        out = []
        if len(data["mounts"]) < 300 and set(ours) != set(theirs):
            out.append(
                Mismatch(
                    "mounts[].mount",
                    sorted(set(ours) - set(theirs)),
                    sorted(set(theirs) - set(ours)),
                    "findmnt -l (only in check / only in findmnt)",
                )
            )
        for mp in set(ours) & set(theirs):
            fs = theirs[mp]
            if ours[mp]["fstype"] != fs["fstype"]:
                out.append(
                    Mismatch(f"mounts[{mp}].fstype", ours[mp]["fstype"], fs["fstype"], "findmnt")
                )
            ro = "ro" in fs["options"].split(",")
            if ours[mp]["read_only"] != ro:
                out.append(
                    Mismatch(f"mounts[{mp}].read_only", ours[mp]["read_only"], ro, "findmnt")
                )
        data_dir = Path(str(data.get("data_dir") or "/"))
        while not data_dir.exists():
            data_dir = data_dir.parent
        target = tool("findmnt", "-n", "-o", "TARGET", "-T", str(data_dir)).strip()
        if data.get("data_mount") != target:
            out.append(
                Mismatch("data_mount", data.get("data_mount"), target, f"findmnt -T {data_dir}")
            )
        return out

    agree(settle(compare), "disk.mounts")


def block_stat(device: str) -> tuple[int, int]:
    """(reads, writes) completed since boot, from /sys/block/<dev>/stat read directly."""
    fields = Path(f"/sys/block/{device}/stat").read_text().split()
    return int(fields[0]), int(fields[4])


def test_disk_io_devices_and_requests_match_lsblk_and_sysfs(tmp_path: Path) -> None:
    """Devices are disks `lsblk` lists; their requests fit in what sysfs counted around us."""
    disks = set(tool("lsblk", "-d", "-n", "-o", "NAME").split())

    def compare() -> list[Mismatch]:
        devices = sorted(disks)
        before = {d: block_stat(d) for d in devices if Path(f"/sys/block/{d}/stat").exists()}
        data = run_check("disk.io", tmp_path, thresholds=SHORT_WINDOW).data
        after = {d: block_stat(d) for d in before}
        out = []
        for row in data["devices"]:
            dev = row["device"]
            if dev not in disks:
                out.append(Mismatch(f"devices[{dev}]", dev, sorted(disks), "lsblk -d"))
                continue
            if dev not in before:
                continue
            for i, key in enumerate(("r_s", "w_s")):
                done = row[key] * data["interval_s"]
                most = after[dev][i] - before[dev][i] + 0.05 * data["interval_s"] + 1
                if done > most:
                    out.append(Mismatch(f"devices[{dev}].{key}", done, f"<= {most}", "stat"))
        return out

    agree(settle(compare), "disk.io")
