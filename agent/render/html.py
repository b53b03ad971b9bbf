"""report.html: one self-contained page rendered with Jinja from templates/.

The CSS and the script are separate files under templates/, inlined at render time; the
Content-Security-Policy allows exactly those two blocks (by hash) and no network at all.
The cards are rendered on the server, so the page reads (and prints) without the script;
the script adds search, filters, sorting, permalinks and copy buttons.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2
from markupsafe import Markup

from snapshot_agent.core.units import format_bytes
from snapshot_agent.render.budget import embedded, fit_tables
from snapshot_agent.render.cards import MAX_FINDINGS, Card, cards_of
from snapshot_agent.render.csp import policy
from snapshot_agent.render.dashboard import dashboard_of
from snapshot_agent.render.embed import raw_text, script_json, trimmed, visible, with_code
from snapshot_agent.render.iggy import iggy_overview
from snapshot_agent.render.raw import RawHead
from snapshot_agent.render.tables import columns, is_grid, is_inline, is_number, rows_of
from snapshot_agent.render.viewer import RawBudget
from snapshot_agent.render.words import check_seconds, counted, noun

TEMPLATES = "snapshot_agent.templates"
#: Element ids in a chart's SVG, and the attributes that name them.
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REFS = re.compile(r'\b(?:id|aria-labelledby|aria-describedby|href)="[^"]*"')


def render_html(report: dict[str, Any], raw: Mapping[str, RawHead] | None = None) -> str:
    """report.html from the report.json document and the heads of its raw members."""
    page = trimmed(report)
    checks = [c for c in _list(page.get("checks")) if isinstance(c, dict)]
    cards = cards_of(checks, raw or {}, _charts(page), RawBudget())
    env = _environment()
    fit_tables(cards, env.get_template("macros.html").module.data_block)  # type: ignore[attr-defined]
    css, js = _asset("report.css"), _asset("report.js")
    return env.get_template("report.html").render(
        dash=dashboard_of(page, cards),
        cards=cards,
        glance=[(c, _renamed(c.svg)) for card in cards for c in card.charts if c.glance],
        iggy=iggy_overview(checks),
        data=script_json(embedded(page) | {"raw": _raw_index(cards)}),
        css=Markup(css),
        js=Markup(js),
        csp=policy(js, css),
        max_findings=MAX_FINDINGS,
    )


def _raw_index(cards: list[Card]) -> dict[str, dict[str, Any]]:
    """Raw member path -> its size and how much of it the page shows (the text itself is
    in the page's viewers, not repeated in the data)."""
    return {
        a.path: {
            "size": a.size,
            "shown_bytes": a.view.shown_bytes if a.view else 0,
            "truncated": a.view is None or a.view.partial,
        }
        for card in cards
        for a in card.artifacts
    }


@cache
def _environment() -> jinja2.Environment:
    """The Jinja environment: autoescaped, strict, controls in values made visible."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files(TEMPLATES))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=visible,
    )
    env.filters.update(
        columns=columns,
        split_data=rows_of,
        code=with_code,
        bytes=format_bytes,
        raw_text=raw_text,
        counted=counted,
        noun=noun,
        seconds=check_seconds,
    )
    env.tests.update(number=is_number, grid=is_grid, inline=is_inline)
    return env


@cache
def _asset(name: str) -> str:
    """A CSS or JS file of templates/, as inlined (it must not close its own element)."""
    text = files(TEMPLATES).joinpath(name).read_text(encoding="utf-8")
    if "</" in text:
        raise ValueError(f"templates/{name} contains '</', which would end its inline block")
    return text


def _charts(report: dict[str, Any]) -> dict[str, list[Any]]:
    """Check id -> its charts (none until the charts module is installed)."""
    try:
        from snapshot_agent.render.charts import charts_for
    except ImportError:
        return {}
    return charts_for(report)


def _renamed(svg: Markup, prefix: str = "glance-") -> Markup:
    """A second copy of a chart's SVG, its element ids (and the references to them)
    prefixed, so no id is on the page twice."""
    ids = _SVG_ID.findall(svg)
    if not ids:
        return svg
    names = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)))
    return Markup(_SVG_REFS.sub(lambda m: names.sub(lambda n: prefix + n[0], m[0]), svg))


def _list(value: Any) -> list[Any]:
    """`value` if it is a list, else empty."""
    return value if isinstance(value, list) else []
