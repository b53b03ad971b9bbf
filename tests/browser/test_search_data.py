"""The search looks past the tables' cut: a value the page leaves out of a table (rows past
the budget) still finds its card through the report data embedded in the page, and the
card says so; what the page holds nowhere (data too large to embed) is named, not hidden.
Written against the page's DOM contract (ids, classes), never its wording."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ..render.pages import check, report
from .conftest import Hostile, Tab
from .test_report_browser import card, search, settle

Opener = Any

#: A kernel parameter past the rows the sysctl.all card shows.
CUT_KEY = "vm.swappiness"
CUT_VALUE = "swapquokka61"
#: A value in the cut rows of a check whose data is too large to embed at all.
UNEMBEDDED = "zebraprocess1999"
#: Modules of a list longer than the page keeps of any list (embed.MAX_ITEMS): one in
#: the data embedded, one past it.
MODULE_EMBEDDED, MODULE_PAST = "kmodule1500", "kmodule2050"
#: A parameter among the first rows (shown on the page as well as in the data).
SHOWN_KEY = "abi.param0001"
NONSENSE = "qxzv-no-check-holds-this-9f3e"


def cut_report() -> dict[str, Any]:
    """sysctl.all with 1000 parameters (its table cut, its data embedded), a check whose
    2000 rows are too large to embed, and two small checks."""
    values = {f"abi.param{n:04d}": str(n) for n in range(1000)}
    values[CUT_KEY] = CUT_VALUE  # the last of 1001: far past the rows a table shows
    rows = [
        {"pid": n, "name": f"zebraprocess{n}", "cmdline": f"/usr/bin/worker --slot {n} " * 3}
        for n in range(2000)
    ]
    return report(
        [
            check("sysctl.all", data={"count": len(values), "values": values}),
            check("process.huge", "warn", data={"processes": rows}),
            check("sysctl.vm", data={"vm.dirty_ratio": "20"}),
            check("kernel.modules", data={"modules": [f"kmodule{n}" for n in range(2100)]}),
            check("memory.usage", data={"total": 1024, "used": 512}),
        ]
    )


def embedded(html: str) -> dict[str, Any]:
    """The report data the page embeds."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    assert match
    return json.loads(match[1])


@pytest.fixture(scope="module")
def cut_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of cut_report(), rendered in-process, its premises checked."""
    from snapshot_agent.render.html import render_html

    html = render_html(cut_report())
    shown = html.split('id="report-data"')[0]
    data = {c["id"]: c["data"] for c in embedded(html)["checks"]}
    # The premises: the cut values are in no table of the page; sysctl.all's are in the
    # embedded data, process.huge's nowhere on the page.
    assert CUT_KEY not in shown and CUT_VALUE not in shown and SHOWN_KEY in shown
    assert data["sysctl.all"]["values"][CUT_KEY] == CUT_VALUE
    assert UNEMBEDDED not in shown and UNEMBEDDED not in html
    assert list(data["process.huge"]) == ["…"]
    assert MODULE_EMBEDDED not in shown and MODULE_EMBEDDED in data["kernel.modules"]["modules"]
    assert MODULE_PAST not in html
    page = tmp_path_factory.mktemp("search-data") / "report.html"
    page.write_text(html)
    return page


def clear(tab: Tab) -> None:
    """Escape: the search emptied (and every card back) if it was not already."""
    if tab.page.input_value("#search"):
        settle(tab, lambda: tab.page.press("#search", "Escape"))


def note(tab: Tab, check_id: str) -> Any:
    return card(tab, check_id).locator(".search-note")


def test_a_value_cut_from_a_table_finds_its_card(open_page: Opener, cut_page: Path) -> None:
    tab = open_page(cut_page)
    total = tab.count()
    searches = {
        CUT_KEY: "sysctl.all",
        CUT_VALUE.upper(): "sysctl.all",
        f"{CUT_VALUE} sysctl.all": "sysctl.all",
        MODULE_EMBEDDED: "kernel.modules",
    }
    for text, check_id in searches.items():
        clear(tab)
        search(tab, text)
        assert tab.shown() == [check_id] and tab.count() == 1
        assert tab.page.locator("article.check[hidden]").count() == total - 1
        assert note(tab, check_id).is_visible()
        said = note(tab, check_id).inner_text()
        # the words found only in the data, not those the card shows
        assert text.split()[0].lower() in said.lower() and check_id not in said
        assert tab.page.locator(".search-note:visible").count() == 1
    assert not tab.errors


def test_a_value_the_card_shows_needs_no_note(open_page: Opener, cut_page: Path) -> None:
    tab = open_page(cut_page)
    search(tab, CUT_KEY)
    assert note(tab, "sysctl.all").is_visible()
    clear(tab)
    search(tab, SHOWN_KEY)
    assert tab.shown() == ["sysctl.all"]
    assert not note(tab, "sysctl.all").is_visible()
    clear(tab)
    assert tab.count() == len(cut_report()["checks"])
    assert tab.page.locator(".search-note:visible, #search-limits:visible").count() == 0


def test_nonsense_finds_nothing(open_page: Opener, cut_page: Path) -> None:
    tab = open_page(cut_page)
    search(tab, NONSENSE)
    assert tab.shown() == [] and tab.count() == 0
    assert tab.page.locator("#no-match").is_visible()
    assert tab.page.locator(".search-note:visible").count() == 0


def test_the_search_names_what_it_could_not_look_at(open_page: Opener, cut_page: Path) -> None:
    """process.huge's rows past its table are in no part of the page (its data is too large
    to embed), nor kernel.modules' past the longest list the page keeps: a search for one
    of them finds nothing, and names the checks whose data it could not search in full."""
    tab = open_page(cut_page)
    search(tab, UNEMBEDDED)
    assert tab.shown() == []
    limits = tab.page.locator("#search-limits")
    assert limits.is_visible()
    said = limits.inner_text()
    assert "process.huge" in said and "kernel.modules" in said
    assert "sysctl.all" not in said and "sysctl.vm" not in said  # their data was searched
    clear(tab)
    search(tab, MODULE_PAST)
    assert tab.shown() == [] and "kernel.modules" in limits.inner_text()
    search(tab, CUT_KEY)  # process.huge is hidden by this search too
    assert tab.shown() == ["sysctl.all"] and "process.huge" in limits.inner_text()
    # process.huge filtered out by its status: not named, since no search could show it
    tab.page.locator('button.chip[data-filter-status="pass"]').click()
    assert tab.shown() == ["sysctl.all"]
    assert "process.huge" not in limits.inner_text() and "kernel.modules" in limits.inner_text()
    search(tab, "sysctl")  # every pass card but kernel.modules
    assert "kernel.modules" not in tab.shown() and "kernel.modules" in limits.inner_text()
    search(tab, "kernel")  # only kernel.modules (its id), among the pass cards
    assert tab.shown() == ["kernel.modules"] and not limits.is_visible()
    assert not tab.errors


def test_the_limits_of_a_search_stay_text(open_page: Opener, hostile: Hostile) -> None:
    """On the hostile page (raw heads cut, a check id full of markup, a 1 MiB value cut to
    the longest string the page keeps) the search names what it could not look at, as
    text."""
    tab = open_page(hostile.page)
    search(tab, NONSENSE)
    limits = tab.page.locator("#search-limits")
    assert tab.shown() == [] and limits.is_visible()
    assert hostile.report["checks"][0]["id"] in limits.inner_text()  # its long value is cut
    assert limits.evaluate("p => p.children.length") == 0
    assert tab.page.evaluate("window.__xss") is None and not tab.errors
