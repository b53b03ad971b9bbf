"""report.html: self-contained under a strict CSP, the DOM the script and the browser tests
rely on, hostile text inert, and the page within its size budget."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import time

import pytest

from snapshot_agent.render.embed import trimmed, visible
from snapshot_agent.render.html import render_html
from snapshot_agent.render.raw import HEAD_BYTES
from snapshot_agent.render.viewer import RAW_BUDGET

from .pages import HOSTILE, Page, check, finding, heads, heavy_report, hostile_report, parse, report

#: A page budget in bytes: "<= 1 MB" read strictly.
MB = 1_000_000

DISK = {
    "filesystems": [
        {"mount": "/", "size_gib": 100.0, "used_pct": 91.0, "avail_gib": 9.0, "status": "warn"},
        {"mount": "/var/lib/iggy", "size_gib": 500.0, "used_pct": 20.0, "avail_gib": 400.0},
    ]
}
LOG = (
    b"boot ok\nkernel: EXT4-fs error (device vda1): bad block\n"
    b"all good\nOut of memory: Killed process 42\n"
)


def ordinary() -> tuple[dict, dict]:
    """A snapshot with every status, data tables, a chart, raw evidence and commands."""
    checks = [
        check("cpu.load", "pass", data={"load5": 0.5, "cores": 2}),
        check(
            "disk.usage",
            "warn",
            data=DISK,
            findings=[finding("warn", "/ is 91% full", "free space on `/`", "/")],
        ),
        check(
            "kernel.log",
            "fail",
            findings=[finding("fail", "I/O errors on vda1", "replace the disk", "vda1")],
            artifacts=["kernel.log", "commands.json"],
            commands=[{"argv": ["dmesg", "-T"], "exit_code": 0, "duration_ms": 12}],
        ),
        check("system.units", "error", summary="the check itself broke"),
        check("iggy.health", "timeout", summary="did not finish within 10 s and was killed"),
        check("systemd.timers", "skipped", summary="needs systemd"),
    ]
    raw = heads({"raw/kernel.log/kernel.log": LOG, "raw/kernel.log/commands.json": b"[]"})
    return report(checks), raw


def test_the_csp_allows_exactly_the_inline_style_and_script() -> None:
    page = parse(render_html(*ordinary()))
    [meta] = page.find("meta", http_equiv="Content-Security-Policy")
    policy = meta["content"]
    assert policy.startswith("default-src 'none'; ")
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "img-src data:" in policy and "base-uri 'none'" in policy
    [style] = page.styles
    code = [body for attrs, body in page.scripts if "type" not in attrs]
    assert len(code) == 1 and len(page.scripts) == 2
    for directive, body in (("style-src", style), ("script-src", code[0])):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    assert not page.find("link") and not [a for t, a in page.tags if "src" in a and t != "img"]


def no_inline_style_or_handlers(page: Page) -> None:
    """No style= attribute and no on*= handler on any element (SVG included)."""
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
    assert not re.search(r"<[^>]*\sstyle\s*=", page.html, re.IGNORECASE)


def test_no_inline_style_or_event_handler_anywhere() -> None:
    for doc, raw in (ordinary(), hostile_report()):
        no_inline_style_or_handlers(parse(render_html(doc, raw)))


def test_the_dom_contract() -> None:
    doc, raw = ordinary()
    page = parse(render_html(doc, raw))
    [search] = page.find("input", id="search")
    assert search["type"] == "search"
    for element_id in ("visible-count", "expand-all", "collapse-all", "verdict", "counts"):
        assert len([a for _, a in page.tags if a.get("id") == element_id]) == 1, element_id
    assert page.find("section", id="dashboard") and page.find("section", id="top-problems")
    assert page.find("section", id="waterfall")
    articles = page.find("article", class_="check")
    assert [a["id"] for a in articles] == [
        "kernel.log",
        "system.units",
        "iggy.health",
        "disk.usage",
        "cpu.load",
        "systemd.timers",
    ]  # worst first
    assert all(a["class"] == "check" and a["data-category"] for a in articles)
    assert [a["data-status"] for a in articles] == [
        "fail",
        "error",
        "timeout",
        "warn",
        "pass",
        "skipped",
    ]
    bodies = page.find("details", class_="check-body")
    assert len(bodies) == len(articles)
    assert ["open" in b for b in bodies] == [True, True, True, True, False, False]
    statuses = {
        c["data-filter-status"]: c
        for c in page.find("button", class_="chip")
        if "data-filter-status" in c
    }
    assert set(statuses) == {"fail", "error", "timeout", "warn", "pass", "skipped"}
    assert all(c["aria-pressed"] == "false" for c in statuses.values())
    tiles = {t["data-category"]: t for t in page.find("button", class_="tile")}
    assert set(tiles) == {"cpu", "disk", "kernel", "system", "iggy", "systemd"}
    assert all(t["data-filter-category"] == c and "chip" in t["class"] for c, t in tiles.items())
    assert (
        "warn" in tiles["disk"]["class"].split() and "skipped" in tiles["systemd"]["class"].split()
    )
    [verdict] = [a for _, a in page.tags if a.get("id") == "verdict"]
    assert "fail" in verdict["class"].split()
    assert page.find("table", class_="sortable")
    assert page.find("button", class_="copy")
    assert not page.find("div", id="unredacted-banner")


def test_top_problems_link_to_their_cards_with_what_to_do() -> None:
    html = render_html(*ordinary())
    section = html[html.index('<section id="top-problems"') :]
    section = section[: section.index("</section>")]
    links = re.findall(r'<a href="#([^"]+)"', section)
    assert links == ["kernel.log", "iggy.health", "system.units", "disk.usage"]
    assert section.index("I/O errors on vda1") < section.index("/ is 91% full")
    assert "What to do:</strong> replace the disk" in section
    assert "free space on <code>/</code>" in section


def test_the_waterfall_says_timed_out_in_words() -> None:
    html = render_html(*ordinary())
    section = html[html.index('<section id="waterfall"') :]
    section = section[: section.index("</section>")]
    [row] = re.findall(r'<li class="bar-row timeout">.*?</li>', section, re.S)
    assert "iggy.health" in row and "timed out" in row and 'class="bar s-timeout"' in row


def viewer_lines(html: str, path: str) -> list[str]:
    """The lines of the page between the raw viewer's <pre> line and its </pre> line."""
    lines = html.splitlines()
    start = next(n for n, line in enumerate(lines) if f'data-path="{path}"' in line)
    end = lines.index("</pre>", start)
    assert lines[start].rstrip().endswith(">")  # nothing of the text on the <pre> line
    return lines[start + 1 : end]


