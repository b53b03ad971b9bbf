"""The charts of real reports: this machine's disks against `df`, its cores, its memory,
certificates made at test time, and an Iggy data directory built by the Iggy fixture."""

from __future__ import annotations

import copy
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from snapshot_agent.core.units import GIB, format_bytes
from snapshot_agent.render.charts import charts_for, svg
from tests.conftest import REPO

from .conftest import CERTS, Machine, check_of
from .svgdoc import NS, classes, parse, rows, shown, title_and_desc


def only_chart(report: dict[str, Any], check_id: str):
    """The one chart of `check_id` in a report."""
    [chart] = charts_for(report)[check_id]
    assert chart.check_id == check_id
    return chart


def test_disk_chart_matches_df(machine: Machine) -> None:
    """Every mount's bar says the used % df says (df rounds up), with free and size."""
    data = check_of(machine.report, "disk.usage")["data"]
    chart = only_chart(machine.report, "disk.usage")
    assert chart.glance
    drawn = {row.label: row for row in rows(parse(chart))}
    by_mount = {fs["mount"]: fs for fs in data["filesystems"] if "used_pct" in fs}
    assert set(drawn) == set(by_mount)
    compared = 0
    for mount, row in drawn.items():
        fs = by_mount[mount]
        pct = int(re.match(r"(\d+)% used · ", row.value).group(1))
        assert pct == round(fs["used_pct"])
        assert f"{format_bytes(fs['avail_gib'] * GIB)} free of " in row.value
        assert row.value.split(" free of ")[1].startswith(format_bytes(fs["size_gib"] * GIB))
        width = float(row.bar.get("width"))
        assert math.isclose(width, 260 * fs["used_pct"] / 100, abs_tol=0.1)
        if mount in machine.df:  # df rounds up and a second has passed: within 2 points
            assert abs(machine.df[mount] - fs["used_pct"]) <= 2, (mount, machine.df[mount], fs)
            compared += 1
    assert compared >= 1, (sorted(drawn), sorted(machine.df))


def test_disk_bars_take_the_verdict_of_their_mount(machine: Machine) -> None:
    """Colour by the row's own status, and the status in words beside it."""
    report = copy.deepcopy(machine.report)
    fs = check_of(report, "disk.usage")["data"]["filesystems"]
    fs[0] = fs[0] | {"status": "warn"}
    dead = {"mount": "/dead", "device": "srv:/x", "fstype": "nfs", "status": "not responding"}
    fs.append(dead)
    drawn = {row.label: row for row in rows(parse(only_chart(report, "disk.usage")))}
    assert drawn[fs[0]["mount"]].status == "warn"
    assert drawn[fs[0]["mount"]].value.endswith(" · warn")
    assert drawn["/dead"].bar is None and drawn["/dead"].value == "not responding · fail"
    # Worst first: the mount that does not answer leads.
    assert rows(parse(only_chart(report, "disk.usage")))[0].label == "/dead"


def test_cpu_chart_has_every_core_and_the_window(machine: Machine) -> None:
    check = check_of(machine.report, "cpu.usage")
    chart = only_chart(machine.report, "cpu.usage")
    assert chart.glance
    root = parse(chart)
    title, desc = title_and_desc(root)
    window = f"over {check['data']['interval_s']:.2f} s"
    assert window in title and window in desc
    cores = check["data"]["per_core"]
    if len(cores) <= 16:
        drawn = rows(root)
        assert [r.label for r in drawn] == [c["cpu"] for c in cores]
        for row, core in zip(drawn, cores, strict=True):
            assert row.value.startswith(f"{core['busy_pct']:.0f}% busy")
    else:
        cells = [t for t in root.iter(f"{NS}text") if not classes(t)]
        assert [shown(t).rstrip("!") for t in cells] == [f"{c['busy_pct']:.0f}%" for c in cores]


