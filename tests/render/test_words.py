"""The page's words: counts that read right at one, the Iggy sizes with what each counts,
and where the raw/ links lead."""

from __future__ import annotations

import re

from snapshot_agent.core.units import GIB
from snapshot_agent.render.html import render_html
from snapshot_agent.render.iggy import iggy_overview
from snapshot_agent.render.words import check_seconds, counted, noun

from .pages import check, report


def test_counted_and_noun() -> None:
    assert [counted(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert counted(1.0, "day") == "1.0 day" and counted(1.5, "day") == "1.5 days"
    assert (
        counted(1, "more topic") == "1 more topic" and counted(3, "more topic") == "3 more topics"
    )
    assert noun(1, "entry", "entries") == "entry" and noun(2, "entry", "entries") == "entries"
    assert [check_seconds(s) for s in (0, 0.004, 0.25, 12.3)] == [
        "< 0.01 s",
        "< 0.01 s",
        "0.25 s",
        "12.30 s",
    ]


def test_one_row_one_item_one_check() -> None:
    """A page of one check whose data has a one-row table and a one-item list."""
    # a list of one mapping (a grid), and a list of one list (a list of structured items)
    data = {"mounts": [{"mount": "/", "used_pct": 40.0}], "servers": [["10.0.0.2", "10.0.0.3"]]}
    html = render_html(report([check("disk.usage", data=data)]))
    assert "(1 row)" in html and "(1 item)" in html
    assert not re.search(r"\b1 (rows|items|checks)\b", html)
    assert re.search(r'<span id="visible-count">1</span> of 1 check</span>', html)
    many = render_html(
        report([check("disk.usage", data={"m": [{"a": 1}, {"a": 2}]}), check("a.b")])
    )
    assert "(2 rows)" in many and "of 2 checks</span>" in many


HEALTH = {"version": "0.8.0", "streams": 1, "topics": 2}
DATA_DIR = {"totals": {"bytes": 5 * GIB, "partitions": 2, "segments": 4}}


def iggy_report() -> dict:
    return report(
        [
            check("iggy.health", "pass", category="iggy", data=HEALTH),
            check("iggy.data_dir", "pass", category="iggy", data=DATA_DIR),
        ]
    )


def test_the_iggy_data_size_says_what_it_counts() -> None:
    """'Data size' is the whole data directory, logs included (as the iggy.data_dir summary);
    the page says so, and that the iggy.data_dir chart counts message data per topic."""
    overview = iggy_overview(iggy_report()["checks"])
    assert overview is not None
    assert dict(overview["facts"])["Data size"] == "5.0 GiB"
    assert overview["scopes"] == {"Data size": "whole data directory, logs included"}
    html = render_html(iggy_report())
    start = html.index('<section class="iggy"')
    section = html[start : html.index("</section>", start)]
    assert (
        '<dt>Data size</dt><dd>5.0 GiB <span class="scope">(whole data directory, logs '
        "included)</span></dd>" in section
    )
    words = " ".join(section.split())
    assert "like the iggy.data_dir summary, counts every file under the data directory" in words
    assert "(its chart and topics table) count the message data of each topic only" in words


def test_no_scope_without_a_data_size() -> None:
    doc = report([check("iggy.health", "pass", category="iggy", data=HEALTH)])
    overview = iggy_overview(doc["checks"])
    assert overview is not None and overview["scopes"] == {}
    html = render_html(doc)
    assert 'class="scope"' not in html and "counts every file under" not in html


def test_the_page_says_where_its_raw_links_resolve() -> None:
    """The same words in the archive's page and a page re-rendered elsewhere (the two are
    byte for byte the same): the raw/ links open beside the extracted raw/ directory."""
    html = render_html(report([check("kernel.log", artifacts=["kernel.log"])]))
    start = html.index('<span id="raw-links-note">')
    note = " ".join(html[start : html.index("</span>", start)].split())
    assert "links are relative" in note
    assert "this page sits beside its <code>raw/</code> directory" in note
    assert "snapshot-agent report -o FILE" in note
