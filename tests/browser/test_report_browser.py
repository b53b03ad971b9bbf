"""report.html in headless Chromium: it loads clean and offline, its navigation works, and
hostile text from the node stays text. Written against the page's DOM contract (ids,
classes and data- attributes), never its wording."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    FINDING_WORD,
    HOSTILE_ID,
    PAYLOADS,
    RAW_PATH,
    RAW_WORD,
    TIMED_OUT,
    Hostile,
    Snapshot,
    Tab,
)

Opener = Any  # the open_page fixture's function


def card(tab: Tab, check_id: str) -> Any:
    """The card of one check (ids hold dots, so by attribute, not #id)."""
    return tab.page.locator(f'article.check[id="{check_id}"]')


def is_open(tab: Tab, check_id: str) -> bool:
    return card(tab, check_id).locator("details.check-body").evaluate("d => d.open")


def in_viewport(tab: Tab, check_id: str) -> bool:
    return card(tab, check_id).evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return r.top < innerHeight && r.bottom > 0 && r.height > 0; }"
    )


STATE = """() => {
    const shown = [...document.querySelectorAll('article.check:not([hidden])')].map(c => c.id);
    return [shown.length, +document.getElementById('visible-count').textContent, shown.join(' ')];
}"""


def settle(tab: Tab, action: Callable[[], object], seconds: float = 10) -> None:
    """Do `action` (one that changes which cards show) and wait until the list has changed
    and its count agrees (the search filters on a later animation frame: the list as it was
    before must not pass for its result, however late that frame comes)."""
    before = tab.page.evaluate(STATE)
    action()
    deadline = time.monotonic() + seconds
    while True:
        state = tab.page.evaluate(STATE)
        if state != before and state[0] == state[1]:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"the list never changed from {before} (now {state})")
        tab.page.wait_for_timeout(50)


def until(tab: Tab, expression: str, seconds: float = 5) -> None:
    """Poll `expression` until it is true (page.evaluate: wait_for_function's polling
    evaluates strings with eval, which the page's CSP rightly refuses)."""
    for _ in range(int(seconds / 0.05)):
        if tab.page.evaluate(expression):
            return
        tab.page.wait_for_timeout(50)
    raise AssertionError(f"never true: {expression}")


def search(tab: Tab, text: str) -> None:
    """Type into the search box and wait for the list to follow."""
    settle(tab, lambda: tab.page.fill("#search", text))


def statuses(snapshot: Snapshot) -> Counter[str]:
    return Counter(c["status"] for c in snapshot.report["checks"])


# Loading


def test_loads_clean_and_offline(open_page: Opener, snapshot: Snapshot, artifacts: Path) -> None:
    """No console error, no page error, no request but the file itself; every card there."""
    tab = open_page(snapshot.page)
    tab.page.wait_for_load_state("load")
    assert tab.errors == []
    assert tab.off_page_requests() == []
    assert tab.requests[0] == snapshot.page.as_uri()
    ids = [c["id"] for c in snapshot.report["checks"]]
    assert sorted(tab.shown()) == sorted(ids)
    assert tab.count() == len(ids)
    csp = tab.page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert tab.page.locator("[style]").count() == 0  # the CSP would refuse them
    tab.page.screenshot(path=artifacts / "report-full.png", full_page=True)


def test_dashboard(open_page: Opener, snapshot: Snapshot) -> None:
    """Verdict, counts, a tile per category with its worst status, the top problems."""
    tab = open_page(snapshot.page)
    page = tab.page
    assert "fail" in page.locator("#verdict").inner_text().lower()
    counts = page.locator("#counts").inner_text()
    for status, n in statuses(snapshot).items():
        assert str(n) in counts, (status, counts)
    categories = {c["category"] for c in snapshot.report["checks"]}
    tiles = page.eval_on_selector_all(
        ".tile[data-category]", "ts => ts.map(t => [t.dataset.category, t.className])"
    )
    assert {name for name, _ in tiles} == categories
    assert "fail" in dict(tiles)["custom"].split()
    hrefs = page.locator("#top-problems a[href^='#']").evaluate_all(
        "as => [...new Set(as.map(a => a.getAttribute('href').slice(1)))]"
    )
    status = {c["id"]: c["status"] for c in snapshot.report["checks"]}
    rank = {"fail": 0, "timeout": 1, "error": 1, "warn": 2}
    problems = sorted(i for i, s in status.items() if s in rank)
    assert sorted(hrefs) == problems  # custom.boom (fail), cpu.load and disk.usage at least
    ranks = [rank[status[i]] for i in hrefs]
    assert ranks == sorted(ranks)  # fail before warn
    assert page.locator("#waterfall").is_visible()
    assert page.locator("#unredacted-banner").count() == 0


# Navigation


