"""The SVG pieces: text made safe and short, no style attribute, scales that keep order."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from snapshot_agent.render.charts import svg
from snapshot_agent.render.charts.grid import heat_class
from snapshot_agent.render.charts.timeline import DayScale, day_words

HOSTILE = '<script>alert("x")</script> ]]> & \u202eevil\u202c \x00\x1b[2J \ud800 \uffff'


def test_clean_escapes_controls_and_bidi_and_drops_what_xml_cannot_carry() -> None:
    text = svg.clean(HOSTILE, 200)
    assert "\u202e" not in text and "\\u202e" in text
    assert "\x00" not in text and "\\x00" in text and "\\x1b" in text
    assert "\ud800" not in text and "\uffff" not in text
    assert text.startswith('<script>alert("x")</script> ]]> &')  # escaping is the markup's job


def test_clean_cuts_long_text_with_an_ellipsis_and_fast() -> None:
    assert svg.clean("abcdef", 6) == "abcdef"
    assert svg.clean("abcdefg", 6) == "abcde…"
    assert svg.clean("x" * 10_000_000, 40) == "x" * 39 + "…"
    # An escape that makes the text longer still respects the limit.
    assert len(svg.clean("\x1b" * 10, 12)) == 12


def test_element_escapes_attributes_and_text_and_refuses_style() -> None:
    node = svg.element("text", {"class": 'a" onload="x', "x": 1.25}, HOSTILE)
    parsed = ET.fromstring(str(node))
    assert parsed.get("class") == 'a" onload="x' and parsed.get("x") == "1.2"
    assert parsed.text == svg.clean(HOSTILE, 200)  # made readable even without a cut
    assert "<script>" not in str(node)
    with pytest.raises(ValueError, match="CSP"):
        svg.element("rect", {"style": "fill:red"})
    # Markup children are kept as markup, strings escaped.
    assert str(svg.element("g", None, Markup("<rect/>"), "<b>")) == "<g><rect/>&lt;b&gt;</g>"


def test_text_cut_keeps_the_longer_text_as_its_tooltip() -> None:
    node = ET.fromstring(str(svg.text(0, 10, "/var/lib/iggy/streams/very-long", "label", 10)))
    tooltip = node.find("title")
    assert tooltip is not None and tooltip.text == "/var/lib/iggy/streams/very-long"
    assert tooltip.tail == "/var/lib/…"
    short = ET.fromstring(str(svg.text(0, 10, "/var", "label", 10)))
    assert short.find("title") is None and short.text == "/var"


def test_document_is_an_accessible_image_scaled_by_viewbox() -> None:
    doc = svg.document("chart-x-0", "disk", "Title <t>", "Desc & more", 99.2, Markup(""))
    root = ET.fromstring(str(doc))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img" and root.get("aria-labelledby") == "chart-x-0-t chart-x-0-d"
    assert root.get("viewBox") == "0 0 760 100" and root.get("width") == "100%"
    assert [c.text for c in root] == ["Title <t>", "Desc & more"]


def test_status_classes() -> None:
    assert svg.status_class("warn") == "s-warn"
    assert svg.status_class("ok") == svg.status_class("<x>") == "s-neutral"
    assert {svg.status_class(s) for s in svg.STATUSES} <= set(svg.CLASSES)


@pytest.mark.parametrize(
    ("pct", "heat"), [(0, 0), (19.9, 0), (20, 1), (79.9, 3), (80, 4), (100, 4)]
)
def test_heat_classes(pct: float, heat: int) -> None:
    assert heat_class(pct) == f"heat-{heat}"


def test_day_scale_keeps_order_and_clamps() -> None:
    scale = DayScale(past=-30, future=365)
    xs = [scale.x(d) for d in (-1000, -30, -1, 0, 7, 30, 365, 9999)]
    assert xs == sorted(xs)
    assert xs[0] == xs[1] and xs[-1] == xs[-2]
    assert scale.x(-30) < scale.today_x == scale.x(0) < scale.x(1)
    assert DayScale(past=0, future=60).x(-5) == DayScale(past=0, future=60).today_x
    assert [day_words(d) for d in (30, 365, -30, 730)] == ["30 d", "1 y", "30 d ago", "2 y"]
