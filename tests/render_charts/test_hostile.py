"""Hostile names, odd numbers and garbage: a capped chart or none, never an exception.

The shapes are the real ones (this machine's and an Iggy node's report, from the real
CLI); the tests then put hostile text and wrong types where the node's values go.
"""

from __future__ import annotations

import copy
import json
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from snapshot_agent.render.charts import BUILDERS, charts_for

from .conftest import Machine, check_of
from .svgdoc import NS, parse, title_and_desc

BIG = "A" * 10_000_000
HOSTILE = [
    "<script>alert(1)</script>",
    '"><svg onload=alert(1)>',
    "]]><!--",
    "\u202egnp.exe",
    "nul\x00byte\x1b[2J",
    "lone \ud800 surrogate",
    "{{ 7*7 }}",
    'id="chart-disk-usage-0-t" aria-labelledby="chart-disk-usage-0-t chart-disk-usage-0-d"',
    BIG,
]


def every_report(machine: Machine, iggy: dict[str, Any]) -> dict[str, Any]:
    """One report holding every check that has a chart, with real data."""
    mine = [c for c in machine.report["checks"] if c["id"] != "iggy.data_dir"]  # skipped here
    return machine.report | {"checks": mine + iggy["checks"]}


def assert_sound(chart: Any) -> ET.Element:
    """Well-formed, small, accessible, unstyled, with no raw control or bidi character."""
    text = str(chart.svg)
    root = parse(chart)
    title_and_desc(root)
    assert len(text) < 24_000, (chart.check_id, len(text))
    assert "style=" not in text and not list(root.iter(f"{NS}style"))
    assert not list(root.iter(f"{NS}script")) and "<script" not in text
    assert not any(c in text for c in "\u202e\x00\x1b")
    assert all(len(t.text or "") <= 3000 for t in root.iter())
    if chart.glance:  # its copy for the dashboard differs in the ids alone
        again = ET.fromstring(str(chart.glance_svg))
        assert [el.get("id") for el in again.iter() if el.get("id")] == [
            f"{chart.uid}-glance-t",
            f"{chart.uid}-glance-d",
        ]
        assert str(chart.glance_svg).replace(f"{chart.uid}-glance", chart.uid) == text
    return root


def every_chart_sound(report: dict[str, Any]) -> list[ET.Element]:
    """Every check with a builder has its charts, made quickly, each of them sound."""
    started = time.monotonic()
    charts = charts_for(report)
    assert time.monotonic() - started < 2
    assert sorted(charts) == sorted(BUILDERS)
    return [assert_sound(chart) for found in charts.values() for chart in found]


def set_names(report: dict[str, Any], name: str) -> None:
    """Put `name` wherever a chart shows a name from the node."""
    for fs in check_of(report, "disk.usage")["data"]["filesystems"]:
        fs["mount"] = name + fs["mount"]
    for core in check_of(report, "cpu.usage")["data"]["per_core"]:
        core["cpu"] = name
    memory = check_of(report, "memory.usage")["data"]["judged_against"]
    memory |= {"scope": "cgroup", "cgroup_path": name, "limit_bytes": 2**32, "charged_bytes": 2**31}
    for row in check_of(report, "tls.certificates")["data"]["expiry"]:
        row |= {"subject": name, "path": name, "not_after": name}
    for row in check_of(report, "iggy.data_dir")["data"]["topics"]:
        row |= {"stream": name, "topic": name}


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_escaped_and_capped(
    machine: Machine, iggy_report: dict[str, Any], name: str
) -> None:
    report = copy.deepcopy(every_report(machine, iggy_report))
    set_names(report, name)
    for root in every_chart_sound(report):
        assert "A" * 301 not in ET.tostring(root, encoding="unicode")


def test_ten_thousand_rows_give_capped_charts(
    machine: Machine, iggy_report: dict[str, Any]
) -> None:
    report = copy.deepcopy(every_report(machine, iggy_report))
    for check_id, key in [
        ("disk.usage", "filesystems"),
        ("cpu.usage", "per_core"),
        ("tls.certificates", "expiry"),
        ("iggy.data_dir", "topics"),
    ]:
        data = check_of(report, check_id)["data"]
        data[key] = [dict(data[key][0]) for _ in range(10_000)]
    for root in every_chart_sound(report):
        assert len(root.findall(f".//{NS}g")) < 140