def test_search_narrows_the_list(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    total = tab.count()
    search(tab, "memory.us")  # an id fragment (other cards may mention it too)
    shown = tab.shown()
    assert "memory.usage" in shown and "custom.boom" not in shown
    assert tab.count() == len(shown) < total
    assert tab.page.locator("article.check[hidden]").count() == total - len(shown)
    search(tab, RAW_WORD)  # only in custom.boom's raw output
    assert tab.shown() == ["custom.boom"]
    search(tab, "no check says this")
    assert tab.count() == 0
    settle(tab, lambda: tab.page.press("#search", "Escape"))
    assert tab.page.input_value("#search") == "" and tab.count() == total


def test_search_matches_findings(open_page: Opener, hostile: Hostile) -> None:
    tab = open_page(hostile.page)
    search(tab, FINDING_WORD)
    assert tab.shown() == [hostile.report["checks"][0]["id"]]


def test_status_chips(open_page: Opener, snapshot: Snapshot) -> None:
    """One chip shows only its status; a second of the same kind adds its own."""
    tab = open_page(snapshot.page)
    page, want = tab.page, statuses(snapshot)
    warn = page.locator('button.chip[data-filter-status="warn"]')
    settle(tab, warn.click)
    assert warn.get_attribute("aria-pressed") == "true"
    shown = page.eval_on_selector_all(
        "article.check:not([hidden])", "cs => cs.map(c => c.dataset.status)"
    )
    assert shown == ["warn"] * want["warn"] and tab.count() == want["warn"]
    settle(tab, page.locator('button.chip[data-filter-status="fail"]').click)
    assert tab.count() == want["warn"] + want["fail"]
    settle(tab, warn.click)  # pressed again: let go
    assert warn.get_attribute("aria-pressed") == "false" and tab.count() == want["fail"]


def test_category_chip(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    settle(tab, tab.page.locator('button.chip[data-filter-category="memory"]').click)
    memory = [c["id"] for c in snapshot.report["checks"] if c["category"] == "memory"]
    assert sorted(tab.shown()) == sorted(memory) and tab.count() == len(memory)


def test_waterfall_marks_timeouts(open_page: Opener, hostile: Hostile) -> None:
    """Every check has its bar; the one that timed out is marked so."""
    tab = open_page(hostile.page)
    rows = tab.page.locator("#waterfall li").evaluate_all(
        "rs => rs.map(r => [r.querySelector('a').getAttribute('href'), r.className])"
    )
    assert {href for href, _ in rows} == {f"#{c['id']}" for c in hostile.report["checks"]}
    assert "timeout" in dict(rows)[f"#{TIMED_OUT}"].split()


def test_permalink_opens_its_card(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page, "#memory.usage")
    assert is_open(tab, "memory.usage") and in_viewport(tab, "memory.usage")
    search(tab, "no check says this")  # hidden by a filter, a link still opens it
    tab.page.evaluate("location.hash = '#sysctl.vm'")
    until(tab, "!document.getElementById('sysctl.vm').hidden")
    assert is_open(tab, "sysctl.vm") and in_viewport(tab, "sysctl.vm")


def test_top_problem_link_opens_its_card(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    tab.page.locator('#top-problems a[href="#custom.boom"]').first.click()
    assert is_open(tab, "custom.boom") and in_viewport(tab, "custom.boom")


def test_slash_focuses_search(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    tab.page.locator("#dashboard").click()
    tab.page.keyboard.press("/")
    assert tab.page.evaluate("document.activeElement.id") == "search"
    assert tab.page.input_value("#search") == ""  # the slash is not typed into it


def test_expand_and_collapse_all(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    opened = "ds => ds.filter(d => d.open).length"
    tab.page.click("#expand-all")
    assert tab.page.eval_on_selector_all("details.check-body", opened) == tab.count()
    tab.page.click("#collapse-all")
    assert tab.page.eval_on_selector_all("details.check-body", opened) == 0


def column(table: Any, index: int) -> list[str]:
    return table.locator("tbody tr").evaluate_all(
        "(rows, i) => rows.map(r => r.cells[i].textContent.trim())", index
    )


def test_table_sorts_numbers_numerically(open_page: Opener, hostile: Hostile) -> None:
    """hostile_rows has n = 3, 1, 2 (and a hostile header): sorted 1, 2, 3 then 3, 2, 1."""
    tab = open_page(hostile.page)
    first = hostile.report["checks"][0]["id"]
    tab.page.click("#expand-all")
    tables = card(tab, first).locator("table.data.sortable")
    table = next(
        t
        for t in tables.all()
        if "n" in t.locator("th").evaluate_all("s => s.map(h => h.textContent.trim())")
    )
    headers = table.locator("th").evaluate_all("s => s.map(h => h.textContent.trim())")
    n = headers.index("n")
    assert column(table, n) == ["3", "1", "2"]
    th = table.locator("th").nth(n)
    th.click()
    assert th.get_attribute("aria-sort") == "ascending" and column(table, n) == ["1", "2", "3"]
    th.click()
    assert th.get_attribute("aria-sort") == "descending" and column(table, n) == ["3", "2", "1"]


def test_sort_is_numeric_on_real_data(open_page: Opener, snapshot: Snapshot) -> None:
    """memory.usage's breakdown (kib per field): 9 > 10 would be a text sort."""
    tab = open_page(snapshot.page, "#memory.usage")
    for table in card(tab, "memory.usage").locator("table.data.sortable").all():
        headers = table.locator("th").evaluate_all("s => s.map(h => h.textContent.trim())")
        if "kib" in headers:
            break
    else:
        pytest.fail("no sortable table with a kib column in memory.usage")
    table.locator("th").nth(headers.index("kib")).click()
    values = [float(v.replace(",", "")) for v in column(table, headers.index("kib"))]
    assert values == sorted(values) and len(values) > 3


def test_raw_viewer(open_page: Opener, snapshot: Snapshot) -> None:
    """Lines, error lines marked, and a relative link to the whole file inside the ZIP."""
    tab = open_page(snapshot.page, "#custom.boom")
    pre = tab.page.locator(f'pre.raw[data-path="{RAW_PATH}"]')
    lines = pre.locator("span.line").evaluate_all("ls => ls.map(l => [l.className, l.textContent])")
    assert [text for _, text in lines if RAW_WORD in text]
    errors = [text for cls, text in lines if "error" in cls.split()]
    assert errors and all("fatal" in t for t in errors)
    link = card(tab, "custom.boom").locator(f'a[href="{RAW_PATH}"]')
    assert link.count() >= 1
    assert (snapshot.root / RAW_PATH).is_file()  # where the link leads


def test_copy_buttons_work_without_errors(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page, "#custom.boom")
    buttons = tab.page.locator("button.copy")
    assert buttons.count() >= 1
    buttons.first.click()
    assert tab.errors == []


# Safety


def test_hostile_text_is_inert(open_page: Opener, hostile: Hostile, artifacts: Path) -> None:
    """Every payload stays text: nothing runs, no dialog, no element made of it, no request."""
    tab = open_page(hostile.page)
    page = tab.page
    page.click("#expand-all")
    page.wait_for_timeout(100)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert tab.dialogs == [] and tab.errors == [] and tab.off_page_requests() == []
    assert page.locator('img[src="x"], [onerror]').count() == 0
    assert page.locator("script:not([type='application/json'])").count() <= 1
    text = page.evaluate("document.body.textContent")
    for payload in PAYLOADS[:4]:
        assert payload in text, payload
    assert "\u202eevil" in text or "U+202E" in text  # kept, or shown as a visible mark
    assert page.locator('a[href^="javascript:" i]').count() == 0
    assert page.evaluate("id => document.getElementById(id).matches('article.check')", HOSTILE_ID)
    # The 1 MiB line neither widens the page nor hides the rest.
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth + 1")
    assert page.locator("#unredacted-banner").is_visible()
    page.screenshot(path=artifacts / "report-hostile.png")


def test_report_data_cannot_break_out(hostile: Hostile) -> None:
    """The embedded JSON holds no `</script`, `<!--` or U+2028 that would end it early."""
    html = hostile.page.read_text()
    start = html.index('id="report-data"')
    body = html[html.index(">", start) + 1 : html.index("</script>", start)]
    assert "<" not in body and "\u2028" not in body and "\u2029" not in body
    assert "window.__xss" in body  # the payloads are in it, escaped


# Colour schemes and print


def test_dark_scheme(open_page: Opener, snapshot: Snapshot, artifacts: Path) -> None:
    light = open_page(snapshot.page)  # the shared context: light, as by default
    dark = open_page(snapshot.page, color_scheme="dark")
    background = "getComputedStyle(document.body).backgroundColor"
    assert dark.page.evaluate(background) != light.page.evaluate(background)
    assert dark.errors == [] and light.errors == []
    dark.page.screenshot(path=artifacts / "report-dark.png")


def test_print_hides_the_controls(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    assert tab.page.locator("button.chip").first.is_visible()
    tab.page.emulate_media(media="print")
    assert not tab.page.locator("#search").is_visible()
    visible = tab.page.locator("button.chip").evaluate_all(
        "cs => cs.filter(c => c.getClientRects().length).length"
    )
    assert visible == 0


def test_no_element_is_named_twice(open_page: Opener, snapshot: Snapshot) -> None:
    tab = open_page(snapshot.page)
    ids = tab.page.eval_on_selector_all("[id]", "es => es.map(e => e.id)")
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert all(re.fullmatch(r"\S+", i) for i in ids)
