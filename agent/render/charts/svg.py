"""SVG pieces for the report's charts: every text escaped, colours by class, scaled by viewBox.

The page's Content-Security-Policy allows no inline style, so nothing here writes a
`style` attribute or element: fills and strokes come from the classes the page's CSS
defines (see `CLASSES`). Geometry is in viewBox units; the SVG is `width="100%"` and its
height follows the aspect ratio. Text from the node is cut to a length that fits (the
whole of it, within reason, in a `<title>` tooltip) and its control and bidi characters
are shown escaped, so a hostile name neither breaks the XML nor reorders the line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from markupsafe import Markup, escape

from snapshot_agent.core.printable import printable

SVG_NS = "http://www.w3.org/2000/svg"
#: viewBox width of every chart; the row layout below is laid out in it.
WIDTH = 760
ROW_H = 24
BAR_H = 14
BASELINE = 11  # text baseline below a row's top, centred on a BAR_H bar
LABEL_CHARS = 21  # what fits the label column at the page's 12px chart font
BAR_X = 158
BAR_W = 260
VALUE_X = BAR_X + BAR_W + 8
VALUE_CHARS = 46
#: A tooltip or description holds at most this much of one text.
FULL_CHARS = 300
DESC_CHARS = 3000
#: Every status the report knows, and `neutral` for a bar without a verdict.
STATUSES = ("pass", "warn", "fail", "error", "timeout", "skipped", "neutral")
#: The classes that carry a chart's colours: the page's CSS must give each a fill or stroke.
CLASSES = (
    *(f"s-{s}" for s in STATUSES),
    "track",  # a bar's background
    "note",  # a muted footer line
    "axis",  # day tick labels
    "tick",  # day tick lines
    "today",  # the today line and its label
    "limit",  # where a disk starts to warn
    "window-warn",
    "window-fail",
    *(f"mem-{part}" for part in ("apps", "other", "cache", "buffers", "free", "swap")),
    *(f"heat-{n}" for n in range(5)),
    "flagged",  # a core a finding names
)
#: Classes that name a part for the CSS to reach, colour or not.
STRUCTURE = ("chart", "row", "stack", "bar", "label", "value", "legend", "swatch", "cell")
#: Characters XML 1.0 cannot carry even escaped (lone surrogates, U+FFFE, U+FFFF).
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def readable(text: str) -> str:
    """`text` with controls and bidi overrides shown escaped, and no character XML refuses."""
    return _NOT_XML.sub("\ufffd", printable(text))


def clean(value: object, limit: int) -> str:
    """`value` as readable, XML-safe text of at most `limit` characters ('…' when cut)."""
    raw = value if isinstance(value, str) else str(value)
    shown = readable(raw[: limit + 1])
    if len(raw) > limit or len(shown) > limit:
        return shown[: limit - 1] + "…"
    return shown


def status_class(status: str) -> str:
    """'warn' -> 's-warn'; anything the page does not know -> 's-neutral'."""
    return f"s-{status}" if status in STATUSES else "s-neutral"


def num(value: float) -> str:
    """A coordinate as short as it reads: 12, 12.5."""
    return f"{round(value, 1):g}"


def element(tag: str, attrs: Mapping[str, object] | None = None, *children: str) -> Markup:
    """`<tag attrs>children</tag>`: values and str children made readable and escaped."""
    parts = [tag]
    for key, value in (attrs or {}).items():
        if key == "style":
            raise ValueError("no style attributes: the page's CSP forbids inline styles")
        if value is not None:
            shown = num(value) if isinstance(value, float) else readable(str(value))
            parts.append(f'{key}="{escape(shown)}"')
    head = " ".join(parts)
    if not children:
        return Markup(f"<{head}/>")
    inner = [c if isinstance(c, Markup) else readable(c) for c in children]
    return Markup(f"<{head}>") + Markup("").join(inner) + Markup(f"</{tag}>")


def text(
    x: float, y: float, content: str, cls: str, limit: int, anchor: str | None = None
) -> Markup:
    """A text node cut to `limit` characters; when cut, the longer text is its tooltip."""
    shown = clean(content, limit)
    full = clean(content, FULL_CHARS)
    tooltip = element("title", None, full) if full != shown else Markup("")
    attrs = {"x": float(x), "y": float(y), "class": cls or None, "text-anchor": anchor}
    return element("text", attrs, tooltip, shown)


def rect(x: float, y: float, w: float, h: float, cls: str, tooltip: str = "") -> Markup:
    """A rectangle; an optional tooltip names what it stands for."""
    attrs = {"x": float(x), "y": float(y), "width": float(max(w, 0.0)), "height": float(h)}
    tip = (element("title", None, clean(tooltip, FULL_CHARS)),) if tooltip else ()
    return element("rect", attrs | {"class": cls}, *tip)


def line(x1: float, y1: float, x2: float, y2: float, cls: str) -> Markup:
    """A straight line (stroke from CSS)."""
    return element(
        "line", {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2), "class": cls}
    )


def document(uid: str, kind: str, title: str, desc: str, height: float, body: str) -> Markup:
    """The whole `<svg role="img">` with its title and description (what a reader hears)."""
    attrs = {
        "xmlns": SVG_NS,
        "class": f"chart chart-{kind}",
        "role": "img",
        "aria-labelledby": f"{uid}-t {uid}-d",
        "viewBox": f"0 0 {WIDTH} {num(math.ceil(height))}",
        "width": "100%",
        "preserveAspectRatio": "xMinYMin meet",
    }
    return element(
        "svg",
        attrs,
        element("title", {"id": f"{uid}-t"}, clean(title, FULL_CHARS)),
        element("desc", {"id": f"{uid}-d"}, clean(desc, DESC_CHARS)),
        body,
    )


def note(y: float, content: str) -> tuple[Markup, float]:
    """A muted line under a chart ('12 more not shown'); nothing for empty text."""
    if not content:
        return Markup(""), y
    return text(0, y + BASELINE + 4, content, "note", WIDTH // 7), y + ROW_H