def test_the_raw_viewer_holds_the_stored_lines_and_names_the_error_lines() -> None:
    page = parse(render_html(*ordinary()))
    [pre] = page.find("pre", class_="raw")
    assert pre["data-path"] == "raw/kernel.log/kernel.log"
    assert pre["data-error-lines"] == "2 4"  # EXT4-fs error, Out of memory
    html = page.html
    # Each raw line alone on its line of the page: a line-based secret scanner reads the
    # page's copy as it reads the member (the script makes the numbered spans).
    assert viewer_lines(html, "raw/kernel.log/kernel.log") == LOG.decode().splitlines()
    assert page.find("a", href="raw/kernel.log/kernel.log")
    assert "shown" not in html[html.index("</pre>") : html.index("</pre>") + 200]  # whole file
    assert len(page.find("pre", class_="raw")) == 1  # commands.json: listed, not viewed


def test_a_long_raw_file_shows_its_head_and_says_so() -> None:
    data = b"".join(b"%06d fine\n" % n for n in range(10_000))
    doc = report([check("a.b", "pass", artifacts=["long log.txt"])])
    html = render_html(doc, heads({"raw/a.b/long log.txt": data}))
    assert "First 11.7 KiB of 117.2 KiB shown" in html  # 1000 lines of 12 bytes
    assert 'href="raw/a.b/long%20log.txt"' in html
    shown = viewer_lines(html, "raw/a.b/long log.txt")
    assert len(shown) == 1000 and shown[-1] == "000999 fine"  # the line cap of one viewer
    assert "cut short" not in html  # every line shown is whole


def test_a_file_of_one_long_line_says_the_line_is_cut() -> None:
    doc = report([check("a.b", "pass", artifacts=["one.txt"])])
    html = render_html(doc, heads({"raw/a.b/one.txt": b"A" * (10 * 2**20)}))
    assert "First 16.0 KiB of 10.0 MiB shown, the last line cut short" in html
    assert len(viewer_lines(html, "raw/a.b/one.txt")) == 1


def test_raw_text_is_escaped_but_keeps_its_quotes_and_lines() -> None:
    raw = "say \"hi\" & <b>bye</b>\n\x1b[31mred\u202e\nkey: 'x'\n"
    doc = report([check("a.b", "pass", artifacts=["t.txt"])])
    html = render_html(doc, heads({"raw/a.b/t.txt": raw.encode()}))
    assert viewer_lines(html, "raw/a.b/t.txt") == [
        'say "hi" &amp; &lt;b&gt;bye&lt;/b&gt;',
        "\u241b[31mred⟨U+202E⟩",
        "key: 'x'",
    ]


def test_the_raw_budget_holds_over_many_heads() -> None:
    names = [f"f{n}.log" for n in range(60)]
    files = {f"raw/a.b/{n}": b"x" * 70 + b"\n" for n in names for _ in [0]}
    files = {path: (b"y" * 99 + b"\n") * 400 for path in files}  # 40 KB each
    html = render_html(report([check("a.b", "warn", artifacts=names)]), heads(files))
    shown = sum(len(m) for m in re.findall(r'<pre class="raw".*?</pre>', html, re.S))
    assert HEAD_BYTES * 3 < shown <= RAW_BUDGET * 1.1
    assert html.count("Not shown on this page") > 0  # the rest: a link only
    assert 'data-path="raw/a.b/f0.log"' in html and 'data-path="raw/a.b/f59.log"' not in html
    assert 'href="raw/a.b/f59.log"' in html