@pytest.mark.parametrize(
    "report",
    [
        None,
        {},
        [],
        "x",
        42,
        {"checks": None},
        {"checks": "disk.usage"},
        {"checks": [None, 1, "x", [], {"id": 5}, {"id": None}]},
        {"checks": [{"id": cid} for cid in BUILDERS]},
        {"checks": [{"id": cid, "data": None, "findings": "x"} for cid in BUILDERS]},
        {
            "checks": [
                {
                    "id": cid,
                    "data": {
                        k: "x" for k in ("filesystems", "per_core", "breakdown", "expiry", "topics")
                    },
                }
                for cid in BUILDERS
            ]
        },
        {
            "checks": [
                {
                    "id": "disk.usage",
                    "data": {
                        "filesystems": [
                            {
                                "mount": "/",
                                "used_pct": float("nan"),
                                "size_gib": -1,
                                "avail_gib": float("inf"),
                            }
                        ]
                    },
                }
            ]
        },
        {
            "checks": [
                {
                    "id": "memory.usage",
                    "data": {
                        "breakdown": [
                            {"field": "MemTotal", "kib": 0},
                            {"field": "MemFree", "kib": -5},
                        ]
                    },
                }
            ]
        },
        {
            "checks": [
                {
                    "id": "iggy.data_dir",
                    "data": {"topics": [{"stream": "s", "topic": "t", "bytes": 0}]},
                }
            ]
        },
        {
            "checks": [
                {
                    "id": "tls.certificates",
                    "data": {"expiry": [{"days_left": "12"}, {"days_left": True}]},
                }
            ]
        },
    ],
    ids=range(15),
)
def test_garbage_reports_give_no_chart(report: Any) -> None:
    assert charts_for(report) == {}


GARBAGE: list[Any] = [
    None,
    True,
    "",
    "12",
    "NaN",
    float("nan"),
    float("inf"),
    -float("inf"),
    -1,
    -1e308,
    1e308,
    10**40,
    0,
    [],
    {},
    [None],
    {"x": 1},
    "<script>",
    "\u202e" * 3,
]


def mutations(value: Any, rng: random.Random) -> Iterator[Any]:
    """Copies of `value`, each with one leaf or container swapped for garbage."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, item in node.items():
                walk(item, (*path, key))
        elif isinstance(node, list):
            for i, item in enumerate(node[:5]):
                walk(item, (*path, i))

    walk(value, ())
    for path in rng.sample(paths, min(len(paths), 150)):
        for junk in rng.sample(GARBAGE, 4):
            copied = copy.deepcopy(value)
            if not path:
                yield junk
                continue
            node = copied
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = junk
            yield copied


def test_builders_never_raise_on_damaged_checks(
    machine: Machine, iggy_report: dict[str, Any]
) -> None:
    """Each builder itself (not only charts_for's guard) survives any one damaged value."""
    report = every_report(machine, iggy_report)
    rng = random.Random(13)
    for check_id, build in BUILDERS.items():
        check = check_of(report, check_id)
        assert build(check, report, "u")  # the real data draws a chart
        for damaged in mutations(check, rng):
            if not isinstance(damaged, dict):
                continue
            for chart in build(damaged, report, "u"):
                assert_sound(chart)
    # The swap bar comes from another check: damage there too.
    memory = check_of(report, "memory.usage")
    for damaged in mutations(check_of(report, "memory.swap"), rng):
        rest = [c for c in report["checks"] if c["id"] != "memory.swap"]
        broken = report | {"checks": [*rest, damaged]}
        for chart in BUILDERS["memory.usage"](memory, broken, "u"):
            assert_sound(chart)


def test_a_report_json_with_nan_parses_and_charts(machine: Machine) -> None:
    """json.loads accepts NaN and Infinity: a hand-edited report.json may hold them."""
    text = json.dumps(machine.report).replace('"busy_pct": ', '"busy_pct": NaN, "x": ', 1)
    charts = charts_for(json.loads(text))
    assert "cpu.usage" in charts
