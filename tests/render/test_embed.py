"""Untrusted values on the page: cut for size, controls made visible, JSON that cannot
end its script element; all fast on a 10 MB string."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from markupsafe import Markup

from snapshot_agent.render.embed import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_STRING,
    TOO_DEEP,
    script_json,
    trimmed,
    visible,
    with_code,
)

from .pages import BIG, HOSTILE


def test_long_strings_lists_and_mappings_are_cut_with_a_note() -> None:
    start = time.perf_counter()
    cut = trimmed(
        {
            "big": BIG,
            "list": list(range(MAX_ITEMS + 5)),
            "map": dict.fromkeys(map(str, range(MAX_ITEMS + 1)), 1),
        }
    )
    assert time.perf_counter() - start < 2  # about 0.1 s here: not quadratic
    assert cut["big"].startswith("A" * MAX_STRING)
    assert "more characters: the whole value is in report.json" in cut["big"]
    assert len(cut["big"]) < MAX_STRING + 100
    assert len(cut["list"]) == MAX_ITEMS + 1 and "5 more items" in cut["list"][-1]
    assert len(cut["map"]) == MAX_ITEMS + 1 and "1 more items" in cut["map"]["…"]


def test_odd_values_become_json_a_browser_can_parse() -> None:
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH + 10):
        node["x"] = {}
        node = node["x"]
    cut = trimmed(
        {"nan": float("nan"), "inf": float("-inf"), "lone": "a\ud800b", 1: (1, 2), "deep": deep}
    )
    assert cut["nan"] == "nan" and cut["inf"] == "-inf"
    assert cut["lone"] == "a\ufffdb" and cut["1"] == [1, 2]
    assert "nested too deep" in json.dumps(cut["deep"])
    json.loads(script_json(cut), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_script_json_round_trips_hostile_text_and_cannot_break_out() -> None:
    value = {HOSTILE: [HOSTILE, {"k": HOSTILE}], "sep": "\u2028\u2029", "amp": "&lt;"}
    text = script_json(trimmed(value))
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert "</script" not in text.lower() and "<!--" not in text
    assert json.loads(text) == trimmed(value)
    assert text.encode()  # no lone surrogate left to fail the page's encoding


def test_controls_and_direction_overrides_are_shown_not_obeyed() -> None:
    assert visible("a\x00b\x1b[2J\u202eevil\u2066x\x7f\x85") == (
        "a\u2400b\u241b[2J⟨U+202E⟩evil⟨U+2066⟩x\u2421⟨U+0085⟩"
    )
    plain = "tab\tand newline\n stay, as do ünïcödé and عربي"
    assert visible(plain) is plain
    assert visible(Markup("<b>\x00</b>")) == Markup("<b>\x00</b>")  # our own markup passes
    assert visible(42) == 42
    start = time.perf_counter()
    assert visible(BIG + "\x00").endswith("\u2400")
    assert time.perf_counter() - start < 2  # about 0.1 s here: not quadratic


def test_backticks_become_code_and_everything_is_escaped() -> None:
    html = with_code("run `systemctl restart <iggy>` then `a & b` <script>x</script>\u202e")
    assert html == Markup(
        "run <code>systemctl restart &lt;iggy&gt;</code> then <code>a &amp; b</code> "
        "&lt;script&gt;x&lt;/script&gt;⟨U+202E⟩"
    )
    assert with_code("an odd ` tick") == Markup("an odd ` tick")


def test_the_pages_search_knows_every_mark_of_a_cut() -> None:
    # report.js names a card whose data was cut by these marks: they must change together.
    script = (Path(__file__).parents[2] / "templates" / "report.js").read_text()
    match = re.search(r"const CUT_MARK = /(.*)/;", script)
    assert match, "CUT_MARK is gone from report.js"
    mark = re.compile(match[1].replace("\\u2026", "\u2026"))
    cut = trimmed({"long": "x" * (MAX_STRING + 10), "many": list(range(MAX_ITEMS + 3))})
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH + 2):
        node["x"] = {}
        node = node["x"]
    too_deep = json.dumps(trimmed({"deep": deep}))
    for text in (cut["long"], cut["many"][-1], TOO_DEEP):
        assert mark.search(text), text
    assert TOO_DEEP in too_deep
    assert not mark.search("an ordinary value that mentions report.json")
