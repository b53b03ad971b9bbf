"""The raw viewer: heads of raw evidence as the page shows them, error lines marked,
within one page budget.

The text goes into the page as it is stored, line for line (escaped, nothing else on its
lines), so a line-based secret scanner reads the page's copy as it reads the member;
the page's script numbers the lines and marks the error lines the server listed.

A page inlines at most RAW_BUDGET of raw text: heads are given out in the order the
cards are shown (worst first), whole (HEAD_BYTES) while the budget allows, then short
(SMALL_HEAD), then not at all (the link to the whole file is always there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from snapshot_agent.render.raw import HEAD_BYTES, RawHead

#: Raw text inlined in one page, over all viewers.
RAW_BUDGET = 192 * 1024
#: The head a viewer gets once the budget cannot give a whole one.
SMALL_HEAD = 2 * 1024
#: Lines shown in one viewer (each becomes an element in the browser).
MAX_LINES = 1000
#: Words that make a line an error line (highlighted), unless they are a setting's name or
#: value rather than something that went wrong (see is_error_line).
ERROR_WORD = re.compile(
    r"\b(errors?|fail(s|ed|ure|ing)?|fatal|panic(ked)?|oom-kill(er)?|oom|out of memory|"
    r"segfault|segmentation fault|denied|refused|timed out|timeout|critical|emerg|killed|"
    r"abort(ed)?|call trace)\b",
    re.IGNORECASE,
)
#: The kernel's own alarms, as it writes them ('kernel: BUG: unable to handle ...').
KERNEL_ALARM = re.compile(r"\b(BUG|Oops):")
#: Before a word: part of a dotted or hyphenated name (`kernel.panic`,
#: `print-fatal-signals`, `libgpg-error-dev`), or a command-line option (`--fail-fast`).
_NAME_BEFORE = re.compile(r"(\w[.\-]|(^|\s)--?)$")
#: After a word: the name goes on (`error.log`, `fatal-signals`).
_NAME_AFTER = re.compile(r"[.\-]\w")
#: After a word: it is a setting's name (`panic=1`, `kernel.panic = 1`, `errors=remount-ro`).
_SETTING = re.compile(r"\s*=(?!=)")
#: After a word: a key with nothing wrong as its value (`"error": ""`, `errors: 0`).
_EMPTY_KEY = re.compile(
    r"[\"']?\s*[:=]\s*(\"\"|''|null|none|nil|0|false|off|\[\]|\{\})\s*([,;}\]]|$)",
    re.IGNORECASE,
)
#: Before a word: a setting's value, the word all of it (`oops=panic`); not the value of
#: a state, a result or an exit code (`ActiveState=failed`, `Result=oom-kill`, `code=killed`).
_VALUE_BEFORE = re.compile(r"(\w+)=$")
_VALUE_AFTER = re.compile(r"[\s,;]|$")
_OUTCOME_KEYS = ("state", "result", "status", "code", "reason", "signal")
#: After `timeout`: a number or nothing (`timeout 30`, a process called `timeout` at the
#: end of a ps line), a command or a setting rather than something that timed out.
_TIMEOUT_SETTING = re.compile(r"\s*(:?\s*\d|$)")
#: How far before a word the patterns above look (a level's name and its quotes fit).
_LOOK_BEHIND = 40
#: Before a word: a log level's value (`level=error`, `"severity":"FATAL"`): an error line.
_LEVEL_BEFORE = re.compile(
    r"\b(level|lvl|severity|priority|prio)[\"']?\s*[=:]\s*[\"']?$", re.IGNORECASE
)


def is_error_line(line: str) -> bool:
    """Whether `line` reads as something that went wrong: an error word used as a word
    (`Failed to start`, `I/O error`, `panicked at`, `Out of memory`) or a kernel alarm,
    not as a name or a setting (`panic=1`, `kernel.panic = 1`, `"error": ""`)."""
    if KERNEL_ALARM.search(line):
        return True
    for match in ERROR_WORD.finditer(line):
        # Look around the word in place (no copies): a long line of error words stays linear.
        start, end = match.start(), match.end()
        near = max(0, start - _LOOK_BEHIND)
        if _LEVEL_BEFORE.search(line, near, start):
            return True
        if (
            _NAME_BEFORE.search(line, near, start)
            or _NAME_AFTER.match(line, end)
            or _SETTING.match(line, end)
            or _EMPTY_KEY.match(line, end)
            or _setting_value(line, near, start, end)
            or (match[0].lower() == "timeout" and _TIMEOUT_SETTING.match(line, end))
        ):
            continue
        return True
    return False


def _setting_value(line: str, near: int, start: int, end: int) -> bool:
    """Whether the word at [start, end) is all of a setting's value (`oops=panic`), not an
    outcome's (`ActiveState=failed`)."""
    key = _VALUE_BEFORE.search(line, near, start)
    if key is None or not _VALUE_AFTER.match(line, end):
        return False
    return not key[1].lower().endswith(_OUTCOME_KEYS)


@dataclass(frozen=True)
class RawView:
    """What a viewer shows of one raw member: its first lines, which of them (1-based)
    are error lines, and how many of the member's bytes that is."""

    lines: list[str]
    errors: list[int]
    shown_bytes: int
    size: int
    #: The last line shown stops where the head did, not at its end (a long line).
    cut_line: bool = False

    @property
    def partial(self) -> bool:
        """True when less than the whole member is shown."""
        return self.shown_bytes < self.size


def lines_of(text: str, max_lines: int = MAX_LINES) -> tuple[list[str], bool]:
    """`text` as viewer lines (a final newline ends the last line, it does not add one;
    a CR before it is dropped), and whether they are all of it (not cut at `max_lines`)."""
    rows = text.split("\n", max_lines)
    complete = len(rows) <= max_lines or rows[-1] == ""
    rows = rows[:max_lines]
    if len(rows) > 1 and rows[-1] == "":
        rows.pop()
    return [r.removesuffix("\r") for r in rows], complete


class RawBudget:
    """Gives out viewer heads until the page's raw budget is spent."""

    def __init__(self, total: int = RAW_BUDGET) -> None:
        self.left = total

    def view(self, head: RawHead) -> RawView | None:
        """The viewer of `head`, as much of it as the budget allows; None when spent."""
        limit = next((n for n in (HEAD_BYTES, SMALL_HEAD) if n <= self.left), 0)
        if not limit or not head.text:
            return None
        text = head.text
        if len(text) > limit:
            cut = text.rfind("\n", 0, limit) + 1
            text = text[: cut or limit]
        lines, complete = lines_of(text)
        shown = sum(len(line.encode()) + 1 for line in lines)
        self.left -= shown
        errors = [n for n, line in enumerate(lines, 1) if is_error_line(line)]
        whole = complete and not head.truncated and text is head.text
        cut_line = not whole and complete and not text.endswith("\n")
        shown_bytes = head.size if whole else min(shown, head.size)
        return RawView(lines, errors, shown_bytes, head.size, cut_line)