def test_cpu_grid_for_many_cores_is_capped_and_flags_named_cores(machine: Machine) -> None:
    report = copy.deepcopy(machine.report)
    check = check_of(report, "cpu.usage")
    core = check["data"]["per_core"][0]
    check["data"]["per_core"] = [core | {"cpu": f"cpu{i}", "busy_pct": i % 101} for i in range(300)]
    check["findings"] = [{"severity": "warn", "message": "hot", "subject": "cpu3,cpu7"}]
    chart = only_chart(report, "cpu.usage")
    root = parse(chart)
    cells = [r for r in root.iter(f"{NS}rect") if "cell" in classes(r)]
    assert len(cells) == 128
    flagged = [r.find(f"{NS}title").text for r in cells if "flagged" in classes(r)]
    assert flagged == ["cpu3", "cpu7"]
    assert "172 more cores in the table below" in str(chart.svg)
    assert len(str(chart.svg)) < 24_000


def test_memory_chart_parts_add_up_to_the_ram(machine: Machine) -> None:
    check = check_of(machine.report, "memory.usage")
    info = {row["field"]: row["kib"] * 1024 for row in check["data"]["breakdown"]}
    chart = only_chart(machine.report, "memory.usage")
    assert chart.glance
    root = parse(chart)
    stack = next(g for g in root.iter(f"{NS}g") if "stack" in classes(g))
    parts = [r for r in stack.findall(f"{NS}rect") if "bar" in classes(r)]
    assert math.isclose(sum(float(r.get("width")) for r in parts), 760, abs_tol=0.5)
    legend = [shown(t) for t in stack.iter(f"{NS}text") if "legend" in classes(t)]
    assert (
        f"free {format_bytes(info['MemFree'])} ({100 * info['MemFree'] / info['MemTotal']:.1f}%)"
        in legend
    )
    assert f"buffers {format_bytes(info['Buffers'])}" in " ".join(legend)
    shares = [float(m) for m in re.findall(r"\(([\d.]+)%\)", " ".join(legend))]
    assert math.isclose(sum(shares), 100, abs_tol=0.6)
    _, desc = title_and_desc(root)
    assert desc.startswith(f"host RAM {format_bytes(info['MemTotal'])}: processes ")


def test_memory_chart_shows_a_cgroup_limit_and_swap(machine: Machine) -> None:
    report = copy.deepcopy(machine.report)
    data = check_of(report, "memory.usage")["data"]
    data["judged_against"] |= {
        "scope": "cgroup",
        "cgroup_path": "/system.slice/iggy.service",
        "limit_bytes": 4 * GIB,
        "charged_bytes": 3 * GIB,
        "anon_bytes": 2 * GIB,
        "reclaimable_bytes": GIB // 2,
    }
    check_of(report, "memory.swap")["data"] |= {
        "total_kib": 2 * 1024 * 1024,
        "used_kib": 512 * 1024,
    }
    root = parse(only_chart(report, "memory.usage"))
    labels = [shown(t) for t in root.iter(f"{NS}text") if "label" in classes(t)]
    assert labels[1:] == [
        "cgroup /system.slice/iggy.service limit 4.0 GiB: 3.0 GiB charged",
        "swap 2.0 GiB",
    ]
    _, desc = title_and_desc(root)
    assert "headroom 1.0 GiB (25.0%)" in desc and "used 512.0 MiB (25.0%)" in desc


def test_certificate_timeline(machine: Machine) -> None:
    check = check_of(machine.report, "tls.certificates")
    chart = only_chart(machine.report, "tls.certificates")
    assert not chart.glance
    root = parse(chart)
    drawn = rows(root)
    assert len(drawn) == len(CERTS)
    # Soonest first; the expired one says so in words, and every row has its level.
    assert drawn[0].label == "CN=old.example.com"
    assert drawn[0].value.startswith("EXPIRED 12 days ago · ") and drawn[0].status == "fail"
    levels = {r["subject"]: r["level"] for r in check["data"]["expiry"]}
    for row in drawn:
        assert row.status == levels[row.label]
    assert drawn[2].value.startswith("in 20 days · ") and drawn[2].value.endswith(" · warn")
    # The hostile common name is text, escaped (RFC 4514 adds its own backslashes).
    assert any("<script>" in row.label.replace("\\", "") for row in drawn)
    assert not list(root.iter(f"{NS}script"))
    # The windows are shaded and today is marked.
    assert {c for r in root.iter(f"{NS}rect") for c in classes(r)} >= {"window-warn", "window-fail"}
    assert [shown(t) for t in root.iter(f"{NS}text") if "today" in classes(t)] == ["today"]
    title, desc = title_and_desc(root)
    assert title == "Certificate expiry (1 expired)"
    assert "Warn at 30 days left, fail at 7." in desc


