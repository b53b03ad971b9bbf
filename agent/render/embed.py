"""Untrusted values on the page: trimmed for size, shown with their controls visible,
and embedded as JSON that no string can break out of.

Every string in a report comes from the node (file contents, command output, names) and
may be hostile: megabytes long, full of markup, direction overrides, NUL bytes or lone
surrogates. Autoescaping handles markup; this module handles the rest.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from markupsafe import Markup, escape

#: The longest string shown or embedded; the whole value stays in report.json.
MAX_STRING = 4096
#: The most items of one list or mapping kept; the rest stays in report.json.
MAX_ITEMS = 2000
#: Nesting below this depth is replaced by a note (no real check nests this deep).
MAX_DEPTH = 16
# The page's search (templates/report.js, CUT_MARK) knows a cut value by these three
# marks: change them together.
CUT = " … [{more:,} more characters: the whole value is in report.json]"
MORE_ITEMS = "… {more:,} more items: see report.json"
TOO_DEEP = "[nested too deep to show: see report.json]"

# C0 controls but tab and newline, DEL, C1 controls, line and paragraph separators and
# direction controls: shown as symbols, never obeyed.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u2028-\u202e\u2066-\u2069]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# `code` in a summary or a remediation (the checks write commands that way).
_TICKS = re.compile(r"`([^`\n]{1,500})`")
_TEXT_ESCAPES = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    # Direction controls: harmless in a script element, but escaped so that no byte of the
    # page reorders text, even in view-source.
    **{c: f"\\u{c:04x}" for c in (0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}


def trimmed(value: Any, depth: int = 0) -> Any:
    """A JSON value with long strings cut, long lists and mappings shortened, lone
    surrogates replaced and non-finite numbers spelled out (each with a note)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        items = list(value.items())
        out = {_text(str(k)): trimmed(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = MORE_ITEMS.format(more=len(items) - MAX_ITEMS)
        return out
    if isinstance(value, list | tuple):
        out_list = [trimmed(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            out_list.append(MORE_ITEMS.format(more=len(value) - MAX_ITEMS))
        return out_list
    return _text(str(value))


def _text(text: str) -> str:
    """`text` cut to MAX_STRING characters, lone surrogates as U+FFFD."""
    if len(text) > MAX_STRING:
        text = text[:MAX_STRING] + CUT.format(more=len(text) - MAX_STRING)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates (a file name that is not UTF-8)
            text = _SURROGATES.sub("\ufffd", text)
    return text


def visible(value: Any) -> Any:
    """A string with its control and direction-override characters shown as symbols
    (NUL as ␀, U+202E as ⟨U+202E⟩), so they neither hide text nor reorder the page."""
    if type(value) is not str or not _CONTROLS.search(value):
        return value  # Markup (CSS, JS, SVG) is a str subclass and passes as is
    return _CONTROLS.sub(_symbol, value)


def _symbol(match: re.Match[str]) -> str:
    """The visible stand-in of one control character."""
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␀ ␁ ... ␟
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"⟨U+{code:04X}⟩"


def with_code(value: Any) -> Markup:
    """Text with its `backticked` parts as <code>; everything escaped, controls visible."""
    text = visible(str(value))
    parts, last = [], 0
    for match in _TICKS.finditer(text):
        parts += [escape(text[last : match.start()]), Markup("<code>%s</code>") % match[1]]
        last = match.end()
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


def raw_text(lines: list[str]) -> Markup:
    """Raw lines for a <pre>, one per line of the page: controls visible, only `&`, `<`
    and `>` escaped (quotes stay, so each line reads as it does in the member)."""
    return Markup("\n".join(visible(line).translate(_TEXT_ESCAPES) for line in lines))


def script_json(value: Any) -> Markup:
    """`value` as JSON safe inside <script type="application/json">: no `</script>`,
    `<!--` or line separator can appear in it (`<`, `>`, `&` are \\u escapes)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return Markup(text.translate(_JSON_ESCAPES))