def test_the_embedded_data_is_the_report_with_the_raw_index() -> None:
    doc, raw = ordinary()
    data = parse(render_html(doc, raw)).data()
    assert data.pop("raw") == {
        "raw/kernel.log/kernel.log": {
            "size": len(LOG),
            "shown_bytes": len(LOG),
            "truncated": False,
        },
        "raw/kernel.log/commands.json": {"size": 2, "shown_bytes": 0, "truncated": True},
    }
    assert data == trimmed(doc)


def test_the_unredacted_banner() -> None:
    doc, raw = ordinary()
    doc["snapshot"]["options"]["redact_secrets"] = False
    page = parse(render_html(doc, raw))
    [banner] = page.find("div", id="unredacted-banner")
    assert banner["role"] == "alert" and "Not redacted" in page.html


def test_hostile_text_is_inert_and_the_page_stays_small_and_fast() -> None:
    doc, raw = hostile_report()
    start = time.perf_counter()
    html = render_html(doc, raw)
    took = time.perf_counter() - start
    page = parse(html)
    assert took < 2, took
    assert len(html.encode()) < 400_000
    # Only our own two scripts; no element came from the node's text.
    assert len(page.scripts) == 2 and not page.find("img")
    assert "alert(1)" in html and "<script>alert" not in html
    assert "{{ 7*7 }}" in html and "{% if %}" in html  # shown, never evaluated
    for hidden in ("\u202e", "\x00", "\x1b", "\u2028", "\ud800"):
        assert hidden not in html
    assert "⟨U+202E⟩" in html and "\u2400" in html
    assert "more characters: the whole value is in report.json" in html
    data = page.data()
    assert data["checks"][0]["findings"][0]["message"] == trimmed(HOSTILE)
    # The category and id came from the node too: they are attribute values, escaped.
    assert any(a.get("data-category") == visible(trimmed(HOSTILE)) for _, a in page.tags)


def test_a_heavy_snapshot_stays_within_one_megabyte() -> None:
    doc, raw = heavy_report()
    start = time.perf_counter()
    html = render_html(doc, raw)
    took = time.perf_counter() - start
    assert len(html.encode()) <= MB, len(html.encode())
    assert took < 10, took  # about 1 s on an idle machine
    assert html.count('<article class="check"') == 80
    assert "of 400 shown; the rest is in report.json" in html  # tables cut, and said
    embedded = html[html.index('id="report-data">') + 17 : html.index("</script>")]
    assert json.loads(embedded)["checks"][-1]["data"] == {
        "…": "omitted from the page to keep it small: the whole data is in report.json"
    }


def test_rendering_is_deterministic() -> None:
    doc, raw = ordinary()
    assert render_html(doc, raw) == render_html(doc, dict(reversed(raw.items())))


def test_charts_appear_in_their_card_and_at_a_glance() -> None:
    pytest.importorskip("snapshot_agent.render.charts")
    html = render_html(*ordinary())
    assert html.count('class="chart chart-disk"') == 2  # the disk.usage card and the strip
    glance = html[html.index('<section id="glance"') :]
    assert 'href="#disk.usage"' in glance[: glance.index("</section>")]
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # the strip's copy has ids of its own
    for labels in re.findall(r'aria-labelledby="([^"]+)"', html):
        assert all(f'id="{name}"' in html for name in labels.split())


def test_the_page_renders_without_the_charts_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_agent.render.charts", None)  # import fails
    html = render_html(*ordinary())
    assert 'id="glance"' not in html and '<svg class="chart' not in html
    assert html.count('<article class="check"') == 6


def test_an_old_or_damaged_report_still_renders() -> None:
    doc = {
        "snapshot": {"name": "old", "node": None},
        "checks": [
            {"id": "a.b", "status": "weird"},
            {"id": "c.d", "status": "pass", "findings": ["not a finding"], "data": [1, 2]},
            "not a check",
        ],
    }
    page = parse(render_html(doc))
    assert [a["id"] for a in page.find("article", class_="check")] == ["c.d", "a.b"]


def test_data_becomes_tables() -> None:
    data = {
        "count": 3,
        "empty": {},
        "names": ["a", "b"],
        "rows": [{"name": "x", "size": 10}, {"name": "y", "size": 2, "extra": True}],
        "nested": {"inner": {"deep": 1}},
        "many": [{"n": n} for n in range(350)],
    }
    html = render_html(report([check("a.b", "warn", data=data)]))
    page = parse(html)
    grids = page.find("table", class_="sortable")
    assert len(grids) == 2 and all("grid" in g["class"] for g in grids)
    assert [a for t, a in page.tags if t == "th" and a.get("scope") == "col"][:3] == [
        {"scope": "col", "tabindex": "0"}
    ] * 3
    assert '<td class="num" data-num="10">10</td>' in html
    assert '<th scope="row">names</th><td>a, b</td>' in html
    assert '<th scope="row">empty</th><td><span class="muted">—</span></td>' in html
    assert "300 of 350 shown; the rest is in report.json." in html
    assert page.find("table", class_="kv")