def test_iggy_sizes_largest_first_with_other(iggy_report: dict[str, Any]) -> None:
    topics = check_of(iggy_report, "iggy.data_dir")["data"]["topics"]
    assert len(topics) == 18
    chart = only_chart(iggy_report, "iggy.data_dir")
    drawn = rows(parse(chart))
    assert len(drawn) == 13 and drawn[-1].label == "other (6 topics)"
    assert drawn[-1].status == "skipped"  # grey: a sum, not a topic
    ranked = sorted(topics, key=lambda t: -t["bytes"])
    total = sum(t["bytes"] for t in topics)
    for row, topic in zip(drawn[:-1], ranked, strict=False):
        assert row.label == f"{topic['stream']}/{topic['topic']}"
        assert row.value == f"{format_bytes(topic['bytes'])} · {100 * topic['bytes'] / total:.1f}%"
    rest = sum(t["bytes"] for t in ranked[12:])
    assert drawn[-1].value.startswith(format_bytes(rest))


def test_a_chart_only_where_there_is_data(machine: Machine) -> None:
    """No Iggy data on this machine (skipped, or an empty data dir): no Iggy chart."""
    data = check_of(machine.report, "iggy.data_dir")["data"]
    assert not any(t.get("bytes") for t in data.get("topics", []))
    assert sorted(charts_for(machine.report)) == [
        "cpu.usage",
        "disk.usage",
        "memory.usage",
        "tls.certificates",
    ]
    skipped = copy.deepcopy(machine.report)
    for check in skipped["checks"]:
        check |= {"status": "skipped", "data": {}}
    assert charts_for(skipped) == {}


def test_every_chart_is_accessible_well_formed_and_unstyled(
    machine: Machine, iggy_report: dict[str, Any]
) -> None:
    """title + desc named by aria-labelledby, unique ids on one page, no style anywhere."""
    report = machine.report | {"checks": machine.report["checks"] + iggy_report["checks"]}
    charts = [c for found in charts_for(report).values() for c in found]
    assert len(charts) == 5
    ids: list[str] = []
    for chart in charts:
        root = parse(chart)
        assert root.tag == f"{NS}svg" and root.get("role") == "img"
        assert root.get("width") == "100%" and root.get("viewBox", "").startswith("0 0 760 ")
        title, desc = title_and_desc(root)
        assert title == chart.title and len(desc) > 20
        assert "style=" not in str(chart.svg) and not list(root.iter(f"{NS}style"))
        assert all("style" not in el.attrib and "fill" not in el.attrib for el in root.iter())
        ids += [el.get("id") for el in root.iter() if el.get("id")]
        assert len(str(chart.svg)) < 8000, chart.check_id
        if chart.glance:  # shown twice on the page: on the dashboard strip with other ids
            again = ET.fromstring(str(chart.glance_svg))
            assert title_and_desc(again) == (title, desc)
            ids += [el.get("id") for el in again.iter() if el.get("id")]
            assert str(chart.glance_svg).replace("-glance", "") == str(chart.svg)
    assert len(ids) == len(set(ids)) == 16


def test_the_page_styles_every_class_the_charts_use(
    machine: Machine, iggy_report: dict[str, Any]
) -> None:
    """Each class in a chart is a known one, and the page's CSS colours every colour class."""
    report = machine.report | {"checks": machine.report["checks"] + iggy_report["checks"]}
    used = {
        name
        for found in charts_for(report).values()
        for chart in found
        for el in parse(chart).iter()
        for name in classes(el)
    }
    kinds = {f"chart-{kind}" for kind in ("disk", "cpu", "memory", "expiry", "iggy")}
    assert used - kinds <= set(svg.CLASSES) | set(svg.STRUCTURE)
    assert used >= kinds
    css = (REPO / "templates" / "report.css").read_text()
    unstyled = [c for c in svg.CLASSES if not re.search(rf"\.{c}\b(?!-)", css)]
    assert not unstyled, f"report.css has no rule for {unstyled}"
