"""What every redaction rule is: a scanner of lines that reports the spans to remove.

A rule never rewrites text itself. It reports `Hit`s (the span of a secret value in the
line, and the label the replacement shows); the redactor merges the hits of every rule
on a line, replaces each merged span with `[REDACTED:label]` and counts each hit under
its rule's name. So rules never see each other's replacements, their order does not
matter, and a reviewer can read each rule alone.

A line is one line of text without its terminator (`\\n`, `\\r\\n` or NUL: environ
files separate entries with NUL). A line that has not ended after `MAX_LINE` bytes of
a stream reaches the rules in pieces, cut after a separator where one is near (and not
just after a hint word); a line that arrives whole in one read is shown whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self

#: A longer line is scanned in pieces of about this many characters.
MAX_LINE = 64 * 1024


def replacement(label: str) -> str:
    """What replaces a secret: says what kind of value was removed, never the value."""
    return f"[REDACTED:{label}]"


#: Every replacement starts with this; a value that already is one is never redacted again.
REDACTED_PREFIX = "[REDACTED:"


@dataclass(frozen=True, slots=True)
class Hit:
    """One secret found in a line: the span [start, end) to replace, and why."""

    start: int
    end: int
    rule: str  # the rule's name: what the audit counts
    label: str  # what the replacement says was removed: [REDACTED:label]
    text: str = ""  # the replacement itself, when not [REDACTED:label] (a pseudonym)


class Scanner(Protocol):
    """One rule, scanning the lines of one text (a member, a string) in order.

    `hints`: lower-case ASCII literals; a line in which none occurs (case-insensitively,
    the line's terminator included, so `"mysql\\0"` is a hint too) cannot hold a hit of
    this rule, so the redactor may skip `scan` for it. An empty tuple means "scan every
    line". A hint found in nearly every line of real logs makes the redactor slow.

    `gate` (optional): a regular expression in RE2 syntax (no look-around, no
    back-references), matched case-insensitively against one line and its terminator
    (bytes read as Latin-1: a non-ASCII character is several "characters"), that every
    line holding a hit of this rule matches; it replaces the hints in the prefilter, so
    it holds one of them, and a line not matching it is not shown to the rule. It is
    what keeps a rule keyed on common words (`key`, `session`) away from "partition
    key 3" and "session closed". A gate may look at what stands before a match only
    through a character it matches: `(?:^|[\\n\\x00])` for the start of a line.

    While `open` is true (the scanner is inside a multi-line secret: a PEM block, a YAML
    block scalar, a TOML multi-line string), every line must be scanned, hints or not.
    """

    name: str
    hints: tuple[str, ...]

    @property
    def open(self) -> bool:
        """Whether the next line continues a secret this scanner is inside."""
        ...

    def scan(self, line: str) -> list[Hit]:
        """The hits in `line` (the next line of the text)."""
        ...


class Rule(Protocol):
    """A redaction rule: a name, what it removes, the proof, and a fresh scanner per text.

    `examples`: lines this rule must redact, each secret written between « and »: the
    rule alone must turn the line into exactly the line with each marked span replaced
    by `[REDACTED:label]`. `benign`: lines this rule must leave unchanged. A test runs
    every rule over its own examples, so the list of rules is also the list of proofs.
    """

    name: str
    description: str
    examples: tuple[str, ...]
    benign: tuple[str, ...]

    def scanner(self) -> Scanner:
        """A scanner for one text (a stateless rule may return one shared object)."""
        ...


class Stateless:
    """For a rule that keeps no state between lines: it is its own scanner, never open."""

    @property
    def open(self) -> bool:
        """Never inside a multi-line secret: each line stands alone."""
        return False

    def scanner(self) -> Self:
        """The rule itself."""
        return self
