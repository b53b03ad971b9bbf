"""Reading a chart's SVG back as XML, as the tests check it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from snapshot_agent.render.charts import Chart

NS = "{http://www.w3.org/2000/svg}"


def parse(chart: Chart) -> ET.Element:
    """The chart's SVG as an element tree (fails when it is not well-formed XML)."""
    return ET.fromstring(str(chart.svg))


def classes(el: ET.Element) -> set[str]:
    """The element's class names."""
    return set(el.get("class", "").split())


def shown(text: ET.Element) -> str:
    """What a <text> shows (its tooltip <title>, when cut, left out)."""
    tip = text.find(f"{NS}title")
    return (tip.tail or "") if tip is not None else (text.text or "")


def full(text: ET.Element) -> str:
    """The whole text: its tooltip when it was cut, else what it shows."""
    tip = text.find(f"{NS}title")
    return (tip.text or "") if tip is not None else (text.text or "")


@dataclass(frozen=True)
class Row:
    """One `<g class="row">` of a bar or timeline chart."""

    label: str  # whole
    value: str
    bar: ET.Element | None  # the filled rect

    @property
    def status(self) -> str:
        """The row bar's status class ('s-warn' -> 'warn'), '' without a bar."""
        found = [c for c in classes(self.bar) if c.startswith("s-")] if self.bar is not None else []
        return found[0][2:] if found else ""


def rows(root: ET.Element) -> list[Row]:
    """The chart's rows, top to bottom."""
    out = []
    for g in root.iter(f"{NS}g"):
        if "row" not in classes(g):
            continue
        texts = {next(iter(classes(t)), ""): t for t in g.findall(f"{NS}text")}
        bars = [r for r in g.findall(f"{NS}rect") if "bar" in classes(r)]
        out.append(Row(full(texts["label"]), shown(texts["value"]), bars[0] if bars else None))
    return out


def title_and_desc(root: ET.Element) -> tuple[str, str]:
    """The text of the SVG's <title> and <desc>, checked to be what aria-labelledby names."""
    title, desc = root.find(f"{NS}title"), root.find(f"{NS}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return title.text or "", desc.text or ""
